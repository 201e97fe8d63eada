//! Pod: conversion, Table columns (kubectl's: NAME READY STATUS RESTARTS AGE, wide: IP
//! NODE NOMINATED NODE READINESS GATES), field selectors.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_lite_core::consts::{container_state, phase};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    Container, ContainerPort, ContainerStateTerminated, ContainerStatus, EnvVar, EnvVarSource,
    ExecAction, HttpGetAction, HttpHeader, Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod,
    PodCondition, PodDnsConfig, PodDnsOption, PodSpec, PodStatus, Probe, ResourceFieldSelector,
    ResourceRequirements, TcpSocketAction,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

use crate::meta::{self, millis, time};
use crate::pod_sources;
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind};

impl K8sKind for Pod {
    type K8s = corev1::Pod;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "log", "binding", "exec"];
    const MERGE_KEYS: &'static [(&'static str, &'static str)] = &[
        ("spec.containers", "name"),
        ("spec.containers.env", "name"),
        ("spec.containers.ports", "containerPort"),
        ("spec.initContainers", "name"),
        ("spec.initContainers.env", "name"),
        ("spec.initContainers.ports", "containerPort"),
        ("status.conditions", "type"),
    ];
    const SELECTABLE_FIELDS: &'static [&'static str] = &[
        "spec.nodeName",
        "spec.restartPolicy",
        "status.phase",
        "status.podIP",
    ];

    fn schema_sample() -> Pod {
        Pod {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                resource_version: 7,
                creation_timestamp: 1_700_000_000_000,
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: "n1".into(),
                containers: vec![Container {
                    name: "c".into(),
                    image: "whoami".into(),
                    args: vec!["-x".into()],
                    command: vec!["/bin/web".into()],
                    env: vec![
                        EnvVar {
                            name: "A".into(),
                            value: "b".into(),
                            ..Default::default()
                        },
                        EnvVar {
                            name: "POD_IP".into(),
                            value_from: Some(EnvVarSource {
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "status.podIP".into(),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        EnvVar {
                            name: "MEM".into(),
                            value_from: Some(EnvVarSource {
                                resource_field_ref: Some(ResourceFieldSelector {
                                    container_name: "c".into(),
                                    resource: "limits.memory".into(),
                                    divisor: "1Mi".into(),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ],
                    ports: vec![ContainerPort {
                        name: "http".into(),
                        container_port: 8080,
                        protocol: "TCP".into(),
                    }],
                    readiness_probe: Some(Probe {
                        http_get: Some(HttpGetAction {
                            path: "/".into(),
                            port_name: "http".into(),
                            http_headers: vec![HttpHeader {
                                name: "X".into(),
                                value: "1".into(),
                            }],
                            ..Default::default()
                        }),
                        period_seconds: 10,
                        ..Default::default()
                    }),
                    liveness_probe: Some(Probe {
                        exec: Some(ExecAction {
                            command: vec!["true".into()],
                        }),
                        ..Default::default()
                    }),
                    startup_probe: Some(Probe {
                        tcp_socket: Some(TcpSocketAction {
                            port: 8080,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    resources: Some(ResourceRequirements {
                        requests: [("cpu".to_string(), "100m".to_string())].into(),
                        limits: [("memory".to_string(), "64Mi".to_string())].into(),
                        ..Default::default()
                    }),
                    termination_message_path: "/dev/termination-log".into(),
                    termination_message_policy: "FallbackToLogsOnError".into(),
                    ..Default::default()
                }],
                init_containers: vec![Container {
                    name: "setup".into(),
                    image: "busybox".into(),
                    args: vec!["true".into()],
                    ..Default::default()
                }],
                node_selector: [("disk".to_string(), "ssd".to_string())].into(),
                dns_policy: "None".into(),
                dns_config: Some(Box::new(PodDnsConfig {
                    nameservers: vec!["10.96.0.10".into()],
                    searches: vec!["svc.cluster.local".into()],
                    options: vec![PodDnsOption {
                        name: "ndots".into(),
                        value: "5".into(),
                    }],
                })),
                hostname: "web".into(),
                subdomain: "sub".into(),
                restart_policy: "Always".into(),
                termination_grace_period_seconds: 30,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                pod_ip: "10.0.1.2".into(),
                host_ip: "192.168.1.1".into(),
                start_time: 1_700_000_001_000,
                container_statuses: vec![ContainerStatus {
                    name: "c".into(),
                    state: "Running".into(),
                    ready: true,
                    restart_count: 2,
                    started: true,
                    started_at: 1_700_000_002_000,
                    pid: 4242,
                    last_state: Some(ContainerStateTerminated {
                        exit_code: 1,
                        reason: "Error".into(),
                        finished_at: 1_700_000_001_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                qos_class: "Burstable".into(),
                init_container_statuses: vec![ContainerStatus {
                    name: "setup".into(),
                    state: "Terminated".into(),
                    reason: "Completed".into(),
                    started_at: 1_700_000_000_000,
                    finished_at: 1_700_000_001_000,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn to_k8s(&self) -> corev1::Pod {
        corev1::Pod {
            metadata: meta::to_k8s(self.meta(), true),
            spec: Some(spec_to_k8s(&self.spec.clone().unwrap_or_default())),
            status: self.status.as_ref().map(status_to_k8s),
        }
    }

    fn from_k8s(k: corev1::Pod) -> Result<Pod, Vec<FieldError>> {
        Ok(Pod {
            metadata: Some(meta::from_k8s(k.metadata)?),
            spec: Some(spec_from_k8s(k.spec.unwrap_or_default())),
            status: k.status.map(status_from_k8s),
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Ready", "string", 0),
            Column::new("Status", "string", 0),
            Column::new("Restarts", "string", 0),
            Column::age(),
            Column::new("IP", "string", 1),
            Column::new("Node", "string", 1),
            Column::new("Nominated Node", "string", 1),
            Column::new("Readiness Gates", "string", 1),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let ready = status.container_statuses.iter().filter(|c| c.ready).count();
        let restarts: i64 = status
            .container_statuses
            .iter()
            .map(|c| i64::from(c.restart_count))
            .sum();
        vec![
            json!(self.name()),
            json!(format!("{ready}/{}", spec.containers.len())),
            json!(status_text(self)),
            json!(restarts.to_string()),
            json!(age(self.meta().creation_timestamp, now_ms)),
            json!(none_if_empty(&status.pod_ip)),
            json!(none_if_empty(&spec.node_name)),
            json!("<none>"),
            json!("<none>"),
        ]
    }

    fn selectable_field(&self, field: &str) -> Option<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        Some(match field {
            "spec.nodeName" => spec.node_name,
            "spec.restartPolicy" => spec.restart_policy,
            "status.phase" => status.phase,
            "status.podIP" => status.pod_ip,
            _ => return None,
        })
    }
}

/// The schema sample's pod spec (also the pod template of the workloads' samples).
pub(crate) fn sample_spec() -> Option<PodSpec> {
    Pod::schema_sample().spec
}

pub(crate) fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// kubectl's STATUS column for a pod: Terminating while a graceful delete runs, else a
/// container's waiting/terminated reason, else the pod's reason, else the phase.
pub fn status_text(pod: &Pod) -> String {
    if pod.meta().deletion_timestamp != 0 {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    let mut text = if status.phase.is_empty() {
        phase::PENDING.to_string()
    } else {
        status.phase.clone()
    };
    if !status.reason.is_empty() {
        text = status.reason.clone();
    }
    for cs in &status.container_statuses {
        match cs.state.as_str() {
            container_state::WAITING | container_state::TERMINATED if !cs.reason.is_empty() => {
                text = cs.reason.clone()
            }
            container_state::TERMINATED if cs.exit_code != 0 => {
                text = format!("ExitCode:{}", cs.exit_code)
            }
            _ => {}
        }
    }
    text
}

pub(crate) fn spec_to_k8s(s: &PodSpec) -> corev1::PodSpec {
    corev1::PodSpec {
        node_name: opt(&s.node_name),
        containers: s.containers.iter().map(container_to_k8s).collect(),
        init_containers: opt_vec(s.init_containers.iter().map(container_to_k8s).collect()),
        restart_policy: opt(&s.restart_policy),
        node_selector: meta::map(&s.node_selector),
        termination_grace_period_seconds: Some(s.termination_grace_period_seconds),
        dns_policy: opt(&s.dns_policy),
        dns_config: s.dns_config.as_ref().map(|d| corev1::PodDNSConfig {
            nameservers: opt_vec(d.nameservers.clone()),
            searches: opt_vec(d.searches.clone()),
            options: opt_vec(
                d.options
                    .iter()
                    .map(|o| corev1::PodDNSConfigOption {
                        name: opt(&o.name),
                        value: opt(&o.value),
                    })
                    .collect(),
            ),
        }),
        hostname: opt(&s.hostname),
        subdomain: opt(&s.subdomain),
        volumes: pod_sources::volumes_to_k8s(&s.volumes),
        security_context: s.security_context.as_ref().map(crate::security::pod_to_k8s),
        ..Default::default()
    }
}

pub(crate) fn spec_from_k8s(s: corev1::PodSpec) -> PodSpec {
    PodSpec {
        node_name: s.node_name.unwrap_or_default(),
        containers: s.containers.into_iter().map(container_from_k8s).collect(),
        init_containers: s
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(container_from_k8s)
            .collect(),
        restart_policy: s.restart_policy.unwrap_or_default(),
        node_selector: meta::unmap(s.node_selector),
        termination_grace_period_seconds: s.termination_grace_period_seconds.unwrap_or(0),
        dns_policy: s.dns_policy.unwrap_or_default(),
        dns_config: s.dns_config.map(|d| {
            Box::new(PodDnsConfig {
                nameservers: d.nameservers.unwrap_or_default(),
                searches: d.searches.unwrap_or_default(),
                options: d
                    .options
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| PodDnsOption {
                        name: o.name.unwrap_or_default(),
                        value: o.value.unwrap_or_default(),
                    })
                    .collect(),
            })
        }),
        hostname: s.hostname.unwrap_or_default(),
        subdomain: s.subdomain.unwrap_or_default(),
        volumes: pod_sources::volumes_from_k8s(s.volumes),
        security_context: s.security_context.map(crate::security::pod_from_k8s),
        ..Default::default()
    }
}

fn container_to_k8s(c: &Container) -> corev1::Container {
    corev1::Container {
        name: c.name.clone(),
        image: opt(&c.image),
        image_pull_policy: opt(&c.image_pull_policy),
        command: opt_vec(c.command.clone()),
        args: opt_vec(c.args.clone()),
        env: pod_sources::env_to_k8s(&c.env),
        env_from: pod_sources::env_from_to_k8s(&c.env_from),
        volume_mounts: pod_sources::mounts_to_k8s(&c.volume_mounts),
        ports: opt_vec(
            c.ports
                .iter()
                .map(|p| corev1::ContainerPort {
                    name: opt(&p.name),
                    container_port: p.container_port,
                    protocol: opt(&p.protocol),
                    ..Default::default()
                })
                .collect(),
        ),
        liveness_probe: c.liveness_probe.as_ref().map(probe_to_k8s),
        readiness_probe: c.readiness_probe.as_ref().map(probe_to_k8s),
        startup_probe: c.startup_probe.as_ref().map(probe_to_k8s),
        resources: c.resources.as_ref().map(|r| corev1::ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..Default::default()
        }),
        security_context: c.security_context.as_ref().map(crate::security::to_k8s),
        lifecycle: c.lifecycle.as_ref().map(lifecycle_to_k8s),
        termination_message_path: opt(&c.termination_message_path),
        termination_message_policy: opt(&c.termination_message_policy),
        ..Default::default()
    }
}

fn quantities(m: &HashMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn unquantities(m: Option<BTreeMap<String, Quantity>>) -> HashMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn port_to_k8s(port: i32, name: &str) -> IntOrString {
    if name.is_empty() {
        IntOrString::Int(port)
    } else {
        IntOrString::String(name.to_string())
    }
}

fn port_from_k8s(p: IntOrString) -> (i32, String) {
    match p {
        IntOrString::Int(n) => (n, String::new()),
        IntOrString::String(s) => match s.parse() {
            Ok(n) => (n, String::new()),
            Err(_) => (0, s),
        },
    }
}

fn probe_to_k8s(p: &Probe) -> corev1::Probe {
    let nz = |v: i32| (v != 0).then_some(v);
    corev1::Probe {
        exec: p.exec.as_ref().map(|e| corev1::ExecAction {
            command: opt_vec(e.command.clone()),
        }),
        http_get: p.http_get.as_ref().map(|h| corev1::HTTPGetAction {
            path: opt(&h.path),
            port: port_to_k8s(h.port, &h.port_name),
            host: opt(&h.host),
            scheme: opt(&h.scheme),
            protocol: None,
            http_headers: opt_vec(
                h.http_headers
                    .iter()
                    .map(|x| corev1::HTTPHeader {
                        name: x.name.clone(),
                        value: x.value.clone(),
                    })
                    .collect(),
            ),
        }),
        tcp_socket: p.tcp_socket.as_ref().map(|t| corev1::TCPSocketAction {
            port: port_to_k8s(t.port, &t.port_name),
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

fn probe_from_k8s(p: corev1::Probe) -> Probe {
    Probe {
        exec: p.exec.map(|e| ExecAction {
            command: e.command.unwrap_or_default(),
        }),
        http_get: p.http_get.map(|h| {
            let (port, port_name) = port_from_k8s(h.port);
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
            let (port, port_name) = port_from_k8s(t.port);
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
        ..Default::default()
    }
}

fn handler_to_k8s(h: &LifecycleHandler) -> corev1::LifecycleHandler {
    let p = probe_to_k8s(&Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        ..Default::default()
    });
    corev1::LifecycleHandler {
        exec: p.exec,
        http_get: p.http_get,
        ..Default::default()
    }
}

/// Handlers kube-lite lacks (sleep, tcpSocket) are named in `unsupported` (refused by
/// validation).
fn handler_from_k8s(h: corev1::LifecycleHandler) -> LifecycleHandler {
    let mut unsupported = Vec::new();
    if h.sleep.is_some() {
        unsupported.push("sleep".to_string());
    }
    if h.tcp_socket.is_some() {
        unsupported.push("tcpSocket".to_string());
    }
    let p = probe_from_k8s(corev1::Probe {
        exec: h.exec,
        http_get: h.http_get,
        ..Default::default()
    });
    LifecycleHandler {
        exec: p.exec,
        http_get: p.http_get,
        unsupported,
    }
}

fn lifecycle_to_k8s(l: &Lifecycle) -> corev1::Lifecycle {
    corev1::Lifecycle {
        post_start: l.post_start.as_ref().map(handler_to_k8s),
        pre_stop: l.pre_stop.as_ref().map(handler_to_k8s),
        ..Default::default()
    }
}

fn lifecycle_from_k8s(l: corev1::Lifecycle) -> Lifecycle {
    Lifecycle {
        post_start: l.post_start.map(handler_from_k8s),
        pre_stop: l.pre_stop.map(handler_from_k8s),
    }
}

fn container_from_k8s(c: corev1::Container) -> Container {
    Container {
        name: c.name,
        image: c.image.unwrap_or_default(),
        image_pull_policy: c.image_pull_policy.unwrap_or_default(),
        command: c.command.unwrap_or_default(),
        args: c.args.unwrap_or_default(),
        env: pod_sources::env_from_k8s(c.env),
        env_from: pod_sources::env_from_from_k8s(c.env_from),
        volume_mounts: pod_sources::mounts_from_k8s(c.volume_mounts),
        ports: c
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| ContainerPort {
                name: p.name.unwrap_or_default(),
                container_port: p.container_port,
                protocol: p.protocol.unwrap_or_default(),
            })
            .collect(),
        liveness_probe: c.liveness_probe.map(probe_from_k8s),
        readiness_probe: c.readiness_probe.map(probe_from_k8s),
        startup_probe: c.startup_probe.map(probe_from_k8s),
        resources: c.resources.map(|r| ResourceRequirements {
            requests: unquantities(r.requests),
            limits: unquantities(r.limits),
            ..Default::default()
        }),
        security_context: c.security_context.map(crate::security::from_k8s),
        lifecycle: c.lifecycle.map(lifecycle_from_k8s),
        termination_message_path: c.termination_message_path.unwrap_or_default(),
        termination_message_policy: c.termination_message_policy.unwrap_or_default(),
        ..Default::default()
    }
}

fn status_to_k8s(s: &PodStatus) -> corev1::PodStatus {
    corev1::PodStatus {
        phase: opt(&s.phase),
        pod_ip: opt(&s.pod_ip),
        pod_ips: opt(&s.pod_ip).map(|ip| vec![corev1::PodIP { ip }]),
        host_ip: opt(&s.host_ip),
        host_ips: opt(&s.host_ip).map(|ip| vec![corev1::HostIP { ip }]),
        start_time: time(s.start_time),
        reason: opt(&s.reason),
        message: opt(&s.message),
        conditions: opt_vec(
            s.conditions
                .iter()
                .map(|c| corev1::PodCondition {
                    type_: c.r#type.clone(),
                    status: c.status.clone(),
                    reason: opt(&c.reason),
                    message: opt(&c.message),
                    ..Default::default()
                })
                .collect(),
        ),
        container_statuses: opt_vec(
            s.container_statuses
                .iter()
                .map(container_status_to_k8s)
                .collect(),
        ),
        qos_class: opt(&s.qos_class),
        init_container_statuses: opt_vec(
            s.init_container_statuses
                .iter()
                .map(container_status_to_k8s)
                .collect(),
        ),
        ..Default::default()
    }
}

fn status_from_k8s(s: corev1::PodStatus) -> PodStatus {
    PodStatus {
        phase: s.phase.unwrap_or_default(),
        pod_ip: s.pod_ip.unwrap_or_default(),
        host_ip: s.host_ip.unwrap_or_default(),
        start_time: millis(&s.start_time),
        reason: s.reason.unwrap_or_default(),
        message: s.message.unwrap_or_default(),
        conditions: s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| PodCondition {
                r#type: c.type_,
                status: c.status,
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
            })
            .collect(),
        container_statuses: s
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(container_status_from_k8s)
            .collect(),
        qos_class: s.qos_class.unwrap_or_default(),
        init_container_statuses: s
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(container_status_from_k8s)
            .collect(),
        ..Default::default()
    }
}

/// `containerID` of a running container: `process://<pid>`.
const PID_SCHEME: &str = "process://";

/// Kubernetes' shape: `state: {running|waiting|terminated: {...}}`.
fn container_status_to_k8s(c: &ContainerStatus) -> corev1::ContainerStatus {
    let state = match c.state.as_str() {
        container_state::RUNNING => corev1::ContainerState {
            running: Some(corev1::ContainerStateRunning {
                started_at: time(c.started_at),
            }),
            ..Default::default()
        },
        container_state::TERMINATED => corev1::ContainerState {
            terminated: Some(corev1::ContainerStateTerminated {
                exit_code: c.exit_code,
                reason: opt(&c.reason),
                message: opt(&c.message),
                started_at: time(c.started_at),
                finished_at: time(c.finished_at),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => corev1::ContainerState {
            waiting: Some(corev1::ContainerStateWaiting {
                reason: opt(&c.reason),
                message: opt(&c.message),
            }),
            ..Default::default()
        },
    };
    corev1::ContainerStatus {
        name: c.name.clone(),
        // The container's process (kube-lite runs processes, not images).
        container_id: (c.pid != 0).then(|| format!("{PID_SCHEME}{}", c.pid)),
        ready: c.ready,
        restart_count: c.restart_count,
        started: Some(c.started),
        state: Some(state),
        last_state: c.last_state.as_ref().map(|t| corev1::ContainerState {
            terminated: Some(corev1::ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: opt(&t.reason),
                message: opt(&t.message),
                started_at: time(t.started_at),
                finished_at: time(t.finished_at),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_status_from_k8s(c: corev1::ContainerStatus) -> ContainerStatus {
    let mut out = ContainerStatus {
        name: c.name,
        pid: c
            .container_id
            .as_deref()
            .and_then(|id| id.strip_prefix(PID_SCHEME))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        ready: c.ready,
        restart_count: c.restart_count,
        state: container_state::WAITING.into(),
        started: c.started.unwrap_or(false),
        last_state: c
            .last_state
            .and_then(|l| l.terminated)
            .map(|t| ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: t.reason.unwrap_or_default(),
                message: t.message.unwrap_or_default(),
                started_at: millis(&t.started_at),
                finished_at: millis(&t.finished_at),
                ..Default::default()
            }),
        ..Default::default()
    };
    let st = c.state.unwrap_or_default();
    if let Some(r) = st.running {
        out.state = container_state::RUNNING.into();
        out.started_at = millis(&r.started_at);
    } else if let Some(t) = st.terminated {
        out.state = container_state::TERMINATED.into();
        out.exit_code = t.exit_code;
        out.reason = t.reason.unwrap_or_default();
        out.message = t.message.unwrap_or_default();
        out.started_at = millis(&t.started_at);
        out.finished_at = millis(&t.finished_at);
    } else if let Some(w) = st.waiting {
        out.reason = w.reason.unwrap_or_default();
        out.message = w.message.unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn kubernetes_spelling_and_round_trip() {
        let p = Pod::schema_sample();
        let v = p.to_json();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["status"]["podIP"], "10.0.1.2");
        assert_eq!(v["status"]["hostIP"], "192.168.1.1");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(
            v["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
        assert_eq!(
            v["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2023-11-14T22:13:22Z"
        );
        let back = Pod::from_json(v).unwrap();
        assert_eq!(back, p);
    }

    /// Every field the proto pod has (issue 13's env sources, init containers, their
    /// statuses, the process id) survives proto -> Kubernetes JSON -> proto, so a REST
    /// update of such a pod writes back what it read.
    #[test]
    fn a_fully_populated_pod_round_trips() {
        let p = Pod::schema_sample();
        let spec = p.spec.as_ref().unwrap();
        assert!(!spec.init_containers.is_empty() && spec.dns_config.is_some());
        let v = p.to_json();
        let env = &v["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], "b");
        assert_eq!(env[1]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
        assert!(env[1].get("value").is_none(), "{env}");
        assert_eq!(env[2]["valueFrom"]["resourceFieldRef"]["divisor"], "1Mi");
        assert_eq!(v["spec"]["initContainers"][0]["name"], "setup");
        assert_eq!(
            v["status"]["containerStatuses"][0]["containerID"],
            "process://4242"
        );
        assert_eq!(
            v["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(v["status"]["qosClass"], "Burstable");
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
        // Through text, as a client sends it back.
        let text = serde_json::to_string(&v).unwrap();
        let back = Pod::from_json(serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, p);
        // An env var with an empty value and no source keeps its (empty) value.
        let mut q = p.clone();
        q.spec.as_mut().unwrap().containers[0].env[0].value.clear();
        let v = q.to_json();
        assert_eq!(v["spec"]["containers"][0]["env"][0]["value"], "");
        assert_eq!(Pod::from_json(v).unwrap(), q);
    }

    #[test]
    fn lifecycle_hooks_round_trip_and_name_missing_handlers() {
        let l = Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                }),
                ..Default::default()
            }),
            pre_stop: Some(LifecycleHandler {
                http_get: Some(HttpGetAction {
                    path: "/quit".into(),
                    port: 8080,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let k = lifecycle_to_k8s(&l);
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["preStop"]["httpGet"]["port"], 8080);
        assert_eq!(lifecycle_from_k8s(k), l);
        let k: corev1::Lifecycle =
            serde_json::from_value(json!({"preStop": {"sleep": {"seconds": 5}}})).unwrap();
        assert_eq!(
            lifecycle_from_k8s(k).pre_stop.unwrap().unsupported,
            vec!["sleep"]
        );
    }

    #[test]
    fn table_cells() {
        let p = Pod::schema_sample();
        let c = p.cells(1_700_000_010_000);
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("1/1"),
                json!("Running"),
                json!("2"),
                json!("10s"),
                json!("10.0.1.2"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(Pod::columns().len(), c.len());
        assert_eq!(
            p.selectable_field("status.phase").as_deref(),
            Some("Running")
        );
        assert_eq!(p.selectable_field("spec.bogus"), None);
    }

    #[test]
    fn bad_json_is_a_field_error() {
        let e = Pod::from_json(json!({"spec": {"containers": "x"}})).unwrap_err();
        assert_eq!(e[0].field, "body");
    }
}
