//! kl-whoami end to end: over loopback (any user), and as a process in a pod network
//! namespace made by kube-lite-net (root only; skipped otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube_lite_net::{host_if_name, ipam, list_netns, netns, pod_netns_name, underlay};
use kube_lite_net::{Ipv4Net, NodeNet, NodeNetConfig, PodNet};

const BIN: &str = env!("CARGO_BIN_EXE_kl-whoami");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start kl-whoami with `cmd`, return it and the port from its first line.
fn start(mut cmd: Command) -> (Proc, u16) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn kl-whoami");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("0.0.0.0:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Proc(child), port)
}

fn http_get(addr: (Ipv4Addr, u16)) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn answers_http_and_udp_on_loopback_and_exits_on_sigterm() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--port", "0"]);
    let (mut p, port) = start(cmd);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let resp = http_get((Ipv4Addr::LOCALHOST, port));
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Connection: close\r\n"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.starts_with(&format!("HOSTNAME:{host} IP:")), "{body}");
    assert!(body.ends_with('\n') && !body.contains("IP:127."), "{body}");

    let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"hi", (Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), body);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = p.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_port_is_a_clear_error() {
    let out = Command::new(BIN).env("PORT", "nope").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid port"));
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for ns in list_netns(&prefix).unwrap_or_default() {
                    let _ = netns::delete_netns(&ns).await;
                }
            })
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_pod_name_and_ip_inside_a_pod_netns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let id = format!("{:06x}", (nanos ^ (std::process::id() << 12)) & 0xff_ffff);
    let _cleanup = Cleanup(format!("kl{id}"));
    let (u, node) = (format!("kl{id}-u"), format!("kl{id}-n0"));
    underlay::create_underlay(&u).await.unwrap();
    underlay::attach_node(
        &u,
        &node,
        &format!("kl{id}p0"),
        "192.168.200.1/24".parse().unwrap(),
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
    net.setup_node(subnet, Ipv4Addr::new(192, 168, 200, 1))
        .await
        .unwrap();
    let pod = PodNet {
        netns: pod_netns_name(&node, "whoami-uid"),
        host_if: host_if_name("whoami-uid"),
        ip: Ipv4Addr::new(10, 0, 1, 2),
        subnet,
        gateway: ipam::gateway(subnet),
        mtu: 1450,
    };
    net.create_pod_net(&pod).await.unwrap();

    // As the agent does: own UTS namespace with the pod name as hostname.
    let mut cmd = netns::command_in_netns(&pod.netns, "unshare");
    cmd.args([
        "--uts",
        "sh",
        "-c",
        &format!("hostname whoami-pod && exec {BIN}"),
    ]);
    let (_p, port) = start(cmd);
    assert_eq!(port, 8080);
    let busybox = if std::path::Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/usr/bin/busybox"
    };
    let out = netns::command_in_netns(&node, busybox)
        .args([
            "timeout",
            "5",
            busybox,
            "wget",
            "-qO-",
            "http://10.0.1.2:8080/",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HOSTNAME:whoami-pod IP:10.0.1.2\n"
    );
    drop(_p);
    net.delete_pod_net(&pod.netns, &pod.host_if).await.unwrap();
}
