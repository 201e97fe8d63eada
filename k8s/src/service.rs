//! Service: conversion, Table columns (NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide:
//! SELECTOR), no extra field selectors.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_lite_core::consts::protocol;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    LoadBalancerIngress, Service, ServiceCondition, ServicePort, ServiceSpec, ServiceStatus,
};
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
    const MERGE_KEYS: &'static [(&'static str, &'static str)] = &[("spec.ports", "port")];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["spec.clusterIP", "spec.type"];

    fn schema_sample() -> Service {
        Service {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
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
                    node_port: 30080,
                    ..Default::default()
                }],
                cluster_ip: "10.96.0.1".into(),
                r#type: "NodePort".into(),
                external_traffic_policy: "Cluster".into(),
                session_affinity: "ClientIP".into(),
                session_affinity_timeout_seconds: 600,
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer_ingress: vec![LoadBalancerIngress {
                    ip: "192.168.250.2".into(),
                    ..Default::default()
                }],
                conditions: vec![ServiceCondition {
                    r#type: "LoadBalancerPortsAllocated".into(),
                    status: "True".into(),
                    reason: "Allocated".into(),
                    message: "ok".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

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
                            target_port: if !p.target_port_name.is_empty() {
                                Some(IntOrString::String(p.target_port_name.clone()))
                            } else {
                                (p.target_port != 0).then_some(IntOrString::Int(p.target_port))
                            },
                            node_port: (p.node_port != 0).then_some(p.node_port),
                            ..Default::default()
                        })
                        .collect(),
                ),
                cluster_ip: opt(&s.cluster_ip),
                cluster_ips: opt(&s.cluster_ip).map(|ip| vec![ip]),
                type_: opt(&s.r#type),
                external_traffic_policy: opt(&s.external_traffic_policy),
                session_affinity: opt(&s.session_affinity),
                session_affinity_config: (s.session_affinity_timeout_seconds != 0).then_some(
                    corev1::SessionAffinityConfig {
                        client_ip: Some(corev1::ClientIPConfig {
                            timeout_seconds: Some(s.session_affinity_timeout_seconds),
                        }),
                    },
                ),
                ..Default::default()
            }),
            status: Some(self.status.clone().map(status_to_k8s).unwrap_or_default()),
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
                let (target_port, target_port_name) = match p.target_port {
                    None => (0, String::new()),
                    Some(IntOrString::Int(n)) => (n, String::new()),
                    Some(IntOrString::String(name)) => match name.parse() {
                        Ok(n) => (n, String::new()),
                        Err(_) if name.is_empty() => {
                            errors.push(FieldError::new(
                                format!("spec.ports[{i}].targetPort"),
                                "must be a port number or a port name",
                            ));
                            (0, String::new())
                        }
                        Err(_) => (0, name),
                    },
                };
                ServicePort {
                    name: p.name.unwrap_or_default(),
                    protocol: p.protocol.unwrap_or_default(),
                    port: p.port,
                    target_port,
                    target_port_name,
                    node_port: p.node_port.unwrap_or(0),
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
                external_traffic_policy: s.external_traffic_policy.unwrap_or_default(),
                session_affinity: s.session_affinity.unwrap_or_default(),
                session_affinity_timeout_seconds: s
                    .session_affinity_config
                    .and_then(|c| c.client_ip)
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(0),
                ..Default::default()
            }),
            status: k.status.map(status_from_k8s),
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
        let ports = ports_text(self);
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
            json!(external_ips(self)),
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

/// kubectl's EXTERNAL-IP: the load balancer's ingress IPs, `<pending>` for a
/// LoadBalancer without one, `<none>` otherwise.
fn external_ips(s: &Service) -> String {
    let ips: Vec<String> = s
        .status
        .iter()
        .flat_map(|st| st.load_balancer_ingress.iter().map(|i| i.ip.clone()))
        .collect();
    let lb = s.spec.as_ref().is_some_and(|x| x.r#type == "LoadBalancer");
    match (ips.is_empty(), lb) {
        (false, _) => ips.join(","),
        (true, true) => "<pending>".into(),
        (true, false) => "<none>".into(),
    }
}

fn status_to_k8s(st: ServiceStatus) -> corev1::ServiceStatus {
    corev1::ServiceStatus {
        load_balancer: (!st.load_balancer_ingress.is_empty()).then(|| corev1::LoadBalancerStatus {
            ingress: Some(
                st.load_balancer_ingress
                    .iter()
                    .map(|i| corev1::LoadBalancerIngress {
                        ip: opt(&i.ip),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        conditions: opt_vec(
            st.conditions
                .iter()
                .map(
                    |c| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                        type_: c.r#type.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        // kube-lite keeps no transition time for Service conditions.
                        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                        ),
                        observed_generation: None,
                    },
                )
                .collect(),
        ),
    }
}

fn status_from_k8s(st: corev1::ServiceStatus) -> ServiceStatus {
    ServiceStatus {
        load_balancer_ingress: st
            .load_balancer
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .map(|i| LoadBalancerIngress {
                ip: i.ip.unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        conditions: st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| ServiceCondition {
                r#type: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// kubectl's PORT(S) column: `80/TCP,53/UDP`, `80:31234/TCP` with a node port,
/// `<none>` without ports.
pub fn ports_text(svc: &Service) -> String {
    let Some(spec) = svc.spec.as_ref().filter(|s| !s.ports.is_empty()) else {
        return "<none>".into();
    };
    spec.ports
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                protocol::TCP
            } else {
                &p.protocol
            };
            if p.node_port != 0 {
                format!("{}:{}/{proto}", p.port, p.node_port)
            } else {
                format!("{}/{proto}", p.port)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_cells() {
        let s = Service::schema_sample();
        let v = s.to_json();
        assert_eq!(v["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(Service::from_json(v).unwrap(), s);
        let c = s.cells(0);
        assert_eq!(c[3], json!("192.168.250.2"));
        assert_eq!(c[4], json!("80:30080/TCP"));
        assert_eq!(c[6], json!("app=web"));
    }

    #[test]
    fn named_target_ports() {
        let named =
            Service::from_json(json!({"spec": {"ports": [{"port": 80, "targetPort": "http"}]}}))
                .unwrap();
        assert_eq!(
            named.spec.as_ref().unwrap().ports[0].target_port_name,
            "http"
        );
        assert_eq!(named.to_json()["spec"]["ports"][0]["targetPort"], "http");
        let e = Service::from_json(json!({"spec": {"ports": [{"port": 80, "targetPort": ""}]}}))
            .unwrap_err();
        assert_eq!(e[0].field, "spec.ports[0].targetPort");
        let ok =
            Service::from_json(json!({"spec": {"ports": [{"port": 80, "targetPort": "8080"}]}}))
                .unwrap();
        assert_eq!(ok.spec.unwrap().ports[0].target_port, 8080);
    }
}
