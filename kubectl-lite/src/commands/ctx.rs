//! What every command shares: the connection, the namespace and its rule, stdout.

use super::errors::{status_error, unreachable};
use crate::api::Api;
use anyhow::{anyhow, Result};
use std::io::Write;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// Connection and defaults shared by every command.
pub struct Ctx {
    pub ch: Channel,
    pub server: String,
    pub namespace: String,
    pub explicit_namespace: bool,
}

impl Ctx {
    /// A gRPC status → one line naming the server when it cannot be reached (see
    /// [`status_error`]).
    pub fn error<T: Api>(&self, what: &str, name: &str, s: Status) -> anyhow::Error {
        status_error::<T>(&self.server, what, name, s)
    }

    /// The namespace a request for one `T` goes to ("" for cluster-scoped kinds).
    pub fn ns_for<T: Api>(&self) -> String {
        if T::NAMESPACED {
            self.namespace.clone()
        } else {
            String::new()
        }
    }

    /// One object by name (`pods "web" not found` when it is not there).
    pub async fn fetch<T: Api>(&self, name: &str) -> Result<T> {
        T::get(&self.ch, &self.ns_for::<T>(), name)
            .await
            .map_err(|s| self.error::<T>(&format!("get {}/{name}", T::SINGULAR), name, s))
    }
}

pub async fn connect(server: &str) -> Result<Channel> {
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let ep = Endpoint::from_shared(url)
        .map_err(|e| anyhow!("invalid --server {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    ep.connect()
        .await
        .map_err(|e| unreachable(server, &kube_lite_client::error_chain(&e)))
}

/// Writes to stdout; a closed pipe (`| head`) surfaces as an io error that `main` treats
/// as a quiet end instead of a panic.
pub fn out(args: std::fmt::Arguments) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)?;
    o.flush()
}
