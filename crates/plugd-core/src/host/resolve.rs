//! The contract's `ResolveDependencies` (docs/design.md#manager-api) on a running host: the
//! start order of the plugins it holds now, or the first problem in the contract's words —
//! and the same question for a plugin not loaded yet ("would loading this one resolve?").

use std::sync::Arc;

use plugd_manifest::Manifest;

use crate::check::merged_before_after;
use crate::loaded::Loaded;
use crate::order::{OrderError, OrderNode, order_nodes};
use crate::state::{DisabledBy, Status};

use super::Host;

/// One plugin as the resolver sees it: its manifest, effective priority and ordering names.
struct Node {
    manifest: Manifest,
    priority: i32,
    before: Vec<String>,
    after: Vec<String>,
}

impl Node {
    fn of(p: &Loaded) -> Option<Node> {
        let manifest = p.manifest.clone()?;
        let entry = p.entry.read().clone();
        let priority = entry
            .as_ref()
            .and_then(|e| e.priority)
            .or(manifest.priority)
            .unwrap_or(100);
        let (before, after) = merged_before_after(&manifest, entry.as_ref());
        Some(Node {
            manifest,
            priority,
            before,
            after,
        })
    }
}

/// Whether a plugin counts as present: it holds code that is (or will be) serving. A plugin in
/// `error`, unloaded, stopped or turned off by the operator does not; one disabled by its error
/// threshold does (it keeps its code and can be enabled again).
fn present(p: &Loaded) -> bool {
    match p.state.status() {
        Status::Loading | Status::Initialized | Status::Running => true,
        Status::Disabled => p.state.disabled_by() == Some(DisabledBy::ErrorThreshold),
        Status::Unloaded | Status::Stopped | Status::Error => false,
    }
}

fn order(nodes: &[Node]) -> Result<Vec<String>, OrderError> {
    let input: Vec<OrderNode<'_>> = nodes
        .iter()
        .map(|n| OrderNode {
            manifest: &n.manifest,
            priority: n.priority,
            before: &n.before,
            after: &n.after,
        })
        .collect();
    let order = order_nodes(&input)?;
    Ok(order
        .into_iter()
        .map(|i| nodes[i].manifest.name.clone())
        .collect())
}

impl Host {
    /// The contract's `ResolveDependencies`, on the plugins this host holds now (loaded,
    /// initialized, running, or disabled by their error threshold): their start order by
    /// name, dependencies first, or the first problem — a missing dependency, a version that
    /// no longer matches, a cycle — in the contract's words ([`OrderError`]). Native plugins
    /// without a manifest are left out. Calls no plugin.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use plugd_core::{Host, Plugin};
    /// use plugd_manifest::{Format, Manifest};
    ///
    /// struct Code;
    /// impl Plugin for Code {}
    /// let m = |t: &str| Manifest::from_str(t, Format::Yaml, None).unwrap();
    /// let db = m("name: db\nversion: 1.2.0\ndescription: d\nauthor: a\n");
    /// let app = m("name: app\nversion: 1.0.0\ndescription: d\nauthor: a\ndependencies:\n  - name: db\n    version: ^1\n");
    /// let host = Host::builder().native(app, Code).native(db, Code).build().unwrap();
    /// host.start().await.unwrap();
    /// assert_eq!(host.resolve_dependencies().unwrap(), ["db", "app"]);
    ///
    /// // Would db 2.0.0 still satisfy app?
    /// let db2 = m("name: db\nversion: 2.0.0\ndescription: d\nauthor: a\n");
    /// assert_eq!(
    ///     host.resolve_with(&db2).unwrap_err().to_string(),
    ///     "version mismatch: plugin 'app' requires 'db' ^1, found 2.0.0"
    /// );
    /// # });
    /// ```
    pub fn resolve_dependencies(&self) -> Result<Vec<String>, OrderError> {
        order(&self.present_nodes())
    }

    /// [`Host::resolve_dependencies`] as it would be with `candidate` loaded: added, or in
    /// place of the plugin of its name (a reload to a new version). Nothing is loaded; the
    /// answer holds until the plugins change.
    pub fn resolve_with(&self, candidate: &Manifest) -> Result<Vec<String>, OrderError> {
        let mut nodes = self.present_nodes();
        let entry = self
            .inner
            .plugins
            .read()
            .iter()
            .find(|p| p.name == candidate.name)
            .and_then(|p| p.entry.read().clone());
        let (before, after) = merged_before_after(candidate, entry.as_ref());
        let node = Node {
            manifest: candidate.clone(),
            priority: entry
                .as_ref()
                .and_then(|e| e.priority)
                .or(candidate.priority)
                .unwrap_or(100),
            before,
            after,
        };
        match nodes.iter_mut().find(|n| n.manifest.name == candidate.name) {
            Some(n) => *n = node,
            None => nodes.push(node),
        }
        order(&nodes)
    }

    fn present_nodes(&self) -> Vec<Node> {
        let plugins: Vec<Arc<Loaded>> = self.inner.plugins.read().clone();
        plugins
            .iter()
            .filter(|p| present(p))
            .filter_map(|p| Node::of(p))
            .collect()
    }
}
