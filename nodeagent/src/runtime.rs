//! Container runtimes behind a small trait, so a containerd runtime can be added
//! without touching the pod logic. [`ProcessRuntime`] runs a container as a process tree
//! `shim → init (PID 1 of its own PID namespace) → program`, see [`crate::init`].

use crate::init::{InitArgs, Stage};
use crate::state::{proc_start_time, same_process_alive, ExitInfo, StateDir};
use futures::future::BoxFuture;
use kube_lite_core::consts::reason;
use kube_lite_core::time::now_ms;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::PathBuf;
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
}

/// A started (or adopted) container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    pub pid: i32,
    pub proc_start: u64,
    pub started_at: i64,
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
}

/// Containers as processes in namespaces.
pub struct ProcessRuntime {
    state: StateDir,
    /// The binary that implements `init` (normally our own executable).
    init_exe: PathBuf,
    /// Children this process spawned (adopted instances are not in here).
    children: Mutex<HashMap<i32, tokio::process::Child>>,
}

impl ProcessRuntime {
    pub fn new(state: StateDir, init_exe: PathBuf) -> Arc<ProcessRuntime> {
        Arc::new(ProcessRuntime {
            state,
            init_exe,
            children: Mutex::new(HashMap::new()),
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
            let _ = std::fs::rename(
                &log,
                self.state.previous_log_path(&spec.pod_uid, &spec.container),
            );
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
            program: spec.program.display().to_string(),
            args: spec.args.clone(),
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
}

/// Start time of a process, for records of instances found alive.
pub fn start_time_of(pid: i32) -> Option<u64> {
    proc_start_time(pid)
}
