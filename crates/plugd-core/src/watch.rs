//! Watching plugin folders and the host config for changes, debounced.
//!
//! Folders are watched, not files: an editor or a build script that saves through a rename (write
//! `plugin.wasm.tmp`, rename it over `plugin.wasm`) replaces the file's inode, and a watch on the
//! old inode would miss every later change. Only files that make a plugin (its manifest, its
//! `.wasm` component, its `migrations/*.sql`) or the config file itself count; a change is reported
//! once nothing has moved for the debounce delay (`ReloadDelay`, docs/design.md#hot-reload).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher as _};
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

/// A running watch; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Start watching `plugins` (name and folder) and the `config` file. Debounced changes arrive on
/// the returned channel.
pub fn watch(
    plugins: &[(String, PathBuf)],
    config: Option<&Path>,
    delay: Duration,
) -> Result<(Watch, mpsc::UnboundedReceiver<Change>), String> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if let Ok(event) = event {
            let _ = raw_tx.send(event);
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;

    // Canonical folders, so that event paths (which the OS reports canonical) compare equal.
    let mut folders: Vec<(PathBuf, String)> = Vec::new();
    for (name, dir) in plugins {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        folders.push((dir, name.clone()));
    }
    let config = match config {
        Some(file) => {
            let file = file
                .canonicalize()
                .map_err(|e| format!("cannot watch {}: {e}", file.display()))?;
            let parent = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            watcher
                .watch(&parent, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", parent.display()))?;
            Some(file)
        }
        None => None,
    };

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
            let Some(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                continue;
            }
            for path in &event.paths {
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
            _watcher: watcher,
            task,
        },
        rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(rx: &mut mpsc::UnboundedReceiver<Change>) -> Option<Change> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    }

    async fn quiet(rx: &mut mpsc::UnboundedReceiver<Change>, d: Duration) -> bool {
        tokio::time::timeout(d, rx.recv()).await.is_err()
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

    #[tokio::test]
    async fn a_burst_of_writes_is_one_change_and_a_rename_counts() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("hello");
        std::fs::create_dir(&plugin).unwrap();
        std::fs::write(plugin.join("plugin.wasm"), b"v1").unwrap();
        let (_watch, mut rx) = watch(
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

    #[tokio::test]
    async fn the_config_file_is_watched_through_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("plugd.yaml");
        std::fs::write(&config, "plugins: {}\n").unwrap();
        let (_watch, mut rx) = watch(&[], Some(&config), Duration::from_millis(100)).unwrap();
        std::fs::write(dir.path().join("other.yaml"), "x").unwrap();
        assert!(quiet(&mut rx, Duration::from_millis(400)).await);
        let tmp = dir.path().join(".plugd.yaml.swp");
        std::fs::write(&tmp, "plugins: { enabled: false }\n").unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        assert_eq!(next(&mut rx).await, Some(Change::Config));
    }
}
