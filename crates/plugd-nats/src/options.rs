//! [`NatsOptions`]: where the NATS server is and how the transport uses JetStream.

use std::time::Duration;

use crate::error::NatsError;

/// How [`crate::NatsTransport::connect`] reaches NATS and lays out its stream and consumers.
///
/// ```
/// use plugd_nats::NatsOptions;
/// let options = NatsOptions { instance: "web-1".into(), ..NatsOptions::default() };
/// assert_eq!(options.stream, "PLUGD_EVENTS");
/// assert_eq!(options.subject_prefix, "plugd.events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The server (`nats://127.0.0.1:4222`, `nats://user:password@host:4222`; several
    /// separated by commas). A password never appears in errors or logs.
    pub url: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one JetStream request may take (a publish's ack, a consumer's creation).
    pub timeout: Duration,
    /// The JetStream stream holding the events (created or updated at connect).
    pub stream: String,
    /// Events go to `<subject_prefix>.<topic>`; the stream takes `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// This instance's id, stable across its restarts: its `instance` subscriptions' durable
    /// consumers are named after it, so a restarted instance continues where it stopped.
    /// Letters, digits, `-` and `_`.
    pub instance: String,
    /// How long the stream keeps an event (and how long an unused consumer is kept).
    pub max_age: Duration,
    /// Events published on this host that wait for NATS at most (while it is away); past that
    /// a publish is refused and counted (the bus then delivers it on this host only).
    pub max_pending: usize,
    /// How long NATS waits for an event's ack before it delivers the event again (a handler
    /// still running keeps extending it).
    pub ack_wait: Duration,
    /// How many times one event is delivered to one subscription at most (failures included).
    pub max_deliver: i64,
    /// The wait before an event whose handler failed is delivered again; it doubles with each
    /// further failure, up to a minute.
    pub retry_delay: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            url: "nats://127.0.0.1:4222".into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            stream: "PLUGD_EVENTS".into(),
            subject_prefix: "plugd.events".into(),
            instance: "plugd".into(),
            max_age: Duration::from_secs(24 * 3600),
            max_pending: 10_000,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Whether `s` is a NATS name plugd uses: letters, digits, `-` and `_`, 1 to 64 characters.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NatsOptions {
    /// Check the options, naming the field at fault.
    pub(crate) fn validate(&self) -> Result<(), NatsError> {
        let bad = |field: &'static str, reason: String| Err(NatsError::Invalid { field, reason });
        if !is_name(&self.stream) {
            return bad(
                "stream",
                format!(
                    "'{}': use letters, digits, '-' and '_' (at most 64)",
                    self.stream
                ),
            );
        }
        if !is_name(&self.instance) {
            return bad(
                "instance",
                format!(
                    "'{}': use letters, digits, '-' and '_' (at most 64)",
                    self.instance
                ),
            );
        }
        if self.subject_prefix.is_empty() || !self.subject_prefix.split('.').all(is_name) {
            return bad(
                "subject_prefix",
                format!(
                    "'{}': dot-separated tokens of letters, digits, '-' and '_', no wildcards",
                    self.subject_prefix
                ),
            );
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.timeout),
            ("max_age", self.max_age),
            ("ack_wait", self.ack_wait),
            ("retry_delay", self.retry_delay),
        ] {
            if value.is_zero() {
                return bad(field, "must be more than zero".into());
            }
        }
        if self.max_pending == 0 {
            return bad("max_pending", "must be at least 1".into());
        }
        if self.max_deliver < 1 {
            return bad("max_deliver", "must be at least 1".into());
        }
        Ok(())
    }
}

/// `url` with its password replaced by `***`, for errors and logs.
pub(crate) fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let with_scheme = if one.contains("://") {
                one.to_string()
            } else {
                format!("nats://{one}")
            };
            match url::Url::parse(&with_scheme) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    let _ = parsed.set_password(Some("***"));
                    parsed.to_string().trim_end_matches('/').to_string()
                }
                Ok(_) => one.to_string(),
                Err(_) if one.contains('@') => "<an unreadable URL>".to_string(),
                Err(_) => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("nats://plugd:s3cret@nats.internal:4222"),
            "nats://plugd:***@nats.internal:4222"
        );
        assert_eq!(redact("127.0.0.1:4222"), "127.0.0.1:4222");
        assert!(!redact("nats://u:pw1@h:1,nats://u:pw2@h:2").contains("pw"));
    }

    #[test]
    fn bad_options_name_their_field() {
        let bad = |o: NatsOptions| o.validate().unwrap_err().to_string();
        let base = NatsOptions::default();
        assert!(base.validate().is_ok());
        let e = bad(NatsOptions {
            instance: "web 1".into(),
            ..base.clone()
        });
        assert!(
            e.starts_with("invalid NATS option instance: 'web 1'"),
            "{e}"
        );
        let e = bad(NatsOptions {
            subject_prefix: "plugd.>".into(),
            ..base.clone()
        });
        assert!(e.contains("subject_prefix"), "{e}");
        let e = bad(NatsOptions {
            stream: "a.b".into(),
            ..base.clone()
        });
        assert!(e.contains("stream"), "{e}");
        let e = bad(NatsOptions {
            max_pending: 0,
            ..base
        });
        assert!(e.contains("max_pending"), "{e}");
    }
}
