//! The standard WASI interfaces plugd serves to every component (crates/plugd-wasm/src/wasi_std.rs),
//! driven over HTTP through the `wasistd` test plugin, which imports them beside its plugd
//! contract: `wasi:keyvalue` from the plugin's own store (the same keys plugd's `storage` sees),
//! under its quota and isolated from every other plugin; `wasi:config` from its validated config,
//! live; `wasi:logging` into its log stream, marked with its name, under its rate and level.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TOKEN, TestServer, guests_built, repo_root, test_plugin};

/// `wasistd` with `limits`, and `fleetwise`: another plugin with a store of its own.
fn config(limits: &str) -> String {
    format!(
        r#"data_dir: "{{data}}"
plugins:
  plugins:
    - name: wasistd
      path: "{wasistd}"
      permissions: {{ router: true }}
      config: {{ greeting: "hi", api_key: "s3cret", tags: ["x", 1] }}
      limits: {limits}
    - name: fleetwise
      path: "{fleetwise}"
      permissions: {{ router: true, cache: true }}
"#,
        wasistd = test_plugin("wasistd").display(),
        fleetwise = test_plugin("fleetwise").display(),
    )
}

/// `GET /plugins/wasistd/wasi?{query}`: status and body.
async fn wasi(server: &TestServer, query: &str) -> (u16, String) {
    let r = server.get(&format!("/plugins/wasistd/wasi?{query}")).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn audited(server: &TestServer, rule: &str) -> usize {
    server
        .host
        .audit_log(Some("wasistd"))
        .iter()
        .filter(|e| e.capability == rule)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyvalue_is_the_plugins_own_store_with_buckets_inside_it() {
    let server = TestServer::start(&config("{ storage_keys: 2000 }")).await;

    // The default bucket is the plugin's store: plugd's `storage` sees the same keys.
    assert_eq!(
        wasi(&server, "op=kv-set&key=a&value=1").await,
        (200, "stored".into())
    );
    assert_eq!(wasi(&server, "op=kv-get&key=a").await, (200, "1".into()));
    assert_eq!(
        wasi(&server, "op=kv-get&bucket=default&key=a").await,
        (200, "1".into())
    );
    assert_eq!(
        wasi(&server, "op=kv-exists&key=a").await,
        (200, "true".into())
    );
    assert_eq!(
        wasi(&server, "op=storage-get&key=a").await,
        (200, "1".into())
    );
    assert_eq!(wasi(&server, "op=storage-set&key=b&value=2").await.0, 200);
    assert_eq!(wasi(&server, "op=kv-get&key=b").await, (200, "2".into()));
    let store = server.host.storage("wasistd");
    assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));

    // A named bucket is `bucket:<name>/` inside the same store; its keys are literal (`/` and
    // `..` are characters, not a path).
    assert_eq!(
        wasi(&server, "op=kv-set&bucket=sessions&key=x%2F..%2Fy&value=v").await,
        (200, "stored".into())
    );
    assert_eq!(
        store.get("bucket:sessions/x/../y").await.unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(
        wasi(&server, "op=storage-get&key=bucket%3Asessions%2Fx%2F..%2Fy").await,
        (200, "v".into())
    );
    assert_eq!(wasi(&server, "op=kv-get&key=x%2F..%2Fy").await.0, 404);
    assert_eq!(
        wasi(&server, "op=kv-get&bucket=other&key=x%2F..%2Fy")
            .await
            .0,
        404
    );
    let keys = |body: String| serde_json::from_str::<Value>(&body).unwrap();
    assert_eq!(
        keys(wasi(&server, "op=kv-list&bucket=sessions").await.1),
        json!(["x/../y"])
    );
    assert_eq!(
        keys(wasi(&server, "op=kv-list").await.1),
        json!(["a", "b", "bucket:sessions/x/../y"]),
        "the default bucket lists the whole store"
    );
    assert_eq!(
        wasi(&server, "op=kv-delete&bucket=sessions&key=x%2F..%2Fy")
            .await
            .0,
        200
    );
    assert_eq!(
        wasi(&server, "op=kv-exists&bucket=sessions&key=x%2F..%2Fy").await,
        (200, "false".into())
    );
    assert_eq!(
        wasi(&server, "op=kv-delete&bucket=sessions&key=never")
            .await
            .0,
        200
    );

    // Batch.
    assert_eq!(
        wasi(&server, "op=kv-set-many&bucket=b2&key=k1,k2&value=v")
            .await
            .0,
        200
    );
    assert_eq!(
        keys(
            wasi(&server, "op=kv-get-many&bucket=b2&key=k1,k2,k3")
                .await
                .1
        ),
        json!([["k1", "v:k1"], ["k2", "v:k2"], null])
    );
    assert_eq!(
        wasi(&server, "op=kv-delete-many&bucket=b2&key=k1,k2,k3")
            .await
            .0,
        200
    );
    assert_eq!(
        keys(wasi(&server, "op=kv-list&bucket=b2").await.1),
        json!([])
    );

    // list-keys pages (1,000 keys a page): the guest follows the cursor to the end.
    let many: Vec<String> = (0..1200).map(|i| format!("k{i:04}")).collect();
    let (status, body) = wasi(
        &server,
        &format!("op=kv-set-many&bucket=paged&key={}&value=v", many.join(",")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        keys(wasi(&server, "op=kv-list&bucket=paged").await.1),
        json!(many)
    );

    // What was written survives a reload of the plugin.
    let r = server
        .client
        .post(format!("{}/admin/plugins/wasistd/reload", server.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(wasi(&server, "op=kv-get&key=a").await, (200, "1".into()));
    assert_eq!(
        wasi(&server, "op=kv-get&bucket=paged&key=k1199").await,
        (200, "v:k1199".into())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyvalue_refuses_hostile_names_and_never_reaches_another_plugin() {
    let server = TestServer::start(&config("{ storage_bytes: 64KiB }")).await;
    let theirs = server.host.storage("fleetwise");
    // fleetwise's own key, through its own route.
    let r = server
        .get("/plugins/fleetwise/kv?key=shared&value=theirs")
        .await;
    assert_eq!(r.status(), 200);

    // Bucket names that would leave the plugin's store or reach another's are refused.
    for bad in [
        "..%2Ffleetwise",
        "a%2Fb",
        "..",
        "fleet%00wise",
        "x%3Ay",
        "b".repeat(65).as_str(),
    ] {
        let (status, body) = wasi(&server, &format!("op=kv-get&bucket={bad}&key=shared")).await;
        assert_eq!(status, 500, "{bad}: {body}");
        assert!(body.starts_with("other: bucket name"), "{bad}: {body}");
    }
    // A bucket named after the other plugin, or the key it uses, is still this plugin's own.
    for bucket in ["", "fleetwise", "default"] {
        assert_eq!(
            wasi(&server, &format!("op=kv-get&bucket={bucket}&key=shared"))
                .await
                .0,
            404,
            "bucket {bucket:?}"
        );
    }
    assert_eq!(
        wasi(&server, "op=kv-set&key=shared&value=mine").await.0,
        200
    );
    assert_eq!(
        wasi(&server, "op=kv-set&bucket=fleetwise&key=shared&value=mine")
            .await
            .0,
        200
    );
    assert_eq!(
        theirs.get("shared").await.unwrap(),
        Some(b"theirs".to_vec())
    );
    assert_eq!(theirs.get("bucket:fleetwise/shared").await.unwrap(), None);
    assert_eq!(theirs.list("").await.unwrap(), vec!["shared".to_string()]);
    let r = server.get("/plugins/fleetwise/kv?key=shared").await;
    assert_eq!(r.text().await.unwrap(), "theirs");

    // Keys: NUL refused, `..` and `/` literal, length capped with the bucket's prefix counted.
    let (status, body) = wasi(&server, "op=kv-set&key=a%00b&value=1").await;
    assert_eq!(status, 500);
    assert!(body.contains("NUL"), "{body}");
    let (status, body) = wasi(&server, "op=kv-set&key=&value=1").await;
    assert_eq!(status, 500);
    assert!(body.contains("must not be empty"), "{body}");
    let long = "k".repeat(1020);
    let (status, body) = wasi(&server, &format!("op=kv-set&bucket=s&key={long}&value=1")).await;
    assert_eq!(status, 500);
    assert!(body.contains("1015-byte limit"), "{body}");
    assert_eq!(
        wasi(&server, &format!("op=kv-set&key={long}&value=1"))
            .await
            .0,
        200,
        "the default bucket has the whole key length"
    );

    // Quota: a write over it is refused and audited; what was stored stays.
    let (status, body) = wasi(&server, "op=kv-fill&bucket=big&key=one&kib=40").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = wasi(&server, "op=kv-fill&bucket=big&key=two&kib=40").await;
    assert_eq!(status, 500);
    assert!(body.contains("storage quota exceeded"), "{body}");
    assert!(body.contains("limits.storage_bytes"), "{body}");
    assert_eq!(audited(&server, "limits.storage_bytes"), 1);
    assert_eq!(
        wasi(&server, "op=kv-exists&bucket=big&key=one").await,
        (200, "true".into())
    );
    assert_eq!(
        wasi(&server, "op=kv-exists&bucket=big&key=two").await,
        (200, "false".into())
    );
    assert_eq!(
        wasi(&server, "op=kv-get&key=shared").await,
        (200, "mine".into())
    );
    // A value over the storage value cap (16 MiB) is refused before it is counted.
    let (status, body) = wasi(&server, "op=kv-fill&key=huge&kib=16385").await;
    assert_eq!(status, 500);
    assert!(body.contains("16777216-byte limit"), "{body}");

    // Buckets opened and never dropped: the instance's handle table refuses past its cap, the
    // call goes on, and the buckets are freed when the guest drops them.
    let (status, body) = wasi(&server, "op=open&bucket=many&n=100000").await;
    assert_eq!(status, 200, "{body}");
    let (opened, refusal) = body.split_once(' ').unwrap();
    let opened: usize = opened.parse().unwrap();
    assert!((1..1000).contains(&opened), "{body}");
    assert!(refusal.contains("cannot open bucket"), "{body}");
    assert_eq!(
        wasi(&server, "op=kv-get&key=shared").await,
        (200, "mine".into())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_serves_the_validated_config_live() {
    let server = TestServer::start(&config("{}")).await;
    assert_eq!(
        wasi(&server, "op=config-get&key=greeting").await,
        (200, "hi".into())
    );
    // Defaults applied; other values as their JSON text.
    assert_eq!(
        wasi(&server, "op=config-get&key=retries").await,
        (200, "3".into())
    );
    assert_eq!(
        wasi(&server, "op=config-get&key=tags").await,
        (200, r#"["x",1]"#.into())
    );
    // Its own secret is its own.
    assert_eq!(
        wasi(&server, "op=config-get&key=api_key").await,
        (200, "s3cret".into())
    );
    // Unset optional fields, unknown keys and the host's own config are absent.
    for key in [
        "note",
        "data_dir",
        "admin",
        "plugins.plugins",
        "",
        "greeting.x",
    ] {
        assert_eq!(
            wasi(&server, &format!("op=config-get&key={key}")).await.0,
            404,
            "{key}"
        );
    }
    let all: Value = serde_json::from_str(&wasi(&server, "op=config-all").await.1).unwrap();
    assert_eq!(
        all,
        json!([
            ["api_key", "s3cret"],
            ["greeting", "hi"],
            ["retries", "3"],
            ["tags", r#"["x",1]"#]
        ])
    );

    // A live change is what later calls see.
    let r = server
        .client
        .put(format!("{}/admin/plugins/wasistd/config", server.admin_url))
        .bearer_auth(TOKEN)
        .json(&json!({"greeting": "hej", "note": "n", "api_key": "k2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        wasi(&server, "op=config-get&key=greeting").await,
        (200, "hej".into())
    );
    assert_eq!(
        wasi(&server, "op=config-get&key=note").await,
        (200, "n".into())
    );
    assert_eq!(
        wasi(&server, "op=config-get&key=retries").await,
        (200, "3".into())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_goes_through_the_plugins_rate_and_level() {
    let server =
        TestServer::start(&config("{ log_lines_per_second: 5, log_burst_seconds: 1 }")).await;
    let state = server.host.plugin_state("wasistd").unwrap();
    let log = state.log();
    let (written, dropped) = (log.written(), log.dropped());
    let r = wasi(&server, "op=log&n=500&level=info&context=ctx&msg=flood-{i}").await;
    assert_eq!(r.0, 200);
    let (w, d) = (log.written() - written, log.dropped() - dropped);
    assert!(w <= 10, "{w} lines written past a rate of 5 a second");
    assert!(d >= 490, "{d} dropped");

    // plugd's set-log-level filters wasi:logging lines too (before the rate counts them).
    assert_eq!(wasi(&server, "op=set-level&level=error").await.0, 200);
    let filtered = log.filtered();
    assert_eq!(
        wasi(&server, "op=log&n=3&level=warn&msg=quiet").await.0,
        200
    );
    assert_eq!(log.filtered() - filtered, 3);
    server.stop().await;
}

/// The lines an operator sees: `plugd serve`'s own output, one line per call, marked with the
/// plugin's name, the context a field, a control character escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_lines_are_the_plugins_own_in_the_servers_log() {
    guests_built();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = config("{ log_lines_per_second: 5, log_burst_seconds: 1 }")
        .replace("{data}", &dir.path().join("data").display().to_string());
    let yaml = format!("server:\n  listen: \"127.0.0.1:{port}\"\nadmin:\n  listen: shared\n{yaml}");
    let path = dir.path().join("plugd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plugd"))
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(repo_root())
        .env("PLUGD_ADMIN_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/plugins/wasistd/wasi");
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = loop {
        // Until the plugin answers (a 404 before it is loaded logged nothing).
        if let Ok(r) = client
            .get(format!(
                "{url}?op=log&n=50&level=warn&context=req-7&msg=line-{{i}}%0AINFO%20forged"
            ))
            .send()
            .await
            && (r.status() == 200 || Instant::now() > deadline)
        {
            break r.status().as_u16();
        }
        assert!(Instant::now() < deadline, "plugd serve did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answered, 200);
    let log = std::fs::read_to_string(out.path()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("line-")).collect();
    assert!(!lines.is_empty(), "no wasi:logging line in:\n{log}");
    assert!(
        lines.len() <= 10,
        "{} lines past a rate of 5 a second",
        lines.len()
    );
    for line in &lines {
        assert!(line.contains("wasistd"), "{line}");
        assert!(line.contains("context=req-7"), "{line}");
        assert!(line.contains("WARN"), "{line}");
    }
    assert!(
        !log.lines().any(|l| l.starts_with("INFO forged")),
        "a newline in a message forged a line:\n{log}"
    );
}
