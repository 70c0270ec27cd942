#!/usr/bin/env bash
# Builds plugin.wasm from app.py with componentize-py (pinned). Uses componentize-py from PATH
# when it is that version, else installs it with pip into a shared virtual environment
# (${PLUGD_TOOLS:-~/.cache/plugd/tools}/componentize-py-<version>); python3-venv comes from apt
# when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version={{componentize_py}}
cpy=componentize-py
if ! { command -v componentize-py >/dev/null 2>&1 && componentize-py --version 2>/dev/null | grep -qx "componentize-py $version"; }; then
    venv="${PLUGD_TOOLS:-$HOME/.cache/plugd/tools}/componentize-py-$version"
    cpy="$venv/bin/componentize-py"
    if [[ ! -x "$cpy" ]]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
            sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
            echo "build.sh: installing python3-venv (apt)" >&2
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >&2
        fi
        echo "build.sh: pip install componentize-py==$version into $venv" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet "componentize-py==$version" >&2
    fi
fi
"$cpy" -d wit -w plugin componentize app -o plugin.wasm.tmp >&2
mv -f plugin.wasm.tmp plugin.wasm
echo "build.sh: plugin.wasm ($(wc -c <plugin.wasm) bytes)" >&2
