//! The agent's state directory: one JSON record per pod (what restart-safe adoption
//! needs), container exit files, logs; plus `/proc` helpers to tell a live process of
//! ours from a reused PID.
//!
//! Layout under `--state-dir` (default `/var/lib/kube-lite/<node>`):
//! ```text
//! ipam.json                        IP allocations (kube-lite-net's Ipam)
//! pods/<uid>/record.json           PodRecord, written atomically
//! pods/<uid>/<container>.log       current instance's stdout+stderr (rotated at
//!                                  --container-log-max-size)
//! pods/<uid>/<container>.log.rotated  its older part (one rotated file)
//! pods/<uid>/<container>.log.1     previous instance (logs --previous)
//! pods/<uid>/<container>.log.1.rotated  its older part
//! pods/<uid>/<container>.exit      ExitInfo written by the init when the program ends
//! ```

use kube_lite_net::write_atomic;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// How a container instance ended (written by the init, read by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// Signal number when the program was killed by one.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`, …
    pub reason: String,
    pub message: String,
    /// Unix millis.
    pub finished_at: i64,
}

/// One container of a pod record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerRecord {
    pub name: String,
    /// Host PID of the container's shim (its init's parent), while it runs.
    pub pid: Option<i32>,
    /// Field 22 of /proc/PID/stat of that process (detects PID reuse).
    pub proc_start: Option<u64>,
    /// Unix millis when the current (or last) instance started.
    pub started_at: i64,
    pub restart_count: i32,
    /// How the last instance ended.
    pub last_exit: Option<ExitInfo>,
    /// Finished for good (restart policy says no more restarts).
    pub done: bool,
}

/// Everything the agent must remember about a pod across its own restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PodRecord {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub ip: Option<Ipv4Addr>,
    pub netns: String,
    pub host_if: String,
    /// Unix millis when the pod got its network and first container start.
    pub start_time: i64,
    pub containers: Vec<ContainerRecord>,
    /// The pod finished for good (Succeeded/Failed): its netns, veth and IP were
    /// released already; the record stays for status and logs until deletion.
    #[serde(default)]
    pub network_released: bool,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<StateDir> {
        let root = root.into();
        std::fs::create_dir_all(root.join("pods"))?;
        Ok(StateDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ipam_path(&self) -> PathBuf {
        self.root.join("ipam.json")
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(sanitize(uid))
    }

    pub fn log_path(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid)
            .join(format!("{}.log", sanitize(container)))
    }

    pub fn previous_log_path(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid)
            .join(format!("{}.log.1", sanitize(container)))
    }

    /// The file bind-mounted at the container's terminationMessagePath.
    pub fn termination_log_path(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid)
            .join(format!("{}.termination-log", sanitize(container)))
    }

    pub fn exit_path(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid)
            .join(format!("{}.exit", sanitize(container)))
    }

    /// Before a container's new instance: its previous log (both parts) becomes
    /// `.log.1` (+ rotated), for `logs --previous`. Both runtimes call it.
    pub fn rotate_previous_log(&self, uid: &str, container: &str) {
        let log = self.log_path(uid, container);
        if log.exists() {
            let prev = self.previous_log_path(uid, container);
            let _ = std::fs::rename(&log, &prev);
            let (rot, prev_rot) = (
                crate::logfile::rotated_path(&log),
                crate::logfile::rotated_path(&prev),
            );
            if std::fs::rename(&rot, &prev_rot).is_err() {
                let _ = std::fs::remove_file(&prev_rot);
            }
        }
    }

    /// Writes the pod's resolv.conf (its dnsPolicy) into its directory and returns the
    /// path both runtimes bind-mount on the container's /etc/resolv.conf.
    pub fn write_resolv_conf(&self, uid: &str, text: &str) -> std::io::Result<PathBuf> {
        let dir = self.pod_dir(uid);
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("resolv.conf");
        write_atomic(&p, text.as_bytes())?;
        Ok(p)
    }

    pub fn save(&self, rec: &PodRecord) -> std::io::Result<()> {
        let dir = self.pod_dir(&rec.uid);
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        write_atomic(&dir.join("record.json"), &bytes)
    }

    /// Every readable record; unreadable ones are reported and returned by uid (dir
    /// name) so the caller can clean them up.
    pub fn load_all(&self) -> (Vec<PodRecord>, Vec<String>) {
        let mut recs = Vec::new();
        let mut bad = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.root.join("pods")) else {
            return (recs, bad);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path().join("record.json");
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PodRecord>(&b).ok())
            {
                Some(r) => recs.push(r),
                None => bad.push(name),
            }
        }
        recs.sort_by(|a, b| a.uid.cmp(&b.uid));
        (recs, bad)
    }

    /// The record of one pod, if it exists and is readable.
    pub fn load(&self, uid: &str) -> Option<PodRecord> {
        let b = std::fs::read(self.pod_dir(uid).join("record.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn remove(&self, uid: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.pod_dir(uid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    pub fn read_exit(&self, uid: &str, container: &str) -> Option<ExitInfo> {
        let b = std::fs::read(self.exit_path(uid, container)).ok()?;
        serde_json::from_slice(&b).ok()
    }
}

/// Keeps path components safe (uids and container names are validated by the
/// apiserver; this is belt and braces).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// (state char, start time) from the text of /proc/PID/stat. The command name (field 2)
/// may hold spaces and parentheses, so parse after the LAST ')'.
pub fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22 → index 19.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Start time of a live (not zombie) process, `None` when gone.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    match parse_proc_stat(&text)? {
        ('Z' | 'X' | 'x', _) => None,
        (_, start) => Some(start),
    }
}

/// Whether `pid` still is the process we started (same start time, not a zombie).
pub fn same_process_alive(pid: i32, start: u64) -> bool {
    proc_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parsing_handles_odd_names() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_proc_stat(line), Some(('S', 987654)));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_reuse_is_detected() {
        let me = std::process::id() as i32;
        let start = proc_start_time(me).unwrap();
        assert!(same_process_alive(me, start));
        assert!(!same_process_alive(me, start + 1));
    }

    #[test]
    fn records_round_trip_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path()).unwrap();
        let rec = PodRecord {
            uid: "u-1".into(),
            name: "p".into(),
            namespace: "default".into(),
            ip: Some(Ipv4Addr::new(10, 0, 1, 2)),
            netns: "kl-u-1".into(),
            host_if: "klv0".into(),
            start_time: 5,
            containers: vec![ContainerRecord {
                name: "c".into(),
                pid: Some(42),
                proc_start: Some(7),
                ..Default::default()
            }],
            network_released: false,
        };
        sd.save(&rec).unwrap();
        std::fs::create_dir_all(sd.pod_dir("broken")).unwrap();
        let (recs, bad) = sd.load_all();
        assert_eq!(recs, vec![rec]);
        assert_eq!(bad, vec!["broken".to_string()]);
        sd.remove("u-1").unwrap();
        sd.remove("u-1").unwrap();
        assert!(sd.load_all().0.is_empty());
    }

    #[test]
    fn sanitize_keeps_paths_inside() {
        assert_eq!(sanitize("../x"), "_x");
        assert_eq!(sanitize("a/b"), "a_b");
    }
}
