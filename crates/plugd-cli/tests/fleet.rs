//! A fleet of three `plugd serve` processes on loopback behind nginx (Debian's package, as the
//! load balancer), sharing PostgreSQL (storage, status), Redis (cache) and NATS JetStream (events,
//! fleet control): what one instance writes the others read, events reach the instances their
//! subscription says, a config change made on one reaches all, and `plugd rollout` moves the
//! fleet to a good version under wrk load without a failed request, and back from a bad one by
//! itself. The servers come from scripts/services.sh (scripts/test.sh runs it first).
//!
//! A test binary of its own: cargo runs test binaries one after another, so the wrk load of the
//! rollouts never shares the machine with the deadline-sensitive tests of `tests/it`.

#[allow(dead_code)]
#[path = "it/browser.rs"]
mod browser;
#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TOKEN, guests_built, test_plugin};

fn plugd() -> &'static str {
    env!("CARGO_BIN_EXE_plugd")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn server(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Each test's own names on the shared servers.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .subsec_nanos();
    format!("t{}x{nanos}", std::process::id())
}

/// A process this test started; killed (by its pid) when dropped.
struct Process {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Drop for Process {
    /// SIGTERM first (nginx's master then stops its workers; plugd leaves the fleet), SIGKILL
    /// after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

struct Instance {
    name: String,
    url: String,
    admin: String,
    config: PathBuf,
    process: Process,
}

/// Copy a built plugin folder (manifest and component) to `to`, with `edit` applied to the
/// manifest.
fn copy_plugin(from: &Path, to: &Path, edit: impl Fn(String) -> String) {
    std::fs::create_dir_all(to).expect("plugin folder");
    std::fs::copy(from.join("plugin.wasm"), to.join("plugin.wasm")).expect("copy plugin.wasm");
    let manifest = std::fs::read_to_string(from.join("plugin.yaml")).expect("manifest");
    std::fs::write(to.join("plugin.yaml"), edit(manifest)).expect("write manifest");
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(plugd())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run plugd {args:?}: {e}"))
}

fn pack(dir: &Path, out: &Path) -> PathBuf {
    let o = run(&[
        "pack",
        dir.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "plugd pack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!(
                "{}-",
                dir.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .split('@')
                    .next()
                    .unwrap()
            )) && name.ends_with(".plugd")
        })
        .expect("the package")
}

struct Fleet {
    dir: tempfile::TempDir,
    instances: Vec<Instance>,
    client: reqwest::Client,
}

impl Fleet {
    async fn start(names: &[&str]) -> Fleet {
        guests_built();
        let id = unique();
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = server("PLUGD_TEST_POSTGRES", "127.0.0.1:5432");
        let redis = server("PLUGD_TEST_REDIS", "127.0.0.1:6379");
        let nats = server("PLUGD_TEST_NATS", "127.0.0.1:4222");
        // reloader 1.0.0 as a package, installed into every instance's plugins folder.
        let v1 = dir.path().join("src/reloader");
        copy_plugin(&test_plugin("reloader"), &v1, |m| m);
        let packages = dir.path().join("packages");
        std::fs::create_dir_all(&packages).unwrap();
        let v1_package = pack(&v1, &packages);
        let mut instances = Vec::new();
        for name in names {
            let home = dir.path().join(name);
            let plugins = home.join("plugins");
            copy_plugin(&test_plugin("fleetwise"), &plugins.join("fleetwise"), |m| m);
            let (port, admin_port) = (free_port(), free_port());
            let config = home.join("plugd.yaml");
            std::fs::write(
                &config,
                format!(
                    r#"
data_dir: data
server: {{ listen: "127.0.0.1:{port}" }}
admin: {{ listen: "127.0.0.1:{admin_port}", token: "{TOKEN}" }}
backends:
  storage: postgres
  status: postgres
  cache: redis
  events: nats
  postgres: {{ url: "postgres://postgres@{pg}/test", schema: "{id}", pool_size: 4 }}
  redis: {{ url: "redis://{redis}", prefix: "{id}" }}
  nats: {{ url: "nats://{nats}", stream: "{id}", subject_prefix: "{id}.events" }}
fleet:
  enabled: true
  name: "{id}"
  instance: "{name}"
  heartbeat: 300ms
  rollout: {{ window: 2s, step_timeout: 30s, min_requests: 10 }}
status: {{ interval: 1s }}
plugins:
  directory: plugins
  plugins:
    - name: fleetwise
      permissions: {{ router: true, cache: true }}
      # /seen answers from the wasm instance's memory: one instance, so every event is in it.
      limits: {{ instances: 1 }}
    - name: reloader
      permissions: {{ router: true }}
"#
                ),
            )
            .unwrap();
            let o = run(&[
                "install",
                v1_package.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ]);
            assert!(
                o.status.success(),
                "plugd install: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let log = home.join("plugd.log");
            let child = Command::new(plugd())
                .args(["serve", "--config", config.to_str().unwrap()])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn plugd serve");
            instances.push(Instance {
                name: name.to_string(),
                url: format!("http://127.0.0.1:{port}"),
                admin: format!("http://127.0.0.1:{admin_port}"),
                config,
                process: Process {
                    child,
                    what: format!("plugd serve ({name})"),
                    log,
                },
            });
        }
        let fleet = Fleet {
            dir,
            instances,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for i in &fleet.instances {
            fleet
                .until(&format!("{} ready", i.name), || async {
                    fleet
                        .client
                        .get(format!("{}/readyz", i.url))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                })
                .await;
        }
        let all = names.len();
        fleet
            .until("every instance in the fleet", || async {
                fleet.view(0).await["instances"]
                    .as_array()
                    .is_some_and(|a| a.len() == all)
            })
            .await;
        fleet
    }

    fn logs(&self) -> String {
        self.instances
            .iter()
            .map(|i| format!("--- {}:\n{}", i.process.what, i.process.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn until<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(40);
        while !check().await {
            if Instant::now() > deadline {
                panic!("{what}: not within 40 s\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, i: usize, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.instances[i].url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.instances[i].name));
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    async fn admin(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .client
            .request(method, format!("{}/admin{path}", self.instances[i].admin))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("admin call");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn view(&self, i: usize) -> Value {
        self.admin(i, reqwest::Method::GET, "/fleet", None).await.1
    }

    /// The version of `plugin` each instance reports, as the fleet view of instance `i` shows.
    async fn versions(&self, i: usize, plugin: &str) -> Vec<(String, String)> {
        let view = self.view(i).await;
        view["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|inst| {
                        let version = inst["plugins"]
                            .as_array()
                            .and_then(|ps| ps.iter().find(|p| p["name"] == plugin))
                            .and_then(|p| p["version"].as_str())
                            .unwrap_or("")
                            .to_string();
                        (inst["instance"].as_str().unwrap_or("").to_string(), version)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A package of reloader at `version`, whose `mode` (ok, refuse) and label are the defaults
    /// of its config.
    fn reloader_package(&self, version: &str, mode: &str, label: &str) -> PathBuf {
        let src = self.dir.path().join(format!("src/reloader@{version}"));
        copy_plugin(&test_plugin("reloader"), &src, |m| {
            m.replace("version: 1.0.0", &format!("version: {version}"))
                .replace("default: \"v1\"", &format!("default: \"{label}\""))
                .replace("default: \"ok\"", &format!("default: \"{mode}\""))
        });
        let out = self.dir.path().join(format!("packages-{version}"));
        std::fs::create_dir_all(&out).unwrap();
        pack(&src, &out)
    }

    fn install(&self, i: usize, package: &Path) {
        let o = run(&[
            "install",
            package.to_str().unwrap(),
            "--config",
            self.instances[i].config.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "plugd install: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// nginx in front of the instances: its own config, prefix and port; ended by its pid.
fn nginx(fleet: &Fleet) -> (Process, String) {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run scripts/services.sh (it installs Debian's nginx)");
    let prefix = fleet.dir.path().join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let port = free_port();
    let upstreams: String = fleet
        .instances
        .iter()
        .map(|i| format!("    server {};\n", i.url.trim_start_matches("http://")))
        .collect();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            r#"worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream fleet {{
{upstreams}    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://fleet;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#,
            prefix = prefix.display()
        ),
    )
    .unwrap();
    let log = prefix.join("logs/stderr.log");
    let child = Command::new(nginx)
        .args(["-c", conf.to_str().unwrap(), "-p", prefix.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn nginx");
    (
        Process {
            child,
            what: "nginx".into(),
            log,
        },
        format!("http://127.0.0.1:{port}"),
    )
}

/// wrk against `url` for `seconds`; its report.
fn wrk(url: &str, seconds: u32) -> std::process::Child {
    Command::new("wrk")
        .args([
            "-t2",
            "-c16",
            &format!("-d{seconds}s"),
            "--timeout",
            "10s",
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk is not installed: run scripts/services.sh (it installs Debian's wrk)")
}

fn rollout(fleet: &Fleet, i: usize, version: &str) -> std::process::Output {
    run(&[
        "rollout",
        "reloader",
        "--to",
        version,
        "--config",
        fleet.instances[i].config.to_str().unwrap(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_behind_nginx_share_state_events_config_and_roll_out() {
    let fleet = Fleet::start(&["a", "b", "c"]).await;
    let (balancer, lb) = nginx(&fleet);
    fleet
        .until("nginx answers", || async {
            fleet
                .client
                .get(format!("{lb}/plugins/reloader/version"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;

    // Storage (PostgreSQL): written through A, read through B.
    assert_eq!(
        fleet
            .get(0, "/plugins/fleetwise/kv?key=greeting&value=from-a")
            .await
            .0,
        200
    );
    assert_eq!(
        fleet.get(1, "/plugins/fleetwise/kv?key=greeting").await,
        (200, "from-a".to_string())
    );
    // Cache (Redis): set on B, seen on C.
    assert_eq!(
        fleet
            .get(1, "/plugins/fleetwise/cache?key=colour&value=teal")
            .await
            .0,
        200
    );
    assert_eq!(
        fleet.get(2, "/plugins/fleetwise/cache?key=colour").await,
        (200, "teal".to_string())
    );

    // Events (NATS JetStream): fleet.note reaches every instance once; each fleet.job reaches
    // one instance of the fleet.
    assert_eq!(
        fleet
            .get(
                0,
                "/plugins/fleetwise/publish?topic=fleet.note&payload=hello"
            )
            .await,
        (200, "published".to_string())
    );
    for i in 0..3 {
        fleet
            .until(
                &format!("fleet.note on {}", fleet.instances[i].name),
                || async {
                    let seen: Vec<String> =
                        serde_json::from_str(&fleet.get(i, "/plugins/fleetwise/seen").await.1)
                            .unwrap_or_default();
                    seen.iter().filter(|s| *s == "fleet.note:hello").count() == 1
                },
            )
            .await;
    }
    let jobs = 30;
    for n in 0..jobs {
        let (status, _) = fleet
            .get(
                n % 3,
                &format!("/plugins/fleetwise/publish?topic=fleet.job&payload=job{n}"),
            )
            .await;
        assert_eq!(status, 200);
    }
    let all_jobs = || async {
        let mut seen = Vec::new();
        for i in 0..3 {
            let s: Vec<String> =
                serde_json::from_str(&fleet.get(i, "/plugins/fleetwise/seen").await.1)
                    .unwrap_or_default();
            seen.extend(s.into_iter().filter(|s| s.starts_with("fleet.job:")));
        }
        seen
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while all_jobs().await.len() < jobs {
        if Instant::now() > deadline {
            let mut per_instance = Vec::new();
            for i in 0..3 {
                per_instance.push(fleet.get(i, "/plugins/fleetwise/seen").await.1);
            }
            panic!(
                "not every fleet.job handled within 40 s: {per_instance:?}\n{}",
                fleet.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut handled = all_jobs().await;
    handled.sort();
    let mut expected: Vec<String> = (0..jobs).map(|n| format!("fleet.job:job{n}")).collect();
    expected.sort();
    assert_eq!(handled, expected, "each job once in the whole fleet");
    // An undeclared topic is refused by the host before NATS sees it.
    let (status, body) = fleet
        .get(0, "/plugins/fleetwise/publish?topic=fleet.secret&payload=x")
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("undeclared event 'fleet.secret'"), "{body}");

    // A config change made on B reaches A and C.
    let (status, body) = fleet
        .admin(
            1,
            reqwest::Method::PUT,
            "/plugins/reloader/config",
            Some(serde_json::json!({ "label": "relabelled", "mode": "ok" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for i in [0, 2] {
        fleet
            .until(
                &format!("config on {}", fleet.instances[i].name),
                || async {
                    fleet
                        .get(i, "/plugins/reloader/version")
                        .await
                        .1
                        .contains("relabelled")
                },
            )
            .await;
    }

    // A good version, rolled out under load through nginx: no failed request.
    let good = fleet.reloader_package("1.1.0", "ok", "v2");
    fleet.install(0, &good);
    let load = wrk(&format!("{lb}/plugins/reloader/version"), 14);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = rollout(&fleet, 0, "1.1.0");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the good rollout failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fleet.logs()
    );
    assert!(
        stdout.contains("completed: every instance runs reloader 1.1.0"),
        "{stdout}"
    );
    let report = load.wait_with_output().expect("wrk");
    let report = String::from_utf8_lossy(&report.stdout).to_string();
    println!("the good rollout:\n{stdout}\nwrk through nginx meanwhile:\n{report}");
    assert!(report.contains("requests in"), "wrk ran: {report}");
    assert!(
        !report.contains("Non-2xx"),
        "a request failed during the good rollout:\n{report}\n{stdout}"
    );
    assert!(
        !report.contains("Socket errors"),
        "a connection failed during the good rollout:\n{report}"
    );
    let versions = fleet.versions(2, "reloader").await;
    assert_eq!(
        versions,
        vec![
            ("a".into(), "1.1.0".into()),
            ("b".into(), "1.1.0".into()),
            ("c".into(), "1.1.0".into())
        ]
    );

    // A bad version (every request fails): the fleet goes back to 1.1.0 by itself.
    let bad = fleet.reloader_package("1.2.0", "refuse", "bad");
    fleet.install(0, &bad);
    let load = wrk(&format!("{lb}/plugins/reloader/version"), 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = rollout(&fleet, 0, "1.2.0");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("the bad rollout:\n{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("rolled back: 1.2.0 is worse than 1.1.0: error rate"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("rollback"), "{stdout}");
    let _ = load.wait_with_output();
    let versions = fleet.versions(1, "reloader").await;
    assert_eq!(
        versions,
        vec![
            ("a".into(), "1.1.0".into()),
            ("b".into(), "1.1.0".into()),
            ("c".into(), "1.1.0".into())
        ],
        "{stdout}"
    );
    for _ in 0..6 {
        let r = fleet
            .client
            .get(format!("{lb}/plugins/reloader/version"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the fleet serves the old version again");
        assert!(!r.text().await.unwrap().contains("bad"));
    }

    // The dashboard of instance a shows the fleet: the three instances on 1.1.0, both rollouts.
    let driver = browser::Driver::start().await;
    driver
        .call(
            "POST",
            "/url",
            serde_json::json!({ "url": format!("{}/admin/", fleet.instances[0].admin) }),
        )
        .await;
    let input = driver.find("#token").await;
    driver
        .call(
            "POST",
            &format!("/element/{input}/value"),
            serde_json::json!({ "text": TOKEN }),
        )
        .await;
    driver.click("#connect").await;
    let shown = driver
        .wait_for(
            "the fleet in the dashboard",
            "return { instances: Array.from(document.querySelectorAll('#instances tbody tr')).map(tr => ({ \
                name: tr.dataset.instance, \
                reloader: Array.from(tr.querySelectorAll('li[data-plugin=reloader]')).map(li => li.dataset.version) })), \
              rollouts: Array.from(document.querySelectorAll('#rollouts > li')).map(li => li.firstChild.textContent) };",
            |v| {
                v["instances"].as_array().is_some_and(|a| a.len() == 3)
                    && v["rollouts"].as_array().is_some_and(|a| a.len() == 2)
            },
        )
        .await;
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(shown["instances"][i]["name"], *name, "{shown}");
        assert_eq!(
            shown["instances"][i]["reloader"],
            serde_json::json!(["1.1.0"]),
            "{shown}"
        );
    }
    let rollouts = shown["rollouts"].to_string();
    assert!(
        rollouts.contains("reloader 1.1.0 → 1.2.0: rolled back"),
        "{rollouts}"
    );
    assert!(
        rollouts.contains("reloader 1.0.0 → 1.1.0: completed"),
        "{rollouts}"
    );
    browser::screenshot(&driver, "dashboard-fleet.png").await;
    drop(driver);

    // A version installed and reloaded on one instance (plugd install, plugd reload) reaches the
    // others: its package travels through the fleet's object store.
    let next = fleet.reloader_package("1.3.0", "ok", "v3");
    fleet.install(1, &next);
    let o = run(&[
        "reload",
        "reloader",
        "--config",
        fleet.instances[1].config.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "plugd reload: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    fleet
        .until("1.3.0 on every instance", || async {
            fleet
                .versions(0, "reloader")
                .await
                .iter()
                .all(|(_, v)| v == "1.3.0")
        })
        .await;
    for i in [0, 2] {
        let folder = fleet.instances[i]
            .config
            .parent()
            .unwrap()
            .join("plugins/reloader/plugin.yaml");
        let manifest = std::fs::read_to_string(&folder).unwrap();
        assert!(
            manifest.contains("version: 1.3.0"),
            "{} has it on disk too",
            fleet.instances[i].name
        );
    }
    drop(balancer);
}

#[test]
fn plugd_check_connects_to_each_engine_and_names_the_one_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique();
    let config = |pg: &str| {
        format!(
            r#"
data_dir: data
backends:
  storage: postgres
  cache: redis
  events: nats
  postgres: {{ url: "postgres://postgres:hunter2@{pg}/test", schema: "{id}", connect_timeout: 1s }}
  redis: {{ url: "redis://{redis}", prefix: "{id}" }}
  nats: {{ url: "nats://{nats}" }}
"#,
            redis = server("PLUGD_TEST_REDIS", "127.0.0.1:6379"),
            nats = server("PLUGD_TEST_NATS", "127.0.0.1:4222"),
        )
    };
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        config(&server("PLUGD_TEST_POSTGRES", "127.0.0.1:5432")),
    )
    .unwrap();
    let o = run(&["check", "--config", good.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for engine in ["postgres", "redis", "nats"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("backend {engine}: ")) && l.contains("answered in")),
            "{out}"
        );
    }
    assert!(
        out.contains("postgres://postgres:***@"),
        "the password is not shown: {out}"
    );
    assert!(!out.contains("hunter2"));

    // Nothing listens on the port of a free, closed socket.
    let closed = format!("127.0.0.1:{}", free_port());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, config(&closed)).unwrap();
    let o = run(&["check", "--config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "backends.postgres (postgres://postgres:***@{closed}/test)"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
