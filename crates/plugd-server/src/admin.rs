//! Admin security: the bearer token and the admin routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::rejection::{JsonRejection, NestedPathRejection, QueryRejection};
use axum::extract::{NestedPath, OriginalUri, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plugd_core::{
    AuditEntry, ConfigReloadReport, Host, LoadError, PluginHealth, PluginInfo, PluginMetricsReport,
    ReloadOutcome, SubscriptionInfo,
};
use plugd_manifest::HostConfig;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// What every handler of both listeners gets: the host, the admin token and the server's
/// settings.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) host: Host,
    pub(crate) admin: AdminToken,
    pub(crate) body_limit: usize,
    /// `admin.listen: shared`: the dashboard shares this origin with the plugins.
    pub(crate) shared_origin: bool,
    /// The admin API's OpenAPI document as JSON text (built from these handlers by the router),
    /// for the API mounted at the given prefix.
    pub(crate) openapi: fn(&str) -> std::borrow::Cow<'static, str>,
}

/// Where the admin token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `admin.token` in the host config.
    Config,
    /// The `PLUGD_ADMIN_TOKEN` environment variable.
    Environment,
    /// Generated at start and written to this file (mode 0600).
    Generated(PathBuf),
}

/// The admin API's bearer token.
#[derive(Clone)]
pub struct AdminToken {
    token: String,
    source: TokenSource,
    /// The fleet this instance belongs to, if any: the admin API shows it and tells it of the
    /// reloads and config changes made here.
    fleet: Option<std::sync::Arc<dyn crate::control::FleetControl>>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("token", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// The file a generated token is written to.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

impl AdminToken {
    /// A fixed token (tests, embedding applications).
    pub fn new(token: impl Into<String>) -> Result<AdminToken, AdminTokenError> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(AdminTokenError::Empty);
        }
        Ok(AdminToken {
            token,
            source: TokenSource::Config,
            fleet: None,
        })
    }

    /// `PLUGD_ADMIN_TOKEN`, else `admin.token` (the environment wins over the file), else a new
    /// random token written to
    /// `<data_dir>/admin-token` with mode 0600.
    pub fn resolve(config: &HostConfig) -> Result<AdminToken, AdminTokenError> {
        AdminToken::resolve_with(config, |name| std::env::var(name).ok())
    }

    /// [`AdminToken::resolve`] with the environment read through `env` (tests give their own).
    fn resolve_with(
        config: &HostConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AdminToken, AdminTokenError> {
        if let Some(t) = env("PLUGD_ADMIN_TOKEN")
            && !t.trim().is_empty()
        {
            return Ok(AdminToken {
                token: t,
                source: TokenSource::Environment,
                fleet: None,
            });
        }
        if let Some(t) = config
            .admin
            .token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(AdminToken {
                token: t.to_string(),
                source: TokenSource::Config,
                fleet: None,
            });
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = token_file(&config.data_dir);
        write_private(&path, &token)?;
        Ok(AdminToken {
            token,
            source: TokenSource::Generated(path),
            fleet: None,
        })
    }

    /// This token's admin API with the fleet this instance belongs to: `GET /fleet`, rollouts,
    /// and every reload or config change made through it told to the other instances.
    pub fn with_fleet(mut self, fleet: std::sync::Arc<dyn crate::control::FleetControl>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The fleet this instance belongs to, if any.
    pub fn fleet(&self) -> Option<&std::sync::Arc<dyn crate::control::FleetControl>> {
        self.fleet.as_ref()
    }

    /// After a reload through this admin API: tell the fleet, if any. A failure is logged, not
    /// the caller's: the change is in force here.
    pub(crate) async fn announce_version(&self, plugin: &str) {
        if let Some(fleet) = &self.fleet
            && let Err(e) = fleet.announce_version(plugin).await
        {
            tracing::error!(plugin, error = %e.message, "the reload was not told to the fleet: the other instances keep their version");
        }
    }

    /// After a config change through this admin API: tell the fleet, if any.
    pub(crate) async fn announce_config(
        &self,
        plugin: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(fleet) = &self.fleet
            && let Err(e) = fleet.announce_config(plugin, config).await
        {
            tracing::error!(plugin, error = %e.message, "the config change was not told to the fleet: the other instances keep theirs");
        }
    }

    /// Where the token came from.
    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    /// The token itself (for the CLI and tests).
    pub fn secret(&self) -> &str {
        &self.token
    }

    pub(crate) fn accepts(&self, presented: &str) -> bool {
        presented.as_bytes().ct_eq(self.token.as_bytes()).into()
    }
}

/// Why the admin token could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// An empty (or all-blank) token was given.
    #[error("the admin token must not be empty")]
    Empty,
    /// A generated token could not be written to its file.
    #[error("writing the admin token to {}: {source}", .path.display())]
    Write {
        /// The file (or its temporary, or its folder).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stale temporary of the token file is in the way.
    #[error("cannot remove the stale {}: {source}; remove it and start again", .path.display())]
    Stale {
        /// The temporary.
        path: PathBuf,
        /// Why it could not be removed.
        source: std::io::Error,
    },
    /// The token's folder could not be made private.
    #[error("{0}")]
    Folder(String),
}

/// Write `contents` to `path` with mode 0600 from the start: through a temporary created
/// afresh (`create_new`, after removing a stale one, which would keep its owner and mode), then
/// a rename. A missing parent folder is created 0700.
fn write_private(path: &Path, contents: &str) -> Result<(), AdminTokenError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        plugd_core::make_private_dir(dir).map_err(|e| AdminTokenError::Folder(e.to_string()))?;
    }
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(AdminTokenError::Stale { path: tmp, source });
        }
        _ => {}
    }
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AdminTokenError::Write { path, source }
    };
    let mut options = std::fs::OpenOptions::new();
    // create_new: fails rather than follow a link or reuse a file that appeared meanwhile.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(failed(&tmp))?;
    use std::io::Write;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(failed(&tmp))?;
    std::fs::rename(&tmp, path).map_err(failed(path))
}

// ---------------------------------------------------------------------------------------------
// The admin API. Every handler carries a `#[utoipa::path]` annotation and is registered through
// `utoipa_axum::routes!` in `app::admin_operations`, so the OpenAPI document (`openapi.json`) and
// the router come from the same list and cannot drift apart.

/// Every error of plugd's own endpoints: a machine-readable kind and a message for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// The HTTP status as a snake_case word: `unauthorized`, `not_found`, `bad_request`, …
    #[schema(example = "not_found")]
    pub error: String,
    /// What went wrong, and where.
    #[schema(example = "plugin not found: 'nope'")]
    pub message: String,
}

/// A JSON error in the shape every plugd endpoint uses.
pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    (
        status,
        Json(ApiError {
            error: kind,
            message: message.into(),
        }),
    )
        .into_response()
}

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Middleware: the admin routes need `Authorization: Bearer <token>`.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(request.headers()) {
        Some(t) if state.admin.accepts(t) => next.run(request).await,
        Some(_) => unauthorized("the admin token is wrong"),
        None => unauthorized(
            "this endpoint needs 'Authorization: Bearer <token>' (PLUGD_ADMIN_TOKEN, admin.token or <data_dir>/admin-token)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = json_error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"plugd admin\""),
    );
    r
}

/// A body that could not be read: 413 when too large, 415 without a JSON content type, 400 for
/// anything else (syntax or shape), always with a JSON message.
pub(crate) fn bad_body(e: JsonRejection) -> Response {
    let status = match e.status() {
        s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
        _ => StatusCode::BAD_REQUEST,
    };
    json_error(status, format!("request body: {}", e.body_text()))
}

/// A query string that could not be read: 400 with a JSON message.
fn bad_query(e: QueryRejection) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        format!("query string: {}", e.body_text()),
    )
}

fn not_found(name: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        LoadError::UnknownPlugin(name.to_string()).to_string(),
    )
}

/// `value` as JSON, or the unknown-plugin 404 for `name` when there is none.
fn json_or_404<T: Serialize>(name: &str, value: Option<T>) -> Response {
    match value {
        Some(v) => Json(v).into_response(),
        None => not_found(name),
    }
}

/// One plugin with its place in the dependency graph.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginDetail {
    #[serde(flatten)]
    info: PluginInfo,
    /// The loaded plugins it depends on.
    depends_on: Vec<String>,
    /// The loaded plugins that depend on it.
    dependents: Vec<String>,
}

fn details(state: &AppState, infos: Vec<PluginInfo>) -> Vec<PluginDetail> {
    let graph = state.host.dependency_graph();
    infos
        .into_iter()
        .map(|info| {
            let dependents = graph
                .iter()
                .filter(|(_, deps)| deps.contains(&info.name))
                .map(|(name, _)| name.clone())
                .collect();
            PluginDetail {
                depends_on: graph.get(&info.name).cloned().unwrap_or_default(),
                dependents,
                info,
            }
        })
        .collect()
}

fn detail(state: &AppState, name: &str) -> Response {
    let detail = state
        .host
        .plugin_info(name)
        .map(|info| details(state, vec![info]).remove(0));
    json_or_404(name, detail)
}

/// List every plugin, in start order (failed ones included).
#[utoipa::path(
    get, path = "/plugins", tag = "plugins",
    responses(
        (status = 200, description = "Every plugin, in start order", body = Vec<PluginDetail>),
        (status = 401, description = "No or wrong admin token", body = ApiError),
    )
)]
pub(crate) async fn list_plugins(State(state): State<AppState>) -> Response {
    let infos = state.host.list_plugins();
    Json(details(&state, infos)).into_response()
}

/// One plugin: info, status, errors, hook metrics, health, dependencies.
#[utoipa::path(
    get, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin", body = PluginDetail),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
    )
)]
pub(crate) async fn get_plugin(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    detail(&state, &name)
}

/// A plugin's health; a running plugin is asked now, within its call timeout.
#[utoipa::path(
    get, path = "/plugins/{name}/health", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "Its health", body = PluginHealth),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
    )
)]
pub(crate) async fn get_health(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    json_or_404(&name, state.host.plugin_health(&name).await)
}

#[utoipa::path(
    get, path = "/plugins/{name}/metrics", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "Its metrics (the contract's GetPluginMetrics): load, errors, hooks, routes, its own series", body = PluginMetricsReport),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
    )
)]
pub(crate) async fn get_metrics(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    json_or_404(&name, state.host.plugin_metrics(&name))
}

/// Every plugin's health as last polled, with the overall status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthOverview {
    /// `ok` or `degraded`.
    #[schema(example = "ok")]
    status: &'static str,
    /// Every plugin's health, by name.
    plugins: BTreeMap<String, PluginHealth>,
}

/// Every plugin's health as last polled (no plugin is called), with the overall status.
#[utoipa::path(
    get, path = "/health", tag = "host",
    responses(
        (status = 200, description = "Overall and per-plugin health", body = HealthOverview),
        (status = 401, description = "No or wrong admin token", body = ApiError),
    )
)]
pub(crate) async fn all_health(State(state): State<AppState>) -> Response {
    Json(HealthOverview {
        status: state.host.health_summary().status,
        plugins: state.host.health_snapshot(),
    })
    .into_response()
}

/// Start a disabled (or failed, or given-up) plugin again.
#[utoipa::path(
    post, path = "/plugins/{name}/enable", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin, enabled", body = PluginDetail),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
        (status = 409, description = "It cannot be enabled now (for example a dependency is missing)", body = ApiError),
        (status = 422, description = "It failed to load, initialize or start", body = ApiError),
    )
)]
pub(crate) async fn enable(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.enable_plugin(&name).await {
        Ok(()) => detail(&state, &name),
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ LoadError::Invalid(_)) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Stop serving a plugin until it is enabled again (its routes answer 404, its hooks are skipped).
#[utoipa::path(
    post, path = "/plugins/{name}/disable", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin, disabled", body = PluginDetail),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
        (status = 500, description = "Stopping it failed", body = ApiError),
    )
)]
pub(crate) async fn disable(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.disable_plugin(&name).await {
        Ok(()) => detail(&state, &name),
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Hot-reload a plugin: load its new version from its folder and swap it in without dropping a
/// request; a failure rolls back to the previous version.
#[utoipa::path(
    post, path = "/plugins/{name}/reload", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "What the reload did", body = ReloadOutcome),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
        (status = 409, description = "The plugin cannot be reloaded (no `hot_reload` capability, or not running)", body = ApiError),
        (status = 422, description = "The new version failed; the message says whether the previous one serves again", body = ApiError),
    )
)]
pub(crate) async fn reload(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.reload_plugin(&name).await {
        Ok(outcome) => {
            state.admin.announce_version(&name).await;
            Json(outcome).into_response()
        }
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ (LoadError::NotReloadable(_) | LoadError::Invalid(_))) => {
            json_error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// The least level of a plugin's own log lines that the host keeps.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogLevelBody {
    /// `trace`, `debug`, `info`, `warn` or `error`: lines under it are dropped before the
    /// plugin's log rate counts them.
    #[schema(example = "warn", pattern = "^(trace|debug|info|warn|error)$")]
    level: String,
}

/// The least level of a plugin's own log lines kept (its `log_level:`, or the last one set).
#[utoipa::path(
    get, path = "/plugins/{name}/log-level", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The level in force", body = LogLevelBody),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
    )
)]
pub(crate) async fn get_log_level(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let level = state.host.log_level(&name).map(|l| LogLevelBody {
        level: l.as_str().to_string(),
    });
    json_or_404(&name, level)
}

/// Set the least level of a plugin's own log lines kept, at once and until the next change or
/// restart of the host (a reload keeps it).
#[utoipa::path(
    put, path = "/plugins/{name}/log-level", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    request_body(content = LogLevelBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The level now in force", body = LogLevelBody),
        (status = 400, description = "The body is not `{\"level\": \"<level>\"}` with a known level", body = ApiError),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
        (status = 413, description = "The body is over 64 KiB", body = ApiError),
        (status = 415, description = "The body is not `application/json`", body = ApiError),
    )
)]
pub(crate) async fn put_log_level(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<LogLevelBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    let level = match body.level.parse::<plugd_manifest::LogLevel>() {
        Ok(l) => l,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };
    match state.host.set_log_level(&name, level) {
        Ok(()) => get_log_level(State(state), UrlPath(name)).await,
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A config reload that refused some changes: the error, and what was applied.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigReloadRefused {
    /// `unprocessable_entity`.
    error: &'static str,
    /// Each refused change, with why.
    message: String,
    /// What was applied and what was refused.
    report: ConfigReloadReport,
}

/// Read the host config file again and apply what changed, plugin by plugin.
#[utoipa::path(
    post, path = "/config/reload", tag = "host",
    responses(
        (status = 200, description = "Every change was applied", body = ConfigReloadReport),
        (status = 400, description = "The config file cannot be read or is invalid", body = ApiError),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 422, description = "Some changes were refused; the rest was applied", body = ConfigReloadRefused),
    )
)]
pub(crate) async fn reload_config(State(state): State<AppState>) -> Response {
    match state.host.reload_config_file().await {
        Ok(report) if report.is_clean() => Json(report).into_response(),
        Ok(report) => {
            let message = report
                .rejected
                .iter()
                .map(|(plugin, why)| format!("{plugin}: {why}"))
                .collect::<Vec<_>>()
                .join("; ");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ConfigReloadRefused {
                    error: "unprocessable_entity",
                    message: format!("some changes were refused and left as they were: {message}"),
                    report,
                }),
            )
                .into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// A plugin's config in force (its manifest's defaults filled in), with its `secret: true`
/// values shown as `"[redacted]"`.
#[utoipa::path(
    get, path = "/plugins/{name}/config", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The config, a JSON object", body = Object),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
    )
)]
pub(crate) async fn get_config(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let config = state
        .host
        .plugin_config_redacted(&name)
        .map(serde_json::Value::Object);
    json_or_404(&name, config)
}

/// Replace a plugin's config live: validated against the manifest's schema first, then handed to
/// the plugin (`on_config_change`), kept only if it accepts it. Nothing in it is expanded from the
/// host's environment (`${VAR}` is refused; write `$${` for a literal `${`), and a secret key
/// sent back as `"[redacted]"` keeps its value.
#[utoipa::path(
    put, path = "/plugins/{name}/config", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    request_body(content = Object, description = "The new config, a JSON object (at most 64 KiB)", content_type = "application/json"),
    responses(
        (status = 200, description = "The config now in force", body = Object),
        (status = 400, description = "The body is not a JSON object", body = ApiError),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
        (status = 409, description = "The plugin refused it; the previous config stays in force", body = ApiError),
        (status = 413, description = "The body is over 64 KiB", body = ApiError),
        (status = 415, description = "The body is not `application/json`", body = ApiError),
        (status = 422, description = "It does not match the plugin's config schema", body = ApiError),
    )
)]
pub(crate) async fn put_config(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let Json(value) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    let Some(config) = value.as_object() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "request body: the config must be a JSON object",
        );
    };
    match state.host.update_plugin_config(&name, config).await {
        Ok(()) => {
            state.admin.announce_config(&name, config).await;
            get_config(State(state), UrlPath(name)).await
        }
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ LoadError::ConfigRejected { .. }) => {
            json_error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e @ LoadError::Config { .. }) => {
            json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e) => json_error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// Query of `DELETE /admin/plugins/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UnloadQuery {
    /// Unload even while running plugins depend on it (they are not unloaded).
    #[serde(default)]
    force: bool,
}

/// Unload a plugin: stop it, remove its hooks, routes and subscriptions, clean it up.
#[utoipa::path(
    delete, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), UnloadQuery),
    responses(
        (status = 204, description = "Unloaded"),
        (status = 400, description = "The query string is invalid", body = ApiError),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 404, description = "No plugin by that name", body = ApiError),
        (status = 409, description = "Running plugins depend on it (use `force=true`)", body = ApiError),
        (status = 500, description = "Stopping it failed", body = ApiError),
    )
)]
pub(crate) async fn unload(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<UnloadQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    match state.host.unload_plugin(&name, q.force).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ LoadError::InUse { .. }) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Body of `POST /admin/plugins`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadRequest {
    /// The plugin's name (must equal its manifest's): what `plugd_manifest::is_valid_plugin_name`
    /// accepts, or the request is a 400.
    #[schema(
        example = "hello",
        pattern = "^[a-z0-9][a-z0-9_-]*$",
        min_length = 1,
        max_length = 64
    )]
    name: String,
    /// The plugin's folder (manifest + component) on the host.
    #[schema(value_type = String, example = "/srv/plugd/plugins/hello", min_length = 1)]
    path: std::path::PathBuf,
    /// Permissions granted.
    #[serde(default)]
    permissions: Vec<plugd_manifest::Permission>,
    /// Its config (validated against its manifest's schema).
    #[serde(default)]
    #[schema(value_type = Object)]
    config: serde_json::Map<String, serde_json::Value>,
}

/// Load a plugin from a path on the host, initialize and start it.
#[utoipa::path(
    post, path = "/plugins", tag = "plugins",
    request_body(content = LoadRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Loaded and running", body = PluginDetail),
        (status = 400, description = "The body is not valid JSON of this shape", body = ApiError),
        (status = 401, description = "No or wrong admin token", body = ApiError),
        (status = 409, description = "A plugin of that name is loaded", body = ApiError),
        (status = 413, description = "The body is over 64 KiB", body = ApiError),
        (status = 415, description = "The body is not `application/json`", body = ApiError),
        (status = 422, description = "It failed to load, initialize or start", body = ApiError),
    )
)]
pub(crate) async fn load(
    State(state): State<AppState>,
    body: Result<Json<LoadRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    if !plugd_manifest::is_valid_plugin_name(&req.name) {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("request body: invalid plugin name '{}'", req.name),
        );
    }
    // Only the operator's host config file is expanded from the host's environment: a token
    // holder must not be able to read it through a plugin's config.
    let given = serde_json::Value::Object(req.config.clone());
    if let Some(var) = plugd_manifest::env_reference(&given) {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "config of plugin '{}': refers to environment variable '{var}': config given through the admin API is not expanded from the host's environment; set it in the host config file, or write $${{ for a literal ${{",
                req.name
            ),
        );
    }
    let mut entry = plugd_manifest::PluginEntry::new(req.name.clone(), req.path);
    entry.permissions = req.permissions.into_iter().map(|p| (p, true)).collect();
    entry.config = req.config;
    match state.host.load_plugin(&entry).await {
        Ok(()) => {
            let mut r = detail(&state, &req.name);
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(e @ LoadError::Duplicate(_)) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Query of `GET /admin/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this plugin's entries.
    plugin: Option<String>,
}

/// The audit log: capability calls plugins were denied, oldest first.
#[utoipa::path(
    get, path = "/audit", tag = "host",
    params(AuditQuery),
    responses(
        (status = 200, description = "Denied calls, oldest first", body = Vec<AuditEntry>),
        (status = 400, description = "The query string is invalid", body = ApiError),
        (status = 401, description = "No or wrong admin token", body = ApiError),
    )
)]
pub(crate) async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => Json(state.host.audit_log(q.plugin.as_deref())).into_response(),
        Err(e) => bad_query(e),
    }
}

/// The host: version, uptime, plugins, dependency graph, services and event subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HostInfo {
    /// plugd's version.
    version: &'static str,
    /// The WIT contract guests are built against today (older supported versions load through
    /// a shim: docs/authors/contract-versions.md).
    #[schema(example = "plugd:plugin@0.2.0")]
    contract: &'static str,
    /// Seconds since the host was built.
    uptime_seconds: u64,
    /// When the host was built (RFC 3339).
    started_at: String,
    /// Where the host keeps its state.
    #[schema(value_type = String)]
    data_dir: PathBuf,
    /// Number of plugins (failed ones included).
    plugins: usize,
    /// Each loaded plugin's present dependencies.
    dependency_graph: BTreeMap<String, Vec<String>>,
    /// Exported services as `[plugin, service]` pairs.
    #[schema(schema_with = service_pairs)]
    services: Vec<(String, String)>,
    /// Event subscriptions with their counters.
    subscriptions: Vec<SubscriptionInfo>,
}

/// The schema of [`HostInfo::services`]: `[plugin, service]` pairs, each an array of exactly
/// two strings (not utoipa's `prefixItems` tuple, which schemathesis cannot read: see
/// `ConfigReloadReport`'s `rejected`).
fn service_pairs() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Type};
    let pair = ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String))
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some("`[plugin, service]`"));
    ArrayBuilder::new()
        .items(ArrayItems::RefOrSchema(Box::new(pair.into())))
        .description(Some("Exported services as `[plugin, service]` pairs."))
        .build()
}

/// The host itself.
#[utoipa::path(
    get, path = "/info", tag = "host",
    responses(
        (status = 200, description = "The host", body = HostInfo),
        (status = 401, description = "No or wrong admin token", body = ApiError),
    )
)]
pub(crate) async fn info(State(state): State<AppState>) -> Response {
    let started = state.host.started_at();
    let uptime = std::time::SystemTime::now()
        .duration_since(started)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(HostInfo {
        version: env!("CARGO_PKG_VERSION"),
        contract: "plugd:plugin@0.2.0",
        uptime_seconds: uptime,
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        data_dir: state.host.config().data_dir.clone(),
        plugins: state.host.list_plugins().len(),
        dependency_graph: state.host.dependency_graph(),
        services: state.host.services().exported(),
        subscriptions: state.host.subscriptions(),
    })
    .into_response()
}

/// The OpenAPI document of the admin API (this document). Needs no token.
#[utoipa::path(
    get, path = "/openapi.json", tag = "host", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json(
    State(state): State<AppState>,
    nested: Result<NestedPath, NestedPathRejection>,
) -> Response {
    // The paths it lists are under the prefix the API is mounted at, as this server sees it.
    let prefix = nested.as_ref().map(NestedPath::as_str).unwrap_or("");
    (
        [(header::CONTENT_TYPE, "application/json")],
        (state.openapi)(prefix),
    )
        .into_response()
}

/// The dashboard: one HTML page; it asks for the token and calls this API with it. Needs no token.
#[utoipa::path(
    get, path = "/", tag = "host", security(()),
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String))
)]
pub(crate) async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, dashboard_csp()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

const DASHBOARD: &str = include_str!("dashboard.html");

/// The dashboard's Content-Security-Policy: its own inline script and style (by hash) and calls
/// to its own origin; nothing else loads, nothing frames it, no form posts anywhere.
pub(crate) fn dashboard_csp() -> &'static str {
    static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let hash = |open: &str, close: &str| {
            let start = DASHBOARD.find(open).map(|i| i + open.len());
            let end = DASHBOARD.find(close);
            let inner = match (start, end) {
                (Some(a), Some(b)) if a <= b => &DASHBOARD[a..b],
                _ => "",
            };
            use base64::Engine;
            use sha2::Digest;
            let digest = sha2::Sha256::digest(inner.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("<script>", "</script>"),
            hash("<style>", "</style>")
        )
    });
    &CSP
}

/// `/admin` without the slash: the dashboard.
pub(crate) async fn dashboard_redirect() -> Response {
    axum::response::Redirect::permanent("/admin/").into_response()
}

/// `/admin` on the main listener when the admin API has a listener of its own: a JSON 404 that
/// says where it is.
pub(crate) async fn elsewhere(State(state): State<AppState>, request: Request) -> Response {
    let at = state.host.config().admin.listen_addr().unwrap_or_default();
    json_error(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {} here: the admin API and dashboard are served on their own listener, admin.listen ({at})",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Any other path of the admin API (or of the admin listener): a JSON 404 naming the path as the
/// client sent it.
pub(crate) async fn unknown(OriginalUri(uri): OriginalUri, request: Request) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!("no admin endpoint {} {}", request.method(), uri.path()),
    )
}

/// A known admin path with another method: a JSON 405.
pub(crate) async fn wrong_method(
    OriginalUri(uri): OriginalUri,
    nested: Result<NestedPath, NestedPathRejection>,
    request: Request,
) -> Response {
    let prefix = nested.as_ref().map(NestedPath::as_str).unwrap_or("");
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {} (see {}/openapi.json)",
            request.method(),
            uri.path(),
            prefix.trim_end_matches('/'),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_is_private_and_random() {
        let dir = tempfile_dir();
        let config = HostConfig {
            data_dir: dir.clone(),
            ..HostConfig::default()
        };
        // Whatever this process's environment holds: none here.
        let no_env = |_: &str| -> Option<String> { None };
        let a = AdminToken::resolve_with(&config, no_env).unwrap();
        let b = AdminToken::resolve_with(&config, no_env).unwrap();
        assert_eq!(b.source(), &TokenSource::Generated(token_file(&dir)));
        assert_ne!(a.secret(), b.secret());
        assert_eq!(a.secret().len(), 64);
        let path = token_file(&dir);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), b.secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn the_environment_comes_before_the_config_and_a_blank_one_is_skipped() {
        let dir = tempfile_dir().join("sources");
        let mut config = HostConfig {
            data_dir: dir.clone(),
            ..HostConfig::default()
        };
        let env = |name: &str| (name == "PLUGD_ADMIN_TOKEN").then(|| "from-env".to_string());
        let t = AdminToken::resolve_with(&config, env).unwrap();
        assert_eq!(
            (t.secret(), t.source()),
            ("from-env", &TokenSource::Environment)
        );
        let blank = AdminToken::resolve_with(&config, |_| Some("  ".into())).unwrap();
        assert_eq!(blank.source(), &TokenSource::Generated(token_file(&dir)));
        config.admin.token = Some("from-config".into());
        let t = AdminToken::resolve_with(&config, env).unwrap();
        assert_eq!(
            (t.secret(), t.source()),
            ("from-env", &TokenSource::Environment),
            "the environment wins over the file"
        );
        let t = AdminToken::resolve_with(&config, |_| None).unwrap();
        assert_eq!(
            (t.secret(), t.source()),
            ("from-config", &TokenSource::Config)
        );
    }

    /// Security review L6: a temporary left by a crash (or by someone who could write there)
    /// with a wide mode must not carry the token.
    #[cfg(unix)]
    #[test]
    fn a_stale_temporary_does_not_keep_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir().join("stale");
        let path = token_file(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_private(&path, "t0ken").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "t0ken");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!tmp.exists());
        // A link planted at the temporary's name is removed, not followed.
        let target = dir.join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        write_private(&path, "t0ken2").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "t0ken2");
        // A new data directory is created 0700.
        let fresh = dir.join("new-data");
        write_private(&token_file(&fresh), "t").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_token_is_used_and_compared_exactly() {
        let mut config = HostConfig::default();
        config.admin.token = Some("s3cret".into());
        let t = AdminToken::resolve_with(&config, |_| None).unwrap();
        assert_eq!(t.source(), &TokenSource::Config);
        assert!(t.accepts("s3cret"));
        assert!(!t.accepts("s3cre"));
        assert!(!t.accepts(""));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "plugd-admin-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
