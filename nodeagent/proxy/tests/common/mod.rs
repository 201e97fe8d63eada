//! Privileged test fixture: a node namespace with bridge `kl0` (10.0.1.1/24) and pod
//! namespaces on veths (hairpin on), built with `ip`; servers and clients are this
//! test binary re-executed inside a namespace (`nsenter`) in helper mode.
#![allow(dead_code)]

use kube_lite_proto::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectMeta, Service, ServicePort,
    ServiceSpec,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const HELPER_ENV: &str = "KL_PROXY_TEST_HELPER";

pub fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    // /proc/self/status "Uid:" line; avoids a libc dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u.parse().unwrap_or(1)))
        })
        .unwrap_or(1)
}

/// Skips (returns true) when not root, with a note.
pub fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces, iptables)");
        return true;
    }
    false
}

fn rand_id() -> String {
    let mut b = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    format!("{:02x}{:02x}{:02x}", b[0], b[1], b[2])
}

pub fn sh(argv: &[&str]) -> std::process::Output {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    out
}

pub fn must(argv: &[&str]) -> String {
    let out = sh(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Pod {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub name: String,
}

/// One node namespace with a bridge and `pods` pod namespaces. Dropping it kills the
/// helper processes it started and deletes exactly its namespaces.
pub struct Node {
    pub id: String,
    pub netns: String,
    pub pods: Vec<Pod>,
    children: Vec<Child>,
}

impl Node {
    pub fn new(pods: usize) -> Node {
        let id = rand_id();
        let netns = format!("kl{id}-n");
        let mut node = Node {
            id: id.clone(),
            netns: netns.clone(),
            pods: Vec::new(),
            children: Vec::new(),
        };
        must(&["ip", "netns", "add", &netns]);
        let n = netns.as_str();
        must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        must(&["ip", "-n", n, "link", "add", "kl0", "type", "bridge"]);
        must(&["ip", "-n", n, "addr", "add", "10.0.1.1/24", "dev", "kl0"]);
        must(&["ip", "-n", n, "link", "set", "kl0", "up"]);
        must(&[
            "ip",
            "netns",
            "exec",
            n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        for i in 0..pods {
            node.add_pod(i);
        }
        node
    }

    fn add_pod(&mut self, i: usize) {
        let pns = format!("kl{}-p{i}", self.id);
        let veth = format!("kl{}v{i}", self.id);
        let ip: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2 + i as u8);
        must(&["ip", "netns", "add", &pns]);
        let n = self.netns.as_str();
        must(&[
            "ip", "-n", n, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            &pns,
        ]);
        must(&["ip", "-n", n, "link", "set", &veth, "master", "kl0", "up"]);
        must(&[
            "bridge", "-n", n, "link", "set", "dev", &veth, "hairpin", "on",
        ]);
        must(&["ip", "-n", &pns, "link", "set", "lo", "up"]);
        must(&[
            "ip",
            "-n",
            &pns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &pns, "link", "set", "eth0", "up"]);
        must(&[
            "ip", "-n", &pns, "route", "add", "default", "via", "10.0.1.1",
        ]);
        self.pods.push(Pod {
            netns: pns,
            ip,
            name: format!("pod{i}"),
        });
    }

    /// Starts a server answering its name on TCP and UDP `port` in pod `i`.
    pub fn serve(&mut self, i: usize, port: u16) {
        let (ns, name) = (self.pods[i].netns.clone(), self.pods[i].name.clone());
        let child = helper(&ns, &format!("serve {name} {port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        self.children.push(child);
        // Wait until it listens (from inside the pod itself).
        for _ in 0..100 {
            let r = run_client(&ns, &format!("tcp {} {port} 1", self.pods[i].ip));
            if r.first().map(|l| l.starts_with("OK")).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = helper(&ns, &format!("tcp {} {port} 1", self.pods[i].ip))
            .output()
            .expect("client");
        panic!(
            "server in {ns} did not come up: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn iptables_save(&self) -> String {
        must(&["ip", "netns", "exec", &self.netns, "iptables-save"])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.pods {
            let _ = sh(&["ip", "netns", "del", &p.netns]);
        }
        let _ = sh(&["ip", "netns", "del", &self.netns]);
    }
}

/// This test binary, re-executed in `netns` in helper mode.
pub fn helper(netns: &str, spec: &str) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(exe)
        .args([
            "helper_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, spec);
    c
}

/// Runs a client helper in `netns` and returns its result lines ("OK <name>" or
/// "ERR <error kind>").
pub fn run_client(netns: &str, spec: &str) -> Vec<String> {
    let out = helper(netns, spec).output().expect("client");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .map(str::to_string)
        .collect()
}

/// Counts answers per pod name; errors under "ERR <kind>".
pub fn tally(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        let k = l.strip_prefix("OK ").unwrap_or(l).to_string();
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Helper mode entry: `serve NAME PORT` | `tcp IP PORT N` | `udp IP PORT N SRCPORT`.
pub fn helper_main(spec: &str) {
    let w: Vec<&str> = spec.split_whitespace().collect();
    match w.as_slice() {
        ["serve", name, port] => {
            let port: u16 = port.parse().unwrap();
            let name = name.to_string();
            let udp = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            let n2 = name.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(n2.as_bytes(), from);
                }
            });
            let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(name.as_bytes());
            }
        }
        ["tcp", ip, port, n] => {
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            for _ in 0..n.parse::<usize>().unwrap() {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                    Ok(mut s) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                        let mut body = String::new();
                        match s.read_to_string(&mut body) {
                            Ok(_) => println!("RESULT OK {}", body.trim()),
                            Err(e) => println!("RESULT ERR read {:?}", e.kind()),
                        }
                    }
                    Err(e) => println!("RESULT ERR {:?}", e.kind()),
                }
            }
        }
        ["udp", ip, port, n, src] => {
            let sock = UdpSocket::bind(("0.0.0.0", src.parse::<u16>().unwrap())).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let mut buf = [0u8; 1500];
            for _ in 0..n.parse::<usize>().unwrap() {
                let _ = sock.send_to(b"who", addr);
                match sock.recv_from(&mut buf) {
                    Ok((len, _)) => {
                        println!("RESULT OK {}", String::from_utf8_lossy(&buf[..len]))
                    }
                    Err(e) => println!("RESULT ERR {:?}", e.kind()),
                }
            }
        }
        _ => panic!("bad helper spec {spec:?}"),
    }
}

pub fn service(name: &str, cluster_ip: &str, ports: &[(&str, &str, i32, i32)]) -> Service {
    Service {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.into(),
            ports: ports
                .iter()
                .map(|(n, proto, port, target)| ServicePort {
                    name: n.to_string(),
                    protocol: proto.to_string(),
                    port: *port,
                    target_port: *target,
                    ..Default::default()
                })
                .collect(),
            r#type: "ClusterIP".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Endpoints: these IPs, serving ports (name, port, protocol).
pub fn endpoints(name: &str, ips: &[Ipv4Addr], ports: &[(&str, i32, &str)]) -> Endpoints {
    Endpoints {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        subsets: if ips.is_empty() {
            vec![]
        } else {
            vec![EndpointSubset {
                addresses: ips
                    .iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                not_ready_addresses: vec![],
                ports: ports
                    .iter()
                    .map(|(n, p, proto)| EndpointPort {
                        name: n.to_string(),
                        port: *p,
                        protocol: proto.to_string(),
                    })
                    .collect(),
            }]
        },
    }
}
