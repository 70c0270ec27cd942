//! plugd's events between the instances of a fleet, on NATS JetStream.
//!
//! [`NatsTransport`] is an [`EventTransport`](plugd_core::EventTransport) that carries every
//! subscription of its host: each event published on any instance is stored in one JetStream
//! stream, and each subscription reads it through a durable pull consumer, as the plugin's
//! manifest declares:
//!
//! - `delivery: instance` (the default): a consumer per instance, so the subscriber on every
//!   instance gets each event once;
//! - `delivery: fleet`: one consumer shared by every instance, so exactly one instance's
//!   subscriber handles each event.
//!
//! Delivery is at least once: an event is acknowledged only after the plugin's handler ran, and
//! NATS delivers it again when the handler failed (after `retry_delay`, doubling), when the
//! instance's queue was full, or when the instance died before it answered (after `ack_wait`).
//! An instance that restarts with the same [`NatsOptions::instance`] continues where it stopped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use plugd_nats::{NatsOptions, NatsTransport};
//!
//! let transport = NatsTransport::connect(&NatsOptions {
//!     url: "nats://127.0.0.1:4222".into(),
//!     instance: "web-1".into(),
//!     ..NatsOptions::default()
//! })
//! .await?;
//! let bus = Arc::new(plugd_core::EventBus::with_transport(Arc::new(transport)));
//! bus.start_transport().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod options;
mod transport;

pub use error::NatsError;
pub use options::NatsOptions;
pub use transport::{INSTANCE_HEADER, NatsStats, NatsTransport, SOURCE_HEADER, TIME_HEADER};

/// The client crate, for those who share [`NatsTransport::client`].
pub use async_nats;
