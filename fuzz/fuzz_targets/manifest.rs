//! The plugin manifest reader: `Manifest::from_str`, the function behind `Manifest::from_path`
//! and the package reader, with the input read as YAML, JSON and TOML in turn.
//!
//! An error must render (its Display is what `plugd` prints); a manifest that is accepted must
//! serialize (the admin API answers with it) and its config schema must apply its defaults to
//! an empty config, as the host does for a plugin the config file says nothing about.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plugd_manifest::{Format, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in Format::ALL {
        let origin = format!("plugin.{format}");
        match Manifest::from_str(text, format, Some(Path::new(&origin))) {
            Ok(manifest) => {
                let _ = serde_json::to_string(&manifest);
                let _ = manifest.config.validate(&serde_json::Map::new());
                let _ = manifest.component_path();
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
