//! The plugins folder as installations change it:
//!
//! ```text
//! <plugins>/<name>/                     the installed version (what the host loads)
//! <plugins>/<name>/.plugd-package.json  its install record (digests, signature, previous)
//! <plugins>/.versions/<name>/<version>/ earlier versions, kept for rollback (the 3 newest)
//! <plugins>/.staging/                   packages being unpacked (then renamed into place)
//! <plugins>/.plugd.lock                 held while a command changes the folder
//! ```
//!
//! A package is checked in full before anything is written, unpacked into `.staging/` (same
//! file system), and renamed into place; the version it replaces is renamed into `.versions/`.
//! The folders starting with `.` hold no manifest at their top, so the host's autoload never
//! takes them for plugins.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use plugd_manifest::{Manifest, PluginsConfig};

use crate::Error;
use crate::catalog::dependencies_of;
use crate::installed::{InstallRecord, check_installed};
use crate::keys::SignatureState;
use crate::package::{Package, new_dir_builder};
use crate::resolve::InstalledPlugin;

/// Earlier versions of a plugin, under the plugins folder.
pub const VERSIONS_DIR: &str = ".versions";
/// Where packages are unpacked before they are renamed into place.
pub const STAGING_DIR: &str = ".staging";
/// The lock file of the plugins folder.
pub const LOCK_FILE: &str = ".plugd.lock";
/// How many earlier versions of a plugin are kept.
pub const KEEP_VERSIONS: usize = 3;

/// A plugin found in the plugins folder.
#[derive(Debug, Clone)]
pub struct InstalledEntry {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: semver::Version,
    /// Its folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its install record, when it was installed from a package.
    pub record: Option<InstallRecord>,
}

impl InstalledEntry {
    /// What the resolver needs of it.
    pub fn for_resolver(&self) -> InstalledPlugin {
        InstalledPlugin {
            name: self.name.clone(),
            version: self.version.clone(),
            dependencies: dependencies_of(&self.manifest),
        }
    }
}

/// Where a package came from, for its install record.
#[derive(Debug, Clone)]
pub struct InstallSource {
    /// The SHA-256 of the package file.
    pub package_sha256: String,
    /// The file path or catalog URL.
    pub source: String,
    /// What the signature check concluded.
    pub signature_state: SignatureState,
}

/// What an installation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The plugin folder.
    pub dir: PathBuf,
    /// The version it replaced (now in `.versions/`), if any.
    pub replaced: Option<semver::Version>,
}

/// A plugins folder.
///
/// ```
/// use plugd_pkg::{InstallSource, Package, PluginsDir, SignatureState, UnpackLimits, sha256_hex};
/// # let work = tempfile::tempdir().unwrap();
/// # let folder = work.path().join("hello");
/// # std::fs::create_dir(&folder).unwrap();
/// # std::fs::write(folder.join("plugin.yaml"), "name: hello\nversion: 1.0.0\ndescription: Greets.\nauthor: a\n").unwrap();
/// # std::fs::write(folder.join("plugin.wasm"), b"\0asm component bytes").unwrap();
/// # let file = work.path().join("hello-1.0.0.plugd");
/// # std::fs::write(&file, Package::from_dir(&folder).unwrap().to_bytes().unwrap()).unwrap();
/// // A package file, e.g. from `plugd pack`.
/// let bytes = std::fs::read(&file).unwrap();
/// let package = Package::read_file(&file, &UnpackLimits::default()).unwrap();
/// let source = InstallSource {
///     package_sha256: sha256_hex(&bytes),
///     source: file.display().to_string(),
///     signature_state: SignatureState::Unsigned,
/// };
/// let dir = PluginsDir::new(work.path().join("plugins"));
/// dir.install(&package, &source).unwrap();
/// assert_eq!(dir.get("hello").unwrap().unwrap().version.to_string(), "1.0.0");
/// ```
#[derive(Debug, Clone)]
pub struct PluginsDir {
    root: PathBuf,
}

impl PluginsDir {
    /// The folder (created on first install).
    pub fn new(root: impl Into<PathBuf>) -> PluginsDir {
        PluginsDir { root: root.into() }
    }

    /// Its path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every plugin folder (not starting with `.`) with a valid manifest, by name. Folders whose
    /// manifest does not parse are skipped with a warning.
    pub fn list(&self) -> Result<Vec<InstalledEntry>, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            if Manifest::FILE_NAMES.iter().all(|f| !path.join(f).exists()) {
                continue;
            }
            match read_entry(&path) {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a plugin folder")
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The installed plugin of that name (in `<plugins>/<name>`).
    pub fn get(&self, name: &str) -> Result<Option<InstalledEntry>, Error> {
        let dir = self.plugin_dir(name)?;
        if !dir.exists() {
            return Ok(None);
        }
        read_entry(&dir).map(Some)
    }

    fn plugin_dir(&self, name: &str) -> Result<PathBuf, Error> {
        if !plugd_manifest::is_valid_plugin_name(name) {
            return Err(Error::Installed(format!(
                "'{name}' is not a valid plugin name"
            )));
        }
        Ok(self.root.join(name))
    }

    fn versions_dir(&self, name: &str) -> PathBuf {
        self.root.join(VERSIONS_DIR).join(name)
    }

    /// The earlier versions kept for rollback, newest first.
    pub fn kept_versions(&self, name: &str) -> Result<Vec<semver::Version>, Error> {
        let dir = self.versions_dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut versions: Vec<semver::Version> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        Ok(versions)
    }

    /// Hold the folder's lock while changing it.
    fn lock(&self) -> Result<std::fs::File, Error> {
        new_dir_builder(true)
            .create(&self.root)
            .map_err(|e| Error::io(&self.root, e))?;
        let path = self.root.join(LOCK_FILE);
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            // Only the owner may take the lock.
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o644);
        }
        let file = options.open(&path).map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Installed(format!(
                "another plugd command is changing {} (lock {} is held); try again when it is done",
                self.root.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// A fresh folder name under `.staging/`.
    fn staging(&self, label: &str) -> Result<PathBuf, Error> {
        let dir = self.root.join(STAGING_DIR);
        new_dir_builder(true)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(dir.join(format!("{label}-{}-{nanos}", std::process::id())))
    }

    /// Install a checked package as `<plugins>/<name>`; the version it replaces moves to
    /// `.versions/<name>/<version>/`.
    pub fn install(&self, package: &Package, source: &InstallSource) -> Result<Installed, Error> {
        let m = package.manifest();
        let target = self.plugin_dir(&m.name)?;
        let _lock = self.lock()?;
        let current = if target.exists() {
            Some(read_entry(&target)?)
        } else {
            None
        };
        let staging = self.staging(&format!("{}-{}", m.name, m.version))?;
        let result = (|| {
            package.write_to(&staging)?;
            let previous = match &current {
                Some(c) if c.version == m.version => {
                    c.record.as_ref().and_then(|r| r.previous.clone())
                }
                Some(c) => Some(c.version.to_string()),
                None => None,
            };
            InstallRecord {
                format: 1,
                name: m.name.clone(),
                version: m.version.to_string(),
                package_sha256: source.package_sha256.clone(),
                digest: package.digest(),
                sha256sums: package.sums().render(),
                signature: package.signature().cloned(),
                signature_state: source.signature_state.to_string(),
                source: source.source.clone(),
                installed_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default(),
                previous,
            }
            .write(&staging)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let replaced = match &current {
            None => {
                if let Err(e) = rename(&staging, &target) {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(e);
                }
                None
            }
            Some(c) if c.version == m.version => {
                // A reinstall of the same version: the old copy is not kept.
                let trash = self.staging("replaced")?;
                rename(&target, &trash)?;
                if let Err(e) = rename(&staging, &target) {
                    let _ = rename(&trash, &target);
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(e);
                }
                let _ = std::fs::remove_dir_all(&trash);
                None
            }
            Some(c) => {
                let kept = self.keep(&target, &c.name, &c.version)?;
                if let Err(e) = rename(&staging, &target) {
                    let _ = rename(&kept, &target);
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(e);
                }
                Some(c.version.clone())
            }
        };
        self.prune(&m.name)?;
        Ok(Installed {
            dir: target,
            replaced,
        })
    }

    /// Move the installed folder `dir` to `.versions/<name>/<version>/`, replacing an earlier
    /// copy of that version.
    fn keep(&self, dir: &Path, name: &str, version: &semver::Version) -> Result<PathBuf, Error> {
        let versions = self.versions_dir(name);
        new_dir_builder(true)
            .create(&versions)
            .map_err(|e| Error::io(&versions, e))?;
        let dest = versions.join(version.to_string());
        if dest.exists() {
            let trash = self.staging("old")?;
            rename(&dest, &trash)?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        rename(dir, &dest)?;
        Ok(dest)
    }

    /// Keep the [`KEEP_VERSIONS`] newest earlier versions.
    fn prune(&self, name: &str) -> Result<(), Error> {
        for old in self.kept_versions(name)?.into_iter().skip(KEEP_VERSIONS) {
            let dir = self.versions_dir(name).join(old.to_string());
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// Go back to the version installed before the current one (its record's `previous`, else
    /// the newest kept version older than the current, else the newest kept). The version
    /// returned to is checked as the host would load it ([`check_installed`]: blocklist,
    /// digests, signatures); the current one is kept in `.versions/`, so a second
    /// rollback returns to it. Returns (from, to).
    pub fn rollback(
        &self,
        name: &str,
        plugins: &PluginsConfig,
    ) -> Result<(semver::Version, semver::Version), Error> {
        let target = self.plugin_dir(name)?;
        let _lock = self.lock()?;
        let current = if target.exists() {
            read_entry(&target)?
        } else {
            return Err(Error::Installed(format!(
                "'{name}' is not installed in {}",
                self.root.display()
            )));
        };
        let kept = self.kept_versions(name)?;
        let recorded = current
            .record
            .as_ref()
            .and_then(|r| r.previous.as_deref())
            .and_then(|v| v.parse::<semver::Version>().ok())
            .filter(|v| kept.contains(v));
        let to = recorded
            .or_else(|| kept.iter().find(|v| **v < current.version).cloned())
            .or_else(|| kept.first().cloned())
            .ok_or_else(|| {
                Error::Installed(format!(
                    "no earlier version of '{name}' is kept in {}: nothing to roll back to",
                    self.versions_dir(name).display()
                ))
            })?;
        let from_dir = self.versions_dir(name).join(to.to_string());
        let restored = read_entry(&from_dir)?;
        if restored.name != name || restored.version != to {
            return Err(Error::Installed(format!(
                "{} holds {} {}, not {name} {to}",
                from_dir.display(),
                restored.name,
                restored.version
            )));
        }
        check_installed(&from_dir, &restored.manifest, plugins)?;
        let kept_current = self.keep(&target, name, &current.version)?;
        if let Err(e) = rename(&from_dir, &target) {
            let _ = rename(&kept_current, &target);
            return Err(e);
        }
        if let Some(mut record) = restored.record {
            record.previous = Some(current.version.to_string());
            record.write(&target)?;
        }
        Ok((current.version, to))
    }

    /// Remove an installed plugin and its kept versions; refused while another installed plugin
    /// depends on it (optional dependencies do not count).
    pub fn uninstall(&self, name: &str) -> Result<semver::Version, Error> {
        let target = self.plugin_dir(name)?;
        let _lock = self.lock()?;
        let Some(current) = (if target.exists() {
            Some(read_entry(&target)?)
        } else {
            None
        }) else {
            return Err(Error::Installed(format!(
                "'{name}' is not installed in {}",
                self.root.display()
            )));
        };
        let dependents: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|p| p.name != name)
            .filter_map(|p| {
                p.manifest
                    .dependencies
                    .iter()
                    .find(|d| d.name == name && !d.optional)
                    .map(|d| format!("{} {} (needs {name} {})", p.name, p.version, d.version_text))
            })
            .collect();
        if !dependents.is_empty() {
            return Err(Error::Installed(format!(
                "cannot uninstall '{name}': installed plugins depend on it: {}; uninstall them first",
                dependents.join(", ")
            )));
        }
        let trash = self.staging("removed")?;
        rename(&target, &trash)?;
        std::fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        let versions = self.versions_dir(name);
        if versions.exists() {
            std::fs::remove_dir_all(&versions).map_err(|e| Error::io(&versions, e))?;
        }
        Ok(current.version)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::rename(from, to).map_err(|e| {
        Error::Installed(format!(
            "cannot move {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

fn read_entry(dir: &Path) -> Result<InstalledEntry, Error> {
    let manifest = Manifest::from_path(dir).map_err(|e| Error::Manifest(e.to_string()))?;
    let record = InstallRecord::read(dir)?;
    Ok(InstalledEntry {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        dir: dir.to_path_buf(),
        manifest,
        record,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Error, LoadCheck, SigningKey, UnpackLimits, check_installed};
    use plugd_manifest::Blocked;

    /// A package built from a plugin folder written on the fly.
    pub(crate) fn package(name: &str, version: &str, extra_manifest: &str) -> Package {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("plugin.yaml"),
            format!("name: {name}\nversion: {version}\ndescription: {name} plugin\nauthor: a\n{extra_manifest}"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("plugin.wasm"),
            format!("\0asm {name} {version}"),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/index.html"), "<p>hi</p>").unwrap();
        let p = Package::from_dir(dir.path()).unwrap();
        // Through the bytes, as an install does.
        Package::read(&p.to_bytes().unwrap(), &UnpackLimits::default()).unwrap()
    }

    pub(crate) fn source() -> InstallSource {
        InstallSource {
            package_sha256: "0".repeat(64),
            source: "test".into(),
            signature_state: SignatureState::Unsigned,
        }
    }

    fn versions(dir: &PluginsDir, name: &str) -> Vec<String> {
        dir.kept_versions(name)
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn install_keeps_the_replaced_version_and_rollback_toggles() {
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path());
        let first = dir
            .install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        assert_eq!(first.replaced, None);
        assert_eq!(first.dir, root.path().join("hello"));
        let second = dir
            .install(&package("hello", "1.1.0", ""), &source())
            .unwrap();
        assert_eq!(second.replaced, Some("1.0.0".parse().unwrap()));
        let current = dir.get("hello").unwrap().unwrap();
        assert_eq!(current.version.to_string(), "1.1.0");
        assert_eq!(current.record.unwrap().previous.as_deref(), Some("1.0.0"));
        assert_eq!(versions(&dir, "hello"), ["1.0.0"]);
        // Nothing left in staging.
        assert_eq!(
            std::fs::read_dir(root.path().join(STAGING_DIR))
                .unwrap()
                .count(),
            0
        );

        let plugins = PluginsConfig::default();
        let (from, to) = dir.rollback("hello", &plugins).unwrap();
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("1.1.0".into(), "1.0.0".into())
        );
        assert_eq!(
            dir.get("hello").unwrap().unwrap().version.to_string(),
            "1.0.0"
        );
        assert_eq!(versions(&dir, "hello"), ["1.1.0"]);
        // The restored folder still verifies.
        let restored = dir.get("hello").unwrap().unwrap();
        assert!(check_installed(&restored.dir, &restored.manifest, &plugins).is_ok());
        let (_, to) = dir.rollback("hello", &plugins).unwrap();
        assert_eq!(to.to_string(), "1.1.0");

        // A reinstall of the current version keeps no copy of it.
        dir.install(&package("hello", "1.1.0", ""), &source())
            .unwrap();
        assert_eq!(versions(&dir, "hello"), ["1.0.0"]);
    }

    #[test]
    fn rollback_needs_a_kept_version_that_still_verifies() {
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path());
        let plugins = PluginsConfig::default();
        let err = dir.rollback("hello", &plugins).unwrap_err().to_string();
        assert!(err.contains("'hello' is not installed"), "{err}");
        dir.install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        let err = dir.rollback("hello", &plugins).unwrap_err().to_string();
        assert!(err.contains("nothing to roll back to"), "{err}");
        dir.install(&package("hello", "2.0.0", ""), &source())
            .unwrap();
        let kept = root
            .path()
            .join(VERSIONS_DIR)
            .join("hello/1.0.0/plugin.wasm");
        std::fs::write(&kept, "\0asm tampered").unwrap();
        let err = dir.rollback("hello", &plugins).unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        assert_eq!(
            dir.get("hello").unwrap().unwrap().version.to_string(),
            "2.0.0"
        );
        // A blocked earlier version is not rolled back to either.
        std::fs::write(&kept, "\0asm hello 1.0.0").unwrap();
        let blocking = PluginsConfig {
            blocked: vec![Blocked {
                name: "hello".into(),
                versions: Some("<2".parse().unwrap()),
                reason: Some("leaks tokens".into()),
            }],
            ..PluginsConfig::default()
        };
        let err = dir.rollback("hello", &blocking).unwrap_err().to_string();
        assert!(err.contains("leaks tokens"), "{err}");
        assert!(dir.rollback("hello", &plugins).is_ok());
    }

    /// Security review L7: what the load check verified is what the loader gets — the
    /// component's bytes as hashed, and a manifest equal to the manifest file as hashed.
    #[test]
    fn the_load_check_hands_back_the_bytes_it_verified() {
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path());
        dir.install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        let plugins = PluginsConfig::default();
        let entry = dir.get("hello").unwrap().unwrap();
        let checked = crate::check_for_load(&entry.dir, &entry.manifest, &plugins).unwrap();
        assert_eq!(checked.check, LoadCheck::Verified(SignatureState::Unsigned));
        assert_eq!(
            checked.component.as_deref(),
            Some(&b"\0asm hello 1.0.0"[..])
        );
        // Debug shows the size, not megabytes of code.
        assert!(
            format!("{checked:?}").contains("component: Some(16)"),
            "{checked:?}"
        );

        // The manifest the host read (here: one asking for more) is not the file that was
        // verified, as when plugin.yaml is swapped between the read and the check.
        let yaml = entry.dir.join("plugin.yaml");
        let original = std::fs::read_to_string(&yaml).unwrap();
        let swapped = Manifest::from_str(
            &format!("{original}permissions: [database]\n"),
            plugd_manifest::Format::Yaml,
            Some(&yaml),
        )
        .unwrap();
        let err = crate::check_for_load(&entry.dir, &swapped, &plugins)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "plugin 'hello' 1.0.0: {} changed while the plugin was being loaded",
                yaml.display()
            )),
            "{err}"
        );
        // A manifest whose component is not a file of the package.
        let mut elsewhere = entry.manifest.clone();
        elsewhere.source = None;
        elsewhere.component = "other.wasm".into();
        let err = crate::check_for_load(&entry.dir, &elsewhere, &plugins)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "the manifest's component 'other.wasm' is not a file of package hello 1.0.0"
            ),
            "{err}"
        );

        // Not installed from a package: nothing verified, nothing handed back.
        let bare = root.path().join("bare");
        std::fs::create_dir(&bare).unwrap();
        std::fs::write(
            bare.join("plugin.yaml"),
            "name: bare\nversion: 1.0.0\ndescription: d\nauthor: a\n",
        )
        .unwrap();
        let manifest = Manifest::from_path(&bare).unwrap();
        let checked = crate::check_for_load(&bare, &manifest, &plugins).unwrap();
        assert_eq!(checked.check, LoadCheck::NotPackaged);
        assert!(checked.component.is_none());
    }

    /// Security review L6: an installed plugin is readable (code and static assets, not data)
    /// but writable by its owner only, whatever the umask allowed.
    #[cfg(unix)]
    #[test]
    fn installed_files_are_writable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path().join("plugins"));
        dir.install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        dir.install(&package("hello", "1.1.0", ""), &source())
            .unwrap();
        let plugins = root.path().join("plugins");
        let mut seen = 0;
        let mut stack = vec![plugins.clone()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o022, 0, "{} is {mode:o}", path.display());
            if meta.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            seen += 1;
        }
        // plugins/, .plugd.lock, .staging/, .versions/ with 1.0.0, hello/ with 1.1.0.
        assert!(seen > 12, "{seen}");
        // Readable by others as far as the umask lets it (Linux tells the umask without
        // changing it).
        #[cfg(target_os = "linux")]
        {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let umask = status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                .unwrap();
            let mode = |p: &str| {
                std::fs::metadata(plugins.join(p))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode("hello/plugin.wasm"), 0o644 & !umask);
            assert_eq!(mode("hello/assets"), 0o755 & !umask);
        }
    }

    #[test]
    fn only_the_newest_earlier_versions_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path());
        for minor in 0..5 {
            dir.install(&package("hello", &format!("1.{minor}.0"), ""), &source())
                .unwrap();
        }
        assert_eq!(versions(&dir, "hello"), ["1.3.0", "1.2.0", "1.1.0"]);
    }

    #[test]
    fn uninstall_refuses_while_a_plugin_depends_on_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path());
        dir.install(&package("auth", "1.0.0", ""), &source())
            .unwrap();
        dir.install(&package("auth", "1.1.0", ""), &source())
            .unwrap();
        dir.install(
            &package(
                "app",
                "1.0.0",
                "dependencies:\n  - name: auth\n    version: \"^1\"\n",
            ),
            &source(),
        )
        .unwrap();
        dir.install(
            &package(
                "extra",
                "1.0.0",
                "dependencies:\n  - name: auth\n    optional: true\n",
            ),
            &source(),
        )
        .unwrap();
        let err = dir.uninstall("auth").unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot uninstall 'auth': installed plugins depend on it: app 1.0.0 (needs auth ^1); uninstall them first"
        );
        assert_eq!(dir.uninstall("app").unwrap().to_string(), "1.0.0");
        assert_eq!(dir.uninstall("auth").unwrap().to_string(), "1.1.0");
        assert!(!root.path().join("auth").exists());
        assert!(!root.path().join(VERSIONS_DIR).join("auth").exists());
        let names: Vec<String> = dir.list().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["extra"]);
        assert!(dir.uninstall("auth").is_err());
    }

    #[test]
    fn the_load_check_verifies_installed_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = PluginsDir::new(root.path());
        dir.install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        let plugins = PluginsConfig::default();
        let installed = || dir.get("hello").unwrap().unwrap();
        let check = |plugins: &PluginsConfig| {
            let e = installed();
            check_installed(&e.dir, &e.manifest, plugins)
        };
        assert_eq!(
            check(&plugins).unwrap(),
            LoadCheck::Verified(SignatureState::Unsigned)
        );
        let wasm = root.path().join("hello/plugin.wasm");
        std::fs::write(&wasm, "\0asm changed").unwrap();
        let err = check(&plugins).unwrap_err().to_string();
        assert!(
            err.contains("plugin 'hello' 1.0.0")
                && err.contains("plugin.wasm was changed after install"),
            "{err}"
        );
        std::fs::write(&wasm, "\0asm hello 1.0.0").unwrap();
        std::fs::write(root.path().join("hello/assets/extra.js"), "alert(1)").unwrap();
        let err = check(&plugins).unwrap_err().to_string();
        assert!(
            err.contains("assets/extra.js is not part of package hello 1.0.0"),
            "{err}"
        );
        std::fs::remove_file(root.path().join("hello/assets/extra.js")).unwrap();
        std::fs::remove_file(root.path().join("hello/assets/index.html")).unwrap();
        let err = check(&plugins).unwrap_err().to_string();
        assert!(err.contains("assets/index.html is missing"), "{err}");
        std::fs::write(root.path().join("hello/assets/index.html"), "<p>hi</p>").unwrap();
        #[cfg(unix)]
        {
            let link = root.path().join("hello/assets/link");
            std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
            let err = check(&plugins).unwrap_err().to_string();
            assert!(err.contains("is a link or a special file"), "{err}");
            std::fs::remove_file(&link).unwrap();
        }
        assert!(check(&plugins).is_ok());
    }

    #[test]
    fn the_load_check_enforces_signatures_and_the_blocklist() {
        let root = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let key_file = keys.path().join("release.pub");
        std::fs::write(&key_file, key.public().to_text("release")).unwrap();
        let required = PluginsConfig {
            require_signatures: true,
            trusted_keys: vec![key_file.clone()],
            ..PluginsConfig::default()
        };
        let dir = PluginsDir::new(root.path());
        let check = |plugins: &PluginsConfig| {
            let e = dir.get("hello").unwrap().unwrap();
            check_installed(&e.dir, &e.manifest, plugins)
        };

        // Not installed from a package at all.
        let bare = root.path().join("hello");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::write(
            bare.join("plugin.yaml"),
            "name: hello\nversion: 1.0.0\ndescription: d\nauthor: a\n",
        )
        .unwrap();
        assert_eq!(
            check(&PluginsConfig::default()).unwrap(),
            LoadCheck::NotPackaged
        );
        let err = check(&required).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "plugin 'hello' 1.0.0 at {} was not installed from a package",
                bare.display()
            )) && err.contains("signatures are required"),
            "{err}"
        );
        std::fs::remove_dir_all(&bare).unwrap();

        // Unsigned.
        dir.install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        let err = check(&required).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "plugin 'hello' 1.0.0 at {} is not signed",
                root.path().join("hello").display()
            )),
            "{err}"
        );

        // Signed by another key.
        let mut p = package("hello", "1.0.0", "");
        p.sign(&other);
        dir.install(&p, &source()).unwrap();
        let err = check(&required).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "signed by key {}, which is not trusted",
                other.public().key_id()
            )),
            "{err}"
        );

        // Signed by the trusted key.
        p.sign(&key);
        dir.install(&p, &source()).unwrap();
        assert_eq!(
            check(&required).unwrap(),
            LoadCheck::Verified(SignatureState::Trusted {
                key_id: key.public().key_id()
            })
        );

        // A signature pasted into the record of other files does not verify.
        let record_path = root.path().join("hello").join(crate::RECORD_FILE);
        let mut record = InstallRecord::read(&root.path().join("hello"))
            .unwrap()
            .unwrap();
        record.digest = "0".repeat(64);
        std::fs::write(&record_path, serde_json::to_string(&record).unwrap()).unwrap();
        assert!(check(&required).is_err());
        p.sign(&key);
        dir.install(&p, &source()).unwrap();

        // Required but no trusted keys configured.
        let no_keys = PluginsConfig {
            require_signatures: true,
            ..PluginsConfig::default()
        };
        let err = check(&no_keys).unwrap_err().to_string();
        assert!(err.contains("no trusted key is configured"), "{err}");

        // Blocked, with the reason.
        let blocked = PluginsConfig {
            blocked: vec![Blocked {
                name: "hello".into(),
                versions: Some("<1.2.0".parse().unwrap()),
                reason: Some("CVE-2024-0001".into()),
            }],
            ..required
        };
        let err = check(&blocked).unwrap_err().to_string();
        assert_eq!(
            err,
            "plugin 'hello' 1.0.0 is blocked by plugins.blocked (versions <1.2.0): CVE-2024-0001"
        );
    }

    /// Security review M7: an operator lists `trusted_keys` (and nothing else); a catalog MITM
    /// strips the package's SIGNATURE, or re-signs it with a key of its own.
    #[test]
    fn trusted_keys_alone_refuse_stripped_and_foreign_signatures_at_load() {
        let root = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let release = SigningKey::generate().unwrap();
        let attacker = SigningKey::generate().unwrap();
        std::fs::write(
            keys.path().join("release.pub"),
            release.public().to_text("release"),
        )
        .unwrap();
        let config = |extra: &str| {
            plugd_manifest::HostConfig::from_str(
                &format!("plugins:\n  trusted_keys: [release.pub]\n{extra}"),
                plugd_manifest::Format::Yaml,
                Some(&keys.path().join("plugd.yaml")),
            )
            .unwrap()
            .plugins
        };
        let keys_only = config("");
        let opted_out = config("  require_signatures: false\n");
        let dir = PluginsDir::new(root.path());
        let check = |plugins: &PluginsConfig| {
            let e = dir.get("hello").unwrap().unwrap();
            check_installed(&e.dir, &e.manifest, plugins)
        };
        let at = root.path().join("hello");

        // Stripped: unsigned is refused, though require_signatures was never written.
        dir.install(&package("hello", "1.0.0", ""), &source())
            .unwrap();
        let err = check(&keys_only).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "plugin 'hello' 1.0.0 at {} is not signed, and signatures are required",
                at.display()
            )) && err.contains(&release.public().key_id()),
            "{err}"
        );
        // Written false: unsigned loads.
        assert_eq!(
            check(&opted_out).unwrap(),
            LoadCheck::Verified(SignatureState::Unsigned)
        );

        // Re-signed by the attacker: refused either way, naming the key.
        let mut p = package("hello", "1.0.0", "");
        p.sign(&attacker);
        dir.install(&p, &source()).unwrap();
        for plugins in [&keys_only, &opted_out] {
            let err = check(plugins).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "plugin 'hello' 1.0.0 at {} is signed by key {}, which is not trusted",
                    at.display(),
                    attacker.public().key_id()
                )),
                "{err}"
            );
        }

        // Signed by the trusted key: loads either way.
        p.sign(&release);
        dir.install(&p, &source()).unwrap();
        for plugins in [&keys_only, &opted_out] {
            assert_eq!(
                check(plugins).unwrap(),
                LoadCheck::Verified(SignatureState::Trusted {
                    key_id: release.public().key_id()
                })
            );
        }

        // A trusted key file that cannot be read is an error that names it, not "no keys".
        std::fs::remove_file(keys.path().join("release.pub")).unwrap();
        let err = check(&opted_out).unwrap_err().to_string();
        assert!(
            err.contains("cannot read plugins.trusted_keys") && err.contains("release.pub"),
            "{err}"
        );
    }
}
