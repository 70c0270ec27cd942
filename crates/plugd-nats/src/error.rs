//! [`NatsError`]: what went wrong connecting to NATS or setting up the stream.

/// An error of the NATS transport; URLs in it have their password redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// An option is not valid.
    #[error("invalid NATS option {field}: {reason}")]
    Invalid {
        /// The field of [`crate::NatsOptions`].
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached.
    #[error(
        "cannot connect to NATS at {url}: {reason} (is the server running? scripts/services.sh starts one)"
    )]
    Connect {
        /// The server's address, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The stream could not be created, updated or read.
    #[error("NATS JetStream stream '{stream}': {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why (JetStream not enabled, subjects taken by another stream, ...).
        reason: String,
    },
}
