//! The four object kinds behind one enum ([`Object`]) and one trait over the wire types
//! ([`Resource`]), so the store, watch and gRPC handlers are written once.

use std::collections::HashMap;
use std::sync::LazyLock;

use kube_lite_proto::v1::{
    Endpoints, EndpointsEvent, EndpointsList, EventType, Node, NodeEvent, NodeList, ObjectMeta,
    Pod, PodEvent, PodList, Service, ServiceEvent, ServiceList,
};
use prost::Message;

/// (namespace, name); Nodes use an empty namespace. Sorted as List returns them.
pub type ObjKey = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node = 0,
    Pod = 1,
    Service = 2,
    Endpoints = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Node, Kind::Pod, Kind::Service, Kind::Endpoints];

    pub fn idx(self) -> usize {
        self as usize
    }
    pub fn from_u32(v: u32) -> Option<Kind> {
        Kind::ALL.get(v as usize).copied()
    }
    /// Lowercase plural, as in Kubernetes messages: `pods "web" not found`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
        }
    }
    pub fn namespaced(self) -> bool {
        self != Kind::Node
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Node(Node),
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
}

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

macro_rules! each {
    ($o:expr, $x:ident => $e:expr) => {
        match $o {
            Object::Node($x) => $e,
            Object::Pod($x) => $e,
            Object::Service($x) => $e,
            Object::Endpoints($x) => $e,
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
        }
    }
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, x => x.metadata.as_ref().unwrap_or(&EMPTY_META))
    }
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, x => x.metadata.get_or_insert_with(Default::default))
    }
    pub fn labels(&self) -> &HashMap<String, String> {
        &self.meta().labels
    }
    pub fn key(&self) -> ObjKey {
        let m = self.meta();
        (m.namespace.clone(), m.name.clone())
    }
    pub fn encode(&self) -> Vec<u8> {
        each!(self, x => x.encode_to_vec())
    }
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Object, prost::DecodeError> {
        Ok(match kind {
            Kind::Node => Object::Node(Node::decode(bytes)?),
            Kind::Pod => Object::Pod(Pod::decode(bytes)?),
            Kind::Service => Object::Service(Service::decode(bytes)?),
            Kind::Endpoints => Object::Endpoints(Endpoints::decode(bytes)?),
        })
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

pub fn describe(kind: Kind, key: &ObjKey) -> String {
    if key.0.is_empty() {
        format!("{} \"{}\"", kind.plural(), key.1)
    } else {
        format!("{} \"{}/{}\"", kind.plural(), key.0, key.1)
    }
}

/// A wire type that is one of the four kinds.
pub trait Resource: Clone + Send + Sync + 'static {
    const KIND: Kind;
    type List: Send + 'static;
    type Event: Send + 'static;
    fn into_object(self) -> Object;
    fn from_object(o: &Object) -> Self;
    fn list(items: Vec<Self>, resource_version: u64) -> Self::List;
    fn event(typ: EventType, object: Self, resource_version: u64) -> Self::Event;
}

macro_rules! resource {
    ($ty:ident, $list:ident, $event:ident, $kind:ident) => {
        impl Resource for $ty {
            const KIND: Kind = Kind::$kind;
            type List = $list;
            type Event = $event;
            fn into_object(self) -> Object {
                Object::$kind(self)
            }
            fn from_object(o: &Object) -> Self {
                match o {
                    Object::$kind(x) => x.clone(),
                    _ => unreachable!("kind mismatch"),
                }
            }
            fn list(items: Vec<Self>, resource_version: u64) -> $list {
                $list {
                    items,
                    resource_version,
                }
            }
            fn event(typ: EventType, object: Self, resource_version: u64) -> $event {
                $event {
                    r#type: typ as i32,
                    object: Some(object),
                    resource_version,
                }
            }
        }
    };
}

resource!(Node, NodeList, NodeEvent, Node);
resource!(Pod, PodList, PodEvent, Pod);
resource!(Service, ServiceList, ServiceEvent, Service);
resource!(Endpoints, EndpointsList, EndpointsEvent, Endpoints);
