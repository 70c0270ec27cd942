//! The quota of a plugin's `/data` directory (`filesystem`): bytes and files (`limits.disk_bytes`,
//! `limits.disk_files`). WASI writes go straight to the host's filesystem, so the host counts
//! the directory after calls (off the request path, at most every [`CHECK_EVERY`]); a plugin
//! over either limit gets its `/data` read-only in every instance from its next call on, and
//! writable again once it is back under both (files removed by the operator). What one call can
//! write before the count catches up is bounded by its deadline; what it can hold open, by
//! `limits.open_files`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plugd_core::{Auditor, HostError};

/// How often the directory is counted, at most.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(200);

/// The limits of one plugin's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Bytes under `/data`.
    pub disk_bytes: u64,
    /// Files and directories under `/data`.
    pub disk_files: u64,
    /// Files, directories and streams one instance may hold open at once.
    pub open_files: u32,
}

impl Default for FileLimits {
    fn default() -> Self {
        let l = plugd_manifest::Limits::default();
        FileLimits {
            disk_bytes: l.disk_bytes,
            disk_files: l.disk_files,
            open_files: l.open_files,
        }
    }
}

/// What `/data` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    pub(crate) bytes: u64,
    pub(crate) files: u64,
}

/// Count `dir` (without following links), stopping once more than `max_files` entries are seen.
pub(crate) fn usage(dir: &Path, max_files: u64) -> DiskUsage {
    let mut total = DiskUsage::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            total.files += 1;
            if total.files > max_files {
                return total;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total.bytes += meta.len();
            }
        }
    }
    total
}

/// Bytes of files under `dir` that were deleted while this process still holds them open: a
/// guest can keep writing to such a file, and no walk of the directory sees it. Read from
/// `/proc/self/fd` (0 where there is none).
pub(crate) fn deleted_but_open(dir: &Path) -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut total = 0;
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(path) = target.strip_suffix(" (deleted)")
            && Path::new(path).starts_with(dir)
            && let Ok(meta) = std::fs::metadata(fd.path())
        {
            total += meta.len();
        }
    }
    total
}

/// One plugin's `/data` under its quota.
#[derive(Debug)]
pub(crate) struct DiskQuota {
    dir: PathBuf,
    limits: FileLimits,
    over: AtomicBool,
    counting: AtomicBool,
    counted: Mutex<Option<Instant>>,
    auditor: Auditor,
}

impl DiskQuota {
    pub(crate) fn new(dir: &Path, limits: FileLimits, auditor: Auditor) -> Arc<Self> {
        let quota = Arc::new(DiskQuota {
            // As `/proc/self/fd` names it.
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            limits,
            over: AtomicBool::new(false),
            counting: AtomicBool::new(false),
            counted: Mutex::new(None),
            auditor,
        });
        // Over the quota already (files left from before, a lowered limit): read-only from the
        // first instance.
        quota.count();
        quota
    }

    /// Whether `/data` is read-only now.
    pub(crate) fn read_only(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// After a call: count the directory on a blocking thread, unless it was counted lately or
    /// is being counted.
    pub(crate) fn after_call(self: &Arc<Self>) {
        {
            let counted = self.counted.lock();
            if counted.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
                return;
            }
        }
        if self.counting.swap(true, Ordering::AcqRel) {
            return;
        }
        let quota = self.clone();
        tokio::task::spawn_blocking(move || {
            quota.count();
            quota.counting.store(false, Ordering::Release);
        });
    }

    fn count(&self) {
        let mut used = usage(&self.dir, self.limits.disk_files);
        used.bytes += deleted_but_open(&self.dir);
        *self.counted.lock() = Some(Instant::now());
        let over = used.bytes > self.limits.disk_bytes || used.files > self.limits.disk_files;
        let was = self.over.swap(over, Ordering::AcqRel);
        if over && !was {
            let message = format!(
                "plugin '{}' holds {} files of {} bytes under /data, over its limits of {} files and {} bytes (limits.disk_files, limits.disk_bytes): /data is read-only until it is back under both",
                self.auditor.plugin(),
                used.files,
                used.bytes,
                self.limits.disk_files,
                self.limits.disk_bytes
            );
            let _ = self.auditor.check::<()>(
                Err(HostError::OverLimit {
                    limit: "limits.disk_bytes",
                    message,
                }),
                "filesystem",
                "filesystem",
            );
        } else if was && !over {
            tracing::info!(plugin = %self.auditor.plugin(), "/data is back under its quota: writable again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_bytes_and_entries_and_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 50]).unwrap();
        assert_eq!(
            usage(dir.path(), 100),
            DiskUsage {
                bytes: 150,
                files: 3
            }
        );
        assert!(usage(dir.path(), 1).files == 2, "stops past the cap");
    }

    #[tokio::test]
    async fn over_the_quota_is_read_only_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(plugd_core::AuditLog::default());
        let auditor = Auditor::new("p", None, Some(log.clone()));
        let limits = FileLimits {
            disk_bytes: 100,
            disk_files: 10,
            open_files: 8,
        };
        let quota = DiskQuota::new(dir.path(), limits, auditor);
        assert!(!quota.read_only());
        std::fs::write(dir.path().join("big"), [0u8; 101]).unwrap();
        quota.count();
        assert!(quota.read_only());
        assert_eq!(log.entries(Some("p"))[0].capability, "limits.disk_bytes");
        std::fs::remove_file(dir.path().join("big")).unwrap();
        quota.count();
        assert!(!quota.read_only());
        // A file deleted while held open still counts.
        let mut held = std::fs::File::create(dir.path().join("hidden")).unwrap();
        std::fs::remove_file(dir.path().join("hidden")).unwrap();
        std::io::Write::write_all(&mut held, &[0u8; 200]).unwrap();
        quota.count();
        assert!(quota.read_only(), "a deleted file still open is counted");
        drop(held);
        quota.count();
        assert!(!quota.read_only());
    }
}
