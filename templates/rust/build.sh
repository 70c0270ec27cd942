#!/usr/bin/env bash
# Builds plugin.wasm (a wasm32-wasip2 component) from this Rust crate.
# Toolchain: rustup's wasm32-wasip2 target (added when missing), or, when rustup cannot
# download it, Debian's rustc-web packages with -Zbuild-std (installed with apt).
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target=wasm32-wasip2
flags=()
if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    cargo=(cargo)
elif command -v rustup >/dev/null 2>&1 && timeout 300 rustup target add "$target" >&2; then
    cargo=(cargo)
else
    pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc)
    if ! dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -c '^install ok installed' | grep -qx "${#pkgs[@]}"; then
        sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
        echo "build.sh: installing ${pkgs[*]} (apt)" >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
    fi
    cargo=(env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 /usr/bin/cargo)
    flags=(-Zbuild-std=std,panic_abort)
fi
"${cargo[@]}" build --release "${flags[@]}" --target "$target"
out="${CARGO_TARGET_DIR:-target}/$target/release/{{ident}}.wasm"
cp "$out" plugin.wasm.tmp && mv -f plugin.wasm.tmp plugin.wasm
echo "build.sh: plugin.wasm ($(wc -c <plugin.wasm) bytes)" >&2
