//! Start order: dependencies first, then higher priority, then config order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use plugd_manifest::Manifest;

/// Why no start order exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The contract's wording (docs/design.md#errors).
    #[error(
        "missing dependency: plugin '{plugin}' requires '{dependency}' version '{requirement}'"
    )]
    Missing {
        /// The dependent plugin.
        plugin: String,
        /// The missing one.
        dependency: String,
        /// Its version requirement as written.
        requirement: String,
    },
    /// The contract's wording (docs/design.md#errors).
    #[error(
        "version mismatch: plugin '{plugin}' requires '{dependency}' {requirement}, found {found}"
    )]
    Version {
        /// The dependent plugin.
        plugin: String,
        /// The dependency.
        dependency: String,
        /// The requirement as written.
        requirement: String,
        /// The version present.
        found: String,
    },
    /// The contract's wording (docs/design.md#errors), naming the actual cycle.
    #[error("circular dependency detected: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// One plugin to order: its manifest, its effective priority, and the `before`/`after` names of
/// its manifest and config entry together.
#[derive(Debug, Clone, Copy)]
pub struct OrderNode<'a> {
    /// The manifest (name, version, dependencies).
    pub manifest: &'a Manifest,
    /// Higher starts first among plugins free to start.
    pub priority: i32,
    /// Plugins this one must start before (absent names are ignored).
    pub before: &'a [String],
    /// Plugins this one must start after (absent names are ignored).
    pub after: &'a [String],
}

impl<'a> OrderNode<'a> {
    /// A node with the manifest's own `before`/`after`.
    pub fn new(manifest: &'a Manifest, priority: i32) -> Self {
        OrderNode {
            manifest,
            priority,
            before: &manifest.before,
            after: &manifest.after,
        }
    }
}

/// The order in which to start `plugins` (indices into the slice); stop in reverse.
///
/// Each entry is a manifest and its effective priority (higher first among plugins that are
/// free to start). Optional dependencies that are absent are ignored.
///
/// ```
/// # use plugd_manifest::{Format, Manifest};
/// let m = |t: &str| Manifest::from_str(t, Format::Yaml, None).unwrap();
/// let app = m("name: app\nversion: 1.0.0\ndescription: d\nauthor: a\ndependencies:\n  - name: db\n    version: '>=1.0.0'\n");
/// let db = m("name: db\nversion: 1.2.0\ndescription: d\nauthor: a\n");
/// let order = plugd_core::start_order(&[(&app, 100), (&db, 100)]).unwrap();
/// assert_eq!(order, vec![1, 0]);
/// ```
pub fn start_order(plugins: &[(&Manifest, i32)]) -> Result<Vec<usize>, OrderError> {
    let nodes: Vec<OrderNode<'_>> = plugins.iter().map(|(m, p)| OrderNode::new(m, *p)).collect();
    order_nodes(&nodes)
}

/// [`start_order`] for nodes whose `before`/`after` come from more than the manifest.
pub fn order_nodes(plugins: &[OrderNode<'_>]) -> Result<Vec<usize>, OrderError> {
    let index: HashMap<&str, usize> = plugins
        .iter()
        .enumerate()
        .map(|(i, n)| (n.manifest.name.as_str(), i))
        .collect();
    // edges[d] = plugins that must wait for d; deps[i] = plugins i must wait for.
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); plugins.len()];
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); plugins.len()];
    let mut link = |first: usize, then: usize| {
        if !deps[then].contains(&first) {
            edges[first].push(then);
            deps[then].push(first);
        }
    };
    for (i, node) in plugins.iter().enumerate() {
        let m = node.manifest;
        for dep in &m.dependencies {
            match index.get(dep.name.as_str()) {
                None if dep.optional => {}
                None => {
                    return Err(OrderError::Missing {
                        plugin: m.name.clone(),
                        dependency: dep.name.clone(),
                        requirement: dep.version_text.clone(),
                    });
                }
                Some(&d) => {
                    let found = &plugins[d].manifest.version;
                    if !dep.version.matches(found) {
                        return Err(OrderError::Version {
                            plugin: m.name.clone(),
                            dependency: dep.name.clone(),
                            requirement: dep.version_text.clone(),
                            found: found.to_string(),
                        });
                    }
                    link(d, i);
                }
            }
        }
        for name in node.before {
            if let Some(&j) = index.get(name.as_str()) {
                link(i, j);
            }
        }
        for name in node.after {
            if let Some(&j) = index.get(name.as_str()) {
                link(j, i);
            }
        }
    }
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<(i32, Reverse<usize>)> = pending
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| (plugins[i].priority, Reverse(i)))
        .collect();
    let mut order = Vec::with_capacity(plugins.len());
    while let Some((_, Reverse(i))) = ready.pop() {
        order.push(i);
        for &j in &edges[i] {
            pending[j] -= 1;
            if pending[j] == 0 {
                ready.push((plugins[j].priority, Reverse(j)));
            }
        }
    }
    if order.len() < plugins.len() {
        let names: Vec<&str> = plugins.iter().map(|n| n.manifest.name.as_str()).collect();
        return Err(OrderError::Cycle(find_cycle(&deps, &pending, &names)));
    }
    Ok(order)
}

/// Each plugin's dependencies that are present (required ones, and optional ones that are
/// loaded): the contract's `GetDependencyGraph` (docs/design.md#manager-api).
pub fn dependency_graph<'a>(
    manifests: impl IntoIterator<Item = &'a Manifest> + Clone,
) -> BTreeMap<String, Vec<String>> {
    let present: std::collections::HashSet<&str> = manifests
        .clone()
        .into_iter()
        .map(|m| m.name.as_str())
        .collect();
    manifests
        .into_iter()
        .map(|m| {
            let deps = m
                .dependencies
                .iter()
                .filter(|d| !d.optional || present.contains(d.name.as_str()))
                .map(|d| d.name.clone())
                .collect();
            (m.name.clone(), deps)
        })
        .collect()
}

/// A cycle among the nodes left with unmet dependencies, as names, first name repeated last.
fn find_cycle(deps: &[Vec<usize>], pending: &[usize], names: &[&str]) -> Vec<String> {
    // Every node left has an unmet dependency that is itself left: walk until a node repeats.
    let Some(start) = (0..pending.len()).find(|&i| pending[i] > 0) else {
        return Vec::new();
    };
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path: Vec<usize> = Vec::new();
    let mut at = start;
    loop {
        if let Some(&pos) = seen.get(&at) {
            let mut cycle: Vec<String> =
                path[pos..].iter().map(|&i| names[i].to_string()).collect();
            cycle.push(names[at].to_string());
            return cycle;
        }
        seen.insert(at, path.len());
        path.push(at);
        match deps[at].iter().find(|&&d| pending[d] > 0) {
            Some(&next) => at = next,
            None => return vec![names[at].to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugd_manifest::Format;

    fn manifest(name: &str, version: &str, deps: &[(&str, &str, bool)]) -> Manifest {
        let mut text =
            format!("name: {name}\nversion: {version}\ndescription: d\nauthor: a\ndependencies:\n");
        for (d, req, optional) in deps {
            text.push_str(&format!(
                "  - name: {d}\n    version: '{req}'\n    optional: {optional}\n"
            ));
        }
        if deps.is_empty() {
            text = text.replace("dependencies:\n", "");
        }
        Manifest::from_str(&text, Format::Yaml, None).unwrap()
    }

    #[test]
    fn priority_breaks_ties_then_config_order() {
        let a = manifest("a", "1.0.0", &[]);
        let b = manifest("b", "1.0.0", &[]);
        let c = manifest("c", "1.0.0", &[]);
        let order = start_order(&[(&a, 100), (&b, 400), (&c, 100)]).unwrap();
        assert_eq!(order, vec![1, 0, 2]);
    }

    #[test]
    fn dependencies_come_first_even_with_lower_priority() {
        let app = manifest("app", "1.0.0", &[("db", ">=1.0.0,<2.0.0", false)]);
        let db = manifest("db", "1.5.0", &[]);
        let order = start_order(&[(&app, 400), (&db, 100)]).unwrap();
        assert_eq!(order, vec![1, 0]);
    }

    #[test]
    fn missing_and_mismatched_dependencies_use_the_contract_messages() {
        let app = manifest(
            "auth-plugin",
            "1.0.0",
            &[("cache-plugin", ">=2.0.0", false)],
        );
        assert_eq!(
            start_order(&[(&app, 100)]).unwrap_err().to_string(),
            "missing dependency: plugin 'auth-plugin' requires 'cache-plugin' version '>=2.0.0'"
        );
        let cache = manifest("cache-plugin", "1.5.0", &[]);
        assert_eq!(
            start_order(&[(&app, 100), (&cache, 100)])
                .unwrap_err()
                .to_string(),
            "version mismatch: plugin 'auth-plugin' requires 'cache-plugin' >=2.0.0, found 1.5.0"
        );
    }

    #[test]
    fn absent_optional_dependency_is_fine() {
        let app = manifest("app", "1.0.0", &[("logging", ">=1.0.0", true)]);
        assert_eq!(start_order(&[(&app, 100)]).unwrap(), vec![0]);
    }

    #[test]
    fn before_and_after_order_within_a_priority() {
        let a = manifest("a", "1.0.0", &[]);
        let b = manifest("b", "1.0.0", &[]);
        let c = manifest("c", "1.0.0", &[]);
        let c_before_a = ["a".to_string()];
        let a_after_b = ["b".to_string(), "absent".to_string()];
        let nodes = [
            OrderNode {
                manifest: &a,
                priority: 100,
                before: &[],
                after: &a_after_b,
            },
            OrderNode::new(&b, 100),
            OrderNode {
                manifest: &c,
                priority: 100,
                before: &c_before_a,
                after: &[],
            },
        ];
        assert_eq!(order_nodes(&nodes).unwrap(), vec![1, 2, 0]);
        // A contradiction is a cycle like any other.
        let b_after_a = ["a".to_string()];
        let nodes = [
            OrderNode {
                manifest: &a,
                priority: 100,
                before: &[],
                after: &a_after_b,
            },
            OrderNode {
                manifest: &b,
                priority: 100,
                before: &[],
                after: &b_after_a,
            },
        ];
        assert_eq!(
            order_nodes(&nodes).unwrap_err().to_string(),
            "circular dependency detected: a -> b -> a"
        );
    }

    #[test]
    fn dependency_graph_lists_present_dependencies() {
        let app = manifest(
            "app",
            "1.0.0",
            &[
                ("db", "*", false),
                ("log", "*", true),
                ("metrics", "*", true),
            ],
        );
        let db = manifest("db", "1.0.0", &[]);
        let log = manifest("log", "1.0.0", &[]);
        let g = dependency_graph([&app, &db, &log]);
        assert_eq!(g["app"], vec!["db", "log"]);
        assert!(g["db"].is_empty());
    }

    #[test]
    fn cycles_are_named() {
        let a = manifest("plugin-a", "1.0.0", &[("plugin-b", "*", false)]);
        let b = manifest("plugin-b", "1.0.0", &[("plugin-c", "*", false)]);
        let c = manifest("plugin-c", "1.0.0", &[("plugin-a", "*", false)]);
        let free = manifest("free", "1.0.0", &[]);
        let err = start_order(&[(&free, 100), (&a, 100), (&b, 100), (&c, 100)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "circular dependency detected: plugin-a -> plugin-b -> plugin-c -> plugin-a"
        );
    }
}
