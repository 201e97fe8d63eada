//! Container runtimes behind a small trait, so a containerd runtime can be added
//! without touching the pod logic. [`ProcessRuntime`] runs a container as a process tree
//! `shim → init (PID 1 of its own PID namespace) → program`, see [`crate::init`].

use crate::init::{InitArgs, Stage};
use crate::logfile::rotated_path;
use crate::state::{proc_start_time, same_process_alive, ExitInfo, StateDir};
use futures::future::BoxFuture;
use kube_lite_core::consts::reason;
use kube_lite_core::time::now_ms;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub pod_uid: String,
    /// Hostname inside the container (the pod name).
    pub hostname: String,
    pub container: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Path of the pod's network namespace (`/run/netns/<name>`); None = the agent's.
    pub netns_path: Option<PathBuf>,
    /// Contents of the container's /etc/resolv.conf (bind-mounted over the node's in
    /// its mount namespace); None = the node's.
    pub resolv_conf: Option<String>,
}

/// Environment variable by which the runtime tells the container init which file to
/// bind-mount on /etc/resolv.conf (removed before the program starts).
pub const RESOLV_CONF_ENV: &str = "KUBE_LITE_INIT_RESOLV_CONF";

/// A started (or adopted) container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    pub pid: i32,
    pub proc_start: u64,
    pub started_at: i64,
}

/// A live container instance found by its marker (not by a record): after a kill -9
/// of the agent between spawning an instance and recording it, this is how the next
/// agent process finds it again, to adopt or kill it, never to start a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub pod_uid: String,
    pub container: String,
    pub handle: Handle,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("starting container {container}: {source}")]
    Start {
        container: String,
        source: std::io::Error,
    },
    #[error("signalling pid {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
}

pub trait Runtime: Send + Sync + 'static {
    /// Starts an instance: the previous instance's log becomes `.log.1`, the exit
    /// file is cleared.
    fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError>;
    /// Graceful stop request (SIGTERM, forwarded to the program by the init).
    fn terminate(&self, h: &Handle) -> Result<(), RuntimeError>;
    /// Kills the whole instance (the init and with it its PID namespace).
    fn kill(&self, h: &Handle) -> Result<(), RuntimeError>;
    /// Whether the instance still runs (false for a reused PID).
    fn alive(&self, h: &Handle) -> bool;
    /// Takes over an instance recorded by a previous agent process: true if it still
    /// runs (then [`Runtime::wait`] follows it like one of ours).
    fn adopt(&self, h: &Handle) -> bool {
        self.alive(h)
    }
    /// Resolves when the instance has ended, with how it ended. Works for instances
    /// started by this process and for adopted ones.
    fn wait(&self, pod_uid: &str, container: &str, h: Handle) -> BoxFuture<'static, ExitInfo>;
    /// Every live instance of this runtime (this state dir), recorded or not.
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

/// `(pod uid, container)` of a container shim from its `/proc/PID/cmdline` (NUL
/// separated): `nodeagent init shim NETNS HOSTNAME <pods dir>/<uid>/<container>.exit …`.
/// The exit file path is the marker: it names the state dir, the pod and the container.
pub fn parse_shim_cmdline(cmdline: &[u8], pods_dir: &Path) -> Option<(String, String)> {
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if argv.len() < 6 || argv[1] != b"init" || argv[2] != b"shim" {
        return None;
    }
    let exit = Path::new(std::str::from_utf8(argv[5]).ok()?);
    let rest = exit.strip_prefix(pods_dir).ok()?;
    let mut parts = rest.iter();
    let uid = parts.next()?.to_str()?.to_string();
    let file = parts.next()?.to_str()?;
    if parts.next().is_some() {
        return None;
    }
    let container = file.strip_suffix(".exit")?.to_string();
    (!uid.is_empty() && !container.is_empty()).then_some((uid, container))
}

/// Containers as processes in namespaces.
pub struct ProcessRuntime {
    state: StateDir,
    /// The binary that implements `init` (normally our own executable).
    init_exe: PathBuf,
    /// Children this process spawned (adopted instances are not in here).
    children: Mutex<HashMap<i32, tokio::process::Child>>,
    /// Container log rotation size in bytes (0 = never).
    log_max: u64,
}

impl ProcessRuntime {
    /// `log_max`: rotate each container log at this many bytes, keeping one rotated
    /// part (0 = never).
    pub fn new(state: StateDir, init_exe: PathBuf, log_max: u64) -> Arc<ProcessRuntime> {
        Arc::new(ProcessRuntime {
            state,
            init_exe,
            children: Mutex::new(HashMap::new()),
            log_max,
        })
    }
}

impl Runtime for ProcessRuntime {
    fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError> {
        let err = |source| RuntimeError::Start {
            container: spec.container.clone(),
            source,
        };
        let dir = self.state.pod_dir(&spec.pod_uid);
        std::fs::create_dir_all(&dir).map_err(err)?;
        let log = self.state.log_path(&spec.pod_uid, &spec.container);
        if log.exists() {
            // The previous instance's log (both parts) becomes `.log.1` (+ rotated).
            let prev = self.state.previous_log_path(&spec.pod_uid, &spec.container);
            let _ = std::fs::rename(&log, &prev);
            let (rot, prev_rot) = (rotated_path(&log), rotated_path(&prev));
            if std::fs::rename(&rot, &prev_rot).is_err() {
                let _ = std::fs::remove_file(&prev_rot);
            }
        }
        let exit_file = self.state.exit_path(&spec.pod_uid, &spec.container);
        let _ = std::fs::remove_file(&exit_file);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(err)?;
        let errf = out.try_clone().map_err(err)?;
        let args = InitArgs {
            stage: Stage::Shim,
            netns: spec.netns_path.clone(),
            hostname: spec.hostname.clone(),
            exit_file,
            log: Some(log.clone()),
            log_max: self.log_max,
            program: spec.program.display().to_string(),
            args: spec.args.clone(),
        };
        let resolv = match &spec.resolv_conf {
            Some(text) => {
                let p = dir.join("resolv.conf");
                kube_lite_net::write_atomic(&p, text.as_bytes()).map_err(err)?;
                Some(p)
            }
            None => None,
        };
        let mut cmd = tokio::process::Command::new(&self.init_exe);
        cmd.arg0("nodeagent")
            .args(args.to_argv())
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOSTNAME", &spec.hostname)
            .env("HOME", "/")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(resolv.iter().map(|p| (RESOLV_CONF_ENV, p.as_os_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(errf)
            .kill_on_drop(false)
            .current_dir("/");
        let started_at = now_ms();
        let child = cmd.spawn().map_err(err)?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        // Right after fork the start time is readable (the process exists until reaped).
        let proc_start = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| crate::state::parse_proc_stat(&t).map(|(_, s)| s))
            .unwrap_or(0);
        self.children.lock().unwrap().insert(pid, child);
        Ok(Handle {
            pid,
            proc_start,
            started_at,
        })
    }

    fn terminate(&self, h: &Handle) -> Result<(), RuntimeError> {
        if !self.alive(h) {
            return Ok(());
        }
        kill(Pid::from_raw(h.pid), Signal::SIGTERM)
            .map_err(|source| RuntimeError::Signal { pid: h.pid, source })
    }

    fn kill(&self, h: &Handle) -> Result<(), RuntimeError> {
        if !self.alive(h) {
            return Ok(());
        }
        // The shim leads its own session and process group; the init is in it too.
        match killpg(Pid::from_raw(h.pid), Signal::SIGKILL) {
            Ok(()) => Ok(()),
            Err(_) => kill(Pid::from_raw(h.pid), Signal::SIGKILL)
                .map_err(|source| RuntimeError::Signal { pid: h.pid, source }),
        }
    }

    fn alive(&self, h: &Handle) -> bool {
        h.pid > 0 && same_process_alive(h.pid, h.proc_start)
    }

    fn wait(&self, pod_uid: &str, container: &str, h: Handle) -> BoxFuture<'static, ExitInfo> {
        let child = self.children.lock().unwrap().remove(&h.pid);
        let state = self.state.clone();
        let (uid, name) = (pod_uid.to_string(), container.to_string());
        Box::pin(async move {
            let mut status = None;
            match child {
                Some(mut c) => status = c.wait().await.ok(),
                None => {
                    // Adopted: not our child; poll.
                    while same_process_alive(h.pid, h.proc_start) {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
            if let Some(info) = state.read_exit(&uid, &name) {
                return info;
            }
            use std::os::unix::process::ExitStatusExt;
            let (code, signal) = match status {
                Some(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => (c, None),
                    (None, Some(sig)) => (128 + sig, Some(sig)),
                    _ => (255, None),
                },
                None => (137, None),
            };
            ExitInfo {
                exit_code: code,
                signal,
                reason: reason::ERROR.into(),
                message: "container init ended without recording an exit status (killed)".into(),
                finished_at: now_ms(),
            }
        })
    }

    fn instances(&self) -> Vec<Instance> {
        let pods_dir = self.state.root().join("pods");
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let Some((pod_uid, container)) = parse_shim_cmdline(&cmd, &pods_dir) else {
                continue;
            };
            let Some(proc_start) = proc_start_time(pid) else {
                continue;
            };
            out.push(Instance {
                pod_uid,
                container,
                handle: Handle {
                    pid,
                    proc_start,
                    started_at: now_ms(),
                },
            });
        }
        out.sort_by_key(|i| (i.handle.proc_start, i.handle.pid));
        out
    }
}

/// Start time of a process, for records of instances found alive.
pub fn start_time_of(pid: i32) -> Option<u64> {
    proc_start_time(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_cmdlines_name_their_pod_and_container() {
        let dir = Path::new("/var/lib/kl/n0/pods");
        let cmd = b"nodeagent\0init\0shim\0/run/netns/kl-x\0web\0/var/lib/kl/n0/pods/u-1/c.exit\0-\0\x30\0--\0/bin/sleep\0";
        assert_eq!(
            parse_shim_cmdline(cmd, dir),
            Some(("u-1".to_string(), "c".to_string()))
        );
        // pid1 (not the shim), another state dir, not an exit file, too short.
        let pid1 = b"nodeagent\0init\0pid1\0-\0web\0/var/lib/kl/n0/pods/u-1/c.exit\0--\0x\0";
        assert_eq!(parse_shim_cmdline(pid1, dir), None);
        let other = b"nodeagent\0init\0shim\0-\0web\0/var/lib/kl/n1/pods/u-1/c.exit\0--\0x\0";
        assert_eq!(parse_shim_cmdline(other, dir), None);
        let log = b"nodeagent\0init\0shim\0-\0web\0/var/lib/kl/n0/pods/u-1/c.log\0--\0x\0";
        assert_eq!(parse_shim_cmdline(log, dir), None);
        assert_eq!(parse_shim_cmdline(b"nodeagent\0init\0shim\0", dir), None);
        assert_eq!(parse_shim_cmdline(b"", dir), None);
    }
}
