//! A fresh database per test on the test server (`PLUGD_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`), so that tests running at once never meet.

#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use plugd_postgres::{Postgres, PostgresOptions};
use rand::Rng;

/// The test server's URL.
pub fn server_url() -> String {
    std::env::var("PLUGD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A random lowercase name with `prefix`.
pub fn random_name(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(10)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{prefix}{suffix}")
}

/// A connection to the test server as its admin user, failing (not skipping) when it is down.
pub async fn admin() -> tokio_postgres::Client {
    let url = server_url();
    let config = tokio_postgres::Config::from_str(&url).expect("PLUGD_TEST_POSTGRES");
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    .unwrap_or_else(|_| panic!("{}", unreachable(&url)))
    .unwrap_or_else(|e| panic!("{}: {e}", unreachable(&url)));
    tokio::spawn(connection);
    client
}

fn unreachable(url: &str) -> String {
    format!(
        "PostgreSQL is unreachable at {} (PLUGD_TEST_POSTGRES): run scripts/services.sh",
        plugd_postgres::redact(url)
    )
}

/// A database made for one test; dropped by [`TestDb::drop_now`] at its end (a failed test
/// leaves it for inspection).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh empty database.
    pub async fn new() -> TestDb {
        let name = random_name("plugd_test_");
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let mut url = url::Url::parse(&server_url()).expect("a URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            name,
            url: url.to_string(),
        }
    }

    /// Options for this database, with short timeouts.
    pub fn options(&self) -> PostgresOptions {
        let mut options = PostgresOptions::new(self.url.clone());
        options.connect_timeout = Duration::from_secs(3);
        options.timeout = Duration::from_secs(5);
        options.pool_size = 4;
        options
    }

    /// Connected, with its host schema.
    pub async fn connect(&self) -> Postgres {
        Postgres::connect(&self.options())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A connection to this database as the admin user.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let config = tokio_postgres::Config::from_str(&self.url).expect("a URL");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    }

    /// Drop the database (its connections ended first).
    pub async fn drop_now(self) {
        let _ = admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}
