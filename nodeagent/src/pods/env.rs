//! A container's environment and argv as Kubernetes builds them (pure, unit-tested):
//! `env[].value`, `valueFrom.fieldRef` (pod metadata, node, IPs) and
//! `valueFrom.resourceFieldRef` (the container's requests/limits), in order, each value
//! expanded with `$(VAR)` against the variables before it; then `$(VAR)` in command and
//! args against the whole environment. `$$` is a literal `$`; an unknown `$(X)` stays as
//! written (Kubernetes' rules). `envFrom` and `configMapKeyRef`/`secretKeyRef` read the
//! pod's fetched [`Sources`]. A reference that cannot be resolved is an error naming
//! it, shown as `CreateContainerConfigError`.

use super::sources::{Kind, Sources};
use kube_lite_core::quantity::{container_res, parse_quantity};
use kube_lite_proto::v1::{Container, Pod};
use std::collections::HashMap;

/// What fieldRefs may read of the pod and its node.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub node_name: String,
    pub pod_ip: String,
    pub host_ip: String,
}

impl PodFacts {
    pub fn of(p: &Pod, pod_ip: &str, host_ip: &str) -> PodFacts {
        let m = p.metadata.clone().unwrap_or_default();
        PodFacts {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            labels: m.labels,
            annotations: m.annotations,
            node_name: p
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default(),
            pod_ip: pod_ip.to_string(),
            host_ip: host_ip.to_string(),
        }
    }
}

/// `metadata.labels['k']` → `k` for prefix `metadata.labels`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// The value of a fieldRef path, or why not.
pub fn field_value(path: &str, f: &PodFacts) -> Result<String, String> {
    Ok(match path {
        "metadata.name" => f.name.clone(),
        "metadata.namespace" => f.namespace.clone(),
        "metadata.uid" => f.uid.clone(),
        "spec.nodeName" => f.node_name.clone(),
        "status.podIP" => f.pod_ip.clone(),
        "status.hostIP" => f.host_ip.clone(),
        p => {
            if let Some(k) = subscript(p, "metadata.labels") {
                f.labels.get(k).cloned().unwrap_or_default()
            } else if let Some(k) = subscript(p, "metadata.annotations") {
                f.annotations.get(k).cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath {p:?}"));
            }
        }
    })
}

/// Whether a fieldRef path is one [`field_value`] knows (for validation).
pub fn supported_field_path(path: &str) -> bool {
    field_value(path, &PodFacts::default()).is_ok()
}

/// The value of a resourceFieldRef: `resource` of `c`, divided by `divisor`, rounded up.
pub fn resource_value(c: &Container, resource: &str, divisor: &str) -> Result<String, String> {
    let (req, lim) = c
        .resources
        .as_ref()
        .map(|r| container_res(&r.requests, &r.limits))
        .unwrap_or_default();
    let milli = match resource {
        "limits.cpu" => lim.cpu_millis as i128,
        "requests.cpu" => req.cpu_millis as i128,
        "limits.memory" => lim.memory_bytes as i128 * 1000,
        "requests.memory" => req.memory_bytes as i128 * 1000,
        r => return Err(format!("unsupported resource {r:?}")),
    };
    let div = if divisor.is_empty() {
        1000
    } else {
        match parse_quantity(divisor) {
            Ok(q) if q.millis() > 0 => q.millis() as i128,
            _ => return Err(format!("bad divisor {divisor:?}")),
        }
    };
    Ok(((milli + div - 1) / div).to_string())
}

/// Kubernetes' `$(VAR)` expansion.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                    } else {
                        out.push_str(&s[i..i + 3 + end]);
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The environment of `c` (of a pod with containers `all`), in order.
pub fn build_env(
    c: &Container,
    all: &[&Container],
    f: &PodFacts,
    sources: &Sources,
) -> Result<Vec<(String, String)>, String> {
    // envFrom first; env entries override (Kubernetes' order).
    let mut out: Vec<(String, String)> = sources.env_from_all(c)?;
    let mut vars: HashMap<String, String> = out.iter().cloned().collect();
    for e in &c.env {
        let v = match e.value_from.as_ref() {
            None => expand(&e.value, &vars),
            Some(src) => {
                if let Some(k) = &src.config_map_key_ref {
                    match sources.key(Kind::ConfigMap, k)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(k) = &src.secret_key_ref {
                    match sources.key(Kind::Secret, k)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(fr) = &src.field_ref {
                    field_value(&fr.field_path, f).map_err(|m| format!("env {}: {m}", e.name))?
                } else if let Some(rr) = &src.resource_field_ref {
                    let target = if rr.container_name.is_empty() {
                        c
                    } else {
                        all.iter()
                            .copied()
                            .find(|x| x.name == rr.container_name)
                            .ok_or_else(|| {
                                format!(
                                    "env {}: container {:?} not found",
                                    e.name, rr.container_name
                                )
                            })?
                    };
                    resource_value(target, &rr.resource, &rr.divisor)
                        .map_err(|m| format!("env {}: {m}", e.name))?
                } else {
                    return Err(format!("env {}: valueFrom names no source", e.name));
                }
            }
        };
        vars.insert(e.name.clone(), v.clone());
        out.retain(|(k, _)| k != &e.name);
        out.push((e.name.clone(), v));
    }
    Ok(out)
}

/// `command` and `args` with `$(VAR)` expanded against `env`.
pub fn expand_argv(c: &Container, env: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    (
        c.command.iter().map(|s| expand(s, &vars)).collect(),
        c.args.iter().map(|s| expand(s, &vars)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        EnvVar, EnvVarSource, ObjectFieldSelector, ResourceFieldSelector, ResourceRequirements,
    };

    fn facts() -> PodFacts {
        PodFacts {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            labels: [("app".to_string(), "shop".to_string())].into(),
            node_name: "node0".into(),
            pod_ip: "10.0.1.2".into(),
            host_ip: "192.168.1.1".into(),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
            value_from: None,
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: String::new(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let v: HashMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$$-$", &v), "x-$(B)-$(A)-$-$");
        assert_eq!(expand("$(A", &v), "$(A");
        assert_eq!(expand("é$(A)é", &v), "éxé");
    }

    #[test]
    fn env_from_fields_resources_and_earlier_vars() {
        let c = Container {
            name: "app".into(),
            command: vec!["echo".into()],
            args: vec![
                "$(POD)@$(NODE)".into(),
                "$(MEM_MI)".into(),
                "$(NOPE)".into(),
            ],
            env: vec![
                field("POD", "metadata.name"),
                field("NODE", "spec.nodeName"),
                field("IP", "status.podIP"),
                field("APP", "metadata.labels['app']"),
                var("GREETING", "hi $(POD) on $(IP)"),
                EnvVar {
                    name: "MEM_MI".into(),
                    value: String::new(),
                    value_from: Some(EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.memory".into(),
                            divisor: "1Mi".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
                EnvVar {
                    name: "CPU".into(),
                    value: String::new(),
                    value_from: Some(EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "requests.cpu".into(),
                            divisor: "1m".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
            ],
            resources: Some(ResourceRequirements {
                requests: [("cpu".to_string(), "250m".to_string())].into(),
                limits: [("memory".to_string(), "64Mi".to_string())].into(),
            }),
            ..Default::default()
        };
        let env = build_env(&c, &[&c], &facts(), &Sources::default()).unwrap();
        let m: HashMap<_, _> = env.iter().cloned().collect();
        assert_eq!(m["POD"], "web");
        assert_eq!(m["NODE"], "node0");
        assert_eq!(m["APP"], "shop");
        assert_eq!(m["GREETING"], "hi web on 10.0.1.2");
        assert_eq!(m["MEM_MI"], "64");
        assert_eq!(m["CPU"], "250");
        let (cmd, args) = expand_argv(&c, &env);
        assert_eq!(cmd, ["echo"]);
        assert_eq!(args, ["web@node0", "64", "$(NOPE)"]);
        // requests.cpu with the default divisor 1: 250m rounds up to 1.
        assert_eq!(resource_value(&c, "requests.cpu", "").unwrap(), "1");
    }

    #[test]
    fn bad_references_name_the_variable() {
        let c = Container {
            env: vec![field("X", "spec.serviceAccountName")],
            ..Default::default()
        };
        let e = build_env(&c, &[&c], &facts(), &Sources::default()).unwrap_err();
        assert_eq!(
            e,
            "env X: unsupported fieldPath \"spec.serviceAccountName\""
        );
        assert!(supported_field_path("metadata.annotations['a/b']"));
        assert!(!supported_field_path("metadata.labels"));
    }
}
