//! Apiserver benchmark: durable creates/s and latency with 1, 8 and 64 concurrent gRPC
//! clients (each its own connection), watch delivery latency with 100 watchers, and a
//! List of 10,000 pods. With `--features etcd` and an `etcd` binary on PATH, the same
//! write load runs against etcd (revision-checked create txn, as Kubernetes does).
//!
//!   cargo bench -p kube-lite-tests --bench apiserver --features etcd
//!
//! Every create is validated, versioned, fsync'ed (group commit) and visible to watchers.
//! The pods are created pre-bound to a node so the scheduler adds no extra writes.
//!
//! The server is secure (TLS, client certificates, authorization) as by default; the
//! "security overhead" section runs the same writes and watch against a second,
//! `--insecure` server in the same run and prints the ratio (issue 14).
//! `KL_BENCH_SECS=N` shortens each write level (default 5 s); `KL_BENCH_ROUNDS=N`
//! alternating secure/plain rounds per level (default 3); `KL_BENCH_ONLY=security` runs
//! only that comparison.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
#[cfg(feature = "etcd")]
use prost::Message;
use tonic::transport::Channel;

fn write_secs() -> u64 {
    std::env::var("KL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}
const LEVELS: [usize; 3] = [1, 8, 64];

fn pod(ns: &str, name: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            labels: [
                ("app".to_string(), "bench".to_string()),
                ("tier".to_string(), "web".to_string()),
            ]
            .into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: "bench-node".into(),
            containers: vec![Container {
                name: "web".into(),
                image: "/usr/bin/kl-whoami".into(),
                args: vec!["--port".into(), "8080".into()],
                env: vec![EnvVar {
                    name: "MODE".into(),
                    value: "bench".into(),
                    ..Default::default()
                }],
                ports: vec![ContainerPort {
                    name: "http".into(),
                    container_port: 8080,
                    protocol: "TCP".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// A connection to the test server at `url`: TLS as the admin (client certificate) for
/// `https://`, plaintext for `http://`.
async fn channel(url: &str) -> Channel {
    kube_lite_tests::apiserver::connect_for(url).await
}

fn pods_client(ch: Channel) -> pod_api_client::PodApiClient<Channel> {
    pod_api_client::PodApiClient::new(ch).max_decoding_message_size(256 << 20)
}

struct WriteResult {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
    /// CPU time of this whole process (server and clients) during the run, µs.
    cpu_us: u64,
}

/// utime + stime of this process from /proc/self/stat, in µs (clock ticks of 10 ms).
fn process_cpu_us() -> u64 {
    let t = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = t.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the ")": state is field 3, utime 14, stime 15 (1-based) → indexes 11, 12.
    (ticks(11) + ticks(12)) * 10_000
}

impl WriteResult {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn cpu_per_op(&self) -> f64 {
        self.cpu_us as f64 / self.ops.max(1) as f64
    }
    fn merge(&mut self, o: WriteResult) {
        self.cpu_us += o.cpu_us;
        self.ops += o.ops;
        self.secs += o.secs;
        self.hist.add(o.hist).unwrap();
    }
    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `clients` tasks create pods as fast as they can for WRITE_SECS.
async fn apiserver_writes(url: &str, clients: usize) -> WriteResult {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(pods_client(channel(url).await));
    }
    // Names unique across calls on one server.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(write_secs());
    let start = Instant::now();
    let cpu0 = process_cpu_us();
    let mut tasks = Vec::new();
    for (c, mut client) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).unwrap();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                client
                    .create(pod("bench", &format!("w{run}-{clients}-{c}-{i}")))
                    .await
                    .expect("create");
                h.record(t.elapsed().as_micros() as u64).unwrap();
                i += 1;
            }
            h
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        hist.add(t.await.unwrap()).unwrap();
    }
    let cpu_us = process_cpu_us().saturating_sub(cpu0);
    WriteResult {
        ops: hist.len(),
        secs: start.elapsed().as_secs_f64(),
        hist,
        cpu_us,
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
    use std::process::{Child, Command, Stdio};

    pub struct Etcd {
        child: Child,
        pub url: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub async fn start() -> Option<Etcd> {
        let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::Builder::new().prefix("kl-etcd-").tempdir().ok()?;
        let (cp, pp) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let child = Command::new(bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("bench={peer}"),
                "--quota-backend-bytes",
                "8589934592",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let e = Etcd {
            child,
            url,
            _dir: dir,
        };
        for _ in 0..100 {
            if let Ok(mut c) = Client::connect([e.url.as_str()], None).await {
                if c.status().await.is_ok() {
                    return Some(e);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub async fn writes(url: &str, clients: usize) -> WriteResult {
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(Client::connect([url], None).await.expect("etcd connect"));
        }
        let deadline = Instant::now() + Duration::from_secs(write_secs());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (c, mut client) in conns.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let name = format!("w{clients}-{c}-{i}");
                    let key = format!("/registry/pods/bench/{name}");
                    let mut p = pod("bench", &name);
                    p.metadata.as_mut().unwrap().uid =
                        "00000000-0000-4000-8000-000000000000".into();
                    let t = Instant::now();
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, p.encode_to_vec(), None)]);
                    let r = client.txn(txn).await.expect("etcd txn");
                    assert!(r.succeeded());
                    h.record(t.elapsed().as_micros() as u64).unwrap();
                    i += 1;
                }
                h
            }));
        }
        let mut hist = Histogram::<u64>::new(3).unwrap();
        for t in tasks {
            hist.add(t.await.unwrap()).unwrap();
        }
        WriteResult {
            ops: hist.len(),
            secs: start.elapsed().as_secs_f64(),
            hist,
            cpu_us: 0,
        }
    }
}

/// 100 watchers (own connections); writers create pods; latency from each create's
/// acknowledgement (and from its send) to its arrival at every watcher.
async fn watch_latency(
    url: &str,
    watchers: usize,
    writes: usize,
) -> (Histogram<u64>, Histogram<u64>, usize) {
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let mut c = pods_client(channel(url).await);
        let s = c
            .watch(WatchRequest {
                namespace: "watch".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        streams.push(s);
    }
    let mut tasks = Vec::new();
    for mut s in streams {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(writes);
            while got.len() < writes {
                match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
                    Ok(Some(Ok(e))) if e.r#type == EventType::Added as i32 => {
                        got.push((e.object.unwrap().metadata.unwrap().name, Instant::now()));
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            got
        }));
    }
    let sent: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let mut writers = Vec::new();
    let per_writer = writes / 4;
    for w in 0..4 {
        let mut c = pods_client(channel(url).await);
        let sent = sent.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let name = format!("wl-{w}-{i}");
                let t0 = Instant::now();
                c.create(pod("watch", &name)).await.unwrap();
                sent.lock().unwrap().insert(name, (t0, Instant::now()));
                // Paced: about 1,000 writes/s in total.
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let mut from_ack = Histogram::<u64>::new(3).unwrap();
    let mut from_send = Histogram::<u64>::new(3).unwrap();
    let mut delivered = 0;
    for t in tasks {
        for (name, at) in t.await.unwrap() {
            if let Some((t0, ack)) = sent.get(&name) {
                delivered += 1;
                from_ack
                    .record(at.saturating_duration_since(*ack).as_micros() as u64)
                    .unwrap();
                from_send
                    .record(at.saturating_duration_since(*t0).as_micros() as u64)
                    .unwrap();
            }
        }
    }
    (from_ack, from_send, delivered)
}

async fn list_10k(s: &TestApiServer) -> (usize, Histogram<u64>) {
    // Fill namespace "list" with 10,000 pods (64 clients).
    let mut tasks = Vec::new();
    for c in 0..64 {
        let mut client = pods_client(channel(&s.url).await);
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < 10_000 {
                client
                    .create(pod("list", &format!("l-{i:05}")))
                    .await
                    .unwrap();
                i += 64;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut client = pods_client(channel(&s.url).await);
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut n = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let l = client
            .list(ListRequest {
                namespace: "list".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        h.record(t.elapsed().as_micros() as u64).unwrap();
        n = l.items.len();
    }
    (n, h)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    // The in-process apiserver runs on its own 2-thread runtime (TestApiServer).
    let s = TestApiServer::start().await;
    // Namespaces must exist before objects are created in them (issue 11).
    s.create_namespace("bench").await;
    s.create_namespace("watch").await;
    s.create_namespace("list").await;
    println!(
        "kube-lite apiserver benchmark ({} s per write level, release build: {})",
        write_secs(),
        !cfg!(debug_assertions)
    );
    println!();

    #[cfg(feature = "etcd")]
    let etcd = etcd::start().await;
    #[cfg(feature = "etcd")]
    if etcd.is_none() {
        println!("etcd: binary not found or did not start; skipping the comparison");
    }
    #[cfg(not(feature = "etcd"))]
    println!("etcd comparison: build with --features etcd");

    // KL_BENCH_ONLY=security: only the security comparison (issue 14).
    let only_security = std::env::var("KL_BENCH_ONLY").as_deref() == Ok("security");
    if !only_security {
        println!("Durable creates (each client its own connection)");
        println!(
            "{:<10} {:>8} {:>12} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7}",
            "clients", "", "apiserver/s", "p50 ms", "p99 ms", "etcd/s", "p50 ms", "p99 ms", "ratio"
        );
        for clients in LEVELS {
            let a = apiserver_writes(&s.url, clients).await;
            #[allow(unused_mut)]
            let mut etcd_cols = format!("{:>12} {:>9} {:>9} {:>7}", "-", "-", "-", "-");
            #[cfg(feature = "etcd")]
            if let Some(e) = &etcd {
                let r = etcd::writes(&e.url, clients).await;
                etcd_cols = format!(
                    "{:>12.0} {:>9.2} {:>9.2} {:>6.2}x",
                    r.rate(),
                    r.p(0.5),
                    r.p(0.99),
                    a.rate() / r.rate()
                );
            }
            println!(
                "{:<10} {:>8} {:>12.0} {:>9.2} {:>9.2} {}",
                clients,
                "",
                a.rate(),
                a.p(0.5),
                a.p(0.99),
                etcd_cols
            );
        }
        #[cfg(feature = "etcd")]
        drop(etcd);
        println!();

        let (ack, send, delivered) = watch_latency(&s.url, 100, 2000).await;
        println!("Watch delivery, 100 watchers, 2,000 paced creates ({delivered} deliveries)");
        println!(
            "  after the create's ack:  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(ack.value_at_quantile(0.5)),
            ms(ack.value_at_quantile(0.99)),
            ms(ack.max())
        );
        println!(
            "  after the create's send: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(send.value_at_quantile(0.5)),
            ms(send.value_at_quantile(0.99)),
            ms(send.max())
        );
        println!();
    }

    // Issue 14: what TLS + authentication + authorization cost, against the same
    // server in --insecure mode, in this run.
    // Two fresh servers (same store size at each level), one secure, one not.
    let secure = TestApiServer::start().await;
    let plain = TestApiServer::start_insecure().await;
    for srv in [&secure, &plain] {
        srv.create_namespace("bench").await;
        srv.create_namespace("watch").await;
    }
    println!(
        "Security overhead: TLS + client-certificate auth (secure, the default) vs --insecure"
    );
    println!("  (cpu µs/op: CPU of this process, clients included, per create)");
    println!(
        "{:<10} {:>10} {:>9} {:>10} {:>9} {:>7} {:>11} {:>11}",
        "clients", "secure/s", "p99 ms", "plain/s", "p99 ms", "ratio", "cpu µs/op s", "cpu µs/op p"
    );
    // Alternating rounds (KL_BENCH_ROUNDS, default 3) merged, so load from elsewhere on
    // the machine hits both sides alike.
    let rounds: usize = std::env::var("KL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for clients in LEVELS {
        let mut sec = apiserver_writes(&secure.url, clients).await;
        let mut pl = apiserver_writes(&plain.url, clients).await;
        for _ in 1..rounds {
            sec.merge(apiserver_writes(&secure.url, clients).await);
            pl.merge(apiserver_writes(&plain.url, clients).await);
        }
        println!(
            "{:<10} {:>10.0} {:>9.2} {:>10.0} {:>9.2} {:>6.2}x {:>11.0} {:>11.0}",
            clients,
            sec.rate(),
            sec.p(0.99),
            pl.rate(),
            pl.p(0.99),
            sec.rate() / pl.rate(),
            sec.cpu_per_op(),
            pl.cpu_per_op()
        );
    }
    let (sec_ack, _, _) = watch_latency(&secure.url, 100, 2000).await;
    let (plain_ack, _, plain_n) = watch_latency(&plain.url, 100, 2000).await;
    println!(
        "  watch p99 after ack: secure {:.2} ms, plain {:.2} ms ({plain_n} plain deliveries)",
        ms(sec_ack.value_at_quantile(0.99)),
        ms(plain_ack.value_at_quantile(0.99))
    );
    drop(plain);
    drop(secure);
    println!();
    if only_security {
        return;
    }

    let (n, h) = list_10k(&s).await;
    println!(
        "List of {n} pods (20 runs): p50 {:.1} ms  max {:.1} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.max())
    );
}
