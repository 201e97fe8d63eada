//! Namespace, ConfigMap and Secret (issue 11): conversion and kubectl's columns
//! (namespaces: NAME STATUS AGE; configmaps: NAME DATA AGE; secrets: NAME TYPE DATA AGE).

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::ByteString;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{ConfigMap, Namespace, NamespaceSpec, NamespaceStatus, Secret};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

use crate::meta;
use crate::{age, opt, opt_vec, Column, FieldError, K8sKind};

fn bytes_map(m: &HashMap<String, Vec<u8>>) -> Option<BTreeMap<String, ByteString>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone())))
            .collect()
    })
}

fn unbytes_map(m: Option<BTreeMap<String, ByteString>>) -> HashMap<String, Vec<u8>> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn sample_meta(name: &str, ns: &str) -> Option<kube_lite_proto::v1::ObjectMeta> {
    Some(kube_lite_proto::v1::ObjectMeta {
        name: name.into(),
        namespace: ns.into(),
        uid: "u1".into(),
        resource_version: 7,
        creation_timestamp: 1_700_000_000_000,
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    })
}

impl K8sKind for Namespace {
    type K8s = corev1::Namespace;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &["status"];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["status.phase"];

    fn schema_sample() -> Namespace {
        Namespace {
            metadata: sample_meta("blue", ""),
            spec: Some(NamespaceSpec {
                finalizers: vec!["kubernetes".into()],
            }),
            status: Some(NamespaceStatus {
                phase: "Active".into(),
            }),
        }
    }
    fn to_k8s(&self) -> corev1::Namespace {
        corev1::Namespace {
            metadata: meta::to_k8s(self.meta(), false),
            spec: self.spec.as_ref().map(|s| corev1::NamespaceSpec {
                finalizers: opt_vec(s.finalizers.clone()),
            }),
            status: self.status.as_ref().map(|s| corev1::NamespaceStatus {
                phase: opt(&s.phase),
                ..Default::default()
            }),
        }
    }
    fn from_k8s(k: corev1::Namespace) -> Result<Namespace, Vec<FieldError>> {
        Ok(Namespace {
            metadata: Some(meta::from_k8s(k.metadata)?),
            spec: k.spec.map(|s| NamespaceSpec {
                finalizers: s.finalizers.unwrap_or_default(),
            }),
            status: k.status.map(|s| NamespaceStatus {
                phase: s.phase.unwrap_or_default(),
            }),
        })
    }
    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Status", "string", 0),
            Column::age(),
        ]
    }
    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let phase = self
            .status
            .as_ref()
            .map(|s| s.phase.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "Active".into());
        vec![
            json!(self.name()),
            json!(phase),
            json!(age(self.meta().creation_timestamp, now_ms)),
        ]
    }
    fn selectable_field(&self, field: &str) -> Option<String> {
        match field {
            "status.phase" => Some(self.status.clone().unwrap_or_default().phase),
            _ => None,
        }
    }
}

impl K8sKind for ConfigMap {
    type K8s = corev1::ConfigMap;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &["cm"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &[];

    fn schema_sample() -> ConfigMap {
        ConfigMap {
            metadata: sample_meta("cfg", "default"),
            data: [("a".to_string(), "1".to_string())].into(),
            binary_data: [("b".to_string(), vec![0u8, 1, 2])].into(),
            immutable: true,
        }
    }
    fn to_k8s(&self) -> corev1::ConfigMap {
        corev1::ConfigMap {
            metadata: meta::to_k8s(self.meta(), true),
            data: meta::map(&self.data),
            binary_data: bytes_map(&self.binary_data),
            immutable: self.immutable.then_some(true),
        }
    }
    fn from_k8s(k: corev1::ConfigMap) -> Result<ConfigMap, Vec<FieldError>> {
        Ok(ConfigMap {
            metadata: Some(meta::from_k8s(k.metadata)?),
            data: meta::unmap(k.data),
            binary_data: unbytes_map(k.binary_data),
            immutable: k.immutable.unwrap_or(false),
        })
    }
    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Data", "string", 0),
            Column::age(),
        ]
    }
    fn cells(&self, now_ms: i64) -> Vec<Value> {
        vec![
            json!(self.name()),
            json!(self.data.len() + self.binary_data.len()),
            json!(age(self.meta().creation_timestamp, now_ms)),
        ]
    }
}

impl K8sKind for Secret {
    type K8s = corev1::Secret;
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [&'static str] = &[];
    const SELECTABLE_FIELDS: &'static [&'static str] = &["type"];

    fn schema_sample() -> Secret {
        Secret {
            metadata: sample_meta("s", "default"),
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            string_data: [("user".to_string(), "admin".to_string())].into(),
            r#type: "Opaque".into(),
            immutable: true,
        }
    }
    fn to_k8s(&self) -> corev1::Secret {
        corev1::Secret {
            metadata: meta::to_k8s(self.meta(), true),
            data: bytes_map(&self.data),
            string_data: meta::map(&self.string_data),
            type_: opt(&self.r#type),
            immutable: self.immutable.then_some(true),
        }
    }
    fn from_k8s(k: corev1::Secret) -> Result<Secret, Vec<FieldError>> {
        Ok(Secret {
            metadata: Some(meta::from_k8s(k.metadata)?),
            data: unbytes_map(k.data),
            string_data: meta::unmap(k.string_data),
            r#type: k.type_.unwrap_or_default(),
            immutable: k.immutable.unwrap_or(false),
        })
    }
    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new("Type", "string", 0),
            Column::new("Data", "string", 0),
            Column::age(),
        ]
    }
    fn cells(&self, now_ms: i64) -> Vec<Value> {
        let typ = if self.r#type.is_empty() {
            "Opaque"
        } else {
            &self.r#type
        };
        vec![
            json!(self.name()),
            json!(typ),
            json!(self.data.len()),
            json!(age(self.meta().creation_timestamp, now_ms)),
        ]
    }
    fn selectable_field(&self, field: &str) -> Option<String> {
        (field == "type").then(|| self.r#type.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_spelling() {
        let ns = Namespace::schema_sample();
        let v = ns.to_json();
        assert_eq!(v["kind"], "Namespace");
        assert!(v["metadata"].get("namespace").is_none());
        assert_eq!(Namespace::from_json(v).unwrap(), ns);
        assert_eq!(ns.cells(1_700_000_005_000)[1], "Active");

        let cm = ConfigMap::schema_sample();
        let v = cm.to_json();
        assert_eq!(v["binaryData"]["b"], "AAEC");
        assert_eq!(v["immutable"], true);
        assert_eq!(ConfigMap::from_json(v).unwrap(), cm);
        assert_eq!(cm.cells(0)[1], 2);

        let s = Secret::schema_sample();
        let v = s.to_json();
        assert_eq!(v["data"]["password"], "aHVudGVyMg==");
        assert_eq!(v["stringData"]["user"], "admin");
        assert_eq!(Secret::from_json(v).unwrap(), s);
        assert_eq!(s.cells(0)[1..3], [json!("Opaque"), json!(1)]);
        let bad = Secret::from_json(json!({"data": {"k": "not base64!"}})).unwrap_err();
        assert_eq!(bad[0].field, "body");
    }
}
