//! The apiserver's settings ([`Config`]) and their one consistency rule, byte sizes
//! as flags take them ([`parse_bytes`]), and the store's gauges ([`StoreMetrics`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

/// Kubernetes' (etcd's) limit on one stored object: 1.5 MiB encoded.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1536 << 10;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub node_subnet_prefix: u8,
    pub service_cidr: ipnet::Ipv4Net,
    /// Heartbeat older than this → node NotReady.
    pub node_grace_period: Duration,
    /// This long after NotReady → pods of the node are evicted.
    pub pod_eviction_timeout: Duration,
    pub bookmark_interval: Duration,
    /// Change-log revisions kept for Watch resume (in memory and on disk).
    pub watch_window: u64,
    /// Bytes of encoded changes kept for Watch resume: the in-memory window and the
    /// change log on disk both hold at most this much (and `watch_window` changes).
    pub watch_window_bytes: u64,
    /// Per-watcher bounded buffer, in events.
    pub watch_buffer: usize,
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
            node_grace_period: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(60),
            bookmark_interval: Duration::from_secs(5),
            watch_window: 100_000,
            watch_window_bytes: 32 << 20,
            watch_buffer: 1024,
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
        }
    }
}

impl Config {
    /// The node subnet prefix must be longer than the cluster CIDR's, and at most /30.
    pub fn check(&self) -> Result<(), String> {
        if self.node_subnet_prefix <= self.cluster_cidr.prefix_len() || self.node_subnet_prefix > 30
        {
            return Err(format!(
                "node subnet prefix /{} does not fit in cluster CIDR {}",
                self.node_subnet_prefix, self.cluster_cidr
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
            "node subnet prefix /16 does not fit in cluster CIDR 10.0.0.0/16"
        );
    }
}
