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
log "node name $KUBE_LITE_NODE_NAME, server ${KUBE_LITE_SERVER:-?}"

exec /usr/local/bin/nodeagent "$@"
