//! The committed JSON Schemas of the manifest (schemas/plugin.schema.json) and of the host config
//! (schemas/plugd.schema.json) are the ones the types generate; every example and test manifest
//! and the example host config validate against them, and they refuse what the readers refuse.
//! Regenerate with `PLUGD_BLESS=1 cargo test -p plugd-manifest --test schema` (or
//! `plugd schema > schemas/plugin.schema.json`, `plugd schema config > schemas/plugd.schema.json`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `schemas/<name>` holds `schema`, or is rewritten with it under `PLUGD_BLESS`.
fn check_committed(name: &str, schema: serde_json::Value) {
    let file = root().join("schemas").join(name);
    let mut text = serde_json::to_string_pretty(&schema).unwrap();
    text.push('\n');
    if std::env::var_os("PLUGD_BLESS").is_some() {
        std::fs::write(&file, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == text,
        "schemas/{name} is stale: regenerate it with PLUGD_BLESS=1 cargo test -p plugd-manifest --test schema"
    );
}

#[test]
fn the_committed_schemas_are_current() {
    check_committed("plugin.schema.json", plugd_manifest::manifest_json_schema());
    check_committed(
        "plugd.schema.json",
        plugd_manifest::host_config_json_schema(),
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
        // And the schema agrees with the reader, but for the hostile manifests the reader refuses
        // for what a schema cannot say (a default naming the host's environment).
        let read = plugd_manifest::Manifest::from_path(&file);
        if REFUSED_BY_THE_READER
            .iter()
            .any(|n| file.parent().unwrap().ends_with(n))
        {
            assert!(read.is_err(), "{}", file.display());
        } else {
            read.unwrap();
        }
    }
}

/// Test guests whose manifests are attacks the reader refuses.
const REFUSED_BY_THE_READER: [&str; 1] = ["tests/plugins/envthief"];

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

fn host_errors(value: &serde_json::Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&plugd_manifest::host_config_json_schema()).unwrap();
    validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn the_example_host_config_validates() {
    // The example, and the production config the container image and systemd unit use.
    for file in ["examples/plugd.yaml", "deploy/plugd.yaml"] {
        let file = root().join(file);
        let text = std::fs::read_to_string(&file).unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            host_errors(&value),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
        let config = plugd_manifest::HostConfig::from_path(&file).unwrap();
        if file.ends_with("deploy/plugd.yaml") {
            assert_eq!(config.data_dir, std::path::Path::new("/var/lib/plugd"));
            assert_eq!(config.admin.listen.as_deref(), Some("127.0.0.1:8081"));
        }
    }
    // An empty file is a valid config for both.
    assert_eq!(host_errors(&serde_json::json!({})), Vec::<String>::new());
}

/// Every key the reader takes, in the forms it takes them: the schema must not be stricter.
#[test]
fn the_host_schema_accepts_every_key_the_reader_takes() {
    let yaml = r#"
server: { listen: "0.0.0.0:8080", body_limit: 2MiB, tls: { cert: tls/cert.pem, key: tls/key.pem } }
admin: { listen: ":9090", token: "t0ken-0123456789abcdef", protect: [healthz, metrics] }
data_dir: ./data
status: { enabled: true, interval: 5s, retention: 7d }
plugins:
  enabled: true
  directory: ./plugins
  autoload: true
  on_failure: abort
  hot_reload: false
  reload_delay: 250
  health_check_interval: 30s
  reload: { queue_timeout: 30s, max_queue_size: 100, queue_strategy: reject, grace_period: 1m }
  error_threshold: { enabled: true, max_errors: 10, time_window: 5m, action: disable, reset_on_success: true }
  supervision: { enabled: true, max_restarts: 3, backoff_initial: 100ms, backoff_max: 10s }
  limits:
    memory_mb: 32
    timeout: 2s
    hook_timeouts: { pre_request: 50ms, post_response: 1000 }
    instances: 4
    max_cpu_percent: 50
    fuel: 1000000
    max_response_bytes: 1048576
  pool: { slots: 16, memory_per_slot_mb: 32 }
  require_signatures: false
  trusted_keys: [keys/release.pub]
  blocked:
    - { name: evil, versions: "<1.2.0", reason: "CVE-2026-0001" }
    - { name: worse }
  plugins:
    - name: hello
      enabled: true
      path: ./plugins/hello
      priority: business
      before: [api]
      after: [auth]
      config: { greeting: Hi, nested: { a: [1, 2] } }
      permissions: { router: true, cache: false }
      failure_policy: fail_closed
      limits: { memory_mb: 16, timeout: 1s, hook_timeouts: { pre_request: 20ms }, max_response_bytes: 64KiB }
      error_threshold: { max_errors: 5, time_window: 1m }
      supervision: { max_restarts: 1, backoff_initial: 1s, backoff_max: 2s }
      network: { allow: ["api.example.com", "*.example.org:443"] }
      exec:
        allow:
          - convert
          - { command: git, args: [status, --porcelain] }
          - { command: git, args: [log, "--max-count=*"], extra_args: true }
          - { command: date }
        limits: { memory_mb: 512, file_size_mb: 0, processes: 32, open_files: 128 }
    - name: auth
      priority: 200
      permissions: [router, config]
    - name: api
"#;
    plugd_manifest::HostConfig::from_str(yaml, plugd_manifest::Format::Yaml, None).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(host_errors(&value), Vec::<String>::new());
}

#[test]
fn the_host_schema_refuses_what_the_reader_refuses() {
    for bad in [
        "plugins: { enabeld: true }",
        "server: { body_limit: 2 lots }",
        "plugins: { on_failure: explode }",
        "plugins: { limits: { timeout: true } }",
        "plugins: { plugins: [{ name: x, permissions: { root: true } }] }",
        "plugins: { limits: { hook_timeouts: { pre_requets: 5s } } }",
        "admin: { protect: [dashboard] }",
        "plugins: { blocked: [{ versions: '<1.0.0' }] }",
        "plugins: { plugins: [{ name: x, exec: { allow: [{ command: git, arg: [status] }] } }] }",
        "plugins: { plugins: [{ name: x, exec: { allow: [{ args: [status] }] } }] }",
        "plugins: { plugins: [{ name: x, exec: { allow: [''] } }] }",
        "plugins: { plugins: [{ name: x, exec: { limits: { memory_mb: 4 } } }] }",
        "plugins: { plugins: [{ name: x, exec: { limits: { processes: 0 } } }] }",
    ] {
        let value: serde_json::Value = serde_saphyr::from_str(bad).unwrap();
        assert!(!host_errors(&value).is_empty(), "the schema took {bad}");
        assert!(
            plugd_manifest::HostConfig::from_str(bad, plugd_manifest::Format::Yaml, None).is_err(),
            "the reader took {bad}"
        );
    }
}
