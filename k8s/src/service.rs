//! Service: conversion, Table columns (NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide:
//! SELECTOR), no extra field selectors.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_lite_core::consts::protocol;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Service, ServicePort, ServiceSpec, ServiceStatus};
use serde_json::{json, Value};

use crate::meta;
use crate::pod::none_if_empty;
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind};

impl K8sKind for Service {
    type K8s = corev1::Service;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["spec.clusterIP", "spec.type"];

    fn to_k8s(&self) -> corev1::Service {
        let s = self.spec.clone().unwrap_or_default();
        corev1::Service {
            metadata: meta::to_k8s(self.meta(), true),
            spec: Some(corev1::ServiceSpec {
                selector: meta::map(&s.selector),
                ports: opt_vec(
                    s.ports
                        .iter()
                        .map(|p| corev1::ServicePort {
                            name: opt(&p.name),
                            protocol: opt(&p.protocol),
                            port: p.port,
                            target_port: (p.target_port != 0)
                                .then_some(IntOrString::Int(p.target_port)),
                            ..Default::default()
                        })
                        .collect(),
                ),
                cluster_ip: opt(&s.cluster_ip),
                cluster_ips: opt(&s.cluster_ip).map(|ip| vec![ip]),
                type_: opt(&s.r#type),
                ..Default::default()
            }),
            status: Some(corev1::ServiceStatus::default()),
        }
    }

    fn from_k8s(k: corev1::Service) -> Result<Service, Vec<FieldError>> {
        let metadata = meta::from_k8s(k.metadata)?;
        let s = k.spec.unwrap_or_default();
        let mut errors = Vec::new();
        let ports = s
            .ports
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let target_port = match p.target_port {
                    None => 0,
                    Some(IntOrString::Int(n)) => n,
                    Some(IntOrString::String(name)) => name.parse().unwrap_or_else(|_| {
                        errors.push(FieldError::new(
                            format!("spec.ports[{i}].targetPort"),
                            format!("named target port {name:?} is not supported; give the container port number"),
                        ));
                        0
                    }),
                };
                ServicePort {
                    name: p.name.unwrap_or_default(),
                    protocol: p.protocol.unwrap_or_default(),
                    port: p.port,
                    target_port,
                    ..Default::default()
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Service {
            metadata: Some(metadata),
            spec: Some(ServiceSpec {
                selector: meta::unmap(s.selector),
                ports,
                cluster_ip: s.cluster_ip.unwrap_or_default(),
                r#type: s.type_.unwrap_or_default(),
                ..Default::default()
            }),
            status: k.status.map(|_| ServiceStatus::default()),
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Type", "string", 0),
            Column::new("Cluster-IP", "string", 0),
            Column::new("External-IP", "string", 0),
            Column::new("Port(s)", "string", 0),
            Column::age(),
            Column::new("Selector", "string", 1),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let s = self.spec.clone().unwrap_or_default();
        let ports = if s.ports.is_empty() {
            "<none>".to_string()
        } else {
            s.ports
                .iter()
                .map(|p| {
                    let proto = if p.protocol.is_empty() {
                        protocol::TCP
                    } else {
                        &p.protocol
                    };
                    format!("{}/{proto}", p.port)
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut sel: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sel.sort();
        let sel = if sel.is_empty() {
            "<none>".to_string()
        } else {
            sel.join(",")
        };
        vec![
            json!(self.name()),
            json!(s.r#type),
            json!(none_if_empty(&s.cluster_ip)),
            json!("<none>"),
            json!(ports),
            json!(age(self.meta().creation_timestamp, now_ms)),
            json!(sel),
        ]
    }

    fn selectable_field(&self, field: &str) -> Option<String> {
        let s = self.spec.clone().unwrap_or_default();
        Some(match field {
            "spec.clusterIP" => s.cluster_ip,
            "spec.type" => s.r#type,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::ObjectMeta;

    #[test]
    fn round_trip_and_cells() {
        let s = Service {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80,
                    target_port: 8080,
                    ..Default::default()
                }],
                cluster_ip: "10.96.0.1".into(),
                r#type: "ClusterIP".into(),
                ..Default::default()
            }),
            status: Some(ServiceStatus::default()),
        };
        let v = s.to_json();
        assert_eq!(v["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(Service::from_json(v).unwrap(), s);
        let c = s.cells(0);
        assert_eq!(c[4], json!("80/TCP"));
        assert_eq!(c[6], json!("app=web"));
    }

    #[test]
    fn named_target_port_is_refused_by_path() {
        let e =
            Service::from_json(json!({"spec": {"ports": [{"port": 80, "targetPort": "http"}]}}))
                .unwrap_err();
        assert_eq!(e[0].field, "spec.ports[0].targetPort");
        let ok =
            Service::from_json(json!({"spec": {"ports": [{"port": 80, "targetPort": "8080"}]}}))
                .unwrap();
        assert_eq!(ok.spec.unwrap().ports[0].target_port, 8080);
    }
}
