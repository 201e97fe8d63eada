#!/usr/bin/env bash
# The tutorial's closing scene on a local cluster (after `deploy/local-cluster.sh up`):
# four whoami pods spread over two nodes, a Service with ClusterIP 10.96.10.10 port
# 3001 → 8080, and a client pod that makes four requests through the ClusterIP and gets
# four different `HOSTNAME:… IP:…` answers, one per pod (iptables `statistic --mode nth`
# round robin, programmed by every node agent). Then the same by name
# (`wget http://whoami:3001`, the node agent's cluster DNS) and through a NodePort
# Service (`expose service whoami --type NodePort`) on every node's address.
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
  local s
  for s in whoami whoami-np; do
    if exists service "$s"; then k delete service "$s" >/dev/null && say "deleted service $s"; fi
  done
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
  if exists service whoami-np; then
    say "service whoami-np exists"
  else
    k expose service whoami --name whoami-np --type NodePort >/dev/null
    say "created service whoami-np (expose service whoami --type NodePort)"
  fi
  for p in "${PODS[@]}"; do wait_for "pod $p Running" running "$p"; done
  wait_for "4 endpoints of service whoami" four_endpoints
  k get pods -o wide
  k get services
  k get endpoints whoami

  # The node port (PORT(S) shows 3001:<node port>/TCP) and the nodes' addresses.
  local np addrs=() a
  np=$(k get service whoami-np | awk 'NR == 2 {print $5}' | sed 's|^[0-9]*:\([0-9]*\)/TCP$|\1|')
  case "$np" in '' | *[!0-9]*) die "no node port for whoami-np (PORT(S): $np)" ;; esac
  for node in "${nodes[@]:0:2}"; do
    a=$(k get node "$node" -o json | grep -o '"address": *"[0-9.]*"' | head -n1 | grep -o '[0-9.]*"$' | tr -d '"')
    [ -n "$a" ] && addrs+=("$a")
  done

  # The client: four requests through the ClusterIP, four by name, four to each node's
  # address and node port. The rules reach every node within milliseconds of the
  # Endpoints update.
  if exists pod client; then k delete pod client --force >/dev/null 2>&1; wait_for "old client to go" gone pod client; fi
  local get='busybox timeout 5 busybox wget -qO-'
  local script="echo '== ClusterIP $VIP:3001'; for i in 1 2 3 4; do $get http://$VIP:3001; done"
  script+="; echo '== by name whoami:3001'; for i in 1 2 3 4; do $get http://whoami:3001; done"
  for a in "${addrs[@]}"; do
    script+="; echo '== node port $a:$np'; for i in 1 2 3 4; do $get http://$a:$np; done"
  done
  k create pod client --image busybox --restart Never -- sh -c "$script" >/dev/null
  say "created pod client: 4 × wget http://$VIP:3001, http://whoami:3001$(for a in "${addrs[@]}"; do printf ', http://%s:%s' "$a" "$np"; done)"
  wait_for "client pod to finish" finished client
  echo "--- kubectl-lite logs client"
  local out
  out=$(k logs client)
  echo "$out"
  echo "---"
  # Every section: 4 requests answered by 4 different pods.
  local sections bad=0 title distinct
  sections=$(echo "$out" | grep -c '^== ')
  [ "$sections" -eq $((2 + ${#addrs[@]})) ] || die "expected $((2 + ${#addrs[@]})) sections in the client's output, got $sections"
  while IFS= read -r title; do
    distinct=$(echo "$out" | awk -v t="$title" '$0 == t {on = 1; next} /^== / {on = 0} on && /^HOSTNAME:/' | sort -u | wc -l)
    if [ "$distinct" -eq 4 ]; then
      say "OK ${title#== }: 4 requests, 4 different pods"
    else
      say "FAIL ${title#== }: expected 4 different HOSTNAME lines, got $distinct"
      bad=1
    fi
  done < <(echo "$out" | grep '^== ')
  [ "$bad" = 0 ] || die "not every path reached all 4 pods (phase $(pod_phase client))"
  say "OK: round robin through $VIP, by name and through node port $np on ${addrs[*]}"
}

case "${1:-run}" in
  run | up) run ;;
  clean | down) clean ;;
  -h | --help | help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (run | clean)" ;;
esac
