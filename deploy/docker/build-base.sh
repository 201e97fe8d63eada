#!/usr/bin/env bash
# Build the offline base image kube-lite/base:bookworm with mmdebstrap + docker import.
#
# The Docker engine on the CI machine cannot pull from a registry, so the project makes
# its own minimal Debian bookworm image (same glibc as the host that builds the binaries).
# Reuses the image when it already exists with the package list below (its label
# kube-lite.base.packages; an image made with another list is rebuilt once), so Docker
# keeps it between runs; pass --force to rebuild anyway.
#
# Env:
#   KL_BASE_IMAGE     tag to create            (default kube-lite/base:bookworm)
#   KL_DEBIAN_MIRROR  Debian mirror            (default http://deb.debian.org/debian,
#                                               the mirror apt uses on the CI machine)
#   KL_DEBIAN_SECURITY security mirror         (default http://deb.debian.org/debian-security)
set -euo pipefail

IMAGE=${KL_BASE_IMAGE:-kube-lite/base:bookworm}
MIRROR=${KL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${KL_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# Packages the node and apiserver images need at run time. The Rust binaries only
# need glibc (libc6, part of minbase). containerd and runc: the node container runs its
# own containerd (the image runtime, as kind's node image does).
PKGS=iptables,iproute2,busybox-static,conntrack,ca-certificates,procps,kmod,containerd,runc

if [[ $FORCE == 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    have=$(docker image inspect -f '{{index .Config.Labels "kube-lite.base.packages"}}' "$IMAGE" 2>/dev/null || true)
    if [[ "$have" == "$PKGS" ]]; then
        echo "base image $IMAGE present, reusing it"
        exit 0
    fi
    echo "base image $IMAGE has packages '${have:-?}', wanted '$PKGS': rebuilding it"
fi

command -v mmdebstrap >/dev/null || {
    echo "mmdebstrap not found: install it (apt-get install -y mmdebstrap)" >&2
    exit 1
}

tmp=$(mktemp -d /tmp/kl-base.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

start=$(date +%s)
echo "building $IMAGE with mmdebstrap from $MIRROR (takes a minute or two)"
# Mirrors are given explicitly: without them mmdebstrap reads sources from stdin.
mmdebstrap \
    --mode=root \
    --variant=minbase \
    --include="$PKGS" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$tmp/rootfs.tar" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY bookworm-security main" </dev/null

docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' \
    -c "LABEL kube-lite.base.packages=$PKGS" \
    -m "kube-lite base: Debian bookworm minbase via mmdebstrap ($PKGS)" \
    "$tmp/rootfs.tar" "$IMAGE" >/dev/null

end=$(date +%s)
echo "built $IMAGE in $((end - start))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
