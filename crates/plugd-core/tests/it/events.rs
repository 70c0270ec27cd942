//! Events between native plugins through the host's bus.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use plugd_core::Host;

use crate::{Journal, Recorder, config, manifest};

async fn wait_for(j: &Journal, entry: &str) {
    for _ in 0..200 {
        if j.lock().iter().any(|e| e == entry) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw {entry:?} in {:?}", j.lock());
}

#[tokio::test]
async fn subscribers_get_declared_events_with_wildcards() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut listener = Recorder::new("listener", &j);
    listener.subscribe = Some("user.*");
    let mut users = Recorder::new("users", &j);
    users.publish_on_start = Some("user.created");
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        // The listener starts first (higher priority), so it is subscribed when users starts.
        .native(
            manifest(
                "listener",
                "priority: 300\nevents:\n  subscribes: ['user.*']\n",
            ),
            listener,
        )
        .native(
            manifest("users", "events:\n  publishes: [user.created]\n"),
            users,
        )
        .build()
        .unwrap();
    host.start().await.unwrap();
    wait_for(&j, "listener:event user.created from users").await;
    assert_eq!(
        host.plugin_info("listener").unwrap().subscriptions,
        ["user.*"]
    );
    // The host may publish anything; the bus counts deliveries.
    host.events().publish("user.deleted", "{}").unwrap();
    wait_for(&j, "listener:event user.deleted from ").await;
    let subs = host.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].delivered, 2);
    host.shutdown().await;
    assert!(
        host.subscriptions().is_empty(),
        "stopping a plugin unsubscribes it"
    );
}

#[tokio::test]
async fn undeclared_publish_and_subscribe_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut sneaky = Recorder::new("sneaky", &j);
    sneaky.subscribe = Some("secrets.*");
    let mut loud = Recorder::new("loud", &j);
    loud.publish_on_start = Some("user.created");
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("sneaky", ""), sneaky)
        .native(manifest("loud", ""), loud)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let err = |n: &str| host.plugin_info(n).unwrap().last_error.unwrap().message;
    assert!(
        err("sneaky")
            .contains("plugin 'sneaky' attempted to subscribe to undeclared event 'secrets.*'"),
        "{}",
        err("sneaky")
    );
    assert!(
        err("loud").contains("plugin 'loud' attempted to publish undeclared event 'user.created'"),
        "{}",
        err("loud")
    );
    host.shutdown().await;
}

#[tokio::test]
async fn timers_tick_while_running_and_stop_before_stop() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut ticker = Recorder::new("ticker", &j);
    ticker.timer = Some(Duration::from_millis(20));
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("ticker", ""), ticker)
        .build()
        .unwrap();
    host.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    host.shutdown().await;
    let log = j.lock().clone();
    let ticks = log.iter().filter(|e| *e == "ticker:tick beat").count();
    assert!(ticks >= 2, "{log:?}");
    let stop = log.iter().position(|e| e == "ticker:stop").unwrap();
    assert!(
        log[stop..].iter().all(|e| e != "ticker:tick beat"),
        "no tick after stop: {log:?}"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(j.lock().len(), log.len(), "nothing runs after shutdown");
}

#[tokio::test]
async fn a_timer_faster_than_the_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut ticker = Recorder::new("ticker", &j);
    ticker.timer = Some(Duration::from_millis(1));
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("ticker", ""), ticker)
        .build()
        .unwrap();
    host.start().await.unwrap();
    let err = host
        .plugin_info("ticker")
        .unwrap()
        .last_error
        .unwrap()
        .message;
    assert!(err.contains("under the minimum"), "{err}");
}

#[tokio::test]
async fn background_tasks_are_cancelled_on_stop_and_gone_before_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut worker = Recorder::new("worker", &j);
    worker.background = true;
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(manifest("worker", ""), worker)
        .build()
        .unwrap();
    host.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    host.shutdown().await;
    let log = j.lock().clone();
    assert!(
        log.iter().filter(|e| *e == "worker:bg").count() >= 2,
        "{log:?}"
    );
    let stop = log.iter().position(|e| e == "worker:stop").unwrap();
    assert!(log[stop..].iter().all(|e| e != "worker:bg"), "{log:?}");
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(j.lock().len(), log.len(), "the task is gone");
}

#[tokio::test]
async fn two_hosts_joined_by_a_transport_share_their_plugins_events() {
    let hub = plugd_core::MemoryHub::default();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let j: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut listener = Recorder::new("listener", &j);
    listener.subscribe = Some("user.*");
    let mut users = Recorder::new("users", &j);
    users.publish_on_start = Some("user.created");
    // Host b (the listener) starts first, so it receives what host a's plugin publishes at start.
    let b = Host::builder()
        .config(config(dir_b.path(), "plugins:\n  plugins: []\n"))
        .events(hub.transport())
        .native(
            manifest("listener", "events:\n  subscribes: ['user.*']\n"),
            listener,
        )
        .build()
        .unwrap();
    b.start().await.unwrap();
    let a = Host::builder()
        .config(config(dir_a.path(), "plugins:\n  plugins: []\n"))
        .events(hub.transport())
        .native(
            manifest("users", "events:\n  publishes: [user.created]\n"),
            users,
        )
        .build()
        .unwrap();
    a.start().await.unwrap();
    wait_for(&j, "listener:event user.created from users").await;
    // The host's own events travel too; each arrives once.
    a.events().publish("user.deleted", "{}").unwrap();
    wait_for(&j, "listener:event user.deleted from ").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let received = j
        .lock()
        .iter()
        .filter(|e| e.starts_with("listener:event"))
        .count();
    assert_eq!(received, 2, "{:?}", j.lock());
    assert_eq!(b.subscriptions()[0].delivered, 2);
    a.shutdown().await;
    b.shutdown().await;
}
