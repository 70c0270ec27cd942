//! `Host::resolve_dependencies` and `Host::resolve_with` on a running host: the start order of
//! the plugins it holds now, and whether one more (or a new version of one) would resolve, in
//! the contract's words.

use std::sync::Arc;

use parking_lot::Mutex;
use plugd_core::{Host, Plugin};
use plugd_manifest::{Format, Manifest};

use crate::{Journal, Recorder, config};

fn m(name: &str, version: &str, extra: &str) -> Manifest {
    Manifest::from_str(
        &format!("name: {name}\nversion: {version}\ndescription: d\nauthor: a\n{extra}"),
        Format::Yaml,
        None,
    )
    .unwrap()
}

fn code(name: &'static str, j: &Journal) -> impl Plugin {
    Recorder::new(name, j)
}

#[tokio::test]
async fn a_running_host_resolves_its_plugins_and_candidates() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let needs_auth = "dependencies:\n  - name: auth-plugin\n    version: '>=1.0.0'\n";
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        // Listed before what it depends on, and with a higher priority: still after it.
        .native(
            m("app", "1.0.0", &format!("priority: 900\n{needs_auth}")),
            code("app", &j),
        )
        .native(m("auth-plugin", "1.2.0", ""), code("auth-plugin", &j))
        .native(
            m("metrics", "1.0.0", "priority: 500\n"),
            code("metrics", &j),
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert_eq!(
        host.resolve_dependencies().unwrap(),
        ["metrics", "auth-plugin", "app"]
    );
    j.lock().clear();

    // Candidates: nothing is loaded, nothing is called.
    let missing = m(
        "billing",
        "1.0.0",
        "dependencies:\n  - name: payments\n    version: ^1\n",
    );
    assert_eq!(
        host.resolve_with(&missing).unwrap_err().to_string(),
        "missing dependency: plugin 'billing' requires 'payments' version '^1'"
    );
    let old = m("auth-plugin", "0.9.0", "");
    assert_eq!(
        host.resolve_with(&old).unwrap_err().to_string(),
        "version mismatch: plugin 'app' requires 'auth-plugin' >=1.0.0, found 0.9.0"
    );
    let cyclic = m(
        "auth-plugin",
        "1.3.0",
        "dependencies:\n  - name: app\n    version: '*'\n",
    );
    let cycle = host.resolve_with(&cyclic).unwrap_err().to_string();
    assert!(
        cycle == "circular dependency detected: auth-plugin -> app -> auth-plugin"
            || cycle == "circular dependency detected: app -> auth-plugin -> app",
        "{cycle}"
    );
    let fine = m("billing", "1.0.0", needs_auth);
    assert_eq!(
        host.resolve_with(&fine).unwrap(),
        ["metrics", "auth-plugin", "app", "billing"]
    );
    assert!(j.lock().is_empty(), "{:?}", j.lock());
    assert_eq!(host.resolve_dependencies().unwrap().len(), 3);

    // What is unloaded no longer counts: the dependent now misses it.
    host.unload_plugin("auth-plugin", true).await.unwrap();
    assert_eq!(
        host.resolve_dependencies().unwrap_err().to_string(),
        "missing dependency: plugin 'app' requires 'auth-plugin' version '>=1.0.0'"
    );
    host.shutdown().await;
}
