//! Validation of the pod spec fields of issue 13: probes and resources. Every error
//! names the field path and the rule.

use std::collections::HashSet;

use kube_lite_core::quantity::{container_res, parse_quantity, CPU, MEMORY};
use kube_lite_proto::v1::{Container, Probe};

use super::{check_port, is_iana_svc_name, R};
use crate::error::{quote, ApiError};

/// Longest probe command / header list, and longest probe period, timeout or delay.
pub const MAX_PROBE_ARGS: usize = 256;
pub const MAX_PROBE_HEADERS: usize = 64;
pub const MAX_PROBE_SECONDS: i32 = 86_400;

/// Probes and resources of container `c` at field path `f` (`spec.containers[0]`).
pub fn check_container(f: &str, c: &Container) -> R {
    let ports: HashSet<&str> = c.ports.iter().map(|p| p.name.as_str()).collect();
    for (name, p, startup_or_liveness) in [
        ("liveness_probe", &c.liveness_probe, true),
        ("readiness_probe", &c.readiness_probe, false),
        ("startup_probe", &c.startup_probe, true),
    ] {
        if let Some(p) = p {
            check_probe(&format!("{f}.{name}"), p, &ports, startup_or_liveness)?;
        }
    }
    if let Some(r) = &c.resources {
        for (what, m) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (k, v) in m {
                let field = format!("{f}.resources.{what}[{}]", quote(k));
                if k != CPU && k != MEMORY {
                    return Err(ApiError::invalid(
                        field,
                        "only cpu and memory are supported",
                    ));
                }
                parse_quantity(v).map_err(|e| ApiError::invalid(&field, e))?;
            }
        }
        let (req, lim) = container_res(&r.requests, &r.limits);
        for (k, rq, lm) in [
            (CPU, req.cpu_millis, lim.cpu_millis),
            (MEMORY, req.memory_bytes, lim.memory_bytes),
        ] {
            if r.limits.contains_key(k) && rq > lm {
                return Err(ApiError::invalid(
                    format!("{f}.resources.requests[{}]", quote(k)),
                    format!("must be less than or equal to {k} limit of {}", r.limits[k]),
                ));
            }
        }
    }
    Ok(())
}

/// An env var's `value_from`: exactly one source, a field path or resource we resolve.
pub fn check_env_source(f: &str, e: &kube_lite_proto::v1::EnvVar) -> R {
    let Some(src) = &e.value_from else {
        return Ok(());
    };
    if !e.value.is_empty() {
        return Err(ApiError::invalid(
            format!("{f}.value_from"),
            "may not be specified when value is not empty",
        ));
    }
    let sources = [
        src.field_ref.is_some(),
        src.resource_field_ref.is_some(),
        src.config_map_key_ref.is_some(),
        src.secret_key_ref.is_some(),
    ];
    if sources.iter().filter(|b| **b).count() == 1 {
        if let Some(k) = &src.config_map_key_ref {
            return super::pod_volumes::check_key_ref(
                &format!("{f}.value_from.config_map_key_ref"),
                k,
            );
        }
        if let Some(k) = &src.secret_key_ref {
            return super::pod_volumes::check_key_ref(&format!("{f}.value_from.secret_key_ref"), k);
        }
    }
    match (&src.field_ref, &src.resource_field_ref) {
        (Some(fr), None) if sources.iter().filter(|b| **b).count() == 1 => {
            let p = fr.field_path.as_str();
            let sub = |pre: &str| {
                p.strip_prefix(pre)
                    .and_then(|r| r.strip_prefix("['"))
                    .and_then(|r| r.strip_suffix("']"))
                    .is_some_and(|k| !k.is_empty())
            };
            let known = [
                "metadata.name",
                "metadata.namespace",
                "metadata.uid",
                "spec.nodeName",
                "status.podIP",
                "status.hostIP",
            ];
            if !known.contains(&p) && !sub("metadata.labels") && !sub("metadata.annotations") {
                return Err(ApiError::invalid(
                    format!("{f}.value_from.field_ref.field_path"),
                    format!(
                        "{} is not supported (metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, status.podIP, status.hostIP)",
                        quote(p)
                    ),
                ));
            }
        }
        (None, Some(rr)) if sources.iter().filter(|b| **b).count() == 1 => {
            check_resource_field_ref(&format!("{f}.value_from.resource_field_ref"), rr)?;
        }
        _ => {
            return Err(ApiError::invalid(
                format!("{f}.value_from"),
                "must specify exactly one of field_ref, resource_field_ref, config_map_key_ref, secret_key_ref",
            ))
        }
    }
    Ok(())
}

/// What init containers may not have: probes (they run to completion).
pub fn check_init_container(f: &str, c: &Container) -> R {
    for (name, p) in [
        ("liveness_probe", &c.liveness_probe),
        ("readiness_probe", &c.readiness_probe),
        ("startup_probe", &c.startup_probe),
    ] {
        if p.is_some() {
            return Err(ApiError::invalid(
                format!("{f}.{name}"),
                "must not be set for init containers",
            ));
        }
    }
    Ok(())
}

pub(super) fn check_probe(f: &str, p: &Probe, ports: &HashSet<&str>, one_success: bool) -> R {
    let handlers =
        p.exec.is_some() as u8 + p.http_get.is_some() as u8 + p.tcp_socket.is_some() as u8;
    if handlers != 1 {
        return Err(ApiError::invalid(
            f,
            "must specify exactly one of exec, http_get, tcp_socket",
        ));
    }
    for (name, v, min) in [
        ("initial_delay_seconds", p.initial_delay_seconds, 0),
        ("timeout_seconds", p.timeout_seconds, 1),
        ("period_seconds", p.period_seconds, 1),
        ("success_threshold", p.success_threshold, 1),
        ("failure_threshold", p.failure_threshold, 1),
    ] {
        if !(min..=MAX_PROBE_SECONDS).contains(&v) {
            return Err(ApiError::invalid(
                format!("{f}.{name}"),
                format!("must be between {min} and {MAX_PROBE_SECONDS} (got {v})"),
            ));
        }
    }
    if one_success && p.success_threshold != 1 {
        return Err(ApiError::invalid(
            format!("{f}.success_threshold"),
            format!(
                "must be 1 for liveness and startup probes (got {})",
                p.success_threshold
            ),
        ));
    }
    let port = |field: String, num: i32, name: &str| -> R {
        if !name.is_empty() {
            if !is_iana_svc_name(name) {
                return Err(ApiError::invalid(
                    format!("{field}_name"),
                    format!("{} is not a valid port name", quote(name)),
                ));
            }
            if !ports.contains(name) {
                return Err(ApiError::invalid(
                    format!("{field}_name"),
                    format!("{} names no port of the container", quote(name)),
                ));
            }
            if num != 0 {
                return Err(ApiError::invalid(
                    field,
                    "give a port number or a name, not both",
                ));
            }
            return Ok(());
        }
        check_port(&field, num)
    };
    if let Some(e) = &p.exec {
        if e.command.is_empty() {
            return Err(ApiError::invalid(
                format!("{f}.exec.command"),
                "is required",
            ));
        }
        if e.command.len() > MAX_PROBE_ARGS || e.command.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::invalid(
                format!("{f}.exec.command"),
                format!("at most {MAX_PROBE_ARGS} arguments without NUL"),
            ));
        }
    }
    if let Some(h) = &p.http_get {
        let hf = format!("{f}.http_get");
        port(format!("{hf}.port"), h.port, &h.port_name)?;
        if h.scheme != "HTTP" {
            return Err(ApiError::invalid(
                format!("{hf}.scheme"),
                format!("only HTTP is supported (got {})", quote(&h.scheme)),
            ));
        }
        if !h.path.starts_with('/')
            || h.path.len() > 2048
            || h.path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(ApiError::invalid(
                format!("{hf}.path"),
                "must start with '/' and contain no spaces or control characters (at most 2048 bytes)",
            ));
        }
        check_host(&format!("{hf}.host"), &h.host)?;
        if h.http_headers.len() > MAX_PROBE_HEADERS {
            return Err(ApiError::invalid(
                format!("{hf}.http_headers"),
                format!("at most {MAX_PROBE_HEADERS} headers"),
            ));
        }
        for (i, hd) in h.http_headers.iter().enumerate() {
            let token = !hd.name.is_empty()
                && hd.name.len() <= 256
                && hd
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ApiError::invalid(
                    format!("{hf}.http_headers[{i}].name"),
                    format!("{} is not an HTTP header name", quote(&hd.name)),
                ));
            }
            if hd.value.len() > 4096 || hd.value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(ApiError::invalid(
                    format!("{hf}.http_headers[{i}].value"),
                    "must have no control characters (at most 4096 bytes)",
                ));
            }
        }
    }
    if let Some(t) = &p.tcp_socket {
        port(format!("{f}.tcp_socket.port"), t.port, &t.port_name)?;
        check_host(&format!("{f}.tcp_socket.host"), &t.host)?;
    }
    Ok(())
}

/// A probe's host: empty (the pod IP) or an IPv4 address (names are not resolved).
fn check_host(field: &str, h: &str) -> R {
    if !h.is_empty() && h.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(ApiError::invalid(
            field,
            format!("{} must be empty (the pod IP) or an IPv4 address", quote(h)),
        ));
    }
    Ok(())
}

/// A `resourceFieldRef` (env valueFrom and downwardAPI volume items); `f` is its path.
pub(super) fn check_resource_field_ref(
    f: &str,
    rr: &kube_lite_proto::v1::ResourceFieldSelector,
) -> R {
    let known = [
        "limits.cpu",
        "limits.memory",
        "requests.cpu",
        "requests.memory",
    ];
    if !known.contains(&rr.resource.as_str()) {
        return Err(ApiError::invalid(
            format!("{f}.resource"),
            format!(
                "{} is not supported (limits.cpu, limits.memory, requests.cpu, requests.memory)",
                quote(&rr.resource)
            ),
        ));
    }
    if !rr.divisor.is_empty() {
        match parse_quantity(&rr.divisor) {
            Ok(q) if !q.is_zero() => {}
            _ => {
                return Err(ApiError::invalid(
                    format!("{f}.divisor"),
                    format!("{} must be a positive quantity", quote(&rr.divisor)),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::defaults::default_probe;
    use kube_lite_proto::v1::{
        ContainerPort, ExecAction, HttpGetAction, HttpHeader, ResourceRequirements, TcpSocketAction,
    };

    fn ctr(f: impl FnOnce(&mut Container)) -> Container {
        let mut c = Container {
            name: "c".into(),
            image: "x".into(),
            ports: vec![ContainerPort {
                name: "http".into(),
                container_port: 8080,
                protocol: "TCP".into(),
            }],
            ..Default::default()
        };
        f(&mut c);
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
        c
    }

    fn err(c: &Container) -> String {
        match check_container("spec.containers[0]", c) {
            Err(ApiError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn http(port: i32, name: &str) -> Option<Probe> {
        Some(Probe {
            http_get: Some(HttpGetAction {
                port,
                port_name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn good_probes_pass() {
        let c = ctr(|c| {
            c.readiness_probe = http(0, "http");
            c.liveness_probe = Some(Probe {
                tcp_socket: Some(TcpSocketAction {
                    port: 8080,
                    ..Default::default()
                }),
                ..Default::default()
            });
            c.startup_probe = Some(Probe {
                exec: Some(ExecAction {
                    command: vec!["true".into()],
                }),
                ..Default::default()
            });
        });
        check_container("f", &c).unwrap();
    }

    #[test]
    fn bad_probes_name_the_field() {
        let c = ctr(|c| c.readiness_probe = Some(Probe::default()));
        assert!(err(&c).starts_with("spec.containers[0].readiness_probe: must specify exactly one"));
        let c = ctr(|c| c.readiness_probe = http(0, "metrics"));
        assert!(err(&c).starts_with(
            "spec.containers[0].readiness_probe.http_get.port_name: \"metrics\" names no port"
        ));
        let c = ctr(|c| c.readiness_probe = http(70000, ""));
        assert!(err(&c).starts_with(
            "spec.containers[0].readiness_probe.http_get.port: must be between 1 and 65535"
        ));
        let c = ctr(|c| {
            c.liveness_probe = http(80, "");
            c.liveness_probe.as_mut().unwrap().success_threshold = 2;
        });
        assert!(err(&c).contains("liveness_probe.success_threshold: must be 1"));
        let c = ctr(|c| {
            c.readiness_probe = http(80, "");
            c.readiness_probe.as_mut().unwrap().period_seconds = -1;
        });
        assert!(err(&c).contains("readiness_probe.period_seconds: must be between 1"));
        let c = ctr(|c| {
            c.readiness_probe = http(80, "");
            c.readiness_probe
                .as_mut()
                .unwrap()
                .http_get
                .as_mut()
                .unwrap()
                .http_headers = vec![HttpHeader {
                name: "bad name".into(),
                value: "v".into(),
            }];
        });
        assert!(err(&c).contains("http_headers[0].name"));
        let c = ctr(|c| {
            c.readiness_probe = http(80, "");
            c.readiness_probe
                .as_mut()
                .unwrap()
                .http_get
                .as_mut()
                .unwrap()
                .scheme = "HTTPS".into();
        });
        assert!(err(&c).contains("http_get.scheme: only HTTP"));
        let c = ctr(|c| {
            c.startup_probe = Some(Probe {
                exec: Some(ExecAction { command: vec![] }),
                ..Default::default()
            })
        });
        assert!(err(&c).contains("startup_probe.exec.command: is required"));
    }

    fn res(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let m = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Some(ResourceRequirements {
            requests: m(req),
            limits: m(lim),
        })
    }

    #[test]
    fn resources() {
        check_container(
            "f",
            &ctr(|c| c.resources = res(&[("cpu", "100m")], &[("cpu", "1"), ("memory", "64Mi")])),
        )
        .unwrap();
        let c = ctr(|c| c.resources = res(&[("memory", "12Q")], &[]));
        assert!(err(&c).starts_with(
            "spec.containers[0].resources.requests[\"memory\"]: invalid quantity \"12Q\""
        ));
        let c = ctr(|c| c.resources = res(&[("gpu", "1")], &[]));
        assert!(err(&c).contains("only cpu and memory"));
        let c = ctr(|c| c.resources = res(&[("cpu", "2")], &[("cpu", "1")]));
        assert!(err(&c).contains("requests[\"cpu\"]: must be less than or equal to cpu limit of 1"));
    }
}
