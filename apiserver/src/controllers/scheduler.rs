//! Scheduler: binds pending pods to Ready, schedulable nodes matching their
//! `node_selector`, fewest non-terminated pods first (tie: name); a pod no node fits
//! stays Pending with reason `Unschedulable` and a message that counts why.
//!
//! Work list: the pods that may need scheduling since the last batch, or every pending
//! pod after a scheduling-relevant node change (and at start).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kube_lite_core::consts::{condition, condition_status, phase, reason};
use kube_lite_core::{ObjectRef, Resource};
use kube_lite_proto::labels::map_matches;
use kube_lite_proto::v1::{Node, Pod};

use super::pods_per_node::{terminated, PodsPerNode};
use crate::resource::{Kind, Object};
use crate::store::{Change, Hook, Objects, Txn};

/// Unbound, not being deleted, not terminated.
pub fn needs_scheduling(p: &Pod) -> bool {
    let unbound = p.spec.as_ref().is_some_and(|s| s.node_name.is_empty());
    unbound && p.meta().deletion_timestamp == 0 && !terminated(p)
}

pub fn node_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == condition::READY && c.status == condition_status::TRUE)
    })
}

/// What the scheduler looks at in a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub ready: bool,
    pub unschedulable: bool,
    pub labels: &'a HashMap<String, String>,
}

impl<'a> NodeView<'a> {
    pub fn of(n: &'a Node) -> NodeView<'a> {
        NodeView {
            name: n.name(),
            ready: node_ready(n),
            unschedulable: n.spec.as_ref().is_some_and(|s| s.unschedulable),
            labels: n.labels(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    /// The message: `0/3 nodes are available: 1 not ready, 2 unschedulable`.
    Unschedulable(String),
}

/// Where a pod with `selector` goes; `pods_on(node)` counts the pods already there.
pub fn decide(
    selector: &HashMap<String, String>,
    nodes: &[NodeView<'_>],
    pods_on: impl Fn(&str) -> usize,
) -> Decision {
    let (mut not_ready, mut unsched, mut mismatch) = (0, 0, 0);
    let mut best: Option<(usize, &str)> = None;
    for n in nodes {
        if !n.ready {
            not_ready += 1;
        } else if n.unschedulable {
            unsched += 1;
        } else if !map_matches(selector, n.labels) {
            mismatch += 1;
        } else {
            let count = pods_on(n.name);
            if best.is_none_or(|(c, b)| (count, n.name) < (c, b)) {
                best = Some((count, n.name));
            }
        }
    }
    if let Some((_, node)) = best {
        return Decision::Bind(node.to_string());
    }
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
    Decision::Unschedulable(message)
}

/// The pod after `decision`, or `None` when it is already so (no write).
pub fn apply(pod: &Pod, decision: &Decision) -> Option<Pod> {
    let mut p = pod.clone();
    match decision {
        Decision::Bind(node) => {
            p.spec.get_or_insert_with(Default::default).node_name = node.clone();
            let st = p.status.get_or_insert_with(Default::default);
            if st.reason == reason::UNSCHEDULABLE || st.reason == reason::EVICTED {
                st.reason.clear();
                st.message.clear();
            }
            Some(p)
        }
        Decision::Unschedulable(message) => {
            let st = p.status.get_or_insert_with(Default::default);
            if st.reason == reason::UNSCHEDULABLE
                && st.message == *message
                && st.phase == phase::PENDING
            {
                return None;
            }
            st.phase = phase::PENDING.into();
            st.reason = reason::UNSCHEDULABLE.into();
            st.message = message.clone();
            Some(p)
        }
    }
}

pub struct Scheduler {
    pods_per_node: PodsPerNode,
    /// Pods that may need scheduling.
    dirty: BTreeSet<ObjectRef>,
    /// A scheduling-relevant node change happened: retry every pending pod.
    nodes_changed: bool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            pods_per_node: PodsPerNode::default(),
            dirty: BTreeSet::new(),
            // At start, every pending pod is looked at once.
            nodes_changed: true,
        }
    }
}

impl Hook for Scheduler {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        match change.kind {
            Kind::Pod => {
                let new = change.new.and_then(Object::as_pod);
                self.pods_per_node
                    .observe(change.prev.and_then(Object::as_pod), new);
                if let Some(p) = new.filter(|p| needs_scheduling(p)) {
                    self.dirty.insert(p.object_ref());
                }
            }
            Kind::Node => {
                fn view(o: Option<&Object>) -> Option<NodeView<'_>> {
                    o.and_then(Object::as_node).map(NodeView::of)
                }
                if view(change.prev) != view(change.new) {
                    self.nodes_changed = true;
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, txn: &mut Txn<'_>) {
        let pods: Vec<ObjectRef> = if self.nodes_changed {
            self.dirty.clear();
            txn.objects()
                .of(Kind::Pod)
                .iter()
                .filter(|(_, o)| o.as_pod().is_some_and(needs_scheduling))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        self.nodes_changed = false;
        if pods.is_empty() {
            return;
        }
        let nodes: Vec<Arc<Object>> = txn.objects().of(Kind::Node).values().cloned().collect();
        let views: Vec<NodeView<'_>> = nodes
            .iter()
            .filter_map(|n| n.as_node())
            .map(NodeView::of)
            .collect();
        // Pods bound in this pass (the index sees them once this pass returns).
        let mut placed: HashMap<String, usize> = HashMap::new();
        for key in pods {
            let Some(obj) = txn.get(Kind::Pod, &key).cloned() else {
                continue;
            };
            let Some(pod) = obj.as_pod().filter(|p| needs_scheduling(p)) else {
                continue;
            };
            let selector = pod.spec.as_ref().map(|s| &s.node_selector);
            let empty = HashMap::new();
            let decision = decide(selector.unwrap_or(&empty), &views, |n| {
                self.pods_per_node.get(n) + placed.get(n).copied().unwrap_or(0)
            });
            if let Decision::Bind(node) = &decision {
                tracing::debug!(pod = %key.name, node, "scheduled");
                *placed.entry(node.clone()).or_default() += 1;
            }
            if let Some(p) = apply(pod, &decision) {
                txn.put(Object::Pod(p));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus};

    fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn view<'a>(
        name: &'a str,
        ready: bool,
        unschedulable: bool,
        labels: &'a HashMap<String, String>,
    ) -> NodeView<'a> {
        NodeView {
            name,
            ready,
            unschedulable,
            labels,
        }
    }

    #[test]
    fn fewest_pods_then_name() {
        let l = HashMap::new();
        let nodes = [view("b", true, false, &l), view("a", true, false, &l)];
        assert_eq!(decide(&l, &nodes, |_| 0), Decision::Bind("a".into()));
        assert_eq!(
            decide(&l, &nodes, |n| if n == "a" { 2 } else { 1 }),
            Decision::Bind("b".into())
        );
    }

    #[test]
    fn unschedulable_message_counts_reasons() {
        let none = HashMap::new();
        let gpu = labels(&[("gpu", "yes")]);
        let nodes = [
            view("a", false, false, &gpu),
            view("b", true, true, &gpu),
            view("c", true, false, &none),
            view("d", true, false, &none),
        ];
        assert_eq!(
            decide(&gpu, &nodes, |_| 0),
            Decision::Unschedulable(
                "0/4 nodes are available: 1 not ready, 1 unschedulable, 2 did not match node selector"
                    .into()
            )
        );
        assert_eq!(
            decide(&none, &[], |_| 0),
            Decision::Unschedulable("0/0 nodes are available".into())
        );
        let with_gpu = [view("e", true, false, &gpu), nodes[2]];
        assert_eq!(decide(&gpu, &with_gpu, |_| 0), Decision::Bind("e".into()));
    }

    fn pending(reason: &str, message: &str) -> Pod {
        Pod {
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: "Pending".into(),
                reason: reason.into(),
                message: message.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn apply_binds_and_clears_scheduler_reasons() {
        let bound = apply(&pending("Evicted", "gone"), &Decision::Bind("n1".into())).unwrap();
        assert_eq!(bound.spec.as_ref().unwrap().node_name, "n1");
        let st = bound.status.unwrap();
        assert_eq!((st.reason.as_str(), st.message.as_str()), ("", ""));
        let other = apply(&pending("Custom", "kept"), &Decision::Bind("n1".into())).unwrap();
        assert_eq!(other.status.unwrap().reason, "Custom");
    }

    #[test]
    fn apply_unschedulable_writes_only_on_change() {
        let d = Decision::Unschedulable("0/1 nodes are available: 1 not ready".into());
        let p = apply(&pending("", ""), &d).unwrap();
        assert_eq!(p.status.as_ref().unwrap().reason, "Unschedulable");
        assert_eq!(apply(&p, &d), None, "same reason and message: no write");
        let d2 = Decision::Unschedulable("0/2 nodes are available".into());
        assert!(apply(&p, &d2).is_some());
    }

    #[test]
    fn which_pods_and_nodes_count() {
        let mut p = pending("", "");
        assert!(needs_scheduling(&p));
        p.status.as_mut().unwrap().phase = "Failed".into();
        assert!(!needs_scheduling(&p));
        let mut p = pending("", "");
        p.meta_mut().deletion_timestamp = 5;
        assert!(!needs_scheduling(&p));
        let mut p = pending("", "");
        p.spec.as_mut().unwrap().node_name = "n1".into();
        assert!(!needs_scheduling(&p));

        let mut n = Node {
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(node_ready(&n));
        n.spec.as_mut().unwrap().unschedulable = true;
        let v = NodeView::of(&n);
        assert!(v.ready && v.unschedulable);
        n.status.as_mut().unwrap().conditions[0].status = "False".into();
        assert!(!node_ready(&n));
    }
}
