//! The Deployment controller's decision, after Kubernetes' `pkg/controller/deployment`:
//!
//! - The new ReplicaSet is the owned one whose template equals the Deployment's
//!   (ignoring `pod-template-hash`); it is created as `<deployment>-<hash>`, with the
//!   hash label on its selector, template and pods, and revision = highest + 1 (an old
//!   ReplicaSet that becomes new again, as with `rollout undo`, gets the new revision).
//! - RollingUpdate: scale the new ReplicaSet up while the total stays within
//!   replicas + maxSurge; scale old ones down (unavailable pods first, then oldest
//!   ReplicaSets first) while available pods stay at least replicas - maxUnavailable.
//! - Recreate: scale every old ReplicaSet to 0, wait until their pods are gone, then
//!   scale the new one up.
//! - Paused: no rollout step, only status. Old ReplicaSets at 0 beyond
//!   `revisionHistoryLimit` are deleted (oldest revision first).
//! - Status: replicas/updated/ready/available/unavailable, and the Available and
//!   Progressing conditions (NewReplicaSetCreated, ReplicaSetUpdated,
//!   NewReplicaSetAvailable, ProgressDeadlineExceeded, DeploymentPaused).

use std::time::Duration;

use kube_lite_core::consts::condition_status;
use kube_lite_core::workloads::{
    self as wl, propagation, strategy, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION,
    POD_TEMPLATE_HASH, REVISION_ANNOTATION,
};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ObjectMeta, PodTemplateSpec,
    ReplicaSet, ReplicaSetSpec,
};

use super::events::Record;
use super::manager::{Action, Cache, Outcome};
use super::replicaset::{controller_of, owner_ref};
use crate::resource::{Kind, Object};

const COMPONENT: &str = "deployment-controller";

/// The template without the hash label (how a ReplicaSet's template is compared).
fn strip_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    wl::replicas(rs.spec.as_ref().and_then(|s| s.replicas))
}

fn st(rs: &ReplicaSet) -> kube_lite_proto::v1::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .as_ref()
        .map(|m| wl::revision_of(&m.annotations))
        .unwrap_or(0)
}

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

/// A copy of `rs` scaled to `n`, with the Deployment's replica annotations.
fn scaled(rs: &ReplicaSet, n: i32, d: &DeploymentSpec, surge: i32) -> ReplicaSet {
    let mut u = rs.clone();
    let spec = u.spec.get_or_insert_with(ReplicaSetSpec::default);
    spec.replicas = Some(n);
    let m = u.metadata.get_or_insert_with(ObjectMeta::default);
    let want = wl::replicas(d.replicas);
    m.annotations
        .insert(DESIRED_REPLICAS_ANNOTATION.into(), want.to_string());
    m.annotations
        .insert(MAX_REPLICAS_ANNOTATION.into(), (want + surge).to_string());
    u
}

fn scale_event(obj: &Object, rs: &ReplicaSet, from: i32, to: i32) -> Record {
    let dir = if to > from { "up" } else { "down" };
    Record::normal(
        obj,
        "ScalingReplicaSet",
        format!("Scaled {dir} replica set {} to {to} from {from}", name(rs)),
        COMPONENT,
    )
}

pub fn reconcile(cache: &Cache, key: &ObjectRef, now_ms: i64) -> Outcome {
    let mut out = Outcome::default();
    let Some(obj) = cache.get(Kind::Deployment, key) else {
        return out;
    };
    let Object::Deployment(d) = &**obj else {
        return out;
    };
    let m = obj.meta();
    if m.deletion_timestamp != 0 {
        return out;
    }
    let spec = wl::deployment_spec(d);
    let want = wl::replicas(spec.replicas);
    let template = spec.template.clone().unwrap_or_default();
    let mut owned: Vec<ReplicaSet> = cache
        .dependents_of(&m.uid)
        .into_iter()
        .filter_map(|o| match &*o {
            Object::ReplicaSet(rs)
                if controller_of(o.meta()).is_some_and(|r| r.uid == m.uid)
                    && o.meta().deletion_timestamp == 0 =>
            {
                Some(rs.clone())
            }
            _ => None,
        })
        .collect();
    owned.sort_by_key(|r| (revision(r), name(r).to_string()));
    let max_rev = owned.iter().map(revision).max().unwrap_or(0);
    let is_new = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| strip_hash(t) == template)
    };
    let new_rs = owned.iter().find(|r| is_new(r)).cloned();
    let old: Vec<ReplicaSet> = owned.iter().filter(|r| !is_new(r)).cloned().collect();
    let recreate = spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.r#type == strategy::RECREATE);
    let (surge, max_unavailable) = if recreate {
        (0, want)
    } else {
        wl::surge_and_unavailable(&spec)
    };
    let mut progressed: Option<(&'static str, String)> = None;
    // Pods of old ReplicaSets that still exist, also those still terminating (Recreate
    // waits for them all to be gone).
    let old_pods_left = old.iter().any(|r| {
        let uid = r.metadata.as_ref().map(|m| m.uid.as_str()).unwrap_or("");
        cache
            .dependents_of(uid)
            .iter()
            .any(|o| o.kind() == Kind::Pod)
    });

    if !spec.paused {
        match &new_rs {
            None => {
                let old_total: i32 = old.iter().map(rs_replicas).sum();
                let old_pods: i32 = old.iter().map(|r| st(r).replicas).sum();
                let initial = if recreate {
                    if old_total > 0 || old_pods > 0 || old_pods_left {
                        None
                    } else {
                        Some(want)
                    }
                } else {
                    Some((want + surge - old_total).clamp(0, want))
                };
                if recreate && old_total > 0 {
                    for r in &old {
                        if rs_replicas(r) > 0 {
                            out.actions.push(Action::Update(Object::ReplicaSet(scaled(
                                r, 0, &spec, surge,
                            ))));
                            out.events.push(scale_event(obj, r, rs_replicas(r), 0));
                        }
                    }
                }
                if let Some(n) = initial {
                    let collisions = d.status.as_ref().map(|s| s.collision_count).unwrap_or(0);
                    let hash = wl::template_hash(&template, collisions);
                    let rs_name = format!("{}-{hash}", m.name);
                    if let Some(existing) = cache.get(
                        Kind::ReplicaSet,
                        &ObjectRef::new(m.namespace.clone(), rs_name.clone()),
                    ) {
                        // A ReplicaSet of that name that is not ours (or not this template):
                        // a hash collision; the next hash includes the collision count.
                        let _ = existing;
                        let mut u = d.clone();
                        let s = u.status.get_or_insert_with(DeploymentStatus::default);
                        s.collision_count += 1;
                        out.actions
                            .push(Action::UpdateStatus(Object::Deployment(u)));
                        return out;
                    }
                    let rs = new_replica_set(
                        d,
                        m,
                        &spec,
                        &template,
                        &hash,
                        &rs_name,
                        max_rev + 1,
                        n,
                        surge,
                    );
                    out.events.push(scale_event(obj, &rs, 0, n));
                    out.actions.push(Action::Create(Object::ReplicaSet(rs)));
                    out.actions
                        .push(Action::Update(with_revision(d, max_rev + 1)));
                    progressed = Some((
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{rs_name}\""),
                    ));
                }
            }
            Some(new) => {
                let new_rev = revision(new);
                if new_rev < max_rev || wl::revision_of(&m.annotations) != new_rev.max(max_rev) {
                    // Back to an older template (rollout undo): it becomes the newest revision.
                    let rev = if new_rev < max_rev {
                        max_rev + 1
                    } else {
                        new_rev
                    };
                    let mut u = new.clone();
                    u.metadata
                        .get_or_insert_with(ObjectMeta::default)
                        .annotations
                        .insert(REVISION_ANNOTATION.into(), rev.to_string());
                    if new_rev != rev {
                        out.actions.push(Action::Update(Object::ReplicaSet(u)));
                    }
                    if wl::revision_of(&m.annotations) != rev {
                        out.actions.push(Action::Update(with_revision(d, rev)));
                    }
                    if !out.actions.is_empty() {
                        return out;
                    }
                }
                let step = if recreate {
                    recreate_step(obj, new, &old, &spec, want, old_pods_left)
                } else {
                    rolling_step(obj, new, &old, &spec, want, surge, max_unavailable)
                };
                if let Some(step) = step {
                    out.actions.extend(step.0);
                    out.events.extend(step.1);
                    progressed = Some((
                        "ReplicaSetUpdated",
                        format!("ReplicaSet \"{}\" is progressing.", name(new)),
                    ));
                }
            }
        }
        // Revision history: old ReplicaSets at 0 beyond the limit, oldest first.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| rs_replicas(r) == 0 && st(r).replicas == 0)
            .collect();
        if idle.len() > limit {
            for r in idle.iter().take(idle.len() - limit) {
                let rm = r.metadata.clone().unwrap_or_default();
                out.actions.push(Action::Delete(
                    Kind::ReplicaSet,
                    ObjectRef::new(rm.namespace, rm.name),
                    rm.uid,
                    propagation::BACKGROUND,
                ));
            }
        }
    }

    // Status from the ReplicaSets as they are now.
    let mut s = DeploymentStatus {
        observed_generation: m.generation,
        collision_count: d.status.as_ref().map(|s| s.collision_count).unwrap_or(0),
        ..Default::default()
    };
    for r in &owned {
        let rs_st = st(r);
        s.replicas += rs_st.replicas;
        s.ready_replicas += rs_st.ready_replicas;
        s.available_replicas += rs_st.available_replicas;
    }
    if let Some(n) = &new_rs {
        s.updated_replicas = st(n).replicas;
    }
    s.unavailable_replicas = (s.replicas.max(want) - s.available_replicas).max(0);
    let old_st = d.status.clone().unwrap_or_default();
    let counts_changed = (
        old_st.replicas,
        old_st.updated_replicas,
        old_st.ready_replicas,
        old_st.available_replicas,
    ) != (
        s.replicas,
        s.updated_replicas,
        s.ready_replicas,
        s.available_replicas,
    );
    let new_name = new_rs.as_ref().map(name).unwrap_or("").to_string();
    let complete = new_rs.is_some()
        && s.updated_replicas == want
        && s.replicas == want
        && s.available_replicas == want
        && new_rs.as_ref().is_some_and(|n| rs_replicas(n) == want);
    let mut conds = old_st.conditions.clone();
    let available = s.available_replicas >= want - max_unavailable;
    set_condition(
        &mut conds,
        "Available",
        if available {
            condition_status::TRUE
        } else {
            condition_status::FALSE
        },
        if available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        now_ms,
        false,
    );
    let deadline_ms = i64::from(spec.progress_deadline_seconds.unwrap_or(600)) * 1000;
    if spec.paused {
        set_condition(
            &mut conds,
            "Progressing",
            condition_status::UNKNOWN,
            "DeploymentPaused",
            "Deployment is paused",
            now_ms,
            false,
        );
    } else if complete {
        set_condition(
            &mut conds,
            "Progressing",
            condition_status::TRUE,
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now_ms,
            counts_changed,
        );
    } else if let Some((reason, msg)) = progressed {
        set_condition(
            &mut conds,
            "Progressing",
            condition_status::TRUE,
            reason,
            &msg,
            now_ms,
            true,
        );
    } else {
        let cur = conds.iter().find(|c| c.r#type == "Progressing").cloned();
        match cur {
            Some(c) if c.reason == "ProgressDeadlineExceeded" => {}
            Some(c) if !counts_changed && c.last_update_time + deadline_ms <= now_ms => {
                set_condition(
                    &mut conds,
                    "Progressing",
                    condition_status::FALSE,
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    now_ms,
                    true,
                );
            }
            Some(c) => {
                let reason = if c.reason == "DeploymentPaused" {
                    "DeploymentResumed"
                } else if counts_changed {
                    "ReplicaSetUpdated"
                } else {
                    leak(&c.reason)
                };
                set_condition(
                    &mut conds,
                    "Progressing",
                    condition_status::TRUE,
                    reason,
                    &format!("ReplicaSet \"{new_name}\" is progressing."),
                    now_ms,
                    counts_changed || c.reason == "DeploymentPaused",
                );
                let last = conds
                    .iter()
                    .find(|c| c.r#type == "Progressing")
                    .map(|c| c.last_update_time)
                    .unwrap_or(now_ms);
                out.requeue_after = Some(Duration::from_millis(
                    (last + deadline_ms - now_ms).clamp(100, 600_000) as u64,
                ));
            }
            None => {
                set_condition(
                    &mut conds,
                    "Progressing",
                    condition_status::TRUE,
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{new_name}\" is progressing."),
                    now_ms,
                    true,
                );
            }
        }
    }
    s.conditions = conds;
    if d.status.as_ref() != Some(&s) {
        let mut u = d.clone();
        u.status = Some(s);
        out.actions
            .push(Action::UpdateStatus(Object::Deployment(u)));
    }
    out
}

/// Condition reasons are a small fixed set; this keeps one that is already stored.
fn leak(s: &str) -> &'static str {
    match s {
        "NewReplicaSetCreated" => "NewReplicaSetCreated",
        "FoundNewReplicaSet" => "FoundNewReplicaSet",
        "DeploymentResumed" => "DeploymentResumed",
        _ => "ReplicaSetUpdated",
    }
}

/// Sets (or adds) a condition; the transition time moves when the status changes, the
/// update time when `progress` or the status changes.
fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    typ: &str,
    status: &str,
    reason: &str,
    message: &str,
    now_ms: i64,
    progress: bool,
) {
    match conds.iter_mut().find(|c| c.r#type == typ) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now_ms;
                c.last_update_time = now_ms;
            } else if progress || c.reason != reason {
                c.last_update_time = now_ms;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conds.push(DeploymentCondition {
            r#type: typ.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_update_time: now_ms,
            last_transition_time: now_ms,
        }),
    }
}

fn with_revision(d: &Deployment, rev: i64) -> Object {
    let mut u = d.clone();
    u.metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .insert(REVISION_ANNOTATION.into(), rev.to_string());
    Object::Deployment(u)
}

#[allow(clippy::too_many_arguments)]
fn new_replica_set(
    _d: &Deployment,
    m: &ObjectMeta,
    spec: &DeploymentSpec,
    template: &PodTemplateSpec,
    hash: &str,
    rs_name: &str,
    rev: i64,
    replicas: i32,
    surge: i32,
) -> ReplicaSet {
    let mut t = template.clone();
    let tm = t.metadata.get_or_insert_with(ObjectMeta::default);
    tm.labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    let mut selector = spec.selector.clone().unwrap_or_default();
    selector
        .match_labels
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    let mut annotations = std::collections::HashMap::new();
    annotations.insert(REVISION_ANNOTATION.to_string(), rev.to_string());
    let want = wl::replicas(spec.replicas);
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), want.to_string());
    annotations.insert(MAX_REPLICAS_ANNOTATION.into(), (want + surge).to_string());
    ReplicaSet {
        metadata: Some(ObjectMeta {
            name: rs_name.into(),
            namespace: m.namespace.clone(),
            labels: tm.labels.clone(),
            annotations,
            owner_references: vec![owner_ref(Kind::Deployment, m)],
            ..Default::default()
        }),
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: Some(selector),
            template: Some(t),
            min_ready_seconds: spec.min_ready_seconds,
        }),
        status: None,
    }
}

type Step = (Vec<Action>, Vec<Record>);

fn recreate_step(
    obj: &Object,
    new: &ReplicaSet,
    old: &[ReplicaSet],
    spec: &DeploymentSpec,
    want: i32,
    old_pods_left: bool,
) -> Option<Step> {
    let mut actions = Vec::new();
    let mut events = Vec::new();
    for r in old {
        if rs_replicas(r) > 0 {
            actions.push(Action::Update(Object::ReplicaSet(scaled(r, 0, spec, 0))));
            events.push(scale_event(obj, r, rs_replicas(r), 0));
        }
    }
    if !actions.is_empty() {
        return Some((actions, events));
    }
    if old_pods_left || old.iter().any(|r| st(r).replicas > 0) {
        return None; // old pods still stopping
    }
    if rs_replicas(new) != want {
        actions.push(Action::Update(Object::ReplicaSet(scaled(
            new, want, spec, 0,
        ))));
        events.push(scale_event(obj, new, rs_replicas(new), want));
        return Some((actions, events));
    }
    None
}

fn rolling_step(
    obj: &Object,
    new: &ReplicaSet,
    old: &[ReplicaSet],
    spec: &DeploymentSpec,
    want: i32,
    surge: i32,
    max_unavailable: i32,
) -> Option<Step> {
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let new_n = rs_replicas(new);
    let all_total: i32 = old.iter().map(rs_replicas).sum::<i32>() + new_n;
    // Scale the new ReplicaSet.
    let target = if new_n > want {
        want
    } else {
        let max_total = want + surge;
        if all_total >= max_total {
            new_n
        } else {
            new_n + (max_total - all_total).min(want - new_n)
        }
    };
    if target != new_n {
        actions.push(Action::Update(Object::ReplicaSet(scaled(
            new, target, spec, surge,
        ))));
        events.push(scale_event(obj, new, new_n, target));
        return Some((actions, events));
    }
    // Scale old ones down.
    let old_total: i32 = old.iter().map(rs_replicas).sum();
    if old_total == 0 {
        return None;
    }
    let min_available = want - max_unavailable;
    let new_unavailable = new_n - st(new).available_replicas;
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return None;
    }
    let mut remaining = max_scaled_down;
    let mut targets: Vec<(usize, i32)> = old.iter().map(rs_replicas).enumerate().collect();
    // First the unavailable pods of old ReplicaSets (oldest first).
    for (i, n) in targets.iter_mut() {
        if remaining == 0 {
            break;
        }
        let unavailable = (*n - st(&old[*i]).available_replicas).max(0);
        let cut = unavailable.min(remaining).min(*n);
        *n -= cut;
        remaining -= cut;
    }
    // Then available ones, keeping min_available.
    let available: i32 =
        old.iter().map(|r| st(r).available_replicas).sum::<i32>() + st(new).available_replicas;
    let cleaned: i32 = max_scaled_down - remaining;
    let mut total_scale_down = (available - min_available).min(remaining).max(0);
    let _ = cleaned;
    for (_, n) in targets.iter_mut() {
        if total_scale_down == 0 {
            break;
        }
        let cut = (*n).min(total_scale_down);
        *n -= cut;
        total_scale_down -= cut;
    }
    for (i, n) in targets {
        let cur = rs_replicas(&old[i]);
        if n != cur {
            actions.push(Action::Update(Object::ReplicaSet(scaled(
                &old[i], n, spec, surge,
            ))));
            events.push(scale_event(obj, &old[i], cur, n));
        }
    }
    (!actions.is_empty()).then_some((actions, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Objects;
    use kube_lite_proto::v1::{
        Container, DeploymentStrategy, LabelSelector, OwnerReference, PodSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };

    fn template(image: &str) -> PodTemplateSpec {
        let mut t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: [("app".to_string(), "web".to_string())].into(),
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
        wl::default_template(&mut t);
        t
    }

    fn deploy(image: &str, replicas: i32, surge: &str, unavail: &str, recreate: bool) -> Object {
        let mut spec = DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(template(image)),
            strategy: Some(if recreate {
                DeploymentStrategy {
                    r#type: "Recreate".into(),
                    rolling_update: None,
                }
            } else {
                DeploymentStrategy {
                    r#type: "RollingUpdate".into(),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: surge.into(),
                        max_unavailable: unavail.into(),
                    }),
                }
            }),
            ..Default::default()
        };
        wl::default_deployment_spec(&mut spec);
        Object::Deployment(Deployment {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "d1".into(),
                generation: 1,
                ..Default::default()
            }),
            spec: Some(spec),
            status: None,
        })
    }

    /// A ReplicaSet of the deployment with `spec` replicas, `pods` pods all available.
    fn rs(image: &str, rev: i64, spec_n: i32, pods: i32, available: i32) -> Object {
        let t = template(image);
        let hash = wl::template_hash(&t, 0);
        let mut tt = t.clone();
        tt.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        Object::ReplicaSet(ReplicaSet {
            metadata: Some(ObjectMeta {
                name: format!("web-{hash}"),
                namespace: "default".into(),
                uid: format!("rs-{image}"),
                annotations: [(REVISION_ANNOTATION.to_string(), rev.to_string())].into(),
                owner_references: vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "d1".into(),
                    controller: true,
                    block_owner_deletion: true,
                }],
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec_n),
                selector: None,
                template: Some(tt),
                min_ready_seconds: 0,
            }),
            status: Some(ReplicaSetStatus {
                replicas: pods,
                ready_replicas: available,
                available_replicas: available,
                ..Default::default()
            }),
        })
    }

    /// Reconciles with the Deployment at the highest revision of the ReplicaSets given
    /// (unless it has one).
    fn run(mut objs: Vec<Object>) -> Outcome {
        let max = objs
            .iter()
            .filter(|o| o.kind() == Kind::ReplicaSet)
            .map(|o| wl::revision_of(&o.meta().annotations))
            .max()
            .unwrap_or(0);
        if max > 0 {
            let m = objs[0].meta_mut();
            m.annotations
                .entry(REVISION_ANNOTATION.into())
                .or_insert(max.to_string());
        }
        let mut o = Objects::default();
        for x in objs {
            o.insert(x);
        }
        reconcile(
            &Cache::from_objects(&o),
            &ObjectRef::new("default", "web"),
            1_000,
        )
    }

    fn steps(out: &Outcome) -> Vec<String> {
        out.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(Object::ReplicaSet(r)) => {
                    Some(format!("create rev {} x{}", revision(r), rs_replicas(r)))
                }
                Action::Update(Object::ReplicaSet(r)) => Some(format!(
                    "scale {} to {}",
                    r.spec
                        .as_ref()
                        .unwrap()
                        .template
                        .as_ref()
                        .unwrap()
                        .spec
                        .as_ref()
                        .unwrap()
                        .containers[0]
                        .image,
                    rs_replicas(r)
                )),
                Action::Delete(Kind::ReplicaSet, k, _, _) => Some(format!("delete {}", k.name)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_rollout_creates_the_replica_set_at_full_scale() {
        let out = run(vec![deploy("v1", 4, "25%", "25%", false)]);
        assert_eq!(steps(&out), ["create rev 1 x4"]);
        let Action::Create(Object::ReplicaSet(r)) = &out.actions[0] else {
            panic!()
        };
        let hash = &r.metadata.as_ref().unwrap().labels[POD_TEMPLATE_HASH];
        assert_eq!(r.metadata.as_ref().unwrap().name, format!("web-{hash}"));
        assert_eq!(
            r.spec
                .as_ref()
                .unwrap()
                .selector
                .as_ref()
                .unwrap()
                .match_labels[POD_TEMPLATE_HASH],
            *hash
        );
        assert_eq!(
            out.events[0].message,
            format!("Scaled up replica set web-{hash} to 4 from 0")
        );
    }

    #[test]
    fn rolling_update_with_max_unavailable_zero_surges_first() {
        // New template, old RS at 4 available: create the new one at 1 (surge 1).
        let out = run(vec![deploy("v2", 4, "1", "0", false), rs("v1", 1, 4, 4, 4)]);
        assert_eq!(steps(&out), ["create rev 2 x1"]);
        // New at 1 not yet available: nothing more (total 5 = max, min available 4).
        let out = run(vec![
            deploy("v2", 4, "1", "0", false),
            rs("v1", 1, 4, 4, 4),
            rs("v2", 2, 1, 1, 0),
        ]);
        assert_eq!(steps(&out), Vec::<String>::new());
        // New one available: scale the old down by one.
        let out = run(vec![
            deploy("v2", 4, "1", "0", false),
            rs("v1", 1, 4, 4, 4),
            rs("v2", 2, 1, 1, 1),
        ]);
        assert_eq!(steps(&out), ["scale v1 to 3"]);
        // Then the new one up again.
        let out = run(vec![
            deploy("v2", 4, "1", "0", false),
            rs("v1", 1, 3, 3, 3),
            rs("v2", 2, 1, 1, 1),
        ]);
        assert_eq!(steps(&out), ["scale v2 to 2"]);
    }

    #[test]
    fn rolling_update_default_fenceposts() {
        // 25%/25% of 4: surge 1, unavailable 1: new up to 1, then old down to 3 at once.
        let out = run(vec![
            deploy("v2", 4, "25%", "25%", false),
            rs("v1", 1, 4, 4, 4),
            rs("v2", 2, 1, 1, 0),
        ]);
        assert_eq!(steps(&out), ["scale v1 to 3"]);
    }

    #[test]
    fn recreate_scales_old_to_zero_and_waits_for_the_pods() {
        let out = run(vec![deploy("v2", 3, "", "", true), rs("v1", 1, 3, 3, 3)]);
        assert_eq!(steps(&out), ["scale v1 to 0"]);
        let out = run(vec![deploy("v2", 3, "", "", true), rs("v1", 1, 0, 2, 2)]);
        assert_eq!(steps(&out), Vec::<String>::new(), "old pods still there");
        let out = run(vec![deploy("v2", 3, "", "", true), rs("v1", 1, 0, 0, 0)]);
        assert_eq!(steps(&out), ["create rev 2 x3"]);
    }

    #[test]
    fn undo_makes_the_old_replica_set_the_newest_revision() {
        let out = run(vec![
            deploy("v1", 2, "25%", "25%", false),
            rs("v1", 1, 0, 0, 0),
            rs("v2", 2, 2, 2, 2),
        ]);
        let revs: Vec<String> = out
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Update(o) => Some(format!(
                    "{} rev {}",
                    o.kind().name(),
                    o.meta().annotations[REVISION_ANNOTATION]
                )),
                _ => None,
            })
            .collect();
        assert_eq!(revs, ["ReplicaSet rev 3", "Deployment rev 3"]);
    }

    #[test]
    fn complete_rollout_status_and_history_limit() {
        let Object::Deployment(mut d) = deploy("v3", 2, "25%", "25%", false) else {
            panic!()
        };
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        d.metadata
            .as_mut()
            .unwrap()
            .annotations
            .insert(REVISION_ANNOTATION.into(), "3".into());
        let out = run(vec![
            Object::Deployment(d),
            rs("v1", 1, 0, 0, 0),
            rs("v2", 2, 0, 0, 0),
            rs("v3", 3, 2, 2, 2),
        ]);
        assert_eq!(
            steps(&out),
            [format!(
                "delete web-{}",
                wl::template_hash(&template("v1"), 0)
            )]
        );
        let st = out
            .actions
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus(Object::Deployment(d)) => d.status.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (
                st.replicas,
                st.updated_replicas,
                st.available_replicas,
                st.unavailable_replicas
            ),
            (2, 2, 2, 0)
        );
        let reasons: Vec<_> = st.conditions.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["MinimumReplicasAvailable", "NewReplicaSetAvailable"]
        );
    }

    #[test]
    fn paused_deployments_do_not_roll() {
        let Object::Deployment(mut d) = deploy("v2", 2, "25%", "25%", false) else {
            panic!()
        };
        d.spec.as_mut().unwrap().paused = true;
        let out = run(vec![Object::Deployment(d), rs("v1", 1, 2, 2, 2)]);
        assert_eq!(steps(&out), Vec::<String>::new());
    }
}
