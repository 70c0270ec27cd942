#!/usr/bin/env bash
# Builds every guest plugin (examples/plugins/*, tests/plugins/*: each directory with a plugin.yaml
# and a Cargo.toml) for wasm32-wasip2 in release, with one shared target dir (target/guest), and
# copies each component next to its manifest as plugin.wasm. Quick when nothing changed; a
# plugin.wasm is only rewritten when its bytes change (file watchers see no spurious reloads).
#
#   scripts/build-examples.sh            # from any directory
#   scripts/build-examples.sh benches/plugins   # other guest workspaces (the benchmarks' guests)
#
# The toolchain comes from scripts/wasm-toolchain.sh (rustup's wasm32-wasip2, or Debian's
# rustc-web with -Zbuild-std, installed with apt when needed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
workspaces=(examples/plugins tests/plugins)
(($# == 0)) || workspaces=("$@")
target=wasm32-wasip2
target_dir="$root/target/guest"

# shellcheck source=wasm-toolchain.sh
source "$root/scripts/wasm-toolchain.sh" || { echo "build-examples: no wasm32-wasip2 toolchain" >&2; exit 1; }

fail() {
    echo "build-examples: ERROR: $*" >&2
    exit 1
}

package_name() { # the [package] name of a Cargo.toml
    sed -n '/^\[package\]/,/^\[/{s/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' "$1" | head -n 1
}

human_size() {
    awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.1f MiB", b / 1048576; else printf "%.1f KiB", b / 1024 }'
}

start=$SECONDS
for ws in "${workspaces[@]}"; do
    [[ -f "$root/$ws/Cargo.toml" ]] || fail "$ws/Cargo.toml is missing"
    # cargo reads .cargo/config.toml from the current directory: build from inside the workspace.
    (cd "$root/$ws" && plugd_guest_cargo build --release --target "$target" --target-dir "$target_dir") \
        || fail "cargo build failed in $ws (route: $PLUGD_GUEST_ROUTE)"
done

count=0
for ws in "${workspaces[@]}"; do
    for manifest in "$root/$ws"/*/plugin.yaml; do
        [[ -e "$manifest" ]] || continue
        dir="$(dirname "$manifest")"
        [[ -f "$dir/Cargo.toml" ]] || continue
        crate="$(package_name "$dir/Cargo.toml")"
        [[ -n "$crate" ]] || fail "no package name in ${dir#"$root"/}/Cargo.toml"
        built="$target_dir/$target/release/${crate//-/_}.wasm"
        [[ -f "$built" ]] || fail "$crate built no component at $built (is it a member of $ws with crate-type cdylib?)"
        # A component starts with \0asm and layer 1 (0d 00 01 00); a core module has version 1.
        [[ "$(head -c 8 "$built" | od -An -tx1 | tr -d ' \n')" == 0061736d0d000100 ]] \
            || fail "$built is not a WebAssembly component"
        # Every contract version plugd loads (crates/plugd-wasm/src/contract.rs: SUPPORTED_CONTRACTS).
        grep -qaE 'plugd:plugin/guest@0\.(2|1)\.0' "$built" || fail "$built exports neither plugd:plugin/guest@0.2.0 nor @0.1.0"
        out="$dir/plugin.wasm"
        if ! cmp -s "$built" "$out"; then
            cp "$built" "$out.tmp.$$"
            mv -f "$out.tmp.$$" "$out"
        fi
        size=$(wc -c <"$out")
        printf '%-12s %-40s %10s\n' "$(basename "$dir")" "${out#"$root"/}" "$(human_size "$size")"
        count=$((count + 1))
    done
done
((count > 0)) || fail "no guest plugins found"
echo "built $count guest plugins in $((SECONDS - start)) s (toolchain: $PLUGD_GUEST_ROUTE)" >&2
