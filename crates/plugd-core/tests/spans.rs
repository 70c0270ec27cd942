//! A test binary of its own: tracing caches each callsite's interest process-wide, and the
//! `it` binary's tests install thread-local subscribers at INFO concurrently, which could leave
//! these DEBUG spans unseen. Here they run alone, one after the other.
//!
//! Every plugin call on the request path runs in a `plugin_call` span that names the plugin and
//! the hook or route, and records the outcome and duration.

use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{Exchange, HookType, Host};
use tracing_subscriber::fmt::format::FmtSpan;

#[path = "it/support.rs"]
mod support;

use support::{Journal, Logs, Recorder, config, manifest};

/// DEBUG lines and closed spans written on this thread while the guard lives.
fn span_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

async fn hook_and_route_calls_get_spans_with_outcome_and_duration() {
    let (logs, _guard) = span_logs();

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

/// Exports `greet`: answers `hi <caller>`.
struct Greeter;

#[async_trait::async_trait]
impl plugd_core::Plugin for Greeter {
    async fn init(
        &self,
        ctx: &mut plugd_core::InitContext<'_>,
    ) -> Result<(), plugd_core::PluginError> {
        ctx.export_service("greet")
            .map_err(|e| plugd_core::PluginError::Failed(e.to_string()))
    }

    async fn call_service(
        &self,
        _service: &str,
        _method: &str,
        _payload: &[u8],
        caller: &str,
    ) -> Result<Vec<u8>, plugd_core::PluginError> {
        Ok(format!("hi {caller}").into_bytes())
    }
}

async fn event_service_and_timer_calls_get_spans_too() {
    let (logs, _guard) = span_logs();

    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut listener = Recorder::new("listener", &j);
    listener.subscribe = Some("news.*");
    listener.timer = Some(std::time::Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest("listener", "events:\n  subscribes: [\"news.*\"]\n"),
            listener,
        )
        .native(manifest("greeter", "exports:\n  - name: greet\n"), Greeter)
        .build()
        .unwrap();
    host.start().await.unwrap();
    host.events().publish("news.today", "x").unwrap();
    let answer = host
        .services()
        .call("listener", "greeter", "greet", "hello", b"")
        .await
        .unwrap();
    assert_eq!(answer, b"hi listener");
    support::eventually("the event and a tick are handled", || {
        let text = logs.text();
        text.lines()
            .any(|l| l.contains("plugin_call") && l.contains("close") && l.contains("event="))
            && text
                .lines()
                .any(|l| l.contains("plugin_call") && l.contains("close") && l.contains("timer="))
    })
    .await;
    host.shutdown().await;

    let text = logs.text();
    let closed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("plugin_call") && l.contains("close"))
        .collect();
    let has = |needles: &[&str]| closed.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        has(&[
            "plugin=listener",
            "event=news.today",
            "outcome=\"ok\"",
            "duration_ms="
        ]),
        "{text}"
    );
    assert!(
        has(&[
            "plugin=greeter",
            "service=\"greet\"",
            "method=\"hello\"",
            "caller=\"listener\"",
            "outcome=\"ok\""
        ]),
        "{text}"
    );
    assert!(has(&["plugin=listener", "timer=", "outcome="]), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn every_plugin_call_gets_a_span() {
    hook_and_route_calls_get_spans_with_outcome_and_duration().await;
    event_service_and_timer_calls_get_spans_too().await;
}
