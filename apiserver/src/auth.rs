//! Security (issue 14): the apiserver's certificates and tokens in its data directory
//! ([`Security::load_or_create`]), the admin kubeconfig it writes, and authentication
//! of every request ([`AuthnLayer`]).
//!
//! Files (keys and tokens 0600):
//! - `pki/ca.crt`, `pki/ca.key`: the cluster CA, made at first start (or brought: an
//!   existing pair is used, as kubeadm does).
//! - `pki/apiserver.crt|key`: the serving certificate, issued anew at every start for
//!   the listen address, `localhost`, `127.0.0.1` and every `--tls-san`.
//! - `pki/admin.crt|key`: the admin client certificate (`kube-lite:admin`,
//!   `system:masters`); `pki/apiserver-kubelet-client.crt|key`: what the apiserver
//!   presents to node agents.
//! - `admin-token`: a bearer token of the admin; `join-token`: what nodes join with.
//! - `admin.kubeconfig`: the standard kubeconfig (CA, server, admin certificate), as
//!   k3s writes `k3s.yaml`.
//!
//! Authentication, per request: the health service is anonymous, and so is the node
//! bootstrap's `Join` (its join token is checked by the handler); anything else needs a
//! client certificate issued by the CA (the TLS layer verified it; its holder arrives as
//! [`PeerIdentity`]) or `authorization: Bearer <admin token>`. Otherwise
//! UNAUTHENTICATED. The caller's [`Identity`] goes into the request's extensions for the
//! handlers (and REST) to authorize.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use kube_lite_pki::{self as pki, Ca, CertKey, Identity};
use tonic::codegen::http;
use tonic::Status;

use crate::config::Config;
use crate::conn::PeerIdentity;

/// The gRPC path prefix that answers anonymous callers.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// The one bootstrap method anonymous callers may call (with a join token).
pub const JOIN_PATH: &str = "/kubelite.v1.NodeBootstrap/Join";

/// The loaded security material of a secure apiserver.
pub struct Security {
    pub ca: Ca,
    pub admin_token: String,
    pub join_token: String,
    pub tls: Arc<rustls::ServerConfig>,
    /// The certificate the apiserver presents to node agents.
    pub kubelet_client: CertKey,
    pub kubeconfig_path: PathBuf,
    pub node_cert_validity: std::time::Duration,
}

fn read_or_make_token(path: &Path, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(t) = given {
        let t = t.trim();
        anyhow::ensure!(
            t.len() >= 16,
            "the join token must be at least 16 characters"
        );
        pki::write_private(path, t.as_bytes())?;
        return Ok(t.to_string());
    }
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let t = pki::random_token()?;
            pki::write_private(path, t.as_bytes())?;
            Ok(t)
        }
    }
}

fn load_or_issue_client(
    ca: &Ca,
    dir: &Path,
    name: &str,
    user: &str,
    group: Option<&str>,
    fresh_ca: bool,
) -> anyhow::Result<CertKey> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if !fresh_ca {
        if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
            let ok = pki::cert_info_pem(&c)
                .map(|i| !i.needs_renewal(pki::now_unix()))
                .unwrap_or(false);
            if ok {
                return Ok(CertKey {
                    cert_pem: c,
                    key_pem: k,
                });
            }
        }
    }
    let ck = ca.issue_client(user, group, pki::CERT_VALIDITY)?;
    pki::write_private(&key, ck.key_pem.as_bytes())?;
    pki::write_public(&crt, ck.cert_pem.as_bytes())?;
    Ok(ck)
}

/// The names the serving certificate is for.
pub fn serving_names(listen: Option<SocketAddr>, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(a) = listen {
        if !a.ip().is_unspecified() {
            names.push(a.ip().to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names.dedup();
    names
}

/// The server URL written into the admin kubeconfig.
pub fn kubeconfig_server(cfg: &Config, listen: Option<SocketAddr>) -> String {
    if let Some(s) = &cfg.kubeconfig_server {
        return s.clone();
    }
    match listen {
        Some(a) if a.ip().is_unspecified() => format!("https://127.0.0.1:{}", a.port()),
        Some(a) => format!("https://{a}"),
        None => "https://127.0.0.1:6443".into(),
    }
}

/// A kubeconfig (the standard format) for `server`, trusting `ca_pem`, authenticating
/// with `cred`.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, cred: &CertKey) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kube-lite\n\
         \x20 cluster:\n\
         \x20   certificate-authority-data: {ca}\n\
         \x20   server: {server}\n\
         users:\n\
         - name: kube-lite-admin\n\
         \x20 user:\n\
         \x20   client-certificate-data: {crt}\n\
         \x20   client-key-data: {key}\n\
         contexts:\n\
         - name: kube-lite\n\
         \x20 context:\n\
         \x20   cluster: kube-lite\n\
         \x20   user: kube-lite-admin\n\
         current-context: kube-lite\n\
         preferences: {{}}\n",
        ca = pki::b64(ca_pem.as_bytes()),
        crt = pki::b64(cred.cert_pem.as_bytes()),
        key = pki::b64(cred.key_pem.as_bytes()),
    )
}

impl Security {
    /// Loads what exists in `cfg.data_dir`, makes what does not (see the module doc).
    pub fn load_or_create(cfg: &Config, listen: Option<SocketAddr>) -> anyhow::Result<Security> {
        let dir = cfg.data_dir.join("pki");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let (ca, fresh) = Ca::load_or_create(&dir).context("cluster CA")?;
        if fresh {
            tracing::info!(ca = %dir.join("ca.crt").display(), "created the cluster CA");
        }
        let names = serving_names(listen, &cfg.tls_sans);
        // Issued anew each start (for the current names); kept in memory, the files
        // are for people (written best-effort: a full disk must not stop a restart).
        let serving = ca.issue_server(&names, pki::CERT_VALIDITY)?;
        if let Err(e) = pki::write_private(&dir.join("apiserver.key"), serving.key_pem.as_bytes())
            .and_then(|_| {
                pki::write_public(&dir.join("apiserver.crt"), serving.cert_pem.as_bytes())
            })
        {
            tracing::warn!(error = %e, "cannot write the serving certificate files (serving anyway)");
        }
        let admin = load_or_issue_client(
            &ca,
            &dir,
            "admin",
            pki::ADMIN_USER,
            Some(pki::ADMIN_GROUP),
            fresh,
        )?;
        let kubelet_client = load_or_issue_client(
            &ca,
            &dir,
            "apiserver-kubelet-client",
            pki::APISERVER_CLIENT_USER,
            None,
            fresh,
        )?;
        let admin_token = read_or_make_token(&cfg.data_dir.join("admin-token"), None)?;
        let join_token =
            read_or_make_token(&cfg.data_dir.join("join-token"), cfg.join_token.as_deref())?;
        if let Some(f) = &cfg.export_ca {
            pki::write_public(f, ca.cert_pem().as_bytes())
                .with_context(|| format!("exporting the CA certificate to {}", f.display()))?;
        }
        let tls = pki::server_config(ca.cert_pem(), &serving, pki::ClientAuth::Optional)?;
        let kubeconfig_path = cfg.data_dir.join("admin.kubeconfig");
        let server = kubeconfig_server(cfg, listen);
        let yaml = kubeconfig_yaml(&server, ca.cert_pem(), &admin);
        let current = std::fs::read_to_string(&kubeconfig_path).ok();
        if current.as_deref() != Some(yaml.as_str()) {
            match pki::write_private(&kubeconfig_path, yaml.as_bytes()) {
                Ok(()) => {}
                Err(e) if current.is_some() => {
                    tracing::warn!(error = %e, "cannot update admin.kubeconfig (serving anyway)")
                }
                Err(e) => return Err(e).context("writing admin.kubeconfig"),
            }
        }
        tracing::info!(
            kubeconfig = %kubeconfig_path.display(),
            join_token_file = %cfg.data_dir.join("join-token").display(),
            sans = ?names,
            "TLS and authentication on"
        );
        Ok(Security {
            ca,
            admin_token,
            join_token,
            tls: Arc::new(tls),
            kubelet_client,
            kubeconfig_path,
            node_cert_validity: cfg.node_cert_validity,
        })
    }
}

/// How a request authenticated (the pure part of [`Authn`]).
pub fn authenticate(
    path: &str,
    peer: Option<&PeerIdentity>,
    authorization: Option<&[u8]>,
    admin_token: &str,
) -> Result<Option<Identity>, Status> {
    if path.starts_with(HEALTH_PREFIX) || path == JOIN_PATH {
        return Ok(peer.map(|p| p.0.clone()));
    }
    if let Some(p) = peer {
        return Ok(Some(p.0.clone()));
    }
    match authorization {
        None => Err(Status::unauthenticated(
            "no credentials: present a client certificate issued by the cluster CA or \
             `authorization: Bearer <token>`",
        )),
        Some(h) => {
            let token = h
                .strip_prefix(b"Bearer ")
                .or_else(|| h.strip_prefix(b"bearer "))
                .map(|t| t.trim_ascii());
            match token {
                Some(t) if pki::secret_eq(t, admin_token.as_bytes()) => Ok(Some(Identity::admin())),
                Some(_) => Err(Status::unauthenticated("invalid bearer token")),
                None => Err(Status::unauthenticated(
                    "unsupported authorization scheme (want `Bearer <token>`)",
                )),
            }
        }
    }
}

/// The authentication layer (around every gRPC service); `None`: insecure mode, every
/// request passes with no identity.
#[derive(Clone)]
pub struct AuthnLayer {
    pub admin_token: Option<Arc<str>>,
}

impl<S> tower::Layer<S> for AuthnLayer {
    type Service = Authn<S>;
    fn layer(&self, inner: S) -> Authn<S> {
        Authn {
            inner,
            admin_token: self.admin_token.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    admin_token: Option<Arc<str>>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authn<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFut<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().remove::<Identity>();
        let Some(admin_token) = &self.admin_token else {
            return Box::pin(self.inner.call(req));
        };
        let decided = authenticate(
            req.uri().path(),
            req.extensions().get::<PeerIdentity>(),
            req.headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            admin_token,
        );
        match decided {
            Ok(id) => {
                if let Some(id) = id {
                    req.extensions_mut().insert(id);
                }
                Box::pin(self.inner.call(req))
            }
            Err(st) => {
                tracing::debug!(
                    path = req.uri().path(),
                    reason = st.message(),
                    "unauthenticated request"
                );
                Box::pin(std::future::ready(Ok(st.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn who_is_calling() {
        let tok = "s3cret-token-0123456789";
        let node = PeerIdentity(Identity::node("n1"));
        let path = "/kubelite.v1.PodApi/List";
        assert_eq!(
            authenticate(path, Some(&node), None, tok).unwrap(),
            Some(Identity::node("n1"))
        );
        assert_eq!(
            authenticate(path, None, Some(b"Bearer s3cret-token-0123456789"), tok).unwrap(),
            Some(Identity::admin())
        );
        let e = authenticate(path, None, Some(b"Bearer garbage"), tok).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.message(), "invalid bearer token");
        let e = authenticate(path, None, None, tok).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = authenticate(path, None, Some(b"Basic eDp5"), tok).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // Reflection needs credentials too.
        assert!(authenticate(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            None,
            None,
            tok
        )
        .is_err());
        // Health and Join are anonymous.
        assert_eq!(
            authenticate("/grpc.health.v1.Health/Check", None, None, tok).unwrap(),
            None
        );
        assert_eq!(authenticate(JOIN_PATH, None, None, tok).unwrap(), None);
    }

    #[test]
    fn kubeconfig_is_the_standard_shape() {
        let ca = Ca::generate().unwrap();
        let admin = ca
            .issue_client(pki::ADMIN_USER, Some(pki::ADMIN_GROUP), pki::CERT_VALIDITY)
            .unwrap();
        let y = kubeconfig_yaml("https://127.0.0.1:6443", ca.cert_pem(), &admin);
        assert!(y.starts_with("apiVersion: v1\nkind: Config\nclusters:\n- name: kube-lite\n  cluster:\n    certificate-authority-data: "));
        assert!(y.contains("\n    server: https://127.0.0.1:6443\n"));
        assert!(y.contains("\ncurrent-context: kube-lite\n"));
    }

    #[test]
    fn serving_names_cover_loopback_and_the_listen_address() {
        let n = serving_names(Some("10.1.2.3:6443".parse().unwrap()), &["api".into()]);
        assert_eq!(n, ["localhost", "127.0.0.1", "10.1.2.3", "api"]);
        let n = serving_names(Some("0.0.0.0:6443".parse().unwrap()), &[]);
        assert_eq!(n, ["localhost", "127.0.0.1"]);
    }
}
