//! Image archives, read without a registry: `docker save` output (docker-archive:
//! `manifest.json` + config + layer tars, also docker 25's OCI-flavoured variant) and
//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`, as `skopeo copy …
//! oci-archive:` writes). [`scan`] reads the archive once keeping only its small JSON
//! files; [`plan`] (pure) turns them into [`ImagePlan`]s: the blobs to write into
//! containerd's content store (manifest, config, layers by tar entry) and the names.
//! The layers themselves are streamed from the archive in a second pass.

use super::names;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;

pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Largest JSON file (manifest, config, index) kept from an archive.
pub const MAX_JSON: u64 = 4 << 20;
/// Largest total of kept JSON bytes.
pub const MAX_JSON_TOTAL: u64 = 64 << 20;
/// Most tar entries read.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an image archive: {0}")]
    Format(String),
}

fn fmt_err(s: impl Into<String>) -> ArchiveError {
    ArchiveError::Format(s.into())
}

/// A content blob of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// A layer: its blob and the tar entry holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub blob: BlobRef,
    pub entry: String,
    /// Digest of the uncompressed layer (config rootfs.diff_ids).
    pub diff_id: String,
}

/// One image to import.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Normalised names (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    pub manifest: BlobRef,
    pub manifest_bytes: Vec<u8>,
    pub config: BlobRef,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerRef>,
}

/// What one read of the archive keeps: small JSON files, every entry's size and the
/// symlinks (docker 25 links `<id>/layer.tar` to `blobs/sha256/…`).
#[derive(Debug, Default)]
pub struct Scan {
    pub small: HashMap<String, Vec<u8>>,
    pub sizes: HashMap<String, u64>,
    pub links: HashMap<String, String>,
}

/// `./a/b` → `a/b`.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

fn keep_small(name: &str, size: u64) -> bool {
    size <= MAX_JSON
        && (name.ends_with(".json") || name.starts_with("blobs/sha256/") || name == "oci-layout")
        && !name.ends_with("layer.tar")
}

/// Reads the archive once, keeping JSON-sized files.
pub fn scan<R: Read>(r: R) -> Result<Scan, ArchiveError> {
    let mut ar = tar::Archive::new(r);
    let mut s = Scan::default();
    let mut kept = 0u64;
    for (n, e) in ar.entries()?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(fmt_err(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut e = e?;
        let name = clean(&String::from_utf8_lossy(&e.path_bytes()));
        let kind = e.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(t) = e.link_name_bytes() {
                let t = String::from_utf8_lossy(&t).to_string();
                let target = if kind.is_symlink() && !t.starts_with('/') {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    clean(&format!("{dir}/{t}"))
                } else {
                    clean(&t)
                };
                s.links.insert(name, target);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = e.size();
        s.sizes.insert(name.clone(), size);
        if keep_small(&name, size) && kept + size <= MAX_JSON_TOTAL {
            // Layers in blobs/ are skipped by size; smaller ones are kept (they may be
            // manifests) and only read when a plan asks for them.
            let mut b = Vec::with_capacity(size as usize);
            e.read_to_end(&mut b)?;
            kept += size;
            s.small.insert(name, b);
        }
    }
    Ok(s)
}

impl Scan {
    /// The file a path names, following links (a few hops).
    pub fn resolve(&self, path: &str) -> String {
        let mut p = clean(path);
        for _ in 0..8 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    }

    fn json(&self, path: &str) -> Result<(Vec<u8>, Value), ArchiveError> {
        let p = self.resolve(path);
        let b = self
            .small
            .get(&p)
            .ok_or_else(|| fmt_err(format!("{path}: missing or larger than {MAX_JSON} bytes")))?;
        let v = serde_json::from_slice(b).map_err(|e| fmt_err(format!("{path}: {e}")))?;
        Ok((b.clone(), v))
    }

    fn size(&self, path: &str) -> Option<u64> {
        self.sizes.get(&self.resolve(path)).copied()
    }
}

pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

fn blob_path(digest: &str) -> Result<String, ArchiveError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| fmt_err(format!("unsupported digest {digest:?}")))?;
    Ok(format!("blobs/sha256/{hex}"))
}

fn diff_ids(config: &Value) -> Result<Vec<String>, ArchiveError> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| fmt_err("image config has no rootfs.diff_ids"))?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .ok_or_else(|| fmt_err("bad diff_id"))
        })
        .collect()
}

fn normalize_all(tags: &[String]) -> Result<Vec<String>, ArchiveError> {
    tags.iter()
        .map(|t| names::normalize(t).map_err(|e| fmt_err(e.to_string())))
        .collect()
}

/// The images of a scanned archive.
pub fn plan(s: &Scan) -> Result<Vec<ImagePlan>, ArchiveError> {
    if s.small.contains_key("manifest.json") {
        plan_docker(s)
    } else if s.small.contains_key("index.json") {
        plan_oci(s)
    } else {
        Err(fmt_err(
            "no manifest.json (docker save) or index.json (OCI layout) at the top of the archive",
        ))
    }
}

fn plan_docker(s: &Scan) -> Result<Vec<ImagePlan>, ArchiveError> {
    let (_, m) = s.json("manifest.json")?;
    let items = m
        .as_array()
        .ok_or_else(|| fmt_err("manifest.json is not a list"))?;
    let mut out = Vec::new();
    for it in items {
        let cfg_path = it["Config"]
            .as_str()
            .ok_or_else(|| fmt_err("manifest.json entry without Config"))?;
        let (config_bytes, config) = s.json(cfg_path)?;
        let ids = diff_ids(&config)?;
        let layer_paths: Vec<&str> = it["Layers"]
            .as_array()
            .ok_or_else(|| fmt_err("manifest.json entry without Layers"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if layer_paths.len() != ids.len() {
            return Err(fmt_err(format!(
                "{} layers but {} diff_ids in the config",
                layer_paths.len(),
                ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (p, id) in layer_paths.iter().zip(&ids) {
            let entry = s.resolve(p);
            let size = s
                .size(p)
                .ok_or_else(|| fmt_err(format!("layer {p} missing from the archive")))?;
            // docker save writes uncompressed layers: the blob digest is the diff_id
            // (containerd checks it when the blob is committed).
            let digest = match entry.strip_prefix("blobs/sha256/") {
                Some(hex) => format!("sha256:{hex}"),
                None => id.clone(),
            };
            let media_type = if &digest == id {
                MT_DOCKER_LAYER
            } else {
                MT_DOCKER_LAYER_GZIP
            };
            layers.push(LayerRef {
                blob: BlobRef {
                    digest,
                    media_type: media_type.into(),
                    size,
                },
                entry,
                diff_id: id.clone(),
            });
        }
        let tags: Vec<String> = it["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if tags.is_empty() {
            return Err(fmt_err(
                "an image in manifest.json has no RepoTags (save it by name: docker save NAME:TAG)",
            ));
        }
        let config_ref = BlobRef {
            digest: sha256_digest(&config_bytes),
            media_type: MT_DOCKER_CONFIG.into(),
            size: config_bytes.len() as u64,
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "digest": config_ref.digest, "size": config_ref.size},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.blob.media_type, "digest": l.blob.digest, "size": l.blob.size
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
        out.push(ImagePlan {
            names: normalize_all(&tags)?,
            manifest: BlobRef {
                digest: sha256_digest(&manifest_bytes),
                media_type: MT_DOCKER_MANIFEST.into(),
                size: manifest_bytes.len() as u64,
            },
            manifest_bytes,
            config: config_ref,
            config_bytes,
            layers,
        });
    }
    Ok(out)
}

fn descriptor(v: &Value) -> Result<BlobRef, ArchiveError> {
    Ok(BlobRef {
        digest: v["digest"]
            .as_str()
            .ok_or_else(|| fmt_err("descriptor without digest"))?
            .to_string(),
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_u64().unwrap_or(0),
    })
}

/// A blob of the layout, checked against its digest.
fn blob_json(s: &Scan, d: &BlobRef) -> Result<(Vec<u8>, Value), ArchiveError> {
    let (b, v) = s.json(&blob_path(&d.digest)?)?;
    if sha256_digest(&b) != d.digest {
        return Err(fmt_err(format!(
            "blob {} does not match its digest",
            d.digest
        )));
    }
    Ok((b, v))
}

fn plan_oci(s: &Scan) -> Result<Vec<ImagePlan>, ArchiveError> {
    let (_, index) = s.json("index.json")?;
    let mut out = Vec::new();
    for d in index["manifests"].as_array().into_iter().flatten() {
        let ann = &d["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .or_else(|| ann["org.opencontainers.image.ref.name"].as_str())
            .ok_or_else(|| {
                fmt_err("an index.json manifest has no io.containerd.image.name or org.opencontainers.image.ref.name annotation")
            })?;
        if !name.contains(':') && !name.contains('/') {
            return Err(fmt_err(format!(
                "index.json names an image only by the tag {name:?}; write the full name (NAME:TAG) into org.opencontainers.image.ref.name"
            )));
        }
        let mut desc = descriptor(d)?;
        let (mut mbytes, mut m) = blob_json(s, &desc)?;
        if desc.media_type == MT_OCI_INDEX || desc.media_type == MT_DOCKER_LIST {
            let list = m["manifests"].as_array().cloned().unwrap_or_default();
            let pick = list
                .iter()
                .find(|x| {
                    x["platform"]["os"] == "linux" && x["platform"]["architecture"] == host_arch()
                })
                .or_else(|| list.first())
                .ok_or_else(|| fmt_err("empty image index"))?;
            desc = descriptor(pick)?;
            (mbytes, m) = blob_json(s, &desc)?;
        }
        if desc.media_type.is_empty() {
            desc.media_type = m["mediaType"]
                .as_str()
                .unwrap_or(MT_OCI_MANIFEST)
                .to_string();
        }
        desc.size = mbytes.len() as u64;
        let config = descriptor(&m["config"])?;
        let (config_bytes, cfg) = blob_json(s, &config)?;
        let ids = diff_ids(&cfg)?;
        let ls = m["layers"].as_array().cloned().unwrap_or_default();
        if ls.len() != ids.len() {
            return Err(fmt_err(format!(
                "{} layers but {} diff_ids in the config",
                ls.len(),
                ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (l, id) in ls.iter().zip(&ids) {
            let blob = descriptor(l)?;
            let entry = s.resolve(&blob_path(&blob.digest)?);
            if !s.sizes.contains_key(&entry) {
                return Err(fmt_err(format!(
                    "layer {} missing from the archive",
                    blob.digest
                )));
            }
            layers.push(LayerRef {
                blob,
                entry,
                diff_id: id.clone(),
            });
        }
        out.push(ImagePlan {
            names: normalize_all(&[name.to_string()])?,
            manifest: desc,
            manifest_bytes: mbytes,
            config: BlobRef {
                size: config_bytes.len() as u64,
                ..config
            },
            config_bytes,
            layers,
        });
    }
    if out.is_empty() {
        return Err(fmt_err("index.json lists no image"));
    }
    Ok(out)
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// Snapshot chain ids of a layer stack (OCI image spec: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
pub mod testdata {
    //! Archives built in memory for the unit tests (and the e2e tests' sanity).
    use super::*;

    pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, p: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, data).unwrap();
    }

    pub fn config(diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(), "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    /// `docker save` (classic layout) of one image with the given layers.
    pub fn docker_archive(tag: &str, layers: &[Vec<u8>]) -> Vec<u8> {
        let ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let cfg = config(&ids);
        let cfg_name = format!("{}.json", &sha256_digest(&cfg)[7..]);
        let mut b = tar::Builder::new(Vec::new());
        let mut paths = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let p = format!("l{i}/layer.tar");
            add(&mut b, &p, l);
            paths.push(p);
        }
        add(&mut b, &cfg_name, &cfg);
        let m = serde_json::json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": paths}]);
        add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
        b.into_inner().unwrap()
    }

    /// An OCI layout (index → manifest → config + layers) of one image.
    pub fn oci_archive(name: &str, layers: &[Vec<u8>]) -> Vec<u8> {
        let ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let cfg = config(&ids);
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let mut ldesc = Vec::new();
        for l in layers {
            let d = sha256_digest(l);
            add(&mut b, &format!("blobs/sha256/{}", &d[7..]), l);
            ldesc.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
        }
        let cd = sha256_digest(&cfg);
        add(&mut b, &format!("blobs/sha256/{}", &cd[7..]), &cfg);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": ldesc,
        }))
        .unwrap();
        let md = sha256_digest(&m);
        add(&mut b, &format!("blobs/sha256/{}", &md[7..]), &m);
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": MT_OCI_MANIFEST, "digest": md, "size": m.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}]});
        add(&mut b, "index.json", &serde_json::to_vec(&idx).unwrap());
        b.into_inner().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn docker_archives_plan_one_image_per_repo_tag_entry() {
        let l0 = layer_tar(&[("bin/sh", b"#!x")]);
        let l1 = layer_tar(&[("etc/os-release", b"NAME=x\n")]);
        let ar = docker_archive("busybox", &[l0.clone(), l1.clone()]);
        let p = plan(&scan(&ar[..]).unwrap()).unwrap();
        assert_eq!(p.len(), 1);
        let im = &p[0];
        assert_eq!(
            im.names,
            vec!["docker.io/library/busybox:latest".to_string()]
        );
        assert_eq!(im.layers.len(), 2);
        assert_eq!(im.layers[0].blob.digest, sha256_digest(&l0));
        assert_eq!(im.layers[1].blob.size, l1.len() as u64);
        assert_eq!(im.layers[1].entry, "l1/layer.tar");
        assert_eq!(im.layers[0].blob.media_type, MT_DOCKER_LAYER);
        assert_eq!(im.manifest.digest, sha256_digest(&im.manifest_bytes));
        let m: Value = serde_json::from_slice(&im.manifest_bytes).unwrap();
        assert_eq!(m["config"]["digest"], im.config.digest.as_str());
    }

    #[test]
    fn oci_layouts_plan_by_annotation_and_check_digests() {
        let l0 = layer_tar(&[("bin/sh", b"#!x")]);
        let ar = oci_archive("kube-lite/whoami:v1", std::slice::from_ref(&l0));
        let p = plan(&scan(&ar[..]).unwrap()).unwrap();
        assert_eq!(
            p[0].names,
            vec!["docker.io/kube-lite/whoami:v1".to_string()]
        );
        assert_eq!(
            p[0].layers[0].entry,
            format!("blobs/sha256/{}", &sha256_digest(&l0)[7..])
        );
        assert_eq!(p[0].manifest.media_type, MT_OCI_MANIFEST);
        // A bare tag is not a name.
        let ar = oci_archive("latest", &[l0]);
        let e = plan(&scan(&ar[..]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("only by the tag"), "{e}");
    }

    #[test]
    fn garbage_is_no_archive() {
        let e = plan(&scan(&b"hello"[..]).unwrap_or_default()).unwrap_err();
        assert!(e.to_string().contains("manifest.json"), "{e}");
        let tar = layer_tar(&[("x.json", b"{}")]);
        assert!(plan(&scan(&tar[..]).unwrap()).is_err());
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let c = chain_ids(&[d('a'), d('b')]);
        assert_eq!(c[0], d('a'));
        assert_eq!(
            c[1],
            sha256_digest(format!("{} {}", d('a'), d('b')).as_bytes())
        );
        assert!(chain_ids(&[]).is_empty());
        assert_eq!(clean("./a/../b/c"), "b/c");
    }
}
