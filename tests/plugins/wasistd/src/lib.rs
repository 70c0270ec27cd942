//! `wasistd` (test plugin): a plugd plugin that also imports the standard WASI interfaces plugd
//! serves (`wasi:keyvalue/store` and `batch`, `wasi:config/store`, `wasi:logging/logging`) through
//! its own bindings of the runtime's vendored WIT files. Its plugd part is one route,
//! `GET /wasi?op=…` (see plugin.yaml); a WASI error is answered 500 with its text.
use plugd_guest::prelude::*;
use plugd_guest::{register, storage};

mod wasi_std {
    wit_bindgen::generate!({
        inline: "
            package plugd-test:wasistd;
            world imports {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/batch@0.2.0-draft;
                import wasi:config/store@0.2.0-rc.1;
                import wasi:logging/logging@0.1.0-draft;
            }
        ",
        path: [
            "../../../crates/plugd-wasm/wit/deps/keyvalue",
            "../../../crates/plugd-wasm/wit/deps/config",
            "../../../crates/plugd-wasm/wit/deps/logging",
        ],
        world: "imports",
        generate_all,
    });
}

use wasi_std::wasi::config::store as config;
use wasi_std::wasi::keyvalue::{batch, store};
use wasi_std::wasi::logging::logging;

#[derive(Default)]
struct Wasistd;

fn kv_error(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(m) => format!("other: {m}"),
    }
}

fn config_error(e: config::Error) -> String {
    match e {
        config::Error::Upstream(m) => format!("upstream: {m}"),
        config::Error::Io(m) => format!("io: {m}"),
    }
}

fn level(name: &str) -> logging::Level {
    match name {
        "trace" => logging::Level::Trace,
        "debug" => logging::Level::Debug,
        "warn" => logging::Level::Warn,
        "error" => logging::Level::Error,
        "critical" => logging::Level::Critical,
        _ => logging::Level::Info,
    }
}

/// Every key of a bucket, page after page.
fn all_keys(bucket: &store::Bucket) -> std::result::Result<Vec<String>, store::Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor)?;
        keys.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(keys),
        }
    }
}

fn run(exchange: &Exchange) -> std::result::Result<Response, String> {
    let param = |name: &str| exchange.query_param(name).unwrap_or_default();
    let (op, key, value) = (param("op"), param("key"), param("value"));
    let number = |name: &str| param(name).parse::<usize>().unwrap_or(1);
    let keys = || key.split(',').map(str::to_string).collect::<Vec<_>>();
    let bucket = || store::open(&param("bucket")).map_err(kv_error);
    Ok(match &*op {
        "kv-set" => {
            bucket()?.set(&key, value.as_bytes()).map_err(kv_error)?;
            Response::text(200, "stored")
        }
        "kv-fill" => {
            let bytes = vec![b'x'; number("kib") * 1024];
            bucket()?.set(&key, &bytes).map_err(kv_error)?;
            Response::text(200, "stored")
        }
        "kv-get" => match bucket()?.get(&key).map_err(kv_error)? {
            Some(v) => Response::text(200, String::from_utf8_lossy(&v)),
            None => Response::text(404, "absent"),
        },
        "kv-delete" => {
            bucket()?.delete(&key).map_err(kv_error)?;
            Response::text(200, "deleted")
        }
        "kv-exists" => Response::text(200, bucket()?.exists(&key).map_err(kv_error)?.to_string()),
        "kv-list" => Response::json(200, &all_keys(&bucket()?).map_err(kv_error)?),
        "kv-set-many" => {
            let pairs = keys()
                .into_iter()
                .map(|k| {
                    let v = format!("{value}:{k}").into_bytes();
                    (k, v)
                })
                .collect::<Vec<_>>();
            batch::set_many(&bucket()?, &pairs).map_err(kv_error)?;
            Response::text(200, "stored")
        }
        "kv-get-many" => {
            let found = batch::get_many(&bucket()?, &keys()).map_err(kv_error)?;
            let found: Vec<Option<(String, String)>> = found
                .into_iter()
                .map(|f| f.map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())))
                .collect();
            Response::json(200, &found)
        }
        "kv-delete-many" => {
            batch::delete_many(&bucket()?, &keys()).map_err(kv_error)?;
            Response::text(200, "deleted")
        }
        // Open `n` buckets and keep them all open: how many opened, and the first refusal.
        "open" => {
            let mut open = Vec::new();
            let mut refused = String::new();
            for _ in 0..number("n") {
                match store::open(&param("bucket")) {
                    Ok(b) => open.push(b),
                    Err(e) => {
                        refused = kv_error(e);
                        break;
                    }
                }
            }
            Response::text(200, format!("{} {refused}", open.len()))
        }
        "storage-get" => match storage::get(&key).map_err(|e| e.to_string())? {
            Some(v) => Response::text(200, String::from_utf8_lossy(&v)),
            None => Response::text(404, "absent"),
        },
        "storage-set" => {
            storage::set(&key, value.as_bytes()).map_err(|e| e.to_string())?;
            Response::text(200, "stored")
        }
        "config-get" => match config::get(&key).map_err(config_error)? {
            Some(v) => Response::text(200, v),
            None => Response::text(404, "absent"),
        },
        "config-all" => Response::json(200, &config::get_all().map_err(config_error)?),
        "log" => {
            for i in 0..number("n") {
                let msg = param("msg").replace("{i}", &i.to_string());
                logging::log(level(&param("level")), &param("context"), &msg);
            }
            Response::text(200, "logged")
        }
        // plugd's own `log.set-log-level`: the filter wasi:logging lines go through too.
        "set-level" => {
            use plugd_guest::log::{Level, set_level};
            set_level(match &*param("level") {
                "warn" => Level::Warn,
                "error" => Level::Error,
                "debug" => Level::Debug,
                _ => Level::Info,
            });
            Response::text(200, "set")
        }
        other => Response::text(400, format!("unknown op {other:?}")),
    })
}

impl Plugin for Wasistd {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/wasi")?;
        Ok(())
    }

    fn handle_request(&mut self, _route: &str, exchange: &Exchange) -> Result<Response> {
        Ok(run(exchange).unwrap_or_else(|e| Response::text(500, e)))
    }
}

plugd_guest::export!(Wasistd, name = "wasistd");
