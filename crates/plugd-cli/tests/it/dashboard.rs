//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, installed by
//! scripts/browser.sh), driven over WebDriver: load the page, enter the token, see the example
//! plugins running, click reload on one and see its load time change. Saves a screenshot to
//! target/artifacts/dashboard.png. The same under a prefix of another axum application
//! (`/ops/plugd/`, `plugd_server::admin_api`) and behind a reverse proxy that serves the admin
//! listener's `/admin/` at `/proxy/` (dashboard-prefix.png, dashboard-proxy.png). Fails (never
//! skips) when the browser is missing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::{Driver, screenshot};
use crate::support::{TOKEN, TestServer, example};

const ROWS: &str = "return Array.from(document.querySelectorAll('#plugins tbody tr')).map(tr => ({ \
    name: tr.dataset.plugin, \
    status: tr.querySelector('[data-field=status]').textContent, \
    load_time: tr.querySelector('[data-field=load_time]').textContent }));";

fn row<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["name"] == name)
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
