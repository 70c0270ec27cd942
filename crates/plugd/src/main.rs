//! The `plugd` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use plugd_manifest::{HostConfig, Manifest};
use plugd_server::{AdminToken, TokenSource};

#[derive(Debug, Parser)]
#[command(
    name = "plugd",
    version,
    about = "A plugin host for Rust backends: sandboxed WebAssembly plugins on one lifecycle."
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the plugins of a host config and serve HTTP until Ctrl-C or SIGTERM.
    Serve {
        /// Host config (YAML, JSON or TOML). Without it, the embedded defaults (no plugins).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate a plugin manifest (a plugin directory or a manifest file): prints `ok` or the error.
    Validate {
        /// Plugin directory or manifest file.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Serve { config, listen } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(serve(config.as_deref(), listen))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLUGD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn validate(path: &Path) -> anyhow::Result<()> {
    Manifest::from_path(path)?;
    println!("ok");
    Ok(())
}

async fn serve(config: Option<&Path>, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = match config {
        Some(path) => HostConfig::from_path(path)?,
        None => HostConfig::default(),
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let listen = config.server.listen.clone();
    let admin = AdminToken::resolve(&config).map_err(anyhow::Error::msg)?;
    match admin.source() {
        TokenSource::Generated(path) => {
            tracing::info!(file = %path.display(), "admin token generated (set admin.token or PLUGD_ADMIN_TOKEN to choose one)")
        }
        TokenSource::Config => tracing::info!("admin token from admin.token"),
        TokenSource::Environment => tracing::info!("admin token from PLUGD_ADMIN_TOKEN"),
    }
    let host = plugd::host_from_config(config)?;
    host.start().await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "plugd listening");
    plugd_server::serve(host, admin, listener, shutdown_signal()).await?;
    tracing::info!("plugd stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down: stopping plugins in reverse start order");
}
