//! Command line (clap; every flag also from env `KUBE_LITE_<FLAG>`).

use clap::Parser;
use kube_lite_core::time::parse_duration;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nodeagent",
    about = "kube-lite node agent: registers the node, runs its pods as processes in network namespaces, joins nodes with VXLAN",
    version
)]
pub struct Config {
    /// apiserver address.
    #[arg(
        long,
        env = "KUBE_LITE_SERVER",
        default_value = "http://127.0.0.1:6443"
    )]
    pub server: String,
    /// Node name (default: the hostname).
    #[arg(long, env = "KUBE_LITE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Named network namespace (/run/netns/NS) holding this node's datapath; default:
    /// the agent's own namespace.
    #[arg(long, env = "KUBE_LITE_NETNS")]
    pub netns: Option<String>,
    /// Underlay address of the node (default: first global IPv4 of the node namespace).
    #[arg(long, env = "KUBE_LITE_ADDRESS")]
    pub address: Option<Ipv4Addr>,
    /// State directory (default /var/lib/kube-lite/<node>).
    #[arg(long, env = "KUBE_LITE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address of the NodeAgent gRPC server (logs); default `<node address>:10250`.
    #[arg(long, env = "KUBE_LITE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// URL published as status.daemon_endpoint (default: https://<listen address, or the
    /// node address when listening on 0.0.0.0>:<port>; http:// when insecure).
    #[arg(long, env = "KUBE_LITE_ADVERTISE_ENDPOINT")]
    pub advertise_endpoint: Option<String>,
    /// Prefix of pod network namespace names (`<prefix>-<pod uid>`); must be unique per
    /// node on one machine (default `kl-<node>`). Orphan cleanup removes unknown
    /// namespaces with this prefix.
    #[arg(long, env = "KUBE_LITE_NETNS_PREFIX")]
    pub netns_prefix: Option<String>,
    /// VXLAN network identifier.
    #[arg(long, env = "KUBE_LITE_VNI", default_value_t = 10)]
    pub vni: u32,
    /// Pod interface MTU (1450 fits VXLAN on a 1500 underlay).
    #[arg(long, env = "KUBE_LITE_MTU", default_value_t = 1450)]
    pub mtu: u32,
    /// Heartbeat period: the node Lease is renewed this often (with 4% jitter, the
    /// first renewal at a random point of the first period), and the Node status is
    /// checked and written when it changed.
    #[arg(long, env = "KUBE_LITE_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The Node status is written at least this often even when unchanged (kubelet's
    /// nodeStatusReportFrequency).
    #[arg(long, env = "KUBE_LITE_NODE_STATUS_REPORT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub node_status_report_interval: Duration,
    /// Directory searched first for images (and for `whoami` → kl-whoami).
    #[arg(long, env = "KUBE_LITE_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// How Service chains spread new connections over endpoints: `nth` (exact round
    /// robin, `-m statistic --mode nth`, the tutorial's way) or `random` (kube-proxy's).
    #[arg(long, env = "KUBE_LITE_PROXY_MODE", default_value = "nth", value_parser = ["nth", "random"])]
    pub proxy_mode: String,
    /// iptables backend for Service rules: `nft` (iptables-restore, nf_tables) or
    /// `legacy` (iptables-legacy-restore).
    #[arg(long, env = "KUBE_LITE_IPTABLES_BACKEND", default_value = "nft", value_parser = ["nft", "legacy"])]
    pub iptables_backend: String,
    /// Size at which a container log is rotated (one rotated file is kept, so a
    /// container holds at most twice this per instance): bytes, or with a suffix
    /// K/Ki/M/Mi/G/Gi (kubelet's containerLogMaxSize; 0 = never rotate).
    #[arg(long, env = "KUBE_LITE_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi", value_parser = parse_size)]
    pub container_log_max_size: u64,
    /// The cluster's join token, needed only until the node has an identity (saved in
    /// the state dir's pki/).
    #[arg(long, env = "KUBE_LITE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "KUBE_LITE_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM; the apiserver's <data dir>/pki/ca.crt); default:
    /// the one saved at join.
    #[arg(long, env = "KUBE_LITE_CERTIFICATE_AUTHORITY")]
    pub certificate_authority: Option<PathBuf>,
    /// Container runtime: `process` (programs of the node in namespaces) or
    /// `containerd` (images, through containerd's gRPC API).
    #[arg(long, env = "KUBE_LITE_RUNTIME", default_value = "process", value_parser = ["process", "containerd"])]
    pub runtime: String,
    /// containerd's gRPC socket (with `--runtime containerd`).
    #[arg(
        long,
        env = "KUBE_LITE_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_socket: PathBuf,
    /// containerd namespace of this cluster's containers and images.
    #[arg(
        long,
        env = "KUBE_LITE_CONTAINERD_NAMESPACE",
        default_value = "kube-lite"
    )]
    pub containerd_namespace: String,
    /// Directory whose `*.tar` image archives are imported (default
    /// `<state dir>/images`; containerd runtime only).
    #[arg(long, env = "KUBE_LITE_IMAGE_IMPORT_DIR")]
    pub image_import_dir: Option<PathBuf>,
    /// Largest image archive `kubectl-lite image load` may send (bytes or K/Mi/Gi…).
    #[arg(long, env = "KUBE_LITE_MAX_IMAGE_ARCHIVE_SIZE", default_value = "2Gi", value_parser = parse_size)]
    pub max_image_archive_size: u64,
    /// Do not run the Service proxy (iptables) in this agent.
    #[arg(long, env = "KUBE_LITE_NO_PROXY")]
    pub no_proxy: bool,
    /// The node's cpu capacity as a quantity ("2", "1500m"); default: the machine's CPUs.
    #[arg(long, env = "KUBE_LITE_CAPACITY_CPU", value_parser = parse_quantity)]
    pub capacity_cpu: Option<Quantity>,
    /// The node's memory capacity ("4Gi"); default: the machine's MemTotal.
    #[arg(long, env = "KUBE_LITE_CAPACITY_MEMORY", value_parser = parse_quantity)]
    pub capacity_memory: Option<Quantity>,
    /// cpu kept from pods: allocatable = capacity − reserved (kubelet's system-reserved).
    #[arg(long, env = "KUBE_LITE_RESERVED_CPU", value_parser = parse_quantity, default_value = "0")]
    pub reserved_cpu: Quantity,
    /// memory kept from pods.
    #[arg(long, env = "KUBE_LITE_RESERVED_MEMORY", value_parser = parse_quantity, default_value = "0")]
    pub reserved_memory: Quantity,
    /// The cluster DNS address: this agent serves the cluster's names there (inside
    /// the node namespace) and ClusterFirst pods get it as their nameserver (the
    /// apiserver's --cluster-dns, which it never gives to a Service).
    #[arg(long, env = "KUBE_LITE_CLUSTER_DNS", default_value = "10.96.0.10")]
    pub cluster_dns: Ipv4Addr,
    /// Do not run the cluster DNS server (pods' ClusterFirst falls back to Default).
    #[arg(long, env = "KUBE_LITE_NO_CLUSTER_DNS")]
    pub no_cluster_dns: bool,
    /// The cluster domain.
    #[arg(
        long,
        env = "KUBE_LITE_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Resolvers for names outside the cluster domain (`IP[:PORT]`, comma separated),
    /// `none` for none (SERVFAIL); default: the nameservers of --resolv-conf.
    #[arg(long, env = "KUBE_LITE_DNS_UPSTREAM")]
    pub dns_upstream: Option<String>,
    /// The node's resolv.conf (pods with dnsPolicy Default get its contents).
    #[arg(
        long,
        env = "KUBE_LITE_RESOLV_CONF",
        default_value = "/etc/resolv.conf"
    )]
    pub resolv_conf: PathBuf,
}

/// Parses `--dns-upstream`: `none`, or `IP[:PORT]` separated by commas.
pub fn parse_upstreams(s: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|p| {
            let p = p.trim();
            p.parse::<std::net::SocketAddr>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| format!("--dns-upstream: {p:?} is not IP or IP:PORT"))
        })
        .collect()
}

pub use kube_lite_core::quantity::{parse_quantity, Quantity};

/// Byte sizes as everywhere in kube-lite ("10Mi", "500K", "1048576").
pub use kube_lite_core::size::parse_bytes as parse_size;

#[cfg(test)]
mod tests {

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10Mi").unwrap(), 10 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("500K").unwrap(), 500_000);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("").is_err());
        assert!(parse_size("5Ti").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("99999999999999999999Gi").is_err());
        let c = Config::try_parse_from(["nodeagent"]).unwrap();
        assert_eq!(c.container_log_max_size, 10 << 20);
        let c = Config::try_parse_from(["nodeagent", "--container-log-max-size", "1Mi"]).unwrap();
        assert_eq!(c.container_log_max_size, 1 << 20);
    }
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from([
            "nodeagent",
            "--server",
            "http://127.0.0.1:1",
            "--node-name",
            "n1",
            "--netns",
            "kl1-n0",
            "--address",
            "192.168.1.2",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "1s",
        ])
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("n1"));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.node_status_report_interval, Duration::from_secs(300));
        assert_eq!(c.vni, 10);
        assert_eq!(c.mtu, 1450);
        assert_eq!(c.proxy_mode, "nth");
        assert_eq!(c.iptables_backend, "nft");
        assert_eq!(c.runtime, "process");
        assert!(Config::try_parse_from(["nodeagent", "--runtime", "docker"]).is_err());
        assert!(Config::try_parse_from(["nodeagent", "--proxy-mode", "fastest"]).is_err());
    }
}
