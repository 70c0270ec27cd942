//! Log capture: a process-wide `tracing` layer that keeps what plugins log (target `plugin`) and
//! what plugd logs about them, so a test can assert on it.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::{EnvFilter, Layer};

/// Lines kept at most; older lines are dropped first.
const CAPACITY: usize = 100_000;

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// The `tracing` target: `plugin` for what a plugin logged itself.
    pub target: String,
    /// The plugin it is about (its `plugin` field), if any.
    pub plugin: Option<String>,
    /// The message.
    pub message: String,
    /// The other fields, `key=value` separated by spaces.
    pub fields: String,
}

impl LogLine {
    /// Whether the message or the fields contain `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.message.contains(needle) || self.fields.contains(needle)
    }
}

#[derive(Default)]
struct Buffer {
    /// Lines dropped from the front so far: line `i` of all time is `lines[i - dropped]`.
    dropped: usize,
    lines: std::collections::VecDeque<LogLine>,
}

/// The capture buffer, shared by every test host of the process.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Buffer>>,
    /// Whether the capture layer is the process's subscriber (false when the test installed
    /// its own before the first harness host).
    installed: bool,
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();

/// The process-wide capture, installed on first use. `RUST_LOG` (e.g. `plugd_core=debug`)
/// additionally prints to the test's output.
pub(crate) fn capture() -> &'static Capture {
    CAPTURE.get_or_init(|| {
        let mut capture = Capture::default();
        let layer = CaptureLayer {
            buffer: capture.buffer.clone(),
        }
        .with_filter(
            Targets::new()
                .with_target("plugin", Level::TRACE)
                .with_target("plugd_core", Level::INFO)
                .with_target("plugd_wasm", Level::INFO),
        );
        let print = std::env::var("RUST_LOG").ok().map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::new(filter))
        });
        // `set_global_default`, not `try_init`: the latter also routes the `log` crate into
        // tracing, and cranelift's trace-level `log` calls would then each be filtered at run
        // time, slowing the compilation of a large component tenfold.
        let subscriber = tracing_subscriber::registry().with(layer).with(print);
        capture.installed = tracing::subscriber::set_global_default(subscriber).is_ok();
        capture
    })
}

impl Capture {
    /// The position of the next line: lines from here on are "after" it.
    pub(crate) fn mark(&self) -> usize {
        let b = self.buffer.lock();
        b.dropped + b.lines.len()
    }

    /// Lines logged since `mark` that satisfy `keep`.
    pub(crate) fn since(&self, mark: usize, keep: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
        let b = self.buffer.lock();
        let skip = mark.saturating_sub(b.dropped);
        b.lines
            .iter()
            .skip(skip)
            .filter(|l| keep(l))
            .cloned()
            .collect()
    }

    pub(crate) fn installed(&self) -> bool {
        self.installed
    }
}

struct CaptureLayer {
    buffer: Arc<Mutex<Buffer>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    plugin: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "plugin" => self.plugin = Some(value.to_string()),
            "fields" if value.is_empty() => {}
            "fields" => push(&mut self.rest, value),
            name => push(&mut self.rest, &format!("{name}={value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "plugin" => self.plugin = Some(text.trim_matches('"').to_string()),
            name => push(&mut self.rest, &format!("{name}={text}")),
        }
    }
}

fn push(out: &mut String, item: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    let _ = write!(out, "{item}");
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = LogLine {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            plugin: fields.plugin,
            message: fields.message,
            fields: fields.rest,
        };
        let mut b = self.buffer.lock();
        if b.lines.len() >= CAPACITY {
            b.lines.pop_front();
            b.dropped += 1;
        }
        b.lines.push_back(line);
    }
}
