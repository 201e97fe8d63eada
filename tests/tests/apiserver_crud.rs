//! Apiserver CRUD over real gRPC + real sled: every kind, conflicts, defaults.

use std::time::Duration;

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{del, eventually, get, meta, selected, service};
use tonic::transport::Channel;
use tonic::Code;

fn pod(name: &str) -> Pod {
    Pod {
        metadata: meta(name),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: "/bin/sleep".into(),
                ports: vec![ContainerPort {
                    container_port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

#[tokio::test]
async fn pod_crud_defaults_and_conflicts() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    let mut p = pod("web");
    p.metadata.as_mut().unwrap().uid = "client-uid".into();
    p.metadata.as_mut().unwrap().resource_version = 77;
    p.status = Some(PodStatus {
        phase: "Running".into(),
        ..Default::default()
    });
    let created = pods.create(p.clone()).await.unwrap().into_inner();
    let m = created.metadata.clone().unwrap();
    assert_eq!(m.namespace, "default");
    assert_ne!(m.uid, "client-uid");
    assert_eq!(m.uid.len(), 36);
    assert!(m.resource_version > 0);
    assert!(m.creation_timestamp > 0);
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.restart_policy, "Always");
    assert_eq!(spec.termination_grace_period_seconds, 30);
    assert_eq!(spec.containers[0].ports[0].protocol, "TCP");
    assert_eq!(created.status.clone().unwrap().phase, "Pending");

    let e = pods.create(p.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // No nodes: the scheduler already marked it Unschedulable (a later revision).
    let got = pods.get(get("web")).await.unwrap().into_inner();
    assert_eq!(got.metadata.as_ref().unwrap().uid, m.uid);
    assert_eq!(got.spec, created.spec);
    assert_eq!(got.status.as_ref().unwrap().reason, "Unschedulable");
    let e = pods.get(get("nope")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Update labels with the right version.
    let mut upd = got.clone();
    upd.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "web".into());
    let updated = pods.update(upd.clone()).await.unwrap().into_inner();
    let rv2 = updated.metadata.as_ref().unwrap().resource_version;
    assert!(rv2 > m.resource_version);
    assert_eq!(updated.metadata.as_ref().unwrap().labels["app"], "web");

    // Stale version → ABORTED, nothing written.
    let mut stale = upd.clone();
    stale
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("x".into(), "y".into());
    let e = pods.update(stale).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(
        e.message().contains("the object has been modified"),
        "{}",
        e.message()
    );
    let now = pods.get(get("web")).await.unwrap().into_inner();
    assert_eq!(now, updated);

    // Spec is immutable except binding.
    let mut bad = now.clone();
    bad.spec.as_mut().unwrap().containers[0].image = "/bin/other".into();
    let e = pods.update(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("spec"), "{}", e.message());
    let mut bind = now.clone();
    bind.metadata.as_mut().unwrap().resource_version = 0;
    bind.spec.as_mut().unwrap().node_name = "node-a".into();
    let bound = pods.update(bind).await.unwrap().into_inner();
    assert_eq!(bound.spec.as_ref().unwrap().node_name, "node-a");
    // Leaving node_name empty in an Update keeps the binding (re-applied manifests).
    let mut relabel = bound.clone();
    relabel.spec.as_mut().unwrap().node_name.clear();
    relabel
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("v".into(), "2".into());
    let bound = pods.update(relabel).await.unwrap().into_inner();
    assert_eq!(bound.spec.as_ref().unwrap().node_name, "node-a");
    let mut rebind = bound.clone();
    rebind.spec.as_mut().unwrap().node_name = "node-b".into();
    let e = pods.update(rebind).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("spec.node_name"), "{}", e.message());

    // UpdateStatus changes status only.
    let mut st = bound.clone();
    st.status = Some(PodStatus {
        phase: "Running".into(),
        pod_ip: "10.0.1.2".into(),
        ..Default::default()
    });
    st.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("ignored".into(), "x".into());
    let s2 = pods.update_status(st).await.unwrap().into_inner();
    assert_eq!(s2.status.as_ref().unwrap().phase, "Running");
    assert!(!s2.metadata.as_ref().unwrap().labels.contains_key("ignored"));

    // Delete with stale version → ABORTED; missing → NOT_FOUND.
    let mut d = del("web");
    d.resource_version = 1;
    assert_eq!(pods.delete(d).await.unwrap_err().code(), Code::Aborted);
    assert_eq!(
        pods.delete(del("nope")).await.unwrap_err().code(),
        Code::NotFound
    );

    // Bound pod (its node exists): graceful delete marks it; grace 0 removes it.
    s.nodes()
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "node-a".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let marked = pods.delete(del("web")).await.unwrap().into_inner();
    let mm = marked.metadata.unwrap();
    assert!(mm.deletion_timestamp > 0);
    assert_eq!(mm.deletion_grace_period_seconds, 30);
    assert!(pods.get(get("web")).await.is_ok());
    let mut now_del = del("web");
    now_del.grace_period_seconds = 0;
    pods.delete(now_del).await.unwrap();
    assert_eq!(
        pods.get(get("web")).await.unwrap_err().code(),
        Code::NotFound
    );

    // Unbound pod deletes at once.
    pods.create(pod("unbound")).await.unwrap();
    pods.delete(del("unbound")).await.unwrap();
    assert_eq!(
        pods.get(get("unbound")).await.unwrap_err().code(),
        Code::NotFound
    );
}

/// How many pods a List returns.
async fn listed(pods: &mut pod_api_client::PodApiClient<Channel>, req: ListRequest) -> usize {
    pods.list(req).await.unwrap().into_inner().items.len()
}

#[tokio::test]
async fn list_sorted_filtered_with_revision() {
    let s = TestApiServer::start().await;
    s.create_namespace("a").await;
    s.create_namespace("b").await;
    let mut pods = s.pods();
    for (ns, name, app, node) in [
        ("b", "z", "x", "n1"),
        ("a", "y", "x", "n2"),
        ("a", "b", "y", "n1"),
        ("default", "c", "x", ""),
    ] {
        let mut p = pod(name);
        let m = p.metadata.as_mut().unwrap();
        m.namespace = ns.into();
        m.labels.insert("app".into(), app.into());
        p.spec.as_mut().unwrap().node_name = node.into();
        pods.create(p).await.unwrap();
    }
    let all = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = all
        .items
        .iter()
        .map(|p| {
            let m = p.metadata.as_ref().unwrap();
            format!("{}/{}", m.namespace, m.name)
        })
        .collect();
    assert_eq!(names, ["a/b", "a/y", "b/z", "default/c"]);
    let max_rv = all
        .items
        .iter()
        .map(|p| p.metadata.as_ref().unwrap().resource_version)
        .max()
        .unwrap();
    assert!(all.resource_version >= max_rv);

    assert_eq!(
        listed(
            &mut pods,
            ListRequest {
                namespace: "a".into(),
                ..Default::default()
            }
        )
        .await,
        2
    );
    assert_eq!(listed(&mut pods, selected("app=x")).await, 3);
    assert_eq!(listed(&mut pods, selected("app in (y),!nope")).await, 1);
    assert_eq!(
        listed(
            &mut pods,
            ListRequest {
                node_name: "n1".into(),
                ..Default::default()
            }
        )
        .await,
        2
    );
    let e = pods.list(selected("a in b")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("label_selector"), "{}", e.message());
}

#[tokio::test]
async fn node_service_endpoints_crud() {
    let s = TestApiServer::start().await;
    let mut nodes = s.nodes();
    let n = nodes
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "node-1".into(),
                namespace: "ignored".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                address: "192.168.1.10".into(),
                pod_cidr: "1.2.3.0/24".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.metadata.as_ref().unwrap().namespace, "");
    assert_eq!(n.spec.as_ref().unwrap().pod_cidr, "10.0.1.0/24");
    // pod_cidr is server-owned: kept across Update.
    let mut u = n.clone();
    u.spec.as_mut().unwrap().pod_cidr = "10.0.99.0/24".into();
    u.spec.as_mut().unwrap().unschedulable = true;
    let u = nodes.update(u).await.unwrap().into_inner();
    assert_eq!(u.spec.as_ref().unwrap().pod_cidr, "10.0.1.0/24");
    assert!(u.spec.as_ref().unwrap().unschedulable);
    // UpdateStatus stamps the heartbeat with the server's clock.
    let mut st = u.clone();
    st.status = Some(NodeStatus {
        last_heartbeat_time: 5,
        daemon_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    });
    let st = nodes.update_status(st).await.unwrap().into_inner();
    assert!(st.status.as_ref().unwrap().last_heartbeat_time > 1_700_000_000_000);
    assert_eq!(nodes.get(get("node-1")).await.unwrap().into_inner(), st);
    assert_eq!(
        nodes
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .len(),
        1
    );
    nodes.delete(del("node-1")).await.unwrap();
    assert_eq!(
        nodes.get(get("node-1")).await.unwrap_err().code(),
        Code::NotFound
    );

    let mut svcs = s.services();
    let svc = svcs.create(service("web", "")).await.unwrap().into_inner();
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.r#type, "ClusterIP");
    assert_eq!(spec.ports[0].protocol, "TCP");
    assert_eq!(spec.ports[0].target_port, 80);
    assert_eq!(spec.cluster_ip, "10.96.0.1");
    // cluster_ip immutable; empty keeps it.
    let mut u = svc.clone();
    u.spec.as_mut().unwrap().cluster_ip = "10.96.0.9".into();
    let e = svcs.update(u).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("spec.cluster_ip"),
        "{}",
        e.message()
    );
    let mut u = svc.clone();
    u.spec.as_mut().unwrap().cluster_ip.clear();
    u.spec.as_mut().unwrap().ports[0].target_port = 8080;
    let u = svcs.update(u).await.unwrap().into_inner();
    assert_eq!(u.spec.as_ref().unwrap().cluster_ip, "10.96.0.1");
    assert_eq!(u.spec.as_ref().unwrap().ports[0].target_port, 8080);

    // The endpoints controller made an (empty) Endpoints for the selector service.
    let mut eps = s.endpoints();
    let ep = eventually("endpoints of web", Duration::from_secs(10), || {
        let mut eps = eps.clone();
        async move { eps.get(get("web")).await.ok().map(|e| e.into_inner()) }
    })
    .await;
    assert!(ep.subsets.is_empty());
    // User-managed Endpoints (no service) CRUD.
    let mine = eps
        .create(Endpoints {
            metadata: meta("manual"),
            subsets: vec![EndpointSubset {
                addresses: vec![EndpointAddress {
                    ip: "10.0.1.5".into(),
                    ..Default::default()
                }],
                ports: vec![EndpointPort {
                    port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.subsets[0].ports[0].protocol, "TCP");
    let mut m2 = mine.clone();
    m2.subsets.clear();
    let m2 = eps.update(m2).await.unwrap().into_inner();
    assert!(m2.subsets.is_empty());
    eps.delete(del("manual")).await.unwrap();

    // Deleting the service deletes its Endpoints.
    svcs.delete(del("web")).await.unwrap();
    eventually("endpoints of web gone", Duration::from_secs(10), || {
        let mut eps = eps.clone();
        async move { (eps.get(get("web")).await.err()?.code() == Code::NotFound).then_some(()) }
    })
    .await;
    assert_eq!(
        svcs.get(get("web")).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn oversized_message_is_refused() {
    let s = TestApiServer::start().await;
    let mut p = pod("big");
    p.metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert("x".into(), "a".repeat(5 << 20));
    let e = s.pods().create(p).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
}

/// Concurrent read-modify-write with resource_version: no lost update; losers get ABORTED.
#[tokio::test]
async fn optimistic_concurrency_loses_no_update() {
    let s = TestApiServer::start().await;
    let mut svc = s.services();
    svc.create(Service {
        metadata: Some(ObjectMeta {
            name: "counter".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = s.services();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut conflicts) = (0, 0);
            while done < 25 {
                let mut cur = c.get(get("counter")).await.unwrap().into_inner();
                let m = cur.metadata.as_mut().unwrap();
                let n: u64 = m
                    .annotations
                    .get("n")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                m.annotations.insert("n".into(), (n + 1).to_string());
                match c.update(cur).await {
                    Ok(_) => done += 1,
                    Err(e) if e.code() == Code::Aborted => conflicts += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let fin = svc.get(get("counter")).await.unwrap().into_inner();
    assert_eq!(
        fin.metadata.unwrap().annotations["n"],
        "200",
        "{conflicts} conflicts"
    );
}
