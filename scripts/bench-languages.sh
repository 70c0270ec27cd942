#!/usr/bin/env bash
# BENCHMARKS.md "Plugin languages": makes one plugin per template (plugd new), times its build
# (plugd build, toolchains already installed by scripts/author-toolchains.sh), then measures
# load and call costs with crates/plugd-test/examples/lang_bench.rs.
#
#   scripts/bench-languages.sh [--release]      # default: the debug host, as `cargo test` runs it
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile=(); dir=debug
if [[ "${1:-}" == --release ]]; then profile=(--release); dir=release; fi
bash scripts/author-toolchains.sh
cargo build -q "${profile[@]}" -p plugd-cli --bin plugd
cargo build -q "${profile[@]}" -p plugd-test --example lang_bench
plugd="$root/target/$dir/plugd"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/rust-target"   # a cold Rust build, SDK and std included
for lang in rust js python c; do
    (cd "$work" && "$plugd" new "bench-$lang" --lang "$lang" --hooks pre_request --route >/dev/null)
    start=$(date +%s%N)
    "$plugd" build "$work/bench-$lang" >/dev/null 2>&1
    ms=$((($(date +%s%N) - start) / 1000000))
    printf 'bench-%s: build %d.%d s\n' "$lang" $((ms / 1000)) $((ms % 1000 / 100))
    "$root/target/$dir/examples/lang_bench" "$work/bench-$lang" 2000
done
