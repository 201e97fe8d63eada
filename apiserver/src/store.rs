//! The store: one writer task owns every mutation; a committer task makes its batches durable.
//!
//! Requests reach the writer as closures over a [`Txn`]. The writer drains everything
//! queued (group commit), runs each closure against its private in-memory [`State`]
//! (consecutive revisions), lets the registered [`Hook`]s (the controllers) react in the
//! same batch and builds ONE sled batch (objects, change-log entries, the revision
//! counter, log trimming). The committer applies it, awaits ONE flush + fdatasync, then
//! publishes: the committed read view (`Store::shared`, used by Get/List) and the watch
//! hub (the [`window::Window`] of recent changes, bounded by count and by bytes, plus a
//! broadcast per kind), and finally acknowledges the requests, in order. The writer applies the requests of batch N+1 as
//! they arrive while batch N is being flushed, and ships them as one batch when the
//! committer is idle.
//!
//! The store knows nothing of what the hooks do: it tells each one of every change
//! ([`Hook::observe`], also for every stored object at start, so hooks rebuild their own
//! indexes), asks them before a Create is written ([`Hook::admit`]), and lets them write
//! at the end of every batch ([`Hook::reconcile`]) and on [`Txn::tick`].
//!
//! sled layout (one tree, so a batch is atomic): `o/<kind>/<ns>/<name>` → object,
//! `l/<rev u64 BE>` → [`changelog::LogEntry`], `m/rev` → current revision. An object
//! larger than 64 KiB encoded is in a value file of the data directory instead, named
//! by its revision, and sled holds a pointer (see [`values`]): its sled pages stay
//! small, and its disk space goes as soon as no live object or retained change-log
//! record refers to it.
//!
//! Memory and disk follow live data: every live object once (shared by the writer's
//! state and the read view), plus the watch window, whose entries are the encoded
//! change-log records (so it holds exactly the bytes it counts). The change log on disk
//! holds the same entries: what the window evicts is deleted with the next batch, and a
//! start loads the window from the newest record backwards, deleting anything older.
//!
//! A failed commit (full disk, I/O error) fails its requests and the ones applied after
//! it (RESOURCE_EXHAUSTED "data directory … is full" / UNAVAILABLE); the writer goes
//! back to the committed state (fresh hooks rebuilt from it, as at start), and the
//! committer opens sled again at the next write (sled poisons itself after an I/O
//! error), first undoing whatever of the failed batches reached it. Reads are served
//! from memory throughout.

mod changelog;
mod disk;
pub mod index;
mod values;
pub mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kube_lite_core::time::now_ms;
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::EventType;
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::ApiError;
use crate::resource::{Kind, Object};

/// Most requests committed in one batch.
const MAX_BATCH: usize = 4096;

/// One change: the object as written (for DELETED: its last state, carrying the
/// delete's revision) and the previous state (for filtered watches).
#[derive(Debug, Clone)]
pub struct Event {
    pub rev: u64,
    pub kind: Kind,
    pub typ: EventType,
    pub obj: Arc<Object>,
    pub prev: Option<Arc<Object>>,
}

impl Event {
    /// The change as hooks see it.
    pub fn change(&self) -> Change<'_> {
        Change {
            kind: self.kind,
            prev: self.prev.as_deref(),
            new: (self.typ != EventType::Deleted).then_some(&*self.obj),
        }
    }
}

pub use changelog::LogEntry;
pub use window::RingEntry;

impl RingEntry {
    /// The change this entry records.
    pub fn event(&self) -> Result<Event, String> {
        changelog::decode(self.rev, &self.data)
    }
}

/// Every object, one sorted map per kind, and the secondary indexes ([`index`]).
#[derive(Default, Clone)]
pub struct Objects(
    [BTreeMap<ObjectRef, Arc<Object>>; Kind::COUNT],
    index::PodsByNode,
);

impl Objects {
    pub fn of(&self, kind: Kind) -> &BTreeMap<ObjectRef, Arc<Object>> {
        &self.0[kind.idx()]
    }
    fn of_mut(&mut self, kind: Kind) -> &mut BTreeMap<ObjectRef, Arc<Object>> {
        &mut self.0[kind.idx()]
    }
    /// Stores `obj` (indexes included); returns what it replaced.
    fn set(&mut self, obj: Arc<Object>) -> Option<Arc<Object>> {
        let kind = obj.kind();
        let prev = self.of_mut(kind).insert(obj.key(), obj.clone());
        if kind == Kind::Pod {
            self.1.update(prev.as_deref(), Some(&obj));
        }
        prev
    }
    /// Removes an object (indexes included).
    fn unset(&mut self, kind: Kind, key: &ObjectRef) -> Option<Arc<Object>> {
        let prev = self.of_mut(kind).remove(key)?;
        if kind == Kind::Pod {
            self.1.update(Some(&prev), None);
        }
        Some(prev)
    }
    /// The pods bound to `node`, in key order (an index: costs those pods only).
    pub fn pods_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<Object>> + 'a {
        let pods = self.of(Kind::Pod);
        self.1.on(node).filter_map(move |k| pods.get(k))
    }
    /// The pods-by-node index.
    pub fn pods_by_node(&self) -> &index::PodsByNode {
        &self.1
    }
    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<&Arc<Object>> {
        self.of(kind).get(key)
    }
    /// The objects of `kind` in namespace `ns`, in name order.
    pub fn in_namespace<'a>(
        &'a self,
        kind: Kind,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a ObjectRef, &'a Arc<Object>)> + 'a {
        self.of(kind)
            .range(ObjectRef::new(ns, "")..)
            .take_while(move |(k, _)| k.namespace == ns)
    }
    /// Adds `obj` (building fixtures for hook unit tests; the store writes through [`Txn`]).
    pub fn insert(&mut self, obj: Object) {
        self.set(Arc::new(obj));
    }
    /// Adds or replaces a shared object (the controller manager's cache).
    pub fn insert_arc(&mut self, obj: Arc<Object>) -> Option<Arc<Object>> {
        self.set(obj)
    }
    /// Removes an object (the controller manager's cache).
    pub fn remove(&mut self, kind: Kind, key: &ObjectRef) -> Option<Arc<Object>> {
        self.unset(kind, key)
    }
}

/// Objects and the revision: the writer's private, authoritative copy (ahead of disk
/// while a batch commits) and the committed read view.
#[derive(Default)]
pub struct State {
    pub objects: Objects,
    pub rev: u64,
}

/// One change as a [`Hook`] sees it: `prev` is `None` for a create (and for every
/// object at start), `new` is `None` for a delete.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub kind: Kind,
    pub prev: Option<&'a Object>,
    pub new: Option<&'a Object>,
}

/// Something that reacts to writes inside the writer (the controllers). Every method is
/// called in the writer task, inside a batch; writes a hook makes join that batch.
pub trait Hook: Send {
    /// Keeps the hook's own indexes in step with one change; `objects` already holds
    /// it. A hook sees its own writes once its [`Hook::reconcile`] / [`Hook::tick`]
    /// returns.
    fn observe(&mut self, objects: &Objects, change: &Change<'_>) {
        let _ = (objects, change);
    }
    /// Before a Create is written: fills server-allocated fields, or refuses the object.
    fn admit(&mut self, objects: &Objects, obj: &mut Object) -> Result<(), ApiError> {
        let _ = (objects, obj);
        Ok(())
    }
    /// At the end of every batch (in registration order).
    fn reconcile(&mut self, txn: &mut Txn<'_>) {
        let _ = txn;
    }
    /// Periodic work ([`Txn::tick`]).
    fn tick(&mut self, txn: &mut Txn<'_>) {
        let _ = txn;
    }
}

/// The registered hooks; a slot is empty while its hook runs.
pub struct Hooks(Vec<Option<Box<dyn Hook>>>);

impl Hooks {
    pub fn new(hooks: Vec<Box<dyn Hook>>) -> Hooks {
        Hooks(hooks.into_iter().map(Some).collect())
    }
    /// `hooks` with their indexes built from `objects` (every object as a create).
    fn rebuilt(hooks: Vec<Box<dyn Hook>>, objects: &Objects) -> Hooks {
        let mut hooks = Hooks::new(hooks);
        for kind in Kind::ALL {
            for o in objects.of(kind).values() {
                let change = Change {
                    kind,
                    prev: None,
                    new: Some(o),
                };
                hooks.observe(objects, &change);
            }
        }
        hooks
    }
    fn observe(&mut self, objects: &Objects, change: &Change<'_>) {
        for h in self.0.iter_mut().flatten() {
            h.observe(objects, change);
        }
    }
}

/// A batch in progress: closures read and write through it.
pub struct Txn<'a> {
    st: &'a mut State,
    hooks: &'a mut Hooks,
    pub now_ms: i64,
    changes: Vec<Event>,
    max_object_bytes: usize,
}

impl<'a> Txn<'a> {
    /// Refuses an object larger than the store's limit (encoded), naming it and the
    /// limit (RESOURCE_EXHAUSTED, as a request over gRPC's limit).
    pub fn check_size(&self, obj: &Object) -> Result<(), ApiError> {
        check_size(obj, self.max_object_bytes)
    }

    pub fn objects(&self) -> &Objects {
        &self.st.objects
    }

    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<&Arc<Object>> {
        self.st.objects.get(kind, key)
    }

    /// Writes `obj` (create or replace) with the next revision.
    pub fn put(&mut self, mut obj: Object) -> Arc<Object> {
        self.st.rev += 1;
        let rev = self.st.rev;
        obj.meta_mut().resource_version = rev;
        let kind = obj.kind();
        let obj = Arc::new(obj);
        let prev = self.st.objects.set(obj.clone());
        let typ = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rev,
            kind,
            typ,
            obj: obj.clone(),
            prev,
        });
        obj
    }

    /// Removes an object; the DELETED event carries its last state with this revision.
    pub fn remove(&mut self, kind: Kind, key: &ObjectRef) -> Option<Arc<Object>> {
        let prev = self.st.objects.unset(kind, key)?;
        self.st.rev += 1;
        let rev = self.st.rev;
        let mut last = (*prev).clone();
        last.meta_mut().resource_version = rev;
        let last = Arc::new(last);
        self.record(Event {
            rev,
            kind,
            typ: EventType::Deleted,
            obj: last.clone(),
            prev: Some(prev),
        });
        Some(last)
    }

    fn record(&mut self, ev: Event) {
        self.hooks.observe(&self.st.objects, &ev.change());
        self.changes.push(ev);
    }

    /// Asks every hook about an object before it is created ([`Hook::admit`]).
    pub fn admit(&mut self, obj: &mut Object) -> Result<(), ApiError> {
        for h in self.hooks.0.iter_mut().flatten() {
            h.admit(&self.st.objects, obj)?;
        }
        Ok(())
    }

    /// Runs every hook's periodic work ([`Hook::tick`]).
    pub fn tick(&mut self) {
        self.run_hooks(|h, txn| h.tick(txn));
    }

    fn reconcile(&mut self) {
        self.run_hooks(|h, txn| h.reconcile(txn));
    }

    /// Runs `f` for each hook in turn, with that hook out of its slot (so the others
    /// observe its writes as they happen), then shows it its own writes.
    fn run_hooks(&mut self, f: impl Fn(&mut dyn Hook, &mut Txn<'_>)) {
        for i in 0..self.hooks.0.len() {
            let Some(mut h) = self.hooks.0[i].take() else {
                continue;
            };
            let start = self.changes.len();
            f(&mut *h, self);
            for ev in &self.changes[start..] {
                h.observe(&self.st.objects, &ev.change());
            }
            self.hooks.0[i] = Some(h);
        }
    }
}

/// The size rule of [`Txn::check_size`].
pub fn check_size(obj: &Object, limit: usize) -> Result<(), ApiError> {
    let len = obj.encoded_len();
    if len > limit {
        return Err(ApiError::Exhausted(format!(
            "Request entity too large: {} is {len} bytes encoded, limit is {limit}",
            obj.describe()
        )));
    }
    Ok(())
}

/// Watch hub: recent changes and live subscribers.
pub struct Hub {
    pub window: window::Window,
    pub senders: Vec<broadcast::Sender<Arc<Event>>>,
    /// Pod changes by node name (the node the pod is bound to before or after the
    /// change), for node-filtered pod watches: an agent's watch is woken by its own
    /// node's pods only (as kube-apiserver's watch cache dispatches by
    /// spec.nodeName). An entry goes when its last receiver has.
    pub node_senders: std::collections::HashMap<String, broadcast::Sender<Arc<Event>>>,
    pub rev: u64,
}

/// Capacity of one node's pod channel ([`Hub::node_senders`]): one node's changes
/// published at once beyond this end its watcher (relist).
pub const NODE_CHANNEL_CAPACITY: usize = 512;

/// The node names a pod change concerns (before and after), at most two.
fn event_nodes(ev: &Event) -> impl Iterator<Item = &str> {
    let now = index::pod_node(&ev.obj);
    let before = ev.prev.as_deref().and_then(index::pod_node);
    now.into_iter().chain(before.filter(|b| Some(*b) != now))
}

/// A new watcher's backlog (retained changes of its kind after its start, encoded), live
/// receiver and start revision.
pub type Subscription = (Vec<Arc<RingEntry>>, broadcast::Receiver<Arc<Event>>, u64);

pub type TxnResult = Result<Option<Arc<Object>>, ApiError>;
type TxnFn = Box<dyn FnOnce(&mut Txn<'_>) -> TxnResult + Send>;
/// Makes the hooks (at start, and again after a failed commit: they are rebuilt
/// from the committed objects).
pub type HookFactory = Box<dyn Fn() -> Vec<Box<dyn Hook>> + Send + Sync>;

enum Msg {
    Write(TxnFn, oneshot::Sender<TxnResult>),
    Stop(oneshot::Sender<()>),
}

pub struct Store {
    pub cfg: Config,
    tx: mpsc::Sender<Msg>,
    /// What Get/List read: only committed (durable) state.
    pub shared: RwLock<State>,
    pub hub: Mutex<Hub>,
    /// Highest revision published to watchers.
    pub published: AtomicU64,
    /// Flips to true on shutdown: watch streams end.
    pub closing: watch::Sender<bool>,
}

fn obj_key(kind: Kind, key: &ObjectRef) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.namespace.len() + key.name.len());
    k.extend_from_slice(b"o/");
    k.push(b'0' + kind as u8);
    k.push(b'/');
    k.extend_from_slice(key.namespace.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key.name.as_bytes());
    k
}

fn log_key(rev: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(b"l/");
    k[2..].copy_from_slice(&rev.to_be_bytes());
    k
}

fn log_rev(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(2..10)?.try_into().ok()?))
}

const REV_KEY: &[u8] = b"m/rev";

/// Loads the window from the change log, newest record first, as far as it fits;
/// deletes the older records (a log written before the byte bound, or by a larger
/// window). Blocking.
/// Returns the revisions of the value files the retained records refer to.
fn load_window(
    db: &sled::Db,
    vals: &values::Values,
    rev: u64,
    w: &mut window::Window,
) -> anyhow::Result<BTreeSet<u64>> {
    use anyhow::Context;
    let mut newest_first = Vec::new();
    let mut files = BTreeSet::new();
    let (mut bytes, mut cut) = (0usize, None);
    for item in db.range(log_key(0)..=log_key(rev)).rev() {
        let (k, v) = item?;
        let r = log_rev(&k).context("bad change log key")?;
        let rec = LogEntry::decode(v.as_ref()).context("decoding change log")?;
        let kind = Kind::from_u32(rec.kind).context("bad kind in change log")?;
        let data = if rec.obj_file {
            match vals.read(r, rec.obj_len) {
                Ok(obj) => {
                    files.insert(r);
                    sled::IVec::from(rec.with_obj(obj))
                }
                // Its record was being deleted with the window's oldest (the file
                // goes first once the deletion is durable): the window starts after it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    files.remove(&r);
                    cut = Some(r);
                    break;
                }
                Err(e) => return Err(e).with_context(|| format!("reading change log record {r}")),
            }
        } else {
            // A copy: `v` may be a slice of one of sled's buffers.
            sled::IVec::from(&v[..])
        };
        let e = RingEntry {
            rev: r,
            kind,
            data,
            at: Instant::now(),
        };
        if !w.fits(newest_first.len(), bytes, e.cost()) {
            files.remove(&r);
            cut = Some(r);
            break;
        }
        bytes += e.cost();
        newest_first.push(e);
    }
    for e in newest_first.into_iter().rev() {
        w.push(Arc::new(e));
    }
    if let Some(cut) = cut {
        // Records are consecutive revisions: delete by key, without reading them.
        let first = match db.range(log_key(0)..=log_key(cut)).next() {
            Some(item) => log_rev(&item?.0).unwrap_or(cut),
            None => cut,
        };
        let mut batch = sled::Batch::default();
        for r in first..=cut {
            batch.remove(&log_key(r)[..]);
        }
        db.apply_batch(batch)?;
        db.flush()?;
        tracing::info!(
            from = first,
            to = cut,
            "deleted change log records older than the watch window"
        );
    }
    Ok(files)
}

impl Store {
    /// Opens (or creates) the store in `cfg.data_dir` with the hooks `hooks` makes
    /// registered (they run in this order) and starts the writer task.
    pub async fn open(
        cfg: Config,
        hooks: HookFactory,
    ) -> anyhow::Result<(Arc<Store>, tokio::task::JoinHandle<()>)> {
        use anyhow::Context;
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        let started = Instant::now();
        let (dir, cache, reserve) = (
            cfg.data_dir.clone(),
            cfg.store_cache_bytes,
            cfg.disk_reserve_bytes,
        );
        let disk =
            tokio::task::spawn_blocking(move || disk::Disk::open(&dir, cache, reserve)).await??;
        let db = disk.db.clone();
        let vals = values::Values::open(&cfg.data_dir)
            .with_context(|| format!("creating {}/{}", cfg.data_dir.display(), values::DIR))?;

        // Load objects, revision, and the window of the change log.
        let mut st = State::default();
        let mut live = BTreeSet::new();
        for item in db.scan_prefix(b"o/") {
            let (k, v) = item?;
            let kind = Kind::from_u32((k[2] - b'0') as u32).context("bad object key")?;
            let obj = match values::parse(&v).map_err(anyhow::Error::msg)? {
                values::Stored::Inline(b) => Object::decode(kind, b),
                values::Stored::File { rev, len } => {
                    let b = vals.read(rev, len).with_context(|| {
                        format!("reading stored object {}", String::from_utf8_lossy(&k))
                    })?;
                    live.insert(rev);
                    Object::decode(kind, &b)
                }
            }
            .context("decoding stored object")?;
            let obj = Arc::new(obj);
            st.objects.set(obj);
        }
        if let Some(v) = db.get(REV_KEY)? {
            let b: [u8; 8] = v.as_ref().try_into().context("bad revision record")?;
            st.rev = u64::from_be_bytes(b);
        } else {
            // A new store starts at revision 1, not 0: a List always returns a revision a
            // Watch can resume from, because Watch(0) means "from now" and a client that
            // listed an empty store at 0 would miss what was written before its Watch.
            st.rev = 1;
            db.insert(REV_KEY, &1u64.to_be_bytes())?;
            db.flush_async().await?;
        }
        let mut window = window::Window::new(
            cfg.watch_window.min(usize::MAX as u64) as usize,
            cfg.watch_window_bytes.min(usize::MAX as u64) as usize,
        )
        .with_max_age(cfg.watch_window_duration);
        let rev = st.rev;
        let (db2, vals2) = (db.clone(), vals.clone());
        let (window, logged) = tokio::task::spawn_blocking(move || {
            load_window(&db2, &vals2, rev, &mut window).map(|f| (window, f))
        })
        .await??;
        drop(db);
        // Every value file still referred to; the rest are leftovers of a crash.
        let files: BTreeSet<u64> = live.union(&logged).copied().collect();
        let removed = vals.retain(&files).context("cleaning the value files")?;
        if removed > 0 {
            tracing::info!(removed, "deleted unreferenced value files");
        }
        let log_floor = if cfg.watch_window > 0 {
            window.oldest().unwrap_or(st.rev + 1)
        } else {
            u64::MAX
        };
        let vstate = ValueFiles {
            vals,
            files,
            live,
            log_floor,
            orphans: Vec::new(),
        };
        // The hooks rebuild their indexes from the objects.
        let hooks_now = Hooks::rebuilt(hooks(), &st.objects);
        tracing::info!(
            revision = st.rev,
            nodes = st.objects.of(Kind::Node).len(),
            pods = st.objects.of(Kind::Pod).len(),
            services = st.objects.of(Kind::Service).len(),
            endpoints = st.objects.of(Kind::Endpoints).len(),
            window = window.len(),
            window_bytes = window.bytes(),
            value_files = vstate.files.len(),
            ms = started.elapsed().as_millis() as u64,
            "store loaded"
        );

        let bcap = cfg.watch_buffer.max(16 * 1024);
        let shared = State {
            objects: st.objects.clone(),
            rev: st.rev,
        };
        let hub = Hub {
            window,
            senders: Kind::ALL
                .iter()
                .map(|_| broadcast::channel(bcap).0)
                .collect(),
            node_senders: Default::default(),
            rev: st.rev,
        };
        let (tx, rx) = mpsc::channel(16 * 1024);
        let store = Arc::new(Store {
            published: AtomicU64::new(st.rev),
            cfg,
            tx,
            shared: RwLock::new(shared),
            hub: Mutex::new(hub),
            closing: watch::channel(false).0,
        });
        store.update_window_metrics(&store.hub.lock().expect("lock").window);
        let writer = tokio::spawn(writer_loop(
            store.clone(),
            st,
            hooks,
            hooks_now,
            disk,
            vstate,
            rx,
        ));
        Ok((store, writer))
    }

    /// Runs `f` in the writer; resolves once its batch is durable.
    pub async fn write<F>(&self, f: F) -> TxnResult
    where
        F: FnOnce(&mut Txn<'_>) -> TxnResult + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write(Box::new(f), tx))
            .await
            .map_err(|_| ApiError::Unavailable("apiserver is shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("apiserver is shutting down".into()))?
    }

    /// Like [`Store::write`] but for closures that must return an object.
    pub async fn write_obj<F>(&self, f: F) -> Result<Arc<Object>, ApiError>
    where
        F: FnOnce(&mut Txn<'_>) -> TxnResult + Send + 'static,
    {
        self.write(f)
            .await?
            .ok_or_else(|| ApiError::Internal("write returned no object".into()))
    }

    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Asks the writer to commit what is queued and exit; waits for it.
    pub async fn stop_writer(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<Arc<Object>> {
        self.shared
            .read()
            .expect("lock")
            .objects
            .get(kind, key)
            .cloned()
    }

    fn update_window_metrics(&self, w: &window::Window) {
        let m = &self.cfg.metrics;
        m.window_events.store(w.len() as u64, Ordering::Relaxed);
        m.window_bytes.store(w.bytes() as u64, Ordering::Relaxed);
        m.window_oldest
            .store(w.oldest().unwrap_or(0), Ordering::Relaxed);
    }

    /// Makes a committed batch visible; returns the revisions the window evicted
    /// (their change-log records go with the next batch).
    fn publish(&self, changes: Vec<Event>, entries: Vec<RingEntry>) -> Vec<u64> {
        let Some(last) = changes.last().map(|e| e.rev) else {
            return Vec::new();
        };
        {
            let mut sh = self.shared.write().expect("lock");
            for ev in &changes {
                if ev.typ == EventType::Deleted {
                    sh.objects.unset(ev.kind, &ev.obj.key());
                } else {
                    sh.objects.set(ev.obj.clone());
                }
            }
            sh.rev = last;
        }
        let mut hub = self.hub.lock().expect("lock");
        let mut evicted = Vec::new();
        for e in entries {
            evicted.extend(hub.window.push(Arc::new(e)));
        }
        let Hub {
            senders,
            node_senders,
            ..
        } = &mut *hub;
        for ev in changes {
            let ev = Arc::new(ev);
            if ev.kind == Kind::Pod && !node_senders.is_empty() {
                for node in event_nodes(&ev) {
                    if let Some(tx) = node_senders.get(node) {
                        if tx.send(ev.clone()).is_err() {
                            node_senders.remove(node); // nobody listens any more
                        }
                    }
                }
            }
            let _ = senders[ev.kind.idx()].send(ev);
        }
        hub.rev = last;
        self.published.store(last, Ordering::Release);
        self.update_window_metrics(&hub.window);
        evicted
    }

    /// Registers a watcher of `kind` from revision `from` (0 = now): returns the
    /// retained changes after the start revision, a live receiver (no gap: both taken
    /// under the hub lock) and the start revision.
    pub fn subscribe(&self, kind: Kind, from: u64) -> Result<Subscription, ApiError> {
        self.subscribe_to(kind, from, None)
    }

    /// [`Store::subscribe`] for a watch of the pods bound to `node`: the live receiver
    /// gets only changes of pods on that node (before or after the change).
    pub fn subscribe_node(&self, from: u64, node: &str) -> Result<Subscription, ApiError> {
        self.subscribe_to(Kind::Pod, from, Some(node))
    }

    fn subscribe_to(
        &self,
        kind: Kind,
        from: u64,
        node: Option<&str>,
    ) -> Result<Subscription, ApiError> {
        // A revision the committed view has not reached is one this server never
        // issued (a client of a restored or other server): refuse it clearly instead
        // of waiting silently for it. (The committed view is updated before the hub,
        // so a revision a List just returned is never "future" here.)
        let committed = self.shared.read().expect("lock").rev;
        if from > committed {
            return Err(ApiError::Gone(format!(
                "too large resource version: {from} (current: {committed}); relist"
            )));
        }
        let mut hub = self.hub.lock().expect("lock");
        let rx = match node {
            Some(node) => hub
                .node_senders
                .entry(node.to_string())
                .or_insert_with(|| broadcast::channel(NODE_CHANNEL_CAPACITY).0)
                .subscribe(),
            None => hub.senders[kind.idx()].subscribe(),
        };
        if from == 0 {
            return Ok((Vec::new(), rx, hub.rev));
        }
        let oldest = hub.window.oldest().unwrap_or(hub.rev.saturating_add(1));
        if from.saturating_add(1) < oldest {
            return Err(ApiError::Gone(format!(
                "too old resource version: {from} (oldest: {}); relist",
                oldest.saturating_sub(1)
            )));
        }
        Ok((hub.window.since(kind, from), rx, from))
    }

    /// Oldest revision a watch may resume from.
    pub fn oldest_resumable(&self) -> u64 {
        let hub = self.hub.lock().expect("lock");
        hub.window
            .oldest()
            .map(|r| r.saturating_sub(1))
            .unwrap_or(hub.rev)
    }
}

/// One batch on its way to disk: the sled batch, the events to publish once it is
/// durable (and their change-log records, for the window), and the replies to send
/// after that (in order, also for failed or no-op requests, whose answers may depend
/// on earlier batches).
struct Pending {
    batch: sled::Batch,
    changes: Vec<Event>,
    entries: Vec<RingEntry>,
    /// Value files the batch refers to, written before it.
    files: Vec<(u64, sled::IVec)>,
    replies: Vec<(oneshot::Sender<TxnResult>, TxnResult)>,
}

/// The committer's account of the value files (see [`values`]).
struct ValueFiles {
    vals: values::Values,
    /// Every value file known to exist.
    files: BTreeSet<u64>,
    /// Those a committed live object points at (its revision).
    live: BTreeSet<u64>,
    /// Every change-log record below this revision is durably deleted (`u64::MAX`
    /// without a change log).
    log_floor: u64,
    /// Files of failed batches: deleted once the undo is durable, unless written again.
    orphans: Vec<u64>,
}

impl ValueFiles {
    /// After a durable commit of `changes` (with `files`) that also deleted the
    /// change-log records `log_deleted`: the files nothing refers to any more.
    fn committed(
        &mut self,
        changes: &[Event],
        files: &[(u64, sled::IVec)],
        log_deleted: &[u64],
    ) -> Vec<u64> {
        let written: BTreeSet<u64> = files.iter().map(|(r, _)| *r).collect();
        for ev in changes {
            if let Some(p) = &ev.prev {
                self.live.remove(&p.meta().resource_version);
            }
            if ev.typ != EventType::Deleted && written.contains(&ev.rev) {
                self.live.insert(ev.rev);
            }
        }
        self.files.extend(written.iter().copied());
        if let Some(&m) = log_deleted.iter().max() {
            self.log_floor = self.log_floor.max(m.saturating_add(1));
        }
        let mut gone = values::unreferenced(&self.files, &self.live, self.log_floor);
        for r in std::mem::take(&mut self.orphans) {
            if !self.files.contains(&r) {
                gone.push(r);
            }
        }
        for r in &gone {
            self.files.remove(r);
        }
        gone
    }
}

/// How a batch ended: `Err` = not durable, its requests failed with this error; the
/// writer must go back to the committed state.
type Outcome = Result<(), ApiError>;

/// Applies requests to the in-memory state as they arrive and hands the accumulated
/// batch to the committer whenever it is idle. So while batch N is being flushed, the
/// requests of batch N+1 are already validated and applied (their answers wait until
/// both are on disk), and a batch is as large as one flush allows. When batch N fails,
/// batch N+1 (built on it) fails too and the writer starts again from the committed
/// state.
async fn writer_loop(
    store: Arc<Store>,
    mut st: State,
    make_hooks: HookFactory,
    mut hooks: Hooks,
    disk: disk::Disk,
    vfiles: ValueFiles,
    mut rx: mpsc::Receiver<Msg>,
) {
    let log = store.cfg.watch_window > 0;
    let max_object_bytes = store.cfg.max_object_bytes;
    let (ctx, crx) = mpsc::channel::<Pending>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(1);
    let committer = Committer {
        store: store.clone(),
        disk: Some(disk),
        broken: None,
        undo: BTreeSet::new(),
        undo_to: 0,
        log_deletes: Vec::new(),
        vfiles,
        reserve_ok: true,
        last_reserve_try: Instant::now()
            .checked_sub(RESERVE_EVERY)
            .unwrap_or_else(Instant::now),
    };
    let committer = tokio::spawn(committer.run(crx, done_tx));
    let mut stop: Option<oneshot::Sender<()>> = None;
    let mut closed = false;
    let mut busy = false;
    let mut changes: Vec<Event> = Vec::new();
    let mut replies: Vec<(oneshot::Sender<TxnResult>, TxnResult)> = Vec::new();
    loop {
        if !busy && !replies.is_empty() {
            let mut txn = Txn {
                st: &mut st,
                hooks: &mut hooks,
                now_ms: now_ms(),
                changes: std::mem::take(&mut changes),
                max_object_bytes,
            };
            txn.reconcile();
            let batch_changes = std::mem::take(&mut txn.changes);
            let (batch, entries, files) = build_batch(&batch_changes, log);
            let pending = Pending {
                batch,
                changes: batch_changes,
                entries,
                files,
                replies: std::mem::take(&mut replies),
            };
            if ctx.send(pending).await.is_err() {
                break; // committer gone
            }
            busy = true;
        }
        let accepting = stop.is_none() && !closed && replies.len() < MAX_BATCH;
        if !accepting && !busy && replies.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            d = done_rx.recv(), if busy => {
                busy = false;
                match d {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        // Everything applied since the committed state is void.
                        for (r, _) in replies.drain(..) {
                            let _ = r.send(Err(e.clone()));
                        }
                        changes.clear();
                        let sh = store.shared.read().expect("lock");
                        st = State { objects: sh.objects.clone(), rev: sh.rev };
                        drop(sh);
                        hooks = Hooks::rebuilt(make_hooks(), &st.objects);
                        tracing::info!(revision = st.rev, "writer back at the committed state");
                    }
                }
            }
            m = rx.recv(), if accepting => {
                let mut txn = Txn {
                    st: &mut st,
                    hooks: &mut hooks,
                    now_ms: now_ms(),
                    changes: std::mem::take(&mut changes),
                    max_object_bytes,
                };
                let mut next = m;
                loop {
                    match next {
                        Some(Msg::Write(f, r)) => {
                            let before = txn.changes.len();
                            let res = f(&mut txn);
                            debug_assert!(res.is_ok() || txn.changes.len() == before, "failed op wrote");
                            replies.push((r, res));
                        }
                        Some(Msg::Stop(s)) => {
                            stop = Some(s);
                            break;
                        }
                        None => {
                            closed = true;
                            break;
                        }
                    }
                    if replies.len() >= MAX_BATCH {
                        break;
                    }
                    next = match rx.try_recv() {
                        Ok(m) => Some(m),
                        Err(_) => break,
                    };
                }
                changes = std::mem::take(&mut txn.changes);
            }
        }
    }
    drop(ctx);
    let _ = committer.await;
    if let Some(s) = stop {
        let _ = s.send(());
    }
}

/// Least time between two attempts to open sled again after a failure, and between
/// two attempts to write the disk reserve again.
const REOPEN_EVERY: Duration = Duration::from_millis(200);
const RESERVE_EVERY: Duration = Duration::from_secs(5);

/// Makes batches durable and publishes them; after a failure, opens sled again.
struct Committer {
    store: Arc<Store>,
    /// `None` after a failed commit, until it opens again.
    disk: Option<disk::Disk>,
    /// The last failure and when the store last tried to open again.
    broken: Option<(ApiError, Instant)>,
    /// Objects written by batches that failed: their committed state is written again
    /// before the next batch (a failed batch may have reached sled in part), with the
    /// revision record, and their change-log records up to `undo_to` are deleted.
    undo: BTreeSet<(Kind, ObjectRef)>,
    undo_to: u64,
    /// Change-log records the window evicted, deleted with the next batch.
    log_deletes: Vec<u64>,
    vfiles: ValueFiles,
    reserve_ok: bool,
    last_reserve_try: Instant,
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, done: mpsc::Sender<Outcome>) {
        while let Some(p) = rx.recv().await {
            let outcome = if p.changes.is_empty() {
                for (r, res) in p.replies {
                    let _ = r.send(res);
                }
                Ok(())
            } else {
                self.commit(p).await
            };
            let _ = done.send(outcome).await;
        }
        if let Some(d) = &self.disk {
            if let Err(e) = d.db.flush_async().await {
                tracing::error!(error = %e, "final flush failed");
            }
        }
    }

    async fn commit(&mut self, p: Pending) -> Outcome {
        let result = match self.ensure_open().await {
            Ok(()) => self.write_files(&p.files).await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) => {
                let mut batches = Vec::new();
                if !self.undo.is_empty() {
                    batches.push(self.undo_batch());
                }
                let mut batch = p.batch;
                for &r in &self.log_deletes {
                    batch.remove(&log_key(r)[..]);
                }
                batches.push(batch);
                let disk = self.disk.as_ref().expect("open");
                disk.commit(batches)
                    .await
                    .map_err(|e| disk::write_error(&self.store.cfg.data_dir, &e))
            }
            Err(e) => Err(e),
        };
        let metrics = &self.store.cfg.metrics;
        match result {
            Ok(()) => {
                self.undo.clear();
                self.undo_to = 0;
                let log_deleted = std::mem::take(&mut self.log_deletes);
                metrics.write_blocked.store(false, Ordering::Relaxed);
                let gone = self.vfiles.committed(&p.changes, &p.files, &log_deleted);
                let evicted = self.store.publish(p.changes, p.entries);
                self.log_deletes = evicted;
                if !gone.is_empty() {
                    let vals = self.vfiles.vals.clone();
                    let _ = tokio::task::spawn_blocking(move || vals.remove(&gone)).await;
                }
                for (r, res) in p.replies {
                    let _ = r.send(res);
                }
                self.keep_reserve().await;
                Ok(())
            }
            Err(e) => {
                if self.disk.take().is_some() {
                    // It may have reached sled in part: undone when sled is open again.
                    tracing::error!(error = %e, "store commit failed; refusing writes until the store can write again");
                    metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                    for ev in &p.changes {
                        self.undo.insert((ev.kind, ev.obj.key()));
                        self.undo_to = self.undo_to.max(ev.rev);
                    }
                    self.vfiles.orphans.extend(p.files.iter().map(|(r, _)| *r));
                    self.broken = Some((e.clone(), Instant::now()));
                }
                metrics.write_blocked.store(true, Ordering::Relaxed);
                for (r, _) in p.replies {
                    let _ = r.send(Err(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Writes a batch's value files durably (before the batch that refers to them).
    async fn write_files(&self, files: &[(u64, sled::IVec)]) -> Result<(), ApiError> {
        if files.is_empty() {
            return Ok(());
        }
        let (vals, files) = (self.vfiles.vals.clone(), files.to_vec());
        tokio::task::spawn_blocking(move || vals.write_all(&files))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| disk::write_error(&self.store.cfg.data_dir, &sled::Error::Io(e)))
    }

    /// Opens sled again after a failure (at most every [`REOPEN_EVERY`]).
    async fn ensure_open(&mut self) -> Result<(), ApiError> {
        if self.disk.is_some() {
            return Ok(());
        }
        if let Some((e, at)) = &self.broken {
            if at.elapsed() < REOPEN_EVERY {
                return Err(e.clone());
            }
        }
        let cfg = &self.store.cfg;
        if !disk::room_to_open(&cfg.data_dir) {
            let e = self
                .broken
                .as_ref()
                .map(|(e, _)| e.clone())
                .unwrap_or_else(|| {
                    disk::write_error(
                        &cfg.data_dir,
                        &sled::Error::Io(std::io::Error::from_raw_os_error(28)),
                    )
                });
            self.broken = Some((e.clone(), Instant::now()));
            return Err(e);
        }
        let (dir, cache) = (cfg.data_dir.clone(), cfg.store_cache_bytes);
        // The reserve stays (it is for a restart on a full disk); written again later if
        // it is missing.
        let opened = tokio::task::spawn_blocking(move || disk::Disk::open(&dir, cache, 0))
            .await
            .map_err(|e| sled::Error::Io(std::io::Error::other(e)))
            .and_then(|r| r);
        match opened {
            Ok(d) => {
                tracing::info!("store open again");
                self.disk = Some(d);
                self.reserve_ok = false;
                Ok(())
            }
            Err(e) => {
                let e = disk::write_error(&cfg.data_dir, &e);
                tracing::debug!(error = %e, "store still cannot open");
                self.broken = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    /// Writes the committed state of every object a failed batch touched, the
    /// revision record, and deletes the failed batches' change-log records.
    fn undo_batch(&self) -> sled::Batch {
        let mut b = sled::Batch::default();
        let sh = self.store.shared.read().expect("lock");
        for (kind, key) in &self.undo {
            match sh.objects.get(*kind, key) {
                // A large object's file is live, so it is still there (unless the
                // object was stored inline before value files existed).
                Some(o) => {
                    let rev = o.meta().resource_version;
                    let v = if self.vfiles.live.contains(&rev) {
                        object_value(rev, o.encode())
                    } else {
                        o.encode()
                    };
                    b.insert(obj_key(*kind, key), v)
                }
                None => b.remove(obj_key(*kind, key)),
            }
        }
        for r in sh.rev + 1..=self.undo_to {
            b.remove(&log_key(r)[..]);
        }
        b.insert(REV_KEY, &sh.rev.to_be_bytes()[..]);
        b
    }

    /// After the store opened again: writes the disk reserve back once there is room.
    async fn keep_reserve(&mut self) {
        if self.reserve_ok || self.last_reserve_try.elapsed() < RESERVE_EVERY {
            return;
        }
        self.last_reserve_try = Instant::now();
        let path = self.store.cfg.data_dir.join(disk::RESERVE_FILE);
        let bytes = self.store.cfg.disk_reserve_bytes;
        self.reserve_ok = tokio::task::spawn_blocking(move || disk::ensure_reserve(&path, bytes))
            .await
            .unwrap_or(false);
    }
}

/// What sled holds for an object of revision `rev` encoded as `bytes`: the bytes, or
/// (large) a pointer to its value file.
fn object_value(rev: u64, bytes: Vec<u8>) -> Vec<u8> {
    if values::is_large(bytes.len()) {
        values::pointer(rev, bytes.len())
    } else {
        bytes
    }
}

/// The sled batch of `changes` (objects, revision record, change-log records when
/// `log`), the change-log records for the window (sharing the bytes), and the value
/// files of the large objects (one per revision, shared by the object and its record).
fn build_batch(
    changes: &[Event],
    log: bool,
) -> (sled::Batch, Vec<RingEntry>, Vec<(u64, sled::IVec)>) {
    let mut batch = sled::Batch::default();
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let Some(last) = changes.last().map(|e| e.rev) else {
        return (batch, entries, files);
    };
    let now = Instant::now();
    for ev in changes {
        let key = obj_key(ev.kind, &ev.obj.key());
        let bytes = ev.obj.encode();
        let len = bytes.len();
        let large = values::is_large(len);
        let deleted = ev.typ == EventType::Deleted;
        if log {
            let data = sled::IVec::from(changelog::encode(ev, bytes.clone()));
            if large {
                batch.insert(&log_key(ev.rev)[..], changelog::encode_file(ev, len));
            } else {
                batch.insert(&log_key(ev.rev)[..], data.clone());
            }
            entries.push(RingEntry {
                rev: ev.rev,
                kind: ev.kind,
                data,
                at: now,
            });
        }
        if large && (log || !deleted) {
            files.push((ev.rev, sled::IVec::from(&bytes[..])));
        }
        if deleted {
            batch.remove(key);
        } else {
            batch.insert(key, object_value(ev.rev, bytes));
        }
    }
    batch.insert(REV_KEY, &last.to_be_bytes()[..]);
    (batch, entries, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Endpoints, ObjectMeta};

    #[test]
    fn objects_over_the_limit_are_refused_by_name() {
        let mut e = Endpoints {
            metadata: Some(ObjectMeta {
                name: "big".into(),
                namespace: "default".into(),
                annotations: [("a".to_string(), "x".repeat(2000))].into(),
                ..Default::default()
            }),
            subsets: vec![],
        };
        let o = Object::Endpoints(e.clone());
        assert!(check_size(&o, 4096).is_ok());
        let err = check_size(&o, 1000).unwrap_err();
        assert_eq!(
            err,
            ApiError::Exhausted(format!(
                "Request entity too large: endpoints \"default/big\" is {} bytes encoded, limit is 1000",
                o.encoded_len()
            ))
        );
        e.metadata.as_mut().unwrap().annotations.clear();
        assert!(check_size(&Object::Endpoints(e), 1000).is_ok());
    }

    fn bound(name: &str, node: &str) -> Object {
        let mut p = kube_lite_proto::v1::Pod {
            spec: Some(kube_lite_proto::v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        kube_lite_core::Resource::meta_mut(&mut p).name = name.into();
        kube_lite_core::Resource::meta_mut(&mut p).namespace = "default".into();
        Object::Pod(p)
    }

    #[test]
    fn pod_events_concern_their_nodes_before_and_after() {
        let ev = |obj: Object, prev: Option<Object>| Event {
            rev: 1,
            kind: Kind::Pod,
            typ: EventType::Modified,
            obj: Arc::new(obj),
            prev: prev.map(Arc::new),
        };
        let nodes = |e: &Event| event_nodes(e).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(nodes(&ev(bound("p", "n1"), None)), ["n1"]);
        assert_eq!(nodes(&ev(bound("p", "n1"), Some(bound("p", "n1")))), ["n1"]);
        assert_eq!(nodes(&ev(bound("p", ""), Some(bound("p", "n1")))), ["n1"]);
        assert_eq!(
            nodes(&ev(bound("p", "n2"), Some(bound("p", "n1")))),
            ["n2", "n1"]
        );
        assert!(nodes(&ev(bound("p", ""), None)).is_empty());
    }

    #[tokio::test]
    async fn node_watch_receivers_get_only_their_nodes_pods() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            disk_reserve_bytes: 0,
            ..Default::default()
        };
        let (store, writer) = Store::open(cfg, Box::new(Vec::new)).await.unwrap();
        let (_, mut n1, _) = store.subscribe_node(0, "n1").unwrap();
        let (_, mut all, _) = store.subscribe(Kind::Pod, 0).unwrap();
        {
            let (_, _gone, _) = store.subscribe_node(0, "n9").unwrap();
        }
        for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1"), ("d", "n9")] {
            let o = bound(name, node);
            store.write(move |txn| Ok(Some(txn.put(o)))).await.unwrap();
        }
        let mut got = Vec::new();
        while let Ok(ev) = n1.try_recv() {
            got.push(ev.obj.meta().name.clone());
        }
        assert_eq!(got, ["a", "c"], "only n1's pods wake n1's watcher");
        let mut every = 0;
        while all.try_recv().is_ok() {
            every += 1;
        }
        assert_eq!(every, 4);
        let (has_n1, has_n9) = {
            let hub = store.hub.lock().unwrap();
            let n = &hub.node_senders;
            (n.contains_key("n1"), n.contains_key("n9"))
        };
        assert!(has_n1);
        assert!(
            !has_n9,
            "a channel without receivers is dropped at its next event"
        );
        store.stop_writer().await;
        writer.await.unwrap();
    }

    #[test]
    fn log_keys_round_trip() {
        for r in [0, 1, 255, 256, u64::MAX] {
            assert_eq!(log_rev(&log_key(r)), Some(r));
        }
        assert!(log_key(255) < log_key(256), "keys sort by revision");
        assert_eq!(log_rev(b"l/"), None);
    }
}
