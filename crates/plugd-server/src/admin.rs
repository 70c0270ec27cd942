//! Admin security: the bearer token and the admin routes.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plugd_core::LoadError;
use plugd_manifest::HostConfig;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::app::AppState;

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
    pub fn new(token: impl Into<String>) -> Result<AdminToken, String> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err("the admin token must not be empty".into());
        }
        Ok(AdminToken {
            token,
            source: TokenSource::Config,
        })
    }

    /// `admin.token`, else `PLUGD_ADMIN_TOKEN`, else a new random token written to
    /// `<data_dir>/admin-token` with mode 0600.
    pub fn resolve(config: &HostConfig) -> Result<AdminToken, String> {
        if let Some(t) = config
            .admin
            .token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(AdminToken {
                token: t.to_string(),
                source: TokenSource::Config,
            });
        }
        if let Ok(t) = std::env::var("PLUGD_ADMIN_TOKEN")
            && !t.trim().is_empty()
        {
            return Ok(AdminToken {
                token: t,
                source: TokenSource::Environment,
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
        })
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

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(contents.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    #[cfg(not(unix))]
    std::fs::write(&tmp, contents).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
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
        Json(serde_json::json!({ "error": kind, "message": message.into() })),
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
            "the admin API needs 'Authorization: Bearer <token>' (admin.token, PLUGD_ADMIN_TOKEN or <data_dir>/admin-token)",
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

/// `GET /admin/plugins`
pub(crate) async fn list_plugins(State(state): State<AppState>) -> Response {
    Json(state.host.list_plugins()).into_response()
}

/// `GET /admin/plugins/{name}`
pub(crate) async fn get_plugin(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.plugin_info(&name) {
        Some(info) => Json(info).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no plugin named '{name}'")),
    }
}

/// A body that could not be read: 413 when too large, 415 without a JSON content type, 400 for
/// anything else (syntax or shape), always with a JSON message.
fn bad_body(e: JsonRejection) -> Response {
    let status = match e.status() {
        s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
        _ => StatusCode::BAD_REQUEST,
    };
    json_error(status, e.body_text())
}

/// `GET /admin/plugins/{name}/health`
pub(crate) async fn get_health(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.plugin_health(&name).await {
        Some(h) => Json(h).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no plugin named '{name}'")),
    }
}

/// `GET /admin/health`: every plugin's health as last polled (no plugin is called), with the
/// overall status.
pub(crate) async fn all_health(State(state): State<AppState>) -> Response {
    let summary = state.host.health_summary();
    Json(serde_json::json!({
        "status": summary.status,
        "plugins": state.host.health_snapshot(),
    }))
    .into_response()
}

/// `POST /admin/plugins/{name}/enable`: start a disabled (or failed, or given-up) plugin again.
pub(crate) async fn enable(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.enable_plugin(&name).await {
        Ok(()) => get_plugin(State(state), UrlPath(name)).await,
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ LoadError::Invalid(_)) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// `POST /admin/plugins/{name}/disable`: stop serving a plugin until it is enabled again.
pub(crate) async fn disable(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.disable_plugin(&name).await {
        Ok(()) => get_plugin(State(state), UrlPath(name)).await,
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /admin/plugins/{name}/reload`: load the plugin's new version from its folder and swap
/// it in without dropping a request (the seed's curl example); a failure rolls back.
pub(crate) async fn reload(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.reload_plugin(&name).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ (LoadError::NotReloadable(_) | LoadError::Invalid(_))) => {
            json_error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// `POST /admin/config/reload`: read the host config file again and apply what changed.
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
                Json(serde_json::json!({
                    "error": "unprocessable_entity",
                    "message": format!("some changes were refused and left as they were: {message}"),
                    "report": report,
                })),
            )
                .into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `GET /admin/plugins/{name}/config`
pub(crate) async fn get_config(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.host.plugin_config(&name) {
        Some(c) => Json(serde_json::Value::Object((*c).clone())).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no plugin named '{name}'")),
    }
}

/// `PUT /admin/plugins/{name}/config`: validated against the schema, applied live.
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
        return json_error(StatusCode::BAD_REQUEST, "the config must be a JSON object");
    };
    match state.host.update_plugin_config(&name, config).await {
        Ok(()) => get_config(State(state), UrlPath(name)).await,
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ LoadError::ConfigRejected { .. }) => {
            json_error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Query of `DELETE /admin/plugins/{name}`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct UnloadQuery {
    #[serde(default)]
    force: bool,
}

/// `DELETE /admin/plugins/{name}[?force=true]`: unload.
pub(crate) async fn unload(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<UnloadQuery>,
) -> Response {
    match state.host.unload_plugin(&name, q.force).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ LoadError::UnknownPlugin(_)) => json_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ LoadError::InUse { .. }) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Body of `POST /admin/plugins`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadRequest {
    name: String,
    path: std::path::PathBuf,
    #[serde(default)]
    permissions: Vec<plugd_manifest::Permission>,
    #[serde(default)]
    config: serde_json::Map<String, serde_json::Value>,
}

/// `POST /admin/plugins`: load a plugin from a path, initialize and start it.
pub(crate) async fn load(
    State(state): State<AppState>,
    body: Result<Json<LoadRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    let mut entry = plugd_manifest::PluginEntry::new(req.name.clone(), req.path);
    entry.permissions = req.permissions.into_iter().map(|p| (p, true)).collect();
    entry.config = req.config;
    match state.host.load_plugin(&entry).await {
        Ok(()) => match state.host.plugin_info(&req.name) {
            Some(info) => (StatusCode::CREATED, Json(info)).into_response(),
            None => StatusCode::CREATED.into_response(),
        },
        Err(e @ LoadError::Duplicate(_)) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Query of `GET /admin/audit`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct AuditQuery {
    plugin: Option<String>,
}

/// `GET /admin/audit[?plugin=name]`: denied capability calls.
pub(crate) async fn audit(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Response {
    Json(state.host.audit_log(q.plugin.as_deref())).into_response()
}

/// `GET /admin/info`: the host.
pub(crate) async fn info(State(state): State<AppState>) -> Response {
    let uptime = std::time::SystemTime::now()
        .duration_since(state.host.started_at())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "contract": "plugd:plugin@0.1.0",
        "uptime_seconds": uptime,
        "data_dir": state.host.config().data_dir,
        "plugins": state.host.list_plugins().len(),
        "dependency_graph": state.host.dependency_graph(),
        "services": state.host.services().exported(),
        "subscriptions": state.host.subscriptions(),
    }))
    .into_response()
}

/// Any other `/admin` path.
pub(crate) async fn unknown(request: Request) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!(
            "no admin endpoint {} {}",
            request.method(),
            request.uri().path()
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
        // The environment may carry PLUGD_ADMIN_TOKEN; only check the generated path without it.
        if std::env::var("PLUGD_ADMIN_TOKEN").is_ok() {
            return;
        }
        let a = AdminToken::resolve(&config).unwrap();
        let b = AdminToken::resolve(&config).unwrap();
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
    fn config_token_wins() {
        let mut config = HostConfig::default();
        config.admin.token = Some("s3cret".into());
        let t = AdminToken::resolve(&config).unwrap();
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
