#!/usr/bin/env bash
# Installs the system packages the tests and benchmarks use, only when missing and only as root.
#
# When something is missing and cannot be installed (not root, no apt-get, apt failed, or a
# package installed without the command it should bring), this says which, loudly, and exits
# 1: tests that need it would only skip (and under CI=true they fail: tests/conftest.py).
# Without root on a developer's machine it warns and exits 0, so the rest of the suite runs.
set -uo pipefail

missing() {
  local want=()
  command -v haproxy >/dev/null || want+=(haproxy)
  command -v nginx >/dev/null || want+=(nginx libnginx-mod-stream)
  command -v iptables >/dev/null || want+=(iptables)
  command -v ip >/dev/null || want+=(iproute2)
  command -v setpriv >/dev/null || want+=(util-linux)
  # Real external services for the egress tests (PostgreSQL with ssl=on, Redis with TLS).
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql)
  command -v psql >/dev/null || want+=(postgresql-client)
  command -v redis-server >/dev/null || want+=(redis-server)
  # A real 3-member etcd for the etcd store and multi-server tests (tether.testing.etcd).
  command -v etcd >/dev/null || want+=(etcd-server)
  command -v etcdctl >/dev/null || want+=(etcd-client)
  # Go's crypto/x509 and Node's tls judge Tether's chains (tests/ca/test_verifier_matrix.py);
  # Node's npm also installs the second Consul client (below).
  command -v go >/dev/null || want+=(golang-go)
  command -v node >/dev/null || want+=(nodejs)
  echo "${want[@]}"
}

# The `consul` npm package, the second real Consul client (tests/integration/test_node_consul_client.py),
# once the system packages are in place.
node_client() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/.deps/node"
  if command -v npm >/dev/null && [ ! -d "$dir/node_modules/consul" ]; then
    mkdir -p "$dir"
    npm install --no-audit --no-fund --prefix "$dir" consul@2.0.1 >/dev/null 2>&1 \
      || echo "test-deps: FAILED: npm could not install the consul package; its smoke test will skip" >&2
  fi
}

read -r -a want <<<"$(missing)"
if [ ${#want[@]} -eq 0 ]; then
  node_client
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-deps: MISSING ${want[*]} and cannot install them (not root, or no apt-get)." >&2
  echo "test-deps: the tests that need them will skip, listed at the end of the run; install them as root." >&2
  case "${CI:-}" in true|1|yes) exit 1 ;; esac
  exit 0
fi

echo "test-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; } >"$log" 2>&1; then
  echo "test-deps: FAILED: apt-get could not install ${want[*]}:" >&2
  tail -n 20 "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
read -r -a still <<<"$(missing)"
if [ ${#still[@]} -ne 0 ]; then
  echo "test-deps: FAILED: installed, yet still missing: ${still[*]}" >&2
  exit 1
fi
echo "test-deps: installed ${want[*]}" >&2
node_client
