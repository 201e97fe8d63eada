//! kube-lite API client: a connection helper, the four typed clients in one bundle, and
//! a [`watcher`] that turns List + Watch into one endless stream of events, relisting
//! when the server says the resume point is gone (OUT_OF_RANGE, Kubernetes' 410) and
//! reconnecting with back-off when the connection drops. [`Store`] is a reflector: it
//! applies those events to an in-memory map that is unit-testable without a server.
//!
//! The watcher is an explicit state machine (after kube-runtime's `watcher.rs`):
//! `Empty` → list → `Watching { from }` → events …; an OUT_OF_RANGE error resets to
//! `Empty`, any other error waits (back-off) and resumes from the last revision seen.

pub mod kubeconfig;
pub mod tls;
mod watcher;

pub use tls::{connect_tls, connect_tls_lazy};

pub use watcher::{
    watcher, watcher_from, Event, ListResult, RawEvent, RawStream, Resource, Store, WatchApi,
    WatchParams,
};

use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, lease_api_client::LeaseApiClient,
    node_api_client::NodeApiClient, pod_api_client::PodApiClient,
    service_api_client::ServiceApiClient,
};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The address clients use when none is given (kubectl-lite's default).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the apiserver at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{0}")]
    Status(#[from] tonic::Status),
}

fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Endpoint::from_shared(url.clone())
        .map(|e| {
            e.connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true)
        })
        .map_err(|e| ClientError::BadUrl {
            url,
            reason: e.to_string(),
        })
}

/// Connects now; fails with [`ClientError::Connect`] naming the address when nobody answers.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    let ep = endpoint(url)?;
    ep.connect().await.map_err(|e| ClientError::Connect {
        url: url.to_string(),
        reason: error_chain(&e),
    })
}

/// A channel that connects on first use and reconnects by itself after failures:
/// what long-running agents want.
pub fn connect_lazy(url: &str) -> Result<Channel, ClientError> {
    Ok(endpoint(url)?.connect_lazy())
}

/// The innermost cause of an error, for one-line messages ("Connection refused (os error 111)").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Largest response the clients accept: a List of 10,000+ pods is far beyond tonic's
/// default 4 MiB (the apiserver sends up to 256 MiB).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The typed clients over one HTTP/2 connection.
#[derive(Clone)]
pub struct Clients {
    pub nodes: NodeApiClient<Channel>,
    pub pods: PodApiClient<Channel>,
    pub services: ServiceApiClient<Channel>,
    pub endpoints: EndpointsApiClient<Channel>,
    pub leases: LeaseApiClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Clients {
        Clients {
            nodes: NodeApiClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            pods: PodApiClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            services: ServiceApiClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            endpoints: EndpointsApiClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            leases: LeaseApiClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    pub async fn connect(url: &str) -> Result<Clients, ClientError> {
        Ok(Clients::new(connect(url).await?))
    }
}
