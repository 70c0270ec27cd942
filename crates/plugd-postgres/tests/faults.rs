//! Faults: the link to PostgreSQL is cut (a [`CutProxy`] between the host and the server)
//! and restored. Calls fail fast with an error naming PostgreSQL, what was acknowledged before
//! the cut is still there, and the same backend objects work again without a restart.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_core::testing::CutProxy;
use plugd_core::{Auditor, Database, HostError, PluginStore, SqlValue};
use plugd_postgres::{Postgres, SqlOptions};
use support::TestDb;

/// The test database's URL through `proxy`.
fn through(db: &TestDb, proxy: &CutProxy) -> String {
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    url.to_string()
}

fn upstream(db: &TestDb) -> String {
    let url = url::Url::parse(&db.url).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    )
}

/// Retry `check` until it holds or 20 s pass.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 20s");
}

#[tokio::test]
async fn a_cut_link_fails_fast_naming_postgres_and_the_same_backends_recover() {
    let db = TestDb::new().await;
    let proxy = CutProxy::start(&upstream(&db)).await.unwrap();
    let mut options = db.options();
    options.url = through(&db, &proxy);
    options.connect_timeout = Duration::from_secs(1);
    options.timeout = Duration::from_secs(2);
    let pg = Postgres::connect(&options).await.unwrap();
    let store = PluginStore::new("faulty", Arc::new(pg.kv()));
    let sql = pg.sql(SqlOptions::default());
    let database = Database::open("faulty", &sql, &[], Auditor::new("faulty", None, None))
        .await
        .unwrap();
    database
        .execute("CREATE TABLE t (v TEXT)", &[])
        .await
        .unwrap();
    store.set("before", b"acknowledged").await.unwrap();
    database
        .execute("INSERT INTO t VALUES ('acknowledged')", &[])
        .await
        .unwrap();

    proxy.cut();
    let started = Instant::now();
    let e = store.get("before").await.unwrap_err();
    assert!(
        matches!(&e, HostError::Failed(m) if m.starts_with("storage.get: postgres: PostgreSQL at postgres://postgres@127.0.0.1:")),
        "{e:?}"
    );
    let e = store.set("during", b"x").await.unwrap_err();
    assert!(
        matches!(&e, HostError::Failed(m) if m.contains("postgres: PostgreSQL at ")),
        "{e:?}"
    );
    let e = database.query("SELECT v FROM t", &[]).await.unwrap_err();
    assert!(
        matches!(&e, HostError::Failed(m) if m.starts_with("database.query of plugin 'faulty': postgres: PostgreSQL at ")),
        "{e:?}"
    );
    assert!(pg.ping().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the calls failed fast: {:?}",
        started.elapsed()
    );

    proxy.restore();
    eventually("the storage works again", async || {
        store.get("before").await.is_ok()
    })
    .await;
    assert_eq!(
        store.get("before").await.unwrap(),
        Some(b"acknowledged".to_vec()),
        "a write acknowledged before the cut"
    );
    store.set("after", b"1").await.unwrap();
    eventually("the database works again", async || {
        database.query("SELECT v FROM t", &[]).await.is_ok()
    })
    .await;
    let rows = database.query("SELECT v FROM t", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![SqlValue::Text("acknowledged".into())]]);
    pg.ping().await.unwrap();
    drop(database);
    drop(pg);
    db.drop_now().await;
}
