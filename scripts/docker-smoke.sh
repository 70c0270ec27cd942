#!/usr/bin/env bash
# Builds the container image (Dockerfile) and smoke-tests it: starts a container, waits for
# /healthz, calls a plugin route, checks the health check and that plugd runs as a non-root user,
# then stops and removes the container by its id. Not part of scripts/test.sh: the image build
# compiles plugd in release inside the builder (tens of minutes on 2 cores the first time).
#
#   scripts/docker-smoke.sh [IMAGE-TAG]     # default plugd:smoke
#
# Where no container engine answers (`docker info` fails) it prints "no container engine:
# skipped" and exits 0. PLUGD_DOCKER=podman uses podman instead of docker.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
engine="${PLUGD_DOCKER:-docker}"
tag="${1:-plugd:smoke}"

if ! command -v "$engine" >/dev/null 2>&1 || ! "$engine" info >/dev/null 2>&1; then
    echo "docker-smoke: no container engine: skipped ($engine info failed)"
    exit 0
fi

fail() {
    echo "docker-smoke: FAILED: $*" >&2
    exit 1
}

started=$SECONDS
echo "==> $engine build -t $tag ."
"$engine" build -t "$tag" . || fail "the image build failed"
echo "    built in $((SECONDS - started))s"

id="$("$engine" run -d -p 127.0.0.1::8080 "$tag")"
cleanup() {
    "$engine" logs "$id" >"$root/target/docker-smoke.log" 2>&1 || true
    "$engine" rm -f "$id" >/dev/null 2>&1 || true
}
mkdir -p "$root/target"
trap cleanup EXIT
port="$("$engine" port "$id" 8080/tcp | head -n 1 | sed 's/.*://')"
[[ -n "$port" ]] || fail "no published port for 8080"
base="http://127.0.0.1:$port"

echo "==> waiting for $base/healthz"
for _ in $(seq 1 120); do
    if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
    [[ "$("$engine" inspect -f '{{.State.Running}}' "$id")" == true ]] \
        || fail "the container exited: $("$engine" logs "$id" 2>&1 | tail -n 20)"
    sleep 1
done
health="$(curl -fsS "$base/healthz")" || fail "/healthz did not answer within 120s"
echo "    /healthz: $health"
grep -q '"status":"ok"' <<<"$health" || fail "/healthz is not ok: $health"

greeting="$(curl -fsS "$base/plugins/hello/greet?name=Ada")" || fail "the hello plugin's route failed"
echo "    /plugins/hello/greet: $greeting"
grep -q 'Hello, Ada!' <<<"$greeting" || fail "unexpected greeting: $greeting"

user="$("$engine" exec "$id" id -u)"
[[ "$user" != 0 ]] || fail "plugd runs as root in the container"
echo "    runs as uid $user"

echo "==> waiting for the HEALTHCHECK to report healthy"
for _ in $(seq 1 90); do
    status="$("$engine" inspect -f '{{.State.Health.Status}}' "$id")"
    [[ "$status" == healthy ]] && break
    sleep 1
done
[[ "$status" == healthy ]] || fail "the health check says $status"

echo "==> stopping $id"
"$engine" stop -t 20 "$id" >/dev/null
code="$("$engine" inspect -f '{{.State.ExitCode}}' "$id")"
[[ "$code" == 0 ]] || fail "plugd exited $code on SIGTERM"
echo "docker-smoke: ok ($((SECONDS - started))s)"
