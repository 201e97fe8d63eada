#!/usr/bin/env bash
# kube-lite local cluster: an apiserver and N node agents on this machine, each node in
# its own network namespace, joined by an "underlay" namespace with a bridge.
#
#   deploy/local-cluster.sh up [--nodes N] [--debug] [--no-build] [--runtime containerd|process]
#   deploy/local-cluster.sh status
#   deploy/local-cluster.sh down
#
# Everything it configures lives inside the namespaces it creates (kl-local-u,
# kl-local-n<i>, and the agents' pod namespaces kl-local-n<i>-<pod uid>); the only
# thing in the machine's root namespace is the apiserver listening on 127.0.0.1:6443
# and the agents' log servers on 127.0.0.1 (random ports). State, data and logs live in
# ${KUBE_LITE_HOME:-/var/tmp/kube-lite}; `down` kills exactly the recorded PIDs and
# removes the namespaces and that state.
#
# Runtime: where containerd and runc are installed (apt-get install containerd runc) the
# pods run from images (--runtime containerd, the default there): `up` starts one
# private containerd for the cluster (root, state, socket and config under
# $KUBE_LITE_HOME/containerd, containerd namespace kube-lite-<random>; never the system
# containerd's paths), builds the project's images offline (deploy/images/build-images.sh:
# busybox and whoami, cached in target/images) and loads them onto every node with
# `kubectl-lite image load`. `down` stops it by PID, with its shims, and removes its
# state. --runtime process runs programs of the machine instead.
set -euo pipefail

PREFIX=kl-local
UNDERLAY_NS="$PREFIX-u"
UNDERLAY_BR=kl-ubr
UNDERLAY_NET=192.168.250 # /24, inside the namespaces only
API_ADDR=127.0.0.1:6443
KL_HOME="${KUBE_LITE_HOME:-/var/tmp/kube-lite}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
READY_TIMEOUT="${KUBE_LITE_READY_TIMEOUT:-60}"
CTRD_DIR="$KL_HOME/containerd"

have_containerd() {
  command -v containerd >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 &&
    command -v containerd-shim-runc-v2 >/dev/null 2>&1
}

# The private containerd's config (the test kit writes the same: tests/src/containerd.rs).
containerd_config() {
  local d=$1
  cat <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
}

start_containerd() {
  mkdir -p "$CTRD_DIR"
  containerd_config "$CTRD_DIR" >"$CTRD_DIR/config.toml"
  [ -f "$CTRD_DIR/namespace" ] || echo "kube-lite-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')" >"$CTRD_DIR/namespace"
  say "starting containerd (socket $CTRD_DIR/c.sock, namespace $(cat "$CTRD_DIR/namespace"))"
  nohup containerd --config "$CTRD_DIR/config.toml" --log-level warn \
    >>"$CTRD_DIR/containerd.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$KL_HOME/pids/containerd.pid"
  local t
  for t in $(seq 1 150); do
    [ -S "$CTRD_DIR/c.sock" ] && return 0
    # kill -0, not pid_alive: until nohup has exec'd, the child's command line is still
    # this script's, which a loaded machine shows (it said "containerd exited").
    kill -0 "$pid" 2>/dev/null ||
      die "containerd exited; see $CTRD_DIR/containerd.log:
$(tail -n 20 "$CTRD_DIR/containerd.log")"
    sleep 0.2
  done
  die "containerd socket not ready; see $CTRD_DIR/containerd.log"
}

# Shims of our containerd (their command line names our socket), then containerd,
# then its mounts, runc state and cgroups, then its directory.
stop_containerd() {
  [ -d "$CTRD_DIR" ] || return 0
  local sock="$CTRD_DIR/c.sock" p ns m
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "-address $sock"; then
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
  done
  kill_pidfile "$KL_HOME/pids/containerd.pid" containerd
  for m in $(awk -v d="$CTRD_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  ns=$(cat "$CTRD_DIR/namespace" 2>/dev/null || true)
  if [ -n "$ns" ]; then
    rm -rf "/run/containerd/runc/$ns"
    for m in /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do
      [ -d "$m" ] || continue
      find "$m" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
      rmdir "$m" 2>/dev/null || true
    done
  fi
  rm -rf "$CTRD_DIR"
  say "stopped containerd and removed its state"
}

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

usage() {
  cat <<EOF
usage: $0 up [--nodes N] [--debug] [--no-build]   start a local cluster (default 2 nodes)
       $0 status                               processes, namespaces, nodes
       $0 down                                 stop everything and remove its state
State and logs: \$KUBE_LITE_HOME (now $KL_HOME). Needs root.
EOF
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    die "must run as root: it creates network namespaces, veths and bridges (try: sudo $0 $*)"
  fi
}

need_tools() {
  local t
  for t in ip nsenter; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (install iproute2 / util-linux)"
  done
}

# The binary directory recorded by `up` (or the release dir by default).
bin_dir() {
  if [ -f "$KL_HOME/bin-dir" ]; then cat "$KL_HOME/bin-dir"; else echo "$REPO/target/release"; fi
}

# pid_alive FILE NAME: the PID in FILE is running and is the program NAME.
pid_alive() {
  local f=$1 name=$2 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  # Guard against PID reuse: the process must still be our program.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# kill_pidfile FILE NAME: SIGTERM, wait up to 5 s, then SIGKILL; remove FILE.
kill_pidfile() {
  local f=$1 name=$2 pid i
  if pid_alive "$f" "$name"; then
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      pid_alive "$f" "$name" || break
      sleep 0.1
    done
    if pid_alive "$f" "$name"; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.1
    fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-" || true; }

# Secure by default: the apiserver writes its admin kubeconfig (CA, server, admin
# certificate) into its data dir; agents join with the join token file beside it.
API_DATA="$KL_HOME/apiserver/data"
ADMIN_KUBECONFIG="$API_DATA/admin.kubeconfig"
kubectl() { "$(bin_dir)/kubectl-lite" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# Where kubectl-lite looks (KUBECONFIG, else ~/.kube/config): the admin kubeconfig is
# copied to ~/.kube/config unless a different kubeconfig is already there (then it is
# left alone and the message says what to export). A copy of what was installed is kept
# so that `down` removes only our own file.
install_kubeconfig() {
  local dest="${HOME:-/root}/.kube/config" mine="$KL_HOME/kubeconfig.installed"
  if [ -n "${KUBECONFIG:-}" ]; then
    KUBECONFIG_NOTE="KUBECONFIG is set ($KUBECONFIG); to use this cluster: export KUBECONFIG=$ADMIN_KUBECONFIG"
    return
  fi
  if [ ! -e "$dest" ] || { [ -e "$mine" ] && cmp -s "$dest" "$mine"; }; then
    mkdir -p "$(dirname "$dest")"
    install -m 600 "$ADMIN_KUBECONFIG" "$dest"
    install -m 600 "$ADMIN_KUBECONFIG" "$mine"
    KUBECONFIG_NOTE="admin kubeconfig written to $dest (kubectl-lite reads it; the original is $ADMIN_KUBECONFIG)"
  else
    KUBECONFIG_NOTE="$dest exists and is not ours, left alone; to use this cluster: export KUBECONFIG=$ADMIN_KUBECONFIG"
  fi
}

uninstall_kubeconfig() {
  local dest="${HOME:-/root}/.kube/config" mine="$KL_HOME/kubeconfig.installed"
  if [ -e "$mine" ] && [ -e "$dest" ] && cmp -s "$dest" "$mine"; then
    rm -f "$dest"
    say "removed $dest (the kube-lite admin kubeconfig)"
  fi
  rm -f "$mine"
}

cmd_up() {
  local nodes=2 profile=release build=1 runtime=
  while [ $# -gt 0 ]; do
    case "$1" in
      --runtime) [ $# -ge 2 ] || die "--runtime needs containerd or process"; runtime=$2; shift 2 ;;
      --runtime=*) runtime=${1#--runtime=}; shift ;;
      --nodes) [ $# -ge 2 ] || die "--nodes needs a number"; nodes=$2; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      --debug) profile=debug; shift ;;
      --no-build) build=0; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument $1" ;;
    esac
  done
  case "$nodes" in ''|*[!0-9]*) die "--nodes must be a number, got '$nodes'" ;; esac
  { [ "$nodes" -ge 1 ] && [ "$nodes" -le 200 ]; } || die "--nodes must be 1..200"
  need_root up
  need_tools

  # Idempotence: an existing cluster is reused as is; a half-dead one must go first.
  if [ -f "$KL_HOME/nodes.count" ]; then
    local have alive=1 i
    have=$(cat "$KL_HOME/nodes.count")
    pid_alive "$KL_HOME/pids/apiserver.pid" apiserver || alive=0
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$UNDERLAY_NS" || alive=0
    for i in $(seq 0 $((have - 1))); do
      pid_alive "$KL_HOME/pids/node$i.pid" nodeagent || alive=0
      ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$PREFIX-n$i" || alive=0
    done
    if [ "$alive" = 1 ]; then
      say "already up with $have node(s) (reusing it; '$0 down' first to change the size)"
      [ "$have" = "$nodes" ] || say "note: --nodes $nodes ignored, the running cluster has $have"
      print_usage
      exit 0
    fi
    die "a previous cluster in $KL_HOME is partly down; run '$0 down' first"
  fi
  if [ -n "$(our_netns)" ]; then
    die "namespaces $(our_netns | tr '\n' ' ')exist without a recorded cluster; run '$0 down' first"
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/6443) 2>/dev/null; then
    die "something already listens on $API_ADDR (stop it, or '$0 down')"
  fi

  if [ -z "$runtime" ]; then
    if have_containerd; then runtime=containerd; else runtime=process; fi
  fi
  case "$runtime" in
    containerd) have_containerd || die "--runtime containerd: containerd/runc not installed (apt-get install containerd runc)" ;;
    process) ;;
    *) die "--runtime must be containerd or process" ;;
  esac
  local bin="$REPO/target/$profile"
  if [ "$build" = 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (or use --no-build with built binaries)"
    local flag=()
    [ "$profile" = release ] && flag=(--release)
    say "building ($profile): apiserver nodeagent kubectl-lite kl-whoami"
    (cd "$REPO" && cargo build "${flag[@]}" -p apiserver -p nodeagent -p kubectl-lite -p kube-lite-demo) ||
      die "build failed"
  fi
  local b
  for b in apiserver nodeagent kubectl-lite kl-whoami; do
    [ -x "$bin/$b" ] || die "$bin/$b missing (build it, or drop --no-build)"
  done
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] ||
    say "warning: busybox not found; '--image busybox' pods need it (apt-get install busybox-static)"

  local images=
  if [ "$runtime" = containerd ]; then
    images="$REPO/target/images"
    if [ ! -s "$images/busybox.tar" ] || [ ! -s "$images/whoami.tar" ] || [ "$build" = 1 ]; then
      say "building the images (busybox, whoami) offline into $images"
      KL_WHOAMI_BIN="$bin/kl-whoami" "$REPO/deploy/images/build-images.sh" "$images" >/dev/null ||
        die "building the images failed (deploy/images/build-images.sh; needs mmdebstrap once)"
    fi
  fi

  mkdir -p "$KL_HOME/pids" "$KL_HOME/apiserver" "$KL_HOME/nodes"
  echo "$bin" >"$KL_HOME/bin-dir"
  echo "$nodes" >"$KL_HOME/nodes.count"
  echo "$runtime" >"$KL_HOME/runtime"
  local rt_args=()
  if [ "$runtime" = containerd ]; then
    start_containerd
    rt_args=(--runtime containerd --containerd-socket "$CTRD_DIR/c.sock"
      --containerd-namespace "$(cat "$CTRD_DIR/namespace")")
  fi

  # Underlay: a namespace with a bridge; each node a namespace with a veth to it.
  say "creating namespaces: $UNDERLAY_NS and $nodes node(s)"
  ip netns add "$UNDERLAY_NS"
  ip -n "$UNDERLAY_NS" link set lo up
  ip -n "$UNDERLAY_NS" link add "$UNDERLAY_BR" type bridge
  ip -n "$UNDERLAY_NS" link set "$UNDERLAY_BR" up
  local i ns
  for i in $(seq 0 $((nodes - 1))); do
    ns="$PREFIX-n$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$UNDERLAY_NS" link add "kl-p$i" type veth peer name kl-up0 netns "$ns"
    ip -n "$UNDERLAY_NS" link set "kl-p$i" master "$UNDERLAY_BR" up
    ip -n "$ns" addr add "$UNDERLAY_NET.$((i + 1))/24" dev kl-up0
    ip -n "$ns" link set kl-up0 up
  done

  say "starting apiserver on $API_ADDR (data $KL_HOME/apiserver/data)"
  nohup "$bin/apiserver" --data-dir "$KL_HOME/apiserver/data" --listen "$API_ADDR" \
    >>"$KL_HOME/apiserver/apiserver.log" 2>&1 </dev/null &
  echo $! >"$KL_HOME/pids/apiserver.pid"
  local t
  for t in $(seq 1 100); do
    # (first a pause: right after the fork the child is not yet the apiserver)
    sleep 0.2
    [ -e "$ADMIN_KUBECONFIG" ] && kubectl get nodes >/dev/null 2>&1 && break
    pid_alive "$KL_HOME/pids/apiserver.pid" apiserver ||
      die "apiserver exited; see $KL_HOME/apiserver/apiserver.log:
$(tail -n 20 "$KL_HOME/apiserver/apiserver.log")"
  done
  kubectl get nodes >/dev/null 2>&1 || die "apiserver not answering on $API_ADDR; see $KL_HOME/apiserver/apiserver.log"

  for i in $(seq 0 $((nodes - 1))); do
    ns="$PREFIX-n$i"
    mkdir -p "$KL_HOME/nodes/node$i"
    say "starting agent node$i (netns $ns, address $UNDERLAY_NET.$((i + 1)))"
    RUST_LOG="${RUST_LOG:-info}" nohup "$bin/nodeagent" \
      --server "https://$API_ADDR" --node-name "node$i" --netns "$ns" \
      --join-token-file "$API_DATA/join-token" --certificate-authority "$API_DATA/pki/ca.crt" \
      --address "$UNDERLAY_NET.$((i + 1))" --state-dir "$KL_HOME/nodes/node$i" \
      --listen 127.0.0.1:0 --netns-prefix "$ns" "${rt_args[@]}" \
      >>"$KL_HOME/nodes/node$i/agent.log" 2>&1 </dev/null &
    echo $! >"$KL_HOME/pids/node$i.pid"
  done

  say "waiting up to ${READY_TIMEOUT}s for $nodes node(s) to be Ready"
  local deadline=$((SECONDS + READY_TIMEOUT)) ready=0
  while [ $SECONDS -lt $deadline ]; do
    for i in $(seq 0 $((nodes - 1))); do
      pid_alive "$KL_HOME/pids/node$i.pid" nodeagent ||
        die "agent node$i exited; see $KL_HOME/nodes/node$i/agent.log:
$(tail -n 20 "$KL_HOME/nodes/node$i/agent.log")
(clean up with '$0 down')"
    done
    ready=$(kubectl get nodes 2>/dev/null | awk 'NR > 1 && $2 == "Ready"' | wc -l)
    [ "$ready" -ge "$nodes" ] && break
    sleep 0.5
  done
  if [ "$ready" -lt "$nodes" ]; then
    kubectl get nodes >&2 || true
    die "only $ready of $nodes node(s) Ready after ${READY_TIMEOUT}s; agent logs in $KL_HOME/nodes/*/agent.log (clean up with '$0 down')"
  fi
  if [ "$runtime" = containerd ]; then
    say "loading images onto every node: kubectl-lite image load busybox.tar whoami.tar"
    kubectl image load "$images/busybox.tar" "$images/whoami.tar" ||
      die "image load failed; agent logs in $KL_HOME/nodes/*/agent.log"
  fi
  kubectl get nodes
  install_kubeconfig
  say "runtime: $runtime"
  print_usage
}

print_usage() {
  local bin
  bin=$(bin_dir)
  cat <<EOF

kube-lite is up (TLS, authenticated). $KUBECONFIG_NOTE
Use it with:
  export PATH=$bin:\$PATH
  kubectl-lite get nodes
  kubectl-lite create pod whoami-1 --image whoami
  kubectl-lite get pods -o wide
  kubectl-lite create pod client --image busybox --restart Never -- wget -qO- http://<pod IP>:8080
  kubectl-lite logs client
Pod IPs live in the node namespaces; from this shell reach them with e.g.
  ip netns exec $PREFIX-n0 busybox wget -qO- http://<pod IP>:8080
Logs: $KL_HOME/apiserver/apiserver.log, $KL_HOME/nodes/node<i>/agent.log
Stop and remove everything: $0 down
EOF
}

cmd_status() {
  need_root status
  local f name
  echo "== processes (pid files in $KL_HOME/pids)"
  if [ -d "$KL_HOME/pids" ]; then
    for f in "$KL_HOME"/pids/*.pid; do
      [ -e "$f" ] || continue
      name=nodeagent
      [ "$(basename "$f")" = apiserver.pid ] && name=apiserver
      [ "$(basename "$f")" = containerd.pid ] && name=containerd
      if pid_alive "$f" "$name"; then
        echo "  $(basename "$f" .pid): pid $(cat "$f") running"
      else
        echo "  $(basename "$f" .pid): pid $(cat "$f" 2>/dev/null) NOT running"
      fi
    done
  else
    echo "  (no cluster recorded)"
  fi
  echo "== namespaces"
  local n
  n=$(our_netns)
  if [ -n "$n" ]; then echo "$n" | sed 's/^/  /'; else echo "  (none)"; fi
  echo "== nodes"
  if [ -x "$(bin_dir)/kubectl-lite" ] && pid_alive "$KL_HOME/pids/apiserver.pid" apiserver; then
    kubectl get nodes || true
  else
    echo "  (apiserver not running)"
  fi
}

cmd_down() {
  need_root down
  local f ns pid
  # Agents first (so they do not recreate anything), then the apiserver.
  if [ -d "$KL_HOME/pids" ]; then
    for f in "$KL_HOME"/pids/node*.pid; do
      [ -e "$f" ] || continue
      kill_pidfile "$f" nodeagent
    done
    kill_pidfile "$KL_HOME/pids/apiserver.pid" apiserver
  fi
  # Processes left in our namespaces (the pods of the killed agents), pods first.
  for ns in $(our_netns | sort -r); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  sleep 0.2
  stop_containerd
  for ns in $(our_netns | sort -r); do
    ip netns del "$ns" 2>/dev/null || say "warning: could not delete netns $ns"
  done
  # The agents' cgroups (`kube-lite-<netns prefix>` below the cgroup they ran in, with
  # their pods' inside), deepest first; their processes are gone by now.
  find /sys/fs/cgroup -maxdepth 4 -type d -name "kube-lite-$PREFIX-n*" 2>/dev/null |
    while read -r cg; do
      find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null ||
        say "warning: could not remove cgroup $cg"
    done
  uninstall_kubeconfig
  # Only what `up` made inside KUBE_LITE_HOME.
  if [ -d "$KL_HOME" ]; then
    rm -rf "$KL_HOME/pids" "$KL_HOME/apiserver" "$KL_HOME/nodes" \
      "$KL_HOME/bin-dir" "$KL_HOME/nodes.count" "$KL_HOME/runtime"
    rmdir "$KL_HOME" 2>/dev/null || true
  fi
  local left
  left=$(our_netns)
  [ -z "$left" ] || die "namespaces still present: $left"
  say "down: processes stopped, namespaces and $KL_HOME state removed"
}

main() {
  [ $# -ge 1 ] || { usage >&2; exit 2; }
  local cmd=$1
  shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
