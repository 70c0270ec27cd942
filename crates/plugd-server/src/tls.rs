//! HTTPS on the listeners (`server.tls`): rustls with the aws-lc-rs provider, HTTP/1.1 by ALPN.
//!
//! The certificate chain and private key are PEM files. The listener's certificate resolver
//! holds the pair in an [`ArcSwap`]; at most once every [`CHECK_EVERY`], a handshake looks at the
//! two files' modification times and sizes and, when either changed, reads the pair again. A new
//! pair that cannot be used (unreadable, not PEM, a key that does not match the certificate)
//! is logged as an error and the previous pair stays in use until the files change again. The
//! check takes no lock a handshake would wait on: a handshake that finds another one checking
//! goes on with the current pair.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use plugd_manifest::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often, at most, a handshake checks whether the certificate or key file changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why the certificate and key of `server.tls` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {path} (server.tls.{what}): {source}")]
    Read {
        /// `cert` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error(
        "{path} (server.tls.cert) holds no usable certificate: {reason}; expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the server's certificate first"
    )]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no PEM private key, or one rustls cannot use.
    #[error(
        "{path} (server.tls.key) holds no usable private key: {reason}; expected one PEM private key (PKCS#8 \"BEGIN PRIVATE KEY\", PKCS#1 \"BEGIN RSA PRIVATE KEY\" or SEC1 \"BEGIN EC PRIVATE KEY\")"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error(
        "the private key {key} (server.tls.key) does not belong to the certificate {cert} (server.tls.cert): {reason}"
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// The crypto provider refused the protocol versions (a build problem, not the files).
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Reads and checks the certificate and key of `server.tls`, as a server would at start
/// (`plugd check` and `plugd serve` call it before anything listens).
///
/// ```
/// let tls = plugd_manifest::TlsConfig {
///     cert: "/nonexistent/cert.pem".into(),
///     key: "/nonexistent/key.pem".into(),
/// };
/// let e = plugd_server::check_tls(&tls).unwrap_err();
/// assert!(e.to_string().contains("server.tls.cert"), "{e}");
/// ```
pub fn check_tls(config: &TlsConfig) -> Result<(), TlsError> {
    load(config, &provider()).map(|_| ())
}

/// The acceptor of a listener with `server.tls`: the pair is read now (an error here stops the
/// start) and again when the files change.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = provider();
    let resolver = ReloadingCert::new(config.clone(), provider.clone(), CHECK_EVERY)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // The listeners speak HTTP/1.1 only.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The provider of every TLS listener: chosen here, never the process-wide default, so an
/// embedding application's own rustls setup is left alone.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads the pair and checks that the key belongs to the first certificate.
fn load(config: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("cert", &config.cert)?;
    let key_pem = read("key", &config.key)?;
    let certificate = |reason: String| TlsError::Certificate {
        path: config.cert.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate("no PEM certificate in it".into()));
    }
    let key_error = |reason: String| TlsError::Key {
        path: config.key.clone(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| key_error(e.to_string()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InvalidCertificate(e)) => Err(certificate(format!("{e:?}"))),
        Err(e) => Err(TlsError::Mismatch {
            cert: config.cert.clone(),
            key: config.key.clone(),
            reason: e.to_string(),
        }),
    }
}

/// What a file looked like at the last check: modification time and size, `None` when it could
/// not be looked at.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The certificate resolver of a TLS listener (see the module doc).
struct ReloadingCert {
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    check_every: Duration,
    /// The last check and the stamps of the pair then; `try_lock` only, never waited on.
    last: Mutex<(Instant, [Stamp; 2])>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .field("check_every", &self.check_every)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn new(
        files: TlsConfig,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> Result<Self, TlsError> {
        // Stamped before the read: a change during it is seen at the next check.
        let stamps = [stamp(&files.cert), stamp(&files.key)];
        let current = load(&files, &provider)?;
        Ok(ReloadingCert {
            files,
            provider,
            current: ArcSwap::from_pointee(current),
            check_every,
            last: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// Reads the pair again if a file changed since the last check, at most every
    /// `check_every`; a pair that cannot be used leaves the current one in place.
    fn refresh(&self) {
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        let (checked, stamps) = &mut *last;
        if checked.elapsed() < self.check_every {
            return;
        }
        *checked = Instant::now();
        let now = [stamp(&self.files.cert), stamp(&self.files.key)];
        if now == *stamps {
            return;
        }
        *stamps = now;
        match load(&self.files, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "TLS certificate reloaded (server.tls)"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "the changed TLS certificate or key cannot be used: still serving the previous certificate until the files change again"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (TlsConfig, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsConfig {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        (files, cert.cert.der().to_vec())
    }

    fn served(resolver: &ReloadingCert) -> Vec<u8> {
        resolver.refresh();
        resolver.current.load().cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_served_and_a_broken_one_keeps_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = pair(dir.path(), "a");
        let resolver = ReloadingCert::new(files.clone(), provider(), Duration::ZERO).unwrap();
        assert_eq!(served(&resolver), first);

        let (other, second) = pair(dir.path(), "b");
        std::fs::copy(&other.cert, &files.cert).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        assert_eq!(served(&resolver), second, "the new pair after the change");

        std::fs::write(&files.key, "not a key").unwrap();
        assert_eq!(
            served(&resolver),
            second,
            "a broken key keeps the last good pair"
        );

        // A key of another certificate: a mismatch, also kept out.
        let (third, _) = pair(dir.path(), "c");
        std::fs::copy(&third.key, &files.key).unwrap();
        assert_eq!(
            served(&resolver),
            second,
            "a mismatched key keeps the last good pair"
        );
    }

    #[test]
    fn checks_wait_for_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = pair(dir.path(), "a");
        let resolver =
            ReloadingCert::new(files.clone(), provider(), Duration::from_secs(3600)).unwrap();
        let (other, _) = pair(dir.path(), "b");
        std::fs::copy(&other.cert, &files.cert).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        assert_eq!(
            served(&resolver),
            first,
            "not checked again within the hour"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = pair(dir.path(), "a");
        std::fs::write(
            &files.key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = check_tls(&files).unwrap_err().to_string();
        assert!(e.contains("server.tls.key") && e.contains("a.key"), "{e}");

        std::fs::write(&files.cert, "hello").unwrap();
        let e = check_tls(&files).unwrap_err().to_string();
        assert!(
            e.contains("server.tls.cert") && e.contains("no PEM certificate"),
            "{e}"
        );

        let (other, _) = pair(dir.path(), "b");
        let mixed = TlsConfig {
            cert: other.cert,
            key: pair(dir.path(), "c").0.key,
        };
        let e = check_tls(&mixed).unwrap_err().to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");

        let missing = TlsConfig {
            cert: dir.path().join("none.crt"),
            key: files.key,
        };
        let e = check_tls(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read the TLS cert") && e.contains("none.crt"),
            "{e}"
        );
    }
}
