//! Packages end to end through the `plugd` binary: pack → keygen → sign → verify → catalog build
//! → install from a catalog served over loopback HTTP → serve → update (hot) → rollback; the
//! load-time signature and digest checks (trusted keys alone requiring signatures); the
//! blocklist; dependencies and framework compatibility on install; plain http catalogs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plugd::Status;
use serde_json::Value;

use crate::support::{TOKEN, TestServer, example, guests_built};

fn plugd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugd"))
        .args(args)
        .env_remove("PLUGD_ADMIN_TOKEN")
        .env("PLUGD_LOG", "warn")
        .output()
        .expect("run plugd")
}

/// Run plugd off the async runtime (the test's HTTP servers keep serving meanwhile).
async fn plugd_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        plugd(&args)
    })
    .await
    .expect("plugd task")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "plugd failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[track_caller]
fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "plugd succeeded unexpectedly:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    format!("{}{}", stdout(o), stderr(o))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A copy of the example `hello` (manifest + built component) as `name` `version`, with extra
/// manifest lines and another default greeting.
fn variant(root: &Path, name: &str, version: &str, greeting: &str, extra: &str) -> PathBuf {
    guests_built();
    let src = example("hello");
    let dir = root.join(format!("src-{name}-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(src.join("plugin.yaml"))
        .unwrap()
        .replace("name: hello", &format!("name: {name}"))
        .replace("version: 1.0.0", &format!("version: {version}"))
        .replace("default: \"Hello\"", &format!("default: \"{greeting}\""));
    assert!(manifest.contains(&format!("version: {version}")));
    std::fs::write(dir.join("plugin.yaml"), format!("{manifest}{extra}")).unwrap();
    std::fs::copy(src.join("plugin.wasm"), dir.join("plugin.wasm")).unwrap();
    dir
}

/// Serve a folder as static files on a loopback port; the URL ends in `/`.
async fn serve_dir(dir: PathBuf) -> String {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    async fn file(
        State(dir): State<PathBuf>,
        UrlPath(name): UrlPath<String>,
    ) -> Result<Vec<u8>, StatusCode> {
        if name.contains('/') || name.starts_with('.') {
            return Err(StatusCode::NOT_FOUND);
        }
        std::fs::read(dir.join(name)).map_err(|_| StatusCode::NOT_FOUND)
    }
    let app = axum::Router::new()
        .route("/catalog/{name}", axum::routing::get(file))
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/catalog/")
}

fn installed_version(plugins: &Path, name: &str) -> String {
    plugd::manifest::Manifest::from_path(&plugins.join(name))
        .unwrap()
        .version
        .to_string()
}

/// The host config the CLI and the server share.
fn host_config(work: &Path, plugins: &Path, extra: &str) -> String {
    format!(
        "data_dir: \"{{data}}\"\nplugins:\n  directory: \"{}\"\n{extra}  plugins:\n    - name: hello\n      permissions: {{ router: true }}\n",
        s(plugins)
    )
    .replace("{work}", &s(work))
}

/// Write the config for the CLI (the server gets its own data dir from TestServer).
fn write_config(work: &Path, yaml: &str) -> PathBuf {
    let path = work.join("plugd.yaml");
    std::fs::write(&path, yaml.replace("{data}", &s(&work.join("data")))).unwrap();
    path
}

async fn greeting(server: &TestServer) -> String {
    let r = server.get("/plugins/hello/greet?name=Ada").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_sign_catalog_install_serve_update_rollback() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let catalog = work.join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let plugins = work.join("plugins");

    // pack: deterministic, named <name>-<version>.plugd.
    let v1 = variant(work, "hello", "1.0.0", "Hello", "");
    let out = ok(&plugd(&["pack", &s(&v1), "-o", &s(&catalog)]));
    assert!(out.contains("packed hello 1.0.0"), "{out}");
    let package = catalog.join("hello-1.0.0.plugd");
    let again = work.join("again.plugd");
    ok(&plugd(&["pack", &s(&v1), "-o", &s(&again)]));
    assert_eq!(
        std::fs::read(&package).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // keygen, sign, verify.
    let key = work.join("release");
    let out = ok(&plugd(&["keygen", &s(&key)]));
    assert!(out.contains("key id"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.join("release.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fails(&plugd(&["keygen", &s(&key)]));
    let out = fails(&plugd(&[
        "verify",
        &s(&package),
        "--trusted-key",
        &s(&work.join("release.pub")),
    ]));
    assert!(out.contains("hello 1.0.0 is not signed"), "{out}");
    ok(&plugd(&[
        "sign",
        &s(&package),
        "--key",
        &s(&work.join("release.key")),
    ]));
    let out = ok(&plugd(&[
        "verify",
        &s(&package),
        "--trusted-key",
        &s(&work.join("release.pub")),
    ]));
    assert!(
        out.contains("ok: hello 1.0.0") && out.contains("signed by trusted key"),
        "{out}"
    );
    ok(&plugd(&["keygen", &s(&work.join("other"))]));
    let out = fails(&plugd(&[
        "verify",
        &s(&package),
        "--trusted-key",
        &s(&work.join("other.pub")),
    ]));
    assert!(out.contains("which is not trusted"), "{out}");
    // Several trusted keys: one of them signed it.
    ok(&plugd(&[
        "verify",
        &s(&package),
        "--trusted-key",
        &s(&work.join("other.pub")),
        "--trusted-key",
        &s(&work.join("release.pub")),
    ]));

    // 1.1.0 (another default greeting), signed; then the catalog index.
    let v2 = variant(work, "hello", "1.1.0", "Howdy", "");
    ok(&plugd(&["pack", &s(&v2), "-o", &s(&catalog)]));
    ok(&plugd(&[
        "sign",
        &s(&catalog.join("hello-1.1.0.plugd")),
        "--key",
        &s(&work.join("release.key")),
    ]));
    let out = ok(&plugd(&["catalog", "build", &s(&catalog)]));
    assert!(out.contains("1 plugin(s), 2 package(s)"), "{out}");
    let url = serve_dir(catalog.clone()).await;

    let out = ok(&plugd_async(vec![
        "search".into(),
        "greets".into(),
        "--catalog".into(),
        url.clone(),
    ])
    .await);
    assert!(
        out.contains("hello") && out.contains("1.1.0") && out.contains("signed"),
        "{out}"
    );

    // install hello@=1.0.0 over HTTP, with signatures required by the host config.
    let yaml = host_config(
        work,
        &plugins,
        "  require_signatures: true\n  trusted_keys: [\"{work}/release.pub\"]\n",
    );
    let config = write_config(work, &yaml);
    let o = plugd_async(vec![
        "install".into(),
        "hello@=1.0.0".into(),
        "--catalog".into(),
        url.clone(),
        "--config".into(),
        s(&config),
    ])
    .await;
    let out = ok(&o);
    assert!(
        out.contains("installed hello 1.0.0") && out.contains("signed by trusted key"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("fetching hello 1.0.0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(installed_version(&plugins, "hello"), "1.0.0");
    assert!(plugins.join("hello").join(plugd_pkg::RECORD_FILE).is_file());

    // serve: the installed, signed plugin loads and answers.
    let server = TestServer::start(&yaml).await;
    assert_eq!(greeting(&server).await, "Hello, Ada!");

    // update: 1.1.0 is installed, 1.0.0 kept; the running server is asked to reload.
    let reload_args = |cmd: &str| -> Vec<String> {
        let mut v: Vec<String> = vec![cmd.into()];
        if cmd == "update" {
            v.extend(["--catalog".into(), url.clone()]);
        }
        v.extend([
            "hello".into(),
            "--config".into(),
            s(&config),
            "--server".into(),
            server.admin_url.clone(),
            "--token".into(),
            TOKEN.into(),
        ]);
        v
    };
    let o = plugd_async(reload_args("update")).await;
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("installed hello 1.1.0") && out.contains("replaced 1.0.0, kept for rollback"),
        "{out}"
    );
    assert_eq!(installed_version(&plugins, "hello"), "1.1.0");
    assert!(plugins.join(".versions/hello/1.0.0/plugin.yaml").is_file());
    check_reload(&server, &o, "1.1.0", "Howdy, Ada!").await;

    // rollback: back to 1.0.0 on disk (1.1.0 kept), and the same reload request.
    let o = plugd_async(reload_args("rollback")).await;
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("rolled back hello from 1.1.0 to 1.0.0"),
        "{out}"
    );
    assert_eq!(installed_version(&plugins, "hello"), "1.0.0");
    assert!(plugins.join(".versions/hello/1.1.0/plugin.yaml").is_file());
    check_reload(&server, &o, "1.0.0", "Hello, Ada!").await;
    server.stop().await;

    // A fresh server loads the rolled-back version: it still passes the signature check.
    let server = TestServer::start(&yaml).await;
    assert_eq!(greeting(&server).await, "Hello, Ada!");
    let info = server.host.plugin_info("hello").unwrap();
    assert_eq!(info.version, "1.0.0");
    server.stop().await;
}

/// What `plugd update`/`rollback` said about the hot reload, checked against the server.
///
/// While the server has no `POST /admin/plugins/{name}/reload`, the CLI must say that the
/// reload was refused (404) and that the new version is on disk, and exit non-zero; once the
/// endpoint exists, the running server must serve the new version.
async fn check_reload(server: &TestServer, o: &Output, version: &str, greeting_now: &str) {
    let out = stdout(o);
    if out.contains(&format!("reloaded hello {version} in the running server")) {
        assert!(o.status.success(), "{out}");
        let info = server.host.plugin_info("hello").unwrap();
        assert_eq!(info.version, version);
        assert_eq!(greeting(server).await, greeting_now);
    } else {
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains("reload of hello refused: the server at")
                && out.contains("answered 404 Not Found to POST /admin/plugins/hello/reload")
                && out.contains(&format!("hello {version} is installed on disk")),
            "{out}"
        );
        assert!(stderr(o).contains("did not reload"), "{}", stderr(o));
        // The old version keeps serving.
        assert_eq!(
            server.host.plugin_info("hello").unwrap().status,
            Status::Running
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_signatures_and_installed_digests_are_checked_at_load() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let plugins = work.join("plugins");
    let v1 = variant(work, "hello", "1.0.0", "Hello", "");
    let package = work.join("hello-1.0.0.plugd");
    ok(&plugd(&["pack", &s(&v1), "-o", &s(&package)]));
    ok(&plugd(&["keygen", &s(&work.join("release"))]));

    // Installed unsigned (nothing requires signatures on the command line).
    let out = ok(&plugd(&[
        "install",
        &s(&package),
        "--plugins-dir",
        &s(&plugins),
    ]));
    assert!(
        out.contains("installed hello 1.0.0") && out.contains("unsigned"),
        "{out}"
    );

    let yaml = host_config(
        work,
        &plugins,
        "  require_signatures: true\n  trusted_keys: [\"{work}/release.pub\"]\n",
    );
    let config = write_config(work, &yaml);
    let out = fails(&plugd(&["check", "--config", &s(&config)]));
    let at = format!("plugin 'hello' 1.0.0 at {}", s(&plugins.join("hello")));
    assert!(out.contains(&format!("{at} is not signed")), "{out}");
    let server = TestServer::start(&yaml).await;
    let info = server.host.plugin_info("hello").unwrap();
    assert_eq!(info.status, Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(
        message.contains(&format!("{at} is not signed, and signatures are required")),
        "{message}"
    );
    assert_ne!(server.get("/plugins/hello/greet").await.status(), 200);
    server.stop().await;

    // Signed and reinstalled: it loads.
    ok(&plugd(&[
        "sign",
        &s(&package),
        "--key",
        &s(&work.join("release.key")),
    ]));
    let out = ok(&plugd(&["install", &s(&package), "--config", &s(&config)]));
    assert!(out.contains("signed by trusted key"), "{out}");
    ok(&plugd(&["check", "--config", &s(&config)]));
    let server = TestServer::start(&yaml).await;
    assert_eq!(greeting(&server).await, "Hello, Ada!");
    server.stop().await;

    // A file changed after install is refused at load, signatures required or not.
    std::fs::write(
        plugins.join("hello/plugin.yaml"),
        std::fs::read_to_string(plugins.join("hello/plugin.yaml")).unwrap() + "# edited\n",
    )
    .unwrap();
    let server = TestServer::start(&yaml).await;
    let info = server.host.plugin_info("hello").unwrap();
    assert_eq!(info.status, Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(
        message.contains("plugin.yaml was changed after install"),
        "{message}"
    );
    server.stop().await;
    let open = host_config(work, &plugins, "");
    let server = TestServer::start(&open).await;
    assert_eq!(
        server.host.plugin_info("hello").unwrap().status,
        Status::Error
    );
    server.stop().await;

    // A package signed by another key is refused at install.
    ok(&plugd(&["keygen", &s(&work.join("other"))]));
    ok(&plugd(&[
        "sign",
        &s(&package),
        "--key",
        &s(&work.join("other.key")),
    ]));
    let out = fails(&plugd(&["install", &s(&package), "--config", &s(&config)]));
    assert!(out.contains("which is not trusted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_versions_are_refused_at_install_update_and_load() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let catalog = work.join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let plugins = work.join("plugins");
    for (version, greeting) in [("1.0.0", "Hello"), ("1.1.0", "Howdy"), ("1.2.0", "Hi")] {
        let dir = variant(work, "hello", version, greeting, "");
        ok(&plugd(&["pack", &s(&dir), "-o", &s(&catalog)]));
    }
    ok(&plugd(&["catalog", "build", &s(&catalog)]));
    let blocked = "  blocked:\n    - { name: hello, versions: \"<1.1.0\", reason: \"CVE-2099-0001: leaks tokens\" }\n    - { name: hello, versions: \">=1.2.0\", reason: \"crashes on start\" }\n";
    let yaml = host_config(work, &plugins, blocked);
    let config = write_config(work, &yaml);
    let reason = "plugin 'hello' 1.0.0 is blocked by plugins.blocked (versions <1.1.0): CVE-2099-0001: leaks tokens";

    // Install, from a file and from the catalog.
    let file = catalog.join("hello-1.0.0.plugd");
    let out = fails(&plugd(&["install", &s(&file), "--config", &s(&config)]));
    assert!(out.contains(reason), "{out}");
    let out = fails(&plugd(&[
        "install",
        "hello@=1.0.0",
        "--catalog",
        &s(&catalog),
        "--config",
        &s(&config),
    ]));
    assert!(out.contains(reason), "{out}");
    assert!(!plugins.join("hello").exists());
    // The newest version not blocked.
    let out = ok(&plugd(&[
        "install",
        "hello",
        "--catalog",
        &s(&catalog),
        "--config",
        &s(&config),
    ]));
    assert!(out.contains("installed hello 1.1.0"), "{out}");

    // Update: 1.2.0 is blocked, so there is nothing to update to.
    let out = fails(&plugd(&[
        "update",
        "hello",
        "--catalog",
        &s(&catalog),
        "--config",
        &s(&config),
        "--no-reload",
    ]));
    assert!(
        out.contains("plugin 'hello' 1.2.0 is blocked by plugins.blocked (versions >=1.2.0): crashes on start"),
        "{out}"
    );
    assert_eq!(installed_version(&plugins, "hello"), "1.1.0");

    // Load: 1.0.0 installed without the blocklist, then served with it.
    let out = ok(&plugd(&[
        "install",
        &s(&file),
        "--plugins-dir",
        &s(&plugins),
    ]));
    assert!(out.contains("installed hello 1.0.0"), "{out}");
    let server = TestServer::start(&yaml).await;
    let info = server.host.plugin_info("hello").unwrap();
    assert_eq!(info.status, Status::Error);
    assert_eq!(info.last_error.unwrap().message, reason);
    server.stop().await;
    let out = fails(&plugd(&["check", "--config", &s(&config)]));
    assert!(out.contains(reason), "{out}");
}

#[test]
fn dependencies_and_framework_requirements_on_install() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let catalog = work.join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let plugins = work.join("plugins");
    let pd = s(&plugins);
    let pack = |name: &str, version: &str, extra: &str| {
        let dir = variant(work, name, version, "Hello", extra);
        ok(&plugd(&["pack", &s(&dir), "-o", &s(&catalog)]));
        catalog.join(format!("{name}-{version}.plugd"))
    };
    pack("hello", "1.0.0", "");
    pack("hello", "1.1.0", "");
    let app = pack(
        "app",
        "1.0.0",
        "dependencies:\n  - name: hello\n    version: \"^1.0.0\"\n",
    );
    pack(
        "greeter",
        "1.0.0",
        "dependencies:\n  - name: hello\n    version: \">=2.0.0\"\n",
    );
    // `future` needs a plugd far in the future.
    let future = catalog.join("future-1.0.0.plugd");
    let dir = variant(work, "future", "1.0.0", "Hello", "");
    std::fs::write(
        dir.join("plugin.yaml"),
        std::fs::read_to_string(dir.join("plugin.yaml"))
            .unwrap()
            .replace("version: \">=0.1.0\"", "version: \">=99.0.0\""),
    )
    .unwrap();
    ok(&plugd(&["pack", &s(&dir), "-o", &s(&future)]));
    ok(&plugd(&["catalog", "build", &s(&catalog)]));
    let cat = s(&catalog);

    // A dependency no catalog version satisfies.
    let out = fails(&plugd(&[
        "install",
        "greeter",
        "--catalog",
        &cat,
        "--plugins-dir",
        &pd,
    ]));
    assert!(
        out.contains("no version of 'hello' can be installed")
            && out.contains("hello 1.1.0 does not satisfy >=2.0.0 (required by greeter 1.0.0)"),
        "{out}"
    );
    // A package file whose dependency is missing, with no catalog to take it from.
    let out = fails(&plugd(&["install", &s(&app), "--plugins-dir", &pd]));
    assert!(
        out.contains("'hello' is needed in ^1.0.0 (required by app 1.0.0), but it is not installed and no catalog was given"),
        "{out}"
    );
    assert!(!plugins.join("app").exists());

    // Framework incompatibility, from a file and from the catalog.
    let out = fails(&plugd(&["install", &s(&future), "--plugins-dir", &pd]));
    assert!(
        out.contains("future 1.0.0 requires plugd (framework) >=99.0.0, this is plugd"),
        "{out}"
    );
    let out = fails(&plugd(&[
        "install",
        "future",
        "--catalog",
        &cat,
        "--plugins-dir",
        &pd,
    ]));
    assert!(
        out.contains("no version of 'future' can be installed"),
        "{out}"
    );
    assert!(!plugins.join("future").exists());

    // The dependency comes along, installed first.
    let out = ok(&plugd(&[
        "install",
        "app",
        "--catalog",
        &cat,
        "--plugins-dir",
        &pd,
    ]));
    let hello_at = out.find("installed hello 1.1.0").expect(&out);
    let app_at = out.find("installed app 1.0.0").expect(&out);
    assert!(hello_at < app_at, "{out}");
    let out = ok(&plugd(&[
        "install",
        "hello",
        "--catalog",
        &cat,
        "--plugins-dir",
        &pd,
    ]));
    assert!(out.contains("hello 1.1.0 is already installed"), "{out}");

    // hello cannot go below what app needs... nor be removed while app is installed.
    let out = fails(&plugd(&["uninstall", "hello", "--plugins-dir", &pd]));
    assert!(
        out.contains("cannot uninstall 'hello': installed plugins depend on it: app 1.0.0 (needs hello ^1.0.0)"),
        "{out}"
    );
    ok(&plugd(&["uninstall", "app", "--plugins-dir", &pd]));
    ok(&plugd(&["uninstall", "hello", "--plugins-dir", &pd]));
    assert!(!plugins.join("hello").exists());
}

#[test]
fn damaged_packages_are_refused_with_nothing_written() {
    guests_built();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let plugins = work.join("plugins");
    let package = work.join("hello-1.0.0.plugd");
    ok(&plugd(&["pack", &s(&example("hello")), "-o", &s(&package)]));
    // Signed, so that verify with the trusted key gets past the signature to the contents.
    ok(&plugd(&["keygen", &s(&work.join("release"))]));
    ok(&plugd(&[
        "sign",
        &s(&package),
        "--key",
        &s(&work.join("release.key")),
    ]));
    let mut bytes = std::fs::read(&package).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let damaged = work.join("damaged.plugd");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = fails(&plugd(&[
        "install",
        &s(&damaged),
        "--plugins-dir",
        &s(&plugins),
    ]));
    // A flipped byte in the zstd stream either breaks decoding or decodes to other bytes, which
    // the digests of SHA256SUMS then catch: both are refusals before anything is written.
    assert!(
        out.contains("unsafe package: corrupt archive")
            || out.contains("does not match its digest in SHA256SUMS"),
        "{out}"
    );
    let out = fails(&plugd(&[
        "verify",
        &s(&damaged),
        "--trusted-key",
        &s(&work.join("release.pub")),
    ]));
    assert!(
        out.contains("unsafe package: corrupt archive")
            || out.contains("does not match its digest in SHA256SUMS"),
        "{out}"
    );
    assert!(!plugins.join("hello").exists());

    // No server listening: update says so, and that the new version is on disk.
    let catalog = work.join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    ok(&plugd(&[
        "install",
        &s(&package),
        "--plugins-dir",
        &s(&plugins),
    ]));
    let v2 = variant(work, "hello", "1.1.0", "Howdy", "");
    ok(&plugd(&["pack", &s(&v2), "-o", &s(&catalog)]));
    ok(&plugd(&["catalog", "build", &s(&catalog)]));
    let out = ok(&plugd(&[
        "update",
        "--catalog",
        &s(&catalog),
        "--plugins-dir",
        &s(&plugins),
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ]));
    assert!(
        out.contains("no plugd server reachable at http://127.0.0.1:9")
            && out.contains("hello 1.1.0 is installed on disk"),
        "{out}"
    );
    assert_eq!(installed_version(&plugins, "hello"), "1.1.0");
}

/// Security review M7: the operator lists `plugins.trusted_keys` and writes nothing about
/// `require_signatures`. A package whose SIGNATURE was stripped (or replaced by another key's)
/// is refused at install and at load; only `require_signatures: false` lets unsigned ones in,
/// and never one signed by an untrusted key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_keys_alone_require_signed_packages_at_install_and_load() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let plugins = work.join("plugins");
    let v1 = variant(work, "hello", "1.0.0", "Hello", "");
    let package = work.join("hello-1.0.0.plugd");
    ok(&plugd(&["pack", &s(&v1), "-o", &s(&package)]));
    ok(&plugd(&["keygen", &s(&work.join("release"))]));
    ok(&plugd(&["keygen", &s(&work.join("attacker"))]));
    let keys_only = host_config(work, &plugins, "  trusted_keys: [\"{work}/release.pub\"]\n");
    let config = write_config(work, &keys_only);
    let at = format!("plugin 'hello' 1.0.0 at {}", s(&plugins.join("hello")));

    // Install: the unsigned package is refused, saying what fixes it.
    let out = fails(&plugd(&["install", &s(&package), "--config", &s(&config)]));
    assert!(
        out.contains("hello 1.0.0 is not signed, and signatures are required")
            && out.contains("plugd sign")
            && out.contains("require_signatures: false"),
        "{out}"
    );
    assert!(!plugins.join("hello").exists());

    // Load: put there without the config (as a tampered catalog would have it installed).
    ok(&plugd(&[
        "install",
        &s(&package),
        "--plugins-dir",
        &s(&plugins),
    ]));
    let out = fails(&plugd(&["check", "--config", &s(&config)]));
    assert!(
        out.contains(&format!("{at} is not signed, and signatures are required")),
        "{out}"
    );
    let server = TestServer::start(&keys_only).await;
    let info = server.host.plugin_info("hello").unwrap();
    assert_eq!(info.status, Status::Error);
    let message = info.last_error.unwrap().message;
    assert!(
        message.contains(&format!("{at} is not signed, and signatures are required")),
        "{message}"
    );
    assert_ne!(server.get("/plugins/hello/greet").await.status(), 200);
    server.stop().await;

    // Written false: the unsigned plugin loads (with a warning at install).
    let opted_out = host_config(
        work,
        &plugins,
        "  trusted_keys: [\"{work}/release.pub\"]\n  require_signatures: false\n",
    );
    let config_false = work.join("plugd-optional.yaml");
    std::fs::write(
        &config_false,
        opted_out.replace("{data}", &s(&work.join("data"))),
    )
    .unwrap();
    let o = plugd(&["install", &s(&package), "--config", &s(&config_false)]);
    ok(&o);
    assert!(
        stderr(&o).contains(
            "hello 1.0.0 is not signed; it installs because plugins.require_signatures is false"
        ),
        "{}",
        stderr(&o)
    );
    ok(&plugd(&["check", "--config", &s(&config_false)]));

    // Signed by another key: refused at install and at load even with require_signatures: false.
    ok(&plugd(&[
        "sign",
        &s(&package),
        "--key",
        &s(&work.join("attacker.key")),
    ]));
    let out = fails(&plugd(&[
        "install",
        &s(&package),
        "--config",
        &s(&config_false),
    ]));
    assert!(out.contains("which is not trusted"), "{out}");
    ok(&plugd(&[
        "install",
        &s(&package),
        "--plugins-dir",
        &s(&plugins),
    ]));
    for cfg in [&config, &config_false] {
        let out = fails(&plugd(&["check", "--config", &s(cfg)]));
        assert!(
            out.contains(&format!("{at} is signed by key"))
                && out.contains("which is not trusted (trusted keys: "),
            "{out}"
        );
    }

    // Signed by the trusted key: installs and loads with the config as first written.
    ok(&plugd(&[
        "sign",
        &s(&package),
        "--key",
        &s(&work.join("release.key")),
    ]));
    let out = ok(&plugd(&["install", &s(&package), "--config", &s(&config)]));
    assert!(out.contains("signed by trusted key"), "{out}");
    ok(&plugd(&["check", "--config", &s(&config)]));
}

/// Security review M7: a plain http catalog is refused (search, install, update) unless
/// `--allow-http`; loopback http stays allowed (the catalog tests above serve one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_catalogs_need_allow_http() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let catalog = work.join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let v1 = variant(work, "hello", "1.0.0", "Hello", "");
    ok(&plugd(&["pack", &s(&v1), "-o", &s(&catalog)]));
    ok(&plugd(&["catalog", "build", &s(&catalog)]));
    let plugins = s(&work.join("plugins"));
    // Refused before any connection: nothing listens on 192.0.2.1 (TEST-NET-1).
    let remote = "http://192.0.2.1/catalog/";
    for args in [
        vec!["search", "hello", "--catalog", remote],
        vec![
            "install",
            "hello",
            "--catalog",
            remote,
            "--plugins-dir",
            &plugins,
        ],
        vec![
            "update",
            "--catalog",
            remote,
            "--plugins-dir",
            &plugins,
            "--no-reload",
        ],
    ] {
        let out = fails(&plugd(&args));
        assert!(
            out.contains(&format!("{remote}: refusing a plain http:// catalog"))
                && out.contains("use https://, or pass --allow-http"),
            "{args:?}: {out}"
        );
    }
    // Loopback http: no flag needed; with the flag, the same.
    let url = serve_dir(catalog.clone()).await;
    for extra in [None, Some("--allow-http")] {
        let mut args = vec![
            "install".to_string(),
            "hello".into(),
            "--catalog".into(),
            url.clone(),
            "--plugins-dir".into(),
            plugins.clone(),
        ];
        args.extend(extra.map(String::from));
        let out = ok(&plugd_async(args).await);
        assert!(
            out.contains("installed hello 1.0.0") || out.contains("already installed"),
            "{out}"
        );
    }
}
