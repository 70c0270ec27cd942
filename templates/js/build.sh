#!/usr/bin/env bash
# Builds plugin.wasm from plugin.js with componentize-js (pinned), installed with npm into a
# shared tool folder (${PLUGD_TOOLS:-~/.cache/plugd/tools}) when missing; node and npm come
# from apt when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version={{componentize_js}}
tools="${PLUGD_TOOLS:-$HOME/.cache/plugd/tools}/componentize-js-$version"
if ! command -v npm >/dev/null 2>&1; then
    sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    echo "build.sh: installing nodejs and npm (apt)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
fi
if [[ ! -x "$tools/node_modules/.bin/componentize-js" ]]; then
    echo "build.sh: npm install @bytecodealliance/componentize-js@$version into $tools" >&2
    mkdir -p "$tools"
    (cd "$tools" && { [[ -f package.json ]] || echo '{"private":true}' >package.json; } \
        && npm install --no-audit --no-fund --loglevel=error "@bytecodealliance/componentize-js@$version" >&2)
fi
# `-d fetch-event`: a plugd plugin exports plugd:plugin/guest, not wasi:http/incoming-handler.
# fetch() stays on (no `-d http`): it goes out through wasi:http/outgoing-handler, which the host
# holds to the plugin's `network` permission and network.allow like outbound.fetch.
"$tools/node_modules/.bin/componentize-js" --wit wit --world-name plugin \
    -d fetch-event -o plugin.wasm.tmp plugin.js >&2
mv -f plugin.wasm.tmp plugin.wasm
echo "build.sh: plugin.wasm ($(wc -c <plugin.wasm) bytes)" >&2
