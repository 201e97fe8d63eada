//! kubectl-lite's gRPC calls for the four object kinds, as an extension of
//! [`kube_lite_core::Resource`] (which names the kind and reads the metadata), so every
//! command is written once; and the kinds as named on the command line.

use futures::future::BoxFuture;
use futures::StreamExt;
use kube_lite_client::{ListResult, RawEvent, RawStream, MAX_MESSAGE_BYTES};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, node_api_client::NodeApiClient,
    pod_api_client::PodApiClient, service_api_client::ServiceApiClient, DeleteRequest, Endpoints,
    EventType, GetRequest, ListRequest, Node, Pod, Service, WatchRequest,
};
use tonic::Status;

/// The connection every call goes over: the channel (TLS or plaintext) with the bearer
/// token, if any, added to every request.
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every request (nothing without a token).
#[derive(Clone, Debug)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Bearer> {
        match token {
            None => Ok(Bearer(None)),
            Some(t) => format!("Bearer {}", t.trim())
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| anyhow::anyhow!("--token: not a valid header value")),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// How the CLI calls a kind's API.
pub trait Api: Resource {
    fn get(ch: &Channel, namespace: &str, name: &str) -> BoxFuture<'static, Result<Self, Status>>;
    /// Items and the revision the list was taken at.
    fn list(ch: &Channel, req: ListRequest) -> BoxFuture<'static, ListResult<Self>>;
    fn watch(
        ch: &Channel,
        req: WatchRequest,
    ) -> BoxFuture<'static, Result<RawStream<Self>, Status>>;
    fn delete(ch: &Channel, req: DeleteRequest) -> BoxFuture<'static, Result<Self, Status>>;
    fn create(ch: &Channel, obj: Self) -> BoxFuture<'static, Result<Self, Status>>;
    fn update(ch: &Channel, obj: Self) -> BoxFuture<'static, Result<Self, Status>>;
}

macro_rules! api {
    ($ty:ident, $client:ident) => {
        impl Api for $ty {
            fn get(
                ch: &Channel,
                namespace: &str,
                name: &str,
            ) -> BoxFuture<'static, Result<Self, Status>> {
                let req = GetRequest {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                };
                let mut c = $client::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                Box::pin(async move { Ok(c.get(req).await?.into_inner()) })
            }

            fn list(ch: &Channel, req: ListRequest) -> BoxFuture<'static, ListResult<Self>> {
                let mut c = $client::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                Box::pin(async move {
                    let list = c.list(req).await?.into_inner();
                    Ok((list.items, list.resource_version))
                })
            }

            fn watch(
                ch: &Channel,
                req: WatchRequest,
            ) -> BoxFuture<'static, Result<RawStream<Self>, Status>> {
                let mut c = $client::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                Box::pin(async move {
                    let stream = c.watch(req).await?.into_inner();
                    let stream: RawStream<Self> = Box::pin(stream.map(|ev| {
                        ev.map(|ev| RawEvent {
                            kind: EventType::try_from(ev.r#type).unwrap_or(EventType::Unspecified),
                            object: ev.object,
                            resource_version: ev.resource_version,
                        })
                    }));
                    Ok(stream)
                })
            }

            fn delete(
                ch: &Channel,
                req: DeleteRequest,
            ) -> BoxFuture<'static, Result<Self, Status>> {
                let mut c = $client::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                Box::pin(async move { Ok(c.delete(req).await?.into_inner()) })
            }

            fn create(ch: &Channel, obj: Self) -> BoxFuture<'static, Result<Self, Status>> {
                let mut c = $client::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                Box::pin(async move { Ok(c.create(obj).await?.into_inner()) })
            }

            fn update(ch: &Channel, obj: Self) -> BoxFuture<'static, Result<Self, Status>> {
                let mut c = $client::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                Box::pin(async move { Ok(c.update(obj).await?.into_inner()) })
            }
        }
    };
}

api!(Pod, PodApiClient);
api!(Service, ServiceApiClient);
api!(Node, NodeApiClient);
api!(Endpoints, EndpointsApiClient);

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
