//! `kubectl describe` lines of issue 13's pod fields (probes, resources); their JSON
//! is `kube_lite_k8s`'s.

use kube_lite_proto::v1::{Container, Probe};

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
    }
}
