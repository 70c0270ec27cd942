//! `plugd serve` on a terminal: one line per plugin as the start compiles and loads it
//! (`[2/5] compiling hello …`, `[2/5] hello loaded in 3.1s`), so a long first start (wasm
//! compilation without a cache) shows where it is. Only when stderr is a terminal, only during the
//! start: later loads (reloads, enable) print nothing.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use plugd::{Loader, LoaderContext, Plugin};

/// A [`Loader`] that reports each load of the start on stderr, then stays quiet.
pub struct Progress<L> {
    inner: L,
    total: usize,
    started: AtomicUsize,
    active: Arc<AtomicBool>,
}

impl<L: Loader> Progress<L> {
    /// Wrap `inner`; `total` is the number of plugins the config lists (autoloaded ones come on
    /// top). Returns the loader and the switch that turns it off after the start.
    pub fn new(inner: L, total: usize) -> (Progress<L>, Arc<AtomicBool>) {
        let active = Arc::new(AtomicBool::new(true));
        (
            Progress {
                inner,
                total,
                started: AtomicUsize::new(0),
                active: active.clone(),
            },
            active,
        )
    }
}

#[async_trait]
impl<L: Loader> Loader for Progress<L> {
    async fn load(&self, ctx: LoaderContext<'_>) -> Result<Arc<dyn Plugin>, plugd::BoxError> {
        if !self.active.load(Ordering::Relaxed) {
            return self.inner.load(ctx).await;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.max(n);
        let name = ctx.manifest.name.clone();
        let began = Instant::now();
        line(&format!("[{n}/{total}] compiling {name} …"));
        let result = self.inner.load(ctx).await;
        let secs = began.elapsed().as_secs_f64();
        match &result {
            Ok(_) => line(&format!("[{n}/{total}] {name} loaded in {secs:.1}s")),
            Err(e) => line(&format!(
                "[{n}/{total}] {name} failed after {secs:.1}s: {e}"
            )),
        }
        result
    }
}

fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}
