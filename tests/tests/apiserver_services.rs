//! Services beyond ClusterIP over real gRPC + real sled (issue 12): node port
//! allocation (range, explicit, taken, kept across updates, freed), headless Services,
//! named target ports resolved per pod into the Endpoints, the reserved cluster DNS
//! address, validation of the new fields.

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{del_now, get, meta, service};
use tonic::Code;

fn node_port_service(name: &str, node_port: i32) -> Service {
    let mut s = service(name, "");
    let spec = s.spec.as_mut().unwrap();
    spec.r#type = "NodePort".into();
    spec.ports[0].node_port = node_port;
    s
}

fn node_ports(s: &Service) -> Vec<i32> {
    s.spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| p.node_port)
        .collect()
}

#[tokio::test]
async fn node_ports_are_allocated_honoured_refused_and_freed() {
    let s = TestApiServer::start_with(apiserver::Config {
        node_port_range: 30000..=30002,
        ..Default::default()
    })
    .await;
    let mut svcs = s.services();
    let a = svcs
        .create(node_port_service("a", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_ports(&a), vec![30000]);
    let spec = a.spec.as_ref().unwrap();
    assert_eq!(spec.external_traffic_policy, "Cluster", "defaulted");
    assert_eq!(spec.session_affinity, "None", "defaulted");
    let b = svcs
        .create(node_port_service("b", 30002))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_ports(&b), vec![30002], "explicit and free: honoured");
    let e = svcs
        .create(node_port_service("c", 30002))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("spec.ports[0].node_port: provided port 30002 is already allocated to service default/b"),
        "{}",
        e.message()
    );
    let e = svcs.create(node_port_service("c", 8080)).await.unwrap_err();
    assert!(
        e.message()
            .contains("not in the node port range 30000-30002"),
        "{}",
        e.message()
    );
    // Re-applying without node ports keeps them.
    let mut again = node_port_service("a", 0);
    again.metadata.as_mut().unwrap().labels = [("x".to_string(), "y".to_string())].into();
    let a2 = svcs.update(again).await.unwrap().into_inner();
    assert_eq!(node_ports(&a2), vec![30000]);
    // Type back to ClusterIP frees the port; another Service gets it.
    let mut cip = node_port_service("a", 0);
    cip.spec.as_mut().unwrap().r#type = "ClusterIP".into();
    cip.spec.as_mut().unwrap().external_traffic_policy.clear();
    let a3 = svcs.update(cip).await.unwrap().into_inner();
    assert_eq!(node_ports(&a3), vec![0]);
    let c = svcs
        .create(node_port_service("c", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_ports(&c), vec![30000]);
    // A ClusterIP Service back to NodePort by update gets a new one.
    let a4 = svcs
        .update(node_port_service("a", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_ports(&a4), vec![30001]);
    // Exhausted.
    let e = svcs.create(node_port_service("d", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    // A delete frees.
    svcs.delete(del_now("b")).await.unwrap();
    let d = svcs
        .create(node_port_service("d", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_ports(&d), vec![30002]);
    // Restart: the index is rebuilt from the store.
    drop(svcs);
    let mut s = s;
    s.restart().await;
    let e = s
        .services()
        .create(node_port_service("e", 30001))
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("already allocated to service default/a"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn headless_services_and_the_reserved_dns_address() {
    let s = TestApiServer::start().await;
    let mut svcs = s.services();
    let mut h = service("h", "None");
    h.spec.as_mut().unwrap().ports.clear();
    let h = svcs.create(h).await.unwrap().into_inner();
    assert_eq!(h.spec.as_ref().unwrap().cluster_ip, "None");
    let e = svcs.create(service("dns", "10.96.0.10")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("reserved for the cluster DNS"),
        "{}",
        e.message()
    );
    let mut bad = node_port_service("hn", 0);
    bad.spec.as_mut().unwrap().cluster_ip = "None".into();
    let e = svcs.create(bad).await.unwrap_err();
    assert!(
        e.message()
            .contains("spec.cluster_ip: may be None (headless) only for type ClusterIP"),
        "{}",
        e.message()
    );
    // Node ports on a ClusterIP Service, bad policies: named.
    type Case = (fn(&mut ServiceSpec), &'static str);
    let cases: Vec<Case> = vec![
        (
            |s| s.ports[0].node_port = 30000,
            "spec.ports[0].node_port: may not be set for type ClusterIP",
        ),
        (
            |s| s.external_traffic_policy = "Local".into(),
            "spec.external_traffic_policy: may only be set",
        ),
        (
            |s| s.session_affinity = "Sticky".into(),
            "spec.session_affinity: must be None or ClientIP",
        ),
        (
            |s| {
                s.session_affinity = "ClientIP".into();
                s.session_affinity_timeout_seconds = 100_000;
            },
            "spec.session_affinity_timeout_seconds: must be between 1 and 86400",
        ),
        (
            |s| {
                s.ports[0].target_port_name = "Bad_Name".into();
            },
            "spec.ports[0].target_port_name",
        ),
    ];
    for (i, (mutate, want)) in cases.into_iter().enumerate() {
        let mut svc = service(&format!("bad{i}"), "");
        mutate(svc.spec.as_mut().unwrap());
        let e = svcs.create(svc).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{want}");
        assert!(e.message().contains(want), "{want}: {}", e.message());
    }
    let mut aff = service("aff", "");
    aff.spec.as_mut().unwrap().session_affinity = "ClientIP".into();
    let aff = svcs.create(aff).await.unwrap().into_inner();
    assert_eq!(
        aff.spec.unwrap().session_affinity_timeout_seconds,
        10800,
        "Kubernetes' default"
    );
}

fn running_pod(name: &str, ip: &str, port_name: &str, port: i32) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: "n1".into(),
            containers: vec![Container {
                name: "c".into(),
                image: "/bin/true".into(),
                ports: vec![ContainerPort {
                    name: port_name.into(),
                    container_port: port,
                    protocol: "TCP".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: "Running".into(),
            pod_ip: ip.into(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn named_target_ports_resolve_per_pod_in_the_endpoints() {
    let s = TestApiServer::start().await;
    let mut pods = s.pods();
    for (n, ip, pn, port) in [
        ("a", "10.0.1.2", "http", 8080),
        ("b", "10.0.1.3", "http", 9090),
        ("c", "10.0.1.4", "metrics", 8080),
    ] {
        let p = running_pod(n, ip, pn, port);
        let status = p.status.clone();
        let mut created = pods.create(p).await.unwrap().into_inner();
        created.status = status;
        pods.update_status(created).await.unwrap();
    }
    let mut svc = service("web", "");
    let sp = &mut svc.spec.as_mut().unwrap().ports[0];
    sp.name = "web".into();
    sp.target_port_name = "http".into();
    s.services().create(svc).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let eps = loop {
        let e = s.endpoints().get(get("web")).await.map(|e| e.into_inner());
        if let Ok(e) = e {
            if e.subsets.len() == 2 {
                break e;
            }
        }
        assert!(std::time::Instant::now() < deadline, "endpoints of web");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let got: Vec<(Vec<&str>, i32)> = eps
        .subsets
        .iter()
        .map(|s| {
            (
                s.addresses.iter().map(|a| a.ip.as_str()).collect(),
                s.ports[0].port,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(vec!["10.0.1.2"], 8080), (vec!["10.0.1.3"], 9090)],
        "c has no port named http: no endpoint"
    );
    let _ = meta("unused");
}
