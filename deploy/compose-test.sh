#!/usr/bin/env bash
# kube-lite cluster test against a real docker-compose cluster (issue 5).
#
# Builds the images (reusing the offline base image when present) and the pods' image
# archives (target/images/{whoami,busybox}.tar), starts the apiserver and two node
# containers with short node-health timings (deploy/docker-compose.test.yml); each node
# container runs its own containerd (deploy/docker/node-entrypoint.sh), so pods are
# containers from images. Then, printing progress as each step passes:
#   1. both nodes register and get Ready
#   1b. `kubectl-lite image load whoami.tar busybox.tar` reaches both nodes, which report
#      the images in status.images (skipped with KL_RUNTIME=process)
#   2. the tutorial's Service scene with image-based pods: 4 whoami pods (image
#      whoami:latest from the archive) spread over the 2 nodes, Service 10.96.10.10:3001
#      → 8080 (the tutorial's 172.17.10.10 moved into the cluster's service range), a
#      busybox pod inside the cluster makes 4 requests → 4 different pods answer
#   2c. a busybox pod sees its image's filesystem, not the node's: its /etc/os-release
#      is the image's (the node container's says Debian), the node's /usr/local/bin/nodeagent
#      is absent; `kubectl-lite exec` into a whoami pod (containerd's exec) sees the image's
#      /etc/os-release too (KL_RUNTIME=process: skipped)
#   2b. LoadBalancer (issue 12): `expose service whoami --type LoadBalancer --port 8081`
#      gets both nodes' container addresses as ingress, and the host reaches each of them
#      on port 8081 (4 different pods answer); a second LoadBalancer on 8081 stays
#      <pending> with the PortInUse condition
#   3. docker stop one node → NotReady within the grace period, its pods rescheduled on
#      the other node, the Service answers from the survivors
#   4. docker start it → Ready again, no duplicate pod IPs, new pods land on it and the
#      Service reaches pods on both nodes
#   3/4 also show that a node's images outlive docker stop/start (containerd's root is
#      on the node's volume; its state on the /run tmpfs starts empty)
#   5. --scale node=3 → a third node registers with its own subnet, gets the images with
#      `image load --node`, runs a pod that the Service reaches
#   6. docker restart the apiserver → every object intact, agents reconnect and resume
#      their watches (a new pod gets Running, a deleted pod goes away)
#   6b. each node's containerd holds exactly its pods' containers, running tasks and
#      active snapshots (none left of deleted, moved or restarted pods)
#   7. down -v leaves no container, network or volume of the project
# The cluster is always removed at exit (trap), also on failure or Ctrl-C.
#
# Env:
#   KL_COMPOSE   compose command (default: `docker compose` if present, else docker-compose)
#   KL_PROFILE   cargo profile of the binaries put into the images (default debug: the
#                test suite has built them already; release works too)
#   KL_SKIP_BUILD=1  use the images kube-lite/{apiserver,node}:latest as they are
#   KL_KEEP=1    on failure, leave the cluster running for inspection (prints how to remove it)
#   KL_RUNTIME   the nodes' runtime: containerd (default; pods from the image archives) or
#                process (pods are programs of the node image: the fallback)
#   KL_IMAGES_DIR  where compose-build.sh put whoami.tar and busybox.tar (default
#                target/images)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export KL_PROFILE=${KL_PROFILE:-debug}
case "$KL_PROFILE" in
    release) outdir=release ;;
    dev | debug) outdir=debug ;;
    *) outdir=$KL_PROFILE ;;
esac
KUBECTL="${CARGO_TARGET_DIR:-$root/target}/$outdir/kubectl-lite"
export KL_RUNTIME=${KL_RUNTIME:-containerd}
IMAGES_DIR=${KL_IMAGES_DIR:-${CARGO_TARGET_DIR:-$root/target}/images}

PROJECT="kltest$$"
SVC_IP=10.96.10.10
SVC_PORT=3001
export KL_NODE_GRACE_PERIOD=${KL_NODE_GRACE_PERIOD:-6s}
export KL_POD_EVICTION_TIMEOUT=${KL_POD_EVICTION_TIMEOUT:-6s}
grace_s=${KL_NODE_GRACE_PERIOD%s}

T0=$(date +%s)
say() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
ok() { say "ok: $*"; }
# Steps passed, for the `compose: N passed, N failed` line (deploy/run-tests.sh tallies it).
PASSED=0
step_ok() {
    PASSED=$((PASSED + 1))
    ok "$@"
}
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
die() {
    say "FAIL: $*" >&2
    exit 1
}

for tool in docker jq; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (apt-get install $tool)"
done
if [[ -n "${KL_COMPOSE:-}" ]]; then
    read -r -a COMPOSE <<<"$KL_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    die "neither 'docker compose' nor 'docker-compose' found"
fi

# A free port on 127.0.0.1 for the apiserver (a developer may run one on 6443).
pick_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
            echo "$p"
            return
        fi
    done
    echo 26443
}
export KL_APISERVER_PORT=${KL_APISERVER_PORT:-$(pick_port)}
SERVER="https://127.0.0.1:$KL_APISERVER_PORT"
# The admin kubeconfig, copied out of the apiserver container once it wrote it (its CA
# and admin certificate; --server points at the published port).
KC="/tmp/kl-compose-kubeconfig.$$"

dc() { "${COMPOSE[@]}" -p "$PROJECT" -f "$here/docker-compose.yml" -f "$here/docker-compose.test.yml" "$@"; }
kl() { "$KUBECTL" --kubeconfig "$KC" --server "$SERVER" "$@"; }
# `docker cp` by container id: docker-compose 1.x has no `cp`.
fetch_kubeconfig() {
  local id
  id=$(dc ps -q apiserver 2>/dev/null) && [ -n "$id" ] &&
    docker cp "$id:/var/lib/kube-lite/apiserver/admin.kubeconfig" "$KC" >/dev/null 2>&1
}

# ---------- cleanup ----------
DOWN_DONE=0
ANON_VOLUMES=()
leftovers() {
    local out=""
    out+=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    out+=$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
    out+=$(docker network ls -q --filter "name=^${PROJECT}_")
    out+=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    local v
    for v in "${ANON_VOLUMES[@]}"; do
        docker volume inspect "$v" >/dev/null 2>&1 && out+="$v"
    done
    printf '%s' "$out"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $rc != 0 ]]; then
        say "test failed (exit $rc); cluster state and logs follow" >&2
        kl get nodes -o wide >&2 2>&1 || true
        kl get pods -o wide >&2 2>&1 || true
        kl get endpoints >&2 2>&1 || true
        dc ps >&2 2>&1 || true
        dc logs --no-color --tail=60 >&2 2>&1 || true
        if [[ "${KL_KEEP:-0}" == 1 ]]; then
            say "KL_KEEP=1: cluster left running; remove it with:" >&2
            say "  ${COMPOSE[*]} -p $PROJECT -f $here/docker-compose.yml -f $here/docker-compose.test.yml down -v" >&2
            exit $rc
        fi
    fi
    rm -f "$KC" "/tmp/kl-wait.$$"
    if [[ $DOWN_DONE == 0 ]]; then
        dc down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
        # Anonymous volumes of containers that down may have missed.
        local v
        for v in "${ANON_VOLUMES[@]}"; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
        if [[ -n "$(leftovers)" ]]; then
            say "cleanup: project $PROJECT left objects behind: $(leftovers | tr '\n' ' ')" >&2
            [[ $rc == 0 ]] && rc=1
        fi
    fi
    [[ $rc == 0 ]] || echo "compose: $PASSED passed, 1 failed"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- helpers ----------
# wait_for TIMEOUT_S DESCRIPTION CMD...: poll CMD (every 0.5 s) until it succeeds.
wait_for() {
    local timeout=$1 desc=$2
    shift 2
    local deadline=$(($(date +%s) + timeout))
    while ! "$@" >/tmp/kl-wait.$$ 2>&1; do
        if (($(date +%s) >= deadline)); then
            say "timed out after ${timeout}s waiting for: $desc" >&2
            sed 's/^/    /' /tmp/kl-wait.$$ >&2 || true
            rm -f /tmp/kl-wait.$$
            die "$desc"
        fi
        sleep 0.5
    done
    rm -f /tmp/kl-wait.$$
}

# JSON items of a kind (works whether kubectl-lite prints a List or one object).
items() { kl get "$@" -o json | jq -c '(.items // [.])[]'; }

node_ready() { # NODE → 0 when Ready=True
    kl get nodes -o json | jq -e --arg n "$1" \
        '.items[] | select(.metadata.name == $n) | .status.conditions[]? | select(.type == "Ready" and .status == "True")' >/dev/null
}
node_not_ready() {
    kl get nodes -o json | jq -e --arg n "$1" \
        '.items[] | select(.metadata.name == $n) | .status.conditions[]? | select(.type == "Ready" and .status != "True")' >/dev/null
}
ready_nodes() {
    kl get nodes -o json | jq -r '.items[] | select(any(.status.conditions[]?; .type == "Ready" and .status == "True")) | .metadata.name' | sort
}
pod_field() { # POD JQ-PATH
    kl get pods "$1" -o json | jq -r "(.items // [.])[0] | $2 // empty"
}
pods_running() { # POD... → 0 when each is Running with an IP
    local p
    for p in "$@"; do
        [[ "$(pod_field "$p" '.status.phase')" == Running ]] || { echo "$p: $(pod_field "$p" '.status.phase') $(pod_field "$p" '.status.reason')"; return 1; }
        [[ -n "$(pod_field "$p" '.status.podIP')" ]] || { echo "$p: no IP"; return 1; }
    done
}
pods_all_on() { # NODE POD... → 0 when each pod is Running on NODE
    local node=$1 p
    shift
    pods_running "$@" || return 1
    for p in "$@"; do
        [[ "$(pod_field "$p" '.spec.nodeName')" == "$node" ]] || { echo "$p on $(pod_field "$p" '.spec.nodeName')"; return 1; }
    done
}
pod_gone() { ! kl get pods "$1" -o json >/dev/null 2>&1; }
pod_done() { # → 0 when Succeeded or Failed
    local ph
    ph=$(pod_field "$1" '.status.phase')
    [[ "$ph" == Succeeded || "$ph" == Failed ]]
}
no_duplicate_ips() {
    local dups
    dups=$(kl get pods -o json | jq -r '.items[].status.podIP // empty' | sort | uniq -d)
    [[ -z "$dups" ]] || { echo "duplicate pod IPs: $dups"; return 1; }
}

CLIENT_SEQ=0
# service_check N EXPECTED_DISTINCT [POD_NAMES_ALLOWED...]: a busybox pod makes N requests
# to the ClusterIP; every request must be answered, by EXPECTED_DISTINCT different pods,
# all of them among the allowed pods when given. Prints the answering pods.
service_check() {
    local n=$1 want=$2
    shift 2
    CLIENT_SEQ=$((CLIENT_SEQ + 1))
    local client="client-$CLIENT_SEQ"
    local script="i=0; while [ \$i -lt $n ]; do i=\$((i+1)); busybox timeout 5 busybox wget -qO- http://$SVC_IP:$SVC_PORT/ || echo REQUEST-FAILED; done"
    kl create pod "$client" --image busybox --restart Never -- sh -c "$script" >/dev/null
    wait_for 60 "client pod $client finished" pod_done "$client"
    local phase log
    phase=$(pod_field "$client" '.status.phase')
    log=$(kl logs "$client" 2>&1) || die "kubectl-lite logs $client: $log"
    [[ "$phase" == Succeeded ]] || die "client pod $client $phase: $log"
    if grep -q REQUEST-FAILED <<<"$log"; then die "a request to $SVC_IP:$SVC_PORT failed:"$'\n'"$log"; fi
    local hosts
    hosts=$(grep -o 'HOSTNAME:[^ ]*' <<<"$log" | cut -d: -f2) || true
    [[ -n "$hosts" && $(wc -l <<<"$hosts") == "$n" ]] || die "expected $n answers from $SVC_IP:$SVC_PORT, got:"$'\n'"$log"
    local distinct
    distinct=$(sort -u <<<"$hosts" | wc -l)
    [[ $distinct == "$want" ]] || die "expected $n requests answered by $want different pods, got $distinct:"$'\n'"$log"
    if (($# > 0)); then
        local h
        for h in $hosts; do
            [[ " $* " == *" $h "* ]] || die "answer from $h, which is not one of: $*"
        done
    fi
    ANSWERED_BY=$(sort -u <<<"$hosts" | tr '\n' ' ')
    kl delete pod "$client" >/dev/null
    wait_for 30 "client pod $client deleted" pod_gone "$client"
}

# compose container name (proj_node_1 / proj-node-1) → node name, as the entrypoint does.
node_name_of() {
    docker inspect -f '{{.Name}}' "$1" | sed 's#^/##' | tr 'A-Z_.' 'a-z--'
}

# ---------- 0. images ----------
say "kube-lite compose cluster test: project $PROJECT, ${COMPOSE[*]}, apiserver on $SERVER"
if [[ "${KL_SKIP_BUILD:-0}" != 1 ]]; then
    build_log=$(mktemp /tmp/kl-compose-build.XXXXXX)
    if ! "$here/compose-build.sh" >"$build_log" 2>&1; then
        cat "$build_log" >&2
        rm -f "$build_log"
        die "image build failed (deploy/compose-build.sh)"
    fi
    # The Docker CLI's notice about the legacy builder is noise here.
    grep -v -e 'DEPRECATED' -e 'legacy builder' -e 'buildx' -e '^ *$' "$build_log" || true
    rm -f "$build_log"
fi
[[ -x "$KUBECTL" ]] || die "kubectl-lite not built at $KUBECTL"
ok "images kube-lite/apiserver, kube-lite/node and the archives in $IMAGES_DIR built"

# ---------- 1. up ----------
dc up -d >/dev/null 2>&1 || {
    dc up -d
    die "compose up failed"
}
mapfile -t NODE_CIDS < <(dc ps -q node)
((${#NODE_CIDS[@]} == 2)) || die "expected 2 node containers, got ${#NODE_CIDS[@]}"
for c in "${NODE_CIDS[@]}"; do
    while read -r v; do [[ -n "$v" ]] && ANON_VOLUMES+=("$v"); done < <(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{"\n"}}{{end}}{{end}}' "$c")
done
APISERVER_CID=$(dc ps -q apiserver)
NODE1=$(node_name_of "${NODE_CIDS[0]}")
NODE2=$(node_name_of "${NODE_CIDS[1]}")
ok "cluster up: apiserver + nodes $NODE1 $NODE2"
wait_for 60 "admin kubeconfig written by the apiserver" fetch_kubeconfig
wait_for 60 "apiserver answering on $SERVER" kl get nodes
wait_for 60 "nodes $NODE1 and $NODE2 Ready" node_ready "$NODE1"
wait_for 30 "node $NODE2 Ready" node_ready "$NODE2"
[[ "$(ready_nodes | tr '\n' ' ')" == "$(printf '%s\n' "$NODE1" "$NODE2" | sort | tr '\n' ' ')" ]] ||
    die "Ready nodes are $(ready_nodes | tr '\n' ' '), expected $NODE1 $NODE2"
step_ok "2 nodes Ready: $(kl get nodes -o json | jq -r '.items[] | "\(.metadata.name)=\(.spec.podCIDR)"' | tr '\n' ' ')"

# ---------- 1b. images from archives onto every node ----------
node_has_images() { # NODE IMAGE... → 0 when the node's status.images names each
    local names i
    names=$(kl get nodes -o json | jq -r --arg n "$1" '.items[] | select(.metadata.name == $n) | .status.images[]?.names[]?')
    shift
    for i in "$@"; do
        grep -qxF "$i" <<<"$names" || { echo "$i not in status.images: $names"; return 1; }
    done
}
WHOAMI_REF=docker.io/library/whoami:latest
BUSYBOX_REF=docker.io/library/busybox:latest
load_images() { # [--node NODE]... → loads both archives, checks one line per node and image
    local out
    out=$(kl image load "$@" "$IMAGES_DIR/whoami.tar" "$IMAGES_DIR/busybox.tar" 2>&1) ||
        die "kubectl-lite image load $*: $out"
    echo "$out"
}
if [[ $KL_RUNTIME == containerd ]]; then
    for a in whoami busybox; do
        [[ -s "$IMAGES_DIR/$a.tar" ]] || die "$IMAGES_DIR/$a.tar missing (deploy/compose-build.sh makes it)"
    done
    t_load=$(now_ms)
    loaded=$(load_images)
    for n in "$NODE1" "$NODE2"; do
        for i in "$WHOAMI_REF" "$BUSYBOX_REF"; do
            grep -q "^$n: loaded .*$i" <<<"$loaded" || die "image load did not report $i on $n:"$'\n'"$loaded"
        done
        wait_for 30 "node $n reporting $WHOAMI_REF and $BUSYBOX_REF in status.images" node_has_images "$n" "$WHOAMI_REF" "$BUSYBOX_REF"
    done
    step_ok "image load whoami.tar busybox.tar ($(du -ch "$IMAGES_DIR/whoami.tar" "$IMAGES_DIR/busybox.tar" | awk 'END {print $1}')) reached both nodes in $(secs_since "$t_load")s; status.images lists them"
else
    say "KL_RUNTIME=$KL_RUNTIME: pods are programs of the node image, no images to load"
fi

# ---------- 2. Service scene ----------
PODS=(whoami-1 whoami-2 whoami-3 whoami-4)
t_create=$(now_ms)
for p in "${PODS[@]}"; do
    kl create pod "$p" --image whoami --labels app=whoami >/dev/null
done
wait_for 60 "4 whoami pods Running" pods_running "${PODS[@]}"
t_running=$(secs_since "$t_create")
on1=0 on2=0
for p in "${PODS[@]}"; do
    case "$(pod_field "$p" '.spec.nodeName')" in
        "$NODE1") on1=$((on1 + 1)) ;;
        "$NODE2") on2=$((on2 + 1)) ;;
    esac
done
[[ $on1 == 2 && $on2 == 2 ]] || die "expected 2 whoami pods per node, got $NODE1: $on1, $NODE2: $on2"
ok "4 whoami pods created -> Running in ${t_running}s ($KL_RUNTIME), 2 on each node: $(kl get pods -o json | jq -r '.items[] | "\(.metadata.name)@\(.spec.nodeName)=\(.status.podIP)"' | tr '\n' ' ')"
kl create service whoami --selector app=whoami --port "$SVC_PORT:8080" --cluster-ip "$SVC_IP" >/dev/null
endpoints_n() { [[ "$(kl get endpoints whoami -o json | jq '[(.items // [.])[].subsets[]?.addresses[]?] | length')" == "$1" ]]; }
wait_for 30 "Service whoami has 4 endpoints" endpoints_n 4
ok "Service whoami $SVC_IP:$SVC_PORT -> 8080 with 4 endpoints"
service_check 4 4
step_ok "4 requests to $SVC_IP:$SVC_PORT answered by 4 different pods: $ANSWERED_BY"

# ---------- 2b. LoadBalancer from the host (issue 12) ----------
LB_PORT=8081
kl expose service whoami --name whoami-lb --type LoadBalancer --port "$LB_PORT" --target-port 8080 >/dev/null
NODE_ADDRS=$(kl get nodes -o json | jq -r '[.items[].status.addresses[]? | select(.type == "InternalIP") | .address] | sort | join(" ")')
lb_ingress() { kl get service "$1" -o json | jq -r '[.status.loadBalancer.ingress[]?.ip] | sort | join(" ")'; }
lb_ready() { [[ "$(lb_ingress whoami-lb)" == "$NODE_ADDRS" ]]; }
wait_for 30 "whoami-lb ingress = the nodes' addresses ($NODE_ADDRS)" lb_ready
[[ "$(kl get service whoami-lb | awk 'NR == 2 {print $4}')" == "$(tr ' ' ',' <<<"$NODE_ADDRS")" ]] ||
    die "EXTERNAL-IP of whoami-lb: $(kl get service whoami-lb)"
host_get() { # URL → the body, from the host (the machine running docker)
    if command -v curl >/dev/null; then curl -fsS --max-time 5 "$1"; else wget -qO- -T 5 "$1"; fi
}
lb_from_host() { host_get "http://$1:$LB_PORT/" >/dev/null 2>&1; }
for a in $NODE_ADDRS; do
    wait_for 30 "the host reaching $a:$LB_PORT" lb_from_host "$a"
    hosts=$(for i in 1 2 3 4 5 6 7 8; do host_get "http://$a:$LB_PORT/" || echo REQUEST-FAILED; done)
    grep -q REQUEST-FAILED <<<"$hosts" && die "a request from the host to $a:$LB_PORT failed:"$'\n'"$hosts"
    distinct=$(grep -o '^HOSTNAME:[^ ]*' <<<"$hosts" | sort -u | wc -l)
    ((distinct == 4)) || die "8 requests from the host to $a:$LB_PORT reached $distinct pods, expected 4:"$'\n'"$hosts"
    ok "LoadBalancer $a:$LB_PORT from the host: 8 requests, 4 different pods"
done
kl create service loadbalancer whoami-lb2 --tcp="$LB_PORT:8080" >/dev/null
lb2_clash() {
    [[ "$(kl get service whoami-lb2 -o json | jq -r '.status.conditions[]? | select(.type == "LoadBalancerPortsAllocated") | .reason')" == PortInUse ]]
}
wait_for 30 "whoami-lb2 reports its port clash" lb2_clash
[[ "$(kl get service whoami-lb2 | awk 'NR == 2 {print $4}')" == "<pending>" ]] || die "whoami-lb2: $(kl get service whoami-lb2)"
ok "a second LoadBalancer on $LB_PORT: <pending>, $(kl get service whoami-lb2 -o json | jq -r '.status.conditions[0].message')"
kl delete service whoami-lb2 >/dev/null
kl delete service whoami-lb >/dev/null
PASSED=$((PASSED + 1))

# ---------- 2c. a pod sees its image's filesystem ----------
if [[ $KL_RUNTIME == containerd ]]; then
    node_os=$(docker exec "${NODE_CIDS[0]}" cat /etc/os-release | head -1)
    kl create pod fs-check --image busybox --restart Never -- \
        sh -c 'head -1 /etc/os-release; if [ -e /usr/local/bin/nodeagent ]; then echo NODE-FILE-PRESENT; else echo node-file-absent; fi' >/dev/null
    wait_for 60 "pod fs-check finished" pod_done fs-check
    [[ "$(pod_field fs-check '.status.phase')" == Succeeded ]] || die "pod fs-check $(pod_field fs-check '.status.phase'): $(kl logs fs-check 2>&1)"
    fs_log=$(kl logs fs-check 2>&1) || die "kubectl-lite logs fs-check: $fs_log"
    pod_os=$(head -1 <<<"$fs_log")
    [[ "$pod_os" == *"kube-lite busybox"* && "$pod_os" != "$node_os" ]] ||
        die "pod fs-check's /etc/os-release is not the busybox image's (node: $node_os):"$'\n'"$fs_log"
    grep -qx node-file-absent <<<"$fs_log" || die "pod fs-check sees the node's /usr/local/bin/nodeagent:"$'\n'"$fs_log"
    # exec through containerd into a running image-based pod sees the same.
    exec_os=$(kl exec whoami-1 -- /bin/busybox head -1 /etc/os-release 2>&1) || die "kubectl-lite exec whoami-1: $exec_os"
    [[ "$exec_os" == "$pod_os" ]] || die "exec in whoami-1 sees /etc/os-release $exec_os, expected the image's $pod_os"
    step_ok "pod fs-check on $(pod_field fs-check '.spec.nodeName') sees its image: $pod_os (the node's: $node_os), no /usr/local/bin/nodeagent; exec in whoami-1 sees the same"
    kl delete pod fs-check >/dev/null
    wait_for 30 "pod fs-check deleted" pod_gone fs-check
fi

# ---------- 3. docker stop a node ----------
STOPPED_CID=${NODE_CIDS[1]} STOPPED=$NODE2 SURVIVOR=$NODE1
mapfile -t MOVED < <(kl get pods -o json | jq -r --arg n "$STOPPED" '.items[] | select(.spec.nodeName == $n) | .metadata.name')
mapfile -t STAYED < <(kl get pods -o json | jq -r --arg n "$SURVIVOR" '.items[] | select(.spec.nodeName == $n) | .metadata.name')
t_stop=$(date +%s)
docker stop -t 2 "$STOPPED_CID" >/dev/null
wait_for $((grace_s * 3 + 10)) "node $STOPPED NotReady after docker stop" node_not_ready "$STOPPED"
t_nr=$(($(date +%s) - t_stop))
((t_nr <= grace_s * 2 + 5)) || die "node $STOPPED went NotReady after ${t_nr}s, grace period is ${grace_s}s"
ok "docker stop $STOPPED -> NotReady after ${t_nr}s (grace period ${grace_s}s)"
wait_for 90 "pods of $STOPPED (${MOVED[*]}) rescheduled and Running on $SURVIVOR" pods_all_on "$SURVIVOR" "${PODS[@]}"
ok "pods ${MOVED[*]} rescheduled on $SURVIVOR and Running after $(($(date +%s) - t_stop))s"
wait_for 30 "Service whoami has 4 endpoints on $SURVIVOR" endpoints_n 4
service_check 4 4 "${PODS[@]}"
step_ok "Service answers from the survivors on $SURVIVOR: $ANSWERED_BY"

# ---------- 4. docker start it again ----------
docker start "$STOPPED_CID" >/dev/null
t_start=$(date +%s)
wait_for 60 "node $STOPPED Ready again after docker start" node_ready "$STOPPED"
[[ "$(node_name_of "$STOPPED_CID")" == "$STOPPED" ]] || die "node container renamed"
ok "docker start $STOPPED -> Ready again after $(($(date +%s) - t_start))s, same node name"
no_duplicate_ips || die "duplicate pod IPs after the node came back"
ok "no duplicate pod IPs"
NEW=(whoami-5 whoami-6)
for p in "${NEW[@]}"; do kl create pod "$p" --image whoami --labels app=whoami >/dev/null; done
if [[ $KL_RUNTIME == containerd ]]; then
    node_has_images "$STOPPED" "$WHOAMI_REF" "$BUSYBOX_REF" || die "node $STOPPED lost its images across docker stop/start"
fi
wait_for 60 "new pods ${NEW[*]} Running on the restarted node $STOPPED" pods_all_on "$STOPPED" "${NEW[@]}"
no_duplicate_ips || die "duplicate pod IPs"
ok "new pods ${NEW[*]} Running on $STOPPED, pod IPs unique: $(kl get pods -o json | jq -r '.items[] | "\(.metadata.name)@\(.spec.nodeName)=\(.status.podIP)"' | tr '\n' ' ')"
PODS+=("${NEW[@]}")
wait_for 30 "Service whoami has 6 endpoints" endpoints_n 6
service_check 6 6 "${PODS[@]}"
step_ok "6 requests answered by 6 different pods across both nodes: $ANSWERED_BY"

# ---------- 5. --scale node=3 ----------
dc up -d --scale node=3 >/dev/null 2>&1 || {
    dc up -d --scale node=3
    die "compose up --scale node=3 failed"
}
mapfile -t cids < <(dc ps -q node)
((${#cids[@]} == 3)) || die "expected 3 node containers after --scale node=3, got ${#cids[@]}"
NODE3_CID=""
for c in "${cids[@]}"; do
    [[ " ${NODE_CIDS[*]} " == *" $c "* ]] || NODE3_CID=$c
done
[[ -n "$NODE3_CID" ]] || die "no new node container after --scale node=3"
while read -r v; do [[ -n "$v" ]] && ANON_VOLUMES+=("$v"); done < <(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{"\n"}}{{end}}{{end}}' "$NODE3_CID")
NODE3=$(node_name_of "$NODE3_CID")
wait_for 60 "third node $NODE3 Ready" node_ready "$NODE3"
if [[ $KL_RUNTIME == containerd ]]; then
    loaded=$(load_images --node "$NODE3")
    grep -q "^$NODE3: loaded .*$WHOAMI_REF" <<<"$loaded" || die "image load --node $NODE3:"$'\n'"$loaded"
    wait_for 30 "node $NODE3 reporting its images" node_has_images "$NODE3" "$WHOAMI_REF" "$BUSYBOX_REF"
fi
subnets=$(kl get nodes -o json | jq -r '.items[].spec.podCIDR' | sort)
[[ $(wc -l <<<"$subnets") == 3 && -z "$(uniq -d <<<"$subnets")" ]] || die "node subnets not distinct: $subnets"
kl create pod whoami-8 --image whoami --labels app=whoami >/dev/null
wait_for 60 "pod whoami-8 Running on the new node $NODE3" pods_all_on "$NODE3" whoami-8
PODS+=(whoami-8)
wait_for 30 "Service whoami has 7 endpoints" endpoints_n 7
service_check 7 7 "${PODS[@]}"
step_ok "--scale node=3: $NODE3 Ready ($(kl get nodes -o json | jq -r --arg n "$NODE3" '.items[] | select(.metadata.name == $n) | .spec.podCIDR')), whoami-8 Running on it, 7 requests answered by 7 different pods"

# ---------- 6. docker restart the apiserver ----------
snapshot() {
    {
        kl get nodes -o json | jq -S '[.items[] | {name: .metadata.name, uid: .metadata.uid, spec}]'
        kl get pods -o json | jq -S '[.items[] | {metadata: (.metadata | del(.resourceVersion)), spec, phase: .status.phase, podIP: .status.podIP, hostIP: .status.hostIP}]'
        kl get services -o json | jq -S '.items'
        kl get endpoints -o json | jq -S '[.items[] | {name: .metadata.name, uid: .metadata.uid, subsets}]'
    }
}
before=$(snapshot)
docker restart -t 10 "$APISERVER_CID" >/dev/null
t_restart=$(date +%s)
wait_for 60 "apiserver answering after docker restart" kl get nodes
after=$(snapshot)
if [[ "$before" != "$after" ]]; then
    diff <(echo "$before") <(echo "$after") | head -40 >&2 || true
    die "objects changed across the apiserver restart"
fi
ok "docker restart apiserver -> every node, pod, service and endpoints object intact ($(jq -s 'map(length) | add' <<<"$before") objects)"
for n in "$NODE1" "$NODE2" "$NODE3"; do
    wait_for 60 "node $n Ready after the apiserver restart" node_ready "$n"
done
kl create pod whoami-7 --image whoami --labels app=whoami >/dev/null
wait_for 60 "pod whoami-7 created after the apiserver restart Running" pods_running whoami-7
n7=$(pod_field whoami-7 '.spec.nodeName')
# A pod on the other node is deleted: that agent's watch must have resumed too.
victim=$(kl get pods -o json | jq -r --arg n "$n7" '[.items[] | select(.spec.nodeName != $n and (.metadata.name | startswith("whoami-")))][0].metadata.name')
kl delete pod "$victim" >/dev/null
wait_for 60 "pod $victim (other node) deleted by its agent" pod_gone "$victim"
step_ok "agents resumed their watches: whoami-7 Running on $n7, $victim deleted on the other node after $(($(date +%s) - t_restart))s"
no_duplicate_ips || die "duplicate pod IPs"

# ---------- 6b. containerd holds exactly the pods' containers ----------
# On each node: one containerd container (id <pod uid>-<container>) per container of its
# pods, each with a running task and an active snapshot; nothing left of the pods that
# were deleted, moved away while the node was stopped, or whose node restarted.
ctrd_matches_pods() { # NODE CID
    local want have tasks active
    want=$(kl get pods -o json | jq -r --arg n "$1" '.items[] | select(.spec.nodeName == $n) | .metadata.uid as $u | .spec.containers[] | "\($u)-\(.name)"' | sort)
    have=$(docker exec "$2" ctr -a /run/containerd/containerd.sock -n kube-lite containers ls -q | sort)
    tasks=$(docker exec "$2" ctr -a /run/containerd/containerd.sock -n kube-lite tasks ls | awk 'NR > 1 && $3 == "RUNNING" {print $1}' | sort)
    active=$(docker exec "$2" ctr -a /run/containerd/containerd.sock -n kube-lite snapshots ls | awk 'NR > 1 && $NF == "Active" {print $1}' | sort)
    [[ "$have" == "$want" ]] || { echo "$1: containers [$(echo $have)], pods' containers [$(echo $want)]"; return 1; }
    [[ "$tasks" == "$want" ]] || { echo "$1: running tasks [$(echo $tasks)], want [$(echo $want)]"; return 1; }
    [[ "$active" == "$want" ]] || { echo "$1: active snapshots [$(echo $active)], want [$(echo $want)]"; return 1; }
}
if [[ $KL_RUNTIME == containerd ]]; then
    summary=""
    for c in "${NODE_CIDS[@]}" "$NODE3_CID"; do
        n=$(node_name_of "$c")
        wait_for 30 "containerd on $n holding exactly its pods' containers" ctrd_matches_pods "$n" "$c"
        summary+="$n: $(kl get pods -o json | jq --arg n "$n" '[.items[] | select(.spec.nodeName == $n)] | length') "
    done
    step_ok "containerd on each node holds exactly its pods' containers, tasks and snapshots (${summary% })"
fi

# ---------- 7. down -v ----------
dc down -v --remove-orphans -t 2 >/dev/null 2>&1 || die "compose down failed"
DOWN_DONE=1
left=$(leftovers)
[[ -z "$left" ]] || die "down -v left objects of $PROJECT behind: $(tr '\n' ' ' <<<"$left")"
step_ok "down -v left no container, network or volume of $PROJECT"
say "compose cluster test passed in $(($(date +%s) - T0))s ($KL_RUNTIME runtime)"
echo "compose: $PASSED passed, 0 failed"
