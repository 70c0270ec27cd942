//! What a plugin registers in `init` — hooks, routes, middleware, subscriptions, exports,
//! timers — and the checks each registration passes (its grants, the names it declared).

use std::collections::BTreeSet;

use http::Method;
use plugd_manifest::{HookType, Permission};

use crate::error::HostError;

/// The shortest timer interval accepted.
pub const MIN_TIMER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Options of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Roles the request's identity must all hold.
    pub required_roles: Vec<String>,
}

/// One registered route of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteReg {
    /// HTTP method.
    pub method: Method,
    /// Pattern as registered, relative to the plugin's mount (`/greet`, `/users/{id}`).
    pub path: String,
    /// Options.
    pub options: RouteOptions,
}

/// Everything a plugin registered in `init` (and in its manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registrations {
    /// Hooks with their priority (higher runs first).
    pub hooks: Vec<(HookType, i32)>,
    /// Routes.
    pub routes: Vec<RouteReg>,
    /// Event topic patterns subscribed to.
    pub subscriptions: Vec<String>,
    /// Timers: name and interval; `on_tick(name)` runs every interval while the plugin runs.
    pub timers: Vec<(String, std::time::Duration)>,
    /// Services it exports.
    pub exports: Vec<String>,
    /// Middleware: name, priority (higher runs first) and route globs (empty: every request that
    /// reaches plugin dispatch).
    pub middleware: Vec<MiddlewareReg>,
}

/// One registered middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddlewareReg {
    /// Unique within the plugin.
    pub name: String,
    /// Higher runs first.
    pub priority: i32,
    /// Globs over the request path (`/plugins/shop/*`); `*` matches any run of characters,
    /// `/` included. Empty: every request.
    pub routes: Vec<String>,
}

/// Whether a middleware's globs cover `path`.
///
/// ```
/// use plugd_core::glob_matches;
/// assert!(glob_matches("/admin/*", "/admin/users/1"));
/// assert!(glob_matches("/plugins/*/static/*.css", "/plugins/shop/static/site.css"));
/// assert!(!glob_matches("/admin/*", "/api/admin"));
/// assert!(glob_matches("/exact", "/exact"));
/// ```
pub fn glob_matches(glob: &str, path: &str) -> bool {
    let (g, p) = (glob.as_bytes(), path.as_bytes());
    // Iterative wildcard match with backtracking to the last star.
    let (mut gi, mut pi, mut star, mut mark) = (0, 0, None, 0);
    while pi < p.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some(gi);
            mark = pi;
            gi += 1;
        } else if gi < g.len() && g[gi] == p[pi] {
            gi += 1;
            pi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            pi = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

impl Registrations {
    /// Register a hook. A second registration of one type with another priority is refused.
    pub fn add_hook(&mut self, hook: HookType, priority: i32) -> Result<(), HostError> {
        match self.hooks.iter().find(|(h, _)| *h == hook) {
            Some((_, p)) if *p == priority => Ok(()),
            Some((_, p)) => Err(HostError::Invalid(format!(
                "hook {} is already registered with priority {p}, not {priority}",
                hook.as_str()
            ))),
            None => {
                self.hooks.push((hook, priority));
                Ok(())
            }
        }
    }

    /// Subscribe to a topic pattern, which the manifest must declare under `events.subscribes`.
    pub fn add_subscription(
        &mut self,
        plugin: &str,
        declared: &[String],
        topic: &str,
    ) -> Result<(), HostError> {
        if !declared.iter().any(|d| d == topic) {
            return Err(HostError::Denied(format!(
                "plugin '{plugin}' attempted to subscribe to undeclared event '{topic}': declare it under events.subscribes in its manifest"
            )));
        }
        if !self.subscriptions.iter().any(|s| s == topic) {
            self.subscriptions.push(topic.to_string());
        }
        Ok(())
    }

    /// Register a middleware; needs `router` among `granted`.
    pub fn add_middleware(
        &mut self,
        plugin: &str,
        granted: &BTreeSet<Permission>,
        middleware: MiddlewareReg,
    ) -> Result<(), HostError> {
        if !granted.contains(&Permission::Router) {
            return Err(HostError::permission_denied(plugin, Permission::Router));
        }
        if middleware.name.is_empty() {
            return Err(HostError::Invalid(
                "middleware name must not be empty".into(),
            ));
        }
        match self.middleware.iter().find(|m| m.name == middleware.name) {
            Some(m) if *m == middleware => Ok(()),
            Some(_) => Err(HostError::Invalid(format!(
                "middleware '{}' is already registered",
                middleware.name
            ))),
            None => {
                self.middleware.push(middleware);
                Ok(())
            }
        }
    }

    /// Remove a middleware registered earlier.
    pub fn remove_middleware(&mut self, name: &str) -> Result<(), HostError> {
        let before = self.middleware.len();
        self.middleware.retain(|m| m.name != name);
        if self.middleware.len() == before {
            return Err(HostError::NotFound(format!("no middleware named '{name}'")));
        }
        Ok(())
    }

    /// Export a service, which the manifest must declare under `exports`.
    pub fn add_export(
        &mut self,
        plugin: &str,
        declared: &[String],
        service: &str,
    ) -> Result<(), HostError> {
        if !declared.iter().any(|d| d == service) {
            return Err(HostError::Denied(format!(
                "plugin '{plugin}' attempted to export undeclared service '{service}': declare it under exports in its manifest"
            )));
        }
        if !self.exports.iter().any(|e| e == service) {
            self.exports.push(service.to_string());
        }
        Ok(())
    }

    /// Register a timer; intervals under [`MIN_TIMER_INTERVAL`] are refused.
    pub fn add_timer(&mut self, name: &str, every: std::time::Duration) -> Result<(), HostError> {
        if name.is_empty() || name.len() > 64 {
            return Err(HostError::Invalid(format!(
                "timer name must be 1 to 64 bytes: {name:?}"
            )));
        }
        if every < MIN_TIMER_INTERVAL {
            return Err(HostError::Invalid(format!(
                "timer '{name}': interval {every:?} is under the minimum of {MIN_TIMER_INTERVAL:?}"
            )));
        }
        match self.timers.iter().find(|(n, _)| n == name) {
            Some((_, e)) if *e == every => Ok(()),
            Some((_, e)) => Err(HostError::Invalid(format!(
                "timer '{name}' is already registered every {e:?}"
            ))),
            None => {
                self.timers.push((name.to_string(), every));
                Ok(())
            }
        }
    }

    /// Register a route; needs `router` among `granted`.
    pub fn add_route(
        &mut self,
        plugin: &str,
        granted: &BTreeSet<Permission>,
        method: &str,
        path: &str,
        options: RouteOptions,
    ) -> Result<(), HostError> {
        if !granted.contains(&Permission::Router) {
            return Err(HostError::permission_denied(plugin, Permission::Router));
        }
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HostError::Invalid(format!("invalid method: {method:?}")))?;
        if !path.starts_with('/')
            || path.contains("//")
            || path.contains("..")
            || path.contains('?')
        {
            return Err(HostError::Invalid(format!(
                "invalid route path {path:?}: it must start with '/' and hold no '//', '..' or '?'"
            )));
        }
        if self
            .routes
            .iter()
            .any(|r| r.method == method && r.path == path)
        {
            return Err(HostError::Invalid(format!(
                "route {method} {path} is already registered"
            )));
        }
        self.routes.push(RouteReg {
            method,
            path: path.to_string(),
            options,
        });
        Ok(())
    }
}
