//! The asynchronous controllers (what kube-controller-manager runs): garbage
//! collection, namespace deletion, ReplicaSets, Deployments, and the event recorder.
//! Unlike the store hooks they do not run inside the writer: one task keeps its own
//! cache of every object by List + Watch of the committed state (the store's read view
//! and its watch hub, resuming from the listed revision and relisting when it falls
//! behind), turns changes into work items, reconciles one item at a time, and writes
//! through [`Store::write`] like any client. So a controller never slows down a write,
//! and a change costs work only for the objects it concerns (owner and selector
//! indexes; no scans over other Deployments).
//!
//! Read-your-writes: the store publishes a batch to watchers before it acknowledges
//! it, so once a write returns, the manager drains its watch streams before the next
//! item and sees its own writes (no double creates).
//!
//! The decisions are pure functions in [`super::replicaset`], [`super::deployment`],
//! [`super::gc`] and [`super::events`], unit-tested without a store.

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::EventType;
use tokio_stream::wrappers::BroadcastStream;

use super::{deployment, events, gc, replicaset};
use crate::error::ApiError;
use crate::ops;
use crate::resource::{Kind, Object};
use crate::store::{Event, Objects, Store};
use crate::validation;

/// A change as applied to the cache: (previous, current) state of the object.
pub type Applied = (Option<Arc<Object>>, Option<Arc<Object>>);

/// The manager's view of the cluster: every object, plus owner indexes.
#[derive(Default)]
pub struct Cache {
    pub objects: Objects,
    /// owner uid → its dependents (kind, key).
    pub dependents: HashMap<String, BTreeSet<(Kind, ObjectRef)>>,
    /// uid → (kind, key) of every object.
    pub uids: HashMap<String, (Kind, ObjectRef)>,
}

impl Cache {
    /// Builds the cache from a snapshot.
    pub fn from_objects(objects: &Objects) -> Cache {
        let mut c = Cache::default();
        for kind in Kind::ALL {
            for o in objects.of(kind).values() {
                c.put(o.clone());
            }
        }
        c
    }

    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<&Arc<Object>> {
        self.objects.get(kind, key)
    }

    /// The live object with this uid.
    pub fn by_uid(&self, uid: &str) -> Option<&Arc<Object>> {
        let (k, key) = self.uids.get(uid)?;
        self.objects.get(*k, key).filter(|o| o.meta().uid == uid)
    }

    fn index(&mut self, o: &Object, add: bool) {
        let kind = o.kind();
        let key = o.key();
        let m = o.meta();
        for r in &m.owner_references {
            if add {
                self.dependents
                    .entry(r.uid.clone())
                    .or_default()
                    .insert((kind, key.clone()));
            } else if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(&(kind, key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
        if add {
            self.uids.insert(m.uid.clone(), (kind, key));
        } else if self
            .uids
            .get(&m.uid)
            .is_some_and(|(k, kk)| *k == kind && *kk == key)
        {
            self.uids.remove(&m.uid);
        }
    }

    fn put(&mut self, o: Arc<Object>) -> Option<Arc<Object>> {
        let prev = self.objects.insert_arc(o.clone());
        if let Some(p) = &prev {
            self.index(p, false);
        }
        self.index(&o, true);
        prev
    }

    fn remove(&mut self, kind: Kind, key: &ObjectRef) -> Option<Arc<Object>> {
        let prev = self.objects.remove(kind, key)?;
        self.index(&prev, false);
        Some(prev)
    }

    /// Applies one change unless the cache already has a newer state of the object
    /// (the snapshot may be ahead of the stream). Returns (previous, current).
    pub fn apply(&mut self, ev: &Event) -> Option<Applied> {
        let key = ev.obj.key();
        let cur_rv = self
            .objects
            .get(ev.kind, &key)
            .map(|o| o.meta().resource_version);
        if cur_rv.is_some_and(|rv| rv >= ev.rev) {
            return None;
        }
        if ev.typ == EventType::Deleted {
            let prev = self.remove(ev.kind, &key);
            prev.as_ref()?;
            Some((prev, None))
        } else {
            let prev = self.put(ev.obj.clone());
            Some((prev, Some(ev.obj.clone())))
        }
    }

    /// The dependents of the object with `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<Arc<Object>> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|(k, key)| self.objects.get(*k, key).cloned())
            .collect()
    }
}

/// A unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// Is this dependent's owner gone? (background garbage collection)
    Dependent(Kind, ObjectRef),
    /// An owner being deleted with the foregroundDeletion or orphan finalizer.
    Owner(Kind, ObjectRef),
    /// A Terminating namespace: delete its content, then finalize it.
    Namespace(String),
    ReplicaSet(ObjectRef),
    Deployment(ObjectRef),
    /// Delete expired Events.
    EventTtl,
}

/// A write the controllers ask for.
#[derive(Debug, Clone)]
pub enum Action {
    Create(Object),
    /// Update with the object's resource_version as precondition.
    Update(Object),
    UpdateStatus(Object),
    /// kind, key, uid precondition (the object must still be this one), policy.
    Delete(Kind, ObjectRef, String, &'static str),
    /// Removes a namespace whose content is gone.
    FinalizeNamespace(String),
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::Create(o) => format!("create {}", o.describe()),
            Action::Update(o) | Action::UpdateStatus(o) => format!("update {}", o.describe()),
            Action::Delete(k, key, _, _) => {
                format!("delete {}", crate::resource::describe(*k, key))
            }
            Action::FinalizeNamespace(n) => format!("finalize namespace {n}"),
        }
    }
}

/// What a reconcile decided: writes, events, and whether to look again later.
#[derive(Debug, Default)]
pub struct Outcome {
    pub actions: Vec<Action>,
    pub events: Vec<events::Record>,
    pub requeue_after: Option<Duration>,
}

/// Runs every action in ONE store write (one batch); returns the errors (each action
/// checks before it writes, so a failed one writes nothing).
pub async fn execute(store: &Store, actions: Vec<Action>) -> Vec<(String, ApiError)> {
    if actions.is_empty() {
        return Vec::new();
    }
    let errors = Arc::new(Mutex::new(Vec::new()));
    let errs = errors.clone();
    let r = store
        .write(move |txn| {
            for a in actions {
                let what = a.describe();
                let res = match a {
                    Action::Create(mut o) => {
                        validation::prepare_create(&mut o).and_then(|()| ops::create(txn, o))
                    }
                    Action::Update(o) => ops::update(txn, o, false),
                    Action::UpdateStatus(o) => ops::update(txn, o, true),
                    Action::Delete(kind, key, uid, policy) => {
                        match txn.get(kind, &key) {
                            Some(cur) if uid.is_empty() || cur.meta().uid == uid => {
                                ops::delete(txn, kind, key, 0, -1, policy)
                            }
                            _ => Ok(None), // already gone (or another object now)
                        }
                    }
                    Action::FinalizeNamespace(name) => gc::finalize_namespace(txn, &name),
                };
                if let Err(e) = res {
                    errs.lock().expect("lock").push((what, e));
                }
            }
            Ok(None)
        })
        .await;
    let mut out = std::mem::take(&mut *errors.lock().expect("lock"));
    if let Err(e) = r {
        out.push(("batch".into(), e));
    }
    out
}

/// Starts the manager; it ends when the store shuts down (or the handle is aborted).
pub fn start(store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut m = Manager::new(store);
        m.run().await;
    })
}

type Streams = SelectAll<BroadcastStream<Arc<Event>>>;

struct Manager {
    store: Arc<Store>,
    cache: Cache,
    queue: BTreeSet<Item>,
    order: std::collections::VecDeque<Item>,
    delayed: BinaryHeap<std::cmp::Reverse<(Instant, Item)>>,
    recorder: events::Recorder,
    last_ttl: Instant,
}

/// Most queue items handled before the streams are drained again.
const ITEMS_PER_ROUND: usize = 64;
/// Events are written at least this often (batched).
const EVENT_FLUSH: Duration = Duration::from_millis(250);
const TTL_SWEEP: Duration = Duration::from_secs(60);

impl Manager {
    fn new(store: Arc<Store>) -> Manager {
        Manager {
            recorder: events::Recorder::new(store.cfg.event_ttl),
            store,
            cache: Cache::default(),
            queue: BTreeSet::new(),
            order: Default::default(),
            delayed: BinaryHeap::new(),
            last_ttl: Instant::now(),
        }
    }

    fn enqueue(&mut self, item: Item) {
        if self.queue.insert(item.clone()) {
            self.order.push_back(item);
        }
    }

    fn enqueue_after(&mut self, item: Item, after: Duration) {
        self.delayed
            .push(std::cmp::Reverse((Instant::now() + after, item)));
    }

    /// List: the committed objects and revision; then Watch every kind from there.
    async fn list_and_watch(&mut self) -> Result<Streams, ApiError> {
        let (objects, rev) = {
            let sh = self.store.shared.read().expect("lock");
            (sh.objects.clone(), sh.rev)
        };
        // The cache and the first look at every object, off the runtime's workers: at
        // 150,000 pods they take seconds, which would hold up the first requests after
        // a restart.
        let (cache, items) = tokio::task::spawn_blocking(move || {
            let cache = Cache::from_objects(&objects);
            let mut items = Vec::new();
            for kind in Kind::ALL {
                for o in cache.objects.of(kind).values() {
                    items.extend(items_for_object(&cache, o));
                }
            }
            (cache, items)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("controller manager list: {e}")))?;
        self.cache = cache;
        let mut streams = SelectAll::new();
        let mut backlog = Vec::new();
        for kind in Kind::ALL {
            let (entries, rx, _) = self.store.subscribe(kind, rev)?;
            for e in entries {
                if let Ok(ev) = e.event() {
                    backlog.push(ev);
                }
            }
            streams.push(BroadcastStream::new(rx));
        }
        // Everything is looked at once after a (re)list.
        for i in items {
            self.enqueue(i);
        }
        for ev in backlog {
            self.handle(&ev);
        }
        tracing::info!(revision = rev, "controller manager listed");
        Ok(streams)
    }

    async fn run(&mut self) {
        let mut closing = self.store.closing.subscribe();
        'relist: loop {
            if *closing.borrow() {
                return;
            }
            let mut streams = match self.list_and_watch().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "controller manager: watch failed; relisting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut flush = tokio::time::interval(EVENT_FLUSH);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // 1. Everything already published.
                let mut n = 0;
                while let Some(next) = streams.next().now_or_never() {
                    match next {
                        Some(Ok(ev)) => self.handle(&ev),
                        Some(Err(_lagged)) => {
                            tracing::info!("controller manager fell behind the watch; relisting");
                            continue 'relist;
                        }
                        None => return,
                    }
                    n += 1;
                    if n >= 100_000 {
                        break;
                    }
                }
                // 2. Due delayed items.
                let now = Instant::now();
                while let Some(std::cmp::Reverse((at, _))) = self.delayed.peek() {
                    if *at > now {
                        break;
                    }
                    let std::cmp::Reverse((_, item)) = self.delayed.pop().expect("peeked");
                    self.enqueue(item);
                }
                if self.last_ttl.elapsed() >= TTL_SWEEP {
                    self.last_ttl = Instant::now();
                    self.enqueue(Item::EventTtl);
                }
                // 3. Some work.
                if !self.order.is_empty() {
                    for _ in 0..ITEMS_PER_ROUND {
                        let Some(item) = self.order.pop_front() else {
                            break;
                        };
                        self.queue.remove(&item);
                        self.reconcile(item).await;
                    }
                    if self.recorder.pending() >= events::FLUSH_AT {
                        self.flush_events().await;
                    }
                    continue;
                }
                // 4. Idle: wait for a change, a delayed item or the flush tick.
                let wake = self
                    .delayed
                    .peek()
                    .map(|std::cmp::Reverse((at, _))| *at)
                    .unwrap_or_else(|| Instant::now() + TTL_SWEEP);
                tokio::select! {
                    next = streams.next() => match next {
                        Some(Ok(ev)) => self.handle(&ev),
                        Some(Err(_)) => continue 'relist,
                        None => return,
                    },
                    _ = tokio::time::sleep_until(wake.into()) => {}
                    _ = flush.tick() => self.flush_events().await,
                    _ = closing.changed() => {
                        self.flush_events().await;
                        return;
                    }
                }
            }
        }
    }

    async fn flush_events(&mut self) {
        let batch = self.recorder.take_batch();
        if batch.is_empty() {
            return;
        }
        let now = kube_lite_core::time::now_ms();
        let r = self
            .store
            .write(move |txn| {
                events::write_batch(txn, batch, now);
                Ok(None)
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "writing events failed");
        }
    }

    /// One change: update the cache, derive events, enqueue the items it concerns.
    fn handle(&mut self, ev: &Event) {
        let Some((prev, cur)) = self.cache.apply(ev) else {
            return;
        };
        if ev.kind == Kind::Pod {
            for r in events::pod_events(prev.as_deref(), cur.as_deref()) {
                self.recorder.record(r);
            }
        }
        let mut items = Vec::new();
        for o in prev.iter().chain(cur.iter()) {
            items.extend(items_for_object(&self.cache, o));
        }
        // A deleted object: its dependents may be garbage now; its owners may be
        // waiting for it (foreground), its namespace too.
        if cur.is_none() {
            if let Some(p) = &prev {
                for d in self.cache.dependents_of(&p.meta().uid) {
                    items.push(Item::Dependent(d.kind(), d.key()));
                }
            }
        }
        for i in items {
            self.enqueue(i);
        }
    }

    async fn reconcile(&mut self, item: Item) {
        let now = kube_lite_core::time::now_ms();
        let outcome = match &item {
            Item::Dependent(k, key) => gc::dependent(&self.cache, *k, key),
            Item::Owner(k, key) => gc::owner(&self.cache, *k, key),
            Item::Namespace(n) => gc::namespace(&self.cache, n),
            Item::ReplicaSet(key) => replicaset::reconcile(&self.cache, key, now),
            Item::Deployment(key) => deployment::reconcile(&self.cache, key, now),
            Item::EventTtl => events::expired(&self.cache, now, self.recorder.ttl()),
        };
        for e in outcome.events {
            self.recorder.record(e);
        }
        let span = tracing::debug_span!("reconcile", item = ?item);
        let _g = span.enter();
        let errors = execute(&self.store, outcome.actions).await;
        let mut retry = false;
        for (what, e) in errors {
            match e {
                // Someone else changed it first, or it is gone: the next change brings
                // the item back (and a retry covers a lost race).
                ApiError::Conflict(_) | ApiError::NotFound(_) | ApiError::AlreadyExists(_) => {
                    tracing::debug!(%what, error = %e, "controller write lost a race; retrying");
                    retry = true;
                }
                ApiError::Unavailable(_) => return,
                e => {
                    tracing::warn!(%what, error = %e, "controller write failed");
                    retry = true;
                }
            }
        }
        if retry {
            self.enqueue_after(item.clone(), Duration::from_millis(100));
        }
        if let Some(after) = outcome.requeue_after {
            self.enqueue_after(item, after);
        }
    }
}

/// The work items a (changed) object concerns.
pub fn items_for_object(cache: &Cache, o: &Object) -> Vec<Item> {
    let mut items = Vec::new();
    let m = o.meta();
    let kind = o.kind();
    if !m.owner_references.is_empty() {
        items.push(Item::Dependent(kind, o.key()));
    }
    if m.deletion_timestamp != 0 && gc::has_gc_finalizer(m) {
        items.push(Item::Owner(kind, o.key()));
    }
    for r in &m.owner_references {
        if let Some(owner) = cache.by_uid(&r.uid) {
            if owner.meta().deletion_timestamp != 0 {
                items.push(Item::Owner(owner.kind(), owner.key()));
            }
            if r.controller {
                match owner.kind() {
                    Kind::ReplicaSet => {
                        items.push(Item::ReplicaSet(owner.key()));
                        // A pod change can matter to the Deployment itself (Recreate
                        // waits until the old pods are gone).
                        if kind == Kind::Pod {
                            if let Some(d) = replicaset::controller_of(owner.meta())
                                .and_then(|dr| cache.by_uid(&dr.uid))
                                .filter(|d| d.kind() == Kind::Deployment)
                            {
                                items.push(Item::Deployment(d.key()));
                            }
                        }
                    }
                    Kind::Deployment => items.push(Item::Deployment(owner.key())),
                    _ => {}
                }
            }
        }
    }
    if kind.namespaced() {
        let ns = ObjectRef::new("", m.namespace.clone());
        if cache
            .get(Kind::Namespace, &ns)
            .is_some_and(|n| n.meta().deletion_timestamp != 0)
        {
            items.push(Item::Namespace(m.namespace.clone()));
        }
    }
    match o {
        Object::Namespace(_) if m.deletion_timestamp != 0 => {
            items.push(Item::Namespace(m.name.clone()));
        }
        Object::ReplicaSet(_) => items.push(Item::ReplicaSet(o.key())),
        Object::Deployment(_) => items.push(Item::Deployment(o.key())),
        Object::Pod(p) if replicaset::controller_of(m).is_none() => {
            // An orphan: a ReplicaSet whose selector matches may adopt it.
            items.extend(
                replicaset::selecting(cache, &m.namespace, &m.labels)
                    .into_iter()
                    .map(Item::ReplicaSet),
            );
            let _ = p;
        }
        _ => {}
    }
    let mut seen = HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
    items
}
