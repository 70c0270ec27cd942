//! Identity and roles: an authentication hook attaches an identity; middleware, later hooks and
//! handlers see it; routes declared with required roles answer 401 without an identity and 403
//! without a role.

use http::{Method, StatusCode};
use plugd_core::{
    Action, Exchange, HookType, Host, Identity, InitContext, Plugin, PluginError, Response,
    RouteOptions,
};
use serde_json::{Value, json};

use crate::{config, manifest, manifest_with};

/// `pre_request`: `x-user: name:role,role` becomes the identity; `x-user: bad` is answered 401.
struct Authn;

#[async_trait::async_trait]
impl Plugin for Authn {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_hook(HookType::PreRequest, 300)
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        ctx.register_hook(HookType::PreResponse, 100)
            .map_err(|e| PluginError::Failed(e.to_string()))
    }

    async fn on_hook(&self, hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        match hook {
            HookType::PreRequest => {
                let Some(user) = ex.header("x-user") else {
                    return Ok(Action::Continue);
                };
                let Some((subject, roles)) = user.split_once(':') else {
                    return Ok(Action::Respond(Response::error(
                        StatusCode::UNAUTHORIZED,
                        "bad credentials",
                    )));
                };
                let identity = Identity {
                    subject: subject.to_string(),
                    roles: roles
                        .split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect(),
                };
                ex.set_identity(Some(identity))
                    .map_err(|e| PluginError::Failed(e.to_string()))?;
                Ok(Action::Continue)
            }
            HookType::PreResponse => {
                // A later hook sees the identity too.
                if let Some(subject) = ex.identity().map(|i| i.subject.clone()) {
                    ex.set_response_header("x-subject", &subject)
                        .map_err(|e| PluginError::Failed(e.to_string()))?;
                }
                Ok(Action::Continue)
            }
            _ => Ok(Action::Continue),
        }
    }
}

/// A middleware that copies the identity's subject into a request header, and two routes.
struct App;

#[async_trait::async_trait]
impl Plugin for App {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        let f = |e: plugd_core::HostError| PluginError::Failed(e.to_string());
        ctx.register_middleware("who", 100, &[]).map_err(f)?;
        ctx.register_route("GET", "/open", RouteOptions::default())
            .map_err(f)?;
        ctx.register_route(
            "GET",
            "/reports",
            RouteOptions {
                required_roles: vec!["reader".into()],
            },
        )
        .map_err(f)?;
        ctx.register_route(
            "GET",
            "/admin",
            RouteOptions {
                required_roles: vec!["reader".into(), "admin".into()],
            },
        )
        .map_err(f)
    }

    async fn on_request(&self, _: &str, ex: &mut Exchange) -> Result<Action, PluginError> {
        let seen = ex
            .identity()
            .map_or("anonymous".to_string(), |i| i.subject.clone());
        ex.set_header("x-middleware-saw", &seen)
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        Ok(Action::Continue)
    }

    async fn handle_request(
        &self,
        route: &str,
        ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        let identity = ex.identity();
        Ok(Response::json(
            StatusCode::OK,
            &json!({
                "route": route,
                "subject": identity.map(|i| i.subject.clone()),
                "roles": identity.map(|i| i.roles.clone()),
                "middleware_saw": ex.header("x-middleware-saw"),
            }),
        ))
    }
}

async fn host() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest_with("authn", "router, intercept, identity", ""),
            Authn,
        )
        .native(manifest("app", ""), App)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

async fn get(host: &Host, path: &str, user: Option<&str>) -> Response {
    let mut ex = Exchange::new(Method::GET, path);
    if let Some(u) = user {
        ex.headers.insert("x-user", u.parse().unwrap());
    }
    host.dispatcher().handle(ex).await
}

fn body(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn a_route_without_required_roles_serves_anonymous_and_identified_callers() {
    let (host, _dir) = host().await;
    let r = get(&host, "/plugins/app/open", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body(&r)["subject"], Value::Null);
    assert_eq!(body(&r)["middleware_saw"], "anonymous");
    assert!(r.headers.get("x-subject").is_none());

    let r = get(&host, "/plugins/app/open", Some("ada:reader")).await;
    assert_eq!(r.status, StatusCode::OK);
    host.shutdown().await;
}

#[tokio::test]
async fn the_identity_reaches_middleware_the_handler_and_later_hooks() {
    let (host, _dir) = host().await;
    let r = get(&host, "/plugins/app/reports", Some("ada:reader,writer")).await;
    assert_eq!(r.status, StatusCode::OK);
    let b = body(&r);
    assert_eq!(b["subject"], "ada");
    assert_eq!(b["roles"], json!(["reader", "writer"]));
    assert_eq!(b["middleware_saw"], "ada");
    assert_eq!(r.headers["x-subject"], "ada");
    host.shutdown().await;
}

#[tokio::test]
async fn no_identity_is_401_and_a_missing_role_is_403_naming_it() {
    let (host, _dir) = host().await;
    let r = get(&host, "/plugins/app/reports", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        body(&r)["message"]
            .as_str()
            .unwrap()
            .contains("authenticated identity"),
        "{:?}",
        body(&r)
    );

    let r = get(&host, "/plugins/app/admin", Some("bob:reader")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(body(&r)["message"], "missing role(s): admin");
    // The response hooks still ran on the refusal, and saw who was refused.
    assert_eq!(r.headers["x-subject"], "bob");

    let r = get(&host, "/plugins/app/admin", Some("root:admin,reader")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body(&r)["route"], "/admin");
    host.shutdown().await;
}

#[tokio::test]
async fn an_auth_hook_may_refuse_bad_credentials_before_routing() {
    let (host, _dir) = host().await;
    let r = get(&host, "/plugins/app/open", Some("garbage")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(body(&r)["message"], "bad credentials");
    host.shutdown().await;
}

/// A plugin granted `intercept` but not `identity`: its pre_request hook makes every caller an
/// admin, and tries to read and set a header the operator hid from it.
struct Impostor;

#[async_trait::async_trait]
impl Plugin for Impostor {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        // Runs after the real authentication hook (300), so it would have the last word.
        ctx.register_hook(HookType::PreRequest, -1000)
            .map_err(|e| PluginError::Failed(e.to_string()))
    }

    async fn on_hook(&self, _: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let forged = ex.set_identity(Some(Identity {
            subject: "root".into(),
            roles: vec!["reader".into(), "admin".into()],
        }));
        let saw_cookie = ex.header("cookie").is_some();
        let set_cookie = ex.set_header("cookie", "session=stolen");
        ex.set_header(
            "x-impostor",
            &format!(
                "identity={} saw_cookie={saw_cookie} set_cookie={}",
                forged.is_ok(),
                set_cookie.is_ok()
            ),
        )
        .map_err(|e| PluginError::Failed(e.to_string()))?;
        Ok(Action::Continue)
    }
}

/// Echoes what it was sent, so a test can see what the impostor changed.
struct Echo;

#[async_trait::async_trait]
impl Plugin for Echo {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        let f = |e: plugd_core::HostError| PluginError::Failed(e.to_string());
        ctx.register_route("GET", "/open", RouteOptions::default())
            .map_err(f)?;
        ctx.register_route(
            "GET",
            "/admin",
            RouteOptions {
                required_roles: vec!["admin".into()],
            },
        )
        .map_err(f)
    }

    async fn handle_request(&self, _: &str, ex: &mut Exchange) -> Result<Response, PluginError> {
        Ok(Response::json(
            StatusCode::OK,
            &json!({
                "subject": ex.identity().map(|i| i.subject.clone()),
                "cookie": ex.header("cookie"),
                "impostor": ex.header("x-impostor"),
            }),
        ))
    }
}

async fn impostor_host() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "plugins:\n  plugins:\n    - name: impostor\n      permissions: [intercept]\n      hide_headers: [cookie]\n";
    let host = Host::builder()
        .config(config(dir.path(), yaml))
        .native(
            manifest_with("impostor", "intercept, identity", ""),
            Impostor,
        )
        .native(manifest_with("echo", "router", ""), Echo)
        .build()
        .unwrap();
    host.start().await.unwrap();
    (host, dir)
}

#[tokio::test]
async fn only_a_plugin_granted_identity_is_believed_by_required_roles() {
    let (host, _dir) = impostor_host().await;
    let r = get(&host, "/plugins/echo/admin", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", body(&r));

    let r = get(&host, "/plugins/echo/open", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body(&r)["subject"], Value::Null);
    assert_eq!(
        body(&r)["impostor"],
        "identity=false saw_cookie=false set_cookie=false"
    );

    // Each refusal is audited against the impostor and counted as its error.
    let audit = host.audit_log(Some("impostor"));
    assert!(
        audit.iter().any(|e| e.capability == "identity"
            && e.detail
                == "permission denied: plugin 'impostor' attempted identity access without permission"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.capability == "hide_headers" && e.detail.contains("cookie")),
        "{audit:?}"
    );
    assert!(host.plugin_state("impostor").unwrap().error_count() >= 2);
    host.shutdown().await;
}

#[tokio::test]
async fn a_hidden_header_is_out_of_the_plugins_sight_and_back_for_the_others() {
    let (host, _dir) = impostor_host().await;
    let mut ex = Exchange::new(Method::GET, "/plugins/echo/open");
    ex.headers.insert("cookie", "session=ada".parse().unwrap());
    let r = host.dispatcher().handle(ex).await;
    assert_eq!(r.status, StatusCode::OK);
    // The impostor neither saw nor replaced it; the route it was not hidden from got it intact.
    assert_eq!(
        body(&r)["impostor"],
        "identity=false saw_cookie=false set_cookie=false"
    );
    assert_eq!(body(&r)["cookie"], "session=ada");
    host.shutdown().await;
}
