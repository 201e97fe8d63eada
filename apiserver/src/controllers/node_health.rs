//! Node health: the thin side of [`super::node_lifecycle`]. Every change of a node's
//! heartbeat time (and every node at start) is a sign of life, timed with the
//! controller's own monotonic clock; on every tick the lifecycle machine says which
//! nodes are silent past the grace period (marked `Ready=False`, `NodeStatusUnknown`)
//! and which are evicted now (past grace + eviction timeout, at the eviction rate, and
//! not while most nodes are silent): their pods are unbound and reset to Pending
//! (`Evicted`) so the scheduler places them again, and those already terminating are
//! removed. A deleted node's pods go the same way (`NodeDeleted`), in the batch of the
//! delete.

use std::sync::Arc;
use std::time::Instant;

use kube_lite_core::consts::lease::NODE_LEASE_NAMESPACE;
use kube_lite_core::consts::{condition, condition_status, phase, reason};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Lease, Node, NodeCondition, Pod, PodStatus};

use super::node_lifecycle::{Lifecycle, Mode, Params};
use super::pods_per_node::{occupied_node, PodsPerNode};
use crate::config::Config;
use crate::resource::{Kind, Object};
use crate::store::{Change, Hook, Objects, Txn};

/// `node` marked NotReady (`NodeStatusUnknown`) at `now`, or `None` when it already is.
pub fn mark_not_ready(node: &Node, now: i64) -> Option<Node> {
    let already = node.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.r#type == condition::READY
                && c.status == condition_status::FALSE
                && c.reason == reason::NODE_STATUS_UNKNOWN
        })
    });
    if already {
        return None;
    }
    let mut n = node.clone();
    let st = n.status.get_or_insert_with(Default::default);
    st.conditions.retain(|c| c.r#type != condition::READY);
    st.conditions.push(NodeCondition {
        r#type: condition::READY.into(),
        status: condition_status::FALSE.into(),
        reason: reason::NODE_STATUS_UNKNOWN.into(),
        message: "kubelet stopped posting node status".into(),
        last_transition_time: now,
    });
    Some(n)
}

/// The node whose heartbeat a Lease change is, when it is one: a Lease in
/// [`NODE_LEASE_NAMESPACE`] created or renewed (new `spec.renew_time`).
pub fn renewed_node<'a>(prev: Option<&Lease>, new: &'a Lease) -> Option<&'a str> {
    if new.meta().namespace != NODE_LEASE_NAMESPACE {
        return None;
    }
    let renew = |l: &Lease| l.spec.as_ref().map(|s| s.renew_time);
    prev.is_none_or(|p| renew(p) != renew(new))
        .then(|| new.name())
}

/// Whether a node change is a sign of life: a create, or a new heartbeat time.
pub fn is_sign_of_life(prev: Option<&Node>, new: &Node) -> bool {
    let hb = |n: &Node| n.status.as_ref().map(|s| s.last_heartbeat_time);
    prev.is_none_or(|p| hb(p) != hb(new))
}

/// Resets a pod to unbound Pending (eviction): the scheduler places it again.
pub fn unbind(p: &Pod, reason: &str, message: &str) -> Pod {
    let mut p = p.clone();
    if let Some(s) = p.spec.as_mut() {
        s.node_name.clear();
    }
    p.status = Some(PodStatus {
        phase: phase::PENDING.into(),
        reason: reason.into(),
        message: message.into(),
        ..Default::default()
    });
    p
}

/// Unbinds the pods occupying `node` (rescheduled elsewhere) and removes its
/// terminating pods.
fn evict_node_pods(txn: &mut Txn<'_>, node: &str, reason: &str, message: &str) {
    let pods: Vec<Arc<Object>> = txn
        .objects()
        .of(Kind::Pod)
        .values()
        .filter(|o| o.as_pod().is_some_and(|p| occupied_node(p) == Some(node)))
        .cloned()
        .collect();
    for o in pods {
        let Some(p) = o.as_pod() else { continue };
        if p.meta().deletion_timestamp != 0 {
            txn.remove(Kind::Pod, &o.key());
        } else {
            tracing::info!(pod = %p.name(), node, reason, "evicting pod");
            txn.put(Object::Pod(unbind(p, reason, message)));
        }
    }
}

pub struct NodeHealth {
    evict_after_ms: i64,
    lifecycle: Lifecycle,
    /// The controller's clock (monotonic: wall-clock jumps are no silence).
    started: Instant,
    pods_per_node: PodsPerNode,
    /// Nodes deleted in this batch: their pods are evicted at its end.
    deleted: Vec<String>,
    mode: Mode,
}

impl NodeHealth {
    pub fn new(cfg: &Config) -> NodeHealth {
        let grace_ms = cfg.node_grace_period.as_millis() as i64;
        let evict_after_ms = grace_ms + cfg.pod_eviction_timeout.as_millis() as i64;
        NodeHealth {
            evict_after_ms,
            lifecycle: Lifecycle::new(Params {
                grace_ms,
                evict_after_ms,
                unhealthy_threshold: cfg.unhealthy_zone_threshold,
                large_cluster: cfg.large_cluster_size_threshold,
                primary_rate: cfg.node_eviction_rate,
                secondary_rate: cfg.secondary_node_eviction_rate,
            }),
            started: Instant::now(),
            pods_per_node: PodsPerNode::default(),
            deleted: Vec::new(),
            mode: Mode::Normal,
        }
    }

    fn clock(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// A sign of life from `node` (also used for Lease renewals).
    pub fn heard(&mut self, node: &str) {
        let now = self.clock();
        self.lifecycle.heard(node, now);
    }
}

impl Hook for NodeHealth {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        match (change.kind, change.prev, change.new) {
            (Kind::Pod, prev, new) => self
                .pods_per_node
                .observe(prev.and_then(Object::as_pod), new.and_then(Object::as_pod)),
            (Kind::Node, Some(n), None) => {
                self.lifecycle.forget(n.meta().name.as_str());
                self.deleted.push(n.meta().name.clone());
            }
            (Kind::Node, prev, Some(new)) => {
                if let Some(n) = new.as_node() {
                    if is_sign_of_life(prev.and_then(Object::as_node), n) {
                        self.heard(n.name());
                    }
                }
            }
            (Kind::Lease, prev, Some(new)) => {
                if let Some(node) = new
                    .as_lease()
                    .and_then(|l| renewed_node(prev.and_then(Object::as_lease), l))
                {
                    let now = self.clock();
                    self.lifecycle.heard_known(node, now);
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, txn: &mut Txn<'_>) {
        for node in std::mem::take(&mut self.deleted) {
            let message = format!("node {node} was deleted");
            evict_node_pods(txn, &node, reason::NODE_DELETED, &message);
        }
    }

    fn tick(&mut self, txn: &mut Txn<'_>) {
        let now = self.clock();
        let ppn = &self.pods_per_node;
        let step = self.lifecycle.step(now, |n| ppn.get(n) > 0);
        if step.mode != self.mode {
            tracing::warn!(mode = ?step.mode, silent = step.not_ready.len(), held = step.held, "node health: cluster state changed");
            self.mode = step.mode;
        }
        for name in &step.not_ready {
            let key = kube_lite_core::ObjectRef::new("", name.clone());
            let Some(n) = txn.get(Kind::Node, &key).and_then(|o| o.as_node().cloned()) else {
                continue;
            };
            if let Some(n) = mark_not_ready(&n, txn.now_ms) {
                let silent_ms = self.lifecycle.silent_ms(name, now).unwrap_or(0);
                tracing::warn!(node = %name, silent_ms, "node stopped posting status: NotReady");
                txn.put(Object::Node(n));
            }
        }
        for name in &step.evict {
            let msg = format!(
                "node {name} stopped posting status for more than {}s; pod evicted for rescheduling",
                self.evict_after_ms / 1000
            );
            evict_node_pods(txn, name, reason::EVICTED, &msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{NodeStatus, ObjectMeta, PodSpec};

    fn node(created: i64, heartbeat: i64, ready: (&str, &str)) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                creation_timestamp: created,
                ..Default::default()
            }),
            spec: None,
            status: Some(NodeStatus {
                last_heartbeat_time: heartbeat,
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: ready.0.into(),
                    reason: ready.1.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn silent_node_goes_not_ready_once() {
        let n = node(0, 1_000, ("True", "AgentReady"));
        let marked = mark_not_ready(&n, 2_500).expect("marked NotReady");
        let c = &marked.status.as_ref().unwrap().conditions;
        assert_eq!(c.len(), 1);
        assert_eq!(
            (
                c[0].status.as_str(),
                c[0].reason.as_str(),
                c[0].last_transition_time
            ),
            ("False", "NodeStatusUnknown", 2_500)
        );
        assert_eq!(c[0].message, "kubelet stopped posting node status");
        assert_eq!(mark_not_ready(&marked, 2_600), None);
        // The agent's own NotReady is replaced by the controller's.
        assert!(mark_not_ready(&node(0, 1, ("False", "AgentNotReady")), 3).is_some());
    }

    #[test]
    fn only_new_heartbeats_are_signs_of_life() {
        let n = node(0, 1_000, ("True", "AgentReady"));
        assert!(
            is_sign_of_life(None, &n),
            "a create (or a node found at start)"
        );
        assert!(is_sign_of_life(Some(&n), &node(0, 2_000, ("True", ""))));
        // The controller's own NotReady mark keeps the heartbeat time: no sign of life.
        let marked = mark_not_ready(&n, 5_000).unwrap();
        assert!(!is_sign_of_life(Some(&n), &marked));
    }

    #[test]
    fn node_lease_renewals_are_signs_of_life() {
        use kube_lite_proto::v1::LeaseSpec;
        let lease = |ns: &str, renew: i64| Lease {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                namespace: ns.into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                renew_time: renew,
                ..Default::default()
            }),
        };
        let l1 = lease("kube-node-lease", 1);
        assert_eq!(renewed_node(None, &l1), Some("n1"));
        assert_eq!(
            renewed_node(Some(&l1), &lease("kube-node-lease", 2)),
            Some("n1")
        );
        assert_eq!(renewed_node(Some(&l1), &l1.clone()), None, "not renewed");
        assert_eq!(
            renewed_node(None, &lease("default", 1)),
            None,
            "not a node lease"
        );
    }

    #[test]
    fn unbind_resets_to_pending() {
        let p = Pod {
            spec: Some(PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                pod_ip: "10.0.1.5".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = unbind(&p, "Evicted", "gone");
        assert_eq!(u.spec.unwrap().node_name, "");
        assert_eq!(
            u.status,
            Some(PodStatus {
                phase: "Pending".into(),
                reason: "Evicted".into(),
                message: "gone".into(),
                ..Default::default()
            })
        );
    }
}
