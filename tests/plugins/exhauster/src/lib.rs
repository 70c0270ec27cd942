//! `exhauster` (hostile test plugin): each route tries to make the host hold what the plugin's
//! own memory cap does not cover, and answers JSON with what the host accepted and refused.
//!
//! - `GET /log?n=N&kib=K`: N `log` calls of K KiB (and one line that tries to forge a host line).
//! - `GET /stdio?mib=M`: M MiB to stderr and to stdout, then a forged line.
//! - `GET /locals?n=N&kib=K`: N request locals of K KiB; counts those the host kept.
//! - `GET /store?n=N&kib=K`: N `storage.set` of K KiB.
//! - `GET /bomb?n=N`: a response of N headers.
//! - `GET /publish?n=N&kib=K`: N events of K KiB to its own slow subscription.
//! - `GET /label?kib=K`: a metric whose label value is K KiB, and 2,000 distinct series.
//! - `GET /files?n=N`: opens N files under /data and keeps them open.
//! - `GET /disk?mib=M`: writes M MiB under /data, 1 MiB per file.
//! - `GET /deny?n=N`: N denied calls (an undeclared event), each one an audit entry.
//! - `GET /cache?n=N&kib=K`: N cache entries of K KiB (`cache`).
//! - `GET /sql`: a query whose values SQLite would make gigabytes of (`database`).
//! - `GET /ok`: answers 200.
use std::io::Write;

use plugd_guest::prelude::*;
use plugd_guest::{events, json, log, metrics, register, storage};

#[derive(Default)]
struct Exhauster {
    /// Files kept open across calls.
    open: Vec<std::fs::File>,
}

fn param(exchange: &Exchange, name: &str, default: usize) -> usize {
    exchange
        .query_param(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn error_text(e: &plugd_guest::Error) -> String {
    e.to_string()
}

impl Plugin for Exhauster {
    fn init(&mut self, _config: &Config) -> Result<()> {
        for path in [
            "/log", "/stdio", "/locals", "/store", "/bomb", "/publish", "/label", "/files",
            "/disk", "/deny", "/cache", "/sql", "/ok",
        ] {
            register::route("GET", path)?;
        }
        plugd_guest::register::subscribe("exhauster.big")?;
        Ok(())
    }

    fn on_event(&mut self, _topic: &str, _payload: &[u8], _source: &str) -> Result<()> {
        // A slow subscriber: every event waits in its queue.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while std::time::Instant::now() < until {}
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/log" => {
                let (n, kib) = (param(exchange, "n", 2000), param(exchange, "kib", 256));
                let line = "l".repeat(kib * 1024);
                for _ in 0..n {
                    log::info(&line);
                }
                log::with_fields(
                    log::Level::Warn,
                    "forged\n{\"level\":\"WARN\",\"target\":\"plugd::audit\",\"fields\":{\"message\":\"denied\"}}",
                    &[("k\nINFO plugd: forged", "v")],
                );
                Ok(Response::json(200, &json!({ "calls": n + 1 })))
            }
            "/stdio" => {
                let mib = param(exchange, "mib", 512);
                let chunk = vec![b'e'; 64 * 1024];
                let mut err = std::io::stderr();
                let mut out = std::io::stdout();
                for _ in 0..mib * 16 {
                    let _ = err.write_all(&chunk);
                    let _ = out.write_all(&chunk);
                }
                let _ = err.write_all(b"\nFORGED plugd::audit denied everything\n");
                let _ = err.flush();
                let _ = out.flush();
                Ok(Response::json(200, &json!({ "mib": mib })))
            }
            "/locals" => {
                let (n, kib) = (param(exchange, "n", 2048), param(exchange, "kib", 1024));
                let value = "v".repeat(kib * 1024);
                let mut kept = 0;
                for i in 0..n {
                    let key = format!("local-{i}");
                    exchange.set_local(&key, &value);
                    if exchange.local(&key).is_some() {
                        kept += 1;
                    }
                }
                Ok(Response::json(200, &json!({ "tried": n, "kept": kept })))
            }
            "/store" => {
                let (n, kib) = (param(exchange, "n", 2048), param(exchange, "kib", 1024));
                let value = vec![b's'; kib * 1024];
                let (mut stored, mut first_error) = (0, None);
                for i in 0..n {
                    match storage::set(&format!("hoard-{i}"), &value) {
                        Ok(()) => stored += 1,
                        Err(e) => {
                            first_error = Some(error_text(&e));
                            break;
                        }
                    }
                }
                Ok(Response::json(
                    200,
                    &json!({ "stored": stored, "error": first_error }),
                ))
            }
            "/bomb" => {
                let n = param(exchange, "n", 200_000);
                let mut r = Response::text(200, "bomb");
                for i in 0..n {
                    r = r.with_header(format!("x-bomb-{i}"), "v");
                }
                Ok(r)
            }
            "/publish" => {
                let (n, kib) = (param(exchange, "n", 64), param(exchange, "kib", 1024));
                let payload = vec![b'p'; kib * 1024];
                let (mut published, mut first_error) = (0, None);
                for _ in 0..n {
                    match events::publish("exhauster.big", &payload) {
                        Ok(()) => published += 1,
                        Err(e) => {
                            first_error.get_or_insert_with(|| error_text(&e));
                        }
                    }
                }
                Ok(Response::json(
                    200,
                    &json!({ "published": published, "error": first_error }),
                ))
            }
            "/label" => {
                let kib = param(exchange, "kib", 1024);
                let big = "x".repeat(kib * 1024);
                let big_label = metrics::counter_with("exhaust", 1.0, &[("k", big.as_str())])
                    .err()
                    .map(|e| error_text(&e));
                let mut series = 0;
                let mut series_error = None;
                for i in 0..2000 {
                    match metrics::gauge_with("wide", 1.0, &[("i", &i.to_string())]) {
                        Ok(()) => series += 1,
                        Err(e) => {
                            series_error = Some(error_text(&e));
                            break;
                        }
                    }
                }
                Ok(Response::json(
                    200,
                    &json!({ "label_error": big_label, "series": series, "series_error": series_error }),
                ))
            }
            "/files" => {
                let n = param(exchange, "n", 5000);
                let mut error = None;
                for i in 0..n {
                    match std::fs::File::create(format!("/data/open-{}-{i}", self.open.len())) {
                        Ok(f) => self.open.push(f),
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                Ok(Response::json(
                    200,
                    &json!({ "open": self.open.len(), "error": error }),
                ))
            }
            "/disk" => {
                let mib = param(exchange, "mib", 1024);
                let block = vec![b'd'; 1024 * 1024];
                let (mut written, mut error) = (0, None);
                for i in 0..mib {
                    match std::fs::write(format!("/data/disk-{i}"), &block) {
                        Ok(()) => written += 1,
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                Ok(Response::json(
                    200,
                    &json!({ "written_mib": written, "error": error }),
                ))
            }
            "/deny" => {
                let n = param(exchange, "n", 20_000);
                let denied = (0..n)
                    .filter(|_| events::publish("exhauster.undeclared", b"x").is_err())
                    .count();
                Ok(Response::json(200, &json!({ "denied": denied })))
            }
            "/cache" => {
                let (n, kib) = (param(exchange, "n", 256), param(exchange, "kib", 1024));
                let value = vec![b'c'; kib * 1024];
                let (mut cached, mut first_error) = (0, None);
                for i in 0..n {
                    match plugd_guest::cache::set(&format!("c-{i}"), &value, None) {
                        Ok(()) => cached += 1,
                        Err(e) => {
                            first_error = Some(error_text(&e));
                            break;
                        }
                    }
                }
                Ok(Response::json(
                    200,
                    &json!({ "cached": cached, "error": first_error }),
                ))
            }
            "/sql" => {
                let error = plugd_guest::db::query(
                    "SELECT zeroblob(999999999) a, zeroblob(999999999) b, zeroblob(999999999) c, zeroblob(999999999) d",
                    &[],
                )
                .err()
                .map(|e| error_text(&e));
                Ok(Response::json(200, &json!({ "error": error })))
            }
            "/ok" => Ok(Response::text(200, "exhauster ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Exhauster, name = "exhauster");
