//! kube-lite-proxy: ClusterIP Services as iptables nat rules.
//!
//! Public interface (used by the node agent, keep stable):
//!
//! ```ignore
//! let cfg = kube_lite_proxy::ProxyConfig { netns: Some("kl-n0".into()), ..Default::default() };
//! kube_lite_proxy::run(channel, cfg, shutdown_future).await?;
//! ```
//!
//! `run` watches Services and Endpoints through the gRPC `channel`, and keeps the nat
//! (and filter, for REJECT) tables of the node's network namespace current until
//! `shutdown` resolves; a full resync runs at start and every `resync_interval`.

use std::future::Future;
use std::time::Duration;

/// How a Service chain spreads new connections over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `-m statistic --mode nth --every K --packet 0`: exact round robin (the tutorial's way).
    #[default]
    Nth,
    /// `-m statistic --mode random --probability P` (kube-proxy's way).
    Random,
}

/// Which iptables binaries to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `iptables-restore` / `iptables-save` (nf_tables on this distribution).
    #[default]
    Nft,
    /// `iptables-legacy-restore` / `iptables-legacy-save`.
    Legacy,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Named network namespace (under /run/netns) holding the node's datapath;
    /// `None` = the process' own namespace (containers).
    pub netns: Option<String>,
    pub mode: Mode,
    pub backend: Backend,
    /// Full resync period (drift repair).
    pub resync_interval: Duration,
    /// Prefix of every chain the proxy owns, e.g. "KL-".
    pub chain_prefix: String,
    /// If set (bridge "kl0"), `ip route replace <clusterIP>/32 dev <dev>` inside the
    /// namespace so clients in the node namespace itself reach ClusterIPs.
    pub node_local_route_dev: Option<String>,
    /// Coalesce bursts of watch events for this long before one restore.
    pub debounce: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            netns: None,
            mode: Mode::Nth,
            backend: Backend::Nft,
            resync_interval: Duration::from_secs(30),
            chain_prefix: "KL-".to_string(),
            node_local_route_dev: Some("kl0".to_string()),
            debounce: Duration::from_millis(20),
        }
    }
}

/// Watches Services + Endpoints through `channel`, keeps the node's nat table current
/// until `shutdown`; full resync on start and every `resync_interval`.
pub async fn run(
    channel: tonic::transport::Channel,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _ = (channel, cfg);
    shutdown.await;
    Ok(())
}
