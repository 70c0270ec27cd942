//! What an instance tells the fleet about itself (its heartbeat), and the arithmetic a rollout
//! does on two of them: a window's requests, errors and p99.

use serde::{Deserialize, Serialize};

use plugd_core::{BUCKETS_SECONDS, Host};

/// One instance as the fleet sees it: written to the instances bucket every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Its name in the fleet (`fleet.instance`).
    pub instance: String,
    /// Its admin API, as the others reach it.
    pub advertise: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When this report was written, in ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether it is ready to serve (`/readyz`).
    pub ready: bool,
    /// Whether a plugin it holds is failed or disabled (`/healthz` says `degraded`).
    pub degraded: bool,
    /// Its plugins.
    pub plugins: Vec<PluginReport>,
}

/// One plugin of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginReport {
    /// The plugin.
    pub name: String,
    /// The version it runs.
    pub version: String,
    /// Its status (`running`, `error`, `disabled`, …).
    pub status: String,
    /// Requests its routes served since it loaded.
    pub requests: u64,
    /// Of those, the ones that failed (an error, a trap, a deadline: a 5xx answer).
    pub errors: u64,
    /// Its routes' durations, cumulative per bound of `BUCKETS_SECONDS` (the last is `+Inf`).
    pub route_durations: Vec<u64>,
}

impl InstanceReport {
    /// The report of `host` now.
    pub fn of(host: &Host, instance: &str, advertise: &str, started_at: &str) -> InstanceReport {
        let plugins = host
            .list_plugins()
            .into_iter()
            .map(|info| {
                let metrics = host.plugin_metrics(&info.name);
                let (requests, errors, route_durations) = metrics
                    .map(|m| {
                        (
                            m.routes.execution_count,
                            m.routes.error_count,
                            m.route_durations,
                        )
                    })
                    .unwrap_or_default();
                PluginReport {
                    name: info.name,
                    version: info.version,
                    status: info.status.as_str().to_string(),
                    requests,
                    errors,
                    route_durations,
                }
            })
            .collect();
        InstanceReport {
            instance: instance.to_string(),
            advertise: advertise.to_string(),
            started_at: started_at.to_string(),
            at_ms: now_ms(),
            ready: host.readiness().ready,
            degraded: host.health_summary().status != "ok",
            plugins,
        }
    }

    /// Its report of `plugin`, if it holds it.
    pub fn plugin(&self, plugin: &str) -> Option<&PluginReport> {
        self.plugins.iter().find(|p| p.name == plugin)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a plugin's routes did over a window, on one or several instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Per-bucket counts (not cumulative), as `BUCKETS_SECONDS` and `+Inf`.
    pub buckets: Vec<u64>,
}

impl Window {
    /// What happened between `before` and `after` (a reload resets the counters: then all of
    /// `after` is new).
    pub fn between(before: Option<&PluginReport>, after: &PluginReport) -> Window {
        let reset = before.is_none_or(|b| b.requests > after.requests);
        let zero = Vec::new();
        let before_buckets = match before {
            Some(b) if !reset => &b.route_durations,
            _ => &zero,
        };
        let (requests, errors) = match before {
            Some(b) if !reset => (
                after.requests - b.requests,
                after.errors.saturating_sub(b.errors),
            ),
            _ => (after.requests, after.errors),
        };
        Window {
            requests,
            errors,
            buckets: per_bucket(&after.route_durations)
                .iter()
                .zip(
                    per_bucket(before_buckets)
                        .iter()
                        .chain(std::iter::repeat(&0)),
                )
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    /// Add another window (another instance's).
    pub fn add(&mut self, other: &Window) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// Failed requests over requests (0 without requests). The two counters are read one after
    /// the other while requests run, so a report may count a failure before its request: the
    /// rate is at most 1.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors.min(self.requests) as f64 / self.requests as f64
        }
    }

    /// The upper bound of the bucket holding the 99th percentile, in ms (`None` without
    /// requests; 10 s for the `+Inf` bucket).
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BUCKETS_SECONDS.get(i).map_or(10_000.0, |s| s * 1000.0));
            }
        }
        Some(10_000.0)
    }
}

/// Cumulative counts to counts per bucket.
fn per_bucket(cumulative: &[u64]) -> Vec<u64> {
    let mut previous = 0;
    cumulative
        .iter()
        .map(|c| {
            let n = c.saturating_sub(previous);
            previous = *c;
            n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requests: u64, errors: u64, cumulative: Vec<u64>) -> PluginReport {
        PluginReport {
            name: "p".into(),
            version: "1.0.0".into(),
            status: "running".into(),
            requests,
            errors,
            route_durations: cumulative,
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_reports() {
        let before = report(10, 1, vec![5, 10, 10]);
        let after = report(30, 3, vec![10, 29, 30]);
        let w = Window::between(Some(&before), &after);
        assert_eq!((w.requests, w.errors), (20, 2));
        assert_eq!(w.buckets, vec![5, 14, 1]);
        assert_eq!(w.error_rate(), 0.1);
        assert_eq!(w.p99_ms(), Some(BUCKETS_SECONDS[2] * 1000.0));
    }

    #[test]
    fn a_reload_resets_the_counters_and_the_window_counts_all_of_after() {
        let before = report(100, 0, vec![100, 100]);
        let after = report(7, 7, vec![0, 7]);
        let w = Window::between(Some(&before), &after);
        assert_eq!((w.requests, w.errors, w.error_rate()), (7, 7, 1.0));
        let racing = report(10, 11, vec![10]);
        assert_eq!(Window::between(None, &racing).error_rate(), 1.0);
    }

    #[test]
    fn windows_add_up_and_an_empty_one_has_no_p99() {
        let mut total = Window::default();
        assert_eq!(total.p99_ms(), None);
        total.add(&Window {
            requests: 2,
            errors: 0,
            buckets: vec![2],
        });
        total.add(&Window {
            requests: 1,
            errors: 1,
            buckets: vec![0, 1],
        });
        assert_eq!(total.buckets, vec![2, 1]);
        assert_eq!(total.requests, 3);
    }
}
