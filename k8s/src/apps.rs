//! ReplicaSet and Deployment (apps/v1, issue 11): conversion, kubectl's columns
//! (replicasets: NAME DESIRED CURRENT READY AGE; deployments: NAME READY UP-TO-DATE
//! AVAILABLE AGE; wide: CONTAINERS IMAGES SELECTOR), the `/scale` subresource's view
//! and strategic-merge keys of the pod template.

use k8s_openapi::api::apps::v1 as appsv1;
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    LabelSelector, LabelSelectorRequirement, ObjectMeta, PodSpec, PodTemplateSpec, ReplicaSet,
    ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use serde_json::{json, Value};

use crate::meta::{self, millis, time};
use crate::pod::{spec_from_k8s, spec_to_k8s};
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind, Scale};

/// The pod template's merge keys, under `spec.template.spec`.
const TEMPLATE_MERGE_KEYS: &[(&str, &str)] = &[
    ("spec.template.spec.containers", "name"),
    ("spec.template.spec.containers.env", "name"),
    ("spec.template.spec.containers.ports", "containerPort"),
    ("spec.template.spec.initContainers", "name"),
    ("spec.template.spec.initContainers.env", "name"),
    ("spec.template.spec.initContainers.ports", "containerPort"),
    ("status.conditions", "type"),
];

pub fn selector_to_k8s(s: &LabelSelector) -> metav1::LabelSelector {
    metav1::LabelSelector {
        match_labels: meta::map(&s.match_labels),
        match_expressions: opt_vec(
            s.match_expressions
                .iter()
                .map(|r| metav1::LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: opt_vec(r.values.clone()),
                })
                .collect(),
        ),
    }
}

pub fn selector_from_k8s(s: metav1::LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: meta::unmap(s.match_labels),
        match_expressions: s
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .map(|r| LabelSelectorRequirement {
                key: r.key,
                operator: r.operator,
                values: r.values.unwrap_or_default(),
            })
            .collect(),
    }
}

/// A selector as a label-selector string (`app=web,tier in (a,b)`), as kubectl prints
/// it and as `Scale.status.selector` carries it.
pub fn selector_string(s: &LabelSelector) -> String {
    let mut labels: Vec<(&String, &String)> = s.match_labels.iter().collect();
    labels.sort();
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for r in &s.match_expressions {
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({})", r.key, r.values.join(",")),
            "NotIn" => format!("{} notin ({})", r.key, r.values.join(",")),
            "Exists" => r.key.clone(),
            _ => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

fn template_to_k8s(t: &PodTemplateSpec) -> corev1::PodTemplateSpec {
    corev1::PodTemplateSpec {
        metadata: t.metadata.as_ref().map(|m| meta::to_k8s(m, true)),
        spec: Some(spec_to_k8s(&t.spec.clone().unwrap_or_default())),
    }
}

fn template_from_k8s(t: corev1::PodTemplateSpec) -> Result<PodTemplateSpec, Vec<FieldError>> {
    Ok(PodTemplateSpec {
        metadata: t.metadata.map(meta::from_k8s).transpose()?,
        spec: Some(t.spec.map(spec_from_k8s).unwrap_or_default()),
    })
}

/// kubectl's wide columns of a workload: containers, images, selector.
fn wide_cells(t: &Option<PodTemplateSpec>, sel: &Option<LabelSelector>) -> [Value; 3] {
    let spec: PodSpec = t.clone().and_then(|t| t.spec).unwrap_or_default();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = spec.containers.iter().map(|c| c.image.as_str()).collect();
    [
        json!(names.join(",")),
        json!(images.join(",")),
        json!(selector_string(&sel.clone().unwrap_or_default())),
    ]
}

fn sample_template() -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: crate::pod::sample_spec(),
    }
}

fn sample_selector() -> LabelSelector {
    LabelSelector {
        match_labels: [("app".to_string(), "web".to_string())].into(),
        match_expressions: vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "In".into(),
            values: vec!["a".into(), "b".into()],
        }],
    }
}

fn sample_meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        uid: "u1".into(),
        resource_version: 7,
        generation: 2,
        creation_timestamp: 1_700_000_000_000,
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    })
}

impl K8sKind for ReplicaSet {
    type K8s = appsv1::ReplicaSet;
    const GROUP: &'static str = "apps";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "scale"];
    const MERGE_KEYS: &'static [(&'static str, &'static str)] = TEMPLATE_MERGE_KEYS;

    fn schema_sample() -> ReplicaSet {
        ReplicaSet {
            metadata: sample_meta("web-5d9c"),
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                selector: Some(sample_selector()),
                template: Some(sample_template()),
                min_ready_seconds: 5,
            }),
            status: Some(ReplicaSetStatus {
                replicas: 3,
                fully_labeled_replicas: 3,
                ready_replicas: 2,
                available_replicas: 2,
                observed_generation: 2,
                conditions: vec![ReplicaSetCondition {
                    r#type: "ReplicaFailure".into(),
                    status: "False".into(),
                    reason: "x".into(),
                    message: "y".into(),
                    last_transition_time: 1_700_000_001_000,
                }],
            }),
        }
    }

    fn to_k8s(&self) -> appsv1::ReplicaSet {
        let spec = self.spec.clone().unwrap_or_default();
        appsv1::ReplicaSet {
            metadata: meta::to_k8s(self.meta(), true),
            spec: appsv1::ReplicaSetSpec {
                replicas: spec.replicas,
                selector: selector_to_k8s(&spec.selector.unwrap_or_default()),
                template: spec.template.as_ref().map(template_to_k8s),
                min_ready_seconds: (spec.min_ready_seconds != 0).then_some(spec.min_ready_seconds),
            },
            status: self.status.as_ref().map(|s| appsv1::ReplicaSetStatus {
                replicas: s.replicas,
                fully_labeled_replicas: Some(s.fully_labeled_replicas),
                ready_replicas: Some(s.ready_replicas),
                available_replicas: Some(s.available_replicas),
                observed_generation: Some(s.observed_generation),
                conditions: opt_vec(
                    s.conditions
                        .iter()
                        .map(|c| appsv1::ReplicaSetCondition {
                            type_: opt(&c.r#type),
                            status: opt(&c.status),
                            reason: opt(&c.reason),
                            message: opt(&c.message),
                            last_transition_time: time(c.last_transition_time),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn from_k8s(k: appsv1::ReplicaSet) -> Result<ReplicaSet, Vec<FieldError>> {
        let spec = k.spec;
        Ok(ReplicaSet {
            metadata: Some(meta::from_k8s(k.metadata)?),
            spec: Some(ReplicaSetSpec {
                replicas: spec.replicas,
                selector: Some(selector_from_k8s(spec.selector)),
                template: spec.template.map(template_from_k8s).transpose()?,
                min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            }),
            status: k.status.map(|s| ReplicaSetStatus {
                replicas: s.replicas,
                fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
                ready_replicas: s.ready_replicas.unwrap_or(0),
                available_replicas: s.available_replicas.unwrap_or(0),
                observed_generation: s.observed_generation.unwrap_or(0),
                conditions: s
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| ReplicaSetCondition {
                        r#type: c.type_.unwrap_or_default(),
                        status: c.status.unwrap_or_default(),
                        reason: c.reason.unwrap_or_default(),
                        message: c.message.unwrap_or_default(),
                        last_transition_time: millis(&c.last_transition_time),
                    })
                    .collect(),
            }),
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Desired", "integer", 0),
            Column::new("Current", "integer", 0),
            Column::new("Ready", "integer", 0),
            Column::age(),
            Column::new("Containers", "string", 1),
            Column::new("Images", "string", 1),
            Column::new("Selector", "string", 1),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let [c, i, s] = wide_cells(&spec.template, &spec.selector);
        vec![
            json!(self.name()),
            json!(spec.replicas.unwrap_or(1)),
            json!(st.replicas),
            json!(st.ready_replicas),
            json!(age(self.meta().creation_timestamp, now_ms)),
            c,
            i,
            s,
        ]
    }

    fn scale(&self) -> Option<Scale> {
        let spec = self.spec.clone().unwrap_or_default();
        Some(Scale {
            spec_replicas: spec.replicas.unwrap_or(1),
            status_replicas: self.status.as_ref().map_or(0, |s| s.replicas),
            selector: selector_string(&spec.selector.unwrap_or_default()),
        })
    }
    fn set_replicas(&mut self, n: i32) {
        self.spec.get_or_insert_with(Default::default).replicas = Some(n);
    }
}

impl K8sKind for Deployment {
    type K8s = appsv1::Deployment;
    const GROUP: &'static str = "apps";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "scale"];
    const MERGE_KEYS: &'static [(&'static str, &'static str)] = TEMPLATE_MERGE_KEYS;

    fn schema_sample() -> Deployment {
        Deployment {
            metadata: sample_meta("web"),
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                selector: Some(sample_selector()),
                template: Some(sample_template()),
                strategy: Some(DeploymentStrategy {
                    r#type: "RollingUpdate".into(),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: "25%".into(),
                        max_unavailable: "1".into(),
                    }),
                }),
                min_ready_seconds: 5,
                revision_history_limit: Some(10),
                paused: true,
                progress_deadline_seconds: Some(600),
            }),
            status: Some(DeploymentStatus {
                observed_generation: 2,
                replicas: 3,
                updated_replicas: 3,
                ready_replicas: 2,
                available_replicas: 2,
                unavailable_replicas: 1,
                conditions: vec![DeploymentCondition {
                    r#type: "Available".into(),
                    status: "True".into(),
                    reason: "MinimumReplicasAvailable".into(),
                    message: "Deployment has minimum availability.".into(),
                    last_update_time: 1_700_000_002_000,
                    last_transition_time: 1_700_000_001_000,
                }],
                collision_count: 1,
            }),
        }
    }

    fn to_k8s(&self) -> appsv1::Deployment {
        let spec = self.spec.clone().unwrap_or_default();
        appsv1::Deployment {
            metadata: meta::to_k8s(self.meta(), true),
            spec: appsv1::DeploymentSpec {
                replicas: spec.replicas,
                selector: selector_to_k8s(&spec.selector.unwrap_or_default()),
                template: template_to_k8s(&spec.template.unwrap_or_default()),
                strategy: spec.strategy.as_ref().map(|s| appsv1::DeploymentStrategy {
                    type_: opt(&s.r#type),
                    rolling_update: s.rolling_update.as_ref().map(|r| {
                        appsv1::RollingUpdateDeployment {
                            max_surge: int_or_string(&r.max_surge),
                            max_unavailable: int_or_string(&r.max_unavailable),
                        }
                    }),
                }),
                min_ready_seconds: (spec.min_ready_seconds != 0).then_some(spec.min_ready_seconds),
                revision_history_limit: spec.revision_history_limit,
                paused: spec.paused.then_some(true),
                progress_deadline_seconds: spec.progress_deadline_seconds,
            },
            status: self.status.as_ref().map(|s| appsv1::DeploymentStatus {
                observed_generation: Some(s.observed_generation),
                replicas: Some(s.replicas),
                updated_replicas: Some(s.updated_replicas),
                ready_replicas: Some(s.ready_replicas),
                available_replicas: Some(s.available_replicas),
                unavailable_replicas: (s.unavailable_replicas != 0)
                    .then_some(s.unavailable_replicas),
                collision_count: (s.collision_count != 0).then_some(s.collision_count),
                conditions: opt_vec(
                    s.conditions
                        .iter()
                        .map(|c| appsv1::DeploymentCondition {
                            type_: opt(&c.r#type),
                            status: opt(&c.status),
                            reason: opt(&c.reason),
                            message: opt(&c.message),
                            last_update_time: time(c.last_update_time),
                            last_transition_time: time(c.last_transition_time),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn from_k8s(k: appsv1::Deployment) -> Result<Deployment, Vec<FieldError>> {
        let spec = k.spec;
        Ok(Deployment {
            metadata: Some(meta::from_k8s(k.metadata)?),
            spec: Some(DeploymentSpec {
                replicas: spec.replicas,
                selector: Some(selector_from_k8s(spec.selector)),
                template: Some(template_from_k8s(spec.template)?),
                strategy: spec.strategy.map(|s| DeploymentStrategy {
                    r#type: s.type_.unwrap_or_default(),
                    rolling_update: s.rolling_update.map(|r| RollingUpdateDeployment {
                        max_surge: int_or_string_text(r.max_surge),
                        max_unavailable: int_or_string_text(r.max_unavailable),
                    }),
                }),
                min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
                revision_history_limit: spec.revision_history_limit,
                paused: spec.paused.unwrap_or(false),
                progress_deadline_seconds: spec.progress_deadline_seconds,
            }),
            status: k.status.map(|s| DeploymentStatus {
                observed_generation: s.observed_generation.unwrap_or(0),
                replicas: s.replicas.unwrap_or(0),
                updated_replicas: s.updated_replicas.unwrap_or(0),
                ready_replicas: s.ready_replicas.unwrap_or(0),
                available_replicas: s.available_replicas.unwrap_or(0),
                unavailable_replicas: s.unavailable_replicas.unwrap_or(0),
                collision_count: s.collision_count.unwrap_or(0),
                conditions: s
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| DeploymentCondition {
                        r#type: c.type_.unwrap_or_default(),
                        status: c.status.unwrap_or_default(),
                        reason: c.reason.unwrap_or_default(),
                        message: c.message.unwrap_or_default(),
                        last_update_time: millis(&c.last_update_time),
                        last_transition_time: millis(&c.last_transition_time),
                    })
                    .collect(),
            }),
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Ready", "string", 0),
            Column::new("Up-to-date", "integer", 0),
            Column::new("Available", "integer", 0),
            Column::age(),
            Column::new("Containers", "string", 1),
            Column::new("Images", "string", 1),
            Column::new("Selector", "string", 1),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let [c, i, s] = wide_cells(&spec.template, &spec.selector);
        vec![
            json!(self.name()),
            json!(format!(
                "{}/{}",
                st.ready_replicas,
                spec.replicas.unwrap_or(1)
            )),
            json!(st.updated_replicas),
            json!(st.available_replicas),
            json!(age(self.meta().creation_timestamp, now_ms)),
            c,
            i,
            s,
        ]
    }

    fn scale(&self) -> Option<Scale> {
        let spec = self.spec.clone().unwrap_or_default();
        Some(Scale {
            spec_replicas: spec.replicas.unwrap_or(1),
            status_replicas: self.status.as_ref().map_or(0, |s| s.replicas),
            selector: selector_string(&spec.selector.unwrap_or_default()),
        })
    }
    fn set_replicas(&mut self, n: i32) {
        self.spec.get_or_insert_with(Default::default).replicas = Some(n);
    }
}

/// `maxSurge`/`maxUnavailable`: `"25%"` stays a string, `"1"` is the integer 1.
fn int_or_string(s: &str) -> Option<IntOrString> {
    if s.is_empty() {
        return None;
    }
    Some(match s.parse::<i32>() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(s.to_string()),
    })
}

fn int_or_string_text(v: Option<IntOrString>) -> String {
    match v {
        None => String::new(),
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_set_round_trip_cells_scale() {
        let rs = ReplicaSet::schema_sample();
        let v = rs.to_json();
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "web");
        assert_eq!(ReplicaSet::from_json(v).unwrap(), rs);
        let c = rs.cells(1_700_000_003_000);
        assert_eq!(
            c[..5],
            [json!("web-5d9c"), json!(3), json!(3), json!(2), json!("3s")]
        );
        assert_eq!(c[7], "app=web,tier in (a,b)");
        assert_eq!(c.len(), ReplicaSet::columns().len());
        let s = rs.scale().unwrap();
        assert_eq!((s.spec_replicas, s.status_replicas), (3, 3));
    }

    #[test]
    fn deployment_round_trip_cells_scale() {
        let d = Deployment::schema_sample();
        let v = d.to_json();
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 1);
        assert_eq!(v["spec"]["template"]["spec"]["containers"][0]["name"], "c");
        assert_eq!(Deployment::from_json(v).unwrap(), d);
        let c = d.cells(1_700_000_003_000);
        assert_eq!(c[..4], [json!("web"), json!("2/3"), json!(3), json!(2)]);
        assert_eq!(c[5], "c");
        let mut d = d;
        d.set_replicas(5);
        assert_eq!(d.scale().unwrap().spec_replicas, 5);
    }
}
