#!/usr/bin/env bash
# Makes a wasm32-wasip2 Rust toolchain available for plugd's guest plugins
# (see docs/design.md#guest-toolchain).
#
# Routes, in order:
#   rustup  - `rustup target list --installed` has wasm32-wasip2 (or `rustup target add` works):
#             plain `cargo`, the prebuilt std.
#   debian  - Debian's rustc-web 1.96 + its std source (apt): `/usr/bin/cargo` with
#             RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 and
#             -Zbuild-std=std,panic_abort (std is compiled for wasm from source).
# When the Debian route is already installed it is used before trying `rustup target add`, so a
# machine where everything is present never touches the network.
# Force a route with PLUGD_GUEST_ROUTE=rustup|debian.
#
# Usage
#   source scripts/wasm-toolchain.sh     # exports the variables below and defines plugd_guest_cargo
#   plugd_guest_cargo build --release    # runs the guest cargo with the right env and flags
#
#   scripts/wasm-toolchain.sh            # prints `export ...` lines (eval "$(scripts/wasm-toolchain.sh)")
#   scripts/wasm-toolchain.sh cargo build --release   # runs the guest cargo
#
# Exports
#   PLUGD_GUEST_ROUTE        rustup | debian
#   PLUGD_GUEST_CARGO        command prefix running the right cargo with the right env
#                            (e.g. "env RUSTC=/usr/bin/rustc ... /usr/bin/cargo"); word-split it
#   PLUGD_GUEST_CARGO_FLAGS  flags to add after the cargo subcommand ("-Zbuild-std=std,panic_abort"
#                            on the debian route, empty otherwise)
# The compiler env (RUSTC, RUSTC_BOOTSTRAP) is deliberately NOT exported into the calling shell:
# it would make the host's own `cargo build` use Debian's rustc.

_plugd_tc_main() {
    local target=wasm32-wasip2
    local debian_pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc)

    _plugd_tc_die() {
        echo "wasm-toolchain: ERROR: $*" >&2
        return 1
    }
    _plugd_tc_note() { echo "wasm-toolchain: $*" >&2; }

    _plugd_tc_rustup_has_target() {
        command -v rustup >/dev/null 2>&1 || return 1
        rustup target list --installed 2>/dev/null | grep -qx "$target"
    }

    _plugd_tc_debian_installed() {
        local p status
        command -v dpkg-query >/dev/null 2>&1 || return 1
        for p in "${debian_pkgs[@]}"; do
            status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || return 1
            [[ "$status" == "install ok installed" ]] || return 1
        done
        [[ -x /usr/bin/cargo && -x /usr/bin/rustc ]]
    }

    _plugd_tc_debian_install() {
        local sudo=()
        if [[ "$(id -u)" != 0 ]]; then
            command -v sudo >/dev/null 2>&1 \
                || { _plugd_tc_die "need root or sudo to apt-get install ${debian_pkgs[*]}"; return 1; }
            sudo=(sudo)
        fi
        command -v apt-get >/dev/null 2>&1 \
            || { _plugd_tc_die "no wasm32-wasip2 target in rustup and no apt-get for Debian's rustc-web route (see docs/design.md#guest-toolchain)"; return 1; }
        local p need_update=0
        for p in "${debian_pkgs[@]}"; do
            if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; break; fi
        done
        if ((need_update)); then
            _plugd_tc_note "apt-get update"
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
                || { _plugd_tc_die "apt-get update failed"; return 1; }
        fi
        _plugd_tc_note "apt-get install ${debian_pkgs[*]} (about 30 s, 1.4 GB)"
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debian_pkgs[@]}" >&2; then
            if ((need_update == 0)); then
                # Stale package lists (404 on a superseded version): refresh once and retry.
                _plugd_tc_note "install failed; apt-get update and retry"
                "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
                    || { _plugd_tc_die "apt-get update failed"; return 1; }
                "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debian_pkgs[@]}" >&2 \
                    || { _plugd_tc_die "apt-get install ${debian_pkgs[*]} failed"; return 1; }
            else
                _plugd_tc_die "apt-get install ${debian_pkgs[*]} failed"
                return 1
            fi
        fi
        _plugd_tc_debian_installed || { _plugd_tc_die "Debian rustc-web route incomplete after install"; return 1; }
    }

    local route="${PLUGD_GUEST_ROUTE:-}"
    case "$route" in
        rustup)
            if ! _plugd_tc_rustup_has_target; then
                command -v rustup >/dev/null 2>&1 || { _plugd_tc_die "PLUGD_GUEST_ROUTE=rustup but rustup is not installed"; return 1; }
                rustup target add "$target" >&2 \
                    || { _plugd_tc_die "PLUGD_GUEST_ROUTE=rustup but 'rustup target add $target' failed"; return 1; }
            fi
            ;;
        debian)
            _plugd_tc_debian_installed || _plugd_tc_debian_install || return 1
            ;;
        "")
            if _plugd_tc_rustup_has_target; then
                route=rustup
            elif _plugd_tc_debian_installed; then
                route=debian
            elif command -v rustup >/dev/null 2>&1 \
                && { _plugd_tc_note "trying 'rustup target add $target'"; timeout 300 rustup target add "$target" >&2; } \
                && _plugd_tc_rustup_has_target; then
                route=rustup
            else
                _plugd_tc_note "rustup cannot provide $target; using Debian's rustc-web route"
                _plugd_tc_debian_install || return 1
                route=debian
            fi
            ;;
        *)
            _plugd_tc_die "PLUGD_GUEST_ROUTE must be 'rustup' or 'debian', not '$route'"
            return 1
            ;;
    esac

    if [[ "$route" == rustup ]]; then
        local cargo
        cargo=$(command -v cargo) || { _plugd_tc_die "cargo not found on PATH"; return 1; }
        PLUGD_GUEST_CARGO="$cargo"
        PLUGD_GUEST_CARGO_FLAGS=""
    else
        PLUGD_GUEST_CARGO="env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 /usr/bin/cargo"
        # Debian's wasi-libc, also for guest workspaces whose config does not name it (commands).
        PLUGD_GUEST_CARGO_FLAGS="-Zbuild-std=std,panic_abort --config target.wasm32-wasip2.rustflags=[\"-L\",\"/usr/lib/wasm32-wasi\"]"
    fi
    PLUGD_GUEST_ROUTE="$route"
    export PLUGD_GUEST_ROUTE PLUGD_GUEST_CARGO PLUGD_GUEST_CARGO_FLAGS
}

# Runs the guest cargo: `plugd_guest_cargo build --release --manifest-path ...`.
# The route's flags (-Zbuild-std...) go right after the subcommand.
plugd_guest_cargo() {
    if [[ -z "${PLUGD_GUEST_CARGO:-}" ]]; then
        _plugd_tc_main || return 1
    fi
    local -a cargo flags
    read -r -a cargo <<<"$PLUGD_GUEST_CARGO"
    read -r -a flags <<<"${PLUGD_GUEST_CARGO_FLAGS:-}"
    if (($# == 0)); then
        "${cargo[@]}"
        return
    fi
    local sub="$1"
    shift
    "${cargo[@]}" "$sub" "${flags[@]}" "$@"
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced.
    _plugd_tc_main || return 1
else
    set -euo pipefail
    _plugd_tc_main
    if (($# > 0)) && [[ "$1" == cargo ]]; then
        shift
        plugd_guest_cargo "$@"
        exit
    fi
    if (($# > 0)); then
        echo "usage: $0 [cargo <args>...]" >&2
        exit 2
    fi
    printf 'export PLUGD_GUEST_ROUTE=%q\n' "$PLUGD_GUEST_ROUTE"
    printf 'export PLUGD_GUEST_CARGO=%q\n' "$PLUGD_GUEST_CARGO"
    printf 'export PLUGD_GUEST_CARGO_FLAGS=%q\n' "$PLUGD_GUEST_CARGO_FLAGS"
    echo "# build a guest: \$PLUGD_GUEST_CARGO build --release \$PLUGD_GUEST_CARGO_FLAGS  (target and target dir come from the guest workspace's .cargo/config.toml)"
fi
