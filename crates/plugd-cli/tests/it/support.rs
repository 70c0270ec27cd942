//! Shared test support: build the guest plugins once, start a server on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use plugd::Host;
use plugd::manifest::{Format, HostConfig};
use plugd::server::AdminToken;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-admin-token";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Build every guest plugin (examples and test plugins) once per test run, through the project's
/// own script. Fails loudly: these tests need real components.
pub fn guests_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = repo_root();
        let out = Command::new("bash")
            .arg(root.join("scripts/build-examples.sh"))
            .current_dir(&root)
            .output()
            .expect("run scripts/build-examples.sh");
        assert!(
            out.status.success(),
            "scripts/build-examples.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The directory of an example plugin.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples/plugins").join(name)
}

/// The directory of a test-only plugin.
pub fn test_plugin(name: &str) -> PathBuf {
    repo_root().join("tests/plugins").join(name)
}

pub struct TestServer {
    /// The main listener: plugins, `/healthz`, `/metrics`.
    pub url: String,
    /// The admin API and dashboard (`admin.listen`; the main listener under `admin.listen: shared`).
    pub admin_url: String,
    pub host: Host,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Start a host from a YAML config; `{data}` in it is replaced with a fresh temp directory.
    pub async fn start(yaml: &str) -> TestServer {
        guests_built();
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = yaml.replace("{data}", &dir.path().join("data").display().to_string());
        let path = dir.path().join("plugd.yaml");
        std::fs::write(&path, &yaml).expect("write config");
        let config = HostConfig::from_str(&yaml, Format::Yaml, Some(&path)).expect("valid config");
        let host = plugd::host_from_config(config).expect("host");
        host.start().await.expect("host start");
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let listener = bind().await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (admin_listener, admin_url) = if host.config().admin.is_shared() {
            (None, url.clone())
        } else {
            let l = bind().await.expect("bind the admin listener");
            let admin_url = format!("http://{}", l.local_addr().expect("addr"));
            (Some(l), admin_url)
        };
        let (tx, rx) = oneshot::channel();
        let admin = AdminToken::new(TOKEN).expect("token");
        let task = tokio::spawn(plugd::server::serve_with_admin(
            host.clone(),
            admin,
            listener,
            admin_listener,
            async {
                let _ = rx.await;
            },
        ));
        TestServer {
            url,
            admin_url,
            host,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The host's data directory (`{data}` in the config).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// The config file the host was started from.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("plugd.yaml")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET on the admin listener without the token.
    pub async fn admin_raw(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Stop serving and stop every plugin.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server");
        }
    }
}

/// A YAML config with the two example plugins.
pub fn examples_config() -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: gatekeeper
      path: "{gatekeeper}"
      priority: security
      permissions: {{ intercept: true }}
    - name: hello
      path: "{hello}"
      permissions:
        router: true
"#,
        gatekeeper = example("gatekeeper").display(),
        hello = example("hello").display(),
    )
}
