//! Conversion of issue 13's pod fields: container probes and resources, qosClass,
//! container `started` and `lastState`.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_lite_proto::v1::{
    Container, ContainerStateTerminated, ContainerStatus, ExecAction, HttpGetAction, HttpHeader,
    Probe, ResourceRequirements, TcpSocketAction,
};
use std::collections::{BTreeMap, HashMap};

use crate::meta::{millis, time};
use crate::opt;

fn port_to(n: i32, name: &str) -> IntOrString {
    if name.is_empty() {
        IntOrString::Int(n)
    } else {
        IntOrString::String(name.to_string())
    }
}

fn port_from(p: IntOrString) -> (i32, String) {
    match p {
        IntOrString::Int(n) => (n, String::new()),
        IntOrString::String(s) => match s.parse() {
            Ok(n) => (n, String::new()),
            Err(_) => (0, s),
        },
    }
}

fn nz(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

pub fn probe_to_k8s(p: &Probe) -> corev1::Probe {
    corev1::Probe {
        exec: p.exec.as_ref().map(|e| corev1::ExecAction {
            command: Some(e.command.clone()),
        }),
        http_get: p.http_get.as_ref().map(|h| corev1::HTTPGetAction {
            path: opt(&h.path),
            port: port_to(h.port, &h.port_name),
            host: opt(&h.host),
            scheme: opt(&h.scheme),
            http_headers: (!h.http_headers.is_empty()).then(|| {
                h.http_headers
                    .iter()
                    .map(|x| corev1::HTTPHeader {
                        name: x.name.clone(),
                        value: x.value.clone(),
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        tcp_socket: p.tcp_socket.as_ref().map(|t| corev1::TCPSocketAction {
            port: port_to(t.port, &t.port_name),
            host: opt(&t.host),
        }),
        initial_delay_seconds: nz(p.initial_delay_seconds),
        timeout_seconds: nz(p.timeout_seconds),
        period_seconds: nz(p.period_seconds),
        success_threshold: nz(p.success_threshold),
        failure_threshold: nz(p.failure_threshold),
        ..Default::default()
    }
}

pub fn probe_from_k8s(p: corev1::Probe) -> Probe {
    Probe {
        exec: p.exec.map(|e| ExecAction {
            command: e.command.unwrap_or_default(),
        }),
        http_get: p.http_get.map(|h| {
            let (port, port_name) = port_from(h.port);
            HttpGetAction {
                path: h.path.unwrap_or_default(),
                port,
                port_name,
                host: h.host.unwrap_or_default(),
                scheme: h.scheme.unwrap_or_default(),
                http_headers: h
                    .http_headers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|x| HttpHeader {
                        name: x.name,
                        value: x.value,
                    })
                    .collect(),
            }
        }),
        tcp_socket: p.tcp_socket.map(|t| {
            let (port, port_name) = port_from(t.port);
            TcpSocketAction {
                port,
                port_name,
                host: t.host.unwrap_or_default(),
            }
        }),
        initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0),
        timeout_seconds: p.timeout_seconds.unwrap_or(0),
        period_seconds: p.period_seconds.unwrap_or(0),
        success_threshold: p.success_threshold.unwrap_or(0),
        failure_threshold: p.failure_threshold.unwrap_or(0),
    }
}

pub fn env_source_to_k8s(s: &kube_lite_proto::v1::EnvVarSource) -> corev1::EnvVarSource {
    corev1::EnvVarSource {
        field_ref: s.field_ref.as_ref().map(|f| corev1::ObjectFieldSelector {
            field_path: f.field_path.clone(),
            api_version: None,
        }),
        resource_field_ref: s
            .resource_field_ref
            .as_ref()
            .map(|r| corev1::ResourceFieldSelector {
                container_name: opt(&r.container_name),
                resource: r.resource.clone(),
                divisor: opt(&r.divisor).map(Quantity),
            }),
        ..Default::default()
    }
}

pub fn env_source_from_k8s(s: corev1::EnvVarSource) -> kube_lite_proto::v1::EnvVarSource {
    kube_lite_proto::v1::EnvVarSource {
        field_ref: s
            .field_ref
            .map(|f| kube_lite_proto::v1::ObjectFieldSelector {
                field_path: f.field_path,
            }),
        resource_field_ref: s.resource_field_ref.map(|r| {
            kube_lite_proto::v1::ResourceFieldSelector {
                container_name: r.container_name.unwrap_or_default(),
                resource: r.resource,
                divisor: r.divisor.map(|d| d.0).unwrap_or_default(),
            }
        }),
    }
}

fn q_to(m: &HashMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn q_from(m: Option<BTreeMap<String, Quantity>>) -> HashMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Probes and resources of `c` into `k`.
pub fn container_to_k8s(c: &Container, k: &mut corev1::Container) {
    k.liveness_probe = c.liveness_probe.as_ref().map(probe_to_k8s);
    k.readiness_probe = c.readiness_probe.as_ref().map(probe_to_k8s);
    k.startup_probe = c.startup_probe.as_ref().map(probe_to_k8s);
    k.resources = c.resources.as_ref().map(|r| corev1::ResourceRequirements {
        limits: q_to(&r.limits),
        requests: q_to(&r.requests),
        ..Default::default()
    });
}

/// Probes and resources of `k` into `c`.
pub fn container_from_k8s(k: &mut corev1::Container, c: &mut Container) {
    c.liveness_probe = k.liveness_probe.take().map(probe_from_k8s);
    c.readiness_probe = k.readiness_probe.take().map(probe_from_k8s);
    c.startup_probe = k.startup_probe.take().map(probe_from_k8s);
    c.resources = k.resources.take().map(|r| ResourceRequirements {
        requests: q_from(r.requests),
        limits: q_from(r.limits),
    });
}

/// `lastState` of a container status (`started` is set by the caller).
pub fn container_status_to_k8s(c: &ContainerStatus, k: &mut corev1::ContainerStatus) {
    k.last_state = c.last_state.as_ref().map(|l| corev1::ContainerState {
        terminated: Some(corev1::ContainerStateTerminated {
            exit_code: l.exit_code,
            reason: opt(&l.reason),
            message: opt(&l.message),
            started_at: time(l.started_at),
            finished_at: time(l.finished_at),
            ..Default::default()
        }),
        ..Default::default()
    });
}

pub fn container_status_from_k8s(k: &corev1::ContainerStatus, c: &mut ContainerStatus) {
    c.started = k.started.unwrap_or(false);
    c.last_state = k
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| ContainerStateTerminated {
            exit_code: t.exit_code,
            reason: t.reason.clone().unwrap_or_default(),
            message: t.message.clone().unwrap_or_default(),
            started_at: millis(&t.started_at),
            finished_at: millis(&t.finished_at),
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_resources_round_trip() {
        let c = Container {
            name: "c".into(),
            readiness_probe: Some(Probe {
                http_get: Some(HttpGetAction {
                    path: "/healthz".into(),
                    port_name: "http".into(),
                    scheme: "HTTP".into(),
                    ..Default::default()
                }),
                period_seconds: 2,
                timeout_seconds: 1,
                success_threshold: 1,
                failure_threshold: 3,
                ..Default::default()
            }),
            liveness_probe: Some(Probe {
                tcp_socket: Some(TcpSocketAction {
                    port: 8080,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resources: Some(ResourceRequirements {
                limits: [("memory".to_string(), "128Mi".to_string())].into(),
                requests: [("cpu".to_string(), "100m".to_string())].into(),
            }),
            ..Default::default()
        };
        let mut k = corev1::Container::default();
        container_to_k8s(&c, &mut k);
        let j = serde_json::to_value(&k).unwrap();
        assert_eq!(j["readinessProbe"]["httpGet"]["port"], "http");
        assert_eq!(j["livenessProbe"]["tcpSocket"]["port"], 8080);
        assert_eq!(j["resources"]["limits"]["memory"], "128Mi");
        let mut back = Container {
            name: "c".into(),
            ..Default::default()
        };
        container_from_k8s(&mut k, &mut back);
        assert_eq!(back, c);
    }
}
