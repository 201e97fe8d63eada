//! Service proxy benchmark (issue 4). Root only; every measurement in a fresh network
//! namespace `klb<id>-…`, deleted afterwards.
//!
//! `cargo bench -p kube-lite-proxy --bench proxy [-- --quick] [--no-baseline] [--legacy-baseline]`
//!
//! Prints, per backend (nf_tables `iptables-restore`, legacy `iptables-legacy-restore`):
//! - bare restore of the full rule file (1,000 and 10,000 Services × 4 endpoints);
//! - full sync by the proxier (render + iptables-save + diff + restore) and its ratio to
//!   the bare restore of the same rules;
//! - bare single-chain rewrite at 10,000 Services (p50/p99);
//! - one endpoint change end to end at 10,000 Services: Endpoints Update RPC to a real
//!   apiserver → watch → proxy → `iptables-restore` exited successfully (the rule is
//!   live: the restore commits atomically before exiting), p50/p99, ratio to the bare
//!   single-chain rewrite;
//! - baseline: the 1,000-Service rule set with one `iptables` process per rule (each
//!   chain created with `-N`, each rule with `-A`, from one shell inside the namespace),
//!   and its ratio to the proxier's full sync.
//!
//! Full sync and bare restore are the median of several alternating runs (the machine
//! is shared). The proxy runs with its default 10 ms debounce.

use futures::StreamExt;
use kube_lite_proto::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectMeta, Service, ServicePort,
    ServiceSpec,
};
use kube_lite_proxy::exec::Runner;
use kube_lite_proxy::model::{Protocol, ServicePortView};
use kube_lite_proxy::render::{self, Names, Plan, Table, Tables};
use kube_lite_proxy::{Backend, Mode, Proxier, ProxyConfig, SyncReport};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Ns(String);
impl Ns {
    fn new(tag: &str) -> Ns {
        let id = format!(
            "klb{:x}-{tag}",
            std::process::id() as u64 * 1000 + rand_u16() as u64
        );
        let st = Command::new("ip")
            .args(["netns", "add", &id])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {id}");
        Ns(id)
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    use std::io::Read;
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u16::from_le_bytes(b) % 1000
}

/// The bench node's own pod subnet (hairpin rules): none of the endpoints is in it.
const BENCH_NODE_SUBNET: &str = "10.250.0.0/24";

fn svc_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, (i / 256) as u8, (i % 256) as u8)
}
fn ep_ip(i: usize, k: usize) -> Ipv4Addr {
    let n = i * 4 + k;
    Ipv4Addr::new(
        10,
        1 + (n / 65536) as u8,
        ((n / 256) % 256) as u8,
        (n % 256) as u8,
    )
}

/// NodePort Services (`--node-ports`): Service i gets node port 20000 + i (a wide
/// `--service-node-port-range`, as 10,000 do not fit the default one).
static NODE_PORTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn node_ports() -> bool {
    NODE_PORTS.load(std::sync::atomic::Ordering::Relaxed)
}

fn node_port(i: usize) -> u16 {
    20_000 + i as u16
}

fn views(n: usize) -> Vec<Vec<ServicePortView>> {
    (0..n)
        .map(|i| {
            vec![ServicePortView {
                namespace: "default".into(),
                name: format!("svc-{i:05}"),
                port_name: String::new(),
                protocol: Protocol::Tcp,
                cluster_ip: svc_ip(i),
                port: 80,
                endpoints: (0..4)
                    .map(|k| SocketAddrV4::new(ep_ip(i, k), 8080))
                    .collect(),
                node_port: node_ports().then(|| node_port(i)),
                ..Default::default()
            }]
        })
        .collect()
}

fn service(i: usize) -> Service {
    Service {
        metadata: Some(ObjectMeta {
            name: format!("svc-{i:05}"),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            cluster_ip: svc_ip(i).to_string(),
            ports: vec![ServicePort {
                name: String::new(),
                protocol: "TCP".into(),
                port: 80,
                target_port: 8080,
                node_port: if node_ports() {
                    i32::from(node_port(i))
                } else {
                    0
                },
                ..Default::default()
            }],
            r#type: if node_ports() {
                "NodePort"
            } else {
                "ClusterIP"
            }
            .into(),
            external_traffic_policy: if node_ports() { "Cluster" } else { "" }.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn endpoints_obj(i: usize, ips: &[Ipv4Addr]) -> Endpoints {
    Endpoints {
        metadata: Some(ObjectMeta {
            name: format!("svc-{i:05}"),
            namespace: "default".into(),
            ..Default::default()
        }),
        subsets: vec![EndpointSubset {
            addresses: ips
                .iter()
                .map(|ip| EndpointAddress {
                    ip: ip.to_string(),
                    ..Default::default()
                })
                .collect(),
            not_ready_addresses: vec![],
            ports: vec![EndpointPort {
                name: String::new(),
                port: 8080,
                protocol: "TCP".into(),
            }],
        }],
    }
}

/// The complete restore file (from an empty namespace) of `n` Services, with jumps.
fn full_text(names: &Names, n: usize) -> (String, Tables) {
    let v = views(n);
    let desired = render::render_all(names, Mode::Nth, v.iter().map(|x| x.as_slice()), |_| false);
    let plan = render::resync_plan(names, &Tables::default(), &desired);
    (plan.restore_text(&desired), desired)
}

fn restore(ns: &Ns, backend: Backend, text: &str) -> Duration {
    let runner = Runner::new(Some(ns.0.clone()), backend);
    let mut cmd = runner.std_command(runner.restore_program());
    cmd.args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "restore failed");
    t.elapsed()
}

/// Gives the kernel time to free the rules of deleted namespaces.
fn settle(n: usize) {
    std::thread::sleep(Duration::from_millis(if n > 5_000 { 2_000 } else { 300 }));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Nft => "nf_tables",
        Backend::Legacy => "legacy",
    }
}

/// Text rewriting one SVC chain (same content) at the given table size.
fn single_chain_text(names: &Names, desired: &Tables, i: usize) -> String {
    let v = &views(i + 1)[i][0];
    let chain = names.svc_chain(v);
    let plan = Plan {
        rewritten: BTreeSet::from([(Table::Nat, chain)]),
        ..Default::default()
    };
    plan.restore_text(desired)
}

/// Median of `reps` runs each, alternating: bare restore of the full file in a fresh
/// namespace, and a full sync by a fresh proxier in another fresh namespace.
/// Returns (median bare, median full sync, median overhead of a full sync beyond its
/// own restore process, last report).
fn bare_and_full(
    backend: Backend,
    n: usize,
    reps: usize,
) -> (Duration, Duration, Duration, SyncReport) {
    let names = Names::new("KL-");
    let (text, _) = full_text(&names, n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut bares = Vec::new();
    let mut fulls = Vec::new();
    let mut overheads = Vec::new();
    let mut report = None;
    for rep in 0..reps {
        // Alternate the order; let the kernel finish tearing down the last namespace
        // (nft objects are freed asynchronously) before timing.
        for which in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            settle(n);
            if which == 0 {
                let ns = Ns::new("bare");
                bares.push(restore(&ns, backend, &text));
                continue;
            }
            let ns = Ns::new("full");
            let cfg = ProxyConfig {
                netns: Some(ns.0.clone()),
                backend,
                node_local_route_dev: None,
                pod_subnet: Some(BENCH_NODE_SUBNET.parse().unwrap()),
                ..Default::default()
            };
            let svcs: Vec<Service> = (0..n).map(service).collect();
            let eps: Vec<Endpoints> = (0..n)
                .map(|i| endpoints_obj(i, &(0..4).map(|k| ep_ip(i, k)).collect::<Vec<_>>()))
                .collect();
            let t = Instant::now();
            let mut p = Proxier::new(&cfg).unwrap();
            p.replace_services(svcs);
            p.replace_endpoints(eps);
            let r = rt.block_on(p.sync()).unwrap();
            let full = t.elapsed();
            fulls.push(full);
            overheads.push(full.saturating_sub(r.restore));
            if node_ports() {
                // SVC + EXT per Service, POSTROUTING, 2 × SERVICES, NODEPORTS, MARK-MASQ.
                assert_eq!(r.rewritten, 2 * n + 5, "{r:?}");
            } else {
                assert_eq!(r.rewritten, n + 3); // SVC per Service, POSTROUTING, 2 × SERVICES
            }
            report = Some(r);
        }
    }
    (
        pct(&mut bares, 50.0),
        pct(&mut fulls, 50.0),
        pct(&mut overheads, 50.0),
        report.unwrap(),
    )
}

/// The rule set with one `iptables` process per rule. `netns_exec`: each process
/// started as `ip netns exec NS iptables …` from the root namespace (how the tutorial
/// drives namespace nodes); otherwise plain `iptables …` from one shell already inside
/// the namespace (the cheapest way to run one process per rule).
fn baseline_per_rule(backend: Backend, n: usize, netns_exec: bool) -> (Duration, usize) {
    let names = Names::new("KL-");
    let (_, desired) = full_text(&names, n);
    settle(n);
    let ns = Ns::new("base");
    let bin = match backend {
        Backend::Nft => "iptables",
        Backend::Legacy => "iptables-legacy",
    };
    let ipt = if netns_exec {
        format!("ip netns exec {} {bin}", ns.0)
    } else {
        bin.to_string()
    };
    let mut script = String::new();
    let mut procs = 0;
    for (table, chains) in [("nat", &desired.nat), ("filter", &desired.filter)] {
        for c in chains.keys() {
            script.push_str(&format!("{ipt} -w -t {table} -N {c}\n"));
            procs += 1;
        }
    }
    for (table, chains) in [("nat", &desired.nat), ("filter", &desired.filter)] {
        for rules in chains.values() {
            for r in rules {
                script.push_str(&format!("{ipt} -w -t {table} {r}\n"));
                procs += 1;
            }
        }
    }
    for (t, chain, rest) in names.jumps() {
        script.push_str(&format!("{ipt} -w -t {} -I {chain} 1 {rest}\n", t.name()));
        procs += 1;
    }
    script = format!("set -e\n{script}");
    let file = std::env::temp_dir().join(format!("klb-baseline-{}.sh", std::process::id()));
    std::fs::write(&file, &script).unwrap();
    let t = Instant::now();
    let out = if netns_exec {
        Command::new("sh").arg(&file).output().unwrap()
    } else {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.0))
            .arg("--")
            .arg("sh")
            .arg(&file)
            .output()
            .unwrap()
    };
    let _ = std::fs::remove_file(&file);
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "baseline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (d, procs)
}

fn single_chain(backend: Backend, n: usize, reps: usize) -> (Duration, Duration) {
    let names = Names::new("KL-");
    let (text, desired) = full_text(&names, n);
    settle(n);
    let ns = Ns::new("one");
    restore(&ns, backend, &text);
    let mut v = Vec::new();
    for r in 0..reps {
        let t = single_chain_text(&names, &desired, (r * 7919) % n);
        v.push(restore(&ns, backend, &t));
    }
    (pct(&mut v, 50.0), pct(&mut v, 99.0))
}

async fn e2e(backend: Backend, n: usize, changes: usize) -> (Duration, Duration, Duration) {
    let api = kube_lite_tests::apiserver::TestApiServer::start().await;
    let t = Instant::now();
    let s = api.services();
    let e = api.endpoints();
    futures::stream::iter(0..n)
        .map(|i| {
            let mut s = s.clone();
            let mut e = e.clone();
            async move {
                s.create(service(i)).await.unwrap();
                e.create(endpoints_obj(
                    i,
                    &(0..4).map(|k| ep_ip(i, k)).collect::<Vec<_>>(),
                ))
                .await
                .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!(
        "  (created {n} Services + Endpoints in the apiserver in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    settle(n);
    let ns = Ns::new("e2e");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = ProxyConfig {
        netns: Some(ns.0.clone()),
        backend,
        node_local_route_dev: None,
        pod_subnet: Some(BENCH_NODE_SUBNET.parse().unwrap()),
        sync_events: Some(tx),
        resync_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let t = Instant::now();
    let proxy = tokio::spawn(kube_lite_proxy::run(api.channel(), cfg, async move {
        let _ = stopped.await;
    }));
    let first = rx.recv().await.unwrap();
    let initial = t.elapsed();
    assert!(first.full && first.rewritten > n);
    let mut lat = Vec::new();
    let mut e = api.endpoints();
    for c in 0..changes {
        let i = (c * 7919) % n;
        // Replace the 4th endpoint by a new address.
        let mut ips: Vec<Ipv4Addr> = (0..3).map(|k| ep_ip(i, k)).collect();
        ips.push(Ipv4Addr::new(10, 200, (c / 256) as u8, (c % 256) as u8));
        let t0 = Instant::now();
        e.update(endpoints_obj(i, &ips)).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("sync after change")
            .unwrap();
        assert!(!r.full && r.rewritten == 1 && r.deleted == 0, "{r:?}");
        lat.push(r.finished.duration_since(t0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last change is in the kernel.
    let runner = Runner::new(Some(ns.0.clone()), backend);
    let saved = runner.save().await.unwrap();
    let c = changes - 1;
    assert!(saved.contains(&format!(
        "--to-destination 10.200.{}.{}:8080",
        c / 256,
        c % 256
    )));
    let _ = stop.send(());
    proxy.await.unwrap().unwrap();
    lat.sort();
    eprintln!(
        "  (change latencies ms: min {:.1} p50 {:.1} p90 {:.1} max {:.1}; largest {:?})",
        ms(lat[0]),
        ms(pct(&mut lat, 50.0)),
        ms(pct(&mut lat, 90.0)),
        ms(lat[lat.len() - 1]),
        lat.iter()
            .rev()
            .take(3)
            .map(|d| ms(*d).round())
            .collect::<Vec<_>>()
    );
    (pct(&mut lat, 50.0), pct(&mut lat, 99.0), initial)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    if !std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
    {
        eprintln!("proxy benchmark needs root (network namespaces, iptables); skipped");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--node-ports") {
        // Issue 12: the same full sync with every Service a NodePort (nf_tables only).
        NODE_PORTS.store(true, std::sync::atomic::Ordering::Relaxed);
        println!("kube-lite-proxy benchmark, NodePort Services × 4 endpoints (Cluster policy; times in ms)");
        let big = if quick { 2_000 } else { 10_000 };
        for n in [1_000, big] {
            let reps = if n > 5_000 { 3 } else { 9 };
            let (bare, full, overhead, rep) = bare_and_full(Backend::Nft, n, reps);
            println!(
                "{n:>6} NodePort Services: bare restore {:>8.1} | full sync {:>8.1} | full/bare {:.2}× (target ≤ 1.25×) | beyond its own restore {:.1} (render+diff {:.1}, {} KB) [median of {reps}]",
                ms(bare),
                ms(full),
                full.as_secs_f64() / bare.as_secs_f64(),
                ms(overhead),
                ms(rep.render),
                rep.restore_bytes / 1024,
            );
        }
        return;
    }
    let no_baseline = args.iter().any(|a| a == "--no-baseline");
    let big = if quick { 2_000 } else { 10_000 };
    let changes = if quick { 10 } else { 50 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("kube-lite-proxy benchmark (Services × 4 endpoints; times in ms)");
    for backend in [Backend::Nft, Backend::Legacy] {
        let b = backend_name(backend);
        println!("\n== backend {b}");
        let mut full_1k = Duration::ZERO;
        for n in [1_000, big] {
            let reps = if n > 5_000 { 3 } else { 9 };
            let (bare, full, overhead, rep) = bare_and_full(backend, n, reps);
            if n == 1_000 {
                full_1k = full;
            }
            println!(
                "{n:>6} Services: bare restore {:>8.1} | full sync {:>8.1} | full/bare {:.2}× | full sync beyond its own restore {:.1} (last: render+diff {:.1}, {} KB) [median of {reps}]",
                ms(bare),
                ms(full),
                full.as_secs_f64() / bare.as_secs_f64(),
                ms(overhead),
                ms(rep.render),
                rep.restore_bytes / 1024,
            );
        }
        let (one50, one99) = single_chain(backend, big, if quick { 5 } else { 20 });
        println!(
            "{big:>6} Services: bare single-chain rewrite p50 {:.1} p99 {:.1}",
            ms(one50),
            ms(one99)
        );
        let (e50, e99, initial) = rt.block_on(e2e(backend, big, changes));
        println!(
            "{big:>6} Services: one endpoint change, apiserver update → rule live: p50 {:.1} p99 {:.1} ({changes} changes) | p99/bare-p99 {:.2}×, p99/bare-p50 {:.2}× | (initial sync via run: {:.1})",
            ms(e50),
            ms(e99),
            e99.as_secs_f64() / one99.as_secs_f64(),
            e99.as_secs_f64() / one50.as_secs_f64(),
            ms(initial)
        );
        // The legacy per-rule baseline takes minutes: only on request.
        if !no_baseline
            && (backend == Backend::Nft || args.iter().any(|a| a == "--legacy-baseline"))
        {
            for netns_exec in [false, true] {
                let (base, procs) = baseline_per_rule(backend, 1_000, netns_exec);
                println!(
                    "  1000 Services: one iptables process per rule ({procs} processes, {}) {:.0} | / full sync {:.0}×",
                    if netns_exec { "each via `ip netns exec`" } else { "from a shell in the namespace" },
                    ms(base),
                    base.as_secs_f64() / full_1k.as_secs_f64()
                );
            }
        }
    }
}
