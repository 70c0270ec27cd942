//! What an installed plugin folder records of its package, and the check the host runs on it at
//! load: the blocklist, the digests of the installed files, and the signature (against the
//! trusted keys; required with `plugins.require_signatures`).

use std::collections::BTreeMap;
use std::path::Path;

use plugd_manifest::{Blocked, Manifest, PluginsConfig};
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
        let sums = Sums::parse(&self.sha256sums)?;
        if sums.digest() != self.digest {
            return Err(Error::Integrity(format!(
                "{}: the recorded {SUMS_FILE} does not match the recorded package digest",
                dir.join(RECORD_FILE).display()
            )));
        }
        let mut found = BTreeMap::new();
        walk(dir, "", &mut found)?;
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
        Ok(())
    }
}

/// Hash every file under `dir` (relative `/` paths), skipping the record; refuse links.
fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) -> Result<(), Error> {
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
            walk(&path, &rel, out)?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            out.insert(rel, sha256_hex(&bytes));
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
/// Every error names the plugin and its folder.
pub fn check_installed(
    dir: &Path,
    manifest: &Manifest,
    plugins: &PluginsConfig,
) -> Result<LoadCheck, Error> {
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
        return Ok(LoadCheck::NotPackaged);
    };
    if record.name != manifest.name || record.version != manifest.version.to_string() {
        return Err(Error::Integrity(format!(
            "{what}: {} records package {} {}, not the manifest's plugin; reinstall the plugin",
            dir.join(RECORD_FILE).display(),
            record.name,
            record.version
        )));
    }
    record
        .verify_files(dir)
        .map_err(|e| prefix_error(&what, e))?;
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
    Ok(LoadCheck::Verified(state))
}

fn prefix_error(what: &str, e: Error) -> Error {
    match e {
        Error::Integrity(m) => Error::Integrity(format!("{what}: {m}")),
        Error::Signature(m) => Error::Signature(format!("{what}: {m}")),
        other => other,
    }
}
