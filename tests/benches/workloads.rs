//! Workloads benchmark (issue 11).
//!
//! 1. **Real cluster** (the kit's 2-node namespace cluster with real `nodeagent`s, root
//!    only): a `--replicas` (50) whoami Deployment created → every pod Running and the
//!    Deployment available (wall time), then a rolling update of it (default 25%/25%)
//!    → every pod new, Running and available (wall time).
//! 2. **Controller work per change** (in-process apiserver, real sled, real controller
//!    manager; a Ready node without agent, pods made Running by the bench): with 1 and
//!    with `--idle` (1,000) idle Deployments (1 ready replica each) present, `--changes`
//!    (30) scale-ups of one Deployment, each timed from the Update call to the new pod's
//!    creation seen by a watch (Deployment controller → ReplicaSet update → ReplicaSet
//!    controller → pod create). The anchor is the 1-Deployment case: the ratio of the
//!    medians should be ~1.0 (per-change work does not depend on other Deployments).
//!
//!   cargo bench -p kube-lite-tests --bench workloads -- [--replicas 50] [--idle 1000]
//!       [--changes 30] [--skip-cluster] [--skip-idle]
//!
//! (The agent binary is `target/<profile>/nodeagent`, or `$KUBE_LITE_AGENT_BIN`; build
//! it and `kl-whoami` with the same profile.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::cluster::{default_agent_bin, require_root, whoami_cluster, ClusterOptions};
use tonic::transport::Channel;

struct Args {
    replicas: i32,
    idle: usize,
    changes: usize,
    skip_cluster: bool,
    skip_idle: bool,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            replicas: 50,
            idle: 1000,
            changes: 30,
            skip_cluster: false,
            skip_idle: false,
        };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < argv.len() {
            let val = || argv.get(i + 1).cloned().unwrap_or_default();
            match argv[i].as_str() {
                "--replicas" => {
                    a.replicas = val().parse().expect("--replicas N");
                    i += 1;
                }
                "--idle" => {
                    a.idle = val().parse().expect("--idle N");
                    i += 1;
                }
                "--changes" => {
                    a.changes = val().parse().expect("--changes N");
                    i += 1;
                }
                "--skip-cluster" => a.skip_cluster = true,
                "--skip-idle" => a.skip_idle = true,
                "--bench" => {}
                other => panic!("unknown argument {other}"),
            }
            i += 1;
        }
        a
    }
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn deployment(name: &str, replicas: i32, version: &str) -> Deployment {
    Deployment {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels(&[("app", name)]),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels(&[("app", name)]),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: "whoami".into(),
                        env: vec![EnvVar {
                            name: "VERSION".into(),
                            value: version.into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    restart_policy: "Always".into(),
                    termination_grace_period_seconds: 1,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn get(name: &str) -> GetRequest {
    GetRequest {
        name: name.into(),
        namespace: "default".into(),
    }
}

/// Polls until the Deployment is complete: observed, `n` updated/ready/available, and
/// exactly `n` pods exist, all of one ReplicaSet and Running.
async fn wait_complete(s: &TestApiServer, name: &str, n: i32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let d = s.deployments().get(get(name)).await.unwrap().into_inner();
        let st = d.status.clone().unwrap_or_default();
        let done_status = st.observed_generation == d.metadata.as_ref().unwrap().generation
            && st.updated_replicas == n
            && st.available_replicas == n
            && st.replicas == n;
        if done_status {
            let pods = s
                .pods()
                .list(ListRequest {
                    namespace: "default".into(),
                    label_selector: format!("app={name}"),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .items;
            let owners: std::collections::BTreeSet<String> = pods
                .iter()
                .filter_map(|p| p.metadata.as_ref()?.owner_references.first())
                .map(|o| o.name.clone())
                .collect();
            if pods.len() == n as usize
                && owners.len() == 1
                && pods
                    .iter()
                    .all(|p| p.status.as_ref().is_some_and(|s| s.phase == "Running"))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "deployment {name} not complete after {within:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn real_cluster(replicas: i32) {
    if !require_root() {
        println!("real cluster: skipped (needs root)");
        return;
    }
    let mut opts = ClusterOptions::new(2, default_agent_bin());
    opts.ready_timeout = Duration::from_secs(120);
    let c = whoami_cluster(opts).await;
    let t = Instant::now();
    c.api
        .deployments()
        .create(deployment("bench", replicas, "v1"))
        .await
        .expect("create");
    wait_complete(&c.api, "bench", replicas, Duration::from_secs(600)).await;
    let created = t.elapsed();
    println!(
        "real cluster (2 nodes): {replicas}-replica Deployment created -> all Running + available: {:.2} s ({:.0} ms per pod)",
        created.as_secs_f64(),
        created.as_secs_f64() * 1000.0 / replicas as f64
    );
    let mut d = c
        .api
        .deployments()
        .get(get("bench"))
        .await
        .unwrap()
        .into_inner();
    d.spec.as_mut().unwrap().template = deployment("bench", replicas, "v2").spec.unwrap().template;
    let t = Instant::now();
    c.api.deployments().update(d).await.expect("update");
    wait_complete(&c.api, "bench", replicas, Duration::from_secs(900)).await;
    let rolled = t.elapsed();
    println!(
        "real cluster (2 nodes): rolling update of {replicas} pods (maxSurge 25%, maxUnavailable 25%) -> all new, Running + available: {:.2} s",
        rolled.as_secs_f64()
    );
}

async fn ready_node(s: &TestApiServer) {
    let mut nodes = s.nodes();
    let mut n = nodes
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                address: "192.168.0.1".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .into_inner();
    n.status = Some(NodeStatus {
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        capacity: labels(&[("pods", "100000")]),
        allocatable: labels(&[("pods", "100000")]),
        ..Default::default()
    });
    nodes.update_status(n).await.unwrap();
}

/// Plays the agent once over every bound pod that is not Running yet.
async fn make_running(ch: &Channel) -> usize {
    let mut pods = pod_api_client::PodApiClient::new(ch.clone());
    let list = pods
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let todo: Vec<Pod> = list
        .into_iter()
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty())
                && p.status.as_ref().is_none_or(|s| s.phase != "Running")
                && p.metadata.as_ref().unwrap().deletion_timestamp == 0
        })
        .collect();
    let n = todo.len();
    stream::iter(todo)
        .for_each_concurrent(16, |mut p| {
            let mut pods = pods.clone();
            async move {
                p.status = Some(PodStatus {
                    phase: "Running".into(),
                    start_time: 1,
                    pod_ip: "10.0.1.2".into(),
                    conditions: vec![PodCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }],
                    container_statuses: vec![ContainerStatus {
                        name: "web".into(),
                        state: "Running".into(),
                        ready: true,
                        started_at: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                let _ = pods.update_status(p).await;
            }
        })
        .await;
    n
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Median and p90 (ms) of `changes` scale-ups of a probe Deployment with `idle` idle
/// Deployments present.
async fn per_change(idle: usize, changes: usize) -> (f64, f64) {
    let s = TestApiServer::start_with(apiserver::Config {
        node_grace_period: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    ready_node(&s).await;
    let ch = s.channel();
    let t = Instant::now();
    stream::iter(0..idle)
        .for_each_concurrent(16, |i| {
            let mut ds = s.deployments();
            async move {
                ds.create(deployment(&format!("idle-{i}"), 1, "v1"))
                    .await
                    .expect("create idle");
            }
        })
        .await;
    // Until every idle Deployment has its Running pod and says so.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        make_running(&ch).await;
        let ds = s
            .deployments()
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        let available = ds
            .iter()
            .filter(|d| d.status.as_ref().is_some_and(|s| s.available_replicas == 1))
            .count();
        if available == idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{available}/{idle} idle deployments available"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup = t.elapsed();
    s.deployments()
        .create(deployment("probe", 1, "v1"))
        .await
        .unwrap();
    let mut watch = s
        .pods()
        .watch(WatchRequest {
            namespace: "default".into(),
            label_selector: "app=probe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0usize;
    // The probe's first pod.
    while seen < 1 {
        let ev = watch.next().await.unwrap().unwrap();
        if ev.r#type == EventType::Added as i32 {
            seen += 1;
        }
    }
    let mut lat = Vec::new();
    for k in 0..changes {
        // The controllers write the probe's status too: retry a lost race, time the
        // update that wins.
        let t = loop {
            let mut d = s
                .deployments()
                .get(get("probe"))
                .await
                .unwrap()
                .into_inner();
            d.spec.as_mut().unwrap().replicas = Some(k as i32 + 2);
            let t = Instant::now();
            match s.deployments().update(d).await {
                Ok(_) => break t,
                Err(e) if e.code() == tonic::Code::Aborted => continue,
                Err(e) => panic!("scale probe: {e}"),
            }
        };
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("pod within 30 s")
                .unwrap()
                .unwrap();
            if ev.r#type == EventType::Added as i32 {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p90) = (pct(&mut lat, 0.5), pct(&mut lat, 0.9));
    println!(
        "controller per change, {idle:>4} idle Deployments present (setup {:.1} s): scale-up -> pod created: median {p50:.2} ms, p90 {p90:.2} ms ({changes} changes)",
        setup.as_secs_f64()
    );
    (p50, p90)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    if !a.skip_cluster {
        real_cluster(a.replicas).await;
    }
    if !a.skip_idle {
        let (one, one90) = per_change(1, a.changes).await;
        let (many, many90) = per_change(a.idle, a.changes).await;
        println!(
            "ratio {} idle / 1 idle (anchor): median {:.2}x, p90 {:.2}x",
            a.idle,
            many / one,
            many90 / one90
        );
    }
}
