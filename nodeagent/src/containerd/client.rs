//! A thin handle on containerd's gRPC API: one channel, the kube-lite containerd
//! namespace on every request (`containerd-namespace` header), an optional lease
//! (`containerd-lease`) for imports, and helpers for content reads.

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient, ReadContentRequest,
};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The snapshotter kube-lite uses.
pub const SNAPSHOTTER: &str = "overlayfs";

#[derive(Clone)]
pub struct Ctrd {
    ch: Channel,
    pub namespace: String,
    pub socket: PathBuf,
}

impl Ctrd {
    /// Connects to containerd's socket (the channel reconnects by itself later).
    pub async fn connect(socket: &Path, namespace: &str) -> anyhow::Result<Ctrd> {
        let ch = containerd_client::connect(socket).await.map_err(|e| {
            anyhow::anyhow!("connecting to containerd at {}: {e}", socket.display())
        })?;
        Ok(Ctrd {
            ch,
            namespace: namespace.to_string(),
            socket: socket.to_path_buf(),
        })
    }

    /// `msg` with the namespace header.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        r
    }

    /// `msg` with the namespace and lease headers.
    pub fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = lease.parse() {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.ch.clone()).max_decoding_message_size(16 << 20)
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.ch.clone())
    }
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.ch.clone())
    }
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.ch.clone())
    }
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.ch.clone())
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.ch.clone())
    }
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.ch.clone())
    }

    /// A whole content blob, refused past `max` bytes.
    pub async fn read_blob(&self, digest: &str, max: usize) -> Result<Vec<u8>, Status> {
        let mut s = self
            .content()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            if out.len() + chunk.data.len() > max {
                return Err(Status::resource_exhausted(format!(
                    "blob {digest} is larger than {max} bytes"
                )));
            }
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}
