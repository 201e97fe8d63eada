//! Pod: conversion, Table columns (kubectl's: NAME READY STATUS RESTARTS AGE, wide: IP
//! NODE NOMINATED NODE READINESS GATES), field selectors.

use k8s_openapi::api::core::v1 as corev1;
use kube_lite_core::consts::{container_state, phase};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    Container, ContainerPort, ContainerStatus, EnvVar, Pod, PodCondition, PodSpec, PodStatus,
};
use serde_json::{json, Value};

use crate::meta::{self, millis, time};
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind};

impl K8sKind for Pod {
    type K8s = corev1::Pod;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "log", "binding"];
    const SELECTABLE_FIELDS: &'static [&'static str] = &[
        "spec.nodeName",
        "spec.restartPolicy",
        "status.phase",
        "status.podIP",
    ];

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
            .chain(status.init_container_statuses.iter())
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
    let n_init = pod.spec.as_ref().map_or(0, |s| s.init_containers.len());
    if let Some(t) = kube_lite_core::consts::init_status_text(
        status
            .init_container_statuses
            .iter()
            .map(|c| (c.state.as_str(), c.reason.as_str(), c.exit_code)),
        n_init,
    ) {
        return t;
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

fn spec_to_k8s(s: &PodSpec) -> corev1::PodSpec {
    corev1::PodSpec {
        node_name: opt(&s.node_name),
        containers: s.containers.iter().map(container_to_k8s).collect(),
        init_containers: (!s.init_containers.is_empty())
            .then(|| s.init_containers.iter().map(container_to_k8s).collect()),
        restart_policy: opt(&s.restart_policy),
        node_selector: meta::map(&s.node_selector),
        termination_grace_period_seconds: Some(s.termination_grace_period_seconds),
        ..Default::default()
    }
}

fn spec_from_k8s(s: corev1::PodSpec) -> PodSpec {
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
        ..Default::default()
    }
}

fn container_to_k8s(c: &Container) -> corev1::Container {
    let mut k = corev1::Container {
        name: c.name.clone(),
        image: opt(&c.image),
        command: opt_vec(c.command.clone()),
        args: opt_vec(c.args.clone()),
        env: opt_vec(
            c.env
                .iter()
                .map(|e| corev1::EnvVar {
                    name: e.name.clone(),
                    value: e.value_from.is_none().then(|| e.value.clone()),
                    value_from: e
                        .value_from
                        .as_ref()
                        .map(crate::pod_extras::env_source_to_k8s),
                })
                .collect(),
        ),
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
        ..Default::default()
    };
    crate::pod_extras::container_to_k8s(c, &mut k);
    k
}

fn container_from_k8s(mut c: corev1::Container) -> Container {
    let mut out = Container::default();
    crate::pod_extras::container_from_k8s(&mut c, &mut out);
    Container {
        name: c.name,
        image: c.image.unwrap_or_default(),
        command: c.command.unwrap_or_default(),
        args: c.args.unwrap_or_default(),
        env: c
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| EnvVar {
                name: e.name,
                value: e.value.unwrap_or_default(),
                value_from: e.value_from.map(crate::pod_extras::env_source_from_k8s),
            })
            .collect(),
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
        ..out
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
    let mut k = corev1::ContainerStatus {
        name: c.name.clone(),
        ready: c.ready,
        restart_count: c.restart_count,
        // Set by the agent (startup probe passed, or none, and running).
        started: Some(c.started),
        state: Some(state),
        ..Default::default()
    };
    crate::pod_extras::container_status_to_k8s(c, &mut k);
    k
}

fn container_status_from_k8s(c: corev1::ContainerStatus) -> ContainerStatus {
    let mut extras = ContainerStatus::default();
    crate::pod_extras::container_status_from_k8s(&c, &mut extras);
    let mut out = ContainerStatus {
        started: extras.started,
        last_state: extras.last_state,
        name: c.name,
        ready: c.ready,
        restart_count: c.restart_count,
        state: container_state::WAITING.into(),
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
    use kube_lite_proto::v1::ObjectMeta;

    pub(crate) fn sample() -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
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
                    env: vec![EnvVar {
                        name: "A".into(),
                        value: "b".into(),
                        value_from: None,
                    }],
                    ports: vec![ContainerPort {
                        name: "http".into(),
                        container_port: 8080,
                        protocol: "TCP".into(),
                    }],
                    ..Default::default()
                }],
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
                    started_at: 1_700_000_002_000,
                    ..Default::default()
                }],
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn kubernetes_spelling_and_round_trip() {
        let p = sample();
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

    #[test]
    fn table_cells() {
        let p = sample();
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
