//! Plugin key/value storage in PostgreSQL: the conformance suite, durability across
//! backends, and a host schema of its own per deployment.

mod support;

use std::sync::Arc;

use plugd_core::{KvBackend, PluginStore};
use support::TestDb;

#[tokio::test]
async fn the_postgres_kv_conforms() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    plugd_core::testing::kv_backend(Arc::new(pg.kv())).await;
    db.drop_now().await;
}

#[tokio::test]
async fn an_acknowledged_write_is_seen_by_another_host() {
    let db = TestDb::new().await;
    let (one, two) = (db.connect().await, db.connect().await);
    let a = PluginStore::new("shared", Arc::new(one.kv()));
    a.set("k", b"v").await.unwrap();
    // Another host of the fleet, its own pool: the write is committed.
    assert_eq!(
        two.kv().get("shared", "k").await.unwrap(),
        Some(b"v".to_vec())
    );
    db.drop_now().await;
}

#[tokio::test]
async fn hosts_that_start_at_once_create_the_schema_once() {
    let db = TestDb::new().await;
    let options = db.options();
    let starts = (0..3).map(|_| {
        let options = options.clone();
        tokio::spawn(async move { plugd_postgres::Postgres::connect(&options).await })
    });
    for start in starts {
        let pg = start.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        pg.ping().await.unwrap();
    }
    db.drop_now().await;
}

#[tokio::test]
async fn a_schema_of_its_own_keeps_deployments_apart() {
    let db = TestDb::new().await;
    let mut options = db.options();
    options.schema = "other_host".into();
    let other = plugd_postgres::Postgres::connect(&options).await.unwrap();
    let default = db.connect().await;
    other.kv().set("p", "k", b"1".to_vec()).await.unwrap();
    assert_eq!(default.kv().get("p", "k").await.unwrap(), None);
    db.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    let mut options = plugd_postgres::PostgresOptions::new("postgres://u:s3cret@127.0.0.1:1/db");
    options.connect_timeout = std::time::Duration::from_millis(500);
    let e = plugd_postgres::Postgres::connect(&options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot connect to PostgreSQL at postgres://u:***@127.0.0.1:1/db: "),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    let bad = plugd_postgres::PostgresOptions {
        schema: "Bad-Schema".into(),
        ..options
    };
    let e = plugd_postgres::Postgres::connect(&bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("the host schema 'Bad-Schema' must be"), "{e}");
}
