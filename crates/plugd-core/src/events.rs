//! The event bus: dot-named topics, `*` matching one segment, and one bounded queue per
//! subscriber, so a slow or failing subscriber never blocks the publisher or the others. A full
//! queue drops the event for that subscriber, counts it, and says so in the log.
//!
//! Delivery on this host is the core's. Carrying events to the other hosts of a fleet is the job
//! of an [`EventTransport`] (a port; none by default, and [`MemoryHub`] joins hosts in one
//! process): the bus hands it each event published here and fans the events it receives from the
//! others out to the local subscribers, through the same queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::BackendError;
use crate::error::{HostError, PluginError};

/// Events a subscriber's queue holds before further events for it are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;
/// Bytes (payload and topic) a subscriber's queue holds when its limits do not say
/// (`limits.event_queue_bytes`); an event that would go over is dropped for it (and counted).
pub const QUEUE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest payload a plugin may publish.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

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
    /// Bytes of the events in its queue.
    queued_bytes: AtomicU64,
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
    /// Bytes of the events waiting in its queue.
    pub queued_bytes: u64,
}

struct Subscriber {
    plugin: String,
    pattern: String,
    tx: mpsc::Sender<Event>,
    stats: Arc<SubscriberStats>,
    /// The bytes its queue may hold.
    max_bytes: u64,
}

/// What an event weighs in a queue.
fn weight(event: &Event) -> u64 {
    (event.payload.len() + event.topic.len()) as u64
}

/// The bus. Publishing reads an immutable snapshot of the subscribers: no lock.
#[derive(Default)]
pub struct EventBus {
    subscribers: ArcSwap<Vec<Arc<Subscriber>>>,
    /// Serializes changes to the subscriber list (not publishing).
    changes: Mutex<()>,
    /// Where events published here go beyond this host, if anywhere.
    transport: Option<Arc<dyn EventTransport>>,
    /// Events the transport refused (counted; the local subscribers still got them).
    transport_failures: AtomicU64,
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

/// Carries events between the hosts of a fleet. The core keeps everything about delivery on
/// each host (the topic checks, the per-subscriber queues and their counters); a transport only
/// moves events between hosts.
#[async_trait::async_trait]
pub trait EventTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Send an event published on this host to the other hosts. Must not wait on the network
    /// (buffer, bounded, or drop): it runs on the publisher's call. An error is counted and
    /// logged by the bus; the local subscribers have the event already.
    fn publish(&self, event: &Event) -> Result<(), BackendError>;

    /// Hand the events the other hosts publish to `inbox`, from now until the transport is
    /// dropped. The events this host published must not come back.
    async fn start(&self, inbox: Inbox) -> Result<(), BackendError>;
}

/// Where a transport delivers the events of other hosts: the local bus's subscribers. Cheap to
/// clone; never waits (a full subscriber queue drops and counts, as for local events).
#[derive(Clone)]
pub struct Inbox {
    deliver: Arc<dyn Fn(Event) -> usize + Send + Sync>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbox")
    }
}

impl Inbox {
    /// An inbox that hands each event to `deliver` (which says how many subscribers got it):
    /// for a transport's tests.
    pub fn new(deliver: impl Fn(Event) -> usize + Send + Sync + 'static) -> Inbox {
        Inbox {
            deliver: Arc::new(deliver),
        }
    }

    /// Deliver an event from another host; how many local subscribers got it. An event whose
    /// topic is not a valid concrete topic (a broken or hostile peer) is dropped and logged.
    pub fn deliver(&self, event: Event) -> usize {
        if !plugd_manifest::is_valid_topic(&event.topic) || event.topic.contains('*') {
            tracing::warn!(topic = ?event.topic, source = %event.source, "event from another host dropped: invalid topic");
            return 0;
        }
        (self.deliver)(event)
    }
}

impl EventBus {
    /// A bus that also carries events to and from other hosts through `transport`.
    pub fn with_transport(transport: Arc<dyn EventTransport>) -> EventBus {
        EventBus {
            transport: Some(transport),
            ..EventBus::default()
        }
    }

    /// Start receiving the other hosts' events, if the bus has a transport.
    pub async fn start_transport(self: &Arc<Self>) -> Result<(), BackendError> {
        let Some(transport) = &self.transport else {
            return Ok(());
        };
        let bus = Arc::downgrade(self);
        transport
            .start(Inbox::new(move |event| {
                bus.upgrade().map_or(0, |bus| bus.fan_out(&event))
            }))
            .await
    }

    /// Events the transport refused since the start.
    pub fn transport_failures(&self) -> u64 {
        self.transport_failures.load(Ordering::Relaxed)
    }

    /// Subscribe `plugin` to `pattern`; `deliver` runs for each matching event, one at a time, on
    /// a task of its own, fed by a queue of [`QUEUE_CAPACITY`] events and [`QUEUE_BYTES`].
    pub fn subscribe(&self, plugin: &str, pattern: &str, deliver: Deliver) {
        self.subscribe_bounded(plugin, pattern, QUEUE_BYTES, deliver)
    }

    /// [`EventBus::subscribe`] with a queue of at most `max_bytes` (payloads and topics).
    pub fn subscribe_bounded(&self, plugin: &str, pattern: &str, max_bytes: u64, deliver: Deliver) {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE_CAPACITY);
        let stats = Arc::new(SubscriberStats::default());
        let task_stats = stats.clone();
        let name = plugin.to_string();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                task_stats
                    .queued_bytes
                    .fetch_sub(weight(&event), Ordering::Relaxed);
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
            max_bytes,
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

    /// Publish to every matching subscriber, and to the other hosts through the transport, if
    /// any. Never waits: a full queue drops the event for that subscriber and counts it. Returns
    /// how many subscribers on this host got it.
    pub fn publish(&self, event: Event) -> usize {
        let queued = self.fan_out(&event);
        if let Some(transport) = &self.transport
            && let Err(e) = transport.publish(&event)
        {
            let n = self.transport_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(topic = %event.topic, error = %e, failures = n, "event not carried to the other hosts");
            }
        }
        queued
    }

    /// Queue `event` for every matching subscriber on this host.
    fn fan_out(&self, event: &Event) -> usize {
        let subscribers = self.subscribers.load();
        let mut queued = 0;
        for s in subscribers
            .iter()
            .filter(|s| topic_matches(&s.pattern, &event.topic))
        {
            let w = weight(event);
            let before = s.stats.queued_bytes.fetch_add(w, Ordering::Relaxed);
            let sent = if before + w > s.max_bytes {
                Err(mpsc::error::TrySendError::Full(()))
            } else {
                s.tx.try_send(event.clone()).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                    mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
                })
            };
            if sent.is_err() {
                s.stats.queued_bytes.fetch_sub(w, Ordering::Relaxed);
            }
            match sent {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(())) => {
                    let n = s.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(plugin = %s.plugin, topic = %event.topic, dropped = n, "event queue full (events or bytes, limits.event_queue_bytes): event dropped for this subscriber");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(())) => {}
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
                queued_bytes: s.stats.queued_bytes.load(Ordering::Relaxed),
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
        let payload = payload.into();
        if !is_host && payload.len() > MAX_PAYLOAD_BYTES {
            return Err(HostError::OverLimit {
                limit: "events.max_payload_bytes",
                message: format!(
                    "event payload of {} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit",
                    payload.len()
                ),
            });
        }
        Ok(self.bus.publish(Event {
            topic: topic.to_string(),
            payload,
            source: self.plugin.to_string(),
            at: SystemTime::now(),
        }))
    }
}

/// Joins hosts in one process (tests, several hosts embedded in one application): every
/// transport made by [`MemoryHub::transport`] delivers what it publishes to all the others.
#[derive(Debug, Default, Clone)]
pub struct MemoryHub {
    members: Arc<Mutex<Vec<(u64, Inbox)>>>,
    next: Arc<AtomicU64>,
}

impl MemoryHub {
    /// A transport for one more host.
    pub fn transport(&self) -> Arc<dyn EventTransport> {
        Arc::new(MemoryTransport {
            hub: self.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// One host's end of a [`MemoryHub`].
#[derive(Debug)]
struct MemoryTransport {
    hub: MemoryHub,
    id: u64,
}

#[async_trait::async_trait]
impl EventTransport for MemoryTransport {
    fn publish(&self, event: &Event) -> Result<(), BackendError> {
        let members = self.hub.members.lock().clone();
        for (id, inbox) in members {
            if id != self.id {
                inbox.deliver(event.clone());
            }
        }
        Ok(())
    }

    async fn start(&self, inbox: Inbox) -> Result<(), BackendError> {
        let mut members = self.hub.members.lock();
        members.retain(|(id, _)| *id != self.id);
        members.push((self.id, inbox));
        Ok(())
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.hub.members.lock().retain(|(id, _)| *id != self.id);
    }
}

/// The conformance suite every [`EventTransport`] runs against itself.
#[cfg(any(test, feature = "testing"))]
pub mod conformance {
    use super::*;
    use std::time::Duration;

    /// Run every check against `a` and `b`: two transports of two hosts joined by one broker
    /// (use a topic prefix no other test uses, e.g. a random one, when the broker is shared).
    pub async fn event_transport(
        a: Arc<dyn EventTransport>,
        b: Arc<dyn EventTransport>,
        prefix: &str,
    ) {
        let seen_a = Arc::new(Mutex::new(Vec::<Event>::new()));
        let seen_b = Arc::new(Mutex::new(Vec::<Event>::new()));
        let (sa, sb) = (seen_a.clone(), seen_b.clone());
        a.start(Inbox::new(move |e| {
            sa.lock().push(e);
            1
        }))
        .await
        .expect("start a");
        b.start(Inbox::new(move |e| {
            sb.lock().push(e);
            1
        }))
        .await
        .expect("start b");
        let at = SystemTime::now();
        let event = |i: usize| Event {
            topic: format!("{prefix}.n{i}"),
            payload: Bytes::from(vec![i as u8, 0, 255]),
            source: "publisher".into(),
            at,
        };
        for i in 0..10 {
            a.publish(&event(i)).expect("publish on a");
        }
        b.publish(&event(100)).expect("publish on b");
        let arrived = async {
            loop {
                if seen_b.lock().len() >= 10 && !seen_a.lock().is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .expect("events published on one host reach the other within 10 s");
        // A moment for anything that should not arrive (an echo) to arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got_b = seen_b.lock().clone();
        let got_a = seen_a.lock().clone();
        assert_eq!(got_b.len(), 10, "each event once, none echoed back to b");
        for (i, e) in got_b.iter().enumerate() {
            let want = event(i);
            assert_eq!(
                (&e.topic, &e.payload, &e.source),
                (&want.topic, &want.payload, &want.source),
                "in order, topic, payload and source intact"
            );
            let skew = e.at.duration_since(at).unwrap_or_else(|d| d.duration());
            assert!(skew < Duration::from_secs(1), "publication time carried");
        }
        assert_eq!(got_a.len(), 1, "a gets b's event and not its own");
        assert_eq!(got_a[0].topic, format!("{prefix}.n100"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_memory_hub_conforms() {
        let hub = MemoryHub::default();
        conformance::event_transport(hub.transport(), hub.transport(), "conformance").await;
    }

    #[tokio::test]
    async fn two_buses_joined_by_a_hub_deliver_each_others_events() {
        let hub = MemoryHub::default();
        let one = Arc::new(EventBus::with_transport(hub.transport()));
        let two = Arc::new(EventBus::with_transport(hub.transport()));
        one.start_transport().await.unwrap();
        two.start_transport().await.unwrap();
        let (d1, on_one) = collector();
        let (d2, on_two) = collector();
        one.subscribe("s1", "user.*", d1);
        two.subscribe("s2", "user.*", d2);
        Publisher::new(one.clone(), "p", &["user.created".into()])
            .publish("user.created", "x")
            .unwrap();
        settle(|| on_one.lock().len() == 1 && on_two.lock().len() == 1).await;
        assert_eq!(*on_one.lock(), ["user.created"], "delivered locally once");
        assert_eq!(
            *on_two.lock(),
            ["user.created"],
            "and on the other host once"
        );
    }

    #[tokio::test]
    async fn an_invalid_topic_from_another_host_is_dropped() {
        let bus = Arc::new(EventBus::default());
        let (d, seen) = collector();
        bus.subscribe("s", "*", d);
        let inbox = {
            let bus = bus.clone();
            Inbox::new(move |e| bus.fan_out(&e))
        };
        for topic in ["*", "", "a..b", "bad topic"] {
            let n = inbox.deliver(Event {
                topic: topic.into(),
                payload: Bytes::new(),
                source: "peer".into(),
                at: SystemTime::now(),
            });
            assert_eq!(n, 0, "{topic:?}");
        }
        assert!(seen.lock().is_empty());
    }

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

    /// A subscriber that holds each event until the gate is opened.
    fn stuck() -> (Deliver, Arc<tokio::sync::Notify>) {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let deliver: Deliver = Arc::new(move |_e| {
            let g = g.clone();
            Box::pin(async move {
                g.notified().await;
                Ok(())
            })
        });
        (deliver, gate)
    }

    #[tokio::test]
    async fn a_queue_is_bounded_in_bytes_and_a_payload_in_size() {
        let bus = Arc::new(EventBus::default());
        let (stuck, gate) = stuck();
        bus.subscribe_bounded("slow", "big.t", 4 * MAX_PAYLOAD_BYTES as u64, stuck);
        let p = Publisher::new(bus.clone(), "pub", &["big.t".into()]);
        let e = p
            .publish("big.t", vec![0u8; MAX_PAYLOAD_BYTES + 1])
            .unwrap_err();
        assert!(matches!(e, HostError::OverLimit { .. }), "{e}");
        for _ in 0..20 {
            p.publish("big.t", vec![0u8; MAX_PAYLOAD_BYTES - 10])
                .unwrap();
        }
        let info = &bus.subscriptions()[0];
        // One event is in the handler, at most four wait: far from the 20 MiB published.
        assert!(info.queued <= 4, "{info:?}");
        assert!(
            info.queued_bytes <= 4 * MAX_PAYLOAD_BYTES as u64,
            "{info:?}"
        );
        assert!(info.dropped >= 15, "{info:?}");
        gate.notify_waiters();
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
        let (stuck, gate) = stuck();
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
