//! Secondary indexes of [`super::Objects`], kept in step by its `set`/`unset` (so the
//! writer's state and the committed read view each have their own, always exact):
//! pods by `spec.node_name`, so a node-filtered List or an agent's relist costs the
//! node's pods, not every pod. (Namespaces need no index: objects are keyed by
//! (namespace, name), so a namespace is a range of the kind's map.)

use std::collections::{BTreeSet, HashMap};

use kube_lite_core::ObjectRef;

use crate::resource::Object;

/// The node a pod is bound to (`None`: not a pod, or unbound).
pub fn pod_node(o: &Object) -> Option<&str> {
    let node = o.as_pod()?.spec.as_ref()?.node_name.as_str();
    (!node.is_empty()).then_some(node)
}

/// Node name → keys of the pods bound to it (any phase).
#[derive(Debug, Default, Clone)]
pub struct PodsByNode(HashMap<String, BTreeSet<ObjectRef>>);

impl PodsByNode {
    /// Follows one change of a pod (`None`: absent before / after).
    pub fn update(&mut self, prev: Option<&Object>, new: Option<&Object>) {
        let (was, now) = (prev.and_then(pod_node), new.and_then(pod_node));
        if was == now {
            return;
        }
        if let (Some(node), Some(p)) = (was, prev) {
            if let Some(set) = self.0.get_mut(node) {
                set.remove(&p.key());
                if set.is_empty() {
                    self.0.remove(node);
                }
            }
        }
        if let (Some(node), Some(n)) = (now, new) {
            self.0.entry(node.to_string()).or_default().insert(n.key());
        }
    }

    /// The pods bound to `node`, in key order.
    pub fn on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a ObjectRef> + 'a {
        self.0.get(node).into_iter().flatten()
    }

    /// Pods bound to `node`.
    pub fn count(&self, node: &str) -> usize {
        self.0.get(node).map_or(0, BTreeSet::len)
    }

    /// Nodes with at least one pod.
    pub fn nodes(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::Resource;
    use kube_lite_proto::v1::{Node, Pod, PodSpec};

    fn pod(name: &str, node: &str) -> Object {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.meta_mut().name = name.into();
        p.meta_mut().namespace = "default".into();
        Object::Pod(p)
    }

    fn on(idx: &PodsByNode, node: &str) -> Vec<String> {
        idx.on(node).map(|k| k.name.clone()).collect()
    }

    #[test]
    fn follows_binding_rebinding_and_deletes() {
        let mut idx = PodsByNode::default();
        let a = pod("a", "");
        idx.update(None, Some(&a));
        assert_eq!(idx.nodes(), 0, "unbound pods are not indexed");
        let a1 = pod("a", "n1");
        idx.update(Some(&a), Some(&a1));
        let b1 = pod("b", "n1");
        idx.update(None, Some(&b1));
        assert_eq!(on(&idx, "n1"), ["a", "b"]);
        // An update that keeps the node changes nothing.
        idx.update(Some(&a1), Some(&a1.clone()));
        assert_eq!(idx.count("n1"), 2);
        // Evicted (unbound) then bound elsewhere.
        idx.update(Some(&a1), Some(&a));
        assert_eq!(on(&idx, "n1"), ["b"]);
        let a2 = pod("a", "n2");
        idx.update(Some(&a), Some(&a2));
        assert_eq!(on(&idx, "n2"), ["a"]);
        idx.update(Some(&b1), None);
        assert_eq!(on(&idx, "n1"), Vec::<String>::new());
        assert_eq!(idx.nodes(), 1, "empty sets are dropped");
        // Other kinds are ignored.
        let mut n = Node::default();
        n.meta_mut().name = "n2".into();
        idx.update(None, Some(&Object::Node(n)));
        assert_eq!(idx.nodes(), 1);
    }
}
