#!/usr/bin/env bash
# Checks the deployment files that can be checked without deploying: the systemd unit with
# `systemd-analyze verify` (its ExecStart pointed at an existing program, since plugd is not
# installed here), the nginx example with `nginx -t`, and the deployment scripts with `bash -n`.
# A tool that is missing is reported and its check skipped. deploy/plugd.yaml is parsed by
# crates/plugd-manifest/tests/schema.rs (the_example_host_config_validates). Run by
# scripts/test.sh.
#
#   scripts/check-deploy.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
failed=0

if command -v systemd-analyze >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    sed "s|^ExecStart=/usr/local/bin/plugd |ExecStart=$(command -v true) |" deploy/plugd.service >"$tmp/plugd.service"
    # verify prints problems (unknown options, bad values) and exits non-zero on errors.
    if out="$(systemd-analyze verify "$tmp/plugd.service" 2>&1)" && [[ -z "$out" ]]; then
        echo "check-deploy: deploy/plugd.service: ok (systemd-analyze verify)"
    else
        echo "check-deploy: deploy/plugd.service: systemd-analyze verify says:" >&2
        sed 's/^/  /' <<<"$out" >&2
        failed=1
    fi
    if grep -q '^MemoryDenyWriteExecute=yes' deploy/plugd.service; then
        echo "check-deploy: deploy/plugd.service sets MemoryDenyWriteExecute=yes: wasmtime needs executable JIT memory" >&2
        failed=1
    fi
else
    echo "check-deploy: systemd-analyze not installed: the unit is not verified (skipped)"
fi

if command -v nginx >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    tmp_nginx="$(mktemp -d)"
    # The example's certificate paths point at a throwaway self-signed pair.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
        -keyout "$tmp_nginx/privkey.pem" -out "$tmp_nginx/fullchain.pem" 2>/dev/null
    sed "s|/etc/letsencrypt/live/plugd.example.com/|$tmp_nginx/|" deploy/nginx.conf >"$tmp_nginx/plugd.conf"
    # The example is server blocks: wrap them in the smallest main config nginx accepts.
    printf 'pid %s/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  access_log off;\n  include %s;\n}\n' \
        "$tmp_nginx" "$tmp_nginx/plugd.conf" >"$tmp_nginx/main.conf"
    if out="$(nginx -t -q -c "$tmp_nginx/main.conf" 2>&1)"; then
        echo "check-deploy: deploy/nginx.conf: ok (nginx -t)"
    else
        echo "check-deploy: deploy/nginx.conf: nginx -t says:" >&2
        sed 's/^/  /' <<<"$out" >&2
        failed=1
    fi
    rm -rf "$tmp_nginx"
else
    echo "check-deploy: nginx not installed: deploy/nginx.conf is not checked (skipped)"
fi

for script in scripts/docker-smoke.sh scripts/backup.sh scripts/package.sh; do
    bash -n "$script" || { echo "check-deploy: $script does not parse" >&2; failed=1; }
done

if ((failed)); then
    echo "check-deploy: FAILED" >&2
    exit 1
fi
echo "check-deploy: ok"
