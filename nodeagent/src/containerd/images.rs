//! Images as the runtime needs them: a name resolved to its manifest, config and
//! top snapshot (chain id), and the node's image list for `status.images`.

use super::archive::{self, chain_ids, MT_DOCKER_LIST, MT_OCI_INDEX};
use super::client::{Ctrd, SNAPSHOTTER};
use containerd_client::services::v1::{
    snapshots::StatSnapshotRequest, GetImageRequest, ListImagesRequest,
};
use serde_json::Value;
use tonic::Code;

/// Largest manifest/config read.
const MAX_JSON: usize = 4 << 20;

/// The parts of an image config a container is made from (OCI image spec `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageConfig {
    pub fn from_json(v: &Value) -> ImageConfig {
        let c = &v["config"];
        let list = |k: &str| -> Vec<String> {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        ImageConfig {
            entrypoint: list("Entrypoint"),
            cmd: list("Cmd"),
            env: list("Env"),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            user: c["User"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// An image present in containerd, ready to run.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub name: String,
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// Snapshot the container's rootfs is prepared from.
    pub top_snapshot: String,
    /// Manifest + config + layers, bytes.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("image {0} is not present")]
    NotFound(String),
    #[error("image {name}: {why}")]
    Broken { name: String, why: String },
    #[error("containerd: {0}")]
    Rpc(#[from] tonic::Status),
}

fn broken(name: &str, why: impl Into<String>) -> LookupError {
    LookupError::Broken {
        name: name.to_string(),
        why: why.into(),
    }
}

async fn json(c: &Ctrd, name: &str, digest: &str) -> Result<Value, LookupError> {
    let b = c.read_blob(digest, MAX_JSON).await?;
    serde_json::from_slice(&b).map_err(|e| broken(name, format!("blob {digest}: {e}")))
}

/// Resolves a normalised image name.
pub async fn lookup(c: &Ctrd, name: &str) -> Result<ImageInfo, LookupError> {
    let img = match c
        .images()
        .get(c.req(GetImageRequest {
            name: name.to_string(),
        }))
        .await
    {
        Ok(r) => r.into_inner().image.unwrap_or_default(),
        Err(e) if e.code() == Code::NotFound => return Err(LookupError::NotFound(name.into())),
        Err(e) => return Err(e.into()),
    };
    let target = img.target.ok_or_else(|| broken(name, "no target"))?;
    let mut digest = target.digest.clone();
    let mut m = json(c, name, &digest).await?;
    if target.media_type == MT_OCI_INDEX
        || target.media_type == MT_DOCKER_LIST
        || m["manifests"].is_array()
    {
        let list = m["manifests"].as_array().cloned().unwrap_or_default();
        let pick = list
            .iter()
            .find(|x| {
                x["platform"]["os"] == "linux"
                    && x["platform"]["architecture"] == archive::host_arch()
            })
            .or_else(|| list.first())
            .ok_or_else(|| broken(name, "empty index"))?;
        digest = pick["digest"].as_str().unwrap_or_default().to_string();
        m = json(c, name, &digest).await?;
    }
    let cfg_digest = m["config"]["digest"]
        .as_str()
        .ok_or_else(|| broken(name, "manifest without config"))?
        .to_string();
    let cfg = json(c, name, &cfg_digest).await?;
    let ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let top = chain_ids(&ids)
        .pop()
        .ok_or_else(|| broken(name, "no layers"))?;
    if c.snapshots()
        .stat(c.req(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: top.clone(),
        }))
        .await
        .is_err()
    {
        return Err(broken(
            name,
            format!("not unpacked into the {SNAPSHOTTER} snapshotter (load it again with kubectl-lite image load)"),
        ));
    }
    let size = m["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["size"].as_u64()).sum::<u64>())
        .unwrap_or(0)
        + m["config"]["size"].as_u64().unwrap_or(0);
    Ok(ImageInfo {
        name: name.to_string(),
        manifest_digest: digest,
        config: ImageConfig::from_json(&cfg),
        top_snapshot: top,
        size,
    })
}

/// The node's images: (names sharing one manifest, size), sorted by first name.
pub async fn list(c: &Ctrd) -> Result<Vec<(Vec<String>, u64)>, tonic::Status> {
    let imgs = c
        .images()
        .list(c.req(ListImagesRequest { filters: vec![] }))
        .await?
        .into_inner()
        .images;
    let mut by_digest: std::collections::BTreeMap<String, (Vec<String>, u64)> = Default::default();
    for i in imgs {
        let Some(t) = i.target else { continue };
        let e = by_digest
            .entry(t.digest.clone())
            .or_insert_with(|| (Vec::new(), 0));
        e.0.push(i.name.clone());
        if e.1 == 0 {
            e.1 = match lookup(c, &i.name).await {
                Ok(info) => info.size,
                Err(_) => t.size as u64,
            };
        }
    }
    let mut out: Vec<(Vec<String>, u64)> = by_digest
        .into_values()
        .map(|(mut n, s)| {
            n.sort();
            (n, s)
        })
        .collect();
    out.sort();
    Ok(out)
}
