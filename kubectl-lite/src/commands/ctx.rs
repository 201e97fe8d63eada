//! What every command shares: the connection, the namespace and its rule, stdout.

use super::errors::{status_error, unreachable};
use crate::api::Api;
use crate::api::{Bearer, Channel};
use anyhow::{anyhow, Result};
use kube_lite_client::kubeconfig::Resolved;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;
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

/// Connects as `r` says: TLS for `https://` (trusting its CA, or nothing verified with
/// skip-verify), presenting the client certificate, sending the bearer token.
pub async fn connect(r: &Resolved) -> Result<Channel> {
    let server = r.server.as_str();
    let bearer = Bearer::new(r.token.as_deref())?;
    let raw = if let Some(rest) = server.strip_prefix("http://") {
        let _ = rest;
        let ep = Endpoint::from_shared(server.to_string())
            .map_err(|e| anyhow!("invalid --server {server:?}: {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        ep.connect().await.map_err(|e| {
            let cause = kube_lite_client::error_chain(&e);
            unreachable(
                server,
                &format!(
                    "{cause} (a secure apiserver needs https:// and its CA: use its kubeconfig)"
                ),
            )
        })?
    } else if server.starts_with("https://") {
        let trust = match (&r.ca_pem, r.insecure_skip_tls_verify) {
            (_, true) => kube_lite_pki::Trust::SkipVerify,
            (Some(ca), false) => kube_lite_pki::Trust::Ca(ca.clone()),
            (None, false) => {
                return Err(anyhow!(
                "no CA to trust {server} with: use a kubeconfig with certificate-authority-data, \
                     --certificate-authority FILE, or --insecure-skip-tls-verify"
            ))
            }
        };
        let id = r.client_cert.as_ref().map(|(c, k)| kube_lite_pki::CertKey {
            cert_pem: c.clone(),
            key_pem: k.clone(),
        });
        let cfg = kube_lite_pki::client_config(&trust, id.as_ref())
            .map_err(|e| anyhow!("TLS settings for {server}: {e}"))?;
        kube_lite_client::connect_tls(server, Arc::new(cfg))
            .await
            .map_err(|e| {
                let cause = match &e {
                    kube_lite_client::ClientError::Connect { reason, .. } => reason.clone(),
                    e => e.to_string(),
                };
                if cause.contains("invalid peer certificate") {
                    anyhow!(
                        "the apiserver's certificate at {server} is not trusted ({cause}): \
                         use the cluster's kubeconfig or --certificate-authority"
                    )
                } else {
                    unreachable(server, &cause)
                }
            })?
    } else {
        return Err(anyhow!(
            "invalid --server {server:?}: want https://host:port (or http:// for --insecure servers)"
        ));
    };
    Ok(tonic::service::interceptor::InterceptedService::new(
        raw, bearer,
    ))
}

/// Writes to stdout; a closed pipe (`| head`) surfaces as an io error that `main` treats
/// as a quiet end instead of a panic.
pub fn out(args: std::fmt::Arguments) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)?;
    o.flush()
}
