//! The four stored kinds behind one enum ([`Object`]), and what the store and the gRPC
//! layer add to core's [`Resource`] ([`Stored`]: the kind's slot in the store and its
//! List/Event wire types), so the store, watch and gRPC handlers are written once.
//!
//! Objects are keyed by core's [`ObjectRef`] (namespace, name; Nodes have an empty
//! namespace), which sorts as List returns them.

use kube_lite_core::{ObjectRef, Resource};
use kube_lite_proto::v1::{
    ConfigMap, ConfigMapEvent, ConfigMapList, Deployment, DeploymentEvent, DeploymentList,
    Endpoints, EndpointsEvent, EndpointsList, Event, EventEvent, EventList, EventType, Lease,
    LeaseEvent, LeaseList, Namespace, NamespaceEvent, NamespaceList, Node, NodeEvent, NodeList,
    ObjectMeta, Pod, PodEvent, PodList, ReplicaSet, ReplicaSetEvent, ReplicaSetList, Secret,
    SecretEvent, SecretList, Service, ServiceEvent, ServiceList,
};
use prost::Message;

/// The stored kinds; the discriminant is the kind's slot in the store (and its byte in
/// sled keys and the change log, so never renumber).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node = 0,
    Pod = 1,
    Service = 2,
    Endpoints = 3,
    Namespace = 4,
    ConfigMap = 5,
    Secret = 6,
    Event = 7,
    ReplicaSet = 8,
    Deployment = 9,
    Lease = 10,
}

/// Runs `$e` with `$t` bound to the wire type of `$kind`.
macro_rules! with_type {
    ($kind:expr, $t:ident => $e:expr) => {
        match $kind {
            Kind::Node => {
                type $t = Node;
                $e
            }
            Kind::Pod => {
                type $t = Pod;
                $e
            }
            Kind::Service => {
                type $t = Service;
                $e
            }
            Kind::Endpoints => {
                type $t = Endpoints;
                $e
            }
            Kind::Namespace => {
                type $t = Namespace;
                $e
            }
            Kind::ConfigMap => {
                type $t = ConfigMap;
                $e
            }
            Kind::Secret => {
                type $t = Secret;
                $e
            }
            Kind::Event => {
                type $t = Event;
                $e
            }
            Kind::ReplicaSet => {
                type $t = ReplicaSet;
                $e
            }
            Kind::Deployment => {
                type $t = Deployment;
                $e
            }
            Kind::Lease => {
                type $t = Lease;
                $e
            }
        }
    };
}

impl Kind {
    /// Every kind, in discriminant order.
    pub const ALL: [Kind; 11] = [
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::Endpoints,
        Kind::Namespace,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Event,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::Lease,
    ];
    pub const COUNT: usize = Kind::ALL.len();

    /// The kind's slot in per-kind arrays (its position in [`Kind::ALL`]; the
    /// discriminants need not be dense).
    pub fn idx(self) -> usize {
        Kind::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every kind is in Kind::ALL")
    }
    pub fn from_u32(v: u32) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|&k| k as u32 == v)
    }
    /// Lowercase plural, as in Kubernetes messages: `pods "web" not found`.
    pub fn plural(self) -> &'static str {
        with_type!(self, T => T::PLURAL)
    }
    pub fn namespaced(self) -> bool {
        with_type!(self, T => T::NAMESPACED)
    }
    /// `Pod`, `Deployment` (as in ownerReferences and Events).
    pub fn name(self) -> &'static str {
        with_type!(self, T => T::KIND)
    }
    /// `v1`, `apps/v1`.
    pub fn api_version(self) -> &'static str {
        with_type!(self, T => T::API_VERSION)
    }
    /// The kind named `Deployment` (an ownerReference's or an Event's kind).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
    /// The key of a request's object, with the default-namespace rule
    /// ([`ObjectRef::of`]).
    pub fn object_ref(self, namespace: &str, name: impl Into<String>) -> ObjectRef {
        with_type!(self, T => ObjectRef::of::<T>(namespace, name))
    }
}

// Pods are the common and the largest objects: boxing them would cost an allocation on
// the hot path for every other kind's sake.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Node(Node),
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Event(Event),
    ReplicaSet(ReplicaSet),
    Deployment(Deployment),
    Lease(Lease),
}

macro_rules! each {
    ($o:expr, $x:ident => $e:expr) => {
        match $o {
            Object::Node($x) => $e,
            Object::Pod($x) => $e,
            Object::Service($x) => $e,
            Object::Endpoints($x) => $e,
            Object::Namespace($x) => $e,
            Object::ConfigMap($x) => $e,
            Object::Secret($x) => $e,
            Object::Event($x) => $e,
            Object::ReplicaSet($x) => $e,
            Object::Deployment($x) => $e,
            Object::Lease($x) => $e,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Namespace(_) => Kind::Namespace,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Event(_) => Kind::Event,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::Lease(_) => Kind::Lease,
        }
    }
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, x => x.meta())
    }
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, x => x.meta_mut())
    }
    /// The object's key as stored.
    pub fn key(&self) -> ObjectRef {
        each!(self, x => x.object_ref())
    }
    pub fn encode(&self) -> Vec<u8> {
        each!(self, x => x.encode_to_vec())
    }
    pub fn encoded_len(&self) -> usize {
        each!(self, x => x.encoded_len())
    }
    /// An empty object of `kind`.
    pub fn empty(kind: Kind) -> Object {
        with_type!(kind, T => T::default().into_object())
    }
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Object, prost::DecodeError> {
        with_type!(kind, T => Ok(T::decode(bytes)?.into_object()))
    }
    pub fn as_pod(&self) -> Option<&Pod> {
        match self {
            Object::Pod(p) => Some(p),
            _ => None,
        }
    }
    pub fn as_node(&self) -> Option<&Node> {
        match self {
            Object::Node(n) => Some(n),
            _ => None,
        }
    }
    pub fn as_service(&self) -> Option<&Service> {
        match self {
            Object::Service(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_lease(&self) -> Option<&Lease> {
        match self {
            Object::Lease(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_endpoints(&self) -> Option<&Endpoints> {
        match self {
            Object::Endpoints(e) => Some(e),
            _ => None,
        }
    }
    /// `pods "default/web"` — for messages.
    pub fn describe(&self) -> String {
        describe(self.kind(), &self.key())
    }
}

/// `pods "default/web"`, `nodes "n1"` — for messages.
pub fn describe(kind: Kind, key: &ObjectRef) -> String {
    format!(
        "{} \"{}\"",
        kind.plural(),
        crate::error::clip(&key.to_string())
    )
}

/// A core [`Resource`] as the store and the gRPC layer see it: its [`Kind`] slot, its
/// List and Event wire types, and the conversion to and from [`Object`].
pub trait Stored: Resource {
    const STORED_KIND: Kind;
    type List: Send + 'static;
    type Event: prost::Message + Send + 'static;
    fn into_object(self) -> Object;
    fn from_object(o: &Object) -> Self;
    fn list(items: Vec<Self>, resource_version: u64) -> Self::List;
    fn event(typ: EventType, object: Self, resource_version: u64) -> Self::Event;
    /// An event's (type, object, resource_version) (the REST face's watch).
    fn split_event(e: Self::Event) -> (i32, Option<Self>, u64);
    /// Whether List pages this kind (its List message has `continue` and
    /// `remaining_item_count`); a kind that does not ignores `limit`.
    const PAGED: bool = false;
    /// Sets the paging fields of a List page ([`Stored::PAGED`] kinds).
    fn set_page(list: &mut Self::List, token: String, remaining: u64) {
        let _ = (list, token, remaining);
    }
}

macro_rules! stored {
    ($ty:ident, $list:ident, $event:ident, paged) => {
        stored!($ty, $list, $event,
            const PAGED: bool = true;,
            fn set_page(list: &mut $list, token: String, remaining: u64) {
                list.r#continue = token;
                list.remaining_item_count = remaining;
            }
        );
    };
    ($ty:ident, $list:ident, $event:ident $(, $extra:item)*) => {
        impl Stored for $ty {
            const STORED_KIND: Kind = Kind::$ty;
            type List = $list;
            type Event = $event;
            fn into_object(self) -> Object {
                Object::$ty(self)
            }
            fn from_object(o: &Object) -> Self {
                match o {
                    Object::$ty(x) => x.clone(),
                    _ => unreachable!("kind mismatch"),
                }
            }
            fn list(items: Vec<Self>, resource_version: u64) -> $list {
                $list {
                    items,
                    resource_version,
                    ..Default::default()
                }
            }
            fn event(typ: EventType, object: Self, resource_version: u64) -> $event {
                $event {
                    r#type: typ as i32,
                    object: Some(object),
                    resource_version,
                }
            }
            $($extra)*
            fn split_event(e: $event) -> (i32, Option<Self>, u64) {
                (e.r#type, e.object, e.resource_version)
            }
        }
    };
}

// `paged`: List pages these kinds (limit/continue).
stored!(Node, NodeList, NodeEvent, paged);
stored!(Pod, PodList, PodEvent, paged);
stored!(Service, ServiceList, ServiceEvent, paged);
stored!(Endpoints, EndpointsList, EndpointsEvent, paged);
stored!(Namespace, NamespaceList, NamespaceEvent, paged);
stored!(ConfigMap, ConfigMapList, ConfigMapEvent, paged);
stored!(Secret, SecretList, SecretEvent, paged);
stored!(Event, EventList, EventEvent, paged);
stored!(ReplicaSet, ReplicaSetList, ReplicaSetEvent, paged);
stored!(Deployment, DeploymentList, DeploymentEvent, paged);
stored!(Lease, LeaseList, LeaseEvent, paged);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_core_names_and_namespace_rule() {
        assert_eq!(Kind::Pod.plural(), "pods");
        assert_eq!(Kind::Endpoints.plural(), "endpoints");
        assert!(!Kind::Node.namespaced() && Kind::Service.namespaced());
        assert_eq!(
            Kind::Pod.object_ref("", "web"),
            ObjectRef::new("default", "web")
        );
        assert_eq!(Kind::Node.object_ref("x", "n1"), ObjectRef::new("", "n1"));
        for k in Kind::ALL {
            assert_eq!(Kind::from_u32(k as u32), Some(k));
        }
        assert_eq!(Kind::from_u32(11), None);
        assert_eq!(Kind::Deployment as u32, 9);
        assert_eq!(Kind::from_name("ReplicaSet"), Some(Kind::ReplicaSet));
        assert_eq!(Kind::Deployment.api_version(), "apps/v1");
        assert!(!Kind::Namespace.namespaced());
        assert_eq!(Kind::from_u32(10), Some(Kind::Lease));
        assert_eq!(Kind::Lease.idx(), 10);
        assert_eq!(Kind::Lease.plural(), "leases");
    }

    #[test]
    fn describe_and_round_trip() {
        assert_eq!(
            describe(Kind::Pod, &ObjectRef::new("default", "web")),
            "pods \"default/web\""
        );
        assert_eq!(
            describe(Kind::Node, &ObjectRef::new("", "n1")),
            "nodes \"n1\""
        );
        let mut p = Pod::default();
        p.meta_mut().name = "web".into();
        p.meta_mut().namespace = "blue".into();
        let o = p.clone().into_object();
        assert_eq!(o.kind(), Kind::Pod);
        assert_eq!(o.key(), ObjectRef::new("blue", "web"));
        assert_eq!(Object::decode(Kind::Pod, &o.encode()).unwrap(), o);
        assert_eq!(Pod::from_object(&o), p);
    }
}
