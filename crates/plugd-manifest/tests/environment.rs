//! The operator's environment in a host config: `${VAR}` in every string, `PLUGD_*` overrides.

use std::path::Path;

use plugd_manifest::{Environment, Format, HostConfig, HostConfigError};

fn read(yaml: &str, env: &[(&str, &str)]) -> Result<HostConfig, HostConfigError> {
    HostConfig::from_str_with_env(
        yaml,
        Format::Yaml,
        Some(Path::new("/etc/plugd/plugd.yaml")),
        &Environment::from_iter(env.iter().copied()),
    )
}

#[test]
fn the_admin_token_is_expanded_not_taken_literally() {
    let c = read(
        "admin:\n  token: ${ADMIN_TOKEN}\n",
        &[("ADMIN_TOKEN", "s3cret")],
    )
    .unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
}

#[test]
fn an_unset_variable_is_an_error_naming_the_key_and_the_variable() {
    let e = read("admin:\n  token: \"${ADMIN_TOKEN}\"\n", &[]).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("admin.token"), "{text}");
    assert!(text.contains("'ADMIN_TOKEN'"), "{text}");
    assert!(text.contains("not set"), "{text}");
    let e = read(
        "plugins:\n  plugins:\n    - name: a\n      hide_headers: [x-a, \"${HIDDEN}\"]\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("plugins.plugins[0].hide_headers[1]"),
        "{e}"
    );
}

#[test]
fn every_operator_string_is_expanded_and_a_double_dollar_is_literal() {
    let yaml = "server:\n  listen: \"${HOST}:${PORT}\"\n  max_connections: ${MAX}\ndata_dir: ${STATE}/plugd\nadmin:\n  token: \"$${NOT_A_VAR}\"\nplugins:\n  directory: \"${STATE}/plugins\"\n";
    let c = read(
        yaml,
        &[
            ("HOST", "0.0.0.0"),
            ("PORT", "9000"),
            ("MAX", "12"),
            ("STATE", "/var/lib"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:9000");
    assert_eq!(c.server.max_connections, 12, "read as a number");
    assert_eq!(c.data_dir, Path::new("/var/lib/plugd"));
    assert_eq!(c.plugins.directory, Path::new("/var/lib/plugins"));
    assert_eq!(c.admin.token.as_deref(), Some("${NOT_A_VAR}"));
}

#[test]
fn a_plugin_config_block_is_left_for_the_plugin_schema_to_expand() {
    // Expanded once, when the plugin loads (with its schema's types); expanding it here too would
    // turn `$${` into `${` and then expand it.
    let yaml = "plugins:\n  plugins:\n    - name: auth\n      config: { jwt_secret: \"${JWT_SECRET}\", note: \"$${x}\" }\n";
    let c = read(yaml, &[]).unwrap();
    let auth = c.plugin("auth").unwrap();
    assert_eq!(auth.config["jwt_secret"], "${JWT_SECRET}");
    assert_eq!(auth.config["note"], "$${x}");
}

#[test]
fn variables_override_keys_at_any_depth() {
    let c = read(
        "server:\n  listen: 127.0.0.1:8080\nplugins:\n  plugins:\n    - name: my-plugin\n      enabled: true\n",
        &[
            ("PLUGD_SERVER__LISTEN", "0.0.0.0:9000"),
            ("PLUGD_SERVER__ACCESS_LOG", "true"),
            ("PLUGD_PLUGINS__HOT_RELOAD", "true"),
            ("PLUGD_PLUGINS__RELOAD_DELAY", "2s"),
            ("PLUGD_ADMIN__TOKEN", "from-env"),
            ("PLUGD_ADMIN__PROTECT", "[metrics, healthz]"),
            ("PLUGD_DATA_DIR", "/srv/state"),
            ("PLUGD_PLUGINS__PLUGINS__MY_PLUGIN__ENABLED", "false"),
            ("PLUGD_PLUGINS__PLUGINS__0__PRIORITY", "security"),
            ("PLUGD_LOG", "debug"),
            ("PLUGD_ADMIN_TOKEN", "not-a-key"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:9000");
    assert!(c.server.access_log);
    assert!(c.plugins.hot_reload);
    assert_eq!(c.plugins.reload_delay, std::time::Duration::from_secs(2));
    assert_eq!(c.admin.token.as_deref(), Some("from-env"));
    assert_eq!(c.admin.protect.len(), 2);
    assert_eq!(c.data_dir, Path::new("/srv/state"));
    let entry = c.plugin("my-plugin").unwrap();
    assert!(!entry.enabled);
    assert_eq!(entry.priority, Some(plugd_manifest::Priority::SECURITY.0));
}

#[test]
fn the_environment_wins_over_the_file() {
    let c = read(
        "admin:\n  token: from-file\nserver:\n  max_connections: 5\n",
        &[
            ("PLUGD_ADMIN__TOKEN", "from-env"),
            ("PLUGD_SERVER__MAX_CONNECTIONS", "7"),
        ],
    )
    .unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("from-env"));
    assert_eq!(c.server.max_connections, 7);
}

#[test]
fn a_value_that_reads_as_a_number_stays_text_for_a_text_key() {
    let c = read("", &[("PLUGD_SERVER__LISTEN", "8080")]).unwrap();
    assert_eq!(c.server.listen, "8080");
    let c = read("admin:\n  listen: 9090\n", &[("PLUGD_DATA_DIR", "/x")]).unwrap();
    assert_eq!(c.admin.listen.as_deref(), Some("9090"));
}

#[test]
fn an_unknown_key_is_an_error_naming_the_variable() {
    let e = read("", &[("PLUGD_SERVER__LISTN", "0.0.0.0:80")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/plugd/plugd.yaml: environment variable PLUGD_SERVER__LISTN: unknown key 'listn' in server; did you mean 'listen'?"
    );
    let e = read("", &[("PLUGD_PLUGINS__PLUGINS__NOPE__ENABLED", "false")]).unwrap_err();
    assert!(
        e.to_string()
            .contains("PLUGD_PLUGINS__PLUGINS__NOPE__ENABLED"),
        "{e}"
    );
    assert!(e.to_string().contains("no entry named 'nope'"), "{e}");
    let e = read("", &[("PLUGD_SERVER__LISTEN__PORT", "1")]).unwrap_err();
    assert!(e.to_string().contains("PLUGD_SERVER__LISTEN__PORT"), "{e}");
}

#[test]
fn a_bad_value_is_an_error_naming_the_variable() {
    let e = read("", &[("PLUGD_SERVER__MAX_CONNECTIONS", "many")]).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("server.max_connections"), "{text}");
    assert!(
        text.contains("environment variable PLUGD_SERVER__MAX_CONNECTIONS"),
        "{text}"
    );
    let e = read("", &[("PLUGD_SERVER__MAX_CONNECTIONS", "0")]).unwrap_err();
    assert!(
        e.to_string()
            .contains("environment variable PLUGD_SERVER__MAX_CONNECTIONS"),
        "{e}"
    );
}

#[test]
fn without_the_environment_errors_keep_their_position() {
    let e = read("server:\n  listn: x\n", &[("UNRELATED", "1")]).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn json_and_toml_are_expanded_too() {
    let env = Environment::from_iter([("TOKEN", "t")]);
    for (text, format) in [
        (r#"{"admin": {"token": "${TOKEN}"}}"#, Format::Json),
        ("[admin]\ntoken = \"${TOKEN}\"\n", Format::Toml),
    ] {
        let c = HostConfig::from_str_with_env(text, format, None, &env).unwrap();
        assert_eq!(c.admin.token.as_deref(), Some("t"), "{format}");
    }
}
