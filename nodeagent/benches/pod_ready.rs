//! Issue 13 benchmark (root only): a one-node TestCluster (real apiserver, agent,
//! namespaces).
//!
//! 1. create → Ready (as a watcher sees the Ready condition True) for the pod: a
//!    configMap volume (of a ConfigMap the bench creates), an init container that checks
//!    the mounted file exists (`busybox test -f`; a missing volume fails it, and its
//!    retry shows in the figure), and an httpGet readiness probe on whoami (which mounts
//!    the volume too); created one after another: p50 / p99 / max, MET/MISSED against
//!    the p99 < 250 ms; anchor in the same run: create → Running of a plain
//!    whoami pod, and the ratio of the two.
//! 2. Agent CPU for httpGet probes: pods of one whoami + N−1 `sleep` containers, every
//!    container with an httpGet readiness probe on the pod's whoami every second; the
//!    agent's user+system CPU over a window, per second and per probe.
//!
//! Run: `cargo bench -p nodeagent --bench pod_ready` (as root). Sizes:
//! `KL_BENCH_PODS` (default 30 sequential pods), `KL_BENCH_PROBES` (default 200 probes/s;
//! the figure is 1000), `KL_BENCH_WINDOW_S` (default 10).

use futures::StreamExt;
use kube_lite_client::{watcher, Event, WatchParams};
use kube_lite_proto::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, HttpGetAction, ObjectMeta, Pod, PodSpec, Probe,
    Volume, VolumeMount,
};
use kube_lite_tests::cluster::{ensure_whoami, require_root, ClusterOptions, TestCluster};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn readiness() -> Option<Probe> {
    Some(Probe {
        http_get: Some(HttpGetAction {
            path: "/".into(),
            port: 8080,
            scheme: "HTTP".into(),
            ..Default::default()
        }),
        period_seconds: 1,
        timeout_seconds: 1,
        success_threshold: 1,
        failure_threshold: 3,
        ..Default::default()
    })
}

fn ctr(name: &str, image: &str, args: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: image.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn pod(name: &str, node: &str, init: Vec<Container>, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            init_containers: init,
            containers,
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
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

#[derive(Default)]
struct Seen {
    running: Mutex<HashMap<String, Instant>>,
    ready: Mutex<HashMap<String, Instant>>,
    notify: Notify,
}

impl Seen {
    async fn wait(&self, ready: bool, name: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let m = if ready { &self.ready } else { &self.running };
            if let Some(t) = m.lock().unwrap().get(name) {
                return Ok(*t);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{name} not {} after {timeout:?}",
                    if ready { "Ready" } else { "Running" }
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &s[s.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3; utime is field 14, stime 15.
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    g(11) + g(12)
}

async fn run() -> anyhow::Result<()> {
    ensure_whoami(&agent_bin());
    let mut opts = ClusterOptions::new(1, agent_bin());
    opts.extra_agent_args = vec!["--no-proxy".into()];
    opts.agent_env = vec![("RUST_LOG".into(), "warn".into())];
    let c = TestCluster::start(opts).await?;
    let node = c.nodes[0].name.clone();
    let n = env_num("KL_BENCH_PODS", 30);
    let probes = env_num("KL_BENCH_PROBES", 200);
    let window = Duration::from_secs(env_num("KL_BENCH_WINDOW_S", 10) as u64);

    let seen = Arc::new(Seen::default());
    let synced = Arc::new(Notify::new());
    {
        let (seen, synced, api) = (seen.clone(), synced.clone(), c.api.pods());
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
                for p in &pods {
                    let name = p.metadata.as_ref().unwrap().name.clone();
                    if running(p) {
                        seen.running
                            .lock()
                            .unwrap()
                            .entry(name.clone())
                            .or_insert(now);
                    }
                    if ready(p) {
                        seen.ready.lock().unwrap().entry(name).or_insert(now);
                    }
                }
                seen.notify.notify_waiters();
            }
        });
    }
    synced.notified().await;

    // The ConfigMap every `ready-*` pod mounts; mount points under a temporary directory
    // (the process runtime makes them on the node, and removes them with the pod).
    c.api
        .config_maps()
        .create(ConfigMap {
            metadata: Some(ObjectMeta {
                name: "bench-cfg".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            data: [("greeting".to_string(), "hello".to_string())].into(),
            ..Default::default()
        })
        .await?;
    let mnt = tempfile::Builder::new().prefix("kl-bench-cfg-").tempdir()?;

    // 1. Anchor: plain whoami → Running; then configMap + init container + readiness
    // probe → Ready.
    let (mut plain, mut full) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("plain-{i}");
        let t0 = Instant::now();
        c.api
            .pods()
            .create(pod(&name, &node, vec![], vec![ctr("web", "whoami", &[])]))
            .await?;
        plain.push(seen.wait(false, &name, Duration::from_secs(30)).await? - t0);
        let name = format!("ready-{i}");
        let path = mnt.path().join(format!("cfg-{i}"));
        let vm = VolumeMount {
            name: "cfg".into(),
            mount_path: path.display().to_string(),
            read_only: true,
            ..Default::default()
        };
        let mut web = ctr("web", "whoami", &[]);
        web.readiness_probe = readiness();
        web.volume_mounts = vec![vm.clone()];
        let file = path.join("greeting").display().to_string();
        let mut init = ctr("init", "busybox", &["test", "-f", &file]);
        init.volume_mounts = vec![vm];
        let mut p = pod(&name, &node, vec![init], vec![web]);
        p.spec.as_mut().unwrap().volumes = vec![Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "bench-cfg".into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let t0 = Instant::now();
        c.api.pods().create(p).await?;
        full.push(seen.wait(true, &name, Duration::from_secs(30)).await? - t0);
    }
    plain.sort();
    full.sort();

    // 2. Probe CPU: pods of one whoami + 49 sleepers, every container probed each second.
    let per_pod = 50usize;
    let pods = probes.div_ceil(per_pod);
    for i in 0..pods {
        let mut cs = Vec::new();
        for j in 0..per_pod {
            let mut c = if j == 0 {
                ctr("web", "whoami", &[])
            } else {
                ctr(&format!("s{j}"), "busybox", &["sleep", "3600"])
            };
            c.readiness_probe = readiness();
            cs.push(c);
        }
        let name = format!("probed-{i}");
        c.api.pods().create(pod(&name, &node, vec![], cs)).await?;
    }
    for i in 0..pods {
        seen.wait(true, &format!("probed-{i}"), Duration::from_secs(120))
            .await?;
    }
    // Let the fast first retries settle into the 1 s period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = c.nodes[0].agent.as_ref().map(|a| a.id()).unwrap_or(0);
    let tick = 100.0; // USER_HZ
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(window).await;
    let (c1, el) = (cpu_ticks(pid), t0.elapsed());
    let cpu_s = (c1 - c0) as f64 / tick;
    // The `ready-*` pods of part 1 are still probed too.
    let rate = (pods * per_pod + n) as f64;
    let pct_core = cpu_s / el.as_secs_f64() * 100.0;

    println!();
    println!(
        "pod_ready (issue 13), 1 node, {n} sequential pods, {} containers probed each second",
        pods * per_pod + n
    );
    println!("-----------------------------------------------------------------");
    println!(
        "anchor: plain whoami  create -> Running    p50 {}  p99 {}  max {}",
        ms(pct(&plain, 0.5)),
        ms(pct(&plain, 0.99)),
        ms(*plain.last().unwrap())
    );
    let p99 = pct(&full, 0.99);
    println!(
        "configMap + init + readiness  create -> Ready  p50 {}  p99 {}  max {}",
        ms(pct(&full, 0.5)),
        ms(p99),
        ms(*full.last().unwrap())
    );
    println!(
        "ratio                 p50 {:.2}x  p99 {:.2}x the anchor",
        pct(&full, 0.5).as_secs_f64() / pct(&plain, 0.5).as_secs_f64(),
        p99.as_secs_f64() / pct(&plain, 0.99).as_secs_f64()
    );
    println!(
        "target p99 < 250 ms   {} (p99 {})",
        if p99 < Duration::from_millis(250) {
            "MET"
        } else {
            "MISSED"
        },
        ms(p99)
    );
    println!(
        "httpGet probes        {rate:.0}/s: agent CPU {pct_core:.1}% of one core over {:.1} s = {:.1} us per probe",
        el.as_secs_f64(),
        cpu_s / (rate * el.as_secs_f64()) * 1e6
    );
    Ok(())
}

fn main() {
    if !require_root() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("pod_ready benchmark failed: {e:#}");
        std::process::exit(1);
    }
}
