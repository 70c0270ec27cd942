#!/usr/bin/env bash
# Installs the toolchains of the non-Rust plugin templates (plugd new --lang js|python|c), for
# the template test (crates/plugd-cli/tests/it/templates.rs). Idempotent: each step is skipped when
# its tool is present. The templates' build.sh scripts look in the same places and install the
# same versions themselves when run alone.
#
#   C       clang-14, lld-14, wasi-libc, libclang-rt-14-dev-wasm32 (apt)
#   Python  componentize-py 0.25.1: from PATH when it is that version, else pip into a venv
#   JS      @bytecodealliance/componentize-js 0.23.0 (npm), node and npm from apt when missing
# Tools go to ${PLUGD_TOOLS:-~/.cache/plugd/tools}. Versions: keep in step with
# crates/plugd-cli/src/cli/author.rs (COMPONENTIZE_PY, COMPONENTIZE_JS; a unit test checks).
set -euo pipefail
componentize_py=0.25.1
componentize_js=0.23.0
tools="${PLUGD_TOOLS:-$HOME/.cache/plugd/tools}"
started=$SECONDS
note() { echo "author-toolchains: $*" >&2; }
sudo=()
[[ "$(id -u)" == 0 ]] || sudo=(sudo)
apt_updated=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if ((apt_updated == 0)); then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    note "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

apt_install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32

if ! { command -v componentize-py >/dev/null 2>&1 \
    && componentize-py --version 2>/dev/null | grep -qx "componentize-py $componentize_py"; }; then
    venv="$tools/componentize-py-$componentize_py"
    if [[ ! -x "$venv/bin/componentize-py" ]]; then
        python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv python3-pip
        note "pip install componentize-py==$componentize_py into $venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet "componentize-py==$componentize_py" >&2
    fi
fi

command -v npm >/dev/null 2>&1 || apt_install nodejs npm
js="$tools/componentize-js-$componentize_js"
if [[ ! -x "$js/node_modules/.bin/componentize-js" ]]; then
    note "npm install @bytecodealliance/componentize-js@$componentize_js into $js"
    mkdir -p "$js"
    [[ -f "$js/package.json" ]] || echo '{"private":true}' >"$js/package.json"
    (cd "$js" && npm install --no-audit --no-fund --loglevel=error "@bytecodealliance/componentize-js@$componentize_js" >&2)
fi
note "ready in $((SECONDS - started)) s"
