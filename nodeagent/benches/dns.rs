//! Issue 12 benchmark (root only): the cluster DNS of one node agent, queried from a pod.
//!
//! A one-node TestCluster (real apiserver, agent, namespaces; the agent runs with
//! `--dns-upstream none`, so nothing leaves the machine), a busybox pod and a Service.
//! From a UDP socket opened inside the pod's network namespace:
//! 1. latency: `KL_BENCH_DNS_QUERIES` (default 5,000) sequential A queries for
//!    `<svc>.default.svc.cluster.local` (each waits for its answer): p50 / p99 / max;
//!    anchor: the same loop against a UDP echo socket inside the node namespace (what
//!    the kernel path alone costs from the pod);
//! 2. throughput: `KL_BENCH_DNS_WINDOW` (default 64) queries in flight from each of 4
//!    sockets for `KL_BENCH_DNS_SECONDS` (default 3): answers per second.
//!
//! Run: `cargo bench -p nodeagent --bench dns` (as root).

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use kube_lite_proto::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use kube_lite_tests::cluster::{busybox, require_root, ClusterOptions, TestCluster};
use kube_lite_tests::fixtures::default_meta;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sequential round trips to `to` (an answer checked for its id and, for DNS, for
/// `want_ip` in it).
fn latencies(sock: &UdpSocket, to: SocketAddr, n: usize, want_ip: Option<&str>) -> Vec<Duration> {
    let mut buf = [0u8; 1500];
    let mut v = Vec::with_capacity(n);
    let want: Option<std::net::Ipv4Addr> = want_ip.map(|w| w.parse().unwrap());
    for i in 0..n {
        let id = i as u16;
        let q = query(id, "dns-bench.default.svc.cluster.local.");
        let t = Instant::now();
        sock.send_to(&q, to).unwrap();
        loop {
            let (len, _) = sock.recv_from(&mut buf).expect("answer within 2 s");
            if u16::from_be_bytes([buf[0], buf[1]]) != id {
                continue;
            }
            if let Some(want) = want {
                let m = Message::from_vec(&buf[..len]).unwrap();
                let ok = m
                    .answers()
                    .iter()
                    .any(|r| r.data().as_a().is_some_and(|a| a.0 == want));
                assert!(ok, "answer without {want}: {m:?}");
            }
            break;
        }
        v.push(t.elapsed());
    }
    v
}

/// `window` queries in flight on each of `socks`, for `secs`: answers per second.
fn throughput(socks: Vec<UdpSocket>, to: SocketAddr, window: usize, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let handles: Vec<_> = socks
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let q = query(7, "dns-bench.default.svc.cluster.local.");
                let mut buf = [0u8; 1500];
                let mut answers = 0u64;
                let mut in_flight = 0usize;
                while Instant::now() < deadline {
                    while in_flight < window {
                        s.send_to(&q, to).unwrap();
                        in_flight += 1;
                    }
                    match s.recv_from(&mut buf) {
                        Ok(_) => {
                            answers += 1;
                            in_flight -= 1;
                        }
                        // A lost datagram: refill the window.
                        Err(_) => in_flight = 0,
                    }
                }
                answers
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    if !require_root() {
        eprintln!("dns benchmark needs root (namespaces); skipped");
        return Ok(());
    }
    let n = env_num("KL_BENCH_DNS_QUERIES", 5_000);
    let window = env_num("KL_BENCH_DNS_WINDOW", 64);
    let secs = env_num("KL_BENCH_DNS_SECONDS", 3) as u64;
    let mut opts = ClusterOptions::new(1, agent_bin());
    opts.extra_agent_args
        .extend(["--dns-upstream".to_string(), "none".to_string()]);
    let c = TestCluster::start(opts).await?;
    let node = c.nodes[0].name.clone();
    let pod = Pod {
        metadata: default_meta("dns-client"),
        spec: Some(PodSpec {
            node_name: node,
            containers: vec![Container {
                name: "c".into(),
                image: busybox().into(),
                args: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    };
    c.api.pods().create(pod).await?;
    let svc = c
        .api
        .services()
        .create(Service {
            metadata: default_meta("dns-bench"),
            spec: Some(ServiceSpec {
                ports: vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        })
        .await?
        .into_inner();
    let svc_ip = svc.spec.unwrap().cluster_ip;
    let p = c
        .wait_pod("dns-client", "Running with an IP", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
        })
        .await;
    let pod_ns = c.nodes[0].pod_netns(&p.metadata.unwrap().uid);
    let dns: SocketAddr = "10.96.0.10:53".parse().unwrap();

    // Wait until the agent's DNS answers with the Service's IP.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ip = svc_ip.clone();
        let ns = pod_ns.clone();
        let ok = kube_lite_net::netns::in_netns(Some(&ns), move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            std::panic::catch_unwind(|| latencies(&s, dns, 1, Some(&ip))).is_ok()
        })
        .await?;
        if ok {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "cluster DNS never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Anchor: a UDP echo in the node namespace, reached from the pod the same way.
    let node_ns = c.nodes[0].netns.clone();
    let echo =
        kube_lite_net::netns::in_netns(Some(&node_ns), || UdpSocket::bind("0.0.0.0:0").unwrap())
            .await?;
    let echo_port = echo.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..len], from);
        }
    });
    let node_ip = c.nodes[0].address;
    let gw: SocketAddr = SocketAddr::new(node_ip.into(), echo_port);

    let ip = svc_ip.clone();
    let (mut lat, mut base) = kube_lite_net::netns::in_netns(Some(&pod_ns), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        latencies(&s, dns, 200, Some(&ip)); // warm up
        let lat = latencies(&s, dns, n, Some(&ip));
        let base = latencies(&s, gw, n, None);
        (lat, base)
    })
    .await?;
    let qps = kube_lite_net::netns::in_netns(Some(&pod_ns), move || {
        let socks: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind("0.0.0.0:0").unwrap())
            .collect();
        throughput(socks, dns, window, secs)
    })
    .await?;
    println!("cluster DNS benchmark (one node agent, queries from a pod; times in ms)");
    println!(
        "A query for a Service, {n} sequential: p50 {:.3} | p99 {:.3} (target < 2) | max {:.3}",
        ms(pct(&mut lat, 50.0)),
        ms(pct(&mut lat, 99.0)),
        ms(pct(&mut lat, 100.0)),
    );
    println!(
        "anchor, UDP echo in the node namespace from the pod: p50 {:.3} | p99 {:.3} | DNS p50 / echo p50 {:.1}×",
        ms(pct(&mut base, 50.0)),
        ms(pct(&mut base, 99.0)),
        pct(&mut lat, 50.0).as_secs_f64() / pct(&mut base, 50.0).as_secs_f64()
    );
    println!("throughput: {qps:.0} answers/s (4 sockets × {window} in flight, {secs} s)");
    drop(c);
    Ok(())
}
