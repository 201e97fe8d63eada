//! Image import into containerd: the blobs of an archive's [`ImagePlan`]s into the
//! content store (under a lease, with the labels that keep them from containerd's
//! garbage collector), the layers unpacked into the snapshotter (Prepare, diff Apply,
//! Commit per chain id), then the image records. Re-importing is idempotent: blobs
//! and snapshots that exist are kept.

use super::archive::{self, chain_ids, BlobRef, ImagePlan};
use super::client::{Ctrd, SNAPSHOTTER};
use containerd_client::services::v1::{
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    },
    ApplyRequest, CreateImageRequest, Image, InfoRequest, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::types::Descriptor;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tonic::Code;

/// Bytes per content write message.
const CHUNK: usize = 1 << 20;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Normalised names of the images now present.
    pub names: Vec<String>,
    /// Layers written (not already present).
    pub layers_written: usize,
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn desc(b: &BlobRef) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.size as i64,
        annotations: HashMap::new(),
    }
}

/// Imports every image of the archive at `path`.
pub async fn import_file(c: &Ctrd, path: &Path) -> anyhow::Result<Imported> {
    let p = path.to_path_buf();
    let plans = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<ImagePlan>> {
        let f = std::fs::File::open(&p)?;
        let scan = archive::scan(std::io::BufReader::new(f))?;
        Ok(archive::plan(&scan)?)
    })
    .await??;
    let lease = format!("kl-import-{}", rand_suffix());
    c.leases()
        .create(c.req(containerd_client::services::v1::CreateRequest {
            id: lease.clone(),
            labels: HashMap::new(),
        }))
        .await?;
    let r = import_plans(c, path, &plans, &lease).await;
    let _ = c
        .leases()
        .delete(c.req(containerd_client::services::v1::DeleteRequest {
            id: lease.clone(),
            sync: false,
        }))
        .await;
    r
}

/// Leases of imports that never finished (an agent killed mid-import).
pub async fn drop_stale_leases(c: &Ctrd) {
    if let Ok(list) = c
        .leases()
        .list(c.req(containerd_client::services::v1::ListRequest { filters: vec![] }))
        .await
    {
        for l in list.into_inner().leases {
            if l.id.starts_with("kl-import-") {
                let _ = c
                    .leases()
                    .delete(c.req(containerd_client::services::v1::DeleteRequest {
                        id: l.id,
                        sync: false,
                    }))
                    .await;
            }
        }
    }
}

async fn exists(c: &Ctrd, digest: &str) -> bool {
    c.content()
        .info(c.req(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
        .is_ok()
}

async fn import_plans(
    c: &Ctrd,
    path: &Path,
    plans: &[ImagePlan],
    lease: &str,
) -> anyhow::Result<Imported> {
    let mut out = Imported::default();
    // Layers first (streamed from the archive in one pass), then configs and
    // manifests (whose labels reference them), then snapshots, then names.
    let mut wanted: HashMap<String, BlobRef> = HashMap::new();
    for p in plans {
        for l in &p.layers {
            if !exists(c, &l.blob.digest).await {
                wanted.insert(l.entry.clone(), l.blob.clone());
            }
        }
    }
    if !wanted.is_empty() {
        let (c2, p2, lease2) = (c.clone(), path.to_path_buf(), lease.to_string());
        let h = tokio::runtime::Handle::current();
        out.layers_written = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let f = std::fs::File::open(&p2)?;
            let mut ar = tar::Archive::new(std::io::BufReader::new(f));
            let mut n = 0;
            for e in ar.entries()? {
                let mut e = e?;
                let name = archive::clean(&String::from_utf8_lossy(&e.path_bytes()));
                if let Some(b) = wanted.remove(&name) {
                    h.block_on(write_blob(&c2, &mut e, &b, HashMap::new(), &lease2))?;
                    n += 1;
                }
            }
            if let Some((entry, _)) = wanted.into_iter().next() {
                anyhow::bail!("layer {entry} not found in the archive's second read");
            }
            Ok(n)
        })
        .await??;
    }
    for p in plans {
        let ids: Vec<String> = p.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&ids);
        let mut cfg_labels = HashMap::new();
        if let Some(top) = chains.last() {
            cfg_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                top.clone(),
            );
        }
        if !exists(c, &p.config.digest).await {
            write_blob(c, &mut &p.config_bytes[..], &p.config, cfg_labels, lease).await?;
        }
        let mut m_labels = HashMap::new();
        m_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            p.config.digest.clone(),
        );
        for (i, l) in p.layers.iter().enumerate() {
            m_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.blob.digest.clone(),
            );
        }
        if !exists(c, &p.manifest.digest).await {
            write_blob(c, &mut &p.manifest_bytes[..], &p.manifest, m_labels, lease).await?;
        }
        unpack(c, p, &chains, lease).await?;
        for name in &p.names {
            let img = Image {
                name: name.clone(),
                labels: HashMap::new(),
                target: Some(desc(&p.manifest)),
                created_at: None,
                updated_at: None,
            };
            let r = c
                .images()
                .create(c.leased(
                    CreateImageRequest {
                        image: Some(img.clone()),
                        source_date_epoch: None,
                    },
                    lease,
                ))
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Code::AlreadyExists => {
                    c.images()
                        .update(c.leased(
                            UpdateImageRequest {
                                image: Some(img),
                                update_mask: None,
                                source_date_epoch: None,
                            },
                            lease,
                        ))
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
            out.names.push(name.clone());
        }
    }
    Ok(out)
}

/// Streams `r` into the content store as `b` (digest checked by containerd).
async fn write_blob<R: Read>(
    c: &Ctrd,
    r: &mut R,
    b: &BlobRef,
    labels: HashMap<String, String>,
    lease: &str,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let mut client = c.content();
    let req = c.leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease);
    let call = tokio::spawn(async move {
        let mut resp = client.write(req).await?.into_inner();
        while let Some(m) = resp.message().await? {
            let _ = m;
        }
        Ok::<(), tonic::Status>(())
    });
    let reference = format!("kl-{}", b.digest);
    let mut offset = 0i64;
    let mut buf = vec![0u8; CHUNK];
    let mut send_err = false;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let m = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total: b.size as i64,
            expected: b.digest.clone(),
            offset,
            data: buf[..n].to_vec(),
            labels: HashMap::new(),
        };
        offset += n as i64;
        if tx.send(m).await.is_err() {
            send_err = true;
            break;
        }
    }
    if !send_err {
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference,
                total: b.size as i64,
                expected: b.digest.clone(),
                offset,
                data: Vec::new(),
                labels,
            })
            .await;
    }
    drop(tx);
    match call.await? {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Code::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "writing blob {}: {}",
            b.digest,
            e.message()
        )),
    }
}

/// Unpacks the layers of `p` into snapshots named by their chain ids.
async fn unpack(c: &Ctrd, p: &ImagePlan, chains: &[String], lease: &str) -> anyhow::Result<()> {
    let mut parent = String::new();
    for (l, chain) in p.layers.iter().zip(chains) {
        let have = c
            .snapshots()
            .stat(c.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: chain.clone(),
            }))
            .await
            .is_ok();
        if !have {
            let key = format!("kl-extract-{}-{chain}", rand_suffix());
            let mounts = c
                .snapshots()
                .prepare(c.leased(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await?
                .into_inner()
                .mounts;
            let applied = c
                .diff()
                .apply(c.leased(
                    ApplyRequest {
                        diff: Some(desc(&l.blob)),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                ))
                .await;
            let done = match applied {
                Ok(_) => {
                    let r = c
                        .snapshots()
                        .commit(c.leased(
                            CommitSnapshotRequest {
                                snapshotter: SNAPSHOTTER.into(),
                                name: chain.clone(),
                                key: key.clone(),
                                labels: HashMap::new(),
                            },
                            lease,
                        ))
                        .await;
                    match r {
                        Ok(_) => Ok(()),
                        Err(e) if e.code() == Code::AlreadyExists => Ok(()),
                        Err(e) => Err(anyhow::anyhow!("committing layer {chain}: {}", e.message())),
                    }
                }
                Err(e) => Err(anyhow::anyhow!(
                    "unpacking layer {} ({}): {}",
                    l.blob.digest,
                    l.blob.media_type,
                    e.message()
                )),
            };
            if done.is_err() {
                let _ = c
                    .snapshots()
                    .remove(c.req(RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                    }))
                    .await;
            }
            done?;
        }
        parent = chain.clone();
    }
    Ok(())
}
