//! Services beyond ClusterIP end to end (issue 12) on a real 2-node namespace cluster:
//! named target ports, headless Services, NodePort with externalTrafficPolicy Cluster
//! and Local reached from the underlay namespace, from pods and from the nodes, and
//! ClientIP session affinity. Root only (skipped otherwise).

use kube_lite_proto::v1::{
    Container, ContainerPort, Endpoints, GetRequest, ObjectMeta, Pod, PodSpec, Service,
    ServicePort, ServiceSpec,
};
use kube_lite_tests::cluster::{
    busybox, require_root, whoami_cluster, ClusterOptions, TestCluster,
};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
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

/// A whoami pod on `node` listening on `port`, which its container names `http`.
fn whoami(name: &str, node: &str, app: &str, port: i32) -> Pod {
    Pod {
        metadata: meta(name, &[("app", app)]),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "whoami".into(),
                image: "whoami".into(),
                args: vec!["--port".into(), port.to_string()],
                ports: vec![ContainerPort {
                    name: "http".into(),
                    container_port: port,
                    protocol: "TCP".into(),
                }],
                ..Default::default()
            }],
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

fn client(name: &str, node: &str) -> Pod {
    Pod {
        metadata: meta(name, &[("app", "client")]),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "c".into(),
                image: busybox().into(),
                args: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

fn service(name: &str, app: &str, f: impl FnOnce(&mut ServiceSpec)) -> Service {
    let mut spec = ServiceSpec {
        selector: [("app".to_string(), app.to_string())].into(),
        ports: vec![ServicePort {
            name: "web".into(),
            port: 3001,
            target_port_name: "http".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    f(&mut spec);
    Service {
        metadata: meta(name, &[]),
        spec: Some(spec),
        status: None,
    }
}

async fn wait_running(c: &TestCluster, name: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = c
            .api
            .pods()
            .get(GetRequest {
                name: name.into(),
                namespace: "default".into(),
            })
            .await
            .ok()
            .map(|p| p.into_inner());
        if let Some(p) = p.filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
        }) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} not Running\n{}\n{}",
            c.agent_log_tail(0, 30),
            c.agent_log_tail(1, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn endpoints(c: &TestCluster, name: &str) -> Option<Endpoints> {
    c.api
        .endpoints()
        .get(GetRequest {
            name: name.into(),
            namespace: "default".into(),
        })
        .await
        .ok()
        .map(|e| e.into_inner())
}

async fn wait_endpoint_count(c: &TestCluster, name: &str, n: usize) -> Endpoints {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = endpoints(c, name).await {
            if e.subsets.iter().map(|s| s.addresses.len()).sum::<usize>() == n {
                return e;
            }
        }
        assert!(Instant::now() < deadline, "Endpoints {name}: want {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` sequential GETs of `url` from inside `netns`: the answering HOSTNAMEs (and
/// `CLIENT:` lines for `/client`), "FAIL" for a failed request.
fn requests(netns: &str, url: &str, n: usize) -> Vec<String> {
    let bb = busybox();
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do {bb} timeout 5 {bb} wget -qO- {url} | tr '\\n' ' ' || echo FAIL; echo; i=$((i+1)); done"
    );
    let out = kube_lite_net::netns::command_in_netns(netns, bb)
        .args(["sh", "-c", &script])
        .output()
        .expect("run requests");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let host = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("HOSTNAME:"))
                .unwrap_or("FAIL");
            match l.split_whitespace().find_map(|w| w.strip_prefix("CLIENT:")) {
                Some(cl) => format!("{host} {cl}"),
                None => host.to_string(),
            }
        })
        .collect()
}

/// Waits until `url` answers from `netns` (rules are in place on the node).
async fn wait_served(netns: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = requests(netns, url, 1);
        if r.first().is_some_and(|h| h != "FAIL") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered from {netns}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hosts(v: &[String]) -> BTreeSet<String> {
    v.iter()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn wait_service(c: &TestCluster, name: &str, ok: impl Fn(&Service) -> bool) -> Service {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c
            .api
            .services()
            .get(GetRequest {
                name: name.into(),
                namespace: "default".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "service {name}: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ingress(s: &Service) -> Vec<String> {
    let mut v: Vec<String> = s
        .status
        .iter()
        .flat_map(|st| st.load_balancer_ingress.iter().map(|i| i.ip.clone()))
        .collect();
    v.sort();
    v
}

/// (status, reason, message) of the LoadBalancerPortsAllocated condition.
fn lb_condition(s: &Service) -> (String, String, String) {
    s.status
        .iter()
        .flat_map(|st| &st.conditions)
        .find(|c| c.r#type == "LoadBalancerPortsAllocated")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn iptables_save(c: &TestCluster, node: usize) -> String {
    String::from_utf8_lossy(&c.exec_in_node(node, &["iptables-save"]).stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_ports_headless_node_ports_and_affinity() {
    if !require_root() {
        return;
    }
    // No upstream resolver: the test never sends a query off the machine.
    let mut opts = ClusterOptions::new(2, agent_bin());
    opts.extra_agent_args
        .extend(["--dns-upstream".to_string(), "none".to_string()]);
    let c = whoami_cluster(opts).await;
    let (n0, n1) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    // The underlay namespace gets a client address on the nodes' subnet.
    let a0 = c.nodes[0].address;
    let a1 = c.nodes[1].address;
    let o = a0.octets();
    let outside = format!("{}.{}.{}.254", o[0], o[1], o[2]);
    let out = kube_lite_net::netns::command_in_netns(&c.underlay_ns, "ip")
        .args([
            "addr",
            "add",
            &format!("{outside}/24"),
            "dev",
            kube_lite_net::underlay::UNDERLAY_BRIDGE,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Four whoami pods (two per node) on 8080, and two "alt" pods that name different
    // numbers "http".
    let pods = c.api.pods();
    for (i, node) in [&n0, &n1, &n0, &n1].iter().enumerate() {
        pods.clone()
            .create(whoami(&format!("whoami-{i}"), node, "whoami", 8080))
            .await
            .unwrap();
    }
    pods.clone()
        .create(whoami("alt-0", &n0, "alt", 9090))
        .await
        .unwrap();
    pods.clone()
        .create(whoami("alt-1", &n1, "alt", 8080))
        .await
        .unwrap();
    pods.clone().create(client("client-0", &n0)).await.unwrap();
    let svcs = c.api.services();
    let np = svcs
        .clone()
        .create(service("np", "whoami", |s| {
            s.r#type = "NodePort".into();
            s.ports[0].node_port = 30080;
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(np.spec.as_ref().unwrap().ports[0].node_port, 30080);
    let npl = svcs
        .clone()
        .create(service("npl", "whoami", |s| {
            s.r#type = "NodePort".into();
            s.external_traffic_policy = "Local".into();
        }))
        .await
        .unwrap()
        .into_inner();
    let local_port = npl.spec.as_ref().unwrap().ports[0].node_port;
    assert!((30000..=32767).contains(&local_port), "{local_port}");
    let named = svcs
        .clone()
        .create(service("named", "alt", |_| {}))
        .await
        .unwrap()
        .into_inner();
    svcs.clone()
        .create(service("hl", "whoami", |s| s.cluster_ip = "None".into()))
        .await
        .unwrap();
    let aff = svcs
        .clone()
        .create(service("aff", "whoami", |s| {
            s.session_affinity = "ClientIP".into();
            s.session_affinity_timeout_seconds = 2;
        }))
        .await
        .unwrap()
        .into_inner();
    for n in [
        "whoami-0", "whoami-1", "whoami-2", "whoami-3", "alt-0", "alt-1",
    ] {
        wait_running(&c, n).await;
    }
    let client0 = wait_running(&c, "client-0").await;
    let client_ns = c.nodes[0].pod_netns(&client0.metadata.as_ref().unwrap().uid);

    // Named target ports: the Endpoints carry each pod's number; both pods serve.
    let e = wait_endpoint_count(&c, "named", 2).await;
    let mut ports: Vec<i32> = e.subsets.iter().map(|s| s.ports[0].port).collect();
    ports.sort();
    assert_eq!(ports, vec![8080, 9090]);
    let named_url = format!("http://{}:3001/", named.spec.as_ref().unwrap().cluster_ip);
    wait_served(&client_ns, &named_url).await;
    let got = requests(&client_ns, &named_url, 10);
    assert_eq!(hosts(&got), set(&["alt-0", "alt-1"]), "{got:?}");

    // Headless: Endpoints kept, no ClusterIP, no rules.
    wait_endpoint_count(&c, "hl", 4).await;
    for i in 0..2 {
        assert!(
            !iptables_save(&c, i).contains("default/hl"),
            "rules for a headless Service"
        );
    }

    // NodePort, Cluster: every node address answers from pods on both nodes, from the
    // underlay, from a pod and from a node; the source is masqueraded.
    wait_endpoint_count(&c, "np", 4).await;
    let all4 = set(&["whoami-0", "whoami-1", "whoami-2", "whoami-3"]);
    for addr in [a0, a1] {
        let url = format!("http://{addr}:30080/client");
        wait_served(&c.underlay_ns, &url).await;
        let got = requests(&c.underlay_ns, &url, 8);
        assert_eq!(
            hosts(&got),
            all4,
            "node port on {addr} from the underlay: {got:?}"
        );
        assert!(
            got.iter().all(|l| !l.ends_with(&format!(" {outside}"))),
            "Cluster policy masquerades: {got:?}"
        );
        // From a pod on node0 to its own node's address and to node1's: all four
        // (to node1, the pod's traffic is masqueraded to node0's address on the way
        // out, so the replies of node0's endpoints find their way back).
        let got = requests(&client_ns, &url, 8);
        assert_eq!(hosts(&got), all4, "node port on {addr} from a pod: {got:?}");
        let got = requests(&c.nodes[1].netns, &url, 8);
        assert_eq!(hosts(&got), all4, "node port on {addr} from node1: {got:?}");
    }

    // LoadBalancer (ServiceLB's way): the ingress is both node addresses, each serving
    // the Service port from the underlay (the machine's side) and from a pod.
    let lb = svcs
        .clone()
        .create(service("lb", "whoami", |s| {
            s.r#type = "LoadBalancer".into();
            s.ports[0].port = 8081;
        }))
        .await
        .unwrap()
        .into_inner();
    let lb_np = lb.spec.as_ref().unwrap().ports[0].node_port;
    assert!(lb_np >= 30000, "a LoadBalancer gets a node port: {lb_np}");
    let want_ingress: Vec<String> = {
        let mut v = vec![a0.to_string(), a1.to_string()];
        v.sort();
        v
    };
    let lb = wait_service(&c, "lb", |s| ingress(s) == want_ingress).await;
    let cond = lb_condition(&lb);
    assert_eq!(
        (cond.0.as_str(), cond.1.as_str()),
        ("True", "Allocated"),
        "{lb:?}"
    );
    for addr in [a0, a1] {
        let url = format!("http://{addr}:8081/client");
        wait_served(&c.underlay_ns, &url).await;
        let got = requests(&c.underlay_ns, &url, 8);
        assert_eq!(
            hosts(&got),
            all4,
            "load balancer {addr}:8081 from the underlay: {got:?}"
        );
        let got = requests(&client_ns, &url, 8);
        assert_eq!(
            hosts(&got),
            all4,
            "load balancer {addr}:8081 from a pod: {got:?}"
        );
    }
    // A second LoadBalancer on the same port: no address, the clash in its condition.
    svcs.clone()
        .create(service("lb2", "alt", |s| {
            s.r#type = "LoadBalancer".into();
            s.ports[0].port = 8081;
        }))
        .await
        .unwrap();
    let lb2 = wait_service(&c, "lb2", |s| lb_condition(s).1 == "PortInUse").await;
    assert!(ingress(&lb2).is_empty(), "{lb2:?}");
    let msg = lb_condition(&lb2).2;
    assert!(
        msg.contains("port 8081/TCP")
            && msg.contains("default/lb")
            && msg.contains(&a0.to_string()),
        "{msg}"
    );
    // The first one still serves; once it is gone the second one gets the addresses.
    let got = requests(&c.underlay_ns, &format!("http://{a0}:8081/client"), 4);
    assert!(hosts(&got).is_subset(&all4), "{got:?}");
    svcs.clone()
        .delete(kube_lite_proto::v1::DeleteRequest {
            name: "lb".into(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_service(&c, "lb2", |s| ingress(s) == want_ingress).await;
    let url = format!("http://{a1}:8081/client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = hosts(&requests(&c.underlay_ns, &url, 4));
        if got == set(&["alt-0", "alt-1"]) {
            break;
        }
        assert!(Instant::now() < deadline, "lb2 not served on {a1}: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // NodePort, Local: only the node's own pods, the client's address preserved.
    for (addr, local) in [
        (a0, ["whoami-0", "whoami-2"]),
        (a1, ["whoami-1", "whoami-3"]),
    ] {
        let url = format!("http://{addr}:{local_port}/client");
        wait_served(&c.underlay_ns, &url).await;
        let got = requests(&c.underlay_ns, &url, 8);
        assert_eq!(
            hosts(&got),
            set(&local),
            "Local node port on {addr}: {got:?}"
        );
        assert!(
            got.iter().all(|l| l.ends_with(&format!(" {outside}"))),
            "Local policy keeps the client source {outside}: {got:?}"
        );
    }

    // ClientIP affinity: 20 requests from one client hit one pod; once the 2 s timeout
    // passed without a request, the client moves on (nth round robin continues).
    let aff_url = format!("http://{}:3001/", aff.spec.as_ref().unwrap().cluster_ip);
    wait_served(&client_ns, &aff_url).await;
    let got = requests(&client_ns, &aff_url, 20);
    let first = hosts(&got);
    assert_eq!(first.len(), 1, "sticky: {got:?}");
    // The timeout itself is what is tested: wait it out (plus a second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = requests(&client_ns, &aff_url, 5);
    let after = hosts(&got);
    assert_eq!(after.len(), 1, "sticky again: {got:?}");
    assert_ne!(after, first, "after the timeout the client went elsewhere");
    assert!(!after.contains("FAIL"));

    // Cluster DNS: the pod's /etc/resolv.conf (its mount namespace) points at the
    // cluster DNS; names resolve from inside the pod, short and long, round robin.
    let pid = client0.status.as_ref().unwrap().container_statuses[0].pid;
    let resolv = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf")).unwrap();
    assert!(
        resolv.starts_with("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    let bb = busybox();
    let in_pod = |script: &str| {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "-m", bb, "sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let np_ip = np.spec.as_ref().unwrap().cluster_ip.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = in_pod(&format!("{bb} nslookup np.default.svc.cluster.local"));
        if out.contains(&np_ip) {
            break;
        }
        assert!(Instant::now() < deadline, "nslookup: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for url in [
        "http://np:3001/",
        "http://np.default.svc.cluster.local:3001/",
    ] {
        let script = format!(
            "for i in 1 2 3 4 5 6 7 8; do {bb} timeout 5 {bb} wget -qO- {url} || echo FAIL; done"
        );
        let out = in_pod(&script);
        let got: BTreeSet<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|w| w.trim_start_matches("HOSTNAME:").to_string())
            .collect();
        assert_eq!(got, all4, "{url} by name from a pod: {out}");
    }
    // Headless: every ready pod's IP.
    let out = in_pod(&format!("{bb} nslookup hl.default.svc.cluster.local"));
    for n in 0..4 {
        let p = wait_running(&c, &format!("whoami-{n}")).await;
        let ip = p.status.unwrap().pod_ip;
        assert!(out.contains(&ip), "headless answer lacks {ip}: {out}");
    }
    // Unknown cluster names: NXDOMAIN; other names without an upstream: SERVFAIL.
    let out = in_pod(&format!(
        "{bb} nslookup nope.default.svc.cluster.local 2>&1"
    ));
    assert!(out.contains("NXDOMAIN"), "{out}");
}
