//! Exec through the apiserver (issue 13): `PodExec.Exec` proxies a session to the
//! agent of the pod's node (`NodeExec.Exec`), dialed exactly as for Logs (the node's
//! registered address, mTLS answered only by that node's certificate). Admins only: a
//! node identity may not exec (PERMISSION_DENIED, [`crate::authz`]).
//!
//! [`proxy`] is the reusable part: the gRPC service below and the REST face's `/exec`
//! (WebSocket) both hand it the start message and the rest of the client's messages and
//! relay what it returns.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube_lite_core::exec::{check_request, check_start, MAX_EXEC_MESSAGE_BYTES};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::node_exec_client::NodeExecClient;
use kube_lite_proto::v1::pod_exec_server::PodExec;
use kube_lite_proto::v1::{ExecRequest, ExecResponse, ExecStart, Pod};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::{Request, Response, Status, Streaming};

use crate::api::Api;
use crate::authz::Verb;
use crate::error::{bounded, ApiError};
use crate::validation;

/// What [`proxy`] returns: the agent's replies (stdout/stderr chunks, then one exit),
/// or an error status (a bad later message, the node gone).
pub type ExecStream = ReceiverStream<Result<ExecResponse, Status>>;

/// Starts the exec session `start` for the caller whose [`kube_lite_pki::Identity`] is
/// in `ext` (as [`Api::authorize`] reads it), with `input` the client's later messages
/// (stdin, stdin_eof, resize; their end = no more input). Checks the bounds, the
/// caller's right (`exec` on the pod), finds the pod's node, dials its agent and
/// returns the reply stream once the agent accepted the session (so "not found", "not
/// running" and "forbidden" come back as the call's error).
pub async fn proxy(
    api: &Api,
    ext: &http::Extensions,
    mut start: ExecStart,
    input: impl Stream<Item = ExecRequest> + Send + 'static,
) -> Result<ExecStream, Status> {
    check_start(&start).map_err(|(f, m)| ApiError::invalid(f, m))?;
    validation::validate_logs(&kube_lite_proto::v1::LogsRequest {
        container: start.container.clone(),
        ..Default::default()
    })?;
    let key = ObjectRef::of::<Pod>(&start.namespace, start.name.clone());
    api.authorize(ext, Verb::Exec, "pods", &key.namespace, &key.name)?;
    start.namespace = key.namespace.clone();
    let (channel, node_name, endpoint) = api.node_channel(&key, "cannot exec").await?;
    let (out_tx, out) = mpsc::channel(32);
    // The agent's request stream: the start, then the client's messages (checked; a bad
    // one ends the session with INVALID_ARGUMENT to the client).
    let (up_tx, up_rx) = mpsc::channel::<ExecRequest>(8);
    up_tx
        .send(ExecRequest {
            start: Some(start),
            ..Default::default()
        })
        .await
        .map_err(|_| Status::internal("exec: the request stream closed"))?;
    let bad_tx = out_tx.clone();
    let forward = tokio::spawn(async move {
        let mut input = std::pin::pin!(input);
        while let Some(m) = input.next().await {
            if let Err((f, r)) = check_request(&m) {
                let _ = bad_tx.send(Err(ApiError::invalid(f, r).into())).await;
                return;
            }
            if up_tx.send(m).await.is_err() {
                return;
            }
        }
    });
    let mut upstream = NodeExecClient::new(channel)
        .max_decoding_message_size(MAX_EXEC_MESSAGE_BYTES)
        .exec(ReceiverStream::new(up_rx))
        .await
        .map_err(|s| {
            forward.abort();
            if s.code() == tonic::Code::Unavailable {
                ApiError::Unavailable(format!(
                    "node agent of {node_name:?} at {endpoint}: {}",
                    s.message()
                ))
                .into()
            } else {
                bounded(s.code(), s.message())
            }
        })?
        .into_inner();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                item = upstream.next() => item,
                _ = out_tx.closed() => break, // the client left: dropping upstream ends it
            };
            let Some(item) = item else { break };
            let item = item.map_err(|s| bounded(s.code(), s.message()));
            let end = item.is_err() || item.as_ref().is_ok_and(|r| r.exit.is_some());
            if out_tx.send(item).await.is_err() || end {
                break;
            }
        }
        forward.abort();
    });
    Ok(ReceiverStream::new(out))
}

#[tonic::async_trait]
impl PodExec for Api {
    type ExecStream = ExecStream;

    async fn exec(
        &self,
        req: Request<Streaming<ExecRequest>>,
    ) -> Result<Response<ExecStream>, Status> {
        let ext = req.extensions().clone();
        let mut input = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), input.message())
            .await
            .map_err(|_| ApiError::invalid("start", "no first message within 10s"))??
            .ok_or_else(|| ApiError::invalid("start", "the stream ended before start"))?;
        let start = first
            .start
            .ok_or_else(|| ApiError::invalid("start", "the first message must carry start"))?;
        // A client's stream that breaks ends its input.
        let rest = tokio_stream::StreamExt::map_while(input, Result::ok);
        Ok(Response::new(proxy(self, &ext, start, rest).await?))
    }
}

/// The REST face's `pods/{name}/exec` (kubectl's WebSocket) runs through [`proxy`], as
/// PodExec does: the same bounds, authorization and node dialling.
pub struct RestExec(pub Api);

impl crate::rest::exec::ExecBackend for RestExec {
    fn exec(
        &self,
        ext: http::Extensions,
        start: ExecStart,
    ) -> crate::rest::BoxFuture<Result<crate::rest::exec::ExecStream, Status>> {
        let api = self.0.clone();
        Box::pin(async move {
            let (input, rx) = mpsc::channel::<ExecRequest>(16);
            let output = proxy(&api, &ext, start, ReceiverStream::new(rx)).await?;
            Ok(crate::rest::exec::ExecStream {
                input,
                output: output.into_inner(),
            })
        })
    }
}
