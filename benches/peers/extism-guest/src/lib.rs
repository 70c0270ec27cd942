//! The call-overhead hook for Extism: the input is the request header's value; the plugin
//! checks it and answers "continue" (plugd's bench-hook reads the header through the exchange).
use std::sync::atomic::{AtomicU64, Ordering};

use extism_pdk::*;

static SEEN: AtomicU64 = AtomicU64::new(0);

#[plugin_fn]
pub fn on_hook(header: String) -> FnResult<String> {
    if !header.is_empty() {
        SEEN.fetch_add(1, Ordering::Relaxed);
    }
    Ok("continue".to_string())
}
