//! `server.tls`: where the listeners' certificate and private key are.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `server.tls`: serve HTTPS with this certificate chain and private key, both PEM files.
/// Relative paths are resolved against the config file's folder. A running server reads the
/// files again when either changes (a renewed certificate needs no restart); a new pair that
/// cannot be used is logged and the previous one stays in use.
///
/// ```
/// use plugd_manifest::{Format, HostConfig};
/// use std::path::Path;
///
/// let yaml = "server:\n  tls: { cert: tls/cert.pem, key: /etc/ssl/private/plugd.key }\n";
/// let config = HostConfig::from_str(yaml, Format::Yaml, Some(Path::new("/etc/plugd/plugd.yaml")))
///     .unwrap();
/// let tls = config.server.tls.unwrap();
/// assert_eq!(tls.cert, Path::new("/etc/plugd/tls/cert.pem"));
/// assert_eq!(tls.key, Path::new("/etc/ssl/private/plugd.key"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM): the server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// The private key of the certificate (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

impl TlsConfig {
    /// Both paths passed through `resolve` (the config's relative-path rule).
    pub(crate) fn resolve(&self, resolve: impl Fn(&Path) -> PathBuf) -> TlsConfig {
        TlsConfig {
            cert: resolve(&self.cert),
            key: resolve(&self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Format, HostConfig, HostConfigErrorKind};
    use std::path::Path;

    #[test]
    fn tls_is_off_by_default_and_not_serialized() {
        let c = HostConfig::from_str("", Format::Yaml, None).unwrap();
        assert_eq!(c.server.tls, None);
        let json = serde_json::to_value(&c).unwrap();
        assert!(json["server"].get("tls").is_none(), "{json}");
    }

    #[test]
    fn both_files_are_required() {
        let e = HostConfig::from_str(
            "server:\n  tls: { cert: c.pem }\n",
            Format::Yaml,
            Some(Path::new("/etc/plugd/plugd.yaml")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
        let e = HostConfig::from_str(
            "server:\n  tls: { cert: c.pem, key: k.pem, ca: x }\n",
            Format::Yaml,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(e.kind, HostConfigErrorKind::UnknownKey { .. }),
            "{e}"
        );
    }

    #[test]
    fn paths_are_relative_to_the_config_file_in_every_format() {
        let toml = "[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let c =
            HostConfig::from_str(toml, Format::Toml, Some(Path::new("/srv/plugd.toml"))).unwrap();
        let tls = c.server.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/srv/c.pem"));
        assert_eq!(tls.key, Path::new("/srv/k.pem"));
    }
}
