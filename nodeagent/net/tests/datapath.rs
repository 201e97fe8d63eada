//! Privileged end-to-end tests of the datapath in real network namespaces: nodes are
//! namespaces joined by an underlay namespace with a bridge, pods are namespaces made by
//! the crate. Every namespace is named `kl<random>-…` and removed by a Drop guard, also
//! when a test fails. Skipped (with a message) when not run as root.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kube_lite_net::ops::{NetOps, RtnlOps};
use kube_lite_net::{
    host_if_name, ipam, list_netns, netns, pod_netns_name, underlay, Ipv4Net, NodeNet,
    NodeNetConfig, Peer, PodNet,
};

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: needs root (network namespaces)");
    false
}

fn busybox() -> &'static str {
    if std::path::Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/usr/bin/busybox"
    }
}

fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let x = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    // Mix so that close timestamps differ in the first hex digits.
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:06x}", x >> 40)
}

/// Deletes every named netns starting with `kl<id>` when dropped.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A fresh runtime: Drop may run during a panic, outside of any runtime.
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for ns in list_netns(&prefix).unwrap_or_default() {
                    if let Err(e) = netns::delete_netns(&ns).await {
                        eprintln!("cleanup {ns}: {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// Run argv in a named netns.
fn exec_in(ns: &str, argv: &[&str]) -> Output {
    netns::command_in_netns(ns, argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter")
}

fn ping(ns: &str, ip: Ipv4Addr) -> bool {
    // A few tries: the first packets of a fresh bridge port may race STP-less forwarding.
    (0..5).any(|_| {
        exec_in(
            ns,
            &[busybox(), "ping", "-c", "1", "-W", "2", &ip.to_string()],
        )
        .status
        .success()
    })
}

/// A background process in a netns, killed (by PID) on drop.
struct Bg(std::process::Child);
impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, argv: &[&str]) -> Bg {
    Bg(netns::command_in_netns(ns, argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn in netns"))
}

struct Node {
    ns: String,
    net: NodeNet,
    address: Ipv4Addr,
    subnet: Ipv4Net,
}

/// `n` nodes on one underlay, each set up (twice, to check idempotence).
async fn nodes(id: &str, n: usize) -> Vec<Node> {
    let u = format!("kl{id}-u");
    underlay::create_underlay(&u).await.unwrap();
    let x = u8::from_str_radix(&id[..2], 16).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let ns = format!("kl{id}-n{i}");
        let address = Ipv4Addr::new(192, 168, x, i as u8 + 1);
        underlay::attach_node(
            &u,
            &ns,
            &format!("kl{id}p{i}"),
            Ipv4Net::new(address, 24).unwrap(),
        )
        .await
        .unwrap();
        let net = open_node_net(ns.clone()).await.unwrap();
        let subnet: Ipv4Net = format!("10.0.{}.0/24", i + 1).parse().unwrap();
        net.setup_node(subnet, address).await.unwrap();
        net.setup_node(subnet, address).await.unwrap();
        out.push(Node {
            ns,
            net,
            address,
            subnet,
        });
    }
    out
}

fn pod(prefix: &str, uid: &str, node: &Node, last: u8) -> PodNet {
    let o = node.subnet.network().octets();
    PodNet {
        netns: pod_netns_name(prefix, uid),
        host_if: host_if_name(uid),
        ip: Ipv4Addr::new(o[0], o[1], o[2], last),
        subnet: node.subnet,
        gateway: ipam::gateway(node.subnet),
        mtu: 1450,
    }
}

fn link_exists(ns: &str, name: &str) -> bool {
    exec_in(ns, &["ip", "link", "show", "dev", name])
        .status
        .success()
}

/// Root check, a fresh id and the Cleanup guard of its `kl<id>` namespaces; None (the
/// test is skipped) when not root.
fn root_test() -> Option<(String, Cleanup)> {
    if !is_root() {
        return None;
    }
    let id = unique_id();
    let cleanup = Cleanup {
        prefix: format!("kl{id}"),
    };
    Some((id, cleanup))
}

/// Stdout of argv run in a named netns, as text.
fn stdout_in(ns: &str, argv: &[&str]) -> String {
    String::from_utf8_lossy(&exec_in(ns, argv).stdout).to_string()
}

/// The node datapath of the namespace `ns`.
async fn open_node_net(ns: String) -> Result<NodeNet, kube_lite_net::NetError> {
    NodeNet::open(NodeNetConfig {
        netns: Some(ns),
        ..Default::default()
    })
    .await
}

/// The VXLAN FDB peers and the peer routes on the bridge of the node namespace `ns`.
async fn fdb_peers_and_routes(ns: &str) -> (Vec<Ipv4Addr>, Vec<Ipv4Net>) {
    let ops = RtnlOps::open(Some(ns.to_string())).await.unwrap();
    let vx = ops.link_index("kl-vxlan").await.unwrap().unwrap();
    let br = ops.link_index("kl0").await.unwrap().unwrap();
    (
        ops.fdb_peers(vx).await.unwrap(),
        ops.peer_routes(br).await.unwrap(),
    )
}

/// busybox httpd serving `dir` on port 8080 in `ns`.
fn httpd_in(ns: &str, dir: &std::path::Path) -> Bg {
    spawn_in(
        ns,
        &[
            busybox(),
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            dir.to_str().unwrap(),
        ],
    )
}

/// wget `url` from `ns` (each try limited to `secs` seconds), up to 50 tries 100 ms
/// apart until one succeeds; the last try's body.
async fn wget_from(ns: &str, url: &str, secs: &str) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..50 {
        let out = exec_in(
            ns,
            &[busybox(), "timeout", secs, busybox(), "wget", "-qO-", url],
        );
        got = out.stdout;
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_two_pods_reach_each_other_and_delete_leaves_nothing() {
    let Some((id, _cleanup)) = root_test() else {
        return;
    };
    let nodes = nodes(&id, 1).await;
    let node = &nodes[0];
    let prefix = format!("kl{id}-n0");
    let a = pod(&prefix, "pod-a", node, 2);
    let b = pod(&prefix, "pod-b", node, 3);
    for p in [&a, &b] {
        node.net.create_pod_net(p).await.unwrap();
        node.net.create_pod_net(p).await.unwrap(); // idempotent
    }
    // Pod side: eth0 with the address and MTU, default route via the gateway.
    let show = stdout_in(&a.netns, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(show.contains("10.0.1.2/24"), "{show}");
    let link = stdout_in(&a.netns, &["ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    // MAC derived from the IP, so a reused IP keeps neighbours' ARP entries valid.
    assert!(link.contains("link/ether 0a:58:0a:00:01:02"), "{link}");
    let route = stdout_in(&a.netns, &["ip", "route"]);
    assert!(route.contains("default via 10.0.1.1 dev eth0"), "{route}");
    // Host side: on the bridge, hairpin on.
    let br = stdout_in(
        &node.ns,
        &["bridge", "-d", "link", "show", "dev", &a.host_if],
    );
    let kl0 = stdout_in(&node.ns, &["ip", "link", "show", "kl0"]);
    assert!(
        kl0.contains("link/ether 0a:58:0a:00:01:01"),
        "bridge MAC pinned: {kl0}"
    );
    assert!(
        br.contains("master kl0") && br.contains("hairpin on"),
        "{br}"
    );

    assert!(ping(&a.netns, b.ip), "pod a -> pod b");
    assert!(ping(&b.netns, a.ip), "pod b -> pod a");
    assert!(
        ping(&a.netns, Ipv4Addr::new(10, 0, 1, 1)),
        "pod a -> gateway"
    );
    assert!(ping(&node.ns, a.ip), "node -> pod a");

    // TCP: busybox httpd in b, wget from a.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hello from b\n").unwrap();
    let srv = httpd_in(&b.netns, dir.path());
    let url = format!("http://{}:8080/index.html", b.ip);
    let body = String::from_utf8_lossy(&wget_from(&a.netns, &url, "5").await).to_string();
    assert_eq!(body, "hello from b\n");

    // The server is found as a process of b's namespace (nsenter execs it).
    let pid = srv.0.id() as i32;
    assert!(netns::pids_in_netns(&b.netns).contains(&pid));
    assert!(!netns::pids_in_netns(&a.netns).contains(&pid));

    let ifs = node.net.list_host_ifs("klv").await.unwrap();
    assert_eq!(ifs.len(), 2, "{ifs:?}");

    // Delete: no netns, no veth; twice is fine.
    node.net.delete_pod_net(&a.netns, &a.host_if).await.unwrap();
    node.net.delete_pod_net(&a.netns, &a.host_if).await.unwrap();
    assert!(!list_netns(&prefix).unwrap().contains(&a.netns));
    assert!(!link_exists(&node.ns, &a.host_if));
    // b still has a live process holding its namespace: the veth goes anyway.
    node.net.delete_pod_net(&b.netns, &b.host_if).await.unwrap();
    drop(srv);
    assert!(list_netns(&kube_lite_net::pod_netns_prefix(&prefix))
        .unwrap()
        .is_empty());
    assert!(node.net.list_host_ifs("klv").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_vxlan_carry_3mb_whole() {
    let Some((id, _cleanup)) = root_test() else {
        return;
    };
    let nodes = nodes(&id, 2).await;
    let peers: Vec<Peer> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Peer {
            name: format!("node{i}"),
            address: n.address,
            subnet: n.subnet,
        })
        .collect();
    // Each node gets the full list (itself included: it must be skipped), twice.
    for n in &nodes {
        n.net.sync_peers(&peers).await.unwrap();
        n.net.sync_peers(&peers).await.unwrap();
    }
    // Exactly one FDB entry and one peer route per node.
    for (i, n) in nodes.iter().enumerate() {
        let (fdb, routes) = fdb_peers_and_routes(&n.ns).await;
        assert_eq!(fdb, vec![nodes[1 - i].address]);
        assert_eq!(routes, vec![nodes[1 - i].subnet]);
    }

    let a = pod(&format!("kl{id}-n0"), "pod-a", &nodes[0], 2);
    let b = pod(&format!("kl{id}-n1"), "pod-b", &nodes[1], 2);
    nodes[0].net.create_pod_net(&a).await.unwrap();
    nodes[1].net.create_pod_net(&b).await.unwrap();
    assert!(ping(&a.netns, b.ip), "pod on node0 -> pod on node1");
    assert!(ping(&b.netns, a.ip), "pod on node1 -> pod on node0");

    // 3 MB across nodes (MTU 1450 inside VXLAN): arrives whole.
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("big"), &data).unwrap();
    let _srv = httpd_in(&b.netns, dir.path());
    let url = format!("http://{}:8080/big", b.ip);
    let got = wget_from(&a.netns, &url, "20").await;
    assert_eq!(got.len(), data.len(), "bytes received");
    assert!(got == data, "content differs");

    // Removing the peer removes its FDB entry and route, and traffic stops.
    nodes[0].net.sync_peers(&[]).await.unwrap();
    let (fdb, routes) = fdb_peers_and_routes(&nodes[0].ns).await;
    assert!(fdb.is_empty());
    assert!(routes.is_empty());
    // The node's own connected route is untouched.
    let routes = stdout_in(&nodes[0].ns, &["ip", "route"]);
    assert!(routes.contains("10.0.1.0/24 dev kl0"), "{routes}");

    for (n, p) in [(&nodes[0], &a), (&nodes[1], &b)] {
        n.net.delete_pod_net(&p.netns, &p.host_if).await.unwrap();
        assert!(!link_exists(&n.ns, &p.host_if));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_node_fails_clearly_without_underlay_address() {
    let Some((id, _cleanup)) = root_test() else {
        return;
    };
    let ns = format!("kl{id}-n0");
    netns::create_netns(&ns).await.unwrap();
    netns::create_netns(&ns).await.unwrap(); // idempotent
    let net = open_node_net(ns.clone()).await.unwrap();
    let err = net
        .setup_node("10.0.5.0/24".parse().unwrap(), Ipv4Addr::new(192, 0, 2, 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("192.0.2.1"), "{err}");
    // Opening a missing namespace is an error, not a panic.
    let missing = open_node_net(format!("kl{id}-missing")).await;
    assert!(missing.is_err());
    // Missing pieces are fine for delete; a lone veth goes at once.
    net.delete_host_if("klvnope").await.unwrap();
    net.delete_pod_net(&format!("kl{id}-n0-nope"), "klvnope")
        .await
        .unwrap();
    let _ = Command::new("true").status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_node_moves_to_a_new_subnet_and_keeps_foreign_addresses() {
    let Some((id, _cleanup)) = root_test() else {
        return;
    };
    let nodes = nodes(&id, 1).await;
    let n = &nodes[0];
    let out = exec_in(&n.ns, &["ip", "addr", "add", "10.96.0.10/32", "dev", "kl0"]);
    assert!(out.status.success());
    n.net
        .setup_node("10.0.9.0/24".parse().unwrap(), n.address)
        .await
        .unwrap();
    let addrs = stdout_in(&n.ns, &["ip", "-o", "addr", "show", "dev", "kl0"]);
    assert!(addrs.contains("10.0.9.1/24"), "{addrs}");
    assert!(!addrs.contains("10.0.1.1/24"), "{addrs}");
    assert!(addrs.contains("10.96.0.10/32"), "{addrs}");
    // The VXLAN device is still there, on the bridge, once.
    let vx = stdout_in(&n.ns, &["ip", "-d", "link", "show", "kl-vxlan"]);
    assert!(
        vx.contains("master kl0") && vx.contains("vxlan id 10"),
        "{vx}"
    );
    assert!(
        vx.contains("dstport 4789") && vx.contains("nolearning"),
        "{vx}"
    );
}
