//! The on-disk cache of compiled components, keyed by the engine's compatibility hash and the
//! SHA-256 of the component bytes.
//!
//! `Component::deserialize` trusts its input: the cache directory is created with mode 0700 and
//! is part of the trusted base. Writes go through a temporary file and a rename, so a crash never
//! leaves a torn entry under a valid name.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
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
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Component, Source), CacheError> {
        let path = self.path_for(bytes);
        if path.exists() {
            // SAFETY: the file was written by `store` below from `Engine::precompile_component`,
            // in a directory only this host writes (mode 0700); its name binds it to these exact
            // bytes and to this engine's compatibility hash.
            match unsafe { self.deserialize(engine, &path) } {
                Ok(c) => return Ok((c, Source::Cached)),
                Err(e) if does_not_fit(&e) => return Err(CacheError::DoesNotFit(format!("{e:#}"))),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled component")
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| CacheError::Invalid(format!("invalid component: {e:#}")))?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
        }
        // SAFETY: `compiled` was produced just now by `precompile_component` of this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| {
            if does_not_fit(&e) {
                CacheError::DoesNotFit(format!("{e:#}"))
            } else {
                CacheError::Invalid(format!("invalid component: {e:#}"))
            }
        })?;
        Ok((component, Source::Compiled))
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        create_private_dir(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.to_string()
        })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}
