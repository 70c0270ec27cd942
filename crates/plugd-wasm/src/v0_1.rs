//! Contract `plugd:plugin@0.1.0` on top of 0.2.0: what a 0.1 guest needs beyond the current
//! contract, and nothing else.
//!
//! The host implements the current contract once (`crate::host`); every 0.1 import converts its
//! arguments to their 0.2 types, calls the 0.2 import of the same name and converts the result
//! back. What 0.1 has that 0.2 does not:
//! - the exchange is a resource handle: every method of it is the 0.2 free function (the handle
//!   is only ever a borrow of the current call's exchange);
//! - registrations declare no reads (a 0.1 guest reads through the exchange);
//! - `action.continue` carries no edits, `on-response` returns none (the guest changed the
//!   exchange through its setters during the call).
//!
//! Types the two versions share unchanged convert field by field (`same!`).

use plugd_core::Exchange;
use wasmtime::component::Resource;

use crate::bindings::{v0_1, v0_2};
use crate::host::InstanceState;
use v0_1::plugd::plugin as old;
use v0_1::types as t1;
use v0_2::plugd::plugin as new;
use v0_2::types as t2;

/// A value of one contract version as the other version's type.
pub(crate) trait Convert<T> {
    fn convert(self) -> T;
}

/// Types the two versions spell the same way.
macro_rules! as_is {
    ($($ty:ty),* $(,)?) => {$(
        impl Convert<$ty> for $ty {
            fn convert(self) -> $ty {
                self
            }
        }
    )*};
}
as_is!(
    (),
    bool,
    u8,
    u16,
    u32,
    i32,
    u64,
    f64,
    String,
    (String, String)
);

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(A::convert)
    }
}

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        // Collected in place: no new allocation for the same layout.
        self.into_iter().map(A::convert).collect()
    }
}

impl<A: Convert<B>, B, E: Convert<F>, F> Convert<Result<B, F>> for Result<A, E> {
    fn convert(self) -> Result<B, F> {
        self.map(A::convert).map_err(E::convert)
    }
}

/// Enums, variants and records the two versions share unchanged: both ways, case by case or
/// field by field.
macro_rules! same {
    ($(enum $ty:ident { $($case:ident $(($x:ident))?),* $(,)? })*
     $(record $rty:ident { $($field:ident),* $(,)? })*) => {
        $(
            impl Convert<t2::$ty> for t1::$ty {
                fn convert(self) -> t2::$ty {
                    match self { $(t1::$ty::$case $(($x))? => t2::$ty::$case $(($x.convert()))?,)* }
                }
            }
            impl Convert<t1::$ty> for t2::$ty {
                fn convert(self) -> t1::$ty {
                    match self { $(t2::$ty::$case $(($x))? => t1::$ty::$case $(($x.convert()))?,)* }
                }
            }
        )*
        $(
            impl Convert<t2::$rty> for t1::$rty {
                fn convert(self) -> t2::$rty {
                    t2::$rty { $($field: self.$field.convert()),* }
                }
            }
            impl Convert<t1::$rty> for t2::$rty {
                fn convert(self) -> t1::$rty {
                    t1::$rty { $($field: self.$field.convert()),* }
                }
            }
        )*
    };
}

same! {
    enum HookType { Startup, Shutdown, PreRequest, PostRequest, PreResponse, PostResponse, Error }
    enum LogLevel { Trace, Debug, Info, Warn, Error }
    enum HostError { Denied(m), Unsupported(m), NotFound(m), Invalid(m), Failed(m) }
    enum SqlValue { Null, Integer(i), Real(r), Text(t), Blob(b) }
    enum Health { Healthy, Degraded(m), Unhealthy(m) }
    record Identity { subject, roles }
    record Response { status, headers, body }
    record Statement { sql, params }
    record Rows { columns, rows }
    record OutgoingRequest { method, url, headers, body, timeout_ms }
    record IncomingResponse { status, headers, body }
    record CommandOutput { status, stdout, stderr }
    record PluginMetadata { name, version, sdk }
}

as_is!(i64);
// The current contract's own health, for calls shared by both versions (`plugin::invoke!`).
as_is!(t2::Health);

/// What a 0.1 hook or middleware decided, as 0.2 says it: its changes are already made.
impl Convert<t2::Action> for t1::Action {
    fn convert(self) -> t2::Action {
        match self {
            t1::Action::Continue => t2::Action::Continue(Vec::new()),
            t1::Action::Respond(r) => t2::Action::Respond(r.convert()),
        }
    }
}

/// 0.1 imports that are their 0.2 namesakes: arguments and result converted. `[exchange]` marks
/// a method of the 0.1 exchange resource (its handle always names the current call's exchange),
/// `[async]` an import that awaits.
macro_rules! delegate {
    ($new:path => $(
        $([$mode:ident])? fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        $(delegate!(@fn $new, [$($mode)?], $name, ($($arg: $ty),*), $ret);)*
    };
    (@fn $new:path, [], $name:ident, ($($arg:ident: $ty:ty),*), $ret:ty) => {
        fn $name(&mut self $(, $arg: $ty)*) -> $ret {
            <Self as $new>::$name(self $(, $arg.convert())*).convert()
        }
    };
    (@fn $new:path, [exchange], $name:ident, ($($arg:ident: $ty:ty),*), $ret:ty) => {
        fn $name(&mut self, _exchange: Resource<Exchange> $(, $arg: $ty)*) -> $ret {
            <Self as $new>::$name(self $(, $arg.convert())*).convert()
        }
    };
    (@fn $new:path, [async], $name:ident, ($($arg:ident: $ty:ty),*), $ret:ty) => {
        async fn $name(&mut self $(, $arg: $ty)*) -> $ret {
            <Self as $new>::$name(self $(, $arg.convert())*).await.convert()
        }
    };
}

type R<T> = Result<T, t1::HostError>;
type Pairs = Vec<(String, String)>;

impl old::types::Host for InstanceState {}
impl old::http::Host for InstanceState {}

impl old::http::HostExchange for InstanceState {
    delegate!(new::exchange::Host =>
        [exchange] fn method() -> String;
        [exchange] fn path() -> String;
        [exchange] fn query() -> String;
        [exchange] fn query_param(name: String) -> Option<String>;
        [exchange] fn route_param(name: String) -> Option<String>;
        [exchange] fn header(name: String) -> Option<String>;
        [exchange] fn headers() -> Pairs;
        [exchange] fn body() -> Vec<u8>;
        [exchange] fn set_header(name: String, value: String) -> R<()>;
        [exchange] fn remove_header(name: String) -> R<()>;
        [exchange] fn status() -> Option<u16>;
        [exchange] fn response_header(name: String) -> Option<String>;
        [exchange] fn response_headers() -> Pairs;
        [exchange] fn response_body() -> Option<Vec<u8>>;
        [exchange] fn set_status(status: u16) -> R<()>;
        [exchange] fn set_response_header(name: String, value: String) -> R<()>;
        [exchange] fn remove_response_header(name: String) -> R<()>;
        [exchange] fn set_response_body(body: Vec<u8>) -> R<()>;
        [exchange] fn error() -> Option<String>;
        [exchange] fn identity() -> Option<t1::Identity>;
        [exchange] fn set_identity(identity: Option<t1::Identity>) -> R<()>;
        [exchange] fn local(key: String) -> Option<String>;
        [exchange] fn set_local(key: String, value: String) -> ();
        [exchange] fn peer_address() -> Option<String>;
        [exchange] fn attribute(name: String) -> Option<String>;
    );

    fn drop(&mut self, _exchange: Resource<Exchange>) -> wasmtime::Result<()> {
        // Exchanges are only ever lent to the guest; the host owns them.
        Ok(())
    }
}

impl old::log::Host for InstanceState {
    delegate!(new::log::Host =>
        fn log(level: t1::LogLevel, message: String, fields: Pairs) -> ();
        fn set_log_level(level: t1::LogLevel) -> ();
    );
}

impl old::metrics::Host for InstanceState {
    delegate!(new::metrics::Host =>
        fn counter_add(name: String, value: f64, labels: Pairs) -> R<()>;
        fn gauge_set(name: String, value: f64, labels: Pairs) -> R<()>;
        fn histogram_observe(name: String, value: f64, labels: Pairs) -> R<()>;
    );
}

impl old::storage::Host for InstanceState {
    delegate!(new::storage::Host =>
        [async] fn get(key: String) -> R<Option<Vec<u8>>>;
        [async] fn set(key: String, value: Vec<u8>) -> R<()>;
        [async] fn delete(key: String) -> R<bool>;
        [async] fn list(prefix: String) -> R<Vec<String>>;
        [async] fn clear() -> R<()>;
    );
}

impl old::config::Host for InstanceState {
    delegate!(new::config::Host =>
        fn plugin_config() -> String;
        fn host_config(key: String) -> R<Option<String>>;
    );
}

impl old::events::Host for InstanceState {
    delegate!(new::events::Host =>
        fn publish(topic: String, payload: Vec<u8>) -> R<()>;
    );
}

impl old::services::Host for InstanceState {
    delegate!(new::services::Host =>
        [async] fn call(plugin: String, service: String, method: String, payload: Vec<u8>) -> R<Vec<u8>>;
    );
}

impl old::database::Host for InstanceState {
    delegate!(new::database::Host =>
        [async] fn execute(sql: String, params: Vec<t1::SqlValue>) -> R<u64>;
        [async] fn query(sql: String, params: Vec<t1::SqlValue>) -> R<t1::Rows>;
        [async] fn transaction(statements: Vec<t1::Statement>) -> R<Vec<u64>>;
    );
}

impl old::cache::Host for InstanceState {
    delegate!(new::cache::Host =>
        [async] fn get(key: String) -> R<Option<Vec<u8>>>;
        [async] fn set(key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> R<()>;
        [async] fn delete(key: String) -> R<bool>;
    );
}

impl old::outbound::Host for InstanceState {
    delegate!(new::outbound::Host =>
        [async] fn fetch(request: t1::OutgoingRequest) -> R<t1::IncomingResponse>;
    );
}

impl old::exec::Host for InstanceState {
    delegate!(new::exec::Host =>
        [async] fn run(command: String, args: Vec<String>, stdin: Vec<u8>, timeout_ms: Option<u32>) -> R<t1::CommandOutput>;
    );
}

/// Registrations: 0.1 declares no reads.
impl old::registry::Host for InstanceState {
    fn register_hook(&mut self, hook: t1::HookType, priority: i32) -> R<()> {
        new::registry::Host::register_hook(self, hook.convert(), priority, Vec::new()).convert()
    }
    fn register_route(&mut self, method: String, path: String, options: t1::RouteOptions) -> R<()> {
        let options = t2::RouteOptions {
            required_roles: options.required_roles,
            reads: Vec::new(),
        };
        new::registry::Host::register_route(self, method, path, options).convert()
    }
    fn register_middleware(&mut self, name: String, priority: i32, routes: Vec<String>) -> R<()> {
        new::registry::Host::register_middleware(self, name, priority, routes, Vec::new()).convert()
    }
    fn unregister_middleware(&mut self, name: String) -> R<()> {
        new::registry::Host::unregister_middleware(self, name).convert()
    }
    fn subscribe(&mut self, topic: String) -> R<()> {
        new::registry::Host::subscribe(self, topic).convert()
    }
    fn export_service(&mut self, name: String) -> R<()> {
        new::registry::Host::export_service(self, name).convert()
    }
    fn register_timer(&mut self, name: String, interval_ms: u64) -> R<()> {
        new::registry::Host::register_timer(self, name, interval_ms).convert()
    }
}
