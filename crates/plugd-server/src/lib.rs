//! The HTTP host of plugd, on axum.
//!
//! Every request outside `/admin`, `/healthz` and `/metrics` goes through the host's
//! [`Dispatcher`](plugd_core::Dispatcher): pre_request hooks, the plugin route, and the response
//! hooks. Those three paths never pass through plugins, and plugins never see admin credentials.
//! [`admin_api`] is the admin API and dashboard alone, to mount under any prefix of an axum
//! application.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let host = plugd_core::Host::builder().build()?;
//! host.start().await?;
//! let admin = plugd_server::AdminToken::resolve(host.config())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! plugd_server::serve(host, admin, listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod access_log;
mod admin;
mod app;
mod control;
mod fleet;
mod layer;
mod listener;
mod tls;
mod tower_plugin;

pub use access_log::{ACCESS_LOG_TARGET, AccessLog, AccessLogLayer};
pub use admin::ApiError;
pub use admin::{AdminToken, AdminTokenError, TokenSource, token_file};
pub use app::{
    admin_api, admin_router, health_router, openapi, router, serve, serve_router, serve_with_admin,
};
pub use control::{FleetControl, FleetRefusal};
pub use layer::{NoRoute, PlugdLayer, PlugdService, ResponseFuture, dispatch_service};
pub use tls::{TlsError, check_tls};
pub use tower_plugin::{router_plugin, service_plugin};
