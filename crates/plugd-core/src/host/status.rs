//! Writing the status records to the status sink (see [`crate::status`]), now and in the
//! background.

use std::sync::Arc;

use super::Host;
use crate::error::HostError;
use crate::status::StatusBatch;

impl Host {
    /// Write the status records now, as one report to the status backend: one row per plugin,
    /// one per plugin and hook type, the events since the last written report (`error` and
    /// `requests` counts, `load_duration_ms` after a load), and new denied calls. A background
    /// task does this every `status.interval` while the host runs, and once more when it stops.
    pub async fn write_status(&self) -> Result<StatusBatch, HostError> {
        let inner = &self.inner;
        let plugins = inner.plugins.read().clone();
        // One report at a time: the memory moves only when its report was written.
        let mut writer = inner.status.writer.lock().await;
        let audit = inner.audit.since(writer.audit_seq);
        let (report, seen, audit_seq) =
            writer.report(&plugins, audit, inner.config.status.retention);
        let batch = inner
            .status_sink
            .write(&report)
            .await
            .map_err(|e| HostError::Failed(format!("writing the status records: {e}")))?;
        writer.seen = seen;
        writer.audit_seq = audit_seq;
        Ok(batch)
    }

    /// Start the background writer, when `status.enabled` and not running yet.
    pub(crate) fn ensure_status_writer(&self) {
        let settings = &self.inner.config.status;
        if !settings.enabled || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut task = self.inner.status.task.lock();
        if task.as_ref().is_some_and(|(t, _)| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let stop = Arc::new(tokio::sync::Notify::new());
        let every = settings.interval;
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.notified() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let host = Host { inner };
                if let Err(e) = host.write_status().await {
                    tracing::warn!(error = %e, "status records not written; retrying at the next tick");
                }
            }
        });
        *task = Some((handle, stop));
    }

    /// Stop the background writer and write a last batch (at shutdown).
    pub(crate) async fn stop_status_writer(&self) {
        let task = self.inner.status.task.lock().take();
        let Some((handle, stop)) = task else { return };
        stop.notify_one();
        let _ = handle.await;
        if let Err(e) = self.write_status().await {
            tracing::warn!(error = %e, "last status batch not written");
        }
    }
}
