//! The contract's copies: a published crate carries the files it builds from, so the runtime
//! (crates/plugd-wasm/wit: every contract version it loads) and the guest SDK (sdk/rust/wit: the
//! current contract) each hold a copy of the repository's `wit/`. They must stay byte-for-byte
//! equal to it: a copy that drifts would make hosts and guests disagree about the contract. And
//! a published contract version never changes: `wit/<version>/plugin.wit` is frozen.

use std::path::{Path, PathBuf};

/// Every file under `dir`, by its path relative to `dir`, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in
            std::fs::read_dir(&at).unwrap_or_else(|e| panic!("cannot read {}: {e}", at.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((name, bytes));
        }
    }
    out.sort();
    out
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<String> {
    files.iter().map(|(n, _)| n.clone()).collect()
}

fn assert_same(copy: &Path, found: &[(String, Vec<u8>)], want: &[(String, Vec<u8>)], fix: &str) {
    assert_eq!(
        names(found),
        names(want),
        "{} holds other files than wit/",
        copy.display()
    );
    for ((name, want), (_, got)) in want.iter().zip(found) {
        assert!(
            want == got,
            "{}/{name} differs from wit/{name}: {fix}",
            copy.display()
        );
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_runtimes_copy_of_the_contract_equals_wit() {
    let contract = files(&root().join("wit"));
    let listed = names(&contract);
    assert!(
        listed.iter().any(|n| n == "plugin.wit"),
        "wit/plugin.wit is missing"
    );
    assert!(
        listed.iter().any(|n| n == "0.1.0/plugin.wit"),
        "wit/0.1.0/plugin.wit is missing: every supported contract version stays"
    );
    let copy = root().join("crates/plugd-wasm/wit");
    assert_same(
        &copy,
        &files(&copy),
        &contract,
        "copy wit/ over it (cp -r wit/* crates/plugd-wasm/wit/)",
    );
}

#[test]
fn the_sdks_copy_of_the_contract_equals_the_current_one() {
    let current: Vec<_> = files(&root().join("wit"))
        .into_iter()
        .filter(|(name, _)| !name.contains('/'))
        .collect();
    let copy = root().join("sdk/rust/wit");
    assert_same(
        &copy,
        &files(&copy),
        &current,
        "copy the current contract over it (cp wit/plugin.wit sdk/rust/wit/)",
    );
}

#[test]
fn a_published_contract_version_is_frozen() {
    let old = std::fs::read_to_string(root().join("wit/0.1.0/plugin.wit")).unwrap();
    assert!(old.contains("package plugd:plugin@0.1.0;"));
    assert!(
        old.contains("Frozen:"),
        "wit/0.1.0/plugin.wit says it is frozen"
    );
    // The bytes published with plugd 0.1 (docs/authors/contract-versions.md): a change to a
    // published version breaks every component built against it.
    let digest = old.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    assert_eq!(digest, FROZEN_0_1_0, "wit/0.1.0/plugin.wit changed");
}

/// FNV-1a of wit/0.1.0/plugin.wit as frozen.
const FROZEN_0_1_0: u64 = 0x76cb5e0f5b6cc4b4;
