//! plugd-pkg: plugin packages for plugd.
//!
//! - [`Package`]: the `.plugd` format — a deterministic tar + zstd archive of a plugin's manifest,
//!   component, `assets/` and `migrations/`, with a `SHA256SUMS` digest list and an optional
//!   ed25519 `SIGNATURE` of the package digest inside; read under [`UnpackLimits`] with every
//!   hostile-archive case refused before anything is written.
//! - [`SigningKey`], [`PublicKey`], [`Signature`], [`Trust`]: keys, signing, and which
//!   signatures are accepted.
//! - [`Index`], [`CatalogSource`]: catalogs (a folder or an HTTPS URL with `index.json`; plain
//!   http only on loopback or with `--allow-http`).
//! - [`resolve()`]: the newest compatible versions of a request and its dependencies.
//! - [`PluginsDir`]: install, keep earlier versions, roll back, uninstall.
//! - [`check_installed`]: what the host checks before loading a plugin folder (blocklist,
//!   installed digests, signatures against `plugins.trusted_keys`, required with
//!   `plugins.require_signatures`, which trusted keys turn on by default).
//!
//! This crate knows nothing of running plugins; `plugd-core` calls [`check_for_load`] (and
//! compiles the component bytes it verified) and the `plugd` binary drives the rest.
//!
//! ```
//! use plugd_pkg::{Package, SigningKey, Trust, UnpackLimits};
//! # let dir = tempfile::tempdir().unwrap();
//! # std::fs::write(dir.path().join("plugin.yaml"), "name: hello\nversion: 1.0.0\ndescription: d\nauthor: a\n").unwrap();
//! # std::fs::write(dir.path().join("plugin.wasm"), b"\0asm").unwrap();
//! let key = SigningKey::generate()?;
//! let mut package = Package::from_dir(dir.path())?;
//! package.sign(&key);
//! let bytes = package.to_bytes()?;
//!
//! let read = Package::read(&bytes, &UnpackLimits::default())?;
//! let trust = Trust { require: true, keys: vec![key.public()] };
//! let state = trust.check("hello 1.0.0", &read.digest(), read.signature())?;
//! assert_eq!(state.to_string(), format!("signed by trusted key {}", key.public().key_id()));
//! # Ok::<(), plugd_pkg::Error>(())
//! ```

#![warn(missing_docs)]

mod catalog;
mod error;
#[cfg(feature = "http")]
pub mod fetch;
mod installed;
mod keys;
mod package;
mod plain_http;
mod plugins_dir;
mod resolve;
mod sums;

pub use catalog::{
    CatalogDependency, CatalogPlugin, CatalogSource, CatalogVersion, INDEX_FILE, Index,
    dependencies_of,
};
pub use error::{Error, Rejection};
pub use installed::{
    InstallRecord, LoadCheck, LoadChecked, RECORD_FILE, blocked_message, check_blocked,
    check_for_load, check_installed,
};
pub use keys::{PublicKey, SIGNATURE_FILE, Signature, SignatureState, SigningKey, Trust};
pub use package::{EXTENSION, Package, UnpackLimits};
pub use plain_http::{is_loopback, plain_http_allowed};
pub use plugins_dir::{
    InstallSource, Installed, InstalledEntry, KEEP_VERSIONS, LOCK_FILE, PluginsDir, STAGING_DIR,
    VERSIONS_DIR,
};
pub use resolve::{Context, InstalledPlugin, Plan, Request, Step, resolve, unfit};
pub use sums::{SUMS_FILE, Sums, sha256_hex};
