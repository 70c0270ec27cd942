//! The package commands: pack, keygen, sign, verify, catalog build, search, install, update,
//! rollback, uninstall. Results go to stdout, progress to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use plugd_manifest::{HostConfig, PluginsConfig};
use plugd_pkg::{
    CatalogSource, CatalogVersion, Index, InstallSource, Package, PluginsDir, Request, SigningKey,
    Trust, UnpackLimits, fetch::human, sha256_hex,
};

/// The package commands, flattened into `plugd`'s own.
#[derive(Debug, Subcommand)]
pub enum PkgCommand {
    /// Pack a plugin folder (manifest, component, assets/, migrations/) into
    /// `<name>-<version>.plugd`, with a SHA-256 of every file inside. The same folder always
    /// gives the same bytes.
    Pack(PackArgs),
    /// Make an ed25519 key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Keygen(KeygenArgs),
    /// Sign a package with a secret key. The signature goes inside the package (its SIGNATURE
    /// entry); the package digest it covers does not change.
    Sign(SignArgs),
    /// Check a package: every file against its digest, and the signature against the trusted
    /// keys. Exits 0 only when all hold.
    Verify(VerifyArgs),
    /// Catalogs: folders (or their HTTPS URLs) of packages with an index.json.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Search a catalog by name and description.
    Search(SearchArgs),
    /// Install a package file, or NAME[@REQ] from a catalog, with the dependencies it needs.
    Install(InstallArgs),
    /// Install newer compatible versions from a catalog, then ask a running server to reload
    /// them.
    Update(UpdateArgs),
    /// Return a plugin to the version installed before the current one (kept on disk), then
    /// ask a running server to reload it.
    Rollback(RollbackArgs),
    /// Remove an installed plugin and its kept versions (refused while another installed plugin
    /// depends on it).
    Uninstall(UninstallArgs),
}

/// `plugd catalog …`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write DIR/index.json listing every *.plugd in DIR (each is checked in full).
    Build {
        /// The folder of packages.
        dir: PathBuf,
    },
}

/// `plugd pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The plugin folder.
    dir: PathBuf,
    /// The package file (or a folder to write `<name>-<version>.plugd` into); default:
    /// `<name>-<version>.plugd` in the current folder.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// `plugd keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key name (a path without extension): writes NAME.key and NAME.pub.
    name: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

/// `plugd sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The package.
    package: PathBuf,
    /// The secret key (NAME.key).
    #[arg(long)]
    key: PathBuf,
}

/// `plugd verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The package.
    package: PathBuf,
    /// A trusted public key (NAME.pub); repeat for several.
    #[arg(long = "trusted-key", required = true)]
    trusted_keys: Vec<PathBuf>,
}

/// `plugd search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Part of a name or description (empty: everything).
    #[arg(default_value = "")]
    term: String,
    /// The catalog: a folder or an HTTPS URL (plain http only on loopback, or with
    /// --allow-http).
    #[arg(long)]
    catalog: String,
    /// Accept a plain http:// catalog on a host that is not loopback. Anyone on the network
    /// path can then change what is installed; signatures by plugins.trusted_keys still hold.
    #[arg(long)]
    allow_http: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Where plugins are installed and which packages are accepted.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The plugins folder (default: `plugins.directory` of --config, else ./plugins).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Host config: its plugins.directory, require_signatures, trusted_keys and blocked apply
    /// (trusted_keys require signatures unless require_signatures: false is written).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A trusted public key (repeatable). Given any, packages must be signed by one of them.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
}

/// Which running server to ask for a reload.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The admin API's base URL (default: admin.listen of --config, else
    /// http://127.0.0.1:8081; server.listen when admin.listen is `shared`).
    #[arg(long)]
    server: Option<String>,
    /// The admin token (default: PLUGD_ADMIN_TOKEN, admin.token of --config, or
    /// <data_dir>/admin-token).
    #[arg(long)]
    token: Option<String>,
    /// Do not ask a running server to reload.
    #[arg(long)]
    no_reload: bool,
}

/// `plugd install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A package file (`….plugd`), or NAME[@REQ] from --catalog (`hello`, `hello@^1.2`,
    /// `hello@=1.0.0`).
    target: String,
    /// The catalog (a folder or an HTTPS URL; plain http only on loopback, or with
    /// --allow-http) for NAME[@REQ] and for dependencies.
    #[arg(long)]
    catalog: Option<String>,
    /// Accept a plain http:// catalog on a host that is not loopback (see `plugd search`).
    #[arg(long)]
    allow_http: bool,
    #[command(flatten)]
    target_args: TargetArgs,
}

/// `plugd update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The plugin to update (default: every installed plugin).
    name: Option<String>,
    /// The catalog (a folder or an HTTPS URL; plain http only on loopback, or with
    /// --allow-http).
    #[arg(long)]
    catalog: String,
    /// Accept a plain http:// catalog on a host that is not loopback (see `plugd search`).
    #[arg(long)]
    allow_http: bool,
    #[command(flatten)]
    target_args: TargetArgs,
    #[command(flatten)]
    reload: ReloadArgs,
}

/// `plugd rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The plugin.
    name: String,
    #[command(flatten)]
    target_args: TargetArgs,
    #[command(flatten)]
    reload: ReloadArgs,
}

/// `plugd uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The plugin.
    name: String,
    #[command(flatten)]
    target_args: TargetArgs,
}

/// Run a package command.
pub fn run(command: PkgCommand) -> anyhow::Result<()> {
    match command {
        PkgCommand::Pack(a) => pack(a),
        PkgCommand::Keygen(a) => keygen(a),
        PkgCommand::Sign(a) => sign(a),
        PkgCommand::Verify(a) => verify(a),
        PkgCommand::Catalog {
            command: CatalogCommand::Build { dir },
        } => catalog_build(&dir),
        PkgCommand::Search(a) => search(a),
        PkgCommand::Install(a) => install(a),
        PkgCommand::Update(a) => update(a),
        PkgCommand::Rollback(a) => rollback(a),
        PkgCommand::Uninstall(a) => uninstall(a),
    }
}

fn progress(line: &str) {
    eprintln!("{line}");
}

/// Write a file through a temporary beside it and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn pack(a: PackArgs) -> anyhow::Result<()> {
    let package = Package::from_dir(&a.dir).with_context(|| format!("{}", a.dir.display()))?;
    let name = package.file_name();
    let out = match a.output {
        Some(p) if p.is_dir() => p.join(&name),
        Some(p) => p,
        None => PathBuf::from(&name),
    };
    let bytes = package.to_bytes()?;
    write_atomic(&out, &bytes)?;
    let m = package.manifest();
    println!(
        "packed {} {} into {} ({} files, {}, digest {})",
        m.name,
        m.version,
        out.display(),
        package.sums().len(),
        human(bytes.len() as u64),
        package.digest()
    );
    Ok(())
}

fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    let secret = path_with_extension(&a.name, "key");
    let public = path_with_extension(&a.name, "pub");
    if !a.force {
        for p in [&secret, &public] {
            if p.exists() {
                bail!("{} exists; pass --force to replace it", p.display());
            }
        }
    }
    let key = SigningKey::generate()?;
    let comment = a
        .name
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_secret(&secret, &key.to_text())?;
    write_atomic(&public, key.public().to_text(&comment).as_bytes())?;
    println!(
        "wrote {} (secret, keep it private) and {} (public); key id {}",
        secret.display(),
        public.display(),
        key.public().key_id()
    );
    Ok(())
}

fn path_with_extension(name: &Path, ext: &str) -> PathBuf {
    let mut s = name.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Write a secret key with mode 0600 from the start.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_package(path: &Path) -> anyhow::Result<(Package, Vec<u8>)> {
    let limits = UnpackLimits::default();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let package = Package::read(&bytes, &limits).with_context(|| format!("{}", path.display()))?;
    Ok((package, bytes))
}

fn sign(a: SignArgs) -> anyhow::Result<()> {
    let key = SigningKey::read(&a.key)?;
    let (mut package, _) = read_package(&a.package)?;
    package.sign(&key);
    write_atomic(&a.package, &package.to_bytes()?)?;
    println!(
        "signed {} with key {} (digest {}; the signature is inside the package)",
        a.package.display(),
        key.public().key_id(),
        package.digest()
    );
    Ok(())
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let trust = Trust::from_files(true, a.trusted_keys.iter().map(PathBuf::as_path))?;
    let (package, _) = read_package(&a.package)?;
    let m = package.manifest();
    let what = format!("{} {}", m.name, m.version);
    let state = trust
        .check(&what, &package.digest(), package.signature())
        .with_context(|| format!("{}", a.package.display()))?;
    println!(
        "ok: {what}: {} files match their digests (package digest {}); {state}",
        package.sums().len(),
        package.digest()
    );
    Ok(())
}

fn catalog_build(dir: &Path) -> anyhow::Result<()> {
    let index = Index::build(dir, progress)?;
    let path = index.write(dir)?;
    let packages: usize = index.plugins.iter().map(|p| p.versions.len()).sum();
    println!(
        "wrote {}: {} plugin(s), {packages} package(s)",
        path.display(),
        index.plugins.len()
    );
    Ok(())
}

fn search(a: SearchArgs) -> anyhow::Result<()> {
    let source = CatalogSource::parse(&a.catalog, a.allow_http)?;
    let index = source.index()?;
    let found = index.search(&a.term);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    if found.is_empty() {
        println!("no plugin in {} matches '{}'", a.catalog, a.term);
    }
    for p in found {
        let newest = p
            .versions
            .first()
            .map(|v| v.version.to_string())
            .unwrap_or_default();
        let signed = if p.versions.first().is_some_and(|v| v.signature.is_some()) {
            "signed"
        } else {
            "unsigned"
        };
        println!(
            "{:<24} {:<10} {:<8} {}",
            p.name, newest, signed, p.description
        );
    }
    Ok(())
}

/// What `--config`, `--plugins-dir` and `--trusted-key` amount to.
struct Settings {
    config: Option<HostConfig>,
    plugins_dir: PluginsDir,
    /// The host config's `plugins` with `--trusted-key`s added (which then require signatures):
    /// what the load-time check and rollback apply.
    plugins: PluginsConfig,
    trust: Trust,
}

fn settings(t: &TargetArgs) -> anyhow::Result<Settings> {
    let config = t.config.as_deref().map(HostConfig::from_path).transpose()?;
    let mut plugins = config
        .as_ref()
        .map(|c| c.plugins.clone())
        .unwrap_or_default();
    let dir = t
        .plugins_dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.plugins.directory.clone()))
        .unwrap_or_else(|| PathBuf::from("plugins"));
    if !t.trusted_keys.is_empty() {
        plugins.require_signatures = true;
        plugins.trusted_keys.extend(t.trusted_keys.iter().cloned());
    }
    let trust = Trust::from_files(
        plugins.require_signatures,
        plugins.trusted_keys.iter().map(PathBuf::as_path),
    )?;
    Ok(Settings {
        config,
        plugins_dir: PluginsDir::new(dir),
        plugins,
        trust,
    })
}

fn framework() -> anyhow::Result<semver::Version> {
    // plugd-core's FRAMEWORK_VERSION: every crate of the workspace shares one version.
    semver::Version::parse(env!("CARGO_PKG_VERSION")).context("plugd's own version")
}

/// A package fetched (or read) and checked, ready to install.
struct Ready {
    package: Package,
    source: InstallSource,
    replaces: Option<semver::Version>,
}

/// Check a package against what was expected of it and the install policy: the catalog entry
/// (name, version, digest), the blocklist, the framework requirement, the signature.
fn check_ready(
    s: &Settings,
    package: Package,
    bytes: &[u8],
    expected: &CatalogVersion,
    origin: String,
    replaces: Option<semver::Version>,
) -> anyhow::Result<Ready> {
    let m = package.manifest();
    let what = format!("{} {}", m.name, m.version);
    if m.version != expected.version || package.digest() != expected.digest {
        bail!(
            "{origin}: the package is {what} with digest {}, but the catalog lists {} with digest {}",
            package.digest(),
            expected.version,
            expected.digest
        );
    }
    plugd_pkg::check_blocked(&s.plugins, &m.name, &m.version)?;
    let ours = framework()?;
    if let Some(req) = &m.framework
        && !req.matches(&ours)
    {
        bail!("{what} requires plugd (framework) {req}, this is plugd {ours}");
    }
    let state = s
        .trust
        .check(&what, &package.digest(), package.signature())?;
    if state == plugd_pkg::SignatureState::Unsigned && !s.trust.keys.is_empty() {
        eprintln!(
            "warning: {what} is not signed; it installs because plugins.require_signatures is false"
        );
    }
    Ok(Ready {
        source: InstallSource {
            package_sha256: sha256_hex(bytes),
            source: origin,
            signature_state: state,
        },
        package,
        replaces,
    })
}

/// Fetch and check every package of a plan, then install them in order (dependencies first).
/// Nothing is installed unless every package checks out.
fn apply(
    s: &Settings,
    plan: &plugd_pkg::Plan,
    catalog: Option<&CatalogSource>,
    local: Option<(&str, &Package, &[u8], String)>,
) -> anyhow::Result<Vec<(String, semver::Version, Option<semver::Version>)>> {
    let limits = UnpackLimits::default();
    let mut ready = Vec::new();
    for step in &plan.install {
        let r = match local {
            Some((name, package, bytes, ref origin)) if name == step.name => check_ready(
                s,
                package.clone(),
                bytes,
                &step.package,
                origin.clone(),
                step.replaces.clone(),
            )?,
            _ => {
                let catalog = catalog.ok_or_else(|| anyhow!("no catalog for '{}'", step.name))?;
                let origin = catalog.locate(&step.package.file);
                progress(&format!(
                    "fetching {} {} ({})",
                    step.name,
                    step.package.version,
                    human(step.package.size)
                ));
                let bytes =
                    catalog.fetch(&step.package, limits.max_package_size, &mut |l| progress(l))?;
                let package = Package::read(&bytes, &limits).with_context(|| origin.clone())?;
                check_ready(
                    s,
                    package,
                    &bytes,
                    &step.package,
                    origin,
                    step.replaces.clone(),
                )?
            }
        };
        ready.push(r);
    }
    let mut done = Vec::new();
    for r in ready {
        let m = r.package.manifest();
        let installed = s.plugins_dir.install(&r.package, &r.source)?;
        let was = match &installed.replaced {
            Some(v) => format!("; replaced {v}, kept for rollback"),
            None => String::new(),
        };
        println!(
            "installed {} {} into {} ({}){was}",
            m.name,
            m.version,
            installed.dir.display(),
            r.source.signature_state
        );
        done.push((m.name.clone(), m.version.clone(), r.replaces));
    }
    for (name, version) in &plan.kept {
        println!("kept {name} {version} (installed, satisfies the requirements)");
    }
    for skipped in &plan.skipped_optional {
        println!("skipped optional dependency {skipped}");
    }
    Ok(done)
}

fn installed_for_resolver(s: &Settings) -> anyhow::Result<Vec<plugd_pkg::InstalledPlugin>> {
    Ok(s.plugins_dir
        .list()?
        .iter()
        .map(|e| e.for_resolver())
        .collect())
}

fn install(a: InstallArgs) -> anyhow::Result<()> {
    let s = settings(&a.target_args)?;
    let catalog = a
        .catalog
        .as_deref()
        .map(|c| CatalogSource::parse(c, a.allow_http))
        .transpose()?;
    let index = catalog.as_ref().map(CatalogSource::index).transpose()?;
    let installed = installed_for_resolver(&s)?;
    let ours = framework()?;
    let ctx = plugd_pkg::Context {
        framework: &ours,
        plugins: &s.plugins,
        installed: &installed,
    };
    let path = Path::new(&a.target);
    if path.is_file() || a.target.ends_with(".plugd") {
        let (package, bytes) = read_package(path)?;
        let name = package.manifest().name.clone();
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entry = CatalogVersion::of(&package, file, &bytes);
        let plan = plugd_pkg::resolve(
            index.as_ref(),
            &[Request::Package(Box::new(entry), name.clone())],
            &ctx,
        )?;
        let origin = path.display().to_string();
        apply(
            &s,
            &plan,
            catalog.as_ref(),
            Some((&name, &package, &bytes, origin)),
        )?;
        return Ok(());
    }
    let (name, req) = match a.target.split_once('@') {
        Some((n, r)) => (
            n.to_string(),
            semver::VersionReq::parse(r)
                .with_context(|| format!("'{r}' is not a version requirement (such as ^1.2)"))?,
        ),
        None => (a.target.clone(), semver::VersionReq::STAR),
    };
    if !plugd_manifest::is_valid_plugin_name(&name) {
        bail!(
            "'{}' is neither a package file nor a plugin name (NAME or NAME@REQ)",
            a.target
        );
    }
    if index.is_none() {
        bail!("installing '{name}' by name needs a catalog: pass --catalog DIR|URL");
    }
    let plan = plugd_pkg::resolve(
        index.as_ref(),
        &[Request::Catalog {
            name: name.clone(),
            req,
            upgrade: false,
        }],
        &ctx,
    )?;
    if plan.install.is_empty() {
        if let Some((_, v)) = plan.kept.iter().find(|(n, _)| *n == name) {
            println!("{name} {v} is already installed (use `plugd update {name}` for a newer one)");
        }
        return Ok(());
    }
    apply(&s, &plan, catalog.as_ref(), None)?;
    Ok(())
}

fn update(a: UpdateArgs) -> anyhow::Result<()> {
    let s = settings(&a.target_args)?;
    let catalog = CatalogSource::parse(&a.catalog, a.allow_http)?;
    let index = catalog.index()?;
    let ours = framework()?;
    let all = s.plugins_dir.list()?;
    let targets: Vec<&plugd_pkg::InstalledEntry> = match &a.name {
        Some(name) => {
            let found: Vec<_> = all.iter().filter(|e| &e.name == name).collect();
            if found.is_empty() {
                bail!(
                    "'{name}' is not installed in {}",
                    s.plugins_dir.root().display()
                );
            }
            found
        }
        None => all.iter().collect(),
    };
    let mut updated = Vec::new();
    let mut failures = Vec::new();
    for target in targets {
        let newer = index
            .plugin(&target.name)
            .is_some_and(|p| p.versions.iter().any(|v| v.version > target.version));
        if !newer {
            println!("{} {} is up to date", target.name, target.version);
            continue;
        }
        // Each plugin against what is installed now (earlier updates included).
        let installed = installed_for_resolver(&s)?;
        let ctx = plugd_pkg::Context {
            framework: &ours,
            plugins: &s.plugins,
            installed: &installed,
        };
        let request = Request::Catalog {
            name: target.name.clone(),
            req: semver::VersionReq::STAR,
            upgrade: true,
        };
        let result = plugd_pkg::resolve(Some(&index), &[request], &ctx)
            .map_err(anyhow::Error::from)
            .and_then(|plan| apply(&s, &plan, Some(&catalog), None));
        match result {
            Ok(done) => updated.extend(done),
            Err(e) => {
                println!(
                    "{} {}: newer versions are in the catalog, but none can be installed: {e:#}",
                    target.name, target.version
                );
                failures.push(target.name.clone());
            }
        }
    }
    let reload_failed = if a.reload.no_reload {
        false
    } else {
        let replaced: Vec<(String, semver::Version)> = updated
            .iter()
            .filter(|(_, _, replaced)| replaced.is_some())
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect();
        reload_all(&s, &a.reload, &replaced)
    };
    if a.name.is_some() && !failures.is_empty() {
        bail!("{} was not updated", failures.join(", "));
    }
    if reload_failed {
        bail!(
            "the new versions are installed on disk, but the running server did not reload them (see above)"
        );
    }
    Ok(())
}

fn rollback(a: RollbackArgs) -> anyhow::Result<()> {
    let s = settings(&a.target_args)?;
    let (from, to) = s.plugins_dir.rollback(&a.name, &s.plugins)?;
    println!(
        "rolled back {} from {from} to {to} ({from} is kept for a later rollback)",
        a.name
    );
    if !a.reload.no_reload && reload_all(&s, &a.reload, &[(a.name.clone(), to)]) {
        bail!(
            "{} is back on disk, but the running server did not reload it (see above)",
            a.name
        );
    }
    Ok(())
}

fn uninstall(a: UninstallArgs) -> anyhow::Result<()> {
    let s = settings(&a.target_args)?;
    let version = s.plugins_dir.uninstall(&a.name)?;
    println!(
        "uninstalled {} {version} from {} (a running server keeps it until it is unloaded: DELETE /admin/plugins/{})",
        a.name,
        s.plugins_dir.root().display(),
        a.name
    );
    Ok(())
}

/// The running server's base URL and admin token, as `plugd serve` with the same config would
/// have them.
fn server_and_token(s: &Settings, r: &ReloadArgs) -> (String, Option<String>) {
    super::server_and_token(r.server.as_deref(), r.token.as_deref(), s.config.as_ref())
}

/// Ask the running server to reload each plugin (`POST /admin/plugins/{name}/reload`) and say
/// what it answered. Returns whether a reachable server refused or failed a reload.
fn reload_all(s: &Settings, r: &ReloadArgs, plugins: &[(String, semver::Version)]) -> bool {
    if plugins.is_empty() {
        return false;
    }
    let (server, token) = server_and_token(s, r);
    let Some(token) = token else {
        for (name, version) in plugins {
            println!(
                "not reloading {name}: no admin token (--token, PLUGD_ADMIN_TOKEN, admin.token or <data_dir>/admin-token); {name} {version} is installed on disk and runs after the next reload or restart"
            );
        }
        return false;
    };
    let client = match plugd_pkg::fetch::client() {
        Ok(c) => c,
        Err(e) => {
            println!("not reloading: {e}");
            return true;
        }
    };
    let mut failed = false;
    for (name, version) in plugins {
        let url = format!("{server}/admin/plugins/{name}/reload");
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(120))
            .send();
        match response {
            Err(e) if e.is_connect() => {
                println!(
                    "no plugd server reachable at {server} ({}); {name} {version} is installed on disk and runs when a server starts or reloads it",
                    plugd_pkg::fetch::error_chain(&e)
                );
            }
            Err(e) => {
                println!(
                    "reload of {name} failed: POST {url}: {}; {name} {version} is installed on disk",
                    plugd_pkg::fetch::error_chain(&e)
                );
                failed = true;
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .or_else(|| v.get("error"))
                            .and_then(|m| m.as_str().map(str::to_string))
                    })
                    .unwrap_or_else(|| body.trim().to_string());
                if status.is_success() {
                    println!("reloaded {name} {version} in the running server at {server}");
                } else {
                    let hint = if status == reqwest::StatusCode::NOT_FOUND
                        || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
                    {
                        " (this server may not offer hot reload, or does not run the plugin)"
                    } else if status == reqwest::StatusCode::UNAUTHORIZED {
                        " (wrong admin token?)"
                    } else {
                        ""
                    };
                    println!(
                        "reload of {name} refused: the server at {server} answered {status} to POST /admin/plugins/{name}/reload{hint}: {message}; {name} {version} is installed on disk and runs after the next reload or restart"
                    );
                    failed = true;
                }
            }
        }
    }
    failed
}
