//! Probes end to end (issue 13): real apiserver, real `nodeagent` processes in node
//! namespaces, real pods. Readiness moves a pod out of and back into its Service's
//! Endpoints (and a ClusterIP client stops/starts reaching it); liveness restarts a
//! container and counts it; a startup probe holds liveness off. Root only.
//!
//! The probes' targets are toggled through files in a test directory: the containers
//! share the node's filesystem (the process runtime has no image root), so a sidecar
//! `busybox httpd -h DIR` answers 200 for `/ready` while `DIR/ready` exists and 404
//! after, and `cat FILE` exec probes follow `FILE`.

use kube_lite_proto::v1::{
    Container, ContainerPort, Endpoints, ExecAction, GetRequest, HttpGetAction, ObjectMeta, Pod,
    PodSpec, Probe, Service, ServicePort, ServiceSpec, TcpSocketAction,
};
use kube_lite_tests::cluster::{
    busybox, require_root, whoami_cluster, ClusterOptions, TestCluster,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VIP: &str = "10.96.10.10";
const URL: &str = "http://10.96.10.10:3001";

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

fn probe_every_second(p: Probe, failure: i32) -> Option<Probe> {
    Some(Probe {
        period_seconds: 1,
        timeout_seconds: 1,
        success_threshold: 1,
        failure_threshold: failure,
        ..p
    })
}

fn exec_cat(file: &Path) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: vec!["cat".into(), file.display().to_string()],
        }),
        ..Default::default()
    }
}

fn ctr(name: &str, image: &str, args: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: image.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn pod(name: &str, node: &str, labels: &[(&str, &str)], containers: Vec<Container>) -> Pod {
    Pod {
        metadata: meta(name, labels),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers,
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

/// whoami on 8080 (tcpSocket liveness on it) + a `busybox httpd` on 8081 named
/// "health" serving `dir`; readiness: httpGet /ready on port "health".
fn probed_whoami(name: &str, node: &str, dir: &Path) -> Pod {
    let mut web = ctr("web", "whoami", &[]);
    web.ports = vec![ContainerPort {
        name: "health".into(),
        container_port: 8081,
        protocol: "TCP".into(),
    }];
    web.readiness_probe = probe_every_second(
        Probe {
            http_get: Some(HttpGetAction {
                path: "/ready".into(),
                port_name: "health".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        1,
    );
    web.liveness_probe = probe_every_second(
        Probe {
            tcp_socket: Some(TcpSocketAction {
                port: 8080,
                ..Default::default()
            }),
            ..Default::default()
        },
        3,
    );
    let d = dir.display().to_string();
    let health = ctr(
        "health",
        "busybox",
        &["httpd", "-f", "-p", "8081", "-h", &d],
    );
    pod(name, node, &[("app", "web")], vec![web, health])
}

fn ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
}

fn cstatus(p: &Pod, i: usize) -> kube_lite_proto::v1::ContainerStatus {
    p.status.as_ref().unwrap().container_statuses[i].clone()
}

/// (ready pod names, not-ready pod names) of the Endpoints `name`.
async fn endpoints(c: &TestCluster, name: &str) -> (Vec<String>, Vec<String>) {
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
    let e = e.unwrap_or_default();
    let names = |f: fn(
        &kube_lite_proto::v1::EndpointSubset,
    ) -> &Vec<kube_lite_proto::v1::EndpointAddress>| {
        let mut v: Vec<String> = e
            .subsets
            .iter()
            .flat_map(|s| f(s).iter().map(|a| a.pod_name.clone()))
            .collect();
        v.sort();
        v
    };
    (names(|s| &s.addresses), names(|s| &s.not_ready_addresses))
}

async fn wait_endpoints(c: &TestCluster, name: &str, ready: &[&str], not_ready: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (r, n) = endpoints(c, name).await;
        if r == ready && n == not_ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Endpoints {name}: want ready {ready:?} not ready {not_ready:?}, have {r:?} {n:?}\n{}",
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` requests to the ClusterIP from inside `netns`: the answering HOSTNAMEs.
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

/// Requests until every one of a round goes to `only` (the proxies follow the Endpoints
/// asynchronously); panics after 30 s.
async fn wait_only_reached(c: &TestCluster, netns: &str, only: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = requests(c, netns, 6);
        if got.len() == 6 && got.iter().all(|h| only.contains(&h.as_str())) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "ClusterIP answers {got:?}, want only {only:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_takes_a_pod_out_of_endpoints_and_the_cluster_ip_and_back() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(2, agent_bin())).await;
    let tmp = tempfile::tempdir().unwrap();
    let (d0, d1) = (tmp.path().join("w0"), tmp.path().join("w1"));
    for d in [&d0, &d1] {
        std::fs::create_dir_all(d).unwrap();
    }
    // w0 ready from the start; w1 not until its file exists.
    std::fs::write(d0.join("ready"), "ok").unwrap();
    let (n0, n1) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.api
        .pods()
        .create(probed_whoami("w0", &n0, &d0))
        .await
        .expect("create w0");
    c.api
        .pods()
        .create(probed_whoami("w1", &n1, &d1))
        .await
        .expect("create w1");
    let client = pod(
        "client",
        &n0,
        &[],
        vec![ctr("client", "busybox", &["sleep", "3600"])],
    );
    c.api.pods().create(client).await.expect("create client");
    c.api
        .services()
        .create(Service {
            metadata: meta("web", &[]),
            spec: Some(ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 3001,
                    target_port: 8080,
                    ..Default::default()
                }],
                cluster_ip: VIP.into(),
                r#type: "ClusterIP".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create service");
    c.wait_pod("w0", "Ready", ready).await;
    let w1 = c.wait_pod("w1", "Running", running).await;
    assert!(!ready(&w1), "w1 has no ready file");
    let st = cstatus(&w1, 0);
    assert!(!st.ready && st.started, "web of w1: {st:?}");
    assert!(cstatus(&w1, 1).ready, "the sidecar has no readiness probe");
    wait_endpoints(&c, "web", &["w0"], &["w1"]).await;
    let cl = c.wait_pod("client", "Running", running).await;
    let client_ns = c.nodes[0].pod_netns(&cl.metadata.as_ref().unwrap().uid);
    wait_only_reached(&c, &client_ns, &["w0"]).await;

    // w1 becomes ready: both are reached.
    std::fs::write(d1.join("ready"), "ok").unwrap();
    c.wait_pod("w1", "Ready", ready).await;
    wait_endpoints(&c, "web", &["w0", "w1"], &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = requests(&c, &client_ns, 8);
        if got.iter().any(|h| h == "w0") && got.iter().any(|h| h == "w1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both pods ready, answers {got:?}"
        );
    }

    // w0's readiness starts failing (404): out of the Endpoints, no longer reached; it is
    // not restarted (readiness never kills).
    std::fs::remove_file(d0.join("ready")).unwrap();
    let w0 = c.wait_pod("w0", "not Ready", |p| !ready(p)).await;
    assert!(running(&w0));
    wait_endpoints(&c, "web", &["w1"], &["w0"]).await;
    wait_only_reached(&c, &client_ns, &["w1"]).await;

    // ... and back.
    std::fs::write(d0.join("ready"), "ok").unwrap();
    c.wait_pod("w0", "Ready again", ready).await;
    wait_endpoints(&c, "web", &["w0", "w1"], &[]).await;
    let w0 = c.get_pod("w0").await.unwrap();
    assert_eq!(
        cstatus(&w0, 0).restart_count,
        0,
        "the tcpSocket liveness probe passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_restarts_and_counts_and_a_startup_probe_holds_it_off() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let tmp = tempfile::tempdir().unwrap();
    let alive = tmp.path().join("alive");
    let started = tmp.path().join("started");
    std::fs::write(&alive, "ok").unwrap();
    let node = c.nodes[0].name.clone();

    // Liveness: exec `cat alive` every second, failure threshold 2.
    let mut live = ctr("app", "busybox", &["sleep", "3600"]);
    live.liveness_probe = probe_every_second(exec_cat(&alive), 2);
    c.api
        .pods()
        .create(pod("live", &node, &[], vec![live]))
        .await
        .expect("create");
    let p = c.wait_pod("live", "Ready", ready).await;
    assert_eq!(cstatus(&p, 0).restart_count, 0);
    // Passing probes leave it alone for a few periods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cstatus(&c.get_pod("live").await.unwrap(), 0).restart_count,
        0
    );
    std::fs::remove_file(&alive).unwrap();
    let p = c
        .wait_pod("live", "a restart", |p| cstatus(p, 0).restart_count >= 1)
        .await;
    let last = cstatus(&p, 0)
        .last_state
        .expect("lastState after a restart");
    assert!(
        last.message
            .contains("failed liveness probe, will be restarted")
            && last.message.contains("Liveness probe failed"),
        "{last:?}"
    );
    assert_ne!(last.exit_code, 0);
    // The probe is back to passing: it stays up.
    std::fs::write(&alive, "ok").unwrap();
    let p = c.wait_pod("live", "Ready after the restart", ready).await;
    let n = cstatus(&p, 0).restart_count;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cstatus(&c.get_pod("live").await.unwrap(), 0).restart_count,
        n
    );

    // Startup probe (`cat started`, 60 tries) holds a failing liveness probe off.
    let mut slow = ctr("app", "busybox", &["sleep", "3600"]);
    slow.startup_probe = probe_every_second(exec_cat(&started), 60);
    slow.liveness_probe = probe_every_second(exec_cat(&alive), 1);
    c.api
        .pods()
        .create(pod("slow", &node, &[], vec![slow]))
        .await
        .expect("create");
    let p = c.wait_pod("slow", "Running", running).await;
    std::fs::remove_file(&alive).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p2 = c.get_pod("slow").await.unwrap();
    let st = cstatus(&p2, 0);
    assert!(
        !st.started && !st.ready,
        "startup probe not passed yet: {st:?}"
    );
    assert_eq!(st.restart_count, 0, "liveness held off: {st:?}");
    assert_eq!(cstatus(&p, 0).restart_count, 0);
    // Started: now the failing liveness probe restarts it.
    std::fs::write(&started, "ok").unwrap();
    c.wait_pod("slow", "a liveness restart after startup", |p| {
        cstatus(p, 0).restart_count >= 1
    })
    .await;
}
