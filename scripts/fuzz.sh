#!/usr/bin/env bash
# Fuzz plugd's readers of untrusted text and bytes with cargo-fuzz (libFuzzer), one target after
# the other, then minimise each corpus. Not run by CI: CI replays the committed corpus through
# ordinary tests (crates/plugd-manifest/tests/fuzz_corpus.rs, crates/plugd-pkg/tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [seconds-per-target]     # default 60
#   FUZZ_TARGETS="manifest catalog_index" scripts/fuzz.sh 300
#
# Targets (fuzz/fuzz_targets/):
#   manifest       Manifest::from_str, the input read as YAML, JSON and TOML
#   host_config    HostConfig::from_str, the same three formats
#   package        Package::read on raw .plugd bytes (zstd, then tar)
#   package_tar    Package::read on the input as the tar inside a package (compressed first)
#   catalog_index  Index::parse on index.json bytes
#
# Each corpus (fuzz/corpus/<target>/, committed) first gets the repository's own inputs: every
# plugin manifest and host config in the tree (and JSON copies of them), and packages and a
# catalog index made by `plugd pack`, `plugd sign` and `plugd catalog build` from the example
# plugins' manifests (with a stand-in component, so the inputs stay small). Crashes land in
# fuzz/artifacts/<target>/ (not committed); a crash does not stop the other targets, and the
# script exits 1 at the end when any target failed.
#
# Needs the nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz when missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2; exit 2; }
targets=(${FUZZ_TARGETS:-manifest host_config package package_tar catalog_index})

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup run nightly rustc --version >/dev/null 2>&1 || {
    echo "fuzz: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
}

corpus="$root/fuzz/corpus"
mkdir -p "${targets[@]/#/$corpus/}"

# Copy a file into a corpus under the SHA-1 of its bytes (libFuzzer's own naming), so running the
# script again adds nothing twice.
add() { # add TARGET FILE
    local sum
    sum=$(sha1sum "$2" | cut -d' ' -f1)
    [[ -e "$corpus/$1/$sum" ]] || cp "$2" "$corpus/$1/$sum"
}

# A YAML file as JSON (when python3 has PyYAML), for the JSON reader.
add_json_copy() { # add_json_copy TARGET FILE
    local out
    out=$(mktemp)
    if python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout, indent=2)' "$2" >"$out" 2>/dev/null; then
        add "$1" "$out"
    fi
    rm -f "$out"
}

text_inputs() {
    local f
    for f in examples/plugins/*/plugin.yaml tests/plugins/*/plugin.yaml benches/plugins/*/plugin.yaml templates/*/plugin.yaml; do
        [[ -f "$f" ]] || continue
        add manifest "$f"
        add_json_copy manifest "$f"
    done
    for f in examples/plugd.yaml; do
        add host_config "$f"
        add_json_copy host_config "$f"
    done
    # The YAML, JSON and TOML examples of the documentation, to both readers.
    local blocks
    blocks=$(mktemp -d)
    python3 - "$blocks" README.md docs/*.md docs/*/*.md <<'PY'
import re, sys
out, n = sys.argv[1], 0
for path in sys.argv[2:]:
    text = open(path, encoding="utf-8").read()
    for block in re.findall(r"```(?:yaml|yml|json|toml)\n(.*?)```", text, re.S):
        n += 1
        open(f"{out}/{n}", "w", encoding="utf-8").write(block)
PY
    for f in "$blocks"/*; do
        [[ -f "$f" ]] || continue
        add manifest "$f"
        add host_config "$f"
    done
    rm -rf "$blocks"
}

# Packages and an index, from the example plugins' manifests with a stand-in component (an
# empty wasm module), an asset and a migration; one package signed. Made only when the package
# corpus is empty: it needs a debug build of plugd.
package_inputs() {
    [[ -z "$(ls -A "$corpus/package")" ]] || return 0
    cargo build -p plugd-cli --bin plugd --locked
    local plugd="${CARGO_TARGET_DIR:-$root/target}/debug/plugd"
    local work
    work=$(mktemp -d)
    mkdir -p "$work/catalog"
    for dir in examples/plugins/*/; do
        local name
        name=$(basename "$dir")
        [[ -f "$dir/plugin.yaml" ]] || continue
        mkdir -p "$work/$name/assets" "$work/$name/migrations"
        cp "$dir/plugin.yaml" "$work/$name/plugin.yaml"
        printf '\0asm\1\0\0\0' >"$work/$name/plugin.wasm"
        printf 'body { margin: 0 }\n' >"$work/$name/assets/site.css"
        printf 'create table notes (id integer primary key, text text);\n' >"$work/$name/migrations/001_notes.sql"
        "$plugd" pack "$work/$name" --output "$work/catalog/" >/dev/null
    done
    "$plugd" keygen "$work/key" >/dev/null
    local first
    first=$(ls "$work"/catalog/*.plugd | head -n 1)
    "$plugd" sign "$first" --key "$work/key.key" >/dev/null
    "$plugd" catalog build "$work/catalog" >/dev/null
    local p
    for p in "$work"/catalog/*.plugd; do
        add package "$p"
        zstd -q -d -c "$p" >"$work/tar" && add package_tar "$work/tar"
    done
    add catalog_index "$work/catalog/index.json"
    rm -rf "$work"
}

text_inputs
package_inputs

# The fuzz builds (nightly, sanitizer, debug assertions for overflow checks) keep a target folder
# of their own, so they never invalidate the workspace's.
cd "$root/fuzz"
export CARGO_TARGET_DIR="$root/fuzz/target"
cargo +nightly fuzz build -O -a

declare -A execs took size failed
status=0
for t in "${targets[@]}"; do
    echo "==> fuzz $t for ${seconds}s"
    log=$(mktemp)
    start=$SECONDS
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: the package reader may hold
    # up to its limits in memory, not more.
    rc=0
    cargo +nightly fuzz run -O -a "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+.*DONE|^==[0-9]+==|^SUMMARY|Test unit written|panicked at' "$log" || true
    if ((rc != 0)); then
        failed[$t]=yes
        status=1
        echo "fuzz: $t FAILED (exit $rc), see fuzz/artifacts/$t/; the last lines:" >&2
        tail -n 30 "$log" >&2
    fi
    took[$t]=$((SECONDS - start))
    execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rm -f "$log"
    echo "==> minimise corpus/$t"
    cargo +nightly fuzz cmin -O -a "$t" "corpus/$t" >/dev/null 2>&1 || echo "fuzz: cmin of $t failed" >&2
    size[$t]="$(ls "corpus/$t" | wc -l) files, $(du -sh --apparent-size "corpus/$t" | cut -f1)"
done

echo
printf '%-14s %14s %8s  %-22s %s\n' target execs seconds corpus result
for t in "${targets[@]}"; do
    printf '%-14s %14s %8s  %-22s %s\n' "$t" "${execs[$t]:-?}" "${took[$t]}" "${size[$t]}" \
        "$([[ -n "${failed[$t]:-}" ]] && echo CRASH || echo ok)"
done
exit "$status"
