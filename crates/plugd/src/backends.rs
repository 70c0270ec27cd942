//! The engines `backends:` names, connected and put into a [`HostBuilder`](plugd_core::HostBuilder):
//! PostgreSQL for storage, status and the `database` capability, Redis for the cache, NATS
//! JetStream for events between instances (feature `fleet`). What `backends:` leaves at its
//! default stays embedded (SQLite, memory, in-process).

use std::sync::Arc;
use std::time::Instant;

use plugd_manifest::{CacheEngine, EventsEngine, HostConfig, StoreEngine};

use crate::SetupError;

/// The fleet's engines a host was connected to: kept to ask them how they are (`plugd check`,
/// the fleet) and to share the NATS connection with fleet control.
#[derive(Debug, Clone, Default)]
pub struct Connected {
    /// PostgreSQL, when an engine of `backends` is `postgres`.
    pub postgres: Option<plugd_postgres::Postgres>,
    /// Redis, when `backends.cache` is `redis`.
    pub redis: Option<Arc<plugd_redis::RedisCache>>,
    /// The NATS connection, when `backends.events` is `nats` or `fleet.enabled`.
    pub nats: Option<async_nats::Client>,
}

/// Why an engine of `backends` could not be reached or set up: which one, and why (a URL in it
/// has no password).
#[derive(Debug, thiserror::Error)]
#[error("backends.{engine}: {message}")]
pub struct BackendSetupError {
    /// `postgres`, `redis` or `nats`.
    pub engine: &'static str,
    /// What went wrong.
    pub message: String,
}

fn failed(engine: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> SetupError {
    move |e| {
        SetupError::Backend(BackendSetupError {
            engine,
            message: e.to_string(),
        })
    }
}

/// `builder` with the embedded defaults ([`with_embedded_backends`](crate::with_embedded_backends)),
/// then each engine `backends` names in their place, connected (each within its
/// `connect_timeout`): PostgreSQL (`storage`, `status` with this instance's rows, `database`),
/// Redis (`cache`), NATS JetStream (`events`). Feature `fleet`.
pub async fn connect_backends(
    builder: plugd_core::HostBuilder,
    config: &HostConfig,
) -> Result<(plugd_core::HostBuilder, Connected), SetupError> {
    let mut builder = crate::with_embedded_backends(builder, config)?;
    let b = &config.backends;
    let mut connected = Connected::default();
    let uses_postgres = [b.storage, b.status, b.database].contains(&StoreEngine::Postgres);
    if uses_postgres && let Some(settings) = &b.postgres {
        let mut options = plugd_postgres::PostgresOptions::new(settings.url.clone());
        options.pool_size = settings.pool_size;
        options.connect_timeout = settings.connect_timeout;
        options.timeout = settings.timeout;
        options.schema = settings.schema.clone();
        let pg = plugd_postgres::Postgres::connect(&options)
            .await
            .map_err(|e| failed("postgres")(&e))?;
        if b.storage == StoreEngine::Postgres {
            builder = builder.kv(Arc::new(pg.kv()));
        }
        if b.status == StoreEngine::Postgres {
            builder = builder.status_sink(Arc::new(pg.status(&config.instance_name())));
        }
        if b.database == StoreEngine::Postgres {
            builder = builder.sql(Arc::new(pg.sql(plugd_postgres::SqlOptions::default())));
        }
        connected.postgres = Some(pg);
    }
    if b.cache == CacheEngine::Redis
        && let Some(settings) = &b.redis
    {
        let options = plugd_redis::RedisOptions {
            url: settings.url.clone(),
            pool_size: settings.pool_size,
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            prefix: settings.prefix.clone(),
            acl: match settings.acl {
                plugd_manifest::RedisAcl::Auto => plugd_redis::AclMode::Auto,
                plugd_manifest::RedisAcl::On => plugd_redis::AclMode::On,
                plugd_manifest::RedisAcl::Off => plugd_redis::AclMode::Off,
            },
        };
        let redis = Arc::new(
            plugd_redis::RedisCache::connect(&options)
                .await
                .map_err(|e| failed("redis")(&e))?,
        );
        builder = builder.cache(redis.clone());
        connected.redis = Some(redis);
    }
    if (b.events == EventsEngine::Nats || config.fleet.enabled)
        && let Some(settings) = &b.nats
    {
        if b.events == EventsEngine::Nats {
            let options = plugd_nats::NatsOptions {
                url: settings.url.clone(),
                connect_timeout: settings.connect_timeout,
                timeout: settings.timeout,
                stream: settings.stream.clone(),
                subject_prefix: settings.subject_prefix.clone(),
                instance: config.instance_name(),
                max_age: settings.max_age,
                ..plugd_nats::NatsOptions::default()
            };
            let transport = plugd_nats::NatsTransport::connect(&options)
                .await
                .map_err(|e| failed("nats")(&e))?;
            connected.nats = Some(transport.client().clone());
            builder = builder.events(Arc::new(transport));
        } else {
            connected.nats = Some(
                plugd_fleet::connect(settings)
                    .await
                    .map_err(|e| failed("nats")(&e))?,
            );
        }
    }
    Ok((builder, connected))
}

/// [`host_from_config`](crate::host_from_config) with the engines of `backends` connected
/// ([`connect_backends`]): the host `plugd serve` runs, and what it is connected to. Features
/// `wasm`, `sqlite` and `fleet`.
pub async fn connect_host(config: HostConfig) -> Result<(plugd_core::Host, Connected), SetupError> {
    let runtime = crate::wasm_runtime(&config)?;
    let (builder, connected) = connect_backends(plugd_core::Host::builder(), &config).await?;
    Ok((builder.config(config).loader(runtime).build()?, connected))
}

/// How one engine of `backends` answered `plugd check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineCheck {
    /// `postgres`, `redis` or `nats`.
    pub engine: &'static str,
    /// Its address, without a password.
    pub server: String,
    /// Whether it answered.
    pub ok: bool,
    /// How long connecting and asking took, in ms; or why it failed.
    pub detail: String,
}

/// Connect to every engine `backends` names and ask it how it is (`plugd check`). The embedded
/// defaults need no check and are not listed.
pub async fn check_backends(config: &HostConfig) -> Vec<EngineCheck> {
    let mut out = Vec::new();
    let b = &config.backends;
    let timed = |engine, server: &str, started: Instant, result: Result<(), String>| EngineCheck {
        engine,
        server: plugd_manifest::redact_url(server),
        ok: result.is_ok(),
        detail: match result {
            Ok(()) => format!(
                "answered in {:.0} ms",
                started.elapsed().as_secs_f64() * 1000.0
            ),
            Err(e) => e,
        },
    };
    if let Some(s) = &b.postgres {
        let started = Instant::now();
        let mut options = plugd_postgres::PostgresOptions::new(s.url.clone());
        options.connect_timeout = s.connect_timeout;
        options.timeout = s.timeout;
        options.schema = s.schema.clone();
        options.pool_size = 1;
        let result = match plugd_postgres::Postgres::connect(&options).await {
            Ok(pg) => pg.ping().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push(timed("postgres", &s.url, started, result));
    }
    if let Some(s) = &b.redis {
        let started = Instant::now();
        let options = plugd_redis::RedisOptions {
            url: s.url.clone(),
            pool_size: 1,
            connect_timeout: s.connect_timeout,
            timeout: s.timeout,
            prefix: s.prefix.clone(),
            acl: plugd_redis::AclMode::Off,
        };
        let result = match plugd_redis::RedisCache::connect(&options).await {
            Ok(r) => r.ping().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push(timed("redis", &s.url, started, result));
    }
    if let Some(s) = &b.nats {
        let started = Instant::now();
        let result = match plugd_fleet::connect(s).await {
            Ok(client) if client.server_info().jetstream => Ok(()),
            Ok(client) => Err(format!(
                "the server ({}) does not have JetStream enabled (start nats-server with -js)",
                client.server_info().version
            )),
            Err(e) => Err(e.to_string()),
        };
        out.push(timed("nats", &s.url, started, result));
    }
    out
}
