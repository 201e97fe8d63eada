//! One task per Watch stream: replays the retained backlog, then forwards live
//! changes, applying the filters with Kubernetes semantics (an object that stops
//! matching is DELETED for this watcher, one that starts matching is ADDED), and
//! sends BOOKMARKs. The stream's buffer is bounded; a watcher that falls behind is
//! ended with OUT_OF_RANGE "... relist" and never slows writers down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kube_lite_proto::labels::Selector;
use kube_lite_proto::v1::{EventType, ObjectMeta};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
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

pub struct Watcher<R: Stored> {
    pub store: Arc<Store>,
    pub filter: Filter,
    pub backlog: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub last: u64,
    pub tx: mpsc::Sender<Result<R::Event, Status>>,
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

    /// Ends the stream with the relist status (waits a bounded time for buffer room).
    async fn end_relist(&self, detail: String) {
        tracing::debug!(detail, "ending watcher: relist");
        let status = relist(self.last, &detail);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.tx.send(Err(status))).await;
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
            if self.tx.send(Ok(item)).await.is_err() {
                return;
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
                        Sent::Full => return self.end_relist(format!("watcher too slow: buffer of {} events full", self.tx.max_capacity())).await,
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
                                Sent::Full => return self.end_relist(format!("watcher too slow: buffer of {} events full", self.tx.max_capacity())).await,
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
