//! Manifest fields of issue 13: container probes and resources.

use super::{join, type_name, Kind, Walker};
use kube_lite_proto::v1::{
    EnvVarSource, ExecAction, HttpGetAction, HttpHeader, ObjectFieldSelector, Probe,
    ResourceFieldSelector, ResourceRequirements, TcpSocketAction,
};
use serde_json::Value;
use std::collections::HashMap;

/// Container keys this module reads.
pub const CONTAINER_KEYS: &[&str] = &[
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "resources",
];

impl Walker {
    pub(super) fn probe(&mut self, path: &str, v: Option<&Value>) -> Option<Probe> {
        let m = self.object(path, v)?;
        self.unknown(
            path,
            m,
            &[
                "exec",
                "httpGet",
                "tcpSocket",
                "initialDelaySeconds",
                "timeoutSeconds",
                "periodSeconds",
                "successThreshold",
                "failureThreshold",
            ],
            Kind::Pod,
        );
        let int = |w: &mut Walker, k: &str| {
            let p = join(path, k);
            let n = w.int(&p, m.get(k));
            i32::try_from(n).unwrap_or_else(|_| {
                w.err(&p, format!("{n} is out of range"));
                0
            })
        };
        let mut p = Probe {
            initial_delay_seconds: int(self, "initialDelaySeconds"),
            timeout_seconds: int(self, "timeoutSeconds"),
            period_seconds: int(self, "periodSeconds"),
            success_threshold: int(self, "successThreshold"),
            failure_threshold: int(self, "failureThreshold"),
            ..Default::default()
        };
        if let Some(e) = self.object(&join(path, "exec"), m.get("exec")) {
            let ep = join(path, "exec");
            self.unknown(&ep, e, &["command"], Kind::Pod);
            p.exec = Some(ExecAction {
                command: self.strings(&join(&ep, "command"), e.get("command")),
            });
        }
        if let Some(h) = self.object(&join(path, "httpGet"), m.get("httpGet")) {
            let hp = join(path, "httpGet");
            self.unknown(
                &hp,
                h,
                &["path", "port", "host", "scheme", "httpHeaders"],
                Kind::Pod,
            );
            let (port, port_name) = self.int_or_name(&join(&hp, "port"), h.get("port"));
            let mut a = HttpGetAction {
                path: self.string(&join(&hp, "path"), h.get("path")),
                port,
                port_name,
                host: self.string(&join(&hp, "host"), h.get("host")),
                scheme: self.string(&join(&hp, "scheme"), h.get("scheme")),
                ..Default::default()
            };
            let hh = join(&hp, "httpHeaders");
            for (i, x) in self.array(&hh, h.get("httpHeaders")).iter().enumerate() {
                let xp = format!("{hh}[{i}]");
                if let Some(x) = self.object(&xp, Some(x)) {
                    self.unknown(&xp, x, &["name", "value"], Kind::Pod);
                    a.http_headers.push(HttpHeader {
                        name: self.string(&join(&xp, "name"), x.get("name")),
                        value: self.string(&join(&xp, "value"), x.get("value")),
                    });
                }
            }
            p.http_get = Some(a);
        }
        if let Some(t) = self.object(&join(path, "tcpSocket"), m.get("tcpSocket")) {
            let tp = join(path, "tcpSocket");
            self.unknown(&tp, t, &["port", "host"], Kind::Pod);
            let (port, port_name) = self.int_or_name(&join(&tp, "port"), t.get("port"));
            p.tcp_socket = Some(TcpSocketAction {
                port,
                port_name,
                host: self.string(&join(&tp, "host"), t.get("host")),
            });
        }
        Some(p)
    }

    /// An IntOrString port: a number, a numeric string, or a port name.
    fn int_or_name(&mut self, path: &str, v: Option<&Value>) -> (i32, String) {
        match v {
            Some(Value::String(s)) => match s.parse::<i32>() {
                Ok(n) => (n, String::new()),
                Err(_) => (0, s.clone()),
            },
            other => (self.port(path, other), String::new()),
        }
    }

    pub(super) fn env_source(&mut self, path: &str, v: Option<&Value>) -> Option<EnvVarSource> {
        let m = self.object(path, v)?;
        self.unknown(
            path,
            m,
            &[
                "fieldRef",
                "resourceFieldRef",
                "configMapKeyRef",
                "secretKeyRef",
            ],
            Kind::Pod,
        );
        let mut src = EnvVarSource {
            config_map_key_ref: self
                .key_ref(&join(path, "configMapKeyRef"), m.get("configMapKeyRef")),
            secret_key_ref: self.key_ref(&join(path, "secretKeyRef"), m.get("secretKeyRef")),
            ..Default::default()
        };
        if let Some(f) = self.object(&join(path, "fieldRef"), m.get("fieldRef")) {
            let fp = join(path, "fieldRef");
            self.unknown(&fp, f, &["fieldPath", "apiVersion"], Kind::Pod);
            src.field_ref = Some(ObjectFieldSelector {
                field_path: self.string(&join(&fp, "fieldPath"), f.get("fieldPath")),
            });
        }
        if let Some(r) = self.object(&join(path, "resourceFieldRef"), m.get("resourceFieldRef")) {
            let rp = join(path, "resourceFieldRef");
            self.unknown(&rp, r, &["containerName", "resource", "divisor"], Kind::Pod);
            let divisor = match r.get("divisor") {
                Some(Value::Number(n)) => n.to_string(),
                other => self.string(&join(&rp, "divisor"), other),
            };
            src.resource_field_ref = Some(ResourceFieldSelector {
                container_name: self.string(&join(&rp, "containerName"), r.get("containerName")),
                resource: self.string(&join(&rp, "resource"), r.get("resource")),
                divisor,
            });
        }
        Some(src)
    }

    pub(super) fn resources(
        &mut self,
        path: &str,
        v: Option<&Value>,
    ) -> Option<ResourceRequirements> {
        let m = self.object(path, v)?;
        self.unknown(path, m, &["requests", "limits"], Kind::Pod);
        Some(ResourceRequirements {
            requests: self.quantities(&join(path, "requests"), m.get("requests")),
            limits: self.quantities(&join(path, "limits"), m.get("limits")),
        })
    }

    /// A quantity map: strings ("100m", "128Mi") or plain numbers (`cpu: 1`, `cpu: 0.5`).
    fn quantities(&mut self, path: &str, v: Option<&Value>) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(m) = self.object(path, v) {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Number(n) => {
                        out.insert(k.clone(), n.to_string());
                    }
                    other => self.err(
                        &format!("{path}.{k}"),
                        format!("expected a quantity, got {}", type_name(other)),
                    ),
                }
            }
        }
        out
    }
}
