//! `hog` (hostile test plugin): GET /alloc keeps 1 MiB blocks until the allocator gets no more
//! memory (the host's cap refuses `memory.grow`; Rust then aborts, a trap). GET /ok answers.
use plugd_guest::prelude::*;
use plugd_guest::register;

#[derive(Default)]
struct Hog;

impl Plugin for Hog {
    fn init(&mut self, _config: &Config) -> Result<()> {
        register::route("GET", "/alloc")?;
        register::route("GET", "/ok")?;
        Ok(())
    }

    fn handle_request(&mut self, route: &str, _exchange: &Exchange) -> Result<Response> {
        match route {
            "/alloc" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every block so that it is really allocated, and keep it.
                    blocks.push(vec![0xa5; 1 << 20]);
                    core::hint::black_box(&mut blocks);
                }
            }
            "/ok" => Ok(Response::text(200, "hog ok")),
            other => bail!("no handler for route {other}"),
        }
    }
}

plugd_guest::export!(Hog, name = "hog");
