//! Services end to end (issue 4): a real apiserver, real `nodeagent` processes in node
//! namespaces joined by VXLAN, whoami pods, and the agents' iptables rules. Root only
//! (skipped otherwise).

use kube_lite_proto::v1::{
    Container, DeleteRequest, Endpoints, GetRequest, ObjectMeta, Pod, PodSpec, Service,
    ServicePort, ServiceSpec,
};
use kube_lite_tests::cluster::{
    busybox, require_root, whoami_cluster, ClusterOptions, TestCluster,
};
use kube_lite_tests::fixtures::uid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const VIP: &str = "10.96.10.10";
const URL: &str = "http://10.96.10.10:3001";

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

async fn cluster(nodes: usize) -> TestCluster {
    whoami_cluster(ClusterOptions::new(nodes, agent_bin())).await
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
}

fn pod(name: &str, node: &str, image: &str, args: &[&str], labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: meta(name, labels),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: name.into(),
                image: image.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }],
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

fn whoami(name: &str, node: &str) -> Pod {
    pod(name, node, "whoami", &[], &[("app", "whoami")])
}

fn service(name: &str, cluster_ip: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        metadata: meta(name, &[]),
        spec: Some(ServiceSpec {
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 3001,
                target_port: 8080,
                ..Default::default()
            }],
            cluster_ip: cluster_ip.into(),
            r#type: "ClusterIP".into(),
            ..Default::default()
        }),
        status: None,
    }
}

async fn get_pod(c: &TestCluster, name: &str) -> Option<Pod> {
    c.api
        .pods()
        .get(GetRequest {
            name: name.into(),
            namespace: "default".into(),
        })
        .await
        .ok()
        .map(|p| p.into_inner())
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
}

async fn wait_running(c: &TestCluster, name: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = get_pod(c, name).await {
            if running(&p) {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} not Running after 60 s\n{}\n{}",
            c.agent_log_tail(0, 30),
            c.agent_log_tail(1, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn endpoint_ips(c: &TestCluster, name: &str) -> Vec<String> {
    let e: Option<Endpoints> = c
        .api
        .endpoints()
        .get(GetRequest {
            name: name.into(),
            namespace: "default".into(),
        })
        .await
        .ok()
        .map(|e| e.into_inner());
    e.map(|e| {
        e.subsets
            .iter()
            .flat_map(|s| s.addresses.iter().map(|a| a.ip.clone()))
            .collect()
    })
    .unwrap_or_default()
}

async fn wait_endpoints(c: &TestCluster, name: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ips = endpoint_ips(c, name).await;
        if ips.len() == n {
            return ips;
        }
        assert!(
            Instant::now() < deadline,
            "Endpoints {name}: want {n} addresses, have {ips:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn iptables_save(c: &TestCluster, node: usize) -> String {
    String::from_utf8_lossy(&c.exec_in_node(node, &["iptables-save"]).stdout).into_owned()
}

/// DNAT targets of Service `name` (port "http") in node `i`'s nat table.
fn dnat_targets(c: &TestCluster, node: usize, name: &str) -> Vec<String> {
    let tag = format!("\"default/{name}:http -> ");
    let mut v: Vec<String> = iptables_save(c, node)
        .lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            l.split_once("-j DNAT --to-destination ")
                .map(|(_, t)| t.to_string())
        })
        .collect();
    v.sort();
    v
}

/// Waits until every node's rules DNAT to exactly `ips` (port 8080); returns how long
/// that took.
async fn wait_rules(c: &TestCluster, name: &str, ips: &[String]) -> Duration {
    let mut want: Vec<String> = ips.iter().map(|ip| format!("{ip}:8080")).collect();
    want.sort();
    let t = Instant::now();
    loop {
        if (0..c.nodes.len()).all(|i| dnat_targets(c, i, name) == want) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "rules of {name}: want {want:?}; node0 {:?} node1 {:?}\n{}",
            dnat_targets(c, 0, name),
            dnat_targets(c, 1, name),
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` sequential requests to the ClusterIP from inside `netns` (one shell there).
/// Returns the answering HOSTNAMEs ("FAIL" for a failed request).
fn requests(c: &TestCluster, netns: &str, n: usize) -> Vec<String> {
    let bb = busybox();
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do {bb} timeout 5 {bb} wget -qO- {URL} || echo FAIL; i=$((i+1)); done"
    );
    let out = c.exec_in_pod_netns(netns, &[bb, "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches("HOSTNAME:")
                .to_string()
        })
        .collect()
}

fn tally(v: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for h in v {
        *m.entry(h.clone()).or_insert(0) += 1;
    }
    m
}

async fn delete_pod(c: &TestCluster, name: &str) {
    c.delete_pod(name, 0).await.expect("delete pod");
}

/// The tutorial's scene and every client placement: 4 whoami pods over 2 nodes, the
/// Service 10.96.10.10:3001 → 8080; clients in a pod on node0 (endpoints on the same
/// and the other node), in a pod on node1, in an endpoint pod itself (hairpin), and in
/// the node namespace (OUTPUT); then endpoint churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_scene_every_placement_and_churn() {
    if !require_root() {
        return;
    }
    let c = cluster(2).await;
    let mut pods = Vec::new();
    for i in 0..4 {
        let node = &c.nodes[i % 2].name;
        c.api
            .pods()
            .create(whoami(&format!("whoami-{i}"), node))
            .await
            .expect("create whoami");
    }
    for (i, n) in [(0usize, "client-0"), (1, "client-1")] {
        let node = &c.nodes[i].name;
        c.api
            .pods()
            .create(pod(
                n,
                node,
                busybox(),
                &["sleep", "3600"],
                &[("app", "client")],
            ))
            .await
            .expect("create client");
    }
    c.api
        .services()
        .create(service("whoami", VIP, &[("app", "whoami")]))
        .await
        .expect("create service");
    for i in 0..4 {
        pods.push(wait_running(&c, &format!("whoami-{i}")).await);
    }
    let client0 = wait_running(&c, "client-0").await;
    let client1 = wait_running(&c, "client-1").await;
    let ips = wait_endpoints(&c, "whoami", 4).await;
    wait_rules(&c, "whoami", &ips).await;

    let client0_ns = c.nodes[0].pod_netns(&uid(&client0));
    let client1_ns = c.nodes[1].pod_netns(&uid(&client1));
    let hairpin_ns = c.nodes[0].pod_netns(&uid(&pods[0]));

    // The tutorial: 4 requests, 4 different pods.
    let four = requests(&c, &client0_ns, 4);
    assert_eq!(tally(&four).len(), 4, "4 requests from client-0: {four:?}");
    assert!(four.iter().all(|h| h.starts_with("whoami-")), "{four:?}");

    // 100 requests → exactly 25 per pod, from every placement.
    let want: BTreeMap<String, usize> = (0..4).map(|i| (format!("whoami-{i}"), 25)).collect();
    for (what, ns) in [
        ("pod on node0", client0_ns.clone()),
        ("pod on node1", client1_ns.clone()),
        ("endpoint pod itself (hairpin)", hairpin_ns.clone()),
        ("node0 namespace", c.nodes[0].netns.clone()),
        ("node1 namespace", c.nodes[1].netns.clone()),
    ] {
        let got = requests(&c, &ns, 100);
        assert_eq!(tally(&got), want, "100 requests from {what}");
    }

    // Churn: whoami-3 goes away → no longer served.
    delete_pod(&c, "whoami-3").await;
    let ips3 = wait_endpoints(&c, "whoami", 3).await;
    let took = wait_rules(&c, "whoami", &ips3).await;
    eprintln!("endpoint removed: rules on both nodes {took:?} after the Endpoints update was seen");
    let got = requests(&c, &client0_ns, 30);
    let t = tally(&got);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(
        !t.contains_key("whoami-3") && !t.contains_key("FAIL"),
        "{t:?}"
    );

    // A new pod → served.
    c.api
        .pods()
        .create(whoami("whoami-4", &c.nodes[1].name))
        .await
        .expect("create whoami-4");
    wait_running(&c, "whoami-4").await;
    let ips4 = wait_endpoints(&c, "whoami", 4).await;
    let took = wait_rules(&c, "whoami", &ips4).await;
    eprintln!("endpoint added: rules on both nodes {took:?} after the Endpoints update was seen");
    let got = requests(&c, &client1_ns, 100);
    let want: BTreeMap<String, usize> = [0, 1, 2, 4]
        .iter()
        .map(|i| (format!("whoami-{i}"), 25))
        .collect();
    assert_eq!(tally(&got), want, "after churn, from client-1");
}

/// No endpoints → refused at once; Service deleted → its chains gone on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_endpoints_refuses_and_deleted_service_leaves_no_chains() {
    if !require_root() {
        return;
    }
    let c = cluster(2).await;
    c.api
        .services()
        .create(service("whoami", VIP, &[("app", "whoami")]))
        .await
        .expect("create service");
    // No pod matches: every node rejects (TCP reset) instead of letting SYNs hang.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..2).all(|i| iptables_save(&c, i).contains("\"default/whoami:http has no endpoints\""))
    {
        assert!(
            Instant::now() < deadline,
            "no REJECT rule\n{}",
            iptables_save(&c, 0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.api
        .pods()
        .create(pod(
            "client",
            &c.nodes[0].name,
            busybox(),
            &["sleep", "3600"],
            &[],
        ))
        .await
        .expect("create client");
    let client = wait_running(&c, "client").await;
    let ns = c.nodes[0].pod_netns(&uid(&client));
    for netns in [ns.as_str(), c.nodes[1].netns.as_str()] {
        let err = c
            .http_get_from(netns, URL)
            .expect_err("no endpoints: must fail");
        assert!(err.contains("refused"), "from {netns}: {err}");
    }

    // Endpoints appear → served; then the Service is deleted → chains and routes gone.
    c.api
        .pods()
        .create(whoami("whoami-0", &c.nodes[1].name))
        .await
        .expect("create whoami");
    wait_running(&c, "whoami-0").await;
    let ips = wait_endpoints(&c, "whoami", 1).await;
    wait_rules(&c, "whoami", &ips).await;
    let body = c.http_get_from(&ns, URL).expect("served");
    assert!(body.starts_with("HOSTNAME:whoami-0"), "{body}");
    c.api
        .services()
        .delete(DeleteRequest {
            name: "whoami".into(),
            namespace: "default".into(),
            resource_version: 0,
            grace_period_seconds: -1,
            ..Default::default()
        })
        .await
        .expect("delete service");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<String> = (0..2)
            .flat_map(|i| {
                iptables_save(&c, i)
                    .lines()
                    .filter(|l| {
                        l.contains("KL-SVC-")
                            || l.contains("kube-lite hairpin")
                            || l.contains("default/whoami")
                    })
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        // The cluster IP routes go right after the rules.
        let routes: String = (0..2)
            .map(|i| {
                String::from_utf8_lossy(
                    &c.exec_in_node(i, &["ip", "route", "show", "proto", "78"])
                        .stdout,
                )
                .into_owned()
            })
            .collect();
        if left.is_empty() && routes.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules left: {left:?}; cluster IP routes left: {routes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.http_get_from(&ns, URL).is_err());
}
