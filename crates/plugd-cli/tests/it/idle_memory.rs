//! Issue 21, memory per idle plugin: a started plugin keeps none of its compiled image resident,
//! and the code it runs afterwards comes back intact from the cache file.

use std::path::Path;

use serde_json::Value;

use crate::support::{TestServer, examples_config};

/// One mapping of a compiled component (`.cwasm`) in this process.
#[derive(Debug)]
#[allow(dead_code)] // `path` is read through Debug, in the failure messages.
struct Mapping {
    path: String,
    executable: bool,
    size_kib: u64,
    rss_kib: u64,
}

/// This process's mappings of the compile cache's files under `data_dir`, from
/// `/proc/self/smaps` (the test server runs in this process).
fn compiled_code_mappings(data_dir: &Path) -> Vec<Mapping> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let prefix = data_dir.display().to_string();
    let mut out: Vec<Mapping> = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_header = fields.first().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if is_header {
            out.extend(current.take());
            let path = fields.get(5).copied().unwrap_or_default();
            if path.starts_with(&prefix) && path.ends_with(".cwasm") {
                let (start, end) = fields[0].split_once('-').expect("range");
                let size =
                    u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap();
                current = Some(Mapping {
                    path: path.to_string(),
                    executable: fields[1].contains('x'),
                    size_kib: size / 1024,
                    rss_kib: 0,
                });
            }
        } else if let (Some(m), Some(&"Rss:")) = (current.as_mut(), fields.first()) {
            m.rss_kib = fields[1].parse().expect("Rss in kB");
        }
    }
    out.extend(current);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_plugin_keeps_none_of_its_compiled_code_resident() {
    // A fresh data directory: both plugins are compiled now, and still run from the cache file
    // the compile wrote (only a mapped image can be released). Health checks every second.
    let config = examples_config().replace(
        "plugins:\n  plugins:",
        "plugins:\n  health_check_interval: 1s\n  plugins:",
    );
    assert!(config.contains("health_check_interval: 1s"));
    let server = TestServer::start(&config).await;
    let data_dir = server.data_dir();
    let before = compiled_code_mappings(&data_dir);
    let text: Vec<&Mapping> = before.iter().filter(|m| m.executable).collect();
    assert_eq!(
        text.len(),
        2,
        "the two example plugins each run their code from a mapped cache file: {before:#?}"
    );
    let text_kib: u64 = text.iter().map(|m| m.size_kib).sum();
    let text_rss: u64 = text.iter().map(|m| m.rss_kib).sum();
    // Before the release every page of the text was resident (the kernel maps each faulting
    // page's neighbours); a health check may run a few pages meanwhile.
    assert!(
        text_rss * 4 < text_kib,
        "an idle plugin's code is released: {text_rss} KiB of {text_kib} KiB resident: {before:#?}"
    );

    // The released code runs, and what it runs is resident again.
    for _ in 0..3 {
        let r = server.get("/plugins/hello/greet?name=Ada").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-plugd-gatekeeper"], "checked");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "Hello, Ada!");
    }
    let text_rss_of = |mappings: &[Mapping]| -> u64 {
        mappings
            .iter()
            .filter(|m| m.executable)
            .map(|m| m.rss_kib)
            .sum()
    };
    let after = compiled_code_mappings(&data_dir);
    let served_rss = text_rss_of(&after);
    assert!(
        served_rss > text_rss,
        "serving requests faults the code they run back in: {served_rss} KiB, was {text_rss} KiB: {after:#?}"
    );

    // Idle again: the first health check after the requests sees them and keeps the code; a
    // check with nothing served since the previous one gives it back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let idle = compiled_code_mappings(&data_dir);
        let idle_rss = text_rss_of(&idle);
        if idle_rss * 4 < text_kib {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "idle for 20 health checks, still {idle_rss} KiB of {text_kib} KiB resident: {idle:#?}"
        );
    }
    let r = server.get("/plugins/hello/greet?name=Bo").await;
    assert_eq!(r.status(), 200, "the code released twice still runs");
    server.stop().await;
}
