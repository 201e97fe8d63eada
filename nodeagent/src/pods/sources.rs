//! The ConfigMaps and Secrets a pod references (env `configMapKeyRef`/`secretKeyRef`,
//! `envFrom`, `configMap`/`secret` volumes and projected sources), fetched with the node's identity — the
//! Node authorizer lets a node `get` exactly these — and kept per pod worker.
//!
//! The kubelet watches each referenced object (or re-gets it after a TTL); the worker
//! here re-gets them every [`SYNC_PERIOD`] (one Get per object, what the authorizer
//! allows), so an update reaches env of later starts and volume files within it.
//! The lookups are pure and unit-tested.

use super::ports::PodApi;
use kube_lite_proto::v1::{Container, EnvFromSource, KeySelector, Pod};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::Code;

/// How often a worker re-reads its pod's ConfigMaps and Secrets.
pub const SYNC_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// As the kubelet names it in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
    fn lower(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
}

/// One object's data (ConfigMap `data` + `binaryData`, Secret `data`), or None when it
/// does not exist.
pub type Data = Option<BTreeMap<String, Vec<u8>>>;

/// What was fetched for a pod, by (kind, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    pub namespace: String,
    pub objects: HashMap<(Kind, String), Data>,
}

/// The objects `pod` references, sorted, without duplicates.
pub fn references(pod: &Pod) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    for c in spec.init_containers.iter().chain(&spec.containers) {
        for e in &c.env {
            if let Some(s) = &e.value_from {
                if let Some(k) = &s.config_map_key_ref {
                    out.push((Kind::ConfigMap, k.name.clone()));
                }
                if let Some(k) = &s.secret_key_ref {
                    out.push((Kind::Secret, k.name.clone()));
                }
            }
        }
        for e in &c.env_from {
            if let Some(r) = &e.config_map_ref {
                out.push((Kind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &e.secret_ref {
                out.push((Kind::Secret, r.name.clone()));
            }
        }
    }
    for v in &spec.volumes {
        for p in v.projected.iter().flat_map(|p| p.sources.iter()) {
            if let Some(c) = &p.config_map {
                out.push((Kind::ConfigMap, c.name.clone()));
            }
            if let Some(c) = &p.secret {
                out.push((Kind::Secret, c.secret_name.clone()));
            }
        }
        if let Some(c) = &v.config_map {
            out.push((Kind::ConfigMap, c.name.clone()));
        }
        if let Some(s) = &v.secret {
            out.push((Kind::Secret, s.secret_name.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Sources {
    /// The object, or the kubelet's error when it is missing or not fetched yet.
    pub fn object(&self, kind: Kind, name: &str) -> Result<&BTreeMap<String, Vec<u8>>, String> {
        match self.objects.get(&(kind, name.to_string())) {
            Some(Some(d)) => Ok(d),
            Some(None) => Err(format!("{} {name:?} not found", kind.lower())),
            None => Err(format!("{} {name:?} not fetched yet", kind.lower())),
        }
    }

    /// A configMapKeyRef/secretKeyRef: Ok(None) when optional and missing.
    pub fn key(&self, kind: Kind, k: &KeySelector) -> Result<Option<String>, String> {
        let obj = match self.object(kind, &k.name) {
            Ok(o) => o,
            Err(_) if k.optional && self.objects.contains_key(&(kind, k.name.clone())) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match obj.get(&k.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if k.optional => Ok(None),
            None => Err(format!(
                "couldn't find key {} in {} {}/{}",
                k.key,
                kind.name(),
                self.namespace,
                k.name
            )),
        }
    }

    /// The variables of one `envFrom` entry (prefix + key), keys that are not valid
    /// variable names skipped as Kubernetes does.
    pub fn env_from(&self, e: &EnvFromSource) -> Result<Vec<(String, String)>, String> {
        let (kind, r) = match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, r),
            (None, Some(r)) => (Kind::Secret, r),
            (None, None) => return Ok(Vec::new()),
        };
        let obj = match self.object(kind, &r.name) {
            Ok(o) => o,
            Err(_) if r.optional && self.objects.contains_key(&(kind, r.name.clone())) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        Ok(obj
            .iter()
            .map(|(k, v)| (format!("{}{k}", e.prefix), v))
            .filter(|(k, _)| valid_env_name(k))
            .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned()))
            .collect())
    }

    /// Every `envFrom` variable of `c`, later entries winning.
    pub fn env_from_all(&self, c: &Container) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for e in &c.env_from {
            for (k, v) in self.env_from(e)? {
                out.retain(|(x, _)| *x != k);
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

/// Kubernetes' C_IDENTIFIER-ish rule for env names from envFrom (no '=', not empty,
/// not starting with a digit).
fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Gets every object of `refs` in `namespace`. NotFound is recorded as missing; any
/// other error fails the whole fetch (the previous copy stays in use).
pub async fn fetch(
    api: &dyn PodApi,
    namespace: &str,
    refs: &[(Kind, String)],
) -> Result<Sources, String> {
    let mut out = Sources {
        namespace: namespace.to_string(),
        objects: HashMap::new(),
    };
    for (kind, name) in refs {
        let r = match kind {
            Kind::ConfigMap => api.get_config_map(namespace, name).await,
            Kind::Secret => api.get_secret(namespace, name).await,
        };
        let data = match r {
            Ok(d) => Some(d),
            Err(e) if e.code() == Code::NotFound => None,
            Err(e) => {
                return Err(format!(
                    "getting {} {namespace}/{name}: {}",
                    kind.lower(),
                    e.message()
                ))
            }
        };
        out.objects.insert((*kind, name.clone()), data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::ObjectSelector;

    fn sources() -> Sources {
        let mut s = Sources {
            namespace: "default".into(),
            ..Default::default()
        };
        s.objects.insert(
            (Kind::ConfigMap, "cm".into()),
            Some(
                [
                    ("a".to_string(), b"1".to_vec()),
                    ("1bad".to_string(), b"x".to_vec()),
                ]
                .into(),
            ),
        );
        s.objects.insert((Kind::Secret, "gone".into()), None);
        s
    }

    #[test]
    fn keys_optional_and_missing_ones_name_the_key() {
        let s = sources();
        let k = |name: &str, key: &str, optional| KeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        };
        assert_eq!(
            s.key(Kind::ConfigMap, &k("cm", "a", false)),
            Ok(Some("1".into()))
        );
        assert_eq!(
            s.key(Kind::ConfigMap, &k("cm", "zz", false)).unwrap_err(),
            "couldn't find key zz in ConfigMap default/cm"
        );
        assert_eq!(s.key(Kind::ConfigMap, &k("cm", "zz", true)), Ok(None));
        assert_eq!(
            s.key(Kind::Secret, &k("gone", "pw", false)).unwrap_err(),
            "secret \"gone\" not found"
        );
        assert_eq!(s.key(Kind::Secret, &k("gone", "pw", true)), Ok(None));
        assert!(s.key(Kind::Secret, &k("never", "pw", true)).is_err());
    }

    #[test]
    fn env_from_prefixes_and_skips_invalid_names() {
        let s = sources();
        let e = EnvFromSource {
            prefix: "P_".into(),
            config_map_ref: Some(ObjectSelector {
                name: "cm".into(),
                optional: false,
            }),
            secret_ref: None,
        };
        assert_eq!(
            s.env_from(&e).unwrap(),
            vec![
                ("P_1bad".to_string(), "x".to_string()),
                ("P_a".to_string(), "1".to_string())
            ]
        );
        let e = EnvFromSource {
            prefix: String::new(),
            ..e
        };
        assert_eq!(
            s.env_from(&e).unwrap(),
            vec![("a".to_string(), "1".to_string())]
        );
        let gone = EnvFromSource {
            secret_ref: Some(ObjectSelector {
                name: "gone".into(),
                optional: true,
            }),
            ..Default::default()
        };
        assert!(s.env_from(&gone).unwrap().is_empty());
    }
}
