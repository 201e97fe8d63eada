//! Validation, and the preparation of a Create (server-owned fields reset, core's
//! defaults applied): pure functions over the wire types. Every error names the field
//! path and the rule: `spec.ports[0].port: must be between 1 and 65535`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use kube_lite_core::consts::{
    condition_status, dns_policy, phase, protocol, restart_policy, service_type, session_affinity,
    traffic_policy, CLUSTER_IP_NONE,
};
use kube_lite_core::defaults::needs_node_ports;
use kube_lite_core::defaults::{default_endpoints, default_pod_spec, default_service_spec};
use kube_lite_proto::v1::{
    DeleteRequest, EndpointAddress, Endpoints, ImageChunk, Lease, LogsRequest, Node, ObjectMeta,
    Pod, PodStatus, Service, WatchRequest,
};

use crate::error::{quote, ApiError};
use crate::resource::{Kind, Object};
use kube_lite_core::workloads::{self as wl, finalizer, namespace_phase};
use kube_lite_proto::v1::NamespaceStatus;

pub mod workloads;

mod pod_extras;
mod pod_volumes;
mod security;

type R = Result<(), ApiError>;

/// Longest grace period a pod or a delete may ask for (Kubernetes has no maximum; a
/// bounded one keeps every deadline computed from it representable).
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 86_400;
/// Highest revision a Watch may start from (revisions are int64 in Kubernetes; the
/// bound keeps `revision + 1` from wrapping).
pub const MAX_RESOURCE_VERSION: u64 = i64::MAX as u64;
/// Longest bookmark interval a Watch may ask for: one hour.
pub const MAX_BOOKMARK_INTERVAL_MS: u32 = 3_600_000;
/// Longest `status.daemon_endpoint` URL.
pub const MAX_ENDPOINT_URL_LEN: usize = 256;

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

/// IANA_SVC_NAME (Kubernetes' rule for container port names): at most 15 characters
/// of a-z, 0-9 and '-', at least one letter, no leading, trailing or double '-'.
pub fn is_iana_svc_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

const IANA_SVC_NAME_MSG: &str = "must be an IANA_SVC_NAME (at most 15 characters of a-z, 0-9, '-', at least one letter, no leading, trailing or double '-')";

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
                format!(
                    "label key {}: prefix {} {SUBDOMAIN_MSG}",
                    quote(key),
                    quote(p)
                ),
            ));
        }
    }
    if !is_qualified_part(name) {
        return Err(ApiError::invalid(
            field,
            format!(
                "label key {}: name part must be at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with an alphanumeric character (optionally prefixed by a DNS subdomain and '/')",
                quote(key)
            ),
        ));
    }
    Ok(())
}

pub fn check_label_value(field: &str, key: &str, value: &str) -> R {
    if !value.is_empty() && !is_qualified_part(value) {
        return Err(ApiError::invalid(
            format!("{field}[{}]", crate::error::clip(key)),
            format!(
                "label value {} must be empty or at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with an alphanumeric character",
                quote(value)
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

fn parse_ip(field: &str, ip: &str) -> Result<Ipv4Addr, ApiError> {
    ip.parse::<Ipv4Addr>()
        .map_err(|_| ApiError::invalid(field, format!("{} is not a valid IPv4 address", quote(ip))))
}

fn check_ip(field: &str, ip: &str) -> R {
    parse_ip(field, ip).map(|_| ())
}

/// Why `ip` cannot be a host's or a pod's own address (Kubernetes refuses the
/// unspecified, loopback, link-local and multicast ranges for endpoint and node
/// addresses; the limited broadcast address too), or `None` when it is a usable
/// unicast address.
pub fn special_ip(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("in the loopback range 127.0.0.0/8")
    } else if ip.is_link_local() {
        Some("in the link-local range 169.254.0.0/16")
    } else if ip.is_multicast() {
        Some("in the multicast range 224.0.0.0/4")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else if ip.octets()[0] >= 240 {
        Some("in the reserved range 240.0.0.0/4")
    } else if ip.octets()[0] == 0 {
        Some("in the range 0.0.0.0/8 (\"this network\")")
    } else {
        None
    }
}

/// A valid IPv4 address that may be a node's, a pod's or an endpoint's (no loopback,
/// multicast, broadcast, unspecified or link-local address: those would become VXLAN
/// flood destinations or DNAT targets on every node).
pub fn check_unicast_ip(field: &str, ip: &str) -> R {
    let a = parse_ip(field, ip)?;
    match special_ip(a) {
        Some(why) => Err(ApiError::invalid(
            field,
            format!("{a} may not be used: it is {why} (a unicast host address is required)"),
        )),
        None => Ok(()),
    }
}

/// `status.daemon_endpoint`: empty, or an `http://` / `https://` URL with a host and
/// no path (the apiserver connects to it for logs).
pub fn check_daemon_endpoint(field: &str, url: &str) -> R {
    if url.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| Err(ApiError::invalid(field, format!("{} {why}", quote(url))));
    if url.len() > MAX_ENDPOINT_URL_LEN {
        return bad(&format!("is longer than {MAX_ENDPOINT_URL_LEN} bytes"));
    }
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return bad("is not a valid URL");
    };
    if !matches!(uri.scheme_str(), Some("http") | Some("https"))
        || uri.host().is_none_or(str::is_empty)
        || !matches!(uri.path(), "" | "/")
        || uri.query().is_some()
    {
        return bad("must be http://HOST[:PORT] or https://HOST[:PORT]");
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
            format!("must be TCP or UDP (got {})", quote(p)),
        ));
    }
    Ok(())
}

fn check_meta(kind: Kind, m: &ObjectMeta) -> R {
    if m.name.is_empty() {
        return Err(ApiError::invalid("metadata.name", "is required"));
    }
    if matches!(
        kind,
        Kind::Node | Kind::Event | Kind::ConfigMap | Kind::Secret | Kind::Lease
    ) {
        if !is_dns1123_subdomain(&m.name) {
            return Err(ApiError::invalid("metadata.name", SUBDOMAIN_MSG));
        }
    } else if !is_dns1123_label(&m.name) {
        return Err(ApiError::invalid("metadata.name", LABEL_MSG));
    }
    if kind.namespaced() && !is_dns1123_label(&m.namespace) {
        return Err(ApiError::invalid("metadata.namespace", LABEL_MSG));
    }
    check_labels("metadata.labels", &m.labels)?;
    workloads::check_meta_extra(m)?;
    if kind == Kind::Pod && !m.finalizers.is_empty() {
        return Err(ApiError::invalid(
            "metadata.finalizers",
            "not supported for pods (their deletion is finished by the node)",
        ));
    }
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
        m.generation = 1;
        workloads::generate_name(m);
        workloads::dedup(&mut m.finalizers);
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
        Object::Namespace(n) => {
            n.status = Some(NamespaceStatus {
                phase: namespace_phase::ACTIVE.into(),
            });
            let spec = n.spec.get_or_insert_with(Default::default);
            if !spec.finalizers.iter().any(|f| f == finalizer::KUBERNETES) {
                spec.finalizers.push(finalizer::KUBERNETES.into());
            }
        }
        Object::ConfigMap(_) => {}
        Object::Secret(s) => workloads::prepare_secret(s),
        Object::Event(e) => {
            if e.count == 0 {
                e.count = 1;
            }
            if e.r#type.is_empty() {
                e.r#type = "Normal".into();
            }
        }
        Object::ReplicaSet(rs) => {
            rs.status = Some(Default::default());
            wl::default_replica_set_spec(rs.spec.get_or_insert_with(Default::default));
        }
        Object::Deployment(d) => {
            d.status = Some(Default::default());
            wl::default_deployment_spec(d.spec.get_or_insert_with(Default::default));
        }
        Object::Lease(l) => {
            l.spec.get_or_insert_with(Default::default);
        }
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
        Object::Namespace(n) => workloads::validate_namespace(n),
        Object::ConfigMap(c) => workloads::validate_config_map(c),
        Object::Secret(s) => workloads::validate_secret(s),
        Object::Event(e) => workloads::validate_event(e),
        Object::ReplicaSet(rs) => workloads::validate_replica_set(rs),
        Object::Deployment(d) => workloads::validate_deployment(d),
        Object::Lease(l) => validate_lease(l),
    }
}

/// Longest `spec.lease_duration_seconds`: one day.
pub const MAX_LEASE_DURATION_SECONDS: i32 = 86_400;

fn validate_lease(l: &Lease) -> R {
    let Some(spec) = &l.spec else {
        return Ok(());
    };
    if spec.holder_identity.len() > 253 {
        return Err(ApiError::invalid(
            "spec.holder_identity",
            "must be at most 253 characters",
        ));
    }
    if !(0..=MAX_LEASE_DURATION_SECONDS).contains(&spec.lease_duration_seconds) {
        return Err(ApiError::invalid(
            "spec.lease_duration_seconds",
            format!(
                "must be between 0 and {MAX_LEASE_DURATION_SECONDS} (got {})",
                spec.lease_duration_seconds
            ),
        ));
    }
    for (field, v) in [
        ("spec.acquire_time", spec.acquire_time),
        ("spec.renew_time", spec.renew_time),
        ("spec.lease_transitions", i64::from(spec.lease_transitions)),
    ] {
        if v < 0 {
            return Err(ApiError::invalid(field, "must not be negative"));
        }
    }
    Ok(())
}

/// `terminationMessagePath`: absolute, a file (not `/`), no `..`, no NUL, at most
/// PATH_MAX; `terminationMessagePolicy`: File or FallbackToLogsOnError. Empty values are
/// the server's defaults (filled before validation).
fn check_termination_message(f: &str, c: &kube_lite_proto::v1::Container) -> R {
    use kube_lite_core::consts::termination_message as tm;
    let p = &c.termination_message_path;
    let field = format!("{f}.termination_message_path");
    if p.len() > tm::MAX_PATH_LEN {
        return Err(ApiError::invalid(
            field,
            format!(
                "must be at most {} characters (got {})",
                tm::MAX_PATH_LEN,
                p.len()
            ),
        ));
    }
    if !p.is_empty() {
        let why = if !p.starts_with('/') {
            Some("must be an absolute path")
        } else if p.contains('\0') {
            Some("must not contain NUL")
        } else if p.split('/').any(|c| c == "..") {
            Some("must not contain '..'")
        } else if p.trim_end_matches('/').is_empty() {
            Some("must name a file, not /")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ApiError::invalid(field, format!("{} {why}", quote(p))));
        }
    }
    let pol = c.termination_message_policy.as_str();
    if !["", tm::FILE, tm::FALLBACK_TO_LOGS_ON_ERROR].contains(&pol) {
        return Err(ApiError::invalid(
            format!("{f}.termination_message_policy"),
            format!(
                "must be one of {}, {} (got {})",
                tm::FILE,
                tm::FALLBACK_TO_LOGS_ON_ERROR,
                quote(pol)
            ),
        ));
    }
    Ok(())
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
    let all = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.init_containers[{i}]"), c, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c, false)),
        );
    for (f, c, init) in all {
        if init {
            pod_extras::check_init_container(&f, c)?;
            security::check_init_container(&f, c)?;
        }
        if c.name.is_empty() {
            return Err(ApiError::invalid(format!("{f}.name"), "is required"));
        }
        if !is_dns1123_label(&c.name) {
            return Err(ApiError::invalid(format!("{f}.name"), LABEL_MSG));
        }
        if !names.insert(c.name.as_str()) {
            return Err(ApiError::invalid(
                format!("{f}.name"),
                format!("duplicate container name {}", quote(&c.name)),
            ));
        }
        if c.image.trim().is_empty() {
            return Err(ApiError::invalid(format!("{f}.image"), "is required"));
        }
        if !["", "Always", "IfNotPresent", "Never"].contains(&c.image_pull_policy.as_str()) {
            return Err(ApiError::invalid(
                format!("{f}.image_pull_policy"),
                format!(
                    "must be one of Always, IfNotPresent, Never (got {})",
                    quote(&c.image_pull_policy)
                ),
            ));
        }
        check_termination_message(&f, c)?;
        for (j, e) in c.env.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                return Err(ApiError::invalid(
                    format!("{f}.env[{j}].name"),
                    "must be non-empty and contain no '=' or NUL",
                ));
            }
            pod_extras::check_env_source(&format!("{f}.env[{j}]"), e)?;
        }
        let mut port_names = HashSet::new();
        for (j, port) in c.ports.iter().enumerate() {
            check_port(
                &format!("{f}.ports[{j}].container_port"),
                port.container_port,
            )?;
            check_protocol(&format!("{f}.ports[{j}].protocol"), &port.protocol)?;
            if !port.name.is_empty() && !is_iana_svc_name(&port.name) {
                return Err(ApiError::invalid(
                    format!("{f}.ports[{j}].name"),
                    format!("{} {IANA_SVC_NAME_MSG}", quote(&port.name)),
                ));
            }
            if !port.name.is_empty() && !port_names.insert(port.name.as_str()) {
                return Err(ApiError::invalid(
                    format!("{f}.ports[{j}].name"),
                    format!("duplicate port name {}", quote(&port.name)),
                ));
            }
        }
        pod_extras::check_container(&f, c)?;
        pod_volumes::check_container(&f, c, spec)?;
        security::check_container(&f, c)?;
    }
    pod_volumes::check_spec(spec)?;
    security::check_pod(spec)?;
    let policies = [
        restart_policy::ALWAYS,
        restart_policy::ON_FAILURE,
        restart_policy::NEVER,
    ];
    if !policies.contains(&spec.restart_policy.as_str()) {
        return Err(ApiError::invalid(
            "spec.restart_policy",
            format!(
                "must be one of Always, OnFailure, Never (got {})",
                quote(&spec.restart_policy)
            ),
        ));
    }
    let grace = spec.termination_grace_period_seconds;
    if !(0..=MAX_GRACE_PERIOD_SECONDS).contains(&grace) {
        return Err(ApiError::invalid(
            "spec.termination_grace_period_seconds",
            format!("must be >= 0 and <= {MAX_GRACE_PERIOD_SECONDS} (one day) (got {grace})"),
        ));
    }
    check_labels("spec.node_selector", &spec.node_selector)?;
    validate_pod_dns(spec)?;
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
                    "must be one of Pending, Running, Succeeded, Failed (got {})",
                    quote(&st.phase)
                ),
            ));
        }
        if !st.pod_ip.is_empty() {
            check_unicast_ip("status.pod_ip", &st.pod_ip)?;
        }
        if !st.host_ip.is_empty() {
            check_unicast_ip("status.host_ip", &st.host_ip)?;
        }
    }
    Ok(())
}

fn validate_service(s: &Service) -> R {
    let Some(spec) = &s.spec else {
        return Err(ApiError::invalid("spec", "is required"));
    };
    let types = [
        service_type::CLUSTER_IP,
        service_type::NODE_PORT,
        service_type::LOAD_BALANCER,
    ];
    if !types.contains(&spec.r#type.as_str()) {
        return Err(ApiError::invalid(
            "spec.type",
            format!(
                "must be one of ClusterIP, NodePort, LoadBalancer (got {})",
                quote(&spec.r#type)
            ),
        ));
    }
    let headless = spec.cluster_ip == CLUSTER_IP_NONE;
    let node_ports = needs_node_ports(&spec.r#type);
    if headless && spec.r#type != service_type::CLUSTER_IP {
        return Err(ApiError::invalid(
            "spec.cluster_ip",
            format!(
                "may be None (headless) only for type ClusterIP (got type {})",
                spec.r#type
            ),
        ));
    }
    if spec.ports.is_empty() && !headless {
        return Err(ApiError::invalid(
            "spec.ports",
            "at least one port is required",
        ));
    }
    if spec.ports.len() > 100 {
        return Err(ApiError::invalid(
            "spec.ports",
            format!("at most 100 ports (got {})", spec.ports.len()),
        ));
    }
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        check_port(&format!("{f}.port"), p.port)?;
        if p.target_port_name.is_empty() {
            check_port(&format!("{f}.target_port"), p.target_port)?;
        } else {
            if p.target_port != 0 {
                return Err(ApiError::invalid(
                    format!("{f}.target_port"),
                    format!(
                        "must be 0 when target_port_name is set (got {} and {})",
                        p.target_port,
                        quote(&p.target_port_name)
                    ),
                ));
            }
            if !is_iana_svc_name(&p.target_port_name) {
                return Err(ApiError::invalid(
                    format!("{f}.target_port_name"),
                    format!("{} {IANA_SVC_NAME_MSG}", quote(&p.target_port_name)),
                ));
            }
        }
        check_protocol(&format!("{f}.protocol"), &p.protocol)?;
        if node_ports {
            if p.node_port != 0 {
                check_port(&format!("{f}.node_port"), p.node_port)?;
            }
        } else if p.node_port != 0 {
            return Err(ApiError::invalid(
                format!("{f}.node_port"),
                format!(
                    "may not be set for type {} (got {})",
                    spec.r#type, p.node_port
                ),
            ));
        }
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
                    format!("duplicate port name {}", quote(&p.name)),
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
    if !spec.cluster_ip.is_empty() && !headless {
        check_ip("spec.cluster_ip", &spec.cluster_ip)?;
    }
    let policy = spec.external_traffic_policy.as_str();
    if node_ports {
        if policy != traffic_policy::CLUSTER && policy != traffic_policy::LOCAL {
            return Err(ApiError::invalid(
                "spec.external_traffic_policy",
                format!("must be Cluster or Local (got {})", quote(policy)),
            ));
        }
    } else if !policy.is_empty() {
        return Err(ApiError::invalid(
            "spec.external_traffic_policy",
            format!(
                "may only be set for NodePort and LoadBalancer services (type is {})",
                spec.r#type
            ),
        ));
    }
    match spec.session_affinity.as_str() {
        session_affinity::NONE => {
            if spec.session_affinity_timeout_seconds != 0 {
                return Err(ApiError::invalid(
                    "spec.session_affinity_timeout_seconds",
                    "may only be set with session_affinity ClientIP",
                ));
            }
        }
        session_affinity::CLIENT_IP => {
            let t = spec.session_affinity_timeout_seconds;
            if !(1..=session_affinity::MAX_TIMEOUT_SECONDS).contains(&t) {
                return Err(ApiError::invalid(
                    "spec.session_affinity_timeout_seconds",
                    format!(
                        "must be between 1 and {} (got {t})",
                        session_affinity::MAX_TIMEOUT_SECONDS
                    ),
                ));
            }
        }
        other => {
            return Err(ApiError::invalid(
                "spec.session_affinity",
                format!("must be None or ClientIP (got {})", quote(other)),
            ))
        }
    }
    if let Some(st) = &s.status {
        if st.load_balancer_ingress.len() > 64 {
            return Err(ApiError::invalid(
                "status.load_balancer_ingress",
                "at most 64 addresses",
            ));
        }
        for (i, ing) in st.load_balancer_ingress.iter().enumerate() {
            check_unicast_ip(&format!("status.load_balancer_ingress[{i}].ip"), &ing.ip)?;
        }
        if st.conditions.len() > 16 {
            return Err(ApiError::invalid("status.conditions", "at most 16"));
        }
    }
    Ok(())
}

/// Longest search domain list of a pod (Kubernetes: 32) and nameserver list (3).
const MAX_DNS_SEARCHES: usize = 32;
const MAX_DNS_NAMESERVERS: usize = 3;

fn validate_pod_dns(spec: &kube_lite_proto::v1::PodSpec) -> R {
    // "": a pod stored before dns_policy existed (ClusterFirst).
    let policies = [
        "",
        dns_policy::CLUSTER_FIRST,
        dns_policy::DEFAULT,
        dns_policy::NONE,
    ];
    if !policies.contains(&spec.dns_policy.as_str()) {
        return Err(ApiError::invalid(
            "spec.dns_policy",
            format!(
                "must be one of ClusterFirst, Default, None (got {})",
                quote(&spec.dns_policy)
            ),
        ));
    }
    if !spec.hostname.is_empty() && !is_dns1123_label(&spec.hostname) {
        return Err(ApiError::invalid("spec.hostname", LABEL_MSG));
    }
    if !spec.subdomain.is_empty() && !is_dns1123_label(&spec.subdomain) {
        return Err(ApiError::invalid("spec.subdomain", LABEL_MSG));
    }
    let cfg = spec.dns_config.as_ref();
    if spec.dns_policy == dns_policy::NONE && cfg.is_none_or(|c| c.nameservers.is_empty()) {
        return Err(ApiError::invalid(
            "spec.dns_config.nameservers",
            "at least one nameserver is required when dns_policy is None",
        ));
    }
    if let Some(c) = cfg {
        if c.nameservers.len() > MAX_DNS_NAMESERVERS {
            return Err(ApiError::invalid(
                "spec.dns_config.nameservers",
                format!(
                    "at most {MAX_DNS_NAMESERVERS} (got {})",
                    c.nameservers.len()
                ),
            ));
        }
        for (i, ns) in c.nameservers.iter().enumerate() {
            check_ip(&format!("spec.dns_config.nameservers[{i}]"), ns)?;
        }
        if c.searches.len() > MAX_DNS_SEARCHES {
            return Err(ApiError::invalid(
                "spec.dns_config.searches",
                format!("at most {MAX_DNS_SEARCHES} (got {})", c.searches.len()),
            ));
        }
        for (i, d) in c.searches.iter().enumerate() {
            let d = d.strip_suffix('.').unwrap_or(d);
            if !is_dns1123_subdomain(d) {
                return Err(ApiError::invalid(
                    format!("spec.dns_config.searches[{i}]"),
                    SUBDOMAIN_MSG,
                ));
            }
        }
        if c.options.len() > 32 {
            return Err(ApiError::invalid("spec.dns_config.options", "at most 32"));
        }
        for (i, o) in c.options.iter().enumerate() {
            let ok = |t: &str| {
                !t.is_empty()
                    && t.len() <= 64
                    && t.chars().all(|ch| ch.is_ascii_graphic() && ch != ':')
            };
            if !ok(&o.name) || (!o.value.is_empty() && !ok(&o.value)) {
                return Err(ApiError::invalid(
                    format!("spec.dns_config.options[{i}]"),
                    "name (and value) must be 1 to 64 printable characters without ':'",
                ));
            }
        }
    }
    Ok(())
}

fn validate_node(n: &Node) -> R {
    if let Some(spec) = &n.spec {
        if !spec.address.is_empty() {
            check_unicast_ip("spec.address", &spec.address)?;
        }
    }
    if let Some(st) = &n.status {
        if !st.address.is_empty() {
            check_unicast_ip("status.address", &st.address)?;
        }
        check_daemon_endpoint("status.daemon_endpoint", &st.daemon_endpoint)?;
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
                    format!("must be True, False or Unknown (got {})", quote(&c.status)),
                ));
            }
        }
    }
    Ok(())
}

fn check_endpoint_address(f: &str, a: &EndpointAddress) -> R {
    check_unicast_ip(&format!("{f}.ip"), &a.ip)?;
    if !a.node_name.is_empty() && !is_dns1123_subdomain(&a.node_name) {
        return Err(ApiError::invalid(
            format!("{f}.node_name"),
            format!("{} {SUBDOMAIN_MSG}", quote(&a.node_name)),
        ));
    }
    if !a.pod_name.is_empty() && !is_dns1123_label(&a.pod_name) {
        return Err(ApiError::invalid(
            format!("{f}.pod_name"),
            format!("{} {LABEL_MSG}", quote(&a.pod_name)),
        ));
    }
    Ok(())
}

fn validate_endpoints(e: &Endpoints) -> R {
    for (i, s) in e.subsets.iter().enumerate() {
        for (j, a) in s.addresses.iter().enumerate() {
            check_endpoint_address(&format!("subsets[{i}].addresses[{j}]"), a)?;
        }
        for (j, a) in s.not_ready_addresses.iter().enumerate() {
            check_endpoint_address(&format!("subsets[{i}].not_ready_addresses[{j}]"), a)?;
        }
        let mut names = HashSet::new();
        for (j, p) in s.ports.iter().enumerate() {
            let f = format!("subsets[{i}].ports[{j}]");
            check_port(&format!("{f}.port"), p.port)?;
            check_protocol(&format!("{f}.protocol"), &p.protocol)?;
            // As Kubernetes: a DNS label, required (and unique) when there are several.
            if p.name.is_empty() {
                if s.ports.len() > 1 {
                    return Err(ApiError::invalid(
                        format!("{f}.name"),
                        "is required when the subset has more than one port",
                    ));
                }
            } else if !is_dns1123_label(&p.name) {
                return Err(ApiError::invalid(
                    format!("{f}.name"),
                    format!("{} {LABEL_MSG}", quote(&p.name)),
                ));
            } else if !names.insert(p.name.as_str()) {
                return Err(ApiError::invalid(
                    format!("{f}.name"),
                    format!("duplicate port name {}", quote(&p.name)),
                ));
            }
        }
    }
    Ok(())
}

/// A Delete's grace period: -1 (the pod's own) up to [`MAX_GRACE_PERIOD_SECONDS`].
pub fn validate_delete(r: &DeleteRequest) -> R {
    if !["", "Background", "Foreground", "Orphan"].contains(&r.propagation_policy.as_str()) {
        return Err(ApiError::invalid(
            "propagation_policy",
            format!(
                "must be Background, Foreground or Orphan (got {})",
                quote(&r.propagation_policy)
            ),
        ));
    }
    let g = r.grace_period_seconds;
    if !(-1..=MAX_GRACE_PERIOD_SECONDS).contains(&g) {
        return Err(ApiError::invalid(
            "grace_period_seconds",
            format!(
                "must be -1 (the pod's own), 0 (immediate) or up to {MAX_GRACE_PERIOD_SECONDS} (one day) (got {g})"
            ),
        ));
    }
    Ok(())
}

/// A Watch's start revision and bookmark interval.
pub fn validate_watch(r: &WatchRequest) -> R {
    if r.resource_version > MAX_RESOURCE_VERSION {
        return Err(ApiError::invalid(
            "resource_version",
            format!(
                "must be at most {MAX_RESOURCE_VERSION} (got {})",
                r.resource_version
            ),
        ));
    }
    if r.bookmark_interval_ms > MAX_BOOKMARK_INTERVAL_MS {
        return Err(ApiError::invalid(
            "bookmark_interval_ms",
            format!(
                "must be at most {MAX_BOOKMARK_INTERVAL_MS} (one hour) (got {})",
                r.bookmark_interval_ms
            ),
        ));
    }
    Ok(())
}

/// A Logs request's container name (empty: the pod's first container).
/// One chunk of NodeApi.LoadImage: the first names a node and may name the file;
/// every chunk's data is bounded.
pub fn validate_image_chunk(c: &ImageChunk, first: bool) -> R {
    if first && !is_dns1123_subdomain(&c.node) {
        return Err(ApiError::invalid(
            "node",
            format!(
                "{} must name a node (a DNS-1123 subdomain) in the first chunk",
                quote(&c.node)
            ),
        ));
    }
    if !first && !c.node.is_empty() {
        return Err(ApiError::invalid("node", "only in the first chunk"));
    }
    if c.file_name.len() > 255 {
        return Err(ApiError::invalid(
            "file_name",
            format!("{} bytes, at most 255", c.file_name.len()),
        ));
    }
    if c.data.len() > crate::api::MAX_IMAGE_CHUNK {
        return Err(ApiError::invalid(
            "data",
            format!(
                "a chunk of {} bytes, at most {}",
                c.data.len(),
                crate::api::MAX_IMAGE_CHUNK
            ),
        ));
    }
    Ok(())
}

pub fn validate_logs(r: &LogsRequest) -> R {
    if !r.container.is_empty() && !is_dns1123_label(&r.container) {
        return Err(ApiError::invalid(
            "container",
            format!("{} {LABEL_MSG}", quote(&r.container)),
        ));
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

    #[test]
    fn iana_svc_names() {
        for ok in ["http", "metrics-2", "a1", "x"] {
            assert!(is_iana_svc_name(ok), "{ok}");
        }
        for bad in [
            "",
            "80",
            "Http",
            "-a",
            "a-",
            "a--b",
            "sixteen-chars-xx",
            "a_b",
            "a\0",
        ] {
            assert!(!is_iana_svc_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn special_addresses_are_not_unicast() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.1.1",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            let e = check_unicast_ip("f", bad).unwrap_err();
            assert!(
                matches!(&e, ApiError::Invalid(m) if m.starts_with(&format!("f: {bad} may not be used"))),
                "{bad}: {e:?}"
            );
        }
        for ok in ["10.0.1.5", "192.168.1.10", "172.17.0.2", "8.8.8.8"] {
            assert!(check_unicast_ip("f", ok).is_ok(), "{ok}");
        }
        assert!(check_unicast_ip("f", "1.2.3").is_err());
    }

    #[test]
    fn daemon_endpoints() {
        for ok in [
            "",
            "http://127.0.0.1:10250",
            "https://node-1:10250/",
            "http://10.0.0.1",
        ] {
            assert!(check_daemon_endpoint("e", ok).is_ok(), "{ok}");
        }
        let long = format!("http://{}", "a".repeat(300));
        for bad in [
            "nope",
            "ftp://x:1",
            "http://x/path",
            "http://x?q=1",
            "http://",
            &long,
        ] {
            assert!(check_daemon_endpoint("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_bounds() {
        let del = |g| DeleteRequest {
            grace_period_seconds: g,
            ..Default::default()
        };
        for ok in [-1, 0, 30, MAX_GRACE_PERIOD_SECONDS] {
            assert!(validate_delete(&del(ok)).is_ok(), "{ok}");
        }
        for bad in [-2, i64::MIN, MAX_GRACE_PERIOD_SECONDS + 1, i64::MAX] {
            let e = validate_delete(&del(bad)).unwrap_err();
            assert!(
                matches!(&e, ApiError::Invalid(m) if m.starts_with("grace_period_seconds: ") && m.contains("86400")),
                "{e:?}"
            );
        }
        let watch = |rv, ms| WatchRequest {
            resource_version: rv,
            bookmark_interval_ms: ms,
            ..Default::default()
        };
        assert!(validate_watch(&watch(MAX_RESOURCE_VERSION, MAX_BOOKMARK_INTERVAL_MS)).is_ok());
        assert!(validate_watch(&watch(u64::MAX, 0)).is_err());
        assert!(validate_watch(&watch(0, u32::MAX)).is_err());
        let logs = |c: &str| LogsRequest {
            container: c.into(),
            ..Default::default()
        };
        assert!(validate_logs(&logs("")).is_ok() && validate_logs(&logs("app")).is_ok());
        assert!(validate_logs(&logs("../x")).is_err());
    }

    #[test]
    fn image_chunks_are_bounded_and_name_a_node_first() {
        let c = |node: &str, len: usize| ImageChunk {
            data: vec![0; len],
            file_name: "busybox.tar".into(),
            node: node.into(),
        };
        assert!(validate_image_chunk(&c("node0", 1 << 20), true).is_ok());
        assert!(validate_image_chunk(&c("", 1 << 20), false).is_ok());
        let e = validate_image_chunk(&c("", 1), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node") && e.contains("first chunk"), "{e}");
        assert!(validate_image_chunk(&c("Node_0", 1), true).is_err());
        assert!(validate_image_chunk(&c("node0", 1), false).is_err());
        let e = validate_image_chunk(&c("", crate::api::MAX_IMAGE_CHUNK + 1), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data") && e.contains("at most"), "{e}");
        let mut long = c("node0", 1);
        long.file_name = "x".repeat(256);
        assert!(validate_image_chunk(&long, true).is_err());
    }

    fn pod_with(f: impl FnOnce(&mut Pod)) -> Object {
        let mut p = Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                ..Default::default()
            }),
            spec: Some(kube_lite_proto::v1::PodSpec {
                containers: vec![kube_lite_proto::v1::Container {
                    name: "c".into(),
                    image: "/bin/true".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        f(&mut p);
        let mut o = Object::Pod(p);
        let _ = prepare_create(&mut o);
        o
    }

    #[test]
    fn termination_message_path_and_policy() {
        let with = |path: &str, policy: &str| {
            let (path, policy) = (path.to_string(), policy.to_string());
            validate(&pod_with(move |p| {
                let c = &mut p.spec.as_mut().unwrap().containers[0];
                c.termination_message_path = path;
                c.termination_message_policy = policy;
            }))
        };
        let msg = |r: R| match r {
            Err(ApiError::Invalid(m)) => m,
            r => panic!("{r:?}"),
        };
        // Defaults filled by prepare_create.
        let o = pod_with(|_| {});
        let Object::Pod(p) = &o else { unreachable!() };
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            (
                c.termination_message_path.as_str(),
                c.termination_message_policy.as_str()
            ),
            ("/dev/termination-log", "File")
        );
        assert!(with("/tmp/msg", "FallbackToLogsOnError").is_ok());
        for (path, why) in [
            ("rel/msg", "must be an absolute path"),
            ("/a/../b", "must not contain '..'"),
            ("/", "must name a file"),
            ("/a\0b", "must not contain NUL"),
        ] {
            let m = msg(with(path, "File"));
            assert!(
                m.starts_with("spec.containers[0].termination_message_path: ") && m.contains(why),
                "{m}"
            );
        }
        let long = format!("/{}", "a".repeat(4096));
        assert!(msg(with(&long, "File")).contains("at most 4096"));
        let m = msg(with("/dev/termination-log", "Sometimes"));
        assert!(
            m.starts_with("spec.containers[0].termination_message_policy: must be one of File, FallbackToLogsOnError"),
            "{m}"
        );
    }

    #[test]
    fn pod_grace_and_port_names() {
        let check = |f: fn(&mut Pod)| validate(&pod_with(f));
        assert!(check(|_| {}).is_ok());
        assert!(
            check(|p| p.spec.as_mut().unwrap().termination_grace_period_seconds = 86_400).is_ok()
        );
        let e = check(|p| p.spec.as_mut().unwrap().termination_grace_period_seconds = i64::MAX)
            .unwrap_err();
        assert!(
            matches!(&e, ApiError::Invalid(m) if m.starts_with("spec.termination_grace_period_seconds: must be >= 0 and <= 86400")),
            "{e:?}"
        );
        let port = |name: &str| kube_lite_proto::v1::ContainerPort {
            name: name.into(),
            container_port: 80,
            protocol: "TCP".into(),
        };
        let mut p = pod_with(|_| {});
        if let Object::Pod(p) = &mut p {
            p.spec.as_mut().unwrap().containers[0].ports = vec![port("http")];
        }
        assert!(validate(&p).is_ok());
        if let Object::Pod(p) = &mut p {
            p.spec.as_mut().unwrap().containers[0].ports = vec![port("Not A Name")];
        }
        let e = validate(&p).unwrap_err();
        assert!(
            matches!(&e, ApiError::Invalid(m) if m.starts_with("spec.containers[0].ports[0].name: ") && m.contains("IANA_SVC_NAME")),
            "{e:?}"
        );
    }

    #[test]
    fn endpoints_addresses_and_names() {
        use kube_lite_proto::v1::{EndpointPort, EndpointSubset};
        let ep = |ip: &str, node: &str, pod: &str, ports: Vec<EndpointPort>| {
            Object::Endpoints(Endpoints {
                metadata: Some(ObjectMeta {
                    name: "e".into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                subsets: vec![EndpointSubset {
                    addresses: vec![EndpointAddress {
                        ip: ip.into(),
                        node_name: node.into(),
                        pod_name: pod.into(),
                    }],
                    not_ready_addresses: vec![],
                    ports,
                }],
            })
        };
        let port = |name: &str| EndpointPort {
            name: name.into(),
            port: 80,
            protocol: "TCP".into(),
        };
        assert!(validate(&ep("10.0.1.5", "node-1", "web-1", vec![port("")])).is_ok());
        assert!(validate(&ep("10.0.1.5", "", "", vec![port("a"), port("b")])).is_ok());
        let field = |o: Object| match validate(&o) {
            Err(ApiError::Invalid(m)) => m.split(':').next().unwrap().to_string(),
            other => panic!("{other:?}"),
        };
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "169.254.0.1",
        ] {
            assert_eq!(
                field(ep(ip, "", "", vec![])),
                "subsets[0].addresses[0].ip",
                "{ip}"
            );
        }
        assert_eq!(
            field(ep("10.0.1.5", "Node 1", "", vec![])),
            "subsets[0].addresses[0].node_name"
        );
        assert_eq!(
            field(ep("10.0.1.5", "", "x\ny", vec![])),
            "subsets[0].addresses[0].pod_name"
        );
        assert_eq!(
            field(ep("10.0.1.5", "", "", vec![port("A_B")])),
            "subsets[0].ports[0].name"
        );
        assert_eq!(
            field(ep("10.0.1.5", "", "", vec![port("a"), port("")])),
            "subsets[0].ports[1].name"
        );
        assert_eq!(
            field(ep("10.0.1.5", "", "", vec![port("a"), port("a")])),
            "subsets[0].ports[1].name"
        );
    }

    #[test]
    fn node_addresses() {
        let node = |addr: &str| {
            let mut n = Object::Node(Node {
                metadata: Some(ObjectMeta {
                    name: "n1".into(),
                    ..Default::default()
                }),
                spec: Some(kube_lite_proto::v1::NodeSpec {
                    address: addr.into(),
                    ..Default::default()
                }),
                status: None,
            });
            prepare_create(&mut n).map(|_| n)
        };
        assert!(node("192.168.1.10").is_ok());
        for bad in ["255.255.255.255", "127.0.0.1", "224.0.0.1", "0.0.0.0"] {
            assert!(
                matches!(node(bad), Err(ApiError::Invalid(m)) if m.starts_with("spec.address: ")),
                "{bad}"
            );
        }
    }

    #[test]
    fn long_values_are_quoted_short() {
        let e = check_label_value("l", "k", &"!".repeat(100_000)).unwrap_err();
        let ApiError::Invalid(m) = e else { panic!() };
        assert!(m.len() < 400, "{}", m.len());
        assert!(m.contains("(100000 bytes)"), "{m}");
    }
}
