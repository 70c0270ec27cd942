//! Package admission: the distribution checks a plugin folder passes before it is loaded —
//! a version on `plugins.blocked` is refused with its reason; a folder installed from a package
//! must hold exactly the package's files; a signature is checked against `plugins.trusted_keys`;
//! with `plugins.require_signatures` it must come from a package signed by a trusted key.
//!
//! The host asks an [`Admission`] (the port; `plugd-pkg`'s `PackageAdmission` implements it) once
//! per load, `plugd check` once per plugin. A host without one ([`NoAdmission`], the default of a
//! bare `Host::builder()`) admits every folder, except that it refuses to load anything when the
//! config asks for checks it cannot make (`blocked`, `trusted_keys`, `require_signatures`): a
//! policy the operator wrote is never skipped silently.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use plugd_manifest::{Manifest, PluginsConfig};

/// What an [`Admission`] let through.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Admitted {
    /// The component's bytes as the check read and hashed them (a folder installed from a
    /// package): the loader compiles these, not the file, which may have changed since.
    pub component: Option<Arc<[u8]>>,
    /// What the check found, for the log (`not packaged`, `signed by …`).
    pub detail: String,
}

impl Admitted {
    /// Admitted with the verified `component` bytes, if any, and a `detail` for the log.
    pub fn new(component: Option<Arc<[u8]>>, detail: impl Into<String>) -> Admitted {
        Admitted {
            component,
            detail: detail.into(),
        }
    }
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("component", &self.component.as_ref().map(|c| c.len()))
            .field("detail", &self.detail)
            .finish()
    }
}

/// Why a folder may not be loaded: the message names the plugin, and the folder or the file at
/// fault, and says what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The port of package admission: decide whether the plugin in `dir`, whose manifest the host
/// has just read, may be loaded under `plugins` (the blocklist, the trusted keys, whether
/// signatures are required).
pub trait Admission: Send + Sync + fmt::Debug + 'static {
    /// Admit or refuse one plugin folder. Runs blocking file I/O.
    fn admit(
        &self,
        dir: &Path,
        manifest: &Manifest,
        plugins: &PluginsConfig,
    ) -> Result<Admitted, Refused>;
}

/// No package checks: every folder is admitted, unless the config asks for checks (see the
/// [module](self)).
///
/// ```
/// use plugd_core::{Admission, NoAdmission};
/// let mut plugins = plugd_manifest::PluginsConfig::default();
/// let manifest = plugd_manifest::Manifest::from_str(
///     "name: p\nversion: 1.0.0\ndescription: d\nauthor: a\n",
///     plugd_manifest::Format::Yaml,
///     None,
/// )
/// .unwrap();
/// assert!(NoAdmission.admit("p".as_ref(), &manifest, &plugins).is_ok());
/// plugins.require_signatures = true;
/// assert!(NoAdmission.admit("p".as_ref(), &manifest, &plugins).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdmission;

impl Admission for NoAdmission {
    fn admit(
        &self,
        _dir: &Path,
        manifest: &Manifest,
        plugins: &PluginsConfig,
    ) -> Result<Admitted, Refused> {
        let asked = [
            (!plugins.blocked.is_empty(), "plugins.blocked"),
            (!plugins.trusted_keys.is_empty(), "plugins.trusted_keys"),
            (plugins.require_signatures, "plugins.require_signatures"),
        ];
        if let Some((_, setting)) = asked.iter().find(|(set, _)| *set) {
            return Err(Refused(format!(
                "plugin '{}': the host config sets {setting}, but this host has no package admission to check it: set one with HostBuilder::admission (the plugd façade's \"std\" feature does)",
                manifest.name
            )));
        }
        Ok(Admitted::new(None, "not checked (no package admission)"))
    }
}
