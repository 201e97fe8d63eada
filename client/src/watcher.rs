//! List + Watch as one stream of events: a state machine that relists when the resume
//! point is too old and resumes from the last revision after connection errors.

use crate::ClientError;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, node_api_client::NodeApiClient,
    pod_api_client::PodApiClient, service_api_client::ServiceApiClient, Endpoints, EventType,
    ListRequest, Node, Pod, Service, WatchRequest,
};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use kube_lite_core::Resource;

/// One event as the server sent it.
#[derive(Debug, Clone)]
pub struct RawEvent<K> {
    pub kind: EventType,
    pub object: Option<K>,
    pub resource_version: u64,
}

pub type RawStream<K> = Pin<Box<dyn Stream<Item = Result<RawEvent<K>, Status>> + Send>>;

/// What a List answers: the items and the revision it was taken at.
pub type ListResult<K> = Result<(Vec<K>, u64), Status>;

/// List and Watch of one kind; implemented for the four generated clients.
pub trait WatchApi: Clone + Send + 'static {
    type Obj: Resource;
    fn list(&mut self, req: ListRequest) -> BoxFuture<'_, ListResult<Self::Obj>>;
    fn watch(&mut self, req: WatchRequest) -> BoxFuture<'_, Result<RawStream<Self::Obj>, Status>>;
}

macro_rules! watch_api {
    ($client:ident, $obj:ty) => {
        impl WatchApi for $client<Channel> {
            type Obj = $obj;
            fn list(
                &mut self,
                req: ListRequest,
            ) -> BoxFuture<'_, Result<(Vec<$obj>, u64), Status>> {
                Box::pin(async move {
                    let l = $client::list(self, req).await?.into_inner();
                    Ok((l.items, l.resource_version))
                })
            }
            fn watch(
                &mut self,
                req: WatchRequest,
            ) -> BoxFuture<'_, Result<RawStream<$obj>, Status>> {
                Box::pin(async move {
                    let s = $client::watch(self, req).await?.into_inner();
                    let s: RawStream<$obj> = Box::pin(s.map(|r| {
                        r.map(|e| RawEvent {
                            kind: EventType::try_from(e.r#type).unwrap_or(EventType::Unspecified),
                            object: e.object,
                            resource_version: e.resource_version,
                        })
                    }));
                    Ok(s)
                })
            }
        }
    };
}
watch_api!(NodeApiClient, Node);
watch_api!(PodApiClient, Pod);
watch_api!(ServiceApiClient, Service);
watch_api!(EndpointsApiClient, Endpoints);

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub namespace: String,
    pub label_selector: String,
    /// Pods only: those bound to this node.
    pub node_name: String,
    pub bookmark_interval_ms: u32,
}

/// What the watcher yields.
#[derive(Debug, Clone)]
pub enum Event<K> {
    /// A fresh List: the complete current set (replace what you had), at this revision.
    Restarted(Vec<K>, u64),
    /// Added or modified.
    Applied(K),
    /// Deleted (the object's last state).
    Deleted(K),
    /// Nothing changed up to this revision.
    Bookmark(u64),
}

enum State<K> {
    Empty,
    InitWatch { from: u64 },
    Watching { from: u64, stream: RawStream<K> },
}

struct Ctx<A> {
    api: A,
    params: WatchParams,
    delay: Option<Duration>,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl<A> Ctx<A> {
    fn failed(&mut self) {
        self.delay = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
    fn succeeded(&mut self) {
        self.backoff = BACKOFF_MIN;
    }
}

/// `true` for the server's "your resume point is gone, relist" answer.
pub fn is_relist(status: &Status) -> bool {
    status.code() == Code::OutOfRange
}

async fn step<A: WatchApi>(
    ctx: &mut Ctx<A>,
    mut state: State<A::Obj>,
) -> (Result<Event<A::Obj>, ClientError>, State<A::Obj>) {
    loop {
        if let Some(d) = ctx.delay.take() {
            tokio::time::sleep(d).await;
        }
        state = match state {
            State::Empty => {
                let req = ListRequest {
                    namespace: ctx.params.namespace.clone(),
                    label_selector: ctx.params.label_selector.clone(),
                    node_name: ctx.params.node_name.clone(),
                    ..Default::default()
                };
                match ctx.api.list(req).await {
                    Ok((items, rev)) => {
                        ctx.succeeded();
                        return (
                            Ok(Event::Restarted(items, rev)),
                            State::InitWatch { from: rev },
                        );
                    }
                    Err(e) => {
                        ctx.failed();
                        return (Err(e.into()), State::Empty);
                    }
                }
            }
            State::InitWatch { from } => {
                let req = WatchRequest {
                    namespace: ctx.params.namespace.clone(),
                    label_selector: ctx.params.label_selector.clone(),
                    node_name: ctx.params.node_name.clone(),
                    resource_version: from,
                    bookmark_interval_ms: ctx.params.bookmark_interval_ms,
                };
                match ctx.api.watch(req).await {
                    Ok(stream) => State::Watching { from, stream },
                    Err(e) if is_relist(&e) => {
                        tracing::debug!(kind = A::Obj::KIND, from, "watch too old; relisting");
                        State::Empty
                    }
                    Err(e) => {
                        ctx.failed();
                        return (Err(e.into()), State::InitWatch { from });
                    }
                }
            }
            State::Watching { from, mut stream } => match stream.next().await {
                Some(Ok(ev)) => {
                    ctx.succeeded();
                    let from = from.max(ev.resource_version);
                    let next = State::Watching { from, stream };
                    let out = match (ev.kind, ev.object) {
                        (EventType::Bookmark, _) => Event::Bookmark(ev.resource_version),
                        (EventType::Added | EventType::Modified, Some(o)) => Event::Applied(o),
                        (EventType::Deleted, Some(o)) => Event::Deleted(o),
                        _ => {
                            state = next;
                            continue;
                        }
                    };
                    return (Ok(out), next);
                }
                Some(Err(e)) if is_relist(&e) => {
                    tracing::debug!(
                        kind = A::Obj::KIND,
                        from,
                        "watch ended: {}; relisting",
                        e.message()
                    );
                    State::Empty
                }
                Some(Err(e)) => {
                    ctx.failed();
                    return (Err(e.into()), State::InitWatch { from });
                }
                // The server closed the stream (e.g. shutting down): resume.
                None => {
                    ctx.failed();
                    State::InitWatch { from }
                }
            },
        }
    }
}

/// An endless stream of events for one kind. Errors are yielded (for logging) and the
/// watcher carries on after a back-off (100 ms doubling to 5 s).
pub fn watcher<A: WatchApi>(
    api: A,
    params: WatchParams,
) -> impl Stream<Item = Result<Event<A::Obj>, ClientError>> + Send {
    events(api, params, State::Empty)
}

/// Like [`watcher`], for a caller that already has the objects as of revision `from` (from
/// its own List or Gets, as `kubectl-lite get -w` does): starts with a Watch from `from`
/// instead of a List, then carries on like [`watcher`] (a relist on OUT_OF_RANGE yields
/// [`Event::Restarted`]).
pub fn watcher_from<A: WatchApi>(
    api: A,
    params: WatchParams,
    from: u64,
) -> impl Stream<Item = Result<Event<A::Obj>, ClientError>> + Send {
    events(api, params, State::InitWatch { from })
}

fn events<A: WatchApi>(
    api: A,
    params: WatchParams,
    start: State<A::Obj>,
) -> impl Stream<Item = Result<Event<A::Obj>, ClientError>> + Send {
    let ctx = Ctx {
        api,
        params,
        delay: None,
        backoff: BACKOFF_MIN,
    };
    futures::stream::unfold((ctx, start), |(mut ctx, state)| async move {
        let (ev, next) = step(&mut ctx, state).await;
        Some((ev, (ctx, next)))
    })
}

/// A reflector: the current objects of one kind, kept by applying watcher events.
#[derive(Debug, Clone)]
pub struct Store<K> {
    objects: BTreeMap<ObjectRef, K>,
    revision: u64,
    /// `false` until the first List arrived.
    pub synced: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            revision: 0,
            synced: false,
        }
    }
}

impl<K: Resource> Store<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: &Event<K>) {
        match ev {
            Event::Restarted(items, rev) => {
                self.objects = items.iter().map(|o| (o.object_ref(), o.clone())).collect();
                self.revision = *rev;
                self.synced = true;
            }
            Event::Applied(o) => {
                self.revision = self.revision.max(o.resource_version());
                self.objects.insert(o.object_ref(), o.clone());
            }
            Event::Deleted(o) => {
                self.revision = self.revision.max(o.resource_version());
                self.objects.remove(&o.object_ref());
            }
            Event::Bookmark(rev) => self.revision = self.revision.max(*rev),
        }
    }

    pub fn get(&self, key: &ObjectRef) -> Option<&K> {
        self.objects.get(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.objects.values()
    }
    pub fn len(&self) -> usize {
        self.objects.len()
    }
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
    /// The newest revision this store has seen.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::ObjectMeta;

    fn pod(name: &str, rv: u64) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                resource_version: rv,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn store_applies_events_in_order() {
        let mut s = Store::new();
        assert!(!s.synced);
        s.apply(&Event::Restarted(vec![pod("a", 3), pod("b", 4)], 5));
        assert!(s.synced);
        assert_eq!(s.len(), 2);
        assert_eq!(s.revision(), 5);
        s.apply(&Event::Applied(pod("c", 6)));
        s.apply(&Event::Deleted(pod("a", 7)));
        s.apply(&Event::Bookmark(9));
        let names: Vec<_> = s.iter().map(|p| p.name().to_string()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(s.revision(), 9);
        assert!(s.get(&ObjectRef::new("default", "c")).is_some());
        // A relist replaces everything.
        s.apply(&Event::Restarted(vec![pod("z", 10)], 10));
        assert_eq!(s.iter().map(|p| p.name()).collect::<Vec<_>>(), ["z"]);
    }

    /// Answers handed out in order.
    type Scripted<T> = std::sync::Arc<std::sync::Mutex<Vec<T>>>;
    /// A Watch call's answer: refused, or a stream of these events.
    type WatchScript = Result<Vec<Result<RawEvent<Pod>, Status>>, Status>;

    #[derive(Clone)]
    struct FakeApi {
        // Scripted answers: lists and watch streams, consumed in order.
        lists: Scripted<ListResult<Pod>>,
        watches: Scripted<WatchScript>,
        watch_froms: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    }

    impl WatchApi for FakeApi {
        type Obj = Pod;
        fn list(&mut self, _req: ListRequest) -> BoxFuture<'_, Result<(Vec<Pod>, u64), Status>> {
            let r = self.lists.lock().unwrap().remove(0);
            Box::pin(async move { r })
        }
        fn watch(&mut self, req: WatchRequest) -> BoxFuture<'_, Result<RawStream<Pod>, Status>> {
            self.watch_froms.lock().unwrap().push(req.resource_version);
            let r = self.watches.lock().unwrap().remove(0);
            Box::pin(async move {
                r.map(|evs| -> RawStream<Pod> {
                    // After its scripted events a stream stays open (pending) forever.
                    Box::pin(futures::stream::iter(evs).chain(futures::stream::pending()))
                })
            })
        }
    }

    fn ev(kind: EventType, p: Pod) -> Result<RawEvent<Pod>, Status> {
        let rv = p.resource_version();
        Ok(RawEvent {
            kind,
            object: Some(p),
            resource_version: rv,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn resumes_after_errors_and_relists_when_too_old() {
        let api = FakeApi {
            lists: std::sync::Arc::new(std::sync::Mutex::new(vec![
                Ok((vec![pod("a", 1)], 10)),
                Ok((vec![pod("b", 20)], 20)),
            ])),
            watches: std::sync::Arc::new(std::sync::Mutex::new(vec![
                // First watch: one event, then the connection breaks.
                Ok(vec![
                    ev(EventType::Added, pod("c", 11)),
                    Err(Status::unavailable("gone")),
                ]),
                // Resume from 11: the server says it is too old.
                Err(Status::out_of_range(
                    "too old resource version: 11 (oldest: 15); relist",
                )),
                // After the relist at 20: a delete and a bookmark.
                Ok(vec![
                    ev(EventType::Deleted, pod("b", 21)),
                    Ok(RawEvent {
                        kind: EventType::Bookmark,
                        object: None,
                        resource_version: 25,
                    }),
                ]),
            ])),
            watch_froms: Default::default(),
        };
        let froms = api.watch_froms.clone();
        let mut w = Box::pin(watcher(api, WatchParams::default()));
        assert!(matches!(w.next().await, Some(Ok(Event::Restarted(v, 10))) if v.len() == 1));
        assert!(matches!(w.next().await, Some(Ok(Event::Applied(p))) if p.name() == "c"));
        assert!(matches!(w.next().await, Some(Err(_))));
        assert!(matches!(w.next().await, Some(Ok(Event::Restarted(v, 20))) if v[0].name() == "b"));
        assert!(matches!(w.next().await, Some(Ok(Event::Deleted(p))) if p.name() == "b"));
        assert!(matches!(w.next().await, Some(Ok(Event::Bookmark(25)))));
        assert_eq!(*froms.lock().unwrap(), vec![10, 11, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn watcher_from_starts_with_a_watch_and_relists_when_too_old() {
        let api = FakeApi {
            lists: std::sync::Arc::new(std::sync::Mutex::new(vec![Ok((vec![pod("b", 20)], 20))])),
            watches: std::sync::Arc::new(std::sync::Mutex::new(vec![
                // From the caller's revision: one event, then the window has moved on.
                Ok(vec![
                    ev(EventType::Modified, pod("a", 8)),
                    Err(Status::out_of_range("too old resource version; relist")),
                ]),
                // After the relist at 20.
                Ok(vec![ev(EventType::Added, pod("c", 21))]),
            ])),
            watch_froms: Default::default(),
        };
        let froms = api.watch_froms.clone();
        let mut w = Box::pin(watcher_from(api, WatchParams::default(), 7));
        assert!(matches!(w.next().await, Some(Ok(Event::Applied(p))) if p.name() == "a"));
        assert!(matches!(w.next().await, Some(Ok(Event::Restarted(v, 20))) if v[0].name() == "b"));
        assert!(matches!(w.next().await, Some(Ok(Event::Applied(p))) if p.name() == "c"));
        assert_eq!(*froms.lock().unwrap(), vec![7, 20]);
    }
}
