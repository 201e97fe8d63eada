//! The NodeExec gRPC service (issue 13): `kubectl-lite exec` arrives here from the
//! apiserver (mTLS; only the apiserver's certificate is admitted, as for Logs).
//!
//! One session per call: the first request names the pod, container and command; the
//! command runs as `nodeagent init exec PID -- CMD…` (see [`crate::init`]), which joins
//! the container init's namespaces (uts, ipc, net, pid, mount), its cgroups, its
//! environment and its user/capabilities, so the command sees what the container sees.
//! Without a tty stdout and stderr come back apart through pipes; with one, a
//! pseudo-terminal made here is the command's stdin/stdout/stderr (merged) and resize
//! requests set its window size. Stdin is passed through only when asked. The last
//! reply carries the exit code. A client that leaves kills the command (it dies with
//! its `init exec`, PR_SET_PDEATHSIG).
//!
//! Bounds: the start message ([`kube_lite_core::exec`]), every later message, the
//! number of sessions at a time ([`MAX_EXEC_SESSIONS`]), 10 s for the first message.

use crate::logs::{check_caller_for, find_record};
use crate::runtime::container_init_pid;
use crate::state::{same_process_alive, StateDir};
use kube_lite_core::exec::{check_request, check_start, EXEC_OUTPUT_CHUNK, MAX_EXEC_SESSIONS};
use kube_lite_proto::v1::node_exec_server::NodeExec;
use kube_lite_proto::v1::{ExecExit, ExecRequest, ExecResponse, ExecStart, TerminalSize};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

type Tx = mpsc::Sender<Result<ExecResponse, Status>>;

/// How long a finished command's output is still drained (a background process of it
/// may hold the pipe open forever).
const DRAIN: Duration = Duration::from_secs(2);

pub struct ExecService {
    pub state: StateDir,
    /// Secure mode: only the apiserver's client certificate may call.
    pub require_apiserver: bool,
    /// The binary that implements `init exec` (our own).
    pub init_exe: PathBuf,
    sessions: Arc<Semaphore>,
}

impl ExecService {
    pub fn new(state: StateDir, require_apiserver: bool, init_exe: PathBuf) -> ExecService {
        ExecService {
            state,
            require_apiserver,
            init_exe,
            sessions: Arc::new(Semaphore::new(MAX_EXEC_SESSIONS)),
        }
    }

    /// The host PID of the init of the running container `start` names.
    fn target(&self, s: &ExecStart) -> Result<i32, Status> {
        let ns = if s.namespace.is_empty() {
            "default"
        } else {
            &s.namespace
        };
        let rec = find_record(&self.state, ns, &s.name).ok_or_else(|| {
            Status::not_found(format!(
                "pod {ns}/{} has no containers on this node",
                s.name
            ))
        })?;
        let crec = if s.container.is_empty() {
            rec.containers.first()
        } else {
            rec.containers.iter().find(|c| c.name == s.container)
        }
        .ok_or_else(|| {
            Status::not_found(format!(
                "container {:?} is not in pod {ns}/{} (containers: {})",
                s.container,
                s.name,
                rec.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let not_running = || {
            Status::failed_precondition(format!(
                "container {:?} in pod {ns}/{} is not running",
                crec.name, s.name
            ))
        };
        let (Some(pid), Some(start)) = (crec.pid, crec.proc_start) else {
            return Err(not_running());
        };
        if !same_process_alive(pid, start) {
            return Err(not_running());
        }
        container_init_pid(pid).ok_or_else(not_running)
    }
}

#[tonic::async_trait]
impl NodeExec for ExecService {
    type ExecStream = ReceiverStream<Result<ExecResponse, Status>>;

    async fn exec(
        &self,
        req: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        if self.require_apiserver {
            let certs = req
                .peer_certs()
                .map(|c| c.iter().map(|d| d.to_vec()).collect::<Vec<_>>());
            check_caller_for(certs.as_deref(), "exec", "run commands in containers")?;
        }
        let permit = self.sessions.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_EXEC_SESSIONS} exec sessions run on this node already; try again later"
            ))
        })?;
        let mut input = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), input.message())
            .await
            .map_err(|_| Status::invalid_argument("start: no first message within 10s"))??
            .ok_or_else(|| Status::invalid_argument("start: the stream ended before start"))?;
        let start = first
            .start
            .ok_or_else(|| Status::invalid_argument("start: the first message must carry start"))?;
        check_start(&start).map_err(|(f, m)| Status::invalid_argument(format!("{f}: {m}")))?;
        let target = self.target(&start)?;
        tracing::info!(pod = %start.name, namespace = %start.namespace, container = %start.container,
            argv0 = %start.command[0], tty = start.tty, stdin = start.stdin, "exec");
        let (tx, rx) = mpsc::channel(32);
        let exe = self.init_exe.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let exit = match run(exe, target, &start, input, &tx).await {
                Ok(Some(exit)) => exit,
                Ok(None) => return, // the client left
                Err(st) => {
                    let _ = tx.send(Err(st)).await;
                    return;
                }
            };
            let _ = tx
                .send(Ok(ExecResponse {
                    exit: Some(exit),
                    ..Default::default()
                }))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// How the command ended, as the last reply says it.
pub fn exit_of(status: std::process::ExitStatus) -> ExecExit {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    ExecExit {
        exit_code: code,
        reason: if code == 0 {
            String::new()
        } else {
            "NonZeroExitCode".into()
        },
        message: if code == 0 {
            String::new()
        } else {
            format!("command terminated with non-zero exit code: {code}")
        },
    }
}

fn start_failed(e: impl std::fmt::Display) -> ExecExit {
    ExecExit {
        exit_code: 126,
        reason: "Error".into(),
        message: format!("cannot start the command: {e}"),
    }
}

/// What the client's later messages ask of the command.
enum Input {
    Stdin(Vec<u8>),
    Eof,
    Resize(TerminalSize),
}

/// Reads the client's messages into `to`; Err on a message out of bounds. Ends when the
/// client's side of the stream ends (no more stdin) or `to` is gone.
async fn read_input(
    mut input: Streaming<ExecRequest>,
    to: mpsc::Sender<Input>,
) -> Result<(), Status> {
    while let Some(m) = input.next().await {
        let m = m?;
        check_request(&m).map_err(|(f, r)| Status::invalid_argument(format!("{f}: {r}")))?;
        if !m.stdin.is_empty() && to.send(Input::Stdin(m.stdin)).await.is_err() {
            return Ok(());
        }
        if let Some(sz) = m.resize {
            let _ = to.send(Input::Resize(sz)).await;
        }
        if m.stdin_eof && to.send(Input::Eof).await.is_err() {
            return Ok(());
        }
    }
    let _ = to.send(Input::Eof).await;
    Ok(())
}

/// Sends what `r` yields as stdout (or stderr) replies until EOF or the client leaves.
async fn pump(mut r: impl AsyncRead + Unpin, tx: Tx, stderr: bool) {
    let mut buf = vec![0u8; EXEC_OUTPUT_CHUNK];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf[..n].to_vec();
        let msg = if stderr {
            ExecResponse {
                stderr: data,
                ..Default::default()
            }
        } else {
            ExecResponse {
                stdout: data,
                ..Default::default()
            }
        };
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
    }
}

/// Runs the session; `Ok(None)` when the client left (the command is killed).
async fn run(
    exe: PathBuf,
    target: i32,
    s: &ExecStart,
    input: Streaming<ExecRequest>,
    tx: &Tx,
) -> Result<Option<ExecExit>, Status> {
    let (in_tx, in_rx) = mpsc::channel::<Input>(8);
    let mut in_rx = Some(in_rx);
    let reader = tokio::spawn(read_input(input, in_tx));
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg0("nodeagent")
        .args(crate::init::exec_argv_with(target, &s.command, s.tty))
        .kill_on_drop(true);
    let mut pty_master = None;
    if s.tty {
        let size = s.size.unwrap_or(TerminalSize {
            width: 80,
            height: 24,
        });
        let pty = match nix::pty::openpty(Some(&winsize(&size)), None) {
            Ok(p) => p,
            Err(e) => return Ok(Some(start_failed(format!("a pseudo-terminal: {e}")))),
        };
        let slave = std::fs::File::from(pty.slave);
        let (a, b) = match (slave.try_clone(), slave.try_clone()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Ok(Some(start_failed(e))),
        };
        cmd.stdin(a).stdout(b).stderr(slave);
        pty_master = Some(std::fs::File::from(pty.master));
    } else {
        cmd.stdin(if s.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Some(start_failed(e))),
    };
    // Our copies of the terminal's slave end go: EOF (EIO) comes when the command's do.
    drop(cmd);
    let mut pumps = Vec::new();
    let mut stdin: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> = None;
    let mut master_fd = None;
    match pty_master {
        Some(master) => {
            let (r, w) = match master.try_clone() {
                Ok(w) => (master, w),
                Err(e) => return Ok(Some(start_failed(e))),
            };
            master_fd = w.try_clone().ok();
            pumps.push(tokio::spawn(pump(
                tokio::fs::File::from_std(r),
                tx.clone(),
                false,
            )));
            if s.stdin {
                stdin = Some(Box::new(tokio::fs::File::from_std(w)));
            }
        }
        None => {
            if let Some(o) = child.stdout.take() {
                pumps.push(tokio::spawn(pump(o, tx.clone(), false)));
            }
            if let Some(e) = child.stderr.take() {
                pumps.push(tokio::spawn(pump(e, tx.clone(), true)));
            }
            if let Some(i) = child.stdin.take() {
                stdin = Some(Box::new(i));
            }
        }
    }
    let mut reader = Some(reader);
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            _ = tx.closed() => {
                let _ = child.kill().await;
                return Ok(None);
            }
            r = async { reader.as_mut().expect("reader").await }, if reader.is_some() => {
                reader = None;
                if let Ok(Err(st)) = r {
                    let _ = child.kill().await;
                    return Err(st);
                }
            }
            m = async { in_rx.as_mut().expect("input").recv().await }, if in_rx.is_some() => match m {
                Some(Input::Stdin(b)) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&b).await.and(w.flush().await).is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(Input::Eof) | None => {
                    if s.tty {
                        // A terminal's end of input: ^D (the command's stdin stays).
                        if let Some(w) = stdin.as_mut() {
                            let _ = w.write_all(b"\x04").await;
                            let _ = w.flush().await;
                        }
                    } else {
                        stdin = None; // closes the pipe
                    }
                    if m.is_none() {
                        // Nothing more will come; keep waiting for the command.
                        in_rx = None;
                    }
                }
                Some(Input::Resize(sz)) => {
                    if let Some(fd) = &master_fd {
                        if let Err(e) = set_winsize(fd, &sz) {
                            tracing::debug!("exec resize: {e}");
                        }
                    }
                }
            }
        }
    };
    if let Some(r) = reader {
        r.abort();
    }
    drop(stdin);
    let status = status.map_err(|e| Status::internal(format!("waiting for the command: {e}")))?;
    // Everything the command wrote reaches the client before its exit (bounded).
    let _ = tokio::time::timeout(DRAIN, async {
        for p in pumps.iter_mut() {
            let _ = p.await;
        }
    })
    .await;
    for p in pumps {
        p.abort();
    }
    Ok(Some(exit_of(status)))
}

fn winsize(s: &TerminalSize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: s.height.min(u16::MAX as u32) as u16,
        ws_col: s.width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// TIOCSWINSZ on the terminal's master: the command's foreground group gets SIGWINCH.
#[allow(unsafe_code)]
fn set_winsize(master: &std::fs::File, s: &TerminalSize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = winsize(s);
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the
    // duration of the call; the descriptor is open (borrowed).
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exits_read_as_kubernetes_reports_them() {
        let ok = exit_of(std::process::ExitStatus::from_raw(0));
        assert_eq!((ok.exit_code, ok.reason.as_str()), (0, ""));
        let three = exit_of(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(three.exit_code, 3);
        assert_eq!(three.reason, "NonZeroExitCode");
        assert_eq!(
            three.message,
            "command terminated with non-zero exit code: 3"
        );
        let killed = exit_of(std::process::ExitStatus::from_raw(9));
        assert_eq!(killed.exit_code, 137);
    }
}
