//! Memory and disk against history (issue 9): a real `apiserver` process (built in
//! release, run as a child) and its RSS (/proc/<pid>/status VmRSS) and data-directory
//! size after (a) 300 updates of one ~1 MiB object, (b) many pods (KL_BENCH_PODS,
//! default 150,000); the restart time for each; and writers' p99 with 50 stuck
//! watchers (streams never read) against none.
//!
//! Each figure is printed with its target and MET or MISSED: (a) RSS under 100 MB and
//! data directory under 50 MB (issue 9); (b) memory proportional to live pods (the
//! second half of the pods costs about what the first half did, and a restart comes
//! back no larger); writers' p99 with stuck watchers within 1.5x of none.
//!
//!   cargo bench -p kube-lite-tests --bench store_bounds
//!   KL_BENCH_PODS=20000 KL_BENCH_ONLY=a,b cargo bench -p kube-lite-tests --bench store_bounds
//!
//! KL_BENCH_ONLY picks parts (a = large object, b = many pods, w = stuck watchers);
//! KL_BENCH_LOG is the apiserver's RUST_LOG (default warn).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kube_lite_proto::v1::*;
use tonic::transport::{Channel, Endpoint};

fn apiserver_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KL_APISERVER_BIN") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "apiserver",
            "--bin",
            "apiserver",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(st.success(), "building apiserver failed");
    root.join("target/release/apiserver")
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(bin: &Path, dir: &Path) -> (Server, Duration) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Instant::now();
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir)
            // Plain HTTP/2 (the bench measures the store, not TLS).
            .arg("--insecure")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("KL_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .expect("spawn apiserver");
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready = a List answers.
        loop {
            if let Ok(ch) = Endpoint::from_shared(s.url.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut pods =
                    pod_api_client::PodApiClient::new(ch).max_decoding_message_size(256 << 20);
                if pods
                    .list(ListRequest {
                        namespace: "none".into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (s, t.elapsed())
    }
    fn rss_mb(&self) -> f64 {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = st
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }
    async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_mb(p: &Path) -> f64 {
    fn size(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => size(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    size(p) as f64 / (1 << 20) as f64
}

/// The data directory's parts: sled's files, the value files, the disk reserve.
fn dir_parts(p: &Path) -> String {
    format!(
        "sled {:.1} MB, value files {:.1} MB ({} files), reserve {:.1} MB",
        dir_mb(&p.join("sled")),
        dir_mb(&p.join("values")),
        std::fs::read_dir(p.join("values"))
            .map(|d| d.count())
            .unwrap_or(0),
        std::fs::metadata(p.join("disk-reserve"))
            .map(|m| m.len() as f64 / (1 << 20) as f64)
            .unwrap_or(0.0)
    )
}

fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

fn big_endpoints(salt: u32) -> Endpoints {
    let addresses = (0..29_000u32)
        .map(|i| EndpointAddress {
            ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            node_name: format!("node-{}", i % 1000),
            pod_name: format!("web-{salt}-{i}"),
        })
        .collect();
    Endpoints {
        metadata: Some(ObjectMeta {
            name: "big".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        subsets: vec![EndpointSubset {
            addresses,
            not_ready_addresses: vec![],
            ports: vec![],
        }],
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "bench".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: "bench-node".into(),
            containers: vec![Container {
                name: "web".into(),
                image: "/usr/bin/kl-whoami".into(),
                args: vec!["--port".into(), "8080".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Restarts on `dir`; returns the RSS and the data directory's size after the restart.
async fn restart(bin: &Path, dir: &Path, s: Server, what: &str) -> (f64, f64) {
    s.stop();
    let (s, t) = Server::start(bin, dir).await;
    let rss = s.rss_mb();
    println!(
        "{what}: restart {:.2} s, RSS after restart {rss:.1} MB, data dir {:.1} MB ({})",
        t.as_secs_f64(),
        dir_mb(dir),
        dir_parts(dir)
    );
    s.stop();
    (rss, dir_mb(dir))
}

async fn large_object(bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Server::start(bin, dir.path()).await;
    let mut eps = endpoints_api_client::EndpointsApiClient::new(s.channel().await)
        .max_decoding_message_size(256 << 20);
    let first = eps.create(big_endpoints(0)).await.unwrap().into_inner();
    let size = prost::Message::encoded_len(&first);
    let t = Instant::now();
    for i in 1..=300 {
        eps.update(big_endpoints(i)).await.unwrap();
    }
    let (rss, disk) = (s.rss_mb(), dir_mb(dir.path()));
    println!(
        "(a) 300 updates of one {:.2} MiB Endpoints in {:.1} s: RSS {rss:.1} MB, data dir {disk:.1} MB ({})",
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64(),
        dir_parts(dir.path())
    );
    println!(
        "(a) target RSS < 100 MB: {}; target data dir < 50 MB: {}",
        verdict(rss < 100.0),
        verdict(disk < 50.0)
    );
    let (rss2, disk2) = restart(bin, dir.path(), s, "(a)").await;
    println!(
        "(a) target RSS after restart < 100 MB: {}; target data dir after restart < 50 MB: {}",
        verdict(rss2 < 100.0),
        verdict(disk2 < 50.0)
    );
}

async fn many_pods(bin: &Path, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Server::start(bin, dir.path()).await;
    let rss0 = s.rss_mb();
    let t = Instant::now();
    let create = |from: usize, to: usize| {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
        let s = &s;
        async move {
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let mut pods = pod_api_client::PodApiClient::new(s.channel().await);
                let next = next.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= to {
                            return;
                        }
                        pods.create(pod(&format!("p{i}"))).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    create(0, n / 2).await;
    let (rss_half, disk_half) = (s.rss_mb(), dir_mb(dir.path()));
    create(n / 2, n).await;
    let (rss, disk) = (s.rss_mb(), dir_mb(dir.path()));
    println!(
        "(b) {n} pods created in {:.1} s: RSS {rss:.1} MB (empty: {rss0:.1} MB, at {}: {rss_half:.1} MB; {:.2} KB per pod), data dir {disk:.1} MB (at {}: {disk_half:.1} MB; {})",
        t.elapsed().as_secs_f64(),
        n / 2,
        (rss - rss0) * 1024.0 / n as f64,
        n / 2,
        dir_parts(dir.path())
    );
    // Proportional: the second half of the pods costs about what the first did.
    let ratio = (rss - rss_half) / (rss_half - rss0).max(1.0);
    println!(
        "(b) target memory proportional to live pods (second half / first half of the pods: {ratio:.2}, within 0.5..1.5): {}",
        verdict((0.5..=1.5).contains(&ratio))
    );
    let (rss2, _) = restart(bin, dir.path(), s, "(b)").await;
    println!(
        "(b) target RSS after restart at most 1.2x before ({:.2}x): {}",
        rss2 / rss,
        verdict(rss2 <= 1.2 * rss)
    );
}

async fn writers_p99(s: &Server, secs: u64) -> (u64, f64) {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..8 {
        let mut pods = pod_api_client::PodApiClient::new(s.channel().await);
        let hist = hist.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let i = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = Instant::now();
                pods.create(pod(&format!("w{i}"))).await.unwrap();
                hist.lock()
                    .unwrap()
                    .record(t.elapsed().as_micros() as u64)
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h = hist.lock().unwrap();
    (h.len(), h.value_at_quantile(0.99) as f64 / 1000.0)
}

/// 50 watchers that never read their stream, over connections with the client's
/// HTTP/2 windows `window` (None: hyper's defaults, 2 MB per stream, 5 MB per
/// connection: the client's connection task takes that much off the server before the
/// stream is stuck, so the server serves such a watcher like a live one until then).
async fn open_stuck(s: &Server, window: Option<u32>) -> Vec<tonic::Streaming<PodEvent>> {
    let mut stuck = Vec::new();
    for _ in 0..50 {
        let mut ep = Endpoint::from_shared(s.url.clone()).unwrap();
        if let Some(w) = window {
            ep = ep
                .initial_stream_window_size(w)
                .initial_connection_window_size(w);
        }
        let mut pods = pod_api_client::PodApiClient::new(ep.connect().await.unwrap());
        // Opened and never read.
        stuck.push(
            pods.watch(WatchRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    stuck
}

async fn stuck_watchers(bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Server::start(bin, dir.path()).await;
    let (n0, p0) = writers_p99(&s, 5).await;
    // Truly stuck: 64 KiB windows, so the server's buffer fills and it ends them.
    let stuck = open_stuck(&s, Some(65_535)).await;
    let (n1, p1) = writers_p99(&s, 5).await;
    drop(stuck);
    // Unread streams with the default 2 MB windows: for the server, live watchers.
    let unread = open_stuck(&s, None).await;
    let (n2, p2) = writers_p99(&s, 5).await;
    let rss = s.rss_mb();
    drop(unread);
    // 50 watchers that read everything (the cost of delivering every event 50 times).
    let mut readers = Vec::new();
    for mut w in open_stuck(&s, None).await {
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(Ok(_)) = futures::StreamExt::next(&mut w).await {
                n += 1;
            }
            n
        }));
    }
    let (n3, p3) = writers_p99(&s, 5).await;
    for r in &readers {
        r.abort();
    }
    // The same once more without watchers, on the store the runs above grew.
    let (n4, p4) = writers_p99(&s, 5).await;
    println!(
        "writers (8, 5 s) p99: {p0:.2} ms with no watchers ({n0} creates); {p1:.2} ms with 50 stuck watchers, 64 KiB windows ({n1}); {p2:.2} ms with 50 unread watchers, default 2 MB windows ({n2}); {p3:.2} ms with 50 reading watchers ({n3}); {p4:.2} ms with none again ({n4}); RSS {rss:.1} MB",
    );
    println!(
        "writers target p99 with 50 stuck watchers within 1.5x of none ({:.2}x): {}",
        p1 / p0.max(p4),
        verdict(p1 <= 1.5 * p0.max(p4))
    );
    s.stop();
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KL_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150_000);
    let only = std::env::var("KL_BENCH_ONLY").unwrap_or_else(|_| "a,w,b".into());
    let bin = apiserver_bin();
    if only.contains('a') {
        large_object(&bin).await;
    }
    if only.contains('w') {
        stuck_watchers(&bin).await;
    }
    if only.contains('b') {
        many_pods(&bin, n).await;
    }
}
