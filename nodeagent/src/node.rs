//! The Node object: registration, heartbeats, and VXLAN peers from the Node watch.

use futures::StreamExt;
use kube_lite_client::{watcher, Clients, Event, Store, WatchParams};
use kube_lite_core::consts::lease::{NODE_LEASE_DURATION_SECONDS, NODE_LEASE_NAMESPACE};
use kube_lite_core::consts::{condition, condition_status, reason};
use kube_lite_net::{NodeNet, Peer};
use kube_lite_proto::v1::{
    GetRequest, Lease, LeaseSpec, Node, NodeCondition, NodeSpec, NodeStatus, ObjectMeta,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// What the agent publishes about its node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub address: Ipv4Addr,
    pub daemon_endpoint: String,
    pub capacity: BTreeMap<String, String>,
    /// Images on the node (filled by the containerd runtime's image service).
    pub images: crate::containerd::service::ImageList,
    pub allocatable: BTreeMap<String, String>,
}

/// Creates the Node, or takes over an existing one of the same name (keeping its
/// subnet). Returns the node as stored (with spec.pod_cidr). Retries until the
/// apiserver answers.
pub async fn register(clients: &Clients, info: &NodeInfo) -> Node {
    let mut delay = Duration::from_millis(200);
    loop {
        match try_register(clients, info).await {
            Ok(n) if n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty()) => return n,
            Ok(_) => tracing::warn!(node = %info.name, "node has no pod_cidr yet; retrying"),
            Err(e) => tracing::warn!(node = %info.name, "registering node: {}", e.message()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn try_register(clients: &Clients, info: &NodeInfo) -> Result<Node, tonic::Status> {
    let mut api = clients.nodes.clone();
    let node = Node {
        metadata: Some(ObjectMeta {
            name: info.name.clone(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            address: info.address.to_string(),
            ..Default::default()
        }),
        status: Some(status(info)),
    };
    match api.create(node).await {
        Ok(n) => {
            tracing::info!(node = %info.name, "registered node");
            Ok(n.into_inner())
        }
        Err(e) if e.code() == Code::AlreadyExists => {
            let mut existing = api
                .get(GetRequest {
                    name: info.name.clone(),
                    namespace: String::new(),
                })
                .await?
                .into_inner();
            let spec = existing.spec.get_or_insert_with(Default::default);
            if spec.address != info.address.to_string() {
                spec.address = info.address.to_string();
                if let Some(m) = existing.metadata.as_mut() {
                    m.resource_version = 0;
                }
                existing = api.update(existing).await?.into_inner();
            }
            tracing::info!(node = %info.name, "took over existing node");
            Ok(existing)
        }
        Err(e) => Err(e),
    }
}

fn status(info: &NodeInfo) -> NodeStatus {
    NodeStatus {
        conditions: vec![NodeCondition {
            r#type: condition::READY.into(),
            status: condition_status::TRUE.into(),
            reason: reason::AGENT_READY.into(),
            message: "kube-lite node agent is posting ready status".into(),
            last_transition_time: 0,
        }],
        last_heartbeat_time: 0,
        capacity: info.capacity.clone().into_iter().collect(),
        allocatable: info.allocatable.clone().into_iter().collect(),
        address: info.address.to_string(),
        daemon_endpoint: info.daemon_endpoint.clone(),
        images: info.images.lock().unwrap().clone(),
    }
}

/// A random fraction in [0, 1): std's `RandomState` is randomly keyed per instance.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Heartbeat jitter, as Kubernetes' `wait.Jitter`: `base` plus up to `factor` of it.
pub const JITTER: f64 = 0.04;

/// `base` stretched by `unit` (in [0, 1)) times `factor` of it. Pure.
pub fn jittered(base: Duration, factor: f64, unit: f64) -> Duration {
    base + base.mul_f64((factor * unit).clamp(0.0, 1.0))
}

/// The node's Lease, renewed at `now` (ms).
pub fn node_lease(node: &str, now: i64) -> Lease {
    Lease {
        metadata: Some(ObjectMeta {
            name: node.into(),
            namespace: NODE_LEASE_NAMESPACE.into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: node.into(),
            lease_duration_seconds: NODE_LEASE_DURATION_SECONDS,
            renew_time: now,
            ..Default::default()
        }),
    }
}

/// Renews the node Lease every `interval` (jittered; the first renewal at a random
/// point of the first period, so agents started together spread out), creating it
/// when it is missing. The heartbeat the node health controller reads.
pub async fn renew_lease_forever(clients: Clients, node: String, interval: Duration) {
    tokio::time::sleep(interval.mul_f64(random_unit())).await;
    let mut api = clients.leases.clone();
    loop {
        let lease = node_lease(&node, kube_lite_core::time::now_ms());
        let r = match api.update(lease.clone()).await {
            Err(e) if e.code() == Code::NotFound => api.create(lease).await.map(|_| ()),
            r => r.map(|_| ()),
        };
        if let Err(e) = r {
            tracing::warn!(node = %node, "renewing the node lease: {}", e.message());
        }
        tokio::time::sleep(jittered(interval, JITTER, random_unit())).await;
    }
}

/// Whether the stored status differs from the one the agent would post, times
/// aside (the apiserver stamps the heartbeat and transition times). Pure.
pub fn status_differs(stored: Option<&NodeStatus>, want: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        s.last_heartbeat_time = 0;
        for c in &mut s.conditions {
            c.last_transition_time = 0;
        }
        s
    };
    stored.is_none_or(|s| strip(s) != strip(want))
}

/// Every `interval` (jittered), reads the Node and writes its status only when it
/// changed (e.g. the node health controller marked it NotReady) or when
/// `report_every` passed since the last write; registers again if the Node was
/// deleted. The liveness heartbeat is the Lease ([`renew_lease_forever`]), so Node
/// watchers see a Node change only when something changed.
pub async fn heartbeat(
    clients: Clients,
    info: NodeInfo,
    interval: Duration,
    report_every: Duration,
) {
    let mut api = clients.nodes.clone();
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        let want = status(&info);
        let got = api
            .get(GetRequest {
                name: info.name.clone(),
                namespace: String::new(),
            })
            .await;
        match got {
            Ok(n) => {
                let n = n.into_inner();
                let due = last_write.is_none_or(|t| t.elapsed() >= report_every);
                if due || status_differs(n.status.as_ref(), &want) {
                    let node = Node {
                        metadata: Some(ObjectMeta {
                            name: info.name.clone(),
                            ..Default::default()
                        }),
                        spec: None,
                        status: Some(want),
                    };
                    match api.update_status(node).await {
                        Ok(_) => last_write = Some(tokio::time::Instant::now()),
                        Err(e) if e.code() == Code::NotFound => {}
                        Err(e) => tracing::warn!(node = %info.name, "node status: {}", e.message()),
                    }
                }
            }
            Err(e) if e.code() == Code::NotFound => {
                tracing::warn!(node = %info.name, "node object is gone; registering again");
                let n = register(&clients, &info).await;
                last_write = Some(tokio::time::Instant::now());
                tracing::info!(node = %info.name, pod_cidr = %n.spec.map(|s| s.pod_cidr).unwrap_or_default(), "registered again");
            }
            Err(e) => tracing::warn!(node = %info.name, "heartbeat: {}", e.message()),
        }
        tokio::time::sleep(jittered(interval, JITTER, random_unit())).await;
    }
}

fn ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == condition::READY && c.status == condition_status::TRUE)
    })
}

/// VXLAN peers: every other Ready node with a subnet and an address. Pure.
pub fn peers<'a>(me: &str, nodes: impl Iterator<Item = &'a Node>) -> Vec<Peer> {
    let mut out: Vec<Peer> = nodes
        .filter(|n| n.metadata.as_ref().is_some_and(|m| m.name != me))
        .filter(|n| ready(n))
        .filter_map(|n| {
            let spec = n.spec.as_ref()?;
            let subnet = spec.pod_cidr.parse().ok()?;
            let address = spec
                .address
                .parse()
                .ok()
                .or_else(|| n.status.as_ref()?.address.parse().ok())?;
            Some(Peer {
                name: n.metadata.as_ref()?.name.clone(),
                address,
                subnet,
            })
        })
        .collect();
    out.sort();
    out
}

/// Keeps the VXLAN FDB and routes in step with the Node watch.
pub async fn sync_peers_forever(clients: Clients, net: Arc<NodeNet>, me: String) {
    let mut store: Store<Node> = Store::new();
    let mut current: Option<Vec<Peer>> = None;
    let mut w = Box::pin(watcher(clients.nodes.clone(), WatchParams::default()));
    let mut retry = tokio::time::interval(Duration::from_secs(10));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = w.next() => match ev {
                Some(Ok(ev)) => {
                    if matches!(ev, Event::Bookmark(_)) { continue; }
                    store.apply(&ev);
                }
                Some(Err(e)) => { tracing::warn!("node watch: {e}"); continue; }
                None => return,
            },
            _ = retry.tick() => {
                // Periodic full sync repairs drift and retries failures.
                current = None;
            }
        }
        if !store.synced {
            continue;
        }
        let want = peers(&me, store.iter());
        if current.as_ref() == Some(&want) {
            continue;
        }
        match net.sync_peers(&want).await {
            Ok(()) => {
                if current.as_ref() != Some(&want) {
                    tracing::info!(
                        peers = ?want.iter().map(|p| format!("{}={}@{}", p.name, p.subnet, p.address)).collect::<Vec<_>>(),
                        "VXLAN peers synced"
                    );
                }
                current = Some(want);
            }
            Err(e) => {
                tracing::warn!("syncing VXLAN peers: {e}");
                current = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, addr: &str, is_ready: bool) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                pod_cidr: cidr.into(),
                address: addr.into(),
                unschedulable: false,
            }),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: if is_ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn jitter_stretches_by_at_most_the_factor() {
        let base = Duration::from_secs(10);
        assert_eq!(jittered(base, JITTER, 0.0), base);
        assert_eq!(jittered(base, JITTER, 0.5), Duration::from_millis(10_200));
        assert!(jittered(base, JITTER, 0.999_999) < Duration::from_millis(10_400));
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn node_status_is_written_only_when_it_changed() {
        let info = NodeInfo {
            name: "n1".into(),
            address: Ipv4Addr::new(192, 168, 1, 1),
            daemon_endpoint: "http://192.168.1.1:10250".into(),
            capacity: [("pods".to_string(), "110".to_string())].into(),
            allocatable: Default::default(),
            images: Default::default(),
        };
        let want = status(&info);
        assert!(status_differs(None, &want));
        // As stored: the apiserver stamped the times.
        let mut stored = want.clone();
        stored.last_heartbeat_time = 123;
        stored.conditions[0].last_transition_time = 100;
        assert!(!status_differs(Some(&stored), &want));
        // Marked NotReady by the node health controller: written again.
        let mut marked = stored.clone();
        marked.conditions[0].status = "False".into();
        marked.conditions[0].reason = "NodeStatusUnknown".into();
        assert!(status_differs(Some(&marked), &want));
        let mut moved = stored;
        moved.address = "192.168.1.9".into();
        assert!(status_differs(Some(&moved), &want));
    }

    #[test]
    fn node_lease_names_the_node() {
        let l = node_lease("n1", 42);
        let m = l.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str()),
            ("n1", "kube-node-lease")
        );
        let spec = l.spec.unwrap();
        assert_eq!(spec.renew_time, 42);
        assert_eq!(spec.holder_identity, "n1");
        assert_eq!(spec.lease_duration_seconds, 40);
    }

    #[test]
    fn peers_are_other_ready_nodes_with_subnets() {
        let nodes = [
            node("a", "10.0.1.0/24", "192.168.1.1", true),
            node("b", "10.0.2.0/24", "192.168.1.2", true),
            node("c", "10.0.3.0/24", "192.168.1.3", false),
            node("d", "", "192.168.1.4", true),
            node("e", "10.0.5.0/24", "", true),
        ];
        let p = peers("a", nodes.iter());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "b");
        assert_eq!(p[0].address, Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(p[0].subnet.to_string(), "10.0.2.0/24");
    }
}
