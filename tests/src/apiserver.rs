//! In-process apiserver on 127.0.0.1 for tests: a real gRPC server over a real sled
//! store in a temporary directory. It runs on its own thread and Tokio runtime, so it
//! keeps serving even while a test's runtime is busy, and `Drop` can stop it cleanly.
//!
//! Secure by default (issue 14), as the binary is: TLS with a CA shared by every test
//! server of the process ([`test_pki`]), so `url` is `https://127.0.0.1:PORT` and
//! [`TestApiServer::channel`] (and the typed clients) authenticate as the admin with a
//! client certificate. The process's `KUBECONFIG` points at a kubeconfig with that CA
//! and admin certificate, so `kubectl-lite --server <url>` run by a test is trusted
//! and authenticated. [`TestApiServer::start_insecure`] (or `Config { insecure: true }`)
//! gives the plaintext mode.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use kube_lite_pki::{self as pki, Ca, CertKey};

use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, lease_api_client::LeaseApiClient,
    node_api_client::NodeApiClient, pod_api_client::PodApiClient,
    service_api_client::ServiceApiClient,
};
use tonic::transport::{Channel, Endpoint};

/// Tracing for tests (RUST_LOG, default "info" without sled/h2 noise). Idempotent.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,sled=warn,h2=warn,tower=warn,hyper=warn")
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The CA of every secure test server of this process, an admin certificate, and the
/// kubeconfig (`KUBECONFIG` is set to it when first made).
pub struct TestPki {
    pub ca: Ca,
    pub admin: CertKey,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
}

impl TestPki {
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }
    /// A certificate for node `name` (`system:node:<name>`) valid for `names`
    /// (its serving addresses), as a join would give it.
    pub fn node_cert(&self, name: &str, names: &[String]) -> CertKey {
        let (csr, key_pem) = pki::new_csr(names).expect("csr");
        let cert_pem = self
            .ca
            .sign_node_csr(&csr, name, pki::CERT_VALIDITY)
            .expect("sign node csr");
        CertKey { cert_pem, key_pem }
    }
    /// A client certificate for any user/group.
    pub fn client_cert(&self, user: &str, group: Option<&str>) -> CertKey {
        self.ca
            .issue_client(user, group, pki::CERT_VALIDITY)
            .expect("client cert")
    }
}

/// The process's test PKI (made once; its directory lives as long as the process).
pub fn test_pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kl-test-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test pki dir");
        let ca = Ca::generate().expect("test CA");
        ca.save(&dir).expect("save test CA");
        let admin = ca
            .issue_client(pki::ADMIN_USER, Some(pki::ADMIN_GROUP), pki::CERT_VALIDITY)
            .expect("admin cert");
        let kubeconfig = dir.join("kubeconfig");
        pki::write_private(
            &kubeconfig,
            apiserver::auth::kubeconfig_yaml("https://127.0.0.1:6443", ca.cert_pem(), &admin)
                .as_bytes(),
        )
        .expect("test kubeconfig");
        // Once, before any kubectl-lite child is spawned by this kit's users.
        std::env::set_var("KUBECONFIG", &kubeconfig);
        TestPki {
            ca,
            admin,
            kubeconfig,
            dir,
        }
    })
}

/// A TLS client config trusting the test CA, with `identity` (none: anonymous).
pub fn tls_config(identity: Option<&CertKey>) -> Arc<rustls::ClientConfig> {
    Arc::new(
        pki::client_config(&pki::Trust::Ca(test_pki().ca_pem().to_string()), identity)
            .expect("tls client config"),
    )
}

/// A lazily connected admin channel to `url` (a test server's): TLS with the test CA
/// and admin certificate for `https://`, plaintext for `http://`.
pub fn channel_for(url: &str) -> Channel {
    if url.starts_with("https://") {
        kube_lite_client::connect_tls_lazy(url, tls_config(Some(&test_pki().admin))).expect("url")
    } else {
        Endpoint::from_shared(url.to_string())
            .expect("url")
            .connect_lazy()
    }
}

/// [`channel_for`], connected now (the TLS handshake is not left to the first call).
pub async fn connect_for(url: &str) -> Channel {
    try_connect_for(url).await.expect("connect")
}

/// [`connect_for`] that reports a failure (a server that is down) instead of panicking.
pub async fn try_connect_for(url: &str) -> Result<Channel, String> {
    if url.starts_with("https://") {
        kube_lite_client::connect_tls(url, tls_config(Some(&test_pki().admin)))
            .await
            .map_err(|e| e.to_string())
    } else {
        Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())
    }
}

/// TLS settings for a stand-in node agent of node `node` on 127.0.0.1: its certificate
/// (from the test CA, as a join gives it) and client certificates required.
pub fn agent_server_tls(node: &str) -> tonic::transport::ServerTlsConfig {
    let cert = test_pki().node_cert(node, &["127.0.0.1".into()]);
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &cert.cert_pem,
            &cert.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(test_pki().ca_pem()))
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<anyhow::Result<()>>,
    thread: std::thread::JoinHandle<()>,
}

pub struct TestApiServer {
    /// `https://127.0.0.1:PORT` (`http://` in insecure mode)
    pub url: String,
    pub addr: SocketAddr,
    cfg: apiserver::Config,
    running: Option<Running>,
    // Dropped last (after the server stopped).
    _dir: Option<tempfile::TempDir>,
}

impl TestApiServer {
    /// A server with default settings on a fresh temporary data directory.
    pub async fn start() -> TestApiServer {
        TestApiServer::start_with(apiserver::Config::default()).await
    }

    /// A plaintext server with no authentication (`--insecure`).
    pub async fn start_insecure() -> TestApiServer {
        TestApiServer::start_with(apiserver::Config {
            insecure: true,
            ..Default::default()
        })
        .await
    }

    /// A server with `cfg`; when `cfg.data_dir` is the default ("./kube-lite-data") a
    /// temporary directory is used instead. Unless `cfg.insecure`, the data directory
    /// gets the test CA ([`test_pki`]) and a join token before the server starts.
    pub async fn start_with(mut cfg: apiserver::Config) -> TestApiServer {
        init_tracing();
        let mut dir = None;
        if cfg.data_dir == apiserver::Config::default().data_dir {
            let d = tempfile::Builder::new()
                .prefix("kl-apiserver-")
                .tempdir()
                .expect("temp dir");
            cfg.data_dir = d.path().to_path_buf();
            dir = Some(d);
        }
        if !cfg.insecure {
            let pki_dir = cfg.data_dir.join("pki");
            if !pki_dir.join("ca.key").exists() {
                test_pki()
                    .ca
                    .save(&pki_dir)
                    .expect("test CA into the data dir");
            }
            let tok = cfg.data_dir.join("join-token");
            if cfg.join_token.is_none() && !tok.exists() {
                pki::write_private(&tok, pki::random_token().expect("token").as_bytes())
                    .expect("join token");
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if cfg.insecure { "http" } else { "https" };
        let mut s = TestApiServer {
            url: format!("{scheme}://{addr}"),
            addr,
            cfg,
            running: None,
            _dir: dir,
        };
        s.launch(listener);
        s
    }

    fn launch(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let cfg = self.cfg.clone();
        let thread = std::thread::Builder::new()
            .name(format!("apiserver-{}", self.addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let r = rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    apiserver::serve_with_drain(
                        cfg,
                        listener,
                        async move {
                            let _ = stop_rx.await;
                        },
                        Duration::from_millis(300),
                    )
                    .await
                });
                if let Err(e) = &r {
                    tracing::error!(error = %e, "test apiserver failed");
                }
                rt.shutdown_timeout(Duration::from_secs(2));
                let _ = done_tx.send(r);
            })
            .expect("spawn apiserver thread");
        self.running = Some(Running { stop, done, thread });
    }

    /// Stops the server; everything acknowledged is on disk afterwards.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = tokio::task::spawn_blocking(move || shutdown(r)).await;
        }
    }

    /// Stops and starts again on the same data directory (same port when possible).
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut listener = None;
        for _ in 0..50 {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener =
            listener.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
        self.addr = listener.local_addr().expect("local addr");
        self.url = format!("{}://{}", self.scheme(), self.addr);
        self.launch(listener);
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    pub fn config(&self) -> &apiserver::Config {
        &self.cfg
    }

    fn scheme(&self) -> &'static str {
        if self.cfg.insecure {
            "http"
        } else {
            "https"
        }
    }

    /// Whether the server runs with TLS and authentication.
    pub fn secure(&self) -> bool {
        !self.cfg.insecure
    }

    /// The join token nodes present (secure mode).
    pub fn join_token(&self) -> String {
        match &self.cfg.join_token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(self.join_token_path())
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }

    /// The file of the join token (secure mode; written before the server starts).
    pub fn join_token_path(&self) -> PathBuf {
        self.cfg.data_dir.join("join-token")
    }

    /// The cluster CA certificate file (secure mode).
    pub fn ca_path(&self) -> PathBuf {
        self.cfg.data_dir.join("pki").join("ca.crt")
    }

    /// The admin kubeconfig the server wrote (secure mode, once it serves).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.cfg.data_dir.join("admin.kubeconfig")
    }

    /// The admin bearer token the server made (secure mode, once it serves).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.cfg.data_dir.join("admin-token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// A lazily connected channel authenticating with `identity` (`None`: TLS with no
    /// client certificate). Plaintext in insecure mode.
    pub fn channel_as(&self, identity: Option<&CertKey>) -> Channel {
        if self.cfg.insecure {
            return Endpoint::from_shared(self.url.clone())
                .expect("url")
                .connect_lazy();
        }
        kube_lite_client::connect_tls_lazy(&self.url, tls_config(identity)).expect("url")
    }

    /// Connects now as the admin, with endpoint settings changed by `tweak` (window
    /// sizes…); plaintext in insecure mode.
    pub async fn connect_with(&self, tweak: impl FnOnce(Endpoint) -> Endpoint) -> Channel {
        if self.cfg.insecure {
            return tweak(Endpoint::from_shared(self.url.clone()).expect("url"))
                .connect()
                .await
                .expect("connect");
        }
        kube_lite_client::tls::connect_tls_with(
            &self.url,
            tls_config(Some(&test_pki().admin)),
            tweak,
        )
        .await
        .expect("connect")
    }

    /// A channel authenticated as node `name` (a certificate from the test CA).
    pub fn node_channel(&self, name: &str) -> Channel {
        let cert = test_pki().node_cert(name, &["127.0.0.1".into()]);
        self.channel_as(Some(&cert))
    }

    /// A lazily connected channel to the server (each call: its own connection),
    /// authenticated as the admin.
    pub fn channel(&self) -> Channel {
        self.channel_as(Some(&test_pki().admin))
    }
    pub fn nodes(&self) -> NodeApiClient<Channel> {
        NodeApiClient::new(self.channel()).max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn pods(&self) -> PodApiClient<Channel> {
        PodApiClient::new(self.channel()).max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn services(&self) -> ServiceApiClient<Channel> {
        ServiceApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn leases(&self) -> LeaseApiClient<Channel> {
        LeaseApiClient::new(self.channel()).max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn endpoints(&self) -> EndpointsApiClient<Channel> {
        EndpointsApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
}

fn shutdown(r: Running) {
    let _ = r.stop.send(());
    match r.done.recv_timeout(Duration::from_secs(20)) {
        Ok(_) => {
            let _ = r.thread.join();
        }
        Err(_) => tracing::warn!("test apiserver did not stop within 20s"),
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            shutdown(r);
        }
    }
}

/// The data directory a server started with `Config::default()` would use (for
/// tests that want to choose their own).
pub fn default_data_dir() -> PathBuf {
    apiserver::Config::default().data_dir
}
