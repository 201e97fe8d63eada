//! The NodeAgent gRPC service: container logs from the state directory.
//!
//! `Logs` finds the pod by namespace/name among this node's pod records, picks the
//! container (empty = the first), and streams `<container>.log` (or `.log.1` with
//! `previous`): the last `tail_lines` lines (all when <= 0), then with `follow` whatever
//! is appended, until the instance ends (its init is gone or a new instance started) or
//! the client leaves (a failed send). It reads the files only, so it works the same for
//! pods the agent adopted after a restart.

use crate::state::{same_process_alive, PodRecord, StateDir};
use kube_lite_proto::v1::node_agent_server::NodeAgent;
use kube_lite_proto::v1::{LogChunk, LogsRequest};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const CHUNK: usize = 64 * 1024;

pub struct LogsService {
    pub state: StateDir,
}

fn find_record(state: &StateDir, namespace: &str, name: &str) -> Option<PodRecord> {
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

/// Byte offset where the last `n` lines of `data` start.
pub fn tail_offset(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    // Ignore a final newline: it ends the last line, it does not start a new one.
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    let mut seen = 0;
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

#[tonic::async_trait]
impl NodeAgent for LogsService {
    type LogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
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
        let mut file = std::fs::File::open(&path).map_err(|e| {
            if r.previous {
                Status::not_found(format!(
                    "previous terminated container {container:?} in pod {} not found",
                    r.name
                ))
            } else {
                Status::not_found(format!("no logs for container {container:?} yet: {e}"))
            }
        })?;
        let data = {
            let mut v = Vec::new();
            file.read_to_end(&mut v)
                .map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
            v
        };
        let start = if r.tail_lines > 0 {
            tail_offset(&data, r.tail_lines as usize)
        } else {
            0
        };
        let follow = r.follow && !r.previous;
        let instance = (crec.pid, crec.proc_start);
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for c in data[start..].chunks(CHUNK) {
                if tx.send(Ok(LogChunk { data: c.to_vec() })).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            let mut pos = data.len() as u64;
            let mut buf = vec![0u8; CHUNK];
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
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offsets() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_offset(d, 1)..], b"c\n");
        assert_eq!(&d[tail_offset(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_offset(d, 10)..], b"a\nb\nc\n");
        let e = b"a\nb";
        assert_eq!(&e[tail_offset(e, 1)..], b"b");
        assert_eq!(tail_offset(b"", 3), 0);
    }
}
