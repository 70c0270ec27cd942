//! [`NatsTransport`]: plugd's [`EventTransport`] on NATS JetStream.
//!
//! Publishing: [`EventTransport::publish`] puts the event in a bounded queue and returns; a task
//! publishes the queue to the stream in order, awaiting JetStream's acks, and retries (with a
//! message id, so JetStream drops the copies) while NATS is away.
//!
//! Delivery: every subscription is carried. A `fleet` subscription reads one durable pull
//! consumer shared by every instance (so one instance handles each event); an `instance`
//! subscription reads a durable consumer of its own instance. A task per subscription pulls
//! batches and hands each event to the subscription ([`Inbox::deliver_to`]); each event is
//! acknowledged once the plugin's handler ran, and delivered again later when it failed, the
//! queue was full or the plugin went away.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use parking_lot::Mutex;
use plugd_core::{BackendError, Delivered, Delivery, Event, EventTransport, Inbox};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::error::NatsError;
use crate::options::{NatsOptions, redact};

/// The header with the publishing plugin.
pub const SOURCE_HEADER: &str = "Plugd-Source";
/// The header with the publication time, nanoseconds since the Unix epoch.
pub const TIME_HEADER: &str = "Plugd-Time";
/// The header with the publishing instance.
pub const INSTANCE_HEADER: &str = "Plugd-Instance";

/// Events a subscription's task asks NATS for at once.
const PULL_BATCH: usize = 128;
/// How long one pull request waits for events.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Events the publishing task sends before it awaits their acks.
const PUBLISH_WINDOW: usize = 256;
/// Unacknowledged events one consumer may have out, across the instances reading it.
const MAX_ACK_PENDING: i64 = 1024;
/// Longest wait between two tries (publishing, pulling) while NATS is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait before a failed event is delivered again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The transport's counters since it connected.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_retries: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    handled: AtomicU64,
    failed: AtomicU64,
    returned: AtomicU64,
    redelivered: AtomicU64,
    invalid: AtomicU64,
}

/// A snapshot of [`NatsTransport`]'s counters, for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// Events waiting to be published (NATS slow or away).
    pub pending: usize,
    /// Events published and acknowledged by JetStream.
    pub published: u64,
    /// Publishes tried again (NATS away, an ack timed out).
    pub publish_retries: u64,
    /// Events refused at [`EventTransport::publish`]: the queue was full ([`NatsOptions::max_pending`]),
    /// or the event could never be published (too large).
    pub refused: u64,
    /// Queued events given up after JetStream refused them for good.
    pub dropped: u64,
    /// Deliveries whose handler ran and succeeded (acknowledged).
    pub handled: u64,
    /// Deliveries whose handler failed (delivered again later, up to `max_deliver`).
    pub failed: u64,
    /// Deliveries handed back unhandled: a full queue, a plugin that went away (delivered again).
    pub returned: u64,
    /// Deliveries that were not an event's first.
    pub redelivered: u64,
    /// Messages that were not valid events (terminated).
    pub invalid: u64,
}

/// One subscription this host has.
#[derive(Debug)]
struct Subscription {
    delivery: Delivery,
    /// When the plugin subscribed: where a new consumer starts.
    since: SystemTime,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

/// What the transport's tasks share.
#[derive(Debug)]
struct Shared {
    options: NatsOptions,
    client: async_nats::Client,
    js: jetstream::Context,
    counters: Counters,
    pending: AtomicUsize,
    /// Woken when `pending` drops to zero.
    drained: Notify,
    /// This connection's message ids: `<instance>-<nonce>-<sequence>`.
    nonce: u64,
    inbox: Mutex<Option<Inbox>>,
    subscriptions: Mutex<HashMap<(String, String), Subscription>>,
    /// The largest message the server takes.
    max_payload: usize,
}

/// The events of this host's plugins and of its subscriptions, over NATS JetStream. Cheap to
/// share (`Arc`); dropping it stops its tasks: the events not yet published are lost (call
/// [`NatsTransport::flush`] first), and the events NATS still sends to its subscriptions are
/// handed back for another instance (or this one, restarted). Hand it to the host with `Host::builder().events(Arc::new(t))`.
#[derive(Debug)]
pub struct NatsTransport {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Event>,
    publisher: JoinHandle<()>,
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        self.publisher.abort();
        // The subscriptions' tasks end by themselves at their pull's end (within a few
        // seconds), handing back what NATS still sends to their open pull requests, so another
        // instance gets those events at once rather than after `ack_wait`.
        for (_, s) in self.shared.subscriptions.lock().drain() {
            s.stop.store(true, Ordering::Release);
        }
    }
}

impl NatsTransport {
    /// Connect to NATS and create (or update, idempotently) the stream: file storage, subjects
    /// `<subject_prefix>.>`, events kept `max_age`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), plugd_nats::NatsError> {
    /// use plugd_nats::{NatsOptions, NatsTransport};
    /// let transport = NatsTransport::connect(&NatsOptions {
    ///     instance: "web-1".into(),
    ///     ..NatsOptions::default()
    /// })
    /// .await?;
    /// // Host::builder().events(std::sync::Arc::new(transport))
    /// # Ok(()) }
    /// ```
    pub async fn connect(options: &NatsOptions) -> Result<NatsTransport, NatsError> {
        options.validate()?;
        let url = redact(&options.url);
        let connect = async_nats::ConnectOptions::new()
            .name(format!("plugd {}", options.instance))
            .connection_timeout(options.connect_timeout)
            .request_timeout(Some(options.timeout))
            .event_callback(move |event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS"),
                }
            })
            .connect(options.url.as_str());
        let client = match tokio::time::timeout(options.connect_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(NatsError::Connect {
                    url,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(NatsError::Connect {
                    url,
                    reason: format!(
                        "no answer within {}",
                        humantime::format_duration(options.connect_timeout)
                    ),
                });
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .build(client.clone());
        ensure_stream(&js, options).await?;
        let max_payload = client.server_info().max_payload;
        let (queue, rx) = mpsc::channel(options.max_pending);
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let shared = Arc::new(Shared {
            options: options.clone(),
            client,
            js,
            counters: Counters::default(),
            pending: AtomicUsize::new(0),
            drained: Notify::new(),
            nonce,
            inbox: Mutex::new(None),
            subscriptions: Mutex::new(HashMap::new()),
            max_payload,
        });
        let publisher = tokio::spawn(publish_queue(shared.clone(), rx));
        Ok(NatsTransport {
            shared,
            queue,
            publisher,
        })
    }

    /// The connection, to share with other users of NATS (fleet control).
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }

    /// The JetStream context on the connection.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.shared.js
    }

    /// The options it was connected with.
    pub fn options(&self) -> &NatsOptions {
        &self.shared.options
    }

    /// Its counters.
    pub fn stats(&self) -> NatsStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatsStats {
            pending: self.shared.pending.load(Ordering::Relaxed),
            published: get(&c.published),
            publish_retries: get(&c.publish_retries),
            refused: get(&c.refused),
            dropped: get(&c.dropped),
            handled: get(&c.handled),
            failed: get(&c.failed),
            returned: get(&c.returned),
            redelivered: get(&c.redelivered),
            invalid: get(&c.invalid),
        }
    }

    /// Whether NATS and the stream answer (for `plugd check` and health): the round trip of a
    /// stream info request.
    pub async fn ping(&self) -> Result<Duration, NatsError> {
        let started = Instant::now();
        let stream = &self.shared.options.stream;
        let error = |reason: String| NatsError::Stream {
            stream: stream.clone(),
            reason,
        };
        tokio::time::timeout(
            self.shared.options.timeout,
            self.shared.js.get_stream(stream),
        )
        .await
        .map_err(|_| {
            error(format!(
                "no answer within {} (NATS at {} away?)",
                humantime::format_duration(self.shared.options.timeout),
                redact(&self.shared.options.url)
            ))
        })?
        .map_err(|e| error(e.to_string()))?;
        Ok(started.elapsed())
    }

    /// Wait until every event published so far is in the stream (or given up), at most
    /// `timeout`; whether it got there.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let drained = async {
            loop {
                let notified = self.shared.drained.notified();
                if self.shared.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, drained).await.is_ok()
    }
}

#[async_trait::async_trait]
impl EventTransport for NatsTransport {
    fn publish(&self, event: &Event) -> Result<(), BackendError> {
        let refuse = |message: String| {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            Err(BackendError::new("nats", message))
        };
        if !is_concrete_topic(&event.topic) {
            return refuse(format!("invalid event topic {:?}", event.topic));
        }
        // Headers and subject take well under 1 KiB.
        if event.payload.len() + event.topic.len() + 1024 > self.shared.max_payload {
            return refuse(format!(
                "event '{}' of {} bytes is over what the NATS server takes ({} bytes, max_payload)",
                event.topic,
                event.payload.len(),
                self.shared.max_payload
            ));
        }
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(event.clone()) {
            Ok(()) => Ok(()),
            Err(e) => {
                done_pending(&self.shared);
                let full = matches!(e, mpsc::error::TrySendError::Full(_));
                refuse(if full {
                    format!(
                        "{} events wait for NATS at {} already (max_pending): event '{}' not carried",
                        self.shared.options.max_pending,
                        redact(&self.shared.options.url),
                        event.topic
                    )
                } else {
                    "the NATS transport stopped".to_string()
                })
            }
        }
    }

    async fn start(&self, inbox: Inbox) -> Result<(), BackendError> {
        *self.shared.inbox.lock() = Some(inbox);
        let mut subscriptions = self.shared.subscriptions.lock();
        for ((plugin, pattern), s) in subscriptions.iter_mut() {
            if s.task.is_none() {
                s.task = Some(spawn_subscription(&self.shared, plugin, pattern, s));
            }
        }
        Ok(())
    }

    fn subscribe(&self, plugin: &str, pattern: &str, delivery: Delivery) -> bool {
        let key = (plugin.to_string(), pattern.to_string());
        let mut subscriptions = self.shared.subscriptions.lock();
        if let Some(old) = subscriptions.remove(&key) {
            old.stop.store(true, Ordering::Release);
        }
        let mut s = Subscription {
            delivery,
            since: SystemTime::now(),
            stop: Arc::new(AtomicBool::new(false)),
            task: None,
        };
        if self.shared.inbox.lock().is_some() {
            s.task = Some(spawn_subscription(&self.shared, plugin, pattern, &s));
        }
        subscriptions.insert(key, s);
        true
    }

    fn unsubscribe(&self, plugin: &str) {
        self.shared.subscriptions.lock().retain(|(p, _), s| {
            let keep = p != plugin;
            if !keep {
                // The task ends at its next event or pull; the consumer stays for later.
                s.stop.store(true, Ordering::Release);
            }
            keep
        });
    }
}

/// Whether `topic` is a concrete plugd topic (dot-separated segments of `[A-Za-z0-9_-]`).
fn is_concrete_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.split('.').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Create the stream, or bring its config up to date.
async fn ensure_stream(js: &jetstream::Context, options: &NatsOptions) -> Result<(), NatsError> {
    let config = stream::Config {
        name: options.stream.clone(),
        description: Some("plugd events between the instances of a fleet".into()),
        subjects: vec![format!("{}.>", options.subject_prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: options.max_age,
        duplicate_window: options.max_age.min(Duration::from_secs(120)),
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map(|_| ())
        .map_err(|e| NatsError::Stream {
            stream: options.stream.clone(),
            reason: e.to_string(),
        })
}

/// One fewer event waits to be published.
fn done_pending(shared: &Shared) {
    if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.drained.notify_waiters();
    }
}

/// The name of the durable consumer of a subscription: shared by the fleet, or this instance's.
pub(crate) fn consumer_name(
    instance: &str,
    plugin: &str,
    pattern: &str,
    delivery: Delivery,
) -> String {
    let mut hash = Sha256::new();
    match delivery {
        Delivery::Fleet => hash.update(b"fleet\0"),
        Delivery::Instance => {
            hash.update(b"instance\0");
            hash.update(instance.as_bytes());
        }
    }
    hash.update(b"\0");
    hash.update(plugin.as_bytes());
    hash.update(b"\0");
    hash.update(pattern.as_bytes());
    let hash = &hex::encode(hash.finalize())[..16];
    match delivery {
        Delivery::Fleet => format!("fleet-{plugin}-{hash}"),
        Delivery::Instance => format!("instance-{instance}-{plugin}-{hash}"),
    }
}

/// The subject of `topic`.
pub(crate) fn subject(prefix: &str, topic: &str) -> String {
    format!("{prefix}.{topic}")
}

/// The event a message carries, or why it is not one.
pub(crate) fn event_of(
    prefix: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
    published: Option<SystemTime>,
) -> Result<Event, String> {
    let topic = subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or_else(|| format!("subject '{subject}' is not under '{prefix}'"))?;
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let at = header(TIME_HEADER)
        .and_then(|t| t.parse::<u64>().ok())
        .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
        .or(published)
        .unwrap_or_else(SystemTime::now);
    Ok(Event {
        topic: topic.to_string(),
        payload,
        source: header(SOURCE_HEADER).unwrap_or_default(),
        at,
    })
}

/// Publish the queued events in order, awaiting JetStream's acks, retrying while NATS is away.
async fn publish_queue(shared: Arc<Shared>, mut rx: mpsc::Receiver<Event>) {
    let mut sequence = 0u64;
    let mut batch: Vec<(String, Event)> = Vec::with_capacity(PUBLISH_WINDOW);
    while let Some(first) = rx.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some(event) = next {
            sequence += 1;
            let id = format!("{}-{}-{sequence}", shared.options.instance, shared.nonce);
            batch.push((id, event));
            next = if batch.len() < PUBLISH_WINDOW {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        publish_batch(&shared, &batch).await;
    }
}

/// Publish `batch` until every event is in the stream or given up.
async fn publish_batch(shared: &Shared, batch: &[(String, Event)]) {
    let mut from = 0;
    let mut tries = 0u32;
    let mut backoff = Duration::from_millis(50);
    while from < batch.len() {
        let mut acks = Vec::new();
        let mut failure = None;
        for (i, (id, event)) in batch.iter().enumerate().skip(from) {
            let mut headers = HeaderMap::new();
            headers.insert(SOURCE_HEADER, event.source.as_str());
            let nanos = event
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            headers.insert(TIME_HEADER, nanos.to_string().as_str());
            headers.insert(INSTANCE_HEADER, shared.options.instance.as_str());
            headers.insert("Nats-Msg-Id", id.as_str());
            let subject = subject(&shared.options.subject_prefix, &event.topic);
            match shared
                .js
                .publish_with_headers(subject, headers, event.payload.clone())
                .await
            {
                Ok(ack) => acks.push((i, ack)),
                Err(e) => {
                    failure = Some((i, e.kind(), e.to_string()));
                    break;
                }
            }
        }
        for (i, ack) in acks {
            match ack.await {
                Ok(_) => {
                    shared.counters.published.fetch_add(1, Ordering::Relaxed);
                    done_pending(shared);
                    from = i + 1;
                    tries = 0;
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    failure = Some((i, e.kind(), e.to_string()));
                    break;
                }
            }
        }
        let Some((i, kind, error)) = failure else {
            continue;
        };
        use async_nats::jetstream::context::PublishErrorKind as Kind;
        tries += 1;
        let transient = matches!(
            kind,
            Kind::TimedOut | Kind::BrokenPipe | Kind::MaxAckPending
        );
        if kind == Kind::StreamNotFound {
            // Someone deleted the stream: make it again.
            if let Err(e) = ensure_stream(&shared.js, &shared.options).await {
                tracing::warn!(error = %e, "NATS stream could not be made again");
            }
        }
        if !transient && tries >= 3 {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %batch[i].1.topic, %error, "event given up: JetStream refused it three times");
            done_pending(shared);
            from = i + 1;
            tries = 0;
            continue;
        }
        shared
            .counters
            .publish_retries
            .fetch_add(1, Ordering::Relaxed);
        if tries.is_power_of_two() {
            tracing::warn!(
                url = %redact(&shared.options.url),
                %error,
                tries,
                "publishing events to NATS failed; trying again"
            );
        }
        from = i;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Start the task that reads a subscription's consumer.
fn spawn_subscription(
    shared: &Arc<Shared>,
    plugin: &str,
    pattern: &str,
    s: &Subscription,
) -> JoinHandle<()> {
    tokio::spawn(read_consumer(
        shared.clone(),
        plugin.to_string(),
        pattern.to_string(),
        s.delivery,
        s.since,
        s.stop.clone(),
    ))
}

/// Get or create the durable consumer of a subscription.
async fn consumer_for(
    shared: &Shared,
    plugin: &str,
    pattern: &str,
    delivery: Delivery,
    since: SystemTime,
) -> Result<consumer::PullConsumer, String> {
    let options = &shared.options;
    let name = consumer_name(&options.instance, plugin, pattern, delivery);
    let stream = shared
        .js
        .get_stream_no_info(&options.stream)
        .await
        .map_err(|e| format!("stream '{}': {e}", options.stream))?;
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!(
            "plugd: plugin '{plugin}' subscribes to '{pattern}', delivery {delivery}{}",
            match delivery {
                Delivery::Fleet => String::new(),
                Delivery::Instance => format!(" (instance {})", options.instance),
            }
        )),
        deliver_policy: consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(since),
        },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: options.max_deliver,
        filter_subject: subject(&options.subject_prefix, pattern),
        max_ack_pending: MAX_ACK_PENDING,
        inactive_threshold: options.max_age,
        ..Default::default()
    };
    stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| format!("consumer '{name}': {e}"))
}

/// Read a subscription's consumer until it is stopped: pull events, hand each to the
/// subscription, acknowledge each once handled. Recovers by itself when NATS comes back.
async fn read_consumer(
    shared: Arc<Shared>,
    plugin: String,
    pattern: String,
    delivery: Delivery,
    since: SystemTime,
    stop: Arc<AtomicBool>,
) {
    let Some(inbox) = shared.inbox.lock().clone() else {
        return;
    };
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    let stopped = || stop.load(Ordering::Acquire);
    'connect: while !stopped() {
        let consumer = match consumer_for(&shared, &plugin, &pattern, delivery, since).await {
            Ok(consumer) => consumer,
            Err(error) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(%plugin, %pattern, %error, "NATS subscription not ready; trying again");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        while !stopped() {
            let batch = consumer
                .batch()
                .max_messages(PULL_BATCH)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(%plugin, %pattern, %error, "pulling events from NATS failed; trying again");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'connect;
                }
            };
            loop {
                // A pull ends by itself when `expires` passes; a lost connection ends it here.
                let next =
                    tokio::time::timeout(PULL_EXPIRES + shared.options.timeout, batch.next()).await;
                let message = match next {
                    Ok(Some(Ok(message))) => message,
                    Ok(None) => break,
                    Ok(Some(Err(error))) => {
                        failures += 1;
                        if failures.is_power_of_two() {
                            tracing::warn!(%plugin, %pattern, %error, "pulling events from NATS failed; trying again");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue 'connect;
                    }
                    Err(_) => continue 'connect,
                };
                failures = 0;
                backoff = Duration::from_millis(50);
                if stopped() {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(shared.options.retry_delay)))
                        .await;
                    continue;
                }
                hand_over(&shared, &inbox, &plugin, &pattern, message);
            }
        }
    }
}

/// Hand one message to the subscription, and acknowledge it on a task of its own once the
/// handler ran (so the next events queue meanwhile, in order).
fn hand_over(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    plugin: &str,
    pattern: &str,
    message: jetstream::Message,
) {
    let info = message.info().ok();
    let delivered = info.as_ref().map_or(1, |i| i.delivered);
    let published = info.as_ref().map(|i| SystemTime::from(i.published));
    if delivered > 1 {
        shared.counters.redelivered.fetch_add(1, Ordering::Relaxed);
    }
    let event = event_of(
        &shared.options.subject_prefix,
        message.subject.as_str(),
        message.headers.as_ref(),
        message.payload.clone(),
        published,
    );
    let outcome = match event {
        Ok(event) => inbox.deliver_to(plugin, pattern, event),
        Err(reason) => {
            tracing::warn!(%plugin, %pattern, %reason, "NATS message dropped: not a plugd event");
            Box::pin(std::future::ready(Delivered::Invalid))
        }
    };
    let shared = shared.clone();
    let plugin = plugin.to_string();
    tokio::spawn(async move {
        let mut outcome = outcome;
        let keep_alive = shared.options.ack_wait / 2;
        let outcome = loop {
            tokio::select! {
                outcome = &mut outcome => break outcome,
                _ = tokio::time::sleep(keep_alive) => {
                    // Still in the handler (or the queue): NATS waits another ack_wait.
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        };
        let counters = &shared.counters;
        let (kind, counter) = match &outcome {
            Delivered::Handled => (AckKind::Ack, &counters.handled),
            Delivered::Invalid => (AckKind::Term, &counters.invalid),
            Delivered::Failed(error) => {
                let kind = if delivered >= shared.options.max_deliver {
                    tracing::warn!(%plugin, subject = %message.subject, deliveries = delivered, %error, "event given up: its handler failed on every delivery (max_deliver)");
                    AckKind::Term
                } else {
                    let doubling = 1u32 << (delivered.clamp(1, 16) - 1);
                    AckKind::Nak(Some(
                        (shared.options.retry_delay * doubling).min(MAX_RETRY_DELAY),
                    ))
                };
                (kind, &counters.failed)
            }
            _ => (
                AckKind::Nak(Some(shared.options.retry_delay)),
                &counters.returned,
            ),
        };
        if let Err(error) = message.ack_with(kind).await {
            // NATS delivers it again after ack_wait.
            tracing::debug!(%plugin, %error, "ack to NATS failed");
        }
        counter.fetch_add(1, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_are_named_per_fleet_or_per_instance() {
        let fleet = consumer_name("web-1", "worker", "jobs.*", Delivery::Fleet);
        assert_eq!(
            fleet,
            consumer_name("web-2", "worker", "jobs.*", Delivery::Fleet)
        );
        assert!(fleet.starts_with("fleet-worker-"), "{fleet}");
        let one = consumer_name("web-1", "worker", "jobs.*", Delivery::Instance);
        let two = consumer_name("web-2", "worker", "jobs.*", Delivery::Instance);
        assert_ne!(one, two);
        assert!(one.starts_with("instance-web-1-worker-"), "{one}");
        assert_ne!(
            consumer_name("a", "b", "x.*", Delivery::Fleet),
            consumer_name("a", "b", "y.*", Delivery::Fleet)
        );
        for name in [fleet, one] {
            assert!(!name.contains(['.', '*', '>', ' ']), "{name}");
        }
    }

    #[test]
    fn a_message_outside_the_prefix_is_not_an_event() {
        let e = event_of("p.e", "p.e.user.created", None, "x".into(), None).unwrap();
        assert_eq!(e.topic, "user.created");
        assert!(event_of("p.e", "p.ex.user", None, "x".into(), None).is_err());
        assert!(event_of("p.e", "other.user", None, "x".into(), None).is_err());
        let mut headers = HeaderMap::new();
        headers.insert(SOURCE_HEADER, "billing");
        headers.insert(TIME_HEADER, "1000000000");
        let e = event_of("p", "p.t", Some(&headers), "x".into(), None).unwrap();
        assert_eq!(e.source, "billing");
        assert_eq!(e.at, UNIX_EPOCH + Duration::from_secs(1));
    }
}
