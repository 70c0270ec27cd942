//! `plugd reload`: ask a running server to hot-reload a plugin, or to apply its changed config.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use plugd::manifest::HostConfig;

/// `plugd reload NAME | --config [FILE]`.
#[derive(Debug, Args)]
pub struct ReloadCommand {
    /// The plugin to reload: its new version is read from its folder and swapped in without
    /// dropping a request; a failure rolls back.
    name: Option<String>,
    /// The server's host config. Without NAME: apply this file's changes to the running server
    /// (`plugd reload --config`). With NAME: only used to find the server and its token.
    #[arg(long, num_args = 0..=1, default_missing_value = "plugd.yaml", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The admin API's base URL (default: admin.listen of the config, else
    /// http://127.0.0.1:8081; server.listen when admin.listen is `shared`).
    #[arg(long)]
    server: Option<String>,
    /// The admin token (default: PLUGD_ADMIN_TOKEN, admin.token, or <data_dir>/admin-token).
    #[arg(long)]
    token: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

/// Run `plugd reload`.
pub fn run(command: ReloadCommand) -> anyhow::Result<()> {
    let config = match &command.config {
        Some(path) if path.exists() => Some(
            HostConfig::from_path(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        Some(path) if command.name.is_none() => {
            bail!("no host config at {}", path.display())
        }
        _ => None,
    };
    let client = super::admin::AdminClient::new(
        command.server.as_deref(),
        command.token.as_deref(),
        config.as_ref(),
    )?;
    let path = match (&command.name, &command.config) {
        (Some(name), _) => format!("/admin/plugins/{name}/reload"),
        (None, Some(_)) => "/admin/config/reload".to_string(),
        (None, None) => bail!("name a plugin to reload, or pass --config to apply the host config"),
    };
    let body = client.call(reqwest::Method::POST, &path)?;
    if command.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        match &command.name {
            Some(name) => println!(
                "reloaded {name}: {} -> {} in {:.0} ms ({} queued requests served)",
                body["from_version"].as_str().unwrap_or("?"),
                body["to_version"].as_str().unwrap_or("?"),
                body["duration_ms"].as_f64().unwrap_or(0.0),
                body["queued"].as_u64().unwrap_or(0)
            ),
            None => {
                let mut applied = Vec::new();
                for key in [
                    "loaded",
                    "unloaded",
                    "enabled",
                    "disabled",
                    "reloaded",
                    "reconfigured",
                ] {
                    if let Some(list) = body[key].as_array().filter(|l| !l.is_empty()) {
                        let names: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
                        applied.push(format!("{key}: {}", names.join(", ")));
                    }
                }
                if applied.is_empty() {
                    println!("config applied: nothing changed");
                } else {
                    println!("config applied: {}", applied.join("; "));
                }
                if let Some(list) = body["restart_required"]
                    .as_array()
                    .filter(|l| !l.is_empty())
                {
                    let names: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
                    println!("needs a restart to apply: {}", names.join(", "));
                }
            }
        }
    }
    Ok(())
}
