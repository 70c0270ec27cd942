//! What an installed plugin folder records of its package, and the check the host runs on it at
//! load: the blocklist, the digests of the installed files, and the signature (against the
//! trusted keys; required with `plugins.require_signatures`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use plugd_manifest::{Blocked, Format, Manifest, PluginsConfig};
use serde::{Deserialize, Serialize};

use crate::keys::{Signature, SignatureState, Trust};
use crate::sums::{SUMS_FILE, Sums};
use crate::{Error, sha256_hex};

/// The record an installation leaves in the plugin folder.
pub const RECORD_FILE: &str = ".plugd-package.json";

/// `.plugd-package.json`: where an installed plugin came from and what its files must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    /// Record format (1).
    pub format: u32,
    /// The plugin name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The SHA-256 of the package file it was installed from.
    pub package_sha256: String,
    /// The package digest (the SHA-256 of `sha256sums`), which the signature covers.
    pub digest: String,
    /// The package's `SHA256SUMS`, verbatim.
    pub sha256sums: String,
    /// The package's signature, when it had one.
    pub signature: Option<Signature>,
    /// What the signature check concluded at install, for display.
    pub signature_state: String,
    /// The package file or catalog it came from.
    pub source: String,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
    /// The version installed before this one, kept in `.versions/` (the target of a rollback).
    pub previous: Option<String>,
}

impl InstallRecord {
    /// Read the record of a plugin folder; `None` when it has none.
    pub fn read(dir: &Path) -> Result<Option<InstallRecord>, Error> {
        let path = dir.join(RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Installed(format!("{}: not a valid record: {e}", path.display())))
    }

    /// Write the record into a plugin folder.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(RECORD_FILE);
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Installed(format!("cannot encode the record: {e}")))?;
        text.push('\n');
        let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
        // A stale temporary keeps its mode; start afresh with 0644.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&tmp, e)),
            _ => {}
        }
        let mut file = crate::package::new_file(&tmp)?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Check that `dir` holds exactly the files of the package, unchanged: every listed file
    /// present with its digest, nothing else (but this record), no links.
    pub fn verify_files(&self, dir: &Path) -> Result<(), Error> {
        self.verify_files_keeping(dir, &BTreeSet::new()).map(drop)
    }

    /// [`InstallRecord::verify_files`], returning the bytes of the files named in `keep` (paths
    /// of the package, such as `plugin.wasm`) exactly as they were hashed.
    fn verify_files_keeping(
        &self,
        dir: &Path,
        keep: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let sums = Sums::parse(&self.sha256sums)?;
        if sums.digest() != self.digest {
            return Err(Error::Integrity(format!(
                "{}: the recorded {SUMS_FILE} does not match the recorded package digest",
                dir.join(RECORD_FILE).display()
            )));
        }
        let mut found = BTreeMap::new();
        let mut kept = BTreeMap::new();
        walk(dir, "", keep, &mut found, &mut kept)?;
        for (path, digest) in sums.iter() {
            match found.remove(path) {
                None => {
                    return Err(Error::Integrity(format!(
                        "{} is missing (installed from package {} {})",
                        dir.join(path).display(),
                        self.name,
                        self.version
                    )));
                }
                Some(actual) if actual != digest => {
                    return Err(Error::Integrity(format!(
                        "{} was changed after install: its SHA-256 does not match package {} {}; reinstall the plugin",
                        dir.join(path).display(),
                        self.name,
                        self.version
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = found.keys().next() {
            return Err(Error::Integrity(format!(
                "{} is not part of package {} {} (a file was added after install); remove it or reinstall the plugin",
                dir.join(extra).display(),
                self.name,
                self.version
            )));
        }
        Ok(kept)
    }
}

/// Hash every file under `dir` (relative `/` paths), skipping the record, into `out`; keep the
/// bytes of the paths in `keep`; refuse links.
fn walk(
    dir: &Path,
    prefix: &str,
    keep: &BTreeSet<&str>,
    out: &mut BTreeMap<String, String>,
    kept: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if prefix.is_empty() && (name == RECORD_FILE || name == format!("{RECORD_FILE}.tmp")) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(&path, &rel, keep, out, kept)?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            out.insert(rel.clone(), sha256_hex(&bytes));
            if keep.contains(rel.as_str()) {
                kept.insert(rel, bytes);
            }
        } else {
            return Err(Error::Integrity(format!(
                "{} is a link or a special file: an installed plugin holds regular files only",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The message for a blocked plugin version.
///
/// ```
/// use plugd_manifest::Blocked;
/// let b = Blocked { name: "evil".into(), versions: Some("<1.2.0".parse().unwrap()), reason: Some("CVE-2024-0001".into()) };
/// assert_eq!(
///     plugd_pkg::blocked_message(&b, &"1.1.0".parse().unwrap()),
///     "plugin 'evil' 1.1.0 is blocked by plugins.blocked (versions <1.2.0): CVE-2024-0001"
/// );
/// ```
pub fn blocked_message(blocked: &Blocked, version: &semver::Version) -> String {
    let versions = blocked
        .versions
        .as_ref()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "all versions".into());
    let reason = blocked.reason.as_deref().unwrap_or("no reason given");
    format!(
        "plugin '{}' {version} is blocked by plugins.blocked (versions {versions}): {reason}",
        blocked.name
    )
}

/// Refuse a blocked plugin version with the blocklist's reason.
pub fn check_blocked(
    plugins: &PluginsConfig,
    name: &str,
    version: &semver::Version,
) -> Result<(), Error> {
    match plugins.blocked(name, version) {
        Some(b) => Err(Error::Blocked(blocked_message(b, version))),
        None => Ok(()),
    }
}

/// What the load-time check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadCheck {
    /// The folder was not installed from a package (no record), and signatures are not
    /// required.
    NotPackaged,
    /// Installed from a package; every file matches its digest.
    Verified(SignatureState),
}

/// What [`check_for_load`] verified, with the component's bytes as they were hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct LoadChecked {
    /// What the check found.
    pub check: LoadCheck,
    /// The component (the manifest's `component`) as the check read and hashed it, for a folder
    /// installed from a package; `None` for one that was not (nothing was verified). Compile
    /// these bytes, not the file: it may have changed since.
    pub component: Option<Vec<u8>>,
}

impl fmt::Debug for LoadChecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadChecked")
            .field("check", &self.check)
            .field("component", &self.component.as_ref().map(Vec::len))
            .finish()
    }
}

/// The check the host runs before loading a plugin from `dir` whose manifest is `manifest`:
///
/// 1. a version on `plugins.blocked` is refused with the reason;
/// 2. a folder installed from a package (it has a `.plugd-package.json`) must hold exactly the
///    package's files, unchanged;
/// 3. with `plugins.trusted_keys`, the recorded signature is verified against those keys (never
///    against the key the signature carries), and a signature by any other key is refused;
/// 4. with `plugins.require_signatures` (which trusted keys turn on unless it is written
///    `false`), the folder must have been installed from a package signed by a trusted key.
///
/// Every error names the plugin; signature errors name its folder, integrity errors the file.
/// The loader should use [`check_for_load`], which also hands back the component bytes it
/// verified.
pub fn check_installed(
    dir: &Path,
    manifest: &Manifest,
    plugins: &PluginsConfig,
) -> Result<LoadCheck, Error> {
    check_for_load(dir, manifest, plugins).map(|c| c.check)
}

/// [`check_installed`], keeping what it verified for the load, so that a file changed after
/// the check (security review L7) is never what runs: the component's bytes as they were
/// hashed are returned, the manifest file as hashed must parse to `manifest` (the one the
/// host read a moment before), and the component must be a file of the package.
pub fn check_for_load(
    dir: &Path,
    manifest: &Manifest,
    plugins: &PluginsConfig,
) -> Result<LoadChecked, Error> {
    let what = format!("plugin '{}' {}", manifest.name, manifest.version);
    // Signature errors name the folder; integrity errors name the file already.
    let at = format!("{what} at {}", dir.display());
    check_blocked(plugins, &manifest.name, &manifest.version)?;
    let record = InstallRecord::read(dir)?;
    let Some(record) = record else {
        if plugins.require_signatures {
            return Err(Error::Signature(format!(
                "{at} was not installed from a package (no {RECORD_FILE}), and signatures are required (plugins.require_signatures, on by default with plugins.trusted_keys): install a signed package with `plugd install`, or set plugins.require_signatures: false",
            )));
        }
        return Ok(LoadChecked {
            check: LoadCheck::NotPackaged,
            component: None,
        });
    };
    if record.name != manifest.name || record.version != manifest.version.to_string() {
        return Err(Error::Integrity(format!(
            "{what}: {} records package {} {}, not the manifest's plugin; reinstall the plugin",
            dir.join(RECORD_FILE).display(),
            record.name,
            record.version
        )));
    }
    let component = crate::package::component_key(manifest);
    // The manifest file, as a path of the package (when the manifest was read from this folder).
    let manifest_file = manifest
        .source
        .as_deref()
        .filter(|s| s.parent() == Some(dir))
        .and_then(|s| s.file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string);
    let keep: BTreeSet<&str> = std::iter::once(component.as_str())
        .chain(manifest_file.as_deref())
        .collect();
    let mut kept = record
        .verify_files_keeping(dir, &keep)
        .map_err(|e| prefix_error(&what, e))?;
    let Some(bytes) = kept.remove(&component) else {
        return Err(Error::Integrity(format!(
            "{what}: the manifest's component '{}' is not a file of package {} {}; reinstall the plugin",
            manifest.component, record.name, record.version
        )));
    };
    if let (Some(name), Some(source)) = (&manifest_file, &manifest.source)
        && let Some(verified) = kept.remove(name)
    {
        let same = std::str::from_utf8(&verified).ok().and_then(|text| {
            let format = Format::from_path(source)?;
            Manifest::from_str(text, format, Some(source)).ok()
        });
        if same.as_ref() != Some(manifest) {
            return Err(Error::Integrity(format!(
                "{what}: {} changed while the plugin was being loaded (the manifest read is not the one verified); load it again",
                source.display()
            )));
        }
    }
    let trust = Trust::from_files(
        plugins.require_signatures,
        plugins.trusted_keys.iter().map(|p| p.as_path()),
    )
    .map_err(|e| {
        Error::Signature(format!(
            "{at}: cannot read plugins.trusted_keys: {e}; fix the key file or the list"
        ))
    })?;
    let state = trust.check(&at, &record.digest, record.signature.as_ref())?;
    Ok(LoadChecked {
        check: LoadCheck::Verified(state),
        component: Some(bytes),
    })
}

fn prefix_error(what: &str, e: Error) -> Error {
    match e {
        Error::Integrity(m) => Error::Integrity(format!("{what}: {m}")),
        Error::Signature(m) => Error::Signature(format!("{what}: {m}")),
        other => other,
    }
}
