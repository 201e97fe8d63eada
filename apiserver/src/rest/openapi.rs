//! `/openapi/v3`: the OpenAPI v3 documents of the served kinds, enough for `kubectl
//! explain` (schemas with `x-kubernetes-group-version-kind`) and `kubectl apply`
//! (PATCH operations that take `fieldValidation`, merge keys as
//! `x-kubernetes-patch-merge-key`).
//!
//! Choice: the schemas are derived from each kind's schema sample through the
//! conversion layer (pure, [`schema_of`]), so they list exactly the fields kube-lite
//! keeps, without descriptions; k8s-openapi's `schemars` feature would give
//! Kubernetes' full schemas, but it is an extra feature (the project keeps k8s-openapi
//! to one version feature) and would describe fields kube-lite drops.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Response;
use serde_json::{json, Map, Value};

use super::{failure_response, json_response, status, KindInfo, Rest};

/// Map-valued fields (string → string) by their key.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "nodeSelector",
    "selector",
    "capacity",
    "allocatable",
    "data",
    "stringData",
    "matchLabels",
    "binaryData",
];

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z'
}

/// A schema for the JSON value `v` at `path` (dotted field names).
pub fn schema_of(v: &Value, path: &str, merge_keys: &[(&str, &str)]) -> Value {
    match v {
        Value::String(s) if is_time(s) => json!({"type": "string", "format": "date-time"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer", "format": "int64"}),
        Value::Null => json!({}),
        Value::Array(items) => {
            // The union of the elements' fields.
            let mut merged = Value::Null;
            for i in items {
                merged = union(merged, i.clone());
            }
            let mut s = json!({"type": "array", "items": schema_of(&merged, path, merge_keys)});
            if let Some((_, key)) = merge_keys.iter().find(|(p, _)| *p == path) {
                s["x-kubernetes-patch-merge-key"] = json!(key);
                s["x-kubernetes-patch-strategy"] = json!("merge");
                s["x-kubernetes-list-type"] = json!("map");
                s["x-kubernetes-list-map-keys"] = json!([key]);
            }
            s
        }
        Value::Object(m) => {
            let last = path.rsplit('.').next().unwrap_or("");
            if MAP_FIELDS.contains(&last) && m.values().all(Value::is_string) {
                return json!({"type": "object", "additionalProperties": {"type": "string"}});
            }
            let props: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !(path.is_empty() && (*k == "apiVersion" || *k == "kind")))
                .map(|(k, x)| {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    (k.clone(), schema_of(x, &sub, merge_keys))
                })
                .collect();
            json!({"type": "object", "properties": props})
        }
    }
}

fn union(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(mut x), Value::Object(y)) => {
            for (k, v) in y {
                let cur = x.remove(&k).unwrap_or(Value::Null);
                x.insert(k, union(cur, v));
            }
            Value::Object(x)
        }
        (Value::Null, b) => b,
        (a, _) => a,
    }
}

/// `io.k8s.api.core.v1.Pod`, `io.k8s.api.apps.v1.Deployment`.
pub fn schema_name(k: &KindInfo) -> String {
    let g = if k.group.is_empty() { "core" } else { k.group };
    format!("io.k8s.api.{g}.{}.{}", k.version, k.kind)
}

/// The kind's schema: derived from its sample, with `apiVersion`/`kind` and its GVK.
pub fn kind_schema(k: &KindInfo) -> Value {
    let mut s = schema_of(&k.sample, "", k.merge_keys);
    let props = s["properties"].as_object_mut().expect("object schema");
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
    );
    props.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
    );
    s["description"] = json!(format!("{} (the fields kube-lite serves).", k.kind));
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": k.group, "version": k.version, "kind": k.kind}]);
    s
}

fn op(k: &KindInfo, action: &str, with_validation: bool) -> Value {
    let mut o = json!({
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
        "responses": {"200": {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": format!("#/components/schemas/{}", schema_name(k))}}}}},
    });
    if with_validation {
        o["parameters"] = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
    }
    o
}

/// The document of one group version.
pub fn group_version_doc(kinds: &[&KindInfo]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for k in kinds {
        let prefix = if k.group.is_empty() {
            format!("/api/{}", k.version)
        } else {
            format!("/apis/{}/{}", k.group, k.version)
        };
        let base = if k.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("{prefix}/{}", k.plural)
        };
        paths.insert(
            base.clone(),
            json!({
                "get": op(k, "list", false),
                "post": op(k, "post", true),
                "delete": op(k, "deletecollection", false),
            }),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op(k, "get", false),
                "put": op(k, "put", true),
                "patch": op(k, "patch", true),
                "delete": op(k, "delete", false),
            }),
        );
        if k.subresources.contains(&"status") {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({"get": op(k, "get", false), "put": op(k, "put", true), "patch": op(k, "patch", true)}),
            );
        }
        schemas.insert(schema_name(k), kind_schema(k));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::MAJOR, super::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The documents, built once.
pub struct Docs {
    pub root: Value,
    pub by_gv: HashMap<String, Vec<u8>>,
}

impl Docs {
    pub fn build(kinds: &[KindInfo]) -> Docs {
        let mut groups: BTreeMap<String, Vec<&KindInfo>> = BTreeMap::new();
        for k in kinds {
            let key = if k.group.is_empty() {
                format!("api/{}", k.version)
            } else {
                format!("apis/{}/{}", k.group, k.version)
            };
            groups.entry(key).or_default().push(k);
        }
        let mut by_gv = HashMap::new();
        let mut paths = Map::new();
        for (gv, ks) in groups {
            let bytes = serde_json::to_vec(&group_version_doc(&ks)).unwrap_or_default();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            paths.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={:016X}", h.finish())}),
            );
            by_gv.insert(gv, bytes);
        }
        Docs {
            root: json!({"paths": paths}),
            by_gv,
        }
    }
}

pub async fn root(State(rest): State<Rest>) -> Response<Body> {
    json_response(200, &rest.openapi().root)
}

pub async fn group_version(State(rest): State<Rest>, Path(gv): Path<String>) -> Response<Body> {
    match rest.openapi().by_gv.get(gv.trim_matches('/')) {
        Some(bytes) => {
            let mut r = Response::new(Body::from(bytes.clone()));
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            r
        }
        None => failure_response(status::not_found(format!("no OpenAPI document for {gv:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_from_samples() {
        let sample = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x", "labels": {"a": "b"}, "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}, {"name": "d", "image": "i"}],
                     "terminationGracePeriodSeconds": 30},
        });
        let keys: &[(&str, &str)] = &[("spec.containers", "name")];
        let s = schema_of(&sample, "", keys);
        assert!(s["properties"].get("apiVersion").is_none());
        assert_eq!(
            s["properties"]["metadata"]["properties"]["labels"]["additionalProperties"]["type"],
            "string"
        );
        assert_eq!(
            s["properties"]["metadata"]["properties"]["creationTimestamp"]["format"],
            "date-time"
        );
        let c = &s["properties"]["spec"]["properties"]["containers"];
        assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
        // Union of the elements: both image and ports are listed.
        assert!(c["items"]["properties"].get("image").is_some());
        assert!(c["items"]["properties"].get("ports").is_some());
        assert_eq!(
            s["properties"]["spec"]["properties"]["terminationGracePeriodSeconds"]["type"],
            "integer"
        );
    }

    #[test]
    fn documents_name_the_kinds_and_take_field_validation() {
        let mut k = crate::rest::discovery::tests_info();
        k.sample = json!({"metadata": {"name": "x"}});
        let docs = Docs::build(&[k]);
        let url = docs.root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
        let doc: Value = serde_json::from_slice(&docs.by_gv["api/v1"]).unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert_eq!(patch["parameters"][0]["name"], "fieldValidation");
        let schema = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    }
}
