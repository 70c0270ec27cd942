//! What a plugin may see and do of a request: the request authority of the trust model
//! (docs/design.md#trust-model).
//!
//! - Without the `intercept` grant (plugd's own permission), a plugin's request hooks and
//!   middleware see only requests to its own routes (`/plugins/<name>` and below). With it they
//!   see every request, or those whose path matches the operator's `intercept.paths` globs.
//! - Without the `identity` grant, `set-identity` is refused: only a granted plugin's identity
//!   reaches `required_roles`.
//! - The operator's `hide_headers` are taken out of the request before each of the plugin's calls
//!   and put back after it; the plugin can neither read nor set them.
//!
//! The checks live here and in [`Exchange`](crate::Exchange), so native and wasm plugins get the
//! same rules.

use std::collections::BTreeSet;
use std::sync::Arc;

use http::HeaderName;
use plugd_manifest::{HookType, Permission, PluginEntry};

use crate::registrations::{Registrations, glob_matches};

/// Which request paths a plugin's hooks and middleware see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// Its own routes only (no `intercept` grant).
    Own,
    /// Every path (`intercept` granted without `intercept.paths`).
    Every,
    /// Its own routes and the paths matching these globs.
    Paths(Vec<String>),
}

/// One plugin's request authority, fixed when it is loaded.
#[derive(Debug, Clone)]
pub struct RequestAccess {
    name: String,
    /// Its mount prefix: `/plugins/<name>` unless the operator mounted it elsewhere; `""` when
    /// it is mounted at `/` (then its own routes are the ones it registered, nothing more).
    own: String,
    scope: Scope,
    identity: bool,
    client: bool,
    hidden: Arc<[HeaderName]>,
    request_body: bool,
    response_body: bool,
}

impl Default for RequestAccess {
    /// No authority: no path, no identity, nothing hidden (an exchange outside any plugin call).
    fn default() -> Self {
        RequestAccess {
            name: String::new(),
            own: String::new(),
            scope: Scope::Own,
            identity: false,
            client: false,
            hidden: Arc::from([]),
            request_body: false,
            response_body: false,
        }
    }
}

impl RequestAccess {
    /// The authority of plugin `name` with its effective permissions and its config entry
    /// (`intercept.paths`, `hide_headers`).
    ///
    /// ```
    /// use plugd_core::RequestAccess;
    /// use plugd_manifest::{Permission, PluginEntry};
    ///
    /// let mut entry = PluginEntry::new("logger", "plugins/logger");
    /// entry.intercept.paths = vec!["/api/**".into()];
    /// let granted = [Permission::Intercept].into();
    /// let access = RequestAccess::new("logger", &granted, Some(&entry));
    /// assert!(access.sees("/api/users/1"));
    /// assert!(access.sees("/plugins/logger/stats"));
    /// assert!(!access.sees("/plugins/auth/admin"));
    ///
    /// let none = RequestAccess::new("logger", &Default::default(), Some(&entry));
    /// assert!(!none.sees("/api/users/1"));
    /// assert!(none.sees("/plugins/logger/stats"));
    /// assert!(!none.sees("/plugins/loggerx"));
    /// ```
    pub fn new(
        name: &str,
        granted: &BTreeSet<Permission>,
        entry: Option<&PluginEntry>,
    ) -> RequestAccess {
        let scope = if !granted.contains(&Permission::Intercept) {
            Scope::Own
        } else {
            match entry.map(|e| e.intercept.paths.clone()) {
                Some(paths) if !paths.is_empty() => Scope::Paths(paths),
                _ => Scope::Every,
            }
        };
        let mut hidden: Vec<HeaderName> = entry
            .map(|e| {
                e.hide_headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect()
            })
            .unwrap_or_default();
        // A plugin kept from the session cookie is kept from the one a response sets, too.
        if hidden.contains(&http::header::COOKIE) && !hidden.contains(&http::header::SET_COOKIE) {
            hidden.push(http::header::SET_COOKIE);
        }
        let own = match entry.and_then(|e| e.mount.as_deref()) {
            Some("/") => String::new(),
            Some(mount) => mount.to_string(),
            None => format!("/plugins/{name}"),
        };
        let intercept = entry.map(|e| &e.intercept);
        RequestAccess {
            name: name.to_string(),
            own,
            identity: granted.contains(&Permission::Identity),
            client: granted.contains(&Permission::Client),
            hidden: Arc::from(hidden),
            request_body: scope != Scope::Own && intercept.is_some_and(|i| i.request_body),
            response_body: scope != Scope::Own && intercept.is_some_and(|i| i.response_body),
            scope,
        }
    }

    /// Its mount prefix: `/plugins/<name>`, the operator's `mount`, or `""` at top level.
    pub fn mount(&self) -> &str {
        &self.own
    }

    /// Whether it reads the client's address and the request attributes (`client`).
    pub fn sees_client(&self) -> bool {
        self.client
    }

    /// Whether its hooks and middleware get the bodies of requests to others' routes
    /// (`intercept.request_body`).
    pub fn reads_request_bodies(&self) -> bool {
        self.request_body
    }

    /// Whether its hooks and middleware get the bodies of an application's responses
    /// (`intercept.response_body`).
    pub fn reads_response_bodies(&self) -> bool {
        self.response_body
    }

    /// Whether the plugin's hooks and middleware see a request to `path`.
    pub fn sees(&self, path: &str) -> bool {
        match &self.scope {
            Scope::Every => true,
            _ if self.is_own(path) => true,
            Scope::Paths(globs) => globs.iter().any(|g| glob_matches(g, path)),
            Scope::Own => false,
        }
    }

    /// Whether `path` is under the plugin's mount (`/plugins/<name>` and below). A plugin mounted
    /// at `/` has no prefix of its own: the request path the host routes to it is its own
    /// (the dispatcher knows that one).
    fn is_own(&self, path: &str) -> bool {
        !self.own.is_empty()
            && path
                .strip_prefix(self.own.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The plugin's name ("" for no plugin).
    pub fn plugin(&self) -> &str {
        &self.name
    }

    /// Whether the plugin may see requests beyond its own routes (`intercept`).
    pub fn intercepts(&self) -> bool {
        self.scope != Scope::Own
    }

    /// The operator's `intercept.paths`, when the grant is scoped.
    pub fn paths(&self) -> &[String] {
        match &self.scope {
            Scope::Paths(p) => p,
            _ => &[],
        }
    }

    /// Whether the plugin may set the request identity (`identity`).
    pub fn may_set_identity(&self) -> bool {
        self.identity
    }

    /// The request headers it never sees.
    pub fn hidden(&self) -> &[HeaderName] {
        &self.hidden
    }

    /// A middleware glob that stays inside its own routes: `/plugins/<name>/…` (none for a
    /// plugin mounted at `/`: its globs need the grant).
    fn glob_is_own(&self, glob: &str) -> bool {
        !self.own.is_empty() && glob == self.own
            || glob
                .strip_prefix(self.own.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// What a plugin registered that reaches beyond its authority: request hooks when its
    /// manifest asks for `intercept` and the operator did not grant it (hooks have no globs: the
    /// manifest says what they are for), and middleware whose globs reach other paths without
    /// the grant. `None` when everything is within it.
    pub(crate) fn overreach(&self, declared: bool, regs: &Registrations) -> Option<String> {
        if self.intercepts() {
            return None;
        }
        let request_hooks: Vec<&str> = regs
            .hooks
            .iter()
            .filter(|(h, _)| !matches!(h, HookType::Startup | HookType::Shutdown))
            .map(|(h, _)| h.as_str())
            .collect();
        if declared && !request_hooks.is_empty() {
            return Some(format!(
                "its manifest asks to intercept requests other than its own routes with {} hook(s)",
                request_hooks.join(", ")
            ));
        }
        for m in &regs.middleware {
            if m.routes.is_empty() {
                return Some(format!(
                    "middleware '{}' covers every request (no route globs), not only its own routes under {}/",
                    m.name, self.own
                ));
            }
            if let Some(glob) = m.routes.iter().find(|g| !self.glob_is_own(g)) {
                return Some(format!(
                    "middleware '{}' covers '{glob}', outside its own routes under {}/",
                    m.name, self.own
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrations::MiddlewareReg;

    fn middleware(routes: &[&str]) -> Registrations {
        Registrations {
            middleware: vec![MiddlewareReg {
                name: "m".into(),
                priority: 0,
                routes: routes.iter().map(|r| r.to_string()).collect(),
            }],
            ..Registrations::default()
        }
    }

    #[test]
    fn own_routes_need_no_grant_and_nothing_else_is_seen() {
        let a = RequestAccess::new("shop", &BTreeSet::new(), None);
        assert!(a.sees("/plugins/shop"));
        assert!(a.sees("/plugins/shop/cart"));
        assert!(!a.sees("/plugins/shopping/cart"));
        assert!(!a.sees("/plugins/auth/admin"));
        assert!(!a.sees("/"));
        assert!(!a.may_set_identity());
        assert!(!a.intercepts());
    }

    #[test]
    fn every_path_with_the_grant_and_only_the_globs_when_scoped() {
        let granted: BTreeSet<_> = [Permission::Intercept, Permission::Identity].into();
        let every = RequestAccess::new("auth", &granted, None);
        assert!(every.sees("/anything") && every.may_set_identity());
        let mut entry = PluginEntry::new("auth", "p");
        entry.intercept.paths = vec!["/api/*".into(), "/plugins/hello/*".into()];
        let scoped = RequestAccess::new("auth", &granted, Some(&entry));
        assert!(scoped.sees("/api/v1/users"));
        assert!(scoped.sees("/plugins/hello/greet"));
        assert!(scoped.sees("/plugins/auth/whoami"));
        assert!(!scoped.sees("/plugins/other/x"));
        assert_eq!(scoped.paths().len(), 2);
    }

    #[test]
    fn hidden_headers_come_from_the_entry() {
        let mut entry = PluginEntry::new("log", "p");
        entry.hide_headers = vec!["cookie".into(), "authorization".into()];
        let a = RequestAccess::new("log", &BTreeSet::new(), Some(&entry));
        let names: Vec<&str> = a.hidden().iter().map(HeaderName::as_str).collect();
        // Hiding the request's cookie hides the cookie a response sets, too.
        assert_eq!(names, ["cookie", "authorization", "set-cookie"]);
    }

    #[test]
    fn overreach_names_what_needs_the_grant() {
        let own = RequestAccess::new("shop", &BTreeSet::new(), None);
        assert_eq!(
            own.overreach(false, &middleware(&["/plugins/shop/*"])),
            None
        );
        let why = own.overreach(false, &middleware(&[])).unwrap();
        assert!(why.contains("covers every request"), "{why}");
        let why = own
            .overreach(false, &middleware(&["/plugins/shop/*", "/api/*"]))
            .unwrap();
        assert!(why.contains("covers '/api/*'"), "{why}");
        let why = own
            .overreach(false, &middleware(&["/plugins/shopping/*"]))
            .unwrap();
        assert!(why.contains("outside its own routes"), "{why}");

        let hooks = Registrations {
            hooks: vec![(HookType::PreRequest, 1), (HookType::Startup, 1)],
            ..Registrations::default()
        };
        // Hooks on its own routes need nothing; asking for more without the grant is refused.
        assert_eq!(own.overreach(false, &hooks), None);
        let why = own.overreach(true, &hooks).unwrap();
        assert!(why.contains("pre_request"), "{why}");
        assert!(!why.contains("startup"), "{why}");

        let granted = RequestAccess::new("shop", &[Permission::Intercept].into(), None);
        assert_eq!(granted.overreach(true, &hooks), None);
        assert_eq!(granted.overreach(true, &middleware(&[])), None);
    }
}
