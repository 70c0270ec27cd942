#!/usr/bin/env bash
# The README's first command: build the example plugins (installing the wasm guest toolchain when
# it is missing), build plugd, and serve examples/plugd.yaml on 127.0.0.1:8080 (the admin API and
# dashboard on 127.0.0.1:8081).
#
#   scripts/serve.sh [extra plugd serve flags, e.g. --listen 127.0.0.1:9090]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build-examples.sh
cargo build --release -p plugd-cli --bin plugd
exec target/release/plugd serve --config examples/plugd.yaml "$@"
