//! gRPC status → one line, as kubectl words it (pure, unit-tested).

use crate::api::Api;
use tonic::{Code, Status};

/// The one-line message for an unreachable apiserver.
pub fn unreachable(server: &str, cause: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the apiserver at {server}: {cause} (set --server, KUBE_LITE_SERVER or the kubeconfig's server)"
    )
}

/// Whitespace (newlines included) collapsed to single spaces, other control characters
/// escaped (the server's message may quote user input).
pub fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::util::escape_control(&joined).into_owned()
}

/// The plural kubectl names a kind by in errors (`deployments.apps` for the apps/v1
/// kinds, as `Error from server (NotFound): deployments.apps "web" not found`).
fn plural_resource<T: Api>() -> &'static str {
    match T::KIND {
        "Deployment" => "deployments.apps",
        "ReplicaSet" => "replicasets.apps",
        _ => T::PLURAL,
    }
}

/// gRPC status → one line. `what` names the operation and object (`create pod/web`);
/// `name` is the object a NotFound or AlreadyExists is about (empty: keep the server's
/// words). NotFound and AlreadyExists read like kubectl (`pods "web" not found`).
pub fn status_error<T: Api>(server: &str, what: &str, name: &str, s: Status) -> anyhow::Error {
    match s.code() {
        // (a missing container of an existing pod keeps the server's words)
        Code::NotFound if !name.is_empty() && !s.message().contains("container") => {
            anyhow::anyhow!("{} {name:?} not found", plural_resource::<T>())
        }
        Code::AlreadyExists if !name.is_empty() && s.message().is_empty() => {
            anyhow::anyhow!("{} {name:?} already exists", plural_resource::<T>())
        }
        // The connection to the apiserver failed (not an Unavailable the server reports
        // about something else, such as a node agent for `logs`).
        Code::Unavailable
            if [
                "tcp connect",
                "transport",
                "connection",
                "connect error",
                "broken pipe",
            ]
            .iter()
            .any(|m| s.message().to_ascii_lowercase().contains(m))
                && !what.starts_with("logs") =>
        {
            unreachable(server, &one_line(s.message()))
        }
        Code::Unauthenticated => anyhow::anyhow!(
            "{what}: the apiserver at {server} refused the credentials: {} (Unauthenticated)",
            one_line(s.message())
        ),
        Code::PermissionDenied => anyhow::anyhow!(
            "{what}: forbidden: {} (PermissionDenied)",
            one_line(s.message())
        ),
        code => anyhow::anyhow!("{what}: {} ({code:?})", one_line(s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Node, Pod};

    const SERVER: &str = "http://127.0.0.1:6443";

    fn text<T: Api>(what: &str, name: &str, s: Status) -> String {
        status_error::<T>(SERVER, what, name, s).to_string()
    }

    #[test]
    fn not_found_and_already_exists_read_like_kubectl() {
        assert_eq!(
            text::<Pod>("get pod/web", "web", Status::not_found("pod default/web")),
            "pods \"web\" not found"
        );
        assert_eq!(
            text::<Node>("get node/n1", "n1", Status::not_found("x")),
            "nodes \"n1\" not found"
        );
        // A missing container keeps the server's words.
        assert_eq!(
            text::<Pod>(
                "logs pod/web",
                "web",
                Status::not_found("container \"c\" not found")
            ),
            "logs pod/web: container \"c\" not found (NotFound)"
        );
        // Without a name: the operation and the server's words.
        assert_eq!(
            text::<Pod>(
                "create pod/web",
                "",
                Status::already_exists("pod default/web")
            ),
            "create pod/web: pod default/web (AlreadyExists)"
        );
        assert_eq!(
            text::<Pod>("get pod/web", "web", Status::already_exists("")),
            "pods \"web\" already exists"
        );
        // A message is kept on one line.
        assert_eq!(
            text::<Pod>("list pods", "", Status::internal("a\n  b")),
            "list pods: a b (Internal)"
        );
    }

    #[test]
    fn a_lost_connection_names_the_server_except_for_logs() {
        let lost = || Status::unavailable("tcp connect error: Connection refused");
        assert_eq!(
            text::<Pod>("list pods", "", lost()),
            "cannot reach the apiserver at http://127.0.0.1:6443: tcp connect error: Connection refused (set --server, KUBE_LITE_SERVER or the kubeconfig's server)"
        );
        assert_eq!(
            text::<Pod>("logs pod/web", "", lost()),
            "logs pod/web: tcp connect error: Connection refused (Unavailable)"
        );
        // An Unavailable about something else keeps the operation.
        assert_eq!(
            text::<Pod>("create pod/web", "", Status::unavailable("no nodes")),
            "create pod/web: no nodes (Unavailable)"
        );
    }
}
