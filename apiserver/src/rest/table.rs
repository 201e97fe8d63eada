//! Server-side printing (pure): `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`
//! answers a `meta.k8s.io` Table with the kind's columns
//! ([`kube_lite_k8s::K8sKind::columns`]) and, per row, the object as
//! `PartialObjectMetadata` (the default), the whole object or nothing
//! (`includeObject=Metadata|Object|None`).

use kube_lite_k8s::K8sKind;
use serde_json::{json, Value};

/// The Table version the client accepts (`v1`, or `v1beta1` for old clients), `None`
/// when it does not ask for a Table.
pub fn wants_table(accept: &str) -> Option<&'static str> {
    let mut best = None;
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        let has = |p: &str| params.iter().any(|x| x.eq_ignore_ascii_case(p));
        if has("as=Table") && has("g=meta.k8s.io") {
            if has("v=v1") {
                return Some("v1");
            }
            if has("v=v1beta1") {
                best = Some("v1beta1");
            }
        }
    }
    best
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn of(v: Option<&str>) -> Include {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row_object<R: K8sKind>(o: &R, include: Include, version: &str) -> Option<Value> {
    match include {
        Include::None => None,
        Include::Object => Some(o.to_json()),
        Include::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": format!("meta.k8s.io/{version}"),
            "metadata": kube_lite_k8s::meta::to_k8s(o.meta(), R::NAMESPACED),
        })),
    }
}

/// The Table of `items`.
pub fn table<R: K8sKind>(
    items: &[&R],
    resource_version: u64,
    include: Include,
    version: &str,
    now_ms: i64,
) -> Value {
    let columns: Vec<Value> = R::columns()
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut r = json!({"cells": o.cells(now_ms)});
            if let Some(obj) = row_object(*o, include, version) {
                r["object"] = obj;
            }
            r
        })
        .collect();
    let mut meta = json!({});
    if resource_version != 0 {
        meta["resourceVersion"] = json!(resource_version.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::Pod;

    #[test]
    fn accept_headers() {
        assert_eq!(
            wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"),
            Some("v1")
        );
        assert_eq!(
            wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Some("v1beta1")
        );
        assert_eq!(wants_table("application/json"), None);
        assert_eq!(wants_table(""), None);
    }

    #[test]
    fn pod_table() {
        let p = Pod::schema_sample();
        let t = table::<Pod>(&[&p], 9, Include::Metadata, "v1", 0);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["cells"][0], "web");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
        let t = table::<Pod>(&[&p], 9, Include::None, "v1", 0);
        assert!(t["rows"][0].get("object").is_none());
    }
}
