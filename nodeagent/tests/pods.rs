//! End-to-end tests of the node agent on real namespaces: a real apiserver on loopback,
//! node namespaces joined by an underlay bridge, real `nodeagent` processes
//! (`kube_lite_tests::cluster::TestCluster`). Root only (skipped otherwise).

use futures::StreamExt;
use kube_lite_proto::v1::{Container, EnvVar, GetRequest, LogsRequest, Pod};
use kube_lite_tests::cluster::{
    busybox, require_root, whoami_cluster, ClusterOptions, TestCluster,
};
use kube_lite_tests::fixtures::{node_pod, uid};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

async fn cluster(nodes: usize) -> TestCluster {
    whoami_cluster(ClusterOptions::new(nodes, agent_bin())).await
}

fn pod(name: &str, node: &str, image: &str, args: &[&str], restart: &str) -> Pod {
    let c = Container {
        name: name.into(),
        image: image.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![EnvVar {
            name: "GREETING".into(),
            value: "hi".into(),
            value_from: None,
        }],
        ..Default::default()
    };
    node_pod(name, node, vec![c], restart, 30)
}

async fn create(c: &TestCluster, p: Pod) -> Pod {
    c.api
        .pods()
        .create(p)
        .await
        .expect("create pod")
        .into_inner()
}

async fn get(c: &TestCluster, name: &str) -> Option<Pod> {
    match c
        .api
        .pods()
        .get(GetRequest {
            name: name.into(),
            namespace: "default".into(),
        })
        .await
    {
        Ok(p) => Some(p.into_inner()),
        Err(e) if e.code() == tonic::Code::NotFound => None,
        Err(e) => panic!("get pod {name}: {e}"),
    }
}

/// Polls the pod until `pred` holds (timeout: a clear panic with the last state).
async fn wait_pod(
    c: &TestCluster,
    name: &str,
    what: &str,
    secs: u64,
    pred: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = get(c, name).await;
        if let Some(p) = &p {
            if pred(p) {
                return p.clone();
            }
        }
        if Instant::now() > deadline {
            panic!(
                "pod {name}: timed out waiting for {what}; last: {:?}\nagent log:\n{}",
                p.map(|p| p.status),
                c.agent_log_tail(0, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone(c: &TestCluster, name: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while get(c, name).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "pod {name} still exists after {secs}s\n{}",
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .map(|s| s.phase.clone())
        .unwrap_or_default()
}

fn ip(p: &Pod) -> String {
    p.status.as_ref().unwrap().pod_ip.clone()
}

fn pid(p: &Pod) -> i32 {
    p.status.as_ref().unwrap().container_statuses[0].pid
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

async fn delete(c: &TestCluster, name: &str, grace: i64) {
    c.delete_pod(name, grace).await.expect("delete pod");
}

/// `busybox wget` from inside a netns (the DATAPATH-NOTES form).
fn wget(c: &TestCluster, netns: &str, url: &str) -> Result<Vec<u8>, String> {
    let bb = busybox();
    let out = c.exec_in_pod_netns(netns, &[bb, "timeout", "10", bb, "wget", "-qO-", url]);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "wget {url} from {netns}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn links(c: &TestCluster, node: usize) -> String {
    String::from_utf8_lossy(&c.exec_in_node(node, &["ip", "-o", "link"]).stdout).to_string()
}

fn ipam_json(c: &TestCluster, node: usize) -> String {
    std::fs::read_to_string(c.nodes[node].state_dir.join("ipam.json")).unwrap_or_default()
}

fn host_if(uid: &str) -> String {
    kube_lite_net::host_if_name(uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_every_pod_reaches_every_pod_and_delete_cleans_up() {
    if !require_root() {
        return;
    }
    let c = cluster(2).await;
    // A 3 MB file served by busybox httpd from a pod on node 1 (pods see the node's
    // filesystem: the process runtime has no image filesystem).
    let www = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(www.path().join("big"), &big).unwrap();
    let www_dir = www.path().to_str().unwrap().to_string();

    let mut names = Vec::new();
    for n in 0..2 {
        for k in 0..2 {
            let name = format!("w{n}{k}");
            create(&c, pod(&name, &c.nodes[n].name, "whoami", &[], "Always")).await;
            names.push((n, name));
        }
    }
    create(
        &c,
        pod(
            "files",
            &c.nodes[1].name,
            "busybox",
            &["httpd", "-f", "-p", "8081", "-h", &www_dir],
            "Always",
        ),
    )
    .await;
    let mut pods = Vec::new();
    for (n, name) in &names {
        let p = wait_pod(&c, name, "Running with an IP", 60, running).await;
        let st = p.status.clone().unwrap();
        assert_eq!(p.spec.as_ref().unwrap().node_name, c.nodes[*n].name);
        assert_eq!(
            st.host_ip,
            c.nodes[*n].address.to_string(),
            "host_ip of {name}"
        );
        assert!(st.start_time > 0);
        assert_eq!(st.container_statuses[0].state, "Running");
        pods.push((*n, name.clone(), p));
    }
    // Pod IPs come from the node's subnet, from .2, unique.
    let nodes = c
        .api
        .nodes()
        .list(kube_lite_proto::v1::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    for (n, name, p) in &pods {
        let node = nodes
            .iter()
            .find(|x| x.metadata.as_ref().unwrap().name == c.nodes[*n].name)
            .unwrap();
        let cidr: ipnet::Ipv4Net = node.spec.as_ref().unwrap().pod_cidr.parse().unwrap();
        let addr: std::net::Ipv4Addr = ip(p).parse().unwrap();
        assert!(cidr.contains(&addr), "{name}: {addr} not in {cidr}");
        assert_ne!(addr, cidr.hosts().next().unwrap(), "{name} got the gateway");
    }
    let mut ips: Vec<String> = pods.iter().map(|(_, _, p)| ip(p)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4);

    // Every pod reaches every other pod (and itself) by IP over TCP.
    for (n, from, fp) in &pods {
        let ns = c.nodes[*n].pod_netns(&uid(fp));
        for (_, to, tp) in &pods {
            let body = wget(&c, &ns, &format!("http://{}:8080/", ip(tp)))
                .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
            let body = String::from_utf8_lossy(&body);
            assert_eq!(
                body.trim(),
                format!("HOSTNAME:{to} IP:{}", ip(tp)),
                "{from} -> {to}"
            );
        }
    }

    // A few MB across nodes arrive whole (pod MTU fits the VXLAN encapsulation).
    let files = wait_pod(&c, "files", "Running", 60, running).await;
    let from_ns = c.nodes[0].pod_netns(&uid(&pods[0].2));
    let got = wget(&c, &from_ns, &format!("http://{}:8081/big", ip(&files))).unwrap();
    assert_eq!(got.len(), big.len(), "bytes across nodes");
    assert!(got == big, "content differs");

    // Delete: the IP is released, no netns or veth is left, the pod is gone.
    let (n, name, p) = &pods[0];
    let u = uid(p);
    delete(&c, name, -1).await;
    wait_gone(&c, name, 40).await;
    assert!(!c.nodes[*n]
        .pod_netns_list()
        .contains(&c.nodes[*n].pod_netns(&u)));
    assert!(!links(&c, *n).contains(&host_if(&u)), "veth left");
    assert!(!ipam_json(&c, *n).contains(&u), "IP not released");
    assert!(!c.nodes[*n].state_dir.join("pods").join(&u).exists());
    // Another pod on that node still works.
    let other = &pods[1];
    wget(
        &c,
        &c.nodes[other.0].pod_netns(&uid(&other.2)),
        &format!("http://{}:8080/", ip(&pods[2].2)),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_and_restart_adopts_running_pods_and_cleans_deleted_ones() {
    if !require_root() {
        return;
    }
    let mut c = cluster(1).await;
    let node = c.nodes[0].name.clone();
    for name in ["keep", "graceful", "forced"] {
        create(&c, pod(name, &node, "whoami", &[], "Always")).await;
    }
    let keep = wait_pod(&c, "keep", "Running", 60, running).await;
    let graceful = wait_pod(&c, "graceful", "Running", 60, running).await;
    let forced = wait_pod(&c, "forced", "Running", 60, running).await;
    assert!(pid(&keep) > 0);

    c.kill_agent(0);
    // While the agent is down: one graceful delete (waits for the agent), one forced.
    delete(&c, "graceful", -1).await;
    delete(&c, "forced", 0).await;
    assert!(get(&c, "forced").await.is_none());
    // The pods still run (own sessions).
    assert!(std::path::Path::new(&format!("/proc/{}", pid(&keep))).exists());
    c.start_agent(0);

    wait_gone(&c, "graceful", 40).await;
    // Forced pod: cleaned from the node (netns, veth, IP, process).
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in [&graceful, &forced] {
        let u = uid(p);
        let ns = c.nodes[0].pod_netns(&u);
        while c.nodes[0].pod_netns_list().contains(&ns)
            || links(&c, 0).contains(&host_if(&u))
            || ipam_json(&c, 0).contains(&u)
        {
            assert!(
                Instant::now() < deadline,
                "pod {u} not cleaned up\n{}",
                c.agent_log_tail(0, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shim_gone = !std::path::Path::new(&format!("/proc/{}/stat", pid(p))).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", pid(p)))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true);
        assert!(
            shim_gone,
            "processes of {u} still running: {:?}",
            std::fs::read_to_string(format!("/proc/{}/stat", pid(p)))
        );
    }
    // The kept pod was adopted: same pid, same IP, no restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = wait_pod(&c, "keep", "Running", 30, running).await;
    assert_eq!(pid(&after), pid(&keep), "container restarted");
    assert_eq!(ip(&after), ip(&keep));
    assert_eq!(restarts(&after), 0);
    assert_eq!(
        c.nodes[0].pod_netns_list(),
        vec![c.nodes[0].pod_netns(&uid(&keep))],
        "orphan namespaces"
    );
    // Still serving.
    let ns = c.nodes[0].pod_netns(&uid(&keep));
    wget(&c, &ns, &format!("http://{}:8080/", ip(&keep))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_subnet_leaves_pod_pending_with_clear_reason() {
    if !require_root() {
        return;
    }
    // /29 node subnets: .1 is the gateway, .2-.6 for pods: 5 pods fit.
    let mut opts = ClusterOptions::new(1, agent_bin());
    opts.apiserver.node_subnet_prefix = 29;
    let c = whoami_cluster(opts).await;
    let node = c.nodes[0].name.clone();
    for i in 0..5 {
        create(&c, pod(&format!("p{i}"), &node, "whoami", &[], "Always")).await;
    }
    for i in 0..5 {
        wait_pod(&c, &format!("p{i}"), "Running", 60, running).await;
    }
    create(&c, pod("extra", &node, "whoami", &[], "Always")).await;
    let p = wait_pod(&c, "extra", "no-free-IP reason", 30, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.reason.starts_with("no free IP in "))
    })
    .await;
    let st = p.status.unwrap();
    assert_eq!(st.phase, "Pending");
    assert!(st.reason.ends_with("/29"), "{}", st.reason);
    assert!(st.pod_ip.is_empty());
    // The agent is fine; freeing an IP lets the pod start.
    delete(&c, "p0", 0).await;
    wait_pod(&c, "extra", "Running after an IP was freed", 60, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_and_crash_loops_have_clear_status() {
    if !require_root() {
        return;
    }
    let c = cluster(1).await;
    let node = c.nodes[0].name.clone();
    create(&c, pod("nope", &node, "no-such-program-xyz", &[], "Never")).await;
    create(
        &c,
        pod("nope-always", &node, "no-such-program-xyz", &[], "Always"),
    )
    .await;
    create(
        &c,
        pod(
            "crash",
            &node,
            "busybox",
            &["sh", "-c", "echo run $GREETING; exit 3"],
            "Always",
        ),
    )
    .await;
    create(&c, pod("done", &node, "busybox", &["true"], "OnFailure")).await;
    create(&c, pod("fails", &node, "busybox", &["false"], "Never")).await;

    // Two containers in one pod: one network namespace, both running.
    let mut duo = pod("duo", &node, "whoami", &[], "Always");
    duo.spec.as_mut().unwrap().containers.push(Container {
        name: "side".into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo side-car; while true; do sleep 1; done".into()],
        ..Default::default()
    });
    create(&c, duo).await;

    let p = wait_pod(&c, "nope", "Failed", 30, |p| phase(p) == "Failed").await;
    let st = p.status.unwrap();
    assert_eq!(st.reason, "ImageNotFound");
    let cs = &st.container_statuses[0];
    assert_eq!(cs.reason, "ImageNotFound");
    assert!(
        cs.message.starts_with(&format!(
            "image \"no-such-program-xyz\": no such program on node {node} (looked in "
        )),
        "{}",
        cs.message
    );
    let p = wait_pod(&c, "nope-always", "ImageNotFound", 30, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.reason == "ImageNotFound")
    })
    .await;
    assert_eq!(phase(&p), "Pending");

    let p = wait_pod(&c, "crash", "2 restarts", 60, |p| restarts(p) >= 2).await;
    assert_eq!(phase(&p), "Running");
    wait_pod(&c, "crash", "CrashLoopBackOff", 30, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.container_statuses
                .first()
                .is_some_and(|c| c.reason == "CrashLoopBackOff")
        })
    })
    .await;
    let p = wait_pod(&c, "done", "Succeeded", 30, |p| phase(p) == "Succeeded").await;
    let cs = &p.status.clone().unwrap().container_statuses[0];
    assert_eq!(
        (cs.state.as_str(), cs.exit_code, cs.reason.as_str()),
        ("Terminated", 0, "Completed")
    );
    // A finished pod gives its network and IP back at once; status and logs stay.
    let u = uid(&p);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.nodes[0]
        .pod_netns_list()
        .contains(&c.nodes[0].pod_netns(&u))
        || ipam_json(&c, 0).contains(&u)
    {
        assert!(Instant::now() < deadline, "finished pod kept its network");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ip(&p).is_empty());
    let p = wait_pod(&c, "fails", "Failed", 30, |p| phase(p) == "Failed").await;
    let cs = &p.status.unwrap().container_statuses[0];
    assert_eq!((cs.exit_code, cs.reason.as_str()), (1, "Error"));
    let d = wait_pod(&c, "duo", "Running", 30, running).await;
    let st = d.status.clone().unwrap();
    assert_eq!(st.container_statuses.len(), 2);
    assert!(st.container_statuses.iter().all(|c| c.state == "Running"));
    let body = wget(
        &c,
        &c.nodes[0].pod_netns(&uid(&d)),
        &format!("http://{}:8080/", ip(&d)),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        format!("HOSTNAME:duo IP:{}", ip(&d))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut api = c.api.pods();
        let mut s = api
            .logs(LogsRequest {
                name: "duo".into(),
                namespace: "default".into(),
                container: "side".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(Ok(ch)) = s.next().await {
            out.extend(ch.data);
        }
        if String::from_utf8_lossy(&out).contains("side-car") {
            break;
        }
        assert!(Instant::now() < deadline, "no side-car output");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The crash loop's output, current and previous instance, through the apiserver.
    let out = logs(&c, "crash", false, false, 0).await;
    assert!(out.contains("run hi"), "{out:?}");
    let prev = logs(&c, "crash", false, true, 0).await;
    assert!(prev.contains("run hi"), "{prev:?}");
}

async fn logs(c: &TestCluster, name: &str, follow: bool, previous: bool, tail: i64) -> String {
    let mut s = c
        .api
        .pods()
        .logs(LogsRequest {
            name: name.into(),
            namespace: "default".into(),
            container: String::new(),
            follow,
            tail_lines: tail,
            previous,
        })
        .await
        .unwrap_or_else(|e| panic!("logs {name}: {e}"))
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend(chunk.expect("log chunk").data);
    }
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_namespaces_and_sigterm_to_pid1_program() {
    if !require_root() {
        return;
    }
    let c = cluster(1).await;
    let node = c.nodes[0].name.clone();
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("got-term");
    // `$$$$`: args get Kubernetes' `$(VAR)` expansion, where `$$` is an escaped `$`.
    let script = format!(
        "echo host=$(hostname) pid=$$$$ greeting=$GREETING; busybox ps -o pid,args; \
         trap 'echo got TERM; echo yes > {}; exit 0' TERM; \
         echo line1; echo line2; while true; do sleep 0.1; done",
        mark.display()
    );
    create(
        &c,
        pod("talker", &node, "busybox", &["sh", "-c", &script], "Always"),
    )
    .await;
    wait_pod(&c, "talker", "Running", 60, running).await;
    // Output is there once the shell printed it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = String::new();
    while !out.contains("line2") {
        assert!(Instant::now() < deadline, "no output: {out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = logs(&c, "talker", false, false, 0).await;
    }
    // Hostname = pod name; the program is PID 2 under our init (PID 1) in its own PID
    // namespace; env from the spec.
    assert!(out.contains("host=talker pid=2 greeting=hi"), "{out}");
    assert!(out.contains("init pid1"), "init is not PID 1: {out}");
    let tail = logs(&c, "talker", false, false, 1).await;
    assert_eq!(tail, "line2\n");

    // follow: streams until the container ends (here: deleted).
    let api = c.api.pods();
    let follow = tokio::spawn(async move {
        let mut api = api;
        let mut s = api
            .logs(LogsRequest {
                name: "talker".into(),
                namespace: "default".into(),
                follow: true,
                tail_lines: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(Ok(chunk)) = s.next().await {
            out.extend(chunk.data);
        }
        String::from_utf8_lossy(&out).to_string()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Graceful delete (grace 30 s): the trap runs, so the pod goes well before SIGKILL.
    delete(&c, "talker", -1).await;
    wait_gone(&c, "talker", 25).await;
    assert!(mark.exists(), "SIGTERM did not reach the program");
    let followed = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .expect("follow ended")
        .unwrap();
    assert!(followed.starts_with("line2\n"), "{followed:?}");
    assert!(followed.contains("got TERM"), "{followed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_pod_moves_and_the_old_node_cleans_up_when_its_agent_returns() {
    if !require_root() {
        return;
    }
    let mut opts = ClusterOptions::new(2, agent_bin());
    opts.apiserver.node_grace_period = Duration::from_secs(3);
    opts.apiserver.pod_eviction_timeout = Duration::from_secs(2);
    let mut c = whoami_cluster(opts).await;
    let (n0, n1) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    let first = create(&c, pod("mover", &n0, "whoami", &[], "Always")).await;
    let before = wait_pod(&c, "mover", "Running on node0", 60, running).await;
    let u = uid(&first);
    assert!(c.nodes[0]
        .pod_netns_list()
        .contains(&c.nodes[0].pod_netns(&u)));

    // node0 goes silent: NotReady, its pod is evicted and scheduled onto node1.
    c.kill_agent(0);
    let after = wait_pod(&c, "mover", "Running on node1", 60, |p| {
        running(p) && p.spec.as_ref().is_some_and(|s| s.node_name == n1)
    })
    .await;
    assert_eq!(uid(&after), u);
    assert_ne!(ip(&after), ip(&before));
    assert_eq!(
        after.status.as_ref().unwrap().host_ip,
        c.nodes[1].address.to_string()
    );
    // The old instance still runs on node0 (nobody there to stop it) ...
    assert!(c.nodes[0]
        .pod_netns_list()
        .contains(&c.nodes[0].pod_netns(&u)));
    // ... until node0's agent is back: it is not bound there any more → torn down.
    c.start_agent(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.nodes[0].pod_netns_list().is_empty()
        || links(&c, 0).contains(&host_if(&u))
        || ipam_json(&c, 0).contains(&u)
    {
        assert!(
            Instant::now() < deadline,
            "node0 kept the evicted pod\n{}",
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The moved pod serves on node1, reachable from node1's namespace.
    let body = c.exec_in_node(
        1,
        &[
            busybox(),
            "timeout",
            "5",
            busybox(),
            "wget",
            "-qO-",
            &format!("http://{}:8080/", ip(&after)),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&body.stdout).trim(),
        format!("HOSTNAME:mover IP:{}", ip(&after))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rides_out_an_apiserver_restart() {
    if !require_root() {
        return;
    }
    let mut c = cluster(1).await;
    let node = c.nodes[0].name.clone();
    create(&c, pod("before", &node, "whoami", &[], "Always")).await;
    let before = wait_pod(&c, "before", "Running", 60, running).await;
    c.api.restart().await;
    // The agent's watches resume (or relist) against the restarted server.
    create(&c, pod("after", &node, "whoami", &[], "Always")).await;
    let after = wait_pod(&c, "after", "Running", 60, running).await;
    assert_ne!(ip(&after), ip(&before));
    let same = wait_pod(&c, "before", "Running", 10, running).await;
    assert_eq!(
        pid(&same),
        pid(&before),
        "restarted across the apiserver restart"
    );
    delete(&c, "before", -1).await;
    wait_gone(&c, "before", 40).await;
    assert_eq!(
        c.nodes[0].pod_netns_list(),
        vec![c.nodes[0].pod_netns(&uid(&after))]
    );
}
