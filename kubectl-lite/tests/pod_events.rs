//! `kubectl-lite describe pod` shows the Events the node agent writes itself (issue 13):
//! a pod whose liveness probe fails ends its description with
//! `Warning Unhealthy … kubelet, node0  Liveness probe failed: …` and
//! `Normal Killing … Container app failed liveness probe, will be restarted`. Real
//! one-node cluster; root only (skipped otherwise).

use kube_lite_tests::cluster::{
    busybox, default_agent_bin, require_root, ClusterOptions, TestCluster,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};
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
