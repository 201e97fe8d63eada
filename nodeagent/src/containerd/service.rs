//! Image loading on the node: archives streamed by `kubectl-lite image load` (the
//! NodeAgent `LoadImage` RPC: written to a bounded temp file in the state dir, then
//! imported), archives dropped into the import directory (k3s' way: every `*.tar`
//! there is imported once per (size, mtime), also at start), and the list published
//! as the Node's `status.images`.

use super::client::Ctrd;
use super::import::{self, Imported};
use super::runtime::ContainerdRuntime;
use futures::StreamExt;
use kube_lite_proto::v1::{ContainerImage, ImageChunk, LoadImageResponse};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};

/// The image list the heartbeat publishes.
pub type ImageList = Arc<Mutex<Vec<ContainerImage>>>;

pub struct ImageService {
    pub c: Ctrd,
    pub runtime: Arc<ContainerdRuntime>,
    pub node: String,
    /// Where uploads are spooled.
    pub upload_dir: PathBuf,
    /// Watched for archives (None: no directory import).
    pub import_dir: Option<PathBuf>,
    /// Largest archive accepted over the API.
    pub max_archive: u64,
    pub images: ImageList,
    /// One import at a time (containerd handles parallel ones, but the disk does not
    /// need two 100 MB unpacks at once).
    lock: tokio::sync::Mutex<()>,
    /// Import-dir files done: path → (size, mtime).
    seen: Mutex<HashMap<PathBuf, (u64, i64)>>,
}

impl ImageService {
    pub fn new(
        runtime: Arc<ContainerdRuntime>,
        node: &str,
        upload_dir: PathBuf,
        import_dir: Option<PathBuf>,
        max_archive: u64,
        images: ImageList,
    ) -> Arc<ImageService> {
        Arc::new(ImageService {
            c: runtime.client().clone(),
            runtime,
            node: node.to_string(),
            upload_dir,
            import_dir,
            max_archive,
            images,
            lock: tokio::sync::Mutex::new(()),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Imports one archive file and refreshes the image list.
    pub async fn import_path(&self, path: &Path) -> anyhow::Result<Imported> {
        let r = {
            let _g = self.lock.lock().await;
            import::import_file(&self.c, path).await
        };
        self.runtime.images_changed();
        self.refresh().await;
        match &r {
            Ok(i) => {
                tracing::info!(node = %self.node, archive = %path.display(), images = ?i.names, layers_written = i.layers_written, "imported images")
            }
            Err(e) => {
                tracing::warn!(node = %self.node, archive = %path.display(), "image import failed: {e:#}")
            }
        }
        r
    }

    /// Re-reads the node's images into the published list.
    pub async fn refresh(&self) {
        match super::images::list(&self.c).await {
            Ok(list) => {
                *self.images.lock().unwrap() = list
                    .into_iter()
                    .map(|(names, size)| ContainerImage {
                        names,
                        size_bytes: size as i64,
                    })
                    .collect();
            }
            Err(e) => tracing::warn!("listing images: {}", e.message()),
        }
    }

    /// The `LoadImage` RPC: spool (bounded), import, answer the names.
    pub async fn load(&self, mut s: Streaming<ImageChunk>) -> Result<LoadImageResponse, Status> {
        tokio::fs::create_dir_all(&self.upload_dir)
            .await
            .map_err(|e| Status::internal(format!("upload dir: {e}")))?;
        let tmp = self.upload_dir.join(format!(
            "upload-{}-{}.tar",
            std::process::id(),
            kube_lite_core::time::now_ms()
        ));
        let r = self.spool_and_import(&mut s, &tmp).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        r
    }

    async fn spool_and_import(
        &self,
        s: &mut Streaming<ImageChunk>,
        tmp: &Path,
    ) -> Result<LoadImageResponse, Status> {
        let mut f = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| Status::internal(format!("spool file: {e}")))?;
        let mut total = 0u64;
        let mut file_name = String::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            if file_name.is_empty() && !chunk.file_name.is_empty() {
                file_name = chunk.file_name.chars().take(200).collect();
            }
            total += chunk.data.len() as u64;
            if total > self.max_archive {
                return Err(Status::resource_exhausted(format!(
                    "image archive larger than the node's limit of {} bytes (--max-image-archive-size)",
                    self.max_archive
                )));
            }
            f.write_all(&chunk.data)
                .await
                .map_err(|e| Status::internal(format!("spooling: {e}")))?;
        }
        f.flush()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        drop(f);
        if total == 0 {
            return Err(Status::invalid_argument("image archive: empty upload"));
        }
        match self.import_path(tmp).await {
            Ok(i) => Ok(LoadImageResponse {
                node: self.node.clone(),
                names: i.names,
            }),
            Err(e) => {
                let msg = format!("{e:#}");
                if msg.contains("not an image archive") || msg.contains("reading the archive") {
                    Err(Status::invalid_argument(format!("{file_name}: {msg}")))
                } else {
                    Err(Status::internal(format!("{file_name}: {msg}")))
                }
            }
        }
    }

    /// Imports new or changed `*.tar` files of the import directory, forever.
    pub async fn watch_dir(self: Arc<Self>) {
        let Some(dir) = self.import_dir.clone() else {
            return;
        };
        let _ = std::fs::create_dir_all(&dir);
        loop {
            for (path, sig) in archives_in(&dir) {
                let done = self.seen.lock().unwrap().get(&path) == Some(&sig);
                if done {
                    continue;
                }
                // Still being written? Wait for the size to settle.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if file_sig(&path) != Some(sig) {
                    continue;
                }
                let _ = self.import_path(&path).await;
                self.seen.lock().unwrap().insert(path, sig);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

fn file_sig(p: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    m.is_file().then(|| (m.len(), m.mtime()))
}

/// `*.tar` files (not hidden) of `dir`, sorted.
pub fn archives_in(dir: &Path) -> Vec<(PathBuf, (u64, i64))> {
    let mut v: Vec<(PathBuf, (u64, i64))> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            n.ends_with(".tar") && !n.starts_with('.')
        })
        .filter_map(|p| file_sig(&p).map(|s| (p, s)))
        .collect();
    v.sort();
    v
}
