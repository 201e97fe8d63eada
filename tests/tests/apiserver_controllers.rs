//! The apiserver's controllers over real gRPC + real sled: node subnets, ClusterIPs,
//! scheduler, endpoints, graceful deletion, node health and eviction.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{self, del, del_now, get, meta, pod, service};
use tonic::Code;

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: fixtures::labels(labels),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            address: "192.168.0.1".into(),
            ..Default::default()
        }),
        status: None,
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
    kube_lite_tests::fixtures::eventually(what, Duration::from_secs(10), f).await
}

async fn register_ready(s: &TestApiServer, name: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = s
        .nodes()
        .create(node(name, labels))
        .await
        .unwrap()
        .into_inner();
    n.status = Some(ready_status());
    s.nodes().update_status(n).await.unwrap().into_inner()
}

#[tokio::test]
async fn node_subnets_unique_over_254_then_exhausted_and_reused() {
    let s = TestApiServer::start().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = s.nodes();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (t..254).step_by(8) {
                let n = c
                    .create(node(&format!("node-{i}"), &[]))
                    .await
                    .unwrap()
                    .into_inner();
                out.push(n.spec.unwrap().pod_cidr);
            }
            out
        }));
    }
    let mut cidrs = Vec::new();
    for t in tasks {
        cidrs.extend(t.await.unwrap());
    }
    assert_eq!(cidrs.len(), 254);
    let unique: HashSet<_> = cidrs.iter().cloned().collect();
    assert_eq!(unique.len(), 254, "duplicate subnet handed out");
    let expect: HashSet<_> = (1..=254).map(|n| format!("10.0.{n}.0/24")).collect();
    assert_eq!(unique, expect);

    let e = s.nodes().create(node("node-255", &[])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.message(), "no free node subnet in 10.0.0.0/16");

    let gone = s
        .nodes()
        .get(get("node-17"))
        .await
        .unwrap()
        .into_inner()
        .spec
        .unwrap()
        .pod_cidr;
    s.nodes().delete(del_now("node-17")).await.unwrap();
    let n = s
        .nodes()
        .create(node("node-255", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.spec.unwrap().pod_cidr, gone);
    // And it stays allocated across a restart.
    let mut s = s;
    s.restart().await;
    assert_eq!(
        s.nodes()
            .create(node("node-256", &[]))
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
}

fn ip_of(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone()
}

#[tokio::test]
async fn cluster_ips_allocated_explicit_taken_released() {
    let s = TestApiServer::start().await;
    let mut c = s.services();
    let a = c.create(service("a", "")).await.unwrap().into_inner();
    let b = c.create(service("b", "")).await.unwrap().into_inner();
    assert_eq!(ip_of(&a), "10.96.0.1");
    assert_eq!(ip_of(&b), "10.96.0.2");
    let x = c
        .create(service("x", "10.96.10.10"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ip_of(&x), "10.96.10.10");
    let e = c.create(service("y", "10.96.10.10")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "spec.cluster_ip: 10.96.10.10 is already allocated to default/x"
    );
    let e = c.create(service("z", "10.96.0.1")).await.unwrap_err();
    assert!(
        e.message().contains("already allocated to default/a"),
        "{}",
        e.message()
    );
    // Nothing was written for the refused ones.
    assert_eq!(c.get(get("y")).await.unwrap_err().code(), Code::NotFound);

    c.delete(del_now("x")).await.unwrap();
    c.delete(del_now("a")).await.unwrap();
    let y = c
        .create(service("y", "10.96.10.10"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ip_of(&y), "10.96.10.10");
    let d = c.create(service("d", "")).await.unwrap().into_inner();
    assert_eq!(ip_of(&d), "10.96.0.1", "released IP is reused");
}

async fn pod_status(s: &TestApiServer, name: &str) -> PodStatus {
    s.pods()
        .get(get(name))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

async fn node_of(s: &TestApiServer, pod: &str) -> Option<String> {
    let p = s.pods().get(get(pod)).await.ok()?.into_inner();
    let n = p.spec.unwrap().node_name;
    (!n.is_empty()).then_some(n)
}

#[tokio::test]
async fn scheduler_spreads_honours_selector_and_explains() {
    let s = TestApiServer::start().await;
    // No nodes at all.
    s.pods().create(pod("early", &[])).await.unwrap();
    let st = pod_status(&s, "early").await;
    assert_eq!(
        (st.phase.as_str(), st.reason.as_str()),
        ("Pending", "Unschedulable")
    );
    assert!(
        st.message.starts_with("0/0 nodes are available"),
        "{}",
        st.message
    );

    register_ready(&s, "n1", &[]).await;
    register_ready(&s, "n2", &[("disk", "ssd")]).await;
    register_ready(&s, "n3", &[]).await;
    // A node that never reported Ready.
    s.nodes().create(node("n4", &[])).await.unwrap();
    // The pending pod is retried when nodes change.
    eventually("early pod scheduled", || async {
        node_of(&s, "early").await
    })
    .await;

    for i in 0..5 {
        s.pods().create(pod(&format!("p{i}"), &[])).await.unwrap();
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..5 {
        let n = eventually("pod scheduled", || async {
            node_of(&s, &format!("p{i}")).await
        })
        .await;
        *per_node.entry(n).or_default() += 1;
    }
    let early = node_of(&s, "early").await.unwrap();
    *per_node.entry(early).or_default() += 1;
    assert_eq!(
        per_node.values().cloned().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{per_node:?}"
    );
    assert!(!per_node.contains_key("n4"));

    let mut sel = pod("ssd", &[]);
    sel.spec
        .as_mut()
        .unwrap()
        .node_selector
        .insert("disk".into(), "ssd".into());
    s.pods().create(sel).await.unwrap();
    assert_eq!(
        eventually("ssd pod", || async { node_of(&s, "ssd").await }).await,
        "n2"
    );

    let mut nv = pod("nvme", &[]);
    nv.spec
        .as_mut()
        .unwrap()
        .node_selector
        .insert("disk".into(), "nvme".into());
    s.pods().create(nv).await.unwrap();
    let st = pod_status(&s, "nvme").await;
    assert_eq!(st.reason, "Unschedulable");
    assert_eq!(
        st.message,
        "0/4 nodes are available: 1 not ready, 3 did not match node selector."
    );

    // Cordoned nodes are skipped and counted.
    let mut n1 = s.nodes().get(get("n1")).await.unwrap().into_inner();
    n1.spec.as_mut().unwrap().unschedulable = true;
    s.nodes().update(n1).await.unwrap();
    let msg = eventually("message updated", || async {
        let st = pod_status(&s, "nvme").await;
        st.message.contains("unschedulable").then_some(st.message)
    })
    .await;
    assert_eq!(
        msg,
        "0/4 nodes are available: 1 not ready, 1 unschedulable, 2 did not match node selector."
    );

    // Labelling a node makes it fit.
    let mut n3 = s.nodes().get(get("n3")).await.unwrap().into_inner();
    n3.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("disk".into(), "nvme".into());
    s.nodes().update(n3).await.unwrap();
    assert_eq!(
        eventually("nvme pod", || async { node_of(&s, "nvme").await }).await,
        "n3"
    );
    let st = pod_status(&s, "nvme").await;
    assert_eq!(st.reason, "", "Unschedulable reason cleared once bound");
}

async fn set_running(s: &TestApiServer, name: &str, ip: &str) {
    let mut p = s.pods().get(get(name)).await.unwrap().into_inner();
    p.status = Some(PodStatus {
        phase: "Running".into(),
        pod_ip: ip.into(),
        ..Default::default()
    });
    s.pods().update_status(p).await.unwrap();
}

/// The ready addresses of Endpoints `svc` once they are `want` (the endpoints
/// controller writes them asynchronously, one commit after the change).
async fn addresses_become(s: &TestApiServer, svc: &str, want: Vec<(&str, &str, &str)>) {
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(a, b, c)| (a.into(), b.into(), c.into()))
        .collect();
    eventually(&format!("addresses of {svc} = {want:?}"), || async {
        let ep = s.endpoints().get(get(svc)).await.ok()?.into_inner();
        (addresses(&ep) == want).then_some(())
    })
    .await
}

fn addresses(ep: &Endpoints) -> Vec<(String, String, String)> {
    ep.subsets
        .iter()
        .flat_map(|ss| {
            ss.addresses
                .iter()
                .map(|a| (a.ip.clone(), a.node_name.clone(), a.pod_name.clone()))
        })
        .collect()
}

#[tokio::test]
async fn endpoints_follow_pods_and_service() {
    let s = TestApiServer::start().await;
    let svc = s
        .services()
        .create(Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![
                    ServicePort {
                        name: "http".into(),
                        port: 80,
                        target_port: 8080,
                        ..Default::default()
                    },
                    ServicePort {
                        name: "dns".into(),
                        port: 53,
                        protocol: "UDP".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .into_inner();
    // Made (empty) by the controller before the watch starts: the watch sees changes.
    addresses_become(&s, "web", vec![]).await;
    let mut w = s
        .endpoints()
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    for (name, app, node) in [
        ("a", "web", "n1"),
        ("b", "web", "n2"),
        ("c", "db", "n1"),
        ("d", "web", "n1"),
    ] {
        let mut p = pod(name, &[("app", app)]);
        p.spec.as_mut().unwrap().node_name = node.into();
        s.pods().create(p).await.unwrap();
    }
    addresses_become(&s, "web", vec![]).await; // pods not running yet
    set_running(&s, "a", "10.0.1.10").await;
    set_running(&s, "b", "10.0.2.9").await;
    set_running(&s, "c", "10.0.1.11").await;
    set_running(&s, "d", "10.0.1.2").await;
    addresses_become(
        &s,
        "web",
        vec![
            ("10.0.1.2", "n1", "d"),
            ("10.0.1.10", "n1", "a"),
            ("10.0.2.9", "n2", "b"),
        ],
    )
    .await;
    let ep = s.endpoints().get(get("web")).await.unwrap().into_inner();
    let ports: Vec<_> = ep.subsets[0]
        .ports
        .iter()
        .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("http".into(), 8080, "TCP".into()),
            ("dns".into(), 53, "UDP".into())
        ]
    );
    // The watch saw the changes.
    let e = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.r#type, EventType::Modified as i32);

    // Label change removes a pod; terminating pods are removed; a failed pod too.
    let mut a = s.pods().get(get("a")).await.unwrap().into_inner();
    a.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "other".into());
    s.pods().update(a).await.unwrap();
    s.pods().delete(del("b")).await.unwrap();
    addresses_become(&s, "web", vec![("10.0.1.2", "n1", "d")]).await;
    let mut d = s.pods().get(get("d")).await.unwrap().into_inner();
    d.status.as_mut().unwrap().phase = "Failed".into();
    s.pods().update_status(d).await.unwrap();
    eventually("no ready addresses → no subsets", || async {
        let ep = s.endpoints().get(get("web")).await.ok()?.into_inner();
        ep.subsets.is_empty().then_some(())
    })
    .await;

    // Service selector change: recomputed.
    let mut svc2 = svc.clone();
    svc2.metadata.as_mut().unwrap().resource_version = 0;
    svc2.spec.as_mut().unwrap().selector = [("app".to_string(), "db".to_string())].into();
    s.services().update(svc2).await.unwrap();
    addresses_become(&s, "web", vec![("10.0.1.11", "n1", "c")]).await;

    // Deleting the service deletes its Endpoints.
    s.services().delete(del_now("web")).await.unwrap();
    eventually("endpoints of web gone", || async {
        (s.endpoints().get(get("web")).await.err()?.code() == Code::NotFound).then_some(())
    })
    .await;
}

#[tokio::test]
async fn graceful_pod_deletion_flow() {
    let s = TestApiServer::start().await;
    s.nodes().create(node("n1", &[])).await.unwrap();
    // Bound to a node that does not exist: nobody would finish it, so it goes at once.
    let mut ghost = pod("ghost", &[]);
    ghost.spec.as_mut().unwrap().node_name = "ghost-node".into();
    s.pods().create(ghost).await.unwrap();
    s.pods().delete(del("ghost")).await.unwrap();
    assert_eq!(
        s.pods().get(get("ghost")).await.unwrap_err().code(),
        Code::NotFound
    );

    let mut p = pod("g", &[]);
    p.spec.as_mut().unwrap().node_name = "n1".into();
    p.spec.as_mut().unwrap().termination_grace_period_seconds = 7;
    s.pods().create(p).await.unwrap();
    let mut w = s
        .pods()
        .watch(WatchRequest {
            node_name: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let marked = s.pods().delete(del("g")).await.unwrap().into_inner();
    let m = marked.metadata.as_ref().unwrap();
    assert!(m.deletion_timestamp > 0);
    assert_eq!(m.deletion_grace_period_seconds, 7);
    let e = w.next().await.unwrap().unwrap();
    assert_eq!(e.r#type, EventType::Modified as i32);
    assert_eq!(
        e.object.unwrap().metadata.unwrap().deletion_timestamp,
        m.deletion_timestamp
    );
    // Deleting again does not restart the clock.
    let again = s.pods().delete(del("g")).await.unwrap().into_inner();
    assert_eq!(again, marked);
    // The agent finishes it with grace 0.
    s.pods().delete(del_now("g")).await.unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!(e.r#type, EventType::Deleted as i32);
    assert_eq!(
        s.pods().get(get("g")).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn node_health_not_ready_then_eviction_and_rescheduling() {
    let cfg = apiserver::Config {
        node_grace_period: Duration::from_millis(600),
        pod_eviction_timeout: Duration::from_millis(600),
        ..Default::default()
    };
    let s = TestApiServer::start_with(cfg).await;
    register_ready(&s, "dead", &[]).await;
    for i in 0..2 {
        s.pods().create(pod(&format!("p{i}"), &[])).await.unwrap();
    }
    // A terminating pod on the dead node is removed by the eviction.
    let mut t = pod("terminating", &[]);
    t.spec.as_mut().unwrap().node_name = "dead".into();
    s.pods().create(t).await.unwrap();
    s.pods().delete(del("terminating")).await.unwrap();
    for i in 0..2 {
        assert_eq!(
            eventually("bound", || async { node_of(&s, &format!("p{i}")).await }).await,
            "dead"
        );
    }
    // A second node keeps heartbeating.
    register_ready(&s, "alive", &[]).await;
    let hb = {
        let c = s.nodes();
        tokio::spawn(async move {
            let mut c = c;
            loop {
                if let Ok(n) = c.get(get("alive")).await {
                    let mut n = n.into_inner();
                    n.status = Some(ready_status());
                    let _ = c.update_status(n).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let cond = eventually("dead node NotReady", || async {
        let n = s.nodes().get(get("dead")).await.unwrap().into_inner();
        n.status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.r#type == "Ready" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason, "NodeStatusUnknown");
    assert_eq!(cond.message, "kubelet stopped posting node status");
    for i in 0..2 {
        let n = eventually("rescheduled", || async {
            node_of(&s, &format!("p{i}")).await.filter(|n| n == "alive")
        })
        .await;
        assert_eq!(n, "alive");
    }
    assert_eq!(
        s.pods().get(get("terminating")).await.unwrap_err().code(),
        Code::NotFound
    );
    let alive = s.nodes().get(get("alive")).await.unwrap().into_inner();
    assert!(alive
        .status
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.r#type == "Ready" && c.status == "True"));
    hb.abort();
}
