//! Node health across apiserver outages, over real gRPC + real sled: an outage longer
//! than grace + eviction timeout evicts nothing (silence is timed from the controller's
//! own observations after it starts); most nodes silent at once evicts nothing
//! (disruption mode); one silent node is still evicted after the timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_lite_proto::v1::node_api_client::NodeApiClient;
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{get, pod};

const GRACE: Duration = Duration::from_millis(800);
const EVICTION: Duration = Duration::from_millis(800);

fn cfg() -> apiserver::Config {
    apiserver::Config {
        node_grace_period: GRACE,
        pod_eviction_timeout: EVICTION,
        ..Default::default()
    }
}

fn ready_status() -> NodeStatus {
    NodeStatus {
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// [`fixtures::eventually`] with this file's deadline.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    kube_lite_tests::fixtures::eventually(what, Duration::from_secs(30), f).await
}

/// Simulated agents: each registered node heartbeats every 100 ms while its switch is
/// on, to whatever address the server has now (it may move on restart).
struct Agents {
    url: Arc<Mutex<String>>,
    on: Arc<Mutex<BTreeMap<String, bool>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agents {
    async fn start(s: &TestApiServer, names: &[&str]) -> Agents {
        let url = Arc::new(Mutex::new(s.url.clone()));
        let on = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for name in names {
            let node = Node {
                metadata: Some(ObjectMeta {
                    name: name.to_string(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    address: "192.168.0.1".into(),
                    ..Default::default()
                }),
                status: Some(ready_status()),
            };
            s.nodes().create(node).await.expect("register node");
            on.lock().unwrap().insert(name.to_string(), true);
            let (url, on, name) = (url.clone(), on.clone(), name.to_string());
            tasks.push(tokio::spawn(async move {
                // One connection per agent (TLS as the admin: the test kit's server is
                // secure), made again when the server moves.
                let mut conn: Option<(String, NodeApiClient<tonic::transport::Channel>)> = None;
                loop {
                    if on.lock().unwrap()[&name] {
                        let u = url.lock().unwrap().clone();
                        if conn.as_ref().is_none_or(|(cu, _)| *cu != u) {
                            conn = Some((
                                u.clone(),
                                NodeApiClient::new(kube_lite_tests::apiserver::channel_for(&u)),
                            ));
                        }
                        let c = &mut conn.as_mut().expect("set").1;
                        if let Ok(n) = c.get(get(&name)).await {
                            let mut n = n.into_inner();
                            n.status = Some(ready_status());
                            let _ = c.update_status(n).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        Agents { url, on, tasks }
    }

    fn set(&self, name: &str, beating: bool) {
        self.on.lock().unwrap().insert(name.to_string(), beating);
    }

    fn moved_to(&self, url: &str) {
        *self.url.lock().unwrap() = url.to_string();
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Pod name → (node, uid) of every pod.
async fn placement(s: &TestApiServer) -> BTreeMap<String, (String, String)> {
    let list = s
        .pods()
        .list(ListRequest::default())
        .await
        .expect("list pods")
        .into_inner();
    list.items
        .into_iter()
        .map(|p| {
            let m = p.metadata.unwrap_or_default();
            (m.name, (p.spec.unwrap_or_default().node_name, m.uid))
        })
        .collect()
}

async fn create_bound_pods(s: &TestApiServer, n: usize) -> BTreeMap<String, (String, String)> {
    for i in 0..n {
        s.pods()
            .create(pod(&format!("p{i}"), &[]))
            .await
            .expect("create pod");
    }
    eventually("every pod bound", || async {
        let p = placement(s).await;
        p.values().all(|(node, _)| !node.is_empty()).then_some(p)
    })
    .await
}

async fn ready(s: &TestApiServer, name: &str) -> Option<bool> {
    let n = s.nodes().get(get(name)).await.ok()?.into_inner();
    n.status?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| c.status == "True")
}

/// Asserts the placement stays `want` while the server runs for longer than grace +
/// eviction timeout (a time window: an eviction, if any, happens inside it).
async fn assert_stays(s: &TestApiServer, want: &BTreeMap<String, (String, String)>, why: &str) {
    let window = (GRACE + EVICTION) * 3;
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        assert_eq!(&placement(s).await, want, "{why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn apiserver_outage_longer_than_grace_and_eviction_evicts_nothing() {
    let mut s = TestApiServer::start_with(cfg()).await;
    let names = ["a", "b", "c"];
    let agents = Agents::start(&s, &names).await;
    let before = create_bound_pods(&s, 6).await;
    let nodes: std::collections::BTreeSet<&str> =
        before.values().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "spread over every node: {before:?}");

    // The outage: longer than grace + eviction timeout, so every stored heartbeat is
    // older than that when the server comes back.
    s.stop().await;
    tokio::time::sleep((GRACE + EVICTION) * 2).await;
    s.restart().await;
    agents.moved_to(&s.url);

    assert_stays(&s, &before, "a pod moved after the outage").await;
    for n in names {
        assert_eq!(ready(&s, n).await, Some(true), "node {n} after the outage");
    }

    // Eviction itself still works after the restart: one node goes silent.
    agents.set("b", false);
    let after = eventually("b's pods rescheduled", || async {
        let p = placement(&s).await;
        p.values()
            .all(|(node, _)| node == "a" || node == "c")
            .then_some(p)
    })
    .await;
    assert_eq!(ready(&s, "b").await, Some(false));
    for (pod, (node, uid)) in &before {
        let (now_on, now_uid) = &after[pod];
        assert_eq!(now_uid, uid, "{pod}: same pod object");
        if node != "b" {
            assert_eq!(now_on, node, "{pod} was not on the silent node");
        }
    }
}

#[tokio::test]
async fn most_nodes_silent_at_once_evicts_nothing() {
    let s = TestApiServer::start_with(cfg()).await;
    let names = ["a", "b", "c", "d"];
    let agents = Agents::start(&s, &names).await;
    let before = create_bound_pods(&s, 8).await;
    // Three of four nodes (0.75 ≥ 0.55) stop at once: a network partition or a failed
    // switch, not three dead machines.
    for n in ["a", "b", "c"] {
        agents.set(n, false);
    }
    for n in ["a", "b", "c"] {
        eventually("silent nodes NotReady", || async {
            (ready(&s, n).await == Some(false)).then_some(())
        })
        .await;
    }
    assert_stays(&s, &before, "evicted while most nodes were silent").await;
    assert_eq!(ready(&s, "d").await, Some(true));
    // They come back: Ready again, nothing moved.
    for n in ["a", "b", "c"] {
        agents.set(n, true);
    }
    for n in ["a", "b", "c"] {
        eventually("nodes Ready again", || async {
            (ready(&s, n).await == Some(true)).then_some(())
        })
        .await;
    }
    assert_eq!(placement(&s).await, before);
}
