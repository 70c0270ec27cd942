//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, installed by
//! scripts/browser.sh), driven over WebDriver: load the page, enter the token, see the example
//! plugins running, click reload on one and see its load time change. Saves a screenshot to
//! target/artifacts/dashboard.png. The same under a prefix of another axum application
//! (`/ops/plugd/`, `plugd_server::admin_api`) and behind a reverse proxy that serves the admin
//! listener's `/admin/` at `/proxy/` (dashboard-prefix.png, dashboard-proxy.png). Fails (never
//! skips) when the browser is missing.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TOKEN, TestServer, example};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run `bash scripts/browser.sh` (scripts/test.sh does)"
            )
        })
}

/// chromedriver and the browser it started (one process group), killed when dropped, even when
/// the test fails before closing the session.
struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
    url: String,
    http: reqwest::Client,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let chromium = find_program("chromium");
        let chromedriver = find_program("chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let profile = tempfile::tempdir().unwrap();
        let mut driver = Driver {
            child,
            _profile: profile,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            session: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,900",
                    format!("--user-data-dir={}", driver._profile.path().display()),
                ],
            },
        }}});
        let v = driver.call("POST", "/session", caps).await;
        driver.session = Some(
            v["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no session: {v}"))
                .to_string(),
        );
        driver
    }

    /// One WebDriver command; panics with the driver's message on an error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One WebDriver command; the driver's message on an error.
    async fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = match &self.session {
            Some(s) if path != "/session" => format!("{}/session/{s}{path}", self.url),
            _ => format!("{}{path}", self.url),
        };
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        if !status.is_success() {
            return Err(format!("{method} {path}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    /// Click the element `css` selects. The page redraws its table on a timer: an element found
    /// just before a redraw is stale by the click, so it is found again (a few times) until the
    /// click lands.
    async fn click(&self, css: &str) {
        let mut last = String::new();
        for _ in 0..10 {
            let element = self.find(css).await;
            match self
                .try_call("POST", &format!("/element/{element}/click"), json!({}))
                .await
            {
                Ok(_) => return,
                Err(e) if e.contains("stale element reference") => last = e,
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("clicking {css}: {last}");
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Poll `script` until `done` holds for its value (30 s).
    async fn wait_for(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.script(script).await;
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: still {v} after 30 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

const ROWS: &str = "return Array.from(document.querySelectorAll('#plugins tbody tr')).map(tr => ({ \
    name: tr.dataset.plugin, \
    status: tr.querySelector('[data-field=status]').textContent, \
    load_time: tr.querySelector('[data-field=load_time]').textContent }));";

fn row<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["name"] == name)
}

/// Save the page's screenshot as target/artifacts/<name>.
async fn screenshot(driver: &Driver, name: &str) {
    let png = driver.call("GET", "/screenshot", Value::Null).await;
    let png = base64_decode(png.as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &png).unwrap();
    eprintln!("dashboard: screenshot {}", dir.join(name).display());
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn config() -> String {
    format!(
        r#"
data_dir: "{{data}}"
plugins:
  plugins:
    - name: auth
      path: "{auth}"
      permissions: {{ router: true, intercept: true, identity: true }}
    - name: gatekeeper
      path: "{gatekeeper}"
      priority: security
      permissions: {{ intercept: true }}
    - name: hello
      path: "{hello}"
      permissions: {{ router: true }}
"#,
        auth = example("auth").display(),
        gatekeeper = example("gatekeeper").display(),
        hello = example("hello").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let server = TestServer::start(&config()).await;
    let driver = Driver::start().await;

    driver
        .call(
            "POST",
            "/url",
            json!({"url": format!("{}/admin/", server.admin_url)}),
        )
        .await;
    let title = driver.call("GET", "/title", Value::Null).await;
    assert_eq!(title, "plugd dashboard");
    // Without a token the page asks for one and lists nothing.
    let rows = driver.script(ROWS).await;
    assert_eq!(rows, json!([]));

    let input = driver.find("#token").await;
    driver
        .call(
            "POST",
            &format!("/element/{input}/value"),
            json!({"text": TOKEN}),
        )
        .await;
    let connect = driver.find("#connect").await;
    driver
        .call("POST", &format!("/element/{connect}/click"), json!({}))
        .await;
    let stored = driver
        .script("return sessionStorage.getItem('plugd-admin-token');")
        .await;
    assert_eq!(stored, TOKEN, "the token is kept in sessionStorage");

    let rows = driver
        .wait_for("the example plugins listed as running", ROWS, |rows| {
            ["hello", "gatekeeper", "auth"]
                .iter()
                .all(|n| row(rows, n).is_some_and(|r| r["status"] == "running"))
        })
        .await;
    let before = row(&rows, "hello").unwrap()["load_time"].clone();
    assert!(before.as_str().unwrap().ends_with('Z'), "{before}");

    driver
        .click("button[data-action=reload][data-plugin=hello]")
        .await;
    let rows = driver
        .wait_for("hello's load time to change after reload", ROWS, |rows| {
            row(rows, "hello").is_some_and(|r| r["load_time"] != before && r["status"] == "running")
        })
        .await;
    let message = driver
        .wait_for(
            "the reload message",
            "return document.querySelector('#message').textContent;",
            |m| m.as_str().is_some_and(|m| m.contains("reload hello: done")),
        )
        .await;
    eprintln!(
        "dashboard: {message}; hello loaded at {before} then {}",
        row(&rows, "hello").unwrap()["load_time"]
    );
    // The server agrees.
    let info: Value = server
        .admin_get("/admin/plugins/hello")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["load_time"], row(&rows, "hello").unwrap()["load_time"]);

    screenshot(&driver, "dashboard.png").await;

    driver.call("DELETE", "", Value::Null).await;
    server.stop().await;
}

/// An application of its own on a real port: `/` and `/healthz` of its own, a fallback of its
/// own, plugd's admin API and dashboard at `/ops/plugd` (`plugd_server::admin_api`), and a
/// reverse proxy that serves the admin listener's `/admin/...` at `/proxy/...`.
async fn application(server: &TestServer) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::{any, get};
    let admin = plugd::server::AdminToken::new(TOKEN).unwrap();
    let backend = format!("{}/admin", server.admin_url);
    let app = axum::Router::new()
        .route("/", get(|| async { "the application's home" }))
        .route("/healthz", get(|| async { "the application is fine" }))
        .nest_service(
            "/ops/plugd",
            plugd::server::admin_api(server.host.clone(), admin),
        )
        .route("/proxy/", any(proxy))
        .route("/proxy/{*rest}", any(proxy))
        .with_state(backend)
        .fallback(|| async {
            (
                axum::http::StatusCode::IM_A_TEAPOT,
                "the application's fallback",
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

/// The reverse proxy: `/proxy/<rest>` is `<admin listener>/admin/<rest>`, with the request's
/// method, `Authorization`, `Accept` and body, and the answer's status, `Content-Type`,
/// `Content-Security-Policy` and body.
async fn proxy(
    axum::extract::State(backend): axum::extract::State<String>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let rest = request.uri().path().strip_prefix("/proxy").unwrap_or("/");
    let url = format!("{backend}{rest}");
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).unwrap();
    let mut out = client.request(method, url);
    for name in ["authorization", "accept", "content-type"] {
        if let Some(v) = request.headers().get(name) {
            out = out.header(name, v.to_str().unwrap());
        }
    }
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let answer = out.body(body.to_vec()).send().await.unwrap();
    let mut response = http::Response::builder().status(answer.status().as_u16());
    for name in ["content-type", "content-security-policy"] {
        if let Some(v) = answer.headers().get(name) {
            response = response.header(name, v.to_str().unwrap());
        }
    }
    response
        .body(axum::body::Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

/// Log in to the dashboard at `page`, see the example plugins running, reload hello and see
/// its load time change; every call the page made went to `api` (the page's own folder).
/// Returns hello's row after the reload.
async fn log_in_and_reload(driver: &Driver, page: &str, api: &str) -> Value {
    driver.call("POST", "/url", json!({"url": page})).await;
    let title = driver.call("GET", "/title", Value::Null).await;
    assert_eq!(title, "plugd dashboard", "{page}");
    let input = driver.find("#token").await;
    driver
        .call(
            "POST",
            &format!("/element/{input}/value"),
            json!({"text": TOKEN}),
        )
        .await;
    let connect = driver.find("#connect").await;
    driver
        .call("POST", &format!("/element/{connect}/click"), json!({}))
        .await;
    let rows = driver
        .wait_for(
            &format!("{page}: the example plugins listed as running"),
            ROWS,
            |rows| {
                ["hello", "gatekeeper", "auth"]
                    .iter()
                    .all(|n| row(rows, n).is_some_and(|r| r["status"] == "running"))
            },
        )
        .await;
    let before = row(&rows, "hello").unwrap()["load_time"].clone();
    driver
        .click("button[data-action=reload][data-plugin=hello]")
        .await;
    let rows = driver
        .wait_for(
            &format!("{page}: hello's load time to change after reload"),
            ROWS,
            |rows| {
                row(rows, "hello")
                    .is_some_and(|r| r["load_time"] != before && r["status"] == "running")
            },
        )
        .await;
    driver
        .wait_for(
            &format!("{page}: the reload message"),
            "return document.querySelector('#message').textContent;",
            |m| m.as_str().is_some_and(|m| m.contains("reload hello: done")),
        )
        .await;
    // Every call the page's script made (not the browser's own favicon request): all under
    // `api`.
    let fetched = driver
        .script(
            "return performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch').map(e => e.name);",
        )
        .await;
    let fetched: Vec<&str> = fetched
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        fetched.iter().any(|u| *u == format!("{api}plugins")),
        "{page}: {fetched:?}"
    );
    assert!(
        fetched.iter().all(|u| u.starts_with(api)),
        "{page}: a call outside {api}: {fetched:?}"
    );
    // The token is in sessionStorage, never in the address.
    let href = driver.script("return location.href;").await;
    assert!(!href.as_str().unwrap().contains(TOKEN), "{href}");
    row(&rows, "hello").unwrap().clone()
}

/// The dashboard under `/ops/plugd/` of another application, and behind a reverse proxy that
/// serves it at `/proxy/` (the admin listener's `/admin/`): logged in, listing the plugins and
/// reloading one, its calls going to the prefix it is served under. The application's own
/// routes are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_under_a_prefix_and_behind_a_proxy_in_headless_chromium() {
    let server = TestServer::start(&config()).await;
    let (app, task) = application(&server).await;
    let driver = Driver::start().await;

    let hello = log_in_and_reload(
        &driver,
        &format!("{app}/ops/plugd/"),
        &format!("{app}/ops/plugd/"),
    )
    .await;
    // The server agrees, asked under the prefix.
    let info: Value = server
        .client
        .get(format!("{app}/ops/plugd/plugins/hello"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["load_time"], hello["load_time"]);
    screenshot(&driver, "dashboard-prefix.png").await;

    // Without the trailing slash the page still calls /ops/plugd/... (the token is still in
    // this tab's sessionStorage).
    driver
        .call("POST", "/url", json!({"url": format!("{app}/ops/plugd")}))
        .await;
    driver
        .wait_for("/ops/plugd: the plugins listed", ROWS, |rows| {
            row(rows, "hello").is_some_and(|r| r["status"] == "running")
        })
        .await;

    // Behind the proxy: the page is the admin listener's, its calls go to /proxy/.
    let hello =
        log_in_and_reload(&driver, &format!("{app}/proxy/"), &format!("{app}/proxy/")).await;
    let info: Value = server
        .admin_get("/admin/plugins/hello")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["load_time"], hello["load_time"]);
    screenshot(&driver, "dashboard-proxy.png").await;

    // The application's own routes.
    for (path, status, body) in [
        ("/", 200, "the application's home"),
        ("/healthz", 200, "the application is fine"),
        ("/admin/", 418, "the application's fallback"),
        ("/ops/plugdx", 418, "the application's fallback"),
    ] {
        let r = server
            .client
            .get(format!("{app}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.text().await.unwrap(), body, "{path}");
    }

    driver.call("DELETE", "", Value::Null).await;
    task.abort();
    server.stop().await;
}

/// A plugin that serves a service worker (`swjack`: it registers `sw.js` at scope `/` and forwards
/// every `Authorization` header it sees to its own storage) must not get the dashboard's token.
/// By default the dashboard is on an origin of its own, which the worker cannot control; with
/// `admin.listen: shared` the host refuses the worker script. In both cases the operator logs in
/// to the dashboard and the token never reaches the plugin. A probe shows that the worker, where
/// it runs, does capture what it sees: the test can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_service_worker_never_gets_the_dashboard_token() {
    for shared in [false, true] {
        let top = if shared {
            "admin: { listen: shared }\n"
        } else {
            ""
        };
        let yaml = format!(
            "{top}data_dir: \"{{data}}\"\nplugins:\n  plugins:\n    - name: swjack\n      path: \"{}\"\n      permissions: {{ router: true }}\n",
            crate::support::test_plugin("swjack").display()
        );
        let server = TestServer::start(&yaml).await;
        let driver = Driver::start().await;

        // The attacker's page, on the origin plugins answer on.
        driver
            .call(
                "POST",
                "/url",
                json!({"url": format!("{}/plugins/swjack/", server.url)}),
            )
            .await;
        let out = driver
            .wait_for(
                "the worker registration to settle",
                "return document.getElementById('out').textContent;",
                |v| v.as_str().is_some_and(|s| s != "pending"),
            )
            .await;
        if shared {
            assert!(
                out.as_str().unwrap().starts_with("refused"),
                "shared origin: {out}"
            );
        } else {
            assert_eq!(
                out, "registered",
                "its own origin: a worker is its business"
            );
            // The probe: a request from a page the worker controls, with a bearer token.
            driver
                .call(
                    "POST",
                    "/url",
                    json!({"url": format!("{}/plugins/swjack/", server.url)}),
                )
                .await;
            driver
                .script(
                    "fetch('/plugins/swjack/loot', { headers: { authorization: 'Bearer probe-token' } }); return true;",
                )
                .await;
            let loot_has = |needle: &'static str| {
                let client = server.client.clone();
                let url = format!("{}/plugins/swjack/loot", server.url);
                async move {
                    let loot: Value = client.get(url).send().await.unwrap().json().await.unwrap();
                    loot.to_string().contains(needle)
                }
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while !loot_has("probe-token").await {
                assert!(
                    Instant::now() < deadline,
                    "the worker never captured the probe"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        // The operator logs in to the dashboard, which lists the plugins with the token.
        driver
            .call(
                "POST",
                "/url",
                json!({"url": format!("{}/admin/", server.admin_url)}),
            )
            .await;
        let input = driver.find("#token").await;
        driver
            .call(
                "POST",
                &format!("/element/{input}/value"),
                json!({"text": TOKEN}),
            )
            .await;
        let connect = driver.find("#connect").await;
        driver
            .call("POST", &format!("/element/{connect}/click"), json!({}))
            .await;
        driver
            .wait_for("the dashboard to list swjack", ROWS, |rows| {
                row(rows, "swjack").is_some()
            })
            .await;
        // Several refreshes of the dashboard (every 3 s) have carried the token by now.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let loot: Value = server
            .get("/plugins/swjack/loot")
            .await
            .json()
            .await
            .unwrap();
        assert!(
            !loot.to_string().contains(TOKEN),
            "shared={shared}: the worker captured the admin token: {loot}"
        );
        let workers = driver
            .call(
                "POST",
                "/execute/async",
                json!({"script": "const done = arguments[0]; navigator.serviceWorker.getRegistrations().then(r => done(r.length));", "args": []}),
            )
            .await;
        assert_eq!(
            workers, 0,
            "shared={shared}: no worker controls the dashboard's origin"
        );
        driver.call("DELETE", "", Value::Null).await;
        server.stop().await;
    }
}
