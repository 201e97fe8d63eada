//! In-process controllers. They run inside the writer, against its state, and their
//! writes join the batch that triggered them (so e.g. a Running pod and the Endpoints
//! that include it commit together):
//! - node subnets and ClusterIPs: allocated at create, released at delete
//!   (bookkeeping in [`on_change`], derived from the objects, rebuilt at start);
//! - scheduler: binds pending pods ([`schedule`]);
//! - endpoints: one Endpoints per Service with a selector ([`sync_endpoints`]);
//! - node health: a timer task ([`run_node_health`]) marks silent nodes NotReady and
//!   evicts their pods.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use kube_lite_proto::labels::map_matches;
use kube_lite_proto::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, NodeCondition, ObjectMeta, Pod,
};

use crate::error::ApiError;
use crate::resource::{Kind, ObjKey, Object};
use crate::store::{State, Store, Txn};
use crate::{ops, Config};

// ---------- bookkeeping ----------

fn subnet_index(cfg: &Config, cidr: &str) -> Option<u32> {
    let net: Ipv4Net = cidr.parse().ok()?;
    if net.prefix_len() != cfg.node_subnet_prefix || !cfg.cluster_cidr.contains(&net) {
        return None;
    }
    let off = u32::from(net.network()) - u32::from(cfg.cluster_cidr.network());
    Some(off >> (32 - cfg.node_subnet_prefix as u32))
}

fn pod_counts(p: &Pod) -> Option<&str> {
    let node = p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
    let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    (!node.is_empty() && phase != "Succeeded" && phase != "Failed").then_some(node)
}

fn pod_needs_scheduling(p: &Pod) -> bool {
    let unbound = p.spec.as_ref().is_some_and(|s| s.node_name.is_empty());
    let deleting = p
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp != 0);
    let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    unbound && !deleting && phase != "Succeeded" && phase != "Failed"
}

/// What the endpoints controller looks at in a pod.
fn pod_ep_view(p: &Pod) -> (bool, &str, &str) {
    let st = p.status.as_ref();
    let ready = st.is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
        && p.metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp == 0);
    (
        ready,
        st.map(|s| s.pod_ip.as_str()).unwrap_or(""),
        p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or(""),
    )
}

fn node_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn node_sched_view(n: &Node) -> (bool, bool, &HashMap<String, String>) {
    let unsched = n.spec.as_ref().is_some_and(|s| s.unschedulable);
    (
        node_ready(n),
        unsched,
        &n.metadata
            .as_ref()
            .expect("stored objects have metadata")
            .labels,
    )
}

/// Keeps allocations and controller work lists in step with every change.
pub fn on_change(
    st: &mut State,
    cfg: &Config,
    kind: Kind,
    prev: Option<&Object>,
    new: Option<&Object>,
) {
    match kind {
        Kind::Node => {
            if let Some(Object::Node(n)) = prev {
                if let Some(i) = n.spec.as_ref().and_then(|s| subnet_index(cfg, &s.pod_cidr)) {
                    if st.subnets.get(&i).map(|x| x.as_str())
                        == Some(n.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""))
                    {
                        st.subnets.remove(&i);
                    }
                }
            }
            if let Some(Object::Node(n)) = new {
                if let Some(i) = n.spec.as_ref().and_then(|s| subnet_index(cfg, &s.pod_cidr)) {
                    st.subnets.insert(
                        i,
                        n.metadata
                            .as_ref()
                            .map(|m| m.name.clone())
                            .unwrap_or_default(),
                    );
                }
            }
            let before = prev.and_then(Object::as_node).map(node_sched_view);
            let after = new.and_then(Object::as_node).map(node_sched_view);
            if before != after {
                st.nodes_changed = true;
            }
        }
        Kind::Service => {
            let key = prev.or(new).map(Object::key).unwrap_or_default();
            if let Some(Object::Service(s)) = prev {
                if let Some(ip) = s
                    .spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.parse::<Ipv4Addr>().ok())
                {
                    if st.cluster_ips.get(&ip) == Some(&key) {
                        st.cluster_ips.remove(&ip);
                    }
                }
            }
            if let Some(Object::Service(s)) = new {
                if let Some(ip) = s
                    .spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.parse::<Ipv4Addr>().ok())
                {
                    st.cluster_ips.insert(ip, key.clone());
                }
            }
            st.ep_dirty.insert(key);
        }
        Kind::Pod => {
            let p0 = prev.and_then(Object::as_pod);
            let p1 = new.and_then(Object::as_pod);
            if let Some(node) = p0.and_then(pod_counts) {
                if let Some(c) = st.pods_per_node.get_mut(node) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        st.pods_per_node.remove(node);
                    }
                }
            }
            if let Some(node) = p1.and_then(pod_counts) {
                *st.pods_per_node.entry(node.to_string()).or_default() += 1;
            }
            if let Some(p) = p1 {
                if pod_needs_scheduling(p) {
                    st.sched_dirty
                        .insert(new.map(Object::key).unwrap_or_default());
                }
            }
            // Endpoints: only when something they depend on changed.
            let v0 = p0.map(|p| (pod_ep_view(p), &p.metadata.as_ref().expect("meta").labels));
            let v1 = p1.map(|p| (pod_ep_view(p), &p.metadata.as_ref().expect("meta").labels));
            if v0 != v1 {
                let ns = prev
                    .or(new)
                    .map(|o| o.meta().namespace.clone())
                    .unwrap_or_default();
                let range = st.objects[Kind::Service.idx()].range((ns.clone(), String::new())..);
                for (k, svc) in range {
                    if k.0 != ns {
                        break;
                    }
                    let Some(sel) = svc
                        .as_service()
                        .and_then(|s| s.spec.as_ref())
                        .map(|s| &s.selector)
                    else {
                        continue;
                    };
                    if sel.is_empty() {
                        continue;
                    }
                    let hit = |l: Option<&HashMap<String, String>>| {
                        l.is_some_and(|l| map_matches(sel, l))
                    };
                    if hit(v0.as_ref().map(|v| v.1)) || hit(v1.as_ref().map(|v| v.1)) {
                        st.ep_dirty.insert(k.clone());
                    }
                }
            }
        }
        Kind::Endpoints => {}
    }
}

// ---------- allocation ----------

/// First free node subnet (index 1..=N-2, e.g. 10.0.1.0/24 … 10.0.254.0/24).
pub fn allocate_subnet(st: &State, cfg: &Config) -> Result<String, ApiError> {
    let bits = (cfg.node_subnet_prefix - cfg.cluster_cidr.prefix_len()) as u32;
    let count: u64 = 1u64 << bits;
    for i in 1..count.saturating_sub(1) as u32 {
        if !st.subnets.contains_key(&i) {
            let base =
                u32::from(cfg.cluster_cidr.network()) + (i << (32 - cfg.node_subnet_prefix as u32));
            let net = Ipv4Net::new(Ipv4Addr::from(base), cfg.node_subnet_prefix)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            return Ok(net.to_string());
        }
    }
    Err(ApiError::Exhausted(format!(
        "no free node subnet in {}",
        cfg.cluster_cidr
    )))
}

/// The requested ClusterIP if free (INVALID_ARGUMENT when taken), else the first free
/// host address of the service CIDR (10.96.0.1 first).
pub fn allocate_cluster_ip(
    st: &State,
    cfg: &Config,
    requested: &str,
    key: &ObjKey,
) -> Result<String, ApiError> {
    if !requested.is_empty() {
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            ApiError::invalid(
                "spec.cluster_ip",
                format!("{requested:?} is not a valid IPv4 address"),
            )
        })?;
        // Any address outside the pod network works (the demo's 172.17.10.10), but not
        // one the proxy's DNAT would steal from a pod or the node, nor a special one.
        if cfg.cluster_cidr.contains(&ip) {
            return Err(ApiError::invalid(
                "spec.cluster_ip",
                format!(
                    "{ip} is in the pod network {} (use the service range {})",
                    cfg.cluster_cidr, cfg.service_cidr
                ),
            ));
        }
        if ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_multicast()
            || ip.is_broadcast()
            || ip.is_link_local()
        {
            return Err(ApiError::invalid(
                "spec.cluster_ip",
                format!("{ip} is not a usable unicast address"),
            ));
        }
        if let Some(owner) = st.cluster_ips.get(&ip) {
            if owner != key {
                return Err(ApiError::invalid(
                    "spec.cluster_ip",
                    format!("{ip} is already allocated to {}/{}", owner.0, owner.1),
                ));
            }
        }
        return Ok(ip.to_string());
    }
    cfg.service_cidr
        .hosts()
        .find(|ip| !st.cluster_ips.contains_key(ip))
        .map(|ip| ip.to_string())
        .ok_or_else(|| ApiError::Exhausted(format!("no free cluster IP in {}", cfg.service_cidr)))
}

// ---------- reconcile (end of every batch) ----------

pub fn reconcile(txn: &mut Txn<'_>) {
    schedule(txn);
    let dirty = std::mem::take(&mut txn.st.ep_dirty);
    for key in dirty {
        sync_endpoints(txn, &key);
    }
}

/// Binds pending pods: Ready, schedulable nodes matching node_selector, fewest
/// non-terminated pods first (tie: name).
pub fn schedule(txn: &mut Txn<'_>) {
    let pods: Vec<ObjKey> = if txn.st.nodes_changed {
        txn.st.sched_dirty.clear();
        txn.st.objects[Kind::Pod.idx()]
            .iter()
            .filter(|(_, o)| o.as_pod().is_some_and(pod_needs_scheduling))
            .map(|(k, _)| k.clone())
            .collect()
    } else {
        std::mem::take(&mut txn.st.sched_dirty)
            .into_iter()
            .collect()
    };
    txn.st.nodes_changed = false;
    if pods.is_empty() {
        return;
    }
    let nodes: Vec<Arc<Object>> = txn.st.objects[Kind::Node.idx()].values().cloned().collect();
    for key in pods {
        let Some(obj) = txn.get(Kind::Pod, &key).cloned() else {
            continue;
        };
        let Some(pod) = obj.as_pod() else { continue };
        if !pod_needs_scheduling(pod) {
            continue;
        }
        let selector = pod
            .spec
            .as_ref()
            .map(|s| s.node_selector.clone())
            .unwrap_or_default();
        let (mut not_ready, mut unsched, mut mismatch) = (0, 0, 0);
        let mut best: Option<(usize, &str)> = None;
        for n in &nodes {
            let node = n.as_node().expect("node map holds nodes");
            let (ready, cordoned, labels) = node_sched_view(node);
            let name = n.meta().name.as_str();
            if !ready {
                not_ready += 1;
            } else if cordoned {
                unsched += 1;
            } else if !map_matches(&selector, labels) {
                mismatch += 1;
            } else {
                let count = txn.st.pods_per_node.get(name).copied().unwrap_or(0);
                if best.is_none_or(|(c, b)| (count, name) < (c, b)) {
                    best = Some((count, name));
                }
            }
        }
        let mut p = pod.clone();
        if let Some((_, node)) = best {
            tracing::debug!(pod = %key.1, node, "scheduled");
            p.spec.get_or_insert_with(Default::default).node_name = node.to_string();
            let st = p.status.get_or_insert_with(Default::default);
            if st.reason == "Unschedulable" || st.reason == "Evicted" {
                st.reason.clear();
                st.message.clear();
            }
            txn.put(Object::Pod(p));
        } else {
            let mut why = Vec::new();
            if not_ready > 0 {
                why.push(format!("{not_ready} not ready"));
            }
            if unsched > 0 {
                why.push(format!("{unsched} unschedulable"));
            }
            if mismatch > 0 {
                why.push(format!("{mismatch} did not match node selector"));
            }
            let mut message = format!("0/{} nodes are available", nodes.len());
            if !why.is_empty() {
                message = format!("{message}: {}", why.join(", "));
            }
            let st = p.status.get_or_insert_with(Default::default);
            if st.reason != "Unschedulable" || st.message != message || st.phase != "Pending" {
                st.phase = "Pending".into();
                st.reason = "Unschedulable".into();
                st.message = message;
                txn.put(Object::Pod(p));
            }
        }
    }
}

fn desired_subset(
    txn: &Txn<'_>,
    ns: &str,
    svc: &kube_lite_proto::v1::Service,
) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut addrs: Vec<(Ipv4Addr, EndpointAddress)> = Vec::new();
    for (k, o) in txn.st.objects[Kind::Pod.idx()].range((ns.to_string(), String::new())..) {
        if k.0 != ns {
            break;
        }
        let Some(p) = o.as_pod() else { continue };
        let (ready, ip, node) = pod_ep_view(p);
        if !ready || !map_matches(&spec.selector, &o.meta().labels) {
            continue;
        }
        let parsed = ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        addrs.push((
            parsed,
            EndpointAddress {
                ip: ip.to_string(),
                node_name: node.to_string(),
                pod_name: k.1.clone(),
            },
        ));
    }
    if addrs.is_empty() {
        return Vec::new();
    }
    addrs.sort_by(|a, b| (a.0, &a.1.pod_name).cmp(&(b.0, &b.1.pod_name)));
    vec![EndpointSubset {
        addresses: addrs.into_iter().map(|(_, a)| a).collect(),
        not_ready_addresses: Vec::new(),
        ports: spec
            .ports
            .iter()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: p.target_port,
                protocol: p.protocol.clone(),
            })
            .collect(),
    }]
}

/// Makes the Endpoints of Service `key` match its selected pods (write only on change).
pub fn sync_endpoints(txn: &mut Txn<'_>, key: &ObjKey) {
    let svc = txn.get(Kind::Service, key).cloned();
    let existing = txn.get(Kind::Endpoints, key).cloned();
    let Some(svc) = svc else {
        if existing.is_some() {
            txn.remove(Kind::Endpoints, key);
        }
        return;
    };
    let Some(s) = svc.as_service() else { return };
    if s.spec.as_ref().is_none_or(|sp| sp.selector.is_empty()) {
        return; // no selector: Endpoints are managed by the user
    }
    let subsets = desired_subset(txn, &key.0, s);
    match existing.as_deref() {
        Some(Object::Endpoints(e)) => {
            if e.subsets == subsets {
                return;
            }
            let mut e = e.clone();
            e.subsets = subsets;
            txn.put(Object::Endpoints(e));
        }
        _ => {
            let e = Endpoints {
                metadata: Some(ObjectMeta {
                    name: key.1.clone(),
                    namespace: key.0.clone(),
                    uid: uuid::Uuid::new_v4().to_string(),
                    labels: s
                        .metadata
                        .as_ref()
                        .map(|m| m.labels.clone())
                        .unwrap_or_default(),
                    creation_timestamp: txn.now_ms,
                    ..Default::default()
                }),
                subsets,
            };
            txn.put(Object::Endpoints(e));
        }
    }
}

// ---------- node health ----------

/// Unbinds the non-terminated pods of `node` (rescheduled elsewhere) and removes its
/// terminating pods.
pub fn evict_node_pods(txn: &mut Txn<'_>, node: &str, reason: &str, message: &str) {
    let pods: Vec<Arc<Object>> = txn.st.objects[Kind::Pod.idx()]
        .values()
        .filter(|o| o.as_pod().is_some_and(|p| pod_counts(p) == Some(node)))
        .cloned()
        .collect();
    for o in pods {
        if o.meta().deletion_timestamp != 0 {
            txn.remove(Kind::Pod, &o.key());
        } else if let Some(p) = ops::unbind(&o, reason, message) {
            tracing::info!(pod = %o.meta().name, node, reason, "evicting pod");
            txn.put(p);
        }
    }
}

/// Marks nodes whose heartbeat is older than the grace period NotReady, and evicts
/// the pods of nodes silent for longer than grace + eviction timeout.
pub fn node_health(txn: &mut Txn<'_>) {
    let grace = txn.cfg.node_grace_period.as_millis() as i64;
    let evict_after = grace + txn.cfg.pod_eviction_timeout.as_millis() as i64;
    let now = txn.now_ms;
    let nodes: Vec<Arc<Object>> = txn.st.objects[Kind::Node.idx()].values().cloned().collect();
    for o in nodes {
        let Some(n) = o.as_node() else { continue };
        let m = o.meta();
        let hb = n
            .status
            .as_ref()
            .map(|s| s.last_heartbeat_time)
            .unwrap_or(0);
        let age = now - hb.max(m.creation_timestamp);
        if age > grace {
            let already = n.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.r#type == "Ready" && c.status == "False" && c.reason == "NodeStatusUnknown"
                })
            });
            if !already {
                tracing::warn!(node = %m.name, age_ms = age, "node stopped posting status: NotReady");
                let mut n = n.clone();
                let st = n.status.get_or_insert_with(Default::default);
                st.conditions.retain(|c| c.r#type != "Ready");
                st.conditions.push(NodeCondition {
                    r#type: "Ready".into(),
                    status: "False".into(),
                    reason: "NodeStatusUnknown".into(),
                    message: "kubelet stopped posting node status".into(),
                    last_transition_time: now,
                });
                txn.put(Object::Node(n));
            }
        }
        if age > evict_after && txn.st.pods_per_node.get(&m.name).copied().unwrap_or(0) > 0 {
            let msg = format!(
                "node {} stopped posting status for more than {}s; pod evicted for rescheduling",
                m.name,
                evict_after / 1000
            );
            evict_node_pods(txn, &m.name.clone(), "Evicted", &msg);
        }
    }
}

pub async fn run_node_health(store: Arc<Store>) {
    let period =
        (store.cfg.node_grace_period / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *store.closing.borrow() {
            return;
        }
        let r = store
            .write(|txn| {
                node_health(txn);
                Ok(None)
            })
            .await;
        if let Err(ApiError::Unavailable(_)) = r {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_first_free_and_exhaustion() {
        let cfg = Config::default();
        let mut st = State::default();
        assert_eq!(allocate_subnet(&st, &cfg).unwrap(), "10.0.1.0/24");
        st.subnets.insert(1, "a".into());
        st.subnets.insert(3, "c".into());
        assert_eq!(allocate_subnet(&st, &cfg).unwrap(), "10.0.2.0/24");
        for i in 1..=254 {
            st.subnets.insert(i, format!("n{i}"));
        }
        assert_eq!(
            allocate_subnet(&st, &cfg).unwrap_err(),
            ApiError::Exhausted("no free node subnet in 10.0.0.0/16".into())
        );
        assert_eq!(subnet_index(&cfg, "10.0.7.0/24"), Some(7));
        assert_eq!(subnet_index(&cfg, "10.1.7.0/24"), None);
        assert_eq!(subnet_index(&cfg, "10.0.7.0/25"), None);
    }

    #[test]
    fn cluster_ips_first_free_explicit_and_taken() {
        let cfg = Config {
            service_cidr: "10.96.0.0/30".parse().unwrap(),
            ..Default::default()
        };
        let mut st = State::default();
        let k = |n: &str| ("default".to_string(), n.to_string());
        assert_eq!(
            allocate_cluster_ip(&st, &cfg, "", &k("a")).unwrap(),
            "10.96.0.1"
        );
        st.cluster_ips.insert("10.96.0.1".parse().unwrap(), k("a"));
        assert_eq!(
            allocate_cluster_ip(&st, &cfg, "", &k("b")).unwrap(),
            "10.96.0.2"
        );
        st.cluster_ips.insert("10.96.0.2".parse().unwrap(), k("b"));
        assert!(matches!(
            allocate_cluster_ip(&st, &cfg, "", &k("c")),
            Err(ApiError::Exhausted(_))
        ));
        assert_eq!(
            allocate_cluster_ip(&st, &cfg, "172.17.10.10", &k("c")).unwrap(),
            "172.17.10.10"
        );
        assert_eq!(
            allocate_cluster_ip(&st, &cfg, "10.96.0.1", &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.cluster_ip: 10.96.0.1 is already allocated to default/a".into()
            )
        );
        assert_eq!(
            allocate_cluster_ip(&st, &cfg, "10.0.1.5", &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.cluster_ip: 10.0.1.5 is in the pod network 10.0.0.0/16 (use the service range 10.96.0.0/30)".into()
            )
        );
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
        ] {
            assert!(
                matches!(
                    allocate_cluster_ip(&st, &cfg, bad, &k("c")),
                    Err(ApiError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }
}
