//! Discovery: `/version`, `/api`, `/apis`, the resource lists (`/api/v1`,
//! `/apis/{group}/{version}`), health endpoints. The JSON is built by pure functions
//! from the served kinds' [`KindInfo`].
//!
//! Only the legacy (unaggregated) discovery documents are served; kubectl asks for the
//! aggregated ones first and falls back to these when the answer is plain JSON.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response};
use serde_json::{json, Value};

use super::{json_response, KindInfo, Rest};

/// The Kubernetes version kube-lite's REST face follows (its k8s-openapi feature).
pub const MAJOR: &str = "1";
pub const MINOR: &str = "37";

pub fn version_json() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "emulationMajor": MAJOR,
        "emulationMinor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0+kube-lite-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH {
            "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

pub async fn version() -> Response<Body> {
    json_response(200, &version_json())
}

pub async fn ok() -> &'static str {
    "ok"
}

pub async fn api_versions(headers: HeaderMap) -> Response<Body> {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }),
    )
}

/// The named groups (every group but core) with their versions.
pub fn groups_json(kinds: &[KindInfo]) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
        let v = groups.entry(k.group).or_default();
        if !v.contains(&k.version) {
            v.push(k.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub async fn api_groups(State(rest): State<Rest>) -> Response<Body> {
    json_response(200, &groups_json(&rest.infos()))
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The APIResourceList of one group version, `None` when nothing is served there.
pub fn resource_list_json(kinds: &[KindInfo], group: &str, version: &str) -> Option<Value> {
    let mine: Vec<&KindInfo> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in &mine {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for sub in k.subresources {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "log" => (k.kind, &["get"]),
                "binding" => ("Binding", &["create"]),
                "exec" => ("PodExecOptions", &["create", "get"]),
                "scale" => ("Scale", &["get", "patch", "update"]),
                _ => (k.kind, &["get", "patch", "update"]),
            };
            let mut r = json!({
                "name": format!("{}/{sub}", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *sub == "scale" {
                r["group"] = json!("autoscaling");
                r["version"] = json!("v1");
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// `/api/v1` or `/apis/{group}/{version}` (also `/apis/{group}`: the APIGroup).
pub fn resource_list(rest: &Rest, path: &str) -> Option<Response<Body>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kinds = rest.infos();
    match segs.as_slice() {
        ["api", v] => Some(match resource_list_json(&kinds, "", v) {
            Some(l) => json_response(200, &l),
            None => super::failure_response(super::status::not_found(format!(
                "the server could not find the requested resource ({path})"
            ))),
        }),
        ["apis", g, v] => Some(match resource_list_json(&kinds, g, v) {
            Some(l) => json_response(200, &l),
            None => super::failure_response(super::status::not_found(format!(
                "the server could not find the requested resource ({path})"
            ))),
        }),
        ["apis", g] => {
            let all = groups_json(&kinds);
            let found = all["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == *g).cloned());
            Some(match found {
                Some(mut grp) => {
                    grp["kind"] = json!("APIGroup");
                    grp["apiVersion"] = json!("v1");
                    json_response(200, &grp)
                }
                None => super::failure_response(super::status::not_found(format!(
                    "the server could not find the requested resource ({path})"
                ))),
            })
        }
        _ => None,
    }
}

/// A KindInfo for tests: pods with status, log, binding.
#[cfg(test)]
pub fn tests_info() -> KindInfo {
    tests::info("", "Pod", "pods")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn info(group: &'static str, kind: &'static str, plural: &'static str) -> KindInfo {
        KindInfo {
            group,
            version: "v1",
            kind,
            plural,
            singular: "x",
            namespaced: true,
            short_names: &["po"],
            categories: &["all"],
            subresources: &["status", "log", "binding"],
            merge_keys: &[],
            sample: json!({}),
        }
    }

    #[test]
    fn resource_lists_and_groups() {
        let kinds = vec![
            info("", "Pod", "pods"),
            info("apps", "Deployment", "deployments"),
        ];
        let l = resource_list_json(&kinds, "", "v1").unwrap();
        assert_eq!(l["groupVersion"], "v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["pods", "pods/status", "pods/log", "pods/binding"]);
        assert_eq!(l["resources"][0]["shortNames"], json!(["po"]));
        assert_eq!(l["resources"][3]["kind"], "Binding");
        assert!(resource_list_json(&kinds, "batch", "v1").is_none());
        let g = groups_json(&kinds);
        assert_eq!(g["groups"][0]["name"], "apps");
        assert_eq!(
            g["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert_eq!(version_json()["minor"], MINOR);
    }
}
