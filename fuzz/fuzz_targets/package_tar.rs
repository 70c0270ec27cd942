//! The package reader past the zstd layer: the input is the tar archive inside a package. It is
//! compressed (zstd, fast level) and handed to `Package::read`, so the fuzzer mutates tar
//! headers, paths, the digest list, the signature and the manifest rather than zstd frames,
//! which the `package` target covers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plugd_pkg::{Package, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(bytes) = zstd::encode_all(data, 1) else {
        return;
    };
    match Package::read(&bytes, &UnpackLimits::default()) {
        Ok(package) => {
            let _ = package.file_name();
            let _ = package.digest();
            let _ = package.files().count();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
