//! A container's volume mounts as the container init applies them (issue 13): bind
//! mounts of the pod's volume directories (or host paths) at each `volumeMounts` path,
//! in the container's own mount namespace only, read-only when asked.
//!
//! The agent writes the list as JSON next to the container's log and passes its path in
//! [`MOUNTS_ENV`]; `pid1` (PID 1 of the new PID and mount namespaces, mounts already
//! private) applies it before it starts the program. A mount that fails fails the
//! start (StartError naming it): a container never runs without its volumes.
//!
//! A target that does not exist (the termination-message file at `/dev/termination-log`:
//! the process runtime's containers see the node's filesystem, and the node's `/dev`
//! must not get a file per container) is made **in this mount namespace only**: the
//! deepest existing ancestor directory gets a private overlay (lower: the directory as
//! the node has it; upper and work: a tmpfs of this namespace, on a scratch directory in
//! the pod's state), the mounts below it are moved onto the overlay, the missing names
//! are created in the overlay's upper layer, and the overlay is moved onto the directory.
//! (When that directory holds the pod's state, the state directory is bound through.)
//! Writes of the container below that directory go to the private layer too. The
//! node's directory is never written; the overlay, its tmpfs and every file in it go
//! with the namespace. Devices keep working (opening a device node through the overlay
//! opens the node's device). See [`private_target`].

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable naming the mounts file (removed before the program starts).
pub const MOUNTS_ENV: &str = "KUBE_LITE_INIT_MOUNTS";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// What appears (a directory or file of the node).
    pub source: PathBuf,
    /// Where, inside the container (it exists: the agent made the mount point).
    pub target: PathBuf,
    pub read_only: bool,
}

pub fn write(path: &Path, mounts: &[Mount]) -> std::io::Result<()> {
    let b = serde_json::to_vec(mounts).map_err(std::io::Error::other)?;
    kube_lite_net::write_atomic(path, &b)
}

pub fn read(path: &Path) -> Result<Vec<Mount>, String> {
    let b = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Applies `mounts` in order (bind, then a read-only remount if asked). Must run in
/// the container's private mount namespace. A missing target is made privately
/// ([`private_target`]) with `scratch` (a directory path in the pod's state; created
/// when needed) for the overlay's layers.
pub fn apply(mounts: &[Mount], scratch: &Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let mut layers = PrivateLayers::default();
    for m in mounts {
        if std::fs::symlink_metadata(&m.target).is_err() {
            private_target(&m.target, m.source.is_file(), scratch, &mut layers)?;
        }
        mount(
            Some(&m.source),
            &m.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "mounting {} at {}: {e}",
                m.source.display(),
                m.target.display()
            )
        })?;
        if m.read_only {
            mount(
                None::<&str>,
                &m.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("remounting {} read-only: {e}", m.target.display()))?;
        }
    }
    Ok(())
}

/// The directories of this namespace already overlaid by [`private_target`] (their
/// contents are private: names are created in them directly).
#[derive(Debug, Default)]
pub struct PrivateLayers {
    dirs: Vec<PathBuf>,
}

/// Most private overlays per container (one per distinct missing-target parent).
const MAX_PRIVATE_LAYERS: usize = 8;

/// The deepest existing ancestor of `target` and the missing names below it (pure but
/// for `exists`).
pub fn split_missing(target: &Path, exists: impl Fn(&Path) -> bool) -> (PathBuf, Vec<PathBuf>) {
    let mut missing = Vec::new();
    let mut p = target.to_path_buf();
    while !exists(&p) {
        missing.push(p.clone());
        match p.parent() {
            Some(q) => p = q.to_path_buf(),
            None => break,
        }
    }
    missing.reverse();
    (p, missing)
}

/// Mount points strictly below `dir`, outermost only (moving a mount moves the ones
/// under it), from the text of /proc/self/mountinfo (field 5; octal escapes decoded).
pub fn top_submounts(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut below: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    below.sort_by_key(|p| p.components().count());
    let mut top: Vec<PathBuf> = Vec::new();
    for p in below {
        if !top.iter().any(|t| p.starts_with(t)) {
            top.push(p);
        }
    }
    top
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes `target` (a file when `file`, else a directory) exist in this mount namespace
/// only, as the module doc describes. Refuses a target whose only existing ancestor is
/// `/` (the whole root would be overlaid) and directory names the overlay options
/// cannot carry (`,` `:` `\\`).
pub fn private_target(
    target: &Path,
    file: bool,
    scratch: &Path,
    layers: &mut PrivateLayers,
) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let (base, missing) = split_missing(target, |p| std::fs::symlink_metadata(p).is_ok());
    let err = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        format!(
            "making mount point {} in the container: {what} {}: {e}",
            target.display(),
            p.display()
        )
    };
    if !base.is_dir() {
        return Err(err("not a directory:", &base, &"exists"));
    }
    let create = |root: &Path| -> Result<(), String> {
        for (i, m) in missing.iter().enumerate() {
            let rel = m.strip_prefix(&base).unwrap_or(m);
            let p = root.join(rel);
            let r = if i + 1 == missing.len() && file {
                std::fs::File::create(&p).map(|_| ())
            } else {
                std::fs::create_dir(&p)
            };
            r.map_err(|e| err("creating", &p, &e))?;
        }
        Ok(())
    };
    if layers.dirs.iter().any(|d| base.starts_with(d)) {
        return create(&base);
    }
    if base == Path::new("/") {
        return Err(format!(
            "mount point {} does not exist and its parent directory is not on the node",
            target.display()
        ));
    }
    let b = base.to_string_lossy();
    if b.contains([',', ':', '\\']) {
        return Err(err("cannot overlay", &base, &"unsupported characters"));
    }
    if layers.dirs.len() >= MAX_PRIVATE_LAYERS {
        return Err(err(
            "too many private directories, at",
            &base,
            &MAX_PRIVATE_LAYERS,
        ));
    }
    let n = layers.dirs.len();
    let s = scratch.join(n.to_string());
    std::fs::create_dir_all(&s).map_err(|e| err("creating", &s, &e))?;
    mount(
        Some("kube-lite-private"),
        &s,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0700"),
    )
    .map_err(|e| err("mounting a tmpfs on", &s, &e))?;
    let (upper, work, merged) = (s.join("u"), s.join("w"), s.join("m"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(|e| err("creating", d, &e))?;
    }
    // The upper layer's root takes the directory's mode and owner (the merged root's).
    if let Ok(md) = std::fs::metadata(&base) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let _ =
            std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(md.mode() & 0o7777));
        let _ = std::os::unix::fs::chown(&upper, Some(md.uid()), Some(md.gid()));
    }
    let opts = format!(
        "lowerdir={b},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| err("overlaying", &base, &e))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| err("reading", Path::new("/proc/self/mountinfo"), &e))?;
    // The mounts below move onto the overlay; one holding the scratch (the pod's state)
    // cannot move into itself and is bound instead. The pod's state directory itself is
    // bound through, so what the init writes there (log, exit file) reaches the node and
    // not the overlay's private upper layer.
    for sub in top_submounts(&info, &base) {
        if sub.starts_with(scratch) {
            continue;
        }
        let rel = sub.strip_prefix(&base).unwrap_or(&sub);
        let to = merged.join(rel);
        let flags = if scratch.starts_with(&sub) {
            MsFlags::MS_BIND
        } else {
            MsFlags::MS_MOVE
        };
        mount(Some(&sub), &to, None::<&str>, flags, None::<&str>)
            .map_err(|e| err("moving the mount", &sub, &e))?;
    }
    if let Some(state) = scratch.parent().filter(|d| d.starts_with(&base)) {
        let to = merged.join(state.strip_prefix(&base).unwrap_or(state));
        mount(
            Some(state),
            &to,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err("binding the pod's state", state, &e))?;
    }
    create(&merged)?;
    mount(
        Some(&merged),
        &base,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| err("moving the overlay onto", &base, &e))?;
    layers.dirs.push(base);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_file_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.mounts");
        let m = vec![Mount {
            source: "/var/lib/x".into(),
            target: "/data".into(),
            read_only: true,
        }];
        write(&p, &m).unwrap();
        assert_eq!(read(&p).unwrap(), m);
        assert!(read(&d.path().join("nope")).unwrap_err().contains("nope"));
    }

    #[test]
    fn missing_names_below_the_deepest_existing_dir() {
        let exists = |p: &Path| ["/", "/dev"].contains(&p.to_str().unwrap());
        assert_eq!(
            split_missing(Path::new("/dev/termination-log"), exists),
            (
                PathBuf::from("/dev"),
                vec![PathBuf::from("/dev/termination-log")]
            )
        );
        assert_eq!(
            split_missing(Path::new("/dev/a/b"), exists),
            (
                PathBuf::from("/dev"),
                vec![PathBuf::from("/dev/a"), PathBuf::from("/dev/a/b")]
            )
        );
        assert_eq!(
            split_missing(Path::new("/x"), exists),
            (PathBuf::from("/"), vec![PathBuf::from("/x")])
        );
    }

    #[test]
    fn only_the_outermost_mounts_below_a_dir_move() {
        let info = "\
22 1 0:6 / /dev rw - devtmpfs devtmpfs rw
23 22 0:23 / /dev/shm rw - tmpfs tmpfs rw
24 23 0:23 / /dev/shm rw - tmpfs tmpfs rw
25 22 0:24 / /dev/pts rw - devpts devpts rw
26 22 0:25 / /dev/pts/x rw - tmpfs tmpfs rw
27 1 0:26 / /devices rw - tmpfs tmpfs rw
28 22 0:27 / /dev/a\\040b rw - tmpfs tmpfs rw
";
        assert_eq!(
            top_submounts(info, Path::new("/dev")),
            vec![
                PathBuf::from("/dev/shm"),
                PathBuf::from("/dev/pts"),
                PathBuf::from("/dev/a b")
            ]
        );
    }
}
