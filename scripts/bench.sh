#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md in one command: plugd against the peers users would pick instead.
# A benchmark, not a test: scripts/test.sh never runs it.
#
#   scripts/bench.sh                 # everything, several rounds (about 25 minutes)
#   scripts/bench.sh --quick         # fewer and shorter rounds, 3 callgrind kinds, 1/10 plugins,
#                                    # no scale criterion benches (meant for about 3 minutes once built)
#   scripts/bench.sh --only http     # sections: http, route, calls, callgrind, layer, reload, scale (comma-separated)
#   scripts/bench.sh --only fleet    # not in the default run: the fleet's engines (scripts/services.sh)
#   scripts/bench.sh --only serve    # not in the default run: one wasi:http component, wasmtime serve vs plugd
#
# Sections
#   http       the five-plugin stack + JSON route on four servers, started side by side on
#              loopback: plugd with native plugins (crates/plugd/examples/bench_native.rs), plugd
#              with wasm plugins (benches/plugins), bare axum + tower middleware
#              (benches/peers/axum-stack), nginx + lua-nginx-module (benches/nginx). The same wrk
#              settings for each, interleaved round by round (the order rotates); medians of the
#              rounds and the medians of each round's ratios vs axum and vs nginx+Lua.
#   route      one wasm route alone: plugd serving only the `api` bench plugin (GET
#              /plugins/api/hello, no hooks; its body without the stack's locals) vs bare axum
#              answering the same JSON (benches/peers/axum-stack in its `route` mode): interleaved
#              wrk rounds, then both under callgrind ((I(N2) - I(N1)) / (N2 - N1) keep-alive
#              requests) and plugd's instructions by component (scripts/lib/callgrind-groups.py);
#              callgrind files stay in target/bench/route.
#   calls      plugin call overhead with criterion: raw wasmtime, plugd's wasm hook, plugd's native
#              hook, the dispatcher (crates/plugd/benches/call_overhead.rs), and Extism 1.30
#              (benches/peers/extism-call, a workspace of its own).
#   callgrind  the same calls as instruction counts under valgrind (exact on a noisy machine):
#              (I(N2) - I(N1)) / (N2 - N1) instructions per call.
#   profile    (not in the default set; needs http) plugd with wasm plugins, plugd with native
#              plugins and bare axum under callgrind: instructions per request ((I(1200) - I(200))
#              / 1000 keep-alive requests), and the wasm stack's cost by component
#              (scripts/lib/callgrind-groups.py); callgrind files stay in target/bench/profile.
#              Where perf can sample, also the guests' code by function (PLUGD_WASM_PROFILER=perfmap,
#              scripts/lib/perf-guest-groups.py).
#   layer      the cost of plugd's tower layer (crates/plugd/examples/bench_layer.rs): one axum
#              application alone and behind PlugdLayer with no plugins (wrk rounds and callgrind
#              instructions per request), and the benchmark's wasm stack behind the layer in an
#              axum application vs the same stack on plugd's own server (`plugd serve`).
#   reload     hot reload under load: scripts/load-reload.sh (issue 5's script; quick: 3 s phases,
#              10 reloads under load, 50 after).
#   serve      (not in the default set) the same wasi:http proxy component (tests/components/
#              wstd-hello) under `wasmtime serve` (wasmtime-cli at the pinned version, built from
#              crates.io by `cargo install` into target/bench/wasmtime-cli) and under `plugd serve`
#              as a proxy plugin; interleaved wrk rounds, medians, plugd's ratio.
#   scale      plugd start time and RSS with 1/10/100/1000 wasm plugins (cold and warm compile
#              cache), the largest count's RSS after 35 s idle by kind of mapping
#              (scripts/lib/smaps-groups.py), and the criterion benches: instantiate from the pool / on demand
#              (crates/plugd/benches/instantiate.rs), dependency resolution of 1,000 and 10,000
#              plugins (crates/plugd-core/benches/resolve.rs), the event bus with 1 and 10
#              subscribers, native (crates/plugd-core/benches/events.rs) and wasm
#              (crates/plugd/benches/event_bus.rs).
#
# Installs what it needs with apt (wrk, nginx, libnginx-mod-http-lua, valgrind) when missing,
# builds release binaries (the host workspace's target/, the peers' benches/peers/target) and the
# guests (scripts/build-examples.sh benches/plugins; the Extism guest on Debian's rustc-web
# route). Results go to stdout and to target/bench/results.md.
# Environment: DURATION, ROUNDS, CONNECTIONS, THREADS override the wrk settings;
# SCALE_CRITERION=0 skips the scale section's criterion benches.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/load.sh
source "$root/scripts/lib/load.sh" # summarize
quick=0
only="http,route,calls,callgrind,layer,reload,scale"
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --only) only="$2"; shift ;;
        -h | --help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
want() { [[ ",$only," == *",$1,"* ]]; }

if ((quick)); then
    duration="${DURATION:-4s}" rounds="${ROUNDS:-3}" crit=(--warm-up-time 0.5 --measurement-time 1)
    scale_counts=(1 10) cg_n=(100 600) cg_kinds=(wasm-hook dispatch-none dispatch-wasm)
    SCALE_CRITERION="${SCALE_CRITERION:-0}"
else
    duration="${DURATION:-10s}" rounds="${ROUNDS:-5}" crit=(--warm-up-time 2 --measurement-time 5)
    scale_counts=(1 10 100 1000) cg_n=(500 5500)
    cg_kinds=(raw-sync raw-async wasm-hook native-hook dispatch-none dispatch-native dispatch-wasm)
fi
connections="${CONNECTIONS:-32}"
threads="${THREADS:-2}"
export CARGO_INCREMENTAL=0
# Backtraces on errors would be captured on every call of a peer that makes an error per call
# (Extism 1.30 asks wasmtime for fuel it does not meter): measure what users get by default.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
target="${CARGO_TARGET_DIR:-$root/target}"
peers="$root/benches/peers"
out_dir="$target/bench"
mkdir -p "$out_dir"
results="$out_dir/results.md"
: >"$results"
work="$(mktemp -d)"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        [[ -n "$p" ]] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM
note() { echo "bench: $*" >&2; }
say() { echo "$*" | tee -a "$results"; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- what it needs -------------------------------------------------------------------------
apt_need=()
command -v wrk >/dev/null 2>&1 || apt_need+=(wrk)
if want http; then
    command -v nginx >/dev/null 2>&1 || apt_need+=(nginx)
    [[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]] || apt_need+=(libnginx-mod-http-lua)
fi
if want callgrind || want profile || want layer || want route; then command -v valgrind >/dev/null 2>&1 || apt_need+=(valgrind); fi
if want profile; then command -v perf >/dev/null 2>&1 || apt_need+=(linux-perf); fi
if ((${#apt_need[@]})); then
    note "apt-get install ${apt_need[*]}"
    sudo_cmd=()
    [[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # policy-rc.d: do not start the system nginx service on port 80.
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${apt_need[@]}" >/dev/null
fi

note "building guests and release binaries"
bash "$root/scripts/build-examples.sh" benches/plugins >/dev/null
(cd "$root" && cargo build --release -q -p plugd-cli --bin plugd)
(cd "$root" && cargo build --release -q -p plugd --example bench_native --example call_count)
if want layer; then (cd "$root" && cargo build --release -q -p plugd --example bench_layer); fi
plugd="$target/release/plugd"
peer_packages=() # only what the sections need: Extism's wasmtime 43 is a long first build
if want http || want route; then peer_packages+=(-p axum-stack); fi
if want calls || want callgrind; then peer_packages+=(-p extism-call); fi
if ((${#peer_packages[@]})); then
    (cd "$peers" && cargo build --release -q --target-dir "$peers/target" "${peer_packages[@]}")
fi
extism_wasm="$peers/target/guest/wasm32-unknown-unknown/release/extism_hook.wasm"
if want calls || want callgrind; then
    # The Extism guest: Rust on Debian's rustc-web route (-Zbuild-std; docs/design.md#guest-toolchain).
    (
        export PLUGD_GUEST_ROUTE=debian
        # shellcheck source=wasm-toolchain.sh
        source "$root/scripts/wasm-toolchain.sh"
        cd "$peers/extism-guest"
        plugd_guest_cargo build --release -q
    )
    [[ -f "$extism_wasm" ]] || { echo "bench: no Extism guest at $extism_wasm" >&2; exit 1; }
fi

cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
say "# plugd benchmarks $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "$(nproc) CPUs ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg); $(rustc --version | cut -d' ' -f1-2)"
say ""

# --- http ----------------------------------------------------------------------------------
token="$(python3 -c 'import hmac,hashlib; c="client42"; print(c + "." + hmac.new(b"bench-secret", c.encode(), hashlib.sha1).hexdigest())')"
path="/plugins/api/hello"
declare -A spid=()
declare -A port=([plugd-native]=18301 [plugd-wasm]=18302 [axum]=18303 [nginx-lua]=18304)
servers=(axum plugd-native plugd-wasm nginx-lua)

wait_up() { # name
    local url="http://127.0.0.1:${port[$1]}/healthz"
    for _ in $(seq 1 150); do
        curl -fsS "$url" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "bench: $1 did not come up; its log:" >&2
    cat "$work/$1.log" >&2 || true
    exit 1
}

check_server() { # name: 401 without a token, 200 + headers + JSON with one
    local base="http://127.0.0.1:${port[$1]}$path" code headers
    code="$(curl -s -o /dev/null -w '%{http_code}' "$base")"
    [[ "$code" == 401 ]] || { echo "bench: $1 answered $code without a token (want 401)" >&2; exit 1; }
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer client42.0000000000000000000000000000000000000000" "$base")"
    [[ "$code" == 401 ]] || { echo "bench: $1 answered $code to a bad signature (want 401)" >&2; exit 1; }
    headers="$(curl -fsS -D - -o "$work/body" -H "Authorization: Bearer $token" "$base")"
    grep -qi '^x-request-id: ' <<<"$headers" || { echo "bench: $1 sent no x-request-id" >&2; exit 1; }
    grep -qi '^x-powered-by: plugd-bench' <<<"$headers" || { echo "bench: $1 sent no x-powered-by" >&2; exit 1; }
    grep -q '"client":"client42"' "$work/body" || { echo "bench: $1 answered $(cat "$work/body")" >&2; exit 1; }
}

# The host config of the benchmark's wasm stack on 127.0.0.1:PORT (admin on PORT + 1000).
stack_config() { # port data-dir
    echo "server: { listen: \"127.0.0.1:$1\" }"
    echo "admin: { token: \"bench-admin-token-0123456789abcdef\", listen: \"127.0.0.1:$(($1 + 1000))\" }"
    echo "data_dir: \"$2\""
    echo "plugins:"
    echo "  plugins:"
    for p in reqid auth ratelimit accesslog headers api; do
        local name="bench-$p" grant="      permissions: { intercept: true }"
        [[ "$p" == api ]] && name=api grant="      permissions: { router: true }"
        [[ "$p" == ratelimit ]] && grant="      permissions: { cache: true, intercept: true }"
        echo "    - name: $name"
        echo "      path: \"$root/benches/plugins/$p\""
        echo "$grant"
    done
}

start_http_servers() {
    local sink=/dev/null
    # plugd, native plugins (the access log: tracing to stderr, like the wasm plugins' log calls).
    PLUGD_LOG="warn,plugin=info" "$target/release/examples/bench_native" "127.0.0.1:${port[plugd-native]}" \
        2>"$sink" >"$work/plugd-native.log" &
    pids+=($!)
    spid[plugd-native]=$!
    # plugd, wasm plugins.
    mkdir -p "$work/wasm-data"
    stack_config "${port[plugd-wasm]}" "$work/wasm-data" >"$work/plugd-wasm.yaml"
    PLUGD_LOG="warn,plugin=info" "$plugd" serve --config "$work/plugd-wasm.yaml" 2>"$sink" >"$work/plugd-wasm.log" &
    pids+=($!)
    spid[plugd-wasm]=$!
    # bare axum.
    RUST_LOG="warn,access=info" "$peers/target/release/axum-stack" "127.0.0.1:${port[axum]}" \
        2>"$sink" >"$work/axum.log" &
    pids+=($!)
    spid[axum]=$!
    # nginx + Lua.
    mkdir -p "$work/nginx"
    local user=""
    [[ "$(id -u)" -ne 0 ]] || user="user root root;"
    sed -e "s|@PORT@|${port[nginx-lua]}|; s|@LUA@|$root/benches/nginx|; s|@WORK@|$work/nginx|g; s|@USER@|$user|" \
        "$root/benches/nginx/nginx.conf.in" >"$work/nginx/nginx.conf"
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e /dev/null >"$work/nginx-lua.log" 2>&1 &
    pids+=($!)
    spid[nginx-lua]=$!
    for s in "${servers[@]}"; do wait_up "$s"; done
    for s in "${servers[@]}"; do check_server "$s"; done
}

if want http; then
    note "http: $rounds rounds of wrk -t$threads -c$connections -d$duration on each server"
    start_http_servers
    for s in "${servers[@]}"; do # warm up
        wrk -t1 -c4 -d1s -H "Authorization: Bearer $token" "http://127.0.0.1:${port[$s]}$path" >/dev/null
    done
    for r in $(seq 1 "$rounds"); do
        # Rotate the order so that no server always runs first or last.
        order=("${servers[@]:$(((r - 1) % 4))}" "${servers[@]:0:$(((r - 1) % 4))}")
        for s in "${order[@]}"; do
            wrk -t"$threads" -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" \
                "http://127.0.0.1:${port[$s]}$path" >"$work/wrk.out"
            read -r p50 p99 rps bad <<<"$(summarize <"$work/wrk.out")"
            echo "$r $s $rps $p50 $p99 $bad" >>"$work/http.txt"
            note "round $r $s: $rps req/s p50 $p50 ms p99 $p99 ms failed $bad"
        done
    done
    declare -A rss=()
    for s in "${servers[@]}"; do # resident memory after the load (nginx: master + workers)
        rss[$s]="$(ps -o rss= -p "${spid[$s]}" --ppid "${spid[$s]}" | awk '{ s += $1 } END { printf "%.1f", s / 1024 }')"
    done
    say "## HTTP: five plugins + JSON route (wrk -t$threads -c$connections -d$duration, $rounds interleaved rounds, medians)"
    say ""
    say "| server | req/s | p50 ms | p99 ms | failed | × bare axum | × nginx+Lua | RSS MiB after |"
    say "|---|---|---|---|---|---|---|---|"
    for s in axum nginx-lua plugd-native plugd-wasm; do
        rps="$(awk -v s="$s" '$2 == s { print $3 }' "$work/http.txt" | median)"
        p50="$(awk -v s="$s" '$2 == s { print $4 }' "$work/http.txt" | median)"
        p99="$(awk -v s="$s" '$2 == s { print $5 }' "$work/http.txt" | median)"
        bad="$(awk -v s="$s" '$2 == s { b += $6 } END { print b + 0 }' "$work/http.txt")"
        ratio() { # per-round ratio vs $1, then the median
            awk -v s="$s" -v ref="$1" '$2 == s { x[$1] = $3 } $2 == ref { y[$1] = $3 }
                END { for (r in x) if (y[r] > 0) printf "%.3f\n", x[r] / y[r] }' "$work/http.txt" | median
        }
        say "| $s | $(printf '%.0f' "$rps") | $p50 | $p99 | $bad | $(printf '%.2f' "$(ratio axum)") | $(printf '%.2f' "$(ratio nginx-lua)") | ${rss[$s]} |"
    done
    say ""
    say "Per round (req/s): $(awk '{ printf "%s%s %s=%s", (NR > 1 ? ";" : ""), "r" $1, $2, $3 }' "$work/http.txt")"
    say ""
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    pids=()
    sleep 1 # ports free for the profile section
fi

# --- profile (callgrind of the Rust servers) -------------------------------------------------
# Instructions per request of plugd (wasm plugins), plugd (native plugins) and bare axum, each
# under callgrind: (I(1200) - I(200)) / 1000 keep-alive requests. For the wasm stack, a breakdown
# of the self cost by component (scripts/lib/callgrind-groups.py).
if want profile; then
    prof="$out_dir/profile"
    mkdir -p "$prof"
    [[ -f "$work/plugd-wasm.yaml" ]] || { echo "bench: --only profile needs http too (its config)" >&2; exit 1; }
    profile_server() { # name port command...
        local name="$1" p="$2" n vp i1 i2
        shift 2
        note "profile: $name under callgrind"
        for n in 200 200 1200; do # the first run fills plugd's compile cache
            PLUGD_LOG="warn,plugin=info" RUST_LOG="warn,access=info" valgrind --tool=callgrind \
                --callgrind-out-file="$prof/$name.$n.out" "$@" >/dev/null 2>"$prof/$name.$n.log" &
            vp=$!
            for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
            python3 - "$n" "$p" "$token" <<'PY'
import http.client, sys
n, port, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", "/plugins/api/hello", headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
            kill -INT "$vp"
            wait "$vp" || true
        done
        i1="$(awk '/^summary:/ { print $2 }' "$prof/$name.200.out")"
        i2="$(awk '/^summary:/ { print $2 }' "$prof/$name.1200.out")"
        echo "$name $(((i2 - i1) / 1000))" >>"$work/profile.txt"
    }
    profile_server plugd-wasm "${port[plugd-wasm]}" "$plugd" serve --config "$work/plugd-wasm.yaml"
    profile_server plugd-native "${port[plugd-native]}" "$target/release/examples/bench_native" "127.0.0.1:${port[plugd-native]}"
    profile_server axum "${port[axum]}" "$peers/target/release/axum-stack" "127.0.0.1:${port[axum]}"
    say "## Profile: instructions per request under callgrind (callgrind files in $prof)"
    say ""
    say "| server | instructions per request | × bare axum |"
    say "|---|---|---|"
    axum_i="$(awk '$1 == "axum" { print $2 }' "$work/profile.txt")"
    while read -r name i; do
        say "| $name | $i | $(awk -v a="$i" -v b="$axum_i" 'BEGIN { printf "%.2f", a / b }') |"
    done <"$work/profile.txt"
    say ""
    say "The wasm stack's instructions per request by component (self cost):"
    say ""
    python3 "$root/scripts/lib/callgrind-groups.py" "$prof/plugd-wasm.200.out" "$prof/plugd-wasm.1200.out" 1000 | tee -a "$results"
    say ""
    # perf, where the machine lets it sample: the guests' code by function, named through the
    # perf map plugd writes with PLUGD_WASM_PROFILER=perfmap.
    if perf record -q -o "$prof/probe.data" -- true >/dev/null 2>&1; then
        note "profile: perf of plugd serve (wasm stack) under wrk"
        PLUGD_WASM_PROFILER=perfmap PLUGD_LOG="warn,plugin=info" "$plugd" serve --config "$work/plugd-wasm.yaml" \
            >/dev/null 2>"$prof/perf-serve.log" &
        vp=$!
        pids+=("$vp")
        wait_up plugd-wasm
        wrk -t1 -c8 -d"$duration" -H "Authorization: Bearer $token" "http://127.0.0.1:${port[plugd-wasm]}$path" >/dev/null &
        wp=$!
        perf record -q -F 999 -o "$prof/perf.data" -p "$vp" -- sleep "$duration" >/dev/null 2>&1 || true
        wait "$wp" || true
        kill -INT "$vp"
        wait "$vp" || true
        say "Guest code by function (perf, cpu-clock samples, wrk -t1 -c8 -d$duration):"
        say ""
        perf report -i "$prof/perf.data" --sort dso,symbol --stdio 2>/dev/null \
            | python3 "$root/scripts/lib/perf-guest-groups.py" | tee -a "$results" \
            || note "profile: no guest samples in the perf profile"
        say ""
    else
        note "profile: perf cannot sample here; skipping the guest-code breakdown"
    fi
fi

# --- route (one wasm route alone vs bare axum) -----------------------------------------------
# plugd with only the `api` plugin (no hooks) against axum answering the same body from one
# handler: what plugd's server, dispatch and one guest call cost over a bare axum route.
if want route; then
    declare -A rport=([plugd-route]=18305 [axum-route]=18306)
    route_servers=(axum-route plugd-route)
    route_body='{"client":null,"message":"hello","request_id":null}'
    rdir="$work/route"
    mkdir -p "$rdir/data"
    {
        echo "server: { listen: \"127.0.0.1:${rport[plugd-route]}\" }"
        echo "admin: { token: \"bench-admin-token-0123456789abcdef\", listen: \"127.0.0.1:$((rport[plugd-route] + 1000))\" }"
        echo "data_dir: \"$rdir/data\""
        echo "plugins:"
        echo "  plugins:"
        echo "    - name: api"
        echo "      path: \"$root/benches/plugins/api\""
        echo "      permissions: { router: true }"
    } >"$rdir/plugd.yaml"
    route_cmd() { # name -> the server's command line
        case "$1" in
            plugd-route) echo "$plugd serve --config $rdir/plugd.yaml" ;;
            axum-route) echo "$peers/target/release/axum-stack 127.0.0.1:${rport[axum-route]} route" ;;
        esac
    }
    route_up() { # name pid
        for _ in $(seq 1 300); do
            curl -fsS "http://127.0.0.1:${rport[$1]}/healthz" >/dev/null 2>&1 && return 0
            kill -0 "$2" 2>/dev/null || break
            sleep 0.2
        done
        echo "bench: $1 did not come up" >&2
        exit 1
    }
    note "route: $rounds rounds of wrk -t$threads -c$connections -d$duration on each server"
    declare -A rpid=()
    for s in "${route_servers[@]}"; do
        # shellcheck disable=SC2046 # the command line is words
        PLUGD_LOG=warn RUST_LOG=warn $(route_cmd "$s") >"$rdir/$s.log" 2>&1 &
        pids+=($!)
        rpid[$s]=$!
        route_up "$s" "${rpid[$s]}"
        body="$(curl -fsS "http://127.0.0.1:${rport[$s]}$path")"
        [[ "$body" == "$route_body" ]] || { echo "bench: $s answered $body (want $route_body)" >&2; exit 1; }
        wrk -t1 -c4 -d1s "http://127.0.0.1:${rport[$s]}$path" >/dev/null # warm up
    done
    for r in $(seq 1 "$rounds"); do
        order=("${route_servers[@]:$(((r - 1) % 2))}" "${route_servers[@]:0:$(((r - 1) % 2))}")
        for s in "${order[@]}"; do
            wrk -t"$threads" -c"$connections" -d"$duration" --latency "http://127.0.0.1:${rport[$s]}$path" >"$work/wrk.out"
            read -r p50 p99 rps bad <<<"$(summarize <"$work/wrk.out")"
            echo "$r $s $rps $p50 $p99 $bad" >>"$rdir/http.txt"
            note "round $r $s: $rps req/s p50 $p50 ms p99 $p99 ms failed $bad"
        done
    done
    load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
    for s in "${route_servers[@]}"; do
        kill "${rpid[$s]}" 2>/dev/null && wait "${rpid[$s]}" 2>/dev/null || true
        pids=("${pids[@]/#${rpid[$s]}/}")
    done
    # callgrind: N1 and N2 requests over one keep-alive connection (the first plugd run fills its
    # compile cache and is not counted).
    rprof="$out_dir/route"
    mkdir -p "$rprof"
    if ((quick)); then route_n=(200 1200); else route_n=(500 5500); fi
    for s in "${route_servers[@]}"; do
        runs=("${route_n[@]}")
        [[ "$s" == plugd-route ]] && runs=("${route_n[0]}" "${runs[@]}")
        for n in "${runs[@]}"; do
            note "route: $s under callgrind, $n requests"
            # shellcheck disable=SC2046
            PLUGD_LOG=warn RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$rprof/$s.$n.out" \
                $(route_cmd "$s") >/dev/null 2>"$rprof/$s.$n.log" &
            vp=$!
            route_up "$s" "$vp"
            python3 - "$n" "${rport[$s]}" "$path" <<'PY'
import http.client, sys
n, port, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
            kill -INT "$vp"
            wait "$vp" || true
        done
        i1="$(awk '/^summary:/ { print $2 }' "$rprof/$s.${route_n[0]}.out")"
        i2="$(awk '/^summary:/ { print $2 }' "$rprof/$s.${route_n[1]}.out")"
        echo "$s $(((i2 - i1) / (route_n[1] - route_n[0])))" >>"$rdir/instructions.txt"
    done
    say "## One wasm route alone: plugd (only the api plugin) vs bare axum (wrk -t$threads -c$connections -d$duration, $rounds interleaved rounds, medians; load average after: $load_after)"
    say ""
    say "| server | req/s | p50 ms | p99 ms | failed | × bare axum | instructions per request (callgrind) | × bare axum |"
    say "|---|---|---|---|---|---|---|---|"
    axum_i="$(awk '$1 == "axum-route" { print $2 }' "$rdir/instructions.txt")"
    for s in axum-route plugd-route; do
        rps="$(awk -v s="$s" '$2 == s { print $3 }' "$rdir/http.txt" | median)"
        p50="$(awk -v s="$s" '$2 == s { print $4 }' "$rdir/http.txt" | median)"
        p99="$(awk -v s="$s" '$2 == s { print $5 }' "$rdir/http.txt" | median)"
        bad="$(awk -v s="$s" '$2 == s { b += $6 } END { print b + 0 }' "$rdir/http.txt")"
        ratio="$(awk -v s="$s" '$2 == s { x[$1] = $3 } $2 == "axum-route" { y[$1] = $3 }
            END { for (r in x) if (y[r] > 0) printf "%.3f\n", x[r] / y[r] }' "$rdir/http.txt" | median)"
        i="$(awk -v s="$s" '$1 == s { print $2 }' "$rdir/instructions.txt")"
        say "| $s | $(printf '%.0f' "$rps") | $p50 | $p99 | $bad | $(printf '%.2f' "$ratio") | $i | $(awk -v a="$i" -v b="$axum_i" 'BEGIN { printf "%.2f", a / b }') |"
    done
    say ""
    say "Per round (req/s): $(awk '{ printf "%s%s %s=%s", (NR > 1 ? ";" : ""), "r" $1, $2, $3 }' "$rdir/http.txt")"
    say ""
    say "plugd's instructions per request by component (self cost):"
    say ""
    python3 "$root/scripts/lib/callgrind-groups.py" "$rprof/plugd-route.${route_n[0]}.out" "$rprof/plugd-route.${route_n[1]}.out" \
        "$((route_n[1] - route_n[0]))" | tee -a "$results"
    say ""
fi

# --- calls (criterion) ---------------------------------------------------------------------
crit_parse() { # criterion output -> "name ns" lines (the middle estimate)
    awk '
        function ns(v, u) { if (u ~ /^ps/) return v / 1000; if (u ~ /^ns/) return v; if (u ~ /^µs|^us/) return v * 1000; if (u ~ /^ms/) return v * 1e6; return v * 1e9 }
        /time:/ {
            for (i = 1; i <= NF; i++) if ($i == "time:") break
            if ($(i + 1) ~ /%/) next # "change: time: [-1.2% ...]" against a saved baseline
            name = (i > 1) ? $1 : last
            printf "%s %.1f\n", name, ns($(i + 3), $(i + 4))
            next
        }
        NF == 1 && $1 != "change:" { last = $1 }'
}
if want calls; then
    runs=$((quick ? 1 : 3))
    note "calls: criterion, $runs interleaved runs"
    for r in $(seq 1 "$runs"); do
        (cd "$root" && cargo bench -q --profile release -p plugd --bench call_overhead -- "${crit[@]}" 2>/dev/null) | crit_parse >>"$work/calls.txt"
        (cd "$peers" && EXTISM_HOOK_WASM="$extism_wasm" cargo bench -q --profile release --target-dir "$peers/target" \
            -p extism-call --bench extism_call -- "${crit[@]}" 2>/dev/null) | crit_parse >>"$work/calls.txt"
    done
    extism="$(awk '$1 == "call_overhead/extism_call" { print $2 }' "$work/calls.txt" | median)"
    say "## Call overhead: one hook that reads a header and continues (criterion, median of $runs runs)"
    say ""
    say "| call | ns | × Extism |"
    say "|---|---|---|"
    for name in harness_block_on raw_wasmtime_sync raw_wasmtime_async plugd_wasm_hook plugd_native_hook extism_call dispatch/no_hook dispatch/native_hook dispatch/wasm_hook; do
        v="$(awk -v n="call_overhead/$name" '$1 == n { print $2 }' "$work/calls.txt" | median)"
        say "| $name | $v | $(awk -v v="$v" -v e="$extism" 'BEGIN { if (e > 0 && v != "-") printf "%.2f", v / e; else print "-" }') |"
    done
    say ""
fi

# --- callgrind -----------------------------------------------------------------------------
if want callgrind; then
    note "callgrind: N = ${cg_n[*]}"
    instructions() { # out-file -> total Ir
        awk '/^(summary|totals):/ { print $2; exit }' "$1"
    }
    cg_dir="$out_dir/callgrind"
    mkdir -p "$cg_dir"
    run_cg() { # label command... (an argument @N@ becomes the number of calls)
        local label="$1" n i1 i2
        shift
        # The first run fills the compile caches (plugd's, Extism's): it is not counted.
        for n in "${cg_n[0]}" "${cg_n[@]}"; do
            valgrind --tool=callgrind --callgrind-out-file="$cg_dir/$label.$n.out" "${@/#@N@/$n}" \
                >/dev/null 2>"$cg_dir/$label.$n.log" \
                || { echo "bench: callgrind $label failed; see $cg_dir/$label.$n.log" >&2; exit 1; }
        done
        i1="$(instructions "$cg_dir/$label.${cg_n[0]}.out")"
        i2="$(instructions "$cg_dir/$label.${cg_n[1]}.out")"
        echo "$label $(((i2 - i1) / (cg_n[1] - cg_n[0])))" >>"$work/cg.txt"
    }
    for kind in "${cg_kinds[@]}"; do
        mkdir -p "$cg_dir/$kind"
        run_cg "$kind" "$target/release/examples/call_count" "$kind" @N@ "$cg_dir/$kind"
    done
    run_cg extism "$peers/target/release/extism-call" "$extism_wasm" @N@
    ext="$(awk '$1 == "extism" { print $2 }' "$work/cg.txt")"
    say "## Call overhead in instructions (callgrind, (I(N=${cg_n[1]}) - I(N=${cg_n[0]})) / $((cg_n[1] - cg_n[0])))"
    say ""
    say "| call | instructions per call | × Extism |"
    say "|---|---|---|"
    while read -r label n; do
        say "| $label | $n | $(awk -v v="$n" -v e="$ext" 'BEGIN { printf "%.2f", v / e }') |"
    done <"$work/cg.txt"
    say ""
fi

# --- layer ---------------------------------------------------------------------------------
# One axum application (GET /app/hello, a small JSON body) alone and behind PlugdLayer with no
# plugins; the wasm stack (reqid, auth, ratelimit, accesslog, headers, api) behind the layer and
# on plugd's own server. Same listener code for all (serve_router), interleaved wrk rounds.
if want layer; then
    declare -A lport=([bare]=18311 [layer-empty]=18312 [layer-stack]=18313 [plugd-stack]=18314)
    declare -A lpath=([bare]=/app/hello [layer-empty]=/app/hello [layer-stack]=/plugins/api/hello [plugd-stack]=/plugins/api/hello)
    lservers=(bare layer-empty layer-stack plugd-stack)
    mkdir -p "$work/layer-empty" "$work/layer-stack" "$work/plugd-stack"
    echo "data_dir: \"$work/layer-empty\"" >"$work/layer-empty.yaml"
    stack_config "${lport[layer-stack]}" "$work/layer-stack" >"$work/layer-stack.yaml"
    stack_config "${lport[plugd-stack]}" "$work/plugd-stack" >"$work/plugd-stack.yaml"
    layer_bin="$target/release/examples/bench_layer"
    lcmd() { # name: the command line that serves it
        case "$1" in
            bare) echo "$layer_bin bare 127.0.0.1:${lport[bare]}" ;;
            layer-empty) echo "$layer_bin layer 127.0.0.1:${lport[layer-empty]} $work/layer-empty.yaml" ;;
            layer-stack) echo "$layer_bin layer 127.0.0.1:${lport[layer-stack]} $work/layer-stack.yaml" ;;
            plugd-stack) echo "$plugd serve --config $work/plugd-stack.yaml" ;;
        esac
    }
    declare -A lpid=()
    for s in "${lservers[@]}"; do
        # shellcheck disable=SC2046
        PLUGD_LOG="warn" $(lcmd "$s") >"$work/$s.log" 2>&1 &
        pids+=($!)
        lpid[$s]=$!
    done
    for s in "${lservers[@]}"; do
        up=0
        for _ in $(seq 1 600); do # compiling the stack's components can take a while on a busy machine
            curl -fsS "http://127.0.0.1:${lport[$s]}/healthz" >/dev/null 2>&1 && { up=1; break; }
            sleep 0.2
        done
        ((up)) || { echo "bench: $s did not come up" >&2; cat "$work/$s.log" >&2; exit 1; }
        code="$(curl -s -o "$work/body" -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:${lport[$s]}${lpath[$s]}")"
        [[ "$code" == 200 ]] || { echo "bench: $s answered $code: $(cat "$work/body")" >&2; exit 1; }
    done
    # The stack behind the layer guards the application as on plugd's own server.
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${lport[layer-stack]}/plugins/api/hello")"
    [[ "$code" == 401 ]] || { echo "bench: layer-stack answered $code without a token (want 401)" >&2; exit 1; }
    note "layer: $rounds rounds of wrk -t$threads -c$connections -d$duration on each server"
    : >"$work/layer.txt"
    for r in $(seq 1 "$rounds"); do
        order=("${lservers[@]:$(((r - 1) % 4))}" "${lservers[@]:0:$(((r - 1) % 4))}")
        for s in "${order[@]}"; do
            wrk -t"$threads" -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" \
                "http://127.0.0.1:${lport[$s]}${lpath[$s]}" >"$work/wrk.out"
            read -r p50 p99 rps bad <<<"$(summarize <"$work/wrk.out")"
            echo "$r $s $rps $p50 $p99 $bad" >>"$work/layer.txt"
            note "layer round $r $s: $rps req/s p50 $p50 ms p99 $p99 ms failed $bad"
        done
    done
    for s in "${lservers[@]}"; do kill "${lpid[$s]}" 2>/dev/null; wait "${lpid[$s]}" 2>/dev/null || true; done
    lratio() { # a b: the median over rounds of a's req/s / b's in the same round
        awk -v a="$1" -v b="$2" '$2 == a { x[$1] = $3 } $2 == b { y[$1] = $3 } END { for (r in x) if (y[r] > 0) print x[r] / y[r] }' "$work/layer.txt" | median
    }
    say ""
    say "## The layer"
    say ""
    say "| server | req/s (median) | p50 ms | p99 ms | failed |"
    say "|---|---|---|---|---|"
    for s in "${lservers[@]}"; do
        rps="$(awk -v s="$s" '$2 == s { print $3 }' "$work/layer.txt" | median)"
        p50="$(awk -v s="$s" '$2 == s { print $4 }' "$work/layer.txt" | median)"
        p99="$(awk -v s="$s" '$2 == s { print $5 }' "$work/layer.txt" | median)"
        bad="$(awk -v s="$s" '$2 == s { t += $6 } END { print t + 0 }' "$work/layer.txt")"
        say "| $s | $(printf '%.0f' "$rps") | $p50 | $p99 | $bad |"
    done
    say ""
    say "- layer, no plugins × bare axum (median of the rounds' ratios): $(printf '%.3f' "$(lratio layer-empty bare)")"
    say "- wasm stack behind the layer × the same stack on plugd's own server: $(printf '%.3f' "$(lratio layer-stack plugd-stack)")"
    # Instructions per request, bare vs the empty layer: (I(1200) - I(200)) / 1000.
    lprof="$out_dir/layer-profile"
    mkdir -p "$lprof"
    : >"$work/layer-profile.txt"
    for s in bare layer-empty; do
        for n in 200 1200; do
            # shellcheck disable=SC2046
            valgrind --tool=callgrind --callgrind-out-file="$lprof/$s.$n.out" $(lcmd "$s") >/dev/null 2>"$lprof/$s.$n.log" &
            vp=$!
            for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:${lport[$s]}/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
            python3 - "$n" "${lport[$s]}" <<'PY'
import http.client, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", "/app/hello")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
            kill -INT "$vp"
            wait "$vp" || true
        done
        i1="$(awk '/^summary:/ { print $2 }' "$lprof/$s.200.out")"
        i2="$(awk '/^summary:/ { print $2 }' "$lprof/$s.1200.out")"
        echo "$s $(((i2 - i1) / 1000))" >>"$work/layer-profile.txt"
    done
    bare_i="$(awk '$1 == "bare" { print $2 }' "$work/layer-profile.txt")"
    empty_i="$(awk '$1 == "layer-empty" { print $2 }' "$work/layer-profile.txt")"
    say "- instructions per request (callgrind): bare axum $bare_i, behind the layer with no plugins $empty_i ($(awk -v a="$empty_i" -v b="$bare_i" 'BEGIN { printf "%.3f", a / b }')×)"
fi

# --- fleet ---------------------------------------------------------------------------------
if want fleet; then
    # The fleet's engines against the embedded defaults, each through its backend crate, in one
    # process per engine (needs the servers: scripts/services.sh).
    bash "$root/scripts/services.sh" >/dev/null
    note "fleet: storage, cache and event round trips"
    (cd "$root" && cargo build --release -q -p plugd-postgres --example kv_round_trips \
        -p plugd-redis --example roundtrips -p plugd-nats --example throughput)
    say "## The fleet's engines (cargo run --release -p plugd-postgres --example kv_round_trips; -p plugd-redis --example roundtrips; -p plugd-nats --example throughput)"
    say ""
    "$root/target/release/examples/kv_round_trips" 2>/dev/null | tee -a "$results"
    "$root/target/release/examples/roundtrips" 3 2>/dev/null | tee -a "$results"
    "$root/target/release/examples/throughput" 50000 256 2>/dev/null | tee -a "$results"
    say ""
fi

# --- serve ---------------------------------------------------------------------------------
# The same standard wasi:http component (tests/components/wstd-hello, built with wstd's
# #[wstd::http_server]) served by `wasmtime serve` (wasmtime-cli at the pinned wasmtime version,
# built from crates.io into target/bench/wasmtime-cli) and by `plugd serve` (the component as a
# proxy plugin, GET /plugins/wstd-hello/hello): both make a fresh instance per request.
if want serve; then
    wt_version="$(sed -n 's/^wasmtime = { version = "\(~[0-9.]*\)".*/\1/p' "$root/Cargo.toml")"
    wt_root="$out_dir/wasmtime-cli"
    if [[ ! -x "$wt_root/bin/wasmtime" ]]; then
        note "serve: cargo install wasmtime-cli --version $wt_version (a release build: several minutes)"
        cargo install -q --locked wasmtime-cli --version "$wt_version" --root "$wt_root"
    fi
    bash "$root/scripts/build-examples.sh" tests/components >/dev/null
    component="$root/tests/components/wstd-hello/plugin.wasm"
    declare -A serve_port=([wasmtime-serve]=18311 [plugd-serve]=18312)
    declare -A serve_path=([wasmtime-serve]=/hello [plugd-serve]=/plugins/wstd-hello/hello)
    "$wt_root/bin/wasmtime" serve -S cli=y --addr "127.0.0.1:${serve_port[wasmtime-serve]}" "$component" \
        >"$work/wasmtime-serve.log" 2>&1 &
    pids+=($!)
    mkdir -p "$work/serve-data"
    {
        echo "server: { listen: \"127.0.0.1:${serve_port[plugd-serve]}\" }"
        echo "admin: { token: \"bench-admin-token-0123456789abcdef\", listen: \"127.0.0.1:$((serve_port[plugd-serve] + 1000))\" }"
        echo "data_dir: \"$work/serve-data\""
        echo "plugins:"
        echo "  plugins:"
        echo "    - name: wstd-hello"
        echo "      path: \"$root/tests/components/wstd-hello\""
        echo "      permissions: { router: true }"
    } >"$work/plugd-serve.yaml"
    PLUGD_LOG=warn "$plugd" serve --config "$work/plugd-serve.yaml" >"$work/plugd-serve.log" 2>&1 &
    pids+=($!)
    for s in wasmtime-serve plugd-serve; do
        url="http://127.0.0.1:${serve_port[$s]}${serve_path[$s]}"
        for _ in $(seq 1 300); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.2; done
        curl -fsS "$url" | grep -q '^Hello from wstd!' \
            || { echo "bench: $s does not serve $url; its log:" >&2; cat "$work/$s.log" >&2; exit 1; }
        wrk -t1 -c4 -d1s "$url" >/dev/null # warm up
    done
    note "serve: $rounds rounds of wrk -t$threads -c$connections -d$duration on each"
    for r in $(seq 1 "$rounds"); do
        order=(wasmtime-serve plugd-serve)
        ((r % 2)) || order=(plugd-serve wasmtime-serve)
        for s in "${order[@]}"; do
            wrk -t"$threads" -c"$connections" -d"$duration" --latency \
                "http://127.0.0.1:${serve_port[$s]}${serve_path[$s]}" >"$work/wrk.out"
            read -r p50 p99 rps bad <<<"$(summarize <"$work/wrk.out")"
            echo "$r $s $rps $p50 $p99 $bad" >>"$work/serve.txt"
            note "round $r $s: $rps req/s p50 $p50 ms p99 $p99 ms failed $bad"
        done
    done
    say "## One wasi:http component: wasmtime serve vs plugd (wrk -t$threads -c$connections -d$duration, $rounds interleaved rounds, medians)"
    say ""
    say "| server | req/s | p50 ms | p99 ms | failed | × wasmtime serve |"
    say "|---|---|---|---|---|---|"
    for s in wasmtime-serve plugd-serve; do
        rps="$(awk -v s="$s" '$2 == s { print $3 }' "$work/serve.txt" | median)"
        p50="$(awk -v s="$s" '$2 == s { print $4 }' "$work/serve.txt" | median)"
        p99="$(awk -v s="$s" '$2 == s { print $5 }' "$work/serve.txt" | median)"
        bad="$(awk -v s="$s" '$2 == s { b += $6 } END { print b + 0 }' "$work/serve.txt")"
        ratio="$(awk -v s="$s" '$2 == s { x[$1] = $3 } $2 == "wasmtime-serve" { y[$1] = $3 }
            END { for (r in x) if (y[r] > 0) printf "%.3f\n", x[r] / y[r] }' "$work/serve.txt" | median)"
        say "| $s | $(printf '%.0f' "$rps") | $p50 | $p99 | $bad | $(printf '%.2f' "$ratio") |"
    done
    say ""
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    pids=()
fi

# --- reload --------------------------------------------------------------------------------
if want reload; then
    # Issue 5's script (a release plugd, wrk on a route while the plugin is swapped).
    if ((quick)); then reload_env=(DURATION=3s RELOADS=10 MORE=50); else reload_env=(DURATION="$duration" RELOADS=20 MORE=200); fi
    note "reload: scripts/load-reload.sh ${reload_env[*]}"
    say "## Hot reload under load (scripts/load-reload.sh ${reload_env[*]})"
    env "${reload_env[@]}" bash "$root/scripts/load-reload.sh" 2>/dev/null | tee -a "$results"
    say ""
fi

# --- scale ---------------------------------------------------------------------------------
if want scale; then
    note "scale: ${scale_counts[*]} wasm plugins"
    say "## Start time and memory with N wasm plugins (bench-hook copies, each its own component bytes; warm compile cache)"
    say ""
    say "| plugins | cold start s (compiles) | warm start s | RSS MiB | RSS per plugin KiB |"
    say "|---|---|---|---|---|"
    for n in "${scale_counts[@]}"; do
        dir="$work/scale-$n"
        mkdir -p "$dir/plugins"
        # Every copy gets a distinct component (an extra custom section), so that each is
        # compiled and cached on its own, as distinct plugins would be.
        python3 - "$root/benches/plugins/hook" "$dir/plugins" "$n" <<'PY'
import os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
wasm = open(os.path.join(src, "plugin.wasm"), "rb").read()
manifest = open(os.path.join(src, "plugin.yaml")).read()
def leb(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
for i in range(n):
    name = f"hook{i:04d}"
    d = os.path.join(dst, name)
    os.makedirs(d, exist_ok=True)
    section_name = b"plugd-bench-copy"
    payload = leb(len(section_name)) + section_name + name.encode()
    open(os.path.join(d, "plugin.wasm"), "wb").write(wasm + b"\x00" + leb(len(payload)) + payload)
    open(os.path.join(d, "plugin.yaml"), "w").write(manifest.replace("name: bench-hook", f"name: {name}", 1))
PY
        {
            echo "server: { listen: \"127.0.0.1:18310\" }"
            echo "admin: { token: \"bench-admin-token-0123456789abcdef\", listen: \"127.0.0.1:18311\" }"
            echo "data_dir: \"$dir/data\""
            echo "plugins:"
            echo "  limits: { instances: 1 }"
            echo "  pool: { slots: $((n + 16)) }"
            echo "  plugins:"
            for i in $(seq 0 $((n - 1))); do
                printf '    - { name: hook%04d, path: "%s/plugins/hook%04d", permissions: { intercept: true } }\n' "$i" "$dir" "$i"
            done
        } >"$dir/plugd.yaml"
        times=()
        for run in cold warm; do
            start_ns=$(date +%s%N)
            PLUGD_LOG=error "$plugd" serve --config "$dir/plugd.yaml" >"$dir/$run.log" 2>&1 &
            server=$!
            pids+=("$server")
            until curl -fsS http://127.0.0.1:18310/healthz 2>/dev/null | grep -q "\"running\":$n"; do
                kill -0 "$server" 2>/dev/null || { cat "$dir/$run.log" >&2; exit 1; }
                sleep 0.05
            done
            times+=("$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')")
            rss="$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$server/status")"
            if [[ "$run" == warm && "$n" == "${scale_counts[-1]}" ]]; then
                # Idle: no request for one health-check interval (30 s): the only calls the
                # plugins got are their health checks, whose code pages go back after each.
                sleep 35
                idle_rss="$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$server/status")"
                python3 "$root/scripts/lib/smaps-groups.py" "$server" "$n" >"$work/smaps-$n.md"
            fi
            kill "$server"
            wait "$server" 2>/dev/null || true
            pids=("${pids[@]/#$server/}")
        done
        say "| $n | ${times[0]} | ${times[1]} | $rss | $(awk -v r="$rss" -v n="$n" 'BEGIN { printf "%.0f", r * 1024 / n }') |"
        rm -rf "$dir"
    done
    say ""
    n="${scale_counts[-1]}"
    say "$n plugins idle for 35 s (one health check each): RSS $idle_rss MiB, $(awk -v r="$idle_rss" -v n="$n" 'BEGIN { printf "%.0f", r * 1024 / n }') KiB per plugin; by kind of mapping (scripts/lib/smaps-groups.py):"
    say ""
    tee -a "$results" <"$work/smaps-$n.md"
    say ""
    [[ "${SCALE_CRITERION:-1}" == 1 ]] || { note "results in $results"; exit 0; }
    note "scale: criterion benches (instantiate, resolve, events, event_bus)"
    {
        (cd "$root" && cargo bench -q --profile release -p plugd --bench instantiate -- "${crit[@]}" 2>/dev/null)
        (cd "$root" && cargo bench -q --profile release -p plugd-core --bench resolve -- "${crit[@]}" 2>/dev/null)
        (cd "$root" && cargo bench -q --profile release -p plugd-core --bench events -- "${crit[@]}" 2>/dev/null)
        (cd "$root" && cargo bench -q --profile release -p plugd --bench event_bus -- "${crit[@]}" 2>/dev/null)
    } | crit_parse >"$work/scale.txt"
    say "## Scale: criterion (median estimates)"
    say ""
    say "| bench | time |"
    say "|---|---|"
    while read -r name ns; do
        say "| $name | $(awk -v v="$ns" 'BEGIN { if (v >= 1e6) printf "%.2f ms", v / 1e6; else if (v >= 1e3) printf "%.1f µs", v / 1e3; else printf "%.0f ns", v }') |"
    done <"$work/scale.txt"
    say ""
fi
note "results in $results"
