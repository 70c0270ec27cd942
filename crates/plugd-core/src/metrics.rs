//! Metrics: lock-free histograms for hook and route timings, the metrics plugins record about
//! themselves, and the Prometheus text exposition of all of it.
//!
//! Naming (README, "Metrics"): every family starts with `plugd_`; durations are in seconds
//! (`_seconds`), counters end in `_total`, and a plugin's name is only ever a label value
//! (`plugin="…"`), never part of a family name. What plugins record about themselves lives in
//! the namespace [`CUSTOM_PREFIX`] (`plugd_custom_<name>`), which no host family uses, so no
//! plugin can write into, or break, a host family.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::HostError;

/// Upper bounds of the duration histograms, in seconds (`+Inf` is implied): 50µs to 5s.
pub const BUCKETS_SECONDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Upper bounds of the histograms plugins record (`+Inf` is implied), unit-free, in 1–5 steps
/// from 0.0001 to 10000: a duration in seconds (the convention) or a size or count fits.
pub const PLUGIN_BUCKETS: [f64; 17] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0,
    5000.0, 10000.0,
];

/// The namespace of the series plugins record: `plugd_custom_<name>` (a counter
/// `plugd_custom_<name>_total`), with the plugin in the `plugin` label. No host family starts
/// with it.
pub const CUSTOM_PREFIX: &str = "plugd_custom_";

/// Endings of a plugin's metric name that are refused: the host adds `_total` to counters, and
/// `_bucket`, `_sum` and `_count` are a histogram's series (`_created` and `_info` are
/// OpenMetrics's).
pub const RESERVED_SUFFIXES: [&str; 6] =
    ["_total", "_bucket", "_sum", "_count", "_created", "_info"];

/// A fixed-bucket histogram of durations; recording is two atomic adds and a bucket search.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    buckets: [AtomicU64; 17],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Record one duration.
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket of [`BUCKETS_SECONDS`] (the last is `+Inf`), the sum in
    /// ms, and the count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut total = 0;
        for b in &self.buckets {
            total += b.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        let sum_ms = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum_ms, total)
    }
}

/// Series one plugin may record about itself.
pub const MAX_SERIES_PER_PLUGIN: usize = 1000;
/// Most labels on one series.
pub const MAX_LABELS: usize = 8;
/// Longest label value, bytes: every value is rendered on every scrape.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Counter(f64),
    Gauge(f64),
    /// Cumulative bucket counts (bounds [`PLUGIN_BUCKETS`]), sum, count.
    Histogram(Vec<u64>, f64, u64),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Histogram(..) => "histogram",
        }
    }
}

type Labels = Vec<(String, String)>;

/// One series a plugin recorded about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricSample {
    /// Its name, as the plugin gave it (exposed as `plugd_custom_<name>`, a counter as
    /// `plugd_custom_<name>_total`, with the `plugin` label).
    pub name: String,
    /// Its labels, `plugin` not included.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// The value; for a histogram, the sum of its observations.
    pub value: f64,
    /// For a histogram, the number of observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The metrics a plugin records through its context (the WIT `metrics` interface): each series
/// is exposed as `plugd_custom_<name>{plugin="<plugin>",…}` (a counter as
/// `plugd_custom_<name>_total`), so no plugin can write another's series or a host family.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    series: Mutex<BTreeMap<(String, Labels), Value>>,
    /// Names already reported as taken by another plugin with another type (warned once).
    conflicts: Mutex<std::collections::BTreeSet<String>>,
}

/// `[a-z_][a-z0-9_]*`, at most 64 characters, not starting with `__` (reserved by Prometheus):
/// a subset of the Prometheus metric and label name grammar.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with("__")
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check(name: &str, labels: &[(String, String)]) -> Result<(), HostError> {
    if !valid_name(name) {
        return Err(HostError::Invalid(format!(
            "invalid metric name {name:?}: use [a-z_][a-z0-9_]*, at most 64 characters, not starting with __"
        )));
    }
    if let Some(suffix) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Err(HostError::Invalid(format!(
            "invalid metric name {name:?}: a name ending in {suffix} is reserved (the host adds _total to a counter's name, and _bucket, _sum and _count are a histogram's series)"
        )));
    }
    if labels.len() > MAX_LABELS {
        return Err(HostError::OverLimit {
            limit: "metrics.max_labels",
            message: format!(
                "metric '{name}' has {} labels: at most {MAX_LABELS}",
                labels.len()
            ),
        });
    }
    for (k, v) in labels {
        if !valid_name(k) || k == "plugin" || k == "le" {
            return Err(HostError::Invalid(format!(
                "invalid metric label {k:?}: use [a-z_][a-z0-9_]*, not starting with __, not 'plugin' or 'le'"
            )));
        }
        if v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(HostError::OverLimit {
                limit: "metrics.max_label_value_bytes",
                message: format!(
                    "metric '{name}': the value of label '{k}' is {} bytes, at most {MAX_LABEL_VALUE_BYTES}",
                    v.len()
                ),
            });
        }
    }
    Ok(())
}

impl PluginMetrics {
    fn update(
        &self,
        name: &str,
        labels: &[(String, String)],
        make: impl FnOnce() -> Value,
        change: impl FnOnce(&mut Value) -> Result<(), String>,
    ) -> Result<(), HostError> {
        check(name, labels)?;
        let mut labels = labels.to_vec();
        labels.sort();
        let mut series = self.series.lock();
        let key = (name.to_string(), labels);
        if !series.contains_key(&key) {
            if series.len() >= MAX_SERIES_PER_PLUGIN {
                return Err(HostError::OverLimit {
                    limit: "metrics.max_series",
                    message: format!(
                        "a plugin may record at most {MAX_SERIES_PER_PLUGIN} metric series"
                    ),
                });
            }
            // One name, one type: a counter cannot become a gauge.
            let new = make();
            if let Some(((_, _), other)) = series.iter().find(|((n, _), _)| n == name)
                && other.kind() != new.kind()
            {
                return Err(HostError::Invalid(format!(
                    "metric '{name}' is a {}, not a {}",
                    other.kind(),
                    new.kind()
                )));
            }
            series.insert(key.clone(), new);
        }
        match series.get_mut(&key) {
            Some(value) => change(value).map_err(HostError::Invalid),
            None => Ok(()),
        }
    }

    /// Add to a counter (never negative).
    pub fn counter_add(
        &self,
        name: &str,
        v: f64,
        labels: &[(String, String)],
    ) -> Result<(), HostError> {
        if !(v.is_finite() && v >= 0.0) {
            return Err(HostError::Invalid(format!("a counter only goes up: {v}")));
        }
        self.update(
            name,
            labels,
            || Value::Counter(0.0),
            |value| match value {
                Value::Counter(c) => {
                    *c += v;
                    Ok(())
                }
                other => Err(format!("metric '{name}' is a {}", other.kind())),
            },
        )
    }

    /// Set a gauge.
    pub fn gauge_set(
        &self,
        name: &str,
        v: f64,
        labels: &[(String, String)],
    ) -> Result<(), HostError> {
        if !v.is_finite() {
            return Err(HostError::Invalid(format!("not a number: {v}")));
        }
        self.update(
            name,
            labels,
            || Value::Gauge(0.0),
            |value| match value {
                Value::Gauge(g) => {
                    *g = v;
                    Ok(())
                }
                other => Err(format!("metric '{name}' is a {}", other.kind())),
            },
        )
    }

    /// Observe a value in a histogram (buckets [`PLUGIN_BUCKETS`]; record durations in seconds).
    pub fn histogram_observe(
        &self,
        name: &str,
        v: f64,
        labels: &[(String, String)],
    ) -> Result<(), HostError> {
        if !v.is_finite() {
            return Err(HostError::Invalid(format!("not a number: {v}")));
        }
        self.update(
            name,
            labels,
            || Value::Histogram(vec![0; PLUGIN_BUCKETS.len() + 1], 0.0, 0),
            |value| match value {
                Value::Histogram(buckets, sum, count) => {
                    for (i, b) in buckets.iter_mut().enumerate() {
                        if i == PLUGIN_BUCKETS.len() || v <= PLUGIN_BUCKETS[i] {
                            *b += 1;
                        }
                    }
                    *sum += v;
                    *count += 1;
                    Ok(())
                }
                other => Err(format!("metric '{name}' is a {}", other.kind())),
            },
        )
    }

    /// Every series the plugin recorded, sorted by name and labels.
    pub fn samples(&self) -> Vec<MetricSample> {
        self.series
            .lock()
            .iter()
            .map(|((name, labels), value)| {
                let (number, count) = match value {
                    Value::Counter(v) | Value::Gauge(v) => (*v, None),
                    Value::Histogram(_, sum, count) => (*sum, Some(*count)),
                };
                MetricSample {
                    name: name.clone(),
                    labels: labels.iter().cloned().collect(),
                    kind: value.kind(),
                    value: number,
                    count,
                }
            })
            .collect()
    }
}

/// The family a plugin's metric is exposed under: `plugd_custom_<name>`, `…_total` for a counter.
fn custom_family(name: &str, value: &Value) -> String {
    match value {
        Value::Counter(_) => format!("{CUSTOM_PREFIX}{name}_total"),
        _ => format!("{CUSTOM_PREFIX}{name}"),
    }
}

/// Write what every plugin recorded about itself, in the Prometheus text format: one family per
/// metric name across plugins, the plugin in the `plugin` label. A name means one type: when
/// plugins record one name with different types, the first plugin (in `plugins` order) sets it,
/// and the others' series of that name are left out (a warning is logged once per plugin and
/// name; the admin API still shows them).
pub(crate) fn render_custom(plugins: &[(&str, &PluginMetrics)], out: &mut String) {
    type Series = (String, Labels, Value);
    let mut families: BTreeMap<String, (&'static str, Vec<Series>)> = BTreeMap::new();
    for (plugin, metrics) in plugins {
        for ((name, labels), value) in metrics.series.lock().iter() {
            let (kind, series) = families
                .entry(name.clone())
                .or_insert_with(|| (value.kind(), Vec::new()));
            if *kind != value.kind() {
                if metrics.conflicts.lock().insert(name.clone()) {
                    tracing::warn!(
                        plugin = %plugin,
                        metric = %name,
                        "metric '{name}' of plugin '{plugin}' is a {}, but another plugin records it as a {kind}: its series are left out of /metrics (give it another name)",
                        value.kind()
                    );
                }
                continue;
            }
            series.push((plugin.to_string(), labels.clone(), value.clone()));
        }
    }
    for (name, (kind, series)) in &families {
        let Some((_, _, first)) = series.first() else {
            continue;
        };
        let full = custom_family(name, first);
        let _ = writeln!(out, "# HELP {full} Recorded by plugins (metric '{name}').");
        let _ = writeln!(out, "# TYPE {full} {kind}");
        for (plugin, labels, value) in series {
            let mut base: Labels = vec![("plugin".into(), plugin.clone())];
            base.extend(labels.iter().cloned());
            match value {
                Value::Counter(v) | Value::Gauge(v) => sample(out, &full, &base, *v),
                Value::Histogram(buckets, sum, count) => {
                    for (i, c) in buckets.iter().enumerate() {
                        let le = PLUGIN_BUCKETS
                            .get(i)
                            .map_or("+Inf".to_string(), |b| b.to_string());
                        let mut l = base.clone();
                        l.push(("le".into(), le));
                        sample(out, &format!("{full}_bucket"), &l, *c as f64);
                    }
                    sample(out, &format!("{full}_sum"), &base, *sum);
                    sample(out, &format!("{full}_count"), &base, *count as f64);
                }
            }
        }
    }
}

/// Escape a label value for the text format.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample line.
pub(crate) fn sample(out: &mut String, name: &str, labels: &[(String, String)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = DurationHistogram::default();
        h.record(Duration::from_micros(30));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(10));
        let (buckets, sum, count) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets[0], 1, "<= 0.05 ms");
        assert_eq!(buckets[6], 2, "<= 5 ms");
        assert_eq!(*buckets.last().unwrap(), 3, "+Inf");
        assert!((sum - 10_003.03).abs() < 0.01, "{sum}");
    }

    #[test]
    fn plugin_metrics_are_checked_and_namespaced() {
        let m = PluginMetrics::default();
        let l = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        m.counter_add("requests", 2.0, &l("route", "/a")).unwrap();
        m.counter_add("requests", 1.0, &l("route", "/a")).unwrap();
        m.gauge_set("queue", 7.0, &[]).unwrap();
        m.histogram_observe("size", 3.0, &[]).unwrap();
        assert!(m.counter_add("requests", -1.0, &[]).is_err());
        assert!(
            m.gauge_set("requests", 1.0, &[]).is_err(),
            "a counter stays a counter"
        );
        assert!(m.counter_add("Bad-Name", 1.0, &[]).is_err());
        assert!(
            m.counter_add("x", 1.0, &l("plugin", "other")).is_err(),
            "cannot forge the plugin label"
        );
        let samples = m.samples();
        let names: Vec<(&str, &str, f64, Option<u64>)> = samples
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.value, s.count))
            .collect();
        assert_eq!(
            names,
            [
                ("queue", "gauge", 7.0, None),
                ("requests", "counter", 3.0, None),
                ("size", "histogram", 3.0, Some(1)),
            ]
        );
        assert_eq!(samples[1].labels["route"], "/a");
        let mut out = String::new();
        render_custom(&[("my-plugin", &m)], &mut out);
        assert!(
            out.contains("# TYPE plugd_custom_requests_total counter"),
            "{out}"
        );
        assert!(
            out.contains("plugd_custom_requests_total{plugin=\"my-plugin\",route=\"/a\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("plugd_custom_queue{plugin=\"my-plugin\"} 7"),
            "{out}"
        );
        assert!(
            out.contains("plugd_custom_size_bucket{plugin=\"my-plugin\",le=\"+Inf\"} 1"),
            "{out}"
        );
        assert!(
            !out.contains("my_plugin"),
            "the plugin name is only a label value: {out}"
        );
    }

    #[test]
    fn names_outside_the_grammar_or_with_a_derived_suffix_are_refused() {
        let m = PluginMetrics::default();
        for bad in [
            "",
            "9lives",
            "Upper",
            "dot.ted",
            "da-sh",
            "__reserved",
            "hits_total",
            "size_bucket",
            "size_sum",
            "size_count",
            "x_created",
            "build_info",
        ] {
            let e = m.counter_add(bad, 1.0, &[]).unwrap_err();
            assert!(matches!(e, HostError::Invalid(_)), "{bad:?}: {e}");
        }
        let long = "a".repeat(65);
        assert!(m.gauge_set(&long, 1.0, &[]).is_err());
        let e = m
            .gauge_set("g", 1.0, &[("__name__".into(), "x".into())])
            .unwrap_err();
        assert!(e.to_string().contains("__name__"), "{e}");
        assert!(m.samples().is_empty());
    }

    #[test]
    fn one_name_one_type_across_plugins() {
        let a = PluginMetrics::default();
        let b = PluginMetrics::default();
        a.gauge_set("depth", 1.0, &[]).unwrap();
        b.histogram_observe("depth", 0.5, &[]).unwrap();
        b.gauge_set("other", 2.0, &[]).unwrap();
        let mut out = String::new();
        render_custom(&[("a", &a), ("b", &b)], &mut out);
        assert_eq!(
            out.matches("# TYPE plugd_custom_depth ").count(),
            1,
            "{out}"
        );
        assert!(out.contains("# TYPE plugd_custom_depth gauge"), "{out}");
        assert!(!out.contains("plugd_custom_depth_bucket"), "{out}");
        assert!(out.contains("plugd_custom_other{plugin=\"b\"} 2"), "{out}");
    }

    #[test]
    fn labels_are_capped_in_count_and_size() {
        let m = PluginMetrics::default();
        let long = vec![("k".to_string(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1))];
        let e = m.counter_add("c", 1.0, &long).unwrap_err();
        assert!(matches!(e, HostError::OverLimit { .. }), "{e}");
        let many: Vec<_> = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .collect();
        assert!(m.counter_add("c", 1.0, &many).is_err());
        let fits = vec![("k".to_string(), "v".repeat(MAX_LABEL_VALUE_BYTES))];
        m.counter_add("c", 1.0, &fits).unwrap();
    }

    #[test]
    fn series_are_capped() {
        let m = PluginMetrics::default();
        for i in 0..MAX_SERIES_PER_PLUGIN {
            m.gauge_set("g", 1.0, &[("i".into(), i.to_string())])
                .unwrap();
        }
        assert!(
            m.gauge_set("g", 1.0, &[("i".into(), "one-more".into())])
                .is_err()
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("k".into(), "a\"b\\c\nd".into())], 1.0);
        assert_eq!(out, "m{k=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
