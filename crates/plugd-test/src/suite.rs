//! Declarative tests (`tests.yaml` in a plugin folder), for plugins in any language: each case
//! sends one request, hook call, event, service call or command to the plugin and checks what
//! came back and what it left behind (storage, logs, events, metrics). `plugd test <dir>` runs
//! them; so does [`run_suite`].
//!
//! ```yaml
//! config: { greeting: Hi }          # the plugin's config (validated against its schema)
//! grants: [router]                  # default: every permission the manifest declares
//! tests:
//!   - name: greets by name
//!     request: { method: GET, path: /plugins/hello/greet?name=Ada }
//!     expect:
//!       status: 200
//!       json: { message: "Hi, Ada!" }         # a subset of the JSON body
//!       storage: { greetings: "1" }           # waited for (up to 20 s)
//!       metrics: { plugd_custom_greetings_total: 1 }
//!   - name: the hook lets requests through
//!     hook: { type: pre_request, request: { path: /anything } }
//!     expect: { action: continue }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plugd_core::{Action, HookType};
use plugd_manifest::{ExecRule, Manifest, Permission};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::host::DEFAULT_WAIT;
use crate::{Error, TestHost, TestPlugin, TestRequest, TestResponse};

/// The file name `plugd test` looks for in a plugin folder.
pub const SUITE_FILE: &str = "tests.yaml";

/// A `tests.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The plugin's config.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The permissions granted; default: all the manifest declares.
    #[serde(default)]
    pub grants: Option<Vec<Permission>>,
    /// `network.allow` of the plugin.
    #[serde(default)]
    pub network_allow: Vec<String>,
    /// `exec.allow` of the plugin, as in a host config: program names (any arguments) or
    /// `{ command, args, extra_args }`.
    #[serde(default)]
    pub exec_allow: Vec<ExecRule>,
    /// The cases, run in order against one host.
    pub tests: Vec<Case>,
}

/// One case: exactly one of `request`, `hook`, `event`, `service`, `command` (or none, to only
/// check `expect` against the state left by the cases before).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// A request through the dispatcher.
    #[serde(default)]
    pub request: Option<RequestSpec>,
    /// One hook of the plugin, called directly.
    #[serde(default)]
    pub hook: Option<HookSpec>,
    /// An event published by the host.
    #[serde(default)]
    pub event: Option<EventSpec>,
    /// A call of one of the plugin's exported services.
    #[serde(default)]
    pub service: Option<ServiceSpec>,
    /// A command of the plugin (`run-command`).
    #[serde(default)]
    pub command: Option<CommandSpec>,
    /// What must hold afterwards.
    #[serde(default)]
    pub expect: Expect,
}

/// A request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Default `GET`.
    #[serde(default = "get")]
    pub method: String,
    /// Path and query: `/plugins/hello/greet?name=Ada`.
    #[serde(default = "root")]
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A text body.
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON body (sets `content-type`).
    #[serde(default)]
    pub json: Option<Value>,
}

fn get() -> String {
    "GET".into()
}

fn root() -> String {
    "/".into()
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: get(),
            path: root(),
            headers: BTreeMap::new(),
            body: None,
            json: None,
        }
    }
}

impl RequestSpec {
    fn to_request(&self) -> TestRequest {
        let mut r = TestRequest::new(&self.method, &self.path);
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        if let Some(json) = &self.json {
            r = r.json(json);
        } else if let Some(body) = &self.body {
            r = r.body(body.clone());
        }
        r
    }
}

/// A direct hook call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// The hook: `pre_request`, `post_request`, `pre_response`, `post_response`, `error`,
    /// `startup`, `shutdown`.
    #[serde(rename = "type")]
    pub hook: HookType,
    /// The request it sees.
    #[serde(default)]
    pub request: RequestSpec,
    /// A response already present (response-side hooks).
    #[serde(default)]
    pub response: Option<ResponseSpec>,
    /// What failed (the `error` hook).
    #[serde(default)]
    pub error: Option<String>,
}

/// A response given to a response-side hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Status.
    pub status: u16,
    /// Body.
    #[serde(default)]
    pub body: String,
}

/// An event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// The topic.
    pub topic: String,
    /// A text payload.
    #[serde(default)]
    pub payload: Option<String>,
    /// A JSON payload.
    #[serde(default)]
    pub json: Option<Value>,
}

/// A service call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service.
    pub name: String,
    /// The method.
    #[serde(default)]
    pub method: String,
    /// A text payload.
    #[serde(default)]
    pub payload: Option<String>,
    /// A JSON payload.
    #[serde(default)]
    pub json: Option<Value>,
}

/// A command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The command.
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// What must hold after a case's action. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Response status (of the request, or of the hook's early answer).
    pub status: Option<u16>,
    /// Response headers that must be present with these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The whole response body (or service/command output).
    pub body: Option<String>,
    /// A substring of the response body (or output).
    pub body_contains: Option<String>,
    /// A JSON subset of the response body (or output): objects may hold more keys.
    pub json: Option<Value>,
    /// A hook's decision: `continue` or `respond`.
    pub action: Option<String>,
    /// Request headers as a hook left them.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// The call must fail with an error containing this text.
    pub error: Option<String>,
    /// Stored values (UTF-8 text), waited for.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
    /// Substrings of lines the plugin logged, waited for.
    #[serde(default)]
    pub logs: Vec<String>,
    /// Topics of events published since the host started, waited for.
    #[serde(default)]
    pub events: Vec<String>,
    /// Samples of `/metrics` (the series of this plugin), waited for.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Why it failed, or `None`.
    pub failure: Option<String>,
}

/// The results of a suite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteReport {
    /// The plugin tested.
    pub plugin: String,
    /// One result per case, in order.
    pub cases: Vec<CaseResult>,
}

impl SuiteReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_none()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
}

impl Suite {
    /// Read a suite file.
    pub fn from_path(path: &Path) -> Result<Suite, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Suite(format!("{}: {e}", path.display())))?;
        Suite::from_yaml(&text).map_err(|e| Error::Suite(format!("{}: {e}", path.display())))
    }

    /// Parse a suite.
    pub fn from_yaml(text: &str) -> Result<Suite, Error> {
        serde_saphyr::from_str(text).map_err(|e| Error::Suite(e.to_string()))
    }
}

/// Options of [`run_suite`].
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Where compiled components are cached across runs (see [`crate::TestHostBuilder::cache_dir`]).
    pub cache_dir: Option<PathBuf>,
}

/// Load the plugin in `dir` with the suite's config and grants and run every case against it,
/// in order. An error means the plugin could not be loaded at all; failed cases are in the
/// report.
pub async fn run_suite(
    dir: &Path,
    suite: &Suite,
    options: &SuiteOptions,
) -> Result<SuiteReport, Error> {
    let manifest = Manifest::from_path(dir).map_err(|e| Error::Load(e.to_string()))?;
    let mut plugin = TestPlugin::new(dir)
        .config(Value::Object(suite.config.clone()))
        .network_allow(
            &suite
                .network_allow
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .exec_rules(suite.exec_allow.iter().cloned());
    if let Some(grants) = &suite.grants {
        plugin = plugin.grants(grants.iter().copied());
    }
    let mut builder = TestHost::builder().plugin(plugin);
    if let Some(cache) = &options.cache_dir {
        builder = builder.cache_dir(cache);
    }
    let host = builder.start().await?;
    let mut report = SuiteReport {
        plugin: manifest.name.clone(),
        cases: Vec::new(),
    };
    for case in &suite.tests {
        let failure = run_case(&host, &manifest.name, case).await.err();
        report.cases.push(CaseResult {
            name: case.name.clone(),
            failure,
        });
    }
    host.shutdown().await;
    Ok(report)
}

/// What a case's action produced.
#[derive(Default)]
struct Outcome {
    response: Option<TestResponse>,
    output: Option<Vec<u8>>,
    action: Option<Action>,
    request_headers: Option<http::HeaderMap>,
    error: Option<String>,
}

async fn run_case(host: &TestHost, plugin: &str, case: &Case) -> Result<(), String> {
    let actions = [
        case.request.is_some(),
        case.hook.is_some(),
        case.event.is_some(),
        case.service.is_some(),
        case.command.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() > 1 {
        return Err("a case has at most one of request, hook, event, service, command".to_string());
    }
    let mut out = Outcome::default();
    if let Some(r) = &case.request {
        out.response = Some(host.request(r.to_request()).await);
    } else if let Some(h) = &case.hook {
        let mut req = h.request.to_request();
        if let Some(resp) = &h.response {
            req = req.with_response(resp.status, resp.body.clone());
        }
        if let Some(e) = &h.error {
            req = req.with_error(e);
        }
        match host.hook(plugin, h.hook, req).await {
            Ok(o) => {
                out.response = match &o.action {
                    Action::Respond(r) => Some(r.clone().into()),
                    Action::Continue => o.exchange.response.clone().map(Into::into),
                };
                out.request_headers = Some(o.exchange.headers.clone());
                out.action = Some(o.action);
            }
            Err(e) => out.error = Some(e.to_string()),
        }
    } else if let Some(e) = &case.event {
        let payload = payload(&e.payload, &e.json);
        if let Err(err) = host.publish(&e.topic, payload) {
            out.error = Some(err.to_string());
        }
    } else if let Some(s) = &case.service {
        match host
            .call_service(plugin, &s.name, &s.method, &payload(&s.payload, &s.json))
            .await
        {
            Ok(o) => out.output = Some(o),
            Err(e) => out.error = Some(e.to_string()),
        }
    } else if let Some(c) = &case.command {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        match host.run_command(plugin, &c.name, &args).await {
            Ok(o) => out.output = Some(o.into_bytes()),
            Err(e) => out.error = Some(e.to_string()),
        }
    }
    check(host, plugin, &case.expect, &out).await
}

fn payload(text: &Option<String>, json: &Option<Value>) -> Vec<u8> {
    match (json, text) {
        (Some(j), _) => j.to_string().into_bytes(),
        (None, Some(t)) => t.clone().into_bytes(),
        (None, None) => Vec::new(),
    }
}

async fn check(host: &TestHost, plugin: &str, e: &Expect, out: &Outcome) -> Result<(), String> {
    match (&e.error, &out.error) {
        (Some(want), Some(got)) if got.contains(want.as_str()) => {}
        (Some(want), Some(got)) => return Err(format!("error {got:?} does not contain {want:?}")),
        (Some(want), None) => {
            return Err(format!(
                "expected an error containing {want:?}, the call succeeded"
            ));
        }
        (None, Some(got)) => return Err(format!("the call failed: {got}")),
        (None, None) => {}
    }
    let body: Option<Vec<u8>> = out
        .response
        .as_ref()
        .map(|r| r.body.to_vec())
        .or_else(|| out.output.clone());
    let text = body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    if let Some(status) = e.status {
        let got = out.response.as_ref().map(|r| r.status);
        if got != Some(status) {
            return Err(format!(
                "status: expected {status}, got {} (body {:?})",
                got.map_or("no response".to_string(), |s| s.to_string()),
                text.clone().unwrap_or_default()
            ));
        }
    }
    for (name, want) in &e.headers {
        let got = out.response.as_ref().and_then(|r| r.header(name));
        if got.as_deref() != Some(want.as_str()) {
            return Err(format!(
                "response header {name}: expected {want:?}, got {got:?}"
            ));
        }
    }
    if let Some(want) = &e.body
        && text.as_deref() != Some(want.as_str())
    {
        return Err(format!("body: expected {want:?}, got {text:?}"));
    }
    if let Some(want) = &e.body_contains
        && !text.as_deref().unwrap_or("").contains(want.as_str())
    {
        return Err(format!("body {text:?} does not contain {want:?}"));
    }
    if let Some(want) = &e.json {
        let got: Value = serde_json::from_slice(body.as_deref().unwrap_or(b""))
            .map_err(|err| format!("body is not JSON ({err}): {text:?}"))?;
        json_subset(want, &got, "$")?;
    }
    if let Some(want) = &e.action {
        let got = match &out.action {
            Some(Action::Continue) => "continue",
            Some(Action::Respond(_)) => "respond",
            None => "none (not a hook call)",
        };
        if want != got {
            return Err(format!("hook action: expected {want}, got {got}"));
        }
    }
    for (name, want) in &e.request_headers {
        let got = out
            .request_headers
            .as_ref()
            .and_then(|h| h.get(name.as_str()))
            .and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            return Err(format!(
                "request header {name} after the hook: expected {want:?}, got {got:?}"
            ));
        }
    }
    // What happens off the caller's path: waited for.
    for (key, want) in &e.storage {
        if host.wait_for_stored(plugin, key, want).await.is_err() {
            return Err(format!(
                "storage {key}: expected {want:?}, got {:?} after {}s",
                host.stored(plugin, key).await,
                DEFAULT_WAIT.as_secs()
            ));
        }
    }
    for want in &e.logs {
        let cond = |h: &TestHost| h.logs(plugin).iter().any(|l| l.contains(want));
        if host.wait_for("log", cond).await.is_err() {
            let seen: Vec<String> = host.logs(plugin).into_iter().map(|l| l.message).collect();
            return Err(format!("no log line contains {want:?}; logged: {seen:?}"));
        }
    }
    for want in &e.events {
        let cond = |h: &TestHost| !h.events_on(want).is_empty();
        if host.wait_for("event", cond).await.is_err() {
            let seen: Vec<String> = host.events().into_iter().map(|ev| ev.topic).collect();
            return Err(format!("no event on {want:?}; published: {seen:?}"));
        }
    }
    for (name, want) in &e.metrics {
        let cond = |h: &TestHost| h.metric(name, &[("plugin", plugin)]) == Some(*want);
        if host.wait_for("metric", cond).await.is_err() {
            return Err(format!(
                "metric {name}{{plugin=\"{plugin}\"}}: expected {want}, got {:?}",
                host.metric(name, &[("plugin", plugin)])
            ));
        }
    }
    Ok(())
}

/// `want` is a subset of `got`: objects may hold more keys, arrays and scalars are equal
/// element by element.
fn json_subset(want: &Value, got: &Value, at: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let gv = g
                    .get(k)
                    .ok_or_else(|| format!("{at}.{k} is missing in {got}"))?;
                json_subset(wv, gv, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                json_subset(wv, gv, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => Ok(()),
        (w, g) if w == g => Ok(()),
        (w, g) => Err(format!("{at}: expected {w}, got {g}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let got = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        assert!(json_subset(&json!({"b": {"d": "x"}}), &got, "$").is_ok());
        assert!(json_subset(&json!({"a": 1.0}), &got, "$").is_ok());
        let err = json_subset(&json!({"b": {"c": [1, 3]}}), &got, "$").unwrap_err();
        assert_eq!(err, "$.b.c[1]: expected 3, got 2");
        let err = json_subset(&json!({"z": 1}), &got, "$").unwrap_err();
        assert!(err.starts_with("$.z is missing"), "{err}");
    }

    #[test]
    fn suites_parse_and_refuse_unknown_keys() {
        let suite = Suite::from_yaml(
            "config: { greeting: Hi }\ngrants: [router]\ntests:\n  - name: a\n    request: { path: /x }\n    expect: { status: 200, json: { a: 1 } }\n  - name: b\n    hook: { type: pre_request }\n    expect: { action: continue }\n",
        )
        .unwrap();
        assert_eq!(suite.tests.len(), 2);
        assert_eq!(suite.grants, Some(vec![Permission::Router]));
        assert_eq!(
            suite.tests[1].hook.as_ref().unwrap().hook,
            HookType::PreRequest
        );
        let err =
            Suite::from_yaml("tests:\n  - name: a\n    expect: { stauts: 200 }\n").unwrap_err();
        assert!(err.to_string().contains("stauts"), "{err}");
    }
}
