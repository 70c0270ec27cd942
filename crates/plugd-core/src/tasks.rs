//! Background tasks a plugin owns: cancelled when it stops, awaited before its cleanup.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

/// The background tasks of one plugin. Cheap to clone; keep it from `init` and spawn in `start`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tasks = plugd_core::Tasks::default();
/// tasks.spawn(async { std::future::pending::<()>().await });
/// assert_eq!(tasks.len(), 1);
/// tasks.cancel_all().await; // what the host does when the plugin stops
/// assert_eq!(tasks.len(), 0);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Tasks {
    /// Run `future` until it ends or the plugin stops.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        let mut handles = self.handles.lock();
        handles.retain(|h| !h.is_finished());
        handles.push(tokio::spawn(future));
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.handles
            .lock()
            .iter()
            .filter(|h| !h.is_finished())
            .count()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancel every task and wait until each is gone.
    pub async fn cancel_all(&self) {
        let handles = std::mem::take(&mut *self.handles.lock());
        for h in handles {
            h.abort();
            let _ = h.await;
        }
    }
}
