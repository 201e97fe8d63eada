//! Rules of the workload kinds (Namespace, ConfigMap, Secret, ReplicaSet, Deployment)
//! that the apiserver and kubectl-lite share: defaults, IntOrString values, the
//! pod-template hash, and when a pod counts as ready/available. Pure functions.

use crate::consts::{condition, condition_status, phase};
use crate::defaults::default_pod_spec;
use kube_lite_proto::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, Pod, PodTemplateSpec, ReplicaSetSpec,
    RollingUpdateDeployment,
};

/// Label the Deployment controller puts on its ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation of a Deployment and its ReplicaSets: the rollout revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Annotation of a ReplicaSet: the Deployment's desired replicas.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation of a ReplicaSet: replicas + maxSurge.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// `kubectl rollout restart` sets this on the pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// `kubectl rollout history`'s CHANGE-CAUSE.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// Finalizers the garbage collector understands.
pub mod finalizer {
    pub const FOREGROUND: &str = "foregroundDeletion";
    pub const ORPHAN: &str = "orphan";
    /// A Namespace's `spec.finalizers` entry while its content is deleted.
    pub const KUBERNETES: &str = "kubernetes";
}

/// `DeleteRequest.propagation_policy`.
pub mod propagation {
    pub const BACKGROUND: &str = "Background";
    pub const FOREGROUND: &str = "Foreground";
    pub const ORPHAN: &str = "Orphan";
}

/// Namespace phases.
pub mod namespace_phase {
    pub const ACTIVE: &str = "Active";
    pub const TERMINATING: &str = "Terminating";
}

/// Deployment strategy types.
pub mod strategy {
    pub const ROLLING_UPDATE: &str = "RollingUpdate";
    pub const RECREATE: &str = "Recreate";
}

/// The namespaces that exist from the start (and may not be deleted).
pub const SYSTEM_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-node-lease"];

pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
pub const DEFAULT_MAX_SURGE: &str = "25%";
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";
/// Largest ConfigMap/Secret payload (data + binaryData), as Kubernetes.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// `spec.replicas`, default 1.
pub fn replicas(r: Option<i32>) -> i32 {
    r.unwrap_or(1)
}

/// The server's defaults of a pod template.
pub fn default_template(t: &mut PodTemplateSpec) {
    default_pod_spec(t.spec.get_or_insert_with(Default::default));
    t.metadata.get_or_insert_with(Default::default);
}

pub fn default_replica_set_spec(s: &mut ReplicaSetSpec) {
    s.replicas.get_or_insert(1);
    default_template(s.template.get_or_insert_with(Default::default));
}

/// replicas 1, RollingUpdate 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600.
pub fn default_deployment_spec(s: &mut DeploymentSpec) {
    s.replicas.get_or_insert(1);
    s.revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    s.progress_deadline_seconds
        .get_or_insert(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    let st = s.strategy.get_or_insert_with(DeploymentStrategy::default);
    if st.r#type.is_empty() {
        st.r#type = strategy::ROLLING_UPDATE.into();
    }
    if st.r#type == strategy::ROLLING_UPDATE {
        let ru = st
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        if ru.max_surge.is_empty() {
            ru.max_surge = DEFAULT_MAX_SURGE.into();
        }
        if ru.max_unavailable.is_empty() {
            ru.max_unavailable = DEFAULT_MAX_UNAVAILABLE.into();
        }
    }
    default_template(s.template.get_or_insert_with(Default::default));
}

/// An IntOrString: `3` or `25%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    Int(i32),
    Percent(i32),
}

impl IntOrPercent {
    pub fn parse(s: &str) -> Result<IntOrPercent, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let n: i32 = p
                .parse()
                .map_err(|_| format!("{s:?} must be an integer or a percentage (e.g. 25%)"))?;
            if !(0..=100).contains(&n) {
                return Err(format!("{s:?} must be between 0% and 100%"));
            }
            return Ok(IntOrPercent::Percent(n));
        }
        let n: i32 = t
            .parse()
            .map_err(|_| format!("{s:?} must be an integer or a percentage (e.g. 25%)"))?;
        if n < 0 {
            return Err(format!("{s:?} must be >= 0"));
        }
        Ok(IntOrPercent::Int(n))
    }

    /// The value for `total` replicas, rounding a percentage up or down (Kubernetes:
    /// maxSurge rounds up, maxUnavailable down).
    pub fn scaled(self, total: i32, round_up: bool) -> i32 {
        match self {
            IntOrPercent::Int(n) => n,
            IntOrPercent::Percent(p) => {
                let v = i64::from(total) * i64::from(p);
                let r = if round_up { (v + 99) / 100 } else { v / 100 };
                r as i32
            }
        }
    }
}

/// (maxSurge, maxUnavailable) of a RollingUpdate Deployment for `replicas`, as
/// Kubernetes' `ResolveFenceposts`: both zero becomes maxUnavailable 1.
pub fn surge_and_unavailable(d: &DeploymentSpec) -> (i32, i32) {
    let replicas = replicas(d.replicas);
    let ru = d
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let parse = |s: &str, dflt: &str| {
        IntOrPercent::parse(if s.is_empty() { dflt } else { s }).unwrap_or(IntOrPercent::Int(0))
    };
    let surge = parse(&ru.max_surge, DEFAULT_MAX_SURGE).scaled(replicas, true);
    let unavailable = parse(&ru.max_unavailable, DEFAULT_MAX_UNAVAILABLE).scaled(replicas, false);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// FNV-1a of the template's encoding, as a short lowercase name-safe string (Kubernetes
/// uses FNV-32a of the template, rendered with its safe alphabet).
pub fn template_hash(t: &PodTemplateSpec, collision_count: i32) -> String {
    use prost::Message;
    let mut t = t.clone();
    // The hash label itself is not part of the template being hashed.
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(POD_TEMPLATE_HASH);
    }
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    // Maps encode in arbitrary order: hash a canonical form.
    let bytes = canonical(&t).encode_to_vec();
    for b in bytes {
        feed(b);
    }
    if collision_count > 0 {
        for b in collision_count.to_le_bytes() {
            feed(b);
        }
    }
    safe_encode(h)
}

/// The template with its maps as sorted `k=v` lists: prost encodes a `HashMap` in
/// iteration order, which differs between processes.
fn canonical(t: &PodTemplateSpec) -> CanonicalTemplate {
    let m = t.metadata.clone().unwrap_or_default();
    let spec = t.spec.clone().unwrap_or_default();
    let sorted = |h: &std::collections::HashMap<String, String>| -> Vec<String> {
        let mut v: Vec<String> = h.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.sort();
        v
    };
    let mut spec_no_maps = spec.clone();
    spec_no_maps.node_selector.clear();
    CanonicalTemplate {
        labels: sorted(&m.labels),
        annotations: sorted(&m.annotations),
        node_selector: sorted(&spec.node_selector),
        spec: Some(spec_no_maps),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct CanonicalTemplate {
    #[prost(string, repeated, tag = "1")]
    labels: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    annotations: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    node_selector: Vec<String>,
    #[prost(message, optional, tag = "4")]
    spec: Option<kube_lite_proto::v1::PodSpec>,
}

/// Kubernetes' `rand.SafeEncodeString` alphabet (no vowels, no 0/1/3 that read as
/// letters), so hashes never spell words.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_encode(mut v: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(SAFE[(v % SAFE.len() as u32) as usize]);
        v /= SAFE.len() as u32;
        if v == 0 {
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `n` characters of the safe alphabet from `seed` bytes (generated names:
/// `<rs>-<5 random>`).
pub fn random_suffix(seed: &[u8], n: usize) -> String {
    (0..n)
        .map(|i| SAFE[seed.get(i).copied().unwrap_or(0) as usize % SAFE.len()] as char)
        .collect()
}

/// A pod counts as ready when its Ready condition is True (until readiness probes exist,
/// the node agent sets it while every container runs), and it is not being deleted.
pub fn pod_ready(p: &Pod) -> bool {
    let m = p.metadata.as_ref();
    if m.is_some_and(|m| m.deletion_timestamp != 0) {
        return false;
    }
    let Some(st) = &p.status else { return false };
    st.phase == phase::RUNNING
        && st
            .conditions
            .iter()
            .any(|c| c.r#type == condition::READY && c.status == condition_status::TRUE)
}

/// When the pod became ready (unix ms): its Ready condition has no transition time here,
/// so the latest container start stands in for it.
pub fn ready_since(p: &Pod) -> i64 {
    p.status
        .as_ref()
        .map(|s| {
            s.container_statuses
                .iter()
                .map(|c| c.started_at)
                .max()
                .unwrap_or(s.start_time)
        })
        .unwrap_or(0)
}

/// Ready for at least `min_ready_seconds` at `now_ms`.
pub fn pod_available(p: &Pod, min_ready_seconds: i32, now_ms: i64) -> bool {
    pod_ready(p)
        && (min_ready_seconds <= 0
            || ready_since(p) + i64::from(min_ready_seconds) * 1000 <= now_ms)
}

/// A pod that still counts (not finished, not being deleted).
pub fn pod_active(p: &Pod) -> bool {
    let deleting = p
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp != 0);
    let done = p
        .status
        .as_ref()
        .is_some_and(|s| s.phase == phase::SUCCEEDED || s.phase == phase::FAILED);
    !deleting && !done
}

/// A Deployment's revision annotation as a number (0 when missing).
pub fn revision_of(annotations: &std::collections::HashMap<String, String>) -> i64 {
    annotations
        .get(REVISION_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The Deployment's spec with defaults, for callers that hold a possibly sparse one.
pub fn deployment_spec(d: &Deployment) -> DeploymentSpec {
    let mut s = d.spec.clone().unwrap_or_default();
    default_deployment_spec(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Container, ObjectMeta, PodSpec};

    #[test]
    fn int_or_percent() {
        assert_eq!(IntOrPercent::parse("25%"), Ok(IntOrPercent::Percent(25)));
        assert_eq!(IntOrPercent::parse("3"), Ok(IntOrPercent::Int(3)));
        assert!(IntOrPercent::parse("x").is_err());
        assert!(IntOrPercent::parse("-1").is_err());
        assert!(IntOrPercent::parse("101%").is_err());
        assert_eq!(IntOrPercent::Percent(25).scaled(10, true), 3);
        assert_eq!(IntOrPercent::Percent(25).scaled(10, false), 2);
        assert_eq!(IntOrPercent::Int(2).scaled(10, false), 2);
    }

    #[test]
    fn fenceposts() {
        let mut s = DeploymentSpec {
            replicas: Some(4),
            ..Default::default()
        };
        default_deployment_spec(&mut s);
        assert_eq!(surge_and_unavailable(&s), (1, 1));
        s.strategy.as_mut().unwrap().rolling_update = Some(RollingUpdateDeployment {
            max_surge: "0".into(),
            max_unavailable: "0%".into(),
        });
        assert_eq!(surge_and_unavailable(&s), (0, 1));
    }

    #[test]
    fn hash_is_stable_and_follows_the_template() {
        let t = |image: &str| PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: [("app".into(), "web".into()), ("b".into(), "c".into())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let a = template_hash(&t("a"), 0);
        assert_eq!(a, template_hash(&t("a"), 0));
        assert_ne!(a, template_hash(&t("b"), 0));
        assert_ne!(a, template_hash(&t("a"), 1));
        let mut labelled = t("a");
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(POD_TEMPLATE_HASH.into(), a.clone());
        assert_eq!(template_hash(&labelled, 0), a);
        assert!(a.bytes().all(|b| SAFE.contains(&b)));
        assert_eq!(random_suffix(&[0, 1, 2, 200, 26], 5).len(), 5);
    }
}
