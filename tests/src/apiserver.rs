//! In-process apiserver on 127.0.0.1 for tests: a real gRPC server over a real sled
//! store in a temporary directory. It runs on its own thread and Tokio runtime, so it
//! keeps serving even while a test's runtime is busy, and `Drop` can stop it cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use kube_lite_proto::v1::{
    config_map_api_client::ConfigMapApiClient, deployment_api_client::DeploymentApiClient,
    endpoints_api_client::EndpointsApiClient, event_api_client::EventApiClient,
    namespace_api_client::NamespaceApiClient, node_api_client::NodeApiClient,
    pod_api_client::PodApiClient, replica_set_api_client::ReplicaSetApiClient,
    secret_api_client::SecretApiClient, service_api_client::ServiceApiClient,
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

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<anyhow::Result<()>>,
    thread: std::thread::JoinHandle<()>,
}

pub struct TestApiServer {
    /// `http://127.0.0.1:PORT`
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

    /// A server with `cfg`; when `cfg.data_dir` is the default ("./kube-lite-data") a
    /// temporary directory is used instead.
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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut s = TestApiServer {
            url: format!("http://{addr}"),
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
        self.url = format!("http://{}", self.addr);
        self.launch(listener);
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    pub fn config(&self) -> &apiserver::Config {
        &self.cfg
    }

    /// A lazily connected channel to the server (each call: its own connection).
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone())
            .expect("url")
            .connect_lazy()
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
    pub fn endpoints(&self) -> EndpointsApiClient<Channel> {
        EndpointsApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn namespaces(&self) -> NamespaceApiClient<Channel> {
        NamespaceApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn config_maps(&self) -> ConfigMapApiClient<Channel> {
        ConfigMapApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn secrets(&self) -> SecretApiClient<Channel> {
        SecretApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn events(&self) -> EventApiClient<Channel> {
        EventApiClient::new(self.channel()).max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn replica_sets(&self) -> ReplicaSetApiClient<Channel> {
        ReplicaSetApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    pub fn deployments(&self) -> DeploymentApiClient<Channel> {
        DeploymentApiClient::new(self.channel())
            .max_decoding_message_size(apiserver::MAX_RESPONSE_BYTES)
    }
    /// Creates namespace `name` (tests that use namespaces other than default).
    pub async fn create_namespace(&self, name: &str) {
        let ns = kube_lite_proto::v1::Namespace {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self.namespaces().create(ns).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => panic!("creating namespace {name}: {s}"),
        }
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
