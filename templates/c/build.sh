#!/usr/bin/env bash
# Builds plugin.wasm from plugin.c: clang (wasm32-wasi, reactor) with wasi-libc makes a core
# module, `plugd componentize` wraps it into a component (WASI preview 1 adapted to preview 2).
# Installs clang-14, lld-14, wasi-libc and the wasm32 compiler runtime with apt when missing.
# Needs plugd: $PLUGD (set by `plugd build`), else `plugd` on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
plugd="${PLUGD:-plugd}"
pkgs=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
if ! dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -c '^install ok installed' | grep -qx "${#pkgs[@]}"; then
    sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    echo "build.sh: installing ${pkgs[*]} (apt)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
fi
# The bindings of the contract this plugd speaks.
"$plugd" bindings c -o bindings
clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor \
    -Wall -Wno-unused-parameter -Wno-unused-function \
    -o plugin.core.wasm plugin.c bindings/plugin.c bindings/plugin_component_type.o
"$plugd" componentize plugin.core.wasm -o plugin.wasm
rm -f plugin.core.wasm
echo "build.sh: plugin.wasm ($(wc -c <plugin.wasm) bytes)" >&2
