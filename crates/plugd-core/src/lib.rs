//! The plugd plugin manager.
//!
//! `plugd-core` loads plugins (through a [`Loader`] an adapter provides, such as the wasm runtime),
//! orders them by dependencies and priority, runs their lifecycle, keeps their status, and
//! dispatches requests through their hooks and routes. It knows nothing of HTTP servers or of
//! WebAssembly: a request is an [`Exchange`], a plugin is anything that implements [`Plugin`].
//!
//! ```
//! use plugd_core::{Host, Plugin};
//! # tokio_test();
//! # fn tokio_test() {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let dir = tempfile_dir();
//! let host = Host::builder()
//!     .data_dir(&dir)
//!     .build()
//!     .unwrap();
//! host.start().await.unwrap();
//! assert!(host.list_plugins().is_empty());
//! host.shutdown().await;
//! # });
//! # }
//! # fn tempfile_dir() -> std::path::PathBuf {
//! #     let d = std::env::temp_dir().join(format!("plugd-doc-{}", std::process::id()));
//! #     std::fs::create_dir_all(&d).unwrap(); d
//! # }
//! ```

#![warn(missing_docs)]

mod access;
mod admission;
mod assets;
mod audit;
mod cache;
mod call;
mod capabilities;
mod check;
mod cpu;
mod database;
mod dispatch;
mod error;
mod events;
mod exchange;
mod exec;
#[cfg(any(test, feature = "testing"))]
mod fault;
mod gate;
mod health;
mod host;
mod host_config;
mod kv;
mod loaded;
mod loader;
mod logs;
mod metrics;
mod native;
mod order;
mod outbound;
mod plugin;
pub mod private;
mod registrations;
mod services;
mod state;
mod status;
mod supervise;
mod tasks;
mod threshold;
mod watch;

pub use access::RequestAccess;
pub use admission::{Admission, Admitted, NoAdmission, Refused};
pub use assets::content_type;
pub use audit::{AUDIT_CAPACITY, AuditEntry, AuditLog, Auditor, MAX_AUDIT_DETAIL_BYTES};
pub use cache::{
    CacheBackend, CacheQuota, CacheSetError, MAX_BYTES_PER_PLUGIN, MAX_ENTRIES_PER_PLUGIN,
    MemoryCache, PluginCache,
};
pub use capabilities::{Capabilities, CapabilityError, CapabilityOptions};
pub use check::{CheckReport, Checked, ConfigProblems, GrantReport, check_config, check_entry};
pub use cpu::{CPU_WINDOW, CpuStatus, Throttle};
pub use database::{
    Database, DatabaseOpenError, Migration, ResultLimits, Rows, SqlBackend, SqlConnection,
    SqlError, SqlValue, Statement,
};
pub use dispatch::{DispatchTable, Dispatcher, Entered, POST_RESPONSE_TASKS};
pub use error::{BackendError, BoxError, HostError, LoadError, PluginError};
pub use events::{
    BoxFuture, Deliver, Delivered, Delivery, Event, EventBus, EventTransport, Inbox,
    MAX_PAYLOAD_BYTES, MemoryHub, Publisher, QUEUE_BYTES, QUEUE_CAPACITY, SubscriptionInfo,
    topic_matches,
};
pub use exchange::{
    Exchange, FRAMING_HEADERS, Identity, InvalidResponse, MAX_HEADER_BYTES, MAX_HEADER_VALUE_BYTES,
    MAX_HEADERS, MAX_LOCALS, MAX_LOCALS_BYTES, Refusal, Response, Stage, is_framing_header,
};
pub use exec::{CommandOutput, CommandRunner, CommandSpec, Exec, RunError};
pub use gate::{Gate, GateError, OwnedPass, Pass};
pub use health::{Health, HealthReport};
pub use host::{
    ConfigReloadReport, HookInfo, Host, HostBuilder, PluginHealth, PluginInfo, PluginMetricsReport,
    ReloadCounters, ReloadOutcome,
};
pub use host::{HealthSummary, PluginSummary, Readiness};
pub use host_config::HostConfigView;
pub use kv::{
    KvBackend, KvUsage, MAX_KEY_BYTES, MAX_LIST_KEYS, MAX_PENDING_WRITES, MAX_VALUE_BYTES,
    MemoryKv, PluginStore, StorageQuota,
};
pub use loader::{Loader, LoaderContext};
pub use logs::{
    LogLevel, LogLimits, MAX_FIELD_NAME_BYTES, MAX_FIELD_VALUE_BYTES, MAX_FIELDS,
    MAX_MESSAGE_BYTES, MAX_OUTPUT_LINE_BYTES, OutputLines, OutputStream, PluginLog, clean_text,
};
pub use metrics::{
    BUCKETS_SECONDS, CUSTOM_PREFIX, DurationHistogram, MAX_LABEL_VALUE_BYTES, MAX_LABELS,
    MAX_SERIES_PER_PLUGIN, MetricSample, PLUGIN_BUCKETS, PluginMetrics, RESERVED_SUFFIXES,
};
pub use native::{Flow, NativePlugin, PluginContext, ServiceCall};
pub use order::{OrderError, OrderNode, dependency_graph, order_nodes, start_order};
pub use outbound::{
    AllowRule, AllowRuleError, HttpClient, HttpError, HttpRequest, HttpResponse, IncomingResponse,
    NetworkAllow, Outbound, OutgoingRequest, SendError,
};
pub use plugin::{Action, InitContext, Plugin, Registrar, Resources};
pub use private::{FileError, make_private_dir};
pub use registrations::{
    MAX_GLOB_BYTES, MAX_GLOBS, MAX_MIDDLEWARE, MAX_ROUTE_BYTES, MAX_ROUTES, MAX_SUBSCRIPTIONS,
    MAX_TIMERS, MIN_TIMER_INTERVAL, MiddlewareReg, Registrations, RouteOptions, RouteReg,
    glob_matches,
};
pub use services::Services;
pub use state::{
    DisabledBy, ErrorRecord, HookMetrics, MAX_ERROR_BYTES, Phase, PluginState, Status,
};
pub use status::{
    MemoryStatus, MetricEvent, PluginStatus, StatusBatch, StatusReport, StatusSink,
    events_by_plugin,
};
pub use supervise::{ERROR_THRESHOLD_TOPIC, SupervisionStatus};
pub use tasks::Tasks;
pub use threshold::{ThresholdStatus, WINDOW_SLOTS};
pub use watch::{Change, FileWatcher, PathSink, Watch, WatchError, WatchTarget, watch};

pub use plugd_manifest::{ExecGrant, ExecLimits, ExecRule, HookType, Permission};

/// The conformance suites every backend of a capability runs against itself (feature
/// `testing`): `plugd_core::testing::kv_backend(Arc::new(MyKv::new()))` in its tests.
///
/// ```text
/// kv_backend       KvBackend         plugd-sqlite, plugd-postgres, MemoryKv
/// sql_backend      SqlBackend        plugd-sqlite, plugd-postgres
/// cache_backend    CacheBackend      MemoryCache
/// event_transport  EventTransport    MemoryHub
/// http_client      HttpClient        plugd-std (reqwest)
/// command_runner   CommandRunner     plugd-std (process groups)
/// file_watcher     FileWatcher       plugd-std (notify)
/// ```
///
/// [`testing::CutProxy`] cuts a backend's connections to its server for the fault tests.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::fault::CutProxy;

    pub use crate::cache::conformance::cache_backend;
    pub use crate::database::conformance::sql_backend;
    pub use crate::events::conformance::event_transport;
    pub use crate::exec::conformance::command_runner;
    pub use crate::kv::conformance::kv_backend;
    pub use crate::outbound::conformance::http_client;
    pub use crate::watch::conformance::file_watcher;
}

/// Limits of the `network` capability (outbound HTTP).
pub mod outbound_limits {
    pub use crate::outbound::{DEFAULT_TIMEOUT, MAX_REDIRECTS, MAX_RESPONSE_BYTES};
}

/// Limits of the `exec` capability.
pub mod exec_limits {
    pub use crate::exec::{DEFAULT_TIMEOUT, MAX_OUTPUT_BYTES, PATH};
}

/// Limits of the `database` capability.
pub mod database_limits {
    pub use crate::database::{
        DEFAULT_TIMEOUT, MAX_DATABASE_BYTES, MAX_RESULT_BYTES, MAX_ROWS, MAX_SQL_BYTES,
        MAX_TRANSACTION_STATEMENTS, MAX_VALUE_BYTES, MIGRATION_TIMEOUT, MIGRATIONS_TABLE,
    };
}
