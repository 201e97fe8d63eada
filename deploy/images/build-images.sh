#!/usr/bin/env bash
# Builds kube-lite's own container images offline and saves them as archives that
# `kubectl-lite image load` (and the agents' import directory) take:
#
#   busybox.tar   busybox:latest (= docker.io/library/busybox:latest), OCI layout:
#                 Debian's busybox-static from the mmdebstrap base, its applets as
#                 links, a small /etc (os-release says "kube-lite busybox").
#   whoami.tar    whoami:latest, kube-lite/whoami:latest and kl-whoami:latest, docker-archive (the
#                 `docker save` format): the busybox layer + a layer with kl-whoami and
#                 the shared libraries it needs, taken from the same base rootfs.
#
# No registry and no docker daemon needed: layers are deterministic tars, manifests and
# configs are written here, digests by sha256sum. The base rootfs is the one
# deploy/docker/build-base.sh uses (mmdebstrap minbase of bookworm), cached as
# $OUT/base-rootfs.tar; if the docker image kube-lite/base:bookworm exists it is
# exported instead of running mmdebstrap again.
#
# Usage: deploy/images/build-images.sh [OUT_DIR]   (default target/images)
# Env:   KL_WHOAMI_BIN   the kl-whoami binary (default target/release/kl-whoami, else
#                        target/debug/kl-whoami)
#        KL_DEBIAN_MIRROR, KL_DEBIAN_SECURITY  as for build-base.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/images}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
MIRROR=${KL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${KL_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

WHOAMI=${KL_WHOAMI_BIN:-}
if [[ -z "$WHOAMI" ]]; then
    for c in target/release/kl-whoami target/debug/kl-whoami; do
        [[ -x $c ]] && { WHOAMI=$c; break; }
    done
fi
[[ -n "$WHOAMI" && -x "$WHOAMI" ]] || {
    echo "kl-whoami not built: cargo build --release -p kube-lite-demo (or set KL_WHOAMI_BIN)" >&2
    exit 1
}

tmp=$(mktemp -d /tmp/kl-images.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# 1. The base rootfs.
BASE=$OUT/base-rootfs.tar
if [[ ! -s $BASE ]]; then
    if command -v docker >/dev/null && docker image inspect kube-lite/base:bookworm >/dev/null 2>&1; then
        echo "exporting kube-lite/base:bookworm as the base rootfs"
        cid=$(docker create kube-lite/base:bookworm /bin/true)
        docker export "$cid" >"$BASE.tmp.tar"
        docker rm "$cid" >/dev/null
    else
        command -v mmdebstrap >/dev/null || {
            echo "mmdebstrap not found: apt-get install -y mmdebstrap" >&2
            exit 1
        }
        echo "building the base rootfs with mmdebstrap from $MIRROR (a minute or two)"
        mmdebstrap --mode=root --variant=minbase --include=busybox-static \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
            bookworm "$BASE.tmp.tar" \
            "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
            "deb $SECURITY bookworm-security main" </dev/null
    fi
    mv "$BASE.tmp.tar" "$BASE"
fi
mkdir -p "$tmp/base"
tar -xf "$BASE" -C "$tmp/base" --exclude='./dev/*' --exclude='dev/*' 2>/dev/null || true
[[ -x $tmp/base/bin/busybox ]] || {
    echo "the base rootfs has no /bin/busybox (busybox-static)" >&2
    exit 1
}

# A reproducible layer tar of a directory.
layer() { # DIR OUT.tar
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# 2. The busybox layer.
L1=$tmp/l1
mkdir -p "$L1/bin" "$L1/etc" "$L1/tmp" "$L1/root" "$L1/proc" "$L1/sys" "$L1/dev" "$L1/run"
chmod 1777 "$L1/tmp"
cp "$tmp/base/bin/busybox" "$L1/bin/busybox"
for a in $("$L1/bin/busybox" --list); do
    [[ $a == busybox ]] && continue
    ln -sf busybox "$L1/bin/$a"
done
cat >"$L1/etc/os-release" <<'OS'
PRETTY_NAME="kube-lite busybox image (busybox-static from Debian 12)"
NAME="kube-lite busybox"
ID=kube-lite-busybox
VERSION_ID="1"
HOME_URL="https://github.com/kube-lite"
OS
echo 'root:x:0:0:root:/root:/bin/sh' >"$L1/etc/passwd"
echo 'root:x:0:' >"$L1/etc/group"
layer "$L1" "$tmp/l1.tar"

# 3. The whoami layer: the binary and the libraries it loads, from the base rootfs.
L2=$tmp/l2
mkdir -p "$L2/usr/local/bin"
cp "$WHOAMI" "$L2/usr/local/bin/kl-whoami"
strip "$L2/usr/local/bin/kl-whoami" 2>/dev/null || true
for lib in $(ldd "$WHOAMI" | grep -o '/[^ ]*' | sort -u); do
    src=$tmp/base$lib
    [[ -e $src ]] || src=$tmp/base$(readlink -f "$lib")
    [[ -e $src ]] || { echo "library $lib not in the base rootfs" >&2; exit 1; }
    mkdir -p "$L2$(dirname "$lib")"
    cp -L "$src" "$L2$lib"
done
layer "$L2" "$tmp/l2.tar"

ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
config() { # ENTRYPOINT_JSON CMD_JSON DIFF_IDS_JSON
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":%s,"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":%s},"history":[{"created_by":"kube-lite deploy/images/build-images.sh"}]}' \
        "$ARCH" "$1" "$2" "$3"
}

# 4. busybox.tar: an OCI layout.
d=$tmp/oci
mkdir -p "$d/blobs/sha256"
h1=$(sha "$tmp/l1.tar"); s1=$(stat -c %s "$tmp/l1.tar")
cp "$tmp/l1.tar" "$d/blobs/sha256/$h1"
config null '["/bin/sh"]' "[\"sha256:$h1\"]" >"$tmp/bb-config.json"
hc=$(sha "$tmp/bb-config.json"); sc=$(stat -c %s "$tmp/bb-config.json")
cp "$tmp/bb-config.json" "$d/blobs/sha256/$hc"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$hc" "$sc" "$h1" "$s1" >"$tmp/bb-manifest.json"
hm=$(sha "$tmp/bb-manifest.json"); sm=$(stat -c %s "$tmp/bb-manifest.json")
cp "$tmp/bb-manifest.json" "$d/blobs/sha256/$hm"
printf '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest","org.opencontainers.image.ref.name":"busybox:latest"}}]}' \
    "$hm" "$sm" >"$d/index.json"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$OUT/busybox.tar" oci-layout index.json blobs

# 5. whoami.tar: a docker-archive (docker save's classic layout).
d=$tmp/docker
mkdir -p "$d/l1" "$d/l2"
cp "$tmp/l1.tar" "$d/l1/layer.tar"
cp "$tmp/l2.tar" "$d/l2/layer.tar"
h2=$(sha "$tmp/l2.tar")
config '["/usr/local/bin/kl-whoami"]' '[]' "[\"sha256:$h1\",\"sha256:$h2\"]" >"$tmp/wh-config.json"
hw=$(sha "$tmp/wh-config.json")
cp "$tmp/wh-config.json" "$d/$hw.json"
printf '[{"Config":"%s.json","RepoTags":["whoami:latest","kube-lite/whoami:latest","kl-whoami:latest"],"Layers":["l1/layer.tar","l2/layer.tar"]}]' "$hw" >"$d/manifest.json"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$OUT/whoami.tar" manifest.json "$hw.json" l1 l2

ls -l "$OUT/busybox.tar" "$OUT/whoami.tar"
echo "images: $OUT/busybox.tar (busybox:latest, OCI layout), $OUT/whoami.tar (whoami:latest, kube-lite/whoami:latest, kl-whoami:latest, docker-archive)"
