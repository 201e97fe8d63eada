//! Endpoints: conversion, Table columns (NAME ENDPOINTS AGE).

use k8s_openapi::api::core::v1 as corev1;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use serde_json::{json, Value};

use crate::meta;
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind};

fn address_to_k8s(a: &EndpointAddress, namespace: &str) -> corev1::EndpointAddress {
    corev1::EndpointAddress {
        ip: a.ip.clone(),
        node_name: opt(&a.node_name),
        target_ref: opt(&a.pod_name).map(|name| corev1::ObjectReference {
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: opt(namespace),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn address_from_k8s(a: corev1::EndpointAddress) -> EndpointAddress {
    EndpointAddress {
        ip: a.ip,
        node_name: a.node_name.unwrap_or_default(),
        pod_name: a.target_ref.and_then(|r| r.name).unwrap_or_default(),
    }
}

impl K8sKind for Endpoints {
    type K8s = corev1::Endpoints;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["ep"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &[];

    fn schema_sample() -> Endpoints {
        let addr = |i: u8| EndpointAddress {
            ip: format!("10.0.1.{i}"),
            node_name: "n1".into(),
            pod_name: format!("p{i}"),
        };
        Endpoints {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            subsets: vec![EndpointSubset {
                addresses: (1..=4).map(addr).collect(),
                not_ready_addresses: vec![],
                ports: vec![EndpointPort {
                    name: "".into(),
                    port: 8080,
                    protocol: "TCP".into(),
                }],
            }],
        }
    }

    fn to_k8s(&self) -> corev1::Endpoints {
        let ns = self.namespace();
        corev1::Endpoints {
            metadata: meta::to_k8s(self.meta(), true),
            subsets: opt_vec(
                self.subsets
                    .iter()
                    .map(|s| corev1::EndpointSubset {
                        addresses: opt_vec(
                            s.addresses.iter().map(|a| address_to_k8s(a, ns)).collect(),
                        ),
                        not_ready_addresses: opt_vec(
                            s.not_ready_addresses
                                .iter()
                                .map(|a| address_to_k8s(a, ns))
                                .collect(),
                        ),
                        ports: opt_vec(
                            s.ports
                                .iter()
                                .map(|p| corev1::EndpointPort {
                                    name: opt(&p.name),
                                    port: p.port,
                                    protocol: opt(&p.protocol),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                    })
                    .collect(),
            ),
        }
    }

    fn from_k8s(k: corev1::Endpoints) -> Result<Endpoints, Vec<FieldError>> {
        Ok(Endpoints {
            metadata: Some(meta::from_k8s(k.metadata)?),
            subsets: k
                .subsets
                .unwrap_or_default()
                .into_iter()
                .map(|s| EndpointSubset {
                    addresses: s
                        .addresses
                        .unwrap_or_default()
                        .into_iter()
                        .map(address_from_k8s)
                        .collect(),
                    not_ready_addresses: s
                        .not_ready_addresses
                        .unwrap_or_default()
                        .into_iter()
                        .map(address_from_k8s)
                        .collect(),
                    ports: s
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| EndpointPort {
                            name: p.name.unwrap_or_default(),
                            port: p.port,
                            protocol: p.protocol.unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Endpoints", "string", 0),
            Column::age(),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        vec![
            json!(self.name()),
            json!(endpoints_text(self)),
            json!(age(self.meta().creation_timestamp, now_ms)),
        ]
    }
}

/// kubectl's ENDPOINTS column: `ip:port` pairs, at most three then `+ N more...`.
pub fn endpoints_text(ep: &Endpoints) -> String {
    let mut all = Vec::new();
    for s in &ep.subsets {
        for a in &s.addresses {
            if s.ports.is_empty() {
                all.push(a.ip.clone());
            }
            for p in &s.ports {
                all.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    if all.is_empty() {
        return "<none>".into();
    }
    let more = all.len().saturating_sub(3);
    let mut text = all.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        text.push_str(&format!(" + {more} more..."));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_text() {
        let e = Endpoints::schema_sample();
        let v = e.to_json();
        assert_eq!(v["subsets"][0]["addresses"][0]["targetRef"]["name"], "p1");
        assert_eq!(Endpoints::from_json(v).unwrap(), e);
        assert_eq!(
            endpoints_text(&e),
            "10.0.1.1:8080,10.0.1.2:8080,10.0.1.3:8080 + 1 more..."
        );
    }
}
