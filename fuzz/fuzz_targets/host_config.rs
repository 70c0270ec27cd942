//! The host config reader: `HostConfig::from_str`, the function behind `HostConfig::from_path`
//! (`plugd serve --config`, `plugd check`, the admin API's reload), with the input read as
//! YAML, JSON and TOML in turn.
//!
//! An error must render; an accepted config must serialize (the admin API answers with it) and
//! give every plugin its limits, thresholds, supervision and backoff without overflow.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plugd_manifest::{Format, HostConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in Format::ALL {
        let origin = format!("/etc/plugd/plugd.{format}");
        match HostConfig::from_str(text, format, Some(Path::new(&origin))) {
            Ok(config) => {
                let _ = serde_json::to_string(&config);
                let _ = config.admin.listen_addr();
                for entry in &config.plugins.plugins {
                    let _ = config.plugins.limits_for(entry);
                    let _ = config.plugins.error_threshold_for(entry);
                    let supervision = config.plugins.supervision_for(entry);
                    for attempt in [0, 1, 2, 31, 32, 33, u32::MAX] {
                        let _ = supervision.backoff(attempt);
                    }
                    let _ = entry.granted();
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
