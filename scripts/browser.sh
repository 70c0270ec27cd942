#!/usr/bin/env bash
# Makes a headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`) available
# for the dashboard's browser test (crates/plugd-cli/tests/it/dashboard.rs). Installs them with apt when
# missing; does nothing when both are present. Prints the two paths.
#
# Usage: bash scripts/browser.sh
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have; then
    echo "browser: installing chromium and chromium-driver with apt" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if ! have; then
    echo "browser: ERROR: chromium or chromedriver is still missing after apt-get install" >&2
    exit 1
fi
echo "browser: $(command -v chromium) ($(chromium --version 2>/dev/null | head -n1)), $(command -v chromedriver)" >&2
