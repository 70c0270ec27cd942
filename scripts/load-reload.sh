#!/usr/bin/env bash
# A benchmark, not a test: hot reload under steady load. Starts `plugd serve` (release build) with
# a copy of the `reloader` test plugin, drives it with wrk, and reloads it N times while the load
# runs (each reload is a new version: a new manifest next to the component). Reports:
#   - failed requests (non-2xx and socket errors; the target is 0);
#   - p50/p99 latency without reloads and during them (the added p99);
#   - reload duration (median, max) as the admin API reports it;
#   - resident memory of the server before and after, and after many more reloads without load
#     (the previous versions must be released: memory stays flat).
# Prints a Markdown table for BENCHMARKS.md ("Hot reload").
#
#   scripts/load-reload.sh                      # 10 s phases, 20 reloads under load, 200 after
#   DURATION=30s RELOADS=50 MORE=500 scripts/load-reload.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-16}"
reloads="${RELOADS:-20}"
more="${MORE:-200}"
port="${PORT:-18282}"
token="load-reload-token"

# shellcheck source=lib/load.sh
source "$root/scripts/lib/load.sh"
load_setup load-reload

plugin="$work/reloader"
mkdir -p "$plugin"
cp "$root/tests/plugins/reloader/plugin.wasm" "$plugin/plugin.wasm"
write_version() { # version label
    cat >"$plugin/.plugin.yaml.tmp" <<EOF
name: reloader
version: $1
description: reload load test
author: plugd
permissions: { router: true }
capabilities: [hot_reload]
config:
  label: { type: string, default: "$2" }
  mode: { type: string, default: "ok" }
EOF
    mv -f "$plugin/.plugin.yaml.tmp" "$plugin/plugin.yaml"
}
write_version 1.0.0 v0

cat >"$work/plugd.yaml" <<EOF
server: { listen: "127.0.0.1:$port" }
admin: { token: "$token", listen: "127.0.0.1:$((port + 1))" }
data_dir: "$work/data"
plugins:
  reload: { queue_strategy: block, queue_timeout: 30s }
  plugins:
    - name: reloader
      path: "$plugin"
      permissions: { router: true }
EOF

base="http://127.0.0.1:$port"
admin="http://127.0.0.1:$((port + 1))"
start_server "$work/plugd.yaml" "$base/plugins/reloader/version"

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }

url="$base/plugins/reloader/version"
load() { wrk -t2 -c"$connections" -d"$duration" --latency "$url"; }

# One reload to a new version; prints its duration in ms (the server's figure).
n=0
reload_once() {
    n=$((n + 1))
    write_version "1.0.$n" "v$n"
    curl -fsS -X POST -H "Authorization: Bearer $token" "$admin/admin/plugins/reloader/reload" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration_ms"])'
}

wrk -t1 -c4 -d2s "$url" >/dev/null # warm up
rss_start="$(rss_mib)"
alone="$(load | summarize)"

load >"$work/during.out" &
wrk_pid=$!
sleep 1
durations=()
for _ in $(seq 1 "$reloads"); do
    durations+=("$(reload_once)")
    sleep 0.2
done
wait "$wrk_pid"
during="$(summarize <"$work/during.out")"
rss_after_load="$(rss_mib)"

for _ in $(seq 1 "$more"); do
    reload_once >/dev/null
done
sleep 1
rss_after_more="$(rss_mib)"
curl -fsS "$url" | grep -q "\"v$n\"" || { echo "load-reload: the last version does not serve" >&2; exit 1; }

stats="$(printf '%s\n' "${durations[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f %.1f", a[int((NR + 1) / 2)], a[NR] }')"
read -r median max <<<"$stats"
read -r p50a p99a rpsa bada <<<"$alone"
read -r p50d p99d rpsd badd <<<"$during"

echo
echo "wrk -t2 -c$connections -d$duration on /plugins/reloader/version; $reloads reloads during the load, then $more more; $(nproc) CPUs"
echo
echo "| phase | requests/s | p50 ms | p99 ms | failed requests |"
echo "|---|---|---|---|---|"
printf '| no reloads | %s | %s | %s | %s |\n' "$rpsa" "$p50a" "$p99a" "$bada"
printf '| %s reloads during the run | %s | %s | %s | %s |\n' "$reloads" "$rpsd" "$p50d" "$p99d" "$badd"
echo
echo "| reload duration median ms | max ms | RSS at start MiB | after the loaded run | after $more more reloads |"
echo "|---|---|---|---|---|"
printf '| %s | %s | %s | %s | %s |\n' "$median" "$max" "$rss_start" "$rss_after_load" "$rss_after_more"
