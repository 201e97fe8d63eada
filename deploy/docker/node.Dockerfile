# kube-lite node image: the node agent, containerd and runc (the image runtime: the
# entrypoint starts the node's own containerd, as kind's node image does; pods are
# containers from images loaded with `kubectl-lite image load`), iptables, iproute2 and
# conntrack; also the demo program (image "whoami") and busybox (image "busybox") for
# KUBE_LITE_RUNTIME=process, where pods are processes in namespaces of this container.
# It needs every capability but SYS_RESOURCE, writable /proc/sys and cgroups: see
# deploy/docker-compose.yml and node-entrypoint.sh. Binaries come from the host build
# (see deploy/compose-build.sh); nothing is compiled here.
ARG BASE=kube-lite/base:bookworm
FROM ${BASE}

# The offline base already has these; an ordinary public base (debian:bookworm-slim)
# gets them from apt. Installs only what is missing.
RUN set -e; missing=""; \
    command -v iptables >/dev/null || missing="$missing iptables"; \
    command -v ip >/dev/null || missing="$missing iproute2"; \
    [ -x /bin/busybox ] || missing="$missing busybox-static"; \
    command -v conntrack >/dev/null || missing="$missing conntrack"; \
    command -v ps >/dev/null || missing="$missing procps"; \
    [ -d /etc/ssl/certs ] || missing="$missing ca-certificates"; \
    command -v containerd >/dev/null || missing="$missing containerd"; \
    command -v runc >/dev/null || missing="$missing runc"; \
    if [ -n "$missing" ]; then \
        apt-get update && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing && \
        rm -rf /var/lib/apt/lists/*; \
    fi

# kl-whoami sits next to nodeagent: the agent resolves image "whoami" to it.
COPY nodeagent kl-whoami kubectl-lite /usr/local/bin/
COPY node-entrypoint.sh /usr/local/bin/node-entrypoint.sh

ENV KUBE_LITE_STATE_DIR=/var/lib/kube-lite/node \
    KUBE_LITE_LISTEN=0.0.0.0:10250 \
    RUST_LOG=info
VOLUME /var/lib/kube-lite
EXPOSE 10250
ENTRYPOINT ["/usr/local/bin/node-entrypoint.sh"]
