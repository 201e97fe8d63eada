//! `pods/{name}/exec` for kubectl (`kubectl exec [-it]`): a WebSocket upgrade speaking
//! Kubernetes' channel protocol (`v5.channel.k8s.io`, and `v4.channel.k8s.io` without
//! the close frame), bridged onto an [`ExecBackend`], whose shape is the PodExec gRPC
//! stream of api.proto (ExecStart first, then stdin / stdin EOF / resize; replies are
//! stdout / stderr and one exit). kubectl 1.37 tries WebSocket first and falls back to
//! SPDY only when the upgrade fails; SPDY is not served.
//!
//! A short tour: [`options`] reads the query (`command` repeated, `container`,
//! `stdin`, `stdout`, `stderr`, `tty`) into an `ExecStart`; [`decode`] and [`frame`]
//! are the channel framing (one byte of channel, then data: 0 stdin, 1 stdout,
//! 2 stderr, 3 error — a `Status`, 4 resize — `{"Width","Height"}` JSON, 255 close — the
//! closed channel's byte); [`exit_status`] is the `Status` kubectl reads its exit code
//! from; [`serve`] is the thin I/O.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Response;
use axum::response::IntoResponse;
use kube_lite_proto::v1::{ExecExit, ExecRequest, ExecResponse, ExecStart, TerminalSize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{failure_response, status, BoxFuture, Rest};
use crate::authz::Verb;

/// The subprotocols served, best first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: "this channel is closed" (the data is the channel's byte).
pub const CLOSE: u8 = 255;
/// Longest accepted argv (count and bytes), as a bound on request-controlled input.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_BYTES: usize = 64 * 1024;

/// The stream an exec runs over: requests in, responses out (api.proto's PodExec
/// contract; the lead wires the exec proxy in here).
pub struct ExecStream {
    pub input: mpsc::Sender<ExecRequest>,
    pub output: mpsc::Receiver<Result<ExecResponse, tonic::Status>>,
}

/// Runs a command in a pod's container (through the apiserver's exec proxy to the node
/// agent). `ext` carries the caller's identity, as for the shared handlers.
pub trait ExecBackend: Send + Sync {
    fn exec(
        &self,
        ext: axum::http::Extensions,
        start: ExecStart,
    ) -> BoxFuture<Result<ExecStream, tonic::Status>>;
}

/// The `ExecStart` of an exec request's query; `Err` names the bad parameter.
pub fn options(ns: &str, name: &str, raw_query: Option<&str>) -> Result<ExecStart, String> {
    let mut s = ExecStart {
        name: name.to_string(),
        namespace: ns.to_string(),
        ..Default::default()
    };
    let mut bytes = 0;
    for pair in raw_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (super::query::decode(k), super::query::decode(v));
        let flag = || matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True");
        match k.as_str() {
            "command" => {
                bytes += v.len();
                s.command.push(v);
            }
            "container" => s.container = v,
            "stdin" => s.stdin = flag(),
            "tty" => s.tty = flag(),
            _ => {}
        }
    }
    if s.command.is_empty() {
        return Err(
            "command: Required value: you must specify at least one command for the container"
                .into(),
        );
    }
    if s.command.len() > MAX_ARGS || bytes > MAX_ARG_BYTES {
        return Err(format!(
            "command: Too long: at most {MAX_ARGS} arguments and {MAX_ARG_BYTES} bytes"
        ));
    }
    Ok(s)
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Stdin(Vec<u8>),
    Resize(TerminalSize),
    /// v5 close of a channel (0: the end of stdin).
    Close(u8),
}

/// A binary message from the client; `Err` for what the protocol does not allow.
pub fn decode(msg: &[u8]) -> Result<Incoming, String> {
    let (&ch, data) = msg.split_first().ok_or("empty message (no channel byte)")?;
    match ch {
        STDIN => Ok(Incoming::Stdin(data.to_vec())),
        RESIZE => {
            let v: Value =
                serde_json::from_slice(data).map_err(|e| format!("resize: not JSON: {e}"))?;
            let dim = |k: &str| {
                v.get(k)
                    .and_then(Value::as_u64)
                    .filter(|n| *n <= u64::from(u16::MAX))
                    .map(|n| n as u32)
                    .ok_or_else(|| format!("resize: {k} must be 0..=65535"))
            };
            Ok(Incoming::Resize(TerminalSize {
                width: dim("Width")?,
                height: dim("Height")?,
            }))
        }
        CLOSE => Ok(Incoming::Close(*data.first().ok_or("close: no channel")?)),
        other => Err(format!("channel {other} is not writable by the client")),
    }
}

/// A server message: the channel byte, then the data.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// What the error channel carries at the end: Success for exit code 0; otherwise the
/// Status kubectl turns into its own exit code (`NonZeroExitCode`, cause `ExitCode`).
pub fn exit_status(exit: &ExecExit, command: &[String]) -> Value {
    if exit.exit_code == 0 && exit.reason.is_empty() {
        return json!({"metadata": {}, "status": "Success"});
    }
    if exit.exit_code != 0 {
        return json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {}",
                exit.exit_code
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": exit.exit_code.to_string()}]},
        });
    }
    json!({"metadata": {}, "status": "Failure", "reason": exit.reason,
           "message": if exit.message.is_empty() { exit.reason.clone() } else { exit.message.clone() }})
}

/// A failure before or outside the command (not found, forbidden, no backend).
fn failure_status(code: u16, reason: &str, message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// `GET pods/{name}/exec` with a WebSocket upgrade.
pub async fn serve(rest: Rest, mut parts: Parts, ns: String, name: String) -> Response<Body> {
    let start = match options(&ns, &name, parts.uri.query()) {
        Ok(s) => s,
        Err(e) => return failure_response(status::bad_request(e)),
    };
    if let Err(st) = rest
        .api
        .authorize(&parts.extensions, Verb::Create, "pods/exec", &ns, &name)
    {
        return failure_response(status::from_grpc(&st, &status::About::default()));
    }
    let Some(backend) = rest.exec.clone() else {
        return failure_response(status::failure(
            501,
            "NotImplemented",
            "exec is not available on this server (no exec backend)",
        ));
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rej) => {
            return failure_response(status::bad_request(format!(
                "exec needs a WebSocket upgrade ({PROTOCOLS:?}; SPDY is not served): {}",
                rej.body_text()
            )))
        }
    };
    let ext = parts.extensions.clone();
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| async move {
            run(socket, backend, ext, start).await;
        })
        .into_response()
}

async fn run(
    mut ws: WebSocket,
    backend: Arc<dyn ExecBackend>,
    ext: axum::http::Extensions,
    start: ExecStart,
) {
    let v5 = ws
        .protocol()
        .and_then(|p| p.to_str().ok())
        .is_some_and(|p| p == PROTOCOLS[0]);
    let command = start.command.clone();
    let (pod, container) = (start.name.clone(), start.container.clone());
    let mut stream = match backend.exec(ext, start).await {
        Ok(s) => s,
        Err(st) => {
            let f = status::from_grpc(&st, &status::About::default());
            let code = f.code;
            let msg = f.body["message"].as_str().unwrap_or("").to_string();
            let reason = f.body["reason"]
                .as_str()
                .unwrap_or("InternalError")
                .to_string();
            let body = failure_status(code, &reason, &msg).to_string();
            let _ = ws
                .send(Message::Binary(frame(ERROR, body.as_bytes()).into()))
                .await;
            let _ = ws.send(normal_close()).await;
            return;
        }
    };
    tracing::debug!(pod = %pod, container = %container, ?command, v5, "exec started");
    let mut input = Some(stream.input);
    loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let req = match decode(&b) {
                        Ok(Incoming::Stdin(data)) => ExecRequest { stdin: data, ..Default::default() },
                        Ok(Incoming::Resize(size)) => ExecRequest { resize: Some(size), ..Default::default() },
                        Ok(Incoming::Close(STDIN)) => ExecRequest { stdin_eof: true, ..Default::default() },
                        Ok(Incoming::Close(_)) => continue,
                        Err(e) => {
                            tracing::debug!(pod = %pod, error = %e, "exec: bad client frame");
                            continue;
                        }
                    };
                    if let Some(tx) = &input {
                        if tx.send(req).await.is_err() {
                            input = None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            out = stream.output.recv() => {
                let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
                let mut done = true;
                match out {
                    Some(Ok(r)) => {
                        if !r.stdout.is_empty() {
                            frames.push((STDOUT, r.stdout));
                        }
                        if !r.stderr.is_empty() {
                            frames.push((STDERR, r.stderr));
                        }
                        match r.exit {
                            Some(exit) => frames.push((ERROR, exit_status(&exit, &command).to_string().into_bytes())),
                            None => done = false,
                        }
                    }
                    Some(Err(st)) => {
                        let f = status::from_grpc(&st, &status::About::default());
                        frames.push((ERROR, f.body.to_string().into_bytes()));
                    }
                    None => frames.push((ERROR, failure_status(500, "InternalError", "the exec stream ended without an exit").to_string().into_bytes())),
                }
                for (ch, data) in frames {
                    if ws.send(Message::Binary(frame(ch, &data).into())).await.is_err() {
                        return;
                    }
                }
                if done {
                    let _ = ws.send(normal_close()).await;
                    return;
                }
            }
        }
    }
}

/// A close frame with code 1000: client-go's readers take it as the end of every
/// stream (any other code, or none, is an error: "close 1005 (no status)").
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_to_exec_start() {
        let s = options(
            "default",
            "web",
            Some("command=sh&command=-c&command=echo%20hi&container=c&stdin=true&stdout=true&tty=false"),
        )
        .unwrap();
        assert_eq!(s.command, ["sh", "-c", "echo hi"]);
        assert_eq!((s.container.as_str(), s.stdin, s.tty), ("c", true, false));
        assert_eq!((s.namespace.as_str(), s.name.as_str()), ("default", "web"));
        let e = options("default", "web", Some("stdout=true")).unwrap_err();
        assert!(e.starts_with("command: Required value"), "{e}");
        let many = vec!["command=x"; MAX_ARGS + 1].join("&");
        assert!(options("d", "w", Some(&many))
            .unwrap_err()
            .starts_with("command: Too long"));
    }

    #[test]
    fn channel_framing() {
        assert_eq!(
            decode(b"\0hello").unwrap(),
            Incoming::Stdin(b"hello".to_vec())
        );
        assert_eq!(
            decode(b"\x04{\"Width\":80,\"Height\":24}").unwrap(),
            Incoming::Resize(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(decode(&[255, 0]).unwrap(), Incoming::Close(0));
        assert!(decode(b"").is_err());
        assert!(decode(b"\x01out").unwrap_err().contains("not writable"));
        assert!(decode(b"\x04{\"Width\":-1,\"Height\":2}").is_err());
        assert!(decode(&[255]).is_err());
        assert_eq!(frame(STDOUT, b"hi"), b"\x01hi");
        assert_eq!(frame(ERROR, b""), [3]);
    }

    #[test]
    fn exit_codes_as_kubectl_reads_them() {
        let ok = exit_status(&ExecExit::default(), &["true".into()]);
        assert_eq!(ok["status"], "Success");
        let three = exit_status(
            &ExecExit {
                exit_code: 3,
                ..Default::default()
            },
            &["sh".into(), "-c".into(), "exit 3".into()],
        );
        assert_eq!(three["reason"], "NonZeroExitCode");
        assert_eq!(three["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(three["details"]["causes"][0]["message"], "3");
        let gone = exit_status(
            &ExecExit {
                reason: "ContainerNotRunning".into(),
                message: "container c is not running".into(),
                ..Default::default()
            },
            &[],
        );
        assert_eq!(
            (gone["status"].as_str(), gone["message"].as_str()),
            (Some("Failure"), Some("container c is not running"))
        );
    }
}
