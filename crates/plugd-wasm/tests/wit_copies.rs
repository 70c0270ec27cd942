//! The contract's copies: a published crate carries the files it builds from, so the runtime
//! (crates/plugd-wasm/wit) and the guest SDK (sdk/rust/wit) each hold a copy of the repository's
//! `wit/`. They must stay byte-for-byte equal to it: a copy that drifts would make hosts and
//! guests disagree about the contract.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        // `deps/` of the runtime's copy holds the standard WASI interfaces it serves (vendored,
        // not copies of the contract).
        .filter(|path| !(path.is_dir() && path.file_name().is_some_and(|n| n == "deps")))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_copy_of_the_contract_equals_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let contract = files(&root.join("wit"));
    assert!(
        contract.iter().any(|(name, _)| name == "plugin.wit"),
        "wit/plugin.wit is missing"
    );
    let copies: [PathBuf; 2] = [
        root.join("crates/plugd-wasm/wit"),
        root.join("sdk/rust/wit"),
    ];
    for copy in copies {
        let found = files(&copy);
        let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&found),
            names(&contract),
            "{} holds other files than wit/",
            copy.display()
        );
        for ((name, want), (_, got)) in contract.iter().zip(&found) {
            assert!(
                want == got,
                "{}/{name} differs from wit/{name}: copy wit/ over it (cp wit/* {}/)",
                copy.display(),
                copy.display()
            );
        }
    }
}
