//! The Kubernetes REST API, served beside gRPC on the same listener, from the same
//! handlers ([`crate::api::Api`]: validation, store, watch), so the real kubectl and
//! Kubernetes client libraries work against kube-lite.
//!
//! A short tour: [`Split`] sends `application/grpc*` requests to tonic and every other
//! one to the axum [`router`]; [`discovery`] answers `/version`, `/api`, `/apis`, the
//! resource lists and `/healthz|/readyz|/livez`; [`openapi`] serves `/openapi/v3` for
//! the served kinds (derived from the conversion layer, `kube_lite_k8s`); [`path`]
//! parses resource paths; [`handler`] serves one kind (get, list, watch, create,
//! update, patch, delete, deletecollection, `/status`, pods' `/log` and `/binding`),
//! generic over [`kube_lite_k8s::K8sKind`]; [`table`] renders server-side Tables;
//! [`patch`] applies the patch types; [`status`] turns errors into `Status` objects;
//! [`query`] parses parameters and field selectors. Everything but `handler` and the
//! routing is pure and unit-tested.
//!
//! Adding a kind: its `K8sKind` file in `kube_lite_k8s`, one line in [`served`].

pub mod discovery;
pub mod exec;
pub mod handler;
pub mod openapi;
pub mod patch;
pub mod path;
pub mod query;
pub mod status;
pub mod table;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Endpoints, Event, Namespace, Node, Pod, ReplicaSet, Secret, Service,
};
use serde_json::Value;

use crate::api::Api;
use crate::store::Store;

/// What discovery and OpenAPI need to know of a served kind.
#[derive(Debug, Clone)]
pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    pub merge_keys: &'static [(&'static str, &'static str)],
    /// The JSON of the kind's schema sample (every converted field set).
    pub sample: Value,
}

impl KindInfo {
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A request for one kind, as [`handler`] gets it.
pub struct Req {
    /// The request's extensions: the caller's `Identity` (from [`authn`]).
    pub ext: axum::http::Extensions,
    pub method: Method,
    pub target: path::Target,
    pub query: query::Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One served kind.
pub trait Served: Send + Sync {
    fn info(&self) -> &KindInfo;
    fn handle(&self, rest: Rest, req: Req) -> BoxFuture<Response<Body>>;
}

/// The served kinds (one line per kind).
pub fn served() -> Vec<Arc<dyn Served>> {
    vec![
        handler::served::<Pod>(),
        handler::served::<Service>(),
        handler::served::<Endpoints>(),
        handler::served::<Node>(),
        handler::served::<Namespace>(),
        handler::served::<ConfigMap>(),
        handler::served::<Secret>(),
        handler::served::<Event>(),
        handler::served::<Deployment>(),
        handler::served::<ReplicaSet>(),
    ]
}

/// The REST face's state.
#[derive(Clone)]
pub struct Rest {
    pub api: Api,
    pub store: Arc<Store>,
    pub kinds: Arc<Vec<Arc<dyn Served>>>,
    openapi: Arc<OnceLock<openapi::Docs>>,
    /// Set when the server authenticates (TLS, issue 14): the admin bearer token.
    admin_token: Option<Arc<str>>,
    /// What `pods/{name}/exec` runs commands through ([`Rest::with_exec`]).
    pub exec: Option<Arc<dyn exec::ExecBackend>>,
}

impl Rest {
    pub fn new(api: Api, store: Arc<Store>, admin_token: Option<Arc<str>>) -> Rest {
        Rest {
            api,
            store,
            kinds: Arc::new(served()),
            openapi: Arc::new(OnceLock::new()),
            admin_token,
            exec: None,
        }
    }
    /// `pods/{name}/exec` through `backend` (the PodExec proxy to the node agents).
    pub fn with_exec(mut self, backend: Arc<dyn exec::ExecBackend>) -> Rest {
        self.exec = Some(backend);
        self
    }
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<dyn Served>> {
        self.kinds
            .iter()
            .find(|k| {
                let i = k.info();
                i.group == group && i.version == version && i.plural == plural
            })
            .cloned()
    }
    pub fn infos(&self) -> Vec<KindInfo> {
        self.kinds.iter().map(|k| k.info().clone()).collect()
    }
    pub fn openapi(&self) -> &openapi::Docs {
        self.openapi
            .get_or_init(|| openapi::Docs::build(&self.infos()))
    }
}

/// A JSON response.
pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn failure_response(f: status::Failure) -> Response<Body> {
    json_response(f.code, &f.body)
}

/// The router of the REST face.
pub fn router(rest: Rest) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/version/", get(discovery::version))
        .route("/healthz", get(discovery::ok))
        .route("/readyz", get(discovery::ok))
        .route("/livez", get(discovery::ok))
        .route("/api", get(discovery::api_versions))
        .route("/api/", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/", get(discovery::api_groups))
        .route("/openapi/v3", get(openapi::root))
        .route("/openapi/v3/", get(openapi::root))
        .route("/openapi/v3/{*gv}", get(openapi::group_version))
        .fallback(resource)
        .layer(axum::middleware::from_fn_with_state(rest.clone(), authn))
        .with_state(rest)
}

/// The same authentication as the gRPC face ([`crate::auth::authenticate`]: client
/// certificate or the admin bearer token); the caller's `Identity` goes into the
/// request's extensions, where the shared handlers authorize it. Health endpoints and
/// `/version` are open; a request without valid credentials is 401 Unauthorized.
async fn authn(
    axum::extract::State(rest): axum::extract::State<Rest>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    req.extensions_mut().remove::<kube_lite_pki::Identity>();
    if let Some(token) = &rest.admin_token {
        let path = req.uri().path();
        if !matches!(path, "/healthz" | "/readyz" | "/livez" | "/version") {
            let decided = crate::auth::authenticate(
                path,
                req.extensions().get::<crate::conn::PeerIdentity>(),
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                token,
            );
            match decided {
                Ok(Some(id)) => {
                    req.extensions_mut().insert(id);
                }
                Ok(None) => {}
                Err(st) => {
                    return failure_response(status::failure(401, "Unauthorized", st.message()))
                }
            }
        }
    }
    next.run(req).await
}

/// Every request under `/api/v1/...` and `/apis/{group}/{version}/...`.
async fn resource(
    axum::extract::State(rest): axum::extract::State<Rest>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    // Resource lists: /api/v1, /apis/apps/v1.
    if let Some(list) = discovery::resource_list(&rest, &path) {
        return list;
    }
    let Some(target) = path::parse(&path) else {
        return failure_response(status::not_found(format!(
            "the server could not find the requested resource ({path})"
        )));
    };
    let Some(kind) = rest.find(&target.group, &target.version, &target.resource) else {
        return failure_response(status::not_found(format!(
            "the server could not find the requested resource ({path})"
        )));
    };
    if target.resource == "pods" && target.sub.as_deref() == Some("exec") && target.group.is_empty()
    {
        if let (Some(ns), Some(name)) = (target.namespace.clone(), target.name.clone()) {
            return exec::serve(rest, parts, ns, name).await;
        }
    }
    let body = match axum::body::to_bytes(body, crate::MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return failure_response(status::failure(
                413,
                "RequestEntityTooLarge",
                &format!(
                    "request body: {e} (at most {} bytes)",
                    crate::MAX_REQUEST_BYTES
                ),
            ))
        }
    };
    let req = Req {
        ext: parts.extensions,
        method: parts.method,
        target,
        query: query::Query::parse(parts.uri.query()),
        headers: parts.headers,
        body,
    };
    kind.handle(rest, req).await.into_response()
}

/// Whether a request is gRPC (its content type is `application/grpc` or a variant).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Sends gRPC requests to `grpc` (tonic), every other one to `rest` (axum).
#[derive(Clone)]
pub struct Split<G> {
    pub grpc: G,
    pub rest: Router,
}

impl<G> tower::Service<Request<tonic::body::Body>> for Split<G>
where
    G: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    G::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        if is_grpc(req.headers()) {
            let mut g = self.grpc.clone();
            Box::pin(async move {
                futures::future::poll_fn(|cx| g.poll_ready(cx)).await?;
                g.call(req).await
            })
        } else {
            let mut r = self.rest.clone();
            Box::pin(async move {
                let resp = match tower::Service::call(&mut r, req).await {
                    Ok(resp) => resp,
                    Err(e) => match e {},
                };
                Ok(resp.map(tonic::body::Body::new))
            })
        }
    }
}
