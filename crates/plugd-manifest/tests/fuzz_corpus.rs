//! The fuzz corpus, replayed: every input `scripts/fuzz.sh` kept for the `manifest` and
//! `host_config` targets (fuzz/corpus/<target>/), and every input that once crashed one of them
//! (fuzz/regressions/<target>/), goes through the same calls as the fuzz target. Errors are
//! fine; a panic fails the test, and an error must say something.

use std::path::{Path, PathBuf};

use plugd_manifest::{Format, HostConfig, Manifest};

/// The files of `fuzz/<kind>/<target>/`, sorted (none when the folder does not exist).
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        files.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

#[test]
fn every_manifest_input_parses_or_fails_cleanly() {
    let files = inputs("manifest");
    assert!(!files.is_empty(), "fuzz/corpus/manifest is empty");
    for file in files {
        let Ok(text) = String::from_utf8(std::fs::read(&file).unwrap()) else {
            continue;
        };
        for format in Format::ALL {
            let origin = format!("plugin.{format}");
            match Manifest::from_str(&text, format, Some(Path::new(&origin))) {
                Ok(manifest) => {
                    serde_json::to_string(&manifest).unwrap();
                    let _ = manifest.config.validate(&serde_json::Map::new());
                    let _ = manifest.component_path();
                }
                Err(e) => assert!(
                    !e.to_string().is_empty(),
                    "{}: an empty {format} error",
                    file.display()
                ),
            }
        }
    }
}

#[test]
fn every_host_config_input_parses_or_fails_cleanly() {
    let files = inputs("host_config");
    assert!(!files.is_empty(), "fuzz/corpus/host_config is empty");
    for file in files {
        let Ok(text) = String::from_utf8(std::fs::read(&file).unwrap()) else {
            continue;
        };
        for format in Format::ALL {
            let origin = format!("/etc/plugd/plugd.{format}");
            match HostConfig::from_str(&text, format, Some(Path::new(&origin))) {
                Ok(config) => {
                    serde_json::to_string(&config).unwrap();
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
                Err(e) => assert!(
                    !e.to_string().is_empty(),
                    "{}: an empty {format} error",
                    file.display()
                ),
            }
        }
    }
}
