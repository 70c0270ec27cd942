//! The request path: pre_request hooks → route handler → post_request → pre_response →
//! post_response (off the response path), with `error` hooks on failure.
//!
//! The table is an immutable snapshot swapped atomically whenever registrations change: the
//! request path takes no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::{Method, StatusCode};
use plugd_manifest::{FailurePolicy, HookType};
use smallvec::SmallVec;

use crate::call::{Call, guarded};
use crate::cpu::Throttle;
use crate::error::PluginError;
use crate::exchange::{Exchange, Refusal, Response, Stage};
use crate::gate::{Gate, OwnedPass};
use crate::loaded::Loaded;
use crate::plugin::Action;
use crate::registrations::{MiddlewareReg, RouteOptions, glob_matches};
use crate::state::{Status, hook_index};

#[derive(Clone)]
pub(crate) struct HookEntry {
    pub(crate) plugin: Arc<Loaded>,
    pub(crate) priority: i32,
}

#[derive(Clone)]
struct RouteEntry {
    method: Method,
    plugin: Arc<Loaded>,
    pattern: String,
    options: RouteOptions,
}

#[derive(Clone)]
struct MiddlewareEntry {
    plugin: Arc<Loaded>,
    reg: MiddlewareReg,
}

impl MiddlewareEntry {
    /// Whether it runs for `path`: its globs cover it, and its plugin may see it.
    fn covers(&self, path: &str, owner: Option<&Arc<Loaded>>) -> bool {
        (self.reg.routes.is_empty() || self.reg.routes.iter().any(|g| glob_matches(g, path)))
            && visible(&self.plugin, path, owner)
    }
}

/// Whether `plugin`'s hooks and middleware see a request to `path` whose route (or mount) is
/// `owner`'s: its own routes always, others' with its `intercept` grant.
fn visible(plugin: &Arc<Loaded>, path: &str, owner: Option<&Arc<Loaded>>) -> bool {
    owner.is_some_and(|o| Arc::ptr_eq(o, plugin)) || plugin.access.sees(path)
}

/// The reload-gate passes one request holds: inline up to 8 (a request's plugins: its hooks'
/// plugins, the middleware covering it, its route's owner), so a request allocates nothing here.
type Passes = SmallVec<[OwnedPass; 8]>;

/// One immutable snapshot of every hook, middleware and route.
#[derive(Default)]
pub struct DispatchTable {
    hooks: [Vec<HookEntry>; 7],
    middleware: Vec<MiddlewareEntry>,
    routes: matchit::Router<Vec<RouteEntry>>,
    /// The plugins mounted under a prefix of their own (not `/`), longest prefix first.
    mounts: Vec<(String, Arc<Loaded>)>,
    /// Each full route path and the name of its plugin, for conflict messages.
    route_owners: Vec<(String, String)>,
    /// Every loaded plugin, in start order.
    plugins: Vec<Arc<Loaded>>,
    /// The reload gates of the plugins with request-path hooks: every request passes them.
    hook_gates: Vec<Arc<Gate>>,
}

impl std::fmt::Debug for DispatchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchTable")
            .field(
                "hooks",
                &self.hooks.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

impl DispatchTable {
    /// Build a table from plugins in start order. Hooks sort by priority, higher first; equal
    /// priorities keep start order. A plugin whose mount or routes conflict with an earlier
    /// plugin's is left out of the table and returned with the reason: one plugin's conflict
    /// never keeps the others' routes from being served.
    pub(crate) fn build(plugins: &[Arc<Loaded>]) -> (DispatchTable, Vec<(Arc<Loaded>, String)>) {
        let mut table = DispatchTable {
            plugins: plugins.to_vec(),
            ..DispatchTable::default()
        };
        let mut refused = Vec::new();
        for p in plugins {
            let regs = guarded_registrations(p);
            if let Err(why) = table.add_routes(p, &regs) {
                refused.push((p.clone(), why));
                continue;
            }
            for (hook, priority) in &regs.hooks {
                table.hooks[hook_index(*hook)].push(HookEntry {
                    plugin: p.clone(),
                    priority: *priority,
                });
            }
            for m in &regs.middleware {
                table.middleware.push(MiddlewareEntry {
                    plugin: p.clone(),
                    reg: m.clone(),
                });
            }
        }
        table
            .mounts
            .sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        for hook in HookType::ALL {
            if matches!(hook, HookType::Startup | HookType::Shutdown) {
                continue;
            }
            for h in &table.hooks[hook_index(hook)] {
                if !table
                    .hook_gates
                    .iter()
                    .any(|g| Arc::ptr_eq(g, &h.plugin.gate))
                {
                    table.hook_gates.push(h.plugin.gate.clone());
                }
            }
        }
        for list in &mut table.hooks {
            // Stable: equal priorities keep start order.
            list.sort_by_key(|h| std::cmp::Reverse(h.priority));
        }
        table
            .middleware
            .sort_by_key(|m| std::cmp::Reverse(m.reg.priority));
        (table, refused)
    }

    /// Add `p`'s mount and routes, all or none: refused when another plugin has its mount, when
    /// a route is one the host serves itself, or when a route cannot be told apart from one
    /// already in the table.
    fn add_routes(
        &mut self,
        p: &Arc<Loaded>,
        regs: &crate::registrations::Registrations,
    ) -> Result<(), String> {
        let mount = p.access.mount();
        check_mount(
            mount,
            self.mounts
                .iter()
                .map(|(m, o)| (m.as_str(), o.name.as_str())),
        )?;
        let mut by_path: Vec<(String, Vec<RouteEntry>)> = Vec::new();
        for r in &regs.routes {
            let full = full_route(mount, r)?;
            let entry = RouteEntry {
                method: r.method.clone(),
                plugin: p.clone(),
                pattern: r.path.clone(),
                options: r.options.clone(),
            };
            match by_path.iter_mut().find(|(k, _)| *k == full) {
                Some((_, v)) => v.push(entry),
                None => by_path.push((full, vec![entry])),
            }
        }
        if !by_path.is_empty() {
            let mut routes = self.routes.clone();
            let mut added = Vec::new();
            for (path, entries) in by_path {
                routes
                    .insert(path.clone(), entries)
                    .map_err(|e| conflict(&path, e, &self.route_owners))?;
                added.push((path, p.name.clone()));
            }
            self.routes = routes;
            self.route_owners.extend(added);
        }
        if !mount.is_empty() {
            self.mounts.push((mount.to_string(), p.clone()));
        }
        Ok(())
    }

    fn hooks(&self, hook: HookType) -> &[HookEntry] {
        &self.hooks[hook_index(hook)]
    }

    /// Number of registered middleware.
    pub fn middleware_count(&self) -> usize {
        self.middleware.len()
    }

    /// Number of registered hooks of a type.
    pub fn hook_count(&self, hook: HookType) -> usize {
        self.hooks(hook).len()
    }

    /// Pass the reload gate of every plugin this request can touch (its request-path hooks, the
    /// middleware covering its path, the owner of its route). On a closed gate, the passes taken
    /// so far are given back and the closed gate is returned.
    fn enter_gates(&self, path: &str) -> Result<Passes, Arc<Gate>> {
        let mut passes = Passes::new();
        let owner = self.owner(path);
        let middleware = self
            .middleware
            .iter()
            .filter(|m| m.covers(path, owner))
            .map(|m| &m.plugin.gate);
        for gate in self
            .hook_gates
            .iter()
            .chain(middleware)
            .chain(owner.map(|p| &p.gate))
        {
            if passes
                .iter()
                .any(|p: &OwnedPass| std::ptr::eq(p.gate(), &**gate))
            {
                continue;
            }
            match gate.try_enter_owned() {
                Some(pass) => passes.push(pass),
                None => return Err(gate.clone()),
            }
        }
        Ok(passes)
    }

    /// Whether `p`'s mount and routes `regs` would conflict with those of the plugins in this
    /// table (other than an earlier version of `p`): the reason, for its load error.
    pub(crate) fn route_conflict(
        &self,
        p: &Loaded,
        regs: &crate::registrations::Registrations,
    ) -> Result<(), String> {
        let mount = p.access.mount();
        check_mount(
            mount,
            self.mounts
                .iter()
                .filter(|(_, o)| o.name != p.name)
                .map(|(m, o)| (m.as_str(), o.name.as_str())),
        )?;
        let others: Vec<(String, String)> = self
            .route_owners
            .iter()
            .filter(|(_, n)| *n != p.name)
            .cloned()
            .collect();
        let mut trial = matchit::Router::new();
        for (path, _) in &others {
            // They were inserted together once: they still go together.
            let _ = trial.insert(path.clone(), ());
        }
        let mut seen: Vec<String> = Vec::new();
        for r in &regs.routes {
            let full = full_route(mount, r)?;
            if seen.contains(&full) {
                continue;
            }
            trial
                .insert(full.clone(), ())
                .map_err(|e| conflict(&full, e, &others))?;
            seen.push(full);
        }
        Ok(())
    }

    /// The plugin a request to `path` is for: the one whose route matches it, else the one
    /// mounted at the longest prefix of it (its static files, its 503 while it is not running).
    fn owner(&self, path: &str) -> Option<&Arc<Loaded>> {
        if let Ok(m) = self.routes.at(path)
            && let Some(e) = m.value.first()
        {
            return Some(&e.plugin);
        }
        self.mounted(path)
    }

    /// The plugin mounted at the longest prefix of `path` (not `/`).
    fn mounted(&self, path: &str) -> Option<&Arc<Loaded>> {
        self.mounts
            .iter()
            .find(|(m, _)| under(path, m))
            .map(|(_, p)| p)
    }

    /// Whether a plugin answers `path` rather than whatever is behind plugd: one of its routes
    /// matches it, it is one of its static files, or it is under the mount of a plugin that is
    /// not running (503).
    pub fn takes(&self, path: &str) -> bool {
        if self.routes.at(path).is_ok() {
            return true;
        }
        self.mounted(path).is_some_and(|p| {
            p.state.status() != Status::Running
                || (p.assets.is_some() && static_file(path, p).is_some())
        })
    }

    /// Whether a plugin that sees a request to `path` reads request bodies beyond its routes
    /// (`intercept.request_body`), or (`response`) an application's response bodies
    /// (`intercept.response_body`).
    fn bodies_read(&self, path: &str, response: bool) -> bool {
        let reads = |p: &Arc<Loaded>| {
            let a = &p.access;
            (if response {
                a.reads_response_bodies()
            } else {
                a.reads_request_bodies()
            }) && a.sees(path)
        };
        self.hooks.iter().flatten().any(|h| reads(&h.plugin))
            || self.middleware.iter().any(|m| reads(&m.plugin))
    }
}

/// A mount no other plugin has (`/` is everyone's: plugins mounted there share it route by
/// route).
fn check_mount<'a>(
    mount: &str,
    mut taken: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    match taken.find(|(m, _)| *m == mount) {
        Some((_, other)) if !mount.is_empty() => {
            Err(format!("its mount {mount} is plugin '{other}''s already"))
        }
        _ => Ok(()),
    }
}

/// The path a route is served at under `mount`, unless it is one the host serves itself.
fn full_route(mount: &str, r: &crate::registrations::RouteReg) -> Result<String, String> {
    let full = format!("{mount}{}", r.path);
    match reserved_path(&full) {
        Some(reserved) => Err(format!(
            "route {} {full} is under {reserved}, which the host serves itself",
            r.method
        )),
        None => Ok(full),
    }
}

/// The reason a route at `path` cannot be added: the route it cannot be told apart from, and
/// that route's plugin.
fn conflict(path: &str, e: matchit::InsertError, owners: &[(String, String)]) -> String {
    match e {
        matchit::InsertError::Conflict { with } => {
            let of = owners
                .iter()
                .find(|(r, _)| *r == with)
                .map(|(_, n)| format!(" of plugin '{n}'"))
                .unwrap_or_default();
            format!("route {path} conflicts with route {with}{of}")
        }
        e => format!("route {path}: {e}"),
    }
}

/// Whether `path` is `prefix` or under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The host path a route at `path` would shadow, if any (see [`plugd_manifest::RESERVED_PATHS`]).
fn reserved_path(path: &str) -> Option<&'static str> {
    plugd_manifest::RESERVED_PATHS
        .into_iter()
        .find(|r| under(path, r))
}

/// The file a request for `<mount>/static/<file>` names, if `path` is one.
fn static_file<'a>(path: &'a str, owner: &Loaded) -> Option<&'a str> {
    let mount = owner.access.mount();
    if mount.is_empty() {
        return None;
    }
    path.strip_prefix(mount)?.strip_prefix("/static/")
}

/// Whether a plugin's routes can all be routed: two patterns that the router cannot tell apart
/// (`/{a}` and `/{b}`, a wildcard over a static segment) are refused when the plugin loads, so
/// that one plugin can never keep the dispatch table of every other from being built.
pub(crate) fn check_routes(
    plugin: &str,
    regs: &crate::registrations::Registrations,
) -> Result<(), String> {
    let mut router = matchit::Router::new();
    let mut seen: Vec<&str> = Vec::new();
    for r in &regs.routes {
        if seen.contains(&r.path.as_str()) {
            continue;
        }
        seen.push(&r.path);
        router
            .insert(format!("/plugins/{plugin}{}", r.path), ())
            .map_err(|e| format!("route {} {} cannot be routed: {e}", r.method, r.path))?;
    }
    Ok(())
}

/// What a plugin registered, as the table holds it. A `fail_closed` plugin that never got to
/// register (it failed to load or initialize) still guards: its manifest's hooks stand in for
/// its registrations, so the requests it would see answer 503 rather than pass unguarded.
fn guarded_registrations(p: &Loaded) -> Arc<crate::registrations::Registrations> {
    let regs = p.registrations.load_full();
    // Only a plugin that failed before it could register: one the operator disabled guards
    // nothing (that is what disabling it means).
    if p.failure_policy != FailurePolicy::FailClosed
        || !regs.hooks.is_empty()
        || !regs.middleware.is_empty()
        || p.state.status() != Status::Error
    {
        return regs;
    }
    let mut hooks: Vec<(HookType, i32)> = p
        .manifest
        .as_ref()
        .map(|m| m.hooks.iter().map(|h| (h.hook, h.priority)).collect())
        .unwrap_or_default();
    if hooks.is_empty() && p.access.intercepts() {
        // Nothing declared (or no manifest): guard its scope before everything else.
        hooks.push((HookType::PreRequest, i32::MAX));
    }
    Arc::new(crate::registrations::Registrations {
        hooks,
        ..crate::registrations::Registrations::default()
    })
}

/// A request let into the dispatch table by [`Dispatcher::enter`]: the table it runs on and the
/// reload gates it passed (held until its response hooks are done, so a reload waits for it).
pub struct Entered {
    table: Arc<DispatchTable>,
    passes: Passes,
}

impl std::fmt::Debug for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entered")
            .field("passes", &self.passes.len())
            .finish()
    }
}

impl Entered {
    /// Whether a plugin answers `path` (one of its routes or static files, or 503 for a plugin
    /// that is not running) rather than the service behind plugd.
    pub fn routed(&self, path: &str) -> bool {
        self.table.takes(path)
    }

    /// Whether the request body must be read before plugins run: a plugin route takes the
    /// path, or a plugin that sees it was granted `intercept.request_body`.
    pub fn reads_request_body(&self, path: &str) -> bool {
        self.routed(path) || self.table.bodies_read(path, false)
    }

    /// Whether a plugin that sees a request to `path` was granted `intercept.response_body`:
    /// the inner service's response body must then be read before the response hooks run.
    pub fn reads_response_body(&self, path: &str) -> bool {
        self.table.bodies_read(path, true)
    }
}

/// The answer to a request no plugin route takes, on plugd's own server.
fn no_route(ex: &Exchange) -> Response {
    Response::error(StatusCode::NOT_FOUND, format!("no route for {}", ex.path))
}

/// Note that a plugin failed on this request, for the `error` hooks: the first failure's text,
/// as the client is sent it (the answer's message), or the plugin's own text with
/// `server.expose_errors`.
fn note_failure(
    ex: &mut Exchange,
    expose: bool,
    plugin: &Loaded,
    what: &str,
    error: &PluginError,
    answer: Option<&Response>,
) {
    if ex.error.is_some() {
        return;
    }
    ex.error = Some(if expose {
        format!("plugin '{}' failed: {error}", plugin.name)
    } else {
        answer
            .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.body).ok())
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("plugin '{}' failed ({what})", plugin.name))
    });
}

/// Runs requests through the current [`DispatchTable`].
#[derive(Debug, Default)]
pub struct Dispatcher {
    table: ArcSwap<DispatchTable>,
    /// `server.expose_errors`: send plugins' error texts to clients (development only).
    expose_errors: AtomicBool,
    /// Where post_response hooks run: in the background, up to a bound.
    post_response: Background,
}

/// Most requests whose post_response hooks run in the background at once (see [`Background`]).
pub const POST_RESPONSE_TASKS: usize = 1024;

/// The background runs of post_response hooks, bounded: a flood of requests cannot pile up an
/// unbounded number of tasks. Over the bound a request's hooks run before its response is
/// returned: nothing is lost, and the wait falls on the clients producing the flood. Each such
/// run is counted ([`Dispatcher::post_response_inline`]) and logged.
#[derive(Debug)]
struct Background {
    slots: Arc<tokio::sync::Semaphore>,
    inline: AtomicU64,
}

impl Default for Background {
    fn default() -> Self {
        Background::new(POST_RESPONSE_TASKS)
    }
}

impl Background {
    fn new(bound: usize) -> Self {
        Background {
            slots: Arc::new(tokio::sync::Semaphore::new(bound)),
            inline: AtomicU64::new(0),
        }
    }

    /// Spawn `work` if a slot is free, else run it here.
    async fn run(&self, work: impl Future<Output = ()> + Send + 'static) {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    let _slot = slot;
                    work.await;
                });
            }
            Err(_) => {
                let n = self.inline.fetch_add(1, Ordering::Relaxed) + 1;
                // The first, then every power of two: a flood does not flood the log too.
                if n.is_power_of_two() {
                    tracing::warn!(
                        inline = n,
                        bound = POST_RESPONSE_TASKS,
                        "post_response hooks ran before the response: the background bound is reached"
                    );
                }
                work.await;
            }
        }
    }
}

/// A request id for an error answer: unique in this process, and named in the log line that
/// holds the details the client is not sent.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Random per process (the standard library's hasher keys are), so ids of two runs differ.
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32
    });
    format!("{:08x}-{:x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The answer to a client when a plugin failed: the status and a message without the plugin's
/// own error text (which can hold another request's data, paths, trap details) unless
/// `server.expose_errors` is on; a request id that leads to the log line with the details.
fn failure(
    expose: bool,
    status: StatusCode,
    plugin: &Loaded,
    what: &str,
    error: &dyn std::fmt::Display,
) -> Response {
    let id = request_id();
    tracing::warn!(plugin = %plugin.name, request_id = %id, error = %error, "{what}");
    let message = if expose {
        format!("plugin '{}' failed: {error}", plugin.name)
    } else {
        format!("plugin '{}' failed ({what}); request id {id}", plugin.name)
    };
    let mut r = Response::json(
        status,
        &serde_json::json!({
            "error": status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace(' ', "_"),
            "message": message,
            "request_id": id,
        }),
    );
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        r.headers.insert("x-request-id", v);
    }
    r
}

/// The answer for a plugin throttled for its CPU budget: 503 with `Retry-After`.
fn throttled(plugin: &Loaded, t: Throttle) -> Response {
    let mut r = Response::error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "plugin '{}' is throttled: used {}% CPU, budget {}%",
            plugin.name, t.used_percent, t.budget_percent
        ),
    );
    r.headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

/// 503 for a plugin that is not running. Its last error is the operator's to read (admin API,
/// log), not the client's, unless `server.expose_errors` is on.
fn unavailable(plugin: &Loaded, expose: bool) -> Response {
    let status = plugin.state.status();
    let mut message = format!("plugin '{}' is not running (status: {status})", plugin.name);
    if expose && let Some(e) = plugin.state.last_error() {
        message.push_str(&format!("; last error: {}", e.message));
    }
    Response::error(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// A request no plugin is shown: a path that means another path to whoever normalizes it (dot
/// segments, empty segments, percent-encoded slashes or unreserved characters), so that a scope
/// glob means what it says; or headers already past the caps a plugin must keep (431).
fn refuse_request(ex: &Exchange) -> Option<Response> {
    if let Some(why) = path_problem(&ex.path) {
        return Some(Response::error(
            StatusCode::BAD_REQUEST,
            format!("the request path {why}"),
        ));
    }
    if !crate::exchange::request_headers_within_caps(&ex.headers) {
        return Some(Response::error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are over {} headers or {} bytes",
                crate::exchange::MAX_HEADERS,
                crate::exchange::MAX_HEADER_BYTES
            ),
        ));
    }
    None
}

/// Why a request path is not in its one spelling, if it is not. No allocation: it runs on every
/// request.
fn path_problem(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some("does not start with '/'");
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Some("holds an empty segment ('//')");
        }
        if is_dot_segment(segment) {
            return Some("holds a '.' or '..' segment");
        }
        if let Some(why) = encoding_problem(segment) {
            return Some(why);
        }
    }
    None
}

/// `.` or `..`, also with the dots percent-encoded (`%2e`, `%2E`).
fn is_dot_segment(segment: &str) -> bool {
    let b = segment.as_bytes();
    let dot_at = |i: usize| -> Option<usize> {
        match b.get(i)? {
            b'.' => Some(i + 1),
            b'%' if b.get(i + 1) == Some(&b'2') && matches!(b.get(i + 2), Some(b'e' | b'E')) => {
                Some(i + 3)
            }
            _ => None,
        }
    };
    match dot_at(0) {
        Some(end) if end == b.len() => true,
        Some(end) => dot_at(end) == Some(b.len()),
        None => false,
    }
}

/// A percent-encoding that hides a path's meaning: an encoded `/` or `\`, an encoded
/// unreserved character (which must be sent as is), or a `%` without two hex digits.
fn encoding_problem(segment: &str) -> Option<&'static str> {
    let b = segment.as_bytes();
    let mut i = 0;
    while let Some(at) = b[i..].iter().position(|c| *c == b'%') {
        let at = i + at;
        let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
        let (Some(h), Some(l)) = (hex(b.get(at + 1)), hex(b.get(at + 2))) else {
            return Some("holds a '%' that is not followed by two hex digits");
        };
        let byte = (h * 16 + l) as u8;
        if byte == b'/' || byte == b'\\' {
            return Some("holds a percent-encoded '/' or '\\'");
        }
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            return Some("holds a percent-encoded letter, digit or '-._~' (send it as is)");
        }
        i = at + 3;
    }
    None
}

/// Lend the exchange to `plugin` for one call and take it back: its authority (hidden headers,
/// identity) applies inside `call`, and what it was refused is audited against it.
async fn lent<T>(
    plugin: &Loaded,
    ex: &mut Exchange,
    call: impl AsyncFnOnce(&mut Exchange) -> T,
) -> T {
    let hidden = ex.begin_call(&plugin.access);
    let out = call(ex).await;
    audit(plugin, ex.end_call(hidden));
    out
}

/// Audit the changes a plugin was refused in one call (counted as its errors).
fn audit(plugin: &Loaded, refusals: Vec<Refusal>) {
    for r in refusals {
        plugin.auditor.record(r.rule, &r.detail, &r.detail);
    }
}

/// A response a plugin produced, made safe to write: the host's framing headers are dropped
/// (and audited), and a response over the header caps becomes the plugin's error.
fn police(plugin: &Loaded, mut r: Response) -> Result<Response, PluginError> {
    for name in r.drop_framing_headers() {
        let detail =
            format!("header {name} frames the HTTP message; only the host sets it (dropped)");
        plugin.auditor.record("framing", &detail, &detail);
    }
    r.check_caps().map_err(PluginError::Failed)?;
    Ok(r)
}

impl Dispatcher {
    /// The current table.
    pub fn table(&self) -> Arc<DispatchTable> {
        self.table.load_full()
    }

    /// Whether plugins' error texts reach clients (`server.expose_errors`; off by default).
    pub fn set_expose_errors(&self, on: bool) {
        self.expose_errors.store(on, Ordering::Relaxed);
    }

    fn expose(&self) -> bool {
        self.expose_errors.load(Ordering::Relaxed)
    }

    /// How many requests had their post_response hooks run before their response, because
    /// [`POST_RESPONSE_TASKS`] were already running in the background.
    pub fn post_response_inline(&self) -> u64 {
        self.post_response.inline.load(Ordering::Relaxed)
    }

    pub(crate) fn publish(&self, table: DispatchTable) {
        self.table.store(Arc::new(table));
    }

    /// Run one request through hooks and routes and produce its response: [`Dispatcher::enter`]
    /// then [`Dispatcher::run`], with a 404 for a path no plugin route takes. `post_response`
    /// hooks are spawned to run after this returns (before it, when [`POST_RESPONSE_TASKS`] are
    /// already running).
    pub async fn handle(&self, ex: Exchange) -> Response {
        match self.enter(&ex).await {
            Ok(entered) => {
                self.run(entered, ex, async |ex: &mut Exchange| no_route(ex))
                    .await
            }
            Err(refused) => refused,
        }
    }

    /// Whether no plugin has anything to do with a request to `path` as the table stands: no
    /// plugin route takes it, and no request hook or middleware sees it. An embedding's layer
    /// then hands the request to the service behind plugd as it came.
    pub fn bypasses(&self, path: &str) -> bool {
        let table = self.table.load();
        if table.takes(path) {
            return false;
        }
        let request_path = [
            HookType::PreRequest,
            HookType::PostRequest,
            HookType::PreResponse,
            HookType::PostResponse,
            HookType::Error,
        ];
        !request_path
            .into_iter()
            .flat_map(|h| table.hooks(h))
            .any(|h| h.plugin.access.sees(path))
            && !table.middleware.iter().any(|m| m.covers(path, None))
    }

    /// Let a request into the dispatch table: refused (400, 431) when its path is not in its one
    /// spelling or its headers are over the caps; waits while a plugin it touches reloads (or is
    /// refused with 503 when the reload queue says so). The [`Entered`] request holds the
    /// table it runs on until its response hooks are done.
    pub async fn enter(&self, ex: &Exchange) -> Result<Entered, Response> {
        if let Some(refused) = refuse_request(ex) {
            return Err(refused);
        }
        // A request that touches a reloading plugin waits here (or is refused) before it touches
        // anything, then runs on the table that holds the new version.
        loop {
            let table = self.table.load_full();
            match table.enter_gates(&ex.path) {
                Ok(passes) => return Ok(Entered { table, passes }),
                Err(gate) => match gate.enter().await {
                    Ok(pass) => drop(pass),
                    Err(e) => {
                        return Err(Response::error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            e.to_string(),
                        ));
                    }
                },
            }
        }
    }

    /// Run an entered request: pre_request hooks, the middleware chain around the plugin route
    /// that takes the path — or, when none does, around `inner` (the service an embedding
    /// application put behind plugd) —, then `error` hooks if anything failed, post_request,
    /// pre_response, and post_response off the response path.
    pub async fn run(
        &self,
        entered: Entered,
        mut ex: Exchange,
        inner: impl AsyncFnOnce(&mut Exchange) -> Response,
    ) -> Response {
        let Entered { table, passes } = entered;
        let expose = self.expose();
        let owner = table.owner(&ex.path).cloned();
        let early = run_pre_request(&table, &mut ex, expose, owner.as_ref()).await;
        let response = match early {
            Some(r) => r,
            None => through_middleware(&table, &mut ex, expose, owner.as_ref(), inner).await,
        };
        ex.response = Some(response);
        let mut errors_handled = false;
        if ex.error.is_some() {
            run_response_hooks(&table, HookType::Error, &mut ex, expose, owner.as_ref()).await;
            errors_handled = true;
        }
        for hook in [HookType::PostRequest, HookType::PreResponse] {
            run_response_hooks(&table, hook, &mut ex, expose, owner.as_ref()).await;
        }
        if !errors_handled && ex.error.is_some() {
            run_response_hooks(&table, HookType::Error, &mut ex, expose, owner.as_ref()).await;
        }
        // A native plugin can write the response directly: the framing stays the host's.
        if let Some(r) = &mut ex.response {
            r.drop_framing_headers();
        }
        let posts = table.hooks(HookType::PostResponse);
        if !posts
            .iter()
            .any(|h| visible(&h.plugin, &ex.path, owner.as_ref()))
        {
            drop(passes);
            return ex
                .response
                .take()
                .unwrap_or_else(|| Response::new(StatusCode::INTERNAL_SERVER_ERROR));
        }
        let response = ex
            .response
            .clone()
            .unwrap_or_else(|| Response::new(StatusCode::INTERNAL_SERVER_ERROR));
        self.post_response
            .run(async move {
                // The passes stay taken until post_response is done: a reload waits for it.
                let _passes = passes;
                ex.stage = Stage::Hook(HookType::PostResponse);
                for h in table.hooks(HookType::PostResponse) {
                    if h.plugin.state.status() == Status::Running
                        && h.plugin.state.throttled().is_none()
                        && visible(&h.plugin, &ex.path, owner.as_ref())
                    {
                        let _ = call_hook(h, HookType::PostResponse, &mut ex).await;
                    }
                }
            })
            .await;
        response
    }

    /// Run a lifecycle hook (`startup` or `shutdown`) on every plugin that registered it.
    pub async fn run_lifecycle_hook(&self, hook: HookType) {
        let table = self.table.load_full();
        let mut ex = Exchange {
            stage: Stage::Hook(hook),
            ..Exchange::default()
        };
        for h in table.hooks(hook) {
            if h.plugin.state.status() == Status::Running {
                let _ = call_hook(h, hook, &mut ex).await;
            }
        }
    }
}

/// Call one hook: lent the exchange under its authority, through the one guarded call; an early
/// answer is policed (inside the call, so a refused one is the hook's error).
pub(crate) async fn call_hook(
    h: &HookEntry,
    hook: HookType,
    ex: &mut Exchange,
) -> Result<Action, PluginError> {
    let plugin = &h.plugin;
    lent(plugin, ex, async |ex: &mut Exchange| {
        guarded(plugin, Call::Hook(hook), async {
            match plugin.plugin.on_hook(hook, ex).await? {
                Action::Respond(r) => police(plugin, r).map(Action::Respond),
                Action::Continue => Ok(Action::Continue),
            }
        })
        .await
    })
    .await
}

/// pre_request hooks; `Some` when one answered early (or a fail-closed plugin could not run).
async fn run_pre_request(
    table: &DispatchTable,
    ex: &mut Exchange,
    expose: bool,
    owner: Option<&Arc<Loaded>>,
) -> Option<Response> {
    for h in table.hooks(HookType::PreRequest) {
        if !visible(&h.plugin, &ex.path, owner) {
            continue;
        }
        let closed = h.plugin.failure_policy == FailurePolicy::FailClosed;
        if h.plugin.state.status() != Status::Running {
            if closed {
                return Some(unavailable(&h.plugin, expose));
            }
            continue;
        }
        if let Some(t) = h.plugin.state.throttled() {
            if closed {
                return Some(throttled(&h.plugin, t));
            }
            continue;
        }
        ex.stage = Stage::Hook(HookType::PreRequest);
        match call_hook(h, HookType::PreRequest, ex).await {
            Ok(Action::Continue) => {}
            Ok(Action::Respond(r)) => return Some(r),
            Err(e) if closed => {
                let what = "its pre_request hook could not check the request";
                let answer = failure(expose, StatusCode::SERVICE_UNAVAILABLE, &h.plugin, what, &e);
                note_failure(ex, expose, &h.plugin, what, &e, Some(&answer));
                return Some(answer);
            }
            Err(e) => note_failure(ex, expose, &h.plugin, "its pre_request hook", &e, None),
        }
    }
    None
}

/// The middleware chain around the route: `on_request` in priority order (one may answer early),
/// the handler, then `on_response` of those that ran, in reverse order.
async fn through_middleware(
    table: &DispatchTable,
    ex: &mut Exchange,
    expose: bool,
    owner: Option<&Arc<Loaded>>,
    inner: impl AsyncFnOnce(&mut Exchange) -> Response,
) -> Response {
    if table.middleware.is_empty() {
        return terminal(table, ex, expose, inner).await;
    }
    let mut ran: Vec<&MiddlewareEntry> = Vec::new();
    let mut answer = None;
    let path = ex.path.clone();
    for m in table.middleware.iter().filter(|m| m.covers(&path, owner)) {
        let closed = m.plugin.failure_policy == FailurePolicy::FailClosed;
        if m.plugin.state.status() != Status::Running {
            if closed {
                answer = Some(unavailable(&m.plugin, expose));
                break;
            }
            continue;
        }
        if let Some(t) = m.plugin.state.throttled() {
            if closed {
                answer = Some(throttled(&m.plugin, t));
                break;
            }
            continue;
        }
        ex.stage = Stage::MiddlewareRequest;
        let result = call_middleware(m, "on-request", ex, async |ex: &mut Exchange| {
            match m.plugin.plugin.on_request(&m.reg.name, ex).await? {
                Action::Respond(r) => police(&m.plugin, r).map(Action::Respond),
                Action::Continue => Ok(Action::Continue),
            }
        })
        .await;
        match result {
            Ok(Action::Continue) => ran.push(m),
            Ok(Action::Respond(r)) => {
                ran.push(m);
                answer = Some(r);
                break;
            }
            Err(e) if closed => {
                let what = "its middleware could not check the request";
                let r = failure(expose, StatusCode::SERVICE_UNAVAILABLE, &m.plugin, what, &e);
                note_failure(ex, expose, &m.plugin, what, &e, Some(&r));
                answer = Some(r);
                break;
            }
            Err(e) => note_failure(ex, expose, &m.plugin, "its middleware on-request", &e, None),
        }
    }
    let response = match answer {
        Some(r) => r,
        None => terminal(table, ex, expose, inner).await,
    };
    ex.response = Some(response);
    for m in ran.iter().rev() {
        ex.stage = Stage::MiddlewareResponse;
        let result = call_middleware(m, "on-response", ex, async |ex: &mut Exchange| {
            m.plugin.plugin.on_response(&m.reg.name, ex).await
        })
        .await;
        match result {
            Err(e) if m.plugin.failure_policy == FailurePolicy::FailClosed => {
                let what = "its middleware could not check the response";
                let r = failure(expose, StatusCode::SERVICE_UNAVAILABLE, &m.plugin, what, &e);
                note_failure(ex, expose, &m.plugin, what, &e, Some(&r));
                ex.response = Some(r);
            }
            Err(e) => note_failure(
                ex,
                expose,
                &m.plugin,
                "its middleware on-response",
                &e,
                None,
            ),
            Ok(()) => {}
        }
    }
    ex.response
        .take()
        .unwrap_or_else(|| Response::new(StatusCode::INTERNAL_SERVER_ERROR))
}

/// One middleware step: lent the exchange under its plugin's authority, through the one guarded
/// call.
async fn call_middleware<T>(
    m: &MiddlewareEntry,
    step: &'static str,
    ex: &mut Exchange,
    call: impl AsyncFnOnce(&mut Exchange) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let what = Call::Middleware {
        name: &m.reg.name,
        step,
    };
    lent(&m.plugin, ex, async |ex: &mut Exchange| {
        guarded(&m.plugin, what, call(ex)).await
    })
    .await
}

/// post_request / pre_response / error: may change or replace the response. A `fail_closed`
/// plugin that cannot run (or fails) answers 503 in place of the response it would have checked
/// (not in `error` hooks, which only ever rewrite an error).
async fn run_response_hooks(
    table: &DispatchTable,
    hook: HookType,
    ex: &mut Exchange,
    expose: bool,
    owner: Option<&Arc<Loaded>>,
) {
    for h in table.hooks(hook) {
        if !visible(&h.plugin, &ex.path, owner) {
            continue;
        }
        let closed =
            h.plugin.failure_policy == FailurePolicy::FailClosed && hook != HookType::Error;
        if h.plugin.state.status() != Status::Running {
            if closed {
                ex.response = Some(unavailable(&h.plugin, expose));
            }
            continue;
        }
        if let Some(t) = h.plugin.state.throttled() {
            if closed {
                ex.response = Some(throttled(&h.plugin, t));
            }
            continue;
        }
        ex.stage = Stage::Hook(hook);
        match call_hook(h, hook, ex).await {
            Ok(Action::Respond(r)) => ex.response = Some(r),
            Ok(Action::Continue) => {}
            Err(e) if closed => {
                let what = "its response hook could not check the response";
                let r = failure(expose, StatusCode::SERVICE_UNAVAILABLE, &h.plugin, what, &e);
                note_failure(ex, expose, &h.plugin, what, &e, Some(&r));
                ex.response = Some(r);
            }
            // An error hook's own failure is not another error to handle.
            Err(e) if hook != HookType::Error => {
                note_failure(ex, expose, &h.plugin, hook.as_str(), &e, None);
            }
            Err(_) => {}
        }
    }
}

/// What answers inside the middleware chain: the plugin route that takes the path, else
/// `inner`.
async fn terminal(
    table: &DispatchTable,
    ex: &mut Exchange,
    expose: bool,
    inner: impl AsyncFnOnce(&mut Exchange) -> Response,
) -> Response {
    match route(table, ex, expose).await {
        Some(r) => r,
        None => inner(ex).await,
    }
}

/// Find and run the route handler: `None` when no plugin takes the path.
async fn route(table: &DispatchTable, ex: &mut Exchange, expose: bool) -> Option<Response> {
    // Only a path with a static segment can name a static file: no owner lookup otherwise.
    if ex.path.contains("/static/")
        && let Some(owner) = table.mounted(&ex.path)
        && let Some(root) = &owner.assets
        && let Some(rest) = static_file(&ex.path, owner)
    {
        if owner.state.status() != Status::Running {
            return Some(unavailable(owner, expose));
        }
        return Some(match crate::assets::serve(root, rest, &ex.method).await {
            Some(r) => r,
            None => Response::error(StatusCode::NOT_FOUND, format!("no static file {}", ex.path)),
        });
    }
    // The match borrows the path: take what the handler needs (entry, parameters) before the
    // exchange is lent out, instead of copying the path for every request.
    let (entry, params) = {
        let matched = match table.routes.at(&ex.path) {
            Ok(m) => m,
            Err(_) => {
                if let Some(owner) = table.mounted(&ex.path)
                    && owner.state.status() != Status::Running
                {
                    return Some(unavailable(owner, expose));
                }
                return None;
            }
        };
        let Some(entry) = matched.value.iter().find(|e| e.method == ex.method) else {
            let allowed: Vec<&str> = matched.value.iter().map(|e| e.method.as_str()).collect();
            let mut r = Response::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", ex.method, ex.path),
            );
            if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
                r.headers.insert(http::header::ALLOW, v);
            }
            return Some(r);
        };
        let params: Vec<(String, String)> = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (entry, params)
    };
    ex.route_params = params;
    let plugin = entry.plugin.clone();
    if plugin.state.status() != Status::Running {
        return Some(unavailable(&plugin, expose));
    }
    if let Some(t) = plugin.state.throttled() {
        return Some(throttled(&plugin, t));
    }
    if let Some(r) = check_roles(&entry.options, ex) {
        return Some(r);
    }
    ex.stage = Stage::Handler;
    let what = Call::Route {
        method: &entry.method,
        pattern: &entry.pattern,
    };
    let result = lent(&plugin, ex, async |ex: &mut Exchange| {
        guarded(&plugin, what, async {
            let r = plugin.plugin.handle_request(&entry.pattern, ex).await?;
            police(&plugin, r)
        })
        .await
    })
    .await;
    Some(match result {
        Ok(r) => r,
        Err(e) => {
            let (status, what) = match e {
                PluginError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "its route timed out"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "its route failed"),
            };
            let answer = failure(expose, status, &plugin, what, &e);
            // The `error` hooks (other plugins, with `intercept`) get what the client gets.
            note_failure(ex, expose, &plugin, what, &e, Some(&answer));
            answer
        }
    })
}

fn check_roles(options: &RouteOptions, ex: &Exchange) -> Option<Response> {
    if options.required_roles.is_empty() {
        return None;
    }
    let Some(identity) = ex.identity() else {
        return Some(Response::error(
            StatusCode::UNAUTHORIZED,
            "this route needs an authenticated identity",
        ));
    };
    let missing: Vec<&str> = options
        .required_roles
        .iter()
        .filter(|r| !identity.roles.contains(r))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| {
        Response::error(
            StatusCode::FORBIDDEN,
            format!("missing role(s): {}", missing.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_has_one_spelling_or_is_refused() {
        for path in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2E/b",
            "/a/%2e/b",
            "/a/.%2e",
            "/plugins/files//private/x",
            "/plugins/files/%70rivate",
            "/plugins/files/a%2Fb",
            "/plugins/files/a%5cb",
            "/plugins/x/%zz",
            "/plugins/x/%4",
            "relative",
        ] {
            assert!(path_problem(path).is_some(), "{path}");
        }
        for path in [
            "/",
            "/a/b",
            "/a/..b",
            "/a/.well-known/x",
            "/a/b.",
            "/a/b/",
            "/a/caf%C3%A9",
            "/a/%20space",
            "/a/%3F",
        ] {
            assert_eq!(path_problem(path), None, "{path}");
        }
    }

    #[tokio::test]
    async fn post_response_runs_are_bounded_and_run_inline_over_the_bound() {
        let background = Background::new(1);
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        // The one slot: taken by a run that waits.
        background
            .run(async move {
                let _ = held.await;
            })
            .await;
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        background
            .run(async move { flag.store(true, Ordering::Relaxed) })
            .await;
        assert!(
            ran.load(Ordering::Relaxed),
            "over the bound: ran before returning"
        );
        assert_eq!(background.inline.load(Ordering::Relaxed), 1);
        let _ = release.send(());
        // The slot comes back once the background run is done.
        let slot = background.slots.clone().acquire_owned().await.unwrap();
        drop(slot);
        assert_eq!(background.slots.available_permits(), 1);
    }
}
