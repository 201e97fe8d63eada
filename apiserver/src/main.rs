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
    /// Pod network; each node gets a /--node-cidr-mask-size of it.
    #[arg(long, env = "KUBE_LITE_CLUSTER_CIDR", default_value = "10.0.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// Prefix length of each node's pod subnet (Kubernetes' --node-cidr-mask-size):
    /// 24 gives 254 pods per node and 2^(24 - cluster prefix) nodes.
    #[arg(long, env = "KUBE_LITE_NODE_CIDR_MASK_SIZE", default_value_t = 24, value_parser = clap::value_parser!(u8).range(1..=30))]
    node_cidr_mask_size: u8,
    /// ClusterIP range of Services (must not overlap --cluster-cidr).
    #[arg(long, env = "KUBE_LITE_SERVICE_CIDR", default_value = "10.96.0.0/16")]
    service_cidr: ipnet::Ipv4Net,
    /// Node ports of NodePort and LoadBalancer Services are allocated from this range.
    #[arg(long, env = "KUBE_LITE_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = apiserver::config::parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The cluster DNS address (the agents' --cluster-dns): never given to a Service.
    #[arg(long, env = "KUBE_LITE_CLUSTER_DNS", default_value = "10.96.0.10")]
    cluster_dns: std::net::Ipv4Addr,
    /// A node whose last heartbeat is older than this becomes NotReady.
    #[arg(long, env = "KUBE_LITE_NODE_GRACE_PERIOD", default_value = "40s", value_parser = kube_lite_core::time::parse_duration)]
    node_grace_period: Duration,
    /// Pods of a NotReady node are evicted this long after it went silent past the grace period.
    #[arg(long, env = "KUBE_LITE_POD_EVICTION_TIMEOUT", default_value = "60s", value_parser = kube_lite_core::time::parse_duration)]
    pod_eviction_timeout: Duration,
    /// Nodes per second whose pods are evicted (Kubernetes' --node-eviction-rate).
    #[arg(long, env = "KUBE_LITE_NODE_EVICTION_RATE", default_value_t = 0.1, value_parser = rate)]
    node_eviction_rate: f64,
    /// Eviction rate while more than --unhealthy-zone-threshold of the nodes are silent,
    /// in clusters larger than --large-cluster-size-threshold (smaller: none).
    #[arg(long, env = "KUBE_LITE_SECONDARY_NODE_EVICTION_RATE", default_value_t = 0.01, value_parser = rate)]
    secondary_node_eviction_rate: f64,
    /// Fraction of silent nodes (at least 3) from which evictions slow down or stop.
    #[arg(long, env = "KUBE_LITE_UNHEALTHY_ZONE_THRESHOLD", default_value_t = 0.55, value_parser = fraction)]
    unhealthy_zone_threshold: f64,
    /// Clusters up to this many nodes stop evicting while most nodes are silent.
    #[arg(
        long,
        env = "KUBE_LITE_LARGE_CLUSTER_SIZE_THRESHOLD",
        default_value_t = 50
    )]
    large_cluster_size_threshold: u32,
    /// Interval of BOOKMARK events on watches.
    #[arg(long, env = "KUBE_LITE_BOOKMARK_INTERVAL", default_value = "5s", value_parser = kube_lite_core::time::parse_duration)]
    bookmark_interval: Duration,
    /// Most changes kept for Watch resume: a cap that rarely binds (the window is sized
    /// by --watch-window-duration and --watch-window-bytes); 0 keeps no window and no
    /// change log.
    #[arg(long, env = "KUBE_LITE_WATCH_WINDOW", default_value_t = 10_000_000)]
    watch_window: u64,
    /// How long a revision stays resumable by Watch (as etcd's 5m compaction under
    /// kube-apiserver), as far as --watch-window-bytes allows.
    #[arg(long, env = "KUBE_LITE_WATCH_WINDOW_DURATION", default_value = "5m", value_parser = bounded_duration)]
    watch_window_duration: Duration,
    /// Connections held at once; more are accepted and closed at once (and logged).
    #[arg(long, env = "KUBE_LITE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Concurrent HTTP/2 streams (calls and watches) per connection.
    #[arg(long, env = "KUBE_LITE_MAX_STREAMS_PER_CONNECTION", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_connection: u32,
    /// A connection that has not sent the HTTP/2 preface by then is closed.
    #[arg(long, env = "KUBE_LITE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = bounded_duration)]
    handshake_timeout: Duration,
    /// A connection with no open call or watch for this long is closed with GOAWAY (0: never).
    #[arg(long, env = "KUBE_LITE_IDLE_TIMEOUT", default_value = "5m", value_parser = bounded_or_zero)]
    idle_timeout: Duration,
    /// HTTP/2 keepalive PING interval (0: no pings).
    #[arg(long, env = "KUBE_LITE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = bounded_or_zero)]
    keepalive_interval: Duration,
    /// A peer that does not answer a keepalive PING within this is dropped.
    #[arg(long, env = "KUBE_LITE_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = bounded_duration)]
    keepalive_timeout: Duration,
    /// Longest time to answer a call (for Watch and Logs: to start the stream; the
    /// streams themselves are never timed). 0: none.
    #[arg(long, env = "KUBE_LITE_REQUEST_TIMEOUT", default_value = "60s", value_parser = bounded_or_zero)]
    request_timeout: Duration,
    /// Bytes of encoded changes kept for Watch resume, in memory and in the change log
    /// on disk (e.g. 32Mi); a watch from an older revision must relist.
    #[arg(long, env = "KUBE_LITE_WATCH_WINDOW_BYTES", default_value = "64Mi", value_parser = apiserver::config::parse_bytes)]
    watch_window_bytes: u64,
    /// Bytes of encoded events buffered for one watcher (besides at most 1,024 events);
    /// a watcher whose buffer is full is ended with OUT_OF_RANGE "...; relist".
    #[arg(long, env = "KUBE_LITE_WATCH_BUFFER_BYTES", default_value = "16Mi", value_parser = apiserver::config::parse_bytes)]
    watch_buffer_bytes: u64,
    /// Largest object stored, encoded (Kubernetes: 1.5Mi).
    #[arg(long, env = "KUBE_LITE_MAX_OBJECT_BYTES", default_value = "1.5Mi", value_parser = apiserver::config::parse_bytes)]
    max_object_bytes: u64,
    /// sled's page cache.
    #[arg(long, env = "KUBE_LITE_STORE_CACHE_BYTES", default_value = "32Mi", value_parser = apiserver::config::parse_bytes)]
    store_cache_bytes: u64,
    /// Size of the reserve file kept in the data directory, deleted to open the store on
    /// a full disk (0 = none; at least one 8 MiB sled segment).
    #[arg(long, env = "KUBE_LITE_DISK_RESERVE_BYTES", default_value = "16Mi", value_parser = apiserver::config::parse_bytes)]
    disk_reserve_bytes: u64,
    /// Plaintext and no authentication: anyone who reaches the port controls the
    /// cluster. For experiments only (logged loudly).
    #[arg(long, env = "KUBE_LITE_INSECURE")]
    insecure: bool,
    /// Extra names (DNS names or IP addresses) of the serving certificate, besides
    /// localhost, 127.0.0.1 and the listen address (repeat or comma-separate).
    #[arg(long = "tls-san", env = "KUBE_LITE_TLS_SAN", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// The join token nodes present (default: the `join-token` file in the data dir,
    /// made at first start).
    #[arg(long, env = "KUBE_LITE_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// File holding the join token (written with a new token if missing).
    #[arg(long, env = "KUBE_LITE_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<PathBuf>,
    /// Lifetime of the node certificates (nodes renew after two thirds of it).
    #[arg(long, env = "KUBE_LITE_NODE_CERT_VALIDITY", default_value = "8760h", value_parser = kube_lite_core::time::parse_duration)]
    node_cert_validity: Duration,
    /// Also write the cluster CA certificate (public) to this file, e.g. a volume the
    /// nodes mount read-only with the join token file.
    #[arg(long, env = "KUBE_LITE_EXPORT_CA")]
    export_ca: Option<PathBuf>,
    /// Server URL written into admin.kubeconfig (default https://<listen address>).
    #[arg(long, env = "KUBE_LITE_KUBECONFIG_SERVER")]
    kubeconfig_server: Option<String>,
}

/// A rate in nodes per second: finite, 0 to 1000.
fn rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1000.0).contains(&v) {
        return Err(format!(
            "{s:?} is out of range (0 to 1000 nodes per second)"
        ));
    }
    Ok(v)
}

/// A fraction in (0, 1].
fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("{s:?} is out of range (above 0, at most 1)"));
    }
    Ok(v)
}

/// A duration flag between 1 ms and 1 day.
fn bounded_duration(s: &str) -> Result<Duration, String> {
    let d = kube_lite_core::time::parse_duration(s)?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(86_400) {
        return Err(format!("{s:?} is out of range (1ms to 24h)"));
    }
    Ok(d)
}

/// [`bounded_duration`], or 0 (off).
fn bounded_or_zero(s: &str) -> Result<Duration, String> {
    match kube_lite_core::time::parse_duration(s)? {
        Duration::ZERO => Ok(Duration::ZERO),
        _ => bounded_duration(s),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if !apiserver::malloc::fix_mmap_threshold() {
        tracing::debug!("allocator parameters left as they are (not glibc)");
    }
    let a = Args::parse();
    let join_token = match (&a.join_token, &a.join_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) | Err(_) => {
                let t = kube_lite_pki::random_token()?;
                kube_lite_pki::write_private(f, t.as_bytes())
                    .with_context(|| format!("writing the join token to {}", f.display()))?;
                Some(t)
            }
        },
        (None, None) => None,
    };
    let cfg = apiserver::Config {
        insecure: a.insecure,
        tls_sans: a.tls_sans,
        join_token,
        node_cert_validity: a.node_cert_validity,
        kubeconfig_server: a.kubeconfig_server,
        export_ca: a.export_ca,
        data_dir: a.data_dir,
        cluster_cidr: a.cluster_cidr,
        node_subnet_prefix: a.node_cidr_mask_size,
        service_cidr: a.service_cidr,
        node_port_range: a.service_node_port_range,
        cluster_dns: Some(a.cluster_dns),
        node_grace_period: a.node_grace_period,
        pod_eviction_timeout: a.pod_eviction_timeout,
        node_eviction_rate: a.node_eviction_rate,
        secondary_node_eviction_rate: a.secondary_node_eviction_rate,
        unhealthy_zone_threshold: a.unhealthy_zone_threshold,
        large_cluster_size_threshold: a.large_cluster_size_threshold as usize,
        bookmark_interval: a.bookmark_interval,
        watch_window: a.watch_window,
        watch_window_duration: a.watch_window_duration,
        max_connections: a.max_connections as usize,
        max_streams_per_connection: a.max_streams_per_connection,
        handshake_timeout: a.handshake_timeout,
        idle_timeout: a.idle_timeout,
        keepalive_interval: a.keepalive_interval,
        keepalive_timeout: a.keepalive_timeout,
        request_timeout: a.request_timeout,
        watch_window_bytes: a.watch_window_bytes,
        watch_buffer_bytes: a.watch_buffer_bytes.min(usize::MAX as u64) as usize,
        max_object_bytes: a.max_object_bytes.min(usize::MAX as u64) as usize,
        store_cache_bytes: a.store_cache_bytes,
        disk_reserve_bytes: a.disk_reserve_bytes,
        ..Default::default()
    };
    // Before anything else (a bad combination of flags is refused with no side effect).
    cfg.check().map_err(anyhow::Error::msg)?;
    match apiserver::conn::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                before,
                after,
                "raised the soft RLIMIT_NOFILE to the hard limit"
            )
        }
        Ok((soft, _)) => tracing::info!(soft, "RLIMIT_NOFILE already at the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    apiserver::run_until_signal(cfg, a.listen)
}
