#!/usr/bin/env bash
# A benchmark, not a test: how the well-behaved `hello` plugin answers while hostile plugins are
# hammered beside it. Starts `plugd serve` (release build) with hello and the attackers of
# tests/plugins, then measures hello's latency (p50, p99) and throughput with wrk:
#   1. hello alone;
#   2. hello while a second wrk hammers the attackers' routes (loops to the deadline, unbounded
#      allocation, traps, stack overflows, bodies over the cap, denied capability calls);
#   3. hello while the second wrk keeps hanger's pre_request hook spinning (x-loop: 1): every
#      request, hello's included, passes that hook and needs a free hanger instance;
#   4. hello while the second wrk runs exhauster's floods: log lines and stdout/stderr over its
#      rate, request locals over the cap, storage past its quota, header bombs, events to a slow
#      subscriber, metric labels over the cap (each answered as designed: 200 with the refusal in
#      the body, or 500 for a header bomb).
# With PER_ATTACK=1, also one row per attack (each attacker's route hammered alone).
# Prints a table (Markdown). Figures for BENCHMARKS.md ("Hostile plugins").
#
# It also checks that every attack was contained as designed, counting the status of every attack
# request (wrk's response callback), and exits 1 naming the phase and the statuses when one was
# not: looper 504 (interrupted at its deadline); hog, crasher, recurser and bigbody 500 (out of
# memory, trap, stack overflow, body over the cap); gossip and nogrant 403 (an undeclared event, a
# denied database call); snoop 200 (its probes find nothing: the hostile suite checks the body);
# hanger's spinning hook 200 (fail_open: the hook is interrupted, the request goes on). In the
# rotation an answer may be missing for each attack connection (in flight when wrk stops), never
# more, and no status may come more often than the requests designed to get it.
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
    attacker exhauster "      permissions: { router: true, filesystem: true }
      limits: { timeout: 5s, storage_bytes: 16MiB, instances: 4 }
"
} >"$work/plugd.yaml"

base="http://127.0.0.1:$port"
start_server "$work/plugd.yaml" "$base/plugins/hello/greet?name=Ada"

# Counts the status of every answer (per wrk thread) and writes, to $STATUS_FILE, "answered STATUS
# N" lines, and "issued STATUS N" for the requests the rotation sent designed to get STATUS.
cat >"$work/count.lua" <<'EOF'
issued = {}
answered = {}
local threads = {}
setup = function(thread)
    table.insert(threads, thread)
end
response = function(status, headers, body)
    answered[status] = (answered[status] or 0) + 1
end
done = function(summary, latency, requests)
    local out = assert(io.open(os.getenv("STATUS_FILE"), "w"))
    for _, thread in ipairs(threads) do
        for _, kind in ipairs({ "issued", "answered" }) do
            for status, n in pairs(thread:get(kind) or {}) do
                out:write(string.format("%s %d %d\n", kind, status, n))
            end
        end
    end
    out:close()
end
EOF

# The attackers' requests, in rotation, each with the status it is answered with by design.
{
    cat <<'EOF'
local attacks = {
    { "/plugins/looper/spin", 504 },          -- loops until its 500 ms deadline
    { "/plugins/hog/alloc", 500 },            -- allocates until its 64 MiB cap
    { "/plugins/crasher/panic", 500 },        -- traps
    { "/plugins/recurser/deep", 500 },        -- overflows its stack
    { "/plugins/bigbody/huge?mib=16", 500 },  -- 16 MiB body over its 8 MiB cap
    { "/plugins/snoop/snoop", 200 },          -- probes other plugins' storage keys, finds nothing
    { "/plugins/gossip/publish?topic=admin.secret", 403 }, -- undeclared event
    { "/plugins/nogrant/attack", 403 },       -- nogrant's hook makes a denied database call
}
local i = 0
request = function()
    i = i + 1
    local attack = attacks[(i % #attacks) + 1]
    issued[attack[2]] = (issued[attack[2]] or 0) + 1
    -- Read by nogrant's pre_request hook, which sees only its own path (no `intercept`).
    return wrk.format("GET", attack[1], { ["x-attack"] = "database" })
end
EOF
    cat "$work/count.lua"
} >"$work/attack.lua"
{
    echo 'wrk.headers["x-loop"] = "1"'
    cat "$work/count.lua"
} >"$work/hook.lua"
# exhauster's floods, in rotation, each with its designed status.
{
    cat <<'EOF'
local attacks = {
    { "/plugins/exhauster/log?n=200&kib=64", 200 },       -- 12.5 MiB of log lines: its rate drops them
    { "/plugins/exhauster/stdio?mib=4", 200 },            -- 4 MiB to stdout and stderr: same rate
    { "/plugins/exhauster/locals?n=512&kib=64", 200 },    -- 32 MiB of locals: the 256 KiB cap keeps 3
    { "/plugins/exhauster/store?n=64&kib=256", 200 },     -- 16 MiB of storage: its quota refuses
    { "/plugins/exhauster/bomb?n=30000", 500 },           -- 30,000 headers: the plugin's error
    { "/plugins/exhauster/publish?n=4&kib=256", 200 },    -- 1 MiB of events to its slow subscriber (its queue: 16 MiB)
    { "/plugins/exhauster/label?kib=64", 200 },           -- a 64 KiB label and 2,000 series: refused
}
local i = 0
request = function()
    i = i + 1
    local attack = attacks[(i % #attacks) + 1]
    issued[attack[2]] = (issued[attack[2]] or 0) + 1
    return wrk.format("GET", attack[1])
end
EOF
    cat "$work/count.lua"
} >"$work/exhaust.lua"

# check_statuses PHASE FILE DESIGNED: with DESIGNED a status, every answer had it; with DESIGNED
# "rotation", each status came at most as often as the requests designed to get it, and at most
# one less per attack connection. Exits 1 with the statuses when not.
check_statuses() {
    local phase="$1" file="$2" designed="$3" verdict
    verdict="$(awk -v designed="$designed" -v slack="$attack_connections" '
        $1 == "issued" { issued[$2] += $3 }
        $1 == "answered" { answered[$2] += $3; total += $3 }
        END {
            if (total == 0) { print "no attack request was answered"; exit }
            for (s in answered) {
                if (designed != "rotation" && s != designed)
                    bad = bad sprintf(" %d x %s (designed: %s)", answered[s], s, designed)
                if (designed == "rotation" && answered[s] > issued[s] + 0)
                    bad = bad sprintf(" %d x %s for %d requests designed to get it", answered[s], s, issued[s] + 0)
            }
            if (designed == "rotation")
                for (s in issued)
                    if (answered[s] + slack < issued[s])
                        bad = bad sprintf(" only %d x %s for %d requests designed to get it", answered[s] + 0, s, issued[s])
            print (bad == "" ? "ok" : "statuses:" bad)
        }' "$file")"
    if [[ "$verdict" != ok ]]; then
        echo "load-hostile: the attack on $phase was not contained as designed: $verdict" >&2
        exit 1
    fi
}

hello_url="$base/plugins/hello/greet?name=Ada"
server_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
run_hello() {
    wrk -t2 -c"$connections" -d"$duration" --latency "$hello_url" | summarize
}

# hello measured while a second wrk runs with the given arguments; prints "p50 p99 rps bad
# attack-rps".
# under_attack PHASE DESIGNED WRK-ARGS...: the attack's statuses are checked against DESIGNED
# (see check_statuses).
under_attack() {
    local phase="$1" designed="$2"
    shift 2
    STATUS_FILE="$work/statuses" wrk -t1 -c"$attack_connections" -d"$duration" "$@" >"$work/attack.out" &
    local attack_pid=$!
    sleep 1
    local hello
    hello="$(run_hello)"
    wait "$attack_pid"
    check_statuses "$phase" "$work/statuses" "$designed"
    echo "$hello $(summarize <"$work/attack.out" | awk '{print $3}')"
}

# Warm up (first instances, page cache), then the phases.
wrk -t1 -c4 -d2s "$hello_url" >/dev/null

alone="$(run_hello) -"
# Each phase runs in a command substitution: a failed check ends it with status 1, and set -e
# ends the script with it (the message is already on stderr).
routes="$(under_attack "all attackers' routes" rotation -s "$work/attack.lua" "$base")"
hook="$(under_attack "hanger's spinning hook" 200 -s "$work/hook.lua" "$base/plugins/hanger/ok")"
rss_before_floods="$(server_rss_kib)"
floods="$(under_attack "exhauster's floods" rotation -s "$work/exhaust.lua" "$base")"
rss_after_floods="$(server_rss_kib)"
singles=()
if [[ "${PER_ATTACK:-0}" == 1 ]]; then
    for single in /plugins/looper/spin:504 /plugins/hog/alloc:500 /plugins/crasher/panic:500 \
        /plugins/recurser/deep:500 "/plugins/bigbody/huge?mib=16:500" /plugins/snoop/snoop:200 \
        "/plugins/gossip/publish?topic=admin.secret:403"; do
        path="${single%:*}"
        singles+=("$path|$(under_attack "$path" "${single##*:}" -s "$work/count.lua" "$base$path")")
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
row "exhauster's floods (logs, stdio, locals, storage, header bombs, events, labels)" "$floods"
for single in "${singles[@]}"; do
    row "\`${single%%|*}\` hammered" "${single#*|}"
done
echo
echo "plugd serve's RSS: $((rss_before_floods / 1024)) MiB before exhauster's floods, $((rss_after_floods / 1024)) MiB after"
