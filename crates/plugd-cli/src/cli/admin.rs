//! The CLI side of the admin API: `plugd list`, `info`, `health`, `enable`, `disable`, `logs
//! --audit`, and the client `plugd reload` shares.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use plugd::manifest::HostConfig;
use serde_json::Value;

/// Where the running server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The server's host config: used to find its address and admin token.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The admin API's base URL (default: admin.listen of the config, else
    /// http://127.0.0.1:8081; server.listen when admin.listen is `shared`).
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// The admin token (default: PLUGD_ADMIN_TOKEN, admin.token, or <data_dir>/admin-token).
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A client of one server's admin API.
pub struct AdminClient {
    server: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    /// Find the server and its token as `plugd serve` with the same config would have them.
    pub fn new(
        server: Option<&str>,
        token: Option<&str>,
        config: Option<&HostConfig>,
    ) -> anyhow::Result<AdminClient> {
        let (server, token) = super::server_and_token(server, token, config);
        let token = token.context(
            "no admin token: pass --token, or set PLUGD_ADMIN_TOKEN or admin.token, or point --config at the server's config (its data_dir holds the generated token)",
        )?;
        Ok(AdminClient {
            server,
            token,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
        })
    }

    fn from_remote(r: &Remote) -> anyhow::Result<AdminClient> {
        let config = match &r.config {
            Some(path) => Some(
                HostConfig::from_path(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => None,
        };
        AdminClient::new(r.server.as_deref(), r.token.as_deref(), config.as_ref())
    }

    /// Send a request; a non-2xx answer is an error carrying the server's message.
    pub fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let (status, body) = self.send(method.clone(), path)?;
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or("(no message)");
            bail!("{method} {url}: the server answered {status}: {message}");
        }
        Ok(body)
    }

    /// POST `body` as JSON; a non-2xx answer is an error carrying the server's message.
    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .with_context(|| {
                format!("POST {url}: is a plugd server running at {}?", self.server)
            })?;
        let status = response.status();
        let answer: Value = response
            .json()
            .with_context(|| format!("POST {url}: the answer is not JSON"))?;
        if !status.is_success() {
            let message = answer["message"].as_str().unwrap_or("(no message)");
            bail!("POST {url}: the server answered {status}: {message}");
        }
        Ok(answer)
    }

    /// Send a request; the status and the JSON answer, whatever the status.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}{path}", self.server);
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .send()
            .with_context(|| {
                format!(
                    "{method} {url}: is a plugd server running at {}?",
                    self.server
                )
            })?;
        let status = response.status();
        let body: Value = response
            .json()
            .with_context(|| format!("{method} {url}: the answer is not JSON"))?;
        Ok((status, body))
    }
}

/// A command that ran to its end with a given exit status: `plugd health` exits 1 when the
/// server is degraded or not ready, 2 when it gives no answer. `main` exits with `code`.
#[derive(Debug)]
pub struct Exit {
    /// The process's exit status.
    pub code: u8,
    /// What it means, for stderr.
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// `plugd health`'s exit status when the server is degraded, not ready, or the plugin is not
/// healthy.
pub const EXIT_DEGRADED: u8 = 1;
/// `plugd health`'s exit status when the server gives no answer (unreachable, or it refused the
/// request: a wrong token, an unknown plugin).
pub const EXIT_NO_ANSWER: u8 = 2;

/// The admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the plugins of a running server: name, version, status, errors
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// One plugin of a running server: info, health, hooks, routes
    Info {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Health of a running server's plugins (one, or all as last polled), and its readiness
    ///
    /// Exit status: 0 when healthy (and, without NAME, ready: `GET /readyz`); 1 when degraded
    /// (a plugin failed, reports itself degraded or unhealthy, or is throttled), not ready, or
    /// NAME is not running or not healthy; 2 when the server gives no answer (it cannot be
    /// reached, or it refused the request: a wrong token, an unknown plugin).
    Health {
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a disabled, failed or given-up plugin of a running server again
    Enable {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop serving a plugin of a running server until it is enabled again
    Disable {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// A running server's logs kept for operators: the audit log of denied capability calls
    Logs {
        /// The audit log (denied capability calls); the only log kept by the server today.
        #[arg(long)]
        audit: bool,
        /// Only this plugin's entries.
        #[arg(long)]
        plugin: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Run an admin command.
pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let (remote, method, path) = match &command {
        AdminCommand::List { remote } => (remote, Method::GET, "/admin/plugins".to_string()),
        AdminCommand::Info { name, remote } => {
            (remote, Method::GET, format!("/admin/plugins/{name}"))
        }
        AdminCommand::Health {
            name: Some(n),
            remote,
        } => (remote, Method::GET, format!("/admin/plugins/{n}/health")),
        AdminCommand::Health { name: None, remote } => {
            (remote, Method::GET, "/admin/health".to_string())
        }
        AdminCommand::Enable { name, remote } => (
            remote,
            Method::POST,
            format!("/admin/plugins/{name}/enable"),
        ),
        AdminCommand::Disable { name, remote } => (
            remote,
            Method::POST,
            format!("/admin/plugins/{name}/disable"),
        ),
        AdminCommand::Logs {
            audit,
            plugin,
            remote,
        } => {
            if !audit {
                bail!(
                    "the server keeps the audit log (--audit); plugin logs go to the server's own output (PLUGD_LOG, --log-format json)"
                );
            }
            let query = plugin
                .as_ref()
                .map(|p| format!("?plugin={p}"))
                .unwrap_or_default();
            (remote, Method::GET, format!("/admin/audit{query}"))
        }
    };
    let client = AdminClient::from_remote(remote)?;
    if let AdminCommand::Health { name, .. } = &command {
        return health(&client, remote, name.as_deref(), &path);
    }
    let body = client.call(method, &path)?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    match &command {
        AdminCommand::List { .. } => {
            println!(
                "{:<20} {:<10} {:<12} {:>7}  LAST ERROR",
                "NAME", "VERSION", "STATUS", "ERRORS"
            );
            for p in body.as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<10} {:<12} {:>7}  {}",
                    text(&p["name"]),
                    text(&p["version"]),
                    text(&p["status"]),
                    text(&p["error_count"]),
                    p["last_error"]["message"].as_str().unwrap_or("")
                );
            }
        }
        AdminCommand::Info { .. } | AdminCommand::Enable { .. } | AdminCommand::Disable { .. } => {
            for key in [
                "name",
                "version",
                "kind",
                "status",
                "phase",
                "error_count",
                "permissions",
                "routes",
                "subscriptions",
                "exports",
            ] {
                println!("{key:<14} {}", text(&body[key]));
            }
            if let Some(e) = body["last_error"].as_object() {
                println!(
                    "{:<14} {} ({})",
                    "last_error",
                    text(&e["message"].clone()),
                    text(&e["at"].clone())
                );
            }
        }
        AdminCommand::Health { .. } => unreachable!("answered by health()"),
        AdminCommand::Logs { .. } => {
            for e in body.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<16} {:<10} {}",
                    text(&e["at"]),
                    text(&e["plugin"]),
                    text(&e["capability"]),
                    text(&e["detail"])
                );
            }
        }
    }
    Ok(())
}

/// `plugd health [NAME]`: print the health, then end with its exit status (see
/// [`AdminCommand::Health`]).
fn health(
    client: &AdminClient,
    remote: &Remote,
    name: Option<&str>,
    path: &str,
) -> anyhow::Result<()> {
    let no_answer = |e: anyhow::Error| Exit {
        code: EXIT_NO_ANSWER,
        message: format!("{e:#}"),
    };
    let body = client.call(reqwest::Method::GET, path).map_err(no_answer)?;
    let mut trouble = Vec::new();
    match name {
        Some(name) => {
            let reported = body["reported"]["state"].as_str();
            if body["status"] != "running" {
                trouble.push(format!("plugin '{name}' is {}", text(&body["status"])));
            } else if let Some(state @ ("degraded" | "unhealthy")) = reported {
                trouble.push(format!("plugin '{name}' reports itself {state}"));
            }
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                for key in ["status", "phase", "error_count", "reported", "checked_at"] {
                    println!("{key:<14} {}", text(&body[key]));
                }
            }
        }
        None => {
            if body["status"] != "ok" {
                trouble.push(format!("the server is {}", text(&body["status"])));
            }
            let (status, ready) = client
                .send(reqwest::Method::GET, "/readyz")
                .map_err(no_answer)?;
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let reasons: Vec<String> = ready["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                trouble.push(format!("not ready: {}", reasons.join("; ")));
            } else if !status.is_success() {
                return Err(no_answer(anyhow::anyhow!(
                    "GET /readyz: the server answered {status}"
                ))
                .into());
            }
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!("overall: {}", text(&body["status"]));
                println!("ready: {}", if status.is_success() { "yes" } else { "no" });
                if let Some(plugins) = body["plugins"].as_object() {
                    for (name, h) in plugins {
                        println!(
                            "{name:<20} {:<12} errors {}",
                            text(&h["status"]),
                            text(&h["error_count"])
                        );
                    }
                }
            }
        }
    }
    if trouble.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            code: EXIT_DEGRADED,
            message: trouble.join("; "),
        }
        .into())
    }
}
