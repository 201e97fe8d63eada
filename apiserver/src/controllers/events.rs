//! Events (core/v1): what the controllers record, deduplicated and written in batches.
//!
//! - A [`Record`] names the involved object, a type (Normal/Warning), a reason, a
//!   message and a source. Records with the same (object, type, reason, message,
//!   source) are the same Event: its name is a hash of that key, so a repeat (also
//!   after a restart) increments `count` and moves `last_timestamp`.
//! - The [`Recorder`] buffers records and the manager writes them in one store write
//!   every 250 ms ([`write_batch`]), so events never slow other writes down.
//! - Events whose `last_timestamp` is older than the TTL (1 h) are deleted
//!   ([`expired`]).
//! - Scheduling and node-side events (Scheduled, FailedScheduling, Started, BackOff,
//!   Failed, Killing on deletion, the node controller's Evicted) are derived by
//!   [`pod_events`] from the pod changes the scheduler, node health controller and node
//!   agents write, with the node as the source host. What only the agent knows (probe
//!   failures with their output, probe kills, hook failures, FailedMount, its own
//!   evictions) it writes itself with its node identity, named the same way
//!   ([`kube_lite_core::events::event_name`]).

use std::collections::HashMap;
use std::time::Duration;

use kube_lite_core::consts::{container_state, reason};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::{Event, EventSource, ObjectReference, Pod};

use super::manager::{Action, Cache, Outcome};
use crate::resource::{Kind, Object};
use crate::store::Txn;

/// Records buffered before the manager flushes early.
pub const FLUSH_AT: usize = 512;
/// Most distinct records held between two flushes (more are dropped, counted).
pub const MAX_PENDING: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub involved: ObjectReference,
    pub r#type: &'static str,
    pub reason: String,
    pub message: String,
    pub component: &'static str,
    pub host: String,
}

impl Record {
    pub fn new(
        o: &Object,
        r#type: &'static str,
        reason: &str,
        message: String,
        component: &'static str,
    ) -> Record {
        let m = o.meta();
        Record {
            involved: ObjectReference {
                kind: o.kind().name().into(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                api_version: o.kind().api_version().into(),
                resource_version: m.resource_version,
                field_path: String::new(),
            },
            r#type,
            reason: reason.into(),
            message,
            component,
            host: String::new(),
        }
    }
    pub fn normal(o: &Object, reason: &str, message: String, component: &'static str) -> Record {
        Record::new(o, "Normal", reason, message, component)
    }
    pub fn warning(o: &Object, reason: &str, message: String, component: &'static str) -> Record {
        Record::new(o, "Warning", reason, message, component)
    }

    /// The Event's name: `<object>.<16 hex of the dedup key's hash>`.
    pub fn event_name(&self) -> String {
        kube_lite_core::events::event_name(
            &self.involved.name,
            &[
                self.involved.kind.as_str(),
                &self.involved.uid,
                &self.involved.name,
                self.r#type,
                &self.reason,
                &self.message,
                self.component,
                &self.host,
            ],
        )
    }

    fn namespace(&self) -> String {
        if self.involved.namespace.is_empty() {
            kube_lite_core::DEFAULT_NAMESPACE.into()
        } else {
            self.involved.namespace.clone()
        }
    }
}

/// Buffered records, aggregated by event name (count of repeats).
pub struct Recorder {
    pending: HashMap<String, (Record, i32)>,
    ttl: Duration,
    dropped: u64,
}

impl Recorder {
    pub fn new(ttl: Duration) -> Recorder {
        Recorder {
            pending: HashMap::new(),
            ttl,
            dropped: 0,
        }
    }
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
    pub fn record(&mut self, r: Record) {
        let name = r.event_name();
        if let Some((_, n)) = self.pending.get_mut(&name) {
            *n += 1;
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "event buffer full; events dropped");
            }
            return;
        }
        self.pending.insert(name, (r, 1));
    }
    pub fn take_batch(&mut self) -> Vec<(String, Record, i32)> {
        self.pending
            .drain()
            .map(|(name, (r, n))| (name, r, n))
            .collect()
    }
}

/// Writes a batch inside the writer: a new Event, or the existing one with `count`
/// increased and `last_timestamp` moved. Records for a namespace that does not exist
/// (or is terminating) are dropped.
pub fn write_batch(txn: &mut Txn<'_>, batch: Vec<(String, Record, i32)>, now_ms: i64) {
    for (name, r, n) in batch {
        let ns = r.namespace();
        let key = ObjectRef::new(ns.clone(), name.clone());
        if let Some(cur) = txn.get(Kind::Event, &key).cloned() {
            if let Object::Event(mut e) = (*cur).clone() {
                e.count = e.count.saturating_add(n);
                e.last_timestamp = now_ms;
                e.involved_object = Some(r.involved.clone());
                let _ = txn.put(Object::Event(e));
            }
            continue;
        }
        let mut ev = Object::Event(Event {
            metadata: Some(kube_lite_proto::v1::ObjectMeta {
                name,
                namespace: ns,
                ..Default::default()
            }),
            involved_object: Some(r.involved),
            reason: r.reason,
            message: r.message,
            source: Some(EventSource {
                component: r.component.into(),
                host: r.host,
            }),
            first_timestamp: now_ms,
            last_timestamp: now_ms,
            count: n,
            r#type: r.r#type.into(),
            reporting_component: r.component.into(),
            reporting_instance: String::new(),
        });
        if crate::validation::prepare_create(&mut ev).is_ok() {
            if let Object::Event(e) = &mut ev {
                e.count = n;
            }
            let _ = crate::ops::create(txn, ev);
        }
    }
}

/// Deletes of the Events not seen for `ttl`.
pub fn expired(cache: &Cache, now_ms: i64, ttl: Duration) -> Outcome {
    let mut out = Outcome::default();
    let cutoff = now_ms - ttl.as_millis() as i64;
    for (k, o) in cache.objects.of(Kind::Event) {
        if let Object::Event(e) = &**o {
            if e.last_timestamp.max(e.first_timestamp) < cutoff {
                out.actions.push(Action::Delete(
                    Kind::Event,
                    k.clone(),
                    o.meta().uid.clone(),
                    "",
                ));
            }
        }
    }
    out
}

fn node_of(p: &Pod) -> &str {
    p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("")
}

/// The events a pod change means (scheduling, eviction, container starts, back-off,
/// start failures, kills).
pub fn pod_events(prev: Option<&Object>, cur: Option<&Object>) -> Vec<Record> {
    let mut out = Vec::new();
    let Some(obj) = cur else { return out };
    let Object::Pod(p) = obj else { return out };
    let old = match prev {
        Some(Object::Pod(o)) => Some(o),
        _ => None,
    };
    let m = obj.meta();
    let node = node_of(p).to_string();
    let kubelet = |mut r: Record| {
        r.host = node.clone();
        r
    };
    // Scheduled.
    if !node.is_empty() && old.is_none_or(|o| node_of(o).is_empty()) {
        out.push(Record::normal(
            obj,
            "Scheduled",
            format!("Successfully assigned {}/{} to {node}", m.namespace, m.name),
            "default-scheduler",
        ));
    }
    let st = p.status.clone().unwrap_or_default();
    let old_st = old.and_then(|o| o.status.clone()).unwrap_or_default();
    if st.reason == reason::UNSCHEDULABLE
        && (old_st.reason != reason::UNSCHEDULABLE || old_st.message != st.message)
    {
        out.push(Record::warning(
            obj,
            "FailedScheduling",
            st.message.clone(),
            "default-scheduler",
        ));
    }
    // The node controller's eviction unbinds the pod; a kubelet eviction (the agent's,
    // e.g. an emptyDir over its sizeLimit) keeps it bound and writes its own Event.
    if st.reason == reason::EVICTED && old_st.reason != reason::EVICTED && node.is_empty() {
        out.push(Record::warning(
            obj,
            "Evicted",
            if st.message.is_empty() {
                "The node was not ready; the pod was evicted".into()
            } else {
                st.message.clone()
            },
            "node-controller",
        ));
    }
    for c in &st.container_statuses {
        let before = old_st.container_statuses.iter().find(|o| o.name == c.name);
        if c.state == container_state::RUNNING
            && before
                .is_none_or(|b| b.state != container_state::RUNNING || b.started_at != c.started_at)
        {
            out.push(kubelet(Record::normal(
                obj,
                "Started",
                format!("Started container {}", c.name),
                "kubelet",
            )));
        }
        let newly = |r: &str| {
            c.reason == r
                && before.is_none_or(|b| b.reason != r || b.restart_count != c.restart_count)
        };
        if c.state == container_state::WAITING && newly(reason::CRASH_LOOP_BACK_OFF) {
            out.push(kubelet(Record::warning(
                obj,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    c.name, m.name
                ),
                "kubelet",
            )));
        }
        for r in [reason::IMAGE_NOT_FOUND, reason::START_ERROR] {
            if newly(r) {
                out.push(kubelet(Record::warning(
                    obj,
                    "Failed",
                    if c.message.is_empty() {
                        format!("Error: {r}")
                    } else {
                        format!("Error: {}", c.message)
                    },
                    "kubelet",
                )));
            }
        }
    }
    let old_deleting = prev.is_some_and(|o| o.meta().deletion_timestamp != 0);
    if m.deletion_timestamp != 0 && !old_deleting && !node.is_empty() {
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            out.push(kubelet(Record::normal(
                obj,
                "Killing",
                format!("Stopping container {}", c.name),
                "kubelet",
            )));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Container, ContainerStatus, ObjectMeta, PodSpec, PodStatus};

    fn pod(node: &str, status: PodStatus, deleting: bool) -> Object {
        Object::Pod(Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u".into(),
                deletion_timestamp: if deleting { 9 } else { 0 },
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(status),
        })
    }

    fn running(started: i64) -> PodStatus {
        PodStatus {
            container_statuses: vec![ContainerStatus {
                name: "c".into(),
                state: "Running".into(),
                started_at: started,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn reasons(v: &[Record]) -> Vec<String> {
        v.iter()
            .map(|r| format!("{} {}: {}", r.r#type, r.reason, r.message))
            .collect()
    }

    #[test]
    fn pod_lifecycle_events() {
        let pending = pod("", PodStatus::default(), false);
        let unsched = pod(
            "",
            PodStatus {
                reason: "Unschedulable".into(),
                message: "0/2 nodes are available".into(),
                ..Default::default()
            },
            false,
        );
        assert_eq!(
            reasons(&pod_events(Some(&pending), Some(&unsched))),
            ["Warning FailedScheduling: 0/2 nodes are available"]
        );
        assert!(pod_events(Some(&unsched), Some(&unsched)).is_empty());
        let bound = pod("n1", PodStatus::default(), false);
        assert_eq!(
            reasons(&pod_events(Some(&pending), Some(&bound))),
            ["Normal Scheduled: Successfully assigned default/web to n1"]
        );
        let run = pod("n1", running(5), false);
        let ev = pod_events(Some(&bound), Some(&run));
        assert_eq!(reasons(&ev), ["Normal Started: Started container c"]);
        assert_eq!(ev[0].host, "n1");
        assert!(pod_events(Some(&run), Some(&run)).is_empty());
        let backoff = pod(
            "n1",
            PodStatus {
                container_statuses: vec![ContainerStatus {
                    name: "c".into(),
                    state: "Waiting".into(),
                    reason: "CrashLoopBackOff".into(),
                    restart_count: 1,
                    ..Default::default()
                }],
                ..Default::default()
            },
            false,
        );
        assert_eq!(
            reasons(&pod_events(Some(&run), Some(&backoff))),
            ["Warning BackOff: Back-off restarting failed container c in pod web"]
        );
        let killing = pod("n1", running(5), true);
        assert_eq!(
            reasons(&pod_events(Some(&run), Some(&killing))),
            ["Normal Killing: Stopping container c"]
        );
    }

    #[test]
    fn probe_failures_and_kubelet_evictions_are_left_to_the_agent() {
        let with_probe = |ready: bool| {
            let mut o = pod("n1", running(5), false);
            if let Object::Pod(p) = &mut o {
                p.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Default::default());
                p.status.as_mut().unwrap().container_statuses[0].ready = ready;
            }
            o
        };
        assert!(pod_events(Some(&with_probe(true)), Some(&with_probe(false))).is_empty());
        let evicted = |node: &str| {
            let mut st = running(5);
            st.reason = "Evicted".into();
            st.message = "m".into();
            pod(node, st, false)
        };
        let run = pod("n1", running(5), false);
        assert!(pod_events(Some(&run), Some(&evicted("n1"))).is_empty());
        assert_eq!(
            reasons(&pod_events(Some(&run), Some(&evicted(""))))
                .into_iter()
                .filter(|r| r.contains("Evicted"))
                .collect::<Vec<_>>(),
            ["Warning Evicted: m"]
        );
    }

    #[test]
    fn repeats_share_a_name_and_aggregate() {
        let p = pod("n1", PodStatus::default(), false);
        let r = Record::warning(&p, "BackOff", "x".into(), "kubelet");
        let mut other = r.clone();
        other.message = "y".into();
        assert_eq!(r.event_name(), r.clone().event_name());
        assert_ne!(r.event_name(), other.event_name());
        assert!(r.event_name().starts_with("web."));
        let mut rec = Recorder::new(Duration::from_secs(3600));
        rec.record(r.clone());
        rec.record(r.clone());
        rec.record(other);
        let mut b = rec.take_batch();
        b.sort_by_key(|(_, r, _)| r.message.clone());
        assert_eq!(b.iter().map(|(_, _, n)| *n).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(rec.pending(), 0);
    }
}
