//! The catalog index reader: `Index::parse`, the function behind `CatalogSource::index`
//! (`plugd search`, `plugd install <name>` from a folder or an HTTPS catalog).
//!
//! An error must render; an accepted index must serialize again and answer searches.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plugd_pkg::Index;

fuzz_target!(|data: &[u8]| {
    match Index::parse(data) {
        Ok(index) => {
            let _ = index.to_json();
            let _ = index.search("a");
            for plugin in &index.plugins {
                let _ = index.plugin(&plugin.name);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
