//! `bench-storer`: hammers its own key/value storage, for the storage-isolation benchmark
//! (`scripts/load-storage.sh`). `GET /write?n=N&kb=K` writes N values of K KiB (keys cycle over
//! 1,000), then answers how many it wrote.
use plugd_guest::prelude::*;
use plugd_guest::{register, storage};

#[derive(Default)]
struct Storer {
    next: u32,
}

impl Plugin for Storer {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/write")?;
        Ok(())
    }

    fn handle_request(&mut self, _route: &str, exchange: &Exchange) -> Result<Response> {
        let n: u32 = exchange.query_param("n").and_then(|v| v.parse().ok()).unwrap_or(50);
        let kb: usize = exchange.query_param("kb").and_then(|v| v.parse().ok()).unwrap_or(1);
        let value = vec![b'x'; kb * 1024];
        for _ in 0..n {
            self.next = (self.next + 1) % 1000;
            storage::set(&format!("k{}", self.next), &value)?;
        }
        Ok(Response::text(200, format!("wrote {n}")))
    }
}

plugd_guest::export!(Storer, name = "bench-storer");
