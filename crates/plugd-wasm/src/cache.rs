//! The on-disk cache of compiled components, keyed by the engine's compatibility hash and the
//! SHA-256 of the component bytes.
//!
//! `Component::deserialize` trusts its input: the cache directory is created with mode 0700,
//! entries are written 0600, and before an entry is deserialized the directory and the file are
//! checked to be plugd's user's and writable by nobody else ([`Cache::check_private`]); when
//! they are not, the cache is not used (a warning names the path and the problem) and the
//! component is compiled from its bytes. Writes go through a temporary file and a rename, so a
//! crash never leaves a torn entry under a valid name.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::code::MappedCode;
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
    compat: String,
    /// Read cached code into memory instead of mapping the file: perf takes the names of code
    /// in anonymous memory from the perf map, but looks for those of file-backed code in the
    /// file (where a `.cwasm` has none). Set when a native profiler is on.
    read_into_memory: bool,
}

/// Why a component could not be loaded into an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheError {
    /// Not a valid component (or not one this engine can compile).
    Invalid(String),
    /// Valid, but larger than a slot of the engine's pooling allocator (too many core instances,
    /// memories or tables, a memory or table minimum above the slot, instance metadata too big).
    DoesNotFit(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Invalid(m) | CacheError::DoesNotFit(m) => f.write_str(m),
        }
    }
}

/// Whether wasmtime refused a component because it does not fit its pooling allocator's limits
/// (checked when the component is loaded into a pooled engine). Every such message of wasmtime
/// 48 names the pooling allocator.
fn does_not_fit(e: &wasmtime::Error) -> bool {
    format!("{e:#}").contains("pooling allocator")
}

/// A component ready for an engine.
pub(crate) struct Loaded {
    pub(crate) component: Component,
    pub(crate) source: Source,
    /// Its image, when it is the cache file mapped (not a copy in memory).
    pub(crate) code: Option<MappedCode>,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Cached,
    Compiled,
}

impl Cache {
    pub(crate) fn new(engine: &Engine, dir: PathBuf, read_into_memory: bool) -> Cache {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Cache {
            dir,
            compat: format!("{:016x}", hasher.finish()),
            read_into_memory,
        }
    }

    /// The compiled component in the cache file at `path`.
    ///
    /// # Safety
    /// `path` must hold the output of `Engine::precompile_component` of an engine compatible
    /// with `engine`, in a directory only this host writes.
    unsafe fn deserialize(&self, engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
        if self.read_into_memory {
            let bytes = std::fs::read(path)?;
            // SAFETY: as the caller promised for the file.
            unsafe { Component::deserialize(engine, &bytes) }
        } else {
            // SAFETY: as the caller promised for the file.
            unsafe { Component::deserialize_file(engine, path) }
        }
    }

    fn path_for(&self, bytes: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(bytes));
        self.dir.join(format!("{digest}-{}.cwasm", self.compat))
    }

    /// The compiled component for `bytes`, from the cache or compiled now (and cached).
    ///
    /// Compiling and instantiating are separate steps: the code is compiled (and cached) first,
    /// then loaded into `engine`, whose allocator may refuse it ([`CacheError::DoesNotFit`]). An
    /// engine with the same compilation settings (the on-demand engine beside a pooled one) then
    /// finds the compiled code in the cache.
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<Loaded, CacheError> {
        let path = self.path_for(bytes);
        if std::fs::symlink_metadata(&path).is_ok() {
            match self.check_private(&path) {
                Err(problem) => tracing::warn!(
                    path = %path.display(),
                    %problem,
                    "not using the compiled-component cache: compiling the component from its bytes instead"
                ),
                // SAFETY: the file was written by `store` below from
                // `Engine::precompile_component`: the directory and the file belong to this
                // user and nobody else may write them (checked just now), and the name binds
                // the file to these exact bytes and to this engine's compatibility hash.
                Ok(()) => match unsafe { self.deserialize(engine, &path) } {
                    Ok(component) => return Ok(self.loaded(component, Source::Cached)),
                    Err(e) if does_not_fit(&e) => {
                        return Err(CacheError::DoesNotFit(format!("{e:#}")));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled component")
                    }
                },
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| CacheError::Invalid(format!("invalid component: {e:#}")))?;
        let stored = match self.store(&path, &compiled) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
                false
            }
        };
        // Run the code from the file just written, as the next start will: a mapped image can be
        // released while the plugin is idle (`code.rs`), a copy in memory cannot.
        if stored && !self.read_into_memory {
            // SAFETY: as above; `store` wrote the file just now, private to this user.
            if let Ok(component) = unsafe { self.deserialize(engine, &path) } {
                return Ok(self.loaded(component, Source::Compiled));
            }
        }
        // SAFETY: `compiled` was produced just now by `precompile_component` of this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| {
            if does_not_fit(&e) {
                CacheError::DoesNotFit(format!("{e:#}"))
            } else {
                CacheError::Invalid(format!("invalid component: {e:#}"))
            }
        })?;
        Ok(Loaded {
            component,
            source: Source::Compiled,
            code: None,
        })
    }

    /// A component deserialized by `deserialize`: its image is the file mapped, unless the cache
    /// reads files into memory.
    fn loaded(&self, component: Component, source: Source) -> Loaded {
        let code = (!self.read_into_memory).then(|| {
            // SAFETY: `deserialize` mapped the file (`Component::deserialize_file`) when the
            // cache does not read into memory.
            unsafe { MappedCode::of(&component) }
        });
        Loaded {
            component,
            source,
            code,
        }
    }

    /// Whether compiled code in the cache file `path` may be trusted: the cache directory and
    /// the file are this user's, the file a regular file, and neither writable by group or
    /// others. (Only the owner can then swap the file between this check and its use.)
    pub(crate) fn check_private(&self, path: &Path) -> Result<(), String> {
        #[cfg(unix)]
        {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            private_to(&self.dir, uid, true)?;
            private_to(path, uid, false)?;
        }
        #[cfg(not(unix))]
        let _ = path;
        Ok(())
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        plugd_core::make_private_dir(&self.dir).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        // SAFETY: as in `check_private`.
        private_to(&self.dir, unsafe { libc::geteuid() }, true)?;
        remove_stale_temporaries(&self.dir);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(bytes)
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{}: {e}", tmp.display()));
        }
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.to_string()
        })
    }
}

/// Remove the temporaries (`<entry>.tmp<pid>`) that a plugd killed while writing an entry left
/// in the cache directory: their names carry the dead process's id, so nothing would ever
/// overwrite or remove them, and every crash during a compile would leave a whole compiled
/// component behind. A plugd writing the same directory at this moment loses only its rename
/// (it warns and keeps the code it compiled).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = name.to_str().is_some_and(|n| {
            n.rsplit_once(".tmp")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a compiled component left half-written by a crash")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a stale temporary of the compiled-component cache")
                }
            }
        }
    }
}

/// Why `path` (a directory when `dir`) may not hold code for user `uid`, if it may not: a link,
/// not a directory or regular file, another owner, or writable by group or others.
#[cfg(unix)]
fn private_to(path: &Path, uid: u32, dir: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kind = if dir { "directory" } else { "file" };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "the cache {kind} {} is a symbolic link",
            path.display()
        ));
    }
    let right_kind = if dir { meta.is_dir() } else { meta.is_file() };
    if !right_kind {
        return Err(format!(
            "{} is not a {}",
            path.display(),
            if dir { "directory" } else { "regular file" }
        ));
    }
    if meta.uid() != uid {
        return Err(format!(
            "the cache {kind} {} belongs to uid {}, not to plugd's uid {uid}; remove it",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "the cache {kind} {} is writable by {} (mode {mode:03o}); chmod {} it",
            path.display(),
            match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "its group and others",
                (true, false) => "its group",
                _ => "others",
            },
            if dir { "700" } else { "600" }
        ));
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A plugd killed between writing an entry's temporary and renaming it (the crash drills,
    /// RELIABILITY.md) leaves `<entry>.tmp<pid>`; the next write removes it, and nothing else.
    #[test]
    fn a_write_removes_the_temporaries_a_crash_left() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache/components");
        let engine = Engine::default();
        let cache = Cache::new(&engine, dir.clone(), false);
        let old = cache.path_for(b"an older component");
        cache.store(&old, b"compiled before").unwrap();
        let stale = [
            old.with_extension("tmp4242"),
            cache.path_for(b"component").with_extension("tmp7"),
        ];
        for file in &stale {
            std::fs::write(file, b"half a compiled comp").unwrap();
        }
        let keep = dir.join("notes.tmp");
        std::fs::write(&keep, b"not ours").unwrap();

        let path = cache.path_for(b"component");
        cache.store(&path, b"compiled").unwrap();
        for file in &stale {
            assert!(!file.exists(), "{} is left", file.display());
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"compiled");
        assert_eq!(std::fs::read(&old).unwrap(), b"compiled before");
        assert!(
            keep.exists(),
            "a file of another shape is not the cache's to remove"
        );
    }

    /// Security review L6: what the cache refuses to deserialize, and what it says.
    #[test]
    fn the_cache_is_trusted_only_when_private_to_this_user() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache/components");
        let engine = Engine::default();
        let cache = Cache::new(&engine, dir.clone(), false);
        let path = cache.path_for(b"component");
        cache.store(&path, b"compiled").unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(cache.check_private(&path), Ok(()));

        chmod(&dir, 0o777);
        let err = cache.check_private(&path).unwrap_err();
        assert!(
            err.contains(&dir.display().to_string())
                && err.contains("writable by its group and others (mode 777)")
                && err.contains("chmod 700"),
            "{err}"
        );
        chmod(&dir, 0o700);
        chmod(&path, 0o602);
        let err = cache.check_private(&path).unwrap_err();
        assert!(
            err.contains(&format!(
                "the cache file {} is writable by others",
                path.display()
            )),
            "{err}"
        );
        chmod(&path, 0o600);
        // A link in the cache's place.
        let real = root.path().join("real.cwasm");
        std::fs::rename(&path, &real).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let err = cache.check_private(&path).unwrap_err();
        assert!(err.contains("is a symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&real, &path).unwrap();
        // Another owner (only root can make one).
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::lchown(&path, Some(65534), None).unwrap();
            let err = cache.check_private(&path).unwrap_err();
            assert!(
                err.contains("belongs to uid 65534, not to plugd's uid 0"),
                "{err}"
            );
        }
    }
}
