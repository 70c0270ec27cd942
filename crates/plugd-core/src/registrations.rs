//! What a plugin registers in `init` — hooks, routes, middleware, subscriptions, exports,
//! timers — and the checks each registration passes (its grants, the names it declared).

use std::collections::BTreeSet;

use http::Method;
use plugd_manifest::{HookType, Permission};

use crate::error::HostError;

/// The shortest timer interval accepted.
pub const MIN_TIMER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Most routes of one plugin.
pub const MAX_ROUTES: usize = 1_000;
/// Longest route pattern, bytes.
pub const MAX_ROUTE_BYTES: usize = 1024;
/// Most middleware of one plugin.
pub const MAX_MIDDLEWARE: usize = 64;
/// Most globs of one middleware.
pub const MAX_GLOBS: usize = 32;
/// Longest glob, bytes: every glob is matched against every request's path.
pub const MAX_GLOB_BYTES: usize = 256;
/// Most timers of one plugin.
pub const MAX_TIMERS: usize = 64;
/// Most subscriptions of one plugin.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// A registration past one of the caps above.
fn too_many(what: &str, max: usize) -> HostError {
    HostError::OverLimit {
        limit: "registrations",
        message: format!("a plugin may register at most {max} {what}"),
    }
}

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
            if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Err(too_many("subscriptions", MAX_SUBSCRIPTIONS));
            }
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
        if middleware.name.is_empty() || middleware.name.len() > 64 {
            return Err(HostError::Invalid(format!(
                "middleware name must be 1 to 64 bytes: {:?}",
                crate::logs::clean_text(&middleware.name, 80)
            )));
        }
        if middleware.routes.len() > MAX_GLOBS {
            return Err(too_many("globs per middleware", MAX_GLOBS));
        }
        if let Some(g) = middleware.routes.iter().find(|g| g.len() > MAX_GLOB_BYTES) {
            return Err(HostError::OverLimit {
                limit: "registrations",
                message: format!(
                    "middleware '{}': a glob of {} bytes is over the {MAX_GLOB_BYTES}-byte limit",
                    middleware.name,
                    g.len()
                ),
            });
        }
        match self.middleware.iter().find(|m| m.name == middleware.name) {
            Some(m) if *m == middleware => Ok(()),
            Some(_) => Err(HostError::Invalid(format!(
                "middleware '{}' is already registered",
                middleware.name
            ))),
            None if self.middleware.len() >= MAX_MIDDLEWARE => {
                Err(too_many("middleware", MAX_MIDDLEWARE))
            }
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
                "timer name must be 1 to 64 bytes: {:?}",
                crate::logs::clean_text(name, 80)
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
            None if self.timers.len() >= MAX_TIMERS => Err(too_many("timers", MAX_TIMERS)),
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
        if path.len() > MAX_ROUTE_BYTES {
            return Err(HostError::OverLimit {
                limit: "registrations",
                message: format!(
                    "a route path of {} bytes is over the {MAX_ROUTE_BYTES}-byte limit",
                    path.len()
                ),
            });
        }
        if self.routes.len() >= MAX_ROUTES {
            return Err(too_many("routes", MAX_ROUTES));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_capped() {
        let granted: BTreeSet<Permission> = [Permission::Router].into();
        let mut r = Registrations::default();
        for i in 0..MAX_ROUTES {
            r.add_route(
                "p",
                &granted,
                "GET",
                &format!("/r{i}"),
                RouteOptions::default(),
            )
            .unwrap();
        }
        let e = r
            .add_route("p", &granted, "GET", "/one-more", RouteOptions::default())
            .unwrap_err();
        assert!(matches!(e, HostError::OverLimit { .. }), "{e}");
        let long = format!("/{}", "a".repeat(MAX_ROUTE_BYTES));
        let mut r = Registrations::default();
        assert!(
            r.add_route("p", &granted, "GET", &long, RouteOptions::default())
                .is_err()
        );

        let mw = |name: String, routes: Vec<String>| MiddlewareReg {
            name,
            priority: 0,
            routes,
        };
        for i in 0..MAX_MIDDLEWARE {
            r.add_middleware("p", &granted, mw(format!("m{i}"), vec![]))
                .unwrap();
        }
        assert!(
            r.add_middleware("p", &granted, mw("x".into(), vec![]))
                .is_err()
        );
        let mut r = Registrations::default();
        let globs = vec!["/a/*".to_string(); MAX_GLOBS + 1];
        assert!(
            r.add_middleware("p", &granted, mw("g".into(), globs))
                .is_err()
        );
        let glob = vec![format!("/{}", "*a".repeat(MAX_GLOB_BYTES))];
        assert!(
            r.add_middleware("p", &granted, mw("g".into(), glob))
                .is_err()
        );

        for i in 0..MAX_TIMERS {
            r.add_timer(&format!("t{i}"), MIN_TIMER_INTERVAL).unwrap();
        }
        assert!(r.add_timer("one-more", MIN_TIMER_INTERVAL).is_err());
        let topics: Vec<String> = (0..=MAX_SUBSCRIPTIONS).map(|i| format!("t.{i}")).collect();
        for t in &topics[..MAX_SUBSCRIPTIONS] {
            r.add_subscription("p", &topics, t).unwrap();
        }
        assert!(
            r.add_subscription("p", &topics, &topics[MAX_SUBSCRIPTIONS])
                .is_err()
        );
    }
}
