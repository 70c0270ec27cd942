//! Plugin manifests and host configuration for plugd: parsing (YAML, JSON, TOML) and validation.
//!
//! This crate knows nothing about running plugins: a tool that only validates manifests needs
//! nothing else.
//!
//! - [`Manifest`]: a plugin's `plugin.yaml` / `plugin.json` / `plugin.toml`, validated with the
//!   contract's messages, verbatim (docs/design.md#manifest, docs/design.md#errors).
//! - [`HostConfig`]: the host's config file, every key of docs/design.md#host-config.
//! - [`ConfigSchema`]: a plugin's config schema, and validation of the config the host gives it.
//! - [`effective_permissions`]: what a plugin may do — declared ∩ granted.
//!
//! The three formats give identical values for equivalent content. Unknown keys are errors with
//! a "did you mean", the dotted path of the key, and its line and column.
//!
//! ```
//! use plugd_manifest::{Format, Manifest};
//!
//! let err = Manifest::from_str("version: 1.0.0\n", Format::Yaml, None).unwrap_err();
//! assert_eq!(err.to_string(), "failed to parse manifest: missing required field: name");
//! ```

#![warn(missing_docs)]

mod backends;
mod environment;
mod exec;
mod failure;
mod format;
mod hook;
mod host;
mod log_level;
mod manifest;
mod permission;
mod priority;
mod schema;
mod tls;
mod units;

pub use backends::{
    BackendsConfig, CacheEngine, EventsEngine, FleetSettings, NatsSettings, PostgresSettings,
    RedisAcl, RedisSettings, RolloutSettings, StoreEngine, redact_url,
};
pub use environment::{ENV_PREFIX, Environment};
pub use exec::{ExecGrant, ExecGrantError, ExecLimits, ExecRule, exec_arg_matches};
pub use failure::FailurePolicy;
pub use format::Format;
pub use hook::{HookType, UnknownHookType};
pub use host::{
    AdminConfig, Blocked, ErrorThreshold, ErrorThresholdOverride, HostConfig, HostConfigError,
    HostConfigErrorKind, InterceptGrant, Limits, LimitsOverride, NetworkGrant, OnFailure,
    PermissionError, PluginEntry, PluginsConfig, PoolSettings, Protected, QueueStrategy,
    ReloadSettings, ServerConfig, StatusSettings, Supervision, SupervisionOverride,
    ThresholdAction, effective_permissions, host_config_json_schema,
};
pub use host::{DEFAULT_MAX_RESPONSE_BYTES, RESERVED_PATHS, mount_problem};
pub use log_level::{LogLevel, UnknownLogLevel};
pub use manifest::ManifestBuilder;
pub use manifest::{
    DEFAULT_COMPONENT, DatabaseDecl, Delivery, Dependency, Events, ExportDecl, HookDecl,
    MAX_NAME_LEN, Manifest, ManifestError, ManifestErrorKind, SQL_DIALECTS, is_valid_plugin_name,
    is_valid_topic, manifest_json_schema,
};
pub use permission::{Permission, UnknownPermission};
pub use priority::{Priority, PriorityError, parse_priority};
pub use schema::{
    ConfigError, ConfigErrorKind, ConfigField, ConfigSchema, ConfigType, REDACTED, env_reference,
};
pub use tls::TlsConfig;
pub use units::{UnitError, parse_byte_size, parse_duration};

/// OpenAPI schemas of the types with a hand-written `Serialize` (they serialize as their name).
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::{RefOr, schema::SchemaType};

    fn names(names: &[&str], description: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(names.iter().copied()))
            .description(Some(description))
            .into()
    }

    impl utoipa::PartialSchema for crate::HookType {
        fn schema() -> RefOr<Schema> {
            names(
                &crate::HookType::NAMES,
                "A hook type, as written in manifests.",
            )
        }
    }
    impl utoipa::ToSchema for crate::HookType {}

    impl utoipa::PartialSchema for crate::Permission {
        fn schema() -> RefOr<Schema> {
            names(
                &crate::Permission::NAMES,
                "A permission, as written in manifests.",
            )
        }
    }
    impl utoipa::ToSchema for crate::Permission {}
}
