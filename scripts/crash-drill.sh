#!/usr/bin/env bash
# Crash drill: kills `plugd serve` with SIGKILL KILLS times (default 100) at random moments while
# the `ledger` test plugin (tests/plugins/ledger) writes storage keys and runs database
# transactions and the status writer flushes host.db every 50 ms (one kill in ten lands while plugd
# is starting instead: STARTUP_KILLS=0.1); restarts it on the same data
# dir each time and checks, with the server down, that every acknowledged write is there, that
# every transaction is all-or-nothing, that `PRAGMA integrity_check` is ok on every SQLite
# database of the data dir, and that plugd answers /healthz again within START_TIMEOUT seconds.
# The logic is scripts/lib/crash-drill.py (Python 3, standard library). Figures for
# RELIABILITY.md ("Crash drills").
#
#   scripts/crash-drill.sh                      # 100 kills, debug build
#   KILLS=30 WORKERS=8 scripts/crash-drill.sh
#   PROFILE=release scripts/crash-drill.sh      # against a release build
#   PLUGD=/path/to/plugd scripts/crash-drill.sh # against another build (nothing is built)
#   WORK=/tmp/drill scripts/crash-drill.sh      # keep the data dir and plugd's log
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kills="${KILLS:-100}"
workers="${WORKERS:-4}"
profile="${PROFILE:-debug}"

command -v python3 >/dev/null || { echo "crash-drill: python3 is required" >&2; exit 1; }
bash "$root/scripts/build-examples.sh" >/dev/null
if [[ -z "${PLUGD:-}" ]]; then
    flags=(-q -p plugd-cli --bin plugd)
    [[ "$profile" == debug ]] || flags+=(--profile "$profile")
    (cd "$root" && cargo build "${flags[@]}")
    PLUGD="${CARGO_TARGET_DIR:-$root/target}/$profile/plugd"
fi

args=(--plugd "$PLUGD" --plugin "$root/tests/plugins/ledger" --kills "$kills" --workers "$workers"
    --start-timeout "${START_TIMEOUT:-30}" --startup-kills "${STARTUP_KILLS:-0.1}")
[[ -z "${WORK:-}" ]] || args+=(--work "$WORK")
exec python3 "$root/scripts/lib/crash-drill.py" "${args[@]}"
