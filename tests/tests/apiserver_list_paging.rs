//! List paging (limit/continue, Kubernetes semantics) and the node-name index, over
//! real gRPC + real sled: pages are consistent at the first page's revision whatever
//! is written meanwhile, tokens are bound to their list and expire clearly, and
//! node-filtered Lists follow bindings, evictions and deletes.

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{del_now, pod};
use tonic::Code;

fn names(l: &PodList) -> Vec<String> {
    l.items
        .iter()
        .map(|p| p.metadata.as_ref().unwrap().name.clone())
        .collect()
}

fn page(limit: u32, token: &str) -> ListRequest {
    ListRequest {
        limit,
        r#continue: token.into(),
        ..Default::default()
    }
}

async fn create_pods(s: &TestApiServer, n: usize, node: &str) {
    for i in 0..n {
        let prefix = if node.is_empty() { "u" } else { node };
        let mut p = pod(&format!("{prefix}-p{i:02}"), &[("app", "x")]);
        p.spec.as_mut().unwrap().node_name = node.into();
        s.pods().create(p).await.expect("create");
    }
}

#[tokio::test]
async fn pages_are_consistent_at_the_first_revision() {
    let s = TestApiServer::start().await;
    create_pods(&s, 25, "").await;
    let all = s.pods().list(page(0, "")).await.unwrap().into_inner();
    assert_eq!(all.items.len(), 25);
    assert_eq!(all.r#continue, "", "no limit: one page");

    let p1 = s.pods().list(page(10, "")).await.unwrap().into_inner();
    assert_eq!(p1.items.len(), 10);
    assert_eq!(p1.remaining_item_count, 15);
    assert!(!p1.r#continue.is_empty());
    assert_eq!(p1.resource_version, all.resource_version);

    // Writes between pages: the rest of the list is still the one of p1's revision.
    s.pods().delete(del_now("u-p24")).await.unwrap();
    s.pods().create(pod("u-p99", &[])).await.unwrap();
    s.pods().create(pod("0-new", &[])).await.unwrap();

    let p2 = s
        .pods()
        .list(page(10, &p1.r#continue))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p2.items.len(), p2.remaining_item_count), (10, 5));
    assert_eq!(p2.resource_version, p1.resource_version);
    let p3 = s
        .pods()
        .list(page(10, &p2.r#continue))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p3.items.len(), 5);
    assert_eq!((p3.r#continue.as_str(), p3.remaining_item_count), ("", 0));
    let mut paged = names(&p1);
    paged.extend(names(&p2));
    paged.extend(names(&p3));
    assert_eq!(
        paged,
        names(&all),
        "the pages are the list of p1's revision"
    );
    assert!(
        paged.contains(&"u-p24".to_string()),
        "deleted later, still listed"
    );

    // A new list sees the writes.
    let now = s.pods().list(page(0, "")).await.unwrap().into_inner();
    assert_eq!(now.items.len(), 26);
    assert!(now.resource_version > p1.resource_version);
}

#[tokio::test]
async fn tokens_are_bound_to_their_list_and_expire_clearly() {
    let mut s = TestApiServer::start().await;
    create_pods(&s, 6, "").await;
    let p1 = s.pods().list(page(2, "")).await.unwrap().into_inner();
    let token = p1.r#continue.clone();

    let e = s.pods().list(page(2, "garbage")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("continue: "), "{}", e.message());

    // The same token with other filters, or for another kind.
    let mut other = page(2, &token);
    other.label_selector = "app=x".into();
    let e = s.pods().list(other).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("belongs to another list"),
        "{}",
        e.message()
    );
    let e = s.nodes().list(page(2, &token)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A token of a list the server no longer holds (here: of the server before a
    // restart) is OUT_OF_RANGE, as Kubernetes' 410 Gone.
    s.restart().await;
    let e = s.pods().list(page(2, &token)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(
        e.message()
            .starts_with("The provided continue parameter is too old"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn node_filtered_lists_follow_bindings_evictions_and_deletes() {
    let mut s = TestApiServer::start().await;
    for n in ["n1", "n2"] {
        s.nodes()
            .create(Node {
                metadata: Some(ObjectMeta {
                    name: n.into(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    address: "192.168.0.1".into(),
                    ..Default::default()
                }),
                status: None,
            })
            .await
            .unwrap();
    }
    create_pods(&s, 3, "n1").await;
    create_pods(&s, 2, "n2").await;
    let on = |node: &str, limit: u32| ListRequest {
        node_name: node.into(),
        limit,
        ..Default::default()
    };
    let l = s.pods().list(on("n1", 0)).await.unwrap().into_inner();
    assert_eq!(names(&l), ["n1-p00", "n1-p01", "n1-p02"]);
    // Paged too.
    let p1 = s.pods().list(on("n2", 1)).await.unwrap().into_inner();
    assert_eq!(names(&p1), ["n2-p00"]);
    let mut next = on("n2", 1);
    next.r#continue = p1.r#continue;
    let p2 = s.pods().list(next).await.unwrap().into_inner();
    assert_eq!(
        (names(&p2), p2.r#continue.as_str()),
        (vec!["n2-p01".to_string()], "")
    );

    // Deleting node n1 evicts its pods (unbound): the index follows.
    s.nodes().delete(del_now("n1")).await.unwrap();
    let l = s.pods().list(on("n1", 0)).await.unwrap().into_inner();
    assert!(l.items.is_empty(), "{:?}", names(&l));
    // Wherever the scheduler put them, the index agrees with the objects.
    let all = s.pods().list(page(0, "")).await.unwrap().into_inner();
    let bound_n2 = all
        .items
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name == "n2")
        .count();
    let l = s.pods().list(on("n2", 0)).await.unwrap().into_inner();
    assert_eq!(l.items.len(), bound_n2);
    // The index is rebuilt at start.
    s.restart().await;
    let after = s.pods().list(on("n2", 0)).await.unwrap().into_inner();
    assert_eq!(names(&after), names(&l));
    s.pods().delete(del_now("n2-p00")).await.unwrap();
    let l = s.pods().list(on("n2", 0)).await.unwrap().into_inner();
    assert!(!names(&l).contains(&"n2-p00".to_string()));
    assert_eq!(l.items.len(), bound_n2 - 1);
}

/// Every kind pages (the workload kinds and Leases too): walks a List of each by 2 and
/// finds every object once, with `remaining_item_count` counting down.
#[tokio::test]
async fn every_kind_pages() {
    let s = TestApiServer::start().await;
    let meta = |name: &str, ns: &str| {
        Some(ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        })
    };
    for i in 0..5 {
        let n = format!("k{i}");
        s.config_maps()
            .create(ConfigMap {
                metadata: meta(&n, "default"),
                ..Default::default()
            })
            .await
            .unwrap();
        s.secrets()
            .create(Secret {
                metadata: meta(&n, "default"),
                ..Default::default()
            })
            .await
            .unwrap();
        s.leases()
            .create(Lease {
                metadata: meta(&n, "kube-node-lease"),
                spec: Some(LeaseSpec::default()),
            })
            .await
            .unwrap();
        s.namespaces()
            .create(Namespace {
                metadata: meta(&n, ""),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // (names seen, remaining_item_count of each page) of a List walked by 2.
    macro_rules! walk {
        ($client:expr) => {{
            let mut seen = Vec::new();
            let mut token = String::new();
            let mut remaining = Vec::new();
            loop {
                let l = $client.list(page(2, &token)).await.unwrap().into_inner();
                assert!(l.items.len() <= 2);
                seen.extend(
                    l.items
                        .iter()
                        .map(|o| o.metadata.as_ref().unwrap().name.clone()),
                );
                remaining.push(l.remaining_item_count);
                token = l.r#continue;
                if token.is_empty() {
                    break;
                }
            }
            (seen, remaining)
        }};
    }
    let want: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let (cms, rem) = walk!(s.config_maps());
    assert_eq!(cms, want);
    assert_eq!(rem, [3, 1, 0]);
    assert_eq!(walk!(s.secrets()).0, want);
    assert_eq!(walk!(s.leases()).0, want);
    // Namespaces: default, kube-node-lease, kube-system … and ours, each once.
    let (nss, rem) = walk!(s.namespaces());
    assert!(want.iter().all(|n| nss.contains(n)), "{nss:?}");
    let mut dedup = nss.clone();
    dedup.dedup();
    assert_eq!(dedup, nss);
    assert_eq!(rem.len(), nss.len().div_ceil(2));
    // An empty List of a paged kind: one page, no token.
    assert!(s
        .deployments()
        .list(page(2, ""))
        .await
        .unwrap()
        .into_inner()
        .r#continue
        .is_empty());
    assert!(s
        .replica_sets()
        .list(page(2, ""))
        .await
        .unwrap()
        .into_inner()
        .r#continue
        .is_empty());
}
