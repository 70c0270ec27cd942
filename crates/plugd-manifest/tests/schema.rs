//! The committed JSON Schema of the manifest (schemas/plugin.schema.json) is the one the types
//! generate, and every example and test manifest of the repository validates against it.
//! Regenerate with `PLUGD_BLESS=1 cargo test -p plugd-manifest --test schema` (or
//! `plugd schema > schemas/plugin.schema.json`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated() -> String {
    let mut text = serde_json::to_string_pretty(&plugd_manifest::manifest_json_schema()).unwrap();
    text.push('\n');
    text
}

#[test]
fn the_committed_schema_is_current() {
    let file = root().join("schemas/plugin.schema.json");
    let text = generated();
    if std::env::var_os("PLUGD_BLESS").is_some() {
        std::fs::write(&file, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == text,
        "schemas/plugin.schema.json is stale: regenerate it with PLUGD_BLESS=1 cargo test -p plugd-manifest --test schema"
    );
}

fn manifests() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["examples/plugins", "tests/plugins"] {
        for entry in std::fs::read_dir(root().join(base)).unwrap() {
            let file = entry.unwrap().path().join("plugin.yaml");
            if file.is_file() {
                out.push(file);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_repository_manifest_validates() {
    let validator = jsonschema::validator_for(&plugd_manifest::manifest_json_schema()).unwrap();
    let files = manifests();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
        // And the schema agrees with the reader.
        plugd_manifest::Manifest::from_path(&file).unwrap();
    }
}

#[test]
fn the_schema_refuses_what_the_reader_refuses() {
    let validator = jsonschema::validator_for(&plugd_manifest::manifest_json_schema()).unwrap();
    for bad in [
        serde_json::json!({ "name": "x", "version": "1.0.0", "permisions": { "router": true } }),
        serde_json::json!({ "name": "x", "version": "1.0.0", "permissions": { "root": true } }),
        serde_json::json!({ "name": "x", "version": "1.0.0", "hooks": [{ "type": "pre-request" }] }),
        serde_json::json!({ "name": "x", "version": "1.0.0", "config": { "k": { "type": "text" } } }),
        serde_json::json!({ "version": "1.0.0" }),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
    let good = serde_json::json!({
        "name": "x", "version": 1.0, "permissions": ["router", "cache"], "priority": "security",
        "hooks": [{ "type": "pre_request", "priority": 200 }],
        "config": { "k": { "type": "duration", "default": "5s" } }
    });
    assert!(validator.is_valid(&good));
}
