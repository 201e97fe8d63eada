//! The gRPC services. One generic implementation ([`Api`]'s `do_*` methods, generic
//! over [`Stored`]) behind the four generated service traits, and
//! [`DecodeErrorsAreInvalidLayer`], which reports an undecodable request body as the
//! client's fault (INVALID_ARGUMENT, not tonic's INTERNAL).
//!
//! Every message is bounded ([`crate::error`]); statuses passed on from a node agent
//! (Logs) too.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kube_lite_proto::v1::{
    config_map_api_server::ConfigMapApi, deployment_api_server::DeploymentApi,
    endpoints_api_server::EndpointsApi, event_api_server::EventApi, lease_api_server::LeaseApi,
    namespace_api_server::NamespaceApi, node_agent_client::NodeAgentClient,
    node_api_server::NodeApi, pod_api_server::PodApi, replica_set_api_server::ReplicaSetApi,
    secret_api_server::SecretApi, service_api_server::ServiceApi, ConfigMap, ConfigMapEvent,
    ConfigMapList, DeleteRequest, Deployment, DeploymentEvent, DeploymentList, Endpoints,
    EndpointsEvent, EndpointsList, Event, EventEvent, EventList, GetRequest, ImageChunk, Lease,
    LeaseEvent, LeaseList, ListRequest, LoadImageResponse, LogChunk, LogsRequest, Namespace,
    NamespaceEvent, NamespaceList, Node, NodeEvent, NodeList, Pod, PodEvent, PodList, ReplicaSet,
    ReplicaSetEvent, ReplicaSetList, Secret, SecretEvent, SecretList, Service, ServiceEvent,
    ServiceList, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::http;
use tonic::{Code, Request, Response, Status};

use kube_lite_core::ObjectRef;

use crate::auth::Security;
use crate::authz::{self, Attrs, Verb};
use crate::controllers::endpoints;
use crate::error::{bounded, ApiError};
use crate::list::Pager;
use crate::ops;
use crate::resource::{describe, Kind, Object, Stored};
use crate::store::{Objects, Store};

/// Largest image chunk NodeApi.LoadImage accepts (kubectl-lite sends 1 MiB).
pub const MAX_IMAGE_CHUNK: usize = 2 << 20;
/// Largest image archive NodeApi.LoadImage passes on (the agents' own limit,
/// `--max-image-archive-size`, is 2 GiB by default).
pub const MAX_IMAGE_ARCHIVE: u64 = 16 << 30;
use crate::validation;
use crate::watch::{ByteBudget, EndSlot, Filter, WatchStream, Watcher};
use kube_lite_pki::Identity;

#[derive(Clone)]
pub struct Api {
    store: Arc<Store>,
    pager: Arc<Pager>,
    /// `None`: insecure mode (every caller may do everything).
    security: Option<Arc<Security>>,
}

/// Lists with more items than this are converted to their wire type on the blocking
/// pool, not on the runtime's workers (which run the writer and every other call).
const BLOCKING_LIST_ITEMS: usize = 1000;

type Res<T> = Result<Response<T>, Status>;

/// What [`authz::authorize`] needs of the stored objects, read from the store.
struct StoreGraph<'a>(&'a Store);

impl authz::Graph for StoreGraph<'_> {
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let o = self.0.get(Kind::Pod, &ObjectRef::new(namespace, name))?;
        Some(
            o.as_pod()
                .and_then(|p| p.spec.as_ref())
                .map(|s| s.node_name.clone())
                .unwrap_or_default(),
        )
    }
    fn referenced_by_pod_on(&self, node: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let sh = self.0.shared.read().expect("lock");
        let found = sh
            .objects
            .in_namespace(Kind::Pod, namespace)
            .filter_map(|(_, o)| o.as_pod())
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name == node))
            .any(|p| {
                authz_refs::pod_references(p)
                    .iter()
                    .any(|(k, n)| *k == kind && n == name)
            });
        found
    }
}

/// The objects of other kinds a pod references, as (kind plural, name) in its
/// namespace: what a node may `get` for its pods ([`authz`]'s Secret/ConfigMap rule).
/// References: `env[].valueFrom.configMapKeyRef/secretKeyRef`, `envFrom[]`, of init and
/// app containers, `configMap`/`secret` volumes and the configMap/secret sources of
/// `projected` ones (kube-lite has no imagePullSecrets; whoever adds them lists them
/// here).
pub mod authz_refs {
    use kube_lite_proto::v1::Pod;

    pub const CONFIG_MAPS: &str = "configmaps";
    pub const SECRETS: &str = "secrets";

    pub fn pod_references(pod: &Pod) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        let Some(spec) = &pod.spec else {
            return out;
        };
        for c in spec.init_containers.iter().chain(&spec.containers) {
            for e in &c.env {
                if let Some(src) = &e.value_from {
                    if let Some(k) = &src.config_map_key_ref {
                        out.push((CONFIG_MAPS, k.name.clone()));
                    }
                    if let Some(k) = &src.secret_key_ref {
                        out.push((SECRETS, k.name.clone()));
                    }
                }
            }
            for e in &c.env_from {
                if let Some(r) = &e.config_map_ref {
                    out.push((CONFIG_MAPS, r.name.clone()));
                }
                if let Some(r) = &e.secret_ref {
                    out.push((SECRETS, r.name.clone()));
                }
            }
        }
        for v in &spec.volumes {
            for p in v.projected.iter().flat_map(|p| p.sources.iter()) {
                if let Some(c) = &p.config_map {
                    out.push((CONFIG_MAPS, c.name.clone()));
                }
                if let Some(c) = &p.secret {
                    out.push((SECRETS, c.secret_name.clone()));
                }
            }
            if let Some(c) = &v.config_map {
                out.push((CONFIG_MAPS, c.name.clone()));
            }
            if let Some(s) = &v.secret {
                out.push((SECRETS, s.secret_name.clone()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use kube_lite_proto::v1::{
            ConfigMapVolumeSource, Container, EnvFromSource, EnvVar, EnvVarSource, KeySelector,
            ObjectSelector, PodSpec, SecretVolumeSource, Volume,
        };

        #[test]
        fn env_env_from_and_volumes_of_every_container_are_references() {
            let key = |n: &str| KeySelector {
                name: n.into(),
                key: "k".into(),
                optional: false,
            };
            let pod = Pod {
                spec: Some(PodSpec {
                    init_containers: vec![Container {
                        env: vec![EnvVar {
                            name: "A".into(),
                            value_from: Some(EnvVarSource {
                                secret_key_ref: Some(key("init-secret")),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    containers: vec![Container {
                        env: vec![EnvVar {
                            name: "B".into(),
                            value_from: Some(EnvVarSource {
                                config_map_key_ref: Some(key("cm-env")),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        env_from: vec![EnvFromSource {
                            secret_ref: Some(ObjectSelector {
                                name: "s-from".into(),
                                optional: true,
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    volumes: vec![
                        Volume {
                            name: "a".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: "cm-vol".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "b".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: "s-vol".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert_eq!(
                pod_references(&pod),
                vec![
                    (CONFIG_MAPS, "cm-env".to_string()),
                    (CONFIG_MAPS, "cm-vol".to_string()),
                    (SECRETS, "init-secret".to_string()),
                    (SECRETS, "s-from".to_string()),
                    (SECRETS, "s-vol".to_string()),
                ]
            );
            assert!(pod_references(&Pod::default()).is_empty());
        }
    }
}

impl Api {
    /// An insecure API (no authorization).
    pub fn new(store: Arc<Store>) -> Api {
        Api {
            store,
            pager: Arc::default(),
            security: None,
        }
    }

    pub fn with_security(store: Arc<Store>, security: Option<Arc<Security>>) -> Api {
        Api {
            store,
            pager: Arc::default(),
            security,
        }
    }

    /// `Ok` when the caller (its [`Identity`] in `ext`, from [`crate::auth`]) may do
    /// `verb` on the kind `kind` (plural) `namespace/name`; PERMISSION_DENIED naming
    /// the identity and the verb otherwise (and logged).
    pub fn authorize(
        &self,
        ext: &http::Extensions,
        verb: Verb,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), Status> {
        if self.security.is_none() {
            return Ok(());
        }
        let Some(id) = ext.get::<Identity>() else {
            return Err(Status::unauthenticated("no credentials"));
        };
        let attrs = Attrs {
            verb,
            kind,
            namespace,
            name,
        };
        authz::authorize(id, &attrs, &StoreGraph(&self.store)).map_err(|m| {
            tracing::info!(user = %id.user, verb = verb.as_str(), kind, namespace, name, reason = %m, "forbidden");
            Status::permission_denied(m)
        })
    }

    fn allow<R: Stored>(
        &self,
        ext: &http::Extensions,
        verb: Verb,
        key: &ObjectRef,
    ) -> Result<(), Status> {
        self.authorize(
            ext,
            verb,
            R::STORED_KIND.plural(),
            &key.namespace,
            &key.name,
        )
    }

    pub async fn do_create<R: Stored>(&self, req: Request<R>) -> Res<R> {
        let ext = req.extensions().clone();
        let mut obj = req.into_inner().into_object();
        validation::prepare_create(&mut obj)?;
        let key = obj.key();
        self.allow::<R>(&ext, Verb::Create, &key)?;
        let out = self
            .store
            .write_obj(move |txn| {
                check_owner::<R>(txn, &key)?;
                ops::create(txn, obj)
            })
            .await?;
        Ok(Response::new(R::from_object(&out)))
    }

    pub fn do_get<R: Stored>(&self, req: Request<GetRequest>) -> Res<R> {
        let ext = req.extensions().clone();
        let r = req.into_inner();
        let key = ObjectRef::of::<R>(&r.namespace, r.name);
        self.allow::<R>(&ext, Verb::Get, &key)?;
        match self.store.get(R::STORED_KIND, &key) {
            Some(o) => Ok(Response::new(R::from_object(&o))),
            None => Err(ApiError::NotFound(format!(
                "{} not found",
                describe(R::STORED_KIND, &key)
            ))
            .into()),
        }
    }

    pub async fn do_list<R: Stored>(&self, req: Request<ListRequest>) -> Res<R::List> {
        let ext = req.extensions().clone();
        let r = req.into_inner();
        let ns = ObjectRef::of::<R>(&r.namespace, "").namespace;
        let ns = if r.namespace.is_empty() {
            String::new()
        } else {
            ns
        };
        self.authorize(&ext, Verb::List, R::STORED_KIND.plural(), &ns, "")?;
        let filter = Filter::new(
            R::STORED_KIND,
            &r.namespace,
            &r.label_selector,
            &r.node_name,
        )?;
        // A token continues only a list with the same filters.
        let filters = format!(
            "{:?}|{:?}|{:?}",
            filter.namespace, r.label_selector, filter.node_name
        );
        let limit = if R::PAGED { r.limit as usize } else { 0 };
        let now = std::time::Instant::now();
        let page = if !r.r#continue.is_empty() && R::PAGED {
            self.pager
                .next(R::STORED_KIND, &filters, &r.r#continue, limit, now)?
        } else {
            let (objs, rev) = {
                let sh = self.store.shared.read().expect("lock");
                (select(&sh.objects, R::STORED_KIND, &filter), sh.rev)
            };
            self.pager
                .first(R::STORED_KIND, &filters, rev, objs, limit, now)
        };
        let big = page.items.len() > BLOCKING_LIST_ITEMS;
        let build = move || {
            let items = page.items.iter().map(|o| R::from_object(o)).collect();
            let mut list = R::list(items, page.rev);
            R::set_page(&mut list, page.token, page.remaining);
            list
        };
        let list = if big {
            tokio::task::spawn_blocking(build)
                .await
                .map_err(|e| ApiError::Internal(format!("building the list: {e}")))?
        } else {
            build()
        };
        Ok(Response::new(list))
    }

    pub async fn do_update<R: Stored>(&self, req: Request<R>, status_only: bool) -> Res<R> {
        let ext = req.extensions().clone();
        let mut obj = req.into_inner().into_object();
        let m = obj.meta_mut();
        m.namespace = ObjectRef::of::<R>(&m.namespace, "").namespace;
        if m.name.is_empty() {
            return Err(ApiError::invalid("metadata.name", "is required").into());
        }
        let key = obj.key();
        let verb = if status_only {
            Verb::UpdateStatus
        } else {
            Verb::Update
        };
        self.allow::<R>(&ext, verb, &key)?;
        let out = self
            .store
            .write_obj(move |txn| {
                check_owner::<R>(txn, &key)?;
                ops::update(txn, obj, status_only)
            })
            .await?;
        Ok(Response::new(R::from_object(&out)))
    }

    pub async fn do_delete<R: Stored>(&self, req: Request<DeleteRequest>) -> Res<R> {
        let ext = req.extensions().clone();
        let r = req.into_inner();
        validation::validate_delete(&r)?;
        let key = ObjectRef::of::<R>(&r.namespace, r.name);
        self.allow::<R>(&ext, Verb::Delete, &key)?;
        let out = self
            .store
            .write_obj(move |txn| {
                check_owner::<R>(txn, &key)?;
                ops::delete(
                    txn,
                    R::STORED_KIND,
                    key,
                    r.resource_version,
                    r.grace_period_seconds,
                    &r.propagation_policy,
                )
            })
            .await?;
        Ok(Response::new(R::from_object(&out)))
    }

    pub fn do_watch<R: Stored>(&self, req: Request<WatchRequest>) -> Res<WatchStream<R::Event>> {
        let ext = req.extensions().clone();
        let r = req.into_inner();
        let ns = if r.namespace.is_empty() {
            String::new()
        } else {
            ObjectRef::of::<R>(&r.namespace, "").namespace
        };
        self.authorize(&ext, Verb::Watch, R::STORED_KIND.plural(), &ns, "")?;
        validation::validate_watch(&r)?;
        let filter = Filter::new(
            R::STORED_KIND,
            &r.namespace,
            &r.label_selector,
            &r.node_name,
        )?;
        if *self.store.closing.borrow() {
            return Err(ApiError::Unavailable("apiserver is shutting down".into()).into());
        }
        let (backlog, rx, start) = match &filter.node_name {
            Some(node) if R::STORED_KIND == Kind::Pod => {
                self.store.subscribe_node(r.resource_version, node)?
            }
            _ => self.store.subscribe(R::STORED_KIND, r.resource_version)?,
        };
        let (tx, out) = mpsc::channel(self.store.cfg.watch_buffer.max(1));
        let end = Arc::new(EndSlot::default());
        let budget = Arc::new(ByteBudget::new(self.store.cfg.watch_buffer_bytes));
        let bookmark_every = if r.bookmark_interval_ms > 0 {
            Duration::from_millis(u64::from(r.bookmark_interval_ms.max(10)))
        } else {
            self.store.cfg.bookmark_interval
        };
        let w = Watcher::<R> {
            store: self.store.clone(),
            filter,
            backlog,
            rx,
            last: start,
            tx,
            end: end.clone(),
            budget: budget.clone(),
            bookmark_every,
        };
        tokio::spawn(w.run());
        Ok(Response::new(
            WatchStream::new(out, end).with_budget(budget),
        ))
    }

    /// A channel to the agent of the node pod `key` is bound to, dialed only on the
    /// node's registered address and (secure mode) answered only by the holder of that
    /// node's certificate; with the node's name and endpoint. `what` ends the message
    /// for an unscheduled pod ("no logs").
    pub(crate) async fn node_channel(
        &self,
        key: &ObjectRef,
        what: &str,
    ) -> Result<(tonic::transport::Channel, String, String), Status> {
        let key = key.clone();
        let pod = self.store.get(Kind::Pod, &key).ok_or_else(|| {
            ApiError::NotFound(format!("{} not found", describe(Kind::Pod, &key)))
        })?;
        let node_name = pod
            .as_pod()
            .and_then(|p| p.spec.as_ref())
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        if node_name.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "pod {key} is not scheduled to a node yet; {what}"
            ))
            .into());
        }
        let (channel, endpoint) = self
            .agent_channel(&node_name, &format!(" of pod {key}"))
            .await?;
        Ok((channel, node_name, endpoint))
    }

    /// A channel to the agent of node `node_name` (`what`: for messages, e.g. " of pod
    /// default/web"): its `status.daemonEndpoint`, in secure mode over mTLS with the
    /// apiserver's client identity, accepted only from the agent holding that node's
    /// certificate on the node's registered address.
    async fn agent_channel(
        &self,
        node_name: &str,
        what: &str,
    ) -> Result<(tonic::transport::Channel, String), Status> {
        let node = self
            .store
            .get(Kind::Node, &ObjectRef::new("", node_name.to_string()))
            .ok_or_else(|| ApiError::Unavailable(format!("node {node_name:?}{what} not found")))?;
        let node = node.as_node().cloned().unwrap_or_default();
        let endpoint = node
            .status
            .as_ref()
            .map(|s| s.daemon_endpoint.clone())
            .unwrap_or_default();
        if endpoint.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "node {node_name:?} has no daemon endpoint (its agent has not reported one)"
            ))
            .into());
        }
        let unreachable = |e: String| {
            ApiError::Unavailable(format!("node agent of {node_name:?} at {endpoint}: {e}"))
        };
        let channel = match &self.security {
            None => tonic::transport::Endpoint::from_shared(endpoint.clone())
                .map_err(|e| unreachable(e.to_string()))?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| unreachable(format!("unreachable: {e}")))?,
            Some(sec) => {
                // Only the node's registered address (or loopback, where agents of a
                // one-machine cluster listen), and only the agent holding that node's
                // certificate answers: never a listener a client pointed us to.
                let authority = agent_authority(&endpoint, &node).map_err(unreachable)?;
                let cfg = kube_lite_pki::client_config_expecting(
                    sec.ca.cert_pem(),
                    &sec.kubelet_client,
                    &Identity::node(node_name).user,
                )
                .map_err(|e| unreachable(e.to_string()))?;
                kube_lite_client::connect_tls(&format!("https://{authority}"), Arc::new(cfg))
                    .await
                    .map_err(|e| unreachable(format!("unreachable: {e}")))?
            }
        };
        Ok((channel, endpoint))
    }

    /// NodeApi.LoadImage: an image archive for the node named in the first chunk,
    /// streamed on to that node's agent (NodeAgent.LoadImage) as it arrives (never
    /// buffered whole here). Admins only (verb `load_image` on the node). Bounded: each
    /// chunk at most [`MAX_IMAGE_CHUNK`] bytes, the archive at most
    /// [`MAX_IMAGE_ARCHIVE`] (the agent applies its own, usually smaller, limit).
    /// A client error mid-stream cancels the upstream call, so the agent never imports
    /// a truncated archive.
    pub async fn do_load_image(
        &self,
        req: Request<tonic::Streaming<ImageChunk>>,
    ) -> Res<LoadImageResponse> {
        let ext = req.extensions().clone();
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| ApiError::invalid("node", "an empty stream: no image chunk"))?;
        validation::validate_image_chunk(&first, true)?;
        let node_name = first.node.clone();
        let key = ObjectRef::new("", node_name.clone());
        self.allow::<Node>(&ext, Verb::LoadImage, &key)?;
        if self.store.get(Kind::Node, &key).is_none() {
            return Err(ApiError::NotFound(format!("node {node_name:?} not found")).into());
        }
        let (channel, endpoint) = self.agent_channel(&node_name, "").await?;
        let (tx, rx) = mpsc::channel::<ImageChunk>(4);
        let forward = async move {
            let mut total = 0u64;
            let mut next = Some(first);
            while let Some(mut chunk) = next {
                total += chunk.data.len() as u64;
                if total > MAX_IMAGE_ARCHIVE {
                    return Err(Status::from(ApiError::invalid(
                        "data",
                        format!("the archive is larger than {MAX_IMAGE_ARCHIVE} bytes"),
                    )));
                }
                chunk.node.clear();
                if tx.send(chunk).await.is_err() {
                    return Ok(()); // the agent answered early; its answer says why
                }
                next = inbound.message().await?;
                if let Some(c) = &next {
                    validation::validate_image_chunk(c, false)?;
                }
            }
            Ok(())
        };
        let mut client = NodeAgentClient::new(channel);
        let call = client.load_image(ReceiverStream::new(rx));
        tokio::pin!(forward);
        tokio::pin!(call);
        let mut forwarded = false;
        loop {
            tokio::select! {
                r = &mut forward, if !forwarded => {
                    // On an error the upstream call is dropped (cancelled) with it.
                    r?;
                    forwarded = true;
                }
                r = &mut call => {
                    let resp = r.map_err(|s| match s.code() {
                        Code::Unavailable => ApiError::Unavailable(format!(
                            "node agent of {node_name:?} at {endpoint}: {}",
                            s.message()
                        ))
                        .into(),
                        _ => bounded(s.code(), s.message()),
                    })?;
                    tracing::info!(node = %node_name, images = ?resp.get_ref().names, "image archive loaded");
                    return Ok(resp);
                }
            }
        }
    }

    pub async fn do_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Res<ReceiverStream<Result<LogChunk, Status>>> {
        let ext = req.extensions().clone();
        let mut r = req.into_inner();
        validation::validate_logs(&r)?;
        let key = ObjectRef::of::<Pod>(&r.namespace, r.name.clone());
        self.allow::<Pod>(&ext, Verb::Logs, &key)?;
        r.namespace = key.namespace.clone();
        let (channel, node_name, endpoint) = self.node_channel(&key, "no logs").await?;
        let unreachable = |e: String| {
            ApiError::Unavailable(format!("node agent of {node_name:?} at {endpoint}: {e}"))
        };
        let mut upstream = NodeAgentClient::new(channel)
            .logs(r)
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::Unavailable {
                    unreachable(s.message().to_string()).into()
                } else {
                    bounded(s.code(), s.message())
                }
            })?
            .into_inner();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(item) = upstream.next().await {
                let item = item.map_err(|s| bounded(s.code(), s.message()));
                if tx.send(item).await.is_err() {
                    return; // client left
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }
}

/// What a List's filters match now, in key order: pods of a node through the
/// node-name index, a namespace as a range of keys, else every object of the kind.
pub fn select(objects: &Objects, kind: Kind, filter: &Filter) -> Vec<Arc<Object>> {
    match (&filter.node_name, &filter.namespace) {
        (Some(node), _) if kind == Kind::Pod => objects
            .pods_on(node)
            .filter(|o| filter.matches(o))
            .cloned()
            .collect(),
        (_, Some(ns)) => objects
            .in_namespace(kind, ns)
            .filter(|(_, o)| filter.matches(o))
            .map(|(_, o)| o.clone())
            .collect(),
        _ => objects
            .of(kind)
            .values()
            .filter(|o| filter.matches(o))
            .cloned()
            .collect(),
    }
}

/// The `host:port` of a node's daemon endpoint, if its host is the node's registered
/// address (`status.address` or `spec.address`) or a loopback address; the reason
/// otherwise.
pub fn agent_authority(endpoint: &str, node: &Node) -> Result<String, String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or("");
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|_| format!("daemon endpoint {endpoint:?} is not http(s)://<ip>:<port>"))?;
    let registered: Vec<&str> = [
        node.status.as_ref().map(|s| s.address.as_str()),
        node.spec.as_ref().map(|s| s.address.as_str()),
    ]
    .into_iter()
    .flatten()
    .filter(|a| !a.is_empty())
    .collect();
    let ip = addr.ip().to_string();
    if addr.ip().is_loopback() || registered.contains(&ip.as_str()) {
        Ok(authority.to_string())
    } else {
        Err(format!(
            "daemon endpoint {endpoint:?} is not on the node's address {registered:?}; not dialing it"
        ))
    }
}

/// Refuses a user's write to Endpoints that the endpoints controller owns
/// ([`endpoints::check_user_write`]); other kinds pass.
fn check_owner<R: Stored>(txn: &crate::store::Txn<'_>, key: &ObjectRef) -> Result<(), ApiError> {
    if R::STORED_KIND == Kind::Endpoints {
        endpoints::check_user_write(txn.objects(), key)?;
    }
    Ok(())
}

/// The message prefix of tonic-prost's decode error (`prost::DecodeError`'s Display).
const DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";

/// tonic reports a request body that does not decode as INTERNAL; it is the client's
/// fault: INVALID_ARGUMENT "request body: failed to decode Protobuf message: …".
/// `None` for every other status.
///
/// A request over the server's limit ([`crate::MAX_REQUEST_BYTES`]) tonic refuses with
/// OUT_OF_RANGE "Error, decoded message length too large: found N bytes, the limit is:
/// L bytes", which reads like a watch's "relist": it becomes RESOURCE_EXHAUSTED
/// "request too large: N bytes, the request limit is L bytes" (as gRPC's own
/// "message larger than max", and as the store's per-object limit).
pub fn decode_error_as_invalid(st: &Status) -> Option<Status> {
    if st.code() == Code::OutOfRange {
        return too_large_as_exhausted(st.message());
    }
    (st.code() == Code::Internal && st.message().starts_with(DECODE_ERROR_PREFIX)).then(|| {
        bounded(
            Code::InvalidArgument,
            &format!("request body: {}", st.message()),
        )
    })
}

const TOO_LARGE_PREFIX: &str = "Error, decoded message length too large: found ";

fn too_large_as_exhausted(msg: &str) -> Option<Status> {
    let rest = msg.strip_prefix(TOO_LARGE_PREFIX)?;
    let number = |s: &str| -> Option<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .find(|p| !p.is_empty())?
            .parse()
            .ok()
    };
    let found = number(rest)?;
    let limit = rest
        .split_once("limit is")
        .and_then(|(_, l)| number(l))
        .unwrap_or(crate::MAX_REQUEST_BYTES as u64);
    Some(Status::resource_exhausted(format!(
        "request too large: {found} bytes, the request limit is {limit} bytes"
    )))
}

/// A tower layer for the gRPC server applying [`decode_error_as_invalid`] to the
/// trailers-only answers tonic sends when a request does not decode (the handler never
/// runs, so this is the one place to see them).
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorsAreInvalidLayer;

impl<S> tower::Layer<S> for DecodeErrorsAreInvalidLayer {
    type Service = DecodeErrorsAreInvalid<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorsAreInvalid(inner)
    }
}

/// The service of [`DecodeErrorsAreInvalidLayer`].
#[derive(Clone, Debug)]
pub struct DecodeErrorsAreInvalid<S>(S);

type FixResponse<B> = fn(http::Response<B>) -> http::Response<B>;

impl<S, B, RB> tower::Service<http::Request<B>> for DecodeErrorsAreInvalid<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, FixResponse<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        self.0.call(req).map_ok(fix_decode_error as FixResponse<RB>)
    }
}

fn fix_decode_error<B>(mut resp: http::Response<B>) -> http::Response<B> {
    if let Some(fixed) = Status::from_header_map(resp.headers())
        .as_ref()
        .and_then(decode_error_as_invalid)
    {
        let _ = fixed.add_header(resp.headers_mut());
    }
    resp
}

macro_rules! impl_api {
    ($trait:ident, $ty:ty, $list:ty, $event:ty $(, $extra:item)*) => {
        #[tonic::async_trait]
        impl $trait for Api {
            async fn create(&self, r: Request<$ty>) -> Res<$ty> { self.do_create(r).await }
            async fn get(&self, r: Request<GetRequest>) -> Res<$ty> { self.do_get(r) }
            async fn list(&self, r: Request<ListRequest>) -> Res<$list> { self.do_list::<$ty>(r).await }
            async fn update(&self, r: Request<$ty>) -> Res<$ty> { self.do_update(r, false).await }
            async fn update_status(&self, r: Request<$ty>) -> Res<$ty> { self.do_update(r, true).await }
            async fn delete(&self, r: Request<DeleteRequest>) -> Res<$ty> { self.do_delete(r).await }
            type WatchStream = WatchStream<$event>;
            async fn watch(&self, r: Request<WatchRequest>) -> Res<Self::WatchStream> { self.do_watch::<$ty>(r) }
            $($extra)*
        }
    };
}

impl_api!(
    NodeApi,
    Node,
    NodeList,
    NodeEvent,
    async fn load_image(&self, r: Request<tonic::Streaming<ImageChunk>>) -> Res<LoadImageResponse> {
        self.do_load_image(r).await
    }
);
impl_api!(ServiceApi, Service, ServiceList, ServiceEvent);
impl_api!(EndpointsApi, Endpoints, EndpointsList, EndpointsEvent);
impl_api!(NamespaceApi, Namespace, NamespaceList, NamespaceEvent);
impl_api!(ConfigMapApi, ConfigMap, ConfigMapList, ConfigMapEvent);
impl_api!(SecretApi, Secret, SecretList, SecretEvent);
impl_api!(EventApi, Event, EventList, EventEvent);
impl_api!(ReplicaSetApi, ReplicaSet, ReplicaSetList, ReplicaSetEvent);
impl_api!(DeploymentApi, Deployment, DeploymentList, DeploymentEvent);
impl_api!(LeaseApi, Lease, LeaseList, LeaseEvent);
impl_api!(
    PodApi,
    Pod,
    PodList,
    PodEvent,
    type LogsStream = ReceiverStream<Result<LogChunk, Status>>;,
    async fn logs(&self, r: Request<LogsRequest>) -> Res<Self::LogsStream> {
        self.do_logs(r).await
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_dialed_only_on_their_registered_address() {
        use kube_lite_proto::v1::{NodeSpec, NodeStatus};
        let node = Node {
            spec: Some(NodeSpec {
                address: "192.168.1.2".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                address: "192.168.1.2".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            agent_authority("http://192.168.1.2:10250", &node).unwrap(),
            "192.168.1.2:10250"
        );
        assert_eq!(
            agent_authority("https://127.0.0.1:4000", &node).unwrap(),
            "127.0.0.1:4000"
        );
        let e = agent_authority("http://10.9.9.9:22", &node).unwrap_err();
        assert!(e.contains("not on the node's address"), "{e}");
        assert!(agent_authority("http://evil.example:80", &node).is_err());
        assert!(agent_authority("", &node).is_err());
    }

    #[test]
    fn only_decode_errors_become_invalid_argument() {
        let decode = Status::internal(
            "failed to decode Protobuf message: Pod.metadata: invalid wire type value: 7",
        );
        let fixed = decode_error_as_invalid(&decode).expect("mapped");
        assert_eq!(fixed.code(), Code::InvalidArgument);
        assert_eq!(
            fixed.message(),
            "request body: failed to decode Protobuf message: Pod.metadata: invalid wire type value: 7"
        );
        assert!(decode_error_as_invalid(&Status::internal("store failed")).is_none());
        assert!(decode_error_as_invalid(&Status::out_of_range("too old; relist")).is_none());
        assert!(decode_error_as_invalid(&Status::not_found(DECODE_ERROR_PREFIX)).is_none());
    }

    #[test]
    fn requests_over_the_limit_are_resource_exhausted_naming_it() {
        let st = Status::out_of_range(
            "Error, decoded message length too large: found 3300123 bytes, the limit is: 3145728 bytes",
        );
        let fixed = decode_error_as_invalid(&st).expect("mapped");
        assert_eq!(fixed.code(), Code::ResourceExhausted);
        assert_eq!(
            fixed.message(),
            "request too large: 3300123 bytes, the request limit is 3145728 bytes"
        );
        let resp = fix_decode_error::<()>(st.into_http());
        let st = Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(st.code(), Code::ResourceExhausted);
    }

    #[test]
    fn the_layer_rewrites_trailers_only_decode_answers() {
        let resp: http::Response<()> =
            Status::internal(format!("{DECODE_ERROR_PREFIX}: buffer underflow")).into_http();
        let resp = fix_decode_error(resp);
        let st = Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(st.code(), Code::InvalidArgument);
        let ok: http::Response<()> = http::Response::new(());
        assert!(
            fix_decode_error(ok).headers().is_empty(),
            "OK answers untouched"
        );
    }
}
