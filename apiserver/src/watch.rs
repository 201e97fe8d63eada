//! One task per Watch stream: replays the retained backlog, then forwards live
//! changes, applying the filters with Kubernetes semantics (an object that stops
//! matching is DELETED for this watcher, one that starts matching is ADDED), and
//! sends BOOKMARKs. The stream's buffer is bounded; a watcher that falls behind is
//! ended with OUT_OF_RANGE "... relist" and never slows writers down. That final
//! status overtakes the buffered events ([`WatchStream`]), so even a client that
//! stopped reading gets it, not a plain end of stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kube_lite_proto::labels::Selector;
use kube_lite_proto::v1::{EventType, ObjectMeta};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;

use crate::error::ApiError;
use crate::resource::{Kind, Object, Stored};
use crate::store::{Event, Store};

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

/// A Watch from `from` when the newest committed revision is `current`: 0 (now) and
/// every revision up to `current` are fine; a later one is OUT_OF_RANGE, as a
/// Kubernetes apiserver answers "Too large resource version": the client has seen a
/// revision this server never committed (e.g. its data directory was restored from an
/// older copy), so it should relist (which the clients do for OUT_OF_RANGE) or retry.
pub fn check_start(from: u64, current: u64) -> Result<(), ApiError> {
    if from > current {
        return Err(ApiError::Gone(format!(
            "too large resource version: {from}, current revision is {current}; relist or retry later"
        )));
    }
    Ok(())
}

/// How long a watcher whose client stopped reading may wait for room while replaying
/// its backlog (live events never wait: a full buffer ends the watcher at once).
pub const BACKLOG_STALL: Duration = Duration::from_secs(30);

/// A Watch's bounded event buffer plus its final status: the sending halves for the
/// [`Watcher`] and the stream for tonic.
#[allow(clippy::type_complexity)]
pub fn channel<T>(
    buffer: usize,
) -> (
    mpsc::Sender<Result<T, Status>>,
    oneshot::Sender<Status>,
    WatchStream<T>,
) {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let (end_tx, end_rx) = oneshot::channel();
    (
        tx,
        end_tx,
        WatchStream {
            rx,
            end: Some(end_rx),
            done: false,
        },
    )
}

/// The response stream of a Watch: the buffered events, unless the final status has
/// been set, which then comes next (dropping what is still buffered: the client
/// relists anyway) and ends the stream.
pub struct WatchStream<T> {
    rx: mpsc::Receiver<Result<T, Status>>,
    end: Option<oneshot::Receiver<Status>>,
    done: bool,
}

impl<T> WatchStream<T> {
    fn finish(&mut self, status: Status) -> Poll<Option<Result<T, Status>>> {
        self.done = true;
        self.end = None;
        self.rx.close();
        Poll::Ready(Some(Err(status)))
    }
}

impl<T> futures::Stream for WatchStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(end) = this.end.as_mut() {
            match Pin::new(end).poll(cx) {
                Poll::Ready(Ok(status)) => return this.finish(status),
                Poll::Ready(Err(_)) => this.end = None,
                Poll::Pending => {}
            }
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                // The status may have been set just after we looked.
                if let Some(Ok(status)) = this.end.as_mut().map(|e| e.try_recv()) {
                    return this.finish(status);
                }
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

pub struct Watcher<R: Stored> {
    pub store: Arc<Store>,
    pub filter: Filter,
    pub backlog: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub last: u64,
    pub tx: mpsc::Sender<Result<R::Event, Status>>,
    /// The final status ([`channel`]).
    pub end: oneshot::Sender<Status>,
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
        match self.tx.try_send(Ok(item)) {
            Ok(()) => Sent::Ok,
            Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
        }
    }

    fn end_too_slow(self) {
        let detail = format!(
            "watcher too slow: buffer of {} events full",
            self.tx.max_capacity()
        );
        self.end_relist(detail)
    }

    /// Ends the stream with the relist status, ahead of whatever is still buffered.
    fn end_relist(self, detail: String) {
        tracing::info!(detail, "ending watcher: relist");
        let _ = self.end.send(relist(self.last, &detail));
    }

    pub async fn run(mut self) {
        // Backlog first (may be larger than the buffer: wait for room here).
        let backlog = std::mem::take(&mut self.backlog);
        for ev in backlog {
            if ev.rev <= self.last {
                continue;
            }
            self.last = ev.rev;
            let Some(typ) = self.filter.view(&ev) else {
                continue;
            };
            let item = R::event(typ, R::from_object(&ev.obj), ev.rev);
            match self.tx.send_timeout(Ok(item), BACKLOG_STALL).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    let detail = format!(
                        "watcher too slow: no room in its buffer of {} events for {BACKLOG_STALL:?}",
                        self.tx.max_capacity()
                    );
                    return self.end_relist(detail);
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
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
                        Sent::Full => return self.end_too_slow(),
                        Sent::Closed => return,
                    },
                    Err(RecvError::Lagged(n)) => return self.end_relist(format!("watcher fell behind by {n} events")),
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
                                Sent::Full => return self.end_too_slow(),
                                Sent::Closed => return,
                            },
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(n)) => return self.end_relist(format!("watcher fell behind by {n} events")),
                            Err(TryRecvError::Closed) => return,
                        }
                    }
                    self.last = self.last.max(rev);
                    let meta = ObjectMeta { resource_version: self.last, ..Default::default() };
                    let obj = bookmark_object::<R>(meta);
                    match self.tx.try_send(Ok(R::event(EventType::Bookmark, obj, self.last))) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
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

    #[test]
    fn start_revision_up_to_current() {
        assert!(check_start(0, 0).is_ok());
        assert!(check_start(7, 7).is_ok());
        assert!(check_start(3, 7).is_ok());
        let e = check_start(8, 7).unwrap_err();
        assert_eq!(
            Status::from(e.clone()).code(),
            tonic::Code::OutOfRange,
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "too large resource version: 8, current revision is 7; relist or retry later"
        );
        assert!(check_start(u64::MAX, u64::MAX - 1).is_err());
        assert!(check_start(u64::MAX, u64::MAX).is_ok());
    }

    #[tokio::test]
    async fn final_status_overtakes_buffered_events() {
        use futures::StreamExt;
        let (tx, end, mut out) = channel::<u32>(2);
        tx.try_send(Ok(1)).unwrap();
        tx.try_send(Ok(2)).unwrap();
        assert!(tx.try_send(Ok(3)).is_err(), "buffer is bounded");
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        end.send(Status::out_of_range("too slow; relist")).unwrap();
        drop(tx);
        let st = out.next().await.unwrap().unwrap_err();
        assert_eq!(st.code(), tonic::Code::OutOfRange);
        assert!(out.next().await.is_none());
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn stream_without_final_status_ends_after_events() {
        use futures::StreamExt;
        let (tx, end, mut out) = channel::<u32>(4);
        tx.try_send(Ok(1)).unwrap();
        drop(end);
        drop(tx);
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn final_status_seen_when_sender_drops_right_after() {
        use futures::StreamExt;
        let (tx, end, mut out) = channel::<u32>(4);
        let reader = tokio::spawn(async move { out.next().await });
        tokio::task::yield_now().await;
        end.send(Status::out_of_range("relist")).unwrap();
        drop(tx);
        let got = reader.await.unwrap().unwrap().unwrap_err();
        assert_eq!(got.code(), tonic::Code::OutOfRange);
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
