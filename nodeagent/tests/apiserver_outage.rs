//! The cluster survives its control plane's outage (issue 10): real node agents on
//! real namespaces (`kube_lite_tests::cluster::TestCluster`, short grace and eviction
//! timeouts), the apiserver stopped for longer than grace + eviction timeout and
//! started again on the same data: every pod is where it was, the same object, still
//! Running with the same process. Root only (skipped otherwise).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube_lite_proto::v1::{Container, ListRequest, Pod};
use kube_lite_tests::cluster::{busybox, require_root, whoami_cluster, ClusterOptions};
use kube_lite_tests::fixtures::node_pod;

const GRACE: Duration = Duration::from_secs(2);
const EVICTION: Duration = Duration::from_secs(2);

fn sleeper(name: &str, node: &str) -> Pod {
    let c = Container {
        name: "c".into(),
        image: busybox().into(),
        args: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    };
    node_pod(name, node, vec![c], "", 0)
}

/// name → (node, uid, phase, pid of the container).
type Placement = BTreeMap<String, (String, String, String, i32)>;

async fn placement(c: &kube_lite_tests::cluster::TestCluster) -> Option<Placement> {
    let list = c.api.pods().list(ListRequest::default()).await.ok()?;
    Some(
        list.into_inner()
            .items
            .into_iter()
            .map(|p| {
                let m = p.metadata.unwrap_or_default();
                let st = p.status.unwrap_or_default();
                let pid = st.container_statuses.first().map_or(0, |c| c.pid);
                (
                    m.name,
                    (p.spec.unwrap_or_default().node_name, m.uid, st.phase, pid),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outage_longer_than_grace_plus_eviction_moves_no_pod() {
    if !require_root() {
        return;
    }
    let mut opts = ClusterOptions::new(2, PathBuf::from(env!("CARGO_BIN_EXE_nodeagent")));
    opts.apiserver.node_grace_period = GRACE;
    opts.apiserver.pod_eviction_timeout = EVICTION;
    let mut c = whoami_cluster(opts).await;
    for (i, node) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        let n = c.nodes[node].name.clone();
        c.api
            .pods()
            .create(sleeper(&format!("s{i}"), &n))
            .await
            .expect("create pod");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let before = loop {
        if let Some(p) = placement(&c).await {
            if p.len() == 4
                && p.values()
                    .all(|(_, _, ph, pid)| ph == "Running" && *pid > 0)
            {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pods not Running: {:?}\n{}",
            placement(&c).await,
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The outage: every stored heartbeat is older than grace + eviction timeout when
    // the apiserver is back.
    c.api.stop().await;
    tokio::time::sleep((GRACE + EVICTION) * 2).await;
    c.api.restart().await;

    // A window three times grace + eviction timeout after the restart: under the old
    // rule every node was NotReady at the first tick and every pod evicted.
    let until = Instant::now() + (GRACE + EVICTION) * 3;
    while Instant::now() < until {
        if let Some(now) = placement(&c).await {
            assert_eq!(now, before, "a pod changed after the outage");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(placement(&c).await.as_ref(), Some(&before));
    // And the nodes are Ready (their agents came back).
    let nodes = c
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("nodes Ready");
    assert_eq!(nodes.len(), 2);
}
