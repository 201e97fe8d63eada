#!/usr/bin/env bash
# The tutorial's closing scene on a local cluster (after `deploy/local-cluster.sh up`):
# four whoami pods spread over two nodes, a Service with ClusterIP 10.96.10.10 port
# 3001 → 8080, and a client pod that makes four requests through the ClusterIP and gets
# four different `HOSTNAME:… IP:…` answers, one per pod (iptables `statistic --mode nth`
# round robin, programmed by every node agent).
#
#   deploy/demo.sh          run the scene (re-running replaces the client pod)
#   deploy/demo.sh clean    delete the demo's pods and Service
#
# Uses the kubectl-lite built by local-cluster.sh (or KUBECTL_LITE=/path/to/kubectl-lite).
set -euo pipefail

KL_HOME="${KUBE_LITE_HOME:-/var/tmp/kube-lite}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The local cluster's admin kubeconfig (TLS, admin certificate), unless KUBE_LITE_SERVER
# or KUBECONFIG say otherwise.
ADMIN_KUBECONFIG="$KL_HOME/apiserver/data/admin.kubeconfig"
SERVER="${KUBE_LITE_SERVER:-}"
VIP=10.96.10.10
PODS=(whoami-0 whoami-1 whoami-2 whoami-3)
TIMEOUT="${DEMO_TIMEOUT:-60}"

die() { echo "demo: $*" >&2; exit 1; }
say() { echo "demo: $*"; }

kubectl_bin() {
  if [ -n "${KUBECTL_LITE:-}" ]; then echo "$KUBECTL_LITE"; return; fi
  local d
  if [ -f "$KL_HOME/bin-dir" ]; then d=$(cat "$KL_HOME/bin-dir"); else d="$REPO/target/release"; fi
  [ -x "$d/kubectl-lite" ] || d="$REPO/target/debug"
  echo "$d/kubectl-lite"
}
KUBECTL=$(kubectl_bin)
[ -x "$KUBECTL" ] || die "kubectl-lite not found at $KUBECTL (run deploy/local-cluster.sh up first)"
k() {
  if [ -n "$SERVER" ]; then
    "$KUBECTL" --server "$SERVER" "$@"
  elif [ -z "${KUBECONFIG:-}" ] && [ -e "$ADMIN_KUBECONFIG" ]; then
    "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"
  else
    "$KUBECTL" "$@"
  fi
}

# wait_for DESCRIPTION COMMAND...: retry COMMAND until it succeeds or TIMEOUT passes.
wait_for() {
  local what=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

exists() { k get "$1" "$2" >/dev/null 2>&1; }
gone() { ! exists "$1" "$2"; }

clean() {
  local p
  for p in client "${PODS[@]}"; do
    if exists pod "$p"; then k delete pod "$p" --force >/dev/null 2>&1 && say "deleted pod $p"; fi
  done
  if exists service whoami; then k delete service whoami >/dev/null && say "deleted service whoami"; fi
  for p in client "${PODS[@]}"; do wait_for "pod $p to go" gone pod "$p"; done
}

pod_phase() { k get pod "$1" -o json 2>/dev/null | grep -o '"phase": *"[A-Za-z]*"' | head -n1 | sed 's/.*"\([A-Za-z]*\)"$/\1/'; }
running() { [ "$(pod_phase "$1")" = Running ]; }
finished() { case "$(pod_phase "$1")" in Succeeded | Failed) return 0 ;; *) return 1 ;; esac; }
endpoint_count() { k get endpoints whoami -o json 2>/dev/null | grep -o '"ip"' | wc -l; }
four_endpoints() { [ "$(endpoint_count)" -eq 4 ]; }

run() {
  k get nodes >/dev/null 2>&1 || die "no apiserver at ${SERVER:-the kubeconfig server} (run deploy/local-cluster.sh up first)"
  local nodes
  mapfile -t nodes < <(k get nodes 2>/dev/null | awk 'NR > 1 && $2 == "Ready" {print $1}')
  [ "${#nodes[@]}" -ge 1 ] || die "no Ready node"
  [ "${#nodes[@]}" -ge 2 ] || say "note: only one Ready node; all pods go to ${nodes[0]}"

  # Four whoami pods, alternating over the first two nodes.
  local i p node
  for i in "${!PODS[@]}"; do
    p=${PODS[$i]}
    node=${nodes[$((i % (${#nodes[@]} < 2 ? 1 : 2)))]}
    if exists pod "$p"; then
      say "pod $p exists"
    else
      k create pod "$p" --image whoami --labels app=whoami --port 8080 --node "$node" >/dev/null
      say "created pod $p on $node"
    fi
  done
  if exists service whoami; then
    say "service whoami exists"
  else
    k create service whoami --selector app=whoami --port 3001:8080/tcp --cluster-ip "$VIP" >/dev/null
    say "created service whoami ($VIP:3001 -> 8080)"
  fi
  for p in "${PODS[@]}"; do wait_for "pod $p Running" running "$p"; done
  wait_for "4 endpoints of service whoami" four_endpoints
  k get pods -o wide
  k get service whoami
  k get endpoints whoami

  # The client: four requests through the ClusterIP. The rules reach every node
  # within milliseconds of the Endpoints update.
  if exists pod client; then k delete pod client --force >/dev/null 2>&1; wait_for "old client to go" gone pod client; fi
  k create pod client --image busybox --restart Never -- sh -c \
    "for i in 1 2 3 4; do busybox timeout 5 busybox wget -qO- http://$VIP:3001; done" >/dev/null
  say "created pod client: 4 × wget http://$VIP:3001"
  wait_for "client pod to finish" finished client
  echo "--- kubectl-lite logs client"
  local out
  out=$(k logs client)
  echo "$out"
  echo "---"
  local distinct
  distinct=$(echo "$out" | grep '^HOSTNAME:' | sort -u | wc -l)
  if [ "$distinct" -eq 4 ]; then
    say "OK: 4 requests, 4 different pods (round robin through $VIP)"
  else
    die "expected 4 different HOSTNAME lines, got $distinct (phase $(pod_phase client))"
  fi
}

case "${1:-run}" in
  run | up) run ;;
  clean | down) clean ;;
  -h | --help | help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (run | clean)" ;;
esac
