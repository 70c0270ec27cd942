#!/usr/bin/env bash
# Backs up and restores plugd's data directory (data_dir; docs/deploy.md, "Backup and restore").
#
#   scripts/backup.sh backup DATA_DIR ARCHIVE.tar.gz    # plugd may be running
#   scripts/backup.sh restore ARCHIVE.tar.gz DATA_DIR   # plugd stopped; DATA_DIR absent or empty
#
# backup: every SQLite file (host.db, plugins/<name>/kv.sqlite, plugins/<name>/db.sqlite) is
# copied with SQLite's online backup (`sqlite3 FILE .backup`), so a running plugd keeps serving
# and each copy is a consistent database, checked with `PRAGMA integrity_check`; the other files
# (admin-token, plugins/<name>/files/) are copied as they are. Left out: cache/ (compiled
# components, rebuilt on demand) and the -wal/-shm/-journal files (the backups hold their
# content). Files keep their modes (0600, folders 0700). Each database is consistent on its own;
# for one moment across all of them, stop plugd first (or its writes between two files land in
# one and not the other).
#
# restore: unpacks the archive into DATA_DIR with the archive's modes. Then give it to plugd's
# user (`chown -R plugd: DATA_DIR`; under the systemd unit's DynamicUser, systemd does it at the
# next start) and start plugd.
#
# Needs the sqlite3 command (Debian: apt-get install sqlite3). Run it as root or as plugd's user.
set -euo pipefail
umask 077

die() {
    echo "backup.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '4,5p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
    exit 2
}

is_sqlite() { # FILE: whether it starts with SQLite's header
    [[ "$(head -c 15 "$1" 2>/dev/null)" == "SQLite format 3" ]]
}

backup() {
    local data=$1 archive=$2 stage rel dest n=0 check
    [[ -d "$data" ]] || die "$data is not a directory (the data_dir of the host config)"
    command -v sqlite3 >/dev/null 2>&1 || die "the sqlite3 command is missing (apt-get install sqlite3)"
    stage="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the trap runs after the function returns
    trap "rm -rf '$stage'" EXIT
    mkdir -p "$stage/data"
    chmod --reference="$data" "$stage/data"
    while IFS= read -r -d '' rel; do
        rel="${rel#./}"
        case "$rel" in
            cache | cache/*) continue ;;
            *-wal | *-shm | *-journal) continue ;;
        esac
        if [[ -d "$data/$rel" ]]; then
            mkdir -p "$stage/data/$rel"
            chmod --reference="$data/$rel" "$stage/data/$rel"
            continue
        fi
        [[ -f "$data/$rel" ]] || continue
        dest="$stage/data/$rel"
        if is_sqlite "$data/$rel"; then
            # The online backup API: pages copied under a read transaction, WAL included;
            # a writer busy for longer than the timeout fails the backup, never the writer.
            sqlite3 "$data/$rel" ".timeout 10000" ".backup '${dest//\'/\'\'}'" \
                || die "the online backup of $data/$rel failed"
            check="$(sqlite3 "$dest" "PRAGMA integrity_check")"
            [[ "$check" == ok ]] || die "the backup of $data/$rel fails its integrity check: $check"
            chmod --reference="$data/$rel" "$dest"
            n=$((n + 1))
        else
            cp -p "$data/$rel" "$dest"
        fi
    done < <(cd "$data" && find . -mindepth 1 -print0 | sort -z)
    tar -C "$stage" --numeric-owner -czf "$archive.tmp" data
    mv "$archive.tmp" "$archive"
    echo "backup.sh: $data -> $archive ($n database(s), $(find "$stage/data" -type f | wc -l) file(s))"
}

restore() {
    local archive=$1 data=$2
    [[ -f "$archive" ]] || die "$archive: no such archive"
    if [[ -e "$data" ]] && [[ -n "$(ls -A "$data")" ]]; then
        die "$data is not empty: restore into an empty or new folder (move the old one aside first)"
    fi
    local entries
    entries="$(tar -tzf "$archive")" || die "$archive is not a gzip tar archive"
    if grep -qvE '^data(/|$)' <<<"$entries"; then
        die "$archive is not a backup of this script (entries outside data/)"
    fi
    mkdir -p "$data"
    # The archive's modes: 0700 folders, 0600 databases and admin-token.
    tar -C "$data" --strip-components=1 --no-same-owner -xpzf "$archive"
    chmod 0700 "$data"
    echo "backup.sh: $archive -> $data; now chown -R to plugd's user (systemd's DynamicUser does it) and start plugd"
}

case "${1:-}" in
    backup) (($# == 3)) || usage; backup "$2" "$3" ;;
    restore) (($# == 3)) || usage; restore "$2" "$3" ;;
    *) usage ;;
esac
