//! The reload gate of one plugin: requests pass it on their way into the plugin; a reload closes
//! it, waits for the calls inside to finish, swaps the plugin, and opens it again.
//!
//! While the gate is open a call costs two atomic operations (no lock). While it is closed, a call
//! either waits in a bounded queue (`block`: up to the queue timeout and the maximum queue size)
//! or is refused at once (`reject`); either way it never reaches the plugin half-swapped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use plugd_manifest::{QueueStrategy, ReloadSettings};
use tokio::sync::Notify;

/// Why a call could not pass a closed gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// `block`: the reload took longer than the queue timeout (the contract's message,
    /// docs/design.md#hot-reload).
    #[error("request timeout: plugin reload exceeded queue timeout ({})", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// `block`: too many requests already wait.
    #[error("plugin '{plugin}' is reloading and its queue is full ({max} requests wait)")]
    QueueFull {
        /// The plugin.
        plugin: String,
        /// The maximum queue size.
        max: usize,
    },
    /// `reject`: requests are refused while the plugin reloads.
    #[error("plugin '{0}' is reloading; try again shortly")]
    Rejected(String),
}

/// The gate of one plugin name; shared by every version of the plugin.
#[derive(Debug)]
pub struct Gate {
    name: String,
    closed: AtomicBool,
    inflight: AtomicUsize,
    queued: AtomicUsize,
    settings: Mutex<ReloadSettings>,
    opened: Notify,
    drained: Notify,
}

/// A call inside the gate; leaving (drop) lets a waiting reload go on.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a Gate,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

/// A [`Pass`] that owns its gate: a request holds these for its whole life.
#[derive(Debug)]
pub struct OwnedPass {
    gate: Arc<Gate>,
}

impl OwnedPass {
    /// The gate it passed.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

impl Drop for OwnedPass {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

impl Gate {
    /// An open gate.
    pub fn new(name: impl Into<String>) -> Gate {
        Gate {
            name: name.into(),
            closed: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            settings: Mutex::new(ReloadSettings::default()),
            opened: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Enter without waiting: `None` while the gate is closed.
    pub fn try_enter(&self) -> Option<Pass<'_>> {
        // SeqCst pairs with `close`: either this call sees the gate closed, or `close` sees it
        // inside and waits for it.
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(Pass { gate: self })
    }

    /// [`Gate::try_enter`] for a caller that keeps the pass beyond a borrow of the gate.
    pub fn try_enter_owned(self: &Arc<Self>) -> Option<OwnedPass> {
        let pass = self.try_enter()?;
        std::mem::forget(pass);
        Some(OwnedPass { gate: self.clone() })
    }

    /// The plugin name this gate guards.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Enter, waiting while a reload runs, per the reload settings in force.
    pub async fn enter(&self) -> Result<Pass<'_>, GateError> {
        if let Some(pass) = self.try_enter() {
            return Ok(pass);
        }
        let settings = self.settings.lock().clone();
        if settings.queue_strategy == QueueStrategy::Reject {
            return Err(GateError::Rejected(self.name.clone()));
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= settings.max_queue_size {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(GateError::QueueFull {
                plugin: self.name.clone(),
                max: settings.max_queue_size,
            });
        }
        let deadline = tokio::time::Instant::now() + settings.queue_timeout;
        let result = loop {
            let opened = self.opened.notified();
            if let Some(pass) = self.try_enter() {
                break Ok(pass);
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                break self
                    .try_enter()
                    .ok_or(GateError::Timeout(settings.queue_timeout));
            }
        };
        self.queued.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn leave(&self) {
        if self.inflight.fetch_sub(1, Ordering::SeqCst) == 1 && self.closed.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }

    /// Close the gate: new calls wait or are refused per `settings`.
    pub fn close(&self, settings: &ReloadSettings) {
        *self.settings.lock() = settings.clone();
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Wait until no call is inside, up to `limit`; `false` when calls were still inside.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let drained = self.drained.notified();
            if self.inflight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return self.inflight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// Open the gate and release every waiting call.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Whether a reload holds the gate.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Calls waiting for the gate to open.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Calls inside the gate.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(strategy: QueueStrategy, timeout: Duration, max: usize) -> ReloadSettings {
        ReloadSettings {
            queue_strategy: strategy,
            queue_timeout: timeout,
            max_queue_size: max,
            ..ReloadSettings::default()
        }
    }

    #[tokio::test]
    async fn an_open_gate_lets_calls_through_and_counts_them() {
        let gate = Gate::new("p");
        let a = gate.enter().await.unwrap();
        let b = gate.try_enter().unwrap();
        assert_eq!(gate.inflight(), 2);
        drop((a, b));
        assert_eq!(gate.inflight(), 0);
    }

    #[tokio::test]
    async fn a_closed_gate_holds_calls_until_it_opens() {
        let gate = Arc::new(Gate::new("p"));
        gate.close(&settings(QueueStrategy::Block, Duration::from_secs(30), 10));
        assert!(gate.try_enter().is_none());
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter().await.map(drop) })
        };
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        gate.open();
        waiter.await.unwrap().unwrap();
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_no_longer_than_the_queue_timeout() {
        let gate = Gate::new("p");
        gate.close(&settings(QueueStrategy::Block, Duration::from_secs(30), 10));
        let e = gate.enter().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "request timeout: plugin reload exceeded queue timeout (30s)"
        );
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let gate = Arc::new(Gate::new("p"));
        gate.close(&settings(QueueStrategy::Block, Duration::from_secs(30), 1));
        let first = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter().await.map(drop) })
        };
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let e = gate.enter().await.unwrap_err();
        assert_eq!(
            e,
            GateError::QueueFull {
                plugin: "p".into(),
                max: 1
            }
        );
        gate.open();
        first.await.unwrap().unwrap();
    }

    #[test]
    fn an_owned_pass_leaves_when_dropped() {
        let gate = Arc::new(Gate::new("p"));
        let pass = gate.try_enter_owned().unwrap();
        assert_eq!(gate.inflight(), 1);
        drop(pass);
        assert_eq!(gate.inflight(), 0);
        gate.close(&ReloadSettings::default());
        assert!(gate.try_enter_owned().is_none());
        assert_eq!(gate.inflight(), 0);
    }

    #[tokio::test]
    async fn reject_refuses_at_once() {
        let gate = Gate::new("p");
        gate.close(&settings(
            QueueStrategy::Reject,
            Duration::from_secs(30),
            10,
        ));
        assert_eq!(
            gate.enter().await.unwrap_err(),
            GateError::Rejected("p".into())
        );
        gate.open();
        assert!(gate.enter().await.is_ok());
    }

    #[tokio::test]
    async fn drain_waits_for_the_calls_inside() {
        let gate = Arc::new(Gate::new("p"));
        let pass_taken = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let inside = {
            let (gate, taken, release) = (gate.clone(), pass_taken.clone(), release.clone());
            tokio::spawn(async move {
                let _pass = gate.enter().await.unwrap();
                taken.notify_one();
                release.notified().await;
            })
        };
        pass_taken.notified().await;
        gate.close(&ReloadSettings::default());
        assert!(!gate.drain(Duration::from_millis(20)).await);
        let drain = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.drain(Duration::from_secs(30)).await })
        };
        release.notify_one();
        inside.await.unwrap();
        assert!(drain.await.unwrap());
    }
}
