//! [`check_for_load`] as plugd-core's [`Admission`] port (feature `admission`).

use std::path::Path;
use std::sync::Arc;

use plugd_core::{Admission, Admitted, Refused};
use plugd_manifest::{Manifest, PluginsConfig};

use crate::installed::{LoadCheck, check_for_load};

/// The package checks a host makes before it loads a plugin folder: the blocklist, installed
/// packages' digests, signatures against `plugins.trusted_keys` ([`check_for_load`]). The
/// component bytes it verified are what the loader compiles.
///
/// ```
/// use std::sync::Arc;
/// let host = plugd_core::Host::builder()
///     .admission(Arc::new(plugd_pkg::PackageAdmission))
/// #   .data_dir(std::env::temp_dir().join(format!("plugd-pkg-doc-{}", std::process::id())))
///     .build()
///     .unwrap();
/// # drop(host);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PackageAdmission;

impl Admission for PackageAdmission {
    fn admit(
        &self,
        dir: &Path,
        manifest: &Manifest,
        plugins: &PluginsConfig,
    ) -> Result<Admitted, Refused> {
        let checked = check_for_load(dir, manifest, plugins).map_err(|e| Refused(e.to_string()))?;
        let detail = match &checked.check {
            LoadCheck::NotPackaged => "not installed from a package".to_string(),
            LoadCheck::Verified(state) => format!("installed package verified, {state}"),
        };
        Ok(Admitted::new(checked.component.map(Arc::from), detail))
    }
}
