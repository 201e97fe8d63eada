//! Endpoints: one Endpoints object per Service with a selector, named like it, listing
//! the ready pods it selects (Running, with an IP, not being deleted, and Ready: the
//! pod's Ready condition True, or no Ready condition at all, as a status written without
//! one by hand), sorted by IP. Selected pods with an IP that are alive but not ready
//! (readiness probe failing, still starting) are listed under `not_ready_addresses`,
//! which the proxies do not send to.
//! A Service without a selector leaves its Endpoints to the user; a deleted Service's
//! Endpoints go with it.
//!
//! The Endpoints of a Service with a selector belong to this controller: a user's
//! create, update or delete of them is refused with FAILED_PRECONDITION
//! ([`check_user_write`]). Kubernetes lets such a write through and reconciles it
//! back; kube-lite refuses it so that the proxies never see the user's version, not
//! even for one revision.
//!
//! It runs outside the writer (as kube-controller-manager's endpoints controller): a
//! task with a List + Watch of the committed Pods, Services and Endpoints, kept in an
//! [`Index`] (pods by label, Services by selector), so a Service create looks at the
//! pods it selects and a pod change at the Services that select it, never at the rest
//! of the namespace. Work list ([`Dirty`]): the Services whose Endpoints may have
//! changed (the Service itself changed, or a pod it selects, selected, changed in what
//! counts). The Endpoints it decides are written a few hundred per store write; inside
//! the writer each costs one lookup and one comparison. So the Endpoints follow a pod
//! change one commit later (Kubernetes' are asynchronous too), and a restart does not
//! recompute them in the writer: the controller looks at every Service once, outside
//! it, and writes only those that differ.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use tokio_stream::wrappers::BroadcastStream;

use kube_lite_core::consts::{condition, condition_status, phase};
use kube_lite_core::{ObjectRef, Resource};
use kube_lite_proto::labels::map_matches;
use kube_lite_proto::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, EventType, ObjectMeta, Pod, Service,
    ServicePort, ServiceSpec,
};

use crate::error::ApiError;
use crate::resource::{Kind, Object};
use crate::store::{Event, Objects, Store};

/// What the endpoints controller looks at in a pod.
#[derive(Debug, PartialEq)]
pub struct PodView<'a> {
    /// Running with an IP, not being deleted, and Ready.
    pub ready: bool,
    /// Pending or Running with an IP, not being deleted, not ready.
    pub not_ready: bool,
    pub ip: &'a str,
    pub node: &'a str,
    pub labels: &'a HashMap<String, String>,
}

impl<'a> PodView<'a> {
    pub fn of(p: &'a Pod) -> PodView<'a> {
        let st = p.status.as_ref();
        let alive = st.is_some_and(|s| {
            (s.phase == phase::RUNNING || s.phase == phase::PENDING) && !s.pod_ip.is_empty()
        }) && p.meta().deletion_timestamp == 0;
        let ready = alive
            && st.is_some_and(|s| {
                s.phase == phase::RUNNING
                    && s.conditions
                        .iter()
                        .find(|c| c.r#type == condition::READY)
                        .is_none_or(|c| c.status == condition_status::TRUE)
            });
        PodView {
            ready,
            not_ready: alive && !ready,
            ip: st.map(|s| s.pod_ip.as_str()).unwrap_or(""),
            node: p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or(""),
            labels: p.labels(),
        }
    }
}

/// The target port of Service port `sp` on pod `p`: the number, or for a named
/// `target_port_name` the pod's container port of that name and protocol (`None`: the
/// pod has no such port, as Kubernetes' `findPort`).
pub fn resolve_target_port(sp: &ServicePort, p: &Pod) -> Option<i32> {
    if sp.target_port_name.is_empty() {
        return Some(sp.target_port);
    }
    let proto = |s: &str| {
        if s.is_empty() {
            "TCP".to_string()
        } else {
            s.to_ascii_uppercase()
        }
    };
    p.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|cp| cp.name == sp.target_port_name && proto(&cp.protocol) == proto(&sp.protocol))
        .map(|cp| cp.container_port)
}

/// The subsets for a Service with `spec`, from the pods of its namespace: the selected
/// pods with an IP grouped by their resolved target ports (named target ports may
/// resolve to different numbers on different pods: one subset per distinct port set,
/// ordered by it), the ready ones under `addresses` and the unready ones under
/// `not_ready_addresses` (by IP, then name), or none when no selected pod has an IP. A
/// pod on which no port of the Service resolves is no endpoint; one on which some ports
/// resolve serves those. A Service without ports (headless) lists its pods with no ports.
pub fn desired_subsets<'a>(
    spec: &ServiceSpec,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<EndpointSubset> {
    type PortKey = Vec<(String, i32, String)>;
    type Addrs = Vec<(Ipv4Addr, EndpointAddress)>;
    let mut groups: BTreeMap<PortKey, (Addrs, Addrs)> = BTreeMap::new();
    for p in pods {
        let v = PodView::of(p);
        if !(v.ready || v.not_ready) || !map_matches(&spec.selector, v.labels) {
            continue;
        }
        let ports: PortKey = spec
            .ports
            .iter()
            .filter_map(|sp| {
                resolve_target_port(sp, p).map(|n| (sp.name.clone(), n, sp.protocol.clone()))
            })
            .collect();
        if ports.is_empty() && !spec.ports.is_empty() {
            continue;
        }
        let group = groups.entry(ports).or_default();
        let list = if v.ready { &mut group.0 } else { &mut group.1 };
        list.push((
            v.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            EndpointAddress {
                ip: v.ip.to_string(),
                node_name: v.node.to_string(),
                pod_name: p.name().to_string(),
            },
        ));
    }
    let sorted = |mut v: Addrs| {
        v.sort_by(|a, b| (a.0, &a.1.pod_name).cmp(&(b.0, &b.1.pod_name)));
        v.into_iter().map(|(_, a)| a).collect::<Vec<_>>()
    };
    groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: sorted(ready),
            not_ready_addresses: sorted(not_ready),
            ports: ports
                .into_iter()
                .map(|(name, port, protocol)| EndpointPort {
                    name,
                    port,
                    protocol,
                })
                .collect(),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Delete,
    /// A new Endpoints (the writer adds uid and creation time).
    Create(Endpoints),
    Update(Endpoints),
}

/// What to do with the Endpoints `key` of Service `svc` (`None`: deleted), given the
/// existing Endpoints and the pods of the namespace. `None`: nothing.
pub fn decide<'a>(
    key: &ObjectRef,
    svc: Option<&Service>,
    existing: Option<&Endpoints>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<Action> {
    let Some(svc) = svc else {
        return existing.map(|_| Action::Delete);
    };
    let spec = svc.spec.as_ref().filter(|s| !s.selector.is_empty())?;
    let subsets = desired_subsets(spec, pods);
    match existing {
        Some(e) if e.subsets == subsets => None,
        Some(e) => {
            let mut e = e.clone();
            e.subsets = subsets;
            Some(Action::Update(e))
        }
        None => Some(Action::Create(Endpoints {
            metadata: Some(ObjectMeta {
                name: key.name.clone(),
                namespace: key.namespace.clone(),
                labels: svc.labels().clone(),
                ..Default::default()
            }),
            subsets,
        })),
    }
}

/// Whether a user (not this controller) may write the Endpoints `key`: not while the
/// Service of that name has a selector (FAILED_PRECONDITION, naming why).
pub fn check_user_write(objects: &Objects, key: &ObjectRef) -> Result<(), ApiError> {
    let managed = objects
        .get(Kind::Service, key)
        .and_then(|o| o.as_service())
        .and_then(|s| s.spec.as_ref())
        .is_some_and(|s| !s.selector.is_empty());
    if managed {
        return Err(ApiError::FailedPrecondition(format!(
            "endpoints \"{key}\" are managed by the endpoints controller because service \"{key}\" has a selector; remove the selector to manage them by hand"
        )));
    }
    Ok(())
}

/// The endpoints controller's view: the pods, Services and Endpoints of every
/// namespace, with two indexes so that a change costs what it changes:
/// - pods by label (`key=value` → pod names): the pods a selector selects are found
///   from its rarest pair, then checked against the whole selector;
/// - Services by selector (the selector's first pair → Service names): the Services a
///   pod's labels may match are found from the pod's pairs (a matching selector has its
///   first pair among them), then checked against the whole selector.
#[derive(Default)]
pub struct Index {
    ns: HashMap<String, NsIndex>,
}

type Pair = (String, String);

#[derive(Default)]
struct NsIndex {
    pods: HashMap<String, Arc<Object>>,
    pods_by_label: HashMap<Pair, HashSet<String>>,
    services: HashMap<String, Arc<Object>>,
    services_by_selector: HashMap<Pair, BTreeSet<String>>,
    endpoints: HashMap<String, Arc<Object>>,
}

impl NsIndex {
    fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.services.is_empty() && self.endpoints.is_empty()
    }
}

/// The selector of a Service, if it has one (a Service without selector is not this
/// controller's).
fn selector_of(o: &Object) -> Option<&HashMap<String, String>> {
    o.as_service()
        .and_then(|s| s.spec.as_ref())
        .map(|s| &s.selector)
        .filter(|s| !s.is_empty())
}

/// The pair a selector is indexed under: its smallest (any fixed pair would do).
fn first_pair(sel: &HashMap<String, String>) -> Option<Pair> {
    sel.iter().min().map(|(k, v)| (k.clone(), v.clone()))
}

fn pair_set_edit<T: Ord + std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<Pair, impl SetLike<T>>,
    pair: Pair,
    item: &T,
    add: bool,
) {
    if add {
        map.entry(pair).or_default().put(item.clone());
    } else if let Some(set) = map.get_mut(&pair) {
        set.take(item);
        if set.empty() {
            map.remove(&pair);
        }
    }
}

trait SetLike<T>: Default {
    fn put(&mut self, t: T);
    fn take(&mut self, t: &T);
    fn empty(&self) -> bool;
}
impl<T: std::hash::Hash + Eq> SetLike<T> for HashSet<T> {
    fn put(&mut self, t: T) {
        self.insert(t);
    }
    fn take(&mut self, t: &T) {
        self.remove(t);
    }
    fn empty(&self) -> bool {
        self.is_empty()
    }
}
impl<T: Ord> SetLike<T> for BTreeSet<T> {
    fn put(&mut self, t: T) {
        self.insert(t);
    }
    fn take(&mut self, t: &T) {
        self.remove(t);
    }
    fn empty(&self) -> bool {
        self.is_empty()
    }
}

impl Index {
    /// The index of `objects` (its Pods, Services and Endpoints).
    pub fn from_objects(objects: &Objects) -> Index {
        let mut ix = Index::default();
        for kind in [Kind::Pod, Kind::Service, Kind::Endpoints] {
            for o in objects.of(kind).values() {
                ix.apply(kind, &o.key(), Some(o.clone()));
            }
        }
        ix
    }

    /// Every Service with a selector (what a full resync looks at).
    pub fn selector_services(&self) -> Vec<ObjectRef> {
        let mut out = Vec::new();
        for (ns, n) in &self.ns {
            for (name, s) in &n.services {
                if selector_of(s).is_some() {
                    out.push(ObjectRef::new(ns.clone(), name.clone()));
                }
            }
        }
        out.sort();
        out
    }

    /// Every Service known.
    pub fn services(&self) -> BTreeSet<ObjectRef> {
        self.ns
            .iter()
            .flat_map(|(ns, n)| {
                n.services
                    .keys()
                    .map(move |name| ObjectRef::new(ns.clone(), name.clone()))
            })
            .collect()
    }

    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<&Arc<Object>> {
        let n = self.ns.get(&key.namespace)?;
        match kind {
            Kind::Pod => n.pods.get(&key.name),
            Kind::Service => n.services.get(&key.name),
            Kind::Endpoints => n.endpoints.get(&key.name),
            _ => None,
        }
    }

    /// Applies one change (`cur` `None`: deleted) and returns the Services whose
    /// Endpoints may have changed: the Service itself; for a pod, the Services selecting
    /// it before or after, if anything that counts changed (its [`PodView`]); for a
    /// deleted Endpoints, its Service (made again if the Service has a selector).
    pub fn apply(
        &mut self,
        kind: Kind,
        key: &ObjectRef,
        cur: Option<Arc<Object>>,
    ) -> Vec<ObjectRef> {
        let n = self.ns.entry(key.namespace.clone()).or_default();
        let name = &key.name;
        let mut dirty = Vec::new();
        match kind {
            Kind::Pod => {
                let prev = match &cur {
                    Some(o) => n.pods.insert(name.clone(), o.clone()),
                    None => n.pods.remove(name),
                };
                let pv = prev.as_deref().and_then(Object::as_pod);
                let cv = cur.as_deref().and_then(Object::as_pod);
                // Label index.
                let l0 = pv.map(|p| p.labels());
                let l1 = cv.map(|p| p.labels());
                if l0 != l1 {
                    for (k, v) in l0.into_iter().flatten() {
                        if l1.is_none_or(|l| l.get(k) != Some(v)) {
                            pair_set_edit(
                                &mut n.pods_by_label,
                                (k.clone(), v.clone()),
                                name,
                                false,
                            );
                        }
                    }
                    for (k, v) in l1.into_iter().flatten() {
                        if l0.is_none_or(|l| l.get(k) != Some(v)) {
                            pair_set_edit(&mut n.pods_by_label, (k.clone(), v.clone()), name, true);
                        }
                    }
                }
                let v0 = pv.map(PodView::of);
                let v1 = cv.map(PodView::of);
                if v0 != v1 {
                    let mut hit = BTreeSet::new();
                    for l in [l0, l1].into_iter().flatten() {
                        hit.extend(n.selecting(l));
                    }
                    dirty.extend(
                        hit.into_iter()
                            .map(|s| ObjectRef::new(key.namespace.clone(), s)),
                    );
                }
            }
            Kind::Service => {
                let prev = match &cur {
                    Some(o) => n.services.insert(name.clone(), o.clone()),
                    None => n.services.remove(name),
                };
                let p0 = prev.as_deref().and_then(selector_of).and_then(first_pair);
                let p1 = cur.as_deref().and_then(selector_of).and_then(first_pair);
                if p0 != p1 {
                    if let Some(p) = p0 {
                        pair_set_edit(&mut n.services_by_selector, p, name, false);
                    }
                    if let Some(p) = p1 {
                        pair_set_edit(&mut n.services_by_selector, p, name, true);
                    }
                }
                dirty.push(key.clone());
            }
            Kind::Endpoints => match &cur {
                Some(o) => {
                    n.endpoints.insert(name.clone(), o.clone());
                }
                None => {
                    if n.endpoints.remove(name).is_some() && n.services.contains_key(name) {
                        dirty.push(key.clone());
                    }
                }
            },
            _ => {}
        }
        if n.is_empty() {
            self.ns.remove(&key.namespace);
        }
        dirty
    }

    /// The pods the selector `sel` selects in namespace `ns` (from its rarest pair).
    pub fn selected_pods<'a>(
        &'a self,
        ns: &str,
        sel: &'a HashMap<String, String>,
    ) -> impl Iterator<Item = &'a Pod> + 'a {
        let n = self.ns.get(ns);
        let rarest = n.and_then(|n| {
            sel.iter()
                .map(|(k, v)| n.pods_by_label.get(&(k.clone(), v.clone())))
                .min_by_key(|s| s.map_or(0, |s| s.len()))
                .flatten()
        });
        rarest
            .into_iter()
            .flatten()
            .filter_map(move |name| n?.pods.get(name)?.as_pod())
            .filter(move |p| map_matches(sel, p.labels()))
    }

    /// The Services whose selector matches `labels` in namespace `ns`.
    pub fn selecting(&self, ns: &str, labels: &HashMap<String, String>) -> Vec<String> {
        self.ns
            .get(ns)
            .map(|n| n.selecting(labels).into_iter().collect())
            .unwrap_or_default()
    }

    /// What to do for the Endpoints of Service `key` (see [`decide`]), from the index.
    pub fn decide(&self, key: &ObjectRef) -> Option<Action> {
        let svc = self.get(Kind::Service, key).and_then(|o| o.as_service());
        let existing = self
            .get(Kind::Endpoints, key)
            .and_then(|o| o.as_endpoints());
        let sel = svc.and_then(|s| s.spec.as_ref()).map(|s| &s.selector);
        match sel.filter(|s| !s.is_empty()) {
            Some(sel) => decide(key, svc, existing, self.selected_pods(&key.namespace, sel)),
            None => decide(key, svc, existing, std::iter::empty()),
        }
    }
}

impl NsIndex {
    fn selecting(&self, labels: &HashMap<String, String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (k, v) in labels {
            let Some(names) = self.services_by_selector.get(&(k.clone(), v.clone())) else {
                continue;
            };
            for name in names {
                if self
                    .services
                    .get(name)
                    .and_then(|s| selector_of(s))
                    .is_some_and(|sel| map_matches(sel, labels))
                {
                    out.insert(name.clone());
                }
            }
        }
        out
    }
}

/// The work list: Services to look at, each once, oldest first.
#[derive(Default)]
pub struct Dirty {
    order: VecDeque<ObjectRef>,
    set: HashSet<ObjectRef>,
}

impl Dirty {
    pub fn add(&mut self, key: ObjectRef) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
        }
    }
    pub fn pop(&mut self) -> Option<ObjectRef> {
        let k = self.order.pop_front()?;
        self.set.remove(&k);
        Some(k)
    }
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Most Endpoints written in one store write (one batch).
const MAX_WRITES_PER_BATCH: usize = 512;
/// Most pods looked at before the task yields (a resync of 10,000 Services is
/// spread over many small steps, and over many batches).
const PODS_PER_STEP: usize = 20_000;

/// Writes the decided Endpoints in ONE store write. Inside the writer each action costs
/// one lookup and one comparison; a Service changed or gone meanwhile is left to the
/// next round (its change marks it again).
async fn write(store: &Store, actions: Vec<(ObjectRef, Action)>) -> Result<(), ApiError> {
    store
        .write(move |txn| {
            for (key, a) in actions {
                let managed = txn
                    .get(Kind::Service, &key)
                    .and_then(|o| selector_of(o))
                    .is_some();
                let cur = txn
                    .get(Kind::Endpoints, &key)
                    .and_then(|o| o.as_endpoints())
                    .cloned();
                match a {
                    Action::Delete => {
                        if cur.is_some() && txn.get(Kind::Service, &key).is_none() {
                            txn.remove(Kind::Endpoints, &key);
                        }
                    }
                    Action::Create(mut e) | Action::Update(mut e) => {
                        if !managed {
                            continue;
                        }
                        match cur {
                            Some(c) if c.subsets == e.subsets => {}
                            Some(mut c) => {
                                c.subsets = e.subsets;
                                txn.put(Object::Endpoints(c));
                            }
                            None => {
                                let m = e.meta_mut();
                                m.uid = uuid::Uuid::new_v4().to_string();
                                m.creation_timestamp = txn.now_ms;
                                m.resource_version = 0;
                                txn.put(Object::Endpoints(e));
                            }
                        }
                    }
                }
            }
            Ok(None)
        })
        .await
        .map(|_| ())
}

/// Starts the endpoints controller; it ends when the store shuts down (or the handle
/// is aborted).
pub fn start(store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store))
}

type Streams = SelectAll<BroadcastStream<Arc<Event>>>;

/// List + Watch of Pods, Services and Endpoints from the committed state; the
/// index, from which the Services whose Endpoints may be out of date are
/// reconciled in batches. At start every Service with a selector is looked at once,
/// but only the Endpoints that differ are written (after a clean restart: none), a
/// few hundred per batch, so a restart's first batches are not held up by them.
async fn run(store: Arc<Store>) {
    let mut closing = store.closing.subscribe();
    let mut known: Option<BTreeSet<ObjectRef>> = None;
    'relist: loop {
        if *closing.borrow() {
            return;
        }
        let (objects, rev) = {
            let sh = store.shared.read().expect("lock");
            (sh.objects.clone(), sh.rev)
        };
        // Off the runtime's workers: at 150,000 pods this takes seconds, which would
        // hold up the first requests after a restart.
        let Ok(mut ix) = tokio::task::spawn_blocking(move || Index::from_objects(&objects)).await
        else {
            return;
        };
        let mut dirty = Dirty::default();
        let mut streams: Streams = SelectAll::new();
        for kind in [Kind::Pod, Kind::Service, Kind::Endpoints] {
            match store.subscribe(kind, rev) {
                Ok((entries, rx, _)) => {
                    for e in entries {
                        if let Ok(ev) = e.event() {
                            apply_event(&mut ix, &mut dirty, &ev);
                        }
                    }
                    streams.push(BroadcastStream::new(rx));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "endpoints controller: watch failed; relisting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'relist;
                }
            }
        }
        // A resync: every selector Service, and the Services deleted while this
        // controller was behind (their Endpoints go).
        for k in ix.selector_services() {
            dirty.add(k);
        }
        let now = ix.services();
        if let Some(before) = known.take() {
            for k in before.difference(&now) {
                dirty.add(k.clone());
            }
        }
        tracing::info!(
            revision = rev,
            services = now.len(),
            resync = dirty.len(),
            "endpoints controller listed"
        );
        loop {
            // 1. Everything already published.
            while let Some(next) = streams.next().now_or_never() {
                match next {
                    Some(Ok(ev)) => apply_event(&mut ix, &mut dirty, &ev),
                    Some(Err(_lagged)) => {
                        tracing::info!("endpoints controller fell behind the watch; relisting");
                        known = Some(ix.services());
                        continue 'relist;
                    }
                    None => return,
                }
            }
            // 2. A batch of work.
            if !dirty.is_empty() {
                let (mut actions, mut pods) = (Vec::new(), 0usize);
                while actions.len() < MAX_WRITES_PER_BATCH && pods < PODS_PER_STEP {
                    let Some(key) = dirty.pop() else { break };
                    if let Some(a) = ix.decide(&key) {
                        if let Action::Create(e) | Action::Update(e) = &a {
                            pods += e
                                .subsets
                                .iter()
                                .map(|s| s.addresses.len() + s.not_ready_addresses.len())
                                .sum::<usize>();
                        }
                        actions.push((key, a));
                    }
                    pods += 1;
                }
                if actions.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let n = actions.len();
                match write(&store, actions).await {
                    Ok(()) => tracing::debug!(endpoints = n, "endpoints written"),
                    Err(ApiError::Unavailable(_)) => return,
                    Err(e) => {
                        // The batch wrote nothing: look at everything again.
                        tracing::warn!(error = %e, "writing endpoints failed; resyncing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        known = Some(ix.services());
                        continue 'relist;
                    }
                }
                continue;
            }
            // 3. Idle: wait for a change.
            tokio::select! {
                next = streams.next() => match next {
                    Some(Ok(ev)) => apply_event(&mut ix, &mut dirty, &ev),
                    Some(Err(_)) => {
                        known = Some(ix.services());
                        continue 'relist;
                    }
                    None => return,
                },
                _ = closing.changed() => return,
            }
        }
    }
}

fn apply_event(ix: &mut Index, dirty: &mut Dirty, ev: &Event) {
    let key = ev.obj.key();
    // The snapshot may be ahead of the stream: skip what the index already has.
    if ix
        .get(ev.kind, &key)
        .is_some_and(|o| o.meta().resource_version >= ev.rev)
    {
        return;
    }
    let cur = (ev.typ != EventType::Deleted).then(|| ev.obj.clone());
    if cur.is_none() && ix.get(ev.kind, &key).is_none() {
        return;
    }
    for k in ix.apply(ev.kind, &key, cur) {
        dirty.add(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn pod(name: &str, app: &str, phase: &str, ip: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                pod_ip: ip.into(),
                ..Default::default()
            }),
        }
    }

    fn svc(selector: &[(&str, &str)]) -> Service {
        Service {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                labels: [("tier".to_string(), "front".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: 8080,
                    protocol: "TCP".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn with_port(mut p: Pod, name: &str, n: i32) -> Pod {
        p.spec.as_mut().unwrap().containers.push(Container {
            name: "c".into(),
            ports: vec![ContainerPort {
                name: name.into(),
                container_port: n,
                protocol: "TCP".into(),
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let mut s = svc(&[("app", "web")]);
        let sp = &mut s.spec.as_mut().unwrap().ports[0];
        sp.target_port = 0;
        sp.target_port_name = "web".into();
        let pods = [
            with_port(pod("a", "web", "Running", "10.0.1.2"), "web", 8080),
            with_port(pod("b", "web", "Running", "10.0.1.3"), "web", 9090),
            with_port(pod("c", "web", "Running", "10.0.1.4"), "web", 8080),
            // No port of that name: not an endpoint.
            with_port(pod("d", "web", "Running", "10.0.1.5"), "other", 8080),
            pod("e", "web", "Running", "10.0.1.6"),
        ];
        let subsets = desired_subsets(s.spec.as_ref().unwrap(), &pods);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        assert_eq!(ips(&subsets[..1]), ["10.0.1.2", "10.0.1.4"]);
        assert_eq!(subsets[0].ports[0].port, 8080);
        assert_eq!(subsets[0].ports[0].name, "http");
        assert_eq!(ips(&subsets[1..]), ["10.0.1.3"]);
        assert_eq!(subsets[1].ports[0].port, 9090);
        // The protocol must match too.
        let mut udp = s.clone();
        udp.spec.as_mut().unwrap().ports[0].protocol = "UDP".into();
        assert!(desired_subsets(udp.spec.as_ref().unwrap(), &pods).is_empty());
    }

    #[test]
    fn headless_without_ports_lists_pods() {
        let mut s = svc(&[("app", "web")]);
        let spec = s.spec.as_mut().unwrap();
        spec.ports.clear();
        spec.cluster_ip = "None".into();
        let pods = [pod("a", "web", "Running", "10.0.1.2")];
        let subsets = desired_subsets(s.spec.as_ref().unwrap(), &pods);
        assert_eq!(ips(&subsets), ["10.0.1.2"]);
        assert!(subsets[0].ports.is_empty());
    }

    fn ips(subsets: &[EndpointSubset]) -> Vec<&str> {
        subsets
            .iter()
            .flat_map(|s| &s.addresses)
            .map(|a| a.ip.as_str())
            .collect()
    }

    #[test]
    fn subsets_hold_ready_selected_pods_by_ip() {
        let mut deleting = pod("d", "web", "Running", "10.0.1.9");
        deleting.meta_mut().deletion_timestamp = 1;
        let pods = [
            pod("b", "web", "Running", "10.0.1.10"),
            pod("a", "web", "Running", "10.0.1.9"),
            pod("c", "web", "Pending", "10.0.1.2"),
            pod("e", "web", "Running", ""),
            pod("f", "db", "Running", "10.0.1.3"),
            deleting,
        ];
        let s = desired_subsets(svc(&[("app", "web")]).spec.as_ref().unwrap(), &pods);
        assert_eq!(ips(&s), ["10.0.1.9", "10.0.1.10"], "numeric IP order");
        let nr: Vec<&str> = s[0]
            .not_ready_addresses
            .iter()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(nr, ["10.0.1.2"], "the Pending pod with an IP is not ready");
        assert_eq!(s[0].addresses[0].pod_name, "a");
        assert_eq!(s[0].addresses[0].node_name, "n1");
        assert_eq!(
            s[0].ports,
            [EndpointPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into()
            }]
        );
        assert!(desired_subsets(svc(&[("app", "x")]).spec.as_ref().unwrap(), &pods).is_empty());
    }

    #[test]
    fn readiness_condition_moves_pods_between_addresses_and_not_ready() {
        let with_ready = |name: &str, ip: &str, ready: &str| {
            let mut p = pod(name, "web", "Running", ip);
            p.status.as_mut().unwrap().conditions = vec![kube_lite_proto::v1::PodCondition {
                r#type: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }];
            p
        };
        let pods = [
            with_ready("a", "10.0.1.2", "True"),
            with_ready("b", "10.0.1.3", "False"),
            pod("c", "web", "Running", "10.0.1.4"), // no condition: ready
        ];
        let s = desired_subsets(svc(&[("app", "web")]).spec.as_ref().unwrap(), &pods);
        assert_eq!(ips(&s), ["10.0.1.2", "10.0.1.4"]);
        assert_eq!(s[0].not_ready_addresses.len(), 1);
        assert_eq!(s[0].not_ready_addresses[0].pod_name, "b");
        // All unready: one subset with no addresses (the proxies send nowhere).
        let s = desired_subsets(
            svc(&[("app", "web")]).spec.as_ref().unwrap(),
            &[with_ready("b", "10.0.1.3", "False")],
        );
        assert!(ips(&s).is_empty());
        assert_eq!(s[0].not_ready_addresses.len(), 1);
        // A change of readiness alone is a change the controller sees.
        assert_ne!(
            PodView::of(&pods[0]),
            PodView::of(&with_ready("a", "10.0.1.2", "False"))
        );
    }

    #[test]
    fn decide_creates_updates_deletes_or_leaves() {
        let key = ObjectRef::new("default", "web");
        let s = svc(&[("app", "web")]);
        let pods = [pod("a", "web", "Running", "10.0.1.9")];
        let Some(Action::Create(e)) = decide(&key, Some(&s), None, &pods) else {
            panic!("expected create")
        };
        assert_eq!(e.meta().name, "web");
        assert_eq!(e.labels().get("tier").map(String::as_str), Some("front"));
        assert_eq!(ips(&e.subsets), ["10.0.1.9"]);
        assert_eq!(decide(&key, Some(&s), Some(&e), &pods), None, "unchanged");
        let Some(Action::Update(u)) = decide(&key, Some(&s), Some(&e), &[]) else {
            panic!("expected update")
        };
        assert!(u.subsets.is_empty());
        assert_eq!(decide(&key, None, Some(&e), &pods), Some(Action::Delete));
        assert_eq!(decide(&key, None, None, &pods), None);
        assert_eq!(
            decide(&key, Some(&svc(&[])), Some(&e), &[]),
            None,
            "no selector: user-managed"
        );
    }

    #[test]
    fn users_may_not_write_the_endpoints_of_a_selector_service() {
        let mut objects = Objects::default();
        let key = ObjectRef::new("default", "web");
        assert!(check_user_write(&objects, &key).is_ok(), "no service");
        objects.insert(Object::Service(svc(&[])));
        assert!(check_user_write(&objects, &key).is_ok(), "no selector");
        objects.insert(Object::Service(svc(&[("app", "web")])));
        let e = check_user_write(&objects, &key).unwrap_err();
        assert!(
            matches!(&e, ApiError::FailedPrecondition(m) if m.contains("has a selector")),
            "{e:?}"
        );
        assert!(check_user_write(&objects, &ObjectRef::new("other", "web")).is_ok());
    }

    fn labelled(name: &str, labels: &[(&str, &str)], ip: &str) -> Arc<Object> {
        let mut p = pod(name, "x", "Running", ip);
        p.meta_mut().labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(Object::Pod(p))
    }

    fn service(name: &str, selector: &[(&str, &str)]) -> Arc<Object> {
        let mut s = svc(selector);
        s.meta_mut().name = name.into();
        Arc::new(Object::Service(s))
    }

    fn put(ix: &mut Index, o: Arc<Object>) -> Vec<ObjectRef> {
        let (kind, key) = (o.kind(), o.key());
        ix.apply(kind, &key, Some(o))
    }

    fn names<'a>(it: impl Iterator<Item = &'a Pod>) -> Vec<String> {
        let mut v: Vec<String> = it.map(|p| p.name().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn pods_by_label_follow_label_changes_and_deletes() {
        let mut ix = Index::default();
        put(
            &mut ix,
            labelled("a", &[("app", "web"), ("tier", "front")], "10.0.1.2"),
        );
        put(
            &mut ix,
            labelled("b", &[("app", "web"), ("tier", "back")], "10.0.1.3"),
        );
        put(&mut ix, labelled("c", &[("app", "db")], "10.0.1.4"));
        let sel = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let web = sel(&[("app", "web")]);
        assert_eq!(names(ix.selected_pods("default", &web)), ["a", "b"]);
        let front = sel(&[("app", "web"), ("tier", "front")]);
        assert_eq!(names(ix.selected_pods("default", &front)), ["a"]);
        assert!(
            names(ix.selected_pods("other", &web)).is_empty(),
            "per namespace"
        );
        assert!(names(ix.selected_pods("default", &sel(&[("app", "x")]))).is_empty());
        // A label change moves the pod between entries; nothing is left behind.
        put(&mut ix, labelled("a", &[("app", "db")], "10.0.1.2"));
        assert_eq!(names(ix.selected_pods("default", &web)), ["b"]);
        assert_eq!(
            names(ix.selected_pods("default", &sel(&[("app", "db")]))),
            ["a", "c"]
        );
        assert!(!ix.ns["default"]
            .pods_by_label
            .contains_key(&("tier".into(), "front".into())));
        ix.apply(Kind::Pod, &ObjectRef::new("default", "b"), None);
        assert!(names(ix.selected_pods("default", &web)).is_empty());
        for name in ["a", "c"] {
            ix.apply(Kind::Pod, &ObjectRef::new("default", name), None);
        }
        assert!(ix.ns.is_empty(), "an empty namespace is dropped");
    }

    #[test]
    fn services_by_selector_find_exactly_the_matching_services() {
        let mut ix = Index::default();
        let key = |n: &str| ObjectRef::new("default", n);
        assert_eq!(
            put(&mut ix, service("web", &[("app", "web")])),
            [key("web")]
        );
        put(
            &mut ix,
            service("front", &[("app", "web"), ("tier", "front")]),
        );
        put(&mut ix, service("db", &[("app", "db")]));
        put(&mut ix, service("manual", &[]));
        let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(ix.selecting("default", &labels(&[("app", "web")])), ["web"]);
        assert_eq!(
            ix.selecting(
                "default",
                &labels(&[("app", "web"), ("tier", "front"), ("x", "y")])
            ),
            ["front", "web"]
        );
        assert!(ix
            .selecting("default", &labels(&[("tier", "front")]))
            .is_empty());
        assert!(ix.selecting("other", &labels(&[("app", "web")])).is_empty());
        // A pod that appears (ready) marks the Services that select it, and only those.
        let d = put(
            &mut ix,
            labelled("p", &[("app", "web"), ("tier", "front")], "10.0.1.2"),
        );
        assert_eq!(d, [key("front"), key("web")]);
        // Same view again: nothing.
        assert!(put(
            &mut ix,
            labelled("p", &[("app", "web"), ("tier", "front")], "10.0.1.2")
        )
        .is_empty());
        // Moving labels marks the Services before and after.
        let d = put(&mut ix, labelled("p", &[("app", "db")], "10.0.1.2"));
        assert_eq!(d, [key("db"), key("front"), key("web")]);
        // A selector change re-indexes the Service.
        put(&mut ix, service("db", &[("app", "cache")]));
        assert!(ix
            .selecting("default", &labels(&[("app", "db")]))
            .is_empty());
        assert_eq!(
            ix.selecting("default", &labels(&[("app", "cache")])),
            ["db"]
        );
        ix.apply(Kind::Service, &key("web"), None);
        assert!(ix
            .selecting("default", &labels(&[("app", "web")]))
            .is_empty());
        assert_eq!(ix.selector_services(), [key("db"), key("front")]);
    }

    #[test]
    fn the_index_decides_from_the_selected_pods_and_the_cached_endpoints() {
        let mut ix = Index::default();
        let key = ObjectRef::new("default", "web");
        put(&mut ix, service("web", &[("app", "web")]));
        put(&mut ix, labelled("a", &[("app", "web")], "10.0.1.2"));
        put(&mut ix, labelled("b", &[("app", "db")], "10.0.1.3"));
        let Some(Action::Create(e)) = ix.decide(&key) else {
            panic!("expected create")
        };
        assert_eq!(ips(&e.subsets), ["10.0.1.2"]);
        // Once its Endpoints are seen, nothing to do until a selected pod changes.
        let mut e = e;
        e.meta_mut().resource_version = 7;
        assert!(put(&mut ix, Arc::new(Object::Endpoints(e.clone()))).is_empty());
        assert_eq!(ix.decide(&key), None);
        put(&mut ix, labelled("c", &[("app", "web")], "10.0.1.1"));
        let Some(Action::Update(u)) = ix.decide(&key) else {
            panic!("expected update")
        };
        assert_eq!(ips(&u.subsets), ["10.0.1.1", "10.0.1.2"]);
        // Its Endpoints deleted by someone: the Service is marked (they are made again).
        assert_eq!(
            ix.apply(Kind::Endpoints, &key, None),
            std::slice::from_ref(&key)
        );
        // Service gone, Endpoints there: delete.
        put(&mut ix, Arc::new(Object::Endpoints(e)));
        ix.apply(Kind::Service, &key, None);
        assert_eq!(ix.decide(&key), Some(Action::Delete));
    }

    #[test]
    fn dirty_keeps_each_service_once_in_order() {
        let mut d = Dirty::default();
        for n in ["b", "a", "b", "c", "a"] {
            d.add(ObjectRef::new("default", n));
        }
        assert_eq!(d.len(), 3);
        let order: Vec<String> = std::iter::from_fn(|| d.pop()).map(|k| k.name).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert!(d.is_empty());
    }
}
