//! The NATS transport against the real server (`PLUGD_TEST_NATS`, default
//! `nats://127.0.0.1:4222`; `scripts/services.sh` starts one): the event transport conformance
//! suite, fleet and instance delivery across three instances, redelivery, durable consumers, the
//! publisher's checks, and a cut connection. Each test has a stream and subject prefix of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use plugd_core::{Deliver, Delivery, Event, EventBus, PluginError, Publisher, QUEUE_BYTES};
use plugd_nats::{NatsOptions, NatsTransport};

fn nats_url() -> String {
    std::env::var("PLUGD_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Options with a stream and subject prefix no other test uses.
fn options(instance: &str) -> NatsOptions {
    let id: u32 = rand::random();
    NatsOptions {
        url: nats_url(),
        stream: format!("PLUGD_TEST_{id:08x}"),
        subject_prefix: format!("plugdtest.{id:08x}"),
        instance: instance.into(),
        max_age: Duration::from_secs(600),
        ack_wait: Duration::from_secs(5),
        retry_delay: Duration::from_millis(100),
        ..NatsOptions::default()
    }
}

async fn connect(options: &NatsOptions, instance: &str) -> Arc<NatsTransport> {
    let options = NatsOptions {
        instance: instance.into(),
        ..options.clone()
    };
    match NatsTransport::connect(&options).await {
        Ok(t) => Arc::new(t),
        Err(e) => panic!(
            "NATS with JetStream must run at {} (scripts/services.sh starts it): {e}",
            options.url
        ),
    }
}

/// An instance: a bus on its own transport, started.
async fn instance(options: &NatsOptions, id: &str) -> (Arc<EventBus>, Arc<NatsTransport>) {
    let transport = connect(options, id).await;
    let bus = Arc::new(EventBus::with_transport(transport.clone()));
    bus.start_transport().await.unwrap();
    (bus, transport)
}

/// Delete the test's stream (and its consumers).
async fn cleanup(transport: &NatsTransport) {
    let _ = transport
        .jetstream()
        .delete_stream(&transport.options().stream)
        .await;
}

/// A subscriber that records what it handled, failing each event's first `fail_first` tries.
fn recorder(fail_first: usize) -> (Deliver, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tries = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let s = seen.clone();
    let deliver: Deliver = Arc::new(move |e: Event| {
        let (s, tries) = (s.clone(), tries.clone());
        Box::pin(async move {
            let key = format!("{}:{:?}", e.topic, e.payload);
            let tried = {
                let mut tries = tries.lock();
                let n = tries.entry(key).or_default();
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

async fn until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("{what} within {within:?}"));
}

fn event(topic: &str, i: usize) -> Event {
    Event {
        topic: topic.into(),
        payload: i.to_string().into(),
        source: "api".into(),
        at: SystemTime::now(),
    }
}

/// How many times each payload was seen.
fn counts(seen: &[&Arc<Mutex<Vec<Event>>>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in seen {
        for e in s.lock().iter() {
            *counts
                .entry(String::from_utf8_lossy(&e.payload).into_owned())
                .or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn the_nats_transport_conforms() {
    let o = options("a");
    let a = connect(&o, "conf-a").await;
    let b = connect(&o, "conf-b").await;
    plugd_core::testing::event_transport(a.clone(), b, "conf").await;
    cleanup(&a).await;
}

#[tokio::test]
async fn a_fleet_subscription_gets_each_event_once_across_three_instances() {
    let o = options("x");
    let mut instances = Vec::new();
    let mut seen = Vec::new();
    for id in ["w1", "w2", "w3"] {
        let (bus, transport) = instance(&o, id).await;
        let (deliver, s) = recorder(0);
        bus.subscribe_with("worker", "jobs.*", Delivery::Fleet, QUEUE_BYTES, deliver);
        instances.push((bus, transport));
        seen.push(s);
    }
    let n = 300;
    for i in 0..n {
        instances[i % 3].0.publish(event("jobs.resize", i));
    }
    let all: Vec<_> = seen.iter().collect();
    until("every job handled once", Duration::from_secs(20), || {
        counts(&all).len() == n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = counts(&all);
    assert_eq!(counts.len(), n);
    assert!(
        counts.values().all(|c| *c == 1),
        "no job twice: {:?}",
        counts.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
    let redelivered: u64 = instances.iter().map(|(_, t)| t.stats().redelivered).sum();
    assert_eq!(redelivered, 0, "no handler failed, so nothing came twice");
    cleanup(&instances[0].1).await;
}

#[tokio::test]
async fn an_instance_subscription_gets_each_event_once_on_every_instance() {
    let o = options("x");
    let mut instances = Vec::new();
    let mut seen = Vec::new();
    for id in ["i1", "i2", "i3"] {
        let (bus, transport) = instance(&o, id).await;
        let (deliver, s) = recorder(0);
        bus.subscribe_with(
            "worker",
            "cache.*",
            Delivery::Instance,
            QUEUE_BYTES,
            deliver,
        );
        instances.push((bus, transport));
        seen.push(s);
    }
    let n = 50;
    for i in 0..n {
        instances[i % 3].0.publish(event("cache.flush", i));
    }
    until(
        "every instance got every event",
        Duration::from_secs(20),
        || seen.iter().all(|s| s.lock().len() >= n),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, s) in seen.iter().enumerate() {
        let counts = counts(&[s]);
        assert_eq!(counts.len(), n, "instance {i}");
        assert!(counts.values().all(|c| *c == 1), "instance {i}: {counts:?}");
        // Source and time travel in the headers.
        let first = &s.lock()[0];
        assert_eq!(first.source, "api");
        let age = SystemTime::now().duration_since(first.at).unwrap();
        assert!(age < Duration::from_secs(30), "{age:?}");
    }
    cleanup(&instances[0].1).await;
}

#[tokio::test]
async fn a_failed_handler_gets_the_event_again() {
    let o = options("x");
    let (bus, transport) = instance(&o, "f1").await;
    let (other_bus, other) = instance(&o, "f2").await;
    let (flaky, on_one) = recorder(1);
    let (also_flaky, on_two) = recorder(1);
    bus.subscribe_with("worker", "mail.*", Delivery::Fleet, QUEUE_BYTES, flaky);
    other_bus.subscribe_with("worker", "mail.*", Delivery::Fleet, QUEUE_BYTES, also_flaky);
    let n = 10;
    for i in 0..n {
        bus.publish(event("mail.send", i));
    }
    until(
        "every mail sent after a failure",
        Duration::from_secs(20),
        || counts(&[&on_one, &on_two]).len() == n,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = counts(&[&on_one, &on_two]);
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
    let (s1, s2) = (transport.stats(), other.stats());
    // Each instance's recorder fails an event's first try there: at least one failure per
    // event, and every redelivery follows a failure.
    assert!(s1.failed + s2.failed >= n as u64, "{s1:?} {s2:?}");
    assert_eq!(
        s1.redelivered + s2.redelivered,
        s1.failed + s2.failed,
        "{s1:?} {s2:?}"
    );
    assert_eq!(s1.handled + s2.handled, n as u64);
    cleanup(&transport).await;
}

#[tokio::test]
async fn an_instance_that_comes_back_gets_the_events_published_meanwhile() {
    let o = options("x");
    let (publisher, publishing) = instance(&o, "pub").await;
    let (bus, transport) = instance(&o, "audit-1").await;
    let (deliver, before) = recorder(0);
    bus.subscribe_with(
        "auditor",
        "audit.*",
        Delivery::Instance,
        QUEUE_BYTES,
        deliver,
    );
    for i in 0..5 {
        publisher.publish(event("audit.login", i));
    }
    until("the first events", Duration::from_secs(10), || {
        transport.stats().handled == 5
    })
    .await;
    transport.client().flush().await.unwrap();
    drop(bus);
    drop(transport);

    for i in 5..10 {
        publisher.publish(event("audit.login", i));
    }
    assert!(publishing.flush(Duration::from_secs(10)).await);

    let (bus, transport) = instance(&o, "audit-1").await;
    let (deliver, after) = recorder(0);
    bus.subscribe_with(
        "auditor",
        "audit.*",
        Delivery::Instance,
        QUEUE_BYTES,
        deliver,
    );
    // A new instance starts from its subscription: it gets none of them.
    let (newcomer_bus, _newcomer) = instance(&o, "audit-2").await;
    let (deliver, newcomer) = recorder(0);
    newcomer_bus.subscribe_with(
        "auditor",
        "audit.*",
        Delivery::Instance,
        QUEUE_BYTES,
        deliver,
    );
    // A pull request the old instance left open may take some of them first: NATS delivers
    // those again after ack_wait (5 s here).
    let distinct = |s: &Mutex<Vec<Event>>| {
        s.lock()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    until(
        "the events published while it was away",
        Duration::from_secs(20),
        || distinct(&after).len() >= 5,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let payloads = |s: &Mutex<Vec<Event>>| {
        s.lock()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(payloads(&before), ["0", "1", "2", "3", "4"]);
    assert_eq!(
        distinct(&after).into_iter().collect::<Vec<_>>(),
        ["5", "6", "7", "8", "9"],
        "where it stopped: {:?}",
        payloads(&after)
    );
    assert!(newcomer.lock().is_empty());
    cleanup(&transport).await;
}

#[tokio::test]
async fn an_undeclared_topic_is_refused_before_nats_sees_it() {
    let o = options("x");
    let (bus, transport) = instance(&o, "p1").await;
    let publisher = Publisher::new(bus.clone(), "billing", &["invoice.paid".into()]);
    let e = publisher.publish("invoice.void", "{}").unwrap_err();
    assert!(
        e.to_string().contains("undeclared event 'invoice.void'"),
        "{e}"
    );
    assert!(publisher.publish("invoice.*", "{}").is_err());
    publisher.publish("invoice.paid", "{}").unwrap();
    assert!(transport.flush(Duration::from_secs(10)).await);
    let mut stream = transport.jetstream().get_stream(&o.stream).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 1,
        "only the declared event reached NATS"
    );
    assert_eq!(transport.stats().published, 1);
    cleanup(&transport).await;
}

#[tokio::test]
async fn a_cut_connection_buffers_publishes_and_the_subscriptions_resume() {
    let upstream = nats_url()
        .trim_start_matches("nats://")
        .rsplit('@')
        .next()
        .unwrap()
        .to_string();
    let proxy = plugd_core::testing::CutProxy::start(&upstream)
        .await
        .unwrap();
    let o = options("x");
    let via_proxy = NatsOptions {
        url: format!("nats://{}", proxy.addr()),
        timeout: Duration::from_secs(1),
        ..o.clone()
    };
    let (cut_bus, cut) = instance(&via_proxy, "cut").await;
    let (bus, direct) = instance(&o, "direct").await;
    let (d1, on_cut) = recorder(0);
    let (d2, on_direct) = recorder(0);
    cut_bus.subscribe_with("watcher", "orders.*", Delivery::Instance, QUEUE_BYTES, d1);
    bus.subscribe_with("watcher", "orders.*", Delivery::Instance, QUEUE_BYTES, d2);
    cut_bus.publish(event("orders.new", 0));
    until("the first event", Duration::from_secs(10), || {
        on_cut.lock().len() == 1 && on_direct.lock().len() == 1
    })
    .await;

    proxy.cut();
    for i in 1..=20 {
        cut_bus.publish(event("orders.new", i));
    }
    bus.publish(event("orders.new", 100));
    assert_eq!(cut_bus.transport_failures(), 0, "accepted and buffered");
    until(
        "the publishes wait and retry",
        Duration::from_secs(10),
        || {
            let s = cut.stats();
            s.pending > 0 && s.publish_retries > 0
        },
    )
    .await;
    assert_eq!(on_cut.lock().len(), 1, "nothing reaches the cut instance");

    proxy.restore();
    until(
        "the buffered events arrive and the cut instance's subscription resumes",
        Duration::from_secs(30),
        || on_direct.lock().len() == 22 && on_cut.lock().len() >= 22,
    )
    .await;
    assert!(cut.flush(Duration::from_secs(5)).await);
    assert_eq!(counts(&[&on_direct]).len(), 22);
    assert_eq!(counts(&[&on_cut]).len(), 22);
    assert_eq!(
        cut.stats().published,
        21,
        "no copies: the retries carry a message id"
    );
    cleanup(&direct).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let o = NatsOptions {
        url: "nats://plugd:secret@127.0.0.1:1".into(),
        connect_timeout: Duration::from_secs(2),
        ..options("x")
    };
    let e = NatsTransport::connect(&o).await.unwrap_err().to_string();
    assert!(
        e.starts_with("cannot connect to NATS at nats://plugd:***@127.0.0.1:1"),
        "{e}"
    );
    assert!(!e.contains("secret"), "{e}");
}

#[tokio::test]
async fn ping_answers_with_the_round_trip() {
    let o = options("x");
    let t = connect(&o, "ping").await;
    assert!(t.ping().await.unwrap() < Duration::from_secs(5));
    cleanup(&t).await;
}

#[tokio::test]
async fn past_max_pending_a_publish_is_refused_counted_and_delivered_here() {
    let upstream = nats_url()
        .trim_start_matches("nats://")
        .rsplit('@')
        .next()
        .unwrap()
        .to_string();
    let proxy = plugd_core::testing::CutProxy::start(&upstream)
        .await
        .unwrap();
    let o = options("x");
    let via_proxy = NatsOptions {
        url: format!("nats://{}", proxy.addr()),
        timeout: Duration::from_secs(1),
        max_pending: 5,
        ..o.clone()
    };
    let (bus, transport) = instance(&via_proxy, "small").await;
    let (deliver, seen) = recorder(0);
    bus.subscribe_with(
        "watcher",
        "orders.*",
        Delivery::Instance,
        QUEUE_BYTES,
        deliver,
    );
    proxy.cut();
    for i in 0..12 {
        bus.publish(event("orders.new", i));
    }
    // The publishing task holds one batch; at most 5 more wait in the queue.
    let refused = transport.stats().refused;
    assert!(refused >= 6, "{:?}", transport.stats());
    assert_eq!(bus.transport_failures(), refused, "the bus counts them too");
    until(
        "the refused events are delivered on this host",
        Duration::from_secs(5),
        || seen.lock().len() as u64 == refused,
    )
    .await;
    proxy.restore();
    until(
        "the accepted events arrive once NATS is back",
        Duration::from_secs(30),
        || seen.lock().len() == 12,
    )
    .await;
    assert_eq!(counts(&[&seen]).len(), 12, "each event once");
    cleanup(&transport).await;
}
