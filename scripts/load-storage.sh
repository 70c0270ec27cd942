#!/usr/bin/env bash
# A benchmark, not a test: does one plugin writing its storage as fast as it can slow down the
# others? Starts `plugd serve` (release build) with hello, bench-storer (benches/plugins/storer)
# and a copy of it named quiet-storer, then measures with wrk (p50, p99, requests/s):
#   1. hello alone, and quiet-storer writing one 1 KiB value per request alone;
#   2. the same two while a second wrk hammers bench-storer with N values of K KiB per request.
# Each plugin's storage is its own SQLite file (plugins/<name>/kv.sqlite) written off the async
# workers, so phase 2 should cost hello nothing and quiet-storer little (the disk is shared).
# Prints a table (Markdown). Figures for BENCHMARKS.md ("Storage under load").
#
#   scripts/load-storage.sh                     # 10 s per phase, 50 values of 1 KiB
#   DURATION=30s VALUES=200 KIB=4 scripts/load-storage.sh
#   PLUGD=/path/to/other/plugd scripts/load-storage.sh   # the same load on another build
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-16}"
hammer_connections="${HAMMER_CONNECTIONS:-8}"
values="${VALUES:-50}"
kib="${KIB:-1}"
port="${PORT:-18191}"

# shellcheck source=lib/load.sh
source "$root/scripts/lib/load.sh"
load_setup load-storage
bash "$root/scripts/build-examples.sh" benches/plugins >/dev/null
plugd="${PLUGD:-$plugd}"

# quiet-storer: the same component under another name (so its own storage file).
mkdir -p "$work/quiet-storer"
cp "$root/benches/plugins/storer/plugin.wasm" "$work/quiet-storer/"
sed 's/^name: bench-storer$/name: quiet-storer/' "$root/benches/plugins/storer/plugin.yaml" \
    >"$work/quiet-storer/plugin.yaml"

cat >"$work/plugd.yaml" <<EOF
server: { listen: "127.0.0.1:$port" }
admin: { listen: "127.0.0.1:$((port + 1))" }
data_dir: "$work/data"
plugins:
  plugins:
    - name: hello
      path: "$root/examples/plugins/hello"
      permissions: { router: true }
    - name: bench-storer
      path: "$root/benches/plugins/storer"
      permissions: { router: true }
    - name: quiet-storer
      path: "$work/quiet-storer"
      permissions: { router: true }
EOF

base="http://127.0.0.1:$port"
start_server "$work/plugd.yaml" "$base/plugins/hello/greet?name=Ada"

hello_url="$base/plugins/hello/greet?name=Ada"
quiet_url="$base/plugins/quiet-storer/write?n=1&kb=1"
hammer_url="$base/plugins/bench-storer/write?n=$values&kb=$kib"
measure() { # url -> "p50 p99 rps bad"
    wrk -t2 -c"$connections" -d"$duration" --latency "$1" | summarize
}
# The url measured while bench-storer is hammered; prints "p50 p99 rps bad hammer-rps".
hammered() {
    wrk -t1 -c"$hammer_connections" -d"$duration" "$hammer_url" >"$work/hammer.out" &
    local hammer_pid=$!
    sleep 1
    local measured
    measured="$(measure "$1")"
    wait "$hammer_pid"
    echo "$measured $(summarize <"$work/hammer.out" | awk '{print $3}')"
}

# Warm up (instances, page cache, the storage files exist).
wrk -t1 -c4 -d2s "$hello_url" >/dev/null
wrk -t1 -c4 -d2s "$quiet_url" >/dev/null
wrk -t1 -c4 -d2s "$hammer_url" >/dev/null

hello_alone="$(measure "$hello_url") -"
quiet_alone="$(measure "$quiet_url") -"
hello_hammered="$(hammered "$hello_url")"
quiet_hammered="$(hammered "$quiet_url")"
curl -fsS "$base/healthz" >/dev/null || { echo "load-storage: /healthz failed after the load" >&2; exit 1; }

row() { # label, "p50 p99 rps bad hammer-rps"
    local p50 p99 rps bad hammer writes="-"
    read -r p50 p99 rps bad hammer <<<"$2"
    [[ "$hammer" == "-" ]] || writes=$((${hammer%.*} * values))
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$writes" "$p50" "$p99" "$rps" "$bad"
}
echo
echo "measured: wrk -t2 -c$connections -d$duration; bench-storer: wrk -t1 -c$hammer_connections, $values values of $kib KiB per request; $(nproc) CPUs"
echo
echo "| measured | bench-storer values written/s | p50 ms | p99 ms | requests/s | non-2xx |"
echo "|---|---|---|---|---|---|"
row "hello, alone" "$hello_alone"
row "quiet-storer (1 write per request), alone" "$quiet_alone"
row "hello, bench-storer hammered" "$hello_hammered"
row "quiet-storer, bench-storer hammered" "$quiet_hammered"
