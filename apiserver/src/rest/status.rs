//! Errors as Kubernetes `Status` objects (pure): gRPC codes from the shared handlers
//! become HTTP codes and reasons; an INVALID_ARGUMENT message `field: reason` becomes
//! `details.causes` with the field in Kubernetes' spelling.

use serde_json::{json, Value};
use tonic::Code;

/// An HTTP status and the `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: u16,
    pub body: Value,
}

/// What a failure is about (for `details` and the Invalid message).
#[derive(Debug, Clone, Default)]
pub struct About<'a> {
    /// `Pod`
    pub kind: &'a str,
    /// `pods`
    pub plural: &'a str,
    pub name: &'a str,
}

pub fn failure(code: u16, reason: &str, message: &str) -> Failure {
    Failure {
        code,
        body: json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    }
}

pub fn bad_request(message: impl AsRef<str>) -> Failure {
    failure(400, "BadRequest", message.as_ref())
}

pub fn not_found(message: impl AsRef<str>) -> Failure {
    failure(404, "NotFound", message.as_ref())
}

pub fn method_not_allowed(message: impl AsRef<str>) -> Failure {
    failure(405, "MethodNotAllowed", message.as_ref())
}

/// A success `Status` (deletecollection of nothing, binding).
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// A proto field path in Kubernetes' spelling: `spec.node_name` → `spec.nodeName`,
/// `spec.cluster_ip` → `spec.clusterIP`.
pub fn k8s_field(path: &str) -> String {
    path.split('.')
        .map(|seg| {
            let (name, index) = match seg.find('[') {
                Some(i) => seg.split_at(i),
                None => (seg, ""),
            };
            let camel = match name {
                "cluster_ip" => "clusterIP".to_string(),
                "pod_ip" => "podIP".to_string(),
                "host_ip" => "hostIP".to_string(),
                "pod_cidr" => "podCIDR".to_string(),
                _ => {
                    let mut out = String::new();
                    let mut up = false;
                    for c in name.chars() {
                        if c == '_' {
                            up = true;
                        } else if up {
                            out.extend(c.to_uppercase());
                            up = false;
                        } else {
                            out.push(c);
                        }
                    }
                    out
                }
            };
            format!("{camel}{index}")
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The field and reason of an INVALID_ARGUMENT message `field: reason` (a field is one
/// word of letters, digits, `_ . [ ]`).
fn split_field(msg: &str) -> Option<(String, &str)> {
    let (f, reason) = msg.split_once(": ")?;
    let ok = !f.is_empty()
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    ok.then(|| (k8s_field(f), reason))
}

/// Invalid (422) with one cause per field error.
pub fn invalid(about: &About<'_>, causes: &[(String, String)]) -> Failure {
    let text = causes
        .iter()
        .map(|(f, m)| format!("{f}: {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = format!("{} {:?} is invalid: {text}", about.kind, about.name);
    let mut f = failure(422, "Invalid", &message);
    f.body["details"] = json!({
        "name": about.name,
        "kind": about.plural,
        "causes": causes.iter().map(|(field, m)| json!({
            "reason": "FieldValueInvalid", "message": m, "field": field,
        })).collect::<Vec<_>>(),
    });
    f
}

/// A gRPC status from the shared handlers as a Kubernetes `Status`.
pub fn from_grpc(st: &tonic::Status, about: &About<'_>) -> Failure {
    let msg = st.message();
    let (code, reason) = match st.code() {
        Code::NotFound => (404, "NotFound"),
        Code::AlreadyExists => (409, "AlreadyExists"),
        Code::Aborted => (409, "Conflict"),
        Code::InvalidArgument => {
            if let Some((field, reason)) = split_field(msg) {
                return invalid(about, &[(field, reason.to_string())]);
            }
            (422, "Invalid")
        }
        Code::OutOfRange => (410, "Expired"),
        Code::FailedPrecondition => (400, "BadRequest"),
        Code::Unavailable => (503, "ServiceUnavailable"),
        Code::Unauthenticated => (401, "Unauthorized"),
        Code::PermissionDenied => (403, "Forbidden"),
        Code::DeadlineExceeded => (504, "Timeout"),
        Code::ResourceExhausted => (500, "InternalError"),
        _ => (500, "InternalError"),
    };
    let mut f = failure(code, reason, msg);
    if !about.plural.is_empty() {
        f.body["details"] = json!({"name": about.name, "kind": about.plural});
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: About<'static> = About {
        kind: "Pod",
        plural: "pods",
        name: "web",
    };

    #[test]
    fn codes_and_reasons() {
        let f = from_grpc(
            &tonic::Status::not_found("pods \"default/web\" not found"),
            &POD,
        );
        assert_eq!((f.code, f.body["reason"].as_str()), (404, Some("NotFound")));
        assert_eq!(f.body["details"]["kind"], "pods");
        let f = from_grpc(&tonic::Status::aborted("conflict"), &POD);
        assert_eq!((f.code, f.body["reason"].as_str()), (409, Some("Conflict")));
        let f = from_grpc(&tonic::Status::already_exists("x"), &POD);
        assert_eq!(f.body["reason"], "AlreadyExists");
        let f = from_grpc(&tonic::Status::out_of_range("too old"), &POD);
        assert_eq!((f.code, f.body["reason"].as_str()), (410, Some("Expired")));
        let f = from_grpc(&tonic::Status::permission_denied("no"), &POD);
        assert_eq!(
            (f.code, f.body["reason"].as_str()),
            (403, Some("Forbidden"))
        );
        let f = from_grpc(&tonic::Status::unauthenticated("who"), &POD);
        assert_eq!(
            (f.code, f.body["reason"].as_str()),
            (401, Some("Unauthorized"))
        );
    }

    #[test]
    fn invalid_names_the_field_in_kubernetes_spelling() {
        let f = from_grpc(
            &tonic::Status::invalid_argument("spec.containers[0].image: is required"),
            &POD,
        );
        assert_eq!(f.code, 422);
        assert_eq!(f.body["reason"], "Invalid");
        assert_eq!(
            f.body["details"]["causes"][0]["field"],
            "spec.containers[0].image"
        );
        assert_eq!(
            f.body["message"],
            "Pod \"web\" is invalid: spec.containers[0].image: is required"
        );
        let f = from_grpc(
            &tonic::Status::invalid_argument("spec.cluster_ip: bad"),
            &POD,
        );
        assert_eq!(f.body["details"]["causes"][0]["field"], "spec.clusterIP");
        assert_eq!(k8s_field("spec.node_name"), "spec.nodeName");
        assert_eq!(
            k8s_field("spec.containers[1].container_port"),
            "spec.containers[1].containerPort"
        );
        let f = from_grpc(&tonic::Status::invalid_argument("no field here"), &POD);
        assert_eq!(f.code, 422);
        assert!(f.body["details"].get("causes").is_none());
    }
}
