//! Issue 9, points 2 (validation side), 4 and 7, each on a real apiserver: bounded
//! grace periods and watch revisions, addresses that could take over the datapath,
//! controller-owned Endpoints, names in Endpoints and container ports, and bounded
//! error messages (also for an undecodable body: INVALID_ARGUMENT).

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{del, eventually, get, meta, pod, service};
use kube_lite_tests::raw::RawClient;
use prost::Message;
use tonic::Code;

/// The bound every status message must keep (apiserver::error::MAX_MESSAGE_BYTES).
const MAX_MESSAGE: usize = 1024;

fn assert_invalid(e: &tonic::Status, field: &str, rule: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
    assert!(
        e.message().starts_with(&format!("{field}: ")) && e.message().contains(rule),
        "{field}: {}",
        e.message()
    );
}

#[tokio::test]
async fn grace_periods_and_watch_revisions_are_bounded() {
    let s = TestApiServer::start().await;
    // i64::MAX grace used to pass and panic the agent at Instant::now() + grace.
    let mut p = pod("forever", &[]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = i64::MAX;
    let e = s.pods().create(p).await.unwrap_err();
    assert_invalid(&e, "spec.termination_grace_period_seconds", "86400");
    let mut p = pod("day", &[]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = 86_400;
    s.pods().create(p).await.expect("one day is allowed");

    for g in [i64::MAX, 86_401, -2, i64::MIN] {
        let e = s
            .pods()
            .delete(DeleteRequest {
                name: "day".into(),
                grace_period_seconds: g,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&e, "grace_period_seconds", "86400");
    }
    s.pods()
        .get(get("day"))
        .await
        .expect("refused deletes left it");
    s.pods().delete(del("day")).await.expect("-1 (own grace)");

    // Revision u64::MAX used to wrap at +1.
    let e = s
        .pods()
        .watch(WatchRequest {
            resource_version: u64::MAX,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "resource_version", "at most 9223372036854775807");
    let e = s
        .pods()
        .watch(WatchRequest {
            bookmark_interval_ms: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "bookmark_interval_ms", "one hour");
    // The server is fine and a normal watch works.
    s.pods()
        .watch(WatchRequest::default())
        .await
        .expect("watch");
}

fn node(name: &str, address: &str) -> Node {
    Node {
        metadata: meta(name),
        spec: Some(NodeSpec {
            address: address.into(),
            ..Default::default()
        }),
        status: None,
    }
}

fn endpoints(name: &str, ip: &str) -> Endpoints {
    Endpoints {
        metadata: meta(name),
        subsets: vec![EndpointSubset {
            addresses: vec![EndpointAddress {
                ip: ip.into(),
                ..Default::default()
            }],
            ports: vec![EndpointPort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn addresses_that_would_take_over_the_datapath_are_refused() {
    let s = TestApiServer::start().await;
    let n1 = s
        .nodes()
        .create(node("n1", "192.168.0.2"))
        .await
        .unwrap()
        .into_inner();

    // A ClusterIP equal to a peer's underlay address (it cut the VXLAN tunnel), or
    // anywhere outside the service CIDR, is refused; one inside it is fine.
    for ip in [
        "192.168.0.2",
        "172.17.10.10",
        "10.0.1.5",
        "10.96.0.0",
        "10.96.255.255",
    ] {
        let e = s.services().create(service("vip", ip)).await.unwrap_err();
        assert_invalid(&e, "spec.cluster_ip", "");
    }
    let e = s
        .services()
        .create(service("vip", "192.168.0.2"))
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("not a host address of the service range 10.96.0.0/16"),
        "{}",
        e.message()
    );
    let v = s
        .services()
        .create(service("vip", "10.96.10.10"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.spec.unwrap().cluster_ip, "10.96.10.10");

    // Node addresses must be unicast: these became VXLAN flood destinations.
    for bad in [
        "255.255.255.255",
        "127.0.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "169.254.0.1",
    ] {
        let e = s.nodes().create(node("n2", bad)).await.unwrap_err();
        assert_invalid(&e, "spec.address", "may not be used");
        let mut up = n1.clone();
        up.spec.as_mut().unwrap().address = bad.into();
        let e = s.nodes().update(up).await.unwrap_err();
        assert_invalid(&e, "spec.address", "may not be used");
        let mut st = n1.clone();
        st.status = Some(NodeStatus {
            address: bad.into(),
            ..Default::default()
        });
        let e = s.nodes().update_status(st).await.unwrap_err();
        assert_invalid(&e, "status.address", "may not be used");
    }
    let mut st = n1.clone();
    st.status = Some(NodeStatus {
        daemon_endpoint: "gopher://x/\n".into(),
        ..Default::default()
    });
    let e = s.nodes().update_status(st).await.unwrap_err();
    assert_invalid(&e, "status.daemon_endpoint", "");

    // Endpoints addresses: these became DNAT targets.
    for bad in [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "169.254.1.1",
    ] {
        let e = s
            .endpoints()
            .create(endpoints("manual", bad))
            .await
            .unwrap_err();
        assert_invalid(&e, "subsets[0].addresses[0].ip", "may not be used");
    }
    // And pod IPs, which the endpoints controller copies into Endpoints.
    let p = s.pods().create(pod("p", &[])).await.unwrap().into_inner();
    let mut p = p;
    p.metadata.as_mut().unwrap().resource_version = 0; // the scheduler may have written it
    p.status = Some(PodStatus {
        phase: "Running".into(),
        pod_ip: "127.0.0.1".into(),
        ..Default::default()
    });
    let e = s.pods().update_status(p).await.unwrap_err();
    assert_invalid(&e, "status.pod_ip", "may not be used");

    // Nothing refused was stored.
    let nodes = s.nodes().list(ListRequest::default()).await.unwrap();
    assert_eq!(nodes.into_inner().items.len(), 1);
    let got = s.nodes().get(get("n1")).await.unwrap().into_inner();
    assert_eq!(got.spec.unwrap().address, "192.168.0.2");
    let svcs = s.services().list(ListRequest::default()).await.unwrap();
    assert_eq!(svcs.into_inner().items.len(), 1);
}

#[tokio::test]
async fn endpoint_and_port_names_are_validated() {
    let s = TestApiServer::start().await;
    let mut e = endpoints("manual", "10.0.1.5");
    e.subsets[0].addresses[0].node_name = "Node One".into();
    let err = s.endpoints().create(e).await.unwrap_err();
    assert_invalid(
        &err,
        "subsets[0].addresses[0].node_name",
        "DNS-1123 subdomain",
    );
    let mut e = endpoints("manual", "10.0.1.5");
    e.subsets[0].addresses[0].pod_name = "pod\u{1b}]0;owned\u{7}".into();
    let err = s.endpoints().create(e).await.unwrap_err();
    assert_invalid(&err, "subsets[0].addresses[0].pod_name", "DNS-1123 label");
    let mut e = endpoints("manual", "10.0.1.5");
    e.subsets[0].ports[0].name = "HTTP!".into();
    let err = s.endpoints().create(e).await.unwrap_err();
    assert_invalid(&err, "subsets[0].ports[0].name", "DNS-1123 label");
    let mut e = endpoints("manual", "10.0.1.5");
    e.subsets[0].ports.push(EndpointPort {
        port: 81,
        ..Default::default()
    });
    let err = s.endpoints().create(e).await.unwrap_err();
    assert_invalid(&err, "subsets[0].ports[0].name", "more than one port");
    let mut e = endpoints("manual", "10.0.1.5");
    e.subsets[0].addresses[0].node_name = "node-1".into();
    e.subsets[0].addresses[0].pod_name = "web-1".into();
    e.subsets[0].ports[0].name = "http".into();
    s.endpoints().create(e).await.expect("valid names");

    for bad in ["Http", "a--b", "sixteen-chars-xx", "8080"] {
        let mut p = pod("p", &[]);
        p.spec.as_mut().unwrap().containers[0].ports = vec![ContainerPort {
            name: bad.into(),
            container_port: 80,
            protocol: String::new(),
        }];
        let err = s.pods().create(p).await.unwrap_err();
        assert_invalid(&err, "spec.containers[0].ports[0].name", "IANA_SVC_NAME");
    }
    let mut p = pod("p", &[]);
    p.spec.as_mut().unwrap().containers[0].ports = vec![ContainerPort {
        name: "http".into(),
        container_port: 80,
        protocol: String::new(),
    }];
    s.pods().create(p).await.expect("a valid port name");
}

#[tokio::test]
async fn endpoints_of_a_selector_service_belong_to_the_controller() {
    let s = TestApiServer::start().await;
    let mut eps = s.endpoints();
    // Selector service: the controller's Endpoints refuse every user write.
    s.services().create(service("web", "")).await.unwrap();
    // Made by the controller (asynchronously).
    let owned = eventually(
        "endpoints of web",
        std::time::Duration::from_secs(10),
        || {
            let mut eps = eps.clone();
            async move { eps.get(get("web")).await.ok().map(|e| e.into_inner()) }
        },
    )
    .await;
    let mut hijack = owned.clone();
    hijack.subsets = endpoints("web", "10.0.9.9").subsets;
    for e in [
        eps.update(hijack.clone()).await.unwrap_err(),
        eps.update_status(hijack.clone()).await.unwrap_err(),
        eps.delete(del("web")).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("managed by the endpoints controller")
                && e.message().contains("has a selector"),
            "{}",
            e.message()
        );
    }
    assert_eq!(eps.get(get("web")).await.unwrap().into_inner(), owned);

    // Created before its selector service: refused too once the service exists.
    let mut sel = service("db", "");
    sel.spec.as_mut().unwrap().selector.clear();
    s.services().create(sel).await.unwrap();
    // Selector-less service: the user manages them (create, update, delete).
    eps.create(endpoints("db", "10.0.1.7"))
        .await
        .expect("user-managed");
    let mut mine = eps.get(get("db")).await.unwrap().into_inner();
    mine.subsets[0].addresses[0].ip = "10.0.1.8".into();
    eps.update(mine).await.expect("user-managed update");
    eps.delete(del("db")).await.expect("user-managed delete");
    let e = eps.create(endpoints("web", "10.0.1.9")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn error_messages_are_bounded() {
    let s = TestApiServer::start().await;
    let huge = "x".repeat(100_000);
    // NOT_FOUND / INVALID_ARGUMENT, not RESOURCE_EXHAUSTED from an oversized header.
    let e = s.pods().get(get(&huge)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{:?}", e.code());
    assert!(e.message().len() <= 200, "{}", e.message().len());
    assert!(e.message().ends_with("…\" not found"), "{}", e.message());
    let e = s.pods().delete(del(&huge)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = s.pods().create(pod(&huge, &[])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut p = pod("p", &[("app", &huge)]);
    let e = s.pods().create(p.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() <= MAX_MESSAGE, "{}", e.message().len());
    assert!(e.message().contains("(100000 bytes)"), "{}", e.message());
    p.metadata.as_mut().unwrap().labels.clear();
    p.spec.as_mut().unwrap().restart_policy = format!("\u{1b}[2J{huge}");
    let e = s.pods().create(p).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() <= MAX_MESSAGE);
    let e = s
        .pods()
        .list(ListRequest {
            label_selector: format!("a in ({huge}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() <= MAX_MESSAGE);

    // An undecodable body is the client's fault.
    let mut raw = RawClient::new(s.channel());
    for body in [
        vec![0xff, 0xff, 0xff],
        vec![0x0a, 0x05, 0x0a, 0x02, 0xc3, 0x28, 0x00], // invalid UTF-8 in a name
        vec![0x0a, 0x7f],                               // truncated
    ] {
        let e = raw
            .unary("/kubelite.v1.PodApi/Create", body)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message()
                .starts_with("request body: failed to decode Protobuf message"),
            "{}",
            e.message()
        );
        let e = raw
            .open_stream("/kubelite.v1.NodeApi/Watch", vec![0xff; 9])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    // A valid raw body still works through the same layer.
    let ok = raw
        .unary(
            "/kubelite.v1.PodApi/Create",
            pod("raw", &[]).encode_to_vec(),
        )
        .await
        .expect("create");
    assert_eq!(Pod::decode(&ok[..]).unwrap().metadata.unwrap().name, "raw");
}
