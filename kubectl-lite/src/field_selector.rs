//! `--field-selector`: Kubernetes' field selector syntax (`a=b`, `a==b`, `a!=b`, joined
//! by commas, all must hold) over the fields Kubernetes supports for each kind, matched
//! against the Kubernetes-shaped JSON of an object ([`crate::output::Show::to_json`]).
//!
//! Kubernetes evaluates field selectors on the server; kube-lite's List has no field
//! selector, so kubectl-lite filters the listed objects (same result, the whole list is
//! transferred). A missing field compares as the empty string, as in Kubernetes.

use serde_json::Value;

/// One requirement: `path` equals (or, with `negate`, differs from) `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub path: String,
    pub value: String,
    pub negate: bool,
}

/// The fields a kind can be selected by (Kubernetes' list for each kind, as far as
/// kube-lite has the field). Every kind has metadata.name and metadata.namespace.
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Secret" => &["type"],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

/// Parses `sel` for `kind`; an unknown field is an error naming it, as kubectl's
/// `field label not supported: X`.
pub fn parse(kind: &str, sel: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (path, value, negate) = if let Some((k, v)) = part.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = part.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = part.split_once('=') {
            (k, v, false)
        } else {
            return Err(format!(
                "invalid field selector {part:?}: expected FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE"
            ));
        };
        let path = path.trim();
        if path != "metadata.name"
            && path != "metadata.namespace"
            && !supported_fields(kind).contains(&path)
        {
            return Err(format!(
                "field label not supported: {path} (for {kind}: metadata.name, metadata.namespace{})",
                supported_fields(kind)
                    .iter()
                    .map(|f| format!(", {f}"))
                    .collect::<String>()
            ));
        }
        out.push(Requirement {
            path: path.to_string(),
            value: value.trim().to_string(),
            negate,
        });
    }
    Ok(out)
}

/// The field at a dotted path as Kubernetes compares it: strings as they are, numbers and
/// booleans as text, `source` of an Event as its component, missing as "".
fn field(v: &Value, path: &str) -> String {
    let mut cur = v;
    for p in path.split('.') {
        match cur.get(p) {
            Some(x) => cur = x,
            None => {
                return if path == "spec.unschedulable" {
                    "false".into()
                } else {
                    String::new()
                }
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if path == "source" => o
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Every requirement holds for `obj` (its Kubernetes JSON).
pub fn matches(reqs: &[Requirement], obj: &Value) -> bool {
    reqs.iter()
        .all(|r| (field(obj, &r.path) == r.value) != r.negate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_three_operators_and_refuses_unknown_fields() {
        let r = parse(
            "Pod",
            "status.phase=Running,spec.nodeName!=n1, metadata.name==web",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert!(!r[0].negate && r[1].negate && !r[2].negate);
        assert_eq!(r[2].path, "metadata.name");
        let e = parse("Deployment", "status.phase=Running").unwrap_err();
        assert!(
            e.starts_with("field label not supported: status.phase"),
            "{e}"
        );
        assert!(parse("Pod", "phase").unwrap_err().contains("FIELD=VALUE"));
        assert!(parse("Pod", "").unwrap().is_empty());
    }

    #[test]
    fn matches_strings_booleans_missing_and_event_source() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n1"},
                         "status": {"phase": "Running"}});
        let sel = |s| parse("Pod", s).unwrap();
        assert!(matches(&sel("status.phase=Running"), &pod));
        assert!(!matches(
            &sel("status.phase=Running,spec.nodeName!=n1"),
            &pod
        ));
        assert!(matches(&sel("status.podIP="), &pod), "missing is empty");
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(matches(
            &parse("Node", "spec.unschedulable=false").unwrap(),
            &node
        ));
        let ev = json!({"type": "Warning", "source": {"component": "kubelet", "host": "n1"},
                        "involvedObject": {"kind": "Pod", "name": "web"}});
        let sel = parse(
            "Event",
            "type=Warning,source=kubelet,involvedObject.name=web",
        )
        .unwrap();
        assert!(matches(&sel, &ev));
    }
}
