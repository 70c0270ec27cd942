//! The `database` capability in PostgreSQL: the conformance suite, and hostile SQL that
//! PostgreSQL itself refuses because the plugin's statements run as its own role.

mod support;

use std::sync::Arc;
use std::time::Duration;

use plugd_core::{Auditor, Database, HostError, KvBackend, SqlBackend, SqlValue};
use plugd_postgres::SqlOptions;
use support::TestDb;

async fn open(backend: &dyn SqlBackend, plugin: &str) -> Database {
    Database::open(plugin, backend, &[], Auditor::new(plugin, None, None))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_postgres_database_conforms() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    let backend = pg.sql(SqlOptions::default());
    assert_eq!(backend.dialect(), "postgres");
    plugd_core::testing::sql_backend(Arc::new(backend)).await;
    db.drop_now().await;
}

#[tokio::test]
async fn postgres_values_map_to_sql_values() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    let backend = pg.sql(SqlOptions::default());
    let d = open(&backend, "values").await;
    let rows = d
        .query(
            "SELECT true AS b, 2::int2 AS s, 1.5::float4 AS f, 12345.678::numeric AS n,
                    sum(x) AS total, '{\"a\": 1}'::jsonb AS j, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
                    '2026-12-05'::date AS d, '2026-12-05 10:00:00+00'::timestamptz AS t, 'x'::varchar AS v
             FROM (VALUES (9223372036854775807::int8), (1::int8)) AS s(x)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.rows[0],
        vec![
            SqlValue::Integer(1),
            SqlValue::Integer(2),
            SqlValue::Real(1.5),
            SqlValue::Text("12345.678".into()),
            SqlValue::Text("9223372036854775808".into()),
            SqlValue::Text("{\"a\": 1}".into()),
            SqlValue::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            SqlValue::Text("2026-12-05".into()),
            SqlValue::Text("2026-12-05T10:00:00.000Z".into()),
            SqlValue::Text("x".into()),
        ]
    );
    // Text parameters become any type PostgreSQL expects; numbers fit the inferred type.
    d.execute(
        "CREATE TABLE typed (at TIMESTAMPTZ, id UUID, small INT2, ok BOOLEAN, amount NUMERIC)",
        &[],
    )
    .await
    .unwrap();
    d.execute(
        "INSERT INTO typed VALUES ($1, $2, $3, $4, $5)",
        &[
            SqlValue::Text("2026-12-05T10:00:00Z".into()),
            SqlValue::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            SqlValue::Integer(7),
            SqlValue::Integer(1),
            SqlValue::Real(2.5),
        ],
    )
    .await
    .unwrap();
    let e = d
        .execute(
            "INSERT INTO typed (small) VALUES ($1)",
            &[SqlValue::Integer(1 << 20)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Invalid(m) if m.contains("out of range")),
        "{e:?}"
    );
    let e = d
        .query("SELECT interval '1 day' AS i", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Invalid(m) if m.contains("column 'i' is of PostgreSQL type interval") && m.contains("i::text")),
        "{e:?}"
    );
    db.drop_now().await;
}

/// What a hostile plugin tries, each refused with a clear error, and nothing changed.
#[tokio::test]
async fn hostile_sql_is_refused_by_postgresql_and_changes_nothing() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    pg.kv()
        .set("victim", "secret", b"kept".to_vec())
        .await
        .unwrap();
    let backend = pg.sql(SqlOptions::default());
    let a = open(&backend, "plugin-a").await;
    let b = open(&backend, "b").await;
    b.execute("CREATE TABLE notes (text TEXT)", &[])
        .await
        .unwrap();
    b.execute("INSERT INTO notes VALUES ('b''s note')", &[])
        .await
        .unwrap();
    let admin = db.admin().await;
    let admin_pid: i32 = admin
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    let denied = |sql: &str, e: &HostError| {
        assert!(
            matches!(e, HostError::Denied(m) if m.starts_with("database access denied: plugin 'plugin-a' may not ")),
            "{sql}: {e:?}"
        );
    };
    let hostile = [
        "SELECT * FROM plugin_b.notes",
        "INSERT INTO plugin_b.notes VALUES ('from a')",
        "DROP TABLE plugin_b.notes",
        "SELECT * FROM plugd.kv",
        "UPDATE plugd.kv SET value = 'x'",
        "SELECT * FROM plugd.plugins",
        "DELETE FROM plugd.plugin_audit",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "SELECT pg_read_file('/etc/passwd')",
        "ALTER ROLE plugd_plugin_plugin_a SUPERUSER",
        "ALTER ROLE plugd_plugin_plugin_a CONNECTION LIMIT -1",
        "ALTER ROLE plugd_plugin_plugin_a BYPASSRLS",
        "GRANT pg_read_server_files TO plugd_plugin_plugin_a",
        "DROP SCHEMA plugin_plugin_a CASCADE",
        "CREATE ROLE evil LOGIN",
        "GRANT USAGE ON SCHEMA plugin_b TO plugd_plugin_plugin_a",
        "CREATE TABLE public.x (v INT)",
        "CREATE TABLE plugd.x (v INT)",
        "DROP TABLE _plugd_migrations",
        "SELECT _plugd_record_migration('x', 'y') FROM plugin_b.notes",
    ];
    for sql in hostile {
        let e = a.execute(sql, &[]).await.unwrap_err();
        denied(sql, &e);
    }
    // No transaction outlives a call, even from inside a DO block (a COMMIT there ends the
    // block's own transaction; BEGIN is refused by PL/pgSQL).
    let _ = a.execute("DO $$ BEGIN COMMIT; END $$", &[]).await;
    let e = a
        .execute("DO $$ BEGIN EXECUTE 'BEGIN'; END $$", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, HostError::Failed(_) | HostError::Invalid(_)),
        "{e:?}"
    );
    let open = a
        .query(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(open.rows, vec![vec![SqlValue::Integer(0)]]);
    // RESET ROLE only goes back to the plugin's own login role.
    a.execute("RESET ROLE", &[]).await.unwrap();
    let who = a
        .query("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        who.rows,
        vec![vec![
            SqlValue::Text("plugd_plugin_plugin_a".into()),
            SqlValue::Text("plugd_plugin_plugin_a".into())
        ]]
    );
    let e = a
        .query(
            "SELECT pg_terminate_backend($1)",
            &[SqlValue::Integer(admin_pid.into())],
        )
        .await
        .unwrap_err();
    denied("pg_terminate_backend", &e);
    let e = a
        .with_timeout(Duration::from_millis(300))
        .execute("SELECT pg_sleep(60)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        HostError::Failed(
            "database.execute of plugin 'plugin-a' timed out after 300ms and was interrupted"
                .into()
        )
    );
    // Nothing changed.
    assert_eq!(
        pg.kv().get("victim", "secret").await.unwrap(),
        Some(b"kept".to_vec())
    );
    let notes = b.query("SELECT text FROM notes", &[]).await.unwrap();
    assert_eq!(notes.rows, vec![vec![SqlValue::Text("b's note".into())]]);
    admin
        .query_one("SELECT 1", &[])
        .await
        .expect("the admin connection lives");
    let role: (bool, bool, bool) = {
        let r = admin
            .query_one(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'plugd_plugin_plugin_a'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(role, (false, false, false));
    let evil = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = 'evil'", &[])
        .await
        .unwrap();
    assert!(evil.is_none());
    let public_x = admin
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'x'", &[])
        .await
        .unwrap();
    assert!(public_x.is_none());
    db.drop_now().await;
}

#[tokio::test]
async fn a_reopened_plugin_keeps_its_schema_and_reopens_with_a_fresh_password() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    let backend = pg.sql(SqlOptions::default());
    let first = open(&backend, "again").await;
    let admin = db.admin().await;
    let verifier = async || -> String {
        admin
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'plugd_plugin_again'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    let before = verifier().await;
    assert!(before.starts_with("SCRAM-SHA-256$4096:"), "{before}");
    first.execute("CREATE TABLE t (v INT)", &[]).await.unwrap();
    first
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    // A second host opens the same plugin (a fresh password): both keep working.
    let other = db.connect().await;
    let second = open(&other.sql(SqlOptions::default()), "again").await;
    assert_ne!(verifier().await, before, "a fresh password");
    let rows = second.query("SELECT v FROM t", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![SqlValue::Integer(1)]]);
    let rows = first.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![SqlValue::Integer(1)]]);
    assert!(
        first.location().starts_with(
            "schema plugin_again (role plugd_plugin_again) on PostgreSQL at postgres://"
        )
    );
    db.drop_now().await;
}

#[tokio::test]
async fn three_hosts_that_open_the_same_plugin_at_once_all_get_it() {
    let db = TestDb::new().await;
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let backend = db.connect().await.sql(SqlOptions::default());
        opens.spawn(async move {
            let d = Database::open(
                "fleet-notes",
                &backend,
                &[plugd_core::Migration::new(
                    "0001_notes.sql",
                    "CREATE TABLE IF NOT EXISTS notes (id SERIAL PRIMARY KEY, text TEXT NOT NULL);",
                )],
                Auditor::new("fleet-notes", None, None),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            d.execute("INSERT INTO notes (text) VALUES ('hi')", &[])
                .await
                .unwrap();
        });
    }
    opens.join_all().await;
    let backend = db.connect().await.sql(SqlOptions::default());
    let d = open(&backend, "fleet-notes").await;
    let rows = d.query("SELECT count(*) FROM notes", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![SqlValue::Integer(3)]]);
    let applied = d
        .query("SELECT count(*) FROM _plugd_migrations", &[])
        .await
        .unwrap();
    assert_eq!(applied.rows, vec![vec![SqlValue::Integer(1)]]);
    db.drop_now().await;
}
