//! One trait over the API's object types.

use crate::ObjectRef;
use kube_lite_proto::v1::{Endpoints, Lease, Node, ObjectMeta, Pod, Service};
use std::collections::HashMap;
use std::sync::LazyLock;

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

/// An API object kube-lite stores: its kind's names and its metadata.
pub trait Resource:
    Clone + Send + Sync + std::fmt::Debug + Default + prost::Message + 'static
{
    /// `Pod`
    const KIND: &'static str;
    /// `pod` (as in `pod/web`)
    const SINGULAR: &'static str;
    /// `pods` (as in `pods "web" not found`)
    const PLURAL: &'static str;
    /// `false` for cluster-scoped kinds (Node).
    const NAMESPACED: bool;

    /// The object's metadata field (`None` on the wire is `Some(default)` here).
    fn metadata_field(&self) -> &Option<ObjectMeta>;
    fn metadata_field_mut(&mut self) -> &mut Option<ObjectMeta>;

    /// The metadata, or an empty one when the object has none.
    fn meta(&self) -> &ObjectMeta {
        self.metadata_field().as_ref().unwrap_or(&EMPTY_META)
    }
    /// The metadata, created empty when missing.
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.metadata_field_mut()
            .get_or_insert_with(ObjectMeta::default)
    }
    fn name(&self) -> &str {
        &self.meta().name
    }
    fn namespace(&self) -> &str {
        &self.meta().namespace
    }
    fn uid(&self) -> &str {
        &self.meta().uid
    }
    fn resource_version(&self) -> u64 {
        self.meta().resource_version
    }
    fn labels(&self) -> &HashMap<String, String> {
        &self.meta().labels
    }
    /// (namespace, name) as stored.
    fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(self.namespace(), self.name())
    }
}

macro_rules! resource {
    ($ty:ty, $kind:literal, $singular:literal, $plural:literal, $namespaced:literal) => {
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            const SINGULAR: &'static str = $singular;
            const PLURAL: &'static str = $plural;
            const NAMESPACED: bool = $namespaced;
            fn metadata_field(&self) -> &Option<ObjectMeta> {
                &self.metadata
            }
            fn metadata_field_mut(&mut self) -> &mut Option<ObjectMeta> {
                &mut self.metadata
            }
        }
    };
}
resource!(Node, "Node", "node", "nodes", false);
resource!(Pod, "Pod", "pod", "pods", true);
resource!(Service, "Service", "service", "services", true);
resource!(Endpoints, "Endpoints", "endpoints", "endpoints", true);
resource!(Lease, "Lease", "lease", "leases", true);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_defaults_and_accessors() {
        let mut p = Pod::default();
        assert_eq!(p.name(), "");
        assert_eq!(p.resource_version(), 0);
        p.meta_mut().name = "web".into();
        p.meta_mut().namespace = "default".into();
        p.meta_mut().uid = "u1".into();
        p.meta_mut().resource_version = 7;
        p.meta_mut().labels.insert("app".into(), "web".into());
        assert_eq!(p.name(), "web");
        assert_eq!(p.uid(), "u1");
        assert_eq!(p.resource_version(), 7);
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
        assert_eq!(p.object_ref().to_string(), "default/web");
    }

    #[test]
    fn kind_names() {
        assert_eq!(
            (Pod::KIND, Pod::SINGULAR, Pod::PLURAL),
            ("Pod", "pod", "pods")
        );
        assert_eq!(
            [Node::NAMESPACED, Service::NAMESPACED, Endpoints::NAMESPACED],
            [false, true, true]
        );
        assert_eq!(Endpoints::PLURAL, "endpoints");
    }
}
