//! Garbage collection and namespace deletion: pure decisions over the manager's
//! [`Cache`], as Kubernetes' garbage collector and namespace controller do.
//!
//! - A dependent all of whose owners are gone (no live object with the referenced uid)
//!   is deleted (background propagation); references to missing owners are dropped
//!   while another owner remains.
//! - An owner marked deleted with `foregroundDeletion` gets its dependents deleted
//!   (themselves in the foreground), and loses the finalizer (so it goes) once none
//!   is left; with `orphan`, its dependents lose their references to it first.
//! - A Terminating namespace gets everything in it deleted, then is removed.

use kube_lite_core::workloads::{finalizer, propagation};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::ObjectMeta;

use super::manager::{Action, Cache, Outcome};
use crate::resource::{Kind, Object};
use crate::store::{Txn, TxnResult};

pub fn has_gc_finalizer(m: &ObjectMeta) -> bool {
    m.finalizers
        .iter()
        .any(|f| f == finalizer::FOREGROUND || f == finalizer::ORPHAN)
}

/// A dependent: delete it when every owner is gone; drop references to missing owners;
/// delete it in the foreground when an owner is being deleted in the foreground.
pub fn dependent(cache: &Cache, kind: Kind, key: &ObjectRef) -> Outcome {
    let mut out = Outcome::default();
    let Some(o) = cache.get(kind, key) else {
        return out;
    };
    let m = o.meta();
    if m.owner_references.is_empty() {
        return out;
    }
    let live: Vec<_> = m
        .owner_references
        .iter()
        .filter(|r| cache.by_uid(&r.uid).is_some())
        .collect();
    if live.is_empty() {
        if m.deletion_timestamp == 0 {
            out.actions.push(Action::Delete(
                kind,
                key.clone(),
                m.uid.clone(),
                propagation::BACKGROUND,
            ));
        }
        return out;
    }
    let foreground_owner = live.iter().any(|r| {
        cache.by_uid(&r.uid).is_some_and(|ow| {
            ow.meta().deletion_timestamp != 0
                && ow
                    .meta()
                    .finalizers
                    .iter()
                    .any(|f| f == finalizer::FOREGROUND)
        })
    });
    if foreground_owner && live.len() == 1 {
        if m.deletion_timestamp == 0 {
            out.actions.push(Action::Delete(
                kind,
                key.clone(),
                m.uid.clone(),
                propagation::FOREGROUND,
            ));
        }
        return out;
    }
    if live.len() != m.owner_references.len() {
        let mut updated = (**o).clone();
        let keep: Vec<_> = live.into_iter().cloned().collect();
        updated.meta_mut().owner_references = keep;
        out.actions.push(Action::Update(updated));
    }
    out
}

/// An owner being deleted with `orphan` or `foregroundDeletion`.
pub fn owner(cache: &Cache, kind: Kind, key: &ObjectRef) -> Outcome {
    let mut out = Outcome::default();
    let Some(o) = cache.get(kind, key) else {
        return out;
    };
    let m = o.meta();
    if m.deletion_timestamp == 0 {
        return out;
    }
    let deps = cache.dependents_of(&m.uid);
    if m.finalizers.iter().any(|f| f == finalizer::ORPHAN) {
        if deps.is_empty() {
            out.actions
                .push(Action::Update(without_finalizer(o, finalizer::ORPHAN)));
        } else {
            for d in deps {
                let mut u = (*d).clone();
                u.meta_mut().owner_references.retain(|r| r.uid != m.uid);
                out.actions.push(Action::Update(u));
            }
        }
        return out;
    }
    if m.finalizers.iter().any(|f| f == finalizer::FOREGROUND) {
        if deps.is_empty() {
            out.actions
                .push(Action::Update(without_finalizer(o, finalizer::FOREGROUND)));
        } else {
            for d in deps {
                if d.meta().deletion_timestamp == 0 {
                    // Only this owner left: the dependent goes (in the foreground too);
                    // otherwise it just stops depending on this owner.
                    if d.meta().owner_references.len() == 1 {
                        out.actions.push(Action::Delete(
                            d.kind(),
                            d.key(),
                            d.meta().uid.clone(),
                            propagation::FOREGROUND,
                        ));
                    } else {
                        let mut u = (*d).clone();
                        u.meta_mut().owner_references.retain(|r| r.uid != m.uid);
                        out.actions.push(Action::Update(u));
                    }
                }
            }
        }
    }
    out
}

fn without_finalizer(o: &Object, f: &str) -> Object {
    let mut u = o.clone();
    u.meta_mut().finalizers.retain(|x| x != f);
    u
}

/// The namespaced kinds whose objects a namespace deletion removes.
fn namespaced_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().filter(|k| k.namespaced())
}

/// A Terminating namespace: delete what is in it (pods gracefully); once empty, remove
/// it.
pub fn namespace(cache: &Cache, name: &str) -> Outcome {
    let mut out = Outcome::default();
    let key = ObjectRef::new("", name);
    let Some(ns) = cache.get(Kind::Namespace, &key) else {
        return out;
    };
    if ns.meta().deletion_timestamp == 0 {
        return out;
    }
    let mut left = 0;
    for kind in namespaced_kinds() {
        for (k, o) in cache.objects.in_namespace(kind, name) {
            left += 1;
            if o.meta().deletion_timestamp == 0 {
                out.actions.push(Action::Delete(
                    kind,
                    k.clone(),
                    o.meta().uid.clone(),
                    propagation::BACKGROUND,
                ));
            }
        }
    }
    if left == 0 {
        out.actions
            .push(Action::FinalizeNamespace(name.to_string()));
    } else {
        // Objects with finalizers of their own, or pods still stopping: look again.
        out.requeue_after = Some(std::time::Duration::from_secs(2));
    }
    out
}

/// Removes a Terminating namespace when nothing is left in it (checked again inside the
/// writer, against the authoritative state).
pub fn finalize_namespace(txn: &mut Txn<'_>, name: &str) -> TxnResult {
    let key = ObjectRef::new("", name);
    let Some(ns) = txn.get(Kind::Namespace, &key).cloned() else {
        return Ok(None);
    };
    if ns.meta().deletion_timestamp == 0 {
        return Ok(None);
    }
    for kind in namespaced_kinds() {
        if txn.objects().in_namespace(kind, name).next().is_some() {
            return Ok(None);
        }
    }
    let mut o = (*ns).clone();
    if let Object::Namespace(n) = &mut o {
        if let Some(s) = n.spec.as_mut() {
            s.finalizers.retain(|f| f != finalizer::KUBERNETES);
        }
    }
    if o.meta().finalizers.is_empty() {
        return Ok(txn.remove(Kind::Namespace, &key));
    }
    Ok(Some(txn.put(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Objects;
    use kube_lite_proto::v1::{ConfigMap, Namespace, OwnerReference, Pod, ReplicaSet};

    fn meta(ns: &str, name: &str, uid: &str, owners: &[&str]) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            uid: uid.into(),
            owner_references: owners
                .iter()
                .map(|u| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    uid: u.to_string(),
                    controller: true,
                    block_owner_deletion: true,
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pod(name: &str, uid: &str, owners: &[&str]) -> Object {
        Object::Pod(Pod {
            metadata: meta("default", name, uid, owners),
            ..Default::default()
        })
    }

    fn rs(uid: &str, finalizers: &[&str]) -> Object {
        let mut m = meta("default", "rs", uid, &[]);
        if !finalizers.is_empty() {
            let m = m.as_mut().unwrap();
            m.deletion_timestamp = 1;
            m.finalizers = finalizers.iter().map(|s| s.to_string()).collect();
        }
        Object::ReplicaSet(ReplicaSet {
            metadata: m,
            ..Default::default()
        })
    }

    fn cache(objs: Vec<Object>) -> Cache {
        let mut o = Objects::default();
        for x in objs {
            o.insert(x);
        }
        Cache::from_objects(&o)
    }

    fn kinds(out: &Outcome) -> Vec<String> {
        out.actions
            .iter()
            .map(|a| match a {
                Action::Delete(k, key, _, p) => format!("delete {} {} {p}", k.plural(), key.name),
                Action::Update(o) => format!(
                    "update {} owners={} finalizers={:?}",
                    o.meta().name,
                    o.meta().owner_references.len(),
                    o.meta().finalizers
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn orphaned_dependents_are_deleted_and_dangling_references_dropped() {
        let c = cache(vec![
            pod("a", "p1", &["gone"]),
            pod("b", "p2", &["r1", "gone"]),
            rs("r1", &[]),
        ]);
        let k = |n: &str| ObjectRef::new("default", n);
        assert_eq!(
            kinds(&dependent(&c, Kind::Pod, &k("a"))),
            ["delete pods a Background"]
        );
        assert_eq!(
            kinds(&dependent(&c, Kind::Pod, &k("b"))),
            ["update b owners=1 finalizers=[]"]
        );
        let c = cache(vec![pod("a", "p1", &["r1"]), rs("r1", &[])]);
        assert!(dependent(&c, Kind::Pod, &k("a")).actions.is_empty());
    }

    #[test]
    fn foreground_and_orphan_owners() {
        let k = ObjectRef::new("default", "rs");
        let c = cache(vec![
            pod("a", "p1", &["r1"]),
            rs("r1", &[finalizer::FOREGROUND]),
        ]);
        assert_eq!(
            kinds(&owner(&c, Kind::ReplicaSet, &k)),
            ["delete pods a Foreground"]
        );
        assert_eq!(
            kinds(&dependent(&c, Kind::Pod, &ObjectRef::new("default", "a"))),
            ["delete pods a Foreground"]
        );
        let c = cache(vec![rs("r1", &[finalizer::FOREGROUND])]);
        assert_eq!(
            kinds(&owner(&c, Kind::ReplicaSet, &k)),
            ["update rs owners=0 finalizers=[]"]
        );
        let c = cache(vec![
            pod("a", "p1", &["r1"]),
            rs("r1", &[finalizer::ORPHAN]),
        ]);
        assert_eq!(
            kinds(&owner(&c, Kind::ReplicaSet, &k)),
            ["update a owners=0 finalizers=[]"]
        );
        let c = cache(vec![rs("r1", &[finalizer::ORPHAN])]);
        assert_eq!(
            kinds(&owner(&c, Kind::ReplicaSet, &k)),
            ["update rs owners=0 finalizers=[]"]
        );
    }

    #[test]
    fn terminating_namespaces_are_emptied_then_finalized() {
        let ns = |deleting: bool| {
            Object::Namespace(Namespace {
                metadata: Some(ObjectMeta {
                    name: "dev".into(),
                    uid: "n".into(),
                    deletion_timestamp: if deleting { 5 } else { 0 },
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let cm = Object::ConfigMap(ConfigMap {
            metadata: meta("dev", "cfg", "c1", &[]),
            ..Default::default()
        });
        let c = cache(vec![ns(true), cm.clone()]);
        let out = namespace(&c, "dev");
        assert_eq!(kinds(&out), ["delete configmaps cfg Background"]);
        assert!(out.requeue_after.is_some());
        let c = cache(vec![ns(true)]);
        assert!(matches!(
            namespace(&c, "dev").actions.as_slice(),
            [Action::FinalizeNamespace(n)] if n == "dev"
        ));
        let c = cache(vec![ns(false), cm]);
        assert!(namespace(&c, "dev").actions.is_empty());
    }
}
