//! Security review H4: a plugin's SQL cannot exhaust the host's memory or disk. Values larger than
//! the result cap are refused before SQLite builds them, the result cap holds while the rows are
//! read, TEMP objects (outside the file's size cap) are refused, and intermediate results of a
//! query are bounded by its deadline.
//!
//! One test function: the process's resident-set high-water mark is shared by every test in a
//! binary, so the scenarios run one after another here, alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_core::database_limits::MAX_RESULT_BYTES;
use plugd_core::{AuditLog, Auditor, Database, HostError, PluginState};
use plugd_sqlite::SqliteDatabase;

const MIB: u64 = 1024 * 1024;

/// The resident-set high-water mark of this process, in bytes (Linux; 0 elsewhere, which makes
/// the memory checks vacuous there).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Run `scenario` and fail when the process's peak RSS grew by 64 MiB or more meanwhile.
async fn within_64_mib<T>(what: &str, scenario: impl Future<Output = T>) -> T {
    let before = peak_rss();
    let out = scenario.await;
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "{what}: the process grew by {} MiB",
        grown / MIB
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_exhaust_host_memory_or_disk_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteDatabase::new(dir.path());
    let state = Arc::new(PluginState::default());
    let log = Arc::new(AuditLog::default());
    let db = Database::open(
        "p",
        &backend,
        &[],
        Auditor::new("p", Some(state.clone()), Some(log.clone())),
    )
    .await
    .unwrap();

    // Ten columns of almost 1 GB each: refused before SQLite materialises any of them.
    let columns: Vec<String> = (0..10)
        .map(|i| format!("zeroblob(999999999) c{i}"))
        .collect();
    let sql = format!("SELECT {}", columns.join(", "));
    let started = Instant::now();
    let e = within_64_mib("ten 1 GB zeroblobs", db.query(&sql, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Invalid(m) if m == "database.query of plugin 'p': the result is larger than 8 MiB; select fewer columns or rows"),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused quickly, not at the deadline: {:?}",
        started.elapsed()
    );

    // Ten columns each under the cap, together far over it: the cap holds while the row is
    // read, so neither SQLite nor the host holds the ten at once.
    let size = MAX_RESULT_BYTES / 2 + 1;
    let columns: Vec<String> = (0..10).map(|i| format!("zeroblob({size}) c{i}")).collect();
    let sql = format!(
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 10) SELECT {} FROM r",
        columns.join(", ")
    );
    let e = within_64_mib("ten rows of ten 4 MiB columns", db.query(&sql, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Invalid(m) if m.contains("the result is larger than 8 MiB")),
        "{e:?}"
    );

    // A stored value or a bound parameter larger than a result may hold is refused too: no
    // query could return it.
    db.execute("CREATE TABLE t (b BLOB)", &[]).await.unwrap();
    let e = within_64_mib(
        "insert a 1 GB zeroblob",
        db.execute("INSERT INTO t VALUES (zeroblob(999999999))", &[]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, HostError::Invalid(m) if m.contains("larger than 8 MiB")),
        "{e:?}"
    );

    // TEMP objects live outside the database file and its size cap: refused, and audited.
    for sql in [
        "CREATE TEMP TABLE t2 (b BLOB)",
        "CREATE TEMPORARY TABLE t2 (b BLOB)",
        "CREATE TABLE temp.t2 (b BLOB)",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
    ] {
        match db.execute(sql, &[]).await {
            Err(HostError::Denied(m)) => assert_eq!(
                m,
                "database access denied: plugin 'p' may not create TEMP tables, indexes, views or triggers (they live outside the database and its size cap; create them in the database)",
                "{sql}"
            ),
            other => panic!("{sql}: expected a denial, got {other:?}"),
        }
    }
    let audit = log.entries(Some("p"));
    assert_eq!(audit.len(), 5, "{audit:?}");
    assert!(audit.iter().all(|a| a.capability == "database"));
    let e = db
        .execute("INSERT INTO temp.t2 SELECT randomblob(1000000) FROM t", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, HostError::Invalid(_)), "no temp.t2: {e:?}");

    // Intermediate results (a sort of rows that never end) grow until the deadline, no longer,
    // and not in the host's memory.
    let short = db.with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let e = within_64_mib(
        "sort an endless series of 100 kB rows",
        short.query(
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x, zeroblob(100000) FROM r ORDER BY x DESC LIMIT 1",
            &[],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        HostError::Failed(
            "database.query of plugin 'p' timed out after 500ms and was interrupted".into()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let e = within_64_mib(
        "a recursive UNION that keeps every distinct row",
        short.query(
            "WITH RECURSIVE r(x, b) AS (SELECT 1, zeroblob(100000) UNION SELECT x + 1, b FROM r) SELECT count(*) FROM r",
            &[],
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, HostError::Failed(m) if m.contains("timed out")),
        "{e:?}"
    );

    // Still usable.
    let rows = db.query("SELECT 42", &[]).await.unwrap();
    assert_eq!(rows.rows.len(), 1);
}
