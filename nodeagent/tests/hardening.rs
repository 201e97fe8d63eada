//! Issue 9 on a real node agent (root only, skipped otherwise): huge grace periods
//! (point 2), kill -9 of the agent during a burst of pod starts (point 3), container
//! log rotation and streaming tails (point 9).

use futures::StreamExt;
use kube_lite_proto::v1::{
    Container, DeleteRequest, GetRequest, ListRequest, LogsRequest, ObjectMeta, Pod, PodSpec,
};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions, TestCluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn pod(name: &str, node: &str, args: &[&str], grace: i64) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }],
            restart_policy: "Always".into(),
            termination_grace_period_seconds: grace,
            ..Default::default()
        }),
        status: None,
    }
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

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
}

fn uid(p: &Pod) -> String {
    p.metadata.as_ref().unwrap().uid.clone()
}

async fn wait_running(c: &TestCluster, name: &str, secs: u64) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = get(c, name).await;
        if let Some(p) = p.as_ref().filter(|p| running(p)) {
            return p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} not Running: {:?}\n{}",
            p.map(|p| p.status),
            c.agent_log_tail(0, 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete(c: &TestCluster, name: &str, grace: i64) -> Result<(), tonic::Status> {
    c.api
        .pods()
        .delete(DeleteRequest {
            name: name.into(),
            namespace: "default".into(),
            resource_version: 0,
            grace_period_seconds: grace,
        })
        .await
        .map(|_| ())
}

async fn wait_gone(c: &TestCluster, name: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while get(c, name).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "pod {name} still exists after {secs}s\n{}",
            c.agent_log_tail(0, 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn links(c: &TestCluster) -> String {
    String::from_utf8_lossy(&c.exec_in_node(0, &["ip", "-o", "link"]).stdout).to_string()
}

/// argv of every live (non-zombie) process.
fn processes() -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !argv.is_empty() {
            out.push((pid, argv));
        }
    }
    out
}

fn is_init(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|a| a == "init")
}

/// Container shims of the pod `uid` on the node with state dir `state`.
fn shims_of(procs: &[(i32, Vec<String>)], state: &Path, uid: &str) -> Vec<i32> {
    let dir = state.join("pods").join(uid);
    let dir = dir.to_string_lossy();
    procs
        .iter()
        .filter(|(_, a)| {
            is_init(a)
                && a.get(2).is_some_and(|s| s == "shim")
                && a.iter().any(|x| x.starts_with(&*dir))
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Program processes (not the init) whose argv carries `marker`.
fn programs_with(procs: &[(i32, Vec<String>)], marker: &str) -> Vec<i32> {
    procs
        .iter()
        .filter(|(_, a)| !is_init(a) && a.iter().any(|x| x == marker))
        .map(|(p, _)| *p)
        .collect()
}

/// Point 2: a pod with `termination_grace_period_seconds = i64::MAX`, deleted with a
/// DeleteRequest grace of i64::MAX, stops (its program obeys SIGTERM), is deleted and
/// leaves no netns, veth or process. Before: the worker panicked at
/// `Instant::now() + grace` and the pod stayed Terminating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_grace_periods_do_not_panic_the_agent() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let marker = "424242";
    for (name, spec_grace) in [("huge-spec", i64::MAX), ("huge-delete", 30)] {
        let p = pod(name, &node, &["sleep", marker], spec_grace);
        match c.api.pods().create(p).await {
            Ok(_) => {}
            // The apiserver may cap the grace in validation: then only the
            // DeleteRequest's grace reaches the agent.
            Err(e) if e.code() == tonic::Code::InvalidArgument => {
                eprintln!("apiserver refused spec grace i64::MAX: {}", e.message());
                c.api
                    .pods()
                    .create(pod(name, &node, &["sleep", marker], 30))
                    .await
                    .expect("create pod");
            }
            Err(e) => panic!("create {name}: {e}"),
        }
    }
    let a = wait_running(&c, "huge-spec", 60).await;
    let b = wait_running(&c, "huge-delete", 60).await;
    // Spec grace (grace -1 = the pod's), then an explicit i64::MAX.
    delete(&c, "huge-spec", -1).await.expect("delete");
    match delete(&c, "huge-delete", i64::MAX).await {
        Ok(()) => {}
        Err(e) if e.code() == tonic::Code::InvalidArgument => {
            eprintln!("apiserver refused delete grace i64::MAX: {}", e.message());
            delete(&c, "huge-delete", -1).await.expect("delete");
        }
        Err(e) => panic!("delete: {e}"),
    }
    wait_gone(&c, "huge-spec", 30).await;
    wait_gone(&c, "huge-delete", 30).await;
    let log = c.agent_log_tail(0, 400);
    assert!(!log.contains("panicked"), "agent panicked:\n{log}");
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in [&a, &b] {
        let u = uid(p);
        let ns = c.nodes[0].pod_netns(&u);
        loop {
            let procs = processes();
            let left = !shims_of(&procs, &c.nodes[0].state_dir, &u).is_empty()
                || c.nodes[0].pod_netns_list().contains(&ns)
                || links(&c).contains(&kube_lite_net::host_if_name(&u));
            if !left {
                break;
            }
            assert!(Instant::now() < deadline, "pod {u} not cleaned up\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(programs_with(&processes(), marker).is_empty());
    // The agent still works.
    c.api
        .pods()
        .create(pod("after", &node, &["sleep", marker], 30))
        .await
        .expect("create");
    wait_running(&c, "after", 60).await;
}

/// Point 3: bursts of pod starts with the agent SIGKILLed 10, 30, 60 and 120 ms in,
/// then restarted: every pod ends with exactly one live instance (one shim, one
/// program), and deleting every pod leaves no container process, netns or veth.
/// Before: some pods had two live instances and processes survived the deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_a_burst_of_starts_never_runs_a_second_instance() {
    if !require_root() {
        return;
    }
    let mut c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let state = c.nodes[0].state_dir.clone();
    const PER_ROUND: usize = 15;
    let mut names = Vec::new();
    for (round, kill_after_ms) in [10u64, 30, 60, 120].into_iter().enumerate() {
        let batch: Vec<(String, String)> = (0..PER_ROUND)
            .map(|i| {
                (
                    format!("burst-{round}-{i}"),
                    format!("{}", 5_000_000 + round * 100 + i),
                )
            })
            .collect();
        let creates = batch.iter().map(|(name, marker)| {
            let api = c.api.pods();
            let p = pod(name, &node, &["sleep", marker], 30);
            async move { api.clone().create(p).await.expect("create") }
        });
        futures::future::join_all(creates).await;
        // The fault injection itself is timed: kill -9 this far into the burst.
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        c.kill_agent(0);
        c.start_agent(0);
        names.extend(batch);
    }
    let mut uids = Vec::new();
    for (name, _) in &names {
        uids.push(uid(&wait_running(&c, name, 120).await));
    }
    // Let adoption settle (a second start would show up by now), then count.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let procs = processes();
        let bad: Vec<String> = names
            .iter()
            .zip(&uids)
            .filter_map(|((name, marker), u)| {
                let shims = shims_of(&procs, &state, u).len();
                let progs = programs_with(&procs, marker).len();
                (shims != 1 || progs != 1)
                    .then(|| format!("{name}: {shims} shims, {progs} programs"))
            })
            .collect();
        if bad.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods without exactly one instance: {bad:?}\n{}",
            c.agent_log_tail(0, 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Restart counts: an adopted unrecorded instance is no restart.
    for (name, _) in &names {
        let p = get(&c, name).await.unwrap();
        let st = &p.status.unwrap().container_statuses[0];
        assert_eq!(st.restart_count, 0, "{name} restarted");
    }
    for (name, _) in &names {
        delete(&c, name, 0).await.expect("delete");
    }
    for (name, _) in &names {
        wait_gone(&c, name, 60).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let procs = processes();
        let left_shims: usize = uids.iter().map(|u| shims_of(&procs, &state, u).len()).sum();
        let left_progs: usize = names
            .iter()
            .map(|(_, m)| programs_with(&procs, m).len())
            .sum();
        let ns = c.nodes[0].pod_netns_list();
        let l = links(&c);
        let veths: Vec<&String> = uids
            .iter()
            .filter(|u| l.contains(&kube_lite_net::host_if_name(u)))
            .collect();
        if left_shims == 0 && left_progs == 0 && ns.is_empty() && veths.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after deleting every pod: {left_shims} shims, {left_progs} programs, \
             netns {ns:?}, veths {veths:?}\n{}",
            c.agent_log_tail(0, 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = ListRequest::default();
}
