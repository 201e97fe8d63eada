//! Event (core/v1, issue 11): conversion, kubectl's columns (LAST SEEN TYPE REASON OBJECT
//! MESSAGE; wide: SUBOBJECT SOURCE FIRST SEEN COUNT NAME) and the field selectors
//! `kubectl describe` uses (`involvedObject.*`).

use k8s_openapi::api::core::v1 as corev1;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Event, EventSource, ObjectReference};
use serde_json::{json, Value};

use crate::meta::{self, millis, time};
use crate::{age, opt, Column, FieldError, K8sKind};

impl K8sKind for Event {
    type K8s = corev1::Event;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &[];
    const SELECTABLE_FIELDS: &'static [&'static str] = &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];

    fn schema_sample() -> Event {
        Event {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
                name: "web.1".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                resource_version: 7,
                creation_timestamp: 1_700_000_000_000,
                ..Default::default()
            }),
            involved_object: Some(ObjectReference {
                kind: "Pod".into(),
                namespace: "default".into(),
                name: "web".into(),
                uid: "u2".into(),
                api_version: "v1".into(),
                resource_version: 5,
                field_path: "spec.containers{c}".into(),
            }),
            reason: "Scheduled".into(),
            message: "Successfully assigned default/web to n1".into(),
            source: Some(EventSource {
                component: "default-scheduler".into(),
                host: "n1".into(),
            }),
            first_timestamp: 1_700_000_000_000,
            last_timestamp: 1_700_000_004_000,
            count: 2,
            r#type: "Normal".into(),
            reporting_component: "default-scheduler".into(),
            reporting_instance: "apiserver".into(),
        }
    }

    fn to_k8s(&self) -> corev1::Event {
        let o = self.involved_object.clone().unwrap_or_default();
        corev1::Event {
            metadata: meta::to_k8s(self.meta(), true),
            involved_object: corev1::ObjectReference {
                kind: opt(&o.kind),
                namespace: opt(&o.namespace),
                name: opt(&o.name),
                uid: opt(&o.uid),
                api_version: opt(&o.api_version),
                resource_version: (o.resource_version != 0).then(|| o.resource_version.to_string()),
                field_path: opt(&o.field_path),
            },
            reason: opt(&self.reason),
            message: opt(&self.message),
            source: self.source.as_ref().map(|s| corev1::EventSource {
                component: opt(&s.component),
                host: opt(&s.host),
            }),
            first_timestamp: time(self.first_timestamp),
            last_timestamp: time(self.last_timestamp),
            count: (self.count != 0).then_some(self.count),
            type_: opt(&self.r#type),
            reporting_component: opt(&self.reporting_component),
            reporting_instance: opt(&self.reporting_instance),
            ..Default::default()
        }
    }

    fn from_k8s(k: corev1::Event) -> Result<Event, Vec<FieldError>> {
        let o = k.involved_object;
        let rv = meta::parse_resource_version(o.resource_version.as_deref().unwrap_or(""))
            .map_err(|e| vec![FieldError::new("involvedObject.resourceVersion", e.message)])?;
        // Events written by newer clients carry eventTime instead of the timestamps.
        let event_time = k.event_time.as_ref().map_or(0, |t| t.0.as_millisecond());
        let first = millis(&k.first_timestamp);
        let last = millis(&k.last_timestamp);
        Ok(Event {
            metadata: Some(meta::from_k8s(k.metadata)?),
            involved_object: Some(ObjectReference {
                kind: o.kind.unwrap_or_default(),
                namespace: o.namespace.unwrap_or_default(),
                name: o.name.unwrap_or_default(),
                uid: o.uid.unwrap_or_default(),
                api_version: o.api_version.unwrap_or_default(),
                resource_version: rv,
                field_path: o.field_path.unwrap_or_default(),
            }),
            reason: k.reason.unwrap_or_default(),
            message: k.message.unwrap_or_default(),
            source: k.source.map(|s| EventSource {
                component: s.component.unwrap_or_default(),
                host: s.host.unwrap_or_default(),
            }),
            first_timestamp: if first == 0 { event_time } else { first },
            last_timestamp: if last == 0 { event_time } else { last },
            count: k.count.unwrap_or(0),
            r#type: k.type_.unwrap_or_default(),
            reporting_component: k.reporting_component.unwrap_or_default(),
            reporting_instance: k.reporting_instance.unwrap_or_default(),
        })
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new("Last Seen", "string", 0),
            Column::new("Type", "string", 0),
            Column::new("Reason", "string", 0),
            Column::new("Object", "string", 0),
            Column::new("Subobject", "string", 1),
            Column::new("Source", "string", 1),
            Column::new("Message", "string", 0),
            Column::new("First Seen", "string", 1),
            Column::new("Count", "integer", 1),
            Column::new("Name", "string", 1),
        ]
    }

    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let o = self.involved_object.clone().unwrap_or_default();
        let src = self.source.clone().unwrap_or_default();
        let source = match (src.component.as_str(), src.host.as_str()) {
            ("", _) => self.reporting_component.clone(),
            (c, "") => c.to_string(),
            (c, h) => format!("{c}, {h}"),
        };
        let last = if self.last_timestamp != 0 {
            self.last_timestamp
        } else {
            self.meta().creation_timestamp
        };
        vec![
            json!(age(last, now_ms)),
            json!(self.r#type),
            json!(self.reason),
            json!(format!("{}/{}", o.kind.to_lowercase(), o.name)),
            json!(o.field_path),
            json!(source),
            json!(self.message.trim()),
            json!(age(self.first_timestamp, now_ms)),
            json!(self.count.max(1)),
            json!(self.name()),
        ]
    }

    fn selectable_field(&self, field: &str) -> Option<String> {
        let o = self.involved_object.clone().unwrap_or_default();
        Some(match field {
            "involvedObject.kind" => o.kind,
            "involvedObject.namespace" => o.namespace,
            "involvedObject.name" => o.name,
            "involvedObject.uid" => o.uid,
            "involvedObject.apiVersion" => o.api_version,
            "involvedObject.resourceVersion" => {
                if o.resource_version == 0 {
                    String::new()
                } else {
                    o.resource_version.to_string()
                }
            }
            "involvedObject.fieldPath" => o.field_path,
            "reason" => self.reason.clone(),
            "reportingComponent" => self.reporting_component.clone(),
            "source" => self.source.clone().unwrap_or_default().component,
            "type" => self.r#type.clone(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_cells_and_fields() {
        let e = Event::schema_sample();
        let v = e.to_json();
        assert_eq!(v["involvedObject"]["kind"], "Pod");
        assert_eq!(v["involvedObject"]["resourceVersion"], "5");
        assert_eq!(v["lastTimestamp"], "2023-11-14T22:13:24Z");
        assert_eq!(Event::from_json(v).unwrap(), e);
        let c = e.cells(1_700_000_010_000);
        assert_eq!(c[0], "6s");
        assert_eq!(c[3], "pod/web");
        assert_eq!(c[5], "default-scheduler, n1");
        assert_eq!(c.len(), Event::columns().len());
        assert_eq!(
            e.selectable_field("involvedObject.name").as_deref(),
            Some("web")
        );
    }
}
