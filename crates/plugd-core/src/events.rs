//! The in-process event bus: dot-named topics, `*` matching one segment, and one bounded queue
//! per subscriber, so a slow or failing subscriber never blocks the publisher or the others.
//! A full queue drops the event for that subscriber, counts it, and says so in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{HostError, PluginError};

/// Events a subscriber's queue holds before further events for it are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;

/// One published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The dot-named topic (`user.created`).
    pub topic: String,
    /// The payload, as the publisher gave it (plugd's own publishers use JSON).
    pub payload: Bytes,
    /// The publishing plugin ("" for the host).
    pub source: String,
    /// When it was published.
    pub at: SystemTime,
}

/// Whether `pattern` (`logs.*`, `user.created`) matches `topic`. `*` matches exactly one segment.
///
/// ```
/// use plugd_core::topic_matches;
/// assert!(topic_matches("logs.*", "logs.error"));
/// assert!(!topic_matches("logs.*", "logs.error.db"));
/// assert!(topic_matches("*.created", "user.created"));
/// assert!(!topic_matches("user.created", "user.deleted"));
/// ```
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Counters of one subscription.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of one subscription's counters, for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionInfo {
    /// The subscribing plugin.
    pub plugin: String,
    /// The pattern.
    pub topic: String,
    /// Events handed to the plugin.
    pub delivered: u64,
    /// Events dropped because its queue was full.
    pub dropped: u64,
    /// Events its handler failed on.
    pub failed: u64,
    /// Events waiting in its queue.
    pub queued: usize,
}

struct Subscriber {
    plugin: String,
    pattern: String,
    tx: mpsc::Sender<Event>,
    stats: Arc<SubscriberStats>,
}

/// The bus. Publishing reads an immutable snapshot of the subscribers: no lock.
#[derive(Default)]
pub struct EventBus {
    subscribers: ArcSwap<Vec<Arc<Subscriber>>>,
    /// Serializes changes to the subscriber list (not publishing).
    changes: Mutex<()>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.subscribers.load().len())
            .finish()
    }
}

/// A boxed future, as subscribers return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a subscriber does with an event; a failure is counted against it.
pub type Deliver = Arc<dyn Fn(Event) -> BoxFuture<'static, Result<(), PluginError>> + Send + Sync>;

impl EventBus {
    /// Subscribe `plugin` to `pattern`; `deliver` runs for each matching event, one at a time, on
    /// a task of its own, fed by a queue of [`QUEUE_CAPACITY`] events.
    pub fn subscribe(&self, plugin: &str, pattern: &str, deliver: Deliver) {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE_CAPACITY);
        let stats = Arc::new(SubscriberStats::default());
        let task_stats = stats.clone();
        let name = plugin.to_string();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let topic = event.topic.clone();
                match deliver(event).await {
                    Ok(()) => {
                        task_stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        task_stats.failed.fetch_add(1, Ordering::Relaxed);
                        // The host's guarded call logs the failure with the plugin's error.
                        tracing::debug!(plugin = %name, topic = %topic, error = %e, "event handler failed");
                    }
                }
            }
        });
        let _guard = self.changes.lock();
        let mut list = (**self.subscribers.load()).clone();
        list.push(Arc::new(Subscriber {
            plugin: plugin.to_string(),
            pattern: pattern.to_string(),
            tx,
            stats,
        }));
        self.subscribers.store(Arc::new(list));
    }

    /// Remove every subscription of `plugin`; its queued events are still delivered, then its
    /// tasks end.
    pub fn unsubscribe_all(&self, plugin: &str) {
        let _guard = self.changes.lock();
        let list: Vec<Arc<Subscriber>> = self
            .subscribers
            .load()
            .iter()
            .filter(|s| s.plugin != plugin)
            .cloned()
            .collect();
        self.subscribers.store(Arc::new(list));
    }

    /// Publish to every matching subscriber. Never waits: a full queue drops the event for that
    /// subscriber and counts it. Returns how many subscribers got it.
    pub fn publish(&self, event: Event) -> usize {
        let subscribers = self.subscribers.load();
        let mut queued = 0;
        for s in subscribers
            .iter()
            .filter(|s| topic_matches(&s.pattern, &event.topic))
        {
            match s.tx.try_send(event.clone()) {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = s.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(plugin = %s.plugin, topic = %event.topic, dropped = n, "event queue full: event dropped for this subscriber");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        queued
    }

    /// Counters of every subscription.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.subscribers
            .load()
            .iter()
            .map(|s| SubscriptionInfo {
                plugin: s.plugin.clone(),
                topic: s.pattern.clone(),
                delivered: s.stats.delivered.load(Ordering::Relaxed),
                dropped: s.stats.dropped.load(Ordering::Relaxed),
                failed: s.stats.failed.load(Ordering::Relaxed),
                queued: QUEUE_CAPACITY - s.tx.capacity(),
            })
            .collect()
    }
}

/// A plugin's handle for publishing: checks each topic against the manifest's
/// `events.publishes`.
#[derive(Clone)]
pub struct Publisher {
    bus: Arc<EventBus>,
    plugin: Arc<str>,
    declared: Arc<[String]>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("plugin", &self.plugin)
            .field("declared", &self.declared)
            .finish()
    }
}

impl Publisher {
    pub(crate) fn new(bus: Arc<EventBus>, plugin: &str, declared: &[String]) -> Publisher {
        Publisher {
            bus,
            plugin: Arc::from(plugin),
            declared: Arc::from(declared),
        }
    }

    /// A publisher that may publish anything, for the host itself.
    pub fn host(bus: Arc<EventBus>) -> Publisher {
        Publisher {
            bus,
            plugin: Arc::from(""),
            declared: Arc::from(Vec::new()),
        }
    }

    /// Publish `payload` on `topic`, which the manifest must declare under `events.publishes`.
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<usize, HostError> {
        let is_host = self.plugin.is_empty();
        if !is_host && !self.declared.iter().any(|d| d == topic) {
            return Err(HostError::Denied(format!(
                "plugin '{}' attempted to publish undeclared event '{topic}': declare it under events.publishes in its manifest",
                self.plugin
            )));
        }
        if !plugd_manifest::is_valid_topic(topic) || topic.contains('*') {
            return Err(HostError::Invalid(format!(
                "invalid event topic: {topic:?}"
            )));
        }
        Ok(self.bus.publish(Event {
            topic: topic.to_string(),
            payload: payload.into(),
            source: self.plugin.to_string(),
            at: SystemTime::now(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn collector() -> (Deliver, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let deliver: Deliver = Arc::new(move |e: Event| {
            let s = s.clone();
            Box::pin(async move {
                s.lock().push(e.topic);
                Ok(())
            })
        });
        (deliver, seen)
    }

    async fn settle(cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn wildcards_match_one_segment() {
        assert!(topic_matches("*", "user"));
        assert!(!topic_matches("*", "user.created"));
        assert!(topic_matches("user.*.done", "user.x.done"));
        assert!(!topic_matches("user.created", "user.created.x"));
    }

    #[tokio::test]
    async fn delivers_to_matching_subscribers_only() {
        let bus = Arc::new(EventBus::default());
        let (d1, logs) = collector();
        let (d2, users) = collector();
        bus.subscribe("a", "logs.*", d1);
        bus.subscribe("b", "user.created", d2);
        let p = Publisher::new(
            bus.clone(),
            "pub",
            &["logs.error".into(), "user.created".into()],
        );
        assert_eq!(p.publish("logs.error", "x").unwrap(), 1);
        assert_eq!(p.publish("user.created", "y").unwrap(), 1);
        settle(|| logs.lock().len() == 1 && users.lock().len() == 1).await;
        assert_eq!(*logs.lock(), ["logs.error"]);
        assert_eq!(*users.lock(), ["user.created"]);
    }

    #[tokio::test]
    async fn undeclared_topics_are_refused() {
        let bus = Arc::new(EventBus::default());
        let p = Publisher::new(bus, "pub", &["a.b".into()]);
        let e = p.publish("a.c", "x").unwrap_err();
        assert!(e.to_string().contains("undeclared event 'a.c'"), "{e}");
    }

    #[tokio::test]
    async fn a_slow_subscriber_neither_blocks_the_publisher_nor_delays_the_others() {
        let bus = Arc::new(EventBus::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let stuck: Deliver = Arc::new(move |_e| {
            let g = g.clone();
            Box::pin(async move {
                g.notified().await;
                Ok(())
            })
        });
        let failing: Deliver =
            Arc::new(|_e| Box::pin(async { Err(PluginError::Failed("boom".into())) }));
        let (fast, seen) = collector();
        bus.subscribe("stuck", "t", stuck);
        bus.subscribe("failing", "t", failing);
        bus.subscribe("fast", "t", fast);
        let host = Publisher::host(bus.clone());
        let n = QUEUE_CAPACITY + 100;
        for i in 0..n {
            host.publish("t", "x").unwrap();
            if i % 64 == 0 {
                // Let the subscriber tasks run, as a real publisher's await points would.
                tokio::task::yield_now().await;
            }
        }
        settle(|| seen.lock().len() == n).await;
        assert_eq!(seen.lock().len(), n, "the fast subscriber got everything");
        let count = |plugin: &str| {
            bus.subscriptions()
                .into_iter()
                .find(|s| s.plugin == plugin)
                .unwrap()
        };
        settle(|| count("failing").failed as usize == n).await;
        let failing = count("failing");
        assert_eq!(
            (failing.failed as usize, failing.dropped),
            (n, 0),
            "failures are counted, not fatal"
        );
        // The stuck one holds one event in its handler and QUEUE_CAPACITY in its queue; the rest
        // were dropped for it alone, and counted.
        let stuck = count("stuck");
        assert_eq!(stuck.dropped as usize, n - QUEUE_CAPACITY - 1);
        assert_eq!(stuck.queued, QUEUE_CAPACITY);
        gate.notify_waiters();
    }

    #[tokio::test]
    async fn unsubscribe_stops_delivery() {
        let bus = Arc::new(EventBus::default());
        let (d, seen) = collector();
        bus.subscribe("a", "t", d);
        bus.unsubscribe_all("a");
        assert_eq!(Publisher::host(bus.clone()).publish("t", "x").unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(seen.lock().is_empty());
    }
}
