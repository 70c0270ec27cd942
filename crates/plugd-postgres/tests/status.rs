//! The status tables in PostgreSQL, shared by a fleet: each instance writes and marks only its
//! own rows, a report is written all or nothing, and the fleet view lists every instance.

mod support;

use std::sync::Arc;

use plugd_core::{Host, InitContext, Plugin, PluginError};
use plugd_manifest::{Format, Manifest};
use support::TestDb;

struct Quiet;

#[async_trait::async_trait]
impl Plugin for Quiet {
    async fn init(&self, _: &mut InitContext<'_>) -> Result<(), PluginError> {
        Ok(())
    }
}

fn manifest(name: &str) -> Manifest {
    Manifest::from_str(
        &format!("name: {name}\nversion: 1.2.3\ndescription: d\nauthor: a\n"),
        Format::Yaml,
        None,
    )
    .unwrap()
}

async fn host(status: plugd_postgres::PostgresStatus, plugins: &[&str]) -> Host {
    let mut builder = Host::builder().status_sink(Arc::new(status));
    for name in plugins {
        builder = builder.native(manifest(name), Quiet);
    }
    let host = builder.build().unwrap();
    host.start().await.unwrap();
    host
}

fn view(fleet: &[plugd_postgres::FleetPlugin]) -> Vec<(String, String, String, String)> {
    fleet
        .iter()
        .map(|p| {
            (
                p.instance.clone(),
                p.plugin.clone(),
                p.version.clone(),
                p.status.clone(),
            )
        })
        .collect()
}

fn row(instance: &str, plugin: &str, status: &str) -> (String, String, String, String) {
    (
        instance.into(),
        plugin.into(),
        "1.2.3".into(),
        status.into(),
    )
}

#[tokio::test]
async fn each_instance_writes_and_unloads_only_its_own_rows() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    let a = host(pg.status("a"), &["shared", "only-a"]).await;
    let b = host(pg.status("b"), &["shared"]).await;
    let batch = a.write_status().await.unwrap();
    assert_eq!(batch.plugins, 2);
    b.write_status().await.unwrap();
    assert_eq!(
        view(&pg.fleet_plugins().await.unwrap()),
        [
            row("a", "only-a", "running"),
            row("a", "shared", "running"),
            row("b", "shared", "running"),
        ]
    );
    // b no longer holds `shared`: only b's row is marked.
    b.unload_plugin("shared", true).await.unwrap();
    b.write_status().await.unwrap();
    a.unload_plugin("only-a", true).await.unwrap();
    a.write_status().await.unwrap();
    let fleet = pg.fleet_plugins().await.unwrap();
    assert_eq!(
        view(&fleet),
        [
            row("a", "only-a", "unloaded"),
            row("a", "shared", "running"),
            row("b", "shared", "unloaded"),
        ]
    );
    assert!(
        fleet
            .iter()
            .all(|p| p.updated_at.elapsed().unwrap().as_secs() < 60)
    );
    // Events carry their instance.
    let admin = db.admin().await;
    let instances: Vec<String> = admin
        .query(
            "SELECT DISTINCT instance FROM plugd.plugin_metrics ORDER BY instance",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(instances, ["a", "b"]);
    a.shutdown().await;
    b.shutdown().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_report_that_fails_leaves_nothing_and_the_next_one_writes_it_all() {
    let db = TestDb::new().await;
    let pg = db.connect().await;
    let admin = db.admin().await;
    // Events fail to insert while the trigger is there: the report's plugin rows, written
    // before them in the same transaction, must not stay.
    admin
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON plugd.plugin_metrics
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let a = host(pg.status("a"), &["one"]).await;
    let e = a.write_status().await.unwrap_err().to_string();
    assert!(e.contains("refused by the test"), "{e}");
    assert!(e.contains("PostgreSQL at postgres://"), "{e}");
    assert!(pg.fleet_plugins().await.unwrap().is_empty());
    admin
        .batch_execute("DROP TRIGGER refuse ON plugd.plugin_metrics")
        .await
        .unwrap();
    let batch = a.write_status().await.unwrap();
    assert_eq!(batch.plugins, 1);
    assert!(
        batch.metric_events >= 1,
        "the events of the failed report: {batch:?}"
    );
    assert_eq!(
        view(&pg.fleet_plugins().await.unwrap()),
        [row("a", "one", "running")]
    );
    a.shutdown().await;
    db.drop_now().await;
}
