//! The Node object: registration, heartbeats, and VXLAN peers from the Node watch.

use futures::StreamExt;
use kube_lite_client::{watcher, Clients, Event, Store, WatchParams};
use kube_lite_core::consts::{condition, condition_status, reason};
use kube_lite_net::{NodeNet, Peer};
use kube_lite_proto::v1::{GetRequest, Node, NodeCondition, NodeSpec, NodeStatus, ObjectMeta};
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
    }
}

/// Posts the Ready status every `interval` (re-registers if the Node was deleted).
pub async fn heartbeat(clients: Clients, info: NodeInfo, interval: Duration) {
    let mut api = clients.nodes.clone();
    loop {
        let node = Node {
            metadata: Some(ObjectMeta {
                name: info.name.clone(),
                ..Default::default()
            }),
            spec: None,
            status: Some(status(&info)),
        };
        match api.update_status(node).await {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {
                tracing::warn!(node = %info.name, "node object is gone; registering again");
                let n = register(&clients, &info).await;
                tracing::info!(node = %info.name, pod_cidr = %n.spec.map(|s| s.pod_cidr).unwrap_or_default(), "registered again");
            }
            Err(e) => tracing::warn!(node = %info.name, "heartbeat: {}", e.message()),
        }
        tokio::time::sleep(interval).await;
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
