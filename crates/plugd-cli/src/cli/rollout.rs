//! `plugd rollout NAME --to VERSION`: move the fleet's plugin to a version one instance at a
//! time through a running server's admin API, printing each step; exit 0 when the fleet runs
//! the new version, 1 when it rolled back (or could not go back).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use plugd::manifest::HostConfig;
use serde_json::{Value, json};

/// `plugd rollout NAME --to VERSION`.
#[derive(Debug, Args)]
pub struct RolloutCommand {
    /// The plugin.
    name: String,
    /// The version to move the fleet to: installed or kept in the plugins folder of the server
    /// asked (`plugd install <package>` puts it there), or already in the fleet's
    /// package store.
    #[arg(long = "to", value_name = "VERSION")]
    to: String,
    /// The host config of the server to ask (finds its admin API and token).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The admin API's base URL (default: admin.listen of the config, else
    /// http://127.0.0.1:8081).
    #[arg(long)]
    server: Option<String>,
    /// The admin token (default: PLUGD_ADMIN_TOKEN, admin.token, or <data_dir>/admin-token).
    #[arg(long)]
    token: Option<String>,
}

/// Run `plugd rollout`.
pub fn run(command: RolloutCommand) -> anyhow::Result<()> {
    let config = match &command.config {
        Some(path) => Some(
            HostConfig::from_path(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    let client = super::admin::AdminClient::new(
        command.server.as_deref(),
        command.token.as_deref(),
        config.as_ref(),
    )?;
    let started = client.post_json(
        "/admin/fleet/rollouts",
        &json!({ "plugin": command.name, "version": command.to }),
    )?;
    let id = started["id"]
        .as_u64()
        .context("the server's answer has no rollout id")?;
    println!(
        "rollout {id}: {} {} -> {} on {}",
        command.name,
        started["from"].as_str().unwrap_or("?"),
        command.to,
        started["instances"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    let mut shown = 0;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = client.call(reqwest::Method::GET, &format!("/admin/fleet/rollouts/{id}"))?;
        let steps = now["steps"].as_array().cloned().unwrap_or_default();
        for s in steps.iter().skip(shown) {
            println!(
                "  {} {:<8} {:<9} {}",
                if s["ok"].as_bool() == Some(true) {
                    "ok  "
                } else {
                    "FAIL"
                },
                s["instance"].as_str().unwrap_or("?"),
                s["action"].as_str().unwrap_or("?"),
                s["detail"].as_str().unwrap_or("")
            );
        }
        shown = steps.len();
        match now["state"].as_str() {
            Some("running") => continue,
            Some("completed") => {
                println!(
                    "completed: every instance runs {} {}",
                    command.name, command.to
                );
                return Ok(());
            }
            Some(state) => {
                return Err(super::admin::Exit {
                    code: 1,
                    message: format!(
                        "{}: {}",
                        state.replace('_', " "),
                        now["reason"].as_str().unwrap_or("(no reason given)")
                    ),
                }
                .into());
            }
            None => anyhow::bail!("the server's answer has no state: {now}"),
        }
    }
}
