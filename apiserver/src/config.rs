//! The apiserver's settings ([`Config`]) and their one consistency rule.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Change-log revisions kept for Watch resume.
    pub watch_window: u64,
    /// Per-watcher bounded buffer, in events.
    pub watch_buffer: usize,
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
            watch_buffer: 1024,
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::time::parse_duration;

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
