#!/usr/bin/env bash
# The servers the fleet backends' tests talk to, on loopback: PostgreSQL (127.0.0.1:5432, trust
# auth for local connections, database `test`), Redis (127.0.0.1:6379) and NATS with JetStream
# (127.0.0.1:4222); and nginx (the fleet test's load balancer) and wrk (its load). Each one that is
# already answering is left alone; a missing one is installed from Debian's packages and started.
# Called by scripts/test.sh; run it by hand before `cargo test -p plugd-postgres` and friends.
#
#   bash scripts/services.sh          # install what is missing, start what is not running
#
# Another address: PLUGD_TEST_POSTGRES / PLUGD_TEST_REDIS / PLUGD_TEST_NATS (the tests read them);
# this script then checks those servers answer and installs nothing for them.
set -euo pipefail

say() { echo "services: $*"; }

# Whether something accepts TCP connections at host:port.
answers() {
    local host=${1%:*} port=${1##*:}
    timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

wait_for() {
    local what=$1 addr=$2
    for _ in $(seq 1 60); do
        answers "$addr" && return 0
        sleep 0.5
    done
    echo "services: $what does not answer on $addr after 30s" >&2
    exit 1
}

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "$apt_updated" ]; then
        sudo_if_needed apt-get update -qq
        apt_updated=1
    fi
    say "installing ${missing[*]} (Debian packages)"
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# PostgreSQL: the Debian cluster, trust auth on loopback, database `test`.
postgres() {
    local addr=${PLUGD_TEST_POSTGRES:-127.0.0.1:5432}
    if [ -n "${PLUGD_TEST_POSTGRES:-}" ]; then
        wait_for PostgreSQL "$addr"
        return
    fi
    if ! answers "$addr"; then
        install postgresql
        local version
        version=$(ls /etc/postgresql | sort -V | tail -1)
        local hba=/etc/postgresql/$version/main/pg_hba.conf
        if ! grep -q "plugd: trust on loopback" "$hba"; then
            sudo_if_needed sed -i '1i # plugd: trust on loopback (test machines only)\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
        fi
        sudo_if_needed pg_ctlcluster "$version" main start 2>/dev/null ||
            sudo_if_needed pg_ctlcluster "$version" main restart
        wait_for PostgreSQL "$addr"
    fi
    if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
        psql -h 127.0.0.1 -U postgres -d postgres -qc 'create database test' >/dev/null 2>&1 || true
    fi
    psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null ||
        { echo "services: PostgreSQL answers but database 'test' is not reachable as postgres without a password" >&2; exit 1; }
    say "PostgreSQL on $addr"
}

redis() {
    local addr=${PLUGD_TEST_REDIS:-127.0.0.1:6379}
    if ! answers "$addr"; then
        [ -n "${PLUGD_TEST_REDIS:-}" ] && wait_for Redis "$addr"
        install redis-server
        redis-server --bind 127.0.0.1 --port "${addr##*:}" --daemonize yes --save '' --appendonly no >/dev/null
        wait_for Redis "$addr"
    fi
    say "Redis on $addr"
}

nats() {
    local addr=${PLUGD_TEST_NATS:-127.0.0.1:4222}
    if ! answers "$addr"; then
        [ -n "${PLUGD_TEST_NATS:-}" ] && wait_for NATS "$addr"
        install nats-server
        local dir=${TMPDIR:-/tmp}/plugd-nats-jetstream
        mkdir -p "$dir"
        nohup nats-server -a 127.0.0.1 -p "${addr##*:}" -js -sd "$dir" >"$dir/nats.log" 2>&1 &
        wait_for NATS "$addr"
    fi
    say "NATS on $addr"
}

tools() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || install nginx
    command -v wrk >/dev/null 2>&1 || install wrk
    say "nginx and wrk installed"
}

postgres
redis
nats
tools
