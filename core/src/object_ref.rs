//! The key of an API object: (namespace, name), sorted as List returns objects.

use crate::{Resource, DEFAULT_NAMESPACE};
use std::fmt;

/// (namespace, name) of one object; cluster-scoped objects (Nodes) have an empty
/// namespace. Orders by namespace, then name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// A reference exactly as given (no defaulting).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A reference to an object of kind `K`, with Kubernetes' namespace rule: an empty
    /// namespace means [`DEFAULT_NAMESPACE`] for namespaced kinds; cluster-scoped kinds
    /// never have one.
    pub fn of<K: Resource>(namespace: &str, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: default_namespace(K::NAMESPACED, namespace).to_string(),
            name: name.into(),
        }
    }
}

/// The namespace rule on its own: "" for cluster-scoped kinds, `default` for an empty
/// namespace of a namespaced kind, else the namespace given.
pub fn default_namespace(namespaced: bool, namespace: &str) -> &str {
    match (namespaced, namespace) {
        (false, _) => "",
        (true, "") => DEFAULT_NAMESPACE,
        (true, ns) => ns,
    }
}

impl fmt::Display for ObjectRef {
    /// `namespace/name`, or `name` for cluster-scoped objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Node, Pod};

    #[test]
    fn namespace_rule() {
        assert_eq!(
            ObjectRef::of::<Pod>("", "web"),
            ObjectRef::new("default", "web")
        );
        assert_eq!(
            ObjectRef::of::<Pod>("blue", "web"),
            ObjectRef::new("blue", "web")
        );
        assert_eq!(
            ObjectRef::of::<Node>("blue", "n1"),
            ObjectRef::new("", "n1")
        );
    }

    #[test]
    fn display_and_order() {
        assert_eq!(ObjectRef::new("default", "web").to_string(), "default/web");
        assert_eq!(ObjectRef::new("", "node1").to_string(), "node1");
        let mut v = vec![
            ObjectRef::new("b", "a"),
            ObjectRef::new("a", "z"),
            ObjectRef::new("a", "b"),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                ObjectRef::new("a", "b"),
                ObjectRef::new("a", "z"),
                ObjectRef::new("b", "a")
            ]
        );
    }
}
