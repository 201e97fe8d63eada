//! A container's volume mounts as the container init applies them (issue 13): bind
//! mounts of the pod's volume directories (or host paths) at each `volumeMounts` path,
//! in the container's own mount namespace only, read-only when asked.
//!
//! The agent writes the list as JSON next to the container's log and passes its path in
//! [`MOUNTS_ENV`]; `pid1` (PID 1 of the new PID and mount namespaces, mounts already
//! private) applies it before it starts the program. A mount that fails fails the
//! start (StartError naming it): a container never runs without its volumes.

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
/// the container's private mount namespace.
pub fn apply(mounts: &[Mount]) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    for m in mounts {
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
}
