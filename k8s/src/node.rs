//! Node: conversion, Table columns (kubectl's NAME STATUS ROLES AGE VERSION, wide:
//! INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME).
//!
//! kube-lite's node fields without a Kubernetes counterpart travel as annotations:
//! `spec.address` (the underlay address) as [`ADDRESS_ANNOTATION`] and
//! `status.daemon_endpoint` as [`DAEMON_ENDPOINT_ANNOTATION`] (its port also as
//! `status.daemonEndpoints.kubeletEndpoint.Port`); `status.address` is the InternalIP
//! address, `status.last_heartbeat_time` the Ready condition's `lastHeartbeatTime`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_lite_core::consts::{condition, condition_status};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use serde_json::{json, Value};

use crate::meta::{self, millis, time};
use crate::pod::none_if_empty;
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind};

pub const ADDRESS_ANNOTATION: &str = "node.kube-lite.io/address";
pub const DAEMON_ENDPOINT_ANNOTATION: &str = "node.kube-lite.io/daemon-endpoint";

/// `Ready`, `NotReady`, `Unknown` (no condition yet), plus `,SchedulingDisabled`.
pub fn status_text(node: &Node) -> String {
    let status = node.status.clone().unwrap_or_default();
    let mut text = match status
        .conditions
        .iter()
        .find(|c| c.r#type == condition::READY)
    {
        Some(c) if c.status == condition_status::TRUE => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        text.push_str(",SchedulingDisabled");
    }
    text
}

fn port_of(url: &str) -> Option<i32> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

impl K8sKind for Node {
    type K8s = corev1::Node;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const MERGE_KEYS: &'static [(&'static str, &'static str)] =
        &[("status.conditions", "type"), ("status.addresses", "type")];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["spec.unschedulable"];

    fn schema_sample() -> Node {
        Node {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
                name: "n1".into(),
                resource_version: 3,
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                pod_cidr: "10.0.1.0/24".into(),
                address: "192.168.250.2".into(),
                unschedulable: true,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    reason: "AgentReady".into(),
                    message: "".into(),
                    last_transition_time: 1_700_000_000_000,
                }],
                last_heartbeat_time: 1_700_000_005_000,
                capacity: [("pods".to_string(), "110".to_string())].into(),
                allocatable: [("cpu".to_string(), "2".to_string())].into(),
                address: "192.168.250.2".into(),
                daemon_endpoint: "http://127.0.0.1:10250".into(),
                ..Default::default()
            }),
        }
    }

    fn to_k8s(&self) -> corev1::Node {
        let spec = self.spec.clone().unwrap_or_default();
        let mut metadata = meta::to_k8s(self.meta(), false);
        let mut extra = BTreeMap::new();
        if !spec.address.is_empty() {
            extra.insert(ADDRESS_ANNOTATION.to_string(), spec.address.clone());
        }
        let status = self.status.as_ref().map(|st| {
            if !st.daemon_endpoint.is_empty() {
                extra.insert(
                    DAEMON_ENDPOINT_ANNOTATION.to_string(),
                    st.daemon_endpoint.clone(),
                );
            }
            corev1::NodeStatus {
                conditions: opt_vec(
                    st.conditions
                        .iter()
                        .map(|c| corev1::NodeCondition {
                            type_: c.r#type.clone(),
                            status: c.status.clone(),
                            reason: opt(&c.reason),
                            message: opt(&c.message),
                            last_transition_time: time(c.last_transition_time),
                            last_heartbeat_time: (c.r#type == condition::READY)
                                .then(|| time(st.last_heartbeat_time))
                                .flatten(),
                        })
                        .collect(),
                ),
                capacity: (!st.capacity.is_empty()).then(|| {
                    st.capacity
                        .iter()
                        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                        .collect()
                }),
                allocatable: (!st.allocatable.is_empty()).then(|| {
                    st.allocatable
                        .iter()
                        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                        .collect()
                }),
                images: opt_vec(
                    st.images
                        .iter()
                        .map(|i| corev1::ContainerImage {
                            names: opt_vec(i.names.clone()),
                            size_bytes: Some(i.size_bytes),
                        })
                        .collect(),
                ),
                addresses: opt(&st.address).map(|address| {
                    vec![corev1::NodeAddress {
                        type_: "InternalIP".into(),
                        address,
                    }]
                }),
                daemon_endpoints: port_of(&st.daemon_endpoint).map(|port| {
                    corev1::NodeDaemonEndpoints {
                        kubelet_endpoint: Some(corev1::DaemonEndpoint { port }),
                    }
                }),
                ..Default::default()
            }
        });
        if !extra.is_empty() {
            metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(extra);
        }
        corev1::Node {
            metadata,
            spec: Some(corev1::NodeSpec {
                pod_cidr: opt(&spec.pod_cidr),
                pod_cidrs: opt(&spec.pod_cidr).map(|c| vec![c]),
                unschedulable: spec.unschedulable.then_some(true),
                ..Default::default()
            }),
            status,
        }
    }

    fn from_k8s(k: corev1::Node) -> Result<Node, Vec<FieldError>> {
        let mut metadata = meta::from_k8s(k.metadata)?;
        let address = metadata
            .annotations
            .remove(ADDRESS_ANNOTATION)
            .unwrap_or_default();
        let daemon_endpoint = metadata
            .annotations
            .remove(DAEMON_ENDPOINT_ANNOTATION)
            .unwrap_or_default();
        let spec = k.spec.unwrap_or_default();
        let status = k.status.map(|st| {
            let conditions = st.conditions.unwrap_or_default();
            let last_heartbeat_time = conditions
                .iter()
                .find(|c| c.type_ == condition::READY)
                .map_or(0, |c| millis(&c.last_heartbeat_time));
            NodeStatus {
                conditions: conditions
                    .into_iter()
                    .map(|c| NodeCondition {
                        r#type: c.type_,
                        status: c.status,
                        reason: c.reason.unwrap_or_default(),
                        message: c.message.unwrap_or_default(),
                        last_transition_time: millis(&c.last_transition_time),
                    })
                    .collect(),
                last_heartbeat_time,
                capacity: st
                    .capacity
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
                allocatable: st
                    .allocatable
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
                address: st
                    .addresses
                    .unwrap_or_default()
                    .into_iter()
                    .find(|a| a.type_ == "InternalIP")
                    .map(|a| a.address)
                    .unwrap_or_default(),
                daemon_endpoint,
                images: st
                    .images
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| kube_lite_proto::v1::ContainerImage {
                        names: i.names.unwrap_or_default(),
                        size_bytes: i.size_bytes.unwrap_or(0),
                    })
                    .collect(),
                ..Default::default()
            }
        });
        Ok(Node {
            metadata: Some(metadata),
            spec: Some(NodeSpec {
                pod_cidr: spec.pod_cidr.unwrap_or_default(),
                address,
                unschedulable: spec.unschedulable.unwrap_or(false),
            }),
            status,
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Status", "string", 0),
            Column::new("Roles", "string", 0),
            Column::age(),
            Column::new("Version", "string", 0),
            Column::new("Internal-IP", "string", 1),
            Column::new("External-IP", "string", 1),
            Column::new("OS-Image", "string", 1),
            Column::new("Kernel-Version", "string", 1),
            Column::new("Container-Runtime", "string", 1),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let ip = if st.address.is_empty() {
            spec.address.clone()
        } else {
            st.address.clone()
        };
        vec![
            json!(self.name()),
            json!(status_text(self)),
            json!("<none>"),
            json!(age(self.meta().creation_timestamp, now_ms)),
            json!("kube-lite"),
            json!(none_if_empty(&ip)),
            json!("<none>"),
            json!("<unknown>"),
            json!("<unknown>"),
            json!("kube-lite-process"),
        ]
    }

    fn selectable_field(&self, field: &str) -> Option<String> {
        match field {
            "spec.unschedulable" => Some(
                self.spec
                    .as_ref()
                    .is_some_and(|s| s.unschedulable)
                    .to_string(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_annotations_for_kube_lite_fields() {
        let n = Node::schema_sample();
        let v = n.to_json();
        assert_eq!(v["spec"]["podCIDR"], "10.0.1.0/24");
        assert_eq!(
            v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert_eq!(v["status"]["addresses"][0]["type"], "InternalIP");
        assert!(v["metadata"].get("namespace").is_none());
        assert_eq!(Node::from_json(v).unwrap(), n);
        assert_eq!(n.cells(0)[1], json!("Ready,SchedulingDisabled"));
    }
}
