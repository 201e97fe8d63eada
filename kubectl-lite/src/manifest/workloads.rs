//! Manifests of Namespace, ConfigMap, Secret (v1) and Deployment, ReplicaSet (apps/v1),
//! walked field by field like Pods and Services: unsupported fields are errors naming
//! their path. A template's pod spec is checked with the Pod rules, its paths prefixed
//! with `spec.template.`.

use super::{Kind as WKind, Manifest, Walker};
use base64::Engine;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, DeploymentSpec, DeploymentStrategy, LabelSelector,
    LabelSelectorRequirement, Namespace, PodTemplateSpec, ReplicaSet, ReplicaSetSpec,
    RollingUpdateDeployment, Secret,
};
use serde_json::{Map, Value};

/// `None` for the kinds this file does not convert (Pod, Service).
pub(super) fn convert(
    w: &mut Walker,
    kind: &str,
    top: &Map<String, Value>,
    namespace: &str,
    explicit_namespace: bool,
) -> Option<Manifest> {
    let common = ["apiVersion", "kind", "metadata"];
    let known = |extra: &[&'static str]| -> Vec<&'static str> {
        common.iter().chain(extra.iter()).copied().collect()
    };
    Some(match kind {
        "Namespace" => {
            w.unknown("", top, &known(&["spec"]), WKind::Namespace);
            let mut metadata = w.metadata(top.get("metadata"), namespace, false);
            metadata.namespace.clear();
            if let Some(spec) = w.object("spec", top.get("spec")) {
                w.unknown("spec", spec, &["finalizers"], WKind::Namespace);
                if spec.contains_key("finalizers") {
                    w.warn("spec.finalizers", "ignored (set by the server)");
                }
            }
            Manifest::Namespace(Namespace {
                metadata: Some(metadata),
                ..Default::default()
            })
        }
        "ConfigMap" => {
            w.unknown(
                "",
                top,
                &known(&["data", "binaryData", "immutable"]),
                WKind::Config,
            );
            let metadata = w.metadata(top.get("metadata"), namespace, explicit_namespace);
            let data = w.string_map("data", top.get("data"));
            let binary_data = base64_map(w, "binaryData", top.get("binaryData"));
            let immutable = bool_field(w, "immutable", top.get("immutable"));
            Manifest::ConfigMap(ConfigMap {
                metadata: Some(metadata),
                data,
                binary_data,
                immutable,
            })
        }
        "Secret" => {
            w.unknown(
                "",
                top,
                &known(&["data", "stringData", "type", "immutable"]),
                WKind::Config,
            );
            let metadata = w.metadata(top.get("metadata"), namespace, explicit_namespace);
            Manifest::Secret(Secret {
                metadata: Some(metadata),
                data: base64_map(w, "data", top.get("data")),
                string_data: w.string_map("stringData", top.get("stringData")),
                r#type: w.string("type", top.get("type")),
                immutable: bool_field(w, "immutable", top.get("immutable")),
            })
        }
        "ReplicaSet" => {
            w.unknown("", top, &known(&["spec"]), WKind::Workload);
            let metadata = w.metadata(top.get("metadata"), namespace, explicit_namespace);
            let mut spec = ReplicaSetSpec::default();
            match w.object("spec", top.get("spec")) {
                None => w.err("spec", "is required"),
                Some(s) => {
                    w.unknown(
                        "spec",
                        s,
                        &["replicas", "selector", "template", "minReadySeconds"],
                        WKind::Workload,
                    );
                    spec.replicas = opt_int(w, "spec.replicas", s.get("replicas"));
                    spec.min_ready_seconds =
                        w.int("spec.minReadySeconds", s.get("minReadySeconds")) as i32;
                    spec.selector = selector(w, s.get("selector"));
                    spec.template = template(w, s.get("template"));
                }
            }
            Manifest::ReplicaSet(ReplicaSet {
                metadata: Some(metadata),
                spec: Some(spec),
                status: None,
            })
        }
        "Deployment" => {
            w.unknown("", top, &known(&["spec"]), WKind::Workload);
            let metadata = w.metadata(top.get("metadata"), namespace, explicit_namespace);
            let mut spec = DeploymentSpec::default();
            match w.object("spec", top.get("spec")) {
                None => w.err("spec", "is required"),
                Some(s) => {
                    w.unknown(
                        "spec",
                        s,
                        &[
                            "replicas",
                            "selector",
                            "template",
                            "strategy",
                            "minReadySeconds",
                            "revisionHistoryLimit",
                            "paused",
                            "progressDeadlineSeconds",
                        ],
                        WKind::Workload,
                    );
                    spec.replicas = opt_int(w, "spec.replicas", s.get("replicas"));
                    spec.min_ready_seconds =
                        w.int("spec.minReadySeconds", s.get("minReadySeconds")) as i32;
                    spec.revision_history_limit = opt_int(
                        w,
                        "spec.revisionHistoryLimit",
                        s.get("revisionHistoryLimit"),
                    );
                    spec.progress_deadline_seconds = opt_int(
                        w,
                        "spec.progressDeadlineSeconds",
                        s.get("progressDeadlineSeconds"),
                    );
                    spec.paused = bool_field(w, "spec.paused", s.get("paused"));
                    spec.selector = selector(w, s.get("selector"));
                    spec.template = template(w, s.get("template"));
                    spec.strategy = strategy(w, s.get("strategy"));
                }
            }
            Manifest::Deployment(Deployment {
                metadata: Some(metadata),
                spec: Some(spec),
                status: None,
            })
        }
        _ => return None,
    })
}

fn bool_field(w: &mut Walker, path: &str, v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            w.err(
                path,
                format!("expected a boolean, got {}", super::type_name(other)),
            );
            false
        }
    }
}

fn opt_int(w: &mut Walker, path: &str, v: Option<&Value>) -> Option<i32> {
    match v {
        None | Some(Value::Null) => None,
        some => {
            let n = w.int(path, some);
            if !(0..=i64::from(i32::MAX)).contains(&n) {
                w.err(path, format!("{n} must be between 0 and {}", i32::MAX));
                return None;
            }
            Some(n as i32)
        }
    }
}

fn base64_map(
    w: &mut Walker,
    path: &str,
    v: Option<&Value>,
) -> std::collections::HashMap<String, Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    for (k, s) in w.string_map(path, v) {
        match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
            Ok(b) => {
                out.insert(k, b);
            }
            Err(e) => w.err(&format!("{path}.{k}"), format!("is not valid base64: {e}")),
        }
    }
    out
}

/// An IntOrString field as our string form: `1` → "1", `"25%"` stays.
fn int_or_string(w: &mut Walker, path: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Number(n)) if n.as_i64().is_some() => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            w.err(
                path,
                format!(
                    "expected an integer or a percentage, got {}",
                    super::type_name(other)
                ),
            );
            String::new()
        }
    }
}

fn strategy(w: &mut Walker, v: Option<&Value>) -> Option<DeploymentStrategy> {
    let s = w.object("spec.strategy", v)?;
    w.unknown(
        "spec.strategy",
        s,
        &["type", "rollingUpdate"],
        WKind::Workload,
    );
    let typ = w.string("spec.strategy.type", s.get("type"));
    let rolling_update = w
        .object("spec.strategy.rollingUpdate", s.get("rollingUpdate"))
        .map(|ru| {
            w.unknown(
                "spec.strategy.rollingUpdate",
                ru,
                &["maxSurge", "maxUnavailable"],
                WKind::Workload,
            );
            RollingUpdateDeployment {
                max_surge: int_or_string(
                    w,
                    "spec.strategy.rollingUpdate.maxSurge",
                    ru.get("maxSurge"),
                ),
                max_unavailable: int_or_string(
                    w,
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    ru.get("maxUnavailable"),
                ),
            }
        });
    Some(DeploymentStrategy {
        r#type: typ,
        rolling_update,
    })
}

fn selector(w: &mut Walker, v: Option<&Value>) -> Option<LabelSelector> {
    let Some(s) = w.object("spec.selector", v) else {
        w.err("spec.selector", "is required");
        return None;
    };
    w.unknown(
        "spec.selector",
        s,
        &["matchLabels", "matchExpressions"],
        WKind::Workload,
    );
    let match_labels = w.string_map("spec.selector.matchLabels", s.get("matchLabels"));
    let mut match_expressions = Vec::new();
    let exprs = w.array("spec.selector.matchExpressions", s.get("matchExpressions"));
    for (i, e) in exprs.iter().enumerate() {
        let p = format!("spec.selector.matchExpressions[{i}]");
        if let Some(e) = w.object(&p, Some(e)) {
            w.unknown(&p, e, &["key", "operator", "values"], WKind::Workload);
            match_expressions.push(LabelSelectorRequirement {
                key: w.string(&format!("{p}.key"), e.get("key")),
                operator: w.string(&format!("{p}.operator"), e.get("operator")),
                values: w.strings(&format!("{p}.values"), e.get("values")),
            });
        }
    }
    Some(LabelSelector {
        match_labels,
        match_expressions,
    })
}

/// `spec.template`: metadata (labels, annotations) and a pod spec checked with the Pod
/// rules (a separate walk, its paths prefixed).
fn template(w: &mut Walker, v: Option<&Value>) -> Option<PodTemplateSpec> {
    let Some(t) = w.object("spec.template", v) else {
        w.err("spec.template", "is required");
        return None;
    };
    w.unknown("spec.template", t, &["metadata", "spec"], WKind::Workload);
    let mut meta = kube_lite_proto::v1::ObjectMeta::default();
    if let Some(m) = w.object("spec.template.metadata", t.get("metadata")) {
        w.unknown(
            "spec.template.metadata",
            m,
            &["labels", "annotations", "name", "creationTimestamp"],
            WKind::Workload,
        );
        meta.labels = w.string_map("spec.template.metadata.labels", m.get("labels"));
        meta.annotations = w.string_map("spec.template.metadata.annotations", m.get("annotations"));
    }
    let mut inner = Walker::default();
    let spec = inner.pod_spec(t.get("spec"));
    for e in inner.errors {
        w.errors.push(format!("spec.template.{e}"));
    }
    for e in inner.warnings {
        w.warnings.push(format!("spec.template.{e}"));
    }
    Some(PodTemplateSpec {
        metadata: Some(meta),
        spec: Some(spec),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{convert as convert_doc, parse_documents};
    use super::*;

    const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 4
  revisionHistoryLimit: 5
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: whoami
        imagePullPolicy: IfNotPresent
        ports: [{containerPort: 8080}]
"#;

    fn one(text: &str) -> Result<super::super::Converted, Vec<String>> {
        let docs = parse_documents(text).unwrap();
        convert_doc(&docs[0], "default", false)
    }

    #[test]
    fn deployments_convert_with_int_or_string() {
        let c = one(DEPLOY).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let Manifest::Deployment(d) = c.manifest else {
            panic!()
        };
        let s = d.spec.unwrap();
        assert_eq!((s.replicas, s.revision_history_limit), (Some(4), Some(5)));
        let ru = s.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(
            (ru.max_surge.as_str(), ru.max_unavailable.as_str()),
            ("1", "0")
        );
        assert_eq!(s.selector.unwrap().match_labels["app"], "web");
        let t = s.template.unwrap();
        assert_eq!(t.spec.unwrap().containers[0].ports[0].container_port, 8080);
    }

    #[test]
    fn unsupported_template_fields_are_named() {
        let bad = DEPLOY.replace(
            "        ports: [{containerPort: 8080}]",
            "        ports: [{containerPort: 8080}]\n        lifecycle: {preStop: {sleep: {seconds: 5}}}",
        );
        assert_eq!(
            one(&bad).unwrap_err(),
            vec!["spec.template.spec.containers[0].lifecycle.preStop.sleep: not supported by kube-lite"]
        );
        let v1 = DEPLOY.replace("apps/v1", "extensions/v1beta1");
        assert_eq!(
            one(&v1).unwrap_err(),
            vec![
                "apiVersion: \"extensions/v1beta1\" is not supported for Deployment (only apps/v1)"
            ]
        );
    }

    #[test]
    fn config_maps_secrets_and_namespaces() {
        let c = one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\nbinaryData: {x: aGk=}\nimmutable: true\n").unwrap();
        let Manifest::ConfigMap(cm) = c.manifest else {
            panic!()
        };
        assert_eq!(cm.data["a"], "b");
        assert_eq!(cm.binary_data["x"], b"hi");
        assert!(cm.immutable);
        let c = one("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\ndata: {p: aHVudGVyMg==}\nstringData: {u: admin}\n").unwrap();
        let Manifest::Secret(s) = c.manifest else {
            panic!()
        };
        assert_eq!(s.data["p"], b"hunter2");
        assert_eq!(s.string_data["u"], "admin");
        assert_eq!(
            one("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {p: '***'}\n")
                .unwrap_err()[0]
                .split(':')
                .next(),
            Some("data.p")
        );
        let c = one("apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n").unwrap();
        assert_eq!(c.manifest.meta().namespace, "");
        assert_eq!(c.manifest.display(), "namespace/dev");
    }
}
