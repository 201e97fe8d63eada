//! Commands in containerd containers (issue 16): exec probes and hooks
//! ([`crate::runtime::Runtime::exec_sync`]) and `kubectl exec` sessions
//! ([`crate::runtime::Runtime::exec`]) through containerd's Task Exec API, as CRI's
//! ExecSync/Exec do it.
//!
//! - The process is the container's own (user, environment, cwd, capabilities,
//!   noNewPrivileges, rlimits… from the OCI spec on the containerd container record)
//!   with `args` replaced and `terminal` set; a terminal gets `TERM=xterm` unless the
//!   container sets TERM ([`process_spec`]).
//! - I/O goes through named pipes, containerd's convention: they are made here in a
//!   per-exec directory under the agent's state dir (`exec/<exec id>/`), their paths go
//!   to `Exec`, and the shim opens them in `Start`. Each of our ends is opened before
//!   the RPCs with a spare opposite end held, so neither side waits on the other and a
//!   reader sees EOF only after the command ended (the spare writer is dropped then).
//! - Every exec gets a unique id; `finish` (or dropping the process unfinished) kills
//!   what still runs, deletes the exec process from containerd and removes the FIFOs.

use super::client::Ctrd;
use crate::runtime::{ExecIo, ExecOptions, ExecOutput, ExecProcess, RuntimeError};
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tonic::Code;

/// Output an exec probe or hook keeps (ExecOutput: at most 1 KiB).
pub const MAX_SYNC_OUTPUT: usize = 1024;
/// How long output is still read after a synchronous command ended.
const SYNC_DRAIN: Duration = Duration::from_secs(1);
/// How long cleanup waits for a killed exec process to end before deleting it.
const REAP: Duration = Duration::from_secs(5);

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Where a command runs: the containerd container and the directory for its FIFOs.
pub struct Target {
    pub c: Ctrd,
    pub container_id: String,
    /// `<state dir>/exec`: one subdirectory per exec.
    pub fifo_root: PathBuf,
}

/// The prefix of this agent process's exec ids (its PID): [`sweep`] leaves them alone.
fn own_prefix() -> String {
    format!("kl-exec-{}-", std::process::id())
}

/// A unique exec id (containerd's identifier rules: `[A-Za-z0-9._-]`, ≤ 76).
pub fn exec_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}{:x}-{:016x}",
        own_prefix(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u64>()
    )
}

/// The file in an exec's FIFO directory that names its container (for [`sweep`]).
const CONTAINER_FILE: &str = "container";

/// After an agent restart: the exec processes a previous agent process left (its
/// sessions ended with it) are killed and deleted, their FIFO directories removed.
pub async fn sweep(c: &Ctrd, fifo_root: &Path) {
    let Ok(rd) = std::fs::read_dir(fifo_root) else {
        return;
    };
    let own = own_prefix();
    for e in rd.flatten() {
        let eid = e.file_name().to_string_lossy().into_owned();
        if eid.starts_with(&own) {
            continue;
        }
        let dir = e.path();
        match std::fs::read_to_string(dir.join(CONTAINER_FILE)) {
            Ok(cid) if !cid.trim().is_empty() => {
                tracing::info!(exec_id = %eid, container = %cid.trim(), "removing an exec left by a previous agent process");
                cleanup(c.clone(), cid.trim().to_string(), eid, dir, false, None).await;
            }
            _ => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

/// The exec's OCI Process from the container's OCI spec (JSON): the container's process
/// with `args` replaced, `terminal` set, the terminal's size, and `TERM=xterm` for a
/// terminal unless the container sets TERM (as CRI's execInternal does).
pub fn process_spec(
    container_spec: &[u8],
    args: &[String],
    tty: bool,
    size: Option<(u16, u16)>,
) -> Result<serde_json::Value, String> {
    let spec: serde_json::Value = serde_json::from_slice(container_spec)
        .map_err(|e| format!("the container's OCI spec: {e}"))?;
    let mut p = spec
        .get("process")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or("the container's OCI spec has no process")?;
    p["args"] = serde_json::json!(args);
    p["terminal"] = serde_json::json!(tty);
    let o = p.as_object_mut().expect("object");
    o.remove("commandLine");
    match size {
        Some((w, h)) if tty => {
            o.insert(
                "consoleSize".into(),
                serde_json::json!({"height": h, "width": w}),
            );
        }
        _ => {
            o.remove("consoleSize");
        }
    }
    if tty {
        let env = o
            .entry("env")
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
            .ok_or("the container's process.env is not a list")?;
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
        {
            env.push(serde_json::json!("TERM=xterm"));
        }
    }
    Ok(p)
}

/// The exit code of a command that could not start, from the runtime's message: 127
/// for a missing program, else 126 (as a shell and docker report it).
pub fn start_error_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("no such file or directory")
        || m.contains("executable file not found")
        || m.contains("not found in $path")
    {
        127
    } else {
        126
    }
}

/// Appends `data` to `kept` up to `max` bytes in all.
pub fn keep_bounded(kept: &mut Vec<u8>, data: &[u8], max: usize) {
    let room = max.saturating_sub(kept.len());
    kept.extend_from_slice(&data[..data.len().min(room)]);
}

fn io_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Exec(format!("{what}: {e}"))
}

fn mkfifo(p: &Path) -> Result<(), RuntimeError> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err(&format!("making FIFO {}", p.display()), e))
}

/// A started exec process in a containerd container.
pub struct CtrdExec {
    c: Ctrd,
    container_id: String,
    exec_id: String,
    dir: PathBuf,
    io: ExecIo,
    /// Spare writers of stdout/stderr: no EOF before the command ended.
    spare_writers: Vec<pipe::Sender>,
    /// Spare reader of stdin: writes never fail for want of a reader.
    _spare_reader: Option<pipe::Receiver>,
    waiter: Option<tokio::task::JoinHandle<Result<i32, String>>>,
    exit: Option<Result<i32, String>>,
    /// Cleanup done (else dropping does it in the background).
    finished: bool,
}

impl CtrdExec {
    /// Creates the FIFOs and starts `o.command` in `t`'s container.
    pub async fn start(t: &Target, o: &ExecOptions) -> Result<CtrdExec, RuntimeError> {
        let c = &t.c;
        let ct = c
            .containers()
            .get(c.req(GetContainerRequest {
                id: t.container_id.clone(),
            }))
            .await
            .map_err(|e| match e.code() {
                Code::NotFound => RuntimeError::Exec("container is not running".into()),
                _ => io_err("reading the containerd container", e.message()),
            })?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::Exec("container is not running".into()))?;
        let spec = ct
            .spec
            .ok_or_else(|| RuntimeError::Exec("the containerd container has no spec".into()))?;
        let process =
            process_spec(&spec.value, &o.command, o.tty, o.size).map_err(RuntimeError::Exec)?;
        let id = exec_id();
        let dir = t.fifo_root.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("the exec FIFO directory", e))?;
        if let Err(e) = std::fs::write(dir.join(CONTAINER_FILE), &t.container_id) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(io_err("the exec FIFO directory", e));
        }
        let mut x = CtrdExec {
            c: c.clone(),
            container_id: t.container_id.clone(),
            exec_id: id,
            dir,
            io: ExecIo::default(),
            spare_writers: Vec::new(),
            _spare_reader: None,
            waiter: None,
            exit: None,
            finished: false,
        };
        // From here on dropping `x` cleans up (the FIFO directory, the exec process).
        let (stdout, stderr, stdin) = x.open_fifos(o)?;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        c.tasks()
            .exec(c.req(ExecProcessRequest {
                container_id: x.container_id.clone(),
                stdin: path(&stdin),
                stdout: path(&Some(stdout)),
                stderr: path(&stderr),
                terminal: o.tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.into(),
                    value: serde_json::to_vec(&process).expect("json"),
                }),
                exec_id: x.exec_id.clone(),
            }))
            .await
            .map_err(|e| match e.code() {
                Code::NotFound | Code::FailedPrecondition => {
                    RuntimeError::Exec(format!("container is not running ({})", e.message()))
                }
                _ => io_err("containerd exec", e.message()),
            })?;
        if let Err(e) = c
            .tasks()
            .start(c.req(StartRequest {
                container_id: x.container_id.clone(),
                exec_id: x.exec_id.clone(),
            }))
            .await
        {
            return Err(RuntimeError::ExecStart {
                exit_code: start_error_code(e.message()),
                message: format!(
                    "error executing command in container: failed to start exec {:?}: {}",
                    x.exec_id,
                    e.message()
                ),
            });
        }
        if let (true, Some((w, h))) = (o.tty, o.size) {
            x.resize_async(w, h).await;
        }
        let (c2, cid, eid) = (c.clone(), x.container_id.clone(), x.exec_id.clone());
        x.waiter = Some(tokio::spawn(async move {
            c2.tasks()
                .wait(c2.req(WaitRequest {
                    container_id: cid,
                    exec_id: eid,
                }))
                .await
                .map(|r| r.into_inner().exit_status as i32)
                .map_err(|e| format!("waiting for the command: {}", e.message()))
        }));
        Ok(x)
    }

    /// Makes the FIFOs and opens our ends: (stdout, stderr, stdin) paths.
    fn open_fifos(
        &mut self,
        o: &ExecOptions,
    ) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>), RuntimeError> {
        let reader = |p: &Path| -> Result<(pipe::Receiver, pipe::Sender), RuntimeError> {
            mkfifo(p)?;
            let r = pipe::OpenOptions::new()
                .open_receiver(p)
                .map_err(|e| io_err("opening the output FIFO", e))?;
            let w = pipe::OpenOptions::new()
                .open_sender(p)
                .map_err(|e| io_err("opening the output FIFO", e))?;
            Ok((r, w))
        };
        let stdout = self.dir.join("stdout");
        let (r, w) = reader(&stdout)?;
        self.io.stdout = Some(Box::new(r));
        self.spare_writers.push(w);
        let mut stderr = None;
        if !o.tty {
            let p = self.dir.join("stderr");
            let (r, w) = reader(&p)?;
            self.io.stderr = Some(Box::new(r));
            self.spare_writers.push(w);
            stderr = Some(p);
        }
        let mut stdin = None;
        if o.stdin {
            let p = self.dir.join("stdin");
            mkfifo(&p)?;
            let r = pipe::OpenOptions::new()
                .open_receiver(&p)
                .map_err(|e| io_err("opening the stdin FIFO", e))?;
            let w = pipe::OpenOptions::new()
                .open_sender(&p)
                .map_err(|e| io_err("opening the stdin FIFO", e))?;
            self.io.stdin = Some(Box::new(w));
            self._spare_reader = Some(r);
            stdin = Some(p);
        }
        Ok((stdout, stderr, stdin))
    }

    async fn resize_async(&self, width: u16, height: u16) {
        let r = self
            .c
            .tasks()
            .resize_pty(self.c.req(ResizePtyRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                width: width as u32,
                height: height as u32,
            }))
            .await;
        if let Err(e) = r {
            tracing::debug!(exec_id = %self.exec_id, "exec resize: {}", e.message());
        }
    }

    async fn wait_async(&mut self) -> Result<i32, String> {
        if let Some(r) = &self.exit {
            return r.clone();
        }
        let r = match self.waiter.as_mut() {
            Some(w) => w
                .await
                .unwrap_or_else(|e| Err(format!("waiting for the command: {e}"))),
            None => Err("the command was not started".to_string()),
        };
        self.waiter = None;
        // Ended: the shim's writers are the last; EOF comes when it has copied all.
        self.spare_writers.clear();
        self.exit = Some(r.clone());
        r
    }

    async fn kill_async(&self) {
        let _ = self
            .c
            .tasks()
            .kill(self.c.req(KillRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal: 9,
                all: false,
            }))
            .await;
    }

    fn cleanup_job(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.finished = true;
        let ended = self.exit.is_some();
        let (c, cid, eid, dir) = (
            self.c.clone(),
            self.container_id.clone(),
            self.exec_id.clone(),
            self.dir.clone(),
        );
        let waiter = self.waiter.take();
        self.spare_writers.clear();
        self._spare_reader = None;
        self.io = ExecIo::default();
        cleanup(c, cid, eid, dir, ended, waiter)
    }
}

/// Kills (unless it ended), waits a bounded time, deletes the exec process from
/// containerd (tolerating NotFound) and removes the FIFO directory.
async fn cleanup(
    c: Ctrd,
    cid: String,
    eid: String,
    dir: PathBuf,
    ended: bool,
    waiter: Option<tokio::task::JoinHandle<Result<i32, String>>>,
) {
    if !ended {
        let _ = c
            .tasks()
            .kill(c.req(KillRequest {
                container_id: cid.clone(),
                exec_id: eid.clone(),
                signal: 9,
                all: false,
            }))
            .await;
        if let Some(w) = waiter {
            let _ = tokio::time::timeout(REAP, w).await;
        }
    }
    let deadline = tokio::time::Instant::now() + REAP;
    loop {
        match c
            .tasks()
            .delete_process(c.req(DeleteProcessRequest {
                container_id: cid.clone(),
                exec_id: eid.clone(),
            }))
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == Code::NotFound => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(exec_id = %eid, container = %cid, "deleting the exec process: {}", e.message());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing the exec FIFOs: {e}");
        }
    }
}

impl Drop for CtrdExec {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let job = self.cleanup_job();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(job);
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

impl ExecProcess for CtrdExec {
    fn take_io(&mut self) -> ExecIo {
        std::mem::take(&mut self.io)
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>> {
        Box::pin(self.wait_async())
    }

    fn resize(&mut self, width: u16, height: u16) -> BoxFuture<'_, ()> {
        Box::pin(self.resize_async(width, height))
    }

    fn close_stdin(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Our writer is gone; the shim holds one too until CloseIO.
            let _ = self
                .c
                .tasks()
                .close_io(self.c.req(CloseIoRequest {
                    container_id: self.container_id.clone(),
                    exec_id: self.exec_id.clone(),
                    stdin: true,
                }))
                .await;
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.kill_async())
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.cleanup_job())
    }
}

/// Reads `r` to its end into `kept` (bounded), dropping what does not fit.
async fn read_bounded(
    mut r: Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>,
    kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => keep_bounded(&mut kept.lock().unwrap(), &buf[..n], MAX_SYNC_OUTPUT),
        }
    }
}

/// `cmd` in `t`'s container, killed after `timeout`: exit code and the first KiB of
/// stdout and stderr (interleaved), as CRI's ExecSync.
pub async fn exec_sync(
    t: Target,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    let opts = ExecOptions {
        command: cmd,
        ..Default::default()
    };
    let mut x = match CtrdExec::start(&t, &opts).await {
        Ok(x) => x,
        Err(RuntimeError::ExecStart { exit_code, message }) => {
            let mut output = Vec::new();
            keep_bounded(&mut output, message.as_bytes(), MAX_SYNC_OUTPUT);
            return Ok(ExecOutput { exit_code, output });
        }
        Err(e) => return Err(e),
    };
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let io = x.take_io();
    let mut readers: Vec<_> = [io.stdout, io.stderr]
        .into_iter()
        .flatten()
        .map(|r| tokio::spawn(read_bounded(r, kept.clone())))
        .collect();
    let code = match tokio::time::timeout(timeout, x.wait_async()).await {
        Ok(r) => r,
        Err(_) => {
            for r in readers {
                r.abort();
            }
            x.kill_async().await;
            Box::new(x).finish().await;
            return Err(RuntimeError::Exec(format!(
                "command timed out after {}s",
                timeout.as_secs()
            )));
        }
    };
    let _ = tokio::time::timeout(SYNC_DRAIN, async {
        for r in readers.iter_mut() {
            let _ = r.await;
        }
    })
    .await;
    for r in readers {
        r.abort();
    }
    Box::new(x).finish().await;
    let exit_code = code.map_err(RuntimeError::Exec)?;
    let output = std::mem::take(&mut *kept.lock().unwrap());
    Ok(ExecOutput { exit_code, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":1000,"gid":1000},
        "args":["sleep","3600"],"env":["PATH=/bin","HOME=/home/app"],"cwd":"/work",
        "capabilities":{"bounding":["CAP_CHOWN"]},"noNewPrivileges":true},
        "root":{"path":"rootfs"}}"#;

    #[test]
    fn exec_processes_are_the_containers_with_args_replaced() {
        let args = vec!["sh".to_string(), "-c".into(), "id".into()];
        let p = process_spec(SPEC.as_bytes(), &args, false, Some((100, 30))).unwrap();
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "id"]));
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["cwd"], "/work");
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["capabilities"]["bounding"][0], "CAP_CHOWN");
        assert_eq!(p["terminal"], false);
        assert!(p.get("consoleSize").is_none(), "no terminal, no size");
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "HOME=/home/app"]));
        // A terminal: its size and TERM (unless the container sets one).
        let t = process_spec(SPEC.as_bytes(), &args, true, Some((100, 30))).unwrap();
        assert_eq!(t["terminal"], true);
        assert_eq!(
            t["consoleSize"],
            serde_json::json!({"height": 30, "width": 100})
        );
        assert_eq!(t["env"][2], "TERM=xterm");
        let own = SPEC.replace("\"HOME=/home/app\"", "\"TERM=vt100\"");
        let t = process_spec(own.as_bytes(), &args, true, None).unwrap();
        assert_eq!(t["env"], serde_json::json!(["PATH=/bin", "TERM=vt100"]));
        // Specs without a process are refused with a reason.
        assert!(process_spec(b"{}", &args, false, None)
            .unwrap_err()
            .contains("no process"));
        assert!(process_spec(b"not json", &args, false, None)
            .unwrap_err()
            .contains("OCI spec"));
    }

    #[test]
    fn start_errors_read_as_a_shell_reports_them() {
        let missing = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"/no/such\": stat /no/such: no such file or directory: unknown";
        assert_eq!(start_error_code(missing), 127);
        assert_eq!(
            start_error_code("exec: \"nope\": executable file not found in $PATH: unknown"),
            127
        );
        assert_eq!(start_error_code("exec: \"/etc\": permission denied"), 126);
    }

    #[test]
    fn ids_are_unique_and_valid_and_output_is_bounded() {
        let (a, b) = (exec_id(), exec_id());
        assert_ne!(a, b);
        assert!(a.len() <= 76);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)));
        let mut kept = Vec::new();
        keep_bounded(&mut kept, &[b'x'; 1000], MAX_SYNC_OUTPUT);
        keep_bounded(&mut kept, &[b'y'; 1000], MAX_SYNC_OUTPUT);
        assert_eq!(kept.len(), MAX_SYNC_OUTPUT);
        assert_eq!(kept[999..1001], *b"xy");
    }
}
