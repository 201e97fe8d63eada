//! The NodeExec gRPC service (issue 13): `kubectl-lite exec` arrives here from the
//! apiserver (mTLS; only the apiserver's certificate is admitted, as for Logs).
//!
//! One session per call: the first request names the pod, container and command; the
//! container runtime starts the command in the container ([`Runtime::exec`]: the
//! process runtime's `init exec`, [`crate::exec_process`]; containerd's exec,
//! [`crate::containerd::exec`]), so it sees what the container sees. Without a tty
//! stdout and stderr come back apart; with one, one terminal stream, and resize
//! requests set its window size. Stdin is passed through only when asked. The last
//! reply carries the exit code. A client that leaves kills the command.
//!
//! Bounds: the start message ([`kube_lite_core::exec`]), every later message, the
//! number of sessions at a time ([`MAX_EXEC_SESSIONS`]), 10 s for the first message.

use crate::logs::{check_caller_for, find_record};
use crate::runtime::{ExecOptions, ExecProcess, Handle, Runtime, RuntimeError};
use crate::state::StateDir;
use kube_lite_core::exec::{check_request, check_start, EXEC_OUTPUT_CHUNK, MAX_EXEC_SESSIONS};
use kube_lite_proto::v1::node_exec_server::NodeExec;
use kube_lite_proto::v1::{ExecExit, ExecRequest, ExecResponse, ExecStart, TerminalSize};
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
/// How long the runtime may take to start the command.
const START: Duration = Duration::from_secs(30);

pub struct ExecService {
    pub state: StateDir,
    /// Secure mode: only the apiserver's client certificate may call.
    pub require_apiserver: bool,
    /// The runtime that runs the node's containers (and the commands in them).
    pub runtime: Arc<dyn Runtime>,
    sessions: Arc<Semaphore>,
}

impl ExecService {
    pub fn new(state: StateDir, require_apiserver: bool, runtime: Arc<dyn Runtime>) -> ExecService {
        ExecService {
            state,
            require_apiserver,
            runtime,
            sessions: Arc::new(Semaphore::new(MAX_EXEC_SESSIONS)),
        }
    }

    /// The running instance of the container `start` names, and the container's name.
    fn target(&self, s: &ExecStart) -> Result<(Handle, String), Status> {
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
        let (Some(pid), Some(proc_start)) = (crec.pid, crec.proc_start) else {
            return Err(not_running());
        };
        let h = Handle {
            pid,
            proc_start,
            started_at: crec.started_at,
        };
        if !self.runtime.alive(&h) {
            return Err(not_running());
        }
        Ok((h, crec.name.clone()))
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
        let (target, container) = self.target(&start)?;
        let opts = ExecOptions {
            command: start.command.clone(),
            tty: start.tty,
            stdin: start.stdin,
            size: start
                .tty
                .then(|| start.size.map(|z| clamp_size(&z)))
                .flatten(),
        };
        let started = tokio::time::timeout(START, self.runtime.exec(&target, &opts))
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "the container runtime did not start the command within {}s",
                    START.as_secs()
                ))
            })?;
        let process = match started {
            Ok(p) => Ok(p),
            Err(RuntimeError::ExecStart { exit_code, message }) => Err(ExecExit {
                exit_code,
                reason: "Error".into(),
                message,
            }),
            Err(RuntimeError::Exec(m)) => {
                let ns = if start.namespace.is_empty() {
                    "default"
                } else {
                    &start.namespace
                };
                return Err(Status::failed_precondition(format!(
                    "container {container:?} in pod {ns}/{}: {m}",
                    start.name
                )));
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        tracing::info!(pod = %start.name, namespace = %start.namespace, container = %start.container,
            argv0 = %start.command[0], tty = start.tty, stdin = start.stdin, "exec");
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(async move {
            let _permit = permit;
            let process = match process {
                Ok(p) => p,
                Err(exit) => {
                    // Reason "Error" with the message: kubectl-lite reports it as an
                    // error, as kubectl does CRI's "failed to start exec".
                    let _ = tx
                        .send(Ok(ExecResponse {
                            exit: Some(exit),
                            ..Default::default()
                        }))
                        .await;
                    return;
                }
            };
            let exit = match run(process, &start, input, &tx).await {
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

/// A terminal size as the runtimes take it, (width, height) (bounds are checked).
fn clamp_size(z: &TerminalSize) -> (u16, u16) {
    (
        z.width.min(u16::MAX as u32) as u16,
        z.height.min(u16::MAX as u32) as u16,
    )
}

/// How the command ended (its exit code, 128+N for signal N), as the last reply says it.
pub fn exit_of(code: i32) -> ExecExit {
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
    mut p: Box<dyn ExecProcess>,
    s: &ExecStart,
    input: Streaming<ExecRequest>,
    tx: &Tx,
) -> Result<Option<ExecExit>, Status> {
    let r = drive(p.as_mut(), s, input, tx).await;
    if !matches!(r, Ok(Some(_))) {
        p.kill().await;
    }
    p.finish().await;
    r
}

async fn drive(
    p: &mut dyn ExecProcess,
    s: &ExecStart,
    input: Streaming<ExecRequest>,
    tx: &Tx,
) -> Result<Option<ExecExit>, Status> {
    let (in_tx, in_rx) = mpsc::channel::<Input>(8);
    let mut in_rx = Some(in_rx);
    let mut reader = Some(tokio::spawn(read_input(input, in_tx)));
    let io = p.take_io();
    let mut pumps = Vec::new();
    if let Some(o) = io.stdout {
        pumps.push(tokio::spawn(pump(o, tx.clone(), false)));
    }
    if let Some(e) = io.stderr {
        pumps.push(tokio::spawn(pump(e, tx.clone(), true)));
    }
    let mut stdin = io.stdin;
    let status = loop {
        tokio::select! {
            st = p.wait() => break st,
            _ = tx.closed() => {
                abort(reader, pumps);
                return Ok(None);
            }
            r = async { reader.as_mut().expect("reader").await }, if reader.is_some() => {
                reader = None;
                if let Ok(Err(st)) = r {
                    abort(None, pumps);
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
                    } else if stdin.take().is_some() {
                        p.close_stdin().await;
                    }
                    if m.is_none() {
                        // Nothing more will come; keep waiting for the command.
                        in_rx = None;
                    }
                }
                Some(Input::Resize(sz)) => {
                    let (w, h) = clamp_size(&sz);
                    p.resize(w, h).await;
                }
            }
        }
    };
    if let Some(r) = reader {
        r.abort();
    }
    drop(stdin);
    let code = status.map_err(Status::internal)?;
    // Everything the command wrote reaches the client before its exit (bounded).
    let _ = tokio::time::timeout(DRAIN, async {
        for p in pumps.iter_mut() {
            let _ = p.await;
        }
    })
    .await;
    abort(None, pumps);
    Ok(Some(exit_of(code)))
}

fn abort(
    reader: Option<tokio::task::JoinHandle<Result<(), Status>>>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
) {
    if let Some(r) = reader {
        r.abort();
    }
    for p in pumps {
        p.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_kubernetes_reports_them() {
        let ok = exit_of(0);
        assert_eq!((ok.exit_code, ok.reason.as_str()), (0, ""));
        let three = exit_of(3);
        assert_eq!(three.exit_code, 3);
        assert_eq!(three.reason, "NonZeroExitCode");
        assert_eq!(
            three.message,
            "command terminated with non-zero exit code: 3"
        );
        let killed = exit_of(137);
        assert_eq!(killed.reason, "NonZeroExitCode");
        assert_eq!(
            clamp_size(&TerminalSize {
                width: 100,
                height: 30
            }),
            (100, 30)
        );
    }
}
