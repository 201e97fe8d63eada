//! Scheduler: binds pending pods to Ready, schedulable nodes matching their
//! `node_selector` whose allocatable cpu and memory still hold the pod's requests
//! (the sum of the requests of the non-terminated pods bound there, plus this one),
//! fewest non-terminated pods first (tie: name); a pod no node fits stays Pending with
//! reason `Unschedulable` and a message that counts why, as Kubernetes words it:
//! `0/2 nodes are available: 2 Insufficient memory.`
//!
//! Work list: the pods that may need scheduling since the last batch, or every pending
//! pod after a scheduling-relevant node change (and at start).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kube_lite_core::consts::{condition, condition_status, phase, reason};
use kube_lite_core::{ObjectRef, Resource};
use kube_lite_proto::labels::map_matches;
use kube_lite_proto::v1::{Node, Pod};

use super::pods_per_node::{terminated, PodsPerNode, RequestsPerNode};
use crate::resource::{Kind, Object};
use crate::store::{Change, Hook, Objects, Txn};
use kube_lite_core::quantity::{node_allocatable, pod_requests, Res};

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
    /// What pods may request in all (unlimited where the node reports nothing).
    pub allocatable: Res,
}

impl<'a> NodeView<'a> {
    pub fn of(n: &'a Node) -> NodeView<'a> {
        NodeView {
            name: n.name(),
            ready: node_ready(n),
            unschedulable: n.spec.as_ref().is_some_and(|s| s.unschedulable),
            labels: n.labels(),
            allocatable: n.status.as_ref().map_or(
                Res {
                    cpu_millis: i64::MAX,
                    memory_bytes: i64::MAX,
                },
                |s| node_allocatable(&s.allocatable, &s.capacity),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    /// The message: `0/3 nodes are available: 1 not ready, 2 unschedulable`.
    Unschedulable(String),
}

/// Where a pod with `selector` and no resource requests goes; `pods_on(node)` counts
/// the pods already there.
pub fn decide(
    selector: &HashMap<String, String>,
    nodes: &[NodeView<'_>],
    pods_on: impl Fn(&str) -> usize,
) -> Decision {
    decide_fit(selector, Res::default(), nodes, pods_on, |_| Res::default())
}

/// Where a pod with `selector` requesting `req` goes; `pods_on(node)` counts the pods
/// already there, `used(node)` sums their requests.
pub fn decide_fit(
    selector: &HashMap<String, String>,
    req: Res,
    nodes: &[NodeView<'_>],
    pods_on: impl Fn(&str) -> usize,
    used: impl Fn(&str) -> Res,
) -> Decision {
    let (mut not_ready, mut unsched, mut mismatch) = (0, 0, 0);
    let (mut no_cpu, mut no_mem) = (0, 0);
    let mut best: Option<(usize, &str)> = None;
    for n in nodes {
        let u = used(n.name);
        let cpu_short = req.cpu_millis > 0
            && u.cpu_millis.saturating_add(req.cpu_millis) > n.allocatable.cpu_millis;
        let mem_short = req.memory_bytes > 0
            && u.memory_bytes.saturating_add(req.memory_bytes) > n.allocatable.memory_bytes;
        if !n.ready {
            not_ready += 1;
        } else if n.unschedulable {
            unsched += 1;
        } else if !map_matches(selector, n.labels) {
            mismatch += 1;
        } else if cpu_short || mem_short {
            no_cpu += cpu_short as usize;
            no_mem += mem_short as usize;
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
    if no_cpu > 0 {
        why.push(format!("{no_cpu} Insufficient cpu"));
    }
    if no_mem > 0 {
        why.push(format!("{no_mem} Insufficient memory"));
    }
    let mut message = format!("0/{} nodes are available", nodes.len());
    if !why.is_empty() {
        message = format!("{message}: {}", why.join(", "));
    }
    // Kubernetes ends the message with a full stop.
    Decision::Unschedulable(format!("{message}."))
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
    requests_per_node: RequestsPerNode,
    /// Pods that may need scheduling.
    dirty: BTreeSet<ObjectRef>,
    /// A scheduling-relevant node change happened: retry every pending pod.
    nodes_changed: bool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            pods_per_node: PodsPerNode::default(),
            requests_per_node: RequestsPerNode::default(),
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
                self.requests_per_node
                    .observe(change.prev.and_then(Object::as_pod), new);
                // A pod that stops occupying a node frees its requests: pending pods
                // that did not fit are looked at again.
                let held = |o: Option<&Object>| {
                    o.and_then(Object::as_pod)
                        .and_then(super::pods_per_node::occupied_node)
                        .is_some()
                };
                if held(change.prev) && !held(change.new) {
                    self.nodes_changed = true;
                }
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
        let mut placed: HashMap<String, (usize, Res)> = HashMap::new();
        for key in pods {
            let Some(obj) = txn.get(Kind::Pod, &key).cloned() else {
                continue;
            };
            let Some(pod) = obj.as_pod().filter(|p| needs_scheduling(p)) else {
                continue;
            };
            let selector = pod.spec.as_ref().map(|s| &s.node_selector);
            let empty = HashMap::new();
            let req = pod.spec.as_ref().map(pod_requests).unwrap_or_default();
            let decision = decide_fit(
                selector.unwrap_or(&empty),
                req,
                &views,
                |n| self.pods_per_node.get(n) + placed.get(n).map_or(0, |p| p.0),
                |n| {
                    self.requests_per_node
                        .get(n)
                        .plus(placed.get(n).map_or(Res::default(), |p| p.1))
                },
            );
            if let Decision::Bind(node) = &decision {
                tracing::debug!(pod = %key.name, node, "scheduled");
                let e = placed.entry(node.clone()).or_default();
                e.0 += 1;
                e.1 = e.1.plus(req);
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
            allocatable: Res {
                cpu_millis: i64::MAX,
                memory_bytes: i64::MAX,
            },
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
                "0/4 nodes are available: 1 not ready, 1 unschedulable, 2 did not match node selector."
                    .into()
            )
        );
        assert_eq!(
            decide(&none, &[], |_| 0),
            Decision::Unschedulable("0/0 nodes are available.".into())
        );
        let with_gpu = [view("e", true, false, &gpu), nodes[2]];
        assert_eq!(decide(&gpu, &with_gpu, |_| 0), Decision::Bind("e".into()));
    }

    #[test]
    fn requests_must_fit_allocatable_and_the_message_names_the_resource() {
        let l = HashMap::new();
        let node = |name: &'static str, cpu: i64, mem: i64| NodeView {
            allocatable: Res {
                cpu_millis: cpu,
                memory_bytes: mem,
            },
            ..view(name, true, false, &l)
        };
        let nodes = [node("a", 2000, 1 << 30), node("b", 2000, 1 << 30)];
        let big = Res {
            cpu_millis: 100,
            memory_bytes: 2 << 30,
        };
        assert_eq!(
            decide_fit(&l, big, &nodes, |_| 0, |_| Res::default()),
            Decision::Unschedulable("0/2 nodes are available: 2 Insufficient memory.".into())
        );
        // What is used counts: a has 1.5 cpus taken, so 1 cpu only fits b (more pods).
        let one = Res {
            cpu_millis: 1000,
            memory_bytes: 0,
        };
        let used = |n: &str| Res {
            cpu_millis: if n == "a" { 1500 } else { 0 },
            memory_bytes: 0,
        };
        assert_eq!(
            decide_fit(&l, one, &nodes, |n| if n == "b" { 5 } else { 0 }, used),
            Decision::Bind("b".into())
        );
        let both = Res {
            cpu_millis: 3000,
            memory_bytes: 2 << 30,
        };
        assert_eq!(
            decide_fit(
                &l,
                both,
                &[nodes[0], view("c", false, false, &l)],
                |_| 0,
                |_| Res::default()
            ),
            Decision::Unschedulable(
                "0/2 nodes are available: 1 not ready, 1 Insufficient cpu, 1 Insufficient memory."
                    .into()
            )
        );
        // Exactly full fits.
        let full = Res {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
        };
        assert_eq!(
            decide_fit(&l, full, &nodes[..1], |_| 0, |_| Res::default()),
            Decision::Bind("a".into())
        );
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
