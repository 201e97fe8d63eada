#!/usr/bin/env bash
# Runs every kube-lite test: the cargo test suites (real apiserver over gRPC, real sled,
# real network namespaces, veths, bridges, VXLAN and iptables — so root is required),
# then the docker-compose cluster test when Docker is available.
#   KUBE_LITE_SKIP_COMPOSE=1   skip the compose cluster test
#   KUBE_LITE_TEST_THREADS=N   cargo test threads (default 4)
# Every test binary runs even after a failure (--no-fail-fast). The last line of the
# output is always the grand total, alone on its line: `N passed, N failed` (cargo's
# per-binary `test result:` lines plus the compose test's `compose: N passed, N failed`);
# the exit status is non-zero if anything failed. A step that fails without reporting a
# failing test (build error, crashed test binary) counts as one failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run-tests: the tests create network namespaces and iptables rules: run as root (sudo $0)" >&2
  exit 1
fi
for tool in ip iptables-restore busybox; do
  command -v "$tool" >/dev/null || { echo "run-tests: '$tool' is missing (apt-get install iproute2 iptables busybox-static conntrack)" >&2; exit 1; }
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
failed=0

# Adds the `N passed; N failed` (cargo) or `N passed, N failed` (compose) counts found in
# $log; a step that exited non-zero without a failing test counts as one failure.
tally() {
  local rc=$1 what=$2 p f counts
  counts=$(grep -aoE "$3" "$log" | grep -oE '[0-9]+ (passed|failed)' || true)
  p=$(awk '$2 == "passed" { s += $1 } END { print s + 0 }' <<<"$counts")
  f=$(awk '$2 == "failed" { s += $1 } END { print s + 0 }' <<<"$counts")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "run-tests: $what failed (exit $rc) without a failing test: counted as 1 failure"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

echo "== cargo build"
rc=0
cargo build --workspace --bins --quiet || rc=$?
if [ "$rc" -ne 0 ]; then
  : >"$log"
  tally "$rc" "cargo build" 'x^'
else
  echo "== cargo test"
  rc=0
  cargo test --workspace --quiet --no-fail-fast -- --test-threads="${KUBE_LITE_TEST_THREADS:-4}" 2>&1 | tee "$log" || rc=$?
  tally "$rc" "cargo test" 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed'

  if [ "${KUBE_LITE_SKIP_COMPOSE:-0}" = 1 ]; then
    echo "== compose cluster test: skipped (KUBE_LITE_SKIP_COMPOSE=1)"
  elif [ -x deploy/compose-test.sh ] && docker info >/dev/null 2>&1; then
    echo "== compose cluster test"
    rc=0
    # Images from the debug binaries built above.
    KL_SKIP_CARGO=1 deploy/compose-test.sh 2>&1 | tee "$log" || rc=$?
    tally "$rc" "compose cluster test" '^compose: [0-9]+ passed, [0-9]+ failed'
  else
    echo "== compose cluster test: skipped (docker not reachable or deploy/compose-test.sh missing)"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
