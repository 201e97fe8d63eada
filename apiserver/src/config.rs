//! The apiserver's settings ([`Config`]) and their one consistency rule, byte sizes
//! as flags take them ([`parse_bytes`]), and the store's gauges ([`StoreMetrics`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

/// Kubernetes' (etcd's) limit on one stored object: 1.5 MiB encoded.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1536 << 10;

/// Kubernetes' default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;
/// Kubernetes' usual cluster DNS address (kubeadm: the 10th address of 10.96.0.0/12).
pub const DEFAULT_CLUSTER_DNS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 10);

/// Parses a port range `30000-32767` (both ends included, `lo <= hi`, `lo >= 1`).
pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: want LOW-HIGH, e.g. 30000-32767"))?;
    let lo: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: bad low port"))?;
    let hi: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: bad high port"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?}: want 1 <= LOW <= HIGH"));
    }
    Ok(lo..=hi)
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub node_subnet_prefix: u8,
    pub service_cidr: ipnet::Ipv4Net,
    /// NodePort / LoadBalancer Services get their node ports from this range.
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// The cluster DNS address (a ClusterIP the agents' DNS servers answer at): never
    /// allocated to a Service. `None`: nothing reserved.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// Heartbeat older than this → node NotReady.
    pub node_grace_period: Duration,
    /// This long after NotReady → pods of the node are evicted.
    pub pod_eviction_timeout: Duration,
    /// Nodes per second whose pods are evicted in normal times (Kubernetes'
    /// `--node-eviction-rate`).
    pub node_eviction_rate: f64,
    /// The same while most nodes are silent, in a cluster larger than
    /// `large_cluster_size_threshold` (smaller ones: no evictions then).
    pub secondary_node_eviction_rate: f64,
    /// Fraction of silent nodes (more than 2) from which evictions slow down or stop.
    pub unhealthy_zone_threshold: f64,
    pub large_cluster_size_threshold: usize,
    pub bookmark_interval: Duration,
    /// Most changes kept for Watch resume (in memory and on disk): a cap; the window
    /// is sized by `watch_window_duration` and `watch_window_bytes`. 0: no window and
    /// no change log.
    pub watch_window: u64,
    /// Changes are kept for Watch resume this long (as far as `watch_window_bytes`
    /// allows).
    pub watch_window_duration: Duration,
    /// Bytes of encoded changes kept for Watch resume: the in-memory window and the
    /// change log on disk both hold at most this much (and `watch_window` changes).
    pub watch_window_bytes: u64,
    /// Per-watcher bounded buffer, in events…
    pub watch_buffer: usize,
    /// …and in bytes (encoded events; one event larger than this still goes through
    /// an empty buffer).
    pub watch_buffer_bytes: usize,
    /// Connections held at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A connection that has not sent the HTTP/2 preface by then is closed.
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive: ping an idle connection this often…
    pub keepalive_interval: Duration,
    /// …and close it when a ping is not answered in this time.
    pub keepalive_timeout: Duration,
    /// Concurrent streams (calls, watches) on one connection.
    pub max_streams_per_connection: u32,
    /// A connection with no open stream for this long is closed (GOAWAY); zero: never.
    pub idle_timeout: Duration,
    /// Longest time to produce a response's headers: a unary call's whole answer, but
    /// for Watch and Logs only their start (their streams are never timed). Zero: none.
    pub request_timeout: Duration,
    /// Largest object the store accepts, encoded (larger: RESOURCE_EXHAUSTED).
    pub max_object_bytes: usize,
    /// sled's page cache (every object is in memory anyway; this only caches pages).
    pub store_cache_bytes: u64,
    /// A file of this size kept in the data directory and deleted when the store
    /// cannot open on a full disk (0 = none).
    pub disk_reserve_bytes: u64,
    /// Gauges the store keeps up to date (shared by clones of this config).
    pub metrics: Arc<StoreMetrics>,
    /// Events not seen again for this long are deleted (Kubernetes: 1 h).
    pub event_ttl: Duration,
    /// Plaintext, no authentication (issue 14: experiments only, loudly logged).
    pub insecure: bool,
    /// Extra names (DNS or IP) of the serving certificate.
    pub tls_sans: Vec<String>,
    /// Lifetime of the node certificates issued at join and renewal.
    pub node_cert_validity: Duration,
    /// The join token (default: `join-token` in the data dir, made at first start).
    pub join_token: Option<String>,
    /// Server URL written into `admin.kubeconfig` (default: https://<listen address>).
    pub kubeconfig_server: Option<String>,
    /// A file to write the CA certificate to as well (for nodes).
    pub export_ca: Option<PathBuf>,
}

/// What the store reports about itself (read by tests and benchmarks).
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Changes held in the watch window, and their encoded bytes.
    pub window_events: AtomicU64,
    pub window_bytes: AtomicU64,
    /// Revision of the oldest change in the window (0: empty).
    pub window_oldest: AtomicU64,
    /// Commits that failed (disk full or I/O error); writes are refused until the
    /// store is open again.
    pub commit_failures: AtomicU64,
    /// True while the store cannot write (after a failed commit, until it reopened).
    pub write_blocked: AtomicBool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./kube-lite-data"),
            cluster_cidr: "10.0.0.0/16".parse().expect("valid cidr"),
            node_subnet_prefix: 24,
            service_cidr: "10.96.0.0/16".parse().expect("valid cidr"),
            node_port_range: DEFAULT_NODE_PORT_RANGE,
            cluster_dns: Some(DEFAULT_CLUSTER_DNS),
            node_grace_period: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
            bookmark_interval: Duration::from_secs(5),
            watch_window: 10_000_000,
            watch_window_duration: Duration::from_secs(300),
            watch_window_bytes: 64 << 20,
            watch_buffer: 1024,
            watch_buffer_bytes: 16 << 20,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_streams_per_connection: 1000,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            store_cache_bytes: 32 << 20,
            disk_reserve_bytes: 16 << 20,
            metrics: Arc::default(),
            event_ttl: Duration::from_secs(3600),
            insecure: false,
            tls_sans: Vec::new(),
            node_cert_validity: kube_lite_pki::CERT_VALIDITY,
            join_token: None,
            kubeconfig_server: None,
            export_ca: None,
        }
    }
}

impl Config {
    /// The node subnet prefix must be longer than the cluster CIDR's, and at most /30;
    /// the cluster (pod) and service CIDRs must not overlap (ClusterIPs would be
    /// allocated inside the pod network, as kube-controller-manager refuses too).
    pub fn check(&self) -> Result<(), String> {
        if self.node_subnet_prefix <= self.cluster_cidr.prefix_len() || self.node_subnet_prefix > 30
        {
            return Err(format!(
                "node subnet prefix /{} (--node-cidr-mask-size) does not fit in cluster CIDR {}: it must be longer than /{} and at most /30",
                self.node_subnet_prefix,
                self.cluster_cidr,
                self.cluster_cidr.prefix_len()
            ));
        }
        let (c, s) = (self.cluster_cidr.trunc(), self.service_cidr.trunc());
        if c.contains(&s.network()) || s.contains(&c.network()) {
            return Err(format!(
                "--service-cidr {} overlaps --cluster-cidr {}: ClusterIPs would be allocated inside the pod network; choose disjoint ranges (e.g. --cluster-cidr 10.0.0.0/12 --service-cidr 10.96.0.0/12)",
                self.service_cidr, self.cluster_cidr
            ));
        }
        Ok(())
    }
}

pub use kube_lite_core::size::parse_bytes;

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::time::parse_duration;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5Mi").unwrap(), 1536 << 10);
        assert_eq!(parse_bytes("512Ki").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("2Gi").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("10M").unwrap(), 10_000_000);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("0").unwrap(), 0);
        for bad in ["", "Mi", "12Xi", "-1", "1..2Mi"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(DEFAULT_MAX_OBJECT_BYTES, 1_572_864);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000-32767").unwrap(), 30000..=32767);
        assert_eq!(parse_port_range("80-80").unwrap(), 80..=80);
        for bad in ["", "1", "0-10", "20-10", "a-b", "1-70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn subnet_prefix_must_fit() {
        assert!(Config::default().check().is_ok());
        for bad in [16, 8, 31] {
            let cfg = Config {
                node_subnet_prefix: bad,
                ..Default::default()
            };
            assert!(cfg.check().is_err(), "/{bad}");
        }
        assert_eq!(
            Config {
                node_subnet_prefix: 16,
                ..Default::default()
            }
            .check()
            .unwrap_err(),
            "node subnet prefix /16 (--node-cidr-mask-size) does not fit in cluster CIDR 10.0.0.0/16: it must be longer than /16 and at most /30"
        );
    }

    #[test]
    fn overlapping_cidrs_are_refused() {
        let with = |cluster: &str, service: &str, mask: u8| Config {
            cluster_cidr: cluster.parse().unwrap(),
            service_cidr: service.parse().unwrap(),
            node_subnet_prefix: mask,
            ..Default::default()
        };
        assert_eq!(
            with("10.0.0.0/8", "10.96.0.0/16", 24).check().unwrap_err(),
            "--service-cidr 10.96.0.0/16 overlaps --cluster-cidr 10.0.0.0/8: ClusterIPs would be allocated inside the pod network; choose disjoint ranges (e.g. --cluster-cidr 10.0.0.0/12 --service-cidr 10.96.0.0/12)"
        );
        // Either way round, and host bits do not hide it.
        assert!(with("10.96.0.0/16", "10.0.0.0/8", 24).check().is_err());
        assert!(with("10.0.0.0/16", "10.0.255.1/24", 24).check().is_err());
        // Disjoint ranges, a wide cluster CIDR with a smaller mask: fine.
        assert!(with("10.0.0.0/12", "10.96.0.0/12", 24).check().is_ok());
        assert!(with("10.0.0.0/12", "10.96.0.0/12", 26).check().is_ok());
        assert!(with("172.16.0.0/12", "10.96.0.0/16", 20).check().is_ok());
    }
}
