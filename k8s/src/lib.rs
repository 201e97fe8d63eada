//! kube-lite's one conversion layer between its proto objects (the internal model,
//! `kube_lite_proto::v1`) and Kubernetes' JSON types (`k8s_openapi`, API v1.37), so the
//! REST face of the apiserver and kubectl-lite's `-o json|yaml` agree on content.
//!
//! A short tour: [`K8sKind`] is what a kind needs to be served as Kubernetes JSON (its
//! group/version/kind, the conversion both ways, the columns of its server-side Table
//! and the fields its field selectors can name); one file per kind implements it
//! ([`pod`], [`service`], [`endpoints`], [`node`], [`config`] for namespaces,
//! configmaps and secrets, [`event`], [`apps`] for replicasets and deployments); [`meta`] converts metadata and
//! times; [`FieldError`] names a field that does not convert.
//!
//! Choices:
//! - Fields kube-lite does not model are dropped on the way in (as Kubernetes drops
//!   unknown fields without `fieldValidation=Strict`); a value kube-lite cannot represent
//!   (a named `targetPort`, a non-numeric `resourceVersion`) is a [`FieldError`].
//! - Times are unix milliseconds inside, RFC 3339 seconds outside (Kubernetes' `Time`);
//!   0 is "unset" both ways.
//! - Server-set metadata (uid, creationTimestamp, deletionTimestamp) converts both ways;
//!   the apiserver keeps its own values on update.

// Proto structs are built with `..Default::default()` even where every field is set:
// other issues add fields to them (pod spec, node status), and a conversion that does
// not know a new field yet must still compile (the field keeps its default).
#![allow(clippy::needless_update)]

pub mod apps;
pub mod config;
pub mod endpoints;
pub mod event;
pub mod meta;
pub mod node;
pub mod pod;
mod pod_sources;
#[cfg(feature = "protobuf")]
pub mod protobuf;
pub mod security;
pub mod service;

pub use k8s_openapi;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A field that does not convert: its path in Kubernetes' spelling and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The type of a Table column, as Kubernetes declares it (`string`, `integer`, `date`
/// is a `string` with format `date`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

impl Column {
    pub const fn new(name: &'static str, type_: &'static str, priority: i32) -> Column {
        Column {
            name,
            type_,
            format: "",
            description: "",
            priority,
        }
    }
    pub const fn name() -> Column {
        Column {
            name: "Name",
            type_: "string",
            format: "name",
            description: "Name must be unique within a namespace.",
            priority: 0,
        }
    }
    pub const fn age() -> Column {
        Column {
            name: "Age",
            type_: "string",
            format: "",
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
            priority: 0,
        }
    }
}

/// The `/scale` subresource's view of a workload (`autoscaling/v1` Scale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub spec_replicas: i32,
    pub status_replicas: i32,
    /// The pod selector as a label-selector string.
    pub selector: String,
}

/// A kind served as Kubernetes JSON. Implemented on the proto type.
pub trait K8sKind: kube_lite_core::Resource {
    /// The k8s-openapi type.
    type K8s: Serialize + DeserializeOwned + Clone + Default + Send + 'static;
    /// `""` for the core group, `apps`...
    const GROUP: &'static str;
    const VERSION: &'static str;
    /// `kubectl get po`.
    const SHORT_NAMES: &'static [&'static str];
    /// `all` for the kinds `kubectl get all` shows.
    const CATEGORIES: &'static [&'static str];
    /// Subresources served besides the object (`status`, `log`, `binding`).
    const SUBRESOURCES: &'static [&'static str];

    /// `v1`, `apps/v1`.
    fn api_version() -> String {
        if Self::GROUP.is_empty() {
            Self::VERSION.to_string()
        } else {
            format!("{}/{}", Self::GROUP, Self::VERSION)
        }
    }
    /// An object with every field kube-lite converts set (the served OpenAPI schema is
    /// derived from its JSON, so it lists exactly the fields kube-lite keeps).
    fn schema_sample() -> Self;
    fn to_k8s(&self) -> Self::K8s;
    fn from_k8s(k: Self::K8s) -> Result<Self, Vec<FieldError>>;
    /// The Table columns (`kubectl get` and `-o wide`).
    fn columns() -> Vec<Column>;
    /// One row's cells, in column order; `now_ms` for ages.
    fn cells(&self, now_ms: i64) -> Vec<Value>;
    /// A field a field selector may name (beyond `metadata.name`/`metadata.namespace`),
    /// `None` when the kind has no such field.
    fn selectable_field(&self, _field: &str) -> Option<String> {
        None
    }
    /// The field selector fields besides the metadata ones, for the error message.
    const SELECTABLE_FIELDS: &'static [&'static str] = &[];
    /// Strategic merge patch: the lists merged by a key (`spec.containers` by `name`),
    /// as Kubernetes' `patchMergeKey`s; every other list is replaced.
    const MERGE_KEYS: &'static [(&'static str, &'static str)] = &[];
    /// `/scale`: the replicas and selector, `None` for kinds that do not scale.
    fn scale(&self) -> Option<Scale> {
        None
    }
    /// `/scale` writes: the desired replicas.
    fn set_replicas(&mut self, _n: i32) {}

    /// The object as Kubernetes JSON, with `apiVersion` and `kind`.
    fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self.to_k8s()).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("apiVersion".into(), Value::String(Self::api_version()));
            m.insert("kind".into(), Value::String(Self::KIND.to_string()));
        }
        v
    }
    /// Kubernetes JSON (apiVersion/kind are not checked here) to the proto object.
    fn from_json(v: Value) -> Result<Self, Vec<FieldError>> {
        let k: Self::K8s = serde_json::from_value(v)
            .map_err(|e| vec![FieldError::new("body", format!("does not decode: {e}"))])?;
        Self::from_k8s(k)
    }
}

/// A kubectl-style age: `5s`, `3m`, `2h`, `4d`, `<unknown>` for 0.
pub fn age(created_ms: i64, now_ms: i64) -> String {
    if created_ms == 0 {
        return "<unknown>".into();
    }
    let s = (now_ms - created_ms).max(0) / 1000;
    human_duration(s)
}

/// Kubernetes' `duration.HumanDuration` (short form).
pub fn human_duration(s: i64) -> String {
    if s < 120 {
        format!("{s}s")
    } else if s < 600 {
        let m = s / 60;
        let r = s % 60;
        if r == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{r}s")
        }
    } else if s < 3 * 3600 {
        format!("{}m", s / 60)
    } else if s < 8 * 3600 {
        let h = s / 3600;
        let m = (s % 3600) / 60;
        if m == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{m}m")
        }
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else if s < 8 * 86400 {
        let d = s / 86400;
        let h = (s % 86400) / 3600;
        if h == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{h}h")
        }
    } else if s < 2 * 365 * 86400 {
        format!("{}d", s / 86400)
    } else {
        format!("{}y", s / (365 * 86400))
    }
}

/// `None` for an empty string, as Kubernetes omits empty optional fields.
pub(crate) fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `None` for an empty vector.
pub(crate) fn opt_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_kubectl_prints_them() {
        assert_eq!(age(0, 5), "<unknown>");
        assert_eq!(age(1000, 6000), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(900), "15m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400), "3d");
        assert_eq!(human_duration(30 * 86400), "30d");
        assert_eq!(human_duration(800 * 86400), "2y");
    }
}
