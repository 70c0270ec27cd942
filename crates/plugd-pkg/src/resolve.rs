//! Choosing what to install: the newest catalog version of each requested plugin that fits every
//! requirement on it (the request, the dependencies of the other chosen packages, and those of
//! the plugins already installed), runs on this plugd (its `framework` requirement) and is not
//! blocked; then the same for its dependencies, transitively.
//!
//! The resolver is greedy: it takes the newest fitting version and never goes back to try an
//! older one when a later requirement conflicts; it reports the conflict, naming who requires
//! what. An installed plugin that fits stays as it is.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use plugd_manifest::PluginsConfig;

use crate::Error;
use crate::catalog::{CatalogDependency, CatalogVersion, Index};
use crate::installed::blocked_message;

/// A plugin as installed, for the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPlugin {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: semver::Version,
    /// Its dependencies.
    pub dependencies: Vec<CatalogDependency>,
}

/// What to resolve.
#[derive(Debug, Clone)]
pub enum Request {
    /// A plugin from the catalog: the newest version matching `req`; with `upgrade`, newer
    /// than the installed one.
    Catalog {
        /// The plugin.
        name: String,
        /// The versions wanted.
        req: semver::VersionReq,
        /// Only a version newer than the installed one will do.
        upgrade: bool,
    },
    /// A given package (a file on the command line).
    Package(Box<CatalogVersion>, String),
}

/// What the resolver decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The packages to install, dependencies first.
    pub install: Vec<Step>,
    /// Installed plugins that satisfy their requirements and stay.
    pub kept: Vec<(String, semver::Version)>,
    /// Optional dependencies that are neither installed nor chosen.
    pub skipped_optional: Vec<String>,
}

/// One package to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The plugin.
    pub name: String,
    /// The package.
    pub package: CatalogVersion,
    /// The installed version it replaces.
    pub replaces: Option<semver::Version>,
}

/// What the resolver checks every candidate against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// This plugd's version, for `framework` requirements.
    pub framework: &'a semver::Version,
    /// The blocklist (`plugins.blocked`).
    pub plugins: &'a PluginsConfig,
    /// The installed plugins.
    pub installed: &'a [InstalledPlugin],
}

/// Why a catalog version does not fit, or `None` when it does.
pub fn unfit(
    ctx: &Context<'_>,
    name: &str,
    v: &CatalogVersion,
    constraints: &[(semver::VersionReq, String)],
) -> Option<String> {
    if let Some(b) = ctx.plugins.blocked(name, &v.version) {
        return Some(blocked_message(b, &v.version));
    }
    if let Some(req) = &v.framework
        && !req.matches(ctx.framework)
    {
        return Some(format!(
            "{name} {} requires plugd (framework) {req}, this is plugd {}",
            v.version, ctx.framework
        ));
    }
    for (req, by) in constraints {
        if !req.matches(&v.version) {
            return Some(format!(
                "{name} {} does not satisfy {req} (required by {by})",
                v.version
            ));
        }
    }
    None
}

enum Choice {
    Installed(semver::Version),
    Package(Box<CatalogVersion>),
}

/// Resolve `requests` against the catalog (`index`; `None` when only installed plugins may
/// satisfy dependencies).
pub fn resolve(
    index: Option<&Index>,
    requests: &[Request],
    ctx: &Context<'_>,
) -> Result<Plan, Error> {
    let mut constraints: BTreeMap<String, Vec<(semver::VersionReq, String)>> = BTreeMap::new();
    for p in ctx.installed {
        for d in p.dependencies.iter().filter(|d| !d.optional) {
            constraints.entry(d.name.clone()).or_default().push((
                d.version.clone(),
                format!("installed {} {}", p.name, p.version),
            ));
        }
    }
    let mut chosen: BTreeMap<String, Choice> = BTreeMap::new();
    let mut upgrade: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut skipped_optional = Vec::new();
    let mut requested = Vec::new();

    for r in requests {
        match r {
            Request::Catalog {
                name,
                req,
                upgrade: up,
            } => {
                constraints
                    .entry(name.clone())
                    .or_default()
                    .push((req.clone(), "the request".into()));
                if *up {
                    upgrade.insert(name.clone());
                }
                queue.push_back(name.clone());
                requested.push(name.clone());
            }
            Request::Package(v, name) => {
                let cons = constraints.get(name).cloned().unwrap_or_default();
                if let Some(why) = unfit(ctx, name, v, &cons) {
                    return Err(Error::Resolve(format!("cannot install {why}")));
                }
                add_dependencies(name, v, &mut constraints, &mut queue);
                chosen.insert(name.clone(), Choice::Package(v.clone()));
                requested.push(name.clone());
            }
        }
    }

    while let Some(name) = queue.pop_front() {
        let cons = constraints.get(&name).cloned().unwrap_or_default();
        match chosen.get(&name) {
            Some(Choice::Package(v)) => {
                if let Some((req, by)) = cons.iter().find(|(r, _)| !r.matches(&v.version)) {
                    let others: Vec<String> = cons
                        .iter()
                        .filter(|(r, _)| r.matches(&v.version))
                        .map(|(r, b)| format!("{r} (required by {b})"))
                        .collect();
                    return Err(Error::Resolve(format!(
                        "conflicting requirements on '{name}': {name} {} was chosen for {}, but {by} requires {req}",
                        v.version,
                        others.join(", ")
                    )));
                }
                continue;
            }
            Some(Choice::Installed(version)) if cons.iter().all(|(r, _)| r.matches(version)) => {
                continue;
            }
            _ => {}
        }
        let installed = ctx.installed.iter().find(|p| p.name == name);
        if let Some(p) = installed
            && !upgrade.contains(&name)
            && cons.iter().all(|(r, _)| r.matches(&p.version))
        {
            chosen.insert(name.clone(), Choice::Installed(p.version.clone()));
            continue;
        }
        let Some(index) = index else {
            let wanted: Vec<String> = cons
                .iter()
                .map(|(r, b)| format!("{r} (required by {b})"))
                .collect();
            let found = match installed {
                Some(p) => format!("{} is installed", p.version),
                None => "it is not installed".into(),
            };
            return Err(Error::Resolve(format!(
                "'{name}' is needed in {}, but {found} and no catalog was given (--catalog)",
                wanted.join(", ")
            )));
        };
        let Some(plugin) = index.plugin(&name) else {
            let by: Vec<&str> = cons.iter().map(|(_, b)| b.as_str()).collect();
            return Err(Error::Resolve(format!(
                "'{name}' (required by {}) is not in the catalog",
                by.join(", ")
            )));
        };
        let mut reasons = Vec::new();
        let mut pick = None;
        for v in &plugin.versions {
            if upgrade.contains(&name)
                && let Some(p) = installed
                && v.version <= p.version
            {
                reasons.push(format!(
                    "{name} {} is not newer than the installed {}",
                    v.version, p.version
                ));
                continue;
            }
            match unfit(ctx, &name, v, &cons) {
                Some(why) => reasons.push(why),
                None => {
                    pick = Some(v.clone());
                    break;
                }
            }
        }
        let Some(v) = pick else {
            return Err(Error::Resolve(format!(
                "no version of '{name}' can be installed:\n  {}",
                reasons.join("\n  ")
            )));
        };
        add_dependencies(&name, &v, &mut constraints, &mut queue);
        for d in v.dependencies.iter().filter(|d| d.optional) {
            let present =
                ctx.installed.iter().any(|p| p.name == d.name) || chosen.contains_key(&d.name);
            if !present {
                skipped_optional.push(format!("{} (optional for {name})", d.name));
            }
        }
        chosen.insert(name.clone(), Choice::Package(Box::new(v)));
    }

    // Install order: dependencies first (depth-first over the chosen packages).
    let mut order = Vec::new();
    let mut visited = BTreeSet::new();
    let names: Vec<String> = chosen.keys().cloned().collect();
    for name in &names {
        visit(name, &chosen, &mut visited, &mut order);
    }
    let mut plan = Plan {
        skipped_optional,
        ..Plan::default()
    };
    for name in order {
        match chosen.remove(&name) {
            Some(Choice::Package(package)) => plan.install.push(Step {
                package: *package,
                replaces: ctx
                    .installed
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.version.clone()),
                name,
            }),
            Some(Choice::Installed(v)) => plan.kept.push((name, v)),
            None => {}
        }
    }
    Ok(plan)
}

fn add_dependencies(
    name: &str,
    v: &CatalogVersion,
    constraints: &mut BTreeMap<String, Vec<(semver::VersionReq, String)>>,
    queue: &mut VecDeque<String>,
) {
    for d in v.dependencies.iter().filter(|d| !d.optional) {
        constraints
            .entry(d.name.clone())
            .or_default()
            .push((d.version.clone(), format!("{name} {}", v.version)));
        queue.push_back(d.name.clone());
    }
}

fn visit(
    name: &str,
    chosen: &BTreeMap<String, Choice>,
    visited: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !visited.insert(name.to_string()) {
        return;
    }
    if let Some(Choice::Package(v)) = chosen.get(name) {
        for d in &v.dependencies {
            if chosen.contains_key(&d.name) {
                visit(&d.name, chosen, visited, order);
            }
        }
    }
    order.push(name.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogPlugin;

    fn version(
        name: &str,
        v: &str,
        deps: &[(&str, &str)],
        framework: Option<&str>,
    ) -> CatalogVersion {
        CatalogVersion {
            version: v.parse().unwrap(),
            file: format!("{name}-{v}.plugd"),
            size: 1,
            sha256: String::new(),
            digest: String::new(),
            signature: None,
            framework: framework.map(|f| f.parse().unwrap()),
            dependencies: deps
                .iter()
                .map(|(n, r)| CatalogDependency {
                    name: n.to_string(),
                    version: r.parse().unwrap(),
                    optional: false,
                })
                .collect(),
            description: String::new(),
            author: String::new(),
        }
    }

    fn index(versions: Vec<(&str, CatalogVersion)>) -> Index {
        let mut plugins: BTreeMap<String, Vec<CatalogVersion>> = BTreeMap::new();
        for (n, v) in versions {
            plugins.entry(n.to_string()).or_default().push(v);
        }
        Index {
            format: 1,
            plugins: plugins
                .into_iter()
                .map(|(name, mut versions)| {
                    versions.sort_by(|a, b| b.version.cmp(&a.version));
                    CatalogPlugin {
                        name,
                        description: String::new(),
                        versions,
                    }
                })
                .collect(),
        }
    }

    fn req(name: &str, r: &str) -> Request {
        Request::Catalog {
            name: name.into(),
            req: r.parse().unwrap(),
            upgrade: false,
        }
    }

    #[test]
    fn newest_fitting_versions_dependencies_first() {
        let idx = index(vec![
            ("app", version("app", "1.0.0", &[("lib", "^1")], None)),
            (
                "app",
                version("app", "2.0.0", &[("lib", "^2")], Some(">=9")),
            ),
            ("lib", version("lib", "1.2.0", &[], None)),
            ("lib", version("lib", "1.5.0", &[], None)),
            ("lib", version("lib", "2.0.0", &[], None)),
        ]);
        let framework = "0.1.0".parse().unwrap();
        let plugins = PluginsConfig::default();
        let ctx = Context {
            framework: &framework,
            plugins: &plugins,
            installed: &[],
        };
        let plan = resolve(Some(&idx), &[req("app", "*")], &ctx).unwrap();
        let got: Vec<String> = plan
            .install
            .iter()
            .map(|s| format!("{} {}", s.name, s.package.version))
            .collect();
        assert_eq!(got, ["lib 1.5.0", "app 1.0.0"]);
    }

    #[test]
    fn installed_dependents_constrain_upgrades_and_conflicts_are_named() {
        let idx = index(vec![
            ("lib", version("lib", "1.0.0", &[], None)),
            ("lib", version("lib", "2.0.0", &[], None)),
            ("app", version("app", "1.0.0", &[("lib", ">=2")], None)),
        ]);
        let framework = "0.1.0".parse().unwrap();
        let plugins = PluginsConfig::default();
        let installed = vec![InstalledPlugin {
            name: "old".into(),
            version: "1.0.0".parse().unwrap(),
            dependencies: vec![CatalogDependency {
                name: "lib".into(),
                version: "^1".parse().unwrap(),
                optional: false,
            }],
        }];
        let ctx = Context {
            framework: &framework,
            plugins: &plugins,
            installed: &installed,
        };
        let err = resolve(Some(&idx), &[req("app", "*")], &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lib 2.0.0 does not satisfy ^1 (required by installed old 1.0.0)"),
            "{err}"
        );
        let plan = resolve(Some(&idx), &[req("lib", "*")], &ctx).unwrap();
        assert_eq!(plan.install[0].package.version.to_string(), "1.0.0");
    }

    #[test]
    fn an_installed_dependency_that_fits_stays() {
        let idx = index(vec![
            ("lib", version("lib", "1.9.0", &[], None)),
            ("app", version("app", "1.0.0", &[("lib", "^1")], None)),
        ]);
        let framework = "0.1.0".parse().unwrap();
        let plugins = PluginsConfig::default();
        let installed = vec![InstalledPlugin {
            name: "lib".into(),
            version: "1.0.0".parse().unwrap(),
            dependencies: vec![],
        }];
        let ctx = Context {
            framework: &framework,
            plugins: &plugins,
            installed: &installed,
        };
        let plan = resolve(Some(&idx), &[req("app", "*")], &ctx).unwrap();
        assert_eq!(plan.install.len(), 1);
        assert_eq!(
            plan.kept,
            vec![("lib".to_string(), "1.0.0".parse().unwrap())]
        );
        // Without a catalog a missing dependency is reported.
        let v = version("app", "1.0.0", &[("auth", "^1")], None);
        let err = resolve(None, &[Request::Package(Box::new(v), "app".into())], &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'auth' is needed in ^1 (required by app 1.0.0), but it is not installed"),
            "{err}"
        );
    }

    #[test]
    fn upgrade_wants_a_newer_version() {
        let idx = index(vec![("lib", version("lib", "1.0.0", &[], None))]);
        let framework = "0.1.0".parse().unwrap();
        let plugins = PluginsConfig::default();
        let installed = vec![InstalledPlugin {
            name: "lib".into(),
            version: "1.0.0".parse().unwrap(),
            dependencies: vec![],
        }];
        let ctx = Context {
            framework: &framework,
            plugins: &plugins,
            installed: &installed,
        };
        let up = Request::Catalog {
            name: "lib".into(),
            req: semver::VersionReq::STAR,
            upgrade: true,
        };
        let err = resolve(Some(&idx), &[up], &ctx).unwrap_err().to_string();
        assert!(err.contains("not newer than the installed 1.0.0"), "{err}");
    }
}
