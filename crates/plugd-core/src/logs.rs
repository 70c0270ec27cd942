//! A plugin's log stream: what it writes through the `log` host call and to its stdout and
//! stderr, on its way into the host's log. A plugin cannot flood the log (a rate of lines and of
//! bytes per second with a burst, `limits.log_*`; what is over it is dropped and counted), write
//! a huge line (message and fields are capped), or forge a line of the host's (control
//! characters are escaped, so one call is one line, and the line is always marked with the
//! plugin's name under the `plugin` target). A plugin, or the operator, can raise the least level
//! of its lines the host keeps ([`PluginLog::set_level`]); lines under it are dropped before the
//! rate counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use plugd_manifest::Limits;

/// Longest message kept, bytes; the rest is cut and the cut is said.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Most fields kept on one line.
pub const MAX_FIELDS: usize = 32;
/// Longest field name kept, bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 64;
/// Longest field value kept, bytes.
pub const MAX_FIELD_VALUE_BYTES: usize = 1024;
/// Longest line of stdout/stderr kept, bytes: a longer one is written in pieces of this size.
pub const MAX_OUTPUT_LINE_BYTES: usize = MAX_MESSAGE_BYTES;

/// How much a plugin may log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines per second.
    pub lines_per_second: u32,
    /// Bytes per second (message and fields).
    pub bytes_per_second: u64,
    /// Seconds of both rates a quiet plugin may save up and spend at once.
    pub burst_seconds: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits::from(&Limits::default())
    }
}

impl From<&Limits> for LogLimits {
    fn from(l: &Limits) -> Self {
        LogLimits {
            lines_per_second: l.log_lines_per_second,
            bytes_per_second: l.log_bytes_per_second,
            burst_seconds: l.log_burst_seconds,
        }
    }
}

pub use plugd_manifest::LogLevel;

/// Which output stream of the guest a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Its stdout: logged at `info`.
    Stdout,
    /// Its stderr: logged at `warn`.
    Stderr,
}

impl OutputStream {
    fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }

    fn level(self) -> LogLevel {
        match self {
            OutputStream::Stdout => LogLevel::Info,
            OutputStream::Stderr => LogLevel::Warn,
        }
    }
}

/// Two token buckets, lines and bytes.
#[derive(Debug)]
struct Buckets {
    limits: LogLimits,
    lines: f64,
    bytes: f64,
    refilled: Instant,
    /// Lines dropped since the last line that was written (said on the next one).
    unsaid: u64,
}

impl Buckets {
    fn new(limits: LogLimits, now: Instant) -> Self {
        Buckets {
            limits,
            lines: Self::line_cap(&limits),
            bytes: Self::byte_cap(&limits),
            refilled: now,
            unsaid: 0,
        }
    }

    fn line_cap(l: &LogLimits) -> f64 {
        f64::from(l.lines_per_second) * f64::from(l.burst_seconds.max(1))
    }

    fn byte_cap(l: &LogLimits) -> f64 {
        l.bytes_per_second as f64 * f64::from(l.burst_seconds.max(1))
    }

    /// Take one line of `bytes`, if both buckets hold enough.
    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.lines = (self.lines + elapsed * f64::from(self.limits.lines_per_second))
            .min(Self::line_cap(&self.limits));
        self.bytes = (self.bytes + elapsed * self.limits.bytes_per_second as f64)
            .min(Self::byte_cap(&self.limits));
        if self.lines >= 1.0 && self.bytes >= bytes as f64 {
            self.lines -= 1.0;
            self.bytes -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// One plugin's log stream. Cheap to clone; clones share the rate and the counters.
///
/// ```
/// use plugd_core::{LogLevel, LogLimits, PluginLog};
///
/// let log = PluginLog::new("chatty", LogLimits { lines_per_second: 2, bytes_per_second: 1024, burst_seconds: 1 });
/// assert!(log.write(LogLevel::Info, "one", &[]));
/// assert!(log.write(LogLevel::Info, "two", &[]));
/// assert!(!log.write(LogLevel::Info, "three: over the rate", &[]));
/// assert_eq!((log.written(), log.dropped()), (2, 1));
/// ```
///
/// The least level kept is shared by the clones too:
///
/// ```
/// use plugd_core::{LogLevel, LogLimits, PluginLog};
///
/// let log = PluginLog::new("quiet", LogLimits { lines_per_second: 1, bytes_per_second: 1024, burst_seconds: 1 });
/// log.clone().set_level(LogLevel::Warn);
/// assert_eq!(log.level(), LogLevel::Warn);
/// assert!(!log.write(LogLevel::Debug, "under the level: dropped, not counted", &[]));
/// assert!(log.write(LogLevel::Error, "kept, and charged to the rate", &[]));
/// assert_eq!((log.written(), log.dropped(), log.filtered()), (1, 0, 1));
/// ```
#[derive(Debug, Clone)]
pub struct PluginLog {
    plugin: Arc<str>,
    buckets: Arc<Mutex<Buckets>>,
    counters: Arc<Counters>,
    /// The least level kept, as its index in [`LogLevel::ALL`].
    level: Arc<AtomicU8>,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    filtered: AtomicU64,
}

impl PluginLog {
    /// The log stream of `plugin`, limited to `limits`.
    pub fn new(plugin: &str, limits: LogLimits) -> Self {
        PluginLog {
            plugin: Arc::from(plugin),
            buckets: Arc::new(Mutex::new(Buckets::new(limits, Instant::now()))),
            counters: Arc::default(),
            level: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Keep only lines at `level` or above from now on (every clone of this log). The default,
    /// [`LogLevel::Trace`], keeps every line; the host's own log filter applies after this.
    pub fn set_level(&self, level: LogLevel) {
        let index = LogLevel::ALL.iter().position(|l| *l == level).unwrap_or(0);
        self.level.store(index as u8, Ordering::Relaxed);
    }

    /// The least level kept.
    pub fn level(&self) -> LogLevel {
        LogLevel::ALL
            .get(usize::from(self.level.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(LogLevel::Trace)
    }

    /// Lines dropped for being under the level ([`PluginLog::set_level`]); they never count
    /// against the rate.
    pub fn filtered(&self) -> u64 {
        self.counters.filtered.load(Ordering::Relaxed)
    }

    /// Change the limits (a reload with new `limits`); the counters go on.
    pub fn set_limits(&self, limits: LogLimits) {
        let mut b = self.buckets.lock();
        if b.limits != limits {
            *b = Buckets {
                unsaid: b.unsaid,
                ..Buckets::new(limits, Instant::now())
            };
        }
    }

    /// Lines written to the host's log.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Lines dropped for going over the rate (`plugd_plugin_log_dropped_lines_total`).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Write one line: `message` and `fields`, capped and escaped. False when the line was
    /// dropped: under the level (not charged to the rate), or over the rate.
    pub fn write(&self, level: LogLevel, message: &str, fields: &[(String, String)]) -> bool {
        if level < self.level() {
            self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // Escaped first: the rate is charged for what reaches the log.
        let message = clean_text(message, MAX_MESSAGE_BYTES);
        let fields = if fields.is_empty() {
            None
        } else {
            let mut text = fields
                .iter()
                .take(MAX_FIELDS)
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        clean_text(k, MAX_FIELD_NAME_BYTES),
                        clean_text(v, MAX_FIELD_VALUE_BYTES)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            if fields.len() > MAX_FIELDS {
                text.push_str(&format!(" (+{} fields cut)", fields.len() - MAX_FIELDS));
            }
            Some(text)
        };
        if !self.admit(message.len() + fields.as_ref().map_or(0, String::len)) {
            return false;
        }
        let plugin = &*self.plugin;
        macro_rules! emit {
            ($level:expr) => {
                match &fields {
                    None => tracing::event!(target: "plugin", $level, plugin, "{message}"),
                    Some(fields) => {
                        tracing::event!(target: "plugin", $level, plugin, fields, "{message}")
                    }
                }
            };
        }
        match level {
            LogLevel::Trace => emit!(tracing::Level::TRACE),
            LogLevel::Debug => emit!(tracing::Level::DEBUG),
            LogLevel::Info => emit!(tracing::Level::INFO),
            LogLevel::Warn => emit!(tracing::Level::WARN),
            LogLevel::Error => emit!(tracing::Level::ERROR),
        }
        true
    }

    /// Take one line of `bytes` from the rate, for a line the host writes on the plugin's
    /// behalf (its audit entries): false when it is over the rate (then it is counted as
    /// dropped). Says how many lines were dropped before, when lines flow again.
    pub fn admit(&self, bytes: usize) -> bool {
        let unsaid = {
            let mut b = self.buckets.lock();
            if !b.take(bytes, Instant::now()) {
                b.unsaid += 1;
                drop(b);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            std::mem::take(&mut b.unsaid)
        };
        self.counters.written.fetch_add(1, Ordering::Relaxed);
        if unsaid > 0 {
            let plugin = &*self.plugin;
            tracing::warn!(
                target: "plugd::logs",
                plugin,
                dropped = unsaid,
                "dropped {unsaid} log lines of plugin '{plugin}' over its rate (limits.log_lines_per_second, limits.log_bytes_per_second)"
            );
        }
        true
    }

    /// A writer of the guest's `stream` into this log: each line (or each
    /// [`MAX_OUTPUT_LINE_BYTES`] of a longer one) becomes one line of the log, under the same
    /// rate. What is left unterminated is written when the writer is dropped.
    pub fn output(&self, stream: OutputStream) -> OutputLines {
        OutputLines {
            log: self.clone(),
            stream,
            pending: Vec::new(),
        }
    }
}

/// Lines of a guest's stdout or stderr on their way into its [`PluginLog`].
#[derive(Debug)]
pub struct OutputLines {
    log: PluginLog,
    stream: OutputStream,
    pending: Vec<u8>,
}

impl OutputLines {
    /// Take `bytes` the guest wrote; complete lines are logged at once. Never fails and never
    /// blocks: what the rate does not allow is dropped and counted.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_OUTPUT_LINE_BYTES - self.pending.len();
            let (chunk, end) = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], i + 1),
                None if bytes.len() >= room => (&bytes[..room], room),
                None => {
                    self.pending.extend_from_slice(bytes);
                    return;
                }
            };
            self.pending.extend_from_slice(chunk);
            self.flush_line();
            bytes = &bytes[end..];
        }
    }

    fn flush_line(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        self.log.write(
            self.stream.level(),
            line,
            &[("stream".to_string(), self.stream.as_str().to_string())],
        );
        self.pending.clear();
    }
}

impl Drop for OutputLines {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.flush_line();
        }
    }
}

/// `text` cut to `max` bytes at a character boundary, the cut said: for plugin strings the host
/// keeps (last errors, audit details).
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let total = text.len();
    text.truncate(at);
    text.push_str(&format!("… ({} bytes cut)", total - at));
    text
}

/// `text` cut to `max` bytes (at a character boundary, the cut said) with every control
/// character escaped (`\n`, `\u{1b}`, …): one call is one line, and no escape sequence reaches
/// a terminal.
pub fn clean_text(text: &str, max: usize) -> String {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    // Printable ASCII needs no escaping: one pass over the bytes, one copy (a log line a plugin
    // writes on every request is this case).
    if cut == text.len() && text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(cut + 16);
    for c in text[..cut].chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters, and the separators and direction marks that a log viewer
            // shows as a line break or uses to reorder what follows.
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                out.push_str(&c.escape_unicode().to_string())
            }
            c => out.push(c),
        }
    }
    if cut < text.len() {
        out.push_str(&format!("… ({} bytes cut)", text.len() - cut));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(lines: u32, bytes: u64) -> LogLimits {
        LogLimits {
            lines_per_second: lines,
            bytes_per_second: bytes,
            burst_seconds: 1,
        }
    }

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(
            clean_text("a\n{\"target\":\"plugd::audit\"}\r\t\u{1b}[31m", 100),
            "a\\n{\"target\":\"plugd::audit\"}\\r\\t\\u{1b}[31m"
        );
        assert_eq!(clean_text("héllo", 2), "h… (5 bytes cut)");
        assert_eq!(clean_text("plain", 5), "plain");
        assert_eq!(clean_text("plain ~ text", 100), "plain ~ text");
        assert_eq!(clean_text("plain", 4), "plai… (1 bytes cut)");
        assert_eq!(clean_text("del\u{7f}", 100), "del\\u{7f}");
        assert_eq!(
            clean_text("a\u{2028}b\u{202e}c", 100),
            "a\\u{2028}b\\u{202e}c"
        );
        assert_eq!(cut("héllo".into(), 2), "h… (5 bytes cut)");
        assert_eq!(cut("héllo".into(), 6), "héllo");
    }

    #[test]
    fn the_rate_holds_for_lines_and_for_bytes() {
        let log = PluginLog::new("p", limits(10, 1_000_000));
        let written = (0..100)
            .filter(|_| log.write(LogLevel::Info, "x", &[]))
            .count();
        assert_eq!(written, 10);
        assert_eq!(log.dropped(), 90);

        let log = PluginLog::new("p", limits(1000, 100));
        let big = "y".repeat(40);
        let written = (0..10)
            .filter(|_| log.write(LogLevel::Info, &big, &[]))
            .count();
        assert_eq!(written, 2, "100 bytes of budget hold two lines of 40");
    }

    #[test]
    fn the_buckets_refill_with_time() {
        let start = Instant::now();
        let mut b = Buckets::new(limits(2, 1000), start);
        assert!(b.take(1, start) && b.take(1, start));
        assert!(!b.take(1, start));
        assert!(b.take(1, start + Duration::from_millis(600)));
        assert!(!b.take(1, start + Duration::from_millis(700)));
    }

    #[test]
    fn output_is_cut_into_lines() {
        let log = PluginLog::new("p", limits(1000, 1 << 30));
        let mut out = log.output(OutputStream::Stderr);
        out.push(b"one\ntw");
        assert_eq!(log.written(), 1);
        out.push(b"o\n");
        assert_eq!(log.written(), 2);
        out.push(&vec![b'z'; MAX_OUTPUT_LINE_BYTES * 2 + 1]);
        assert_eq!(log.written(), 4, "a long line is written in pieces");
        drop(out);
        assert_eq!(
            log.written(),
            5,
            "the unterminated rest is written at the end"
        );
    }
}
