//! The package format: `<name>-<version>.plugd`, a tar compressed with zstd.
//!
//! ```text
//! SHA256SUMS          the digest list of every other file (sha256sum format, sorted)
//! SIGNATURE           optional: the ed25519 signature of the package digest (JSON)
//! plugin.yaml         the manifest (or plugin.yml / plugin.json / plugin.toml)
//! plugin.wasm         the component (the manifest's `component`)
//! assets/…            optional: static files
//! migrations/…        optional: SQL migrations
//! ```
//!
//! Packing is deterministic: entries in this order (files sorted by path), regular files only,
//! mode 0644, uid/gid 0, no user or group names, mtime 0, zstd level 12 with an 8 MiB window —
//! the same folder gives the same bytes. The package digest is the SHA-256 of `SHA256SUMS`;
//! signing adds `SIGNATURE` and leaves the digest unchanged.
//!
//! Reading is hostile-input safe: the whole archive is decoded and checked in memory, under
//! [`UnpackLimits`], before anything is written. Every entry must be a regular file with a plain
//! relative path, listed once in `SHA256SUMS` with the right digest; links of any kind are
//! refused (a plugin needs none, and refusing them all leaves no case to get wrong).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use plugd_manifest::{Format, Manifest};

use crate::keys::{SIGNATURE_FILE, Signature, SigningKey};
use crate::sums::{SUMS_FILE, Sums};
use crate::{Error, Rejection};

/// The file extension of packages.
pub const EXTENSION: &str = "plugd";

/// The zstd frame magic number.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const ZSTD_LEVEL: i32 = 12;
const ZSTD_WINDOW_LOG: u32 = 23;
/// The largest window the reader accepts (16 MiB of decoder memory).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// The folders a package may carry besides the manifest and the component.
const FOLDERS: [&str; 2] = ["assets", "migrations"];

/// Limits applied while reading a package, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Largest package file (default 256 MiB).
    pub max_package_size: u64,
    /// Largest file inside (default 128 MiB).
    pub max_file_size: u64,
    /// Most bytes the archive may decompress to (default 256 MiB).
    pub max_total_size: u64,
    /// Most entries (default 10,000).
    pub max_entries: usize,
    /// Largest ratio of decompressed to compressed bytes (default 100)…
    pub max_ratio: u64,
    /// …enforced once the archive has decompressed past this many bytes (default 8 MiB).
    pub ratio_floor: u64,
    /// Longest path (default 512 bytes) and deepest path (default 16 components).
    pub max_path_len: usize,
    /// See [`UnpackLimits::max_path_len`].
    pub max_path_depth: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_package_size: 256 << 20,
            max_file_size: 128 << 20,
            max_total_size: 256 << 20,
            max_entries: 10_000,
            max_ratio: 100,
            ratio_floor: 8 << 20,
            max_path_len: 512,
            max_path_depth: 16,
        }
    }
}

/// A plugin package, in memory and checked: its files, digest list, optional signature and
/// manifest.
///
/// ```no_run
/// use plugd_pkg::{Package, SigningKey, UnpackLimits};
/// let mut package = Package::from_dir("examples/plugins/hello".as_ref()).unwrap();
/// package.sign(&SigningKey::generate().unwrap());
/// let bytes = package.to_bytes().unwrap();
/// let again = Package::read(&bytes, &UnpackLimits::default()).unwrap();
/// assert_eq!(again.digest(), package.digest());
/// ```
#[derive(Debug, Clone)]
pub struct Package {
    files: BTreeMap<String, Vec<u8>>,
    sums: Sums,
    signature: Option<Signature>,
    manifest: Manifest,
}

impl Package {
    /// Gather a plugin folder: its manifest, its component, and `assets/` and `migrations/` when
    /// present. Links and special files in those are refused.
    pub fn from_dir(dir: &Path) -> Result<Package, Error> {
        let manifest_path = Manifest::find(dir).map_err(|e| Error::Manifest(e.to_string()))?;
        let manifest =
            Manifest::from_path(&manifest_path).map_err(|e| Error::Manifest(e.to_string()))?;
        let mut files = BTreeMap::new();
        let manifest_name = file_name(&manifest_path);
        files.insert(manifest_name, read(&manifest_path)?);
        let component = dir.join(&manifest.component);
        if !component.is_file() {
            return Err(Error::Manifest(format!(
                "the component {} does not exist: build the plugin first",
                component.display()
            )));
        }
        files.insert(component_key(&manifest), read(&component)?);
        for folder in FOLDERS {
            let path = dir.join(folder);
            match std::fs::symlink_metadata(&path) {
                Err(_) => continue,
                Ok(meta) if meta.is_dir() => collect(&path, folder, &mut files)?,
                Ok(_) => {
                    return Err(Error::Manifest(format!(
                        "{} is not a folder",
                        path.display()
                    )));
                }
            }
        }
        let limits = UnpackLimits::default();
        for path in files.keys() {
            check_path(path.as_bytes(), &limits)?;
        }
        let mut sums = Sums::default();
        for (path, content) in &files {
            sums.insert(path, content);
        }
        Ok(Package {
            files,
            sums,
            signature: None,
            manifest,
        })
    }

    /// Decode and check a package (see the module documentation). Signatures are parsed, not
    /// verified: that is [`crate::Trust::check`]'s job, with [`Package::digest`].
    pub fn read(bytes: &[u8], limits: &UnpackLimits) -> Result<Package, Error> {
        let size = bytes.len() as u64;
        if size > limits.max_package_size {
            return Err(Rejection::PackageTooLarge {
                size,
                limit: limits.max_package_size,
            }
            .into());
        }
        if bytes.len() < 4 || bytes[..4] != ZSTD_MAGIC {
            return Err(Rejection::NotAPackage("not zstd-compressed".into()).into());
        }
        let entries = read_entries(bytes, limits)?;
        let mut files = BTreeMap::new();
        let mut sums_text = None;
        let mut signature_text = None;
        for (path, content) in entries {
            match path.as_str() {
                SUMS_FILE => sums_text = Some(content),
                SIGNATURE_FILE => signature_text = Some(content),
                _ => {
                    files.insert(path, content);
                }
            }
        }
        let sums_text =
            sums_text.ok_or_else(|| Error::Integrity(format!("the package has no {SUMS_FILE}")))?;
        let sums_text = String::from_utf8(sums_text)
            .map_err(|_| Error::Integrity(format!("{SUMS_FILE} is not UTF-8")))?;
        let manifest = manifest_of(&files)?;
        for path in files.keys() {
            let allowed = Manifest::FILE_NAMES.contains(&path.as_str())
                || *path == component_key(&manifest)
                || FOLDERS.iter().any(|f| {
                    path.strip_prefix(f)
                        .is_some_and(|rest| rest.starts_with('/'))
                });
            if !allowed {
                return Err(Rejection::NotAllowed(path.clone()).into());
            }
        }
        let sums = Sums::parse(&sums_text)?;
        check_digests(&files, &sums)?;
        let signature = signature_text
            .map(|t| {
                String::from_utf8(t)
                    .map_err(|_| Error::Signature(format!("{SIGNATURE_FILE} is not UTF-8")))
                    .and_then(|t| Signature::parse(&t))
            })
            .transpose()?;
        if !files.contains_key(&component_key(&manifest)) {
            return Err(Error::Manifest(format!(
                "the component '{}' named by the manifest is not in the package",
                manifest.component
            )));
        }
        Ok(Package {
            files,
            sums,
            signature,
            manifest,
        })
    }

    /// Read and check a package file.
    pub fn read_file(path: &Path, limits: &UnpackLimits) -> Result<Package, Error> {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if size > limits.max_package_size {
            return Err(Rejection::PackageTooLarge {
                size,
                limit: limits.max_package_size,
            }
            .into());
        }
        Package::read(&read(path)?, limits)
    }

    /// The archive bytes (deterministic).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let io = |e: std::io::Error| Error::Io {
            path: self.file_name().into(),
            source: e,
        };
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(io)?;
        encoder
            .set_parameter(zstd::zstd_safe::CParameter::WindowLog(ZSTD_WINDOW_LOG))
            .map_err(io)?;
        encoder.include_checksum(true).map_err(io)?;
        let mut builder = tar::Builder::new(encoder);
        let mut append = |path: &str, content: &[u8]| -> std::io::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            builder.append_data(&mut header, path, content)
        };
        append(SUMS_FILE, self.sums.render().as_bytes()).map_err(io)?;
        if let Some(sig) = &self.signature {
            append(SIGNATURE_FILE, sig.to_text().as_bytes()).map_err(io)?;
        }
        for (path, content) in &self.files {
            append(path, content).map_err(io)?;
        }
        let encoder = builder.into_inner().map_err(io)?;
        let mut out = encoder.finish().map_err(io)?;
        out.flush().map_err(io)?;
        Ok(out)
    }

    /// `<name>-<version>.plugd`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}.{EXTENSION}",
            self.manifest.name, self.manifest.version
        )
    }

    /// The plugin manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The digest list.
    pub fn sums(&self) -> &Sums {
        &self.sums
    }

    /// The package digest: the SHA-256 of `SHA256SUMS`.
    pub fn digest(&self) -> String {
        self.sums.digest()
    }

    /// The signature, when signed.
    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// Sign (replacing any earlier signature).
    pub fn sign(&mut self, key: &SigningKey) {
        self.signature = Some(key.sign_digest(&self.digest()));
    }

    /// The files (without `SHA256SUMS` and `SIGNATURE`), in path order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, c)| (p.as_str(), c.as_slice()))
    }

    /// Write the files into `dir`, which must not exist yet (its parent must). Files get mode
    /// 0644, folders 0755 (narrowed by the umask, never widened: nobody but the owner may
    /// change an installed plugin); nothing of the archive's metadata is applied. A package
    /// holds code and static assets, not data, so others may read it (the host may run as
    /// another user than the one who installs).
    pub fn write_to(&self, dir: &Path) -> Result<(), Error> {
        new_dir_builder(false)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
        for (path, content) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                new_dir_builder(true)
                    .create(parent)
                    .map_err(|e| Error::io(parent, e))?;
            }
            let mut file = new_file(&target)?;
            file.write_all(content)
                .and_then(|_| file.sync_all())
                .map_err(|e| Error::io(&target, e))?;
        }
        Ok(())
    }
}

/// A builder of folders with mode 0755 (less under a stricter umask).
pub(crate) fn new_dir_builder(recursive: bool) -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(recursive);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o755);
    }
    builder
}

/// Create `path`, which must not exist, with mode 0644 (less under a stricter umask).
pub(crate) fn new_file(path: &Path) -> Result<std::fs::File, Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o644);
    }
    options.open(path).map_err(|e| Error::io(path, e))
}

/// The manifest's component as a package path (`./x.wasm` is `x.wasm`).
pub(crate) fn component_key(manifest: &Manifest) -> String {
    Path::new(&manifest.component)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Add every regular file under `dir` as `prefix/…`; refuse links and special files.
fn collect(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| {
            Error::Manifest(format!("{}: the file name is not UTF-8", path.display()))
        })?;
        let rel = format!("{prefix}/{name}");
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            collect(&path, &rel, files)?;
        } else if meta.is_file() {
            files.insert(rel, read(&path)?);
        } else {
            return Err(Error::Manifest(format!(
                "{} is a link or a special file: packages hold regular files only",
                path.display()
            )));
        }
    }
    Ok(())
}

/// A path as a package may hold it: UTF-8, relative, `/`-separated, no empty, `.` or `..`
/// components, no backslash or control characters, within the length and depth limits.
fn check_path(raw: &[u8], limits: &UnpackLimits) -> Result<String, Rejection> {
    let lossy = String::from_utf8_lossy(raw).into_owned();
    let bad = |reason: &str| Rejection::BadPath {
        path: lossy.clone(),
        reason: reason.into(),
    };
    let path = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.starts_with('/') || path.as_bytes().get(1) == Some(&b':') {
        return Err(Rejection::AbsolutePath(lossy));
    }
    if path.contains('\\') {
        return Err(bad("backslash in path"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("control character in path"));
    }
    let components: Vec<&str> = path.split('/').collect();
    for c in &components {
        match *c {
            ".." => return Err(Rejection::ParentDir(lossy)),
            "" => {
                return Err(bad(
                    "empty path component (a leading, doubled or trailing '/')",
                ));
            }
            "." => return Err(bad("'.' path component")),
            _ => {}
        }
    }
    if path.len() > limits.max_path_len {
        return Err(bad(&format!("longer than {} bytes", limits.max_path_len)));
    }
    if components.len() > limits.max_path_depth {
        return Err(bad(&format!(
            "deeper than {} folders",
            limits.max_path_depth
        )));
    }
    Ok(path.to_string())
}

/// Counts decompressed bytes and stops at the limit.
struct Counted<R> {
    inner: R,
    read: u64,
    limit: u64,
    tripped: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.tripped.set(true);
            return Err(std::io::Error::other("decompression limit reached"));
        }
        Ok(n)
    }
}

/// Decode the tar inside the zstd stream into (path, content), checking every entry.
fn read_entries(bytes: &[u8], limits: &UnpackLimits) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let compressed = bytes.len() as u64;
    let ratio_limit = compressed
        .saturating_mul(limits.max_ratio)
        .max(limits.ratio_floor);
    let limit = ratio_limit.min(limits.max_total_size);
    let overflow = || -> Rejection {
        if ratio_limit < limits.max_total_size {
            Rejection::Bomb {
                compressed,
                limit,
                ratio: limits.max_ratio,
            }
        } else {
            Rejection::TooLarge(limits.max_total_size)
        }
    };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(bytes)
        .map_err(|e| Rejection::Corrupt(format!("zstd: {e}")))?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| Rejection::Corrupt(format!("zstd: {e}")))?;
    let tripped = std::rc::Rc::new(std::cell::Cell::new(false));
    let counted = Counted {
        inner: decoder,
        read: 0,
        limit,
        tripped: tripped.clone(),
    };
    let mut archive = tar::Archive::new(counted);
    let corrupt = |e: std::io::Error| -> Error {
        if tripped.get() {
            overflow().into()
        } else {
            Rejection::Corrupt(e.to_string()).into()
        }
    };
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen_files: BTreeSet<String> = BTreeSet::new();
    let mut seen_folders: BTreeSet<String> = BTreeSet::new();
    let mut total: u64 = 0;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if out.len() >= limits.max_entries {
            return Err(Rejection::TooManyEntries(limits.max_entries).into());
        }
        let raw = entry.path_bytes().into_owned();
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                return Err(Rejection::Link {
                    path: lossy,
                    kind: if kind == tar::EntryType::Symlink {
                        "symlink"
                    } else {
                        "hard link"
                    },
                    target,
                }
                .into());
            }
            other => {
                return Err(Rejection::NotRegular {
                    path: lossy,
                    kind: entry_kind(other),
                }
                .into());
            }
        }
        let path = check_path(&raw, limits)?;
        let size = entry.size();
        if size > limits.max_file_size {
            return Err(Rejection::FileTooLarge {
                path,
                size,
                limit: limits.max_file_size,
            }
            .into());
        }
        total = total.saturating_add(size);
        if total > limits.max_total_size {
            return Err(Rejection::TooLarge(limits.max_total_size).into());
        }
        // The same file twice, or a file and a folder of one name.
        let folders: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        if seen_files.contains(&path)
            || seen_folders.contains(&path)
            || folders.iter().any(|f| seen_files.contains(*f))
        {
            return Err(Rejection::Duplicate(path).into());
        }
        seen_folders.extend(folders.iter().map(|f| f.to_string()));
        seen_files.insert(path.clone());
        let mut content = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
        (&mut entry)
            .take(size)
            .read_to_end(&mut content)
            .map_err(corrupt)?;
        if content.len() as u64 != size {
            return Err(Rejection::Corrupt(format!("entry '{path}' is truncated")).into());
        }
        out.push((path, content));
    }
    Ok(out)
}

fn entry_kind(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Directory => "directory".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        tar::EntryType::Continuous => "contiguous file".into(),
        tar::EntryType::GNUSparse => "sparse file".into(),
        tar::EntryType::XGlobalHeader => "global pax header".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

/// Every file listed once with the right digest, and every listed file present.
fn check_digests(files: &BTreeMap<String, Vec<u8>>, sums: &Sums) -> Result<(), Error> {
    for (path, content) in files {
        let listed = sums.get(path).ok_or_else(|| {
            Error::Integrity(format!("'{path}' is in the package but not in {SUMS_FILE}"))
        })?;
        if crate::sha256_hex(content) != listed {
            return Err(Error::Integrity(format!(
                "'{path}' does not match its digest in {SUMS_FILE} (the file was changed)"
            )));
        }
    }
    for (path, _) in sums.iter() {
        if !files.contains_key(path) {
            return Err(Error::Integrity(format!(
                "'{path}' is listed in {SUMS_FILE} but missing from the package"
            )));
        }
    }
    Ok(())
}

/// The one manifest at the top of the package, parsed and validated.
fn manifest_of(files: &BTreeMap<String, Vec<u8>>) -> Result<Manifest, Error> {
    let found: Vec<&str> = Manifest::FILE_NAMES
        .iter()
        .copied()
        .filter(|n| files.contains_key(*n))
        .collect();
    let name = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::Manifest(format!(
                "the package has no manifest (one of {})",
                Manifest::FILE_NAMES.join(", ")
            )));
        }
        many => {
            return Err(Error::Manifest(format!(
                "the package has several manifests: {}",
                many.join(", ")
            )));
        }
    };
    let text = std::str::from_utf8(&files[name])
        .map_err(|_| Error::Manifest(format!("{name} is not UTF-8")))?;
    let format = Format::from_path(Path::new(name))
        .ok_or_else(|| Error::Manifest(format!("{name}: unknown format")))?;
    Manifest::from_str(text, format, Some(Path::new(name)))
        .map_err(|e| Error::Manifest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PluginsDir, SignatureState, Trust};

    const MANIFEST: &str = "name: hello\nversion: 1.0.0\ndescription: Greets.\nauthor: a\n";

    /// A plugin folder with a manifest, a component, an asset and a migration.
    fn plugin_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("plugin.wasm"), b"\0asm component bytes").unwrap();
        std::fs::create_dir_all(dir.path().join("assets/css")).unwrap();
        std::fs::write(dir.path().join("assets/css/site.css"), b"body{}").unwrap();
        std::fs::create_dir(dir.path().join("migrations")).unwrap();
        std::fs::write(dir.path().join("migrations/001.sql"), b"create table t(x);").unwrap();
        // Not packed: sources and build output.
        std::fs::write(dir.path().join("Cargo.toml"), b"[package]").unwrap();
        dir
    }

    /// A raw tar entry: name bytes as written in the header, type, content, link target.
    struct Raw<'a> {
        name: &'a [u8],
        kind: tar::EntryType,
        content: &'a [u8],
        link: &'a [u8],
    }

    fn file<'a>(name: &'a str, content: &'a [u8]) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            kind: tar::EntryType::Regular,
            content,
            link: b"",
        }
    }

    /// A tar + zstd archive of raw entries, written without any of the tar crate's path checks.
    fn archive(entries: &[Raw<'_>]) -> Vec<u8> {
        let encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let mut builder = tar::Builder::new(encoder);
        for e in entries {
            let mut header = tar::Header::new_gnu();
            {
                let gnu = header.as_gnu_mut().unwrap();
                gnu.name[..e.name.len()].copy_from_slice(e.name);
                gnu.linkname[..e.link.len()].copy_from_slice(e.link);
            }
            header.set_entry_type(e.kind);
            header.set_size(e.content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, e.content).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    /// A valid package's entries plus `extra`, with SHA256SUMS over the valid files only.
    fn with_extra(extra: Vec<Raw<'_>>) -> Vec<u8> {
        let wasm: &[u8] = b"\0asm";
        let mut sums = Sums::default();
        sums.insert("plugin.yaml", MANIFEST.as_bytes());
        sums.insert("plugin.wasm", wasm);
        let text = sums.render();
        let mut entries = vec![
            file(SUMS_FILE, text.as_bytes()),
            file("plugin.yaml", MANIFEST.as_bytes()),
            file("plugin.wasm", wasm),
        ];
        entries.extend(extra);
        archive(&entries)
    }

    fn rejection(bytes: &[u8], limits: &UnpackLimits) -> Rejection {
        match Package::read(bytes, limits) {
            Err(Error::Unsafe(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// Read + install into an empty plugins folder, as `plugd install` does; on refusal, nothing
    /// may have been written.
    fn refused_before_writing(bytes: &[u8], limits: &UnpackLimits) -> Rejection {
        let plugins = tempfile::tempdir().unwrap();
        let outside = plugins.path().join("../outside-evil");
        let result = Package::read(bytes, limits).and_then(|p| {
            PluginsDir::new(plugins.path()).install(
                &p,
                &crate::InstallSource {
                    package_sha256: String::new(),
                    source: "test".into(),
                    signature_state: SignatureState::Unsigned,
                },
            )
        });
        let leftovers: Vec<_> = std::fs::read_dir(plugins.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "written: {leftovers:?}");
        assert!(!outside.exists());
        match result {
            Err(Error::Unsafe(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn pack_and_read_round_trip_with_only_what_plugd_loads() {
        let dir = plugin_dir();
        let package = Package::from_dir(dir.path()).unwrap();
        assert_eq!(package.file_name(), "hello-1.0.0.plugd");
        let bytes = package.to_bytes().unwrap();
        let read = Package::read(&bytes, &UnpackLimits::default()).unwrap();
        let paths: Vec<&str> = read.files().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "assets/css/site.css",
                "migrations/001.sql",
                "plugin.wasm",
                "plugin.yaml"
            ]
        );
        assert_eq!(read.digest(), package.digest());
        assert_eq!(read.manifest().name, "hello");
        assert!(read.signature().is_none());
        // sha256sum-compatible digest list.
        assert!(read.sums().render().contains(&format!(
            "{}  plugin.wasm\n",
            crate::sha256_hex(b"\0asm component bytes")
        )));
    }

    #[test]
    fn pack_is_deterministic() {
        let dir = plugin_dir();
        let a = Package::from_dir(dir.path()).unwrap().to_bytes().unwrap();
        let b = Package::from_dir(dir.path()).unwrap().to_bytes().unwrap();
        assert_eq!(a, b);
        // A copy made later, with other modes, gives the same bytes.
        let copy = tempfile::tempdir().unwrap();
        for (path, content) in Package::from_dir(dir.path()).unwrap().files() {
            let target = copy.path().join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, content).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(copy.path().join("plugin.yaml"), MANIFEST).unwrap();
        let c = Package::from_dir(copy.path()).unwrap().to_bytes().unwrap();
        assert_eq!(a, c);
        // Signing adds SIGNATURE and keeps the digest.
        let key = SigningKey::generate().unwrap();
        let mut signed = Package::read(&a, &UnpackLimits::default()).unwrap();
        let digest = signed.digest();
        signed.sign(&key);
        let signed_bytes = signed.to_bytes().unwrap();
        assert_ne!(signed_bytes, a);
        assert_eq!(signed_bytes, signed.to_bytes().unwrap());
        let again = Package::read(&signed_bytes, &UnpackLimits::default()).unwrap();
        assert_eq!(again.digest(), digest);
        assert!(again.signature().unwrap().verify(&digest).is_ok());
    }

    #[test]
    fn packing_refuses_links_and_a_missing_component() {
        let dir = plugin_dir();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join("assets/passwd")).unwrap();
            let err = Package::from_dir(dir.path()).unwrap_err().to_string();
            assert!(err.contains("is a link or a special file"), "{err}");
            std::fs::remove_file(dir.path().join("assets/passwd")).unwrap();
        }
        std::fs::remove_file(dir.path().join("plugin.wasm")).unwrap();
        let err = Package::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("build the plugin first"), "{err}");
    }

    #[test]
    fn absolute_paths_are_refused() {
        let bytes = with_extra(vec![file("/tmp/plugd-evil", b"x")]);
        assert_eq!(
            refused_before_writing(&bytes, &UnpackLimits::default()),
            Rejection::AbsolutePath("/tmp/plugd-evil".into())
        );
        let bytes = with_extra(vec![file("C:/evil", b"x")]);
        assert!(matches!(
            rejection(&bytes, &UnpackLimits::default()),
            Rejection::AbsolutePath(_)
        ));
    }

    #[test]
    fn parent_components_are_refused() {
        for name in ["../outside-evil", "assets/../../outside-evil", "assets/.."] {
            let bytes = with_extra(vec![file(name, b"x")]);
            assert_eq!(
                refused_before_writing(&bytes, &UnpackLimits::default()),
                Rejection::ParentDir(name.into()),
                "{name}"
            );
        }
    }

    #[test]
    fn a_gnu_long_name_cannot_smuggle_a_parent_component() {
        let long = format!("assets/{}../../outside-evil", "a/".repeat(60));
        let mut name = long.clone().into_bytes();
        name.push(0);
        let bytes = with_extra(vec![
            Raw {
                name: b"././@LongLink",
                kind: tar::EntryType::GNULongName,
                content: &name,
                link: b"",
            },
            file("placeholder", b"x"),
        ]);
        assert_eq!(
            refused_before_writing(&bytes, &UnpackLimits::default()),
            Rejection::ParentDir(long)
        );
    }

    #[test]
    fn symlinks_and_hard_links_are_refused() {
        let bytes = with_extra(vec![Raw {
            name: b"assets/passwd",
            kind: tar::EntryType::Symlink,
            content: b"",
            link: b"/etc/passwd",
        }]);
        assert_eq!(
            refused_before_writing(&bytes, &UnpackLimits::default()),
            Rejection::Link {
                path: "assets/passwd".into(),
                kind: "symlink",
                target: "/etc/passwd".into()
            }
        );
        // A link to a file inside the package is refused too.
        let bytes = with_extra(vec![Raw {
            name: b"assets/copy.wasm",
            kind: tar::EntryType::Link,
            content: b"",
            link: b"plugin.wasm",
        }]);
        assert!(matches!(
            refused_before_writing(&bytes, &UnpackLimits::default()),
            Rejection::Link {
                kind: "hard link",
                ..
            }
        ));
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let bytes = with_extra(vec![file("assets/a.css", b"1"), file("assets/a.css", b"2")]);
        assert_eq!(
            refused_before_writing(&bytes, &UnpackLimits::default()),
            Rejection::Duplicate("assets/a.css".into())
        );
        // The manifest twice (a second copy would override what was checked).
        let bytes = with_extra(vec![file("plugin.yaml", b"name: other\n")]);
        assert_eq!(
            rejection(&bytes, &UnpackLimits::default()),
            Rejection::Duplicate("plugin.yaml".into())
        );
        // A file and a folder of one name, in both orders.
        let bytes = with_extra(vec![file("assets/x", b"1"), file("assets/x/y", b"2")]);
        assert_eq!(
            rejection(&bytes, &UnpackLimits::default()),
            Rejection::Duplicate("assets/x/y".into())
        );
        let bytes = with_extra(vec![file("assets/x/y", b"1"), file("assets/x", b"2")]);
        assert_eq!(
            rejection(&bytes, &UnpackLimits::default()),
            Rejection::Duplicate("assets/x".into())
        );
    }

    #[test]
    fn non_regular_entries_are_refused() {
        for (kind, word) in [
            (tar::EntryType::Directory, "directory"),
            (tar::EntryType::Fifo, "FIFO"),
            (tar::EntryType::Char, "character device"),
            (tar::EntryType::Block, "block device"),
            (tar::EntryType::XGlobalHeader, "global pax header"),
        ] {
            let bytes = with_extra(vec![Raw {
                name: b"assets/thing",
                kind,
                content: b"",
                link: b"",
            }]);
            assert_eq!(
                refused_before_writing(&bytes, &UnpackLimits::default()),
                Rejection::NotRegular {
                    path: "assets/thing".into(),
                    kind: word.into()
                }
            );
        }
    }

    #[test]
    fn oversized_files_are_refused() {
        let limits = UnpackLimits {
            max_file_size: 1024,
            ..UnpackLimits::default()
        };
        let big = vec![7u8; 2048];
        let bytes = with_extra(vec![file("assets/big.bin", &big)]);
        assert_eq!(
            refused_before_writing(&bytes, &limits),
            Rejection::FileTooLarge {
                path: "assets/big.bin".into(),
                size: 2048,
                limit: 1024
            }
        );
    }

    #[test]
    fn too_many_entries_are_refused() {
        let limits = UnpackLimits {
            max_entries: 4,
            ..UnpackLimits::default()
        };
        let bytes = with_extra(vec![file("assets/1", b"1"), file("assets/2", b"2")]);
        assert_eq!(
            refused_before_writing(&bytes, &limits),
            Rejection::TooManyEntries(4)
        );
    }

    #[test]
    fn decompression_bombs_are_refused() {
        // 32 MiB of zeros compress to a few KiB: far past the 100:1 ratio once past 8 MiB.
        let zeros = vec![0u8; 32 << 20];
        let bytes = with_extra(vec![file("assets/zeros", &zeros)]);
        assert!(bytes.len() < 64 * 1024, "{}", bytes.len());
        let r = refused_before_writing(&bytes, &UnpackLimits::default());
        assert!(
            matches!(r, Rejection::Bomb { ratio: 100, limit, .. } if limit == 8 << 20),
            "{r:?}"
        );
        // The total cap holds when the ratio would allow more.
        let limits = UnpackLimits {
            max_total_size: 1 << 20,
            ratio_floor: 64 << 20,
            ..UnpackLimits::default()
        };
        assert_eq!(
            refused_before_writing(&bytes, &limits),
            Rejection::TooLarge(1 << 20)
        );
        // Declared sizes count too, before any content is read.
        let limits = UnpackLimits {
            max_total_size: 3000,
            ..UnpackLimits::default()
        };
        let two_k = vec![1u8; 2000];
        let bytes = with_extra(vec![file("assets/a", &two_k), file("assets/b", &two_k)]);
        assert_eq!(rejection(&bytes, &limits), Rejection::TooLarge(3000));
    }

    #[test]
    fn bad_paths_and_unexpected_files_are_refused() {
        for (name, reason) in [
            ("assets\\evil", "backslash"),
            ("assets//x", "empty path component"),
            ("assets/./x", "'.' path component"),
            ("assets/\u{1b}[31m", "control character"),
        ] {
            let bytes = with_extra(vec![file(name, b"x")]);
            match rejection(&bytes, &UnpackLimits::default()) {
                Rejection::BadPath { reason: r, .. } => assert!(r.contains(reason), "{name}: {r}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let bytes = with_extra(vec![Raw {
            name: b"assets/\xff",
            kind: tar::EntryType::Regular,
            content: b"x",
            link: b"",
        }]);
        assert!(matches!(
            rejection(&bytes, &UnpackLimits::default()),
            Rejection::BadPath { .. }
        ));
        let bytes = with_extra(vec![file("run.sh", b"#!/bin/sh")]);
        assert_eq!(
            refused_before_writing(&bytes, &UnpackLimits::default()),
            Rejection::NotAllowed("run.sh".into())
        );
    }

    #[test]
    fn corrupt_and_foreign_input_is_refused() {
        assert!(matches!(
            rejection(b"PK\x03\x04 a zip", &UnpackLimits::default()),
            Rejection::NotAPackage(_)
        ));
        let bytes = with_extra(vec![file("assets/a", &[5u8; 4096])]);
        let truncated = &bytes[..bytes.len() / 2];
        assert!(matches!(
            rejection(truncated, &UnpackLimits::default()),
            Rejection::Corrupt(_)
        ));
        let limits = UnpackLimits {
            max_package_size: 16,
            ..UnpackLimits::default()
        };
        assert!(matches!(
            rejection(&bytes, &limits),
            Rejection::PackageTooLarge { .. }
        ));
    }

    #[test]
    fn a_changed_file_is_refused() {
        let dir = plugin_dir();
        let package = Package::from_dir(dir.path()).unwrap();
        let sums = package.sums().render();
        let mut entries = vec![file(SUMS_FILE, sums.as_bytes())];
        for (path, content) in package.files() {
            if path == "plugin.wasm" {
                entries.push(file(path, b"\0asm tampered"));
            } else {
                entries.push(file(path, content));
            }
        }
        let err = Package::read(&archive(&entries), &UnpackLimits::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "package integrity: 'plugin.wasm' does not match its digest in SHA256SUMS (the file was changed)"
        );
        // A file the list does not name, and a listed file that is missing.
        entries.retain(|e| e.name != b"plugin.wasm".as_slice());
        let err = Package::read(&archive(&entries), &UnpackLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'plugin.wasm' is listed in SHA256SUMS but missing"),
            "{err}"
        );
        let err = Package::read(
            &with_extra(vec![file("assets/extra.css", b"x")]),
            &UnpackLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'assets/extra.css' is in the package but not in SHA256SUMS"),
            "{err}"
        );
        // No digest list at all.
        let err = Package::read(
            &archive(&[
                file("plugin.yaml", MANIFEST.as_bytes()),
                file("plugin.wasm", b"\0asm"),
            ]),
            &UnpackLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no SHA256SUMS"), "{err}");
    }

    #[test]
    fn a_changed_digest_list_breaks_the_signature() {
        let dir = plugin_dir();
        let key = SigningKey::generate().unwrap();
        let mut package = Package::from_dir(dir.path()).unwrap();
        package.sign(&key);
        let signature = package.signature().unwrap().to_text();
        // Swap the component and rewrite SHA256SUMS to match it; keep the signature.
        let mut files: BTreeMap<String, Vec<u8>> = package
            .files()
            .map(|(p, c)| (p.to_string(), c.to_vec()))
            .collect();
        files.insert("plugin.wasm".into(), b"\0asm evil".to_vec());
        let mut sums = Sums::default();
        for (p, c) in &files {
            sums.insert(p, c);
        }
        let sums_text = sums.render();
        let mut entries = vec![
            file(SUMS_FILE, sums_text.as_bytes()),
            file(SIGNATURE_FILE, signature.as_bytes()),
        ];
        entries.extend(files.iter().map(|(p, c)| file(p, c)));
        let tampered = Package::read(&archive(&entries), &UnpackLimits::default()).unwrap();
        let trust = Trust {
            require: true,
            keys: vec![key.public()],
        };
        let err = trust
            .check("hello 1.0.0", &tampered.digest(), tampered.signature())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not match the package digest")
                && err.contains("changed after signing"),
            "{err}"
        );
        // Even without trusted keys, a signature that does not verify is refused.
        assert!(
            Trust::default()
                .check("hello 1.0.0", &tampered.digest(), tampered.signature())
                .is_err()
        );
    }

    #[test]
    fn wrong_key_and_missing_signature_are_refused_when_required() {
        let dir = plugin_dir();
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let mut package = Package::from_dir(dir.path()).unwrap();
        let unsigned =
            Package::read(&package.to_bytes().unwrap(), &UnpackLimits::default()).unwrap();
        package.sign(&other);
        let signed = Package::read(&package.to_bytes().unwrap(), &UnpackLimits::default()).unwrap();
        let trust = Trust {
            require: true,
            keys: vec![key.public()],
        };
        let err = trust
            .check("hello 1.0.0", &signed.digest(), signed.signature())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "signature: hello 1.0.0 is signed by key {}, which is not trusted (trusted keys: {}): install a package signed by a trusted key, or add the signer's public key file to plugins.trusted_keys (or --trusted-key) if you trust it",
                other.public().key_id(),
                key.public().key_id()
            )
        );
        let err = trust
            .check("hello 1.0.0", &unsigned.digest(), unsigned.signature())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hello 1.0.0 is not signed, and signatures are required"),
            "{err}"
        );
    }
}
