//! Reading a host config's plugins without running them: the part of loading that `plugd check`
//! and the host share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use plugd_manifest::{HostConfig, Manifest, Permission, PluginEntry, PluginsConfig};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::admission::Admission;
use crate::error::LoadError;
use crate::order::{OrderNode, dependency_graph, order_nodes};

/// The version plugins' `framework.version` requirements are checked against.
pub(crate) const FRAMEWORK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One config entry, read and checked: manifest found and valid, names equal, grants declared,
/// config valid against the schema.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The manifest.
    pub manifest: Manifest,
    /// The effective permissions.
    pub granted: BTreeSet<Permission>,
    /// The validated config, defaults applied.
    pub config: Map<String, Value>,
    /// The effective priority (entry, else manifest, else 100).
    pub priority: i32,
    /// `before` of the manifest and the entry together.
    pub before: Vec<String>,
    /// `after` of the manifest and the entry together.
    pub after: Vec<String>,
}

/// Read and check one config entry. Writes nothing.
pub fn check_entry(entry: &PluginEntry) -> Result<Checked, LoadError> {
    let dir = &entry.path;
    if !dir.exists() {
        return Err(LoadError::NotFound(dir.clone()));
    }
    let manifest = Manifest::from_path(dir)?;
    if manifest.name != entry.name {
        return Err(LoadError::NameMismatch {
            entry: entry.name.clone(),
            manifest: manifest.name.clone(),
            path: dir.clone(),
        });
    }
    let granted = plugd_manifest::effective_permissions(&manifest, entry)
        .map_err(|e| LoadError::Invalid(e.to_string()))?;
    crate::outbound::NetworkAllow::parse(&entry.network.allow).map_err(|e| {
        LoadError::Invalid(format!("network.allow of plugin '{}': {e}", entry.name))
    })?;
    entry.exec.check().map_err(|e| {
        LoadError::Invalid(format!(
            "exec.{} of plugin '{}': {}",
            e.field, entry.name, e.reason
        ))
    })?;
    let config = manifest
        .config
        .validate(&entry.config)
        .map_err(|e| LoadError::Config {
            plugin: entry.name.clone(),
            message: e.to_string(),
        })?;
    let priority = entry.priority.or(manifest.priority).unwrap_or(100);
    let (before, after) = merged_before_after(&manifest, Some(entry));
    Ok(Checked {
        manifest,
        granted,
        config,
        priority,
        before,
        after,
    })
}

/// The distribution checks of a plugin folder, before it is loaded, by `admission` (see
/// [`Admission`]): a version on `plugins.blocked` is refused with its reason; a folder installed
/// from a package must hold exactly the package's files; a signature is checked against
/// `plugins.trusted_keys`; with `plugins.require_signatures` (on by default when trusted keys
/// are listed) it must come from a package signed by a trusted key.
///
/// Returns the component's bytes as they were verified (a folder installed from a package), for
/// the loader to compile instead of reading the file again.
pub(crate) fn check_package(
    admission: &dyn Admission,
    entry: &PluginEntry,
    manifest: &Manifest,
    plugins: &PluginsConfig,
) -> Result<Option<Arc<[u8]>>, LoadError> {
    let dir = manifest.dir().unwrap_or(&entry.path);
    let admitted = admission
        .admit(dir, manifest, plugins)
        .map_err(|e| LoadError::Invalid(e.to_string()))?;
    tracing::debug!(plugin = %manifest.name, state = %admitted.detail, "package checks passed");
    Ok(admitted.component)
}

/// `before`/`after` of a manifest and its config entry, without repeats.
pub(crate) fn merged_before_after(
    manifest: &Manifest,
    entry: Option<&PluginEntry>,
) -> (Vec<String>, Vec<String>) {
    let merge = |a: &[String], b: &[String]| {
        let mut out = a.to_vec();
        for n in b {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    };
    match entry {
        Some(e) => (
            merge(&manifest.before, &e.before),
            merge(&manifest.after, &e.after),
        ),
        None => (manifest.before.clone(), manifest.after.clone()),
    }
}

/// The manifest's `framework` requirement checked against this plugd's version: a mismatch is
/// `framework version mismatch: plugin requires REQ, found VERSION`.
pub(crate) fn framework_error(manifest: &Manifest) -> Option<String> {
    let req = manifest.framework.as_ref()?;
    let ours = semver::Version::parse(FRAMEWORK_VERSION).ok()?;
    (!req.matches(&ours)).then(|| {
        format!("framework version mismatch: plugin requires {req}, found {FRAMEWORK_VERSION}")
    })
}

/// What `plugd check` prints: the start order, the dependency graph, and what each plugin is
/// granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Names in start order (stop order is the reverse).
    pub start_order: Vec<String>,
    /// Each plugin's present dependencies.
    pub dependency_graph: BTreeMap<String, Vec<String>>,
    /// What each plugin may do, for an operator to review before starting it.
    pub grants: BTreeMap<String, GrantReport>,
}

/// What one plugin is granted: its effective permissions and what they reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantReport {
    /// The effective permissions (declared by its manifest and granted by its entry).
    pub permissions: Vec<Permission>,
    /// Declared by its manifest, not granted: calls that need them are refused.
    pub not_granted: Vec<Permission>,
    /// Where its routes are served: `/plugins/<name>`, the entry's `mount`, or `/`.
    pub mount: String,
    /// Which requests its hooks and middleware see: `own routes` (`/plugins/<name>/…`),
    /// `every path`, or the `intercept.paths` globs (and its own routes).
    pub requests: Vec<String>,
    /// The request hooks its manifest declares (more may register in `init`).
    pub request_hooks: Vec<plugd_manifest::HookType>,
    /// Whether it may set the request identity that routes' required roles are checked against.
    pub identity: bool,
    /// Request headers it never sees.
    pub hidden_headers: Vec<String>,
    /// What the requests it guards get when its hooks cannot run.
    pub failure_policy: plugd_manifest::FailurePolicy,
    /// Hosts it may call (with `network`).
    pub network_allow: Vec<String>,
    /// Commands it may run (with `exec`): `git status --porcelain`, `git <any arguments>`.
    pub exec_allow: Vec<String>,
}

impl GrantReport {
    fn new(entry: &PluginEntry, c: &Checked) -> GrantReport {
        let access = crate::access::RequestAccess::new(&entry.name, &c.granted, Some(entry));
        let requests = if !access.intercepts() {
            vec![format!("own routes ({}/…)", access.mount())]
        } else if access.paths().is_empty() {
            vec!["every path".to_string()]
        } else {
            access.paths().to_vec()
        };
        let has = |p: Permission| c.granted.contains(&p);
        GrantReport {
            mount: entry.mount(),
            permissions: c.granted.iter().copied().collect(),
            not_granted: c
                .manifest
                .permissions
                .difference(&c.granted)
                .copied()
                .collect(),
            requests,
            request_hooks: c
                .manifest
                .hooks
                .iter()
                .map(|h| h.hook)
                .filter(|h| {
                    !matches!(
                        h,
                        plugd_manifest::HookType::Startup | plugd_manifest::HookType::Shutdown
                    )
                })
                .collect(),
            identity: access.may_set_identity(),
            hidden_headers: entry.hide_headers.clone(),
            failure_policy: entry
                .failure_policy
                .max(c.manifest.failure_policy.unwrap_or_default()),
            network_allow: if has(Permission::Network) {
                entry.network.allow.clone()
            } else {
                Vec::new()
            },
            exec_allow: if has(Permission::Exec) {
                entry.exec.allow.iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// What a plugin's manifest registers beyond what it is granted (its request hooks when it asks
/// to intercept without the grant): the load would fail with this.
fn overreach(entry: &PluginEntry, c: &Checked) -> Option<String> {
    let access = crate::access::RequestAccess::new(&entry.name, &c.granted, Some(entry));
    let regs = crate::registrations::Registrations {
        hooks: c
            .manifest
            .hooks
            .iter()
            .map(|h| (h.hook, h.priority))
            .collect(),
        ..crate::registrations::Registrations::default()
    };
    let declared = c.manifest.permissions.contains(&Permission::Intercept);
    access.overreach(declared, &regs).map(|why| {
        format!(
            "{why}, which needs the 'intercept' permission (a plugd addition): grant it with permissions: {{ intercept: true }} in its entry"
        )
    })
}

/// Two enabled plugins at one mount other than `/` (the later one would be put in `error` at
/// start): one problem per plugin that would be.
fn mount_conflicts(checked: &[(&PluginEntry, Checked)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (entry, _)) in checked.iter().enumerate() {
        let mount = entry.mount();
        if mount == "/" {
            continue;
        }
        if let Some((first, _)) = checked[..i].iter().find(|(e, _)| e.mount() == mount) {
            problems.push(format!(
                "plugin '{}': its mount {mount} is plugin '{}''s already (set mount: in one of their entries)",
                entry.name, first.name
            ));
        }
    }
    problems
}

/// Everything [`check_config`] found wrong, each problem naming its plugin; displayed one per
/// line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("\n"))]
#[non_exhaustive]
pub struct ConfigProblems {
    /// The problems, in the order the plugins are listed.
    pub problems: Vec<String>,
}

/// Check a host config's enabled plugins (manifests, grants, config schemas, framework versions,
/// package admission by `admission`, dependencies, ordering) without running any of them. Every
/// problem found is returned, each naming its plugin.
///
/// ```
/// let config = plugd_manifest::HostConfig::default();
/// let report = plugd_core::check_config(&config, &plugd_core::NoAdmission).unwrap();
/// assert!(report.start_order.is_empty());
/// ```
pub fn check_config(
    config: &HostConfig,
    admission: &dyn Admission,
) -> Result<CheckReport, ConfigProblems> {
    let mut errors = Vec::new();
    let mut checked = Vec::new();
    if config.plugins.enabled {
        for entry in config.plugins.plugins.iter().filter(|e| e.enabled) {
            let read = check_entry(entry).and_then(|c| {
                check_package(admission, entry, &c.manifest, &config.plugins).map(|_| c)
            });
            match read {
                Ok(c) => match framework_error(&c.manifest).or_else(|| overreach(entry, &c)) {
                    Some(e) => errors.push(format!("plugin '{}': {e}", entry.name)),
                    None => checked.push((entry, c)),
                },
                Err(e) => errors.push(format!("plugin '{}': {e}", entry.name)),
            }
        }
    }
    errors.extend(mount_conflicts(&checked));
    if !errors.is_empty() {
        return Err(ConfigProblems { problems: errors });
    }
    let nodes: Vec<OrderNode<'_>> = checked
        .iter()
        .map(|(_, c)| OrderNode {
            manifest: &c.manifest,
            priority: c.priority,
            before: &c.before,
            after: &c.after,
        })
        .collect();
    let order = order_nodes(&nodes).map_err(|e| ConfigProblems {
        problems: vec![e.to_string()],
    })?;
    Ok(CheckReport {
        start_order: order
            .into_iter()
            .map(|i| checked[i].1.manifest.name.clone())
            .collect(),
        dependency_graph: dependency_graph(checked.iter().map(|(_, c)| &c.manifest)),
        grants: checked
            .iter()
            .map(|(entry, c)| (entry.name.clone(), GrantReport::new(entry, c)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_network_allow_entry_is_a_check_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("plugin.yaml"),
            "name: p\nversion: 1.0.0\ndescription: d\nauthor: a\npermissions: { network: true }\n",
        )
        .unwrap();
        let mut entry = PluginEntry::new("p", dir.path());
        entry.permissions.insert(Permission::Network, true);
        entry.network.allow = vec![
            "api.example.com".into(),
            "https://x.example.com/path".into(),
        ];
        let e = check_entry(&entry).unwrap_err().to_string();
        assert_eq!(
            e,
            "network.allow of plugin 'p': 'https://x.example.com/path' is not a valid entry: write a host with an optional port and scheme, without a path, query or user (e.g. 'api.example.com', '*.example.com', '127.0.0.1:8080', 'https://api.example.com')"
        );
        entry.network.allow.pop();
        assert!(check_entry(&entry).is_ok());
        entry.exec.allow = vec!["git".into(), " ".into()];
        assert!(
            check_entry(&entry)
                .unwrap_err()
                .to_string()
                .starts_with("exec.allow[1] of plugin 'p': the command must not be empty"),
        );
        entry.exec.allow.pop();
        entry.exec.limits.processes = 0;
        assert_eq!(
            check_entry(&entry).unwrap_err().to_string(),
            "exec.limits.processes of plugin 'p': 0 is not between 1 and 65536"
        );
    }
}
