//! scripts/backup.sh against the files this crate writes: an online backup while the store is
//! open (the last writes still in the WAL), restored into a new data directory that a new store
//! reads. Needs the sqlite3 command (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use plugd_core::{KvBackend, PluginStore};
use plugd_sqlite::SqliteKv;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/backup.sh")
}

fn run(args: &[&Path]) -> std::process::Output {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "backup.sh {args:?} failed (is sqlite3 installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_into_a_working_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kv: Arc<dyn KvBackend> = Arc::new(SqliteKv::new(&data));
    let store = PluginStore::new("hello", kv.clone());
    for i in 0..50 {
        store.set(&format!("k{i}"), b"v").await.unwrap();
    }
    store.set("greetings", b"3").await.unwrap();
    std::fs::create_dir_all(data.join("cache/components")).unwrap();
    std::fs::write(data.join("cache/components/x.cwasm"), b"compiled").unwrap();
    std::fs::write(data.join("admin-token"), b"token").unwrap();

    // The store stays open: an online backup.
    let archive = dir.path().join("backup.tar.gz");
    run(&[Path::new("backup"), &data, &archive]);
    store.set("greetings", b"4").await.unwrap();
    store.set("after", b"x").await.unwrap();

    let restored = dir.path().join("restored");
    run(&[Path::new("restore"), &archive, &restored]);
    assert!(
        !restored.join("cache").exists(),
        "the compiled-component cache is left out"
    );
    assert_eq!(
        std::fs::read(restored.join("admin-token")).unwrap(),
        b"token"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&restored.join("plugins/hello/kv.sqlite")), 0o600);
        assert_eq!(mode(&restored.join("plugins/hello")), 0o700);
        assert_eq!(mode(&restored), 0o700);
    }
    let again = PluginStore::new("hello", Arc::new(SqliteKv::new(&restored)));
    assert_eq!(
        again.get("greetings").await.unwrap(),
        Some(b"3".to_vec()),
        "the value at the time of the backup"
    );
    assert_eq!(again.get("k49").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        again.get("after").await.unwrap(),
        None,
        "nothing written after it"
    );

    // A second restore into the now filled folder is refused.
    let out = Command::new("bash")
        .arg(script())
        .args([Path::new("restore"), &archive, &restored])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
