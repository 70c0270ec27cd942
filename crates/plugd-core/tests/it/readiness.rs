//! `Host::readiness`: ready once started, while every plugin the operator did not disable runs.

use std::sync::Arc;

use parking_lot::Mutex;
use plugd_core::Host;

use crate::{Journal, Recorder, config, manifest};

#[tokio::test]
async fn ready_when_started_and_every_plugin_not_disabled_by_the_operator_runs() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut broken = Recorder::new("broken", &j);
    broken.fail_start = true;
    let host = Host::builder()
        .config(config(
            dir.path(),
            "plugins:\n  plugins:\n    - name: idle\n      enabled: false\n",
        ))
        .native(manifest("ok", ""), Recorder::new("ok", &j))
        .native(manifest("idle", ""), Recorder::new("idle", &j))
        .native(manifest("broken", ""), broken)
        .build()
        .unwrap();
    let r = host.readiness();
    assert!(!r.ready);
    assert_eq!(r.reasons, ["the host is starting"]);
    host.start().await.unwrap();
    let r = host.readiness();
    assert!(!r.ready, "{r:?}");
    assert_eq!(
        r.reasons,
        ["plugin 'broken' is error"],
        "'idle' is the operator's choice"
    );

    host.disable_plugin("broken").await.unwrap();
    let r = host.readiness();
    assert!(r.ready, "{r:?}");
    assert!(r.reasons.is_empty());

    host.shutdown().await;
    assert_eq!(host.readiness().reasons, ["the host is shutting down"]);
}
