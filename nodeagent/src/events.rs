//! Events the agent writes itself, with its node identity, as the kubelet does (the
//! Node authorizer lets nodes create and update events): what only the node knows —
//! probe failures with their output (`Unhealthy`), probe kills (`Killing`), hook
//! failures (`FailedPostStartHook`, `FailedPreStopHook`), volume set-up failures
//! (`FailedMount`) and the agent's own evictions (`Evicted`). The apiserver derives the
//! rest from pod status (see its `controllers/events.rs`).
//!
//! - A [`Recorder`] (cloned into every pod worker) queues [`PodEvent`]s on a bounded
//!   channel: recording never blocks a worker; when the queue is full the event is
//!   dropped and counted.
//! - [`run`] drains it in batches (every [`FLUSH_EVERY`]): repeats within a batch are
//!   aggregated, then each distinct event is written once — its name is the hash of its
//!   dedup key ([`PodEvent::name`], the apiserver's scheme), and a repeat is an Update of
//!   the copy last written ([`Written`]: nodes may create and update events but not
//!   read them) that increments `count` and moves `last_timestamp` ([`merge`]).
//!   A write that fails is logged and dropped (Events are best effort, as in
//!   Kubernetes).

use kube_lite_core::time::now_ms;
use kube_lite_core::Resource;
use kube_lite_proto::v1::event_api_client::EventApiClient;
use kube_lite_proto::v1::{Event, EventSource, ObjectMeta, ObjectReference, Pod};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;

/// Events queued before new ones are dropped.
pub const QUEUE: usize = 1024;
/// How often queued events are written (a repeating event, e.g. a readiness probe
/// failing every second, is at most one write per flush).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest message written (longer ones are cut, with "…"): probe and hook output can be
/// long, as the kubelet bounds it.
pub const MAX_MESSAGE: usize = 1024;
/// The reporting component, as the kubelet's.
pub const COMPONENT: &str = "kubelet";

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// One event about a pod (or one of its containers).
#[derive(Debug, Clone, PartialEq)]
pub struct PodEvent {
    pub involved: ObjectReference,
    pub r#type: &'static str,
    pub reason: String,
    pub message: String,
}

/// `spec.containers{c}` / `spec.initContainers{c}`, as the kubelet's field paths.
pub fn container_field_path(pod: &Pod, container: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.init_containers.iter().any(|c| c.name == container));
    if init {
        format!("spec.initContainers{{{container}}}")
    } else {
        format!("spec.containers{{{container}}}")
    }
}

/// `s` cut to at most `max` bytes on a character boundary, "…" marking a cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl PodEvent {
    /// An event about `pod`; `container` (may be empty) sets the field path.
    pub fn new(
        pod: &Pod,
        container: &str,
        r#type: &'static str,
        reason: &str,
        message: &str,
    ) -> PodEvent {
        let m = pod.meta();
        PodEvent {
            involved: ObjectReference {
                kind: "Pod".into(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                api_version: "v1".into(),
                resource_version: 0,
                field_path: if container.is_empty() {
                    String::new()
                } else {
                    container_field_path(pod, container)
                },
            },
            r#type,
            reason: reason.to_string(),
            message: truncate(message.trim_end(), MAX_MESSAGE),
        }
    }

    /// The Event's name: the involved pod's name and the hash of the dedup key
    /// (object, field path, type, reason, message, component, host).
    pub fn name(&self, host: &str) -> String {
        kube_lite_core::events::event_name(
            &self.involved.name,
            &[
                self.involved.kind.as_str(),
                &self.involved.uid,
                &self.involved.name,
                &self.involved.field_path,
                self.r#type,
                &self.reason,
                &self.message,
                COMPONENT,
                host,
            ],
        )
    }
}

/// The Event to write for `n` repeats of `ev` at `now`: `cur` (the stored one) with
/// `count` increased and `last_timestamp` moved, or a new one.
pub fn merge(cur: Option<Event>, ev: &PodEvent, name: &str, host: &str, n: i32, now: i64) -> Event {
    if let Some(mut e) = cur {
        e.count = e.count.saturating_add(n);
        e.last_timestamp = now;
        return e;
    }
    Event {
        metadata: Some(ObjectMeta {
            name: name.to_string(),
            namespace: if ev.involved.namespace.is_empty() {
                kube_lite_core::DEFAULT_NAMESPACE.into()
            } else {
                ev.involved.namespace.clone()
            },
            ..Default::default()
        }),
        involved_object: Some(ev.involved.clone()),
        reason: ev.reason.clone(),
        message: ev.message.clone(),
        source: Some(EventSource {
            component: COMPONENT.into(),
            host: host.to_string(),
        }),
        first_timestamp: now,
        last_timestamp: now,
        count: n,
        r#type: ev.r#type.into(),
        reporting_component: COMPONENT.into(),
        reporting_instance: host.to_string(),
    }
}

/// Repeats of one batch by event name, in first-seen order.
pub fn aggregate(batch: Vec<PodEvent>, host: &str) -> Vec<(String, PodEvent, i32)> {
    let mut out: Vec<(String, PodEvent, i32)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for ev in batch {
        let name = ev.name(host);
        match at.get(&name) {
            Some(&i) => out[i].2 = out[i].2.saturating_add(1),
            None => {
                at.insert(name.clone(), out.len());
                out.push((name, ev, 1));
            }
        }
    }
    out
}

/// The sending end, shared by the pod workers.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<PodEvent>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// A recorder and the queue [`run`] drains.
    pub fn new() -> (Recorder, mpsc::Receiver<PodEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Recorder {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    pub fn record(&self, ev: PodEvent) {
        if self.tx.try_send(ev).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "event queue full or closed; events dropped");
            }
        }
    }

    pub fn warning(&self, pod: &Pod, container: &str, reason: &str, message: &str) {
        self.record(PodEvent::new(pod, container, WARNING, reason, message));
    }

    pub fn normal(&self, pod: &Pod, container: &str, reason: &str, message: &str) {
        self.record(PodEvent::new(pod, container, NORMAL, reason, message));
    }
}

/// The Events last written, by name, at most [`CACHE`] (oldest dropped first): a
/// repeat is an Update of the cached copy, as the kubelet's correlator does (nodes may
/// create and update events, not read them).
#[derive(Default)]
pub struct Written {
    by_name: HashMap<String, Event>,
    order: std::collections::VecDeque<String>,
}

/// Events remembered for repeats (the kubelet's event cache size).
pub const CACHE: usize = 4096;

impl Written {
    pub fn get(&self, name: &str) -> Option<&Event> {
        self.by_name.get(name)
    }
    pub fn put(&mut self, name: &str, e: Event) {
        if self.by_name.insert(name.to_string(), e).is_none() {
            self.order.push_back(name.to_string());
            while self.order.len() > CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.by_name.remove(&old);
                }
            }
        }
    }
    pub fn forget(&mut self, name: &str) {
        if self.by_name.remove(name).is_some() {
            self.order.retain(|n| n != name);
        }
    }
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Writes the queued events until the recorders are gone. `host`: the node's name.
pub async fn run(mut rx: mpsc::Receiver<PodEvent>, mut api: EventApiClient<Channel>, host: String) {
    let mut batch = Vec::new();
    let mut written = Written::default();
    while let Some(ev) = rx.recv().await {
        batch.push(ev);
        tokio::time::sleep(FLUSH_EVERY).await;
        while batch.len() < QUEUE {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        for (name, ev, n) in aggregate(std::mem::take(&mut batch), &host) {
            match write(&mut api, &mut written, &ev, &name, &host, n).await {
                Ok(e) => written.put(&name, e),
                Err(e) => {
                    written.forget(&name);
                    tracing::warn!(event = %name, reason = %ev.reason, "writing event: {}", e.message());
                }
            }
        }
    }
}

/// A repeat of a cached Event: Update (count + n, precondition on its version). A new
/// one (or after a conflict, or when the Event is gone): Create; when it exists already
/// (written before this agent started) an unconditional Update restarts its count, as a
/// restarted kubelet starts new Events.
async fn write(
    api: &mut EventApiClient<Channel>,
    written: &mut Written,
    ev: &PodEvent,
    name: &str,
    host: &str,
    n: i32,
) -> Result<Event, tonic::Status> {
    let now = now_ms();
    if let Some(cur) = written.get(name).cloned() {
        match api.update(merge(Some(cur), ev, name, host, n, now)).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if matches!(e.code(), Code::Aborted | Code::NotFound) => written.forget(name),
            Err(e) => return Err(e),
        }
    }
    let fresh = merge(None, ev, name, host, n, now);
    match api.create(fresh.clone()).await {
        Ok(r) => Ok(r.into_inner()),
        Err(e) if e.code() == Code::AlreadyExists => Ok(api.update(fresh).await?.into_inner()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Container, PodSpec};

    fn pod() -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                init_containers: vec![Container {
                    name: "setup".into(),
                    ..Default::default()
                }],
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn events_name_the_container_and_repeat_under_one_name() {
        let p = pod();
        let a = PodEvent::new(
            &p,
            "app",
            WARNING,
            "Unhealthy",
            "Liveness probe failed: x\n",
        );
        assert_eq!(a.involved.field_path, "spec.containers{app}");
        assert_eq!(a.message, "Liveness probe failed: x");
        assert_eq!(a.involved.uid, "u1");
        let init = PodEvent::new(
            &p,
            "setup",
            WARNING,
            "Unhealthy",
            "Liveness probe failed: x",
        );
        assert_eq!(init.involved.field_path, "spec.initContainers{setup}");
        assert_ne!(
            a.name("n1"),
            init.name("n1"),
            "the field path is in the key"
        );
        assert_ne!(a.name("n1"), a.name("n2"));
        assert!(a.name("n1").starts_with("web."));
        let agg = aggregate(vec![a.clone(), init.clone(), a.clone()], "n1");
        assert_eq!(
            agg.iter()
                .map(|(_, e, n)| (e.involved.field_path.as_str(), *n))
                .collect::<Vec<_>>(),
            [
                ("spec.containers{app}", 2),
                ("spec.initContainers{setup}", 1)
            ]
        );
    }

    #[test]
    fn merge_creates_then_counts() {
        let p = pod();
        let ev = PodEvent::new(
            &p,
            "app",
            NORMAL,
            "Killing",
            "Container app failed liveness probe, will be restarted",
        );
        let name = ev.name("n1");
        let e = merge(None, &ev, &name, "n1", 2, 100);
        assert_eq!(
            (e.count, e.first_timestamp, e.last_timestamp),
            (2, 100, 100)
        );
        assert_eq!(e.source.as_ref().unwrap().host, "n1");
        assert_eq!(e.metadata.as_ref().unwrap().name, name);
        let e = merge(Some(e), &ev, &name, "n1", 1, 250);
        assert_eq!(
            (e.count, e.first_timestamp, e.last_timestamp),
            (3, 100, 250)
        );
    }

    #[test]
    fn the_cache_of_written_events_is_bounded() {
        let mut w = Written::default();
        for i in 0..CACHE + 10 {
            w.put(&format!("e{i}"), Event::default());
        }
        assert_eq!(w.len(), CACHE);
        assert!(w.get("e0").is_none() && w.get(&format!("e{}", CACHE + 9)).is_some());
        w.put("e20", Event::default());
        assert_eq!(w.len(), CACHE, "a repeat is no new entry");
        w.forget("e20");
        assert!(w.get("e20").is_none());
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        let s = "é".repeat(600);
        let t = truncate(&s, MAX_MESSAGE);
        assert!(t.len() <= MAX_MESSAGE && t.ends_with('…'), "{}", t.len());
    }
}
