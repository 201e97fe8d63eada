//! Pod start benchmark (root only): a one-node TestCluster (real apiserver, real agent
//! process, real namespaces), pods running `whoami`.
//!
//! 1. Latency create → Running with an IP, as seen by a watcher (Kubernetes' pod startup
//!    latency), for 50 pods created one after another: p50 / p99 / max.
//! 2. 200 pods created at once: time until all are Running (as seen by the watcher).
//! 3. Delete all (graceful, default grace): time until all are gone from the apiserver;
//!    then check that no pod netns, veth or IP allocation is left.
//!
//! Run: `cargo bench -p nodeagent --bench pod_start` (as root).

use futures::StreamExt;
use kube_lite_client::{watcher, Event, WatchParams};
use kube_lite_proto::v1::{DeleteRequest, ListRequest, Pod};
use kube_lite_tests::cluster::{ensure_whoami, require_root, ClusterOptions, TestCluster};
use kube_lite_tests::fixtures::whoami_pod;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn pod(name: &str, node: &str) -> Pod {
    whoami_pod(name, node)
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
}

/// First time each pod was seen Running with an IP.
#[derive(Default)]
struct Seen {
    at: Mutex<HashMap<String, Instant>>,
    notify: Notify,
}

impl Seen {
    async fn wait_all(&self, names: &[String], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            {
                let at = self.at.lock().unwrap();
                let missing = names.iter().filter(|n| !at.contains_key(*n)).count();
                if missing == 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    anyhow::bail!("{missing} pods not Running after {timeout:?}");
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
    fn get(&self, name: &str) -> Instant {
        self.at.lock().unwrap()[name]
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn delete_all(c: &TestCluster, names: &[String]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let futs = names.iter().map(|n| {
        let mut api = c.api.pods();
        let n = n.clone();
        async move {
            api.delete(DeleteRequest {
                name: n,
                namespace: "default".into(),
                resource_version: 0,
                grace_period_seconds: -1,
                ..Default::default()
            })
            .await
        }
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = c
            .api
            .pods()
            .list(ListRequest::default())
            .await?
            .into_inner()
            .items
            .len();
        if left == 0 {
            return Ok(t0.elapsed());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{left} pods still there after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leftovers(c: &TestCluster) -> (usize, usize, usize) {
    let netns = c.nodes[0].pod_netns_list().len();
    let links = String::from_utf8_lossy(&c.exec_in_node(0, &["ip", "-o", "link"]).stdout)
        .lines()
        .filter(|l| l.contains(": klv"))
        .count();
    let ipam = std::fs::read(c.nodes[0].state_dir.join("ipam.json")).unwrap_or_default();
    let ips = serde_json::from_slice::<serde_json::Value>(&ipam)
        .ok()
        .and_then(|v| {
            v.get("allocations")
                .and_then(|a| a.as_object())
                .map(|a| a.len())
        })
        .unwrap_or(0);
    (netns, links, ips)
}

async fn run() -> anyhow::Result<()> {
    ensure_whoami(&agent_bin());
    let mut opts = ClusterOptions::new(1, agent_bin());
    opts.extra_agent_args = vec!["--no-proxy".into()];
    opts.agent_env = vec![("RUST_LOG".into(), "warn".into())];
    let c = TestCluster::start(opts).await?;
    let node = c.nodes[0].name.clone();

    let seen = Arc::new(Seen::default());
    let synced = Arc::new(Notify::new());
    {
        let seen = seen.clone();
        let synced = synced.clone();
        let api = c.api.pods();
        tokio::spawn(async move {
            let mut w = Box::pin(watcher(api, WatchParams::default()));
            while let Some(ev) = w.next().await {
                let now = Instant::now();
                let pods = match ev {
                    Ok(Event::Restarted(items, _)) => {
                        synced.notify_one();
                        items
                    }
                    Ok(Event::Applied(p)) => vec![p],
                    _ => continue,
                };
                let mut at = seen.at.lock().unwrap();
                for p in pods.iter().filter(|p| running(p)) {
                    let name = p.metadata.as_ref().unwrap().name.clone();
                    at.entry(name).or_insert(now);
                }
                drop(at);
                seen.notify.notify_waiters();
            }
        });
    }
    synced.notified().await;

    // 1. 50 pods one after another.
    let mut lat = Vec::new();
    let mut seq = Vec::new();
    for i in 0..50 {
        let name = format!("seq-{i}");
        let t0 = Instant::now();
        c.api.pods().create(pod(&name, &node)).await?;
        seen.wait_all(std::slice::from_ref(&name), Duration::from_secs(30))
            .await?;
        lat.push(seen.get(&name) - t0);
        seq.push(name);
    }
    lat.sort();
    let del_seq = delete_all(&c, &seq).await?;
    let left_seq = leftovers(&c);

    // 2. 200 at once.
    let burst: Vec<String> = (0..200).map(|i| format!("burst-{i}")).collect();
    let t0 = Instant::now();
    let futs = burst.iter().map(|n| {
        let mut api = c.api.pods();
        let p = pod(n, &node);
        async move { api.create(p).await }
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    let created = t0.elapsed();
    if let Err(e) = seen.wait_all(&burst, Duration::from_secs(120)).await {
        let at = seen.at.lock().unwrap().clone();
        for n in burst.iter().filter(|n| !at.contains_key(*n)) {
            let p = c
                .api
                .pods()
                .get(kube_lite_proto::v1::GetRequest {
                    name: n.clone(),
                    namespace: "default".into(),
                })
                .await;
            eprintln!("{n}: {:?}", p.map(|p| p.into_inner().status));
        }
        anyhow::bail!("{e}\nagent log:\n{}", c.agent_log_tail(0, 60));
    }
    let all_running = burst
        .iter()
        .map(|n| seen.get(n) - t0)
        .max()
        .unwrap_or_default();
    let mut burst_lat: Vec<Duration> = burst.iter().map(|n| seen.get(n) - t0).collect();
    burst_lat.sort();

    // 3. Delete all.
    let del_burst = delete_all(&c, &burst).await?;
    // The agent releases everything before its final Delete: nothing may be left now.
    let (netns, veths, ips) = leftovers(&c);

    println!();
    println!(
        "pod start benchmark (1 node, image whoami, {} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("-----------------------------------------------------------------");
    println!("50 sequential: create -> Running+IP (watcher)  p50 {}  p99 {}  max {}  (target p99 < 200 ms)",
        ms(pct(&lat, 0.50)), ms(pct(&lat, 0.99)), ms(*lat.last().unwrap()));
    println!(
        "               delete all 50 (graceful) until gone: {}",
        ms(del_seq)
    );
    println!(
        "               left after delete: netns {} veth {} ip {}",
        left_seq.0, left_seq.1, left_seq.2
    );
    println!("200 at once:   creates acknowledged after {}", ms(created));
    println!(
        "               all Running after {}  (p50 pod {})  (target < 10 s)",
        ms(all_running),
        ms(pct(&burst_lat, 0.5))
    );
    println!(
        "               delete all 200 (graceful) until gone: {}",
        ms(del_burst)
    );
    println!(
        "               left after delete: netns {netns} veth {veths} ip {ips}  (target 0 0 0)"
    );
    if netns + veths + ips > 0 {
        anyhow::bail!("resources left after deleting every pod");
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    if !require_root() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("pod_start benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
