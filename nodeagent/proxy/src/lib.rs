//! kube-lite-proxy: Services as iptables nat rules: ClusterIPs, node ports
//! (NodePort, LoadBalancer; externalTrafficPolicy Cluster/Local), load balancer IPs,
//! ClientIP session affinity.
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
//! Rules stay in place when `run` returns (connections keep working while the agent
//! restarts); [`cleanup`] removes them.
//!
//! Modules: [`model`] (Service + Endpoints → one view per Service port), [`render`]
//! (pure: views → rules in `iptables-save` form, diffs → `iptables-restore` text, parsing
//! `iptables-save`), [`exec`] (iptables / conntrack / ip inside the namespace, behind
//! the [`exec::Exec`] trait), [`proxier`] (desired vs applied state, incremental sync
//! and full resync), [`schedule`] (pure: when to sync — burst coalescing).

pub mod exec;
#[cfg(test)]
mod fake;
pub mod model;
pub mod proxier;
pub mod render;
pub mod schedule;

pub use proxier::{Proxier, ProxyError, SyncReport};

use futures::StreamExt;
use kube_lite_client::{watcher, Event, WatchParams};
use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, service_api_client::ServiceApiClient,
};
use schedule::{Coalescer, Decision};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

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
    /// This node's pod subnet: endpoints in it get the hairpin masquerade rule. `None` =
    /// the subnets of `node_local_route_dev`'s addresses (read at every full resync), and
    /// if that is unknown too, every endpoint (correct, just more rules).
    pub pod_subnet: Option<ipnet::Ipv4Net>,
    /// Coalesce bursts of watch events for this long before one restore.
    pub debounce: Duration,
    /// This node's name (Endpoints addresses on it are local: externalTrafficPolicy
    /// Local). `None`: no endpoint is local.
    pub node_name: Option<String>,
    /// If set, a report is sent after every successful sync (tests, benchmarks: "the
    /// rules are live now").
    pub sync_events: Option<tokio::sync::mpsc::UnboundedSender<SyncReport>>,
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
            pod_subnet: None,
            debounce: Duration::from_millis(10),
            node_name: None,
            sync_events: None,
        }
    }
}

/// Largest List response accepted (the apiserver allows 256 MiB responses).
const MAX_LIST_BYTES: usize = 256 << 20;

/// How soon to relist after a List at revision 0.
const RELIST_EMPTY: Duration = Duration::from_millis(500);

// Lists of 10,000 Services/Endpoints are far bigger than tonic's 4 MiB default.
fn service_events(
    channel: tonic::transport::Channel,
) -> impl futures::Stream<
    Item = Result<Event<kube_lite_proto::v1::Service>, kube_lite_client::ClientError>,
> + Send {
    watcher(
        ServiceApiClient::new(channel).max_decoding_message_size(MAX_LIST_BYTES),
        WatchParams::default(),
    )
}

fn endpoints_events(
    channel: tonic::transport::Channel,
) -> impl futures::Stream<
    Item = Result<Event<kube_lite_proto::v1::Endpoints>, kube_lite_client::ClientError>,
> + Send {
    watcher(
        EndpointsApiClient::new(channel).max_decoding_message_size(MAX_LIST_BYTES),
        WatchParams::default(),
    )
}

/// Watches Services + Endpoints through `channel`, keeps the node's nat table current
/// until `shutdown`; full resync on start and every `resync_interval`.
///
/// Nothing is written before both initial lists arrived. Watch events are coalesced: the
/// first change after a quiet period is applied at once; changes arriving while a sync
/// runs, or in a burst, are applied once no event came for `debounce`, or 250 ms after
/// the first unsynced one at the latest (a burst → one or a few restores). A failed sync is logged and retried after 1 s as
/// a full resync. Returns an error only for an invalid configuration.
pub async fn run(
    channel: tonic::transport::Channel,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut proxier = Proxier::new(&cfg)?;
    info!(netns = ?cfg.netns, mode = ?cfg.mode, backend = ?cfg.backend, "service proxy starting");
    let mut services = Box::pin(service_events(channel.clone()));
    let mut endpoints = Box::pin(endpoints_events(channel.clone()));
    // Watch(0) means "from now": after a List at revision 0 (an empty store), a write
    // landing before the Watch is open would be missed. Relist until the revision moved.
    let mut relist_at: Option<Instant> = None;
    let mut have_services = false;
    let mut have_endpoints = false;
    // When the next sync runs (leading edge, debounce, cap, back-off after a failure).
    let mut coalescer = Coalescer::new(cfg.debounce);
    let mut resync =
        tokio::time::interval_at(Instant::now() + cfg.resync_interval, cfg.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let due = coalescer.next_wakeup().map(Instant::from_std);
        let sleep_until = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = &mut shutdown => break,
            ev = services.next() => match ev {
                Some(Ok(Event::Restarted(all, rev))) => {
                    proxier.replace_services(all);
                    have_services = true;
                    if rev == 0 { relist_at = Some(Instant::now() + RELIST_EMPTY); }
                }
                Some(Ok(Event::Applied(s))) => proxier.upsert_service(s),
                Some(Ok(Event::Deleted(s))) => proxier.delete_service(&s),
                Some(Ok(Event::Bookmark(_))) => {}
                Some(Err(e)) => warn!("watching services: {e}"),
                None => break,
            },
            ev = endpoints.next() => match ev {
                Some(Ok(Event::Restarted(all, rev))) => {
                    proxier.replace_endpoints(all);
                    have_endpoints = true;
                    if rev == 0 { relist_at = Some(Instant::now() + RELIST_EMPTY); }
                }
                Some(Ok(Event::Applied(e))) => proxier.upsert_endpoints(e),
                Some(Ok(Event::Deleted(e))) => proxier.delete_endpoints(&e),
                Some(Ok(Event::Bookmark(_))) => {}
                Some(Err(e)) => warn!("watching endpoints: {e}"),
                None => break,
            },
            _ = resync.tick() => proxier.request_resync(),
            _ = tokio::time::sleep_until(relist_at.unwrap_or_else(Instant::now)), if relist_at.is_some() => {
                relist_at = None;
                services = Box::pin(service_events(channel.clone()));
                endpoints = Box::pin(endpoints_events(channel.clone()));
            },
            _ = tokio::time::sleep_until(sleep_until), if due.is_some() => {
                if coalescer.tick(Instant::now().into_std()) == Decision::SyncNow {
                    let r = proxier.sync().await;
                    coalescer.synced(Instant::now().into_std(), r.is_ok());
                    match r {
                        Ok(report) => {
                            if let Some(tx) = &cfg.sync_events {
                                let _ = tx.send(report);
                            }
                        }
                        Err(e) => {
                            warn!("service rules sync failed (retrying as a full resync in 1 s): {e}");
                        }
                    }
                }
            },
        }
        if have_services && have_endpoints && proxier.has_pending() {
            coalescer.change(Instant::now().into_std());
        }
    }
    info!("service proxy stopped");
    Ok(())
}

/// Removes every chain the proxy owns (by `cfg.chain_prefix`), the jumps to them and the
/// cluster IP routes it added, in `cfg.netns`. Chains of others are left alone.
pub async fn cleanup(cfg: &ProxyConfig) -> anyhow::Result<()> {
    let mut p = Proxier::new(cfg)?;
    p.cleanup().await?;
    Ok(())
}
