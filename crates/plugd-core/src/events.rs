//! The event bus: dot-named topics, `*` matching one segment, and one bounded queue per
//! subscriber, so a slow or failing subscriber never blocks the publisher or the others. A full
//! queue drops the event for that subscriber, counts it, and says so in the log.
//!
//! Carrying events to the other hosts of a fleet is the job of an [`EventTransport`] (a port;
//! none by default, and [`MemoryHub`] joins hosts in one process). It works one of two ways:
//!
//! - **Broadcast** (the default, [`MemoryHub`]): the bus delivers each event published here to
//!   its own subscribers, hands it to the transport, and fans the events the transport receives
//!   from the other hosts ([`Inbox::deliver`]) out to its subscribers.
//! - **Carried subscriptions** (a broker with queues, `plugd-nats`): the transport says, for a
//!   subscription ([`EventTransport::subscribe`]), that it delivers that subscription's events
//!   itself, this host's own too, as the manifest's [`Delivery`] asks (once per instance or once
//!   per fleet). The bus then leaves that subscription out of its own fan-out; the transport
//!   hands each event to it with [`Inbox::deliver_to`], whose future says when the handler ran
//!   ([`Delivered`]), so the transport acknowledges an event only once it was handled.
//!
//! Either way the topic checks ([`Publisher::publish`]) run before anything leaves the host, and
//! every event goes through the subscriber's bounded queue and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::BackendError;
use crate::error::{HostError, PluginError};

pub use plugd_manifest::Delivery;

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
    tx: mpsc::Sender<Queued>,
    stats: Arc<SubscriberStats>,
    /// The bytes its queue may hold.
    max_bytes: u64,
    /// Whether the transport delivers its events (this host's too): left out of the fan-out.
    carried: bool,
    /// Set when it is unsubscribed: the events a transport still has queued for it are handed
    /// back ([`Delivered::Unsubscribed`]) instead of handled, so another instance takes them.
    closed: Arc<AtomicBool>,
}

/// An event in a subscriber's queue; `done`, when a transport awaits the handler, hears how it
/// went.
struct Queued {
    event: Event,
    done: Option<oneshot::Sender<Delivered>>,
}

/// What became of an event a transport handed to one subscription ([`Inbox::deliver_to`]): a
/// transport acknowledges [`Delivered::Handled`], drops [`Delivered::Invalid`] for good, and has
/// the broker deliver the others again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The plugin's handler ran and succeeded.
    Handled,
    /// The plugin's handler ran and failed (its error).
    Failed(String),
    /// The subscription's queue was full (counted as dropped on this host).
    Full,
    /// This host has no such subscription (any more: the plugin stopped or was unloaded).
    Unsubscribed,
    /// The event is not valid (its topic): never deliver it again.
    Invalid,
}

impl Delivered {
    /// Whether the broker should deliver the event again (later): it was not handled, and it
    /// could be.
    pub fn should_retry(&self) -> bool {
        !matches!(self, Delivered::Handled | Delivered::Invalid)
    }
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

/// Carries events between the hosts of a fleet. The core keeps the topic checks, the
/// per-subscriber queues and their counters on each host; a transport moves events between
/// hosts, broadcasting them ([`Inbox::deliver`]), or delivering the subscriptions it carries
/// itself ([`EventTransport::subscribe`], [`Inbox::deliver_to`]): then the bus leaves those
/// subscriptions out of its own fan-out, and the transport acknowledges an event once the
/// handler ran ([`Delivered`]).
///
/// The calls, in order: [`start`](EventTransport::start) once when the host starts, before any
/// subscription; then [`subscribe`](EventTransport::subscribe) and
/// [`unsubscribe`](EventTransport::unsubscribe) as plugins start and stop, and
/// [`publish`](EventTransport::publish) for each event published on this host.
#[async_trait::async_trait]
pub trait EventTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Send an event published on this host to the other hosts (and to the subscriptions this
    /// transport carries, this host's included). Must not wait on the network (buffer, bounded,
    /// or drop): it runs on the publisher's call. An error is counted and logged by the bus,
    /// which then delivers the event to this host's subscribers itself.
    fn publish(&self, event: &Event) -> Result<(), BackendError>;

    /// Hand the events of other hosts to `inbox`, from now until the transport is dropped. A
    /// broadcasting transport must not bring back the events this host published.
    async fn start(&self, inbox: Inbox) -> Result<(), BackendError>;

    /// `plugin` subscribed to `pattern` on this host, with `delivery` as its manifest declares.
    /// Returns whether the transport carries that subscription: then it hands the subscription
    /// every matching event, this host's own included, through [`Inbox::deliver_to`], and the
    /// bus leaves it out of its own fan-out. Must not wait on the network. Default: not carried
    /// (the events of other hosts come through [`Inbox::deliver`]).
    fn subscribe(&self, plugin: &str, pattern: &str, delivery: Delivery) -> bool {
        let _ = (plugin, pattern, delivery);
        false
    }

    /// Every subscription of `plugin` on this host ended (it stopped, or is being reloaded or
    /// unloaded). A transport stops handing its events to this host; durable state (where the
    /// subscription stood) may stay for when it subscribes again. Default: nothing.
    fn unsubscribe(&self, plugin: &str) {
        let _ = plugin;
    }
}

/// A function that hands an event to one subscription and tells what became of it.
type DeliverTo = Arc<dyn Fn(&str, &str, Event) -> BoxFuture<'static, Delivered> + Send + Sync>;

/// Where a transport delivers events: the local bus's subscribers. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    deliver: Arc<dyn Fn(Event) -> usize + Send + Sync>,
    deliver_to: DeliverTo,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbox")
    }
}

impl Inbox {
    /// An inbox that hands each event to `deliver` (which says how many subscribers got it):
    /// for a transport's tests. [`Inbox::deliver_to`] goes to `deliver` too (and says
    /// [`Delivered::Handled`]) unless [`Inbox::with_deliver_to`] says otherwise.
    pub fn new(deliver: impl Fn(Event) -> usize + Send + Sync + 'static) -> Inbox {
        let deliver: Arc<dyn Fn(Event) -> usize + Send + Sync> = Arc::new(deliver);
        let all = deliver.clone();
        Inbox {
            deliver,
            deliver_to: Arc::new(move |_, _, event| {
                all(event);
                Box::pin(std::future::ready(Delivered::Handled))
            }),
        }
    }

    /// This inbox with `deliver_to` for [`Inbox::deliver_to`]: it must queue the event before
    /// it returns, and its future resolve when the handler ran.
    pub fn with_deliver_to(
        mut self,
        deliver_to: impl Fn(&str, &str, Event) -> BoxFuture<'static, Delivered> + Send + Sync + 'static,
    ) -> Inbox {
        self.deliver_to = Arc::new(deliver_to);
        self
    }

    /// Hand `event` to the subscription of `plugin` to `pattern` alone (one the transport
    /// carries). The event is queued (or refused) before this returns, so calls made in order
    /// are handled in order; the future resolves when the plugin's handler ran, or at once when
    /// the event could not be queued. Never waits for queue space: a full queue is
    /// [`Delivered::Full`], counted as dropped on this host, for the broker to deliver again. An
    /// event whose topic is not a valid concrete topic, or does not match `pattern`, is
    /// [`Delivered::Invalid`] and logged.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use plugd_core::{Delivered, Event, Inbox};
    /// let inbox = Inbox::new(|_| 1);
    /// let event = Event { topic: "jobs.new".into(), payload: "{}".into(), source: "api".into(), at: std::time::SystemTime::now() };
    /// assert_eq!(inbox.deliver_to("worker", "jobs.*", event.clone()).await, Delivered::Handled);
    /// assert_eq!(inbox.deliver_to("worker", "user.*", event).await, Delivered::Invalid);
    /// # });
    /// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn deliver_to(
        &self,
        plugin: &str,
        pattern: &str,
        event: Event,
    ) -> BoxFuture<'static, Delivered> {
        if !plugd_manifest::is_valid_topic(&event.topic)
            || event.topic.contains('*')
            || !topic_matches(pattern, &event.topic)
        {
            tracing::warn!(topic = ?event.topic, source = %event.source, %plugin, %pattern, "event from the transport dropped: invalid topic, or not one of the subscription's");
            return Box::pin(std::future::ready(Delivered::Invalid));
        }
        (self.deliver_to)(plugin, pattern, event)
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
        let to = bus.clone();
        let inbox = Inbox::new(move |event| bus.upgrade().map_or(0, |bus| bus.fan_out(&event)))
            .with_deliver_to(move |plugin, pattern, event| match to.upgrade() {
                Some(bus) => bus.deliver_to(plugin, pattern, event),
                None => Box::pin(std::future::ready(Delivered::Unsubscribed)),
            });
        transport.start(inbox).await
    }

    /// Whether the transport carries the subscription of `plugin` to `pattern` (delivers its
    /// events, this host's included); false when there is no such subscription.
    pub fn is_carried(&self, plugin: &str, pattern: &str) -> bool {
        self.subscribers
            .load()
            .iter()
            .any(|s| s.plugin == plugin && s.pattern == pattern && s.carried)
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
        self.subscribe_with(plugin, pattern, Delivery::Instance, max_bytes, deliver)
    }

    /// [`EventBus::subscribe_bounded`] with the subscription's [`Delivery`] among the hosts of
    /// a fleet, which the transport, if it carries the subscription, applies.
    pub fn subscribe_with(
        &self,
        plugin: &str,
        pattern: &str,
        delivery: Delivery,
        max_bytes: u64,
        deliver: Deliver,
    ) {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE_CAPACITY);
        let stats = Arc::new(SubscriberStats::default());
        let closed = Arc::new(AtomicBool::new(false));
        let (task_stats, task_closed) = (stats.clone(), closed.clone());
        let name = plugin.to_string();
        tokio::spawn(async move {
            while let Some(Queued { event, done }) = rx.recv().await {
                task_stats
                    .queued_bytes
                    .fetch_sub(weight(&event), Ordering::Relaxed);
                match done {
                    // Unsubscribed: the broker gives it to another instance, or to this one
                    // when the plugin subscribes again.
                    Some(done) if task_closed.load(Ordering::Acquire) => {
                        let _ = done.send(Delivered::Unsubscribed);
                    }
                    Some(done) => {
                        let outcome = run_handler(&deliver, &task_stats, &name, event).await;
                        let _ = done.send(outcome);
                    }
                    None => {
                        run_handler(&deliver, &task_stats, &name, event).await;
                    }
                }
            }
        });
        let carried = self
            .transport
            .as_ref()
            .is_some_and(|t| t.subscribe(plugin, pattern, delivery));
        let _guard = self.changes.lock();
        let mut list = (**self.subscribers.load()).clone();
        list.push(Arc::new(Subscriber {
            plugin: plugin.to_string(),
            pattern: pattern.to_string(),
            tx,
            stats,
            max_bytes,
            carried,
            closed,
        }));
        self.subscribers.store(Arc::new(list));
    }

    /// Remove every subscription of `plugin`; its queued events are still delivered, then its
    /// tasks end (the events a transport carries are handed back to it instead, for another
    /// instance or a later subscription).
    pub fn unsubscribe_all(&self, plugin: &str) {
        {
            let _guard = self.changes.lock();
            let (gone, kept): (Vec<Arc<Subscriber>>, Vec<Arc<Subscriber>>) = self
                .subscribers
                .load()
                .iter()
                .cloned()
                .partition(|s| s.plugin == plugin);
            for s in &gone {
                s.closed.store(true, Ordering::Release);
            }
            self.subscribers.store(Arc::new(kept));
        }
        if let Some(transport) = &self.transport {
            transport.unsubscribe(plugin);
        }
    }

    /// Publish to every matching subscriber, and to the other hosts through the transport, if
    /// any. Never waits: a full queue drops the event for that subscriber and counts it. The
    /// subscriptions the transport carries get the event from it; when the transport refuses it
    /// (counted), they get it from this host instead. Returns how many subscribers on this
    /// host got it from this host.
    pub fn publish(&self, event: Event) -> usize {
        let mut queued = self.fan_out(&event);
        if let Some(transport) = &self.transport
            && let Err(e) = transport.publish(&event)
        {
            let n = self.transport_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(topic = %event.topic, error = %e, failures = n, "event not carried to the other hosts; this host's subscribers get it from here");
            }
            queued += self.fan_out_to(&event, true);
        }
        queued
    }

    /// Queue `event` for every matching subscriber on this host that the transport does not
    /// carry.
    fn fan_out(&self, event: &Event) -> usize {
        self.fan_out_to(event, false)
    }

    /// Queue `event` for every matching subscriber on this host that the transport carries
    /// (`carried`) or does not.
    fn fan_out_to(&self, event: &Event, carried: bool) -> usize {
        let subscribers = self.subscribers.load();
        let mut queued = 0;
        for s in subscribers
            .iter()
            .filter(|s| s.carried == carried && topic_matches(&s.pattern, &event.topic))
        {
            if enqueue(s, event.clone(), None).is_ok() {
                queued += 1;
            }
        }
        queued
    }

    /// Hand `event` to the subscription of `plugin` to `pattern` (see [`Inbox::deliver_to`]).
    fn deliver_to(
        &self,
        plugin: &str,
        pattern: &str,
        event: Event,
    ) -> BoxFuture<'static, Delivered> {
        let subscribers = self.subscribers.load();
        let Some(s) = subscribers
            .iter()
            .find(|s| s.plugin == plugin && s.pattern == pattern)
        else {
            return Box::pin(std::future::ready(Delivered::Unsubscribed));
        };
        let (done, outcome) = oneshot::channel();
        match enqueue(s, event, Some(done)) {
            Ok(()) => Box::pin(async move { outcome.await.unwrap_or(Delivered::Unsubscribed) }),
            Err(refused) => Box::pin(std::future::ready(refused)),
        }
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

/// Put `event` in the queue of `s` without waiting; a full queue (events or bytes) counts a drop.
fn enqueue(
    s: &Subscriber,
    event: Event,
    done: Option<oneshot::Sender<Delivered>>,
) -> Result<(), Delivered> {
    let w = weight(&event);
    let before = s.stats.queued_bytes.fetch_add(w, Ordering::Relaxed);
    let sent = if before + w > s.max_bytes {
        Err(Delivered::Full)
    } else {
        s.tx.try_send(Queued { event, done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Delivered::Full,
            mpsc::error::TrySendError::Closed(_) => Delivered::Unsubscribed,
        })
    };
    if sent.is_err() {
        s.stats.queued_bytes.fetch_sub(w, Ordering::Relaxed);
    }
    if sent == Err(Delivered::Full) {
        let n = s.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(plugin = %s.plugin, topic = %s.pattern, dropped = n, carried = s.carried, "event queue full (events or bytes, limits.event_queue_bytes): event dropped for this subscriber (a transport that carries it delivers it again later)");
        }
    }
    sent
}

/// Run a subscriber's handler on one event and count the outcome.
async fn run_handler(
    deliver: &Deliver,
    stats: &SubscriberStats,
    plugin: &str,
    event: Event,
) -> Delivered {
    let topic = event.topic.clone();
    match deliver(event).await {
        Ok(()) => {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            Delivered::Handled
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            // The host's guarded call logs the failure with the plugin's error.
            tracing::debug!(%plugin, %topic, error = %e, "event handler failed");
            Delivered::Failed(e.to_string())
        }
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
    /// The publisher of `plugin`, which may publish the topics of `declared` (its manifest's
    /// `events.publishes`) and no others.
    pub fn new(bus: Arc<EventBus>, plugin: &str, declared: &[String]) -> Publisher {
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
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// Run every check against `a` and `b`: two transports of two hosts joined by one broker
    /// (use a topic prefix no other test uses, e.g. a random one, when the broker is shared).
    /// Each gets a bus of its own here ([`EventBus::with_transport`]), with subscribers of both
    /// deliveries. A transport that carries the `fleet` subscriptions must hand each event to
    /// exactly one of the two hosts, and deliver again an event whose handler failed.
    pub async fn event_transport(
        a: Arc<dyn EventTransport>,
        b: Arc<dyn EventTransport>,
        prefix: &str,
    ) {
        let one = Arc::new(EventBus::with_transport(a));
        let two = Arc::new(EventBus::with_transport(b));
        one.start_transport().await.expect("start a");
        two.start_transport().await.expect("start b");
        let pattern = format!("{prefix}.*");
        let (watch_one, watched_one) = recorder(0);
        let (watch_two, watched_two) = recorder(0);
        let (work_one, worked_one) = recorder(0);
        let (work_two, worked_two) = recorder(0);
        let subscribe = |bus: &EventBus, plugin, delivery, deliver| {
            bus.subscribe_with(plugin, &pattern, delivery, QUEUE_BYTES, deliver)
        };
        subscribe(&one, "watcher", Delivery::Instance, watch_one);
        subscribe(&two, "watcher", Delivery::Instance, watch_two);
        subscribe(&one, "worker", Delivery::Fleet, work_one);
        subscribe(&two, "worker", Delivery::Fleet, work_two);
        let fleet = one.is_carried("worker", &pattern);
        assert_eq!(
            fleet,
            two.is_carried("worker", &pattern),
            "both hosts' transports carry the same subscriptions"
        );

        let at = SystemTime::now();
        let event = |i: usize| Event {
            topic: format!("{prefix}.n{i}"),
            payload: Bytes::from(vec![i as u8, 0, 255]),
            source: "publisher".into(),
            at,
        };
        for i in 0..10 {
            one.publish(event(i));
        }
        two.publish(event(100));
        let all = 11;
        let worked = || worked_one.lock().len() + worked_two.lock().len();
        let want_worked = if fleet { all } else { 2 * all };
        until("the events reach both hosts within 10 s", || {
            watched_one.lock().len() >= all
                && watched_two.lock().len() >= all
                && worked() >= want_worked
        })
        .await;
        // A moment for anything that should not arrive (an echo, a second copy) to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (host, seen) in [("a", &watched_one), ("b", &watched_two)] {
            let seen = seen.lock().clone();
            assert_eq!(seen.len(), all, "each event once on host {host}: {seen:?}");
            let from_one: Vec<&Event> = seen
                .iter()
                .filter(|e| e.topic != format!("{prefix}.n100"))
                .collect();
            assert_eq!(from_one.len(), 10, "host {host}");
            for (i, e) in from_one.into_iter().enumerate() {
                let want = event(i);
                assert_eq!(
                    (&e.topic, &e.payload, &e.source),
                    (&want.topic, &want.payload, &want.source),
                    "on host {host}: in the order published, topic, payload and source intact"
                );
                let skew = e.at.duration_since(at).unwrap_or_else(|d| d.duration());
                assert!(skew < Duration::from_secs(1), "publication time carried");
            }
        }
        let mut counts = BTreeMap::<String, usize>::new();
        for e in worked_one.lock().iter().chain(worked_two.lock().iter()) {
            *counts.entry(e.topic.clone()).or_default() += 1;
        }
        let copies = if fleet { 1 } else { 2 };
        assert_eq!(
            counts.len(),
            all,
            "every event reached the workers: {counts:?}"
        );
        assert!(
            counts.values().all(|n| *n == copies),
            "each event {copies} time(s) across the fleet: {counts:?}"
        );

        if fleet {
            // A failed handler gets the event again; the first try failed for every event.
            let flaky_pattern = format!("{prefix}.flaky.*");
            let (flaky, handled) = recorder(1);
            one.subscribe_with("flaky", &flaky_pattern, Delivery::Fleet, QUEUE_BYTES, flaky);
            for i in 0..3 {
                one.publish(Event {
                    topic: format!("{prefix}.flaky.n{i}"),
                    ..event(i)
                });
            }
            until("a failed event is delivered again within 10 s", || {
                handled.lock().len() >= 3
            })
            .await;
            let info = one
                .subscriptions()
                .into_iter()
                .find(|s| s.plugin == "flaky")
                .expect("the flaky subscription");
            assert_eq!((info.delivered, info.failed), (3, 3), "{info:?}");
        }
    }

    /// A subscriber that records the events it handled, after failing each event's first
    /// `fail_first` deliveries.
    fn recorder(fail_first: usize) -> (Deliver, Arc<Mutex<Vec<Event>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tries = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
        let s = seen.clone();
        let deliver: Deliver = Arc::new(move |e: Event| {
            let (s, tries) = (s.clone(), tries.clone());
            Box::pin(async move {
                let tried = {
                    let mut tries = tries.lock();
                    let n = tries.entry(e.topic.clone()).or_default();
                    *n += 1;
                    *n
                };
                if tried <= fail_first {
                    return Err(PluginError::Failed(format!("try {tried} fails")));
                }
                s.lock().push(e);
                Ok(())
            })
        });
        (deliver, seen)
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("{what}"));
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

    /// A transport that carries every subscription and refuses to publish: the test hands
    /// events to the subscriptions itself through the inbox it was started with.
    #[derive(Debug, Default)]
    struct Carrier {
        inbox: Mutex<Option<Inbox>>,
        subscribed: Mutex<Vec<(String, String, Delivery)>>,
        unsubscribed: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl EventTransport for Carrier {
        fn publish(&self, _event: &Event) -> Result<(), BackendError> {
            Err(BackendError::new("carrier", "broker away"))
        }
        async fn start(&self, inbox: Inbox) -> Result<(), BackendError> {
            *self.inbox.lock() = Some(inbox);
            Ok(())
        }
        fn subscribe(&self, plugin: &str, pattern: &str, delivery: Delivery) -> bool {
            self.subscribed
                .lock()
                .push((plugin.into(), pattern.into(), delivery));
            true
        }
        fn unsubscribe(&self, plugin: &str) {
            self.unsubscribed.lock().push(plugin.into());
        }
    }

    fn an_event(topic: &str) -> Event {
        Event {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            source: "peer".into(),
            at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn a_carried_subscription_answers_when_its_handler_ran() {
        let carrier = Arc::new(Carrier::default());
        let bus = Arc::new(EventBus::with_transport(carrier.clone()));
        bus.start_transport().await.unwrap();
        let (ok, seen) = collector();
        let failing: Deliver =
            Arc::new(|_e| Box::pin(async { Err(PluginError::Failed("boom".into())) }));
        bus.subscribe_with("worker", "jobs.*", Delivery::Fleet, QUEUE_BYTES, ok);
        bus.subscribe_with("flaky", "jobs.*", Delivery::Instance, QUEUE_BYTES, failing);
        assert!(bus.is_carried("worker", "jobs.*"));
        assert_eq!(
            carrier.subscribed.lock()[0],
            ("worker".into(), "jobs.*".into(), Delivery::Fleet)
        );
        let inbox = carrier.inbox.lock().clone().unwrap();
        let to = |plugin: &str, topic: &str| inbox.deliver_to(plugin, "jobs.*", an_event(topic));
        assert_eq!(to("worker", "jobs.a").await, Delivered::Handled);
        assert_eq!(*seen.lock(), ["jobs.a"]);
        assert!(matches!(to("flaky", "jobs.a").await, Delivered::Failed(e) if e.contains("boom")));
        assert_eq!(to("nobody", "jobs.a").await, Delivered::Unsubscribed);
        assert_eq!(
            to("worker", "user.a").await,
            Delivered::Invalid,
            "not the pattern's"
        );
        assert_eq!(to("worker", "jobs.*").await, Delivered::Invalid);
        assert!(!Delivered::Handled.should_retry() && Delivered::Full.should_retry());

        // The bus leaves carried subscriptions to the transport, unless the transport refuses
        // the event: then this host's subscribers get it from here (counted).
        seen.lock().clear();
        assert_eq!(
            Publisher::host(bus.clone()).publish("jobs.b", "x").unwrap(),
            2
        );
        assert_eq!(bus.transport_failures(), 1);
        settle(|| seen.lock().len() == 1).await;
        assert_eq!(*seen.lock(), ["jobs.b"]);

        // Events queued when the plugin unsubscribes are handed back, not handled.
        let (stuck, gate) = stuck();
        bus.subscribe_with("slow", "jobs.*", Delivery::Fleet, QUEUE_BYTES, stuck);
        let first = inbox.deliver_to("slow", "jobs.*", an_event("jobs.c"));
        let second = inbox.deliver_to("slow", "jobs.*", an_event("jobs.d"));
        tokio::task::yield_now().await;
        bus.unsubscribe_all("slow");
        assert_eq!(*carrier.unsubscribed.lock(), ["slow"]);
        gate.notify_one();
        assert_eq!(
            first.await,
            Delivered::Handled,
            "the one in the handler finishes"
        );
        assert_eq!(second.await, Delivered::Unsubscribed);
    }

    #[tokio::test]
    async fn a_full_queue_is_handed_back_to_the_transport() {
        let carrier = Arc::new(Carrier::default());
        let bus = Arc::new(EventBus::with_transport(carrier.clone()));
        bus.start_transport().await.unwrap();
        let (stuck, gate) = stuck();
        bus.subscribe_with("slow", "t", Delivery::Fleet, 2, stuck);
        let inbox = carrier.inbox.lock().clone().unwrap();
        let first = inbox.deliver_to("slow", "t", an_event("t"));
        let full = inbox.deliver_to("slow", "t", an_event("t"));
        assert_eq!(full.await, Delivered::Full, "2 bytes hold one event");
        assert_eq!(bus.subscriptions()[0].dropped, 1);
        gate.notify_one();
        assert_eq!(first.await, Delivered::Handled);
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
