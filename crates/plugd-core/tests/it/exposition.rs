//! `/metrics` parses as the Prometheus text format and follows the naming conventions for every
//! family, and no plugin can put a series into (or break) a host family.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::Method;
use parking_lot::Mutex;
use plugd_core::{CUSTOM_PREFIX, Exchange, HookType, Host, InitContext, Plugin, PluginError};

use crate::{Journal, Recorder, config, manifest};

/// Records the series it is given in `init`, and keeps what the host answered.
struct Recording {
    records: Vec<(&'static str, &'static str)>,
    refused: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Plugin for Recording {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        let m = ctx.metrics()?;
        for (kind, name) in &self.records {
            let labels = [("route".to_string(), "/x".to_string())];
            let result = match *kind {
                "counter" => m.counter_add(name, 2.0, &labels),
                "gauge" => m.gauge_set(name, 3.5, &[]),
                _ => m.histogram_observe(name, 0.002, &[]),
            };
            if result.is_err() {
                self.refused.lock().push((*name).to_string());
            }
        }
        Ok(())
    }
}

/// One family of a parsed exposition.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    /// Sample name, labels (sorted), value.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn is_metric_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && !name.starts_with("__")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The labels of `{…}` (without the braces), unescaped; an error for anything malformed.
fn parse_labels(mut text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text
            .split_once("=\"")
            .ok_or_else(|| format!("no =\" in {text:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape {other:?} in {rest:?}")),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                '\n' => return Err("a raw newline in a label value".into()),
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated value in {rest:?}"))?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Ok(labels)
}

/// Parse the text format (version 0.0.4) strictly: every sample belongs to the family TYPE'd
/// just before it, no family is TYPE'd twice, no series appears twice.
fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut pending_help: Option<String> = None;
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            pending_help = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("bad TYPE".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad family name {name:?}")));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("bad type {kind:?}")));
            }
            if families.contains_key(name) {
                return Err(at(format!("family {name} TYPE'd twice")));
            }
            let help = pending_help.take().as_deref() == Some(name);
            families.insert(
                name.to_string(),
                Family {
                    kind: kind.to_string(),
                    help,
                    samples: Vec::new(),
                },
            );
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series_text, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        let (name, labels) = match series_text.split_once('{') {
            Some((name, rest)) => (
                name,
                parse_labels(rest.strip_suffix('}').ok_or_else(|| at("no }".into()))?)
                    .map_err(at)?,
            ),
            None => (series_text, BTreeMap::new()),
        };
        let family = current
            .as_deref()
            .ok_or_else(|| at("a sample before any TYPE".into()))?;
        let f = families.get_mut(family).expect("current family");
        let belongs = match f.kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family)),
            _ => name == family,
        };
        if !belongs {
            return Err(at(format!("sample {name} is not of family {family}")));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("a series twice".into()));
        }
        f.samples.push((name.to_string(), labels, value));
    }
    Ok(families)
}

/// The naming rules for one family.
fn check_names(name: &str, f: &Family) -> Result<(), String> {
    if !name.starts_with("plugd_") {
        return Err(format!("{name}: not under plugd_"));
    }
    if !f.help {
        return Err(format!("{name}: no HELP"));
    }
    if (f.kind == "counter") != name.ends_with("_total") {
        return Err(format!(
            "{name}: a counter ends in _total, and only a counter"
        ));
    }
    // Units are the host's to follow; a plugin names its own metrics.
    let units = ["_ms", "_millis", "_milliseconds", "_percent", "_count"];
    for unit in units.iter().filter(|_| !name.starts_with(CUSTOM_PREFIX)) {
        if name.ends_with(unit) || name.contains(&format!("{unit}_")) {
            return Err(format!("{name}: {unit} is not a base unit"));
        }
    }
    if name.contains("duration") && !name.ends_with("_seconds") && !name.starts_with(CUSTOM_PREFIX)
    {
        return Err(format!("{name}: a duration is in _seconds"));
    }
    if f.kind == "histogram" {
        check_histogram(name, f)?;
    }
    Ok(())
}

/// Buckets ascend and are cumulative, and `+Inf` equals `_count`, per series.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (sample, labels, value) in &f.samples {
        let mut key = labels.clone();
        let le = key.remove("le");
        let key = format!("{key:?}");
        if sample.ends_with("_bucket") {
            let le = le.ok_or_else(|| format!("{name}: a bucket without le"))?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{name}: le {le:?}"))?
            };
            by_series.entry(key).or_default().push((bound, *value));
        } else if sample.ends_with("_count") {
            counts.insert(key, *value);
        }
    }
    for (key, buckets) in by_series {
        for pair in buckets.windows(2) {
            if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                return Err(format!("{name}{key}: buckets {pair:?}"));
            }
        }
        let last = buckets.last().copied().unwrap_or((0.0, 0.0));
        if last.0 != f64::INFINITY || Some(&last.1) != counts.get(&key) {
            return Err(format!("{name}{key}: +Inf bucket and _count differ"));
        }
    }
    Ok(())
}

async fn get(host: &Host, path: &str) {
    host.dispatcher()
        .handle(Exchange::new(Method::GET, path))
        .await;
}

fn recording(records: &[(&'static str, &'static str)]) -> (Recording, Arc<Mutex<Vec<String>>>) {
    let refused = Arc::new(Mutex::new(Vec::new()));
    (
        Recording {
            records: records.to_vec(),
            refused: refused.clone(),
        },
        refused,
    )
}

/// The families of a host with a hooked, routed plugin, and plugins recording `records` each.
async fn families_with(
    records: &[(&'static str, &[(&'static str, &'static str)])],
) -> (
    BTreeMap<String, Family>,
    String,
    BTreeMap<String, Vec<String>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut app = Recorder::new("app", &j);
    app.route = Some("/x");
    app.hooks = vec![(HookType::PreRequest, 10)];
    let mut builder = Host::builder()
        .config(config(dir.path(), ""))
        .native(manifest("app", ""), app);
    let mut refused = BTreeMap::new();
    for (plugin, records) in records {
        let (p, r) = recording(records);
        refused.insert(plugin.to_string(), r);
        builder = builder.native(manifest(plugin, ""), p);
    }
    let host = builder.build().unwrap();
    host.start().await.unwrap();
    for _ in 0..3 {
        get(&host, "/plugins/app/x").await;
    }
    let text = host.render_metrics();
    host.shutdown().await;
    let refused = refused
        .into_iter()
        .map(|(k, v)| (k, v.lock().clone()))
        .collect();
    (
        parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
        text,
        refused,
    )
}

#[tokio::test]
async fn every_family_parses_and_follows_the_naming_rules() {
    let (families, text, _) = families_with(&[(
        "rec",
        &[
            ("counter", "greetings"),
            ("gauge", "queue_depth"),
            ("histogram", "wait_seconds"),
        ],
    )])
    .await;
    for (name, f) in &families {
        check_names(name, f).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    for (family, sample) in [
        (
            "plugd_plugin_hook_duration_seconds",
            "plugd_plugin_hook_duration_seconds_count",
        ),
        (
            "plugd_plugin_hook_executions_total",
            "plugd_plugin_hook_executions_total",
        ),
        (
            "plugd_plugin_route_requests_total",
            "plugd_plugin_route_requests_total",
        ),
        (
            "plugd_custom_greetings_total",
            "plugd_custom_greetings_total",
        ),
        (
            "plugd_custom_wait_seconds",
            "plugd_custom_wait_seconds_bucket",
        ),
    ] {
        let f = families
            .get(family)
            .unwrap_or_else(|| panic!("no {family}\n{text}"));
        assert!(
            f.samples.iter().any(|(s, _, _)| s == sample),
            "no {sample}\n{text}"
        );
    }
    let calls = &families["plugd_plugin_route_requests_total"].samples;
    assert!(
        calls
            .iter()
            .any(|(_, l, v)| l.get("plugin").map(String::as_str) == Some("app") && *v == 3.0),
        "{calls:?}"
    );
    // A 2ms observation lands in the 2.5ms bucket of a seconds histogram.
    let hook = &families["plugd_plugin_hook_duration_seconds"];
    assert!(
        hook.samples
            .iter()
            .any(|(s, l, _)| s.ends_with("_bucket") && l["le"] == "0.0025"),
        "buckets in seconds\n{text}"
    );
}

#[tokio::test]
async fn no_plugin_can_create_a_family_that_collides_with_a_host_family() {
    let (host_only, _, _) = families_with(&[]).await;
    let host_families: BTreeSet<&String> = host_only.keys().collect();
    assert!(
        host_families.iter().all(|f| !f.starts_with(CUSTOM_PREFIX)),
        "a host family in the plugins' namespace: {host_families:?}"
    );
    // Names that produced host families (or each other's) when the plugin name was part of the
    // family name: plugin `hook` + `duration_ms`, `a-b` + `c` against `a_b` + `c`, `a` + `b_c`.
    let hostile: &[(&'static str, &[(&'static str, &'static str)])] = &[
        (
            "hook",
            &[
                ("histogram", "duration_ms"),
                ("counter", "execution_count"),
                ("gauge", "plugd_plugin_status"),
                ("counter", "plugin_restarts_total"),
                ("gauge", "__name__"),
            ],
        ),
        ("a-b", &[("counter", "c")]),
        ("a_b", &[("counter", "c")]),
        ("a", &[("gauge", "b_c"), ("histogram", "c")]),
    ];
    let (families, text, refused) = families_with(hostile).await;
    for (name, f) in &families {
        check_names(name, f).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if !host_families.contains(name) {
            assert!(
                name.starts_with(CUSTOM_PREFIX),
                "a plugin created {name} outside {CUSTOM_PREFIX}\n{text}"
            );
        }
    }
    // The host families hold the same series as without the plugins' metrics (bar the plugins'
    // own per-plugin series, labelled with their names).
    for name in &host_families {
        for (_, labels, _) in &families[*name].samples {
            if let Some(p) = labels.get("plugin") {
                assert!(
                    ["app", "hook", "a-b", "a_b", "a"].contains(&p.as_str()),
                    "{name}: {labels:?}"
                );
            }
        }
    }
    assert_eq!(
        refused["hook"],
        ["execution_count", "plugin_restarts_total", "__name__"],
        "names outside the grammar or with a derived suffix are refused"
    );
    // `c` is a counter of a-b and a_b and a histogram of `a`: one name, one type. Whichever
    // plugin comes first sets it, the other's series are left out, and the scrape still parses.
    let counter = families.get("plugd_custom_c_total");
    let histogram = families.get("plugd_custom_c");
    assert!(counter.is_some() != histogram.is_some(), "{text}");
    if let Some(c) = counter {
        // a-b and a_b: one family, two series told apart by the plugin label.
        let plugins: BTreeSet<&str> = c
            .samples
            .iter()
            .map(|(_, l, _)| l["plugin"].as_str())
            .collect();
        assert_eq!(plugins, BTreeSet::from(["a-b", "a_b"]), "{text}");
    }
    assert!(
        text.contains("plugd_custom_b_c{plugin=\"a\"} 3.5"),
        "{text}"
    );
    assert!(
        text.contains("plugd_custom_plugd_plugin_status{plugin=\"hook\"} 3.5"),
        "{text}"
    );
}
