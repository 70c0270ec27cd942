//! The fuzz corpus, replayed: every input `scripts/fuzz.sh` kept for the `package`,
//! `package_tar` and `catalog_index` targets (fuzz/corpus/<target>/), and every input that once
//! crashed one of them (fuzz/regressions/<target>/), goes through the same calls as the fuzz
//! target. Errors are fine; a panic fails the test, and an error must say something.

use std::path::{Path, PathBuf};

use plugd_pkg::{Index, Package, UnpackLimits};

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

/// What the `package` and `package_tar` targets do with the package bytes.
fn read_package(file: &Path, bytes: &[u8]) {
    match Package::read(bytes, &UnpackLimits::default()) {
        Ok(package) => {
            let _ = package.file_name();
            let _ = package.digest();
            let _ = package.files().count();
        }
        Err(e) => assert!(
            !e.to_string().is_empty(),
            "{}: an empty error",
            file.display()
        ),
    }
}

#[test]
fn every_package_input_reads_or_fails_cleanly() {
    let files = inputs("package");
    assert!(!files.is_empty(), "fuzz/corpus/package is empty");
    for file in files {
        read_package(&file, &std::fs::read(&file).unwrap());
    }
}

#[test]
fn every_package_tar_input_reads_or_fails_cleanly() {
    let files = inputs("package_tar");
    assert!(!files.is_empty(), "fuzz/corpus/package_tar is empty");
    for file in files {
        let tar = std::fs::read(&file).unwrap();
        let bytes = zstd::encode_all(tar.as_slice(), 1).unwrap();
        read_package(&file, &bytes);
    }
}

#[test]
fn every_catalog_index_input_parses_or_fails_cleanly() {
    let files = inputs("catalog_index");
    assert!(!files.is_empty(), "fuzz/corpus/catalog_index is empty");
    for file in files {
        match Index::parse(&std::fs::read(&file).unwrap()) {
            Ok(index) => {
                let _ = index.to_json();
                let _ = index.search("a");
                for plugin in &index.plugins {
                    assert!(index.plugin(&plugin.name).is_some());
                }
            }
            Err(e) => assert!(
                !e.to_string().is_empty(),
                "{}: an empty error",
                file.display()
            ),
        }
    }
}
