//! The server's defaulting rules. The apiserver applies them on every write; kubectl-lite
//! applies the same ones to a manifest to tell `unchanged` from a real change.

use crate::consts::{
    dns_policy, protocol, restart_policy, service_type, session_affinity, termination_message,
    traffic_policy,
};
use kube_lite_proto::v1::{Endpoints, PodSpec, Probe, ServiceSpec};

/// Kubernetes' probe defaults: period 10 s, timeout 1 s, success 1, failure 3.
pub const PROBE_PERIOD_SECONDS: i32 = 10;
pub const PROBE_TIMEOUT_SECONDS: i32 = 1;
pub const PROBE_SUCCESS_THRESHOLD: i32 = 1;
pub const PROBE_FAILURE_THRESHOLD: i32 = 3;

/// Fills a probe's zero fields with Kubernetes' defaults (and an httpGet's path/scheme).
pub fn default_probe(p: &mut Probe) {
    if p.period_seconds == 0 {
        p.period_seconds = PROBE_PERIOD_SECONDS;
    }
    if p.timeout_seconds == 0 {
        p.timeout_seconds = PROBE_TIMEOUT_SECONDS;
    }
    if p.success_threshold == 0 {
        p.success_threshold = PROBE_SUCCESS_THRESHOLD;
    }
    if p.failure_threshold == 0 {
        p.failure_threshold = PROBE_FAILURE_THRESHOLD;
    }
    if let Some(h) = &mut p.http_get {
        if h.path.is_empty() {
            h.path = "/".into();
        }
        if h.scheme.is_empty() {
            h.scheme = "HTTP".into();
        }
    }
}

/// A pod's `terminationGracePeriodSeconds` when none is given (Kubernetes: 30).
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

/// restartPolicy Always, grace period 30 s, container port protocol TCP, probe defaults,
/// terminationMessagePath /dev/termination-log and terminationMessagePolicy File.
pub fn default_pod_spec(spec: &mut PodSpec) {
    if spec.restart_policy.is_empty() {
        spec.restart_policy = restart_policy::ALWAYS.into();
    }
    if spec.termination_grace_period_seconds == 0 {
        spec.termination_grace_period_seconds = DEFAULT_TERMINATION_GRACE_SECONDS;
    }
    if spec.dns_policy.is_empty() {
        spec.dns_policy = dns_policy::CLUSTER_FIRST.into();
    }
    for c in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        if c.image_pull_policy.is_empty() {
            c.image_pull_policy = default_image_pull_policy(&c.image).into();
        }
        if c.termination_message_path.is_empty() {
            c.termination_message_path = termination_message::DEFAULT_PATH.into();
        }
        if c.termination_message_policy.is_empty() {
            c.termination_message_policy = termination_message::FILE.into();
        }
        for p in [
            &mut c.liveness_probe,
            &mut c.readiness_probe,
            &mut c.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            default_probe(p);
        }
        // Lifecycle httpGet hooks: path "/" and scheme HTTP, as a probe's.
        if let Some(l) = &mut c.lifecycle {
            for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
                if let Some(g) = &mut h.http_get {
                    if g.path.is_empty() {
                        g.path = "/".into();
                    }
                    if g.scheme.is_empty() {
                        g.scheme = "HTTP".into();
                    }
                }
            }
        }
        for p in &mut c.ports {
            if p.protocol.is_empty() {
                p.protocol = protocol::TCP.into();
            }
        }
    }
}

/// Kubernetes' imagePullPolicy default: `Always` for a `:latest` or untagged image
/// (without a digest), `IfNotPresent` otherwise.
pub fn default_image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// type ClusterIP, port protocol TCP, targetPort = port (unless named), sessionAffinity
/// None (ClientIP: timeout 10800 s), externalTrafficPolicy Cluster for NodePort and
/// LoadBalancer Services.
pub fn default_service_spec(spec: &mut ServiceSpec) {
    if spec.r#type.is_empty() {
        spec.r#type = service_type::CLUSTER_IP.into();
    }
    for p in &mut spec.ports {
        if p.protocol.is_empty() {
            p.protocol = protocol::TCP.into();
        }
        if p.target_port == 0 && p.target_port_name.is_empty() {
            p.target_port = p.port;
        }
    }
    if spec.session_affinity.is_empty() {
        spec.session_affinity = session_affinity::NONE.into();
    }
    if spec.session_affinity == session_affinity::CLIENT_IP
        && spec.session_affinity_timeout_seconds == 0
    {
        spec.session_affinity_timeout_seconds = session_affinity::DEFAULT_TIMEOUT_SECONDS;
    }
    if needs_node_ports(&spec.r#type) && spec.external_traffic_policy.is_empty() {
        spec.external_traffic_policy = traffic_policy::CLUSTER.into();
    }
}

/// Whether a Service of this type gets node ports (NodePort, LoadBalancer).
pub fn needs_node_ports(service_type: &str) -> bool {
    service_type == service_type::NODE_PORT || service_type == service_type::LOAD_BALANCER
}

/// Endpoint port protocol TCP.
pub fn default_endpoints(e: &mut Endpoints) {
    for s in &mut e.subsets {
        for p in &mut s.ports {
            if p.protocol.is_empty() {
                p.protocol = protocol::TCP.into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Container, ContainerPort, ServicePort};

    #[test]
    fn pod_defaults_fill_only_empty_fields() {
        let mut s = PodSpec {
            containers: vec![Container {
                ports: vec![ContainerPort::default()],
                ..Default::default()
            }],
            ..Default::default()
        };
        default_pod_spec(&mut s);
        assert_eq!(s.restart_policy, "Always");
        assert_eq!(s.termination_grace_period_seconds, 30);
        assert_eq!(s.containers[0].ports[0].protocol, "TCP");
        assert_eq!(s.containers[0].image_pull_policy, "Always");
        assert_eq!(
            s.containers[0].termination_message_path,
            "/dev/termination-log"
        );
        assert_eq!(s.containers[0].termination_message_policy, "File");
        assert_eq!(default_image_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_image_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_image_pull_policy("registry:5000/busybox"), "Always");
        assert_eq!(
            default_image_pull_policy("busybox@sha256:ab"),
            "IfNotPresent"
        );
        let mut s = PodSpec {
            restart_policy: "Never".into(),
            termination_grace_period_seconds: 5,
            ..Default::default()
        };
        default_pod_spec(&mut s);
        assert_eq!(
            (
                s.restart_policy.as_str(),
                s.termination_grace_period_seconds
            ),
            ("Never", 5)
        );
    }

    #[test]
    fn service_defaults() {
        let mut s = ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        };
        default_service_spec(&mut s);
        assert_eq!(s.r#type, "ClusterIP");
        assert_eq!(s.ports[0].protocol, "TCP");
        assert_eq!(s.ports[0].target_port, 80);
    }
}
