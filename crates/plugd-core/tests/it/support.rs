//! Recording plugins and helpers shared by the manager's integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use plugd_core::{
    Action, Exchange, HookType, InitContext, Plugin, PluginError, Response, RouteOptions,
};
use plugd_manifest::{Format, HostConfig, Manifest};

/// Everything the recording plugins did, in order.
pub type Journal = Arc<Mutex<Vec<String>>>;

/// A native plugin that records its lifecycle and can be told how to behave.
pub struct Recorder {
    pub name: &'static str,
    pub journal: Journal,
    pub hooks: Vec<(HookType, i32)>,
    pub answer_early: bool,
    pub fail_init: bool,
    pub fail_start: bool,
    /// Its hooks and its middleware's `on_request` fail.
    pub fail_hook: bool,
    pub route: Option<&'static str>,
    pub subscribe: Option<&'static str>,
    pub publish_on_start: Option<&'static str>,
    pub publisher: Mutex<Option<plugd_core::Publisher>>,
    pub timer: Option<std::time::Duration>,
    pub hook_sleep: Option<std::time::Duration>,
    /// A middleware: priority and globs.
    pub middleware: Option<(i32, &'static [&'static str])>,
    /// Spawn a background task in `start` that writes "bg" every 10 ms.
    pub background: bool,
    pub tasks: Mutex<Option<plugd_core::Tasks>>,
    /// While set, its route handler fails.
    pub fail_route: Arc<AtomicBool>,
    /// `start` fails while this is above 0, counting down.
    pub start_failures: Arc<AtomicU32>,
    /// What `health_check` answers (default: degraded, "NAME is fine-ish").
    pub health: Arc<Mutex<Option<plugd_core::Health>>>,
    /// Sleep this long in the next hook or route call (once).
    pub busy: Arc<Mutex<Option<Duration>>>,
    /// Every event it received.
    pub events: Arc<Mutex<Vec<plugd_core::Event>>>,
}

impl Recorder {
    pub fn new(name: &'static str, journal: &Journal) -> Recorder {
        Recorder {
            name,
            journal: journal.clone(),
            hooks: Vec::new(),
            answer_early: false,
            fail_init: false,
            fail_start: false,
            fail_hook: false,
            route: None,
            subscribe: None,
            publish_on_start: None,
            publisher: Mutex::new(None),
            timer: None,
            hook_sleep: None,
            middleware: None,
            background: false,
            tasks: Mutex::new(None),
            fail_route: Arc::default(),
            start_failures: Arc::default(),
            health: Arc::default(),
            busy: Arc::default(),
            events: Arc::default(),
        }
    }

    async fn spend(&self) {
        let busy = self.busy.lock().take();
        if let Some(d) = busy {
            tokio::time::sleep(d).await;
        }
    }

    fn log(&self, what: impl AsRef<str>) {
        self.journal
            .lock()
            .push(format!("{}:{}", self.name, what.as_ref()));
    }
}

fn failed(e: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(e.to_string())
}

#[async_trait::async_trait]
impl Plugin for Recorder {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        self.log("init");
        for (hook, priority) in &self.hooks {
            ctx.register_hook(*hook, *priority).map_err(failed)?;
        }
        if let Some((priority, routes)) = self.middleware {
            ctx.register_middleware("mw", priority, routes)
                .map_err(failed)?;
        }
        if let Some(every) = self.timer {
            ctx.register_timer("beat", every).map_err(failed)?;
        }
        if let Some(topic) = self.subscribe {
            ctx.subscribe(topic).map_err(failed)?;
        }
        *self.publisher.lock() = Some(ctx.publisher().map_err(failed)?);
        *self.tasks.lock() = Some(ctx.tasks().map_err(failed)?);
        if let Some(route) = self.route {
            ctx.register_route("GET", route, RouteOptions::default())
                .map_err(failed)?;
        }
        if self.fail_init {
            return Err(failed("init refused"));
        }
        Ok(())
    }
    async fn start(&self) -> Result<(), PluginError> {
        self.log("start");
        let tasks = self.tasks.lock().clone();
        if let (true, Some(tasks)) = (self.background, tasks) {
            let journal = self.journal.clone();
            let name = self.name;
            tasks.spawn(async move {
                loop {
                    journal.lock().push(format!("{name}:bg"));
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            });
        }
        if let Some(topic) = self.publish_on_start {
            let publisher = self.publisher.lock().clone();
            if let Some(p) = publisher {
                p.publish(topic, "hello").map_err(failed)?;
            }
        }
        if self.fail_start {
            return Err(failed("start refused"));
        }
        let left = self.start_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.start_failures.store(left - 1, Ordering::SeqCst);
            return Err(failed(format!("start refused ({left} more)")));
        }
        Ok(())
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.log("stop");
        Ok(())
    }
    async fn cleanup(&self) -> Result<(), PluginError> {
        self.log("cleanup");
        Ok(())
    }
    async fn on_config_change(
        &self,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), PluginError> {
        self.log("config");
        match config.get("mode").and_then(|v| v.as_str()) {
            Some("refuse") => Err(failed("mode refuse is not acceptable")),
            _ => Ok(()),
        }
    }
    async fn on_event(&self, event: &plugd_core::Event) -> Result<(), PluginError> {
        self.log(format!("event {} from {}", event.topic, event.source));
        self.events.lock().push(event.clone());
        Ok(())
    }
    async fn on_request(&self, middleware: &str, ex: &mut Exchange) -> Result<Action, PluginError> {
        self.log(format!("{middleware} request"));
        if self.fail_hook {
            return Err(failed("middleware refused"));
        }
        if self.answer_early {
            return Ok(Action::Respond(Response::json(
                http::StatusCode::FORBIDDEN,
                &serde_json::json!({"error": "middleware"}),
            )));
        }
        ex.set_header(&format!("x-seen-{}", self.name), "1")
            .map_err(failed)?;
        Ok(Action::Continue)
    }
    async fn on_response(&self, middleware: &str, ex: &mut Exchange) -> Result<(), PluginError> {
        self.log(format!("{middleware} response"));
        ex.set_response_header(&format!("x-mw-{}", self.name), "1")
            .map_err(failed)
    }
    async fn on_tick(&self, timer: &str) -> Result<(), PluginError> {
        self.log(format!("tick {timer}"));
        Ok(())
    }
    async fn health_check(&self) -> plugd_core::Health {
        let set = self.health.lock().clone();
        set.unwrap_or_else(|| plugd_core::Health::Degraded(format!("{} is fine-ish", self.name)))
    }
    async fn on_hook(&self, hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        self.log(hook.as_str());
        self.spend().await;
        if let Some(d) = self.hook_sleep {
            tokio::time::sleep(d).await;
        }
        if self.fail_hook {
            return Err(failed("hook refused"));
        }
        match hook {
            HookType::PreRequest if self.answer_early => Ok(Action::Respond(Response::json(
                http::StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "early"}),
            ))),
            HookType::PreRequest => {
                ex.set_header(&format!("x-seen-{}", self.name), "1")
                    .map_err(failed)?;
                Ok(Action::Continue)
            }
            HookType::PreResponse => {
                ex.set_response_header(&format!("x-{}", self.name), "pre_response")
                    .map_err(failed)?;
                Ok(Action::Continue)
            }
            _ => Ok(Action::Continue),
        }
    }
    async fn handle_request(
        &self,
        route: &str,
        ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        self.log(format!("handle {route}"));
        self.spend().await;
        if self.fail_route.load(Ordering::SeqCst) {
            return Err(failed("route refused"));
        }
        let seen: Vec<String> = ex
            .header_pairs()
            .into_iter()
            .filter(|(k, _)| k.starts_with("x-seen-"))
            .map(|(k, _)| k)
            .collect();
        Ok(Response::json(
            http::StatusCode::OK,
            &serde_json::json!({ "seen": seen }),
        ))
    }
}

/// A native plugin's manifest declaring `router` and `intercept` (its hooks see every request).
pub fn manifest(name: &str, extra: &str) -> Manifest {
    manifest_with(name, "router, intercept", extra)
}

/// A native plugin's manifest declaring exactly `permissions` (a comma-separated list).
pub fn manifest_with(name: &str, permissions: &str, extra: &str) -> Manifest {
    Manifest::from_str(
        &format!("name: {name}\nversion: 1.0.0\ndescription: test\nauthor: plugd\npermissions: [{permissions}]\n{extra}"),
        Format::Yaml,
        None,
    )
    .expect("manifest")
}

/// Poll `cond` every 10 ms for up to 20 s; panic with `what` if it never holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Log lines written through `tracing` on this thread while the guard lives (tests run on a
/// current-thread runtime, so the host's tasks log here too).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }

    /// Lines at `level` (`WARN`, `ERROR`, `INFO`) holding `needle`.
    pub fn count(&self, level: &str, needle: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.trim_start().starts_with(level) && l.contains(needle))
            .count()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn config(dir: &std::path::Path, yaml: &str) -> HostConfig {
    let mut c = HostConfig::from_str(yaml, Format::Yaml, None).expect("config");
    c.data_dir = dir.to_path_buf();
    c
}

/// A started host with the config `yaml` and these native plugins; the data directory lives as
/// long as the returned guard.
pub async fn start_natives(
    yaml: &str,
    plugins: Vec<(Manifest, Recorder)>,
) -> (plugd_core::Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = plugd_core::Host::builder().config(config(dir.path(), yaml));
    for (m, p) in plugins {
        builder = builder.native(m, p);
    }
    let host = builder.build().unwrap();
    host.start().await.unwrap();
    (host, dir)
}

/// `GET path` through the host's dispatcher.
pub async fn get(host: &plugd_core::Host, path: &str) -> plugd_core::Response {
    host.dispatcher()
        .handle(plugd_core::Exchange::new(http::Method::GET, path))
        .await
}
