//! Validation and Create preparation of the workload kinds (Namespace, ConfigMap,
//! Secret, Event, ReplicaSet, Deployment) and of the metadata fields they brought
//! (ownerReferences, finalizers, generateName). Every error names the field.

use std::collections::HashSet;

use kube_lite_core::workloads::{
    self as wl, namespace_phase, strategy, IntOrPercent, MAX_CONFIG_BYTES,
};
use kube_lite_proto::labels::Selector;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Event, LabelSelector, Namespace, ObjectMeta, Pod, PodTemplateSpec,
    ReplicaSet, Secret,
};

use super::{is_dns1123_subdomain, validate_pod, R};
use crate::error::{quote, ApiError};

/// Most owner references and finalizers an object may carry.
pub const MAX_OWNER_REFERENCES: usize = 32;
pub const MAX_FINALIZERS: usize = 32;
/// Longest Event message, reason.
pub const MAX_EVENT_MESSAGE: usize = 4096;
pub const MAX_EVENT_REASON: usize = 128;
/// Most replicas a ReplicaSet/Deployment may ask for.
pub const MAX_REPLICAS: i32 = 100_000;

/// Secret types with required keys (Kubernetes' built-in types).
const SECRET_TYPES: &[(&str, &[&str])] = &[
    ("Opaque", &[]),
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/basic-auth", &[]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
    ("kubernetes.io/service-account-token", &[]),
    ("bootstrap.kubernetes.io/token", &[]),
];

/// ownerReferences, finalizers and generateName.
pub fn check_meta_extra(m: &ObjectMeta) -> R {
    if m.owner_references.len() > MAX_OWNER_REFERENCES {
        return Err(ApiError::invalid(
            "metadata.owner_references",
            format!("at most {MAX_OWNER_REFERENCES} are allowed"),
        ));
    }
    let mut controllers = 0;
    for (i, o) in m.owner_references.iter().enumerate() {
        let f = format!("metadata.owner_references[{i}]");
        for (name, v) in [
            ("api_version", &o.api_version),
            ("kind", &o.kind),
            ("name", &o.name),
            ("uid", &o.uid),
        ] {
            if v.is_empty() {
                return Err(ApiError::invalid(format!("{f}.{name}"), "is required"));
            }
            if v.len() > 253 {
                return Err(ApiError::invalid(
                    format!("{f}.{name}"),
                    "must be at most 253 characters",
                ));
            }
        }
        if o.controller {
            controllers += 1;
        }
    }
    if controllers > 1 {
        return Err(ApiError::invalid(
            "metadata.owner_references",
            "only one reference can have controller set to true",
        ));
    }
    if m.finalizers.len() > MAX_FINALIZERS {
        return Err(ApiError::invalid(
            "metadata.finalizers",
            format!("at most {MAX_FINALIZERS} are allowed"),
        ));
    }
    for (i, f) in m.finalizers.iter().enumerate() {
        let ok = !f.is_empty()
            && f.len() <= 316
            && f.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'));
        if !ok {
            return Err(ApiError::invalid(
                format!("metadata.finalizers[{i}]"),
                format!(
                    "{} must be a qualified name (a-z, 0-9, '-', '_', '.', optionally a prefix/)",
                    quote(f)
                ),
            ));
        }
    }
    if m.generate_name.len() > 58 {
        return Err(ApiError::invalid(
            "metadata.generate_name",
            "must be at most 58 characters (5 random characters are added)",
        ));
    }
    Ok(())
}

/// Key of ConfigMap/Secret data: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.`/`..`.
fn check_data_key(field: &str, k: &str) -> R {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        return Err(ApiError::invalid(
            format!("{field}[{}]", crate::error::clip(k)),
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (at most 253)",
        ));
    }
    Ok(())
}

fn too_large(field: &str, size: usize) -> ApiError {
    ApiError::invalid(
        field,
        format!(
            "Too long: the data is {size} bytes; it must have at most {MAX_CONFIG_BYTES} bytes (1 MiB)"
        ),
    )
}

pub fn validate_namespace(n: &Namespace) -> R {
    if let Some(st) = &n.status {
        if !["", namespace_phase::ACTIVE, namespace_phase::TERMINATING].contains(&st.phase.as_str())
        {
            return Err(ApiError::invalid(
                "status.phase",
                format!("must be Active or Terminating (got {})", quote(&st.phase)),
            ));
        }
    }
    Ok(())
}

pub fn validate_config_map(c: &ConfigMap) -> R {
    let mut size = 0;
    for (k, v) in &c.data {
        check_data_key("data", k)?;
        size += k.len() + v.len();
    }
    for (k, v) in &c.binary_data {
        check_data_key("binary_data", k)?;
        if c.data.contains_key(k) {
            return Err(ApiError::invalid(
                format!("binary_data[{}]", crate::error::clip(k)),
                "duplicate of a key in data",
            ));
        }
        size += k.len() + v.len();
    }
    if size > MAX_CONFIG_BYTES {
        return Err(too_large("data", size));
    }
    Ok(())
}

pub fn validate_secret(s: &Secret) -> R {
    let mut size = 0;
    for (k, v) in &s.data {
        check_data_key("data", k)?;
        size += k.len() + v.len();
    }
    if size > MAX_CONFIG_BYTES {
        return Err(too_large("data", size));
    }
    if s.r#type.len() > 253 {
        return Err(ApiError::invalid("type", "must be at most 253 characters"));
    }
    if let Some((_, required)) = SECRET_TYPES.iter().find(|(t, _)| *t == s.r#type) {
        for key in *required {
            if !s.data.contains_key(*key) {
                return Err(ApiError::invalid(
                    format!("data[{key}]"),
                    format!("is required for a Secret of type {}", s.r#type),
                ));
            }
        }
    }
    if s.r#type == "kubernetes.io/basic-auth"
        && !s.data.contains_key("username")
        && !s.data.contains_key("password")
    {
        return Err(ApiError::invalid(
            "data",
            "a kubernetes.io/basic-auth Secret needs username or password",
        ));
    }
    Ok(())
}

/// Creates/updates of Secrets: `string_data` is merged into `data` (and cleared), the
/// type defaults to Opaque.
pub fn prepare_secret(s: &mut Secret) {
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data.insert(k, v.into_bytes());
    }
    if s.r#type.is_empty() {
        s.r#type = "Opaque".into();
    }
}

pub fn validate_event(e: &Event) -> R {
    let Some(o) = &e.involved_object else {
        return Err(ApiError::invalid("involved_object", "is required"));
    };
    if o.kind.is_empty() {
        return Err(ApiError::invalid("involved_object.kind", "is required"));
    }
    if o.name.is_empty() {
        return Err(ApiError::invalid("involved_object.name", "is required"));
    }
    if e.reason.len() > MAX_EVENT_REASON {
        return Err(ApiError::invalid(
            "reason",
            format!("must be at most {MAX_EVENT_REASON} characters"),
        ));
    }
    if e.message.len() > MAX_EVENT_MESSAGE {
        return Err(ApiError::invalid(
            "message",
            format!("must be at most {MAX_EVENT_MESSAGE} characters"),
        ));
    }
    if !["", "Normal", "Warning"].contains(&e.r#type.as_str()) {
        return Err(ApiError::invalid(
            "type",
            format!("must be Normal or Warning (got {})", quote(&e.r#type)),
        ));
    }
    if e.count < 0 {
        return Err(ApiError::invalid("count", "must be >= 0"));
    }
    Ok(())
}

/// A `LabelSelector` as a [`Selector`]; errors name the field.
pub fn selector_of(field: &str, s: &LabelSelector) -> Result<Selector, ApiError> {
    kube_lite_proto::labels::from_label_selector(s).map_err(|e| ApiError::invalid(field, e))
}

fn check_selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
) -> R {
    let Some(sel) = selector else {
        return Err(ApiError::invalid("spec.selector", "is required"));
    };
    if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        return Err(ApiError::invalid(
            "spec.selector",
            "empty selector is invalid for a ReplicaSet or Deployment",
        ));
    }
    super::check_labels("spec.selector.match_labels", &sel.match_labels)?;
    let selector = selector_of("spec.selector", sel)?;
    let Some(t) = template else {
        return Err(ApiError::invalid("spec.template", "is required"));
    };
    let tm = t.metadata.clone().unwrap_or_default();
    super::check_labels("spec.template.metadata.labels", &tm.labels)?;
    if !selector.matches(&tm.labels) {
        return Err(ApiError::invalid(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ));
    }
    let pod = Pod {
        metadata: Some(ObjectMeta {
            name: "template".into(),
            ..Default::default()
        }),
        spec: t.spec.clone(),
        status: None,
    };
    validate_pod(&pod).map_err(|e| match e {
        ApiError::Invalid(m) => ApiError::Invalid(format!("spec.template.{m}")),
        other => other,
    })
}

fn check_replicas(r: Option<i32>) -> R {
    let r = wl::replicas(r);
    if !(0..=MAX_REPLICAS).contains(&r) {
        return Err(ApiError::invalid(
            "spec.replicas",
            format!("must be between 0 and {MAX_REPLICAS} (got {r})"),
        ));
    }
    Ok(())
}

pub fn validate_replica_set(rs: &ReplicaSet) -> R {
    let Some(spec) = &rs.spec else {
        return Err(ApiError::invalid("spec", "is required"));
    };
    check_replicas(spec.replicas)?;
    if spec.min_ready_seconds < 0 {
        return Err(ApiError::invalid("spec.min_ready_seconds", "must be >= 0"));
    }
    check_selector_and_template(spec.selector.as_ref(), spec.template.as_ref())
}

pub fn validate_deployment(d: &Deployment) -> R {
    let Some(spec) = &d.spec else {
        return Err(ApiError::invalid("spec", "is required"));
    };
    check_replicas(spec.replicas)?;
    if spec.min_ready_seconds < 0 {
        return Err(ApiError::invalid("spec.min_ready_seconds", "must be >= 0"));
    }
    if spec.revision_history_limit.is_some_and(|l| l < 0) {
        return Err(ApiError::invalid(
            "spec.revision_history_limit",
            "must be >= 0",
        ));
    }
    if let Some(p) = spec.progress_deadline_seconds {
        if p <= spec.min_ready_seconds {
            return Err(ApiError::invalid(
                "spec.progress_deadline_seconds",
                "must be greater than min_ready_seconds",
            ));
        }
    }
    let st = spec.strategy.clone().unwrap_or_default();
    match st.r#type.as_str() {
        strategy::ROLLING_UPDATE => {
            let ru = st.rolling_update.unwrap_or_default();
            let mut zero = 0;
            for (f, v) in [
                ("max_surge", &ru.max_surge),
                ("max_unavailable", &ru.max_unavailable),
            ] {
                let field = format!("spec.strategy.rolling_update.{f}");
                if v.is_empty() {
                    continue;
                }
                match IntOrPercent::parse(v) {
                    Ok(IntOrPercent::Int(0) | IntOrPercent::Percent(0)) => zero += 1,
                    Ok(_) => {}
                    Err(e) => return Err(ApiError::invalid(field, e)),
                }
            }
            if zero == 2 {
                return Err(ApiError::invalid(
                    "spec.strategy.rolling_update.max_unavailable",
                    "may not be 0 when max_surge is 0",
                ));
            }
        }
        strategy::RECREATE => {
            if st.rolling_update.is_some() {
                return Err(ApiError::invalid(
                    "spec.strategy.rolling_update",
                    "may not be specified when strategy type is 'Recreate'",
                ));
            }
        }
        other => {
            return Err(ApiError::invalid(
                "spec.strategy.type",
                format!("must be RollingUpdate or Recreate (got {})", quote(other)),
            ))
        }
    }
    check_selector_and_template(spec.selector.as_ref(), spec.template.as_ref())
}

/// Names of the keys of a map, sorted (for messages).
pub fn sorted_keys<V>(m: &std::collections::HashMap<String, V>) -> Vec<&str> {
    let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// `metadata.generate_name` + 5 random characters, when the name is empty.
pub fn generate_name(m: &mut ObjectMeta) {
    if m.name.is_empty() && !m.generate_name.is_empty() && is_prefix_ok(&m.generate_name) {
        let id = uuid::Uuid::new_v4();
        m.name = format!("{}{}", m.generate_name, wl::random_suffix(id.as_bytes(), 5));
    }
}

fn is_prefix_ok(p: &str) -> bool {
    p.len() <= 58 && is_dns1123_subdomain(&format!("{p}x"))
}

/// Unique values (for finalizer lists).
pub fn dedup(v: &mut Vec<String>) {
    let mut seen = HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        Container, DeploymentSpec, DeploymentStrategy, LabelSelectorRequirement, OwnerReference,
        PodSpec, RollingUpdateDeployment,
    };

    fn template(labels: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    ..Default::default()
                }],
                restart_policy: "Always".into(),
                termination_grace_period_seconds: 30,
                ..Default::default()
            }),
        }
    }

    fn deploy(sel: &[(&str, &str)], labels: &[(&str, &str)]) -> Deployment {
        let mut spec = DeploymentSpec {
            selector: Some(LabelSelector {
                match_labels: sel
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            template: Some(template(labels)),
            ..Default::default()
        };
        wl::default_deployment_spec(&mut spec);
        Deployment {
            metadata: None,
            spec: Some(spec),
            status: None,
        }
    }

    fn msg(r: R) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn deployments() {
        assert!(validate_deployment(&deploy(&[("app", "web")], &[("app", "web")])).is_ok());
        assert_eq!(
            msg(validate_deployment(&deploy(
                &[("app", "web")],
                &[("app", "db")]
            ))),
            "spec.template.metadata.labels: `selector` does not match template `labels`"
        );
        assert_eq!(
            msg(validate_deployment(&deploy(&[], &[("app", "db")]))),
            "spec.selector: empty selector is invalid for a ReplicaSet or Deployment"
        );
        let mut d = deploy(&[("app", "web")], &[("app", "web")]);
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            r#type: "RollingUpdate".into(),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: "0".into(),
                max_unavailable: "0%".into(),
            }),
        });
        assert_eq!(
            msg(validate_deployment(&d)),
            "spec.strategy.rolling_update.max_unavailable: may not be 0 when max_surge is 0"
        );
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            r#type: "RollingUpdate".into(),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: "abc".into(),
                max_unavailable: "1".into(),
            }),
        });
        assert!(msg(validate_deployment(&d))
            .starts_with("spec.strategy.rolling_update.max_surge: \"abc\" must be"));
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            r#type: "BlueGreen".into(),
            rolling_update: None,
        });
        assert_eq!(
            msg(validate_deployment(&d)),
            "spec.strategy.type: must be RollingUpdate or Recreate (got \"BlueGreen\")"
        );
        let mut d = deploy(&[("app", "web")], &[("app", "web")]);
        d.spec.as_mut().unwrap().replicas = Some(-1);
        assert!(msg(validate_deployment(&d)).starts_with("spec.replicas: must be between"));
        let mut d = deploy(&[("app", "web")], &[("app", "web")]);
        d.spec.as_mut().unwrap().template.as_mut().unwrap().spec = Some(PodSpec::default());
        assert_eq!(
            msg(validate_deployment(&d)),
            "spec.template.spec.containers: at least one container is required"
        );
        let mut d = deploy(&[], &[("app", "web")]);
        d.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "In".into(),
                values: vec!["web".into(), "api".into()],
            }],
            ..Default::default()
        });
        assert!(validate_deployment(&d).is_ok());
    }

    #[test]
    fn config_maps_and_secrets() {
        let mut c = ConfigMap {
            data: [("a.conf".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        assert!(validate_config_map(&c).is_ok());
        c.binary_data.insert("a.conf".into(), vec![1]);
        assert_eq!(
            msg(validate_config_map(&c)),
            "binary_data[a.conf]: duplicate of a key in data"
        );
        c.binary_data.clear();
        c.data.insert("big".into(), "x".repeat(MAX_CONFIG_BYTES));
        assert!(msg(validate_config_map(&c)).starts_with("data: Too long"));
        c.data.clear();
        c.data.insert("a/b".into(), "x".into());
        assert!(msg(validate_config_map(&c)).starts_with("data[a/b]: a valid config key"));

        let mut s = Secret {
            string_data: [("password".to_string(), "hunter2".to_string())].into(),
            ..Default::default()
        };
        prepare_secret(&mut s);
        assert_eq!(s.r#type, "Opaque");
        assert_eq!(s.data["password"], b"hunter2");
        assert!(s.string_data.is_empty());
        assert!(validate_secret(&s).is_ok());
        s.r#type = "kubernetes.io/tls".into();
        assert_eq!(
            msg(validate_secret(&s)),
            "data[tls.crt]: is required for a Secret of type kubernetes.io/tls"
        );
    }

    #[test]
    fn metadata_extras() {
        let mut m = ObjectMeta {
            owner_references: vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "rs".into(),
                uid: String::new(),
                controller: true,
                block_owner_deletion: true,
            }],
            ..Default::default()
        };
        assert_eq!(
            msg(check_meta_extra(&m)),
            "metadata.owner_references[0].uid: is required"
        );
        m.owner_references[0].uid = "u".into();
        assert!(check_meta_extra(&m).is_ok());
        m.owner_references.push(m.owner_references[0].clone());
        assert_eq!(
            msg(check_meta_extra(&m)),
            "metadata.owner_references: only one reference can have controller set to true"
        );
        m.owner_references.pop();
        m.finalizers = vec!["bad finalizer".into()];
        assert!(msg(check_meta_extra(&m)).starts_with("metadata.finalizers[0]:"));
        let mut g = ObjectMeta {
            generate_name: "web-".into(),
            ..Default::default()
        };
        generate_name(&mut g);
        assert!(
            g.name.starts_with("web-") && g.name.len() == 9,
            "{}",
            g.name
        );
    }
}
