#!/usr/bin/env bash
# The README's second command: the whole test suite, from a fresh clone.
# Installs the wasm guest toolchain and headless Chromium (scripts/browser.sh) when missing,
# builds every guest plugin, then runs formatting and lint checks, the dependency rules
# (scripts/check-deps.sh), the fleet's servers (scripts/services.sh: PostgreSQL, Redis, NATS), the deployment files (scripts/check-deploy.sh), `cargo package` of the
# published crates (scripts/package.sh), cargo deny (installing it when missing), and every test
# of the workspace (unit, integration, doc, and the dashboard in a real browser).
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

step "deployment files (scripts/check-deploy.sh)"
bash scripts/check-deploy.sh

step "published crates package (scripts/package.sh)"
bash scripts/package.sh

step "cargo deny (licenses, bans, sources; advisories when the database is reachable)"
# Installed once (a long compile; docs/maintainers.md), then found on the PATH.
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
# The advisory database comes from GitHub; where it cannot be fetched the other checks still run.
if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
    cargo deny --locked check
else
    echo "cargo deny: the advisory database could not be fetched: advisories NOT checked" >&2
    cargo deny --locked check licenses bans sources
fi

step "PostgreSQL, Redis, NATS JetStream, nginx, wrk (the fleet backends' tests; scripts/services.sh)"
bash scripts/services.sh

step "sqlite3 (the backup script's test)"
command -v sqlite3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq sqlite3; }

step "cargo test"
cargo test --workspace --locked

step "guest SDK unit tests (sdk/rust: a crate of its own, tested on the host target)"
cargo test --manifest-path sdk/rust/Cargo.toml --target-dir "$root/target/sdk"

step "done"
