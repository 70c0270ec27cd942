//! The `plugd` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use plugd_manifest::{HostConfig, Manifest};
use plugd_server::{AdminToken, TokenSource};

mod cli;

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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaOf {
    /// A plugin's manifest (plugin.yaml).
    Manifest,
    /// The host config (plugd.yaml).
    Config,
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
        /// Listen address of the admin API and dashboard, overriding `admin.listen`
        /// (default 127.0.0.1:8081; `shared` serves them on the main listener).
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Validate a plugin manifest (a plugin directory or a manifest file): prints `ok` or the error.
    Validate {
        /// Plugin directory or manifest file.
        path: PathBuf,
    },
    /// Check a host config without running any plugin: the config, every enabled plugin's
    /// manifest, grants, config schema, framework version and dependencies. Prints the start
    /// order and the dependency graph.
    Check {
        /// Host config (YAML, JSON or TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print `{"start_order": [...], "dependency_graph": {...}}`.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin's command in a host started without the HTTP server, and print its output.
    Run {
        /// Host config (YAML, JSON or TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The plugin.
        plugin: String,
        /// The command.
        command: String,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the plugins found in a folder (each subfolder with a manifest): name, version, and
    /// whether the manifest is valid.
    Discover {
        /// The folder.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running server to hot-reload a plugin (`plugd reload NAME`) or to apply its changed
    /// host config (`plugd reload --config [FILE]`), through its admin API
    Reload(cli::reload::ReloadCommand),
    /// Move a fleet's plugin to a version one instance at a time, watching error rate and p99,
    /// rolling the whole fleet back when the new version is worse (`fleet.rollout`)
    Rollout(cli::rollout::RolloutCommand),
    #[command(flatten)]
    Admin(cli::admin::AdminCommand),
    /// Print a shell completion script: `plugd completions bash > /etc/bash_completion.d/plugd`
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Package(cli::pkg::PkgCommand),
    /// Create a plugin folder from a template: manifest, source, build script, README, tests.
    New(cli::author::NewArgs),
    /// Build a plugin folder: runs its build.sh (which installs its toolchain when missing).
    Build {
        /// The plugin folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin folder's tests.yaml through the test harness (no server).
    Test {
        /// The plugin folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Build it first.
        #[arg(long)]
        build: bool,
    },
    /// Wrap a core wasm module built against the contract (C bindings) into a component.
    Componentize {
        /// The core module.
        module: PathBuf,
        /// The component to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print a JSON Schema: of the plugin manifest (schemas/plugin.schema.json) or of the host
    /// config (schemas/plugd.schema.json).
    Schema {
        /// Which file's schema.
        #[arg(value_enum, default_value_t = SchemaOf::Manifest)]
        of: SchemaOf,
    },
    /// Write bindings of the plugin contract for a language that needs them generated (c).
    Bindings {
        /// The language: c.
        lang: String,
        /// The folder to write them into.
        #[arg(short, long, default_value = "bindings")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `plugd test` captures plugin logs through the harness's own subscriber.
    if !matches!(cli.command, Command::Test { .. }) {
        init_logging(cli.log_format);
    }
    let result = match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Check { config, json } => check(&config, json),
        Command::Run {
            config,
            plugin,
            command,
            args,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(run(&config, &plugin, &command, &args))),
        Command::Discover { dir, json } => discover(&dir, json),
        Command::Package(command) => cli::pkg::run(command),
        Command::Reload(command) => cli::reload::run(command),
        Command::Rollout(command) => cli::rollout::run(command),
        Command::Admin(command) => cli::admin::run(command),
        Command::New(args) => cli::author::new(&args).map(|dir| {
            println!("created {}", dir.display());
            println!("next: plugd build {0} && plugd test {0}", dir.display());
        }),
        Command::Build { dir } => cli::author::build(&dir),
        Command::Test { dir, build } => {
            if build && let Err(e) = cli::author::build(&dir) {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(cli::author::test(&dir)))
            {
                Ok((_, 0)) => Ok(()),
                Ok((_, failed)) => Err(anyhow::anyhow!("{failed} test(s) failed")),
                Err(e) => Err(e),
            }
        }
        Command::Schema { of } => {
            let schema = match of {
                SchemaOf::Manifest => plugd_manifest::manifest_json_schema(),
                SchemaOf::Config => plugd_manifest::host_config_json_schema(),
            };
            serde_json::to_string_pretty(&schema)
                .map(|text| println!("{text}"))
                .map_err(anyhow::Error::from)
        }
        Command::Componentize { module, output } => cli::author::componentize(&module, &output),
        Command::Bindings { lang, output } => match lang.as_str() {
            "c" => cli::author::c_bindings(&output),
            other => Err(anyhow::anyhow!(
                "no generated bindings for '{other}': only c needs them (Rust uses the guest SDK, js and python generate their own)"
            )),
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "plugd", &mut std::io::stdout());
            Ok(())
        }
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(serve(config.as_deref(), listen, admin_listen))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // `plugd health` chooses its status (1 degraded or not ready, 2 no answer).
            e.downcast_ref::<cli::admin::Exit>()
                .map_or(ExitCode::FAILURE, |exit| ExitCode::from(exit.code))
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

fn check(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = HostConfig::from_path(path)?;
    if let Some(tls) = &config.server.tls {
        plugd_server::check_tls(tls)?;
    }
    let report = plugd::check_config_with_packages(&config)?;
    // The engines of `backends`: each connected to and asked how it is.
    let engines = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(plugd::check_backends(&config));
    let unreachable: Vec<String> = engines
        .iter()
        .filter(|e| !e.ok)
        .map(|e| format!("backends.{} ({}): {}", e.engine, e.server, e.detail))
        .collect();
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["backends"] = serde_json::to_value(&engines)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        anyhow::ensure!(unreachable.is_empty(), "{}", unreachable.join("; "));
        return Ok(());
    }
    anyhow::ensure!(unreachable.is_empty(), "{}", unreachable.join("; "));
    println!("ok: {} plugin(s)", report.start_order.len());
    for e in &engines {
        println!("backend {}: {} {}", e.engine, e.server, e.detail);
    }
    println!("start order: {}", report.start_order.join(", "));
    println!("dependency graph:");
    for (name, deps) in &report.dependency_graph {
        if deps.is_empty() {
            println!("  {name}: (none)");
        } else {
            println!("  {name}: {}", deps.join(", "));
        }
    }
    println!("grants:");
    for name in &report.start_order {
        if let Some(g) = report.grants.get(name) {
            print_grants(name, g);
        }
    }
    Ok(())
}

/// One plugin's grants, as `plugd check` prints them: what it may do, for an operator to review.
fn print_grants(name: &str, g: &plugd::GrantReport) {
    let names =
        |ps: &[plugd::Permission]| ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
    let permissions = if g.permissions.is_empty() {
        "(no permissions)".to_string()
    } else {
        names(&g.permissions)
    };
    println!("  {name}: {permissions}");
    if !g.not_granted.is_empty() {
        println!("    declared, not granted: {}", names(&g.not_granted));
    }
    let hooks = if g.request_hooks.is_empty() {
        String::new()
    } else {
        let list: Vec<&str> = g.request_hooks.iter().map(|h| h.as_str()).collect();
        format!(" (declared hooks: {})", list.join(", "))
    };
    println!("    requests seen: {}{hooks}", g.requests.join(", "));
    if g.identity {
        println!("    sets the request identity (required roles trust it)");
    }
    if !g.hidden_headers.is_empty() {
        println!(
            "    headers hidden from it: {}",
            g.hidden_headers.join(", ")
        );
    }
    let policy = match g.failure_policy {
        plugd::manifest::FailurePolicy::FailOpen => "fail_open",
        plugd::manifest::FailurePolicy::FailClosed => "fail_closed",
    };
    println!("    when it cannot run: {policy}");
    if !g.network_allow.is_empty() {
        println!("    network.allow: {}", g.network_allow.join(", "));
    }
    if !g.exec_allow.is_empty() {
        println!("    exec.allow: {}", g.exec_allow.join("; "));
    }
}

async fn run(config: &Path, plugin: &str, command: &str, args: &[String]) -> anyhow::Result<()> {
    let config = HostConfig::from_path(config)?;
    let host = plugd::host_from_config(config)?;
    host.start().await?;
    let result = host.run_command(plugin, command, args).await;
    host.shutdown().await;
    let output = result?;
    print!("{output}");
    if !output.is_empty() && !output.ends_with('\n') {
        println!();
    }
    Ok(())
}

fn discover(dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for path in entries {
        if Manifest::FILE_NAMES.iter().all(|f| !path.join(f).exists()) {
            continue;
        }
        let item = match Manifest::from_path(&path) {
            Ok(m) => serde_json::json!({
                "name": m.name, "version": m.version.to_string(), "path": path, "valid": true, "error": null,
            }),
            Err(e) => serde_json::json!({
                "name": path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "version": null, "path": path, "valid": false, "error": e.to_string(),
            }),
        };
        found.push(item);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    for item in &found {
        let name = item["name"].as_str().unwrap_or("?");
        match item["error"].as_str() {
            None => println!(
                "{name:<24} {:<10} valid",
                item["version"].as_str().unwrap_or("")
            ),
            Some(e) => println!("{name:<24} {:<10} invalid: {e}", "-"),
        }
    }
    if found.is_empty() {
        println!("no plugins in {}", dir.display());
    }
    Ok(())
}

async fn serve(
    config: Option<&Path>,
    listen: Option<String>,
    admin_listen: Option<String>,
) -> anyhow::Result<()> {
    let mut config = match config {
        Some(path) => HostConfig::from_path(path)?,
        None => HostConfig::default(),
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let Some(listen) = admin_listen {
        config.admin.listen = Some(listen);
    }
    // A certificate or key that cannot be used stops the start before any plugin loads.
    if let Some(tls) = &config.server.tls {
        plugd_server::check_tls(tls)?;
    }
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listen = config.server.listen.clone();
    let admin_listen = config.admin.listen_addr();
    let admin = AdminToken::resolve(&config)?;
    match admin.source() {
        TokenSource::Generated(path) => {
            tracing::info!(file = %path.display(), "admin token generated (set admin.token or PLUGD_ADMIN_TOKEN to choose one)")
        }
        TokenSource::Config => tracing::info!("admin token from admin.token"),
        TokenSource::Environment => tracing::info!("admin token from PLUGD_ADMIN_TOKEN"),
    }
    let (host, connected) = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // On a terminal: a line per plugin while the start compiles and loads them.
        let total = config.plugins.plugins.iter().filter(|p| p.enabled).count();
        let runtime =
            plugd::wasm::WasmRuntime::new(plugd::wasm::RuntimeOptions::from_config(&config))?;
        let (loader, active) = cli::progress::Progress::new(runtime, total);
        let (builder, connected) = plugd::connect_backends(plugd::Host::builder(), &config).await?;
        let host = builder.config(config).loader(loader).build()?;
        let started = host.start().await;
        active.store(false, std::sync::atomic::Ordering::Relaxed);
        started?;
        (host, connected)
    } else {
        let (host, connected) = plugd::connect_host(config).await?;
        host.start().await?;
        (host, connected)
    };
    // A member of a fleet: the others see this instance, its changes reach them, theirs reach it.
    let fleet = if host.config().fleet.enabled {
        let client = connected
            .nats
            .clone()
            .context("fleet.enabled needs backends.nats")?;
        let fleet = plugd_fleet::Fleet::join(
            host.clone(),
            client,
            plugd_fleet::FleetOptions::from_config(host.config()),
        )
        .await?;
        tracing::info!(fleet = %fleet.name(), instance = %fleet.instance(), "in the fleet");
        Some(fleet)
    } else {
        None
    };
    let admin = match &fleet {
        Some(f) => admin.with_fleet(std::sync::Arc::new(f.clone())),
        None => admin,
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let admin_listener = match &admin_listen {
        Some(admin_listen) => {
            let l = tokio::net::TcpListener::bind(admin_listen)
                .await
                .with_context(|| format!("cannot listen on {admin_listen} for the admin API (admin.listen, default {}; choose another address with admin.listen or --admin-listen)", plugd::manifest::AdminConfig::DEFAULT_LISTEN))?;
            let admin_addr = l.local_addr()?;
            tracing::info!(%addr, %admin_addr, "plugd listening on {scheme}://{addr}; admin API and dashboard on {scheme}://{admin_addr}/admin/");
            Some(l)
        }
        None => {
            tracing::warn!(%addr, "plugd listening; admin API and dashboard on {scheme}://{addr}/admin/, the origin plugins answer on (admin.listen: shared): plugins' service workers are refused");
            None
        }
    };
    plugd_server::serve_with_admin(host, admin, listener, admin_listener, shutdown_signal())
        .await?;
    if let Some(fleet) = fleet {
        fleet.leave().await;
    }
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
