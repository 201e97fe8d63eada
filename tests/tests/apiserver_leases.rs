//! Node Leases (coordination.k8s.io/v1 Lease, kind 10) over real gRPC + real sled: the
//! LeaseApi like every kind's, and node health reading Lease renewals, so a node whose
//! agent renews only its Lease stays Ready, its pods stay, and Node watchers see no
//! event for those heartbeats.

use std::time::Duration;

use futures::StreamExt;
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{get, pod};
use tonic::Code;

const NS: &str = "kube-node-lease";

fn lease(name: &str, renew: i64) -> Lease {
    Lease {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: NS.into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: name.into(),
            lease_duration_seconds: 40,
            renew_time: renew,
            ..Default::default()
        }),
    }
}

fn in_ns(name: &str) -> GetRequest {
    GetRequest {
        name: name.into(),
        namespace: NS.into(),
    }
}

#[tokio::test]
async fn lease_api_crud_watch_and_validation() {
    let s = TestApiServer::start().await;
    let mut c = s.leases();
    let created = c
        .create(lease("node-1.example", 1))
        .await
        .unwrap()
        .into_inner();
    let rv = created.metadata.as_ref().unwrap().resource_version;
    assert!(rv > 0);
    let mut w = c
        .watch(WatchRequest {
            namespace: NS.into(),
            resource_version: rv,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let renewed = c
        .update(lease("node-1.example", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.spec.as_ref().unwrap().renew_time, 2);
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(ev.r#type, EventType::Modified as i32);
    assert_eq!(ev.object.unwrap().spec.unwrap().renew_time, 2);
    let got = c.get(in_ns("node-1.example")).await.unwrap().into_inner();
    assert_eq!(got, renewed);
    let list = c
        .list(ListRequest {
            namespace: NS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items, vec![renewed]);

    let mut bad = lease("n2", 1);
    bad.spec.as_mut().unwrap().lease_duration_seconds = -1;
    let e = c.create(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("spec.lease_duration_seconds: "),
        "{}",
        e.message()
    );
    let e = c.create(lease("Bad_Name", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("metadata.name: "),
        "{}",
        e.message()
    );
    c.delete(DeleteRequest {
        name: "node-1.example".into(),
        namespace: NS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.get(in_ns("node-1.example")).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn lease_renewals_keep_a_node_ready_and_reach_no_node_watcher() {
    let grace = Duration::from_millis(800);
    let eviction = Duration::from_millis(800);
    let s = TestApiServer::start_with(apiserver::Config {
        node_grace_period: grace,
        pod_eviction_timeout: eviction,
        ..Default::default()
    })
    .await;
    // Two nodes (a single silent node would be the whole cluster: full disruption,
    // no eviction); n1 is the one watched.
    let mut node = Node::default();
    for name in ["n2", "n1"] {
        node = s
            .nodes()
            .create(Node {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    address: "192.168.0.1".into(),
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    conditions: vec![NodeCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        // Registered as agents do: create, then the Ready status.
        node.status = Some(NodeStatus {
            conditions: vec![NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        node = s.nodes().update_status(node).await.unwrap().into_inner();
    }
    let node_rv = node.metadata.as_ref().unwrap().resource_version;
    let mut p = pod("p", &[]);
    p.spec.as_mut().unwrap().node_name = "n1".into();
    s.pods().create(p).await.unwrap();

    // The agents renew only their Leases, every 100 ms.
    let renew = |name: &'static str| {
        let mut c = s.leases();
        tokio::spawn(async move {
            let mut t = 1;
            let _ = c.create(lease(name, t)).await;
            loop {
                t += 1;
                let _ = c.update(lease(name, t)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let renewer = renew("n1");
    let other = renew("n2");
    let mut node_watch = s
        .nodes()
        .watch(WatchRequest {
            resource_version: node_rv,
            bookmark_interval_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Three times grace + eviction timeout: the Node is never marked, the pod stays.
    let until = tokio::time::Instant::now() + (grace + eviction) * 3;
    let mut bookmarks = 0;
    while tokio::time::Instant::now() < until {
        let ev = tokio::time::timeout(Duration::from_secs(5), node_watch.next())
            .await
            .expect("bookmarks keep coming")
            .expect("watch open")
            .expect("no error");
        // Only bookmarks: no heartbeat reaches a Node watcher.
        assert_eq!(ev.r#type, EventType::Bookmark as i32, "{ev:?}");
        bookmarks += 1;
    }
    assert!(bookmarks > 0);
    let p = s.pods().get(get("p")).await.unwrap().into_inner();
    assert_eq!(p.spec.unwrap().node_name, "n1");
    let n = s.nodes().get(get("n1")).await.unwrap().into_inner();
    assert_eq!(
        n.metadata.unwrap().resource_version,
        node_rv,
        "Node unchanged"
    );

    // n1's renewals stop: NotReady, and its pod is evicted (and placed on n2).
    renewer.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = s.pods().get(get("p")).await.unwrap().into_inner();
        if p.spec.as_ref().is_some_and(|sp| sp.node_name != "n1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod not evicted: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = s.nodes().get(get("n1")).await.unwrap().into_inner();
    assert!(n
        .status
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.r#type == "Ready" && c.status == "False"));
    other.abort();
}
