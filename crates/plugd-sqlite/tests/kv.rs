//! The SQLite key/value backend: the core's conformance suite, files per plugin with private
//! modes, persistence, the move of an older plugd's keys out of `host.db`, and isolation — a
//! plugin whose file is busy never holds another plugin's storage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_core::{KvBackend, PluginStore};
use plugd_sqlite::SqliteKv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_conforms() {
    let dir = tempfile::tempdir().unwrap();
    plugd_core::testing::kv_backend(Arc::new(SqliteKv::new(dir.path()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_has_a_private_file_of_its_own_that_outlives_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvBackend> = Arc::new(SqliteKv::new(dir.path()));
    PluginStore::new("hello", kv.clone())
        .set("greetings", b"3")
        .await
        .unwrap();
    let file = dir.path().join("plugins/hello/kv.sqlite");
    assert!(file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.path().join("plugins/hello")), 0o700);
    }
    drop(kv);
    let again = PluginStore::new("hello", Arc::new(SqliteKv::new(dir.path())));
    assert_eq!(again.get("greetings").await.unwrap(), Some(b"3".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_a_plugin_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SqliteKv::new(dir.path());
    for bad in ["", "../escape", "a/b", ".hidden"] {
        assert!(kv.get(bad, "k").await.is_err(), "{bad:?}");
    }
    assert!(!dir.path().join("escape").exists());
}

/// An older plugd kept every plugin's keys in one `plugin_kv` table of `host.db`: they move into
/// each plugin's file the first time it is used, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_an_older_plugd_move_out_of_host_db() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = rusqlite_connection(&dir.path().join("host.db"));
        old.execute_batch(
            "CREATE TABLE plugin_kv (plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 updated_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (plugin, key)) WITHOUT ROWID;
             INSERT INTO plugin_kv (plugin, key, value) VALUES
                 ('hello', 'greetings', X'3132'), ('hello', 'name', X'416461'),
                 ('other', 'greetings', X'39');",
        )
        .unwrap();
    }
    let kv: Arc<dyn KvBackend> = Arc::new(SqliteKv::new(dir.path()));
    let hello = PluginStore::new("hello", kv.clone());
    assert_eq!(hello.get("greetings").await.unwrap(), Some(b"12".to_vec()));
    assert_eq!(hello.list("").await.unwrap(), ["greetings", "name"]);
    let other = PluginStore::new("other", kv);
    assert_eq!(other.get("greetings").await.unwrap(), Some(b"9".to_vec()));
    let left: i64 = rusqlite_connection(&dir.path().join("host.db"))
        .query_row("SELECT count(*) FROM plugin_kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "moved, not copied twice");
}

/// Plugin `busy`'s file is locked by a writer outside plugd (as a plugin hammering its own
/// storage would hold it): `busy`'s call waits, and `calm`'s storage keeps answering meanwhile —
/// they share no lock. (With one `host.db` for all plugins, `calm` waited behind `busy`.)
/// Causal, not timed: `busy`'s call is still waiting when `calm`'s calls are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_plugin_never_holds_another_plugins_storage() {
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvBackend> = Arc::new(SqliteKv::new(dir.path()));
    let busy = PluginStore::new("busy", kv.clone());
    let calm = PluginStore::new("calm", kv);
    busy.set("k", b"0").await.unwrap();
    calm.set("k", b"0").await.unwrap();

    let locker = rusqlite_connection(&dir.path().join("plugins/busy/kv.sqlite"));
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let waiting = tokio::spawn({
        let busy = busy.clone();
        async move { busy.set("k", b"1").await }
    });
    for i in 0..20 {
        calm.set("k", format!("{i}").as_bytes()).await.unwrap();
    }
    assert_eq!(calm.get("k").await.unwrap(), Some(b"19".to_vec()));
    assert!(
        !waiting.is_finished(),
        "busy's call waits for its own file only"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(busy.get("k").await.unwrap(), Some(b"1".to_vec()));
}

/// A call its caller stops waiting for (the guest's deadline) returns the deadline's error, and
/// the plugin's connection is usable again once its file is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_is_given_up_and_the_file_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let busy = PluginStore::new("busy", Arc::new(SqliteKv::new(dir.path())));
    busy.set("k", b"0").await.unwrap();
    let locker = rusqlite_connection(&dir.path().join("plugins/busy/kv.sqlite"));
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = busy
        .with_timeout(Duration::from_millis(100))
        .set("k", b"1")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "storage.set did not finish within 100ms");
    locker.execute_batch("ROLLBACK").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match busy.set("k", b"2").await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "busy never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(busy.get("k").await.unwrap(), Some(b"2".to_vec()));
}

/// Open a connection the way an outside tool would.
fn rusqlite_connection(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}
