//! kubectl-lite against a real one-node cluster (real apiserver, a real `nodeagent` in a
//! network namespace; `kube_lite_tests::cluster::TestCluster`): the user's path from
//! `create pod` to Running, `logs`, `describe`, and a `delete` that waits for the node.
//! Root only (skipped otherwise).

use kube_lite_tests::cluster::{
    busybox, default_agent_bin, require_root, ClusterOptions, TestCluster,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-lite");

/// The agent binary, built if missing (it belongs to another package of the workspace).
fn agent_bin() -> PathBuf {
    let p = default_agent_bin();
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-p", "nodeagent", "--bin", "nodeagent"])
            .status()
            .expect("cargo build nodeagent");
        assert!(st.success(), "building nodeagent failed");
    }
    p
}

async fn kl(server: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(BIN)
            .arg("--server")
            .arg(server)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl-lite finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `get pod NAME -o json` until `check` holds (or fails after 60 s with the last object).
async fn wait_pod(server: &str, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = kl(server, &["get", "pod", name, "-o", "json"]).await;
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} never got there: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_lifecycle_on_a_real_node() {
    if !require_root() {
        return;
    }
    let mut opts = ClusterOptions::new(1, agent_bin());
    opts.extra_agent_args
        .extend(["--heartbeat-interval".to_string(), "1s".to_string()]);
    let cluster = TestCluster::start(opts).await.expect("test cluster");
    let s = cluster.api.url.clone();
    let s = s.as_str();

    let (code, out, err) = kl(s, &["get", "nodes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("node0 ") && l.contains(" Ready ")),
        "{out}"
    );

    let script = "echo hello from kube-lite; exec sleep 1000";
    let (code, out, err) = kl(
        s,
        &[
            "create",
            "pod",
            "hello",
            "--image",
            busybox(),
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "pod/hello created\n"), "{err}");

    let v = wait_pod(s, "hello", |v| v["status"]["phase"] == "Running").await;
    let ip = v["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with("10.0."), "{v:#}");
    assert_eq!(v["spec"]["nodeName"], "node0");
    assert!(
        v["status"]["containerStatuses"][0]["state"]["running"].is_object(),
        "{v:#}"
    );

    let (code, out, _) = kl(s, &["get", "pods", "-o", "wide"]).await;
    assert_eq!(code, 0);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[5], row[6]),
        ("hello", "1/1", "Running", ip.as_str(), "node0"),
        "{out}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = kl(s, &["logs", "hello"]).await;
        if code == 0 && out == "hello from kube-lite\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {code} {out:?} {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, _) = kl(s, &["logs", "hello", "--tail", "1"]).await;
    assert_eq!((code, out.as_str()), (0, "hello from kube-lite\n"));

    // -f streams: the line arrives and the command keeps following until killed.
    let mut follow = Command::new(BIN)
        .args(["--server", s, "logs", "-f", "hello"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a log line")
        .unwrap();
    assert_eq!(first.as_deref(), Some("hello from kube-lite"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f keeps following"
    );
    follow.start_kill().unwrap();
    follow.wait().await.unwrap();

    let (code, out, _) = kl(s, &["describe", "pod", "hello"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Node:               node0/") && out.contains("State:          Running"),
        "{out}"
    );
    assert!(out.contains(&format!("IP:                 {ip}")), "{out}");

    // Graceful: the agent stops the container (SIGTERM ends `sleep`) and confirms; the
    // CLI waits for that by watching.
    let (code, out, err) = kl(s, &["delete", "pod", "hello"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "pod \"hello\" deleted\n"),
        "{err}"
    );
    let (code, _, err) = kl(s, &["get", "pod", "hello"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: pods \"hello\" not found\n")
    );
}

/// The README's Deployment example, command by command, on a real 2-node cluster:
/// create with 3 replicas, scale to 5, a rolling update (`set image`), history, undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_deployment_example_on_a_real_cluster() {
    if !require_root() {
        return;
    }
    let bin = agent_bin();
    kube_lite_tests::cluster::ensure_whoami(&bin);
    let mut opts = ClusterOptions::new(2, bin);
    opts.extra_agent_args
        .extend(["--heartbeat-interval".to_string(), "1s".to_string()]);
    let cluster = TestCluster::start(opts).await.expect("test cluster");
    let s = cluster.api.url.clone();
    let s = s.as_str();
    let ok = |r: (i32, String, String)| {
        assert_eq!(r.0, 0, "{}", r.2);
        r.1
    };
    let running = |out: &str, want: usize| {
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        rows.len() == want && rows.iter().all(|r| r[1] == "1/1" && r[2] == "Running")
    };
    let out = ok(kl(
        s,
        &[
            "create",
            "deployment",
            "web",
            "--image",
            "whoami",
            "--replicas",
            "3",
        ],
    )
    .await);
    assert_eq!(out, "deployment.apps/web created\n");
    let out = ok(kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "120s"],
    )
    .await);
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    let pods = ok(kl(s, &["get", "pods", "-o", "wide"]).await);
    assert!(running(&pods, 3), "{pods}");
    let nodes: std::collections::BTreeSet<&str> = pods
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6))
        .collect();
    assert_eq!(nodes.len(), 2, "spread over both nodes: {pods}");

    assert_eq!(
        ok(kl(s, &["scale", "deployment", "web", "--replicas", "5"]).await),
        "deployment.apps/web scaled\n"
    );
    ok(kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "120s"],
    )
    .await);
    assert!(running(&ok(kl(s, &["get", "pods"]).await), 5));

    assert_eq!(
        ok(kl(s, &["set", "image", "deployment/web", "whoami=kl-whoami"]).await),
        "deployment.apps/web image updated\n"
    );
    let out = ok(kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "180s"],
    )
    .await);
    assert!(out.contains("successfully rolled out"), "{out}");
    let hist = ok(kl(s, &["rollout", "history", "deployment/web"]).await);
    assert_eq!(
        hist.lines().filter(|l| !l.is_empty()).count(),
        4,
        "name, header, revisions 1 and 2: {hist}"
    );
    let rs = ok(kl(s, &["get", "rs"]).await);
    assert_eq!(rs.lines().count(), 3, "{rs}");

    assert_eq!(
        ok(kl(s, &["rollout", "undo", "deployment/web"]).await),
        "deployment.apps/web rolled back\n"
    );
    ok(kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "180s"],
    )
    .await);
    let (_, out, _) = kl(s, &["get", "deploy", "web", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "whoami"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = ok(kl(s, &["get", "pods"]).await);
        if running(&pods, 5) {
            break;
        }
        assert!(Instant::now() < deadline, "{pods}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let desc = ok(kl(s, &["describe", "deployment", "web"]).await);
    assert!(desc.contains("ScalingReplicaSet"), "{desc}");
}

/// `describe pod` shows the Events the node agent writes itself (issue 13): a failing
/// liveness probe's `Warning Unhealthy … kubelet, node0  Liveness probe failed: …` and
/// `Normal Killing … Container app failed liveness probe, will be restarted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_shows_the_agents_liveness_events() {
    if !require_root() {
        return;
    }
    let cluster = TestCluster::start(ClusterOptions::new(1, agent_bin()))
        .await
        .expect("test cluster");
    let s = cluster.api.url.clone();
    let s = s.as_str();
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("live.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {}
    args: [sleep, \"3600\"]
    livenessProbe:
      exec: {{command: [cat, /nonexistent-kube-lite-probe-file]}}
      periodSeconds: 1
      failureThreshold: 1
",
            busybox()
        ),
    )
    .unwrap();
    let (code, _, err) = kl(s, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = kl(s, &["describe", "pod", "live"]).await;
        assert_eq!(code, 0, "{err}");
        let events = out.split("Events:").nth(1).unwrap_or_default().to_string();
        let unhealthy = events.lines().any(|l| {
            l.contains("Warning")
                && l.contains("Unhealthy")
                && l.contains("kubelet, node0")
                && l.contains("Liveness probe failed: cat: ")
        });
        let killing = events.lines().any(|l| {
            l.contains("Normal")
                && l.contains("Killing")
                && l.contains("Container app failed liveness probe, will be restarted")
        });
        if unhealthy && killing {
            break;
        }
        assert!(Instant::now() < deadline, "no liveness events yet:\n{out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
