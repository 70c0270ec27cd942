# Shared by the load scripts (scripts/load-*.sh): source it after setting `root`.
#   load_setup NAME      install wrk if missing, build the guests and a release plugd (or use
#                        $PLUGD_BIN); sets
#                        $plugd, $work (a temp dir removed on exit) and the cleanup trap
#   start_server CONFIG URL   start `plugd serve --config CONFIG`, wait until URL answers
#   summarize            wrk --latency output -> "p50 p99 rps failed" (ms; failed = non-2xx +
#                        socket errors)

load_setup() {
    local name="$1"
    if ! command -v wrk >/dev/null 2>&1; then
        echo "$name: installing wrk (apt-get)" >&2
        local sudo_cmd=()
        [[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -qq
        "${sudo_cmd[@]}" apt-get install -y -qq wrk >/dev/null
    fi
    bash "$root/scripts/build-examples.sh" >/dev/null
    if [[ -n "${PLUGD_BIN:-}" ]]; then
        plugd="$PLUGD_BIN" # a release plugd built before (say, of the commit being measured)
    else
        (cd "$root" && cargo build --release -q -p plugd-cli --bin plugd)
        plugd="${CARGO_TARGET_DIR:-$root/target}/release/plugd"
    fi
    work="$(mktemp -d)"
    server_pid=""
    trap load_cleanup EXIT
}

load_cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}

start_server() {
    local config="$1" url="$2" base
    PLUGD_LOG=error "$plugd" serve --config "$config" >"$work/plugd.log" 2>&1 &
    server_pid=$!
    base="${url%%/plugins/*}"
    for _ in $(seq 1 100); do
        curl -fsS "$base/healthz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS "$url" >/dev/null || {
        echo "plugd did not come up; its log:" >&2
        cat "$work/plugd.log" >&2
        exit 1
    }
}

summarize() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { bad += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i += 2) { v = $i; gsub(/,/, "", v); bad += v } }
        END { printf "%.2f %.2f %.0f %d\n", p50, p99, rps, bad + 0 }'
}
