//! One request through the dispatch path (no sockets): a native route handler alone, then the
//! same request with one wasm `pre_request` hook (the gatekeeper example) in front of it, then the
//! wasm `hello` route itself.
//!
//! cargo bench -p plugd --bench request_path
//! (builds the guest plugins first through scripts/build-examples.sh)

use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use plugd::manifest::{Format, HostConfig, Manifest};
use plugd::{Exchange, Host, InitContext, Plugin, PluginError, Response, RouteOptions};

struct Native;

#[async_trait::async_trait]
impl Plugin for Native {
    async fn init(&self, ctx: &mut InitContext<'_>) -> Result<(), PluginError> {
        ctx.register_route("GET", "/ping", RouteOptions::default())
            .map_err(|e| PluginError::Failed(e.to_string()))
    }
    async fn handle_request(
        &self,
        _route: &str,
        _ex: &mut Exchange,
    ) -> Result<Response, PluginError> {
        Ok(Response::json(
            http::StatusCode::OK,
            &serde_json::json!({"pong": true}),
        ))
    }
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn host(rt: &tokio::runtime::Runtime, with_wasm: bool, data: &Path) -> Host {
    let mut yaml = format!("data_dir: '{}'\nplugins:\n  plugins:\n", data.display());
    if !with_wasm {
        yaml.push_str("    []\n");
    }
    if with_wasm {
        for (name, extra) in [
            ("gatekeeper", "      permissions: { intercept: true }\n"),
            ("hello", "      permissions: { router: true }\n"),
        ] {
            yaml.push_str(&format!(
                "    - name: {name}\n      path: '{}'\n{extra}",
                root().join("examples/plugins").join(name).display()
            ));
        }
    }
    let config = HostConfig::from_str(&yaml, Format::Yaml, None).expect("config");
    let manifest = Manifest::from_str(
        "name: native\nversion: 1.0.0\ndescription: bench\nauthor: plugd\npermissions: { router: true }\n",
        Format::Yaml,
        None,
    )
    .expect("manifest");
    let runtime = plugd::wasm::WasmRuntime::new(plugd::wasm::RuntimeOptions::from_config(&config))
        .expect("runtime");
    let host = Host::builder()
        .config(config)
        .loader(runtime)
        .native(manifest, Native)
        .build()
        .expect("host");
    rt.block_on(host.start()).expect("start");
    host
}

fn bench(c: &mut Criterion) {
    let status = Command::new("bash")
        .arg(root().join("scripts/build-examples.sh"))
        .status()
        .expect("build-examples");
    assert!(status.success(), "scripts/build-examples.sh failed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("request_path");

    let bare = host(&rt, false, &dir.path().join("bare"));
    group.bench_function("native_route", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bare
                .dispatcher()
                .handle(Exchange::new(http::Method::GET, "/plugins/native/ping"))
                .await;
            assert_eq!(r.status, 200);
        })
    });

    let wasm = host(&rt, true, &dir.path().join("wasm"));
    group.bench_function("native_route+wasm_pre_request_hook", |b| {
        b.to_async(&rt).iter(|| async {
            let r = wasm
                .dispatcher()
                .handle(Exchange::new(http::Method::GET, "/plugins/native/ping"))
                .await;
            assert_eq!(r.status, 200);
        })
    });
    group.bench_function("wasm_route+wasm_hooks", |b| {
        b.to_async(&rt).iter(|| async {
            let r = wasm
                .dispatcher()
                .handle(Exchange::new(
                    http::Method::GET,
                    "/plugins/hello/greet?name=Ada",
                ))
                .await;
            assert_eq!(r.status, 200);
        })
    });
    group.finish();
    rt.block_on(bare.shutdown());
    rt.block_on(wasm.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
