//! Write operations, run inside the writer against its state. Each one checks
//! everything before its first write, so a failed operation writes nothing. What the
//! controllers add (allocations at create, evictions after a node delete) comes from
//! the store's hooks ([`Txn::admit`], end of batch).

use kube_lite_core::defaults::{default_endpoints, default_pod_spec, default_service_spec};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::NodeStatus;

use crate::error::ApiError;
use crate::resource::{describe, Kind, Object};
use crate::store::{Txn, TxnResult};
use crate::validation;

fn not_found(kind: Kind, key: &ObjectRef) -> ApiError {
    ApiError::NotFound(format!("{} not found", describe(kind, key)))
}

fn conflict(kind: Kind, key: &ObjectRef, sent: u64, stored: u64) -> ApiError {
    ApiError::Conflict(format!(
        "conflict: Operation cannot be fulfilled on {} (resource_version {sent}, current {stored}): the object has been modified; please apply your changes to the latest version and try again",
        describe(kind, key)
    ))
}

/// Create: the object is already defaulted and validated ([`validation::prepare_create`]).
pub fn create(txn: &mut Txn<'_>, mut obj: Object) -> TxnResult {
    let kind = obj.kind();
    let key = obj.key();
    if txn.get(kind, &key).is_some() {
        return Err(ApiError::AlreadyExists(format!(
            "{} already exists",
            describe(kind, &key)
        )));
    }
    txn.admit(&mut obj)?;
    if let Object::Node(n) = &mut obj {
        if let Some(st) = n.status.as_mut() {
            stamp_transitions(None, st, txn.now_ms);
        }
    }
    let now = txn.now_ms;
    let m = obj.meta_mut();
    m.uid = uuid::Uuid::new_v4().to_string();
    m.creation_timestamp = now;
    txn.check_size(&obj)?;
    Ok(Some(txn.put(obj)))
}

/// Node conditions sent without `last_transition_time` (agents send 0 with every
/// heartbeat) get the stored one when their status did not change, else `now`.
fn stamp_transitions(old: Option<&NodeStatus>, new: &mut NodeStatus, now: i64) {
    for c in new
        .conditions
        .iter_mut()
        .filter(|c| c.last_transition_time == 0)
    {
        let prev = old.and_then(|o| o.conditions.iter().find(|p| p.r#type == c.r#type));
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status && p.last_transition_time != 0 => {
                p.last_transition_time
            }
            _ => now,
        };
    }
}

/// Update (`status_only = false`: spec + labels/annotations) or UpdateStatus.
pub fn update(txn: &mut Txn<'_>, new: Object, status_only: bool) -> TxnResult {
    let kind = new.kind();
    let key = new.key();
    let cur = txn
        .get(kind, &key)
        .cloned()
        .ok_or_else(|| not_found(kind, &key))?;
    let sent = new.meta().resource_version;
    let stored = cur.meta().resource_version;
    if sent != 0 && sent != stored {
        return Err(conflict(kind, &key, sent, stored));
    }
    let mut merged = merge(&cur, new, status_only, txn.now_ms)?;
    validation::validate(&merged)?;
    // A Service's spec update may need node ports (type changed, ports added).
    if kind == Kind::Service && !status_only {
        txn.admit(&mut merged)?;
    }
    if merged == *cur {
        return Ok(Some(cur));
    }
    txn.check_size(&merged)?;
    Ok(Some(txn.put(merged)))
}

fn merge(cur: &Object, new: Object, status_only: bool, now: i64) -> Result<Object, ApiError> {
    let mut out = cur.clone();
    if !status_only {
        let nm = new.meta();
        let m = out.meta_mut();
        m.labels = nm.labels.clone();
        m.annotations = nm.annotations.clone();
    }
    match (&mut out, new) {
        (Object::Node(o), Object::Node(n)) => {
            if status_only {
                let mut st = n.status.unwrap_or_default();
                st.last_heartbeat_time = now;
                stamp_transitions(o.status.as_ref(), &mut st, now);
                o.status = Some(st);
            } else {
                let pod_cidr = o
                    .spec
                    .as_ref()
                    .map(|s| s.pod_cidr.clone())
                    .unwrap_or_default();
                let mut spec = n.spec.unwrap_or_default();
                spec.pod_cidr = pod_cidr;
                o.spec = Some(spec);
            }
        }
        (Object::Pod(o), Object::Pod(n)) => {
            if status_only {
                o.status = Some(n.status.unwrap_or_default());
            } else {
                let mut spec = n.spec.unwrap_or_default();
                default_pod_spec(&mut spec);
                let old = o.spec.clone().unwrap_or_default();
                // An Update that leaves node_name empty (e.g. re-applying a manifest to a
                // scheduled pod) keeps the binding.
                if spec.node_name.is_empty() {
                    spec.node_name = old.node_name.clone();
                }
                // A pod stored before dns_policy existed has none (= the default).
                if old.dns_policy.is_empty()
                    && spec.dns_policy == kube_lite_core::consts::dns_policy::CLUSTER_FIRST
                {
                    spec.dns_policy.clear();
                }
                if spec.node_name != old.node_name && !old.node_name.is_empty() {
                    return Err(ApiError::invalid(
                        "spec.node_name",
                        format!(
                            "may only change from \"\" to a node (binding); the pod is bound to {:?}",
                            old.node_name
                        ),
                    ));
                }
                let mut cmp = spec.clone();
                cmp.node_name = old.node_name.clone();
                if cmp != old {
                    return Err(ApiError::invalid(
                        "spec",
                        "pod spec is immutable: only spec.node_name may change, from \"\" to a node (binding)",
                    ));
                }
                o.spec = Some(spec);
            }
        }
        (Object::Service(o), Object::Service(n)) => {
            if !status_only {
                let mut spec = n.spec.unwrap_or_default();
                default_service_spec(&mut spec);
                let old_ip = o
                    .spec
                    .as_ref()
                    .map(|s| s.cluster_ip.clone())
                    .unwrap_or_default();
                if spec.cluster_ip.is_empty() {
                    spec.cluster_ip = old_ip;
                } else if spec.cluster_ip != old_ip {
                    return Err(ApiError::invalid(
                        "spec.cluster_ip",
                        format!("field is immutable (is {old_ip}, got {})", spec.cluster_ip),
                    ));
                }
                // An update that leaves a node port 0 (re-applying a manifest) keeps
                // the port's current one (same port number and protocol).
                let carry = kube_lite_core::defaults::needs_node_ports(&spec.r#type);
                if let Some(old) = o.spec.as_ref().filter(|_| carry) {
                    for p in spec.ports.iter_mut().filter(|p| p.node_port == 0) {
                        if let Some(q) = old
                            .ports
                            .iter()
                            .find(|q| q.port == p.port && q.protocol == p.protocol)
                        {
                            p.node_port = q.node_port;
                        }
                    }
                }
                o.spec = Some(spec);
            } else {
                o.status = n.status;
            }
        }
        (Object::Endpoints(o), Object::Endpoints(mut n)) => {
            default_endpoints(&mut n);
            o.subsets = n.subsets;
        }
        // A Lease has no status: Update and UpdateStatus both replace its spec.
        (Object::Lease(o), Object::Lease(n)) => {
            o.spec = Some(n.spec.unwrap_or_default());
        }
        _ => return Err(ApiError::Internal("kind mismatch in update".into())),
    }
    Ok(out)
}

/// Delete. `grace_period_seconds`: pods only, -1 = the pod's default, 0 = immediate.
pub fn delete(
    txn: &mut Txn<'_>,
    kind: Kind,
    key: ObjectRef,
    rv: u64,
    grace_period_seconds: i64,
) -> TxnResult {
    let cur = txn
        .get(kind, &key)
        .cloned()
        .ok_or_else(|| not_found(kind, &key))?;
    let stored = cur.meta().resource_version;
    if rv != 0 && rv != stored {
        return Err(conflict(kind, &key, rv, stored));
    }
    match &*cur {
        Object::Pod(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            let grace = if grace_period_seconds < 0 {
                spec.termination_grace_period_seconds
            } else {
                grace_period_seconds
            };
            // A pod bound to a node that does not exist has no agent to finish it.
            let node_exists = txn
                .get(Kind::Node, &ObjectRef::new("", spec.node_name.clone()))
                .is_some();
            if !spec.node_name.is_empty() && grace > 0 && node_exists {
                let m = cur.meta();
                // Already terminating: a shorter grace shortens it; otherwise unchanged.
                if m.deletion_timestamp != 0 && m.deletion_grace_period_seconds <= grace {
                    return Ok(Some(cur));
                }
                let mut o = (*cur).clone();
                let now = txn.now_ms;
                let m = o.meta_mut();
                if m.deletion_timestamp == 0 {
                    m.deletion_timestamp = now;
                }
                m.deletion_grace_period_seconds = grace;
                return Ok(Some(txn.put(o)));
            }
            Ok(txn.remove(kind, &key))
        }
        // A deleted node's pods are evicted by the node health controller.
        _ => Ok(txn.remove(kind, &key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::NodeCondition;

    fn st(status: &str, t: i64) -> NodeStatus {
        NodeStatus {
            conditions: vec![NodeCondition {
                r#type: "Ready".into(),
                status: status.into(),
                last_transition_time: t,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn node_condition_transition_times() {
        let time = |s: &NodeStatus| s.conditions[0].last_transition_time;
        let mut first = st("True", 0);
        stamp_transitions(None, &mut first, 100);
        assert_eq!(time(&first), 100);
        let mut again = st("True", 0);
        stamp_transitions(Some(&first), &mut again, 200);
        assert_eq!(time(&again), 100, "same status keeps the time");
        let mut flipped = st("True", 0);
        stamp_transitions(Some(&st("False", 150)), &mut flipped, 300);
        assert_eq!(time(&flipped), 300);
        let mut explicit = st("True", 42);
        stamp_transitions(Some(&first), &mut explicit, 400);
        assert_eq!(time(&explicit), 42, "a time the client sets is kept");
    }
}
