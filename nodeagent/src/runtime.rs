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
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Resource limits of an instance and of its pod (issue 13; zero = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerResources {
    pub container: crate::cgroups::Limits,
    pub pod: crate::cgroups::Limits,
}

/// What to run.
#[derive(Debug, Clone, Default)]
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
    /// The container's image, command and args as in the pod spec, and its
    /// imagePullPolicy: for runtimes that run images ([`Runtime::uses_images`]);
    /// `program`/`args` are then unused.
    pub image: String,
    pub command: Vec<String>,
    pub image_args: Vec<String>,
    pub image_pull_policy: String,
    /// cgroup limits (memory/cpu) for the instance and its pod.
    pub resources: ContainerResources,
    /// Contents of the container's /etc/resolv.conf (bind-mounted over the node's in
    /// its mount namespace); None = the node's.
    pub resolv_conf: Option<String>,
    /// Volume mounts (issue 13), applied by the init in the container's mount namespace.
    pub mounts: Vec<crate::mounts::Mount>,
    /// What the program runs as (securityContext).
    pub security: crate::security::ProcessSecurity,
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

/// What a command run in a container by [`Runtime::exec_sync`] gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout and stderr, interleaved, at most 1 KiB kept.
    pub output: Vec<u8>,
}

/// An interactive command in a container (NodeExec, `kubectl exec`): what
/// [`Runtime::exec`] runs and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// A pseudo-terminal: stdin, stdout and stderr are one stream, resizable.
    pub tty: bool,
    /// The client sends stdin (else the command's stdin is empty).
    pub stdin: bool,
    /// The terminal's first size, (width, height).
    pub size: Option<(u16, u16)>,
}

/// The streams of an [`ExecProcess`]: stdout (the terminal with a tty), stderr (None
/// with a tty), stdin (when asked).
#[derive(Default)]
pub struct ExecIo {
    pub stdout: Option<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>>,
    pub stderr: Option<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>>,
    pub stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>>,
}

/// A command started by [`Runtime::exec`]. The session drives it: streams, resizes,
/// the end of stdin, its exit, a kill when the client leaves, then [`ExecProcess::finish`]
/// (dropping it unfinished releases it too, in the background).
pub trait ExecProcess: Send {
    /// The streams (once).
    fn take_io(&mut self) -> ExecIo;
    /// Resolves with the exit code (128+N for signal N).
    fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>>;
    /// New terminal size (width, height); nothing without a tty.
    fn resize(&mut self, width: u16, height: u16) -> BoxFuture<'_, ()>;
    /// The client's stdin ended and the session dropped its writer: the command's
    /// stdin is to reach its end.
    fn close_stdin(&mut self) -> BoxFuture<'_, ()>;
    /// Kills the command.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
    /// Releases what the runtime keeps for the command (after it ended).
    fn finish(self: Box<Self>) -> BoxFuture<'static, ()>;
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("exec in container: {0}")]
    Exec(String),
    /// The container runs but the command could not start (no such program: 127,
    /// else 126, as a shell and docker report it).
    #[error("{message}")]
    ExecStart { exit_code: i32, message: String },
    #[error("starting container {container}: {source}")]
    Start {
        container: String,
        source: std::io::Error,
    },
    #[error("signalling pid {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
    /// The image cannot be used (not on the node, bad name): `reason` is Kubernetes'
    /// (ErrImagePull, ErrImageNeverPull, InvalidImageName).
    #[error("{message}")]
    Image { reason: String, message: String },
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
    /// Whether the runtime runs images itself (then the agent does not resolve
    /// `image` to a program on the node).
    fn uses_images(&self) -> bool {
        false
    }
    /// Runs `cmd` inside instance `h` (its namespaces, environment; exec probes), killed
    /// after `timeout`. Issue 13's extension of the trait; a runtime without it says so.
    fn exec_sync(
        &self,
        h: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ExecOutput, RuntimeError>> {
        let _ = (h, cmd, timeout);
        Box::pin(async { Err(RuntimeError::Exec("not supported by this runtime".into())) })
    }
    /// Starts an interactive command in instance `h` (NodeExec). Issue 16's extension
    /// of the trait; a runtime without it says so.
    fn exec(
        &self,
        h: &Handle,
        opts: &ExecOptions,
    ) -> BoxFuture<'static, Result<Box<dyn ExecProcess>, RuntimeError>> {
        let _ = (h, opts);
        Box::pin(async { Err(RuntimeError::Exec("not supported by this runtime".into())) })
    }
    /// The pod is gone: release what the runtime keeps per pod (cgroups). Its
    /// instances have ended.
    fn release_pod(&self, pod_uid: &str) {
        let _ = pod_uid;
    }
    /// Releases per-pod leftovers of every pod not in `keep` (after a restart).
    fn sweep(&self, keep: &std::collections::HashSet<String>) {
        let _ = keep;
    }
}

/// The parent PID (field 4) of a `/proc/PID/stat` text.
pub fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The PID (host view) of the container init below shim `shim` (its only child): the
/// process whose namespaces a command run in the container joins.
pub fn container_init_pid(shim: i32) -> Option<i32> {
    let rd = std::fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if parse_ppid(&stat) == Some(shim) {
            return Some(pid);
        }
    }
    None
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
    /// Resource limits (None: the host has no usable cgroups).
    cgroups: Option<crate::cgroups::Cgroups>,
    /// OOM kills already counted in an instance's cgroup when it started (by pid).
    oom_base: Mutex<HashMap<i32, u64>>,
}

impl ProcessRuntime {
    /// `log_max`: rotate each container log at this many bytes, keeping one rotated
    /// part (0 = never).
    pub fn new(state: StateDir, init_exe: PathBuf, log_max: u64) -> Arc<ProcessRuntime> {
        Self::with_cgroups(state, init_exe, log_max, None)
    }

    /// As [`ProcessRuntime::new`], limiting containers with `cgroups`.
    pub fn with_cgroups(
        state: StateDir,
        init_exe: PathBuf,
        log_max: u64,
        cgroups: Option<crate::cgroups::Cgroups>,
    ) -> Arc<ProcessRuntime> {
        Arc::new(ProcessRuntime {
            state,
            init_exe,
            children: Mutex::new(HashMap::new()),
            log_max,
            cgroups,
            oom_base: Mutex::new(HashMap::new()),
        })
    }

    /// The instance's cgroup: created, limits written; the `cgroup.procs` files opened
    /// for the shim to join before it runs anything. An error only when the container
    /// has limits (without limits the cgroup only serves OOM accounting).
    fn cgroup_for(&self, spec: &ContainerSpec) -> Result<Vec<std::fs::File>, String> {
        let Some(cg) = &self.cgroups else {
            if spec.resources != ContainerResources::default() {
                return Err("resource limits requested but this node has no usable cgroups".into());
            }
            return Ok(Vec::new());
        };
        let r = cg
            .setup_container(
                &spec.pod_uid,
                &spec.container,
                &spec.resources.pod,
                &spec.resources.container,
            )
            .and_then(|procs| {
                procs
                    .iter()
                    .map(|p| std::fs::OpenOptions::new().write(true).open(p))
                    .collect::<std::io::Result<Vec<_>>>()
            });
        match r {
            Ok(files) => Ok(files),
            Err(e) if spec.resources == ContainerResources::default() => {
                tracing::warn!(pod_uid = %spec.pod_uid, container = %spec.container, "cgroup: {e}; running without one");
                Ok(Vec::new())
            }
            Err(e) => Err(format!("cgroup: {e}")),
        }
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
        self.state
            .rotate_previous_log(&spec.pod_uid, &spec.container);
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
        let cgroup_files = self
            .cgroup_for(spec)
            .map_err(|m| err(std::io::Error::other(m)))?;
        let resolv = match &spec.resolv_conf {
            Some(text) => Some(
                self.state
                    .write_resolv_conf(&spec.pod_uid, text)
                    .map_err(err)?,
            ),
            None => None,
        };
        let mounts = if spec.mounts.is_empty() {
            None
        } else {
            let p = dir.join(format!("{}.mounts", spec.container));
            crate::mounts::write(&p, &spec.mounts).map_err(err)?;
            Some(p)
        };
        let mut cmd = tokio::process::Command::new(&self.init_exe);
        join_cgroups(&mut cmd, &cgroup_files);
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
            .envs(
                mounts
                    .iter()
                    .map(|p| (crate::mounts::MOUNTS_ENV, p.as_os_str())),
            )
            .envs(
                (!spec.security.is_default())
                    .then(|| (crate::security::SECURITY_ENV, spec.security.encode())),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(errf)
            .kill_on_drop(false)
            .current_dir("/");
        let started_at = now_ms();
        let child = cmd.spawn().map_err(err)?;
        drop(cgroup_files);
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        if let Some(cg) = &self.cgroups {
            let base = cg.oom_kills(&spec.pod_uid, &spec.container);
            self.oom_base.lock().unwrap().insert(pid, base);
        }
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
        let cgroups = self.cgroups.clone();
        let oom_base = self.oom_base.lock().unwrap().remove(&h.pid).unwrap_or(0);
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
            let oom = || {
                cgroups
                    .as_ref()
                    .is_some_and(|cg| cg.oom_kills(&uid, &name) > oom_base)
            };
            if let Some(mut info) = state.read_exit(&uid, &name) {
                if info.exit_code == 137 && oom() {
                    info.reason = reason::OOM_KILLED.into();
                }
                return info;
            }
            if oom() {
                return ExitInfo {
                    exit_code: 137,
                    signal: Some(9),
                    reason: reason::OOM_KILLED.into(),
                    message: String::new(),
                    finished_at: now_ms(),
                };
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

    fn exec_sync(
        &self,
        h: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ExecOutput, RuntimeError>> {
        let (h, cmd, exe) = (*h, cmd.to_vec(), self.init_exe.clone());
        let alive = self.alive(&h);
        Box::pin(async move {
            if !alive {
                return Err(RuntimeError::Exec("container is not running".into()));
            }
            let Some(target) = tokio::task::spawn_blocking(move || container_init_pid(h.pid))
                .await
                .ok()
                .flatten()
            else {
                return Err(RuntimeError::Exec("container init not found".into()));
            };
            let (rd, wr) = std::io::pipe().map_err(|e| RuntimeError::Exec(e.to_string()))?;
            let wr2 = wr
                .try_clone()
                .map_err(|e| RuntimeError::Exec(e.to_string()))?;
            let mut c = tokio::process::Command::new(&exe);
            c.arg0("nodeagent")
                .args(crate::init::exec_argv(target, &cmd))
                .stdin(Stdio::null())
                .stdout(wr)
                .stderr(wr2)
                .kill_on_drop(true);
            let mut child = c.spawn().map_err(|e| RuntimeError::Exec(e.to_string()))?;
            drop(c);
            // Bounded: the first KiB is kept, the rest read and dropped.
            let reader = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut rd = rd;
                let (mut kept, mut buf) = (Vec::new(), [0u8; 4096]);
                while let Ok(n) = rd.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = 1024usize.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                kept
            });
            let status = match tokio::time::timeout(timeout, child.wait()).await {
                Ok(s) => s.map_err(|e| RuntimeError::Exec(e.to_string()))?,
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(RuntimeError::Exec(format!(
                        "command timed out after {}s",
                        timeout.as_secs()
                    )));
                }
            };
            let output = tokio::time::timeout(Duration::from_secs(1), reader)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            use std::os::unix::process::ExitStatusExt;
            let exit_code = status
                .code()
                .or(status.signal().map(|s| 128 + s))
                .unwrap_or(255);
            Ok(ExecOutput { exit_code, output })
        })
    }

    fn exec(
        &self,
        h: &Handle,
        opts: &ExecOptions,
    ) -> BoxFuture<'static, Result<Box<dyn ExecProcess>, RuntimeError>> {
        let (h, opts, exe) = (*h, opts.clone(), self.init_exe.clone());
        let alive = self.alive(&h);
        Box::pin(async move {
            let not_running = || RuntimeError::Exec("container is not running".into());
            if !alive {
                return Err(not_running());
            }
            let target = tokio::task::spawn_blocking(move || container_init_pid(h.pid))
                .await
                .ok()
                .flatten()
                .ok_or_else(not_running)?;
            let p = crate::exec_process::spawn(&exe, target, &opts)?;
            Ok(Box::new(p) as Box<dyn ExecProcess>)
        })
    }

    fn release_pod(&self, pod_uid: &str) {
        if let Some(cg) = &self.cgroups {
            cg.remove_pod(pod_uid);
        }
    }

    fn sweep(&self, keep: &std::collections::HashSet<String>) {
        if let Some(cg) = &self.cgroups {
            for uid in cg.pods() {
                if !keep.contains(&uid) {
                    tracing::info!(uid, "removing the cgroups of a pod not on this node");
                    cg.remove_pod(&uid);
                }
            }
        }
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

/// The child writes "0" (itself) into each open `cgroup.procs` file between fork and
/// exec, so the shim and everything it starts run in the container's cgroup from their
/// first instruction.
#[allow(unsafe_code)]
fn join_cgroups(cmd: &mut tokio::process::Command, files: &[std::fs::File]) {
    use std::os::fd::AsRawFd;
    if files.is_empty() {
        return;
    }
    let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: between fork and exec the closure only calls write(2) (async-signal-safe)
    // on descriptors that stay open until spawn returns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
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

    #[test]
    fn ppid_from_stat() {
        assert_eq!(parse_ppid("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (x)"), None);
    }
}
