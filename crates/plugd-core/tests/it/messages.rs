//! Three messages of the contract, verbatim where an operator reads them: a plugin's last error
//! after a start that could not load it.

use plugd_core::{Host, Status};

use crate::{Journal, Recorder, config, manifest_with};

fn last_error(host: &Host, name: &str) -> String {
    let info = host.plugin_info(name).unwrap();
    assert_eq!(info.status, Status::Error);
    info.last_error.unwrap().message
}

#[tokio::test]
async fn a_missing_plugin_and_a_manifest_without_a_name_are_named_in_the_contracts_words() {
    let dir = tempfile::tempdir().unwrap();
    let nameless = dir.path().join("nameless");
    std::fs::create_dir(&nameless).unwrap();
    std::fs::write(
        nameless.join("plugin.yaml"),
        "version: 1.0.0\ndescription: d\nauthor: a\n",
    )
    .unwrap();
    let missing = dir.path().join("plugins/auth-plugin");
    let yaml = format!(
        "plugins:\n  plugins:\n    - {{ name: auth-plugin, path: '{}' }}\n    - {{ name: nameless, path: '{}' }}\n",
        missing.display(),
        nameless.display()
    );
    let host = Host::builder()
        .config(config(dir.path(), &yaml))
        .build()
        .unwrap();
    host.start().await.unwrap();
    assert_eq!(
        last_error(&host, "auth-plugin"),
        format!(
            "failed to load plugin: plugin file not found: {}",
            missing.display()
        )
    );
    assert_eq!(
        last_error(&host, "nameless"),
        format!(
            "{}: failed to parse manifest: missing required field: name",
            nameless.join("plugin.yaml").display()
        )
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_required_config_key_without_value_or_default_is_named_in_the_contracts_words() {
    let dir = tempfile::tempdir().unwrap();
    let j: Journal = Default::default();
    let host = Host::builder()
        .config(config(dir.path(), "plugins:\n  plugins: []\n"))
        .native(
            manifest_with(
                "auth-plugin",
                "router",
                "config:\n  jwt_secret: { type: string, required: true }\n",
            ),
            Recorder::new("auth-plugin", &j),
        )
        .build()
        .unwrap();
    let e = host.start().await.unwrap_err().to_string();
    assert!(
        e.ends_with(
            "config of plugin 'auth-plugin': Configuration key missing and no default value provided: 'jwt_secret'"
        ),
        "{e}"
    );
}
