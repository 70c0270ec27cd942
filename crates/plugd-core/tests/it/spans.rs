//! Every plugin call on the request path runs in a `plugin_call` span that names the plugin and
//! the hook or route, and records the outcome and duration.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, HookType, Host};
use tracing_subscriber::fmt::format::FmtSpan;

use crate::{Journal, Logs, Recorder, config, manifest};

#[tokio::test(flavor = "current_thread")]
async fn hook_and_route_calls_get_spans_with_outcome_and_duration() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut auth = Recorder::new("auth", &j);
    auth.hooks = vec![(HookType::PreRequest, 300)];
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("auth", ""), auth)
        .native(manifest("app", ""), app)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let r = host
        .dispatcher()
        .handle(Exchange::new(Method::GET, "/plugins/app/x"))
        .await;
    assert_eq!(r.status, 200);
    host.shutdown().await;

    let text = logs.text();
    let closed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("plugin_call") && l.contains("close"))
        .collect();
    assert!(
        closed.iter().any(|l| l.contains("plugin=auth")
            && l.contains("hook=\"pre_request\"")
            && l.contains("outcome=\"ok\"")
            && l.contains("duration_ms=")),
        "{text}"
    );
    assert!(
        closed.iter().any(|l| l.contains("plugin=app")
            && l.contains("route=/x")
            && l.contains("outcome=\"ok\"")),
        "{text}"
    );
}
