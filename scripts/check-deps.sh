#!/usr/bin/env bash
# Dependency rules cargo cannot express: what a package must not pull in among its normal
# dependencies, checked with `cargo tree` under its default features and without them. A broken
# rule prints the rule, why it exists, and what pulled the crate in (`cargo tree -i`); every rule
# is checked before the script exits 1. Run by scripts/test.sh after clippy.
#
#   scripts/check-deps.sh
#
# Rules are declared in the RULES section below and checked after it:
#   deny PACKAGE CRATE WHY                  CRATE (any version) is not a normal dependency of PACKAGE
#   deny_feature PACKAGE CRATE FEATURE WHY  CRATE may be there, but never with FEATURE enabled
#   allow_via PACKAGE CRATE PARENT          exception to a deny: CRATE may be there when every
#                                           package that depends on it directly is a PARENT
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The feature sets every package is checked under (cargo tree flags; "" is the default features).
feature_sets=("" "--no-default-features")

rules=()              # "deny|PACKAGE|CRATE|WHY" or "feature|PACKAGE|CRATE|FEATURE|WHY"
declare -A allowed=() # "PACKAGE CRATE" -> the parents it may come through, space-separated

deny() { rules+=("deny|$1|$2|$3"); }
deny_feature() { rules+=("feature|$1|$2|$3|$4"); }
allow_via() { allowed["$1 $2"]+=" $3 "; }

# ---- RULES -------------------------------------------------------------------------------------

# plugd: the façade an application embeds. What only the `plugd` command needs is plugd-cli's.
cli_only="only the plugd command needs it, so it belongs to plugd-cli, not to the library applications embed"
deny plugd clap "$cli_only"
deny plugd clap_complete "$cli_only"
deny plugd wit-bindgen-c "$cli_only (plugin authoring)"
deny plugd wit-component "$cli_only (plugin authoring)"
deny plugd wasi-preview1-component-adapter-provider "$cli_only (plugin authoring)"
deny plugd plugd-test "$cli_only (plugd test); an application opts in with the façade's \"test\" feature"
deny_feature plugd reqwest blocking "$cli_only (the admin-API client)"
# wasmtime's own bindgen! macro (feature "wasm") compiles an older wit-component at build time:
# that one is wasmtime's, not the authoring tools'.
allow_via plugd wit-component wasmtime-internal-wit-bindgen

# plugd-core: the kernel. It defines the ports (HttpClient, CommandRunner, FileWatcher,
# Admission, KvBackend, …) and keeps the policy around them; the backends are adapter crates that
# depend on it, never the reverse, so a new backend never means an edit to the manager.
backend="plugd-core defines the port and keeps the policy; the backend belongs to an adapter crate"
deny plugd-core reqwest "$backend (outbound HTTP: plugd-std's ReqwestClient)"
deny plugd-core notify "$backend (file watching: plugd-std's NotifyWatcher)"
deny plugd-core rustix "$backend (exec's process groups and rlimits: plugd-std's ProcessRunner)"
deny plugd-core plugd-pkg "$backend (package admission: plugd-pkg's PackageAdmission)"
deny plugd-core wasmtime "$backend (the wasm runtime: plugd-wasm, a Loader)"
deny plugd-core rusqlite "$backend (SQLite: plugd-sqlite's SqliteKv, SqliteDatabase, StatusDb)"
deny plugd-core async-nats "$backend (events between instances: plugd-nats's NatsTransport)"
deny plugd-core tokio-postgres "$backend (PostgreSQL: plugd-postgres's PostgresKv, PostgresStatus, PostgresSql)"
deny plugd-core redis "$backend (the Redis cache: plugd-redis's RedisCache)"
deny plugd-server async-nats "the admin API knows no engine: a fleet comes in as plugd_server::FleetControl (plugd-fleet)"

# ---- checks ------------------------------------------------------------------------------------

failed=0
declare -A graphs=() # "PACKAGE FLAGS" -> its normal graph

label() { if [[ -n "$1" ]]; then echo "$1"; else echo "default features"; fi; }

tree() { # PACKAGE FLAGS CARGO-TREE-ARGS...: fails the script when cargo tree does
    local package=$1 flags=$2
    shift 2
    # shellcheck disable=SC2086 # FLAGS is a list of cargo flags
    cargo tree --locked -q -p "$package" $flags "$@"
}

# Sets deps to PACKAGE's normal graph under FLAGS, "name vX.Y.Z" a line. Not called in a subshell,
# so that the cache holds and a failing cargo tree (say, a stale Cargo.lock) stops the script.
graph() { # PACKAGE FLAGS
    local key="$1 $2" out
    if [[ -z "${graphs[$key]+set}" ]]; then
        out="$(tree "$1" "$2" -e normal --prefix none --format '{p}')"
        graphs[$key]="$(sed 's/ (.*//' <<<"$out" | sort -u)"
    fi
    deps="${graphs[$key]}"
}

broken() { # PACKAGE FLAGS WHAT WHY CARGO-TREE-ARGS...
    local package=$1 flags=$2 what=$3 why=$4
    shift 4
    failed=1
    echo "check-deps: $package ($(label "$flags")) depends on $what: $why" >&2
    echo "  what pulled it in (cargo tree -p $package${flags:+ $flags} $*):" >&2
    tree "$package" "$flags" "$@" | sed 's/^/    /' >&2
}

check_deny() { # PACKAGE FLAGS CRATE WHY
    local package=$1 flags=$2 crate=$3 why=$4 deps name version spec out parent ok
    graph "$package" "$flags"
    while read -r name version; do
        [[ "$name" == "$crate" ]] || continue
        spec="$name@${version#v}"
        out="$(tree "$package" "$flags" -e normal -i "$spec" --prefix depth --format '{p}')"
        ok=1
        for parent in $(sed -n 's/^1\([^ ]*\) .*/\1/p' <<<"$out" | sort -u); do
            [[ "${allowed["$package $crate"]:-}" == *" $parent "* ]] || ok=0
        done
        ((ok)) || broken "$package" "$flags" "$spec" "$why" -e normal -i "$spec"
    done <<<"$deps"
}

check_feature() { # PACKAGE FLAGS CRATE FEATURE WHY
    local package=$1 flags=$2 crate=$3 feature=$4 why=$5 deps out
    graph "$package" "$flags"
    grep -q "^$crate " <<<"$deps" || return 0
    out="$(tree "$package" "$flags" -e normal,features -i "$crate" --prefix none --format '{p}')"
    grep -qx "$crate feature \"$feature\"" <<<"$out" || return 0
    failed=1
    echo "check-deps: $package ($(label "$flags")) depends on $crate with feature \"$feature\": $why" >&2
    echo "  what enabled it (cargo tree -p $package${flags:+ $flags} -e normal,features -i $crate):" >&2
    # The branch of the inverted feature tree under that feature, indented by depth.
    tree "$package" "$flags" -e normal,features -i "$crate" --prefix depth --format '{p}' \
        | awk -v want="1$crate feature \"$feature\"" '
            $0 == want { on = 1; print "    " substr($0, 2); next }
            on { match($0, /^[0-9]+/); d = substr($0, 1, RLENGTH) + 0
                 if (d <= 1) exit
                 printf "%" (4 + 2 * (d - 1)) "s%s\n", "", substr($0, RLENGTH + 1) }' >&2
}

for rule in "${rules[@]}"; do
    IFS='|' read -r kind package a b c <<<"$rule"
    for flags in "${feature_sets[@]}"; do
        case "$kind" in
            deny) check_deny "$package" "$flags" "$a" "$b" ;;
            feature) check_feature "$package" "$flags" "$a" "$b" "$c" ;;
        esac
    done
done

if ((failed)); then
    echo "check-deps: FAILED (the rules are in scripts/check-deps.sh)" >&2
    exit 1
fi
echo "check-deps: ok (${#rules[@]} rules)"
