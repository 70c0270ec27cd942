//! A manifest written in Rust: [`Manifest::builder`] for native plugins, instead of a YAML string.
//!
//! The builder fills in the manifest as a file would have it and [`ManifestBuilder::build`] runs
//! the same checks as [`Manifest::from_str`], with the same messages: a builder manifest and the
//! file saying the same thing are equal, and a mistake reads the same wherever it was made.

use std::collections::BTreeMap;

use crate::schema::RawConfigField;
use crate::{ConfigField, ConfigType, Delivery, FailurePolicy, HookType, Permission, Priority};

use super::{
    Manifest, ManifestError, ManifestErrorKind, RawDependency, RawEvents, RawExport, RawFramework,
    RawHook, RawManifest, RawSubscription, RawSubscriptionTable, Text,
};

/// A [`Manifest`] being written in code; [`Manifest::builder`] starts one.
///
/// ```
/// use plugd_manifest::{ConfigField, HookType, Manifest, Permission};
///
/// let manifest = Manifest::builder("greeter", "1.0.0")
///     .description("Says hello")
///     .author("Ada")
///     .permission(Permission::Router)
///     .config_field("greeting", ConfigField::string().with_default("hi"))
///     .hook(HookType::PreRequest, 200)
///     .build()
///     .unwrap();
/// assert_eq!(manifest.name, "greeter");
/// assert_eq!(manifest.config.fields["greeting"].default, Some("hi".into()));
/// ```
#[derive(Debug)]
#[must_use = "a manifest builder does nothing until `build` is called"]
pub struct ManifestBuilder {
    raw: RawManifest,
    /// Config fields whose conversion failed (reported by `build`, where every error is).
    config_error: Option<String>,
}

impl Manifest {
    /// Start a manifest for the plugin `name` at `version` (strict semver `X.Y.Z`).
    /// [`ManifestBuilder::build`] checks both, and needs a description and an author, as a file
    /// does.
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    ///
    /// let err = Manifest::builder("clock", "1.0").description("d").author("a").build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid version format: must be semantic version (X.Y.Z), got '1.0'");
    /// ```
    pub fn builder(name: impl Into<String>, version: impl Into<String>) -> ManifestBuilder {
        ManifestBuilder {
            raw: RawManifest {
                name: Some(Text(name.into())),
                version: Some(Text(version.into())),
                ..RawManifest::default()
            },
            config_error: None,
        }
    }
}

impl ManifestBuilder {
    /// What the plugin does (required).
    ///
    /// ```
    /// let m = plugd_manifest::Manifest::builder("a", "1.0.0").description("Does a").author("me").build().unwrap();
    /// assert_eq!(m.description, "Does a");
    /// ```
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.raw.description = Some(Text(text.into()));
        self
    }

    /// Who wrote it (required).
    ///
    /// ```
    /// let m = plugd_manifest::Manifest::builder("a", "1.0.0").description("d").author("Ada").build().unwrap();
    /// assert_eq!(m.author, "Ada");
    /// ```
    pub fn author(mut self, text: impl Into<String>) -> Self {
        self.raw.author = Some(Text(text.into()));
        self
    }

    /// Declare a permission (the operator still grants it in the host config).
    ///
    /// ```
    /// use plugd_manifest::{Manifest, Permission};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .permission(Permission::Router)
    ///     .build()
    ///     .unwrap();
    /// assert!(m.declares(Permission::Router));
    /// ```
    pub fn permission(self, permission: Permission) -> Self {
        self.permissions([permission])
    }

    /// Declare several permissions.
    ///
    /// ```
    /// use plugd_manifest::{Manifest, Permission};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .permissions([Permission::Router, Permission::Cache])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.permissions.len(), 2);
    /// ```
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = Permission>) -> Self {
        let list = self.raw.permissions.get_or_insert_with(Default::default);
        list.0.extend(
            permissions
                .into_iter()
                .map(|p| (p.as_str().to_owned(), true)),
        );
        self
    }

    /// Add a key to the config schema (manifest key `config`).
    ///
    /// ```
    /// use plugd_manifest::{ConfigField, Manifest};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .config_field("ttl", ConfigField::duration().with_default("24h").with_description("Token lifetime"))
    ///     .config_field("secret", ConfigField::string().required().secret())
    ///     .build()
    ///     .unwrap();
    /// assert!(m.config.fields["secret"].required);
    ///
    /// // A default of the wrong type is refused, as in a file.
    /// let err = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .config_field("retries", ConfigField::integer().with_default("three"))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "invalid config schema: default of 'retries' must be an integer, got string \"three\"");
    /// ```
    pub fn config_field(mut self, key: impl Into<String>, field: ConfigField) -> Self {
        let key = key.into();
        // The field as a file would write it, so that `build` checks it as it checks a file.
        let raw = serde_json::to_value(&field).and_then(serde_json::from_value::<RawConfigField>);
        match raw {
            Ok(raw) => {
                self.raw
                    .config
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, raw);
            }
            Err(e) => {
                self.config_error
                    .get_or_insert(format!("key '{key}' could not be written: {e}"));
            }
        }
        self
    }

    /// Need the plugin `name` at versions `requirement` (a semver requirement such as `^1`,
    /// `>=1.2.0`, or `*`): it starts first, and this plugin fails to load without it.
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .depends_on("auth", "^1")
    ///     .build()
    ///     .unwrap();
    /// assert!(m.dependencies[0].version.matches(&"1.4.0".parse().unwrap()));
    /// ```
    pub fn depends_on(self, name: impl Into<String>, requirement: impl Into<String>) -> Self {
        self.dependency(name.into(), requirement.into(), false)
    }

    /// Work with the plugin `name` at versions `requirement` when it is there, and without it
    /// when it is not.
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .optional_dependency("metrics", "*")
    ///     .build()
    ///     .unwrap();
    /// assert!(m.dependencies[0].optional);
    /// ```
    pub fn optional_dependency(
        self,
        name: impl Into<String>,
        requirement: impl Into<String>,
    ) -> Self {
        self.dependency(name.into(), requirement.into(), true)
    }

    fn dependency(mut self, name: String, requirement: String, optional: bool) -> Self {
        self.raw
            .dependencies
            .get_or_insert_with(Vec::new)
            .push(RawDependency {
                name: Some(name),
                version: Some(Text(requirement)),
                optional: Some(optional),
            });
        self
    }

    /// The plugd versions the plugin works with (`>=1.0.0,<2.0.0`).
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .framework(">=0.1.0")
    ///     .build()
    ///     .unwrap();
    /// assert!(m.framework.is_some());
    /// ```
    pub fn framework(mut self, requirement: impl Into<String>) -> Self {
        self.raw.framework = Some(RawFramework {
            version: Some(Text(requirement.into())),
        });
        self
    }

    /// Declare a hook at `priority` (higher runs first; [`Priority::SECURITY`] and the other
    /// classes, or a number). The host registers it for the plugin without code.
    ///
    /// ```
    /// use plugd_manifest::{HookType, Manifest, Priority};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .hook(HookType::PreRequest, Priority::SECURITY)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.hooks[0].priority, 300);
    /// ```
    pub fn hook(mut self, hook: HookType, priority: impl Into<Priority>) -> Self {
        self.raw.hooks.get_or_insert_with(Vec::new).push(RawHook {
            ty: Some(hook.as_str().to_owned()),
            priority: Some(priority.into()),
        });
        self
    }

    /// Declare a topic the plugin publishes (no `*`; not `plugd.*`).
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .publishes("user.login")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.events.publishes, ["user.login"]);
    /// ```
    pub fn publishes(mut self, topic: impl Into<String>) -> Self {
        self.events()
            .publishes
            .get_or_insert_with(Vec::new)
            .push(topic.into());
        self
    }

    /// Declare a topic pattern the plugin subscribes to (`*` matches one segment).
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .subscribes("user.*")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.events.subscribes, ["user.*"]);
    /// ```
    pub fn subscribes(mut self, topic: impl Into<String>) -> Self {
        self.events()
            .subscribes
            .get_or_insert_with(Vec::new)
            .push(RawSubscription::Topic(topic.into()));
        self
    }

    /// Declare a subscription with its delivery among the instances of a fleet.
    ///
    /// ```
    /// use plugd_manifest::{Delivery, Manifest};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .subscribes_with("jobs.*", Delivery::Fleet)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.events.delivery_of("jobs.*"), Delivery::Fleet);
    /// ```
    pub fn subscribes_with(mut self, topic: impl Into<String>, delivery: Delivery) -> Self {
        self.events()
            .subscribes
            .get_or_insert_with(Vec::new)
            .push(RawSubscription::Table(RawSubscriptionTable {
                topic: Some(topic.into()),
                delivery: Some(delivery.as_str().to_string()),
            }));
        self
    }

    fn events(&mut self) -> &mut RawEvents {
        self.raw.events.get_or_insert_with(RawEvents::default)
    }

    /// Declare a service the plugin exports to other plugins.
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .exports("clock", "Tells the time")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.exports[0].name, "clock");
    /// ```
    pub fn exports(mut self, service: impl Into<String>, description: impl Into<String>) -> Self {
        self.raw
            .exports
            .get_or_insert_with(Vec::new)
            .push(RawExport {
                name: Some(service.into()),
                description: Some(description.into()),
            });
        self
    }

    /// Declare an optional feature the plugin supports (`hot_reload`).
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .capability("hot_reload")
    ///     .build()
    ///     .unwrap();
    /// assert!(m.has_capability("hot_reload"));
    /// ```
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.raw
            .capabilities
            .get_or_insert_with(Vec::new)
            .push(capability.into());
        self
    }

    /// The plugin's start priority (higher starts first).
    ///
    /// ```
    /// use plugd_manifest::{Manifest, Priority};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .priority(Priority::INFRASTRUCTURE)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.priority, Some(400));
    /// ```
    pub fn priority(mut self, priority: impl Into<Priority>) -> Self {
        self.raw.priority = Some(priority.into());
        self
    }

    /// Order the plugin before `plugin` (hooks, middleware, start order).
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a").before("b").build().unwrap();
    /// assert_eq!(m.before, ["b"]);
    /// ```
    pub fn before(mut self, plugin: impl Into<String>) -> Self {
        self.raw
            .before
            .get_or_insert_with(Vec::new)
            .push(plugin.into());
        self
    }

    /// Order the plugin after `plugin`.
    ///
    /// ```
    /// use plugd_manifest::Manifest;
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a").after("b").build().unwrap();
    /// assert_eq!(m.after, ["b"]);
    /// ```
    pub fn after(mut self, plugin: impl Into<String>) -> Self {
        self.raw
            .after
            .get_or_insert_with(Vec::new)
            .push(plugin.into());
        self
    }

    /// What the requests it guards get when its hooks cannot run (`FailClosed` for a guard).
    ///
    /// ```
    /// use plugd_manifest::{FailurePolicy, Manifest};
    /// let m = Manifest::builder("a", "1.0.0").description("d").author("a")
    ///     .failure_policy(FailurePolicy::FailClosed)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(m.failure_policy, Some(FailurePolicy::FailClosed));
    /// ```
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.raw.failure_policy = Some(policy);
        self
    }

    /// Check the manifest as [`Manifest::from_str`] checks a file, with the same messages.
    ///
    /// ```
    /// let err = plugd_manifest::Manifest::builder("clock", "1.0.0").build().unwrap_err();
    /// assert_eq!(err.to_string(), "failed to parse manifest: missing required field: description");
    /// ```
    pub fn build(self) -> Result<Manifest, ManifestError> {
        if let Some(message) = self.config_error {
            return Err(ManifestErrorKind::InvalidConfigSchema(message).into());
        }
        Ok(self.raw.validate()?)
    }
}

/// Shorthands for [`ConfigField::new`] with each [`ConfigType`], for
/// [`ManifestBuilder::config_field`].
impl ConfigField {
    /// An optional `string` field.
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::string();
    /// assert_eq!(f.ty, plugd_manifest::ConfigType::String);
    /// ```
    pub fn string() -> Self {
        ConfigField::new(ConfigType::String)
    }

    /// An optional `integer` field.
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::integer().with_default(3);
    /// assert_eq!(f.default, Some(3.into()));
    /// ```
    pub fn integer() -> Self {
        ConfigField::new(ConfigType::Integer)
    }

    /// An optional `float` field.
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::float();
    /// assert_eq!(f.ty, plugd_manifest::ConfigType::Float);
    /// ```
    pub fn float() -> Self {
        ConfigField::new(ConfigType::Float)
    }

    /// An optional `boolean` field.
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::boolean().with_default(true);
    /// assert_eq!(f.ty, plugd_manifest::ConfigType::Boolean);
    /// ```
    pub fn boolean() -> Self {
        ConfigField::new(ConfigType::Boolean)
    }

    /// An optional `duration` field (`"30s"`, `"24h"`).
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::duration().with_default("30s");
    /// assert_eq!(f.ty, plugd_manifest::ConfigType::Duration);
    /// ```
    pub fn duration() -> Self {
        ConfigField::new(ConfigType::Duration)
    }

    /// An optional `array` field.
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::array();
    /// assert_eq!(f.ty, plugd_manifest::ConfigType::Array);
    /// ```
    pub fn array() -> Self {
        ConfigField::new(ConfigType::Array)
    }

    /// An optional `object` field.
    ///
    /// ```
    /// let f = plugd_manifest::ConfigField::object();
    /// assert_eq!(f.ty, plugd_manifest::ConfigType::Object);
    /// ```
    pub fn object() -> Self {
        ConfigField::new(ConfigType::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    const YAML: &str = r#"name: auth-plugin
version: 1.2.0
description: Authentication and authorization plugin
author: John Doe <john@example.com>
framework:
  version: ">=1.0.0,<2.0.0"
dependencies:
  - name: cache-plugin
    version: ">=2.0.0"
  - name: logging-plugin
    version: ">=1.0.0"
    optional: true
permissions:
  database: true
  cache: true
  router: true
config:
  jwt_secret: { type: string, required: true, secret: true, description: JWT signing secret }
  token_ttl: { type: duration, default: "24h", description: Token time-to-live }
  refresh_enabled: { type: boolean, default: true }
hooks:
  - type: startup
    priority: 200
  - type: pre_request
    priority: security
events:
  publishes: [user.login, user.logout]
  subscribes: ["user.*"]
exports:
  - name: AuthService
    description: Authentication service
capabilities: [hot_reload]
priority: 300
before: [audit]
after: [logging-plugin]
failure_policy: fail_closed
"#;

    fn builder_manifest() -> ManifestBuilder {
        Manifest::builder("auth-plugin", "1.2.0")
            .description("Authentication and authorization plugin")
            .author("John Doe <john@example.com>")
            .framework(">=1.0.0,<2.0.0")
            .depends_on("cache-plugin", ">=2.0.0")
            .optional_dependency("logging-plugin", ">=1.0.0")
            .permissions([Permission::Database, Permission::Cache])
            .permission(Permission::Router)
            .config_field(
                "jwt_secret",
                ConfigField::string()
                    .required()
                    .secret()
                    .with_description("JWT signing secret"),
            )
            .config_field(
                "token_ttl",
                ConfigField::duration()
                    .with_default("24h")
                    .with_description("Token time-to-live"),
            )
            .config_field("refresh_enabled", ConfigField::boolean().with_default(true))
            .hook(HookType::Startup, 200)
            .hook(HookType::PreRequest, Priority::SECURITY)
            .publishes("user.login")
            .publishes("user.logout")
            .subscribes("user.*")
            .exports("AuthService", "Authentication service")
            .capability("hot_reload")
            .priority(300)
            .before("audit")
            .after("logging-plugin")
            .failure_policy(FailurePolicy::FailClosed)
    }

    #[test]
    fn a_builder_manifest_equals_the_file_saying_the_same() {
        let from_file = Manifest::from_str(YAML, Format::Yaml, None).unwrap();
        let built = builder_manifest().build().unwrap();
        assert_eq!(built, from_file);
    }

    #[test]
    fn the_builder_refuses_what_a_file_refuses_with_the_same_message() {
        let cases: Vec<(ManifestBuilder, &str)> = vec![
            (
                Manifest::builder("clock", "one")
                    .description("d")
                    .author("a"),
                "invalid version format: must be semantic version (X.Y.Z), got 'one'",
            ),
            (
                Manifest::builder("Clock", "1.0.0")
                    .description("d")
                    .author("a"),
                "invalid plugin name 'Clock': use lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters",
            ),
            (
                Manifest::builder("clock", "1.0.0").author("a"),
                "failed to parse manifest: missing required field: description",
            ),
            (
                Manifest::builder("clock", "1.0.0")
                    .description("d")
                    .author("a")
                    .depends_on("auth", "not a range"),
                "invalid dependency version constraint: not a range",
            ),
            (
                Manifest::builder("clock", "1.0.0")
                    .description("d")
                    .author("a")
                    .publishes("plugd.started"),
                "invalid event topic 'plugd.started' in events.publishes: the plugd.* topics are the host's own; a plugin cannot publish them",
            ),
            (
                Manifest::builder("clock", "1.0.0")
                    .description("d")
                    .author("a")
                    .hook(HookType::PreRequest, 1)
                    .hook(HookType::PreRequest, 2),
                "invalid hooks[1]: hook 'pre_request' is declared twice",
            ),
            (
                Manifest::builder("clock", "1.0.0")
                    .description("d")
                    .author("a")
                    .config_field("token", ConfigField::string().with_default("${TOKEN}")),
                "invalid config schema: default of 'token' refers to environment variable 'TOKEN': a manifest cannot read the host's environment; leave the default out and let the operator set it in the host config (plugins.plugins[].config.token: \"${TOKEN}\"), or write $${ for a literal ${",
            ),
        ];
        for (builder, message) in cases {
            assert_eq!(builder.build().unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn a_minimal_builder_manifest_has_the_file_defaults() {
        let built = Manifest::builder("clock", "1.0.0")
            .description("Tells the time")
            .author("you")
            .build()
            .unwrap();
        let from_file = Manifest::from_str(
            "name: clock\nversion: 1.0.0\ndescription: Tells the time\nauthor: you\n",
            Format::Yaml,
            None,
        )
        .unwrap();
        assert_eq!(built, from_file);
        assert_eq!(built.component, crate::DEFAULT_COMPONENT);
        assert!(built.source.is_none());
    }
}
