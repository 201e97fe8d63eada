//! Tables and Kubernetes-shaped JSON of Namespace, ConfigMap, Secret, Event,
//! ReplicaSet and Deployment (kubectl's columns).

use super::{meta_json, pod_spec_json, put_nonempty, put_str, put_time, sorted_map, Show};
use crate::util::age;
use base64::Engine;
use kube_lite_core::workloads as wl;
use kube_lite_core::Resource;
use kube_lite_proto::labels::from_label_selector;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Event, LabelSelector, Namespace, PodTemplateSpec, ReplicaSet, Secret,
};
use serde_json::{json, Map, Value};

/// `app=web,tier in (a,b)`.
pub fn selector_text(s: Option<&LabelSelector>) -> String {
    match s.map(from_label_selector) {
        Some(Ok(sel)) if !sel.is_empty() => sel.to_string(),
        _ => "<none>".into(),
    }
}

fn containers_and_images(t: Option<&PodTemplateSpec>) -> (String, String) {
    let cs = t
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    (
        cs.iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| c.image.clone())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn template_json(t: &PodTemplateSpec) -> Value {
    let m = t.metadata.clone().unwrap_or_default();
    let mut meta = Map::new();
    put_nonempty(&mut meta, "labels", sorted_map(&m.labels));
    put_nonempty(&mut meta, "annotations", sorted_map(&m.annotations));
    json!({
        "metadata": Value::Object(meta),
        "spec": pod_spec_json(&t.spec.clone().unwrap_or_default()),
    })
}

fn selector_json(s: &LabelSelector) -> Value {
    let mut o = Map::new();
    put_nonempty(&mut o, "matchLabels", sorted_map(&s.match_labels));
    let exprs: Vec<Value> = s
        .match_expressions
        .iter()
        .map(|e| {
            let mut x = Map::new();
            x.insert("key".into(), json!(e.key));
            x.insert("operator".into(), json!(e.operator));
            put_nonempty(&mut x, "values", json!(e.values));
            Value::Object(x)
        })
        .collect();
    put_nonempty(&mut o, "matchExpressions", Value::Array(exprs));
    Value::Object(o)
}

impl Show for Namespace {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "STATUS", "AGE"]
    }
    fn row(&self, now_ms: i64, _wide: bool) -> Vec<String> {
        let phase = self
            .status
            .as_ref()
            .map(|s| s.phase.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| wl::namespace_phase::ACTIVE.into());
        vec![
            self.name().to_string(),
            phase,
            age(self.meta().creation_timestamp, now_ms),
        ]
    }
    fn to_json(&self) -> Value {
        let mut spec = Map::new();
        put_nonempty(
            &mut spec,
            "finalizers",
            json!(self.spec.clone().unwrap_or_default().finalizers),
        );
        let mut status = Map::new();
        put_str(
            &mut status,
            "phase",
            &self.status.clone().unwrap_or_default().phase,
        );
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": meta_json(self.meta(), false),
            "spec": Value::Object(spec),
            "status": Value::Object(status),
        })
    }
}

impl Show for ConfigMap {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "DATA", "AGE"]
    }
    fn row(&self, now_ms: i64, _wide: bool) -> Vec<String> {
        vec![
            self.name().to_string(),
            (self.data.len() + self.binary_data.len()).to_string(),
            age(self.meta().creation_timestamp, now_ms),
        ]
    }
    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("apiVersion".into(), json!("v1"));
        o.insert("kind".into(), json!("ConfigMap"));
        o.insert("metadata".into(), meta_json(self.meta(), true));
        put_nonempty(&mut o, "data", sorted_map(&self.data));
        let mut bin: Vec<_> = self.binary_data.iter().collect();
        bin.sort();
        let mut b = Map::new();
        for (k, v) in bin {
            b.insert(
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            );
        }
        put_nonempty(&mut o, "binaryData", Value::Object(b));
        if self.immutable {
            o.insert("immutable".into(), json!(true));
        }
        Value::Object(o)
    }
}

impl Show for Secret {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "TYPE", "DATA", "AGE"]
    }
    fn row(&self, now_ms: i64, _wide: bool) -> Vec<String> {
        vec![
            self.name().to_string(),
            self.r#type.clone(),
            self.data.len().to_string(),
            age(self.meta().creation_timestamp, now_ms),
        ]
    }
    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("apiVersion".into(), json!("v1"));
        o.insert("kind".into(), json!("Secret"));
        o.insert("metadata".into(), meta_json(self.meta(), true));
        put_str(&mut o, "type", &self.r#type);
        let mut d: Vec<_> = self.data.iter().collect();
        d.sort();
        let mut b = Map::new();
        for (k, v) in d {
            b.insert(
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            );
        }
        put_nonempty(&mut o, "data", Value::Object(b));
        if self.immutable {
            o.insert("immutable".into(), json!(true));
        }
        Value::Object(o)
    }
}

/// `pod/web-abc12` (lowercase kind, as kubectl's OBJECT column).
pub fn event_object_text(e: &Event) -> String {
    let o = e.involved_object.clone().unwrap_or_default();
    format!("{}/{}", o.kind.to_ascii_lowercase(), o.name)
}

impl Show for Event {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    }
    fn row(&self, now_ms: i64, _wide: bool) -> Vec<String> {
        let last = if self.last_timestamp != 0 {
            self.last_timestamp
        } else {
            self.meta().creation_timestamp
        };
        vec![
            age(last, now_ms),
            self.r#type.clone(),
            self.reason.clone(),
            event_object_text(self),
            self.message.clone(),
        ]
    }
    fn to_json(&self) -> Value {
        let o = self.involved_object.clone().unwrap_or_default();
        let mut inv = Map::new();
        put_str(&mut inv, "apiVersion", &o.api_version);
        put_str(&mut inv, "kind", &o.kind);
        put_str(&mut inv, "namespace", &o.namespace);
        put_str(&mut inv, "name", &o.name);
        put_str(&mut inv, "uid", &o.uid);
        let src = self.source.clone().unwrap_or_default();
        let mut source = Map::new();
        put_str(&mut source, "component", &src.component);
        put_str(&mut source, "host", &src.host);
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!("v1"));
        out.insert("kind".into(), json!("Event"));
        out.insert("metadata".into(), meta_json(self.meta(), true));
        out.insert("involvedObject".into(), Value::Object(inv));
        put_str(&mut out, "reason", &self.reason);
        put_str(&mut out, "message", &self.message);
        out.insert("source".into(), Value::Object(source));
        put_time(&mut out, "firstTimestamp", self.first_timestamp);
        put_time(&mut out, "lastTimestamp", self.last_timestamp);
        out.insert("count".into(), json!(self.count));
        put_str(&mut out, "type", &self.r#type);
        Value::Object(out)
    }
}

impl Show for ReplicaSet {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"];
        if wide {
            h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
        }
        h
    }
    fn row(&self, now_ms: i64, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let mut r = vec![
            self.name().to_string(),
            wl::replicas(spec.replicas).to_string(),
            st.replicas.to_string(),
            st.ready_replicas.to_string(),
            age(self.meta().creation_timestamp, now_ms),
        ];
        if wide {
            let (c, i) = containers_and_images(spec.template.as_ref());
            r.extend([c, i, selector_text(spec.selector.as_ref())]);
        }
        r
    }
    fn to_json(&self) -> Value {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let mut s = Map::new();
        s.insert("replicas".into(), json!(wl::replicas(spec.replicas)));
        if spec.min_ready_seconds != 0 {
            s.insert("minReadySeconds".into(), json!(spec.min_ready_seconds));
        }
        s.insert(
            "selector".into(),
            selector_json(&spec.selector.clone().unwrap_or_default()),
        );
        s.insert(
            "template".into(),
            template_json(&spec.template.clone().unwrap_or_default()),
        );
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": meta_json(self.meta(), true),
            "spec": Value::Object(s),
            "status": {
                "replicas": st.replicas,
                "fullyLabeledReplicas": st.fully_labeled_replicas,
                "readyReplicas": st.ready_replicas,
                "availableReplicas": st.available_replicas,
                "observedGeneration": st.observed_generation,
            },
        })
    }
}

/// `2/3` (ready / desired).
pub fn deployment_ready_text(d: &Deployment) -> String {
    let st = d.status.clone().unwrap_or_default();
    format!(
        "{}/{}",
        st.ready_replicas,
        wl::replicas(d.spec.as_ref().and_then(|s| s.replicas))
    )
}

impl Show for Deployment {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
        if wide {
            h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
        }
        h
    }
    fn row(&self, now_ms: i64, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let mut r = vec![
            self.name().to_string(),
            deployment_ready_text(self),
            st.updated_replicas.to_string(),
            st.available_replicas.to_string(),
            age(self.meta().creation_timestamp, now_ms),
        ];
        if wide {
            let (c, i) = containers_and_images(spec.template.as_ref());
            r.extend([c, i, selector_text(spec.selector.as_ref())]);
        }
        r
    }
    fn to_json(&self) -> Value {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let mut s = Map::new();
        s.insert("replicas".into(), json!(wl::replicas(spec.replicas)));
        s.insert(
            "selector".into(),
            selector_json(&spec.selector.clone().unwrap_or_default()),
        );
        s.insert(
            "template".into(),
            template_json(&spec.template.clone().unwrap_or_default()),
        );
        let strat = spec.strategy.clone().unwrap_or_default();
        let mut so = Map::new();
        put_str(&mut so, "type", &strat.r#type);
        if let Some(ru) = &strat.rolling_update {
            so.insert(
                "rollingUpdate".into(),
                json!({"maxSurge": int_or_string(&ru.max_surge), "maxUnavailable": int_or_string(&ru.max_unavailable)}),
            );
        }
        s.insert("strategy".into(), Value::Object(so));
        if spec.min_ready_seconds != 0 {
            s.insert("minReadySeconds".into(), json!(spec.min_ready_seconds));
        }
        if let Some(l) = spec.revision_history_limit {
            s.insert("revisionHistoryLimit".into(), json!(l));
        }
        if spec.paused {
            s.insert("paused".into(), json!(true));
        }
        if let Some(p) = spec.progress_deadline_seconds {
            s.insert("progressDeadlineSeconds".into(), json!(p));
        }
        let conds: Vec<Value> = st
            .conditions
            .iter()
            .map(|c| {
                let mut o = Map::new();
                o.insert("type".into(), json!(c.r#type));
                o.insert("status".into(), json!(c.status));
                put_str(&mut o, "reason", &c.reason);
                put_str(&mut o, "message", &c.message);
                put_time(&mut o, "lastUpdateTime", c.last_update_time);
                put_time(&mut o, "lastTransitionTime", c.last_transition_time);
                Value::Object(o)
            })
            .collect();
        let mut so = Map::new();
        so.insert("observedGeneration".into(), json!(st.observed_generation));
        so.insert("replicas".into(), json!(st.replicas));
        so.insert("updatedReplicas".into(), json!(st.updated_replicas));
        so.insert("readyReplicas".into(), json!(st.ready_replicas));
        so.insert("availableReplicas".into(), json!(st.available_replicas));
        so.insert("unavailableReplicas".into(), json!(st.unavailable_replicas));
        put_nonempty(&mut so, "conditions", Value::Array(conds));
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta_json(self.meta(), true),
            "spec": Value::Object(s),
            "status": Value::Object(so),
        })
    }
}

/// `"25%"` stays a string, `"1"` becomes the number 1 (IntOrString).
fn int_or_string(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    }
}
