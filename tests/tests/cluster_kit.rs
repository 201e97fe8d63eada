//! The multi-node test cluster kit itself: nodes come up Ready with distinct subnets,
//! node namespaces reach each other over the underlay, an agent can be killed and
//! started again, and dropping the cluster leaves no namespace or process behind.
//! Needs root and the `nodeagent` binary (`cargo build -p nodeagent`).

use kube_lite_proto::v1::ListRequest;
use kube_lite_tests::cluster::{default_agent_bin, require_root, ClusterOptions, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_cluster_comes_up_and_cleans_up() {
    if !require_root() {
        return;
    }
    let mut c = TestCluster::start(ClusterOptions::new(2, default_agent_bin()))
        .await
        .expect("cluster start");
    let prefix = format!("kl{}-", c.id);
    assert_eq!(c.all_netns().len(), 3, "{:?}", c.all_netns());

    let nodes = c
        .api
        .nodes()
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(nodes.len(), 2);
    let cidrs: std::collections::BTreeSet<String> = nodes
        .iter()
        .map(|n| n.spec.as_ref().unwrap().pod_cidr.clone())
        .collect();
    assert_eq!(cidrs.len(), 2, "distinct pod CIDRs: {cidrs:?}");
    for n in &nodes {
        let addr = &n.spec.as_ref().unwrap().address;
        assert!(
            c.nodes.iter().any(|t| t.address.to_string() == *addr),
            "{addr}"
        );
    }

    // Node namespaces reach each other over the underlay; each has its bridge.
    let b = c.nodes[1].address.to_string();
    let out = c.exec_in_node(
        0,
        &[
            kube_lite_tests::cluster::busybox(),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &b,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = c.exec_in_node(0, &["ip", "-o", "addr", "show", "dev", "kl0"]);
    let cidr0 = &nodes
        .iter()
        .find(|n| n.metadata.as_ref().unwrap().name == "node0")
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .pod_cidr;
    let gw = cidr0.replace(".0/24", ".1/24");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&gw),
        "{gw}: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The kit's HTTP helper reports failures as errors (nothing listens there).
    assert!(c
        .http_get_from(&c.nodes[0].netns, &format!("http://{b}:1/"))
        .is_err());

    // Restart an agent: the node stays (or becomes again) Ready.
    c.kill_agent(0);
    assert!(c.nodes[0].agent.is_none());
    c.start_agent(0);
    c.wait_ready(std::time::Duration::from_secs(60))
        .await
        .expect("ready after restart");

    let id = c.id.clone();
    drop(c);
    let left = kube_lite_net::list_netns(&prefix).unwrap();
    assert!(
        left.is_empty(),
        "namespaces left by cluster kl{id}: {left:?}"
    );
}
