//! Tables of Namespace, ConfigMap, Secret, Event, ReplicaSet and Deployment (kubectl's
//! columns); their JSON is `kube_lite_k8s`'s.

use super::Show;
use crate::util::age;
use kube_lite_core::workloads as wl;
use kube_lite_core::Resource;
use kube_lite_proto::labels::from_label_selector;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Event, LabelSelector, Namespace, PodTemplateSpec, ReplicaSet, Secret,
};

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
}
