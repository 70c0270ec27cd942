//! Plugin manifests: `plugin.yaml`, `plugin.yml`, `plugin.json` or `plugin.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::format::{DecodeError, Format, at_position, decode};
use crate::schema::{ConfigSchema, RawConfigField};
use crate::{HookType, Permission, Priority};

// The builder is a child module: it fills in the manifest as written and checks it here.
#[path = "builder.rs"]
mod builder;
pub use builder::ManifestBuilder;

/// The component file a manifest names when it has no `component` key.
pub const DEFAULT_COMPONENT: &str = "plugin.wasm";

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a valid plugin name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
///
/// ```
/// assert!(plugd_manifest::is_valid_plugin_name("auth-plugin"));
/// assert!(!plugd_manifest::is_valid_plugin_name("Auth Plugin"));
/// assert!(!plugd_manifest::is_valid_plugin_name("-x"));
/// ```
pub fn is_valid_plugin_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// What is wrong with an event topic, or `None` when it is valid: dot-separated segments of
/// `[A-Za-z0-9_-]`, or `*` (any one segment). `*` is only allowed when `wildcard` is true.
fn topic_problem(topic: &str, wildcard: bool) -> Option<&'static str> {
    if topic.is_empty() {
        return Some("a topic must not be empty");
    }
    for segment in topic.split('.') {
        if segment == "*" {
            if !wildcard {
                return Some("a published topic cannot contain '*'");
            }
        } else if segment.is_empty() {
            return Some("empty segment between dots");
        } else if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Some("segments are letters, digits, '_' and '-', or '*'");
        }
    }
    None
}

/// Whether `topic` is a valid event topic (dot-separated segments of `[A-Za-z0-9_-]`, or `*`).
///
/// ```
/// assert!(plugd_manifest::is_valid_topic("user.login"));
/// assert!(plugd_manifest::is_valid_topic("user.*"));
/// assert!(!plugd_manifest::is_valid_topic("user..login"));
/// ```
pub fn is_valid_topic(topic: &str) -> bool {
    topic_problem(topic, true).is_none()
}

/// A plugin manifest, validated.
///
/// ```
/// use plugd_manifest::{Format, HookType, Manifest, Permission};
///
/// let m = Manifest::from_str(
///     "name: hello\nversion: 0.1.0\ndescription: Says hello\nauthor: Ada\n\
///      permissions: { router: true }\nhooks: [{ type: pre_request, priority: security }]\n",
///     Format::Yaml,
///     None,
/// )
/// .unwrap();
/// assert_eq!(m.name, "hello");
/// assert!(m.permissions.contains(&Permission::Router));
/// assert_eq!(m.hooks[0].hook, HookType::PreRequest);
/// assert_eq!(m.hooks[0].priority, 300);
/// assert_eq!(m.component, "plugin.wasm");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// The plugin's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// Its version, strict `X.Y.Z` (pre-release and build metadata allowed).
    pub version: semver::Version,
    /// What it does.
    pub description: String,
    /// Who wrote it.
    pub author: String,
    /// The plugd versions it works with (`framework: { version: ">=1.0.0,<2.0.0" }`).
    pub framework: Option<semver::VersionReq>,
    /// The plugins it needs.
    pub dependencies: Vec<Dependency>,
    /// The permissions it declares (those set to `true`).
    pub permissions: BTreeSet<Permission>,
    /// The schema of its config (manifest key `config`).
    pub config: ConfigSchema,
    /// The hooks it registers.
    pub hooks: Vec<HookDecl>,
    /// The event topics it publishes and subscribes to.
    pub events: Events,
    /// What its use of the `database` capability needs (manifest key `database`).
    pub database: DatabaseDecl,
    /// The services it exports.
    pub exports: Vec<ExportDecl>,
    /// Optional features it supports, such as `hot_reload`.
    pub capabilities: Vec<String>,
    /// Its start priority (higher starts first), when it sets one.
    pub priority: Option<i32>,
    /// Plugins it must come before (hooks, middleware, start order).
    pub before: Vec<String>,
    /// Plugins it must come after.
    pub after: Vec<String>,
    /// The component file, relative to the plugin directory (default `plugin.wasm`).
    pub component: String,
    /// What the requests it guards get when its hooks cannot run, when the author sets a floor
    /// (`fail_closed` for a guard such as an auth plugin). The host config can make it stricter,
    /// never looser.
    pub failure_policy: Option<crate::failure::FailurePolicy>,
    /// The file the manifest was read from.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A dependency on another plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dependency {
    /// The plugin depended on.
    pub name: String,
    /// The versions that satisfy it.
    #[serde(skip)]
    pub version: semver::VersionReq,
    /// The requirement as written (`>=1.0.0,<2.0.0`); `*` when none was written.
    #[serde(rename = "version")]
    pub version_text: String,
    /// Whether the plugin works without it.
    pub optional: bool,
}

/// A hook a plugin registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HookDecl {
    /// The hook point.
    #[serde(rename = "type")]
    pub hook: HookType,
    /// Higher runs first; default 100.
    pub priority: i32,
}

/// Event topics a plugin publishes and subscribes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Events {
    /// Topics it publishes (no `*`).
    pub publishes: Vec<String>,
    /// Topics it subscribes to (`*` matches one segment).
    pub subscribes: Vec<String>,
    /// The subscriptions written `{ topic, delivery }`, with the delivery they declare; the
    /// others are [`Delivery::Instance`]. Read it through [`Events::delivery_of`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub delivery: BTreeMap<String, Delivery>,
}

impl Events {
    /// How the events of the subscription to `pattern` are shared among the instances of a
    /// fleet: as declared, else [`Delivery::Instance`].
    ///
    /// ```
    /// use plugd_manifest::{Delivery, Format, Manifest};
    /// let m = Manifest::from_str(
    ///     "name: worker\nversion: 1.0.0\ndescription: d\nauthor: a\n\
    ///      events:\n  subscribes: [user.created, { topic: jobs.*, delivery: fleet }]\n",
    ///     Format::Yaml,
    ///     None,
    /// )
    /// .unwrap();
    /// assert_eq!(m.events.subscribes, ["user.created", "jobs.*"]);
    /// assert_eq!(m.events.delivery_of("jobs.*"), Delivery::Fleet);
    /// assert_eq!(m.events.delivery_of("user.created"), Delivery::Instance);
    /// ```
    pub fn delivery_of(&self, pattern: &str) -> Delivery {
        self.delivery.get(pattern).copied().unwrap_or_default()
    }
}

/// How the events of one subscription are shared among the instances of a fleet (hosts joined
/// by an event transport). On a host alone both are the same.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Once per instance (broadcast): the subscriber on every instance gets each event.
    #[default]
    Instance,
    /// Once per fleet (a work queue): the subscriber of exactly one instance handles each event.
    Fleet,
}

impl Delivery {
    /// The names as written in a manifest.
    pub const NAMES: [&'static str; 2] = ["instance", "fleet"];

    /// The name as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Instance => "instance",
            Delivery::Fleet => "fleet",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Delivery {
    type Err = String;

    /// `instance` or `fleet`; the error says which values there are.
    fn from_str(s: &str) -> Result<Delivery, String> {
        match s {
            "instance" => Ok(Delivery::Instance),
            "fleet" => Ok(Delivery::Fleet),
            _ => Err(format!(
                "'{s}' is not a delivery: use instance (each instance's subscriber gets every event) or fleet (one instance of the fleet handles each event)"
            )),
        }
    }
}

/// The SQL dialects plugd's database backends speak, as `database.dialects` names them.
pub const SQL_DIALECTS: &[&str] = &["sqlite", "postgres"];

/// What a plugin's SQL needs of the `database` capability (manifest key `database`).
///
/// ```
/// use plugd_manifest::{Format, Manifest};
/// let m = Manifest::from_str(
///     "name: notes\nversion: 1.0.0\ndescription: d\nauthor: a\ndatabase: { dialects: [sqlite, postgres] }\n",
///     Format::Yaml,
///     None,
/// )
/// .unwrap();
/// assert!(m.database.supports("postgres"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseDecl {
    /// The SQL dialects its statements and migrations are written in ([`SQL_DIALECTS`]);
    /// `[sqlite]` when the manifest does not say. Its migrations for a dialect are in
    /// `migrations/<dialect>/`, or `migrations/` itself for `sqlite` when that folder does not
    /// exist.
    pub dialects: Vec<String>,
}

impl Default for DatabaseDecl {
    /// `[sqlite]`: what a manifest without the key means.
    fn default() -> Self {
        DatabaseDecl {
            dialects: vec!["sqlite".to_string()],
        }
    }
}

impl DatabaseDecl {
    /// Whether its SQL is written for `dialect`.
    pub fn supports(&self, dialect: &str) -> bool {
        self.dialects.iter().any(|d| d == dialect)
    }
}

/// A service a plugin exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportDecl {
    /// The service name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The JSON Schema (draft 2020-12) of a plugin manifest, generated from the types the manifest is
/// read into. Editors use it for completion and validation; it is committed as
/// `schemas/plugin.schema.json` (`plugd schema` prints it). It checks the shape; [`Manifest`]'s
/// own checks (names, versions, topics) say more, with the contract's messages
/// (docs/design.md#errors).
///
/// ```
/// let schema = plugd_manifest::manifest_json_schema();
/// assert_eq!(schema["title"], "plugd plugin manifest");
/// assert_eq!(schema["additionalProperties"], false);
/// assert!(schema["properties"]["permissions"].is_object());
/// ```
pub fn manifest_json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawManifest).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".into(),
            serde_json::Value::String(
                "https://example.invalid/plugd/schemas/plugin.schema.json".into(),
            ),
        );
        // Name and version are required by Manifest's checks; say so to editors too.
        object.insert("required".into(), serde_json::json!(["name", "version"]));
    }
    schema
}

impl Manifest {
    /// The manifest file names looked for in a plugin directory, in this order.
    pub const FILE_NAMES: [&str; 4] = ["plugin.yaml", "plugin.yml", "plugin.json", "plugin.toml"];

    /// Read a manifest from a plugin directory (see [`Manifest::find`]) or a manifest file
    /// (format by extension).
    pub fn from_path(path: &Path) -> Result<Manifest, ManifestError> {
        let file = if path.is_dir() {
            Manifest::find(path)?
        } else if path.exists() {
            path.to_path_buf()
        } else {
            return Err(ManifestErrorKind::NotFound(path.to_path_buf()).into());
        };
        let format = Format::from_path(&file).ok_or_else(|| ManifestError {
            file: Some(file.clone()),
            kind: ManifestErrorKind::UnsupportedFormat,
        })?;
        let text = std::fs::read_to_string(&file).map_err(|e| ManifestError {
            file: Some(file.clone()),
            kind: ManifestErrorKind::Io(e),
        })?;
        Manifest::from_str(&text, format, Some(&file))
    }

    /// Parse and validate a manifest. `origin` (the file it came from) is recorded in
    /// [`Manifest::source`] and named in errors.
    pub fn from_str(
        text: &str,
        format: Format,
        origin: Option<&Path>,
    ) -> Result<Manifest, ManifestError> {
        let with_file = |kind| ManifestError {
            file: origin.map(Path::to_path_buf),
            kind,
        };
        let raw: RawManifest = decode(text, format).map_err(|e| with_file(e.into()))?;
        let mut manifest = raw.validate().map_err(with_file)?;
        manifest.source = origin.map(Path::to_path_buf);
        Ok(manifest)
    }

    /// The manifest file in a plugin directory: exactly one of [`Manifest::FILE_NAMES`].
    /// None is [`ManifestErrorKind::NoManifest`]; several is [`ManifestErrorKind::Ambiguous`].
    pub fn find(dir: &Path) -> Result<PathBuf, ManifestError> {
        if !dir.is_dir() {
            return Err(ManifestErrorKind::NotFound(dir.to_path_buf()).into());
        }
        let found: Vec<PathBuf> = Manifest::FILE_NAMES
            .iter()
            .map(|name| dir.join(name))
            .filter(|p| p.is_file())
            .collect();
        match found.len() {
            0 => Err(ManifestErrorKind::NoManifest(dir.to_path_buf()).into()),
            1 => Ok(found.into_iter().next().unwrap_or_default()),
            _ => Err(ManifestErrorKind::Ambiguous(found).into()),
        }
    }

    /// Whether the manifest lists the capability (`hot_reload`, …).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// Whether the manifest declares the permission.
    pub fn declares(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// The plugin directory: the folder of [`Manifest::source`].
    pub fn dir(&self) -> Option<&Path> {
        self.source.as_deref().and_then(Path::parent)
    }

    /// The component file: [`Manifest::component`] in the plugin directory (or as is, when the
    /// manifest was not read from a file).
    pub fn component_path(&self) -> PathBuf {
        match self.dir() {
            Some(dir) => dir.join(&self.component),
            None => PathBuf::from(&self.component),
        }
    }
}

/// A manifest that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    /// The manifest file (or, for a directory error, nothing: the kind names the path).
    pub file: Option<PathBuf>,
    /// What is wrong.
    #[source]
    pub kind: ManifestErrorKind,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl From<ManifestErrorKind> for ManifestError {
    fn from(kind: ManifestErrorKind) -> Self {
        ManifestError { file: None, kind }
    }
}

/// What is wrong with a manifest. The first messages are the contract's, verbatim
/// (docs/design.md#errors).
#[derive(Debug, thiserror::Error)]
pub enum ManifestErrorKind {
    /// `name`, `version`, `description` or `author` is missing or empty.
    #[error("failed to parse manifest: missing required field: {0}")]
    MissingField(&'static str),
    /// The version is not strict `X.Y.Z`; holds the value as written.
    #[error("invalid version format: must be semantic version (X.Y.Z), got '{0}'")]
    InvalidVersion(String),
    /// A dependency's (or `framework.version`'s) requirement does not parse; holds it as written.
    #[error("invalid dependency version constraint: {0}")]
    InvalidDependencyConstraint(String),
    /// A permission name that plugd does not know (even when set to `false`).
    #[error("unknown permission: {0}")]
    UnknownPermission(String),
    /// A bad config schema; holds the detail after "invalid config schema: ".
    #[error("invalid config schema: {0}")]
    InvalidConfigSchema(String),
    /// A syntax or type error.
    #[error("failed to parse manifest: {message}{}", at_position(*.line, *.column))]
    Parse {
        /// What the parser said (prefixed with the dotted path of the value, when known).
        message: String,
        /// 1-based line, when the format gives it.
        line: Option<u32>,
        /// 1-based column, when the format gives it.
        column: Option<u32>,
    },
    /// A key the manifest format does not have.
    #[error(
        "unknown key '{key}' in {}{}{}",
        if path.is_empty() { "the manifest" } else { path },
        at_position(*.line, *.column),
        suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_default()
    )]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The dotted path of the map holding it (empty at the top level).
        path: String,
        /// The closest known key, if close.
        suggestion: Option<String>,
        /// 1-based line, when the format gives it.
        line: Option<u32>,
        /// 1-based column, when the format gives it.
        column: Option<u32>,
    },
    /// The plugin name does not match `[a-z0-9][a-z0-9_-]*` (at most 64 characters).
    #[error(
        "invalid plugin name '{0}': use lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters"
    )]
    InvalidName(String),
    /// A hook type that is not one of [`HookType::NAMES`].
    #[error("{}", crate::hook::UnknownHookType(.0.clone()))]
    UnknownHookType(String),
    /// A bad event topic.
    #[error("invalid event topic '{topic}' in events.{list}: {reason}")]
    InvalidEventTopic {
        /// The topic as written.
        topic: String,
        /// `publishes` or `subscribes`.
        list: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another invalid value: a field's dotted path and what is wrong.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The dotted path (`dependencies[0].name`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The path does not exist.
    #[error("failed to load plugin: plugin file not found: {}", .0.display())]
    NotFound(PathBuf),
    /// The directory holds none of [`Manifest::FILE_NAMES`].
    #[error(
        "failed to load plugin: plugin file not found: {} has no plugin.yaml, plugin.yml, plugin.json or plugin.toml",
        .0.display()
    )]
    NoManifest(PathBuf),
    /// The directory holds several manifests.
    #[error(
        "several plugin manifests found: {} (keep one)",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous(Vec<PathBuf>),
    /// The file's extension is not `.yaml`, `.yml`, `.json` or `.toml`.
    #[error("unsupported manifest format: expected a .yaml, .yml, .json or .toml file")]
    UnsupportedFormat,
    /// The file could not be read.
    #[error("cannot read manifest: {0}")]
    Io(#[source] std::io::Error),
}

impl From<DecodeError> for ManifestErrorKind {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Syntax {
                message,
                line,
                column,
            } => ManifestErrorKind::Parse {
                message,
                line,
                column,
            },
            DecodeError::UnknownKey {
                key,
                path,
                suggestion,
                line,
                column,
            } => ManifestErrorKind::UnknownKey {
                key,
                path,
                suggestion,
                line,
                column,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The manifest as written. Every field is optional so that the checks (and their messages) are
// ours; unknown keys are rejected by serde and rewritten by `format::decode`.

/// A plugd plugin manifest (`plugin.yaml`, `plugin.json` or `plugin.toml`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "plugd plugin manifest")]
struct RawManifest {
    /// The plugin's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters; equals the name its component reports.
    name: Option<Text>,
    /// Its version, strict semver `X.Y.Z`.
    version: Option<Text>,
    /// What it does.
    description: Option<Text>,
    /// Who wrote it.
    author: Option<Text>,
    /// The plugd versions it works with.
    framework: Option<RawFramework>,
    /// Plugins it needs (started before it).
    dependencies: Option<Vec<RawDependency>>,
    /// The permissions it asks for (the operator grants them in the host config): a map `name: true` or a list of names.
    permissions: Option<RawPermissions>,
    /// The schema of its config: one entry per key.
    config: Option<BTreeMap<String, RawConfigField>>,
    /// Hooks the host registers for it without code.
    hooks: Option<Vec<RawHook>>,
    /// Event topics it publishes and subscribes to.
    events: Option<RawEvents>,
    /// What its use of the `database` capability needs: the SQL dialects it is written in.
    database: Option<RawDatabase>,
    /// Services it exports to other plugins.
    exports: Option<Vec<RawExport>>,
    /// Optional features it supports: `hot_reload`.
    capabilities: Option<Vec<String>>,
    /// Start priority: an integer (higher first) or infrastructure (400), security (300), middleware (200), business (100).
    priority: Option<Priority>,
    /// Plugins it must come before (hooks, middleware, start order).
    before: Option<Vec<String>>,
    /// Plugins it must come after.
    after: Option<Vec<String>>,
    /// The component file, relative to the plugin folder (default `plugin.wasm`).
    component: Option<String>,
    /// What requests it guards get when its hooks cannot run: `fail_closed` (or `closed`) answers 503 instead of letting them through; the host config can make it stricter, never looser.
    failure_policy: Option<crate::failure::FailurePolicy>,
}

/// The plugd versions a plugin works with.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawFramework {
    /// A semver requirement: `">=0.1.0"`, `">=1.0.0,<2.0.0"`.
    version: Option<Text>,
}

/// A plugin this one needs.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    /// The plugin depended on.
    name: Option<String>,
    /// A semver requirement (default: any version).
    version: Option<Text>,
    /// Whether the plugin works without it.
    optional: Option<bool>,
}

/// A hook registered from the manifest.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawHook {
    /// The hook point.
    #[serde(rename = "type")]
    #[schemars(with = "Option<HookType>")]
    ty: Option<String>,
    /// Higher runs first (default 100).
    priority: Option<Priority>,
}

/// Event topics (dot-named; `*` matches one segment in subscriptions).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    /// Topics it may publish (no `*`).
    publishes: Option<Vec<String>>,
    /// Topics it receives in `on-event` (`user.*`): a pattern, or `{ topic, delivery }`.
    subscribes: Option<Vec<RawSubscription>>,
}

/// One subscription as written: a pattern (delivered once per instance), or a table with the
/// pattern and its delivery.
#[derive(Debug)]
enum RawSubscription {
    Topic(String),
    Table(RawSubscriptionTable),
}

/// `{ topic: "jobs.*", delivery: fleet }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscriptionTable {
    topic: Option<String>,
    delivery: Option<String>,
}

impl schemars::JsonSchema for RawSubscription {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Subscription".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                { "type": "string", "description": "A topic pattern (`*` matches one segment), delivered once per instance." },
                {
                    "type": "object",
                    "properties": {
                        "topic": { "type": "string", "description": "The topic pattern (`*` matches one segment)." },
                        "delivery": {
                            "description": "instance (default): each instance's subscriber gets every event; fleet: one instance of the fleet handles each event.",
                            "type": "string",
                            "enum": Delivery::NAMES
                        }
                    },
                    "required": ["topic"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawSubscription {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SubscriptionVisitor;

        impl<'de> Visitor<'de> for SubscriptionVisitor {
            type Value = RawSubscription;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a topic pattern, or a table { topic, delivery }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSubscription, E> {
                Ok(RawSubscription::Topic(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSubscription, A::Error> {
                RawSubscriptionTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawSubscription::Table)
            }
        }

        deserializer.deserialize_any(SubscriptionVisitor)
    }
}

/// What the plugin's SQL needs of the `database` capability.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    /// The SQL dialects its statements and migrations are written in: `sqlite`, `postgres` (default `[sqlite]`). Migrations of a dialect live in `migrations/<dialect>/` (for `sqlite`, `migrations/` itself when that folder does not exist).
    dialects: Option<Vec<String>>,
}

/// A service the plugin exports.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawExport {
    /// The service name.
    name: Option<String>,
    /// What it does.
    description: Option<String>,
}

/// A scalar read as text: versions may be written unquoted (`version: 1.2.0`, or by mistake
/// `version: 1.0`, which YAML, JSON and TOML read as a number).
#[derive(Debug, Default)]
struct Text(String);

impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number"] })
    }

    fn inline_schema() -> bool {
        true
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                // `{:?}` keeps the `.0` of `1.0`, as written.
                Ok(Text(format!("{v:?}")))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// Permissions as written: a map `name: bool`, or a list of names (all `true`).
#[derive(Debug, Default)]
pub(crate) struct RawPermissions(Vec<(String, bool)>);

impl schemars::JsonSchema for RawPermissions {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Permissions".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names = generator.subschema_for::<Permission>();
        let mut properties = serde_json::Map::new();
        for p in Permission::ALL {
            properties.insert(
                p.as_str().to_string(),
                serde_json::json!({ "type": "boolean" }),
            );
        }
        schemars::json_schema!({
            "oneOf": [
                { "type": "object", "properties": properties, "additionalProperties": false },
                { "type": "array", "items": names, "uniqueItems": true }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawPermissions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PermissionsVisitor;

        impl<'de> Visitor<'de> for PermissionsVisitor {
            type Value = RawPermissions;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of permission names to booleans, or a list of permission names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPermissions, A::Error> {
                let mut out = Vec::new();
                while let Some((name, on)) = map.next_entry::<String, bool>()? {
                    out.push((name, on));
                }
                Ok(RawPermissions(out))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPermissions, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push((name, true));
                }
                Ok(RawPermissions(out))
            }
        }

        deserializer.deserialize_any(PermissionsVisitor)
    }
}

fn required(value: Option<Text>, field: &'static str) -> Result<String, ManifestErrorKind> {
    match value {
        Some(Text(s)) if !s.trim().is_empty() => Ok(s),
        _ => Err(ManifestErrorKind::MissingField(field)),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestErrorKind {
    ManifestErrorKind::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_req(text: &str) -> Result<semver::VersionReq, ManifestErrorKind> {
    semver::VersionReq::parse(text.trim())
        .map_err(|_| ManifestErrorKind::InvalidDependencyConstraint(text.to_owned()))
}

/// Check a list of plugin names (`before`, `after`).
fn plugin_names(
    list: Option<Vec<String>>,
    key: &str,
    own: &str,
) -> Result<Vec<String>, ManifestErrorKind> {
    let list = list.unwrap_or_default();
    for (i, name) in list.iter().enumerate() {
        if !is_valid_plugin_name(name) {
            return Err(invalid(
                format!("{key}[{i}]"),
                format!("'{name}' is not a valid plugin name"),
            ));
        }
        if name == own {
            return Err(invalid(
                format!("{key}[{i}]"),
                "a plugin cannot be ordered against itself",
            ));
        }
    }
    Ok(list)
}

impl RawManifest {
    fn validate(self) -> Result<Manifest, ManifestErrorKind> {
        let name = required(self.name, "name")?;
        let version_text = required(self.version, "version")?;
        let description = required(self.description, "description")?;
        let author = required(self.author, "author")?;

        if !is_valid_plugin_name(&name) {
            return Err(ManifestErrorKind::InvalidName(name));
        }
        let version = semver::Version::parse(version_text.trim())
            .map_err(|_| ManifestErrorKind::InvalidVersion(version_text.clone()))?;

        let framework = match self.framework {
            None => None,
            Some(RawFramework { version: None }) => {
                return Err(ManifestErrorKind::MissingField("framework.version"));
            }
            Some(RawFramework {
                version: Some(Text(text)),
            }) => Some(parse_req(&text)?),
        };

        let mut dependencies: Vec<Dependency> = Vec::new();
        for (i, dep) in self
            .dependencies
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let field = format!("dependencies[{i}]");
            let dep_name = dep
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid(&field, "a dependency needs a name"))?;
            if !is_valid_plugin_name(&dep_name) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("'{dep_name}' is not a valid plugin name"),
                ));
            }
            if dep_name == name {
                return Err(invalid(field, "a plugin cannot depend on itself"));
            }
            if dependencies.iter().any(|d| d.name == dep_name) {
                return Err(invalid(field, format!("'{dep_name}' is listed twice")));
            }
            let version_text = dep.version.map_or_else(|| "*".to_owned(), |t| t.0);
            dependencies.push(Dependency {
                name: dep_name,
                version: parse_req(&version_text)?,
                version_text,
                optional: dep.optional.unwrap_or(false),
            });
        }

        let mut permissions = BTreeSet::new();
        for (perm, on) in self.permissions.unwrap_or_default().0 {
            let p: Permission = perm
                .parse()
                .map_err(|_| ManifestErrorKind::UnknownPermission(perm))?;
            if on {
                permissions.insert(p);
            }
        }

        let config = ConfigSchema::from_raw(self.config.unwrap_or_default())
            .map_err(ManifestErrorKind::InvalidConfigSchema)?;

        let mut hooks: Vec<HookDecl> = Vec::new();
        for (i, raw) in self.hooks.unwrap_or_default().into_iter().enumerate() {
            let ty = raw
                .ty
                .ok_or_else(|| invalid(format!("hooks[{i}]"), "a hook needs a type"))?;
            let hook: HookType = ty
                .parse()
                .map_err(|_| ManifestErrorKind::UnknownHookType(ty))?;
            if hooks.iter().any(|h| h.hook == hook) {
                return Err(invalid(
                    format!("hooks[{i}]"),
                    format!("hook '{hook}' is declared twice"),
                ));
            }
            hooks.push(HookDecl {
                hook,
                priority: raw.priority.unwrap_or_default().0,
            });
        }

        let raw_events = self.events.unwrap_or_default();
        let mut subscribes = Vec::new();
        let mut delivery = BTreeMap::new();
        for (i, raw) in raw_events
            .subscribes
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let (topic, declared) = match raw {
                RawSubscription::Topic(topic) => (topic, None),
                RawSubscription::Table(table) => {
                    let topic = table.topic.ok_or_else(|| {
                        invalid(
                            format!("events.subscribes[{i}]"),
                            "a subscription written as a table needs a topic",
                        )
                    })?;
                    let declared = table
                        .delivery
                        .map(|d| {
                            d.parse::<Delivery>().map_err(|reason| {
                                invalid(format!("events.subscribes[{i}].delivery"), reason)
                            })
                        })
                        .transpose()?;
                    (topic, declared)
                }
            };
            let was = subscribes
                .contains(&topic)
                .then(|| delivery.get(&topic).copied().unwrap_or(Delivery::Instance));
            let now = declared.unwrap_or_default();
            match was {
                Some(was) if was != now => {
                    return Err(invalid(
                        format!("events.subscribes[{i}]"),
                        format!(
                            "'{topic}' is subscribed twice, with delivery {was} and {now}: keep one"
                        ),
                    ));
                }
                Some(_) => continue,
                None => {}
            }
            if let Some(declared) = declared {
                delivery.insert(topic.clone(), declared);
            }
            subscribes.push(topic);
        }
        let events = Events {
            publishes: raw_events.publishes.unwrap_or_default(),
            subscribes,
            delivery,
        };
        for (list, topics, wildcard) in [
            ("publishes", &events.publishes, false),
            ("subscribes", &events.subscribes, true),
        ] {
            for topic in topics {
                let reserved = !wildcard && (topic == "plugd" || topic.starts_with("plugd."));
                let problem = if reserved {
                    Some("the plugd.* topics are the host's own; a plugin cannot publish them")
                } else {
                    topic_problem(topic, wildcard)
                };
                if let Some(reason) = problem {
                    return Err(ManifestErrorKind::InvalidEventTopic {
                        topic: topic.clone(),
                        list,
                        reason,
                    });
                }
            }
        }

        let database = match self.database.and_then(|d| d.dialects) {
            None => DatabaseDecl::default(),
            Some(dialects) => {
                if dialects.is_empty() {
                    return Err(invalid(
                        "database.dialects",
                        format!(
                            "list at least one SQL dialect (known: {})",
                            SQL_DIALECTS.join(", ")
                        ),
                    ));
                }
                for (i, d) in dialects.iter().enumerate() {
                    if !SQL_DIALECTS.contains(&d.as_str()) {
                        return Err(invalid(
                            format!("database.dialects[{i}]"),
                            format!(
                                "unknown SQL dialect '{d}' (known: {})",
                                SQL_DIALECTS.join(", ")
                            ),
                        ));
                    }
                    if dialects[..i].contains(d) {
                        return Err(invalid(
                            format!("database.dialects[{i}]"),
                            format!("'{d}' is listed twice"),
                        ));
                    }
                }
                DatabaseDecl { dialects }
            }
        };

        let mut exports: Vec<ExportDecl> = Vec::new();
        for (i, raw) in self.exports.unwrap_or_default().into_iter().enumerate() {
            let export_name = raw
                .name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| invalid(format!("exports[{i}]"), "an export needs a name"))?;
            if exports.iter().any(|e| e.name == export_name) {
                return Err(invalid(
                    format!("exports[{i}]"),
                    format!("'{export_name}' is exported twice"),
                ));
            }
            exports.push(ExportDecl {
                name: export_name,
                description: raw.description,
            });
        }

        let capabilities = self.capabilities.unwrap_or_default();
        if let Some(i) = capabilities.iter().position(|c| c.trim().is_empty()) {
            return Err(invalid(format!("capabilities[{i}]"), "empty capability"));
        }

        let before = plugin_names(self.before, "before", &name)?;
        let after = plugin_names(self.after, "after", &name)?;

        let component = self
            .component
            .unwrap_or_else(|| DEFAULT_COMPONENT.to_owned());
        let component_path = Path::new(&component);
        if component.is_empty()
            || !component_path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(invalid(
                "component",
                format!("'{component}' must be a relative path inside the plugin directory"),
            ));
        }

        Ok(Manifest {
            name,
            version,
            description,
            author,
            framework,
            dependencies,
            permissions,
            config,
            hooks,
            events,
            database,
            exports,
            capabilities,
            priority: self.priority.map(|p| p.0),
            before,
            after,
            component,
            failure_policy: self.failure_policy,
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigType;
    use serde_json::{Value, json};

    /// The contract's example YAML manifest (docs/design.md#manifest), verbatim.
    const CONTRACT_YAML: &str = r#"name: auth-plugin
version: 1.2.0
description: Authentication and authorization plugin
author: John Doe <john@example.com>

# Framework compatibility (Requirement 5.1)
framework:
  version: ">=1.0.0,<2.0.0"

# Dependencies (Requirement 5.2-5.5)
dependencies:
  - name: cache-plugin
    version: ">=2.0.0"
    optional: false
  - name: logging-plugin
    version: ">=1.0.0"
    optional: true

# Permissions (Requirement 11.1)
permissions:
  database: true
  cache: true
  router: true
  config: true
  filesystem: false
  network: false
  exec: false

# Configuration schema (Requirement 8.5)
config:
  jwt_secret:
    type: string
    required: true
    description: JWT signing secret
  token_ttl:
    type: duration
    default: "24h"
    description: Token time-to-live
  refresh_enabled:
    type: boolean
    default: true
    description: Enable refresh tokens

# Hooks (Requirement 2.1-2.5)
hooks:
  - type: startup
    priority: 200
  - type: pre_request
    priority: 200
  - type: shutdown
    priority: 100

# Events (Requirement 10.1, 10.2)
events:
  publishes:
    - user.login
    - user.logout
    - token.expired
  subscribes:
    - user.created
    - user.deleted

# Exported services (Requirement 10.4)
exports:
  - name: AuthService
    description: Authentication service
  - name: TokenService
    description: Token management service
"#;

    /// The same manifest in JSON (the contract's JSON example, completed).
    const CONTRACT_JSON: &str = r#"{
  "name": "auth-plugin",
  "version": "1.2.0",
  "description": "Authentication and authorization plugin",
  "author": "John Doe <john@example.com>",
  "framework": {
    "version": ">=1.0.0,<2.0.0"
  },
  "dependencies": [
    { "name": "cache-plugin", "version": ">=2.0.0", "optional": false },
    { "name": "logging-plugin", "version": ">=1.0.0", "optional": true }
  ],
  "permissions": {
    "database": true, "cache": true, "router": true, "config": true,
    "filesystem": false, "network": false, "exec": false
  },
  "config": {
    "jwt_secret": { "type": "string", "required": true, "description": "JWT signing secret" },
    "token_ttl": { "type": "duration", "default": "24h", "description": "Token time-to-live" },
    "refresh_enabled": { "type": "boolean", "default": true, "description": "Enable refresh tokens" }
  },
  "hooks": [
    { "type": "startup", "priority": 200 },
    { "type": "pre_request", "priority": 200 },
    { "type": "shutdown", "priority": 100 }
  ],
  "events": {
    "publishes": ["user.login", "user.logout", "token.expired"],
    "subscribes": ["user.created", "user.deleted"]
  },
  "exports": [
    { "name": "AuthService", "description": "Authentication service" },
    { "name": "TokenService", "description": "Token management service" }
  ]
}"#;

    /// The same manifest in TOML.
    const CONTRACT_TOML: &str = r#"name = "auth-plugin"
version = "1.2.0"
description = "Authentication and authorization plugin"
author = "John Doe <john@example.com>"

[framework]
version = ">=1.0.0,<2.0.0"

[[dependencies]]
name = "cache-plugin"
version = ">=2.0.0"
optional = false

[[dependencies]]
name = "logging-plugin"
version = ">=1.0.0"
optional = true

[permissions]
database = true
cache = true
router = true
config = true
filesystem = false
network = false
exec = false

[config.jwt_secret]
type = "string"
required = true
description = "JWT signing secret"

[config.token_ttl]
type = "duration"
default = "24h"
description = "Token time-to-live"

[config.refresh_enabled]
type = "boolean"
default = true
description = "Enable refresh tokens"

[[hooks]]
type = "startup"
priority = 200

[[hooks]]
type = "pre_request"
priority = 200

[[hooks]]
type = "shutdown"
priority = 100

[events]
publishes = ["user.login", "user.logout", "token.expired"]
subscribes = ["user.created", "user.deleted"]

[[exports]]
name = "AuthService"
description = "Authentication service"

[[exports]]
name = "TokenService"
description = "Token management service"
"#;

    fn parse(text: &str, format: Format) -> Result<Manifest, ManifestError> {
        Manifest::from_str(text, format, None)
    }

    /// `doc` written in each of the three formats.
    fn in_formats(doc: &Value) -> [(Format, String); 3] {
        [
            (Format::Yaml, serde_saphyr::to_string(doc).unwrap()),
            (Format::Json, serde_json::to_string_pretty(doc).unwrap()),
            (Format::Toml, toml::to_string(doc).unwrap()),
        ]
    }

    fn base() -> Value {
        json!({
            "name": "auth-plugin",
            "version": "1.2.0",
            "description": "Authentication",
            "author": "Jane",
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut doc = base();
        doc[key] = value;
        doc
    }

    fn without(key: &str) -> Value {
        let mut doc = base();
        doc.as_object_mut().unwrap().remove(key);
        doc
    }

    /// `msg` without its " at line L column C".
    fn strip_position(msg: &str) -> String {
        match msg.find(" at line ") {
            Some(start) => {
                let rest = &msg[start + " at line ".len()..];
                let end = rest.find(';').unwrap_or(rest.len());
                format!("{}{}", &msg[..start], &rest[end..])
            }
            None => msg.to_owned(),
        }
    }

    /// The error of `doc` in every format; all three must display the same (positions aside).
    fn error_in_all_formats(doc: &Value) -> String {
        let mut messages = Vec::new();
        for (format, text) in in_formats(doc) {
            let err = parse(&text, format).expect_err(&format!("{format} accepted:\n{text}"));
            messages.push(strip_position(&err.to_string()));
        }
        assert_eq!(messages[0], messages[1], "yaml vs json");
        assert_eq!(messages[0], messages[2], "yaml vs toml");
        messages.remove(0)
    }

    #[test]
    fn database_dialects_parse_in_three_formats_and_default_to_sqlite() {
        for (format, text) in in_formats(&base()) {
            let m = parse(&text, format).unwrap();
            assert_eq!(m.database.dialects, ["sqlite"], "{format}");
        }
        let both = with("database", json!({"dialects": ["sqlite", "postgres"]}));
        for (format, text) in in_formats(&both) {
            let m = parse(&text, format).unwrap();
            assert_eq!(m.database.dialects, ["sqlite", "postgres"], "{format}");
            assert!(m.database.supports("postgres") && m.database.supports("sqlite"));
        }
        let only_pg = with("database", json!({"dialects": ["postgres"]}));
        for (format, text) in in_formats(&only_pg) {
            let m = parse(&text, format).unwrap();
            assert!(!m.database.supports("sqlite"), "{format}");
        }
        assert_eq!(
            error_in_all_formats(&with("database", json!({"dialects": ["sqlite", "mysql"]}))),
            "invalid database.dialects[1]: unknown SQL dialect 'mysql' (known: sqlite, postgres)"
        );
        assert_eq!(
            error_in_all_formats(&with("database", json!({"dialects": []}))),
            "invalid database.dialects: list at least one SQL dialect (known: sqlite, postgres)"
        );
        assert_eq!(
            error_in_all_formats(&with(
                "database",
                json!({"dialects": ["postgres", "postgres"]})
            )),
            "invalid database.dialects[1]: 'postgres' is listed twice"
        );
    }

    #[test]
    fn a_subscription_declares_its_delivery_in_three_formats() {
        let doc = with(
            "events",
            json!({"subscribes": [
                "user.created",
                {"topic": "jobs.*", "delivery": "fleet"},
                {"topic": "cache.flush", "delivery": "instance"},
                {"topic": "audit.*"},
            ]}),
        );
        for (format, text) in in_formats(&doc) {
            let m = parse(&text, format).unwrap_or_else(|e| panic!("{format}: {e}\n{text}"));
            assert_eq!(
                m.events.subscribes,
                ["user.created", "jobs.*", "cache.flush", "audit.*"],
                "{format}"
            );
            assert_eq!(m.events.delivery_of("jobs.*"), Delivery::Fleet, "{format}");
            for instance in ["user.created", "cache.flush", "audit.*", "not.subscribed"] {
                assert_eq!(
                    m.events.delivery_of(instance),
                    Delivery::Instance,
                    "{format}"
                );
            }
        }
    }

    #[test]
    fn a_bad_delivery_is_refused_with_the_values_there_are() {
        let bad = |subscribes: Value| {
            error_in_all_formats(&with("events", json!({"subscribes": subscribes})))
        };
        assert_eq!(
            bad(json!(["a.b", {"topic": "jobs.*", "delivery": "everyone"}])),
            "invalid events.subscribes[1].delivery: 'everyone' is not a delivery: use instance (each instance's subscriber gets every event) or fleet (one instance of the fleet handles each event)"
        );
        assert_eq!(
            bad(json!([{"delivery": "fleet"}])),
            "invalid events.subscribes[0]: a subscription written as a table needs a topic"
        );
        assert_eq!(
            bad(json!(["jobs.*", {"topic": "jobs.*", "delivery": "fleet"}])),
            "invalid events.subscribes[1]: 'jobs.*' is subscribed twice, with delivery instance and fleet: keep one"
        );
        assert_eq!(
            bad(json!([{"topic": "jobs..x", "delivery": "fleet"}])),
            "invalid event topic 'jobs..x' in events.subscribes: empty segment between dots"
        );
        let unknown = bad(json!([{"topic": "jobs.*", "mode": "fleet"}]));
        assert!(unknown.contains("mode"), "{unknown}");
    }

    #[test]
    fn contract_example_manifest_is_identical_in_three_formats() {
        let yaml = parse(CONTRACT_YAML, Format::Yaml).unwrap();
        let json = parse(CONTRACT_JSON, Format::Json).unwrap();
        let toml = parse(CONTRACT_TOML, Format::Toml).unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml, toml);

        assert_eq!(yaml.name, "auth-plugin");
        assert_eq!(yaml.version, semver::Version::new(1, 2, 0));
        assert_eq!(yaml.author, "John Doe <john@example.com>");
        let framework = yaml.framework.as_ref().unwrap();
        assert!(framework.matches(&semver::Version::new(1, 5, 0)));
        assert!(!framework.matches(&semver::Version::new(2, 0, 0)));
        assert_eq!(yaml.dependencies.len(), 2);
        assert_eq!(yaml.dependencies[0].name, "cache-plugin");
        assert_eq!(yaml.dependencies[0].version_text, ">=2.0.0");
        assert!(!yaml.dependencies[0].optional);
        assert!(yaml.dependencies[1].optional);
        assert_eq!(
            yaml.permissions,
            [
                Permission::Database,
                Permission::Cache,
                Permission::Router,
                Permission::Config
            ]
            .into()
        );
        let secret = &yaml.config.fields["jwt_secret"];
        assert_eq!(secret.ty, ConfigType::String);
        assert!(secret.required);
        assert_eq!(yaml.config.fields["token_ttl"].default, Some(json!("24h")));
        assert_eq!(
            yaml.config.fields["refresh_enabled"].default,
            Some(json!(true))
        );
        assert_eq!(
            yaml.hooks,
            vec![
                HookDecl {
                    hook: HookType::Startup,
                    priority: 200
                },
                HookDecl {
                    hook: HookType::PreRequest,
                    priority: 200
                },
                HookDecl {
                    hook: HookType::Shutdown,
                    priority: 100
                },
            ]
        );
        assert_eq!(
            yaml.events.publishes,
            ["user.login", "user.logout", "token.expired"]
        );
        assert_eq!(yaml.events.subscribes, ["user.created", "user.deleted"]);
        assert_eq!(yaml.exports[1].name, "TokenService");
        assert_eq!(
            yaml.exports[1].description.as_deref(),
            Some("Token management service")
        );
        assert_eq!(yaml.component, DEFAULT_COMPONENT);
        assert_eq!(yaml.priority, None);
        assert!(yaml.capabilities.is_empty());
    }

    #[test]
    fn the_generated_formats_agree_on_a_valid_manifest() {
        let doc = json!({
            "name": "x", "version": "0.1.0-beta.1+build.5", "description": "d", "author": "a",
            "permissions": ["database", "cache"],
            "priority": "infrastructure",
            "hooks": [{"type": "error"}, {"type": "pre_response", "priority": "security"}],
            "capabilities": ["hot_reload"],
            "before": ["y"], "after": ["z"],
            "component": "build/x.wasm",
            "dependencies": [{"name": "y"}],
        });
        let parsed: Vec<Manifest> = in_formats(&doc)
            .iter()
            .map(|(f, t)| parse(t, *f).unwrap())
            .collect();
        assert_eq!(parsed[0], parsed[1]);
        assert_eq!(parsed[0], parsed[2]);
        let m = &parsed[0];
        assert_eq!(m.version.pre.as_str(), "beta.1");
        assert_eq!(
            m.permissions,
            [Permission::Database, Permission::Cache].into()
        );
        assert_eq!(m.priority, Some(400));
        assert_eq!(m.hooks[0].priority, 100);
        assert_eq!(m.hooks[1].priority, 300);
        assert!(m.has_capability("hot_reload"));
        assert!(!m.has_capability("streaming"));
        assert_eq!(m.dependencies[0].version_text, "*");
        assert_eq!(m.component_path(), PathBuf::from("build/x.wasm"));
    }

    #[test]
    fn missing_required_fields() {
        for field in ["name", "version", "description", "author"] {
            assert_eq!(
                error_in_all_formats(&without(field)),
                format!("failed to parse manifest: missing required field: {field}")
            );
            assert_eq!(
                error_in_all_formats(&with(field, json!(""))),
                format!("failed to parse manifest: missing required field: {field}")
            );
        }
        // Required fields are checked in the contract's order (name, version, description,
        // author): name first.
        assert_eq!(
            error_in_all_formats(&json!({"author": "x"})),
            "failed to parse manifest: missing required field: name"
        );
        for format in Format::ALL {
            assert_eq!(
                parse("", format).unwrap_err().to_string(),
                "failed to parse manifest: missing required field: name"
            );
        }
    }

    #[test]
    fn invalid_version() {
        for bad in ["1.0", "v1.2.0", "1.2", "01.2.3", "latest"] {
            let msg = error_in_all_formats(&with("version", json!(bad)));
            assert!(
                msg.starts_with("invalid version format: must be semantic version (X.Y.Z)"),
                "{msg}"
            );
            assert!(msg.contains(bad), "{msg}");
        }
        // A number where a string belongs (YAML `version: 1.0`) is a bad version, not a type error.
        let msg = error_in_all_formats(&with("version", json!(1.5)));
        assert!(msg.starts_with("invalid version format"), "{msg}");
        let err = parse(
            "name: a\nversion: 1.0\ndescription: d\nauthor: x\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(
            matches!(err.kind, ManifestErrorKind::InvalidVersion(ref v) if v == "1.0"),
            "{err}"
        );
    }

    #[test]
    fn invalid_dependency_constraint() {
        let doc = with(
            "dependencies",
            json!([{"name": "cache-plugin", "version": "=>1.0.0"}]),
        );
        assert_eq!(
            error_in_all_formats(&doc),
            "invalid dependency version constraint: =>1.0.0"
        );
        let doc = with("framework", json!({"version": "1.0.0 - 2.0.0"}));
        assert_eq!(
            error_in_all_formats(&doc),
            "invalid dependency version constraint: 1.0.0 - 2.0.0"
        );
        // The contract's own example constraint is valid.
        let doc = with(
            "dependencies",
            json!([{"name": "cache-plugin", "version": ">=1.0.0,<2.0.0"}]),
        );
        for (format, text) in in_formats(&doc) {
            parse(&text, format).unwrap();
        }
    }

    #[test]
    fn unknown_permission() {
        let doc = with(
            "permissions",
            json!({"database": true, "custom_permission": false}),
        );
        assert_eq!(
            error_in_all_formats(&doc),
            "unknown permission: custom_permission"
        );
        let doc = with("permissions", json!(["cache", "custom_permission"]));
        assert_eq!(
            error_in_all_formats(&doc),
            "unknown permission: custom_permission"
        );
    }

    #[test]
    fn invalid_config_schema() {
        let doc = with("config", json!({"jwt_secret": {"type": "text"}}));
        let msg = error_in_all_formats(&doc);
        assert!(
            msg.starts_with(
                "invalid config schema: type must be one of [string, integer, float, boolean, duration, array, object]"
            ),
            "{msg}"
        );
        assert!(msg.contains("jwt_secret"), "{msg}");
        let doc = with(
            "config",
            json!({"n": {"type": "integer", "default": "many"}}),
        );
        assert_eq!(
            error_in_all_formats(&doc),
            "invalid config schema: default of 'n' must be an integer, got string \"many\""
        );
        let doc = with("config", json!({"n": {"type": "integer", "requird": true}}));
        let msg = error_in_all_formats(&doc);
        assert!(
            msg.starts_with("unknown key 'requird' in config.n"),
            "{msg}"
        );
        assert!(msg.ends_with("did you mean 'required'?"), "{msg}");
    }

    #[test]
    fn invalid_names_hooks_topics_and_priorities() {
        assert!(
            error_in_all_formats(&with("name", json!("Auth Plugin")))
                .starts_with("invalid plugin name 'Auth Plugin'")
        );
        assert!(
            error_in_all_formats(&with("name", json!("a".repeat(65))))
                .starts_with("invalid plugin name")
        );
        assert_eq!(
            error_in_all_formats(&with("hooks", json!([{"type": "pre_reqest"}]))),
            "unknown hook type: pre_reqest; did you mean 'pre_request'?"
        );
        assert_eq!(
            error_in_all_formats(&with(
                "hooks",
                json!([{"type": "startup"}, {"type": "startup"}])
            )),
            "invalid hooks[1]: hook 'startup' is declared twice"
        );
        assert_eq!(
            error_in_all_formats(&with("events", json!({"subscribes": ["user..created"]}))),
            "invalid event topic 'user..created' in events.subscribes: empty segment between dots"
        );
        assert_eq!(
            error_in_all_formats(&with("events", json!({"publishes": ["user.*"]}))),
            "invalid event topic 'user.*' in events.publishes: a published topic cannot contain '*'"
        );
        // Wildcards are fine in subscriptions.
        for (format, text) in in_formats(&with("events", json!({"subscribes": ["user.*"]}))) {
            parse(&text, format).unwrap();
        }
        for (format, text) in in_formats(&with("priority", json!("urgent"))) {
            let msg = parse(&text, format).unwrap_err().to_string();
            assert!(
                msg.starts_with("failed to parse manifest: priority: invalid priority 'urgent'"),
                "{format}: {msg}"
            );
            assert!(msg.contains(" at line "), "{format}: {msg}");
        }
        assert_eq!(
            error_in_all_formats(&with("component", json!("../other/x.wasm"))),
            "invalid component: '../other/x.wasm' must be a relative path inside the plugin directory"
        );
        assert_eq!(
            error_in_all_formats(&with("dependencies", json!([{"name": "auth-plugin"}]))),
            "invalid dependencies[0]: a plugin cannot depend on itself"
        );
        assert_eq!(
            error_in_all_formats(&with("framework", json!({}))),
            "failed to parse manifest: missing required field: framework.version"
        );
    }

    #[test]
    fn unknown_keys_have_suggestion_and_position() {
        let cases = [
            (
                Format::Yaml,
                "name: a\nversion: 1.0.0\ndescription: d\nauthor: x\nprioirty: 5\n",
                5,
            ),
            (
                Format::Json,
                "{\n  \"name\": \"a\",\n  \"version\": \"1.0.0\",\n  \"description\": \"d\",\n  \"author\": \"x\",\n  \"prioirty\": 5\n}",
                6,
            ),
            (
                Format::Toml,
                "name = \"a\"\nversion = \"1.0.0\"\ndescription = \"d\"\nauthor = \"x\"\nprioirty = 5\n",
                5,
            ),
        ];
        for (format, text, line) in cases {
            let err = parse(text, format).unwrap_err();
            let ManifestErrorKind::UnknownKey {
                key,
                path,
                suggestion,
                line: l,
                column,
            } = &err.kind
            else {
                panic!("{format}: {err}");
            };
            assert_eq!(key, "prioirty");
            assert_eq!(path, "");
            assert_eq!(suggestion.as_deref(), Some("priority"));
            assert_eq!(*l, Some(line), "{format}");
            let msg = err.to_string();
            assert_eq!(
                msg,
                format!(
                    "unknown key 'prioirty' in the manifest at line {line} column {}; did you mean 'priority'?",
                    column.unwrap()
                )
            );
        }
        // Nested: the path names the container.
        let doc = with("dependencies", json!([{"name": "b", "optinal": true}]));
        assert_eq!(
            error_in_all_formats(&doc),
            "unknown key 'optinal' in dependencies[0]; did you mean 'optional'?"
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let cases = [
            (Format::Yaml, "name: a\nversion: [1.0.0\n"),
            (Format::Json, "{\n  \"name\": \"a\",\n  \"version\": \n}"),
            (Format::Toml, "name = \"a\"\nversion = \n"),
        ];
        for (format, text) in cases {
            let err = parse(text, format).unwrap_err();
            let ManifestErrorKind::Parse { line, column, .. } = &err.kind else {
                panic!("{format}: {err}");
            };
            let (line, column) = (line.unwrap(), column.unwrap());
            let msg = err.to_string();
            assert!(msg.starts_with("failed to parse manifest: "), "{msg}");
            assert!(
                msg.ends_with(&format!(" at line {line} column {column}")),
                "{msg}"
            );
            assert!(line >= 2, "{format}: {msg}");
        }
        // A type error names the field.
        let msg = parse("name: a\nhooks: {}\n", Format::Yaml)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("failed to parse manifest: hooks: "),
            "{msg}"
        );
    }

    #[test]
    fn errors_name_the_file() {
        let err = Manifest::from_str("name: a\n", Format::Yaml, Some(Path::new("p/plugin.yaml")))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p/plugin.yaml: failed to parse manifest: missing required field: version"
        );
    }

    #[test]
    fn from_path_finds_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("auth-plugin");
        std::fs::create_dir(&plugin).unwrap();

        let err = Manifest::from_path(&plugin).unwrap_err();
        assert!(
            matches!(err.kind, ManifestErrorKind::NoManifest(_)),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("failed to load plugin: plugin file not found: "),
            "{err}"
        );

        std::fs::write(plugin.join("plugin.toml"), CONTRACT_TOML).unwrap();
        let m = Manifest::from_path(&plugin).unwrap();
        assert_eq!(
            m.source.as_deref(),
            Some(plugin.join("plugin.toml").as_path())
        );
        assert_eq!(m.dir(), Some(plugin.as_path()));
        assert_eq!(m.component_path(), plugin.join("plugin.wasm"));
        assert_eq!(Manifest::from_path(&plugin.join("plugin.toml")).unwrap(), m);

        std::fs::write(plugin.join("plugin.json"), CONTRACT_JSON).unwrap();
        let err = Manifest::find(&plugin).unwrap_err();
        assert!(
            matches!(err.kind, ManifestErrorKind::Ambiguous(ref v) if v.len() == 2),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("plugin.json") && msg.contains("plugin.toml"),
            "{msg}"
        );

        let missing = dir.path().join("nope");
        let err = Manifest::from_path(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "failed to load plugin: plugin file not found: {}",
                missing.display()
            )
        );

        let bad = plugin.join("plugin.yaml");
        std::fs::write(&bad, "name: a\nversion: 1.0.0\nauthor: x\n").unwrap();
        let err = Manifest::from_path(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: failed to parse manifest: missing required field: description",
                bad.display()
            )
        );

        let other = plugin.join("manifest.txt");
        std::fs::write(&other, "").unwrap();
        let err = Manifest::from_path(&other).unwrap_err();
        assert!(
            matches!(err.kind, ManifestErrorKind::UnsupportedFormat),
            "{err}"
        );
    }

    #[test]
    fn serializes_to_json() {
        let m = parse(CONTRACT_YAML, Format::Yaml).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["version"], "1.2.0");
        assert_eq!(v["framework"], ">=1.0.0, <2.0.0");
        assert_eq!(v["dependencies"][0]["version"], ">=2.0.0");
        assert_eq!(v["hooks"][1]["type"], "pre_request");
        assert_eq!(
            v["permissions"],
            json!(["database", "cache", "router", "config"])
        );
        assert_eq!(v["config"]["jwt_secret"]["type"], "string");
    }

    #[test]
    fn names_and_topics() {
        assert!(is_valid_plugin_name("a"));
        assert!(is_valid_plugin_name("0x_plugin-2"));
        assert!(is_valid_plugin_name(&"a".repeat(64)));
        assert!(!is_valid_plugin_name(&"a".repeat(65)));
        assert!(!is_valid_plugin_name(""));
        assert!(!is_valid_plugin_name("_a"));
        assert!(!is_valid_plugin_name("a.b"));
        assert!(is_valid_topic("*"));
        assert!(is_valid_topic("A-b_c.d"));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic("a.b c"));
        assert!(!is_valid_topic("a.**"));
    }
}
