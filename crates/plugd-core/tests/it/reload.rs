//! Reload of a native plugin: its code cannot change, so a reload is stop, cleanup, init and
//! start with its current config, with its requests gated meanwhile.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, Host, LoadError};

use crate::{Journal, Recorder, config, manifest};

#[tokio::test]
async fn a_native_reload_is_stop_cleanup_init_start_and_keeps_serving() {
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("app", ""), app)
        .build()
        .unwrap();
    host.start().await.unwrap();
    j.lock().clear();

    let outcome = host.reload_plugin("app").await.unwrap();
    assert_eq!(outcome.kind, "restart");
    assert_eq!(outcome.from_version, outcome.to_version);
    assert_eq!(
        *j.lock(),
        ["app:stop", "app:cleanup", "app:init", "app:start"]
    );
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(host.reload_stats()["app"].succeeded, 1);
    host.shutdown().await;
}

#[tokio::test]
async fn reloading_an_unknown_plugin_or_rolling_back_without_a_previous_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("app", ""), Recorder::new("app", &j))
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert!(matches!(
        host.reload_plugin("nope").await,
        Err(LoadError::UnknownPlugin(_))
    ));
    let e = host.rollback_plugin("app").await.unwrap_err();
    assert!(e.to_string().contains("no previous version"), "{e}");
    host.shutdown().await;
}
