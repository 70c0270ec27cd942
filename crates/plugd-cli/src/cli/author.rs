//! Plugin authoring: `plugd new`, `plugd build`, `plugd test`, `plugd componentize`,
//! `plugd bindings` and `plugd schema`.
//!
//! Templates live in the repository's `templates/<lang>/` and are embedded into the binary; a
//! template file is rendered with a small mustache subset: `{{name}}`-style variables, and
//! `{{#flag}}` … `{{/flag}}` / `{{^flag}}` … `{{/flag}}` blocks on lines of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use plugd_manifest::{HookType, Manifest, is_valid_plugin_name};

/// The current contract, `plugd:plugin@0.2.0`: what the Rust template's SDK builds against.
pub const CONTRACT_WIT: &str = include_str!("../../../../wit/plugin.wit");

/// Contract `plugd:plugin@0.1.0`, which the JavaScript, Python and C templates still build
/// against: plugd loads it through its shim (docs/authors/contract-versions.md).
pub const CONTRACT_WIT_0_1: &str = include_str!("../../../../wit/0.1.0/plugin.wit");

/// The manifest's JSON Schema, written into every new plugin folder for editors.
pub const MANIFEST_SCHEMA: &str = include_str!("../../../../schemas/plugin.schema.json");

/// Where the Rust guest SDK of this source tree is (used when it exists on this machine).
const SDK_IN_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/rust");

/// componentize-js version the JavaScript template pins.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// componentize-py version the Python template pins.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The languages `plugd new` has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the guest SDK (plugd-guest), built for wasm32-wasip2.
    Rust,
    /// JavaScript, built with componentize-js (npm).
    Js,
    /// Python, built with componentize-py (pip).
    Python,
    /// C, built with clang and wasi-libc; bindings from wit-bindgen's C generator.
    C,
}

impl Lang {
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => RUST,
            Lang::Js => JS,
            Lang::Python => PYTHON,
            Lang::C => C,
        }
    }

    /// The contract its template builds against, written into the plugin's `wit/plugin.wit`.
    fn contract_wit(self) -> &'static str {
        match self {
            Lang::Rust => CONTRACT_WIT,
            Lang::Js | Lang::Python | Lang::C => CONTRACT_WIT_0_1,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }
}

macro_rules! template {
    ($lang:literal, [$($file:literal),* $(,)?]) => {
        &[$(($file, include_str!(concat!("../../../../templates/", $lang, "/", $file)))),*]
    };
}

const COMMON: &[(&str, &str)] = template!(
    "common",
    ["plugin.yaml", "tests.yaml", "README.md", "gitignore"]
);
const RUST: &[(&str, &str)] = template!(
    "rust",
    ["Cargo.toml", "src/lib.rs", "build.sh", "cargo-config.toml"]
);
const JS: &[(&str, &str)] = template!("js", ["plugin.js", "build.sh"]);
const PYTHON: &[(&str, &str)] = template!("python", ["app.py", "build.sh"]);
const C: &[(&str, &str)] = template!("c", ["plugin.c", "build.sh"]);

/// Where a template file goes in the plugin folder (a few names cannot be stored as such).
fn destination(file: &str) -> &str {
    match file {
        "gitignore" => ".gitignore",
        "cargo-config.toml" => ".cargo/config.toml",
        other => other,
    }
}

/// `plugd new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name (`[a-z0-9][a-z0-9_-]*`); also the folder created.
    pub name: String,
    /// The language.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Hooks to declare and implement, comma-separated: pre_request, post_request,
    /// pre_response, post_response, error, startup, shutdown.
    #[arg(long, value_delimiter = ',')]
    pub hooks: Vec<String>,
    /// Register a route (`GET /plugins/<name>/hello`). On by default when no hook is asked for.
    #[arg(long)]
    pub route: bool,
    /// The folder to create (default: ./<name>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust: the guest SDK folder (sdk/rust of a plugd checkout) to depend on by path.
    /// Default: $PLUGD_GUEST_SDK, else the SDK of the source tree plugd was built from, when it
    /// is on this machine, else the published `plugd-guest` version.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// Create a plugin folder from a template.
pub fn new(args: &NewArgs) -> anyhow::Result<PathBuf> {
    if !is_valid_plugin_name(&args.name) {
        bail!(
            "invalid plugin name '{}': use lower-case letters, digits, '-' and '_', starting with a letter or digit (at most 64 characters)",
            args.name
        );
    }
    let mut hooks = Vec::new();
    for h in &args.hooks {
        let hook: HookType = h
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--hooks: {e}"))?;
        if !hooks.contains(&hook) {
            hooks.push(hook);
        }
    }
    let route = args.route || hooks.is_empty();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    let vars = variables(&args.name, args.lang, &hooks, route, args.sdk.as_deref())?;
    let files = COMMON.iter().chain(args.lang.files());
    for (file, text) in files {
        let out = dir.join(destination(file));
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let rendered = render(text, &vars)
            .with_context(|| format!("template {}/{file}", args.lang.as_str()))?;
        std::fs::write(&out, rendered)
            .with_context(|| format!("cannot write {}", out.display()))?;
        if file.ends_with(".sh") {
            make_executable(&out)?;
        }
    }
    write_file(
        &dir.join("wit/plugin.wit"),
        args.lang.contract_wit().as_bytes(),
    )?;
    write_file(
        &dir.join(".plugd/plugin.schema.json"),
        MANIFEST_SCHEMA.as_bytes(),
    )?;
    if args.lang == Lang::C {
        c_bindings(&dir.join("bindings"))?;
    }
    // The folder must hold a valid manifest from the start.
    Manifest::from_path(&dir)
        .with_context(|| format!("the generated manifest in {}", dir.display()))?;
    Ok(dir)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The template variables and flags of one plugin.
fn variables(
    name: &str,
    lang: Lang,
    hooks: &[HookType],
    route: bool,
    sdk: Option<&Path>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut v = BTreeMap::new();
    let ident = name.replace('-', "_");
    v.insert("name".into(), name.to_string());
    v.insert("ident".into(), ident.clone());
    v.insert("NAME".into(), ident.to_ascii_uppercase());
    v.insert("Type".into(), camel(name));
    v.insert("lang".into(), lang.as_str().to_string());
    v.insert(
        "plugd_version".into(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    v.insert("componentize_js".into(), COMPONENTIZE_JS.to_string());
    v.insert("componentize_py".into(), COMPONENTIZE_PY.to_string());
    let flag = |on: bool| if on { "1".to_string() } else { String::new() };
    v.insert("route".into(), flag(route));
    v.insert("hooks".into(), flag(!hooks.is_empty()));
    for h in [
        HookType::Startup,
        HookType::Shutdown,
        HookType::PreRequest,
        HookType::PostRequest,
        HookType::PreResponse,
        HookType::PostResponse,
        HookType::Error,
    ] {
        v.insert(format!("hook_{}", h.as_str()), flag(hooks.contains(&h)));
    }
    let request_side = hooks.contains(&HookType::PreRequest);
    let response_side = hooks
        .iter()
        .any(|h| matches!(h, HookType::PostRequest | HookType::PreResponse));
    v.insert("request_hook".into(), flag(request_side));
    v.insert("response_hook".into(), flag(response_side));
    // Request hooks of a scaffolded plugin are meant for other plugins' requests too: its
    // manifest asks for `intercept`, which the operator grants (or the load says how).
    let intercepts = hooks
        .iter()
        .any(|h| !matches!(h, HookType::Startup | HookType::Shutdown));
    v.insert("intercept".into(), flag(intercepts));
    let hook_list: Vec<&str> = hooks.iter().map(|h| h.as_str()).collect();
    v.insert("hook_list".into(), hook_list.join(", "));
    if lang == Lang::Rust {
        v.insert("sdk_dependency".into(), sdk_dependency(sdk)?);
    }
    Ok(v)
}

/// The `plugd-guest` dependency line of a Rust plugin's Cargo.toml.
fn sdk_dependency(sdk: Option<&Path>) -> anyhow::Result<String> {
    let chosen = match sdk {
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os("PLUGD_GUEST_SDK")
            .map(PathBuf::from)
            .or_else(|| {
                Some(PathBuf::from(SDK_IN_TREE)).filter(|p| p.join("Cargo.toml").is_file())
            }),
    };
    match chosen {
        Some(p) => {
            let p = std::fs::canonicalize(&p)
                .with_context(|| format!("guest SDK folder {}", p.display()))?;
            if !p.join("Cargo.toml").is_file() {
                bail!("{} is not the guest SDK (no Cargo.toml)", p.display());
            }
            let text = p.display().to_string().replace('\\', "/");
            Ok(format!("plugd-guest = {{ path = \"{text}\" }}"))
        }
        None => Ok(format!("plugd-guest = \"{}\"", env!("CARGO_PKG_VERSION"))),
    }
}

fn camel(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            match c.next() {
                Some(f) if f.is_ascii_digit() => format!("P{f}{}", c.as_str()),
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Render a template: `{{var}}` replaced, `{{#flag}}`/`{{^flag}}` … `{{/flag}}` lines keep
/// what they enclose when the flag is set (non-empty) / unset.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    // (flag, keep) of the open blocks.
    let mut open: Vec<(String, bool)> = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        let block = |prefix: &str| {
            trimmed
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix("}}"))
                .map(str::to_string)
        };
        if let Some(flag) = block("{{#") {
            let on = vars.get(&flag).is_some_and(|v| !v.is_empty());
            open.push((flag, on));
            continue;
        }
        if let Some(flag) = block("{{^") {
            let on = vars.get(&flag).is_some_and(|v| !v.is_empty());
            open.push((flag, !on));
            continue;
        }
        if let Some(flag) = block("{{/") {
            match open.pop() {
                Some((f, _)) if f == flag => continue,
                _ => bail!("line {}: {{{{/{flag}}}}} closes no open block", n + 1),
            }
        }
        if open.iter().any(|(_, keep)| !keep) {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow::anyhow!("line {}: unclosed {{{{", n + 1))?;
            let key = &after[..end];
            let value = vars.get(key).ok_or_else(|| {
                anyhow::anyhow!("line {}: unknown template variable {key}", n + 1)
            })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if let Some((flag, _)) = open.pop() {
        bail!("block {{{{#{flag}}}}} is never closed");
    }
    Ok(out)
}

/// `plugd build DIR`: run the folder's `build.sh` (which installs its toolchain when missing),
/// with `PLUGD` set to this executable, then check the component against the manifest.
pub fn build(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let manifest = Manifest::from_path(dir)?;
    let script = dir.join("build.sh");
    if !script.is_file() {
        bail!(
            "{} has no build.sh: plugd build runs a plugin folder's build script (plugd new writes one)",
            dir.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the plugd executable")?;
    let status = std::process::Command::new("bash")
        .arg("build.sh")
        .current_dir(dir)
        .env("PLUGD", &exe)
        .status()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let component = manifest.component_path();
    let bytes = std::fs::read(&component)
        .with_context(|| format!("build.sh produced no {}", component.display()))?;
    if !wasmparser_is_component(&bytes) {
        bail!("{} is not a WebAssembly component", component.display());
    }
    eprintln!(
        "built {} ({}, {:.1} KiB) in {:.1} s",
        manifest.name,
        component.display(),
        bytes.len() as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A component starts with `\0asm` and layer 1 (`0d 00 01 00`); a core module has version 1.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// `plugd test DIR`: run the folder's `tests.yaml` through the harness. Returns (passed, failed).
pub async fn test(dir: &Path) -> anyhow::Result<(usize, usize)> {
    let file = dir.join(plugd_test::suite::SUITE_FILE);
    let suite = plugd_test::Suite::from_path(&file)?;
    let cache = dir.join(".plugd").join("cache");
    let options = plugd_test::SuiteOptions {
        cache_dir: Some(cache),
    };
    let report = plugd_test::run_suite(dir, &suite, &options).await?;
    for case in &report.cases {
        match &case.failure {
            None => println!("ok    {}", case.name),
            Some(why) => println!("FAIL  {}: {why}", case.name),
        }
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    Ok((report.passed(), report.failed()))
}

/// `plugd componentize CORE -o OUT`: wrap a core wasm module built against the contract (with
/// its `component-type` custom section, as wit-bindgen's C generator emits it) into a
/// component, adapting WASI preview 1 imports with wasmtime's reactor adapter.
pub fn componentize(core: &Path, out: &Path) -> anyhow::Result<()> {
    let module = std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{}: not a core module with plugd's component type (was it linked with bindings/plugin_component_type.o?)", core.display()))?
        .adapter("wasi_snapshot_preview1", adapter)
        .context("the WASI preview 1 adapter")?
        .validate(true)
        .encode()
        .with_context(|| format!("cannot make a component of {}", core.display()))?;
    write_file(out, &component)
}

/// Write the C bindings of the contract the C template builds against (world `plugin` of
/// `plugd:plugin@0.1.0`): `plugin.h`, `plugin.c` and `plugin_component_type.o`, generated by
/// wit-bindgen's C generator from the WIT this plugd was built with.
pub fn c_bindings(out: &Path) -> anyhow::Result<()> {
    use wit_bindgen_core::wit_parser::Resolve;
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("plugin.wit", CONTRACT_WIT_0_1)
        .context("parsing the embedded contract")?;
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .context("world plugin")?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating C bindings")?;
    for (name, bytes) in files.iter() {
        write_file(&out.join(name), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schema_is_the_generated_one() {
        let generated: serde_json::Value = plugd_manifest::manifest_json_schema();
        let embedded: serde_json::Value = serde_json::from_str(MANIFEST_SCHEMA).unwrap();
        assert_eq!(generated, embedded, "regenerate schemas/plugin.schema.json");
    }

    #[test]
    fn toolchain_script_pins_the_same_versions() {
        let script = include_str!("../../../../scripts/author-toolchains.sh");
        assert!(script.contains(&format!("componentize_py={COMPONENTIZE_PY}")));
        assert!(script.contains(&format!("componentize_js={COMPONENTIZE_JS}")));
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn render_variables_and_blocks() {
        let v = vars(&[("name", "hi"), ("route", "1"), ("hooks", "")]);
        let t = "a {{name}}\n{{#route}}\nroute {{name}}\n{{/route}}\n{{#hooks}}\nhooks\n{{/hooks}}\n{{^hooks}}\nno hooks\n{{/hooks}}\nend\n";
        assert_eq!(render(t, &v).unwrap(), "a hi\nroute hi\nno hooks\nend\n");
        assert!(
            render("{{nope}}\n", &v)
                .unwrap_err()
                .to_string()
                .contains("unknown template variable nope")
        );
        assert!(render("{{#route}}\n", &v).is_err());
    }

    #[test]
    fn camel_case_type_names() {
        assert_eq!(camel("my-plugin"), "MyPlugin");
        assert_eq!(camel("a_b"), "AB");
        assert_eq!(camel("9lives"), "P9lives");
    }

    #[test]
    fn every_template_renders_for_every_option() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python, Lang::C] {
            for (hooks, route) in [
                (vec![], true),
                (vec![HookType::PreRequest, HookType::PreResponse], false),
            ] {
                let v =
                    variables("demo-x", lang, &hooks, route, Some(Path::new(SDK_IN_TREE))).unwrap();
                for (file, text) in COMMON.iter().chain(lang.files()) {
                    render(text, &v).unwrap_or_else(|e| panic!("{lang:?} {file}: {e}"));
                }
            }
        }
    }
}
