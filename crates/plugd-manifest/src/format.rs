//! The three file formats and the one decoder behind manifests and host configs.
//!
//! Every document is decoded through [`serde_path_to_error`], so that an error knows the dotted
//! path of the value at fault (`plugins.plugins[0].prioirty`), and serde's `unknown field` errors
//! (from `#[serde(deny_unknown_fields)]`) are rewritten into [`DecodeError::UnknownKey`] with a
//! "did you mean" suggestion.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

/// A file format for manifests and host configs.
///
/// ```
/// use plugd_manifest::Format;
/// use std::path::Path;
///
/// assert_eq!(Format::from_path(Path::new("plugin.yml")), Some(Format::Yaml));
/// assert_eq!(Format::from_path(Path::new("plugd.TOML")), Some(Format::Toml));
/// assert_eq!(Format::from_path(Path::new("plugin.wasm")), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// YAML (`.yaml`, `.yml`), read with `serde-saphyr`.
    Yaml,
    /// JSON (`.json`).
    Json,
    /// TOML (`.toml`).
    Toml,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::Yaml, Format::Json, Format::Toml];

    /// The format a file name's extension names (`.yaml`, `.yml`, `.json`, `.toml`, any case).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// The format's lowercase name: `yaml`, `json` or `toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Toml => "toml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a document could not be decoded (crate-internal; each caller maps it to its own error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A syntax or type error, or a value rejected while decoding.
    Syntax {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// A key that the structure does not have.
    UnknownKey {
        key: String,
        path: String,
        suggestion: Option<String>,
        line: Option<u32>,
        column: Option<u32>,
    },
}

/// Decode `text` in `format` into `T`. An empty document (or JSON/YAML `null`) gives
/// `T::default()`.
pub(crate) fn decode<T>(text: &str, format: Format) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Default,
{
    let value: Option<T> = match format {
        Format::Json => decode_json(text)?,
        Format::Toml => decode_toml(text)?,
        Format::Yaml => decode_yaml(text)?,
    };
    Ok(value.unwrap_or_default())
}

/// `text` in `format` as a plain value tree (YAML anchors resolved), or `None` when it does not
/// parse; [`decode`] then reports the syntax error with its position.
pub(crate) fn parse_tree(text: &str, format: Format) -> Option<serde_json::Value> {
    if text.trim().is_empty() {
        return Some(serde_json::Value::Null);
    }
    match format {
        Format::Json => serde_json::from_str(text).ok(),
        Format::Toml => toml::from_str(text).ok(),
        Format::Yaml => serde_saphyr::from_str(text).ok(),
    }
}

/// Decode a value tree into `T`, with the same dotted paths and "did you mean" as [`decode`]
/// (a tree has no lines and columns).
pub(crate) fn decode_value<T>(value: serde_json::Value) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Default,
{
    if value.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        classify(json_located(e.inner()), Some(path))
    })
}

/// Where a decoder put an error.
struct Located {
    message: String,
    unknown_field: Option<(String, Vec<String>)>,
    line: Option<u32>,
    column: Option<u32>,
}

fn decode_json<T: DeserializeOwned>(text: &str) -> Result<Option<T>, DecodeError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Option<T>>(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| classify(json_located(&e), None))?;
            Ok(value)
        }
        Err(e) => {
            let path = e.path().to_string();
            let mut located = json_located(e.inner());
            // serde_json points at the closing quote of an unknown key; point at its opening one.
            if let (Some((key, _)), Some(column)) = (&located.unknown_field, located.column) {
                let width = u32::try_from(key.chars().count() + 1).unwrap_or(u32::MAX);
                if column > width {
                    located.column = Some(column - width);
                }
            }
            Err(classify(located, Some(path)))
        }
    }
}

fn json_located(e: &serde_json::Error) -> Located {
    let full = e.to_string();
    let (line, column) = (e.line(), e.column());
    let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let message = if line == 0 {
        full
    } else {
        let suffix = format!(" at line {line} column {column}");
        full.strip_suffix(&suffix)
            .map(str::to_owned)
            .unwrap_or(full)
    };
    Located {
        unknown_field: parse_unknown_field(&message),
        message,
        line: (line > 0).then(|| to_u32(line)),
        column: (line > 0).then(|| to_u32(column)),
    }
}

fn decode_toml<T: DeserializeOwned>(text: &str) -> Result<Option<T>, DecodeError> {
    let de = toml::Deserializer::parse(text).map_err(|e| classify(toml_located(&e, text), None))?;
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            let path = e.path().to_string();
            Err(classify(toml_located(e.inner(), text), Some(path)))
        }
    }
}

fn toml_located(e: &toml::de::Error, text: &str) -> Located {
    let message = one_line(e.message());
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    Located {
        unknown_field: parse_unknown_field(&message),
        message,
        line,
        column,
    }
}

fn decode_yaml<T: DeserializeOwned>(text: &str) -> Result<Option<T>, DecodeError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, Option<T>>(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| classify(yaml_located(&e), path))
}

fn yaml_located(e: &serde_saphyr::Error) -> Located {
    use serde_saphyr::{Error, MessageFormatter};
    let mut inner = e;
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = inner {
        inner = error;
    }
    let message = one_line(&serde_saphyr::UserMessageFormatter.format_message(inner));
    let unknown_field = match inner {
        Error::SerdeUnknownField {
            field, expected, ..
        } => Some((
            field.clone(),
            expected.iter().map(|s| (*s).to_owned()).collect(),
        )),
        _ => parse_unknown_field(&message),
    };
    let location = e.location().or_else(|| inner.location());
    let (line, column) = match location {
        Some(loc) if loc.line() > 0 => (
            u32::try_from(loc.line()).ok(),
            u32::try_from(loc.column()).ok(),
        ),
        _ => (None, None),
    };
    Located {
        message,
        unknown_field,
        line,
        column,
    }
}

/// Turn a located decoder error into a [`DecodeError`], adding the dotted path and a
/// "did you mean" where it helps.
fn classify(located: Located, path: Option<String>) -> DecodeError {
    let path = path.map(|p| clean_path(&p)).filter(|p| !p.is_empty());
    if let Some((key, expected)) = located.unknown_field {
        // The tracked path ends with the unknown key itself; the error names its container.
        let container = match &path {
            Some(p) => strip_last_segment(p, &key),
            None => String::new(),
        };
        let suggestion = did_you_mean(&key, expected.iter().map(String::as_str));
        return DecodeError::UnknownKey {
            key,
            path: container,
            suggestion,
            line: located.line,
            column: located.column,
        };
    }
    let mut message = rewrite_missing_field(&located.message)
        .unwrap_or_else(|| rewrite_unknown_variant(&located.message));
    if let Some(p) = path {
        message = format!("{p}: {message}");
    }
    DecodeError::Syntax {
        message,
        line: located.line,
        column: located.column,
    }
}

/// serde_path_to_error's path, without the `.` it shows for the root and the `?` it shows for
/// a segment it could not name.
fn clean_path(path: &str) -> String {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_suffix(".?") {
            p = rest;
        } else if p == "?" || p == "." {
            return String::new();
        } else {
            return p.to_owned();
        }
    }
}

/// serde's "missing field `x`" in the contract's words: "missing required field: x"
/// (docs/design.md#errors).
fn rewrite_missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let field = rest.strip_suffix('`')?;
    Some(format!("missing required field: {field}"))
}

/// `a.b[0].key` without its last segment `key`: `a.b[0]`.
fn strip_last_segment(path: &str, key: &str) -> String {
    if let Some(rest) = path.strip_suffix(key) {
        if rest.is_empty() {
            return String::new();
        }
        if let Some(rest) = rest.strip_suffix('.') {
            return rest.to_owned();
        }
    }
    path.to_owned()
}

/// Parse serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or "there are
/// no fields").
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let key = rest[..end].to_owned();
    let expected = backticked(&rest[end + 1..]);
    Some((key, expected))
}

/// Every `quoted` word in `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// serde's "unknown variant `x`, expected one of `a`, `b`" as "unknown value 'x', expected one
/// of a, b; did you mean 'a'?".
fn rewrite_unknown_variant(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown variant `") else {
        return message.to_owned();
    };
    let Some(end) = rest.find('`') else {
        return message.to_owned();
    };
    let value = &rest[..end];
    let tail = &rest[end + 1..];
    let mut expected = backticked(tail);
    if expected.is_empty() {
        // serde-saphyr lists them without backticks.
        if let Some(list) = tail.strip_prefix(", expected one of ") {
            expected = list.split(", ").map(str::to_owned).collect();
        }
    }
    let mut out = format!(
        "unknown value '{value}', expected one of {}",
        expected.join(", ")
    );
    if let Some(s) = did_you_mean(value, expected.iter().map(String::as_str)) {
        out.push_str(&format!("; did you mean '{s}'?"));
    }
    out
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(word, candidate);
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c.to_owned())
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// Messages are shown on one line: join a multi-line message with "; ".
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// " at line L column C", or nothing when the position is not known.
pub(crate) fn at_position(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l} column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: Option<String>,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        priority: Option<i32>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Block,
        Reject,
    }

    const YAML: &str = "name: x\nitems:\n  - priority: 1\n  - prioirty: 2\n";
    const JSON: &str = "{\n  \"name\": \"x\",\n  \"items\": [\n    {\"priority\": 1},\n    {\"prioirty\": 2}\n  ]\n}\n";
    const TOML: &str = "name = \"x\"\n[[items]]\npriority = 1\n[[items]]\nprioirty = 2\n";

    #[test]
    fn format_from_path() {
        assert_eq!(
            Format::from_path(Path::new("a/plugin.yaml")),
            Some(Format::Yaml)
        );
        assert_eq!(
            Format::from_path(Path::new("plugin.json")),
            Some(Format::Json)
        );
        assert_eq!(Format::from_path(Path::new("plugin")), None);
        assert_eq!(Format::Toml.to_string(), "toml");
    }

    #[test]
    fn unknown_key_has_path_suggestion_and_position_in_every_format() {
        for (text, format, line) in [
            (YAML, Format::Yaml, 4),
            (JSON, Format::Json, 5),
            (TOML, Format::Toml, 5),
        ] {
            let err = decode::<Outer>(text, format).unwrap_err();
            let DecodeError::UnknownKey {
                key,
                path,
                suggestion,
                line: l,
                column,
            } = err
            else {
                panic!("{format}: {err:?}");
            };
            assert_eq!(key, "prioirty", "{format}");
            assert_eq!(path, "items[1]", "{format}");
            assert_eq!(suggestion.as_deref(), Some("priority"), "{format}");
            assert_eq!(l, Some(line), "{format}");
            assert!(column.is_some(), "{format}");
        }
    }

    #[test]
    fn unknown_top_level_key_has_empty_path() {
        for (text, format) in [
            ("nmae: x\n", Format::Yaml),
            ("{\"nmae\": \"x\"}", Format::Json),
            ("nmae = \"x\"\n", Format::Toml),
        ] {
            match decode::<Outer>(text, format).unwrap_err() {
                DecodeError::UnknownKey {
                    path, suggestion, ..
                } => {
                    assert_eq!(path, "", "{format}");
                    assert_eq!(suggestion.as_deref(), Some("name"), "{format}");
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        for (text, format) in [
            ("name: [x\n", Format::Yaml),
            ("{\"name\": }", Format::Json),
            ("name = \n", Format::Toml),
        ] {
            match decode::<Outer>(text, format).unwrap_err() {
                DecodeError::Syntax { line, column, .. } => {
                    assert!(line.is_some() && column.is_some(), "{format}");
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_variant_gets_suggestion_and_path() {
        for (text, format) in [
            ("items:\n  - mode: blok\n", Format::Yaml),
            ("{\"items\": [{\"mode\": \"blok\"}]}", Format::Json),
            ("[[items]]\nmode = \"blok\"\n", Format::Toml),
        ] {
            match decode::<Outer>(text, format).unwrap_err() {
                DecodeError::Syntax { message, .. } => {
                    assert!(
                        message.starts_with("items[0].mode: "),
                        "{format}: {message}"
                    );
                    assert!(
                        message.contains("did you mean 'block'?"),
                        "{format}: {message}"
                    );
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_documents_decode_to_default() {
        assert_eq!(decode::<Outer>("", Format::Yaml).unwrap(), Outer::default());
        assert_eq!(
            decode::<Outer>("# nothing\n", Format::Yaml).unwrap(),
            Outer::default()
        );
        assert_eq!(decode::<Outer>("", Format::Json).unwrap(), Outer::default());
        assert_eq!(decode::<Outer>("", Format::Toml).unwrap(), Outer::default());
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("prioirty", ["priority", "name"]).as_deref(),
            Some("priority")
        );
        assert_eq!(did_you_mean("zzz", ["priority", "name"]), None);
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncé\nx", 7), (3, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
