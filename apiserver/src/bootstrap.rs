//! The NodeBootstrap service (issue 14): a node joins with the join token and a CSR and
//! gets its certificate (`system:node:<name>`, `system:nodes`); a node renews with its
//! current certificate. Every answer carries the CA so the agent can keep it.

use std::sync::Arc;

use kube_lite_pki::{self as pki, Identity};
use kube_lite_proto::v1::{
    node_bootstrap_server::NodeBootstrap, JoinRequest, NodeCredentials, RenewRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::Security;
use crate::validation::is_dns1123_subdomain;

/// Longest CSR accepted (a P-256 CSR with a few names is well under 1 KiB).
pub const MAX_CSR_BYTES: usize = 16 << 10;

#[derive(Clone)]
pub struct Bootstrap {
    pub security: Arc<Security>,
}

impl Bootstrap {
    fn issue(&self, node: &str, csr_pem: &str) -> Result<NodeCredentials, Status> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "csr_pem: {} bytes (at most {MAX_CSR_BYTES})",
                csr_pem.len()
            )));
        }
        let cert = self
            .security
            .ca
            .sign_node_csr(csr_pem, node, self.security.node_cert_validity)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let not_after = pki::cert_info_pem(&cert)
            .map(|i| i.not_after)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(NodeCredentials {
            certificate_pem: cert,
            ca_pem: self.security.ca.cert_pem().to_string(),
            not_after,
        })
    }
}

#[tonic::async_trait]
impl NodeBootstrap for Bootstrap {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<NodeCredentials>, Status> {
        let r = req.into_inner();
        if !pki::secret_eq(
            r.token.trim().as_bytes(),
            self.security.join_token.as_bytes(),
        ) {
            tracing::warn!(node = %r.node_name.chars().take(64).collect::<String>(), "join refused: wrong join token");
            return Err(Status::unauthenticated("join: invalid join token"));
        }
        if !is_dns1123_subdomain(&r.node_name) {
            return Err(Status::invalid_argument(
                "node_name: must be a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.', at most 253 characters)",
            ));
        }
        let creds = self.issue(&r.node_name, &r.csr_pem)?;
        tracing::info!(node = %r.node_name, not_after = creds.not_after, "node joined: certificate issued");
        Ok(Response::new(creds))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<NodeCredentials>, Status> {
        let id = req.extensions().get::<Identity>().cloned();
        let Some(node) = id.as_ref().and_then(|i| i.node_name()).map(str::to_string) else {
            return Err(Status::permission_denied(format!(
                "User {:?} cannot renew: only node identities renew their certificate",
                id.map(|i| i.user).unwrap_or_default()
            )));
        };
        let creds = self.issue(&node, &req.into_inner().csr_pem)?;
        tracing::info!(%node, not_after = creds.not_after, "node certificate renewed");
        Ok(Response::new(creds))
    }
}
