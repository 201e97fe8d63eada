#!/usr/bin/env bash
# Runs every kube-lite test: the cargo test suites (real apiserver over gRPC, real sled,
# real network namespaces, veths, bridges, VXLAN and iptables — so root is required),
# then the docker-compose cluster test when Docker is available.
#   KUBE_LITE_SKIP_COMPOSE=1   skip the compose cluster test
#   KUBE_LITE_TEST_THREADS=N   cargo test threads (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run-tests: the tests create network namespaces and iptables rules: run as root (sudo $0)" >&2
  exit 1
fi
for tool in ip iptables-restore busybox; do
  command -v "$tool" >/dev/null || { echo "run-tests: '$tool' is missing (apt-get install iproute2 iptables busybox-static conntrack)" >&2; exit 1; }
done

echo "== cargo build"
cargo build --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --quiet -- --test-threads="${KUBE_LITE_TEST_THREADS:-4}"

if [ "${KUBE_LITE_SKIP_COMPOSE:-0}" = 1 ]; then
  echo "== compose cluster test: skipped (KUBE_LITE_SKIP_COMPOSE=1)"
elif [ -x deploy/compose-test.sh ] && docker info >/dev/null 2>&1; then
  echo "== compose cluster test"
  KL_SKIP_CARGO=1 deploy/compose-test.sh   # images from the debug binaries built above
else
  echo "== compose cluster test: skipped (docker not reachable or deploy/compose-test.sh missing)"
fi
