//! One task per Watch stream: replays the retained backlog, then forwards live
//! changes, applying the filters with Kubernetes semantics (an object that stops
//! matching is DELETED for this watcher, one that starts matching is ADDED), and
//! sends BOOKMARKs. The stream's buffer is bounded in events and in bytes
//! ([`ByteBudget`]); a watcher that falls behind is ended with OUT_OF_RANGE
//! "... relist" and never slows writers down.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use kube_lite_proto::labels::Selector;
use kube_lite_proto::v1::{EventType, ObjectMeta};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, Notify};
use tonic::Status;

use crate::error::ApiError;
use crate::resource::{Kind, Object, Stored};
use crate::store::{Event, RingEntry, Store};

/// List/Watch filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub selector: Selector,
    pub node_name: Option<String>,
}

impl Filter {
    pub fn new(
        kind: Kind,
        namespace: &str,
        label_selector: &str,
        node_name: &str,
    ) -> Result<Filter, ApiError> {
        let selector =
            Selector::parse(label_selector).map_err(|e| ApiError::invalid("label_selector", e))?;
        if !node_name.is_empty() && kind != Kind::Pod {
            return Err(ApiError::invalid("node_name", "is only supported for pods"));
        }
        Ok(Filter {
            namespace: (kind.namespaced() && !namespace.is_empty()).then(|| namespace.to_string()),
            selector,
            node_name: (!node_name.is_empty()).then(|| node_name.to_string()),
        })
    }

    pub fn matches(&self, o: &Object) -> bool {
        let m = o.meta();
        if self.namespace.as_ref().is_some_and(|ns| *ns != m.namespace) {
            return false;
        }
        if let Some(node) = &self.node_name {
            let on = o
                .as_pod()
                .and_then(|p| p.spec.as_ref())
                .map(|s| s.node_name.as_str())
                .unwrap_or("");
            if on != node {
                return false;
            }
        }
        self.selector.is_empty() || self.selector.matches(&m.labels)
    }

    /// The event this watcher sees for a change, if any.
    pub fn view(&self, ev: &Event) -> Option<EventType> {
        let now = self.matches(&ev.obj);
        match ev.typ {
            EventType::Modified => {
                let before = ev.prev.as_ref().is_none_or(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            t => now.then_some(t),
        }
    }
}

fn relist(last: u64, detail: &str) -> Status {
    Status::out_of_range(format!(
        "{detail}: too old resource version: {last}; relist"
    ))
}

/// How a watch stream ends when the server ends it: the status is delivered ahead of
/// whatever is still buffered (a watcher too slow to drain its buffer would otherwise
/// never see it, and its stream would just stop, as if it ended OK).
#[derive(Default)]
pub struct EndSlot(Mutex<Option<Status>>);

impl EndSlot {
    fn set(&self, s: Status) {
        *self.0.lock().expect("lock") = Some(s);
    }
    fn take(&self) -> Option<Status> {
        self.0.lock().expect("lock").take()
    }
}

/// The encoded bytes of the events in one watcher's buffer, bounded: the watcher
/// takes an event's bytes before it buffers it, the stream gives them back as the
/// event leaves for the client. An event always fits an empty buffer (so one larger
/// than the bound still goes through, alone).
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
    freed: Notify,
}

impl ByteBudget {
    pub fn new(max: usize) -> ByteBudget {
        ByteBudget {
            used: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes if they fit now.
    pub fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u == 0 || u.saturating_add(n) <= self.max).then(|| u.saturating_add(n))
            })
            .is_ok()
    }

    /// Takes `n` bytes, waiting until they fit.
    pub async fn take(&self, n: usize) {
        loop {
            let freed = self.freed.notified();
            if self.try_take(n) {
                return;
            }
            freed.await;
        }
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
        self.freed.notify_waiters();
    }
}

/// The response stream of a Watch: the watcher task's events, or its final status as
/// soon as it has one.
pub struct WatchStream<E> {
    rx: mpsc::Receiver<Result<E, Status>>,
    end: Arc<EndSlot>,
    done: bool,
    budget: Option<Arc<ByteBudget>>,
}

impl<E> WatchStream<E> {
    pub fn new(rx: mpsc::Receiver<Result<E, Status>>, end: Arc<EndSlot>) -> Self {
        WatchStream {
            rx,
            end,
            done: false,
            budget: None,
        }
    }

    /// Gives each event's encoded bytes back to `budget` as it leaves.
    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl<E: prost::Message> Stream for WatchStream<E> {
    type Item = Result<E, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(s) = self.end.take() {
            self.done = true;
            return Poll::Ready(Some(Err(s)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                // The task ended; it sets its status before it drops the sender.
                self.done = true;
                Poll::Ready(self.end.take().map(Err))
            }
            Poll::Ready(Some(Ok(ev))) => {
                if let Some(b) = &self.budget {
                    b.give(ev.encoded_len());
                }
                Poll::Ready(Some(Ok(ev)))
            }
            other => other,
        }
    }
}

/// How long a watcher may leave its backlog untaken before it is ended.
const BACKLOG_SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Watcher<R: Stored> {
    pub store: Arc<Store>,
    pub filter: Filter,
    /// Retained changes after the start revision (encoded; decoded one at a time).
    pub backlog: Vec<Arc<RingEntry>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub last: u64,
    pub tx: mpsc::Sender<Result<R::Event, Status>>,
    /// Where the final status goes (see [`WatchStream`]).
    pub end: Arc<EndSlot>,
    /// Bytes buffered in `tx` (the stream gives them back).
    pub budget: Arc<ByteBudget>,
    pub bookmark_every: Duration,
}

enum Sent {
    Ok,
    Full,
    Closed,
}

impl<R: Stored> Watcher<R> {
    fn try_emit(&mut self, ev: &Event) -> Sent {
        if ev.rev <= self.last {
            return Sent::Ok;
        }
        self.last = ev.rev;
        let Some(typ) = self.filter.view(ev) else {
            return Sent::Ok;
        };
        let item = R::event(typ, R::from_object(&ev.obj), ev.rev);
        self.try_send(item)
    }

    /// Buffers `item` if both its bytes and a slot fit.
    fn try_send(&self, item: R::Event) -> Sent {
        let n = prost::Message::encoded_len(&item);
        if !self.budget.try_take(n) {
            return Sent::Full;
        }
        match self.tx.try_send(Ok(item)) {
            Ok(()) => Sent::Ok,
            Err(e) => {
                self.budget.give(n);
                match e {
                    mpsc::error::TrySendError::Full(_) => Sent::Full,
                    mpsc::error::TrySendError::Closed(_) => Sent::Closed,
                }
            }
        }
    }

    fn full(&self) -> String {
        format!(
            "watcher too slow: buffer of {} events or {} bytes full",
            self.tx.max_capacity(),
            self.budget.max()
        )
    }

    /// Ends the stream with the relist status, delivered ahead of anything still
    /// buffered (returning drops the sender, which wakes the stream).
    async fn end_relist(&self, detail: String) {
        tracing::info!(detail, "ending watcher: relist");
        self.end.set(relist(self.last, &detail));
    }

    pub async fn run(mut self) {
        // Backlog first (may be larger than the buffer: wait for room here).
        let backlog = std::mem::take(&mut self.backlog);
        for entry in backlog {
            if entry.rev <= self.last {
                continue;
            }
            let ev = match entry.event() {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable change in the watch window");
                    return self
                        .end_relist(format!("change {} unreadable", entry.rev))
                        .await;
                }
            };
            self.last = ev.rev;
            let Some(typ) = self.filter.view(&ev) else {
                continue;
            };
            let item = R::event(typ, R::from_object(&ev.obj), ev.rev);
            let n = prost::Message::encoded_len(&item);
            let send = async {
                self.budget.take(n).await;
                self.tx.send(Ok(item)).await
            };
            match tokio::time::timeout(BACKLOG_SEND_TIMEOUT, send).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    return self
                        .end_relist("watcher too slow: backlog not taken".into())
                        .await
                }
            }
        }
        let mut closing = self.store.closing.subscribe();
        if *closing.borrow_and_update() {
            return;
        }
        let mut bookmark = tokio::time::interval_at(
            tokio::time::Instant::now() + self.bookmark_every,
            self.bookmark_every,
        );
        bookmark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                r = closing.changed() => {
                    if r.is_err() || *closing.borrow_and_update() {
                        return;
                    }
                }
                r = self.rx.recv() => match r {
                    Ok(ev) => match self.try_emit(&ev) {
                        Sent::Ok => {}
                        Sent::Full => return self.end_relist(self.full()).await,
                        Sent::Closed => return,
                    },
                    Err(RecvError::Lagged(n)) => return self.end_relist(format!("watcher fell behind by {n} events")).await,
                    Err(RecvError::Closed) => return,
                },
                _ = bookmark.tick() => {
                    // Everything published up to `rev` is in our receiver: drain it,
                    // then the bookmark may claim `rev`.
                    let rev = self.store.published.load(Ordering::Acquire);
                    loop {
                        match self.rx.try_recv() {
                            Ok(ev) => match self.try_emit(&ev) {
                                Sent::Ok => {}
                                Sent::Full => return self.end_relist(self.full()).await,
                                Sent::Closed => return,
                            },
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(n)) => return self.end_relist(format!("watcher fell behind by {n} events")).await,
                            Err(TryRecvError::Closed) => return,
                        }
                    }
                    self.last = self.last.max(rev);
                    let meta = ObjectMeta { resource_version: self.last, ..Default::default() };
                    let obj = bookmark_object::<R>(meta);
                    match self.try_send(R::event(EventType::Bookmark, obj, self.last)) {
                        Sent::Ok | Sent::Full => {}
                        Sent::Closed => return,
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }
}

fn bookmark_object<R: Stored>(meta: ObjectMeta) -> R {
    let mut o = R::default();
    *o.meta_mut() = meta;
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Pod, PodSpec};

    fn pod(labels: &[(&str, &str)], node: &str) -> Arc<Object> {
        Arc::new(Object::Pod(Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                namespace: "default".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: None,
        }))
    }

    fn ev(typ: EventType, obj: Arc<Object>, prev: Option<Arc<Object>>) -> Event {
        Event {
            rev: 1,
            kind: Kind::Pod,
            typ,
            obj,
            prev,
        }
    }

    #[test]
    fn filtered_view_follows_match_changes() {
        let f = Filter::new(Kind::Pod, "", "app=web", "").unwrap();
        let web = pod(&[("app", "web")], "");
        let db = pod(&[("app", "db")], "");
        assert_eq!(
            f.view(&ev(EventType::Added, web.clone(), None)),
            Some(EventType::Added)
        );
        assert_eq!(f.view(&ev(EventType::Added, db.clone(), None)), None);
        assert_eq!(
            f.view(&ev(EventType::Modified, db.clone(), Some(web.clone()))),
            Some(EventType::Deleted)
        );
        assert_eq!(
            f.view(&ev(EventType::Modified, web.clone(), Some(db.clone()))),
            Some(EventType::Added)
        );
        assert_eq!(
            f.view(&ev(EventType::Modified, web.clone(), Some(web.clone()))),
            Some(EventType::Modified)
        );
        assert_eq!(
            f.view(&ev(EventType::Modified, db.clone(), Some(db.clone()))),
            None
        );
        assert_eq!(
            f.view(&ev(EventType::Deleted, web, None)),
            Some(EventType::Deleted)
        );
    }

    #[tokio::test]
    async fn final_status_overtakes_buffered_events() {
        use futures::StreamExt;
        let (tx, rx) = mpsc::channel::<Result<u32, Status>>(2);
        let end = Arc::new(EndSlot::default());
        let mut out = WatchStream::new(rx, end.clone());
        tx.try_send(Ok(1)).unwrap();
        tx.try_send(Ok(2)).unwrap();
        assert!(tx.try_send(Ok(3)).is_err(), "buffer is bounded");
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        end.set(Status::out_of_range("too slow; relist"));
        drop(tx);
        let st = out.next().await.unwrap().unwrap_err();
        assert_eq!(st.code(), tonic::Code::OutOfRange);
        assert!(out.next().await.is_none());
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn stream_without_final_status_ends_after_events() {
        use futures::StreamExt;
        let (tx, rx) = mpsc::channel::<Result<u32, Status>>(4);
        let mut out = WatchStream::new(rx, Arc::new(EndSlot::default()));
        tx.try_send(Ok(1)).unwrap();
        drop(tx);
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn final_status_wakes_a_waiting_reader() {
        use futures::StreamExt;
        let (tx, rx) = mpsc::channel::<Result<u32, Status>>(4);
        let end = Arc::new(EndSlot::default());
        let mut out = WatchStream::new(rx, end.clone());
        let reader = tokio::spawn(async move { out.next().await });
        tokio::task::yield_now().await;
        end.set(Status::out_of_range("relist"));
        drop(tx);
        let got = reader.await.unwrap().unwrap().unwrap_err();
        assert_eq!(got.code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn byte_budget_bounds_bytes_and_admits_one_large_event_alone() {
        let b = ByteBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(50), "60 + 50 > 100");
        assert!(b.try_take(40));
        assert_eq!(b.used(), 100);
        b.give(100);
        assert!(b.try_take(1000), "an empty buffer takes any one event");
        assert!(!b.try_take(1));
        b.give(1000);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn the_stream_gives_bytes_back_and_a_waiting_take_goes_on() {
        use futures::StreamExt;
        let (tx, rx) = mpsc::channel::<Result<u32, Status>>(16);
        let budget = Arc::new(ByteBudget::new(4));
        let mut out =
            WatchStream::new(rx, Arc::new(EndSlot::default())).with_budget(budget.clone());
        // u32 300 encodes as field 1: a key byte and a 2-byte varint.
        let n = prost::Message::encoded_len(&300u32);
        assert_eq!(n, 3);
        assert!(budget.try_take(n));
        tx.try_send(Ok(300)).unwrap();
        let b2 = budget.clone();
        let waiter = tokio::spawn(async move { b2.take(3).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "3 + 3 > 4: waits");
        assert_eq!(out.next().await.unwrap().unwrap(), 300);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("take resumed once the event left")
            .unwrap();
        assert_eq!(budget.used(), 3);
    }

    #[test]
    fn node_and_namespace_filters() {
        let f = Filter::new(Kind::Pod, "default", "", "n1").unwrap();
        assert!(f.matches(&pod(&[], "n1")));
        assert!(!f.matches(&pod(&[], "n2")));
        assert_eq!(
            f.view(&ev(EventType::Modified, pod(&[], ""), Some(pod(&[], "n1")))),
            Some(EventType::Deleted)
        );
        let other_ns = Filter::new(Kind::Pod, "kube", "", "").unwrap();
        assert!(!other_ns.matches(&pod(&[], "n1")));
        assert!(Filter::new(Kind::Service, "", "", "n1").is_err());
        assert!(Filter::new(Kind::Pod, "", "a in b", "").is_err());
    }
}
