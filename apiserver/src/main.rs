//! `apiserver`: the kube-lite control plane in one process (gRPC API, sled store,
//! controllers). Works with no flags: ./kube-lite-data, 127.0.0.1:6443.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "apiserver", version, about = "kube-lite apiserver")]
struct Args {
    /// Directory of the sled store.
    #[arg(long, env = "KUBE_LITE_DATA_DIR", default_value = "./kube-lite-data")]
    data_dir: PathBuf,
    /// Address to serve gRPC on.
    #[arg(long, env = "KUBE_LITE_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Pod network; each node gets a /24 of it.
    #[arg(long, env = "KUBE_LITE_CLUSTER_CIDR", default_value = "10.0.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// ClusterIP range of Services.
    #[arg(long, env = "KUBE_LITE_SERVICE_CIDR", default_value = "10.96.0.0/16")]
    service_cidr: ipnet::Ipv4Net,
    /// A node whose last heartbeat is older than this becomes NotReady.
    #[arg(long, env = "KUBE_LITE_NODE_GRACE_PERIOD", default_value = "40s", value_parser = kube_lite_core::time::parse_duration)]
    node_grace_period: Duration,
    /// Pods of a NotReady node are evicted this long after it went silent past the grace period.
    #[arg(long, env = "KUBE_LITE_POD_EVICTION_TIMEOUT", default_value = "60s", value_parser = kube_lite_core::time::parse_duration)]
    pod_eviction_timeout: Duration,
    /// Interval of BOOKMARK events on watches.
    #[arg(long, env = "KUBE_LITE_BOOKMARK_INTERVAL", default_value = "5s", value_parser = kube_lite_core::time::parse_duration)]
    bookmark_interval: Duration,
    /// Number of revisions of the change log kept for Watch resume.
    #[arg(long, env = "KUBE_LITE_WATCH_WINDOW", default_value_t = 100_000)]
    watch_window: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let a = Args::parse();
    let cfg = apiserver::Config {
        data_dir: a.data_dir,
        cluster_cidr: a.cluster_cidr,
        service_cidr: a.service_cidr,
        node_grace_period: a.node_grace_period,
        pod_eviction_timeout: a.pod_eviction_timeout,
        bookmark_interval: a.bookmark_interval,
        watch_window: a.watch_window,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    tracing::info!(listen = %a.listen, "starting apiserver");
    apiserver::serve(cfg, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
