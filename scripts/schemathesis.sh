#!/usr/bin/env bash
# Run schemathesis against the admin API: every check, every operation of the OpenAPI document
# the server itself serves (/admin/openapi.json), with the admin token. A clean run means the
# server never answers 5xx, and the document says exactly what the server accepts and answers.
# Not run by CI (it needs Python and a running server); RELIABILITY.md records the last run.
#
#   scripts/schemathesis.sh [extra `schemathesis run` flags, e.g. --max-examples 20]
#
# Installs schemathesis (pinned) into a venv under target/, builds the example plugins and a
# debug plugd, serves examples/plugd.yaml from a temporary data folder on two free loopback
# ports with a fixed admin token, runs schemathesis, and stops the server (by its PID). The
# reports (JUnit, NDJSON) are left in target/schemathesis/. scripts/schemathesis.toml lets two
# operations answer schema-valid data with their documented 422 (it says why).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version=4.32.5
venv="$root/target/schemathesis-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q -F "version $version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

bash scripts/build-examples.sh examples/plugins
cargo build -p plugd-cli --bin plugd --locked
plugd="${CARGO_TARGET_DIR:-$root/target}/debug/plugd"

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Two free loopback ports (the usual 8080/8081 may be taken by a server already running).
read -r port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

# The example config, with its folders made absolute, the data folder temporary, the file
# watcher off (nothing changes on disk during the run) and the chosen ports.
sed -e "s|listen: 127.0.0.1:8080|listen: 127.0.0.1:$port|" \
    -e "s|listen: 127.0.0.1:8081|listen: 127.0.0.1:$admin_port|" \
    -e "s|^data_dir: .*|data_dir: $work/data|" \
    -e "s|directory: ./plugins|directory: $root/examples/plugins|" \
    -e "s|hot_reload: true|hot_reload: false|" \
    examples/plugd.yaml >"$work/plugd.yaml"

token=schemathesis-admin-token
PLUGD_ADMIN_TOKEN="$token" "$plugd" serve --config "$work/plugd.yaml" >"$work/serve.log" 2>&1 &
server_pid=$!

base="http://127.0.0.1:$admin_port"
for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "$base/admin/openapi.json" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.5
done

reports="$root/target/schemathesis"
mkdir -p "$reports"
rc=0
# From the reports folder: schemathesis keeps its cache (.schemathesis/) in the working folder.
cd "$reports"
"$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" run "$base/admin/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --generation-deterministic \
    --report junit,ndjson --report-dir "$reports" \
    --no-color \
    "$@" || rc=$?

if grep -q 'panicked' "$work/serve.log"; then
    echo "schemathesis: the server panicked:" >&2
    grep -A5 'panicked' "$work/serve.log" | tail -n 40 >&2
    rc=1
fi
exit "$rc"
