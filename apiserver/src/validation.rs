//! Validation, and the preparation of a Create (server-owned fields reset, core's
//! defaults applied): pure functions over the wire types. Every error names the field
//! path and the rule: `spec.ports[0].port: must be between 1 and 65535`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use kube_lite_core::consts::{condition_status, phase, protocol, restart_policy, service_type};
use kube_lite_core::defaults::{default_endpoints, default_pod_spec, default_service_spec};
use kube_lite_proto::v1::{Endpoints, Node, ObjectMeta, Pod, PodStatus, Service};

use crate::error::ApiError;
use crate::resource::{Kind, Object};

type R = Result<(), ApiError>;

const LABEL_MSG: &str = "must be a DNS-1123 label (lowercase a-z, 0-9, '-', at most 63 characters)";
const SUBDOMAIN_MSG: &str =
    "must be a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.', at most 253 characters)";

pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Label value / key name: ≤63, alphanumerics plus `-_.`, starting and ending alphanumeric.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

pub fn check_label_key(field: &str, key: &str) -> R {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            return Err(ApiError::invalid(
                field,
                format!("label key {key:?}: prefix {p:?} {SUBDOMAIN_MSG}"),
            ));
        }
    }
    if !is_qualified_part(name) {
        return Err(ApiError::invalid(
            field,
            format!(
                "label key {key:?}: name part must be at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with an alphanumeric character (optionally prefixed by a DNS subdomain and '/')"
            ),
        ));
    }
    Ok(())
}

pub fn check_label_value(field: &str, key: &str, value: &str) -> R {
    if !value.is_empty() && !is_qualified_part(value) {
        return Err(ApiError::invalid(
            format!("{field}[{key}]"),
            format!(
                "label value {value:?} must be empty or at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

pub fn check_labels(field: &str, labels: &HashMap<String, String>) -> R {
    let mut keys: Vec<_> = labels.keys().collect();
    keys.sort();
    for k in keys {
        check_label_key(field, k)?;
        check_label_value(field, k, &labels[k])?;
    }
    Ok(())
}

fn check_ip(field: &str, ip: &str) -> R {
    if ip.parse::<Ipv4Addr>().is_err() {
        return Err(ApiError::invalid(
            field,
            format!("{ip:?} is not a valid IPv4 address"),
        ));
    }
    Ok(())
}

fn check_port(field: &str, port: i32) -> R {
    if !(1..=65535).contains(&port) {
        return Err(ApiError::invalid(
            field,
            format!("must be between 1 and 65535 (got {port})"),
        ));
    }
    Ok(())
}

fn check_protocol(field: &str, p: &str) -> R {
    if p != protocol::TCP && p != protocol::UDP {
        return Err(ApiError::invalid(
            field,
            format!("must be TCP or UDP (got {p:?})"),
        ));
    }
    Ok(())
}

fn check_meta(kind: Kind, m: &ObjectMeta) -> R {
    if m.name.is_empty() {
        return Err(ApiError::invalid("metadata.name", "is required"));
    }
    if kind == Kind::Node {
        if !is_dns1123_subdomain(&m.name) {
            return Err(ApiError::invalid("metadata.name", SUBDOMAIN_MSG));
        }
    } else {
        if !is_dns1123_label(&m.name) {
            return Err(ApiError::invalid("metadata.name", LABEL_MSG));
        }
        if !is_dns1123_label(&m.namespace) {
            return Err(ApiError::invalid("metadata.namespace", LABEL_MSG));
        }
    }
    check_labels("metadata.labels", &m.labels)?;
    let mut size = 0;
    for (k, v) in &m.annotations {
        check_label_key("metadata.annotations", k)?;
        size += k.len() + v.len();
    }
    if size > 256 * 1024 {
        return Err(ApiError::invalid(
            "metadata.annotations",
            "total size must be at most 256 KiB",
        ));
    }
    Ok(())
}

/// Prepares a Create: resets server-owned fields, applies defaults, validates.
pub fn prepare_create(obj: &mut Object) -> R {
    let kind = obj.kind();
    {
        let m = obj.meta_mut();
        m.namespace = kind.object_ref(&m.namespace, "").namespace;
        m.uid.clear();
        m.resource_version = 0;
        m.creation_timestamp = 0;
        m.deletion_timestamp = 0;
        m.deletion_grace_period_seconds = 0;
    }
    match obj {
        Object::Pod(p) => {
            p.status = Some(PodStatus {
                phase: phase::PENDING.into(),
                ..Default::default()
            });
            default_pod_spec(p.spec.get_or_insert_with(Default::default));
        }
        Object::Service(s) => {
            s.status = Some(Default::default());
            default_service_spec(s.spec.get_or_insert_with(Default::default));
        }
        Object::Node(n) => {
            n.status = Some(Default::default());
            let spec = n.spec.get_or_insert_with(Default::default);
            spec.pod_cidr.clear();
        }
        Object::Endpoints(e) => default_endpoints(e),
    }
    validate(obj)
}

/// Validates a whole object (after defaults).
pub fn validate(obj: &Object) -> R {
    check_meta(obj.kind(), obj.meta())?;
    match obj {
        Object::Pod(p) => validate_pod(p),
        Object::Service(s) => validate_service(s),
        Object::Node(n) => validate_node(n),
        Object::Endpoints(e) => validate_endpoints(e),
    }
}

fn validate_pod(p: &Pod) -> R {
    let Some(spec) = &p.spec else {
        return Err(ApiError::invalid("spec", "is required"));
    };
    if !spec.node_name.is_empty() && !is_dns1123_subdomain(&spec.node_name) {
        return Err(ApiError::invalid("spec.node_name", SUBDOMAIN_MSG));
    }
    if spec.containers.is_empty() {
        return Err(ApiError::invalid(
            "spec.containers",
            "at least one container is required",
        ));
    }
    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("spec.containers[{i}]");
        if c.name.is_empty() {
            return Err(ApiError::invalid(format!("{f}.name"), "is required"));
        }
        if !is_dns1123_label(&c.name) {
            return Err(ApiError::invalid(format!("{f}.name"), LABEL_MSG));
        }
        if !names.insert(c.name.as_str()) {
            return Err(ApiError::invalid(
                format!("{f}.name"),
                format!("duplicate container name {:?}", c.name),
            ));
        }
        if c.image.trim().is_empty() {
            return Err(ApiError::invalid(format!("{f}.image"), "is required"));
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                return Err(ApiError::invalid(
                    format!("{f}.env[{j}].name"),
                    "must be non-empty and contain no '=' or NUL",
                ));
            }
        }
        let mut port_names = HashSet::new();
        for (j, port) in c.ports.iter().enumerate() {
            check_port(
                &format!("{f}.ports[{j}].container_port"),
                port.container_port,
            )?;
            check_protocol(&format!("{f}.ports[{j}].protocol"), &port.protocol)?;
            if !port.name.is_empty() && !port_names.insert(port.name.as_str()) {
                return Err(ApiError::invalid(
                    format!("{f}.ports[{j}].name"),
                    format!("duplicate port name {:?}", port.name),
                ));
            }
        }
    }
    let policies = [
        restart_policy::ALWAYS,
        restart_policy::ON_FAILURE,
        restart_policy::NEVER,
    ];
    if !policies.contains(&spec.restart_policy.as_str()) {
        return Err(ApiError::invalid(
            "spec.restart_policy",
            format!(
                "must be one of Always, OnFailure, Never (got {:?})",
                spec.restart_policy
            ),
        ));
    }
    if spec.termination_grace_period_seconds < 0 {
        return Err(ApiError::invalid(
            "spec.termination_grace_period_seconds",
            "must be >= 0",
        ));
    }
    check_labels("spec.node_selector", &spec.node_selector)?;
    if let Some(st) = &p.status {
        let phases = [
            "",
            phase::PENDING,
            phase::RUNNING,
            phase::SUCCEEDED,
            phase::FAILED,
        ];
        if !phases.contains(&st.phase.as_str()) {
            return Err(ApiError::invalid(
                "status.phase",
                format!(
                    "must be one of Pending, Running, Succeeded, Failed (got {:?})",
                    st.phase
                ),
            ));
        }
        if !st.pod_ip.is_empty() {
            check_ip("status.pod_ip", &st.pod_ip)?;
        }
        if !st.host_ip.is_empty() {
            check_ip("status.host_ip", &st.host_ip)?;
        }
    }
    Ok(())
}

fn validate_service(s: &Service) -> R {
    let Some(spec) = &s.spec else {
        return Err(ApiError::invalid("spec", "is required"));
    };
    if spec.r#type != service_type::CLUSTER_IP {
        return Err(ApiError::invalid(
            "spec.type",
            format!("only ClusterIP is supported (got {:?})", spec.r#type),
        ));
    }
    if spec.ports.is_empty() {
        return Err(ApiError::invalid(
            "spec.ports",
            "at least one port is required",
        ));
    }
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        check_port(&format!("{f}.port"), p.port)?;
        check_port(&format!("{f}.target_port"), p.target_port)?;
        check_protocol(&format!("{f}.protocol"), &p.protocol)?;
        if spec.ports.len() > 1 {
            if p.name.is_empty() {
                return Err(ApiError::invalid(
                    format!("{f}.name"),
                    "is required when the service has more than one port",
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ApiError::invalid(
                    format!("{f}.name"),
                    format!("duplicate port name {:?}", p.name),
                ));
            }
        }
        if !p.name.is_empty() && !is_dns1123_label(&p.name) {
            return Err(ApiError::invalid(format!("{f}.name"), LABEL_MSG));
        }
        if !seen.insert((p.port, p.protocol.as_str())) {
            return Err(ApiError::invalid(
                f.clone(),
                format!("duplicate port {}/{}", p.port, p.protocol),
            ));
        }
    }
    check_labels("spec.selector", &spec.selector)?;
    if !spec.cluster_ip.is_empty() {
        check_ip("spec.cluster_ip", &spec.cluster_ip)?;
    }
    Ok(())
}

fn validate_node(n: &Node) -> R {
    if let Some(spec) = &n.spec {
        if !spec.address.is_empty() {
            check_ip("spec.address", &spec.address)?;
        }
    }
    if let Some(st) = &n.status {
        if !st.address.is_empty() {
            check_ip("status.address", &st.address)?;
        }
        for (i, c) in st.conditions.iter().enumerate() {
            if c.r#type.is_empty() {
                return Err(ApiError::invalid(
                    format!("status.conditions[{i}].type"),
                    "is required",
                ));
            }
            let statuses = [
                condition_status::TRUE,
                condition_status::FALSE,
                condition_status::UNKNOWN,
            ];
            if !statuses.contains(&c.status.as_str()) {
                return Err(ApiError::invalid(
                    format!("status.conditions[{i}].status"),
                    format!("must be True, False or Unknown (got {:?})", c.status),
                ));
            }
        }
    }
    Ok(())
}

fn validate_endpoints(e: &Endpoints) -> R {
    for (i, s) in e.subsets.iter().enumerate() {
        for (j, a) in s.addresses.iter().enumerate() {
            check_ip(&format!("subsets[{i}].addresses[{j}].ip"), &a.ip)?;
        }
        for (j, a) in s.not_ready_addresses.iter().enumerate() {
            check_ip(&format!("subsets[{i}].not_ready_addresses[{j}].ip"), &a.ip)?;
        }
        for (j, p) in s.ports.iter().enumerate() {
            check_port(&format!("subsets[{i}].ports[{j}].port"), p.port)?;
            check_protocol(&format!("subsets[{i}].ports[{j}].protocol"), &p.protocol)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("node-1.example.com"));
        assert!(!is_dns1123_subdomain("a..b"));
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_label_key("l", "app").is_ok());
        assert!(check_label_key("l", "example.com/app_name.x").is_ok());
        assert!(check_label_key("l", "Ex.com/app").is_err());
        assert!(check_label_key("l", "-app").is_err());
        assert!(check_label_key("l", &"a".repeat(64)).is_err());
        assert!(check_label_value("l", "k", "").is_ok());
        assert!(check_label_value("l", "k", "v_1.A").is_ok());
        assert!(check_label_value("l", "k", "v!").is_err());
    }
}
