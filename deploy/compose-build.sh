#!/usr/bin/env bash
# Build the kube-lite container images used by deploy/docker-compose.yml:
#   kube-lite/base:bookworm      offline Debian base (deploy/docker/build-base.sh, reused)
#   kube-lite/apiserver:latest   apiserver (+ kubectl-lite)
#   kube-lite/node:latest        nodeagent, containerd, runc, kl-whoami, kubectl-lite, iptables,
#                                iproute2, busybox
# and the pods' image archives (deploy/images/build-images.sh, reused) that a user loads
# with `kubectl-lite image load`:
#   target/images/busybox.tar, target/images/whoami.tar   (KL_IMAGES_DIR to change)
# The binaries are built on the host with cargo and copied in (no Rust toolchain in the
# images, no registry needed).
#
# Env:
#   KL_PROFILE  cargo profile of the binaries: release (default) or dev/debug
#   KL_BASE     base image for the Dockerfiles (default kube-lite/base:bookworm; with a
#               registry e.g. debian:bookworm-slim, then build-base.sh is skipped)
#   KL_TAG      tag of the two images (default latest)
#   KL_SKIP_CARGO=1  use the binaries already in target/ as they are
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PROFILE=${KL_PROFILE:-release}
BASE=${KL_BASE:-kube-lite/base:bookworm}
TAG=${KL_TAG:-latest}
case "$PROFILE" in
    release) cargo_flags=(--release); outdir=release ;;
    dev | debug) cargo_flags=(); outdir=debug ;;
    *) cargo_flags=(--profile "$PROFILE"); outdir=$PROFILE ;;
esac
target_dir=${CARGO_TARGET_DIR:-$root/target}

t0=$(date +%s)
if [[ "${KL_SKIP_CARGO:-0}" != 1 ]]; then
    echo "== cargo build (${PROFILE}) apiserver nodeagent kubectl-lite kube-lite-demo"
    (cd "$root" && cargo build "${cargo_flags[@]}" -p apiserver -p nodeagent -p kubectl-lite -p kube-lite-demo)
fi

ctx="$here/docker/ctx"
rm -rf "$ctx"
mkdir -p "$ctx"
for bin in apiserver nodeagent kubectl-lite kl-whoami; do
    src="$target_dir/$outdir/$bin"
    [[ -x "$src" ]] || { echo "missing $src (build it or unset KL_SKIP_CARGO)" >&2; exit 1; }
    cp "$src" "$ctx/$bin"
done
# Smaller layers; debug info is not needed in the images.
strip "$ctx"/* 2>/dev/null || true
cp "$here/docker/node-entrypoint.sh" "$ctx/"
t1=$(date +%s)

if [[ "$BASE" == kube-lite/base:* ]]; then
    KL_BASE_IMAGE="$BASE" "$here/docker/build-base.sh"
fi
t2=$(date +%s)

echo "== docker build kube-lite/apiserver:$TAG kube-lite/node:$TAG (base $BASE)"
for img in apiserver node; do
    prev=$(docker image inspect -f '{{.Id}}' "kube-lite/$img:$TAG" 2>/dev/null || true)
    docker build -q --build-arg BASE="$BASE" -t "kube-lite/$img:$TAG" \
        -f "$here/docker/$img.Dockerfile" "$ctx" >/dev/null
    now=$(docker image inspect -f '{{.Id}}' "kube-lite/$img:$TAG")
    # The image replaced by this build would stay behind untagged: remove it (fails
    # harmlessly while a container still uses it).
    if [[ -n "$prev" && "$prev" != "$now" ]]; then
        docker rmi "$prev" >/dev/null 2>&1 || true
    fi
done
t3=$(date +%s)

# The pods' images: from the same kl-whoami and the base's rootfs (exported once and
# cached next to the archives), no registry.
images_dir=${KL_IMAGES_DIR:-$target_dir/images}
echo "== image archives busybox.tar whoami.tar in $images_dir"
KL_WHOAMI_BIN="$target_dir/$outdir/kl-whoami" "$root/deploy/images/build-images.sh" "$images_dir" >/dev/null
t4=$(date +%s)
echo "images built: cargo+stage $((t1 - t0))s, base $((t2 - t1))s, docker build $((t3 - t2))s, archives $((t4 - t3))s"
