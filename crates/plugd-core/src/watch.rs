//! Watching plugin folders and the host config for changes, debounced.
//!
//! Folders are watched, not files: an editor or a build script that saves through a rename
//! (write `plugin.wasm.tmp`, rename it over `plugin.wasm`) replaces the file's inode, and a
//! watch on the old inode would miss every later change. Only files that make a plugin (its
//! manifest, its `.wasm` component, its `migrations/*.sql`) or the config file itself count; a
//! change is reported once nothing has moved for the debounce delay (`plugins.reload_delay`):
//! a burst of writes is one reload.
//!
//! The operating system's notifications come through a [`FileWatcher`], the port a backend
//! implements (`plugd-std`'s `NotifyWatcher`); which files count and the debounce stay here.
//! Every watcher runs the conformance suite `plugd_core::testing::file_watcher` (feature
//! `testing`).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plugd_manifest::Manifest;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A file of this plugin's folder.
    Plugin(String),
    /// The host config file.
    Config,
}

/// A folder for a [`FileWatcher`] to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchTarget {
    /// The folder, canonical.
    pub path: PathBuf,
    /// Everything under it (a plugin's folder), or only its own entries (the config's folder).
    pub recursive: bool,
}

/// Where a [`FileWatcher`] reports: the paths one notification names.
pub type PathSink = Arc<dyn Fn(Vec<PathBuf>) + Send + Sync>;

/// A watcher could not start (the system's limit of watches, a folder that went away): what
/// and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WatchError(pub String);

/// The port of file watching: report the paths that are created, written, renamed or removed
/// under some folders (not those merely read), as the operating system names them.
pub trait FileWatcher: Send + Sync + fmt::Debug + 'static {
    /// Start watching `targets`, calling `sink` for every notification; watching stops when
    /// the returned value is dropped.
    fn watch(
        &self,
        targets: &[WatchTarget],
        sink: PathSink,
    ) -> Result<Box<dyn Any + Send>, WatchError>;
}

/// A running watch; dropping it stops watching.
pub struct Watch {
    _watching: Box<dyn Any + Send>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a file name is part of a plugin.
fn counts_for_plugin(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if Manifest::FILE_NAMES.contains(&name) || name.ends_with(".wasm") {
        return true;
    }
    name.ends_with(".sql")
        && path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|p| p == "migrations")
}

/// Start watching `plugins` (name and folder) and the `config` file through `watcher`.
/// Debounced changes arrive on the returned channel.
pub fn watch(
    watcher: &dyn FileWatcher,
    plugins: &[(String, PathBuf)],
    config: Option<&Path>,
    delay: Duration,
) -> Result<(Watch, mpsc::UnboundedReceiver<Change>), WatchError> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();

    // Canonical folders, so that event paths (which the OS reports canonical) compare equal.
    let mut folders: Vec<(PathBuf, String)> = Vec::new();
    let mut targets = Vec::new();
    for (name, dir) in plugins {
        let dir = dir
            .canonicalize()
            .map_err(|e| WatchError(format!("cannot watch {}: {e}", dir.display())))?;
        targets.push(WatchTarget {
            path: dir.clone(),
            recursive: true,
        });
        folders.push((dir, name.clone()));
    }
    let config = match config {
        Some(file) => {
            let file = file
                .canonicalize()
                .map_err(|e| WatchError(format!("cannot watch {}: {e}", file.display())))?;
            let parent = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            targets.push(WatchTarget {
                path: parent,
                recursive: false,
            });
            Some(file)
        }
        None => None,
    };
    let watching = watcher.watch(
        &targets,
        Arc::new(move |paths| {
            let _ = raw_tx.send(paths);
        }),
    )?;

    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut pending: HashMap<Change, Instant> = HashMap::new();
        loop {
            let next = pending.values().min().copied();
            let event = match next {
                Some(at) => match tokio::time::timeout_at(at, raw_rx.recv()).await {
                    Ok(e) => e,
                    Err(_) => {
                        let now = Instant::now();
                        let due: Vec<Change> = pending
                            .iter()
                            .filter(|(_, at)| **at <= now)
                            .map(|(c, _)| c.clone())
                            .collect();
                        for change in due {
                            pending.remove(&change);
                            if tx.send(change).is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                },
                None => raw_rx.recv().await,
            };
            let Some(paths) = event else { return };
            for path in &paths {
                let change = if config.as_deref() == Some(path.as_path()) {
                    Some(Change::Config)
                } else if counts_for_plugin(path) {
                    folders
                        .iter()
                        .find(|(dir, _)| path.starts_with(dir))
                        .map(|(_, name)| Change::Plugin(name.clone()))
                } else {
                    None
                };
                if let Some(change) = change {
                    // Every new event restarts the quiet period.
                    pending.insert(change, Instant::now() + delay);
                }
            }
        }
    });
    Ok((
        Watch {
            _watching: watching,
            task,
        },
        rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Keeps the sink, for the test to report paths through.
    #[derive(Default)]
    struct Manual {
        sink: Mutex<Option<PathSink>>,
        targets: Mutex<Vec<WatchTarget>>,
    }

    impl fmt::Debug for Manual {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Manual").finish_non_exhaustive()
        }
    }

    impl FileWatcher for Manual {
        fn watch(
            &self,
            targets: &[WatchTarget],
            sink: PathSink,
        ) -> Result<Box<dyn Any + Send>, WatchError> {
            *self.targets.lock() = targets.to_vec();
            *self.sink.lock() = Some(sink);
            Ok(Box::new(()))
        }
    }

    #[test]
    fn only_plugin_files_count() {
        assert!(counts_for_plugin(Path::new("/p/plugin.yaml")));
        assert!(counts_for_plugin(Path::new("/p/plugin.wasm")));
        assert!(counts_for_plugin(Path::new("/p/migrations/001_init.sql")));
        assert!(!counts_for_plugin(Path::new("/p/plugin.wasm.tmp.123")));
        assert!(!counts_for_plugin(Path::new("/p/.plugin.yaml.swp")));
        assert!(!counts_for_plugin(Path::new("/p/notes.sql")));
        assert!(!counts_for_plugin(Path::new("/p/assets/index.html")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_change_once_quiet_and_folders_are_watched_not_files() {
        let dir = std::env::temp_dir().canonicalize().unwrap();
        let config = dir.join(format!("plugd-watch-test-{}.yaml", std::process::id()));
        std::fs::write(&config, "plugins: {}\n").unwrap();
        let manual = Manual::default();
        let (_watch, mut rx) = watch(
            &manual,
            &[("hello".into(), dir.clone())],
            Some(&config),
            Duration::from_millis(200),
        )
        .unwrap();
        std::fs::remove_file(&config).unwrap();
        assert_eq!(
            *manual.targets.lock(),
            [
                WatchTarget {
                    path: dir.clone(),
                    recursive: true
                },
                WatchTarget {
                    path: dir.clone(),
                    recursive: false
                }
            ]
        );
        let sink = manual.sink.lock().clone().unwrap();
        for _ in 0..5 {
            sink(vec![dir.join("plugin.wasm")]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sink(vec![dir.join("README.md")]);
        assert!(rx.try_recv().is_err(), "not yet quiet");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(rx.recv().await, Some(Change::Plugin("hello".into())));
        sink(vec![config.clone()]);
        assert_eq!(rx.recv().await, Some(Change::Config));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_err(), "one change per burst");
    }
}

/// The conformance suite every [`FileWatcher`] runs against itself (`cargo test` of its crate),
/// through [`watch`], on real files.
#[cfg(feature = "testing")]
pub mod conformance {
    use super::*;

    /// Run every check against `watcher`, in fresh folders under `scratch` (which must exist).
    pub async fn file_watcher(watcher: Arc<dyn FileWatcher>, scratch: &Path) {
        a_burst_of_writes_is_one_change_and_a_rename_counts(&*watcher, &fresh(scratch, "burst"))
            .await;
        the_config_file_is_watched_through_its_folder(&*watcher, &fresh(scratch, "config")).await;
    }

    /// An empty folder `name` under `scratch`.
    fn fresh(scratch: &Path, name: &str) -> PathBuf {
        let dir = scratch.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Change>) -> Option<Change> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    }

    async fn quiet(rx: &mut mpsc::UnboundedReceiver<Change>, d: Duration) -> bool {
        tokio::time::timeout(d, rx.recv()).await.is_err()
    }

    async fn a_burst_of_writes_is_one_change_and_a_rename_counts(
        watcher: &dyn FileWatcher,
        dir: &Path,
    ) {
        let plugin = dir.join("hello");
        std::fs::create_dir(&plugin).unwrap();
        std::fs::write(plugin.join("plugin.wasm"), b"v1").unwrap();
        let (_watch, mut rx) = watch(
            watcher,
            &[("hello".into(), plugin.clone())],
            None,
            Duration::from_millis(200),
        )
        .unwrap();

        for i in 0..5 {
            std::fs::write(plugin.join("plugin.wasm"), format!("v{i}")).unwrap();
        }
        assert_eq!(next(&mut rx).await, Some(Change::Plugin("hello".into())));
        assert!(quiet(&mut rx, Duration::from_millis(600)).await);

        // Save through a rename, as editors and build scripts do.
        std::fs::write(plugin.join("plugin.wasm.tmp.1"), b"v9").unwrap();
        std::fs::rename(plugin.join("plugin.wasm.tmp.1"), plugin.join("plugin.wasm")).unwrap();
        assert_eq!(next(&mut rx).await, Some(Change::Plugin("hello".into())));

        // A file that is not part of the plugin is ignored.
        std::fs::write(plugin.join("README.md"), b"notes").unwrap();
        assert!(quiet(&mut rx, Duration::from_millis(600)).await);
    }

    async fn the_config_file_is_watched_through_its_folder(watcher: &dyn FileWatcher, dir: &Path) {
        let config = dir.join("plugd.yaml");
        std::fs::write(&config, "plugins: {}\n").unwrap();
        let (_watch, mut rx) =
            watch(watcher, &[], Some(&config), Duration::from_millis(100)).unwrap();
        std::fs::write(dir.join("other.yaml"), "x").unwrap();
        assert!(quiet(&mut rx, Duration::from_millis(400)).await);
        let tmp = dir.join(".plugd.yaml.swp");
        std::fs::write(&tmp, "plugins: { enabled: false }\n").unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        assert_eq!(next(&mut rx).await, Some(Change::Config));
    }
}
