//! File watching with notify: the [`FileWatcher`] of `plugd serve` (inotify on Linux, FSEvents on
//! macOS, ReadDirectoryChangesW on Windows).

use std::any::Any;

use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use plugd_core::{FileWatcher, PathSink, WatchError, WatchTarget};

/// The platform's file notifications, through notify's recommended watcher. Reads (access
/// events) are not reported.
///
/// ```
/// use std::sync::Arc;
/// let host = plugd_core::Host::builder()
///     .watcher(Arc::new(plugd_std::NotifyWatcher))
/// #   .data_dir(std::env::temp_dir().join(format!("plugd-std-watch-doc-{}", std::process::id())))
///     .build()
///     .unwrap();
/// # drop(host);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyWatcher;

impl FileWatcher for NotifyWatcher {
    fn watch(
        &self,
        targets: &[WatchTarget],
        sink: PathSink,
    ) -> Result<Box<dyn Any + Send>, WatchError> {
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, EventKind::Access(_))
            {
                sink(event.paths);
            }
        })
        .map_err(|e| WatchError(format!("cannot watch files: {e}")))?;
        for target in targets {
            let mode = if target.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher
                .watch(&target.path, mode)
                .map_err(|e| WatchError(format!("cannot watch {}: {e}", target.path.display())))?;
        }
        Ok(Box::new(watcher))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test]
    async fn the_notify_watcher_conforms() {
        let scratch = tempfile::tempdir().unwrap();
        plugd_core::testing::file_watcher(Arc::new(super::NotifyWatcher), scratch.path()).await;
    }
}
