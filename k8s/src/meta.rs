//! Metadata and times.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::jiff::Timestamp;
use kube_lite_proto::v1::ObjectMeta;

use crate::{opt, FieldError};

/// Unix milliseconds to a Kubernetes `Time`; `None` for 0 (unset) or out of range.
pub fn time(ms: i64) -> Option<metav1::Time> {
    if ms == 0 {
        return None;
    }
    Timestamp::from_millisecond(ms).ok().map(metav1::Time)
}

/// A Kubernetes `Time` to unix milliseconds; 0 for `None`.
pub fn millis(t: &Option<metav1::Time>) -> i64 {
    t.as_ref().map_or(0, |t| t.0.as_millisecond())
}

/// A proto map as Kubernetes' (sorted) one; `None` when empty.
pub fn map(m: &HashMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn unmap(m: Option<BTreeMap<String, String>>) -> HashMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

pub fn to_k8s(m: &ObjectMeta, namespaced: bool) -> metav1::ObjectMeta {
    let deleting = m.deletion_timestamp != 0;
    metav1::ObjectMeta {
        name: opt(&m.name),
        namespace: if namespaced { opt(&m.namespace) } else { None },
        uid: opt(&m.uid),
        labels: map(&m.labels),
        annotations: map(&m.annotations),
        resource_version: (m.resource_version != 0).then(|| m.resource_version.to_string()),
        creation_timestamp: time(m.creation_timestamp),
        deletion_timestamp: time(m.deletion_timestamp),
        deletion_grace_period_seconds: deleting.then_some(m.deletion_grace_period_seconds),
        owner_references: (!m.owner_references.is_empty()).then(|| {
            m.owner_references
                .iter()
                .map(|r| metav1::OwnerReference {
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    uid: r.uid.clone(),
                    controller: Some(r.controller),
                    block_owner_deletion: Some(r.block_owner_deletion),
                })
                .collect()
        }),
        generate_name: opt(&m.generate_name),
        generation: (m.generation != 0).then_some(m.generation),
        finalizers: (!m.finalizers.is_empty()).then(|| m.finalizers.clone()),
        ..Default::default()
    }
}

/// `metadata.resourceVersion` as a revision: empty is 0 (no precondition).
pub fn parse_resource_version(rv: &str) -> Result<u64, FieldError> {
    if rv.is_empty() {
        return Ok(0);
    }
    rv.parse().map_err(|_| {
        FieldError::new(
            "metadata.resourceVersion",
            format!("invalid value {rv:?}: must be a decimal revision"),
        )
    })
}

pub fn from_k8s(m: metav1::ObjectMeta) -> Result<ObjectMeta, Vec<FieldError>> {
    let resource_version =
        parse_resource_version(m.resource_version.as_deref().unwrap_or("")).map_err(|e| vec![e])?;
    Ok(ObjectMeta {
        name: m.name.unwrap_or_default(),
        namespace: m.namespace.unwrap_or_default(),
        uid: m.uid.unwrap_or_default(),
        labels: unmap(m.labels),
        annotations: unmap(m.annotations),
        resource_version,
        creation_timestamp: millis(&m.creation_timestamp),
        deletion_timestamp: millis(&m.deletion_timestamp),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds.unwrap_or(0),
        owner_references: m
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|r| kube_lite_proto::v1::OwnerReference {
                api_version: r.api_version,
                kind: r.kind,
                name: r.name,
                uid: r.uid,
                controller: r.controller.unwrap_or(false),
                block_owner_deletion: r.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
        generate_name: m.generate_name.unwrap_or_default(),
        generation: m.generation.unwrap_or(0),
        finalizers: m.finalizers.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_at_second_precision() {
        let m = ObjectMeta {
            name: "web".into(),
            namespace: "blue".into(),
            uid: "u-1".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: HashMap::new(),
            resource_version: 42,
            creation_timestamp: 1_700_000_000_000,
            deletion_timestamp: 0,
            deletion_grace_period_seconds: 0,
            ..Default::default()
        };
        let k = to_k8s(&m, true);
        assert_eq!(k.resource_version.as_deref(), Some("42"));
        assert!(k.annotations.is_none() && k.deletion_timestamp.is_none());
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(json["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(from_k8s(k).unwrap(), m);
        assert!(to_k8s(&m, false).namespace.is_none());
    }

    #[test]
    fn a_bad_resource_version_names_the_field() {
        let k = metav1::ObjectMeta {
            resource_version: Some("abc".into()),
            ..Default::default()
        };
        let e = from_k8s(k).unwrap_err();
        assert_eq!(e[0].field, "metadata.resourceVersion");
        assert_eq!(parse_resource_version("").unwrap(), 0);
    }
}
