//! Pod volumes on the node (issue 13): one directory per volume under
//! `<state dir>/volumes/<pod uid>/<volume>`, mounted into containers by the init
//! ([`crate::mounts`]) at each `volumeMounts` path.
//!
//! - `emptyDir`: a directory (mode 0777, as the kubelet's), or with `medium: Memory` a
//!   tmpfs mounted there (size = `sizeLimit`), shared by the pod's containers.
//! - `configMap`, `secret` (on a tmpfs, as the kubelet keeps secrets off disk),
//!   `downwardAPI`, `projected` (configMap, secret and downwardAPI sources in one
//!   directory, on a tmpfs): files written the kubelet's atomic way: the content in a fresh
//!   `..<time>` directory, the `..data` symlink swapped to it by rename, each
//!   top-level name a symlink through `..data`. A reader never sees half an update;
//!   updates (re-read every [`super::sources::SYNC_PERIOD`]) reach running containers
//!   through their bind mount. (A `subPath` mount binds one file and, as in Kubernetes,
//!   gets no updates.)
//! - `hostPath`: the node's path, checked (or created) per `type`.
//! - `fsGroup`: volume directories and files get that group (directories setgid).
//!
//! The process runtime shares the node's root filesystem: a mount point that does not
//! exist is created on the node and recorded, and removed (when empty) with the pod.
//! (An image runtime binds the same sources and runc makes the mount points in the
//! container's own root filesystem.)
//! Everything under the pod's volume directory goes with the pod (tmpfs unmounted
//! first). What to write is computed by pure functions ([`files_of`], [`plan_mounts`]).

use super::env::{field_value, resource_value, PodFacts};
use super::sources::{Kind, Sources};
use crate::mounts::Mount;
use kube_lite_core::quantity::parse_quantity;
use kube_lite_proto::v1::{Container, DownwardApiVolumeFile, KeyToPath, Pod, Volume};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const DATA: &str = "..data";
const CREATED: &str = ".created-mount-points";

/// `<root>/<uid>`.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid.replace(['/', '.'], "_"))
}

/// Whether the pod has anything for this module to do.
pub fn has_volumes(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| !s.volumes.is_empty())
}

/// The files of a configMap/secret/downwardAPI volume: relative path → (bytes, mode).
/// Err names what is missing (a non-optional object or item key), as the kubelet's
/// `configmap "x" not found`.
pub fn files_of(
    v: &Volume,
    sources: &Sources,
    facts: &PodFacts,
    containers: &[Container],
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, String> {
    let mut out = BTreeMap::new();
    let keyed = |kind: Kind,
                 name: &str,
                 items: &[KeyToPath],
                 default_mode: Option<i32>,
                 optional: bool,
                 out: &mut BTreeMap<String, (Vec<u8>, u32)>|
     -> Result<(), String> {
        let mode = default_mode.unwrap_or(0o644) as u32;
        let obj = match sources.object(kind, name) {
            Ok(o) => o,
            Err(_) if optional && sources.objects.contains_key(&(kind, name.to_string())) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        if items.is_empty() {
            for (k, val) in obj {
                out.insert(k.clone(), (val.clone(), mode));
            }
        }
        for it in items {
            match obj.get(&it.key) {
                Some(val) => {
                    out.insert(
                        it.path.clone(),
                        (val.clone(), it.mode.map(|m| m as u32).unwrap_or(mode)),
                    );
                }
                None if optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in {} {}/{name}",
                        it.key,
                        kind.name(),
                        sources.namespace
                    ))
                }
            }
        }
        Ok(())
    };
    if let Some(c) = &v.config_map {
        keyed(
            Kind::ConfigMap,
            &c.name,
            &c.items,
            c.default_mode,
            c.optional,
            &mut out,
        )?;
    }
    if let Some(s) = &v.secret {
        keyed(
            Kind::Secret,
            &s.secret_name,
            &s.items,
            s.default_mode,
            s.optional,
            &mut out,
        )?;
    }
    let downward = |items: &[DownwardApiVolumeFile],
                    default_mode: Option<i32>,
                    out: &mut BTreeMap<String, (Vec<u8>, u32)>|
     -> Result<(), String> {
        let mode = default_mode.unwrap_or(0o644) as u32;
        for it in items {
            let text = if let Some(fr) = &it.field_ref {
                match fr.field_path.as_str() {
                    "metadata.labels" => kv_lines(&facts.labels),
                    "metadata.annotations" => kv_lines(&facts.annotations),
                    p => field_value(p, facts)?,
                }
            } else if let Some(rr) = &it.resource_field_ref {
                let c = if rr.container_name.is_empty() {
                    containers.first()
                } else {
                    containers.iter().find(|c| c.name == rr.container_name)
                }
                .ok_or_else(|| format!("container {:?} not found", rr.container_name))?;
                resource_value(c, &rr.resource, &rr.divisor)?
            } else {
                continue;
            };
            out.insert(
                it.path.clone(),
                (text.into_bytes(), it.mode.map(|m| m as u32).unwrap_or(mode)),
            );
        }
        Ok(())
    };
    if let Some(d) = &v.downward_api {
        downward(&d.items, d.default_mode, &mut out)?;
    }
    // Projected: every source's files in one directory, projected.default_mode for all
    // (the apiserver refuses serviceAccountToken and overlapping paths).
    if let Some(p) = &v.projected {
        for src in &p.sources {
            if let Some(c) = &src.config_map {
                keyed(
                    Kind::ConfigMap,
                    &c.name,
                    &c.items,
                    p.default_mode,
                    c.optional,
                    &mut out,
                )?;
            }
            if let Some(s) = &src.secret {
                keyed(
                    Kind::Secret,
                    &s.secret_name,
                    &s.items,
                    p.default_mode,
                    s.optional,
                    &mut out,
                )?;
            }
            if let Some(d) = &src.downward_api {
                downward(&d.items, p.default_mode, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// `k="v"` lines, sorted (the kubelet's downward API format for labels/annotations).
fn kv_lines(m: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = m.iter().collect();
    sorted.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// Joins a validated relative path (no `..`, no leading `/`) under `base`.
fn under(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("path {rel:?} must be relative, without '..'"));
    }
    Ok(base.join(p))
}

/// Sets up (or refreshes) every volume of `pod` under `root`. Idempotent: run at every
/// sync; writes a configMap/secret/downwardAPI volume only when its content changed.
pub fn sync(root: &Path, pod: &Pod, sources: &Sources, facts: &PodFacts) -> Result<(), String> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    let dir = pod_dir(root, &facts.uid);
    mkdir(&dir, 0o750)?;
    let gid = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    let containers: Vec<Container> = spec.containers.clone();
    for v in &spec.volumes {
        sync_volume(&dir, v, sources, facts, &containers, gid)
            .map_err(|e| set_up_failed(&v.name, &e))?;
    }
    Ok(())
}

/// The kubelet's FailedMount message: `MountVolume.SetUp failed for volume "v" : <why>`.
pub fn set_up_failed(volume: &str, why: &str) -> String {
    format!("MountVolume.SetUp failed for volume {volume:?} : {why}")
}

fn sync_volume(
    dir: &Path,
    v: &Volume,
    sources: &Sources,
    facts: &PodFacts,
    containers: &[Container],
    gid: Option<u32>,
) -> Result<(), String> {
    {
        let vdir = dir.join(&v.name);
        if let Some(e) = &v.empty_dir {
            let new = !vdir.exists();
            mkdir(&vdir, 0o777)?;
            if e.medium == "Memory" {
                let size = if e.size_limit.is_empty() {
                    None
                } else {
                    let q = parse_quantity(&e.size_limit).map_err(|m| format!("sizeLimit: {m}"))?;
                    Some(q.millis() / 1000)
                };
                tmpfs(&vdir, size, 0o777)?;
            }
            if new || e.medium == "Memory" {
                own(&vdir, gid, true)?;
                set_mode(&vdir, if gid.is_some() { 0o2777 } else { 0o777 })?;
            }
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
        {
            let files = files_of(v, sources, facts, containers)?;
            mkdir(&vdir, 0o755)?;
            // Secrets stay off disk (a projected volume is on a tmpfs too, as the
            // kubelet's).
            if v.secret.is_some() || v.projected.is_some() {
                tmpfs(&vdir, None, 0o755)?;
            }
            atomic_write(&vdir, &files, gid)?;
        } else if let Some(h) = &v.host_path {
            check_host_path(&h.path, &h.r#type)?;
        }
    }
    Ok(())
}

/// Most directory entries one emptyDir measurement walks (it stops there: the usage
/// it found so far counts).
pub const MAX_USAGE_ENTRIES: usize = 100_000;

/// The disk emptyDirs of `pod` with a sizeLimit: (volume, limit in bytes, limit as
/// written). Memory emptyDirs are left out: their tmpfs size is the limit.
pub fn disk_limits(pod: &Pod) -> Vec<(String, u64, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter())
        .filter_map(|v| {
            let e = v.empty_dir.as_ref()?;
            if e.medium == "Memory" || e.size_limit.is_empty() {
                return None;
            }
            let q = parse_quantity(&e.size_limit).ok()?;
            Some((v.name.clone(), q.units() as u64, e.size_limit.clone()))
        })
        .collect()
}

/// The kubelet's eviction message for the first volume whose usage (bytes, by volume
/// name) exceeds its limit.
pub fn exceeded(limits: &[(String, u64, String)], usage: &[(String, u64)]) -> Option<String> {
    limits.iter().find_map(|(name, limit, text)| {
        let used = usage.iter().find(|(n, _)| n == name)?.1;
        (used > *limit)
            .then(|| format!("Usage of EmptyDir volume {name:?} exceeds the limit {text:?}."))
    })
}

/// Disk space used under `dir` (allocated blocks, as `du`; symlinks not followed, other
/// file systems not entered), walking at most `max_entries` entries.
pub fn dir_usage(dir: &Path, max_entries: usize) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            seen += 1;
            if seen > max_entries {
                return total;
            }
            let Ok(md) = ent.metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(ent.path());
            }
        }
    }
    total
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    if !p.is_dir() {
        std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        set_mode(p, mode)?;
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

fn own(p: &Path, gid: Option<u32>, _dir: bool) -> Result<(), String> {
    if let Some(g) = gid {
        std::os::unix::fs::lchown(p, None, Some(g))
            .map_err(|e| format!("chown {}: {e}", p.display()))?;
    }
    Ok(())
}

/// A tmpfs at `p` unless one is mounted there already.
fn tmpfs(p: &Path, size: Option<i64>, mode: u32) -> Result<(), String> {
    if is_mount_point(p) {
        return Ok(());
    }
    let mut opts = format!("mode={mode:o}");
    if let Some(s) = size {
        opts.push_str(&format!(",size={s}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        p,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mounting a tmpfs at {}: {e}", p.display()))
}

/// A different device than its parent (what tmpfs mounts here are).
fn is_mount_point(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// The kubelet's AtomicWriter: content in `..<stamp>`, `..data` → it (swapped by
/// rename), top-level names → `..data/<name>`; old content removed after the swap.
pub fn atomic_write(
    dir: &Path,
    files: &BTreeMap<String, (Vec<u8>, u32)>,
    gid: Option<u32>,
) -> Result<(), String> {
    let data = dir.join(DATA);
    let err = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let old = std::fs::read_link(&data).ok();
    if let Some(o) = &old {
        if same_content(&dir.join(o), files) {
            return Ok(());
        }
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let stamp = format!(
        "..{}_{}_{}",
        kube_lite_core::time::now_ms(),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let new = dir.join(&stamp);
    std::fs::create_dir(&new).map_err(|e| err("creating", &new, e))?;
    set_mode(&new, 0o755)?;
    own(&new, gid, true)?;
    for (rel, (bytes, mode)) in files {
        let p = under(&new, rel)?;
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
            own(parent, gid, true)?;
        }
        std::fs::write(&p, bytes).map_err(|e| err("writing", &p, e))?;
        set_mode(&p, *mode)?;
        own(&p, gid, false)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| err("linking", &tmp, e))?;
    std::fs::rename(&tmp, &data).map_err(|e| err("renaming", &tmp, e))?;
    // Top-level names through ..data; names no longer there removed.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for t in &tops {
        let l = dir.join(t);
        if std::fs::symlink_metadata(&l).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(t), &l)
                .map_err(|e| err("linking", &l, e))?;
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(o) = old {
        let _ = std::fs::remove_dir_all(dir.join(o));
    }
    Ok(())
}

fn same_content(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> bool {
    let mut found = Vec::new();
    collect_files(dir, "", &mut found);
    if found.len() != files.len() {
        return false;
    }
    files.iter().all(|(rel, (bytes, mode))| {
        let p = dir.join(rel);
        std::fs::read(&p).is_ok_and(|b| &b == bytes)
            && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
    })
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_files(&e.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

fn check_host_path(path: &str, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let p = Path::new(path);
    let md = std::fs::metadata(p);
    let bad = |what: &str| {
        Err(format!(
            "hostPath type check failed: {path} is not a {what}"
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if !p.is_dir() {
                std::fs::create_dir_all(p).map_err(|e| format!("creating {path}: {e}"))?;
                set_mode(p, 0o755)?;
            }
            Ok(())
        }
        "FileOrCreate" => {
            if md.is_err() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("creating {path}: {e}"))?;
                set_mode(p, 0o644)?;
            }
            Ok(())
        }
        "Directory" if md.as_ref().is_ok_and(|m| m.is_dir()) => Ok(()),
        "Directory" => bad("directory"),
        "File" if md.as_ref().is_ok_and(|m| m.is_file()) => Ok(()),
        "File" => bad("file"),
        "Socket" if md.as_ref().is_ok_and(|m| m.file_type().is_socket()) => Ok(()),
        "Socket" => bad("socket"),
        "CharDevice" if md.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => Ok(()),
        "CharDevice" => bad("character device"),
        "BlockDevice" if md.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => Ok(()),
        "BlockDevice" => bad("block device"),
        t => Err(format!("hostPath type {t:?} is not supported")),
    }
}

/// The mounts of container `c` (pure but for reading where subPaths point): source
/// in the pod's volume directory (or the host path), target its mountPath.
pub fn plan_mounts(root: &Path, pod: &Pod, c: &Container) -> Result<Vec<Mount>, String> {
    let Some(spec) = &pod.spec else {
        return Ok(Vec::new());
    };
    let uid = pod.metadata.as_ref().map(|m| m.uid.as_str()).unwrap_or("");
    let mut out = Vec::new();
    for m in &c.volume_mounts {
        let v = spec
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no such volume", m.name))?;
        let base = match &v.host_path {
            Some(h) => PathBuf::from(&h.path),
            None => pod_dir(root, uid).join(&v.name),
        };
        let source = if m.sub_path.is_empty() {
            base
        } else {
            let s = under(&base, &m.sub_path)?;
            if v.empty_dir.is_some() && !s.exists() {
                std::fs::create_dir_all(&s)
                    .map_err(|e| format!("creating {}: {e}", s.display()))?;
            }
            // Resolved (a configMap key is a symlink through ..data) and kept inside.
            let real = s
                .canonicalize()
                .map_err(|e| format!("subPath {:?}: {e}", m.sub_path))?;
            let real_base = base.canonicalize().unwrap_or(base.clone());
            if !real.starts_with(&real_base) {
                return Err(format!(
                    "subPath {:?} points outside the volume",
                    m.sub_path
                ));
            }
            real
        };
        out.push(Mount {
            source,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only,
        });
    }
    Ok(out)
}

/// Makes every mount target exist on the node (a directory, or an empty file for a
/// file source), recording what it created in the pod's volume directory.
pub fn make_mount_points(root: &Path, uid: &str, mounts: &[Mount]) -> Result<(), String> {
    let dir = pod_dir(root, uid);
    mkdir(&dir, 0o750)?;
    let rec = dir.join(CREATED);
    let mut created: Vec<String> = std::fs::read_to_string(&rec)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let before = created.len();
    for m in mounts {
        if std::fs::symlink_metadata(&m.target).is_ok() {
            continue;
        }
        // Record each missing ancestor, outermost first, before creating it.
        let mut missing = Vec::new();
        let mut p = m.target.as_path();
        while std::fs::symlink_metadata(p).is_err() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(q) => p = q,
                None => break,
            }
        }
        missing.reverse();
        let file = m.source.is_file();
        for (i, p) in missing.iter().enumerate() {
            created.push(p.display().to_string());
            let last = i + 1 == missing.len();
            let r = if last && file {
                std::fs::File::create(p).map(|_| ())
            } else {
                std::fs::create_dir(p)
            };
            r.map_err(|e| format!("creating mount point {}: {e}", p.display()))?;
        }
    }
    if created.len() != before {
        let text: String = created.iter().map(|l| format!("{l}\n")).collect();
        kube_lite_net::write_atomic(&rec, text.as_bytes())
            .map_err(|e| format!("recording mount points: {e}"))?;
    }
    Ok(())
}

/// Removes the pod's volumes: mount points it created (deepest first, only empty
/// ones), tmpfs unmounted, the directory deleted. Never follows into host paths.
pub fn remove(root: &Path, uid: &str) {
    let dir = pod_dir(root, uid);
    if !dir.exists() {
        return;
    }
    if let Ok(t) = std::fs::read_to_string(dir.join(CREATED)) {
        for l in t.lines().rev() {
            let p = Path::new(l);
            let r = match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir(p),
                Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(p),
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(uid, path = l, "removing a mount point: {e}");
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if is_mount_point(&p) {
                if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
                    tracing::warn!(uid, path = %p.display(), "unmounting a volume: {e}");
                }
            }
        }
    }
    // Only plain files and directories remain (no mounts; symlinks are not followed).
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(uid, path = %dir.display(), "removing pod volumes: {e}");
    }
}

/// Volume directories of pods not in `keep` (after a restart).
pub fn sweep(root: &Path, keep: &std::collections::HashSet<String>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let kept: std::collections::HashSet<String> =
        keep.iter().map(|u| u.replace(['/', '.'], "_")).collect();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !kept.contains(&name) {
            tracing::info!(uid = %name, "removing volumes of a pod not on this node");
            remove(root, &name);
        }
    }
}

/// What a pod worker keeps for its pod's sources and volumes.
#[derive(Debug, Default)]
pub struct WorkerVolumes {
    pub sources: Sources,
    /// When to re-read the sources next (None: the pod references none and has no
    /// volumes, or not known yet: the first sync sets it).
    pub next_sync: Option<tokio::time::Instant>,
    synced_once: bool,
    /// Why the volumes could not be set up (the containers wait with it).
    pub error: Option<String>,
}

impl super::PodWorker {
    /// Re-reads the pod's ConfigMaps/Secrets when due and refreshes its volumes.
    pub(super) async fn sync_sources(&mut self) {
        let now = tokio::time::Instant::now();
        if self.vols.synced_once && self.vols.next_sync.is_none_or(|t| t > now) {
            return;
        }
        self.vols.synced_once = true;
        let refs = super::sources::references(&self.m.pod);
        if refs.is_empty() && !has_volumes(&self.m.pod) {
            self.vols.next_sync = None;
            return;
        }
        self.vols.next_sync = Some(now + super::sources::SYNC_PERIOD);
        let ns = self
            .m
            .pod
            .metadata
            .as_ref()
            .map(|m| m.namespace.clone())
            .unwrap_or_default();
        match super::sources::fetch(self.node.api.as_ref(), &ns, &refs).await {
            Ok(s) => self.vols.sources = s,
            Err(e) => {
                tracing::warn!(pod = %self.name(), uid = %self.uid, "{e}");
                if self.vols.sources.objects.is_empty() {
                    self.vols.error = Some(e);
                    return;
                }
            }
        }
        if !has_volumes(&self.m.pod) {
            self.vols.error = None;
            return;
        }
        let Some(root) = self.node.volumes_root.get().cloned() else {
            self.vols.error = Some("this node agent has no volume directory".into());
            return;
        };
        let ip = self.m.rec.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let facts = PodFacts::of(&self.m.pod, &ip, &self.node.address.to_string());
        let (pod, sources) = (self.m.pod.clone(), self.vols.sources.clone());
        let r = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || sync(&root, &pod, &sources, &facts))
        }
        .await
        .unwrap_or_else(|e| Err(format!("volume sync: {e}")));
        if let Err(e) = &r {
            // As the kubelet: the pod waits in ContainerCreating, a FailedMount event
            // per failed attempt (aggregated into its count), tried again next sync.
            tracing::warn!(pod = %self.name(), uid = %self.uid, reason = "FailedMount", "{e}");
            self.node.event(&self.m.pod, "", true, "FailedMount", e);
        }
        self.vols.error = r.err();
        if self.vols.error.is_none() {
            self.check_empty_dir_usage(&root).await;
        }
    }

    /// Measures the disk emptyDirs with a sizeLimit (at each sync, bounded walks) and
    /// evicts the pod when one is over it, as the kubelet's eviction manager does.
    async fn check_empty_dir_usage(&mut self, root: &Path) {
        let limits = disk_limits(&self.m.pod);
        if limits.is_empty() || self.m.evicted.is_some() {
            return;
        }
        let dir = pod_dir(root, &self.uid);
        let names: Vec<String> = limits.iter().map(|(n, _, _)| n.clone()).collect();
        let usage = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|n| {
                    let u = dir_usage(&dir.join(&n), MAX_USAGE_ENTRIES);
                    (n, u)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if let Some(m) = exceeded(&limits, &usage) {
            self.evict(m);
        }
    }

    /// The mounts of container `c`, mount points made; Err while the volumes are not
    /// ready.
    pub(super) fn container_mounts(&self, c: &Container) -> Result<Vec<Mount>, String> {
        if c.volume_mounts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(e) = &self.vols.error {
            return Err(e.clone());
        }
        let root = self
            .node
            .volumes_root
            .get()
            .ok_or("this node agent has no volume directory")?;
        let mounts = plan_mounts(root, &self.m.pod, c)?;
        // An image runtime makes them in the container's own root filesystem.
        if !self.node.runtime.uses_images() {
            make_mount_points(root, &self.uid, &mounts)?;
        }
        Ok(mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        ConfigMapVolumeSource, DownwardApiVolumeFile, DownwardApiVolumeSource, ObjectFieldSelector,
    };

    fn cm_volume(items: Vec<KeyToPath>, optional: bool) -> Volume {
        Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cm".into(),
                items,
                default_mode: Some(0o600),
                optional,
            }),
            ..Default::default()
        }
    }

    fn sources(data: Option<&[(&str, &str)]>) -> Sources {
        let mut s = Sources {
            namespace: "default".into(),
            ..Default::default()
        };
        s.objects.insert(
            (Kind::ConfigMap, "cm".into()),
            data.map(|d| {
                d.iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect()
            }),
        );
        s
    }

    #[test]
    fn disk_empty_dirs_over_their_limit_are_named() {
        use kube_lite_proto::v1::{EmptyDirVolumeSource, PodSpec};
        let ed = |name: &str, medium: &str, limit: &str| Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: medium.into(),
                size_limit: limit.into(),
            }),
            ..Default::default()
        };
        let pod = Pod {
            spec: Some(PodSpec {
                volumes: vec![
                    ed("a", "", "1Mi"),
                    ed("mem", "Memory", "1Mi"),
                    ed("free", "", ""),
                    cm_volume(vec![], false),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = disk_limits(&pod);
        assert_eq!(l, [("a".to_string(), 1 << 20, "1Mi".to_string())]);
        assert_eq!(exceeded(&l, &[("a".into(), 1 << 20)]), None);
        assert_eq!(
            exceeded(&l, &[("a".into(), (1 << 20) + 1)]).as_deref(),
            Some("Usage of EmptyDir volume \"a\" exceeds the limit \"1Mi\".")
        );
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), vec![1u8; 256 * 1024]).unwrap();
        let used = dir_usage(tmp.path(), MAX_USAGE_ENTRIES);
        assert!(used >= 256 * 1024, "{used}");
        assert!(dir_usage(tmp.path(), 1) < used, "the walk is bounded");
    }

    #[test]
    fn projected_sources_share_one_directory_and_its_mode() {
        use kube_lite_proto::v1::{ProjectedVolumeSource, VolumeProjection};
        let s = sources(Some(&[("a", "1")]));
        let facts = PodFacts {
            name: "web".into(),
            ..Default::default()
        };
        let v = Volume {
            name: "all".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapVolumeSource {
                            name: "cm".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardApiVolumeSource {
                            items: vec![DownwardApiVolumeFile {
                                path: "pod".into(),
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                }),
                                mode: Some(0o400),
                                ..Default::default()
                            }],
                            default_mode: None,
                        }),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        let f = files_of(&v, &s, &facts, &[]).unwrap();
        assert_eq!(f["a"], (b"1".to_vec(), 0o440));
        assert_eq!(f["pod"], (b"web".to_vec(), 0o400));
        // A missing source is named as the kubelet does.
        let e = files_of(&v, &sources(None), &facts, &[]).unwrap_err();
        assert_eq!(e, "configmap \"cm\" not found");
    }

    #[test]
    fn files_of_keys_items_modes_and_missing_ones() {
        let s = sources(Some(&[("a", "1"), ("b", "2")]));
        let f = files_of(&cm_volume(vec![], false), &s, &PodFacts::default(), &[]).unwrap();
        assert_eq!(f["a"], (b"1".to_vec(), 0o600));
        assert_eq!(f.len(), 2);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "dir/b.txt".into(),
            mode: Some(0o400),
        }];
        let f = files_of(
            &cm_volume(items.clone(), false),
            &s,
            &PodFacts::default(),
            &[],
        )
        .unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), vec!["dir/b.txt"]);
        assert_eq!(f["dir/b.txt"].1, 0o400);
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "z".into(),
            mode: None,
        }];
        let e = files_of(
            &cm_volume(missing.clone(), false),
            &s,
            &PodFacts::default(),
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("couldn't find key zz in ConfigMap default/cm"),
            "{e}"
        );
        assert!(
            files_of(&cm_volume(missing, true), &s, &PodFacts::default(), &[])
                .unwrap()
                .is_empty()
        );
        let gone = sources(None);
        assert!(
            files_of(&cm_volume(vec![], false), &gone, &PodFacts::default(), &[])
                .unwrap_err()
                .contains("configmap \"cm\" not found")
        );
        assert!(
            files_of(&cm_volume(vec![], true), &gone, &PodFacts::default(), &[])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn downward_api_labels_are_sorted_quoted_lines() {
        let v = Volume {
            name: "info".into(),
            downward_api: Some(DownwardApiVolumeSource {
                items: vec![
                    DownwardApiVolumeFile {
                        path: "labels".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels".into(),
                        }),
                        ..Default::default()
                    },
                    DownwardApiVolumeFile {
                        path: "name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                        }),
                        ..Default::default()
                    },
                ],
                default_mode: None,
            }),
            ..Default::default()
        };
        let facts = PodFacts {
            name: "web".into(),
            labels: [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let f = files_of(&v, &Sources::default(), &facts, &[]).unwrap();
        assert_eq!(f["labels"].0, b"a=\"1\"\nb=\"2\"\n");
        assert_eq!(f["name"], (b"web".to_vec(), 0o644));
    }

    #[test]
    fn atomic_write_swaps_data_and_links_top_level_names() {
        let d = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), (b"1".to_vec(), 0o644));
        files.insert("dir/b".to_string(), (b"2".to_vec(), 0o600));
        atomic_write(d.path(), &files, None).unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(d.path().join("dir/b")).unwrap(), b"2");
        assert_eq!(
            std::fs::read_link(d.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(d.path().join(DATA)).unwrap();
        // Same content: nothing rewritten.
        atomic_write(d.path(), &files, None).unwrap();
        assert_eq!(std::fs::read_link(d.path().join(DATA)).unwrap(), first);
        // Changed: new content directory, old one gone, dropped names unlinked.
        files.remove("dir/b");
        files.insert("a".to_string(), (b"changed".to_vec(), 0o644));
        atomic_write(d.path(), &files, None).unwrap();
        let second = std::fs::read_link(d.path().join(DATA)).unwrap();
        assert_ne!(second, first);
        assert!(!d.path().join(&first).exists());
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"changed");
        assert!(std::fs::symlink_metadata(d.path().join("dir")).is_err());
    }

    #[test]
    fn sub_paths_stay_inside_the_volume() {
        assert!(under(Path::new("/v"), "../etc").is_err());
        assert!(under(Path::new("/v"), "/etc").is_err());
        assert_eq!(under(Path::new("/v"), "a/b").unwrap(), Path::new("/v/a/b"));
    }
}
