# kube-lite apiserver image. The binary is built on the host (Debian 12 glibc) and
# copied from the build context that deploy/compose-build.sh prepares; nothing is
# compiled here. BASE defaults to the offline base made by deploy/docker/build-base.sh;
# with a registry, --build-arg BASE=debian:bookworm-slim works too.
ARG BASE=kube-lite/base:bookworm
FROM ${BASE}

# Only the apiserver itself and kubectl-lite (handy for `docker exec`) are needed.
COPY apiserver kubectl-lite /usr/local/bin/

ENV KUBE_LITE_LISTEN=0.0.0.0:6443 \
    KUBE_LITE_DATA_DIR=/var/lib/kube-lite/apiserver \
    KUBE_LITE_SERVER=http://127.0.0.1:6443 \
    RUST_LOG=info
VOLUME /var/lib/kube-lite
EXPOSE 6443
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/apiserver"]
