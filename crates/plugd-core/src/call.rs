//! The one guarded call into a plugin. Every call the host makes into a plugin — lifecycle
//! (`init`, `start`, `stop`, `cleanup`, `on_config_change`), hook, middleware, route, event,
//! service, timer, health check, command; native and wasm alike — goes through [`guarded`],
//! which applies, in one place:
//!
//! - panic isolation: a call that panics (a native plugin's bug, or the adapter's) ends as a
//!   [`PluginError::Trap`] of that plugin — counted as a crash, its error policy applied — and the
//!   request task and the host go on;
//! - the deadline: the call's own timeout (per hook type for hooks), plus a grace for plugins
//!   whose runtime interrupts them itself (wasm), so the runtime's precise error wins; for `init`
//!   of a wasm plugin, once per instance (each is instantiated and initialized in turn);
//! - the `plugin_call` tracing span, closed with `outcome` and `duration_ms`;
//! - for calls made while the plugin serves: its busy time (CPU budget), its success (the
//!   threshold's `reset_on_success`), its crash count, the per-hook or route counters, and the
//!   error recorded as its last error (and against its threshold) with a warning in the log.
//!
//! Lifecycle calls leave their errors to the caller, which turns them into a [`LoadError`]
//! (crate::LoadError) and the plugin's status.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::Method;
use plugd_manifest::HookType;
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::PluginError;
use crate::loaded::Loaded;

/// Extra time granted past a call's own deadline before the host gives up on a plugin that
/// enforces its deadline itself (the wasm runtime interrupts guests at the deadline).
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// What is being called.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    Init,
    Start,
    Stop,
    Cleanup,
    ConfigChange,
    Health,
    Command(&'a str),
    Hook(HookType),
    Middleware {
        name: &'a str,
        step: &'static str,
    },
    Route {
        method: &'a Method,
        pattern: &'a str,
    },
    Event(&'a str),
    Service {
        service: &'a str,
        method: &'a str,
        caller: &'a str,
    },
    Timer(&'a str),
}

impl Call<'_> {
    /// Whether the call is made while the plugin serves (counted, its errors recorded), rather
    /// than a lifecycle step whose caller decides what a failure means.
    fn serving(&self) -> bool {
        !matches!(
            self,
            Call::Init
                | Call::Start
                | Call::Stop
                | Call::Cleanup
                | Call::ConfigChange
                | Call::Health
                | Call::Command(_)
        )
    }

    /// The call's own deadline.
    fn timeout(&self, p: &Loaded) -> Duration {
        match self {
            Call::Hook(h) => p.limits.hook_timeout(*h),
            _ => p.limits.timeout,
        }
    }

    /// How long the host waits for it: the deadline itself for native plugins; for sandboxed
    /// ones, whose runtime interrupts them at the deadline, plus [`DEADLINE_GRACE`] (and `init`
    /// once per instance).
    fn backstop(&self, p: &Loaded, timeout: Duration) -> Duration {
        if p.kind == "native" {
            return timeout;
        }
        let times = match self {
            Call::Init | Call::Start | Call::Stop | Call::Cleanup | Call::ConfigChange => {
                p.limits.instances.max(1)
            }
            _ => 1,
        };
        timeout.saturating_mul(times) + DEADLINE_GRACE
    }

    /// The error of a call the host stopped waiting for.
    fn timed_out(&self, timeout: Duration) -> PluginError {
        let t = humantime::format_duration(timeout);
        match self {
            Call::Hook(h) => PluginError::hook_timeout(*h, timeout),
            Call::Route { .. } => {
                PluginError::Timeout(format!("request handler exceeded {t} timeout"))
            }
            Call::Middleware { name, step } => {
                PluginError::Timeout(format!("middleware {name} {step} exceeded {t} timeout"))
            }
            Call::Event(_) => PluginError::Timeout(format!("event handler exceeded {t} timeout")),
            Call::Service {
                service, method, ..
            } => PluginError::Timeout(format!("{service}.{method} exceeded {t} timeout")),
            Call::Timer(_) => PluginError::Timeout(format!("exceeded {t} timeout")),
            Call::Health => PluginError::Timeout(format!("health-check exceeded {t} timeout")),
            Call::Command(name) => {
                PluginError::Timeout(format!("command {name} exceeded {t} timeout"))
            }
            Call::Init => PluginError::Timeout(format!("init exceeded {t} timeout")),
            Call::Start => PluginError::Timeout(format!("start exceeded {t} timeout")),
            Call::Stop => PluginError::Timeout(format!("stop exceeded {t} timeout")),
            Call::Cleanup => PluginError::Timeout(format!("cleanup exceeded {t} timeout")),
            Call::ConfigChange => {
                PluginError::Timeout(format!("on_config_change exceeded {t} timeout"))
            }
        }
    }

    /// The error of a sandboxed call that its runtime did not interrupt at the deadline, which
    /// the host stopped waiting for [`DEADLINE_GRACE`] later. It reads differently from the
    /// runtime's own timeout, so that an operator (and a test) can tell which one stopped it.
    fn backstop_stopped(&self, timeout: Duration) -> PluginError {
        let what = match self {
            Call::Hook(h) => format!("hook execution timeout: {} hook", h.as_str()),
            other => other.describe(),
        };
        PluginError::Timeout(format!(
            "{what} exceeded {} timeout and was not interrupted by its runtime: the host's backstop stopped waiting for it {} later",
            humantime::format_duration(timeout),
            humantime::format_duration(DEADLINE_GRACE)
        ))
    }

    /// How the plugin's last error names the call: `pre_request hook`, `route GET /x`.
    fn describe(&self) -> String {
        match self {
            Call::Hook(h) => format!("{} hook", h.as_str()),
            Call::Route { method, pattern } => format!("route {method} {pattern}"),
            Call::Middleware { name, step } => format!("middleware {name} {step}"),
            Call::Event(topic) => format!("event {topic}"),
            Call::Service {
                service, method, ..
            } => format!("service {service}.{method}"),
            Call::Timer(name) => format!("timer {name}"),
            Call::Health => "health-check".into(),
            Call::Command(name) => format!("command {name}"),
            Call::Init => "init".into(),
            Call::Start => "start".into(),
            Call::Stop => "stop".into(),
            Call::Cleanup => "cleanup".into(),
            Call::ConfigChange => "on_config_change".into(),
        }
    }

    fn span(&self, plugin: &str) -> tracing::Span {
        match self {
            Call::Hook(h) => tracing::debug_span!(
                "plugin_call",
                plugin = %plugin,
                hook = h.as_str(),
                outcome = Empty,
                duration_ms = Empty
            ),
            Call::Route { method, pattern } => {
                tracing::debug_span!("plugin_call", plugin = %plugin, method = %method, route = %pattern, outcome = Empty, duration_ms = Empty)
            }
            Call::Middleware { name, step } => {
                tracing::debug_span!("plugin_call", plugin = %plugin, middleware = %name, step, outcome = Empty, duration_ms = Empty)
            }
            Call::Event(topic) => {
                tracing::debug_span!("plugin_call", plugin = %plugin, event = %topic, outcome = Empty, duration_ms = Empty)
            }
            Call::Service {
                service,
                method,
                caller,
            } => {
                tracing::debug_span!("plugin_call", plugin = %plugin, service, method, caller, outcome = Empty, duration_ms = Empty)
            }
            Call::Timer(name) => {
                tracing::debug_span!("plugin_call", plugin = %plugin, timer = %name, outcome = Empty, duration_ms = Empty)
            }
            other => {
                tracing::debug_span!("plugin_call", plugin = %plugin, step = %other.describe(), outcome = Empty, duration_ms = Empty)
            }
        }
    }
}

/// Make one call into `p`, guarded (see the module's doc). The future is the plugin's method,
/// already given its arguments.
pub(crate) async fn guarded<T>(
    p: &Loaded,
    call: Call<'_>,
    fut: impl Future<Output = Result<T, PluginError>>,
) -> Result<T, PluginError> {
    let span = call.span(&p.name);
    let timeout = call.timeout(p);
    let started = Instant::now();
    let result = match tokio::time::timeout(call.backstop(p, timeout), caught(fut))
        .instrument(span.clone())
        .await
    {
        Ok(r) => r,
        Err(_) if p.kind == "native" => Err(call.timed_out(timeout)),
        Err(_) => Err(call.backstop_stopped(timeout)),
    };
    let took = started.elapsed();
    close_span(&span, took, result.is_ok());
    if call.serving() {
        account(p, &call, took, &result);
    }
    result
}

/// `fut`, with a panic while it is polled turned into the plugin's [`PluginError::Trap`]. The
/// future is not polled again after it panicked. What the call changed before it panicked (an
/// exchange's headers) stays, as it does when a call returns an error after changing it.
async fn caught<T>(fut: impl Future<Output = Result<T, PluginError>>) -> Result<T, PluginError> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(PluginError::Trap(format!(
                "panicked: {}",
                panic_message(panic.as_ref())
            )))),
        }
    })
    .await
}

/// The message a panic was raised with (`panic!("…")`, `unwrap` on an error), when it is text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-text panic payload"
    }
}

/// What a call made while the plugin serves counts for: busy time, success or failure, the
/// per-hook and route counters, and its error.
fn account<T>(p: &Loaded, call: &Call<'_>, took: Duration, result: &Result<T, PluginError>) {
    p.state.record_busy(took);
    match call {
        Call::Hook(h) => p.state.hook(*h).record(took, result.is_err()),
        Call::Route { .. } => p.state.routes().record(took, result.is_err()),
        _ => {}
    }
    match result {
        Ok(_) => p.state.record_success(),
        Err(e) => {
            p.state.record_failure(e);
            let what = call.describe();
            p.state.record_error(format!("{what}: {e}"));
            tracing::warn!(plugin = %p.name, call = %what, error = %e, "plugin call failed");
        }
    }
}

/// Record a `plugin_call` span's outcome and duration.
pub(crate) fn close_span(span: &tracing::Span, took: Duration, ok: bool) {
    span.record("outcome", if ok { "ok" } else { "error" });
    span.record("duration_ms", took.as_secs_f64() * 1000.0);
}
