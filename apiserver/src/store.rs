//! The store: one writer task owns every mutation; a committer task makes its batches durable.
//!
//! Requests reach the writer as closures over a [`Txn`]. The writer drains everything
//! queued (group commit), runs each closure against its private in-memory [`State`]
//! (consecutive revisions), lets the registered [`Hook`]s (the controllers) react in the
//! same batch and builds ONE sled batch (objects, change-log entries, the revision
//! counter, log trimming). The committer applies it, awaits ONE flush + fdatasync, then
//! publishes: the committed read view (`Store::shared`, used by Get/List) and the watch
//! hub (ring of the last `watch_window` changes plus a broadcast per kind), and finally
//! acknowledges the requests, in order. The writer applies the requests of batch N+1 as
//! they arrive while batch N is being flushed, and ships them as one batch when the
//! committer is idle.
//!
//! The store knows nothing of what the hooks do: it tells each one of every change
//! ([`Hook::observe`], also for every stored object at start, so hooks rebuild their own
//! indexes), asks them before a Create is written ([`Hook::admit`]), and lets them write
//! at the end of every batch ([`Hook::reconcile`]) and on [`Txn::tick`].
//!
//! sled layout (one tree, so a batch is atomic): `o/<kind>/<ns>/<name>` → object,
//! `l/<rev u64 BE>` → [`LogEntry`], `m/rev` → current revision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// A change-log record in sled.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogEntry {
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(int32, tag = "2")]
    pub typ: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub obj: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub prev: Option<Vec<u8>>,
}

/// Every object, one sorted map per kind.
#[derive(Default, Clone)]
pub struct Objects([BTreeMap<ObjectRef, Arc<Object>>; 4]);

impl Objects {
    pub fn of(&self, kind: Kind) -> &BTreeMap<ObjectRef, Arc<Object>> {
        &self.0[kind.idx()]
    }
    fn of_mut(&mut self, kind: Kind) -> &mut BTreeMap<ObjectRef, Arc<Object>> {
        &mut self.0[kind.idx()]
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
        self.of_mut(obj.kind()).insert(obj.key(), Arc::new(obj));
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
}

impl<'a> Txn<'a> {
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
        let prev = self.st.objects.of_mut(kind).insert(obj.key(), obj.clone());
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
        let prev = self.st.objects.of_mut(kind).remove(key)?;
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

/// Watch hub: recent changes and live subscribers.
pub struct Hub {
    pub ring: VecDeque<Arc<Event>>,
    pub senders: Vec<broadcast::Sender<Arc<Event>>>,
    pub rev: u64,
}

/// A new watcher's backlog (retained events after its start), live receiver and start revision.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64);

pub type TxnResult = Result<Option<Arc<Object>>, ApiError>;
type TxnFn = Box<dyn FnOnce(&mut Txn<'_>) -> TxnResult + Send>;

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

const REV_KEY: &[u8] = b"m/rev";

impl Store {
    /// Opens (or creates) the store in `cfg.data_dir` with `hooks` registered (they
    /// run in this order) and starts the writer task.
    pub async fn open(
        cfg: Config,
        hooks: Vec<Box<dyn Hook>>,
    ) -> anyhow::Result<(Arc<Store>, tokio::task::JoinHandle<()>)> {
        use anyhow::Context;
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        let dir = cfg.data_dir.join("sled");
        let sled_dir = dir.clone();
        let db = tokio::task::spawn_blocking(move || {
            sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(None)
                .open()
        })
        .await??;
        // sled 0.34 makes its log stable with sync_file_range, which neither flushes the
        // device's write cache nor is a durability guarantee; every commit therefore also
        // fdatasyncs sled's data file (one call per batch, as etcd does for its WAL).
        let data_file = Arc::new(
            std::fs::File::open(sled_dir.join("db"))
                .with_context(|| format!("opening {}", sled_dir.join("db").display()))?,
        );

        // Load objects, revision, and the retained change log.
        let mut st = State::default();
        for item in db.scan_prefix(b"o/") {
            let (k, v) = item?;
            let kind = Kind::from_u32((k[2] - b'0') as u32).context("bad object key")?;
            let obj = Object::decode(kind, &v).context("decoding stored object")?;
            let obj = Arc::new(obj);
            st.objects.of_mut(kind).insert(obj.key(), obj.clone());
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
        let mut ring = VecDeque::new();
        let first = st.rev.saturating_sub(cfg.watch_window) + 1;
        for item in db.range(log_key(first)..=log_key(st.rev)) {
            let (k, v) = item?;
            let rev = u64::from_be_bytes(k[2..10].try_into().context("bad log key")?);
            let e = LogEntry::decode(v.as_ref()).context("decoding change log")?;
            let kind = Kind::from_u32(e.kind).context("bad kind in log")?;
            let typ = EventType::try_from(e.typ).unwrap_or(EventType::Modified);
            let obj = Arc::new(Object::decode(kind, &e.obj)?);
            let prev = match e.prev {
                Some(p) => Some(Arc::new(Object::decode(kind, &p)?)),
                None => None,
            };
            ring.push_back(Arc::new(Event {
                rev,
                kind,
                typ,
                obj,
                prev,
            }));
        }
        // The hooks rebuild their indexes from the objects.
        let mut hooks = Hooks::new(hooks);
        for kind in Kind::ALL {
            for o in st.objects.of(kind).values() {
                let change = Change {
                    kind,
                    prev: None,
                    new: Some(o),
                };
                hooks.observe(&st.objects, &change);
            }
        }
        tracing::info!(
            revision = st.rev,
            nodes = st.objects.of(Kind::Node).len(),
            pods = st.objects.of(Kind::Pod).len(),
            services = st.objects.of(Kind::Service).len(),
            endpoints = st.objects.of(Kind::Endpoints).len(),
            log = ring.len(),
            "store loaded"
        );

        let bcap = cfg.watch_buffer.max(16 * 1024);
        let shared = State {
            objects: st.objects.clone(),
            rev: st.rev,
        };
        let hub = Hub {
            ring,
            senders: Kind::ALL
                .iter()
                .map(|_| broadcast::channel(bcap).0)
                .collect(),
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
        let writer = tokio::spawn(writer_loop(store.clone(), st, hooks, db, data_file, rx));
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

    fn publish(&self, changes: Vec<Event>) {
        let Some(last) = changes.last().map(|e| e.rev) else {
            return;
        };
        {
            let mut sh = self.shared.write().expect("lock");
            for ev in &changes {
                let map = sh.objects.of_mut(ev.kind);
                if ev.typ == EventType::Deleted {
                    map.remove(&ev.obj.key());
                } else {
                    map.insert(ev.obj.key(), ev.obj.clone());
                }
            }
            sh.rev = last;
        }
        let mut hub = self.hub.lock().expect("lock");
        let window = self.cfg.watch_window as usize;
        for ev in changes {
            let ev = Arc::new(ev);
            if window > 0 {
                hub.ring.push_back(ev.clone());
                while hub.ring.len() > window {
                    hub.ring.pop_front();
                }
            }
            let _ = hub.senders[ev.kind.idx()].send(ev);
        }
        hub.rev = last;
        self.published.store(last, Ordering::Release);
    }

    /// Registers a watcher of `kind` from revision `from` (0 = now): returns the
    /// retained events after the start revision, a live receiver (no gap: both taken
    /// under the hub lock) and the start revision.
    pub fn subscribe(&self, kind: Kind, from: u64) -> Result<Subscription, ApiError> {
        let hub = self.hub.lock().expect("lock");
        let rx = hub.senders[kind.idx()].subscribe();
        if from == 0 {
            return Ok((Vec::new(), rx, hub.rev));
        }
        let oldest = hub.ring.front().map(|e| e.rev).unwrap_or(hub.rev + 1);
        if from + 1 < oldest {
            return Err(ApiError::Gone(format!(
                "too old resource version: {from} (oldest: {}); relist",
                oldest.saturating_sub(1)
            )));
        }
        let mut backlog = Vec::new();
        if let Some(front) = hub.ring.front() {
            let start = ((from + 1).saturating_sub(front.rev) as usize).min(hub.ring.len());
            backlog.extend(hub.ring.range(start..).filter(|e| e.kind == kind).cloned());
        }
        Ok((backlog, rx, from))
    }

    /// Oldest revision a watch may resume from.
    pub fn oldest_resumable(&self) -> u64 {
        let hub = self.hub.lock().expect("lock");
        hub.ring
            .front()
            .map(|e| e.rev.saturating_sub(1))
            .unwrap_or(hub.rev)
    }
}

/// One batch on its way to disk: the sled batch, the events to publish once it is
/// durable, and the replies to send after that (in order, also for failed or no-op
/// requests, whose answers may depend on earlier batches).
struct Pending {
    batch: sled::Batch,
    changes: Vec<Event>,
    replies: Vec<(oneshot::Sender<TxnResult>, TxnResult)>,
}

/// Applies requests to the in-memory state as they arrive and hands the accumulated
/// batch to the committer whenever it is idle. So while batch N is being flushed, the
/// requests of batch N+1 are already validated and applied (their answers wait until
/// both are on disk), and a batch is as large as one flush allows.
async fn writer_loop(
    store: Arc<Store>,
    mut st: State,
    mut hooks: Hooks,
    db: sled::Db,
    data_file: Arc<std::fs::File>,
    mut rx: mpsc::Receiver<Msg>,
) {
    let window = store.cfg.watch_window;
    let (ctx, crx) = mpsc::channel::<Pending>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let committer = tokio::spawn(committer_loop(store.clone(), db, data_file, crx, done_tx));
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
            };
            txn.reconcile();
            let batch_changes = std::mem::take(&mut txn.changes);
            let batch = build_batch(&batch_changes, window);
            let pending = Pending {
                batch,
                changes: batch_changes,
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
                if d.is_none() {
                    break;
                }
            }
            m = rx.recv(), if accepting => {
                let mut txn = Txn {
                    st: &mut st,
                    hooks: &mut hooks,
                    now_ms: now_ms(),
                    changes: std::mem::take(&mut changes),
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

async fn committer_loop(
    store: Arc<Store>,
    db: sled::Db,
    data_file: Arc<std::fs::File>,
    mut rx: mpsc::Receiver<Pending>,
    done: mpsc::Sender<()>,
) {
    let mut failed = false;
    while let Some(p) = rx.recv().await {
        if failed {
            for (r, _) in p.replies {
                let _ = r.send(Err(ApiError::Unavailable(
                    "store failed; restart the apiserver".into(),
                )));
            }
            let _ = done.send(()).await;
            continue;
        }
        if !p.changes.is_empty() {
            if let Err(e) = commit(&db, &data_file, p.batch).await {
                tracing::error!(error = %e, "store commit failed; refusing further writes");
                failed = true;
                for (r, _) in p.replies {
                    let _ = r.send(Err(ApiError::Internal(format!("store commit failed: {e}"))));
                }
                let _ = done.send(()).await;
                continue;
            }
            store.publish(p.changes);
        }
        for (r, res) in p.replies {
            let _ = r.send(res);
        }
        let _ = done.send(()).await;
    }
    if let Err(e) = db.flush_async().await {
        tracing::error!(error = %e, "final flush failed");
    }
}

fn build_batch(changes: &[Event], window: u64) -> sled::Batch {
    let mut batch = sled::Batch::default();
    let Some(last) = changes.last().map(|e| e.rev) else {
        return batch;
    };
    for ev in changes {
        let bytes = ev.obj.encode();
        let key = obj_key(ev.kind, &ev.obj.key());
        if window > 0 {
            let entry = LogEntry {
                kind: ev.kind as u32,
                typ: ev.typ as i32,
                obj: bytes.clone(),
                prev: match ev.typ {
                    // Only needed to tell "stopped matching" apart in filtered watches.
                    EventType::Modified => ev.prev.as_ref().map(|p| p.encode()),
                    _ => None,
                },
            };
            batch.insert(&log_key(ev.rev)[..], entry.encode_to_vec());
        }
        if ev.typ == EventType::Deleted {
            batch.remove(key);
        } else {
            batch.insert(key, bytes);
        }
        if ev.rev > window {
            batch.remove(&log_key(ev.rev - window)[..]);
        }
    }
    batch.insert(REV_KEY, &last.to_be_bytes()[..]);
    batch
}

async fn commit(
    db: &sled::Db,
    data_file: &Arc<std::fs::File>,
    batch: sled::Batch,
) -> Result<(), sled::Error> {
    db.apply_batch(batch)?;
    db.flush_async().await?;
    let f = data_file.clone();
    tokio::task::spawn_blocking(move || f.sync_data())
        .await
        .map_err(|e| sled::Error::Io(std::io::Error::other(e)))??;
    Ok(())
}
