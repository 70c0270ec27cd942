//! Owner-only folders and files under `data_dir` (public for the storage backends): the folders
//! plugd makes are mode 0700 and the SQLite files it opens (`host.db`, a plugin's `db.sqlite`, with their `-wal` and `-shm`) mode
//! 0600, whatever the umask — other local users must not read plugin storage. Modes are set
//! explicitly (not left to the umask) and tightened on files an earlier version left open.
//! Elsewhere than Unix these are plain `create_dir_all` and no-ops.

use std::path::{Path, PathBuf};

/// A folder or file under `data_dir` that could not be made or made private: what, where, and
/// the operating system's reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A folder could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be created or read.
    #[error("cannot {action} data directory {}: {source}", path.display())]
    DataDir {
        /// `create` or `read`.
        action: &'static str,
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A database file could not be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its mode could not be set to owner-only.
    #[error("cannot make {} private ({mode}): {source}", path.display())]
    MakePrivate {
        /// The folder or file.
        path: PathBuf,
        /// `0700` or `0600`.
        mode: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Create a folder (and any missing parents, each 0700) and make it mode 0700: what plugd keeps
/// for itself (the data directory's folders, the compile cache, the admin token's folder).
pub fn make_private_dir(dir: &Path) -> Result<(), FileError> {
    create_dirs(dir).map_err(|source| FileError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| FileError::MakePrivate {
                path: dir.to_path_buf(),
                mode: "0700",
                source,
            },
        )?;
    }
    Ok(())
}

/// The data directory: created 0700 (with any missing parents); an existing one that others
/// may enter is tightened to 0700, or, when plugd may not change it, left with a warning (the
/// files plugd keeps in it are 0600 anyway).
pub fn make_data_dir(dir: &Path) -> Result<(), FileError> {
    let failed = |action, source| FileError::DataDir {
        action,
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        create_dirs(dir).map_err(|e| failed("create", e))?;
        return make_private_dir(dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(|e| failed("read", e))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                Ok(()) => tracing::info!(
                    path = %dir.display(),
                    was = format!("{mode:03o}"),
                    "made the data directory private (0700)"
                ),
                Err(e) => tracing::warn!(
                    path = %dir.display(),
                    mode = format!("{mode:03o}"),
                    error = %e,
                    "the data directory is open to other users and plugd cannot change it: chmod 700 it (its database files are 0600)"
                ),
            }
        }
    }
    Ok(())
}

fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Make sure the SQLite database `path` exists with mode 0600 before SQLite opens it: SQLite
/// gives its `-wal`, `-shm` and `-journal` files the mode of the database file.
pub fn create_database_file(path: &Path) -> Result<(), FileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .map_err(|source| FileError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;
    restrict_database_files(path)
}

/// Mode 0600 for the database `path` and those of its `-wal`, `-shm` and `-journal` that
/// exist (an earlier plugd, or the umask, may have left them readable by others).
pub fn restrict_database_files(path: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in database_files(path) {
            match std::fs::symlink_metadata(&file) {
                Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o777 != 0o600 => {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                        .map_err(|source| FileError::MakePrivate {
                            path: file.clone(),
                            mode: "0600",
                            source,
                        })?;
                }
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The database file and the files SQLite keeps beside it.
fn database_files(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        out.push(PathBuf::from(name));
    }
    out
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The permission bits of a file or folder.
    pub(crate) fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_are_0700_with_their_new_parents_and_databases_0600() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        make_private_dir(&deep).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
        }
        let db = deep.join("x.sqlite");
        create_database_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        // Left 0644 by an earlier version, with its WAL: tightened.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let wal = deep.join("x.sqlite-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666)).unwrap();
        create_database_file(&db).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
    }

    #[test]
    fn an_existing_data_dir_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        make_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
    }
}
