//! Output of issue 13's pod fields: probes, resources, qosClass, lastState — as
//! Kubernetes' JSON and as `kubectl describe` lines.

use kube_lite_proto::v1::{Container, ContainerStatus, Probe};
use serde_json::{json, Map, Value};

fn port_value(port: i32, name: &str) -> Value {
    if name.is_empty() {
        json!(port)
    } else {
        json!(name)
    }
}

pub fn probe_json(p: &Probe) -> Value {
    let mut o = Map::new();
    if let Some(e) = &p.exec {
        o.insert("exec".into(), json!({"command": e.command}));
    }
    if let Some(h) = &p.http_get {
        let mut m = Map::new();
        m.insert("path".into(), json!(h.path));
        m.insert("port".into(), port_value(h.port, &h.port_name));
        if !h.host.is_empty() {
            m.insert("host".into(), json!(h.host));
        }
        m.insert("scheme".into(), json!(h.scheme));
        if !h.http_headers.is_empty() {
            let hs: Vec<Value> = h
                .http_headers
                .iter()
                .map(|x| json!({"name": x.name, "value": x.value}))
                .collect();
            m.insert("httpHeaders".into(), Value::Array(hs));
        }
        o.insert("httpGet".into(), Value::Object(m));
    }
    if let Some(t) = &p.tcp_socket {
        let mut m = Map::new();
        m.insert("port".into(), port_value(t.port, &t.port_name));
        if !t.host.is_empty() {
            m.insert("host".into(), json!(t.host));
        }
        o.insert("tcpSocket".into(), Value::Object(m));
    }
    if p.initial_delay_seconds != 0 {
        o.insert("initialDelaySeconds".into(), json!(p.initial_delay_seconds));
    }
    o.insert("timeoutSeconds".into(), json!(p.timeout_seconds));
    o.insert("periodSeconds".into(), json!(p.period_seconds));
    o.insert("successThreshold".into(), json!(p.success_threshold));
    o.insert("failureThreshold".into(), json!(p.failure_threshold));
    Value::Object(o)
}

fn sorted(m: &std::collections::HashMap<String, String>) -> Value {
    let b: std::collections::BTreeMap<&String, &String> = m.iter().collect();
    json!(b)
}

/// Adds `livenessProbe`, `readinessProbe`, `startupProbe`, `resources` of `c` to `o`.
pub fn container_json(o: &mut Map<String, Value>, c: &Container) {
    if let Some(r) = &c.resources {
        let mut m = Map::new();
        if !r.limits.is_empty() {
            m.insert("limits".into(), sorted(&r.limits));
        }
        if !r.requests.is_empty() {
            m.insert("requests".into(), sorted(&r.requests));
        }
        o.insert("resources".into(), Value::Object(m));
    }
    for (k, p) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = p {
            o.insert(k.into(), probe_json(p));
        }
    }
}

/// Adds `started` and `lastState` of a container status.
pub fn container_status_json(o: &mut Map<String, Value>, c: &ContainerStatus) {
    // Only when set: statuses from agents before issue 13 have no `started`.
    if c.started {
        o.insert("started".into(), json!(true));
    }
    if let Some(l) = &c.last_state {
        let mut t = Map::new();
        t.insert("exitCode".into(), json!(l.exit_code));
        if !l.reason.is_empty() {
            t.insert("reason".into(), json!(l.reason));
        }
        if !l.message.is_empty() {
            t.insert("message".into(), json!(l.message));
        }
        if l.started_at != 0 {
            t.insert(
                "startedAt".into(),
                json!(crate::util::rfc3339(l.started_at)),
            );
        }
        if l.finished_at != 0 {
            t.insert(
                "finishedAt".into(),
                json!(crate::util::rfc3339(l.finished_at)),
            );
        }
        o.insert("lastState".into(), json!({"terminated": Value::Object(t)}));
    }
}

/// `http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`,
/// as `kubectl describe` prints a probe.
pub fn probe_text(p: &Probe) -> String {
    let port = |n: i32, name: &str| {
        if name.is_empty() {
            n.to_string()
        } else {
            name.to_string()
        }
    };
    let what = if let Some(h) = &p.http_get {
        format!(
            "http-get http://{}:{}{}",
            h.host,
            port(h.port, &h.port_name),
            h.path
        )
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket {}:{}", t.host, port(t.port, &t.port_name))
    } else if let Some(e) = &p.exec {
        format!("exec [{}]", e.command.join(" "))
    } else {
        "<unknown>".into()
    };
    format!(
        "{what} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds,
        p.timeout_seconds,
        p.period_seconds,
        p.success_threshold,
        p.failure_threshold
    )
}

/// The `Limits:`/`Requests:` and `Liveness:`/`Readiness:`/`Startup:` lines of a container.
pub fn describe_lines(c: &Container) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = &c.resources {
        for (title, m) in [("Limits", &r.limits), ("Requests", &r.requests)] {
            if m.is_empty() {
                continue;
            }
            out.push(format!("    {title}:"));
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let w = keys.iter().map(|k| k.len()).max().unwrap_or(0) + 3;
            for k in keys {
                out.push(format!("      {:<w$}{}", format!("{k}:"), m[k]));
            }
        }
    }
    for (title, p) in [
        ("Liveness", &c.liveness_probe),
        ("Readiness", &c.readiness_probe),
        ("Startup", &c.startup_probe),
    ] {
        if let Some(p) = p {
            out.push(format!("    {:<16}{}", format!("{title}:"), probe_text(p)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::HttpGetAction;

    #[test]
    fn probe_text_like_kubectl() {
        let p = Probe {
            http_get: Some(HttpGetAction {
                path: "/healthz".into(),
                port: 8080,
                scheme: "HTTP".into(),
                ..Default::default()
            }),
            timeout_seconds: 1,
            period_seconds: 10,
            success_threshold: 1,
            failure_threshold: 3,
            ..Default::default()
        };
        assert_eq!(
            probe_text(&p),
            "http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3"
        );
        assert_eq!(probe_json(&p)["httpGet"]["port"], 8080);
    }
}
