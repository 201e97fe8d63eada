#!/bin/sh
# Entrypoint of the kube-lite node container.
#
# Node name: KUBE_LITE_NODE_NAME when set; otherwise the container's name as Docker's
# embedded DNS knows it (reverse lookup of the container's own IP: "proj_node_1" with
# docker-compose v1, "proj-node-1" with Compose v2, both become "proj-node-1"). It is
# distinct per replica and stable across docker stop/start and container re-creation,
# unlike the default hostname (the container id). The name is also set as the
# container's hostname, so the agent (whose default node name is the hostname), logs
# and shells agree. Falls back to the hostname when no DNS name is found.
#
# Runtime (KUBE_LITE_RUNTIME; default containerd when the image has containerd and runc):
# with `containerd` the entrypoint starts the node's own containerd inside the container,
# as kind's node image does: its root (images, snapshots, container metadata) under
# /var/lib/kube-lite/containerd on the node's volume (overlayfs snapshots cannot live on
# the container's own overlay root), its state and socket under /run/containerd (the /run
# tmpfs: a stopped container's tasks are gone, its images stay). The agent then runs with
# `--runtime containerd`. With `process` pods are programs of this image in namespaces.
set -eu

log() { echo "node-entrypoint: $*" >&2; }

# This engine refuses --privileged (its daemon lacks CAP_SYS_RESOURCE), so the compose
# file grants every other capability instead. Docker then mounts /proc/sys and /sys
# read-only; with CAP_SYS_ADMIN and no AppArmor/seccomp profile they can be remounted
# read-write (the agent and pods set per-namespace sysctls). No-ops when privileged.
mount -o remount,rw /proc/sys 2>/dev/null || log "warning: /proc/sys stays read-only"
mount -o remount,rw /sys 2>/dev/null || log "warning: /sys stays read-only"
# Kernel defaults the datapath relies on (also set per pod namespace by the agent).
sysctl -qw net.ipv4.ip_forward=1 2>/dev/null || log "warning: cannot set net.ipv4.ip_forward"
# netns bind mounts go to /run/netns; /run should be a tmpfs (compose file) so stale
# entries of a previous container run are gone, but be tolerant.
mkdir -p /run/netns

# Docker mounts each cgroup v1 hierarchy read-only (a bind mount of the container's own
# cgroup) unless privileged, which this engine refuses. runc must create the pods'
# cgroups below it: remount each bind read-write (the superblock is rw already, so
# `remount,bind,rw` only clears the mount's flag; CAP_SYS_ADMIN suffices). On cgroup v2
# with a cgroup namespace the one mount is /sys/fs/cgroup. No-ops when already rw.
cgroups_rw() {
    for m in $(awk '$9 == "cgroup" || $9 == "cgroup2" {print $5}' /proc/self/mountinfo); do
        mount -o remount,bind,rw "$m" 2>/dev/null || {
            log "cannot remount $m read-write"
            return 1
        }
    done
    # Writable indeed: a probe cgroup in the memory (v1) or unified (v2) hierarchy.
    probe=/sys/fs/cgroup/memory
    [ -d "$probe" ] || probe=/sys/fs/cgroup
    mkdir "$probe/kube-lite-probe.$$" 2>/dev/null || {
        log "cgroups under $probe not writable"
        return 1
    }
    rmdir "$probe/kube-lite-probe.$$"
}

CTRD_ROOT=/var/lib/kube-lite/containerd
CTRD_STATE=/run/containerd
CTRD_SOCK=$CTRD_STATE/containerd.sock
start_containerd() {
    mkdir -p "$CTRD_ROOT" "$CTRD_STATE"
    cat >"$CTRD_STATE/config.toml" <<TOML
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = "$CTRD_STATE/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_ROOT/opt"
TOML
    # Its log goes to the container's output with the agent's. It outlives a killed
    # agent, as do the pods' shims; docker-init (init: true) reaps what is reparented.
    containerd --config "$CTRD_STATE/config.toml" --log-level warn </dev/null &
    ctrd_pid=$!
    i=0
    while [ ! -S "$CTRD_SOCK" ]; do
        kill -0 "$ctrd_pid" 2>/dev/null || {
            log "containerd exited"
            return 1
        }
        i=$((i + 1))
        [ "$i" -le 300 ] || {
            log "containerd socket $CTRD_SOCK not ready after 30s"
            return 1
        }
        sleep 0.1
    done
    log "containerd $(containerd --version | awk '{print $3}') running (pid $ctrd_pid, root $CTRD_ROOT, socket $CTRD_SOCK)"
}

if [ -z "${KUBE_LITE_RUNTIME:-}" ]; then
    if command -v containerd >/dev/null && command -v runc >/dev/null; then
        KUBE_LITE_RUNTIME=containerd
    else
        KUBE_LITE_RUNTIME=process
    fi
fi
if [ "$KUBE_LITE_RUNTIME" = containerd ]; then
    cgroups_rw || {
        log "fatal: runc needs writable cgroups (KUBE_LITE_RUNTIME=process runs pods without images)"
        exit 1
    }
    start_containerd || exit 1
    export KUBE_LITE_CONTAINERD_SOCKET="$CTRD_SOCK"
fi
export KUBE_LITE_RUNTIME

first_ipv4() {
    ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'
}

if [ -z "${KUBE_LITE_NODE_NAME:-}" ]; then
    addr=$(first_ipv4)
    name=""
    if [ -n "$addr" ]; then
        # Docker's DNS (127.0.0.11) may need a moment right after start.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            name=$(busybox nslookup "$addr" 2>/dev/null | awk '/name =/ {print $NF; exit}')
            [ -n "$name" ] && break
            sleep 0.5
        done
    fi
    name=${name%%.*}
    # DNS-1123: lower case, [a-z0-9-], at most 63 characters, alnum at both ends.
    name=$(printf '%s' "$name" | tr 'A-Z_.' 'a-z--' | tr -cd 'a-z0-9-' | cut -c1-63 | sed 's/^-*//; s/-*$//')
    if [ -n "$name" ]; then
        hostname "$name" 2>/dev/null || log "warning: cannot set hostname to $name"
        export KUBE_LITE_NODE_NAME="$name"
    else
        log "no DNS name for ${addr:-?}, using hostname $(hostname)"
        export KUBE_LITE_NODE_NAME="$(hostname)"
    fi
fi
log "node name $KUBE_LITE_NODE_NAME, server ${KUBE_LITE_SERVER:-?}, runtime $KUBE_LITE_RUNTIME"

exec /usr/local/bin/nodeagent "$@"
