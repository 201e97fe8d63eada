//! Node health: on every tick, a node whose last heartbeat (or creation) is older than
//! the grace period becomes `Ready=False` (`NodeStatusUnknown`); once it has been
//! silent for the grace period plus the eviction timeout, its pods are evicted: unbound
//! and reset to Pending (`Evicted`) so the scheduler places them again, and those
//! already terminating are removed. A deleted node's pods go the same way
//! (`NodeDeleted`), in the batch of the delete.

use std::sync::Arc;

use kube_lite_core::consts::{condition, condition_status, phase, reason};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Node, NodeCondition, Pod, PodStatus};

use super::pods_per_node::{occupied_node, PodsPerNode};
use crate::config::Config;
use crate::resource::{Kind, Object};
use crate::store::{Change, Hook, Objects, Txn};

/// What a tick decides for one node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// How long the node has been silent.
    pub silent_ms: i64,
    /// The node marked NotReady, when it is silent and not yet marked.
    pub mark_not_ready: Option<Node>,
    /// Its pods must be evicted.
    pub evict: bool,
}

/// Judges `node` at `now` (all in ms): silent longer than `grace` → NotReady; longer
/// than `evict_after` with pods on it → evict.
pub fn assess(node: &Node, now: i64, grace: i64, evict_after: i64, pods: usize) -> Verdict {
    let hb = node
        .status
        .as_ref()
        .map(|s| s.last_heartbeat_time)
        .unwrap_or(0);
    let age = now - hb.max(node.meta().creation_timestamp);
    let mut v = Verdict {
        silent_ms: age,
        evict: age > evict_after && pods > 0,
        mark_not_ready: None,
    };
    if age > grace {
        let already = node.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.r#type == condition::READY
                    && c.status == condition_status::FALSE
                    && c.reason == reason::NODE_STATUS_UNKNOWN
            })
        });
        if !already {
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
            v.mark_not_ready = Some(n);
        }
    }
    v
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
    grace_ms: i64,
    evict_after_ms: i64,
    pods_per_node: PodsPerNode,
    /// Nodes deleted in this batch: their pods are evicted at its end.
    deleted: Vec<String>,
}

impl NodeHealth {
    pub fn new(cfg: &Config) -> NodeHealth {
        let grace_ms = cfg.node_grace_period.as_millis() as i64;
        NodeHealth {
            grace_ms,
            evict_after_ms: grace_ms + cfg.pod_eviction_timeout.as_millis() as i64,
            pods_per_node: PodsPerNode::default(),
            deleted: Vec::new(),
        }
    }
}

impl Hook for NodeHealth {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        match (change.kind, change.prev, change.new) {
            (Kind::Pod, prev, new) => self
                .pods_per_node
                .observe(prev.and_then(Object::as_pod), new.and_then(Object::as_pod)),
            (Kind::Node, Some(n), None) => self.deleted.push(n.meta().name.clone()),
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
        let now = txn.now_ms;
        let nodes: Vec<Arc<Object>> = txn.objects().of(Kind::Node).values().cloned().collect();
        for o in nodes {
            let Some(n) = o.as_node() else { continue };
            let pods = self.pods_per_node.get(n.name());
            let v = assess(n, now, self.grace_ms, self.evict_after_ms, pods);
            if let Some(n) = v.mark_not_ready {
                tracing::warn!(node = %n.name(), age_ms = v.silent_ms, "node stopped posting status: NotReady");
                txn.put(Object::Node(n));
            }
            if v.evict {
                let msg = format!(
                    "node {} stopped posting status for more than {}s; pod evicted for rescheduling",
                    n.name(),
                    self.evict_after_ms / 1000
                );
                evict_node_pods(txn, n.name(), reason::EVICTED, &msg);
            }
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

    fn nothing(silent_ms: i64) -> Verdict {
        Verdict {
            silent_ms,
            ..Default::default()
        }
    }

    #[test]
    fn fresh_node_is_left_alone() {
        let n = node(0, 1_000, ("True", "AgentReady"));
        assert_eq!(assess(&n, 1_500, 1_000, 3_000, 5), nothing(500));
        // A node that never sent a heartbeat counts from its creation.
        let n = node(10_000, 0, ("True", ""));
        assert_eq!(assess(&n, 10_500, 1_000, 3_000, 5), nothing(500));
    }

    #[test]
    fn silent_node_goes_not_ready_once() {
        let n = node(0, 1_000, ("True", "AgentReady"));
        let v = assess(&n, 2_500, 1_000, 3_000, 5);
        assert!(!v.evict);
        let marked = v.mark_not_ready.expect("marked NotReady");
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
        assert_eq!(assess(&marked, 2_600, 1_000, 3_000, 5), nothing(1_600));
    }

    #[test]
    fn long_silence_evicts_only_with_pods() {
        let n = node(0, 1_000, ("False", "NodeStatusUnknown"));
        assert!(assess(&n, 4_500, 1_000, 3_000, 1).evict);
        assert!(!assess(&n, 4_500, 1_000, 3_000, 0).evict);
        assert!(!assess(&n, 3_900, 1_000, 3_000, 1).evict);
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
