//! ed25519 keys and package signatures.
//!
//! Key files are one line of text:
//! - `NAME.pub`: `plugd-ed25519-public <64 hex digits> [comment]`
//! - `NAME.key`: `plugd-ed25519-secret <64 hex digits>` (the 32-byte seed; mode 0600)
//!
//! A signature covers the package digest (the SHA-256 of `SHA256SUMS`), inside the message
//! `plugd-package-v1\n<digest>\n` so that it can never be mistaken for a signature of anything
//! else. The key id is the first 16 hex digits of the SHA-256 of the public key.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::{Error, sha256_hex};

const PUBLIC_TAG: &str = "plugd-ed25519-public";
const SECRET_TAG: &str = "plugd-ed25519-secret";

/// The name of the signature inside a package.
pub const SIGNATURE_FILE: &str = "SIGNATURE";

/// The bytes a signature covers for a package digest.
fn message(digest: &str) -> Vec<u8> {
    format!("plugd-package-v1\n{digest}\n").into_bytes()
}

/// A secret signing key. Its `Debug` shows the key id only.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public().key_id())
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Key(format!("no random bytes from the operating system: {e}")))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key file text.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", hex::encode(self.0.to_bytes()))
    }

    /// Parse a key file's text.
    pub fn parse(text: &str) -> Result<SigningKey, Error> {
        let bytes = parse_line(text, SECRET_TAG)?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    /// Read a `.key` file.
    pub fn read(path: &Path) -> Result<SigningKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        SigningKey::parse(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
    }

    /// Sign a package digest.
    ///
    /// ```
    /// let key = plugd_pkg::SigningKey::generate().unwrap();
    /// let sig = key.sign_digest("ab12");
    /// assert!(sig.verify("ab12").is_ok());
    /// assert!(sig.verify("ab13").is_err());
    /// ```
    pub fn sign_digest(&self, digest: &str) -> Signature {
        let public = self.public();
        Signature {
            algorithm: "ed25519".into(),
            key_id: public.key_id(),
            public_key: hex::encode(public.0.as_bytes()),
            signature: hex::encode(self.0.sign(&message(digest)).to_bytes()),
        }
    }
}

/// A public key: what `plugins.trusted_keys` and `--trusted-key` name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// The key id: 16 hex digits of the SHA-256 of the key.
    pub fn key_id(&self) -> String {
        sha256_hex(self.0.as_bytes())[..16].to_string()
    }

    /// The key file text, with a comment (such as the key's name).
    pub fn to_text(&self, comment: &str) -> String {
        let comment: String = comment.chars().filter(|c| !c.is_control()).collect();
        format!(
            "{PUBLIC_TAG} {} {comment}\n",
            hex::encode(self.0.as_bytes())
        )
    }

    /// Parse a key file's text.
    pub fn parse(text: &str) -> Result<PublicKey, Error> {
        let bytes = parse_line(text, PUBLIC_TAG)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| Error::Key(format!("not an ed25519 public key: {e}")))
    }

    /// Read a `.pub` file.
    pub fn read(path: &Path) -> Result<PublicKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        PublicKey::parse(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
    }

    fn from_hex(text: &str) -> Result<PublicKey, Error> {
        let bytes: [u8; 32] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Signature("the public key is not 64 hex digits".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| Error::Signature(format!("not an ed25519 public key: {e}")))
    }
}

fn parse_line(text: &str, tag: &str) -> Result<[u8; 32], Error> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| Error::Key("the file is empty".into()))?;
    let mut parts = line.split_whitespace();
    let found = parts.next().unwrap_or_default();
    if found != tag {
        let hint = if found == PUBLIC_TAG || found == SECRET_TAG {
            format!(" (this is a {found} key)")
        } else {
            String::new()
        };
        return Err(Error::Key(format!("expected a '{tag}' line{hint}")));
    }
    let hex_key = parts
        .next()
        .ok_or_else(|| Error::Key(format!("no key after '{tag}'")))?;
    hex::decode(hex_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Key("the key is not 64 hex digits".into()))
}

/// A package signature: the `SIGNATURE` file inside a package, and the `signature` of a catalog
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's key id.
    pub key_id: String,
    /// The signer's public key, hex.
    pub public_key: String,
    /// The signature, hex.
    pub signature: String,
}

impl Signature {
    /// Check the signature over `digest` against the public key it carries; return that key.
    /// This proves only that the package was not changed since *someone* signed it: whether
    /// the key is trusted is [`Trust::check`]'s question, which verifies against the trusted
    /// keys themselves ([`Signature::verify_with`]).
    pub fn verify(&self, digest: &str) -> Result<PublicKey, Error> {
        let key = PublicKey::from_hex(&self.public_key)?;
        if key.key_id() != self.key_id {
            return Err(Error::Signature(format!(
                "the key id {} does not belong to the public key it comes with ({})",
                self.key_id,
                key.key_id()
            )));
        }
        self.verify_with(&key, digest)?;
        Ok(key)
    }

    /// Check the signature over `digest` against `key` (a trusted key), ignoring the public key
    /// the signature carries.
    ///
    /// ```
    /// let key = plugd_pkg::SigningKey::generate().unwrap();
    /// let other = plugd_pkg::SigningKey::generate().unwrap();
    /// let sig = key.sign_digest("ab12");
    /// assert!(sig.verify_with(&key.public(), "ab12").is_ok());
    /// assert!(sig.verify_with(&other.public(), "ab12").is_err());
    /// ```
    pub fn verify_with(&self, key: &PublicKey, digest: &str) -> Result<(), Error> {
        if self.algorithm != "ed25519" {
            return Err(Error::Signature(format!(
                "unsupported algorithm '{}' (expected ed25519)",
                self.algorithm
            )));
        }
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Signature("the signature is not 128 hex digits".into()))?;
        key.0
            .verify(&message(digest), &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| {
                Error::Signature(format!(
                    "the signature by key {} does not match the package digest {digest} (the package or its digest list was changed after signing)",
                    key.key_id()
                ))
            })
    }

    /// The `SIGNATURE` file text.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parse a `SIGNATURE` file.
    pub fn parse(text: &str) -> Result<Signature, Error> {
        serde_json::from_str(text)
            .map_err(|e| Error::Signature(format!("{SIGNATURE_FILE} is not valid: {e}")))
    }
}

/// What a signature check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// No signature (allowed because signatures were not required).
    Unsigned,
    /// A valid signature, by a key that was not checked against trusted keys (none were given).
    Signed {
        /// The signer.
        key_id: String,
    },
    /// A valid signature by one of the trusted keys.
    Trusted {
        /// The signer.
        key_id: String,
    },
}

impl fmt::Display for SignatureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureState::Unsigned => f.write_str("unsigned"),
            SignatureState::Signed { key_id } => {
                write!(
                    f,
                    "signed by key {key_id}, not checked against trusted keys"
                )
            }
            SignatureState::Trusted { key_id } => write!(f, "signed by trusted key {key_id}"),
        }
    }
}

/// Which signatures are accepted.
///
/// - A signature that does not verify is always refused.
/// - With trusted keys, a signature is verified against the trusted key of its key id, never
///   against the public key it carries, and a signature by any other key is refused — whether
///   or not signatures are required.
/// - With `require`, a signature must be present, and there must be trusted keys.
/// - Without trusted keys (and without `require`), a signature is checked against the key it
///   carries: that proves the package is unchanged since it was signed, not who signed it.
///
/// ```
/// use plugd_pkg::{SigningKey, Trust};
/// let key = SigningKey::generate().unwrap();
/// let sig = key.sign_digest("d1");
/// let trust = Trust { require: true, keys: vec![key.public()] };
/// assert!(trust.check("hello 1.0.0", "d1", Some(&sig)).is_ok());
/// assert!(trust.check("hello 1.0.0", "d1", None).is_err());
/// let other = Trust { require: true, keys: vec![SigningKey::generate().unwrap().public()] };
/// assert!(other.check("hello 1.0.0", "d1", Some(&sig)).is_err());
/// // Trusted keys refuse a stranger's signature even when signatures are not required.
/// let optional = Trust { require: false, ..other };
/// assert!(optional.check("hello 1.0.0", "d1", Some(&sig)).is_err());
/// assert!(optional.check("hello 1.0.0", "d1", None).is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Refuse unsigned packages.
    pub require: bool,
    /// The keys whose signatures are trusted.
    pub keys: Vec<PublicKey>,
}

impl Trust {
    /// Read the trusted key files.
    pub fn from_files<'a>(
        require: bool,
        files: impl IntoIterator<Item = &'a Path>,
    ) -> Result<Trust, Error> {
        let keys = files
            .into_iter()
            .map(PublicKey::read)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust { require, keys })
    }

    /// Check the signature (if any) of `what` (such as `hello 1.0.0`) over `digest`.
    pub fn check(
        &self,
        what: &str,
        digest: &str,
        signature: Option<&Signature>,
    ) -> Result<SignatureState, Error> {
        if self.require && self.keys.is_empty() {
            return Err(Error::Signature(format!(
                "{what}: signatures are required (plugins.require_signatures) but no trusted key is configured: list the signers' public keys in plugins.trusted_keys (or pass --trusted-key), or set plugins.require_signatures: false"
            )));
        }
        let Some(signature) = signature else {
            return if self.require {
                Err(Error::Signature(format!(
                    "{what} is not signed, and signatures are required (plugins.require_signatures, on by default with plugins.trusted_keys, or --trusted-key): sign the package with `plugd sign --key <key>` by a trusted key ({}) and install it again, or set plugins.require_signatures: false to allow unsigned plugins",
                    self.key_ids()
                )))
            } else {
                Ok(SignatureState::Unsigned)
            };
        };
        if self.keys.is_empty() {
            let key = signature
                .verify(digest)
                .map_err(|e| Error::Signature(format!("{what}: {}", strip(&e))))?;
            return Ok(SignatureState::Signed {
                key_id: key.key_id(),
            });
        }
        // Verify against the trusted key itself: the public key inside the signature is the
        // signer's claim, not something to check the signature with.
        let Some(key) = self.keys.iter().find(|k| k.key_id() == signature.key_id) else {
            return Err(Error::Signature(format!(
                "{what} is signed by key {}, which is not trusted (trusted keys: {}): install a package signed by a trusted key, or add the signer's public key file to plugins.trusted_keys (or --trusted-key) if you trust it",
                signature.key_id,
                self.key_ids()
            )));
        };
        signature
            .verify_with(key, digest)
            .map_err(|e| Error::Signature(format!("{what}: {}", strip(&e))))?;
        Ok(SignatureState::Trusted {
            key_id: key.key_id(),
        })
    }

    /// The trusted key ids, comma-separated (`none` without keys).
    fn key_ids(&self) -> String {
        if self.keys.is_empty() {
            return "none".into();
        }
        self.keys
            .iter()
            .map(PublicKey::key_id)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The message of a signature error without its `signature: ` prefix.
fn strip(e: &Error) -> String {
    match e {
        Error::Signature(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_are_not_confused() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::parse(&key.to_text()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_text("release")).unwrap();
        assert_eq!(public, key.public());
        let err = PublicKey::parse(&key.to_text()).unwrap_err().to_string();
        assert!(err.contains("this is a plugd-ed25519-secret key"), "{err}");
        assert!(SigningKey::parse("plugd-ed25519-secret zz\n").is_err());
        assert!(SigningKey::parse("").is_err());
    }

    #[test]
    fn a_signature_binds_the_digest_and_the_key() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign_digest("abc");
        assert_eq!(sig.verify("abc").unwrap(), key.public());
        let err = sig.verify("abd").unwrap_err().to_string();
        assert!(
            err.contains("does not match the package digest abd"),
            "{err}"
        );
        // Swapping in another public key breaks the key id, then the signature.
        let other = SigningKey::generate().unwrap().public();
        let mut forged = sig.clone();
        forged.public_key = hex::encode(other.0.as_bytes());
        assert!(forged.verify("abc").is_err());
        forged.key_id = other.key_id();
        assert!(forged.verify("abc").is_err());
        assert_eq!(Signature::parse(&sig.to_text()).unwrap(), sig);
    }

    #[test]
    fn trust_policy() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign_digest("d");
        let open = Trust::default();
        assert_eq!(
            open.check("p", "d", None).unwrap(),
            SignatureState::Unsigned
        );
        assert!(matches!(
            open.check("p", "d", Some(&sig)).unwrap(),
            SignatureState::Signed { .. }
        ));
        assert!(open.check("p", "e", Some(&sig)).is_err());
        let required_without_keys = Trust {
            require: true,
            keys: vec![],
        };
        let err = required_without_keys
            .check("p", "d", Some(&sig))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no trusted key is configured"), "{err}");
        let trusted = Trust {
            require: false,
            keys: vec![key.public()],
        };
        assert!(matches!(
            trusted.check("p", "d", Some(&sig)).unwrap(),
            SignatureState::Trusted { .. }
        ));
        let other = SigningKey::generate().unwrap().sign_digest("d");
        let err = trusted
            .check("p", "d", Some(&other))
            .unwrap_err()
            .to_string();
        assert!(err.contains("which is not trusted"), "{err}");
    }

    #[test]
    fn with_trusted_keys_a_signature_is_verified_against_them_not_against_its_own_key() {
        let trusted = SigningKey::generate().unwrap();
        let attacker = SigningKey::generate().unwrap();
        for require in [true, false] {
            let trust = Trust {
                require,
                keys: vec![trusted.public()],
            };
            // The attacker's own, valid signature: refused, naming the signer and the fix.
            let own = attacker.sign_digest("d");
            assert!(own.verify("d").is_ok());
            let err = trust
                .check("p 1.0.0", "d", Some(&own))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "p 1.0.0 is signed by key {}, which is not trusted (trusted keys: {})",
                    attacker.public().key_id(),
                    trusted.public().key_id()
                )) && err.contains("plugins.trusted_keys"),
                "{err}"
            );
            // Claiming the trusted key id (with the attacker's key inside, or the trusted one):
            // the signature is checked with the trusted key and fails.
            for carried in [attacker.public(), trusted.public()] {
                let mut forged = attacker.sign_digest("d");
                forged.key_id = trusted.public().key_id();
                forged.public_key = hex::encode(carried.0.as_bytes());
                let err = trust
                    .check("p 1.0.0", "d", Some(&forged))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(&format!(
                        "the signature by key {} does not match the package digest d",
                        trusted.public().key_id()
                    )),
                    "{err}"
                );
            }
            assert_eq!(
                trust
                    .check("p 1.0.0", "d", Some(&trusted.sign_digest("d")))
                    .unwrap(),
                SignatureState::Trusted {
                    key_id: trusted.public().key_id()
                }
            );
        }
        // Unsigned: refused when required, with what fixes it.
        let required = Trust {
            require: true,
            keys: vec![trusted.public()],
        };
        let err = required
            .check("p 1.0.0", "d", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p 1.0.0 is not signed, and signatures are required")
                && err.contains(&trusted.public().key_id())
                && err.contains("plugd sign")
                && err.contains("require_signatures: false"),
            "{err}"
        );
    }
}
