//! `framer` (hostile test plugin): tries to take HTTP framing away from the host.
//!
//! - `GET /frame`: answers `{"framed":true}` with `content-length: 2`, `transfer-encoding:
//!   chunked`, `connection: close`, `upgrade: h2c` and `proxy-x: y` beside `x-ok: 1`.
//! - `GET /bomb?n=N`: answers N headers (default 30,000).
//! - `pre_response` on every response it sees: sets `content-length: 2`, `transfer-encoding:
//!   chunked` and `connection: close`, and reports what the host answered in `x-framer`.
//! - `pre_request` with `x-flood: N`: sets N distinct request headers and answers how many were
//!   refused.
//! - `startup`: answers a response of 30,000 headers.
use plugd_guest::prelude::*;
use plugd_guest::{json, register};

#[derive(Default)]
struct Framer;

fn bomb(n: usize) -> Response {
    let mut r = Response::text(200, "bomb");
    for i in 0..n {
        r = r.with_header(format!("x-bomb-{i}"), "v");
    }
    r
}

impl Plugin for Framer {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/frame")?;
        register::route("GET", "/bomb")?;
        Ok(())
    }

    fn on_hook(&mut self, hook: HookType, exchange: &Exchange) -> Result<Action> {
        match hook {
            HookType::Startup => Ok(Action::Respond(bomb(30_000))),
            HookType::PreRequest => {
                let Some(n) = exchange
                    .header("x-flood")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    return Ok(Action::Continue);
                };
                // Each header applied at once, to count the host's refusals.
                let refused = (0..n)
                    .filter(|i| {
                        let name = format!("x-flood-{i}");
                        exchange
                            .set_header(&name, "v")
                            .and_then(|()| exchange.apply_edits())
                            .is_err()
                    })
                    .count();
                Ok(Action::Respond(Response::json(
                    200,
                    &json!({ "set": n - refused, "refused": refused }),
                )))
            }
            HookType::PreResponse => {
                let mut answers = Vec::new();
                for (name, value) in [
                    ("content-length", "2"),
                    ("transfer-encoding", "chunked"),
                    ("connection", "close"),
                ] {
                    // Applied at once, to report the host's answer.
                    let set = exchange.set_response_header(name, value);
                    let answer = match set.and_then(|()| exchange.apply_edits()) {
                        Ok(()) => "accepted".to_string(),
                        Err(e) => format!("{:?}", e.kind()),
                    };
                    answers.push(format!("{name}={answer}"));
                }
                let _ = exchange.set_response_header("x-framer", &answers.join(" "));
                Ok(Action::Continue)
            }
            _ => Ok(Action::Continue),
        }
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match route {
            "/frame" => Ok(Response::json(200, &json!({ "framed": true }))
                .with_header("content-length", "2")
                .with_header("transfer-encoding", "chunked")
                .with_header("connection", "close")
                .with_header("upgrade", "h2c")
                .with_header("proxy-x", "y")
                .with_header("x-ok", "1")),
            "/bomb" => {
                let n = exchange
                    .query_param("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(30_000);
                Ok(bomb(n))
            }
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Framer, name = "framer");
