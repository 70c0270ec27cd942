//! The errors of packages, signatures, catalogs and installation.

use std::path::PathBuf;

/// Why a package, a key, a catalog or an installation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The archive is unsafe to unpack or malformed; nothing was written.
    #[error("unsafe package: {0}")]
    Unsafe(#[from] Rejection),
    /// A file's content does not match its digest, or the digest list does not match the files.
    #[error("package integrity: {0}")]
    Integrity(String),
    /// The plugin manifest inside the package (or of the folder being packed) is invalid.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A key file could not be parsed, or a key could not be made.
    #[error("key: {0}")]
    Key(String),
    /// The signature is missing, invalid, or by a key that is not trusted.
    #[error("signature: {0}")]
    Signature(String),
    /// The plugin version is on the host config's blocklist.
    #[error("{0}")]
    Blocked(String),
    /// The catalog index is missing, unreadable or malformed.
    #[error("catalog: {0}")]
    Catalog(String),
    /// No set of versions satisfies the request.
    #[error("{0}")]
    Resolve(String),
    /// A download failed.
    #[error("download: {0}")]
    Http(String),
    /// The plugins folder refuses the operation (not installed, depended upon, nothing to roll
    /// back to, an installed file changed since install).
    #[error("{0}")]
    Installed(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why an archive was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bytes are not a zstd-compressed tar.
    #[error("not a plugd package: {0}")]
    NotAPackage(String),
    /// The archive could not be decoded.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// An entry names an absolute path.
    #[error("entry '{0}' is an absolute path")]
    AbsolutePath(String),
    /// An entry has a `..` component.
    #[error("entry '{0}' has a '..' component")]
    ParentDir(String),
    /// An entry's path is empty, not UTF-8, has `.` or empty components, backslashes or control
    /// characters, or is too long or too deep.
    #[error("entry '{path}': {reason}")]
    BadPath {
        /// The path as read (lossy).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A symbolic or hard link.
    #[error("entry '{path}' is a {kind} to '{target}': packages hold regular files only")]
    Link {
        /// The entry.
        path: String,
        /// `symlink` or `hard link`.
        kind: &'static str,
        /// Where it points.
        target: String,
    },
    /// A directory, device, FIFO, sparse file or global header.
    #[error("entry '{path}' is a {kind}: packages hold regular files only")]
    NotRegular {
        /// The entry.
        path: String,
        /// Its tar type.
        kind: String,
    },
    /// The same path twice, or a path that is both a file and a folder.
    #[error("entry '{0}' appears twice (or is both a file and a folder)")]
    Duplicate(String),
    /// An entry larger than the limit.
    #[error("entry '{path}' is {size} bytes, more than the limit of {limit}")]
    FileTooLarge {
        /// The entry.
        path: String,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More entries than the limit.
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    /// The archive unpacks to more than the limit.
    #[error("unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// The archive unpacks to far more than its own size.
    #[error(
        "decompression bomb: {compressed} compressed bytes unpack to more than {limit} bytes (ratio limit {ratio}:1)"
    )]
    Bomb {
        /// The package size.
        compressed: u64,
        /// Where reading stopped.
        limit: u64,
        /// The ratio allowed.
        ratio: u64,
    },
    /// The package file itself is larger than the limit.
    #[error("package is {size} bytes, more than the limit of {limit}")]
    PackageTooLarge {
        /// The package size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry outside what a package may hold (the manifest, the component, `assets/`,
    /// `migrations/`, `SHA256SUMS`, `SIGNATURE`).
    #[error(
        "entry '{0}' is not allowed: a package holds the manifest, the component, assets/ and migrations/ only"
    )]
    NotAllowed(String),
}
