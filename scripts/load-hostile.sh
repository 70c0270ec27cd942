#!/usr/bin/env bash
# A benchmark, not a test: how the well-behaved `hello` plugin answers while hostile plugins are
# hammered beside it. Starts `plugd serve` (release build) with hello and the attackers of
# tests/plugins, then measures hello's latency (p50, p99) and throughput with wrk:
#   1. hello alone;
#   2. hello while a second wrk hammers the attackers' routes (loops to the deadline, unbounded
#      allocation, traps, stack overflows, bodies over the cap, denied capability calls);
#   3. hello while the second wrk keeps hanger's pre_request hook spinning (x-loop: 1): every
#      request, hello's included, passes that hook and needs a free hanger instance.
# With PER_ATTACK=1, also one row per attack (each attacker's route hammered alone).
# Prints a table (Markdown). Figures for BENCHMARKS.md ("Hostile plugins").
#
#   scripts/load-hostile.sh                       # 10 s per phase
#   PER_ATTACK=1 DURATION=5s scripts/load-hostile.sh
#   DURATION=30s CONNECTIONS=32 scripts/load-hostile.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-16}"
attack_connections="${ATTACK_CONNECTIONS:-8}"
port="${PORT:-18181}"

# shellcheck source=lib/load.sh
source "$root/scripts/lib/load.sh"
load_setup load-hostile

attacker() { # name, extra entry lines
    printf '    - name: %s\n      path: "%s"\n%s' "$1" "$root/tests/plugins/$1" "$2"
}
{
    cat <<EOF
server: { listen: "127.0.0.1:$port" }
admin: { listen: "127.0.0.1:$((port + 1))" }
data_dir: "$work/data"
plugins:
  limits: { timeout: 500ms }
  plugins:
    - name: hello
      path: "$root/examples/plugins/hello"
      permissions: { router: true }
      limits: { timeout: 5s }
EOF
    attacker looper "      permissions: { router: true }
"
    attacker hanger "      permissions: { router: true, intercept: true }
"
    attacker hog "      permissions: { router: true }
"
    attacker crasher "      permissions: { router: true }
"
    attacker recurser "      permissions: { router: true }
"
    attacker bigbody "      permissions: { router: true }
"
    attacker nogrant ""
    attacker snoop "      permissions: { router: true }
"
    attacker gossip "      permissions: { router: true }
"
} >"$work/plugd.yaml"

base="http://127.0.0.1:$port"
start_server "$work/plugd.yaml" "$base/plugins/hello/greet?name=Ada"

# The attackers' requests, in rotation.
cat >"$work/attack.lua" <<'EOF'
local paths = {
    "/plugins/looper/spin",           -- loops until its 500 ms deadline: 504
    "/plugins/hog/alloc",             -- allocates until its 64 MiB cap: 500
    "/plugins/crasher/panic",         -- traps: 500
    "/plugins/recurser/deep",         -- overflows its stack: 500
    "/plugins/bigbody/huge?mib=16",   -- 16 MiB body over its 8 MiB cap: 500
    "/plugins/snoop/snoop",           -- probes other plugins' storage keys: 200
    "/plugins/gossip/publish?topic=admin.secret", -- undeclared event: 403
    "/plugins/nogrant/attack",        -- nogrant's hook makes a denied database call: 403
}
local i = 0
request = function()
    i = i + 1
    local path = paths[(i % #paths) + 1]
    -- Read by nogrant's pre_request hook, which sees only its own path (no `intercept`).
    return wrk.format("GET", path, { ["x-attack"] = "database" })
end
EOF
cat >"$work/hook.lua" <<'EOF'
wrk.headers["x-loop"] = "1"
EOF


hello_url="$base/plugins/hello/greet?name=Ada"
run_hello() {
    wrk -t2 -c"$connections" -d"$duration" --latency "$hello_url" | summarize
}

# hello measured while a second wrk runs with the given arguments; prints "p50 p99 rps bad
# attack-rps".
under_attack() {
    wrk -t1 -c"$attack_connections" -d"$duration" "$@" >"$work/attack.out" &
    local attack_pid=$!
    sleep 1
    local hello
    hello="$(run_hello)"
    wait "$attack_pid"
    echo "$hello $(summarize <"$work/attack.out" | awk '{print $3}')"
}

# Warm up (first instances, page cache), then the phases.
wrk -t1 -c4 -d2s "$hello_url" >/dev/null

alone="$(run_hello) -"
routes="$(under_attack -s "$work/attack.lua" "$base")"
hook="$(under_attack -s "$work/hook.lua" "$base/plugins/hanger/ok")"
singles=()
if [[ "${PER_ATTACK:-0}" == 1 ]]; then
    for path in /plugins/looper/spin /plugins/hog/alloc /plugins/crasher/panic /plugins/recurser/deep \
        "/plugins/bigbody/huge?mib=16" /plugins/snoop/snoop "/plugins/gossip/publish?topic=admin.secret"; do
        singles+=("$path|$(under_attack "$base$path")")
    done
fi
curl -fsS "$base/healthz" >/dev/null || { echo "load-hostile: /healthz failed after the attacks" >&2; exit 1; }

row() { # label, "p50 p99 rps bad attack-rps"
    read -r p50 p99 rps bad attack <<<"$2"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$attack" "$p50" "$p99" "$rps" "$bad"
}
echo
echo "hello: wrk -t2 -c$connections -d$duration; attackers: wrk -t1 -c$attack_connections; $(nproc) CPUs"
echo
echo "| hello's load | attack requests/s | p50 ms | p99 ms | requests/s | non-2xx |"
echo "|---|---|---|---|---|---|"
row "alone" "$alone"
row "all attackers' routes hammered" "$routes"
row "hanger's pre_request hook kept spinning (x-loop: 1)" "$hook"
for single in "${singles[@]}"; do
    row "\`${single%%|*}\` hammered" "${single#*|}"
done
