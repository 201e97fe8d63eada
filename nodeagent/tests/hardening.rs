//! Issue 9 on a real node agent (root only, skipped otherwise): huge grace periods
//! (point 2), kill -9 of the agent during a burst of pod starts (point 3), container
//! log rotation and streaming tails (point 9).

use futures::StreamExt;
use kube_lite_proto::v1::{Container, GetRequest, LogsRequest, Pod, PodSpec};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions, TestCluster};
use kube_lite_tests::fixtures::{node_pod, uid};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn pod(name: &str, node: &str, args: &[&str], grace: i64) -> Pod {
    let c = Container {
        name: "c".into(),
        image: "busybox".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    node_pod(name, node, vec![c], "Always", grace)
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
    c.delete_pod(name, grace).await
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
}

async fn logs_stream(
    c: &TestCluster,
    name: &str,
    follow: bool,
    previous: bool,
    tail: i64,
) -> tonic::Streaming<kube_lite_proto::v1::LogChunk> {
    c.api
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
        .into_inner()
}

async fn logs(c: &TestCluster, name: &str, previous: bool, tail: i64) -> String {
    let mut s = logs_stream(c, name, false, previous, tail).await;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend(chunk.expect("log chunk").data);
    }
    String::from_utf8_lossy(&out).to_string()
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Point 9: with `--container-log-max-size 1Mi`, a pod writing ~1.5 MB/s keeps its log
/// files bounded (current and one rotated part, each ≤ 1 MiB), `logs --tail 1` returns
/// the last line, a follow keeps streaming across rotations, and tails of a 64 MiB log
/// leave the agent's memory flat. Before: the file grew without bound and a tail read
/// the whole file into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_rotate_and_tails_stream_from_the_end() {
    if !require_root() {
        return;
    }
    const LIMIT: u64 = 1 << 20;
    let mut opts = ClusterOptions::new(1, agent_bin());
    opts.extra_agent_args = vec!["--container-log-max-size".into(), "1Mi".into()];
    let c = whoami_cluster(opts).await;
    let node = c.nodes[0].name.clone();
    let script = "i=1000000; while true; do seq $i $((i+19999)); i=$((i+20000)); sleep 0.1; done";
    c.api
        .pods()
        .create(pod("writer", &node, &["sh", "-c", script], 30))
        .await
        .expect("create");
    let w = wait_running(&c, "writer", 60).await;
    let dir = c.nodes[0].state_dir.join("pods").join(uid(&w));
    let (cur, rot) = (dir.join("c.log"), dir.join("c.log.rotated"));

    // Follow from the last line, in the background, while the log rotates.
    let mut follow = logs_stream(&c, "writer", true, false, 1).await;
    let (ftx, mut frx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let follower = tokio::spawn(async move {
        while let Some(Ok(chunk)) = follow.next().await {
            if ftx.send(chunk.data).is_err() {
                return;
            }
        }
    });

    // Watch three rotations (the rotated part is replaced each time), checking the
    // bound at every look.
    use std::os::unix::fs::MetadataExt;
    let mut rotations = 0;
    let mut last_ino = None;
    let mut max_seen = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rotations < 3 {
        let (a, b) = (file_len(&cur), file_len(&rot));
        max_seen = (max_seen.0.max(a), max_seen.1.max(b));
        assert!(
            a <= LIMIT && b <= LIMIT,
            "log {a} B, rotated {b} B (limit {LIMIT})"
        );
        let ino = std::fs::metadata(&rot).map(|m| m.ino()).ok();
        if ino.is_some() && ino != last_ino {
            rotations += 1;
            last_ino = ino;
        }
        assert!(
            Instant::now() < deadline,
            "only {rotations} rotations; log {a} B\n{}",
            c.agent_log_tail(0, 40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "largest log {} B, rotated {} B (limit {LIMIT})",
        max_seen.0, max_seen.1
    );

    // The last line, and only it.
    let t = logs(&c, "writer", false, 1).await;
    assert!(
        t.ends_with('\n') && t.lines().count() == 1,
        "{:?}",
        &t[..t.len().min(200)]
    );
    let n: u64 = t.trim().parse().expect("a number");
    assert!(n > 1_000_000 + 3 * (LIMIT / 8), "{n}");

    // The follow went on across the rotations: increasing numbers far past the first.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (first, last) = loop {
        while let Ok(d) = frx.try_recv() {
            got.extend(d);
        }
        let text = String::from_utf8_lossy(&got);
        let nums: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
        if let (Some(f), Some(l)) = (nums.first(), nums.last()) {
            if l - f > 3 * (LIMIT / 8) {
                assert!(nums.windows(2).all(|w| w[1] > w[0]), "follow out of order");
                break (*f, *l);
            }
        }
        assert!(
            Instant::now() < deadline,
            "follow stalled at {} bytes",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "follow streamed {first}..{last} ({} bytes) across rotations",
        got.len()
    );
    follower.abort();

    // Tails of a big log: a finished pod whose previous log is 64 MiB.
    c.api
        .pods()
        .create(Pod {
            spec: Some(PodSpec {
                restart_policy: "Never".into(),
                ..pod("big", &node, &["echo", "done"], 30).spec.unwrap()
            }),
            ..pod("big", &node, &[], 30)
        })
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(60);
    let big = loop {
        if let Some(p) = get(&c, "big").await {
            if p.status.as_ref().is_some_and(|s| s.phase == "Succeeded") {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "big did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let prev = c.nodes[0]
        .state_dir
        .join("pods")
        .join(uid(&big))
        .join("c.log.1");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&prev).unwrap());
        let mut i = 0u64;
        while i * 32 < 64 << 20 {
            writeln!(f, "previous line {i:018}").unwrap();
            i += 1;
        }
        f.flush().unwrap();
    }
    let agent = c.nodes[0].agent.as_ref().unwrap().id();
    let (rss0, hwm0) = (status_kb(agent, "VmRSS:"), status_kb(agent, "VmHWM:"));
    let tails = (0..4).map(|_| logs(&c, "big", true, 1));
    for t in futures::future::join_all(tails).await {
        assert!(
            t.starts_with("previous line ") && t.lines().count() == 1,
            "{:?}",
            &t[..t.len().min(200)]
        );
    }
    let t = logs(&c, "big", true, 3).await;
    assert_eq!(t.lines().count(), 3, "{:?}", &t[..t.len().min(200)]);
    let (rss1, hwm1) = (status_kb(agent, "VmRSS:"), status_kb(agent, "VmHWM:"));
    eprintln!(
        "agent VmRSS {rss0} → {rss1} kB, VmHWM {hwm0} → {hwm1} kB, serving 5 tails of a {} B log",
        file_len(&prev)
    );
    assert!(
        hwm1 - hwm0 < 16 * 1024,
        "agent peak memory grew {} kB",
        hwm1 - hwm0
    );
    assert!(logs(&c, "big", false, 0).await.contains("done"));
    let _ = std::fs::remove_file(&prev);
}
