#!/usr/bin/env bash
# The README's second command: the whole test suite, from a fresh clone.
# Installs the wasm guest toolchain and headless Chromium (scripts/browser.sh) when missing,
# builds every guest plugin, then runs formatting and lint checks, the dependency rules
# (scripts/check-deps.sh) and every test of the workspace (unit, integration, doc, and the
# dashboard in a real browser).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started=$SECONDS
step() { echo "==> $* ($((SECONDS - started))s)"; }

step "guest plugins"
bash scripts/build-examples.sh

step "headless chromium (dashboard browser test)"
bash scripts/browser.sh

step "plugin template toolchains (C, Python, JavaScript)"
bash scripts/author-toolchains.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "dependency rules (scripts/check-deps.sh)"
bash scripts/check-deps.sh

step "docs stand on their own (scripts/check-docs.sh)"
bash scripts/check-docs.sh

step "cargo test"
cargo test --workspace --locked

step "done"
