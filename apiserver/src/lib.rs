//! kube-lite apiserver: the gRPC API over an embedded sled store.
//!
//! A short tour:
//! - [`store`]: the single writer task (group commit into sled, one cluster-wide
//!   revision per change), the committed read view, and the watch hub (ring buffer of
//!   recent changes + live broadcast).
//! - [`ops`]: the write operations (create / update / update-status / delete) run
//!   inside the writer against its in-memory state.
//! - [`validation`]: defaults and validation (pure functions).
//! - [`controllers`]: node subnets, ClusterIPs, scheduler, endpoints, node health.
//! - [`watch`]: one task per Watch stream (backlog replay, filters, bookmarks).
//! - [`api`]: the gRPC services, generic over the four kinds ([`resource::Resource`]).
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
pub mod controllers;
pub mod error;
pub mod ops;
pub mod resource;
pub mod store;
pub mod validation;
pub mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube_lite_proto::v1::{
    endpoints_api_server::EndpointsApiServer, node_api_server::NodeApiServer,
    pod_api_server::PodApiServer, service_api_server::ServiceApiServer,
};
use tokio_stream::wrappers::TcpListenerStream;

pub use error::ApiError;

/// Largest request the server decodes (larger ones are refused by tonic with
/// OUT_OF_RANGE "decoded message length too large").
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Largest response the server encodes (a List of 10,000 pods is a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub node_subnet_prefix: u8,
    pub service_cidr: ipnet::Ipv4Net,
    /// Heartbeat older than this → node NotReady.
    pub node_grace_period: Duration,
    /// This long after NotReady → pods of the node are evicted.
    pub pod_eviction_timeout: Duration,
    pub bookmark_interval: Duration,
    /// Change-log revisions kept for Watch resume.
    pub watch_window: u64,
    /// Per-watcher bounded buffer, in events.
    pub watch_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./kube-lite-data"),
            cluster_cidr: "10.0.0.0/16".parse().expect("valid cidr"),
            node_subnet_prefix: 24,
            service_cidr: "10.96.0.0/16".parse().expect("valid cidr"),
            node_grace_period: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(60),
            bookmark_interval: Duration::from_secs(5),
            watch_window: 100_000,
            watch_buffer: 1024,
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves. Everything acknowledged is
/// on disk when it returns.
pub async fn serve(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_drain(cfg, listener, shutdown, Duration::from_secs(5)).await
}

/// [`serve`], waiting at most `drain` for open connections after `shutdown` (the
/// store is flushed either way: acknowledged writes are already durable).
pub async fn serve_with_drain(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    if cfg.node_subnet_prefix <= cfg.cluster_cidr.prefix_len() || cfg.node_subnet_prefix > 30 {
        anyhow::bail!(
            "node subnet prefix /{} does not fit in cluster CIDR {}",
            cfg.node_subnet_prefix,
            cfg.cluster_cidr
        );
    }
    let addr = listener.local_addr().ok();
    let (store, writer) = store::Store::open(cfg.clone())
        .await
        .with_context(|| format!("opening store in {}", cfg.data_dir.display()))?;
    let health_task = tokio::spawn(controllers::run_node_health(store.clone()));

    let api = api::Api::new(store.clone());
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<NodeApiServer<api::Api>>().await;
    reporter.set_serving::<PodApiServer<api::Api>>().await;
    reporter.set_serving::<ServiceApiServer<api::Api>>().await;
    reporter.set_serving::<EndpointsApiServer<api::Api>>().await;
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

    // On shutdown: tell open watch streams to end, let tonic drain in-flight requests
    // for a few seconds, then drop the remaining connections.
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    // Nagle off on every accepted connection (the builder's tcp_nodelay only applies
    // to listeners it binds itself): responses go out in one round trip.
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    tracing::info!(?addr, data_dir = %cfg.data_dir.display(), "apiserver serving");
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(svc!(NodeApiServer))
        .add_service(svc!(PodApiServer))
        .add_service(svc!(ServiceApiServer))
        .add_service(svc!(EndpointsApiServer))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = drain_rx.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown => {
            tracing::info!("shutting down: ending watches, draining requests");
            store.begin_shutdown();
            let _ = drain_tx.send(());
            match tokio::time::timeout(drain, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(?drain, "connections still open after the drain period; closing them");
                    Ok(())
                }
            }
        }
    };
    store.begin_shutdown();
    health_task.abort();
    // Stop the writer: it commits everything queued, flushes, and exits.
    store.stop_writer().await;
    let _ = writer.await;
    drop(api);
    tracing::info!("apiserver stopped; store flushed");
    result.context("gRPC server failed")?;
    Ok(())
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses "40s", "500ms", "2m", "1h", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 40s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[allow(dead_code)]
fn _assert_send(_: Arc<store::Store>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }
}
