//! The digest list of a package: `SHA256SUMS`, one `<sha256 hex>  <path>` line per file, sorted
//! by path — the format of `sha256sum`, so an unpacked package can be checked with
//! `sha256sum -c SHA256SUMS`.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::Error;

/// The name of the digest list inside a package.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// The SHA-256 of `bytes`, lowercase hex.
///
/// ```
/// assert_eq!(
///     plugd_pkg::sha256_hex(b""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A digest list: path → SHA-256, in path order.
///
/// The text form is canonical (sorted, unique paths, two spaces, `\n` after every line), so the
/// package digest — the SHA-256 of that text, which signatures cover — has exactly one value for
/// one set of files.
///
/// ```
/// use plugd_pkg::Sums;
/// let mut sums = Sums::default();
/// sums.insert("plugin.yaml", b"name: x\n");
/// let text = sums.render();
/// assert_eq!(Sums::parse(&text).unwrap(), sums);
/// assert!(Sums::parse("not a digest list\n").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    entries: BTreeMap<String, String>,
}

impl Sums {
    /// Record the digest of one file.
    pub fn insert(&mut self, path: &str, content: &[u8]) {
        self.entries.insert(path.to_string(), sha256_hex(content));
    }

    /// The digest recorded for `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.entries.get(path).map(String::as_str)
    }

    /// Every (path, digest), in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(p, d)| (p.as_str(), d.as_str()))
    }

    /// How many files are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The canonical text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (path, digest) in &self.entries {
            out.push_str(digest);
            out.push_str("  ");
            out.push_str(path);
            out.push('\n');
        }
        out
    }

    /// The package digest: the SHA-256 of the canonical text.
    pub fn digest(&self) -> String {
        sha256_hex(self.render().as_bytes())
    }

    /// Parse a digest list; only the canonical form is accepted.
    pub fn parse(text: &str) -> Result<Sums, Error> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |why: &str| Error::Integrity(format!("{SUMS_FILE} line {}: {why}", i + 1));
            let (digest, path) = line
                .split_once("  ")
                .ok_or_else(|| bad("expected '<sha256>  <path>'"))?;
            if digest.len() != 64
                || !digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad("the digest is not 64 lowercase hex digits"));
            }
            if path.is_empty() {
                return Err(bad("no path"));
            }
            if entries
                .insert(path.to_string(), digest.to_string())
                .is_some()
            {
                return Err(bad(&format!("'{path}' is listed twice")));
            }
        }
        let sums = Sums { entries };
        if sums.render() != text {
            return Err(Error::Integrity(format!(
                "{SUMS_FILE} is not in canonical form (sorted by path, '<sha256>  <path>\\n' lines)"
            )));
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_sorted_and_parse_round_trips() {
        let mut s = Sums::default();
        s.insert("b", b"2");
        s.insert("a/x", b"1");
        let text = s.render();
        assert!(text.starts_with(&format!("{}  a/x\n", sha256_hex(b"1"))));
        assert_eq!(Sums::parse(&text).unwrap(), s);
        assert_eq!(s.digest(), sha256_hex(text.as_bytes()));
    }

    #[test]
    fn non_canonical_text_is_refused() {
        let mut s = Sums::default();
        s.insert("b", b"2");
        s.insert("a", b"1");
        let text = s.render();
        let swapped: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
        assert!(Sums::parse(&swapped).is_err());
        assert!(Sums::parse(text.trim_end()).is_err());
        let upper = text.to_uppercase();
        assert!(Sums::parse(&upper).is_err());
        let dup = format!("{}{}", text.lines().next().unwrap(), "\n").repeat(2);
        assert!(Sums::parse(&dup).is_err());
    }
}
