//! Datapath cost of pod start and stop, in real namespaces (root only):
//! `cargo bench -p kube-lite-net --bench pod_net`. Prints p50/p99 of `create_pod_net`
//! over 50 pods one after another, the time for 200 at once, and the same for delete;
//! checks that nothing is left and that no file descriptors leak.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kube_lite_net::{
    host_if_name, ipam::Ipam, list_netns, netns, pod_netns_name, pod_netns_prefix, underlay,
    Ipv4Net, NodeNet, NodeNetConfig, PodNet,
};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in list_netns(&self.0).unwrap_or_default() {
            for pid in netns::pids_in_netns(&ns) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = netns::delete_netns_blocking(&ns);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("pod_net bench skipped: needs root");
        return;
    }
    let id = format!("{:06x}", std::process::id() & 0xff_ffff);
    let _c = Cleanup(format!("kl{id}"));
    let (u, node) = (format!("kl{id}-u"), format!("kl{id}-n0"));
    underlay::create_underlay(&u).await.unwrap();
    underlay::attach_node(
        &u,
        &node,
        &format!("kl{id}p0"),
        "192.168.201.1/24".parse().unwrap(),
    )
    .await
    .unwrap();
    let net = NodeNet::open(NodeNetConfig {
        netns: Some(node.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let subnet: Ipv4Net = "10.0.1.0/24".parse().unwrap();
    let t = Instant::now();
    net.setup_node(subnet, Ipv4Addr::new(192, 168, 201, 1))
        .await
        .unwrap();
    println!("setup_node: {:?}", t.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let mut ipam = Ipam::open(dir.path().join("ipam.json"), subnet).unwrap();
    let pod = |uid: &str, ip: Ipv4Addr| PodNet {
        netns: pod_netns_name(&node, uid),
        host_if: host_if_name(uid),
        ip,
        subnet,
        gateway: kube_lite_net::ipam::gateway(subnet),
        mtu: 1450,
    };
    let fds0 = fds();

    // 50 one after another (IPAM allocation included, as the agent does it).
    let mut create = Vec::new();
    let mut pods = Vec::new();
    for i in 0..50 {
        let uid = format!("seq-{i}");
        let t = Instant::now();
        let ip = ipam.allocate(&uid).unwrap();
        let p = pod(&uid, ip);
        net.create_pod_net(&p).await.unwrap();
        create.push(t.elapsed());
        pods.push((uid, p));
    }
    let mut delete = Vec::new();
    for (uid, p) in &pods {
        let t = Instant::now();
        net.delete_pod_net(&p.netns, &p.host_if).await.unwrap();
        ipam.release(uid).unwrap();
        delete.push(t.elapsed());
    }
    println!(
        "sequential x50: create p50 {:?} p99 {:?} | delete p50 {:?} p99 {:?}",
        pct(&mut create, 0.5),
        pct(&mut create, 0.99),
        pct(&mut delete, 0.5),
        pct(&mut delete, 0.99)
    );

    // 200 at once (a /24 holds 253).
    let pods: Vec<PodNet> = (0..200)
        .map(|i| {
            let uid = format!("par-{i}");
            let ip = ipam.allocate(&uid).unwrap();
            pod(&uid, ip)
        })
        .collect();
    let t = Instant::now();
    let res = futures::future::join_all(pods.iter().map(|p| net.create_pod_net(p))).await;
    let took = t.elapsed();
    let failed = res.iter().filter(|r| r.is_err()).count();
    println!("200 at once: create all {took:?} ({failed} failed)");
    if let Some(Err(e)) = res.iter().find(|r| r.is_err()) {
        println!("  first error: {e}");
    }
    let t = Instant::now();
    let res = futures::future::join_all(
        pods.iter()
            .map(|p| net.delete_pod_net(&p.netns, &p.host_if)),
    )
    .await;
    println!(
        "200 at once: delete all {:?} ({} failed)",
        t.elapsed(),
        res.iter().filter(|r| r.is_err()).count()
    );
    ipam.retain(|_| false).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left_ns = list_netns(&pod_netns_prefix(&node)).unwrap().len();
    let left_if = net.list_host_ifs("klv").await.unwrap().len();
    println!(
        "left: {left_ns} netns, {left_if} veths, {} IPs; fds before {fds0} after {}",
        ipam.owners().len(),
        fds()
    );
}
