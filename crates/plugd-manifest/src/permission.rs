//! Permissions: declared in a manifest, granted in the host config.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

use crate::format::did_you_mean;

/// A right a plugin can be given. The effective set of a plugin is what its manifest declares
/// and the host config grants (see [`effective_permissions`](crate::effective_permissions)).
///
/// ```
/// use plugd_manifest::Permission;
///
/// assert_eq!("database".parse::<Permission>().unwrap(), Permission::Database);
/// assert_eq!(Permission::Exec.to_string(), "exec");
/// assert_eq!(
///     "custom_permission".parse::<Permission>().unwrap_err().to_string(),
///     "unknown permission: custom_permission"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// The plugin's own SQLite database.
    Database,
    /// The shared cache.
    Cache,
    /// Registering routes.
    Router,
    /// Reading the host config.
    Config,
    /// A preopen of the plugin's own data directory.
    Filesystem,
    /// Outbound HTTP to an allowlist of hosts.
    Network,
    /// Running allowlisted commands.
    Exec,
    /// plugd's own: request hooks and middleware see requests other than the plugin's own routes
    /// (every path, or the operator's `intercept.paths` globs). Without it they see only
    /// `/plugins/<name>/…`.
    Intercept,
    /// plugd's own: setting the request identity (`set-identity`), which `required_roles` checks.
    Identity,
    /// plugd's own: reading the client's address and the request attributes an embedding
    /// application exposes (an authenticated user, a tenant) on the requests the plugin sees.
    Client,
}

impl Permission {
    /// Every permission: the contract's seven, then plugd's own (`intercept`, `identity`,
    /// `client`); see docs/design.md#permissions.
    pub const ALL: [Permission; 10] = [
        Permission::Database,
        Permission::Cache,
        Permission::Router,
        Permission::Config,
        Permission::Filesystem,
        Permission::Network,
        Permission::Exec,
        Permission::Intercept,
        Permission::Identity,
        Permission::Client,
    ];

    /// The names of [`Permission::ALL`].
    pub const NAMES: [&'static str; 10] = [
        "database",
        "cache",
        "router",
        "config",
        "filesystem",
        "network",
        "exec",
        "intercept",
        "identity",
        "client",
    ];

    /// The lowercase name: `database`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Database => "database",
            Permission::Cache => "cache",
            Permission::Router => "router",
            Permission::Config => "config",
            Permission::Filesystem => "filesystem",
            Permission::Network => "network",
            Permission::Exec => "exec",
            Permission::Intercept => "intercept",
            Permission::Identity => "identity",
            Permission::Client => "client",
        }
    }

    /// Whether this is one of plugd's own permissions rather than one of the contract's seven
    /// (docs/design.md#permissions).
    pub fn is_plugd_addition(self) -> bool {
        matches!(
            self,
            Permission::Intercept | Permission::Identity | Permission::Client
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission name that is not one of [`Permission::NAMES`]. Displays as the contract's
/// `unknown permission: <name>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission: {0}")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for Permission {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Permission".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PermissionVisitor;

        impl Visitor<'_> for PermissionVisitor {
            type Value = Permission;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a permission ({})", Permission::NAMES.join(", "))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Permission, E> {
                v.parse().map_err(
                    |e: UnknownPermission| match did_you_mean(v, Permission::NAMES) {
                        Some(s) => E::custom(format!("{e}; did you mean '{s}'?")),
                        None => E::custom(format!(
                            "{e} (expected one of {})",
                            Permission::NAMES.join(", ")
                        )),
                    },
                )
            }
        }

        deserializer.deserialize_str(PermissionVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (p, name) in Permission::ALL.into_iter().zip(Permission::NAMES) {
            assert_eq!(p.as_str(), name);
            assert_eq!(name.parse::<Permission>(), Ok(p));
            assert_eq!(
                serde_json::from_str::<Permission>(&format!("\"{name}\"")).unwrap(),
                p
            );
        }
    }

    #[test]
    fn unknown_permission_in_serde_suggests() {
        let err = serde_json::from_str::<Permission>("\"databse\"").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown permission: databse; did you mean 'database'?"),
            "{err}"
        );
    }
}
