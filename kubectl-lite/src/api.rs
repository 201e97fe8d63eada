//! One generic face over the four object kinds: their names (for the CLI and the
//! Kubernetes-shaped output) and their gRPC calls, so every command is written once.

use futures::{Stream, StreamExt};
use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, node_api_client::NodeApiClient,
    pod_api_client::PodApiClient, service_api_client::ServiceApiClient, DeleteRequest, Endpoints,
    EventType, GetRequest, ListRequest, Node, ObjectMeta, Pod, Service, WatchRequest,
};
use std::pin::Pin;
use std::sync::LazyLock;
use tonic::transport::Channel;
use tonic::Status;

/// One change delivered by a Watch.
#[derive(Debug, Clone)]
pub struct WatchEvent<T> {
    pub kind: EventType,
    pub object: T,
    pub resource_version: u64,
}

pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Status>>>>;

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

/// What the CLI needs to know about a kind and how to call its API.
#[allow(async_fn_in_trait)]
pub trait Resource: Clone + Sized + 'static {
    /// `Pod`
    const KIND: &'static str;
    /// `pod` (as in `pod/web`)
    const SINGULAR: &'static str;
    /// `pods` (as in `pods "web" not found`)
    const PLURAL: &'static str;
    const NAMESPACED: bool;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    fn name(&self) -> &str {
        &self.meta().name
    }

    async fn get(ch: &Channel, namespace: &str, name: &str) -> Result<Self, Status>;
    /// Items and the revision the list was taken at.
    async fn list(ch: &Channel, req: ListRequest) -> Result<(Vec<Self>, u64), Status>;
    async fn watch(ch: &Channel, req: WatchRequest) -> Result<EventStream<Self>, Status>;
    async fn delete(ch: &Channel, req: DeleteRequest) -> Result<Self, Status>;
    async fn create(ch: &Channel, obj: Self) -> Result<Self, Status>;
    async fn update(ch: &Channel, obj: Self) -> Result<Self, Status>;
}

macro_rules! resource {
    ($ty:ident, $client:ident, $kind:literal, $singular:literal, $plural:literal, $namespaced:literal) => {
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            const SINGULAR: &'static str = $singular;
            const PLURAL: &'static str = $plural;
            const NAMESPACED: bool = $namespaced;

            fn meta(&self) -> &ObjectMeta {
                self.metadata.as_ref().unwrap_or(&EMPTY_META)
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                self.metadata.get_or_insert_with(ObjectMeta::default)
            }

            async fn get(ch: &Channel, namespace: &str, name: &str) -> Result<Self, Status> {
                let req = GetRequest {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                };
                Ok($client::new(ch.clone())
                    .max_decoding_message_size(kube_lite_client::MAX_MESSAGE_BYTES)
                    .get(req)
                    .await?
                    .into_inner())
            }

            async fn list(ch: &Channel, req: ListRequest) -> Result<(Vec<Self>, u64), Status> {
                let list = $client::new(ch.clone())
                    .max_decoding_message_size(kube_lite_client::MAX_MESSAGE_BYTES)
                    .list(req)
                    .await?
                    .into_inner();
                Ok((list.items, list.resource_version))
            }

            async fn watch(ch: &Channel, req: WatchRequest) -> Result<EventStream<Self>, Status> {
                let stream = $client::new(ch.clone())
                    .max_decoding_message_size(kube_lite_client::MAX_MESSAGE_BYTES)
                    .watch(req)
                    .await?
                    .into_inner();
                Ok(Box::pin(stream.map(|ev| {
                    ev.map(|ev| WatchEvent {
                        kind: EventType::try_from(ev.r#type).unwrap_or(EventType::Unspecified),
                        object: ev.object.unwrap_or_default(),
                        resource_version: ev.resource_version,
                    })
                })))
            }

            async fn delete(ch: &Channel, req: DeleteRequest) -> Result<Self, Status> {
                Ok($client::new(ch.clone())
                    .max_decoding_message_size(kube_lite_client::MAX_MESSAGE_BYTES)
                    .delete(req)
                    .await?
                    .into_inner())
            }

            async fn create(ch: &Channel, obj: Self) -> Result<Self, Status> {
                Ok($client::new(ch.clone())
                    .max_decoding_message_size(kube_lite_client::MAX_MESSAGE_BYTES)
                    .create(obj)
                    .await?
                    .into_inner())
            }

            async fn update(ch: &Channel, obj: Self) -> Result<Self, Status> {
                Ok($client::new(ch.clone())
                    .max_decoding_message_size(kube_lite_client::MAX_MESSAGE_BYTES)
                    .update(obj)
                    .await?
                    .into_inner())
            }
        }
    };
}

resource!(Pod, PodApiClient, "Pod", "pod", "pods", true);
resource!(
    Service,
    ServiceApiClient,
    "Service",
    "service",
    "services",
    true
);
resource!(Node, NodeApiClient, "Node", "node", "nodes", false);
resource!(
    Endpoints,
    EndpointsApiClient,
    "Endpoints",
    "endpoints",
    "endpoints",
    true
);

/// The kinds as named on the command line (`pods|pod|po`, `services|service|svc`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Service,
    Node,
    Endpoints,
}

impl Kind {
    pub fn parse(word: &str) -> Result<Kind, String> {
        match word.to_ascii_lowercase().as_str() {
            "pods" | "pod" | "po" => Ok(Kind::Pod),
            "services" | "service" | "svc" => Ok(Kind::Service),
            "nodes" | "node" | "no" => Ok(Kind::Node),
            "endpoints" | "endpoint" | "ep" => Ok(Kind::Endpoints),
            _ => Err(format!(
                "unknown resource type {word:?} (known: pods, services, nodes, endpoints)"
            )),
        }
    }
}
