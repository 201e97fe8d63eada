//! kube-lite apiserver: the gRPC API over an embedded sled store.
//!
//! A short tour, from the bottom up (a module only uses the ones listed before it):
//! - [`config`]: the settings ([`Config`]); [`error`]: the one error type.
//! - [`resource`]: the four kinds as one [`resource::Object`] enum, and
//!   [`resource::Stored`], what the store and gRPC layer add to core's `Resource`.
//! - [`validation`]: validation and Create preparation (pure functions; the defaults
//!   themselves are `kube_lite_core::defaults`).
//! - [`store`]: the single writer task (group commit into sled, one cluster-wide
//!   revision per change), the committed read view, and the watch hub (ring buffer of
//!   recent changes + live broadcast). Controllers plug in as [`store::Hook`]s; the
//!   store knows nothing else of them.
//! - [`ops`]: the write operations (create / update / update-status / delete) run
//!   inside the writer against its in-memory state.
//! - [`controllers`]: one file per controller (node subnets, ClusterIPs, node health,
//!   scheduler, endpoints), each a store hook with pure, unit-tested decisions.
//! - [`list`]: List paging (limit/continue tokens over a snapshot of the first page).
//! - [`watch`]: one task per Watch stream (backlog replay, filters, bookmarks).
//! - [`api`]: the gRPC services, generic over the four kinds ([`resource::Stored`]).
//! - [`exec`]: PodExec, exec sessions proxied to the pod's node agent ([`exec::proxy`]).
//! - [`rest`]: the Kubernetes REST API (discovery, OpenAPI, every verb, Tables,
//!   patches) over the same handlers, on the same listener (routed by content type).
//! - [`conn`]: the accept loop and each connection's life (connection and stream
//!   limits, handshake / idle / request timeouts, HTTP/2 keepalive, accept backoff).
//! - [`auth`] (certificates, tokens, admin kubeconfig, authentication layer),
//!   [`authz`] (who may do what: admins, nodes), [`bootstrap`] (node join/renew).
//! - [`serve`]: the testable entry point (`serve(cfg, listener, shutdown)`).
//!
//! Choices where the design left room:
//! - ClusterIPs are the first free host address of the service CIDR (10.96.0.1 first;
//!   the network and broadcast addresses are never used). An explicit `spec.cluster_ip`
//!   already held by another Service is INVALID_ARGUMENT ("… is already allocated to
//!   ns/name"), as in Kubernetes.
//! - Graceful pod deletion sets `metadata.deletion_timestamp` to the time of the delete
//!   request and `deletion_grace_period_seconds` to the grace; the agent's own clock runs
//!   the grace. A pod bound to a node that does not exist is removed at once.
//! - `DeleteRequest.grace_period_seconds`: -1 = the pod's default, 0 (the proto3 default)
//!   = immediate.
//! - Controllers write in the same batch as the change that triggered them, so e.g. a
//!   pod created with no node available already carries `Unschedulable` at the next
//!   revision, and an Endpoints update commits together with the pod status change.
//! - A pod Update that leaves `spec.node_name` empty keeps the binding.
//! - Durability: each group commit flushes sled and then fdatasyncs its data file.

pub mod api;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod config;
pub mod conn;
pub mod controllers;
pub mod error;
pub mod exec;
pub mod list;
pub mod malloc;
pub mod ops;
pub mod resource;
pub mod rest;
pub mod store;
pub mod validation;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube_lite_proto::v1::{
    config_map_api_server::ConfigMapApiServer, deployment_api_server::DeploymentApiServer,
    endpoints_api_server::EndpointsApiServer, event_api_server::EventApiServer,
    lease_api_server::LeaseApiServer, namespace_api_server::NamespaceApiServer,
    node_api_server::NodeApiServer, node_bootstrap_server::NodeBootstrapServer,
    pod_api_server::PodApiServer, pod_exec_server::PodExecServer,
    replica_set_api_server::ReplicaSetApiServer, secret_api_server::SecretApiServer,
    service_api_server::ServiceApiServer,
};

pub use config::Config;
pub use error::ApiError;

/// Largest request the server decodes, as Kubernetes' 3 MiB (larger ones are refused
/// with RESOURCE_EXHAUSTED "request too large: N bytes, the request limit is 3145728
/// bytes", see [`api::decode_error_as_invalid`]); a stored object is
/// limited to [`config::DEFAULT_MAX_OBJECT_BYTES`] (1.5 MiB) by the store.
pub const MAX_REQUEST_BYTES: usize = 3 << 20;
/// Largest response the server encodes (a List of 10,000 pods is a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Serves the API on `listener` until `shutdown` resolves. Everything acknowledged is
/// on disk when it returns.
pub async fn serve(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_drain(cfg, listener, shutdown, Duration::from_secs(5)).await
}

/// The binary's body: binds `listen` and serves `cfg` on a multi-thread runtime until
/// SIGTERM or Ctrl-C. It lives here, not in main.rs, and is neither async nor generic,
/// so the server's async code is compiled once, in this crate: an async or generic entry
/// point is instantiated by its caller, and the release build compiled the whole server
/// a second time in the binary.
pub fn run_until_signal(cfg: Config, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
        tracing::info!(%listen, "starting apiserver");
        serve(cfg, listener, shutdown_signal()).await
    })
}

/// Resolves at the first SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// [`serve`], waiting at most `drain` for open connections after `shutdown` (the
/// store is flushed either way: acknowledged writes are already durable).
pub async fn serve_with_drain(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    cfg.check().map_err(anyhow::Error::msg)?;
    let addr = listener.local_addr().ok();
    let hook_cfg = cfg.clone();
    let hooks = Box::new(move || controllers::all(&hook_cfg));
    let (store, writer) = store::Store::open(cfg.clone(), hooks)
        .await
        .with_context(|| format!("opening store in {}", cfg.data_dir.display()))?;
    store
        .write(ops::ensure_system_namespaces)
        .await
        .context("creating the namespaces default and kube-system")?;
    let ticks = tokio::spawn(controllers::run_ticks(store.clone()));
    let manager = controllers::manager::start(store.clone());
    let endpoints = controllers::endpoints::start(store.clone());

    let security = if cfg.insecure {
        tracing::warn!(
            "INSECURE MODE: plaintext, no authentication, no authorization: anyone who \
             reaches this port controls the cluster (and is root on every node)"
        );
        None
    } else {
        Some(Arc::new(
            auth::Security::load_or_create(&cfg, addr).context("setting up TLS")?,
        ))
    };
    let api = api::Api::with_security(store.clone(), security.clone());
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<NodeApiServer<api::Api>>().await;
    reporter.set_serving::<PodApiServer<api::Api>>().await;
    reporter.set_serving::<PodExecServer<api::Api>>().await;
    reporter.set_serving::<ServiceApiServer<api::Api>>().await;
    reporter.set_serving::<EndpointsApiServer<api::Api>>().await;
    reporter.set_serving::<NamespaceApiServer<api::Api>>().await;
    reporter.set_serving::<ConfigMapApiServer<api::Api>>().await;
    reporter.set_serving::<SecretApiServer<api::Api>>().await;
    reporter.set_serving::<EventApiServer<api::Api>>().await;
    reporter
        .set_serving::<ReplicaSetApiServer<api::Api>>()
        .await;
    reporter
        .set_serving::<DeploymentApiServer<api::Api>>()
        .await;
    reporter.set_serving::<LeaseApiServer<api::Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kube_lite_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kube_lite_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building reflection service")?;

    macro_rules! svc {
        ($server:ident) => {
            $server::new(api.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES)
        };
    }

    let routes = tonic::service::Routes::new(svc!(NodeApiServer))
        .add_service(svc!(PodApiServer))
        .add_service(
            PodExecServer::new(api.clone())
                .max_decoding_message_size(kube_lite_core::exec::MAX_EXEC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
        .add_service(svc!(ServiceApiServer))
        .add_service(svc!(EndpointsApiServer))
        .add_service(svc!(NamespaceApiServer))
        .add_service(svc!(ConfigMapApiServer))
        .add_service(svc!(SecretApiServer))
        .add_service(svc!(EventApiServer))
        .add_service(svc!(ReplicaSetApiServer))
        .add_service(svc!(DeploymentApiServer))
        .add_service(svc!(LeaseApiServer))
        .add_service(health_service.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1alpha.max_decoding_message_size(MAX_REQUEST_BYTES));
    let routes = match &security {
        Some(sec) => routes.add_service(
            NodeBootstrapServer::new(bootstrap::Bootstrap {
                security: sec.clone(),
            })
            .max_decoding_message_size(64 << 10),
        ),
        None => routes,
    }
    .prepare();
    let grpc = tower::Layer::layer(&api::DecodeErrorsAreInvalidLayer, routes);
    let admin_token: Option<std::sync::Arc<str>> =
        security.as_ref().map(|s| s.admin_token.as_str().into());
    let grpc = tower::Layer::layer(
        &auth::AuthnLayer {
            admin_token: admin_token.clone(),
        },
        grpc,
    );
    // One listener: gRPC by its content type, every other request to the REST face
    // (which authenticates the same credentials itself, answering 401 as a Status).
    let service = rest::Split {
        grpc,
        rest: rest::router(
            rest::Rest::new(api.clone(), store.clone(), admin_token)
                .with_exec(Arc::new(exec::RestExec(api.clone()))),
        ),
    };
    tracing::info!(?addr, data_dir = %cfg.data_dir.display(),  "apiserver serving");
    // On shutdown: tell open watch streams to end, let connections drain in-flight
    // requests for `drain`, then drop the remaining ones.
    let closing = store.clone();
    conn::serve(
        listener,
        service,
        conn::ConnLimits::of(&cfg),
        security.as_ref().map(|s| s.tls.clone()),
        async move {
            shutdown.await;
            tracing::info!("shutting down: ending watches, draining requests");
            closing.begin_shutdown();
        },
        drain,
    )
    .await;
    store.begin_shutdown();
    ticks.abort();
    manager.abort();
    endpoints.abort();
    // Stop the writer: it commits everything queued, flushes, and exits.
    store.stop_writer().await;
    let _ = writer.await;
    drop(api);
    tracing::info!("apiserver stopped; store flushed");
    Ok(())
}

#[allow(dead_code)]
fn _assert_send(_: Arc<store::Store>) {}
