//! The NodeAgent gRPC service: container logs from the state directory.
//!
//! `Logs` finds the pod by namespace/name among this node's pod records, picks the
//! container (empty = the first), and streams `<container>.log` (or `.log.1` with
//! `previous`), each with its rotated older part: the last `tail_lines` lines (all when
//! <= 0; found by reading backwards in chunks, never the whole file), then with `follow`
//! whatever is appended, across rotations (a new file at the path is followed from its
//! start), until the instance ends (its init is gone or a new instance started) or
//! the client leaves (a failed send). It reads the files only, so it works the same for
//! pods the agent adopted after a restart.

use crate::logfile::{open_parts, tail_start, CHUNK};
use crate::state::{same_process_alive, PodRecord, StateDir};
use kube_lite_proto::v1::node_agent_server::NodeAgent;
use kube_lite_proto::v1::{LogChunk, LogsRequest};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct LogsService {
    pub state: StateDir,
    /// Secure mode: only the apiserver (its client certificate, `kube-lite:apiserver`,
    /// issued by the cluster CA: the TLS layer verified it) may call.
    pub require_apiserver: bool,
    /// Image loading (the containerd runtime); None with the process runtime.
    pub images: Option<std::sync::Arc<crate::containerd::service::ImageService>>,
}

/// Whether the caller's certificate (first of `certs`, DER) is the apiserver's.
pub fn check_caller(certs: Option<&[Vec<u8>]>) -> Result<(), Status> {
    check_caller_for(certs, "logs", "read logs")
}

/// [`check_caller`] for the call `verb` (`what` it does, in the message).
pub fn check_caller_for(certs: Option<&[Vec<u8>]>, verb: &str, what: &str) -> Result<(), Status> {
    let Some(first) = certs.and_then(|c| c.first()) else {
        return Err(Status::unauthenticated(
            "a client certificate issued by the cluster CA to the apiserver is required",
        ));
    };
    let user = kube_lite_pki::cert_info_der(first)
        .map(|i| i.identity.user)
        .unwrap_or_default();
    if user != kube_lite_pki::APISERVER_CLIENT_USER {
        return Err(Status::permission_denied(format!(
            "User {user:?} cannot {verb}: only the apiserver ({:?}) may {what} here",
            kube_lite_pki::APISERVER_CLIENT_USER
        )));
    }
    Ok(())
}

pub(crate) fn find_record(state: &StateDir, namespace: &str, name: &str) -> Option<PodRecord> {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    state
        .load_all()
        .0
        .into_iter()
        .find(|r| r.name == name && r.namespace == ns)
}

/// Sends `f` from `pos` up to `end` (or its end) in chunks; None when the client left.
async fn send_range(
    f: &mut std::fs::File,
    pos: u64,
    end: u64,
    buf: &mut [u8],
    tx: &mpsc::Sender<Result<LogChunk, Status>>,
) -> Option<()> {
    let mut pos = pos;
    f.seek(SeekFrom::Start(pos)).ok()?;
    while pos < end {
        let want = buf.len().min((end - pos).min(usize::MAX as u64) as usize);
        let n = f.read(&mut buf[..want]).ok()?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        tx.send(Ok(LogChunk {
            data: buf[..n].to_vec(),
        }))
        .await
        .ok()?;
    }
    Some(())
}

#[tonic::async_trait]
impl NodeAgent for LogsService {
    type LogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn load_image(
        &self,
        req: Request<tonic::Streaming<kube_lite_proto::v1::ImageChunk>>,
    ) -> Result<Response<kube_lite_proto::v1::LoadImageResponse>, Status> {
        if self.require_apiserver {
            let certs = req
                .peer_certs()
                .map(|c| c.iter().map(|d| d.to_vec()).collect::<Vec<_>>());
            check_caller_for(certs.as_deref(), "load_image", "load images")?;
        }
        match &self.images {
            Some(svc) => Ok(Response::new(svc.load(req.into_inner()).await?)),
            None => Err(Status::failed_precondition(
                "this node runs the process runtime (--runtime process): it has no image store; images name programs on the node",
            )),
        }
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        if self.require_apiserver {
            let certs = req
                .peer_certs()
                .map(|c| c.iter().map(|d| d.to_vec()).collect::<Vec<_>>());
            check_caller(certs.as_deref())?;
        }
        let r = req.into_inner();
        let rec = find_record(&self.state, &r.namespace, &r.name).ok_or_else(|| {
            Status::not_found(format!(
                "pod {}/{} has no containers on this node",
                if r.namespace.is_empty() {
                    "default"
                } else {
                    &r.namespace
                },
                r.name
            ))
        })?;
        let container = if r.container.is_empty() {
            rec.containers
                .first()
                .map(|c| c.name.clone())
                .ok_or_else(|| Status::not_found(format!("pod {} has no containers yet", r.name)))?
        } else {
            r.container.clone()
        };
        let Some(crec) = rec.containers.iter().find(|c| c.name == container).cloned() else {
            return Err(Status::not_found(format!(
                "container {container:?} is not in pod {} (containers: {})",
                r.name,
                rec.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let path: PathBuf = if r.previous {
            self.state.previous_log_path(&rec.uid, &container)
        } else {
            self.state.log_path(&rec.uid, &container)
        };
        let mut parts = open_parts(&path).map_err(|e| {
            if r.previous {
                Status::not_found(format!(
                    "previous terminated container {container:?} in pod {} not found",
                    r.name
                ))
            } else {
                Status::not_found(format!("no logs for container {container:?} yet: {e}"))
            }
        })?;
        // Where to start: found by reading backwards from the end, in chunks.
        let (first, offset) = if r.tail_lines > 0 {
            tail_start(
                &mut parts,
                usize::try_from(r.tail_lines).unwrap_or(usize::MAX),
            )
            .map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?
        } else {
            (0, 0)
        };
        let follow = r.follow && !r.previous;
        let instance = (crec.pid, crec.proc_start);
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let last = parts.len() - 1;
            let mut parts = parts.into_iter().skip(first);
            let mut pos = offset;
            let mut file = None;
            // The parts as they were: the older ones to their end, the current one to
            // wherever it is now.
            for (i, (mut f, len)) in (first..).zip(parts.by_ref()) {
                let end = if i == last { u64::MAX } else { len };
                if send_range(&mut f, pos, end, &mut buf, &tx).await.is_none() {
                    return;
                }
                pos = 0;
                if i == last {
                    file = Some(f);
                }
            }
            let Some(mut file) = file else { return };
            if !follow {
                return;
            }
            let mut pos = file.stream_position().unwrap_or(0);
            let mut ino = file.metadata().map(|m| m.ino()).ok();
            let mut ending = false;
            loop {
                // Read what was appended.
                let n = match file
                    .seek(SeekFrom::Start(pos))
                    .and_then(|_| file.read(&mut buf))
                {
                    Ok(n) => n,
                    Err(_) => return,
                };
                if n > 0 {
                    pos += n as u64;
                    if tx
                        .send(Ok(LogChunk {
                            data: buf[..n].to_vec(),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                // At the end: is the instance still the one running?
                if ending {
                    return;
                }
                let still = match instance {
                    (Some(pid), Some(start)) => {
                        same_process_alive(pid, start)
                            && state.load(&rec.uid).is_some_and(|nr| {
                                nr.containers
                                    .iter()
                                    .any(|c| c.name == container && c.pid == Some(pid))
                            })
                    }
                    _ => false,
                };
                if !still {
                    // Drain what was written just before the end, then stop.
                    ending = true;
                    continue;
                }
                // Rotated (the path is a new file): what we hold is complete (we are at
                // its end); go on with the new file from its start.
                let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
                if now.is_some() && now != ino {
                    if let Ok(f) = std::fs::File::open(&path) {
                        ino = f.metadata().map(|m| m.ino()).ok();
                        file = f;
                        pos = 0;
                        continue;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
