//! One wasm plugin: a pool of long-lived instances of one component.
//!
//! `init`, `start`, `stop`, `cleanup` and `on-config-change` run on every instance; a request or
//! hook takes any free instance. Registrations come from the first instance's `init`; another
//! instance registering differently is an error. An instance that traps or runs past its deadline
//! is dropped, never reused; a fresh one (init + start) replaces it on the next call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use plugd_core::{
    Action, AuditLog, Auditor, Capabilities, Event, Exchange, Health, HookType, InitContext,
    LogLimits, MAX_ERROR_BYTES, Permission, Plugin, PluginCache, PluginError, PluginLog,
    PluginMetrics, PluginState, PluginStore, Publisher, Registrations, Response, Services,
    clean_text,
};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap};

use crate::bindings::v0_2::types;
use crate::code::MappedCode;
use crate::disk::{DiskQuota, FileLimits};
use crate::host::{InstanceState, Shared, StoreSpec, hook_to_wit};
use crate::limits::{Allocator, MAX_WASM_STACK_BYTES, Refusal, mib, response_too_large};
use crate::reads::{self, Reads};
use crate::v0_1::Convert;

/// What the loader tells a plugin about itself.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// Name.
    pub name: String,
    /// Effective permissions.
    pub granted: BTreeSet<Permission>,
    /// Validated config.
    pub config: Map<String, Value>,
    /// Its storage.
    pub store: PluginStore,
    /// Linear-memory cap per instance.
    pub memory_mb: u64,
    /// Deadline of a call.
    pub timeout: Duration,
    /// Deadlines per hook type.
    pub hook_timeouts: BTreeMap<HookType, Duration>,
    /// Pool size.
    pub instances: usize,
    /// Fuel per call (`limits.fuel`); needs a runtime that meters fuel.
    pub fuel: Option<u64>,
    /// The largest response body the plugin may produce, in bytes (`limits.max_response_bytes`).
    pub max_response_bytes: usize,
    /// Its live state in the host, where a denied host call counts as an error; `None`: denials
    /// are audited only.
    pub state: Option<Arc<PluginState>>,
    /// Its event publisher (checks `events.publishes`); `None`: no event bus.
    pub publisher: Option<Publisher>,
    /// The topic patterns its manifest lets it subscribe to.
    pub subscribes: Vec<String>,
    /// The host's services; `None`: no service calls.
    pub services: Option<Arc<Services>>,
    /// The services its manifest lets it export.
    pub exports: Vec<String>,
    /// Where its own metrics go; `None`: metrics calls answer unsupported.
    pub metrics: Option<Arc<PluginMetrics>>,
    /// Its cache namespace (`cache` capability).
    pub cache: Option<PluginCache>,
    /// Where denied calls are recorded.
    pub audit: Option<Arc<AuditLog>>,
    /// Its gated capabilities (database, network, exec, config, filesystem); `None`: checked
    /// but not opened (a granted one answers unsupported).
    pub capabilities: Option<Capabilities>,
    /// The quota of its files (`filesystem`) and the open handles of an instance.
    pub files: FileLimits,
}

struct Instance {
    store: Store<InstanceState>,
    world: World,
    /// Whether its `/data` was preopened read-only (the plugin was over its disk quota).
    read_only: bool,
    /// Its bytes of memories and tables as last counted into `memory`.
    counted: usize,
    /// The plugin's total over its live instances.
    memory: Arc<AtomicUsize>,
}

impl Instance {
    /// Count the instance's memory into its plugin's total (after a call that may have grown it).
    fn count_memory(&mut self) {
        let used = self.store.data().limits.used();
        if used >= self.counted {
            self.memory
                .fetch_add(used - self.counted, Ordering::Relaxed);
        } else {
            self.memory
                .fetch_sub(self.counted - used, Ordering::Relaxed);
        }
        self.counted = used;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.memory.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// Instances live boxed: taking one from the pool and putting it back moves a pointer, not the
/// store handle and the guest's export table (hundreds of bytes), on every call.
type Pooled = Box<Instance>;

/// A loaded wasm plugin.
pub struct WasmPlugin {
    engine: Engine,
    pre: Pre,
    shared: Arc<Shared>,
    options: PluginOptions,
    idle: Mutex<Vec<Pooled>>,
    permits: Semaphore,
    /// Whether `start` has run (fresh instances are started too).
    started: AtomicBool,
    /// Registrations (and what they read) of the first instance, to compare fresh ones against.
    registrations: RwLock<Option<Registered>>,
    /// Whether the compiled code came from the on-disk cache.
    pub(crate) from_cache: bool,
    /// Where its instances are allocated.
    allocator: Allocator,
    /// Whether the engine meters fuel (then every call gets `options.fuel`, or no limit).
    pub(crate) metered: bool,
    /// Bytes of memories and tables over its live instances.
    memory: Arc<AtomicUsize>,
    /// The quota of its `/data` (`filesystem` only).
    disk: Option<Arc<DiskQuota>>,
    /// Its compiled image when mapped from the cache file: released once init and start are
    /// done, and after a health check when nothing else ran since the previous one, so that an
    /// idle plugin keeps none of it resident (`code.rs`).
    pub(crate) code: Option<MappedCode>,
    /// Calls other than health checks and lifecycle calls, ever.
    served: AtomicU64,
    /// `served` at the previous health check.
    served_at_check: AtomicU64,
}

impl std::fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("name", &self.options.name)
            .field("instances", &self.options.instances)
            .field("allocator", &self.allocator)
            .finish()
    }
}

/// A call into an instance.
enum Call<'a> {
    Init,
    Start,
    Stop,
    Cleanup,
    ConfigChange(&'a str),
    Health,
    Hook(HookType, &'a mut Exchange),
    Handle(&'a str, &'a mut Exchange),
    MiddlewareRequest(&'a str, &'a mut Exchange),
    MiddlewareResponse(&'a str, &'a mut Exchange),
    Event(&'a Event),
    Tick(&'a str),
    Command(&'a str, &'a [String]),
    Service {
        service: &'a str,
        method: &'a str,
        payload: &'a [u8],
        caller: &'a str,
    },
}

/// What an instance's `init` registered: the registrations, and what each reads (contract 0.2).
type Registered = (Registrations, Reads);

/// A guest's answer, in the current contract's types (a 0.1 guest's converted).
enum Reply {
    Unit(Result<(), String>),
    Action(Result<types::Action, String>),
    /// Middleware `on-response`: the edits to apply.
    Edits(Result<Vec<types::Edit>, String>),
    Response(Result<types::Response, String>),
    Health(types::Health),
    Bytes(Result<Vec<u8>, String>),
    Text(Result<String, String>),
}

/// What a call was, for error messages; cheap to copy (nothing is formatted unless it fails).
#[derive(Clone, Copy)]
enum CallKind<'a> {
    Named(&'static str),
    Hook(HookType),
    Route(&'a str),
    /// A middleware's name and which of its calls.
    Middleware(&'a str, &'static str),
}

impl std::fmt::Display for CallKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallKind::Named(n) => f.write_str(n),
            CallKind::Hook(h) => write!(f, "{} hook", h.as_str()),
            CallKind::Route(r) => write!(f, "route {r}"),
            CallKind::Middleware(m, call) => write!(f, "middleware {m} {call}"),
        }
    }
}

impl<'a> Call<'a> {
    fn kind(&self) -> CallKind<'a> {
        match self {
            Call::Init => CallKind::Named("init"),
            Call::Start => CallKind::Named("start"),
            Call::Stop => CallKind::Named("stop"),
            Call::Cleanup => CallKind::Named("cleanup"),
            Call::ConfigChange(_) => CallKind::Named("on-config-change"),
            Call::Health => CallKind::Named("health-check"),
            Call::Hook(h, _) => CallKind::Hook(*h),
            Call::Handle(route, _) => CallKind::Route(route),
            Call::Event(_) => CallKind::Named("on-event"),
            Call::Tick(_) => CallKind::Named("on-tick"),
            Call::MiddlewareRequest(..) => CallKind::Named("middleware on-request"),
            Call::MiddlewareResponse(..) => CallKind::Named("middleware on-response"),
            Call::Command(..) => CallKind::Named("run-command"),
            Call::Service { .. } => CallKind::Named("call-service"),
        }
    }
}

impl Shared {
    /// What every instance of a plugin shares, from its options (contract and proxy plugins alike).
    pub(crate) fn from_options(options: &PluginOptions) -> Shared {
        Shared {
            name: options.name.clone(),
            granted: options.granted.clone(),
            config_json: RwLock::new(Value::Object(options.config.clone()).to_string()),
            store: options.store.clone(),
            publisher: options.publisher.clone(),
            subscribes: options.subscribes.clone(),
            services: options.services.clone(),
            exports: options.exports.clone(),
            metrics: options.metrics.clone(),
            cache: options.cache.clone(),
            capabilities: options.capabilities.clone().unwrap_or_else(|| {
                Capabilities::unopened(
                    options.granted.clone(),
                    Auditor::new(&options.name, options.state.clone(), options.audit.clone()),
                )
            }),
            max_response_bytes: options.max_response_bytes,
            log: match &options.state {
                Some(state) => state.log().clone(),
                None => PluginLog::new(&options.name, LogLimits::default()),
            },
            registrar: RwLock::new(None),
            reads: Default::default(),
        }
    }
}

impl WasmPlugin {
    pub(crate) fn new(
        engine: Engine,
        pre: Pre,
        options: PluginOptions,
        allocator: Allocator,
    ) -> Self {
        let shared = Arc::new(Shared::from_options(&options));
        let disk = shared
            .capabilities
            .files_dir()
            .map(|dir| DiskQuota::new(dir, options.files, shared.capabilities.auditor().clone()));
        WasmPlugin {
            disk,
            engine,
            pre,
            shared,
            permits: Semaphore::new(options.instances),
            options,
            idle: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            registrations: RwLock::new(None),
            from_cache: false,
            allocator,
            metered: false,
            memory: Arc::new(AtomicUsize::new(0)),
            code: None,
            served: AtomicU64::new(0),
            served_at_check: AtomicU64::new(0),
        }
    }

    /// Give back the pages of its compiled image that loading and lifecycle calls faulted in.
    fn release_code(&self) {
        if let Some(code) = &self.code {
            code.release(&self.options.name);
        }
    }

    /// Whether its `/data` is read-only now (over its disk quota).
    fn read_only(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.read_only())
    }

    /// Where its instances are allocated.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The memory cap of one instance, bytes.
    fn memory_cap(&self) -> usize {
        usize::try_from(self.options.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// Arm an instance for one call: its deadline, fuel, and a clean record of refusals.
    fn arm(&self, store: &mut Store<InstanceState>, timeout: Duration) {
        let data = store.data_mut();
        data.deadline = Instant::now() + timeout;
        data.limits.reset();
        data.violation = None;
        store.set_epoch_deadline(1);
        if self.metered {
            // Only fails when the engine does not meter fuel, which `metered` rules out.
            let _ = store.set_fuel(self.options.fuel.unwrap_or(u64::MAX));
        }
    }

    /// A call that wasmtime ended with an error (a trap, an interrupt, an allocation failure):
    /// the plugin's error, worded for what happened.
    fn failure(
        &self,
        e: wasmtime::Error,
        what: CallKind<'_>,
        timeout: Duration,
        refused: Option<Refusal>,
    ) -> PluginError {
        let name = &self.options.name;
        if e.is::<PoolConcurrencyLimitError>() {
            return PluginError::Unavailable(format!(
                "instance pool exhausted: plugin '{name}' could not get a wasm instance for {what}: {} (raise plugins.pool.slots or lower limits.instances)",
                first_line(&format!("{e:#}"))
            ));
        }
        let trap = e.downcast_ref::<Trap>();
        if let Some(r) = refused
            && !matches!(trap, Some(Trap::Interrupt))
        {
            return PluginError::Exhausted(format!(
                "out of memory: plugin '{name}' exceeded its {} memory limit in {what} (linear memory and tables would have grown to {}; limits.memory_mb)",
                mib(self.memory_cap()),
                mib(r.wanted)
            ));
        }
        match trap {
            Some(Trap::Interrupt) => match what {
                CallKind::Hook(h) => PluginError::hook_timeout(h, timeout),
                _ => PluginError::Timeout(format!(
                    "{what} exceeded {} timeout",
                    humantime_like(timeout)
                )),
            },
            Some(Trap::StackOverflow) => PluginError::Exhausted(format!(
                "stack overflow: plugin '{name}' exhausted its {} KiB wasm stack in {what} (runaway recursion?)",
                MAX_WASM_STACK_BYTES / 1024
            )),
            Some(Trap::OutOfFuel) => PluginError::Exhausted(format!(
                "fuel exhausted: plugin '{name}' used all {} units of its fuel in {what} (limits.fuel)",
                self.options.fuel.unwrap_or(u64::MAX)
            )),
            Some(trap) => PluginError::Trap(format!("{what}: {trap}")),
            // A host call that failed the instance (a full resource table, say): the outer
            // context is only "error while executing at wasm backtrace", the cause is inside.
            None => PluginError::Trap(format!(
                "{what}: {}",
                first_line(&e.root_cause().to_string())
            )),
        }
    }

    /// A reply whose body is over the plugin's cap: the message, or `None`.
    fn oversized(&self, reply: &Reply, what: CallKind<'_>) -> Option<String> {
        let body = match reply {
            Reply::Response(Ok(r)) | Reply::Action(Ok(types::Action::Respond(r))) => &r.body,
            _ => return None,
        };
        (body.len() > self.options.max_response_bytes).then(|| {
            response_too_large(
                &self.options.name,
                body.len(),
                self.options.max_response_bytes,
                &what.to_string(),
            )
        })
    }

    /// The pool size.
    pub fn instances(&self) -> usize {
        self.options.instances
    }

    /// Whether the compiled code came from the on-disk cache rather than a fresh compilation.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    fn timeout_for(&self, call: &Call<'_>) -> Duration {
        match call {
            Call::Hook(h, _) => self
                .options
                .hook_timeouts
                .get(h)
                .copied()
                .unwrap_or(self.options.timeout),
            _ => self.options.timeout,
        }
    }

    async fn instantiate(&self) -> Result<Pooled, PluginError> {
        let read_only = self.read_only();
        let mut store = crate::host::new_store(
            &self.engine,
            &self.shared,
            StoreSpec {
                memory_cap: self.memory_cap(),
                read_only,
                max_handles: self.options.files.open_files as usize + 16,
                deadline: Instant::now() + self.options.timeout,
            },
        )?;
        self.arm(&mut store, self.options.timeout);
        let world = match self.pre.instantiate(&mut store).await {
            Ok(world) => world,
            Err(e) => {
                let refused = store.data().limits.refused();
                return Err(
                    match self.failure(
                        e,
                        CallKind::Named("instantiation"),
                        self.options.timeout,
                        refused,
                    ) {
                        // A trap of a start function, or a memory minimum over the cap.
                        PluginError::Trap(m) | PluginError::Exhausted(m) => {
                            PluginError::Failed(format!("instantiation failed: {m}"))
                        }
                        other => other,
                    },
                );
            }
        };
        let mut instance = Box::new(Instance {
            store,
            world,
            read_only,
            counted: 0,
            memory: self.memory.clone(),
        });
        instance.count_memory();
        Ok(instance)
    }

    /// Make a fresh instance and bring it to the pool's state (init, and start if started).
    async fn fresh(&self) -> Result<Pooled, PluginError> {
        let mut inst = self.instantiate().await?;
        let regs = self.call(&mut inst, Call::Init).await?;
        let differs = match (&*self.registrations.read(), &regs) {
            (Some(first), Some(regs)) => first != regs,
            _ => false,
        };
        if differs {
            return Err(PluginError::Failed(
                "a new instance registered different hooks or routes than the first; registrations must not depend on instance state".into(),
            ));
        }
        if self.started.load(Ordering::Acquire) {
            self.call(&mut inst, Call::Start).await?;
        }
        Ok(inst)
    }

    /// Run one call on one instance, with its deadline. Returns the registrations made during
    /// `init`. On a trap or timeout the caller must drop the instance.
    async fn call(
        &self,
        inst: &mut Instance,
        call: Call<'_>,
    ) -> Result<Option<Registered>, PluginError> {
        let timeout = self.timeout_for(&call);
        let kind = call.kind();
        let is_init = matches!(call, Call::Init);
        self.arm(&mut inst.store, timeout);
        if is_init {
            let data = inst.store.data_mut();
            data.registering = Some(Registrations::default());
            data.reading = Reads::default();
        }
        let reply = invoke(inst, call, &self.shared).await;
        inst.count_memory();
        let regs = if is_init {
            let data = inst.store.data_mut();
            let reads = std::mem::take(&mut data.reading);
            data.registering.take().map(|regs| (regs, reads))
        } else {
            None
        };
        let refused = inst.store.data().limits.refused();
        let reply = reply.map_err(|e| self.failure(e, kind, timeout, refused))?;
        let guest_error =
            |m: String| PluginError::Failed(format!("{kind}: {}", clean_text(&m, MAX_ERROR_BYTES)));
        match reply {
            Reply::Unit(r) => r.map_err(guest_error)?,
            Reply::Health(_)
            | Reply::Action(_)
            | Reply::Edits(_)
            | Reply::Response(_)
            | Reply::Bytes(_)
            | Reply::Text(_) => {}
        }
        Ok(regs)
    }

    /// Take an instance from the pool (making one if the pool lost one), run `f`, and put it
    /// back unless it failed hard.
    async fn with_instance(&self, call: Call<'_>) -> Result<Reply, PluginError> {
        let timeout = self.timeout_for(&call);
        let kind = call.kind();
        if !matches!(call, Call::Health) {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        // The deadline covers the wait for a free instance too: when every instance is busy (a
        // spinning guest holds one until its own deadline), callers queue at most this long.
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = acquire_instance(&self.permits, deadline, timeout, &self.options, || {
            kind.to_string()
        })
        .await?;
        // An instance made before /data turned read-only (or writable again) is not reused.
        let pooled = self
            .idle
            .lock()
            .pop()
            .filter(|i| i.read_only == self.read_only());
        let mut inst = match pooled {
            Some(i) => i,
            None => self.fresh().await?,
        };
        self.arm(
            &mut inst.store,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        );
        let result = invoke(&mut inst, call, &self.shared).await;
        inst.count_memory();
        if let Some(disk) = &self.disk {
            disk.after_call();
        }
        match result {
            Ok(reply) => {
                // A body over the cap (returned, or refused by set-response-body) is the
                // plugin's error; the instance that built it is dropped with its grown memory.
                let violation = inst
                    .store
                    .data_mut()
                    .violation
                    .take()
                    .or_else(|| self.oversized(&reply, kind));
                match violation {
                    None => {
                        self.idle.lock().push(inst);
                        Ok(reply)
                    }
                    Some(m) => {
                        tracing::warn!(plugin = %self.options.name, error = %m, "instance discarded");
                        Err(PluginError::Failed(m))
                    }
                }
            }
            Err(e) => {
                let refused = inst.store.data().limits.refused();
                let e = self.failure(e, kind, timeout, refused);
                tracing::warn!(plugin = %self.options.name, error = %e, "instance discarded");
                Err(e)
            }
        }
    }

    /// Run a lifecycle call on every instance. With `create`, the pool is filled first.
    async fn on_every_instance(&self, call: fn() -> Call<'static>) -> Result<(), PluginError> {
        let n = self.options.instances as u32;
        let _all = self
            .permits
            .acquire_many(n)
            .await
            .map_err(|_| PluginError::Unavailable("plugin is shutting down".into()))?;
        let instances: Vec<Pooled> = std::mem::take(&mut *self.idle.lock());
        let mut kept = Vec::with_capacity(instances.len());
        let mut first_error = None;
        for mut inst in instances {
            match self.call(&mut inst, call()).await {
                Ok(_) => kept.push(inst),
                Err(
                    e
                    @ (PluginError::Trap(_) | PluginError::Exhausted(_) | PluginError::Timeout(_)),
                ) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    kept.push(inst);
                    first_error.get_or_insert(e);
                }
            }
        }
        *self.idle.lock() = kept;
        first_error.map_or(Ok(()), Err)
    }
}

/// A permit for one of the plugin's `limits.instances` instances, waiting at most until
/// `deadline` (`timeout` after the call began) for one to be free: when every instance is busy (a
/// spinning guest holds one until its own deadline), callers queue at most this long.
pub(crate) async fn acquire_instance<'a>(
    permits: &'a Semaphore,
    deadline: tokio::time::Instant,
    timeout: Duration,
    options: &PluginOptions,
    what: impl FnOnce() -> String,
) -> Result<tokio::sync::SemaphorePermit<'a>, PluginError> {
    match tokio::time::timeout_at(deadline, permits.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(PluginError::Unavailable(format!(
            "plugin '{}' is shutting down",
            options.name
        ))),
        Err(_) => Err(PluginError::Timeout(format!(
            "no free instance of plugin '{}' for {} within {} (all {} busy; limits.instances)",
            options.name,
            what(),
            humantime_like(timeout),
            options.instances
        ))),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn humantime_like(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Lend the exchange to the guest for one call: swap it into the instance's state (no
/// allocation, no resource-table entry) for the `exchange` functions to read, and swap it back
/// whatever the call did.
macro_rules! lend {
    ($store:ident, $ex:ident, $call:expr) => {{
        let data = $store.data_mut();
        std::mem::swap(&mut data.lent, $ex);
        data.lending = true;
        let out = $call.await;
        let data = $store.data_mut();
        std::mem::swap(&mut data.lent, $ex);
        data.lending = false;
        out?
    }};
}

/// A 0.1 guest's handle on the lent exchange: a borrow for the one call. Its rep is unused: the
/// host functions read `InstanceState::lent`.
fn handle() -> wasmtime::component::Resource<Exchange> {
    wasmtime::component::Resource::new_borrow(0)
}

/// The calls without an exchange, the same in every contract version: a `match` on `$call`
/// with the version's own arms for the exchange calls.
macro_rules! invoke {
    ($g:ident, $store:ident, $shared:ident, $call:ident, { $($exchange_calls:tt)* }) => {
        match $call {
            Call::Init => {
                let config = $shared.config_json.read().clone();
                Reply::Unit($g.call_init(&mut *$store, &config).await?)
            }
            Call::Start => Reply::Unit($g.call_start(&mut *$store).await?),
            Call::Stop => Reply::Unit($g.call_stop(&mut *$store).await?),
            Call::Cleanup => Reply::Unit($g.call_cleanup(&mut *$store).await?),
            Call::ConfigChange(config) => {
                Reply::Unit($g.call_on_config_change(&mut *$store, config).await?)
            }
            Call::Health => Reply::Health($g.call_health_check(&mut *$store).await?.convert()),
            Call::Event(event) => Reply::Unit(
                $g.call_on_event(&mut *$store, &event.topic, &event.payload, &event.source)
                    .await?,
            ),
            Call::Tick(timer) => Reply::Unit($g.call_on_tick(&mut *$store, timer).await?),
            Call::Command(command, args) => {
                Reply::Text($g.call_run_command(&mut *$store, command, args).await?)
            }
            Call::Service {
                service,
                method,
                payload,
                caller,
            } => Reply::Bytes(
                $g.call_call_service(&mut *$store, service, method, payload, caller)
                    .await?,
            ),
            $($exchange_calls)*
        }
    };
}

/// Call the guest. An `Err` is a trap or a host-side failure: the instance must be dropped.
async fn invoke(inst: &mut Instance, call: Call<'_>, shared: &Shared) -> wasmtime::Result<Reply> {
    let store = &mut inst.store;
    Ok(match &inst.world {
        World::V0_2(world) => {
            let g = world.plugd_plugin_guest();
            invoke!(g, store, shared, call, {
                Call::Hook(hook, ex) => {
                    let observed = !matches!(hook, HookType::Startup | HookType::Shutdown);
                    let given = reads::given(
                        shared.reads.load().hook(hook),
                        observed.then_some(&*ex),
                    );
                    Reply::Action(lend!(
                        store,
                        ex,
                        g.call_on_hook(&mut *store, hook_to_wit(hook), &given)
                    ))
                }
                Call::Handle(route, ex) => {
                    let given = reads::given(shared.reads.load().route(route), Some(&*ex));
                    Reply::Response(lend!(
                        store,
                        ex,
                        g.call_handle_request(&mut *store, route, &given)
                    ))
                }
                Call::MiddlewareRequest(name, ex) => {
                    let given = reads::given(shared.reads.load().middleware(name), Some(&*ex));
                    Reply::Action(lend!(store, ex, g.call_on_request(&mut *store, name, &given)))
                }
                Call::MiddlewareResponse(name, ex) => {
                    let given = reads::given(shared.reads.load().middleware(name), Some(&*ex));
                    Reply::Edits(lend!(store, ex, g.call_on_response(&mut *store, name, &given)))
                }
            })
        }
        World::V0_1(world) => {
            let g = world.plugd_plugin_guest();
            invoke!(g, store, shared, call, {
                Call::Hook(hook, ex) => Reply::Action(
                    lend!(
                        store,
                        ex,
                        g.call_on_hook(&mut *store, hook_to_wit(hook).convert(), handle())
                    )
                    .map(Convert::convert),
                ),
                Call::Handle(route, ex) => Reply::Response(
                    lend!(store, ex, g.call_handle_request(&mut *store, route, handle()))
                        .map(Convert::convert),
                ),
                Call::MiddlewareRequest(name, ex) => Reply::Action(
                    lend!(store, ex, g.call_on_request(&mut *store, name, handle()))
                        .map(Convert::convert),
                ),
                Call::MiddlewareResponse(name, ex) => Reply::Edits(
                    lend!(store, ex, g.call_on_response(&mut *store, name, handle()))
                        .map(|()| Vec::new()),
                ),
            })
        }
    })
}

impl WasmPlugin {
    /// The decision of a hook or middleware; its edits applied to `ex`.
    fn action(
        &self,
        reply: Reply,
        ex: &mut Exchange,
        what: CallKind<'_>,
    ) -> Result<Action, PluginError> {
        match reply {
            Reply::Action(Ok(types::Action::Continue(edits))) => {
                self.apply(ex, edits, what)?;
                Ok(Action::Continue)
            }
            Reply::Action(Ok(types::Action::Respond(r))) => {
                Ok(Action::Respond(response_from_wit(r)?))
            }
            Reply::Action(Err(m)) => Err(guest_failed(m)),
            _ => Ok(Action::Continue),
        }
    }

    /// Apply a call's edits (none from a 0.1 guest, whose changes are made already).
    fn apply(
        &self,
        ex: &mut Exchange,
        edits: Vec<types::Edit>,
        what: CallKind<'_>,
    ) -> Result<(), PluginError> {
        if edits.is_empty() {
            return Ok(());
        }
        crate::edits::apply(
            ex,
            edits,
            &self.options.name,
            self.options.max_response_bytes,
            &what,
        )
    }
}

/// A guest's own error text as the host keeps, logs and shows it: capped and escaped, so that
/// it cannot forge a line of the host's log.
fn guest_failed(m: String) -> PluginError {
    PluginError::Failed(clean_text(&m, MAX_ERROR_BYTES))
}

/// A guest's response, checked by the host before anything is allocated for it (status, header
/// names and values, the header caps): a response of 30,000 headers is the plugin's error, never
/// a host panic.
fn response_from_wit(r: types::Response) -> Result<Response, PluginError> {
    Response::from_parts(r.status, r.headers, r.body)
        .map_err(|why| PluginError::Failed(format!("plugin answered an invalid response: {why}")))
}

#[async_trait]
impl Plugin for WasmPlugin {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        *self.shared.config_json.write() = Value::Object(ctx.config().clone()).to_string();
        let _all = self
            .permits
            .acquire_many(self.options.instances as u32)
            .await
            .map_err(|_| PluginError::Unavailable("plugin is shutting down".into()))?;
        let mut instances = Vec::with_capacity(self.options.instances);
        let mut first: Option<Registered> = None;
        for i in 0..self.options.instances {
            let mut inst = self.instantiate().await?;
            let regs = self.call(&mut inst, Call::Init).await?.unwrap_or_default();
            match &first {
                None => {
                    ctx.merge(regs.0.clone())
                        .map_err(|e| PluginError::Failed(e.to_string()))?;
                    self.shared.reads.store(Arc::new(regs.1.clone()));
                    first = Some(regs);
                }
                Some(f) if *f != regs => {
                    return Err(PluginError::Failed(format!(
                        "instance {i} registered different hooks or routes than instance 0; registrations must not depend on instance state"
                    )));
                }
                Some(_) => {}
            }
            instances.push(inst);
        }
        *self.registrations.write() = first;
        *self.shared.registrar.write() = ctx.registrar().ok();
        *self.idle.lock() = instances;
        self.release_code();
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        self.on_every_instance(|| Call::Start).await?;
        self.started.store(true, Ordering::Release);
        self.release_code();
        Ok(())
    }

    async fn stop(&self) -> Result<(), PluginError> {
        if !self.started.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.on_every_instance(|| Call::Stop).await
    }

    async fn cleanup(&self) -> Result<(), PluginError> {
        let result = self.on_every_instance(|| Call::Cleanup).await;
        // Give the memory back: nothing runs on this plugin after cleanup.
        self.idle.lock().clear();
        result
    }

    async fn on_config_change(&self, config: &Map<String, Value>) -> Result<(), PluginError> {
        let json = Value::Object(config.clone()).to_string();
        let n = self.options.instances as u32;
        let _all = self
            .permits
            .acquire_many(n)
            .await
            .map_err(|_| PluginError::Unavailable("plugin is shutting down".into()))?;
        let mut instances = std::mem::take(&mut *self.idle.lock());
        let mut result = Ok(());
        for inst in &mut instances {
            if let Err(e) = self.call(inst, Call::ConfigChange(&json)).await {
                result = Err(e);
                break;
            }
        }
        *self.idle.lock() = instances;
        if result.is_ok() {
            *self.shared.config_json.write() = json;
        }
        result
    }

    async fn health_check(&self) -> Health {
        let health = match self.with_instance(Call::Health).await {
            Ok(Reply::Health(types::Health::Healthy)) => Health::Healthy,
            Ok(Reply::Health(types::Health::Degraded(m))) => Health::Degraded(m),
            Ok(Reply::Health(types::Health::Unhealthy(m))) => Health::Unhealthy(m),
            Ok(_) => Health::Healthy,
            Err(e) => Health::Unhealthy(e.to_string()),
        };
        // Idle since the previous check (health checks are the only calls an idle plugin gets):
        // the pages this check faulted in go back. A plugin in use keeps its code resident.
        let served = self.served.load(Ordering::Relaxed);
        if self.served_at_check.swap(served, Ordering::Relaxed) == served {
            self.release_code();
        }
        health
    }

    async fn on_hook(&self, hook: HookType, ex: &mut Exchange) -> Result<Action, PluginError> {
        let reply = self.with_instance(Call::Hook(hook, ex)).await?;
        self.action(reply, ex, CallKind::Hook(hook))
    }

    async fn handle_request(
        &self,
        route: &str,
        ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        match self.with_instance(Call::Handle(route, ex)).await? {
            Reply::Response(Ok(r)) => response_from_wit(r),
            Reply::Response(Err(m)) => Err(guest_failed(m)),
            _ => Err(PluginError::Failed("unexpected reply".into())),
        }
    }

    async fn on_event(&self, event: &Event) -> Result<(), PluginError> {
        match self.with_instance(Call::Event(event)).await? {
            Reply::Unit(Err(m)) => Err(guest_failed(m)),
            _ => Ok(()),
        }
    }

    async fn call_service(
        &self,
        service: &str,
        method: &str,
        payload: &[u8],
        caller: &str,
    ) -> Result<Vec<u8>, PluginError> {
        let call = Call::Service {
            service,
            method,
            payload,
            caller,
        };
        match self.with_instance(call).await? {
            Reply::Bytes(r) => r.map_err(PluginError::Failed),
            _ => Err(PluginError::Failed("unexpected reply".into())),
        }
    }

    async fn run_command(&self, command: &str, args: &[String]) -> Result<String, PluginError> {
        match self.with_instance(Call::Command(command, args)).await? {
            Reply::Text(r) => r.map_err(PluginError::Failed),
            _ => Err(PluginError::Failed("unexpected reply".into())),
        }
    }

    async fn on_request(&self, middleware: &str, ex: &mut Exchange) -> Result<Action, PluginError> {
        let reply = self
            .with_instance(Call::MiddlewareRequest(middleware, ex))
            .await?;
        self.action(reply, ex, CallKind::Middleware(middleware, "on-request"))
    }

    async fn on_response(&self, middleware: &str, ex: &mut Exchange) -> Result<(), PluginError> {
        match self
            .with_instance(Call::MiddlewareResponse(middleware, ex))
            .await?
        {
            Reply::Edits(Ok(edits)) => {
                self.apply(ex, edits, CallKind::Middleware(middleware, "on-response"))
            }
            Reply::Edits(Err(m)) => Err(guest_failed(m)),
            _ => Ok(()),
        }
    }

    async fn on_tick(&self, timer: &str) -> Result<(), PluginError> {
        match self.with_instance(Call::Tick(timer)).await? {
            Reply::Unit(Err(m)) => Err(guest_failed(m)),
            _ => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn resources(&self) -> Option<plugd_core::Resources> {
        let max = self.options.instances;
        let busy = max.saturating_sub(self.permits.available_permits());
        Some(plugd_core::Resources {
            instances_max: max,
            instances_busy: busy,
            instances_idle: self.idle.lock().len(),
            memory_bytes: self.memory.load(Ordering::Relaxed),
        })
    }

    fn allocator(&self) -> Option<&'static str> {
        Some(self.allocator.as_str())
    }
}

/// A component ready to instantiate, as the contract version it was built against.
pub(crate) enum Pre {
    V0_2(crate::bindings::v0_2::PluginPre<crate::host::InstanceState>),
    V0_1(crate::bindings::v0_1::PluginPre<crate::host::InstanceState>),
}

/// One instance's exports, as the contract version it was built against.
pub(crate) enum World {
    V0_2(crate::bindings::v0_2::Plugin),
    V0_1(crate::bindings::v0_1::Plugin),
}

impl Pre {
    /// The bindings of `pre`'s exports for `version` (checked by `contract::check`).
    pub(crate) fn new(
        version: crate::contract::Version,
        pre: wasmtime::component::InstancePre<crate::host::InstanceState>,
    ) -> wasmtime::Result<Pre> {
        Ok(match version {
            crate::contract::Version::V0_2 => {
                Pre::V0_2(crate::bindings::v0_2::PluginPre::new(pre)?)
            }
            crate::contract::Version::V0_1 => {
                Pre::V0_1(crate::bindings::v0_1::PluginPre::new(pre)?)
            }
        })
    }

    pub(crate) async fn instantiate(
        &self,
        store: &mut wasmtime::Store<crate::host::InstanceState>,
    ) -> wasmtime::Result<World> {
        Ok(match self {
            Pre::V0_2(pre) => World::V0_2(pre.instantiate_async(store).await?),
            Pre::V0_1(pre) => World::V0_1(pre.instantiate_async(store).await?),
        })
    }
}
