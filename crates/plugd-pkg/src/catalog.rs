//! Catalogs: a folder (or the same folder served over HTTP(S) as static files) of packages with
//! an `index.json` listing them.
//!
//! ```json
//! {
//!   "format": 1,
//!   "plugins": [
//!     { "name": "hello", "description": "…",
//!       "versions": [
//!         { "version": "1.1.0", "file": "hello-1.1.0.plugd", "size": 61234,
//!           "sha256": "<SHA-256 of the package file>",
//!           "digest": "<package digest: SHA-256 of its SHA256SUMS>",
//!           "signature": { "algorithm": "ed25519", "key_id": "…", "public_key": "…", "signature": "…" },
//!           "framework": ">=0.1.0",
//!           "dependencies": [ { "name": "auth", "version": "^1", "optional": false } ],
//!           "description": "…", "author": "…" } ] } ]
//! }
//! ```
//! Plugins are sorted by name, versions newest first; `plugd catalog build` writes it.

use std::path::{Path, PathBuf};

use plugd_manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::keys::Signature;
use crate::package::{EXTENSION, Package, UnpackLimits};
use crate::plain_http::plain_http_allowed;
use crate::{Error, sha256_hex};

/// The index file of a catalog.
pub const INDEX_FILE: &str = "index.json";

/// A catalog index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Index format (1).
    pub format: u32,
    /// The plugins, by name.
    pub plugins: Vec<CatalogPlugin>,
}

/// One plugin of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogPlugin {
    /// Its name.
    pub name: String,
    /// The newest version's description.
    pub description: String,
    /// Its versions, newest first.
    pub versions: Vec<CatalogVersion>,
}

/// One package of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogVersion {
    /// The version.
    pub version: semver::Version,
    /// The package file, beside `index.json`.
    pub file: String,
    /// The package size in bytes.
    pub size: u64,
    /// The SHA-256 of the package file.
    pub sha256: String,
    /// The package digest (what a signature covers).
    pub digest: String,
    /// The signature, when signed.
    pub signature: Option<Signature>,
    /// The plugd versions it works with.
    pub framework: Option<semver::VersionReq>,
    /// The plugins it needs.
    pub dependencies: Vec<CatalogDependency>,
    /// What it does.
    pub description: String,
    /// Who wrote it.
    pub author: String,
}

/// A dependency of a catalog package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDependency {
    /// The plugin needed.
    pub name: String,
    /// The versions that satisfy it.
    pub version: semver::VersionReq,
    /// Whether the plugin works without it.
    pub optional: bool,
}

impl CatalogVersion {
    /// The catalog entry of a package file.
    pub fn of(package: &Package, file: String, bytes: &[u8]) -> CatalogVersion {
        let m = package.manifest();
        CatalogVersion {
            version: m.version.clone(),
            file,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            digest: package.digest(),
            signature: package.signature().cloned(),
            framework: m.framework.clone(),
            dependencies: dependencies_of(m),
            description: m.description.clone(),
            author: m.author.clone(),
        }
    }
}

/// A manifest's dependencies, as the catalog lists them.
pub fn dependencies_of(m: &Manifest) -> Vec<CatalogDependency> {
    m.dependencies
        .iter()
        .map(|d| CatalogDependency {
            name: d.name.clone(),
            version: d.version.clone(),
            optional: d.optional,
        })
        .collect()
}

impl Index {
    /// Build the index of every `*.plugd` file in `dir` (not recursive). Each package is read
    /// and checked in full; a signature that does not verify, or two files of one name and
    /// version, is an error. `progress` hears one line per package.
    pub fn build(dir: &Path, mut progress: impl FnMut(&str)) -> Result<Index, Error> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == EXTENSION) && p.is_file())
            .collect();
        files.sort();
        let mut index = Index {
            format: 1,
            plugins: Vec::new(),
        };
        let limits = UnpackLimits::default();
        for (i, path) in files.iter().enumerate() {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            progress(&format!("[{}/{}] {file}", i + 1, files.len()));
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let package = Package::read(&bytes, &limits)
                .map_err(|e| Error::Catalog(format!("{}: {e}", path.display())))?;
            if let Some(sig) = package.signature() {
                sig.verify(&package.digest())
                    .map_err(|e| Error::Catalog(format!("{}: {e}", path.display())))?;
            }
            index.add(CatalogVersion::of(&package, file, &bytes), &package)?;
        }
        Ok(index)
    }

    fn add(&mut self, version: CatalogVersion, package: &Package) -> Result<(), Error> {
        let m = package.manifest();
        let plugin = match self.plugins.iter_mut().position(|p| p.name == m.name) {
            Some(i) => &mut self.plugins[i],
            None => {
                self.plugins.push(CatalogPlugin {
                    name: m.name.clone(),
                    description: String::new(),
                    versions: Vec::new(),
                });
                self.plugins.sort_by(|a, b| a.name.cmp(&b.name));
                let i = self
                    .plugins
                    .iter()
                    .position(|p| p.name == m.name)
                    .unwrap_or_default();
                &mut self.plugins[i]
            }
        };
        if let Some(other) = plugin
            .versions
            .iter()
            .find(|v| v.version == version.version)
        {
            return Err(Error::Catalog(format!(
                "{} and {} are both {} {}",
                other.file, version.file, m.name, version.version
            )));
        }
        plugin.versions.push(version);
        plugin.versions.sort_by(|a, b| b.version.cmp(&a.version));
        plugin.description = plugin.versions[0].description.clone();
        Ok(())
    }

    /// Parse an index; file names must be plain names of `.plugd` files beside it.
    pub fn parse(bytes: &[u8]) -> Result<Index, Error> {
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| Error::Catalog(format!("{INDEX_FILE} is not valid: {e}")))?;
        if index.format != 1 {
            return Err(Error::Catalog(format!(
                "{INDEX_FILE} has format {}, this plugd reads format 1",
                index.format
            )));
        }
        for p in &index.plugins {
            if !plugd_manifest::is_valid_plugin_name(&p.name) {
                return Err(Error::Catalog(format!(
                    "{INDEX_FILE}: '{}' is not a valid plugin name",
                    p.name
                )));
            }
            for v in &p.versions {
                let plain = !v.file.is_empty()
                    && !v.file.starts_with('.')
                    && v.file
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
                    && v.file.ends_with(&format!(".{EXTENSION}"));
                if !plain {
                    return Err(Error::Catalog(format!(
                        "{INDEX_FILE}: {} {} names the file '{}': only plain .{EXTENSION} file names beside the index are allowed",
                        p.name, v.version, v.file
                    )));
                }
            }
        }
        Ok(index)
    }

    /// The index as JSON (pretty, with a final newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Write `index.json` into `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<PathBuf, Error> {
        let path = dir.join(INDEX_FILE);
        let tmp = dir.join(format!(".{INDEX_FILE}.tmp"));
        std::fs::write(&tmp, self.to_json()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// A plugin by name.
    pub fn plugin(&self, name: &str) -> Option<&CatalogPlugin> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// Plugins whose name or description contains `term` (any case).
    ///
    /// ```
    /// let index = plugd_pkg::Index::default();
    /// assert!(index.search("hello").is_empty());
    /// ```
    pub fn search(&self, term: &str) -> Vec<&CatalogPlugin> {
        let term = term.to_lowercase();
        self.plugins
            .iter()
            .filter(|p| {
                p.name.to_lowercase().contains(&term)
                    || p.description.to_lowercase().contains(&term)
            })
            .collect()
    }
}

/// Where a catalog is: a folder, or an HTTP(S) URL of the folder (or of its `index.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSource {
    /// A local folder.
    Dir(PathBuf),
    /// The URL of the folder.
    Url {
        /// The URL, ending in `/`.
        base: String,
        /// Plain http to any host was allowed (`--allow-http`), for redirects too.
        allow_http: bool,
    },
}

impl CatalogSource {
    /// `https://…` is a URL; `http://…` a URL on a loopback host, or anywhere with
    /// `allow_http` (the operator's `--allow-http`); anything else is a folder.
    ///
    /// A plain http catalog elsewhere is refused: anyone on the network path could change the
    /// index and the packages, strip signatures, or serve old versions.
    ///
    /// ```
    /// use plugd_pkg::CatalogSource;
    /// assert_eq!(
    ///     CatalogSource::parse("https://plugins.example/catalog/index.json", false).unwrap(),
    ///     CatalogSource::Url { base: "https://plugins.example/catalog/".into(), allow_http: false }
    /// );
    /// assert_eq!(CatalogSource::parse("./cat", false).unwrap(), CatalogSource::Dir("./cat".into()));
    /// let err = CatalogSource::parse("http://plugins.example/catalog/", false).unwrap_err();
    /// assert!(err.to_string().contains("--allow-http"), "{err}");
    /// assert!(CatalogSource::parse("http://plugins.example/catalog/", true).is_ok());
    /// assert!(CatalogSource::parse("http://127.0.0.1:8000/catalog/", false).is_ok());
    /// ```
    pub fn parse(text: &str, allow_http: bool) -> Result<CatalogSource, Error> {
        let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = url::Url::parse(text)
                .map_err(|e| Error::Catalog(format!("'{text}' is not a valid catalog URL: {e}")))?;
            if url.scheme() == "http" && !plain_http_allowed(&url, allow_http) {
                return Err(Error::Catalog(format!(
                    "{text}: refusing a plain http:// catalog: anyone on the network path could change its index and packages (and strip their signatures); use https://, or pass --allow-http to accept it (http on loopback hosts is allowed)"
                )));
            }
            let base = text.strip_suffix(INDEX_FILE).unwrap_or(text);
            let base = if base.ends_with('/') {
                base.to_string()
            } else {
                format!("{base}/")
            };
            Ok(CatalogSource::Url { base, allow_http })
        } else {
            let path = PathBuf::from(text);
            Ok(if path.file_name().is_some_and(|n| n == INDEX_FILE) {
                CatalogSource::Dir(path.parent().map(Path::to_path_buf).unwrap_or_default())
            } else {
                CatalogSource::Dir(path)
            })
        }
    }

    /// Where a file of the catalog is, for messages.
    pub fn locate(&self, file: &str) -> String {
        match self {
            CatalogSource::Dir(dir) => dir.join(file).display().to_string(),
            CatalogSource::Url { base, .. } => format!("{base}{file}"),
        }
    }

    /// Read the index.
    pub fn index(&self) -> Result<Index, Error> {
        let bytes = self.get(INDEX_FILE, 64 << 20, &mut |_| {})?;
        Index::parse(&bytes)
            .map_err(|e| Error::Catalog(format!("{}: {e}", self.locate(INDEX_FILE))))
    }

    /// Fetch a package of the index and check it is the one the index describes (size and
    /// SHA-256). `progress` hears a few lines for large downloads.
    pub fn fetch(
        &self,
        version: &CatalogVersion,
        max_size: u64,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<u8>, Error> {
        if version.size > max_size {
            return Err(Error::Catalog(format!(
                "{} is {} bytes, more than the limit of {max_size}",
                version.file, version.size
            )));
        }
        let bytes = self.get(&version.file, max_size, progress)?;
        if bytes.len() as u64 != version.size || sha256_hex(&bytes) != version.sha256 {
            return Err(Error::Integrity(format!(
                "{} does not match the catalog's size and SHA-256 for it (changed or corrupted in transit)",
                self.locate(&version.file)
            )));
        }
        Ok(bytes)
    }

    fn get(
        &self,
        file: &str,
        max_size: u64,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<u8>, Error> {
        match self {
            CatalogSource::Dir(dir) => {
                let path = dir.join(file);
                let size = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len();
                if size > max_size {
                    return Err(Error::Catalog(format!(
                        "{} is {size} bytes, more than the limit of {max_size}",
                        path.display()
                    )));
                }
                std::fs::read(&path).map_err(|e| Error::io(&path, e))
            }
            #[cfg(feature = "http")]
            CatalogSource::Url { base, allow_http } => {
                crate::fetch::download(&format!("{base}{file}"), max_size, *allow_http, progress)
            }
            #[cfg(not(feature = "http"))]
            CatalogSource::Url { base, allow_http } => {
                let _ = (max_size, progress, allow_http);
                Err(Error::Http(format!(
                    "{base}{file}: this build of plugd-pkg has no HTTP support (feature 'http')"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use crate::plugins_dir::tests::package;

    #[test]
    fn build_lists_every_package_newest_first_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        for (name, version) in [("hello", "1.0.0"), ("hello", "1.1.0"), ("auth", "2.0.0")] {
            let mut p = package(
                name,
                version,
                "dependencies:\n  - name: base\n    version: \">=1\"\n",
            );
            if version == "1.1.0" {
                p.sign(&key);
            }
            std::fs::write(dir.path().join(p.file_name()), p.to_bytes().unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a package").unwrap();
        let mut lines = Vec::new();
        let index = Index::build(dir.path(), |l| lines.push(l.to_string())).unwrap();
        assert_eq!(lines.len(), 3);
        let names: Vec<&str> = index.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["auth", "hello"]);
        let hello = index.plugin("hello").unwrap();
        let versions: Vec<String> = hello
            .versions
            .iter()
            .map(|v| v.version.to_string())
            .collect();
        assert_eq!(versions, ["1.1.0", "1.0.0"]);
        let newest = &hello.versions[0];
        assert_eq!(newest.file, "hello-1.1.0.plugd");
        let bytes = std::fs::read(dir.path().join(&newest.file)).unwrap();
        assert_eq!(newest.sha256, sha256_hex(&bytes));
        assert!(
            newest
                .signature
                .as_ref()
                .unwrap()
                .verify(&newest.digest)
                .is_ok()
        );
        assert_eq!(newest.dependencies[0].name, "base");
        assert_eq!(index.search("HELLO").len(), 1);
        assert_eq!(index.search("plugin").len(), 2);

        index.write(dir.path()).unwrap();
        let source =
            CatalogSource::parse(&dir.path().join(INDEX_FILE).display().to_string(), false)
                .unwrap();
        assert_eq!(source.index().unwrap(), index);
        assert_eq!(source.fetch(newest, 1 << 20, &mut |_| {}).unwrap(), bytes);
        // A package that is not the one the index describes is refused.
        std::fs::write(dir.path().join(&newest.file), b"other bytes").unwrap();
        let err = source
            .fetch(newest, 1 << 20, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not match the catalog's size and SHA-256"),
            "{err}"
        );
    }

    #[test]
    fn two_files_of_one_version_and_escaping_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = package("hello", "1.0.0", "");
        std::fs::write(dir.path().join("a.plugd"), p.to_bytes().unwrap()).unwrap();
        std::fs::write(dir.path().join("b.plugd"), p.to_bytes().unwrap()).unwrap();
        let err = Index::build(dir.path(), |_| {}).unwrap_err().to_string();
        assert!(
            err.contains("a.plugd and b.plugd are both hello 1.0.0"),
            "{err}"
        );

        std::fs::remove_file(dir.path().join("b.plugd")).unwrap();
        let mut index = Index::build(dir.path(), |_| {}).unwrap();
        index.plugins[0].versions[0].file = "../../etc/passwd.plugd".into();
        let err = Index::parse(index.to_json().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("only plain .plugd file names"), "{err}");
    }
}
