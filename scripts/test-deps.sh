#!/usr/bin/env bash
# Installs the system packages the tests and benchmarks use, only when missing and only as root.
# Tests that need a package that could not be installed skip with a reason naming it.
set -uo pipefail
want=()
command -v haproxy >/dev/null || want+=(haproxy)
command -v nginx >/dev/null || want+=(nginx libnginx-mod-stream)
command -v iptables >/dev/null || want+=(iptables)
command -v ip >/dev/null || want+=(iproute2)
command -v setpriv >/dev/null || want+=(util-linux)
# Real external services for the egress tests (PostgreSQL with ssl=on, Redis with TLS).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql)
command -v psql >/dev/null || want+=(postgresql-client)
command -v redis-server >/dev/null || want+=(redis-server)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-deps: missing ${want[*]} (not root or no apt-get); the tests that need them will skip" >&2
  exit 0
fi
echo "test-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
  || echo "test-deps: apt-get could not install ${want[*]}; the tests that need them will skip" >&2
exit 0
