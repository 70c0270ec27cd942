//! The `plugd` binary: validate, and serve with a clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{example, guests_built};

fn plugd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plugd"))
}

#[test]
fn validate_prints_ok_for_a_good_manifest() {
    let out = plugd()
        .arg("validate")
        .arg(example("hello"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn validate_names_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.yaml");
    std::fs::write(&path, "version: 1.0.0\ndescription: d\nauthor: a\n").unwrap();
    let out = plugd().arg("validate").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed to parse manifest: missing required field: name"),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(out.stdout.is_empty());

    std::fs::write(&path, "name: x\nversion: 1.0\ndescription: d\nauthor: a\n").unwrap();
    let out = plugd().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid version format: must be semantic version (X.Y.Z)"),
        "{err}"
    );
}

#[test]
fn serve_stops_plugins_in_reverse_order_on_sigterm() {
    guests_built();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugd.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ listen: '127.0.0.1:0' }}\nadmin: {{ listen: '127.0.0.1:0' }}\ndata_dir: ./data\nplugins:\n  plugins:\n    - name: gatekeeper\n      path: '{}'\n      priority: security\n      permissions: {{ intercept: true }}\n    - name: hello\n      path: '{}'\n      permissions: {{ router: true }}\n",
            example("gatekeeper").display(),
            example("hello").display()
        ),
    )
    .unwrap();
    let mut child = plugd()
        .args(["serve", "--config"])
        .arg(&config)
        .env("PLUGD_LOG", "info")
        .env_remove("PLUGD_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines.iter().any(|l: &String| l.contains("plugd listening")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("plugd did not start:\n{}", lines.join("\n")));
        lines.push(line);
    }
    // It serves: the README's curl, over a plain socket.
    let listening = lines
        .iter()
        .find(|l| l.contains("plugd listening"))
        .unwrap();
    let addr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr in {listening:?}"));
    let reply = http_get(addr, "/plugins/hello/greet?name=Ada");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("Hello, Ada!"), "{reply}");
    // The generated admin token is in the data dir, private.
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    assert_eq!(token.len(), 64);
    // The admin API is on its own listener, not on the one plugins answer on.
    let admin_addr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin_addr="))
        .unwrap_or_else(|| panic!("no admin_addr in {listening:?}"));
    assert_ne!(admin_addr, addr);
    assert!(http_get(addr, "/admin/").starts_with("HTTP/1.1 404"));
    assert!(http_get(admin_addr, "/admin/").starts_with("HTTP/1.1 200"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    lines.extend(rx.iter());
    let log = lines.join("\n");
    assert!(exit.success(), "plugd exited with {exit:?}:\n{log}");
    let stopped: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("plugin stopped"))
        .map(|l| {
            if l.contains("hello") {
                "hello"
            } else {
                "gatekeeper"
            }
        })
        .collect();
    assert_eq!(
        stopped,
        vec!["hello", "gatekeeper"],
        "reverse start order:\n{log}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// A folder with plugin manifests (no components: `check` and `discover` run nothing).
fn plugin_tree(plugins: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in plugins {
        let p = dir.path().join("plugins").join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("plugin.yaml"),
            format!("name: {name}\nversion: 1.0.0\ndescription: d\nauthor: a\n{extra}"),
        )
        .unwrap();
    }
    dir
}

fn check(dir: &std::path::Path, config: &str, json: bool) -> std::process::Output {
    let path = dir.join("plugd.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = plugd();
    cmd.args(["check", "--config"]).arg(&path);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

#[test]
fn check_prints_start_order_and_graph_as_json() {
    let tree = plugin_tree(&[
        (
            "app",
            "dependencies:\n  - name: db\n    version: '>=1.0.0,<2.0.0'\n",
        ),
        ("db", ""),
        ("audit", "priority: infrastructure\n"),
        ("cache", "before: [db]\n"),
    ]);
    let config = "plugins:\n  plugins:\n    - name: app\n    - name: db\n    - name: audit\n    - name: cache\n";
    let out = check(tree.path(), config, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["start_order"],
        serde_json::json!(["audit", "cache", "db", "app"])
    );
    assert_eq!(v["dependency_graph"]["app"], serde_json::json!(["db"]));
    assert_eq!(v["dependency_graph"]["db"], serde_json::json!([]));
}

/// `plugd check` tells the operator what each plugin will be able to do before it runs.
#[test]
fn check_reports_what_each_plugin_is_granted() {
    let tree = plugin_tree(&[
        (
            "auth",
            "permissions: [router, intercept, identity, database]\nhooks:\n  - { type: pre_request }\nfailure_policy: closed\n",
        ),
        ("shop", "permissions: [router, network, exec]\n"),
    ]);
    let config = "plugins:\n  plugins:\n    - name: auth\n      permissions: [router, intercept, identity]\n      intercept: { paths: ['/api/*'] }\n      hide_headers: [cookie]\n    - name: shop\n      permissions: [router, network, exec]\n      network: { allow: [api.example.com] }\n      exec: { allow: [git, { command: convert, args: ['*.png', out.png] }] }\n";
    let out = check(tree.path(), config, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let auth = &v["grants"]["auth"];
    assert_eq!(
        auth["permissions"],
        serde_json::json!(["router", "intercept", "identity"])
    );
    assert_eq!(auth["not_granted"], serde_json::json!(["database"]));
    assert_eq!(auth["requests"], serde_json::json!(["/api/*"]));
    assert_eq!(auth["request_hooks"], serde_json::json!(["pre_request"]));
    assert_eq!(auth["identity"], true);
    assert_eq!(auth["hidden_headers"], serde_json::json!(["cookie"]));
    assert_eq!(auth["failure_policy"], "fail_closed");
    let shop = &v["grants"]["shop"];
    assert_eq!(
        shop["requests"],
        serde_json::json!(["own routes (/plugins/shop/…)"])
    );
    assert_eq!(shop["identity"], false);
    assert_eq!(
        shop["network_allow"],
        serde_json::json!(["api.example.com"])
    );
    assert_eq!(
        shop["exec_allow"],
        serde_json::json!(["git <any arguments>", "convert *.png out.png"])
    );

    let out = check(tree.path(), config, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("grants:"), "{text}");
    assert!(
        text.contains("  auth: router, intercept, identity"),
        "{text}"
    );
    assert!(text.contains("declared, not granted: database"), "{text}");
    assert!(text.contains("requests seen: /api/*"), "{text}");
    assert!(text.contains("sets the request identity"), "{text}");
    assert!(
        text.contains("exec.allow: git <any arguments>; convert *.png out.png"),
        "{text}"
    );

    // A plugin that would fail to load for lack of `intercept` fails the check.
    let config = "plugins:\n  plugins:\n    - name: auth\n      permissions: [router]\n";
    let out = check(tree.path(), config, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plugin 'auth': its manifest asks to intercept requests other than its own routes with pre_request hook(s), which needs the 'intercept' permission"),
        "{err}"
    );
}

#[test]
fn check_fails_with_the_contract_error_messages() {
    let tree = plugin_tree(&[
        (
            "auth-plugin",
            "dependencies:\n  - name: cache-plugin\n    version: '>=2.0.0'\n",
        ),
        ("cache-plugin", ""),
    ]);
    // cache-plugin at 1.5.0, below what auth-plugin needs.
    std::fs::write(
        tree.path().join("plugins/cache-plugin/plugin.yaml"),
        "name: cache-plugin\nversion: 1.5.0\ndescription: d\nauthor: a\n",
    )
    .unwrap();
    let config = "plugins:\n  plugins:\n    - name: auth-plugin\n    - name: cache-plugin\n";
    let out = check(tree.path(), config, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "version mismatch: plugin 'auth-plugin' requires 'cache-plugin' >=2.0.0, found 1.5.0"
        ),
        "{err}"
    );

    let config =
        "plugins:\n  plugins:\n    - name: cache-plugin\n      permissions: { database: true }\n";
    let out = check(tree.path(), config, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission mismatch: plugin requests 'database' permission but manifest does not declare it"),
        "{err}"
    );

    let out = check(
        tree.path(),
        "plugins:\n  plugins:\n    - name: ghost\n",
        false,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plugin file not found"));

    let out = check(
        tree.path(),
        "plugins:\n  plugins:\n    - name: auth-plugin\n      prioirty: 3\n",
        false,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 'priority'"));
}

#[test]
fn discover_lists_valid_and_invalid_plugins() {
    let tree = plugin_tree(&[
        ("good", ""),
        ("bad", "permissions: { custom_permission: true }\n"),
    ]);
    std::fs::create_dir_all(tree.path().join("plugins/not-a-plugin")).unwrap();
    let out = plugd()
        .args(["discover", "--json"])
        .arg(tree.path().join("plugins"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["valid"].as_bool()),
        (Some("bad"), Some(false))
    );
    assert!(
        v[0]["error"]
            .as_str()
            .unwrap()
            .contains("unknown permission: custom_permission")
    );
    assert_eq!(
        (v[1]["name"].as_str(), v[1]["valid"].as_bool()),
        (Some("good"), Some(true))
    );
    assert_eq!(v[1]["version"], "1.0.0");
}

#[test]
fn run_calls_a_plugin_command_without_the_http_server() {
    guests_built();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugd.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ listen: '127.0.0.1:1' }}\ndata_dir: ./data\nplugins:\n  plugins:\n    - name: trapper\n      path: '{}'\n      permissions: {{ router: true }}\n",
            crate::support::test_plugin("trapper").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        plugd()
            .args(["run", "--config"])
            .arg(&config)
            .args(args)
            .env("PLUGD_LOG", "warn")
            .output()
            .unwrap()
    };
    // Port 1 is never bound: the command runs in a host without the HTTP server.
    let out = run(&["trapper", "echo", "hello", "--flag"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello --flag\n");
    let out = run(&["trapper", "explode"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command: explode"));
    let out = run(&["nobody", "echo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plugin not found: 'nobody'"));
}

/// One plugin for [`contract_errors_in_every_format`]: name, version, dependencies, framework
/// requirement, declared permissions.
struct Spec<'a> {
    name: &'a str,
    version: &'a str,
    deps: &'a [(&'a str, &'a str)],
    framework: Option<&'a str>,
    declares: &'a [&'a str],
}

fn manifest_text(s: &Spec, format: &str) -> String {
    let perms = |sep: &str, kv: &dyn Fn(&str) -> String| {
        s.declares
            .iter()
            .map(|p| kv(p))
            .collect::<Vec<_>>()
            .join(sep)
    };
    match format {
        "yaml" => {
            let mut t = format!(
                "name: {}\nversion: {}\ndescription: d\nauthor: a\n",
                s.name, s.version
            );
            if let Some(f) = s.framework {
                t.push_str(&format!("framework:\n  version: '{f}'\n"));
            }
            if !s.deps.is_empty() {
                t.push_str("dependencies:\n");
                for (d, v) in s.deps {
                    t.push_str(&format!("  - name: {d}\n    version: '{v}'\n"));
                }
            }
            if !s.declares.is_empty() {
                t.push_str(&format!(
                    "permissions:\n{}\n",
                    perms("\n", &|p| format!("  {p}: true"))
                ));
            }
            t
        }
        "json" => {
            let deps: Vec<String> = s
                .deps
                .iter()
                .map(|(d, v)| format!(r#"{{"name":"{d}","version":"{v}"}}"#))
                .collect();
            let framework = s
                .framework
                .map(|f| format!(r#","framework":{{"version":"{f}"}}"#))
                .unwrap_or_default();
            format!(
                r#"{{"name":"{}","version":"{}","description":"d","author":"a","dependencies":[{}],"permissions":{{{}}}{framework}}}"#,
                s.name,
                s.version,
                deps.join(","),
                perms(",", &|p| format!(r#""{p}":true"#)),
            )
        }
        _ => {
            let mut t = format!(
                "name = \"{}\"\nversion = \"{}\"\ndescription = \"d\"\nauthor = \"a\"\n",
                s.name, s.version
            );
            if !s.declares.is_empty() {
                t.push_str(&format!(
                    "permissions = {{ {} }}\n",
                    perms(", ", &|p| format!("{p} = true"))
                ));
            }
            if let Some(f) = s.framework {
                t.push_str(&format!("[framework]\nversion = \"{f}\"\n"));
            }
            for (d, v) in s.deps {
                t.push_str(&format!(
                    "[[dependencies]]\nname = \"{d}\"\nversion = \"{v}\"\n"
                ));
            }
            t
        }
    }
}

fn config_text(plugins: &[Listed], format: &str) -> String {
    match format {
        "yaml" => {
            let mut t = String::from("plugins:\n  plugins:\n");
            for (name, grants) in plugins {
                t.push_str(&format!("    - name: {name}\n"));
                if !grants.is_empty() {
                    let g: Vec<String> = grants.iter().map(|g| format!("{g}: true")).collect();
                    t.push_str(&format!("      permissions: {{ {} }}\n", g.join(", ")));
                }
            }
            t
        }
        "json" => {
            let items: Vec<String> = plugins
                .iter()
                .map(|(name, grants)| {
                    let g: Vec<String> = grants.iter().map(|g| format!(r#""{g}":true"#)).collect();
                    format!(r#"{{"name":"{name}","permissions":{{{}}}}}"#, g.join(","))
                })
                .collect();
            format!(r#"{{"plugins":{{"plugins":[{}]}}}}"#, items.join(","))
        }
        _ => {
            let mut t = String::new();
            for (name, grants) in plugins {
                t.push_str(&format!("[[plugins.plugins]]\nname = \"{name}\"\n"));
                if !grants.is_empty() {
                    let g: Vec<String> = grants.iter().map(|g| format!("{g} = true")).collect();
                    t.push_str(&format!("permissions = {{ {} }}\n", g.join(", ")));
                }
            }
            t
        }
    }
}

/// Check a set of plugins written in one format; the error text on failure.
/// Plugins, the config's entries with their grants, and the expected message.
type Case<'a> = (Vec<Spec<'a>>, Vec<Listed<'a>>, &'a str);
/// A config entry: name and granted permissions.
type Listed<'a> = (&'a str, &'a [&'a str]);

fn check_in(format: &str, specs: &[Spec], listed: &[Listed]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    for s in specs {
        let p = dir.path().join("plugins").join(s.name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(format!("plugin.{format}")), manifest_text(s, format)).unwrap();
    }
    let config = dir.path().join(format!("plugd.{format}"));
    std::fs::write(&config, config_text(listed, format)).unwrap();
    let out = plugd()
        .args(["check", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn contract_errors_in_every_format() {
    let plain = |name, version| Spec {
        name,
        version,
        deps: &[],
        framework: None,
        declares: &[],
    };
    for format in ["yaml", "json", "toml"] {
        let ok = check_in(
            format,
            &[
                plain("db", "1.5.0"),
                Spec {
                    deps: &[("db", ">=1.0.0,<2.0.0")],
                    ..plain("app", "1.0.0")
                },
            ],
            &[("app", &[]), ("db", &[])],
        )
        .unwrap_or_else(|e| panic!("{format}: {e}"));
        let order = ok
            .find(r#""start_order": ["#)
            .unwrap_or_else(|| panic!("{format}: no start_order: {ok}"));
        let position = |name: &str| {
            ok[order..]
                .find(&format!("\"{name}\""))
                .unwrap_or_else(|| panic!("{format}: {name} is not in start_order: {ok}"))
        };
        assert!(position("db") < position("app"), "{format}: {ok}");

        let cases: Vec<Case> = vec![
            (
                vec![Spec {
                    deps: &[("cache-plugin", ">=2.0.0")],
                    ..plain("auth-plugin", "1.0.0")
                }],
                vec![("auth-plugin", &[])],
                "missing dependency: plugin 'auth-plugin' requires 'cache-plugin' version '>=2.0.0'",
            ),
            (
                vec![
                    Spec {
                        deps: &[("cache-plugin", ">=2.0.0")],
                        ..plain("auth-plugin", "1.0.0")
                    },
                    plain("cache-plugin", "1.5.0"),
                ],
                vec![("auth-plugin", &[]), ("cache-plugin", &[])],
                "version mismatch: plugin 'auth-plugin' requires 'cache-plugin' >=2.0.0, found 1.5.0",
            ),
            (
                vec![
                    Spec {
                        deps: &[("b", "*")],
                        ..plain("a", "1.0.0")
                    },
                    Spec {
                        deps: &[("c", "*")],
                        ..plain("b", "1.0.0")
                    },
                    Spec {
                        deps: &[("a", "*")],
                        ..plain("c", "1.0.0")
                    },
                ],
                vec![("a", &[]), ("b", &[]), ("c", &[])],
                "circular dependency detected: a -> b -> c -> a",
            ),
            (
                vec![Spec {
                    framework: Some(">=2.0.0"),
                    ..plain("future", "1.0.0")
                }],
                vec![("future", &[])],
                "framework version mismatch: plugin requires >=2.0.0, found 0.1.0",
            ),
            (
                vec![Spec {
                    declares: &["cache"],
                    ..plain("logger", "1.0.0")
                }],
                vec![("logger", &["database"])],
                "permission mismatch: plugin requests 'database' permission but manifest does not declare it",
            ),
        ];
        for (specs, listed, message) in cases {
            let err = check_in(format, &specs, &listed).expect_err(message);
            assert!(
                err.contains(message),
                "{format}: expected {message:?} in {err}"
            );
        }
    }
}

/// Run `plugd ARGS… --server URL --token TOKEN` against a test server, off the async workers.
async fn remote(server: &crate::support::TestServer, args: &[&str]) -> (bool, String, String) {
    let mut command = plugd();
    command.args(args).args([
        "--server",
        &server.admin_url,
        "--token",
        crate::support::TOKEN,
    ]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_commands_talk_to_a_running_server() {
    let server = crate::support::TestServer::start(&crate::support::examples_config()).await;

    let (ok, out, err) = remote(&server, &["list"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("hello") && l.contains("running")),
        "{out}"
    );

    let (ok, out, err) = remote(&server, &["info", "hello", "--json"]).await;
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["name"], "hello");

    let (ok, out, err) = remote(&server, &["disable", "hello"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("disabled"), "{out}");
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 503);
    let (ok, _, err) = remote(&server, &["enable", "hello"]).await;
    assert!(ok, "{err}");
    assert_eq!(server.get("/plugins/hello/greet").await.status(), 200);

    let (ok, out, err) = remote(&server, &["health"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("overall:"), "{out}");

    let (ok, _, err) = remote(&server, &["logs", "--audit", "--plugin", "hello"]).await;
    assert!(ok, "{err}");

    // A wrong token is a clear error, not a crash.
    let mut command = plugd();
    command.args(["list", "--server", &server.admin_url, "--token", "wrong"]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

#[test]
fn completions_cover_the_subcommands() {
    let out = plugd().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "reload", "install", "list", "disable"] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completions"
        );
    }
    let out = plugd().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

#[test]
fn schema_prints_the_manifest_or_the_host_config_schema() {
    let schema_of = |args: &[&str]| -> serde_json::Value {
        let out = plugd().arg("schema").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let manifest = schema_of(&[]);
    assert_eq!(manifest["title"], "plugd plugin manifest");
    assert_eq!(schema_of(&["manifest"]), manifest);
    let config = schema_of(&["config"]);
    assert_eq!(config["title"], "plugd host config");
    assert_eq!(config, plugd_manifest::host_config_json_schema());
    let out = plugd().args(["schema", "catalog"]).output().unwrap();
    assert!(!out.status.success(), "an unknown schema is refused");
}

#[test]
fn check_and_serve_refuse_an_unusable_tls_pair() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let config = "server:\n  tls: { cert: cert.pem, key: key.pem }\n";
    let out = check(dir.path(), config, false);
    assert!(!out.status.success(), "plugd check accepted the pair");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tls.cert")
            && err.contains(&*dir.path().join("cert.pem").to_string_lossy()),
        "{err}"
    );

    // serve stops before it loads a plugin or listens.
    let out = plugd()
        .args(["serve", "--config"])
        .arg(dir.path().join("plugd.yaml"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "plugd serve started with the pair");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.tls.cert"), "{err}");
}
