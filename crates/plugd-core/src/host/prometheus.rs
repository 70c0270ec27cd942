//! `/metrics`: every series of the host and its plugins in the Prometheus text format, rendered
//! at scrape time from the atomic counters (nothing on the request path writes here).

use std::sync::Arc;

use plugd_manifest::HookType;

use crate::cpu::CpuStatus;
use crate::events::SubscriptionInfo;
use crate::loaded::{Loaded, is_absent};
use crate::state::Status;
use crate::threshold::ThresholdStatus;

use super::Host;

impl Host {
    /// Every metric in the Prometheus text format (version 0.0.4): the contract's plugin metrics
    /// (docs/design.md#observability) named by the Prometheus conventions (seconds, `_total` on
    /// counters, the plugin in the `plugin` label), the event bus's queues, and what plugins
    /// record about themselves (`plugd_custom_*`, [`crate::metrics::CUSTOM_PREFIX`]).
    pub fn render_metrics(&self) -> String {
        use crate::metrics::sample;
        use std::fmt::Write as _;
        let plugins = self.inner.plugins.read().clone();
        let mut out = String::with_capacity(4096);
        let label = |p: &Loaded| vec![("plugin".to_string(), p.name.clone())];
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "plugd_plugin_load_duration_seconds",
            "gauge",
            "Time to load, initialize and start a plugin, in seconds.",
        );
        for p in &plugins {
            sample(
                &mut out,
                "plugd_plugin_load_duration_seconds",
                &label(p),
                p.state.load_duration().as_secs_f64(),
            );
        }
        family(
            &mut out,
            "plugd_plugin_load_success",
            "gauge",
            "1 when the plugin loaded, 0 when it failed.",
        );
        for p in &plugins {
            let ok = !matches!(p.state.status(), Status::Error);
            sample(
                &mut out,
                "plugd_plugin_load_success",
                &label(p),
                if ok { 1.0 } else { 0.0 },
            );
        }
        family(
            &mut out,
            "plugd_plugin_status",
            "gauge",
            "1 for the plugin's current status.",
        );
        for p in &plugins {
            let current = p.state.status();
            for status in Status::ALL {
                let mut l = label(p);
                l.push(("status".into(), status.as_str().into()));
                sample(
                    &mut out,
                    "plugd_plugin_status",
                    &l,
                    if status == current { 1.0 } else { 0.0 },
                );
            }
        }
        family(
            &mut out,
            "plugd_plugin_errors_total",
            "counter",
            "Errors of the plugin since it loaded.",
        );
        for p in &plugins {
            sample(
                &mut out,
                "plugd_plugin_errors_total",
                &label(p),
                p.state.error_count() as f64,
            );
        }
        let stored: Vec<(String, crate::kv::KvUsage)> = {
            let stores = self.inner.stores.lock();
            plugins
                .iter()
                .filter_map(|p| Some((p.name.clone(), stores.get(&p.name)?.counted_usage()?)))
                .collect()
        };
        for (name, help, value) in [
            (
                "plugd_plugin_storage_bytes",
                "Bytes of keys and values the plugin holds in storage (limits.storage_bytes), as last counted.",
                (|u: &crate::kv::KvUsage| u.bytes) as fn(&crate::kv::KvUsage) -> u64,
            ),
            (
                "plugd_plugin_storage_keys",
                "Keys the plugin holds in storage (limits.storage_keys), as last counted.",
                |u: &crate::kv::KvUsage| u.keys,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            for (plugin, usage) in &stored {
                let l = vec![("plugin".to_string(), plugin.clone())];
                sample(&mut out, name, &l, value(usage) as f64);
            }
        }
        family(
            &mut out,
            "plugd_post_response_inline_total",
            "counter",
            "Requests whose post_response hooks ran before their response, the background bound being reached.",
        );
        sample(
            &mut out,
            "plugd_post_response_inline_total",
            &[],
            self.inner.dispatcher.post_response_inline() as f64,
        );
        family(
            &mut out,
            "plugd_plugin_log_lines_total",
            "counter",
            "Log lines the plugin wrote (log calls, stdout and stderr lines) that reached the host's log.",
        );
        for p in &plugins {
            sample(
                &mut out,
                "plugd_plugin_log_lines_total",
                &label(p),
                p.state.log().written() as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_log_dropped_lines_total",
            "counter",
            "Log lines of the plugin dropped for going over its rate (limits.log_lines_per_second, limits.log_bytes_per_second).",
        );
        for p in &plugins {
            sample(
                &mut out,
                "plugd_plugin_log_dropped_lines_total",
                &label(p),
                p.state.log().dropped() as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_hook_executions_total",
            "counter",
            "Hook calls.",
        );
        let hook_label = |p: &Loaded, hook: HookType| {
            let mut l = label(p);
            l.push(("hook".into(), hook.as_str().into()));
            l
        };
        for p in &plugins {
            for (hook, m) in p.state.hook_metrics() {
                sample(
                    &mut out,
                    "plugd_plugin_hook_executions_total",
                    &hook_label(p, hook),
                    m.execution_count as f64,
                );
            }
        }
        family(
            &mut out,
            "plugd_plugin_hook_errors_total",
            "counter",
            "Hook calls that failed.",
        );
        for p in &plugins {
            for (hook, m) in p.state.hook_metrics() {
                sample(
                    &mut out,
                    "plugd_plugin_hook_errors_total",
                    &hook_label(p, hook),
                    m.error_count as f64,
                );
            }
        }
        family(
            &mut out,
            "plugd_plugin_hook_duration_seconds",
            "histogram",
            "Hook call durations, in seconds.",
        );
        for p in &plugins {
            for (hook, _) in p.state.hook_metrics() {
                let (buckets, sum, count) = p.state.hook(hook).durations().snapshot();
                for (i, c) in buckets.iter().enumerate() {
                    let mut l = hook_label(p, hook);
                    let le = crate::BUCKETS_SECONDS
                        .get(i)
                        .map_or("+Inf".to_string(), |b| b.to_string());
                    l.push(("le".into(), le));
                    sample(
                        &mut out,
                        "plugd_plugin_hook_duration_seconds_bucket",
                        &l,
                        *c as f64,
                    );
                }
                sample(
                    &mut out,
                    "plugd_plugin_hook_duration_seconds_sum",
                    &hook_label(p, hook),
                    sum / 1000.0,
                );
                sample(
                    &mut out,
                    "plugd_plugin_hook_duration_seconds_count",
                    &hook_label(p, hook),
                    count as f64,
                );
            }
        }
        family(
            &mut out,
            "plugd_plugin_route_requests_total",
            "counter",
            "Requests handled by the plugin's routes.",
        );
        for p in &plugins {
            let m = p.state.routes().snapshot();
            sample(
                &mut out,
                "plugd_plugin_route_requests_total",
                &label(p),
                m.execution_count as f64,
            );
        }
        let thresholds: Vec<(&Arc<Loaded>, ThresholdStatus)> = plugins
            .iter()
            .map(|p| (p, p.state.threshold_status()))
            .filter(|(_, t)| t.enabled)
            .collect();
        family(
            &mut out,
            "plugd_plugin_errors_in_window",
            "gauge",
            "Errors in the window of the plugin's error threshold.",
        );
        for (p, t) in &thresholds {
            sample(
                &mut out,
                "plugd_plugin_errors_in_window",
                &label(p),
                t.errors_in_window as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_error_threshold",
            "gauge",
            "max_errors of the plugin's error threshold.",
        );
        for (p, t) in &thresholds {
            sample(
                &mut out,
                "plugd_plugin_error_threshold",
                &label(p),
                t.max_errors as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_error_threshold_trips_total",
            "counter",
            "Times the plugin's error threshold tripped.",
        );
        for (p, t) in &thresholds {
            sample(
                &mut out,
                "plugd_plugin_error_threshold_trips_total",
                &label(p),
                t.trips as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_restarts_total",
            "counter",
            "Restarts attempted by supervision.",
        );
        for p in &plugins {
            sample(
                &mut out,
                "plugd_plugin_restarts_total",
                &label(p),
                p.state.supervision_status().restarts as f64,
            );
        }
        let budgeted: Vec<(&Arc<Loaded>, CpuStatus)> = plugins
            .iter()
            .map(|p| (p, p.state.cpu_status()))
            .filter(|(_, c)| c.max_cpu_percent.is_some())
            .collect();
        family(
            &mut out,
            "plugd_plugin_cpu_ratio",
            "gauge",
            "Share of one core (0 to 1) the plugin's calls took in the last complete 1s window (wall-clock time inside calls).",
        );
        for (p, c) in &budgeted {
            sample(
                &mut out,
                "plugd_plugin_cpu_ratio",
                &label(p),
                c.last_window_percent as f64 / 100.0,
            );
        }
        family(
            &mut out,
            "plugd_plugin_cpu_throttled",
            "gauge",
            "1 while the plugin is throttled for going over limits.max_cpu_percent.",
        );
        for (p, c) in &budgeted {
            sample(
                &mut out,
                "plugd_plugin_cpu_throttled",
                &label(p),
                if c.throttled { 1.0 } else { 0.0 },
            );
        }
        family(
            &mut out,
            "plugd_plugin_cpu_throttled_seconds_total",
            "counter",
            "Seconds (whole 1s windows) the plugin was throttled for.",
        );
        for (p, c) in &budgeted {
            sample(
                &mut out,
                "plugd_plugin_cpu_throttled_seconds_total",
                &label(p),
                c.throttled_windows as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_health",
            "gauge",
            "1 for the state of the plugin's last health-check answer.",
        );
        for p in &plugins {
            let Some(report) = p
                .state
                .health_report()
                .filter(|_| p.state.status() == Status::Running)
            else {
                continue;
            };
            let current = crate::health::health_label(&report.health);
            for state in ["healthy", "degraded", "unhealthy"] {
                let mut l = label(p);
                l.push(("state".into(), state.into()));
                sample(
                    &mut out,
                    "plugd_plugin_health",
                    &l,
                    if state == current { 1.0 } else { 0.0 },
                );
            }
        }
        let subs = self.inner.bus.subscriptions();
        let sub_label = |s: &SubscriptionInfo| {
            vec![
                ("plugin".to_string(), s.plugin.clone()),
                ("topic".to_string(), s.topic.clone()),
            ]
        };
        family(
            &mut out,
            "plugd_event_queue_depth",
            "gauge",
            "Events waiting in a subscriber's queue.",
        );
        for s in &subs {
            sample(
                &mut out,
                "plugd_event_queue_depth",
                &sub_label(s),
                s.queued as f64,
            );
        }
        family(
            &mut out,
            "plugd_event_dropped_total",
            "counter",
            "Events dropped because a subscriber's queue was full.",
        );
        for s in &subs {
            sample(
                &mut out,
                "plugd_event_dropped_total",
                &sub_label(s),
                s.dropped as f64,
            );
        }
        family(
            &mut out,
            "plugd_event_delivered_total",
            "counter",
            "Events handled by a subscriber.",
        );
        for s in &subs {
            sample(
                &mut out,
                "plugd_event_delivered_total",
                &sub_label(s),
                s.delivered as f64,
            );
        }
        let reloads = self.reload_stats();
        family(
            &mut out,
            "plugd_plugin_reloads_total",
            "counter",
            "Hot reloads by result: succeeded, failed, rolled_back.",
        );
        for (name, c) in &reloads {
            for (result, n) in [
                ("succeeded", c.succeeded),
                ("failed", c.failed),
                ("rolled_back", c.rolled_back),
            ] {
                let l = vec![
                    ("plugin".to_string(), name.clone()),
                    ("result".to_string(), result.to_string()),
                ];
                sample(&mut out, "plugd_plugin_reloads_total", &l, n as f64);
            }
        }
        family(
            &mut out,
            "plugd_plugin_reload_duration_seconds",
            "gauge",
            "Duration of the plugin's last successful reload, in seconds.",
        );
        for (name, c) in &reloads {
            let l = vec![("plugin".to_string(), name.clone())];
            sample(
                &mut out,
                "plugd_plugin_reload_duration_seconds",
                &l,
                c.last_duration_ms / 1000.0,
            );
        }
        let resources: Vec<(&str, crate::plugin::Resources)> = plugins
            .iter()
            .filter(|p| !is_absent(p))
            .filter_map(|p| Some((p.name.as_str(), p.plugin.resources()?)))
            .collect();
        family(
            &mut out,
            "plugd_plugin_memory_bytes",
            "gauge",
            "Linear memory and tables held by the plugin's wasm instances.",
        );
        for (name, r) in &resources {
            let l = vec![("plugin".to_string(), name.to_string())];
            sample(
                &mut out,
                "plugd_plugin_memory_bytes",
                &l,
                r.memory_bytes as f64,
            );
        }
        family(
            &mut out,
            "plugd_plugin_instances",
            "gauge",
            "The plugin's wasm instances, busy (in a call) or idle (in its pool).",
        );
        for (name, r) in &resources {
            for (state, n) in [("busy", r.instances_busy), ("idle", r.instances_idle)] {
                let l = vec![
                    ("plugin".to_string(), name.to_string()),
                    ("state".to_string(), state.to_string()),
                ];
                sample(&mut out, "plugd_plugin_instances", &l, n as f64);
            }
        }
        family(
            &mut out,
            "plugd_plugin_instances_max",
            "gauge",
            "The most wasm instances the plugin may have (limits.instances).",
        );
        for (name, r) in &resources {
            let l = vec![("plugin".to_string(), name.to_string())];
            sample(
                &mut out,
                "plugd_plugin_instances_max",
                &l,
                r.instances_max as f64,
            );
        }
        if let Some(loader) = &self.inner.loader {
            loader.render_metrics(&mut out);
        }
        let recorded: Vec<(&str, &crate::metrics::PluginMetrics)> = plugins
            .iter()
            .map(|p| (p.name.as_str(), p.state.metrics().as_ref()))
            .collect();
        crate::metrics::render_custom(&recorded, &mut out);
        out
    }
}
