//! Manifest fields of issue 13's env sources and volumes: `valueFrom.configMapKeyRef`
//! / `secretKeyRef`, `envFrom`, `volumeMounts`, `spec.volumes` (emptyDir, configMap,
//! secret, hostPath, downwardAPI). Other volume types are refused by path.

use super::{join, type_name, Kind, Walker};
use kube_lite_proto::v1::{
    ConfigMapVolumeSource, DownwardApiVolumeFile, DownwardApiVolumeSource, EmptyDirVolumeSource,
    EnvFromSource, HostPathVolumeSource, KeySelector, KeyToPath, ObjectFieldSelector,
    ObjectSelector, ResourceFieldSelector, SecretVolumeSource, Volume, VolumeMount,
};
use serde_json::Value;

/// Kubernetes reads manifests as YAML 1.1, where `defaultMode: 0400` is octal (256);
/// YAML 1.2 (serde-saphyr) reads it as decimal 400. File modes are written the 1.1
/// way in real manifests, so `mode:`/`defaultMode:` values `0[0-7]+` are rewritten to
/// YAML 1.2's `0o…` before parsing (only those keys; nothing else changes).
pub fn octal_modes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("ode:") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(i) = rest.find("ode:") {
        let (head, tail) = rest.split_at(i + 4);
        out.push_str(head);
        let key_ok = head.ends_with("defaultMode:")
            || (head.ends_with("mode:")
                && head[..head.len() - 5]
                    .chars()
                    .last()
                    .is_none_or(|c| c.is_whitespace() || c == '{' || c == ','));
        let ws = tail.len() - tail.trim_start_matches([' ', '\t']).len();
        let val = &tail[ws..];
        let end = val.find(|c: char| !c.is_ascii_digit()).unwrap_or(val.len());
        let digits = &val[..end];
        let boundary = val[end..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || c == ',' || c == '}' || c == '#');
        if key_ok
            && digits.len() > 1
            && digits.starts_with('0')
            && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && boundary
        {
            out.push_str(&tail[..ws]);
            out.push_str("0o");
            out.push_str(&digits[1..]);
            rest = &val[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Container keys this module reads.
pub const CONTAINER_KEYS: &[&str] = &["envFrom", "volumeMounts"];

impl Walker {
    fn flag(&mut self, path: &str, v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.err(
                    path,
                    format!("expected true or false, got {}", type_name(other)),
                );
                false
            }
        }
    }

    fn mode(&mut self, path: &str, v: Option<&Value>) -> Option<i32> {
        match v {
            None | Some(Value::Null) => None,
            other => {
                let n = self.int(path, other);
                Some(n.clamp(-1, i64::from(i32::MAX)) as i32)
            }
        }
    }

    pub(super) fn key_ref(&mut self, path: &str, v: Option<&Value>) -> Option<KeySelector> {
        let m = self.object(path, v)?;
        self.unknown(path, m, &["name", "key", "optional"], Kind::Pod);
        Some(KeySelector {
            name: self.string(&join(path, "name"), m.get("name")),
            key: self.string(&join(path, "key"), m.get("key")),
            optional: self.flag(&join(path, "optional"), m.get("optional")),
        })
    }

    fn object_ref(&mut self, path: &str, v: Option<&Value>) -> Option<ObjectSelector> {
        let m = self.object(path, v)?;
        self.unknown(path, m, &["name", "optional"], Kind::Pod);
        Some(ObjectSelector {
            name: self.string(&join(path, "name"), m.get("name")),
            optional: self.flag(&join(path, "optional"), m.get("optional")),
        })
    }

    pub(super) fn env_from(&mut self, path: &str, v: Option<&Value>) -> Vec<EnvFromSource> {
        let mut out = Vec::new();
        for (i, e) in self.array(path, v).iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(e) = self.object(&p, Some(e)) {
                self.unknown(&p, e, &["prefix", "configMapRef", "secretRef"], Kind::Pod);
                out.push(EnvFromSource {
                    prefix: self.string(&join(&p, "prefix"), e.get("prefix")),
                    config_map_ref: self
                        .object_ref(&join(&p, "configMapRef"), e.get("configMapRef")),
                    secret_ref: self.object_ref(&join(&p, "secretRef"), e.get("secretRef")),
                });
            }
        }
        out
    }

    pub(super) fn volume_mounts(&mut self, path: &str, v: Option<&Value>) -> Vec<VolumeMount> {
        let mut out = Vec::new();
        for (i, e) in self.array(path, v).iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(e) = self.object(&p, Some(e)) {
                self.unknown(
                    &p,
                    e,
                    &["name", "mountPath", "readOnly", "subPath"],
                    Kind::Pod,
                );
                out.push(VolumeMount {
                    name: self.string(&join(&p, "name"), e.get("name")),
                    mount_path: self.string(&join(&p, "mountPath"), e.get("mountPath")),
                    read_only: self.flag(&join(&p, "readOnly"), e.get("readOnly")),
                    sub_path: self.string(&join(&p, "subPath"), e.get("subPath")),
                });
            }
        }
        out
    }

    fn items(&mut self, path: &str, v: Option<&Value>) -> Vec<KeyToPath> {
        let mut out = Vec::new();
        for (i, e) in self.array(path, v).iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(e) = self.object(&p, Some(e)) {
                self.unknown(&p, e, &["key", "path", "mode"], Kind::Pod);
                out.push(KeyToPath {
                    key: self.string(&join(&p, "key"), e.get("key")),
                    path: self.string(&join(&p, "path"), e.get("path")),
                    mode: self.mode(&join(&p, "mode"), e.get("mode")),
                });
            }
        }
        out
    }

    pub(super) fn volumes(&mut self, path: &str, v: Option<&Value>) -> Vec<Volume> {
        let mut out = Vec::new();
        for (i, e) in self.array(path, v).iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(e) = self.object(&p, Some(e)) else {
                continue;
            };
            self.unknown(
                &p,
                e,
                &[
                    "name",
                    "emptyDir",
                    "configMap",
                    "secret",
                    "hostPath",
                    "downwardAPI",
                ],
                Kind::Pod,
            );
            let mut vol = Volume {
                name: self.string(&join(&p, "name"), e.get("name")),
                ..Default::default()
            };
            // `emptyDir: {}` is an object too (an empty one).
            if let Some(Value::Object(d)) = e.get("emptyDir") {
                let dp = join(&p, "emptyDir");
                self.unknown(&dp, d, &["medium", "sizeLimit"], Kind::Pod);
                let size_limit = match d.get("sizeLimit") {
                    Some(Value::Number(n)) => n.to_string(),
                    other => self.string(&join(&dp, "sizeLimit"), other),
                };
                vol.empty_dir = Some(EmptyDirVolumeSource {
                    medium: self.string(&join(&dp, "medium"), d.get("medium")),
                    size_limit,
                });
            }
            if let Some(c) = self.object(&join(&p, "configMap"), e.get("configMap")) {
                let cp = join(&p, "configMap");
                self.unknown(
                    &cp,
                    c,
                    &["name", "items", "defaultMode", "optional"],
                    Kind::Pod,
                );
                vol.config_map = Some(ConfigMapVolumeSource {
                    name: self.string(&join(&cp, "name"), c.get("name")),
                    items: self.items(&join(&cp, "items"), c.get("items")),
                    default_mode: self.mode(&join(&cp, "defaultMode"), c.get("defaultMode")),
                    optional: self.flag(&join(&cp, "optional"), c.get("optional")),
                });
            }
            if let Some(s) = self.object(&join(&p, "secret"), e.get("secret")) {
                let sp = join(&p, "secret");
                self.unknown(
                    &sp,
                    s,
                    &["secretName", "items", "defaultMode", "optional"],
                    Kind::Pod,
                );
                vol.secret = Some(SecretVolumeSource {
                    secret_name: self.string(&join(&sp, "secretName"), s.get("secretName")),
                    items: self.items(&join(&sp, "items"), s.get("items")),
                    default_mode: self.mode(&join(&sp, "defaultMode"), s.get("defaultMode")),
                    optional: self.flag(&join(&sp, "optional"), s.get("optional")),
                });
            }
            if let Some(h) = self.object(&join(&p, "hostPath"), e.get("hostPath")) {
                let hp = join(&p, "hostPath");
                self.unknown(&hp, h, &["path", "type"], Kind::Pod);
                vol.host_path = Some(HostPathVolumeSource {
                    path: self.string(&join(&hp, "path"), h.get("path")),
                    r#type: self.string(&join(&hp, "type"), h.get("type")),
                });
            }
            if let Some(d) = self.object(&join(&p, "downwardAPI"), e.get("downwardAPI")) {
                let dp = join(&p, "downwardAPI");
                self.unknown(&dp, d, &["items", "defaultMode"], Kind::Pod);
                let mut src = DownwardApiVolumeSource {
                    items: Vec::new(),
                    default_mode: self.mode(&join(&dp, "defaultMode"), d.get("defaultMode")),
                };
                let ip = join(&dp, "items");
                for (j, it) in self.array(&ip, d.get("items")).iter().enumerate() {
                    let q = format!("{ip}[{j}]");
                    let Some(it) = self.object(&q, Some(it)) else {
                        continue;
                    };
                    self.unknown(
                        &q,
                        it,
                        &["path", "fieldRef", "resourceFieldRef", "mode"],
                        Kind::Pod,
                    );
                    let field_ref =
                        self.object(&join(&q, "fieldRef"), it.get("fieldRef"))
                            .map(|f| ObjectFieldSelector {
                                field_path: f
                                    .get("fieldPath")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string(),
                            });
                    let resource_field_ref = self
                        .object(&join(&q, "resourceFieldRef"), it.get("resourceFieldRef"))
                        .map(|r| ResourceFieldSelector {
                            container_name: r
                                .get("containerName")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            resource: r
                                .get("resource")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            divisor: match r.get("divisor") {
                                Some(Value::Number(n)) => n.to_string(),
                                Some(Value::String(s)) => s.clone(),
                                _ => String::new(),
                            },
                        });
                    src.items.push(DownwardApiVolumeFile {
                        path: self.string(&join(&q, "path"), it.get("path")),
                        field_ref,
                        resource_field_ref,
                        mode: self.mode(&join(&q, "mode"), it.get("mode")),
                    });
                }
                vol.downward_api = Some(src);
            }
            out.push(vol);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::octal_modes;

    #[test]
    fn yaml_1_1_octal_modes_become_yaml_1_2_ones() {
        assert_eq!(
            octal_modes("defaultMode: 0400\nitems: [{key: k, path: p, mode: 0644}]\n"),
            "defaultMode: 0o400\nitems: [{key: k, path: p, mode: 0o644}]\n"
        );
        // Decimal stays decimal; other keys and values are untouched.
        let t = "defaultMode: 420\nmode: 0\nfilemode: 0755\nname: mode: 0400x\n";
        assert_eq!(octal_modes(t), t);
    }
}
