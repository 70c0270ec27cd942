//! The package reader: `Package::read`, the function behind `Package::read_file`,
//! `plugd install`, `plugd catalog build` and the host's load check, on raw `.plugd` bytes
//! (zstd frame, then tar).
//!
//! An error must render; an accepted package must give its name, digest and files.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plugd_pkg::{Package, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    match Package::read(data, &UnpackLimits::default()) {
        Ok(package) => {
            let _ = package.file_name();
            let _ = package.digest();
            let _ = package.files().count();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
