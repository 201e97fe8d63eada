//! The ReplicaSet controller's decision, as Kubernetes': pods owned by the ReplicaSet
//! (controller ownerReference) and matching its selector count; matching orphans are
//! adopted, owned pods whose labels stop matching are released; missing pods are
//! created (`<rs>-<5 random>`), extra ones deleted (unscheduled, then not running,
//! then not ready, then the newest first); status replicas/fullyLabeled/ready/available.

use std::collections::HashMap;
use std::time::Duration;

use kube_lite_core::workloads::{self as wl, propagation};
use kube_lite_core::ObjectRef;
use kube_lite_proto::labels::{from_label_selector, map_matches};
use kube_lite_proto::v1::{ObjectMeta, OwnerReference, Pod, ReplicaSet, ReplicaSetStatus};

use super::events::Record;
use super::manager::{Action, Cache, Outcome};
use crate::resource::{Kind, Object};

/// Most pods created or deleted by one reconcile (Kubernetes' burstReplicas).
pub const BURST: usize = 500;

/// The controller reference of an object (ownerReference with controller = true).
pub fn controller_of(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references.iter().find(|r| r.controller)
}

/// The ReplicaSets of namespace `ns` whose selector matches `labels`.
pub fn selecting(cache: &Cache, ns: &str, labels: &HashMap<String, String>) -> Vec<ObjectRef> {
    cache
        .objects
        .in_namespace(Kind::ReplicaSet, ns)
        .filter_map(|(k, o)| {
            let Object::ReplicaSet(rs) = &**o else {
                return None;
            };
            let sel = rs.spec.as_ref()?.selector.as_ref()?;
            let s = from_label_selector(sel).ok()?;
            (!s.is_empty() && s.matches(labels)).then(|| k.clone())
        })
        .collect()
}

/// A controller reference to `owner`.
pub fn owner_ref(kind: Kind, m: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version().into(),
        kind: kind.name().into(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

/// `<base>-<5 random>`, within a DNS label's 63 characters.
pub fn pod_name(base: &str) -> String {
    let id = uuid::Uuid::new_v4();
    let base: String = base.chars().take(57).collect();
    format!("{base}-{}", wl::random_suffix(id.as_bytes(), 5))
}

/// Deletion preference: lower goes first.
fn delete_rank(p: &Pod) -> (u8, u8, u8, i64) {
    let node = p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
    let running = p
        .status
        .as_ref()
        .is_some_and(|s| s.phase == kube_lite_core::consts::phase::RUNNING);
    (
        u8::from(!node.is_empty()),
        u8::from(running),
        u8::from(wl::pod_ready(p)),
        -p.meta_ref().creation_timestamp,
    )
}

trait MetaRef {
    fn meta_ref(&self) -> &ObjectMeta;
}
impl MetaRef for Pod {
    fn meta_ref(&self) -> &ObjectMeta {
        use kube_lite_core::Resource;
        self.meta()
    }
}

pub fn reconcile(cache: &Cache, key: &ObjectRef, now_ms: i64) -> Outcome {
    let mut out = Outcome::default();
    let Some(obj) = cache.get(Kind::ReplicaSet, key) else {
        return out;
    };
    let Object::ReplicaSet(rs) = &**obj else {
        return out;
    };
    let m = obj.meta();
    let mut spec = rs.spec.clone().unwrap_or_default();
    wl::default_replica_set_spec(&mut spec);
    let Some(selector) = spec
        .selector
        .as_ref()
        .and_then(|s| from_label_selector(s).ok())
    else {
        return out;
    };
    let template = spec.template.clone().unwrap_or_default();
    let tmeta = template.metadata.clone().unwrap_or_default();

    // Owned pods (controller ref to this uid), releasing those that stopped matching.
    let mut active: Vec<Pod> = Vec::new();
    for d in cache.dependents_of(&m.uid) {
        let Object::Pod(p) = &*d else { continue };
        if controller_of(d.meta()).is_none_or(|r| r.uid != m.uid) {
            continue;
        }
        if !selector.matches(&d.meta().labels) {
            if d.meta().deletion_timestamp == 0 {
                let mut u = (*d).clone();
                u.meta_mut().owner_references.retain(|r| r.uid != m.uid);
                out.actions.push(Action::Update(u));
            }
            continue;
        }
        if wl::pod_active(p) {
            active.push(p.clone());
        }
    }
    let deleting = m.deletion_timestamp != 0;
    // Orphans that match: adopted (not while this ReplicaSet is being deleted).
    if !deleting {
        for (_, o) in cache.objects.in_namespace(Kind::Pod, &m.namespace) {
            let Object::Pod(p) = &**o else { continue };
            let pm = o.meta();
            if controller_of(pm).is_some() || pm.deletion_timestamp != 0 || !wl::pod_active(p) {
                continue;
            }
            if selector.is_empty() || !selector.matches(&pm.labels) {
                continue;
            }
            let mut u = (**o).clone();
            u.meta_mut()
                .owner_references
                .push(owner_ref(Kind::ReplicaSet, m));
            out.actions.push(Action::Update(u));
            active.push(p.clone());
        }
    }

    let want = wl::replicas(spec.replicas).max(0) as usize;
    if !deleting {
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            for _ in 0..n {
                let name = pod_name(&m.name);
                let pod = Pod {
                    metadata: Some(ObjectMeta {
                        name: name.clone(),
                        namespace: m.namespace.clone(),
                        labels: tmeta.labels.clone(),
                        annotations: tmeta.annotations.clone(),
                        owner_references: vec![owner_ref(Kind::ReplicaSet, m)],
                        ..Default::default()
                    }),
                    spec: template.spec.clone(),
                    status: None,
                };
                out.actions.push(Action::Create(Object::Pod(pod)));
                out.events.push(Record::normal(
                    obj,
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                    "replicaset-controller",
                ));
            }
        } else if active.len() > want {
            let mut victims = active.clone();
            victims.sort_by_key(delete_rank);
            for p in victims.into_iter().take((active.len() - want).min(BURST)) {
                let pm = p.meta_ref();
                out.actions.push(Action::Delete(
                    Kind::Pod,
                    ObjectRef::new(pm.namespace.clone(), pm.name.clone()),
                    pm.uid.clone(),
                    propagation::BACKGROUND,
                ));
                out.events.push(Record::normal(
                    obj,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pm.name),
                    "replicaset-controller",
                ));
            }
        }
    }

    // Status.
    let min_ready = spec.min_ready_seconds;
    let mut st = ReplicaSetStatus {
        replicas: active.len() as i32,
        observed_generation: m.generation,
        ..Default::default()
    };
    let mut next_check: Option<i64> = None;
    for p in &active {
        if map_matches(&tmeta.labels, &p.meta_ref().labels) {
            st.fully_labeled_replicas += 1;
        }
        if wl::pod_ready(p) {
            st.ready_replicas += 1;
            if wl::pod_available(p, min_ready, now_ms) {
                st.available_replicas += 1;
            } else {
                let at = wl::ready_since(p) + i64::from(min_ready) * 1000;
                next_check = Some(next_check.map_or(at, |n: i64| n.min(at)));
            }
        }
    }
    st.conditions = rs.status.clone().unwrap_or_default().conditions;
    if rs.status.as_ref() != Some(&st) {
        let mut u = rs.clone();
        u.status = Some(st);
        out.actions
            .push(Action::UpdateStatus(Object::ReplicaSet(u)));
    }
    if let Some(at) = next_check {
        out.requeue_after = Some(Duration::from_millis((at - now_ms).clamp(10, 60_000) as u64));
    }
    out
}

/// A ReplicaSet as [`ReplicaSet`] (for callers holding an [`Object`]).
pub fn as_rs(o: &Object) -> Option<&ReplicaSet> {
    match o {
        Object::ReplicaSet(r) => Some(r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Objects;
    use kube_lite_core::consts::condition;
    use kube_lite_proto::v1::{
        Container, LabelSelector, PodCondition, PodSpec, PodStatus, PodTemplateSpec, ReplicaSetSpec,
    };

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rs(replicas: i32) -> Object {
        Object::ReplicaSet(ReplicaSet {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "rs1".into(),
                generation: 2,
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: Some(LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    ..Default::default()
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "web")]),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: "whoami".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                min_ready_seconds: 0,
            }),
            status: None,
        })
    }

    fn pod(name: &str, owner: Option<&str>, app: &str, ready: bool, node: &str, t: i64) -> Object {
        Object::Pod(Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("u-{name}"),
                labels: labels(&[("app", app)]),
                creation_timestamp: t,
                owner_references: owner
                    .map(|u| OwnerReference {
                        uid: u.into(),
                        controller: true,
                        kind: "ReplicaSet".into(),
                        name: "web".into(),
                        api_version: "apps/v1".into(),
                        block_owner_deletion: true,
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: if ready { "Running" } else { "Pending" }.into(),
                conditions: vec![PodCondition {
                    r#type: condition::READY.into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
    }

    fn cache(objs: Vec<Object>) -> Cache {
        let mut o = Objects::default();
        for x in objs {
            o.insert(x);
        }
        Cache::from_objects(&o)
    }

    fn key() -> ObjectRef {
        ObjectRef::new("default", "web")
    }

    fn summary(out: &Outcome) -> Vec<String> {
        out.actions
            .iter()
            .map(|a| match a {
                Action::Create(o) => format!("create {}", &o.meta().name[..4]),
                Action::Delete(_, k, _, _) => format!("delete {}", k.name),
                Action::Update(o) => format!(
                    "update {} owners={}",
                    o.meta().name,
                    o.meta().owner_references.len()
                ),
                Action::UpdateStatus(Object::ReplicaSet(r)) => {
                    let s = r.status.clone().unwrap();
                    format!(
                        "status {} {} {} {}",
                        s.replicas, s.ready_replicas, s.available_replicas, s.observed_generation
                    )
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn creates_missing_pods_with_owner_and_template() {
        let c = cache(vec![rs(3), pod("web-a", Some("rs1"), "web", true, "n1", 1)]);
        let out = reconcile(&c, &key(), 0);
        assert_eq!(
            summary(&out),
            ["create web-", "create web-", "status 1 1 1 2"]
        );
        let Action::Create(Object::Pod(p)) = &out.actions[0] else {
            panic!()
        };
        let m = p.metadata.as_ref().unwrap();
        assert_eq!(m.name.len(), "web-".len() + 5);
        assert_eq!(m.labels["app"], "web");
        assert_eq!(m.owner_references[0].uid, "rs1");
        assert!(m.owner_references[0].controller);
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[0].reason, "SuccessfulCreate");
    }

    #[test]
    fn deletes_unscheduled_and_unready_first() {
        let c = cache(vec![
            rs(1),
            pod("old-ready", Some("rs1"), "web", true, "n1", 1),
            pod("new-ready", Some("rs1"), "web", true, "n1", 5),
            pod("unready", Some("rs1"), "web", false, "n1", 2),
            pod("unscheduled", Some("rs1"), "web", false, "", 3),
        ]);
        let out = reconcile(&c, &key(), 0);
        assert_eq!(
            summary(&out),
            [
                "delete unscheduled",
                "delete unready",
                "delete new-ready",
                "status 4 2 2 2"
            ]
        );
    }

    #[test]
    fn adopts_matching_orphans_and_releases_non_matching() {
        let c = cache(vec![
            rs(2),
            pod("orphan", None, "web", true, "n1", 1),
            pod("other", None, "db", true, "n1", 1),
            pod("relabelled", Some("rs1"), "db", true, "n1", 1),
            pod("owned", Some("rs1"), "web", true, "n1", 1),
        ]);
        let out = reconcile(&c, &key(), 0);
        assert_eq!(
            summary(&out),
            [
                "update relabelled owners=0",
                "update orphan owners=1",
                "status 2 2 2 2"
            ]
        );
        assert_eq!(
            selecting(&c, "default", &labels(&[("app", "web")])),
            vec![key()]
        );
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let Object::ReplicaSet(mut r) = rs(1) else {
            panic!()
        };
        r.spec.as_mut().unwrap().min_ready_seconds = 10;
        let mut p = pod("a", Some("rs1"), "web", true, "n1", 1);
        if let Object::Pod(pp) = &mut p {
            pp.status.as_mut().unwrap().start_time = 1_000;
        }
        let c = cache(vec![Object::ReplicaSet(r), p]);
        let out = reconcile(&c, &key(), 5_000);
        assert_eq!(summary(&out), ["status 1 1 0 2"]);
        assert_eq!(out.requeue_after, Some(Duration::from_millis(6_000)));
        let out = reconcile(&c, &key(), 11_000);
        assert_eq!(summary(&out), ["status 1 1 1 2"]);
    }
}
