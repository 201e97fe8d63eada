//! An index the scheduler (spreading) and node health (eviction) both keep: the
//! non-terminated pods bound to each node.

use std::collections::HashMap;

use kube_lite_core::consts::phase;
use kube_lite_core::quantity::{pod_requests, Res};
use kube_lite_proto::v1::Pod;

/// `Succeeded` or `Failed`: the pod will not run again.
pub fn terminated(p: &Pod) -> bool {
    let ph = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    ph == phase::SUCCEEDED || ph == phase::FAILED
}

/// The node a pod occupies: bound and not terminated.
pub fn occupied_node(p: &Pod) -> Option<&str> {
    let node = p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
    (!node.is_empty() && !terminated(p)).then_some(node)
}

/// Node name → number of pods occupying it ([`occupied_node`]).
#[derive(Debug, Default)]
pub struct PodsPerNode(HashMap<String, usize>);

impl PodsPerNode {
    /// Follows one pod change (`None`: no pod before / after).
    pub fn observe(&mut self, prev: Option<&Pod>, new: Option<&Pod>) {
        if let Some(node) = prev.and_then(occupied_node) {
            if let Some(c) = self.0.get_mut(node) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.0.remove(node);
                }
            }
        }
        if let Some(node) = new.and_then(occupied_node) {
            *self.0.entry(node.to_string()).or_default() += 1;
        }
    }

    pub fn get(&self, node: &str) -> usize {
        self.0.get(node).copied().unwrap_or(0)
    }
}

/// Node name → the summed resource requests of the pods occupying it.
#[derive(Debug, Default)]
pub struct RequestsPerNode(HashMap<String, Res>);

impl RequestsPerNode {
    /// Follows one pod change (`None`: no pod before / after).
    pub fn observe(&mut self, prev: Option<&Pod>, new: Option<&Pod>) {
        let req = |p: &Pod| p.spec.as_ref().map(pod_requests).unwrap_or_default();
        if let Some((node, p)) = prev.and_then(|p| occupied_node(p).map(|n| (n, p))) {
            let r = req(p);
            if let Some(c) = self.0.get_mut(node) {
                c.cpu_millis = c.cpu_millis.saturating_sub(r.cpu_millis);
                c.memory_bytes = c.memory_bytes.saturating_sub(r.memory_bytes);
                if *c == Res::default() {
                    self.0.remove(node);
                }
            }
        }
        if let Some((node, p)) = new.and_then(|p| occupied_node(p).map(|n| (n, p))) {
            let e = self.0.entry(node.to_string()).or_default();
            *e = e.plus(req(p));
        }
    }

    pub fn get(&self, node: &str) -> Res {
        self.0.get(node).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{PodSpec, PodStatus};

    fn pod(node: &str, ph: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: ph.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_bound_pods_until_they_terminate() {
        let mut idx = PodsPerNode::default();
        let pending = pod("", "Pending");
        let bound = pod("n1", "Pending");
        let running = pod("n1", "Running");
        let done = pod("n1", "Succeeded");
        idx.observe(None, Some(&pending));
        assert_eq!(idx.get(""), 0);
        idx.observe(Some(&pending), Some(&bound));
        idx.observe(None, Some(&pod("n1", "Running")));
        assert_eq!(idx.get("n1"), 2);
        idx.observe(Some(&bound), Some(&running));
        assert_eq!(idx.get("n1"), 2);
        idx.observe(Some(&running), Some(&done));
        assert_eq!(idx.get("n1"), 1);
        idx.observe(Some(&done), None);
        assert_eq!(idx.get("n1"), 1);
        idx.observe(Some(&running), None);
        assert_eq!(idx.get("n1"), 0);
        assert!(idx.0.is_empty(), "empty entries are dropped");
        assert_eq!(occupied_node(&pod("n2", "Failed")), None);
        assert_eq!(occupied_node(&pod("n2", "")), Some("n2"));
    }
}
