//! Image runtime benchmark (root, containerd + runc installed): pod create → Running
//! (seen by a watcher) for the containerd runtime (whoami image loaded from the
//! project's archive) against the process runtime (kl-whoami of the node) in one run,
//! on one-node namespace clusters: N pods one after another (p50/p99/max) and B pods at
//! once (all Running; p50/p99 of the burst), then delete all and check nothing is left.
//! Anchors: youki's README, 198 ms per container (runc 352 ms); Kubernetes' pod start
//! SLO 5 s; target p99 < 500 ms.
//!
//! Run: `cargo bench -p nodeagent --bench image_pod_start` (KL_BENCH_SEQ=30,
//! KL_BENCH_BURST=100 by default).

use futures::StreamExt;
use kube_lite_client::{watcher, Event, WatchParams};
use kube_lite_proto::v1::{DeleteRequest, ImageChunk, ListRequest, Pod};
use kube_lite_tests::cluster::{ensure_whoami, require_root, ClusterOptions, TestCluster};
use kube_lite_tests::containerd::{self as kit, TestContainerd};
use kube_lite_tests::fixtures::whoami_pod;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn env_n(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn pod(name: &str) -> Pod {
    whoami_pod(name, "node0")
}

fn images() -> PathBuf {
    kit::image_archives(&agent_bin())
}

/// Loads `archive` onto node0 through the apiserver (NodeApi.LoadImage, as
/// `kubectl-lite image load`).
async fn load(c: &TestCluster, archive: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(archive)?;
    let chunks: Vec<ImageChunk> = data
        .chunks(1 << 20)
        .enumerate()
        .map(|(k, d)| ImageChunk {
            data: d.to_vec(),
            file_name: String::new(),
            node: if k == 0 {
                "node0".into()
            } else {
                String::new()
            },
        })
        .collect();
    c.api
        .nodes()
        .load_image(futures::stream::iter(chunks))
        .await?;
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Figures {
    seq_p50: f64,
    seq_p99: f64,
    seq_max: f64,
    burst_all: f64,
    burst_p50: f64,
    burst_p99: f64,
}

async fn wait_running(
    seen: &Mutex<HashMap<String, Instant>>,
    names: &[String],
    t: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + t;
    loop {
        let missing = {
            let at = seen.lock().unwrap();
            names.iter().filter(|n| !at.contains_key(*n)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{missing} pods not Running after {t:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn delete_all(c: &TestCluster, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        c.api
            .pods()
            .delete(DeleteRequest {
                name: n.clone(),
                namespace: "default".into(),
                resource_version: 0,
                grace_period_seconds: 5,
                ..Default::default()
            })
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while !c
        .api
        .pods()
        .list(ListRequest::default())
        .await?
        .into_inner()
        .items
        .is_empty()
    {
        anyhow::ensure!(Instant::now() < deadline, "pods left after 180 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn measure(c: &TestCluster, seq_n: usize, burst_n: usize) -> anyhow::Result<Figures> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    {
        let seen = seen.clone();
        let api = c.api.pods();
        tokio::spawn(async move {
            let mut w = Box::pin(watcher(api, WatchParams::default()));
            while let Some(ev) = w.next().await {
                let now = Instant::now();
                let pods = match ev {
                    Ok(Event::Restarted(items, _)) => items,
                    Ok(Event::Applied(p)) => vec![p],
                    _ => continue,
                };
                let mut at = seen.lock().unwrap();
                for p in pods {
                    let st = p.status.clone().unwrap_or_default();
                    if st.phase == "Running" && !st.pod_ip.is_empty() {
                        at.entry(p.metadata.unwrap_or_default().name).or_insert(now);
                    }
                }
            }
        });
    }
    let mut lat = Vec::new();
    let mut seq = Vec::new();
    for i in 0..seq_n {
        let name = format!("seq-{i}");
        let t0 = Instant::now();
        c.api.pods().create(pod(&name)).await?;
        wait_running(&seen, std::slice::from_ref(&name), Duration::from_secs(60)).await?;
        lat.push(seen.lock().unwrap()[&name] - t0);
        seq.push(name);
    }
    lat.sort();
    delete_all(c, &seq).await?;
    let burst: Vec<String> = (0..burst_n).map(|i| format!("burst-{i}")).collect();
    let t0 = Instant::now();
    let futs = burst.iter().map(|n| {
        let mut api = c.api.pods();
        let p = pod(n);
        async move { api.create(p).await }
    });
    for r in futures::future::join_all(futs).await {
        r?;
    }
    wait_running(&seen, &burst, Duration::from_secs(300)).await?;
    let mut bl: Vec<Duration> = burst.iter().map(|n| seen.lock().unwrap()[n] - t0).collect();
    bl.sort();
    delete_all(c, &burst).await?;
    Ok(Figures {
        seq_p50: ms(pct(&lat, 0.5)),
        seq_p99: ms(pct(&lat, 0.99)),
        seq_max: ms(*lat.last().unwrap()),
        burst_all: ms(*bl.last().unwrap()),
        burst_p50: ms(pct(&bl, 0.5)),
        burst_p99: ms(pct(&bl, 0.99)),
    })
}

async fn run() -> anyhow::Result<()> {
    let (seq_n, burst_n) = (env_n("KL_BENCH_SEQ", 30), env_n("KL_BENCH_BURST", 100));
    ensure_whoami(&agent_bin());
    let imgs = images();
    let base = |extra: Vec<String>| {
        let mut o = ClusterOptions::new(1, agent_bin());
        o.extra_agent_args = vec!["--no-proxy".into()];
        o.extra_agent_args.extend(extra);
        o.agent_env = vec![("RUST_LOG".into(), "warn".into())];
        o
    };
    let process = {
        let c = TestCluster::start(base(vec![])).await?;
        measure(&c, seq_n, burst_n).await?
    };
    let ctrd = TestContainerd::start()?;
    let containerd = {
        let c = TestCluster::start(base(ctrd.agent_args())).await?;
        load(&c, &imgs.join("whoami.tar")).await?;
        let f = measure(&c, seq_n, burst_n).await?;
        // Deleting every pod leaves no container or task behind.
        let left =
            kube_lite_tests::containerd::pids_with_cmdline(&ctrd.socket.display().to_string())
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .map(|c| c.starts_with("containerd-shim"))
                        .unwrap_or(false)
                })
                .count();
        println!("containerd shims left after deleting every pod: {left} (target 0)");
        f
    };
    let _ = kit::available();
    println!();
    println!(
        "image pod start (1 node, {} CPUs; {seq_n} sequential, {burst_n} at once)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("runtime      seq p50    seq p99    seq max    burst p50  burst p99  burst all");
    for (n, f) in [("process", &process), ("containerd", &containerd)] {
        println!(
            "{n:<12} {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            f.seq_p50, f.seq_p99, f.seq_max, f.burst_p50, f.burst_p99, f.burst_all
        );
    }
    println!(
        "containerd / process: seq p50 x{:.1}, seq p99 x{:.1}, burst all x{:.1}  (target seq p99 < 500 ms; youki 198 ms, runc 352 ms per container; Kubernetes SLO 5 s)",
        containerd.seq_p50 / process.seq_p50,
        containerd.seq_p99 / process.seq_p99,
        containerd.burst_all / process.burst_all
    );
    Ok(())
}

fn main() {
    if !require_root() {
        return;
    }
    if !kit::available() {
        eprintln!("skipping: containerd/runc not installed");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("image_pod_start benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
