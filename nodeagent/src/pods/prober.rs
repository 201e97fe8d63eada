//! Runs probes (the I/O side of [`super::probe`]).
//!
//! tcpSocket and httpGet probes cost no process: each pod has one small thread that
//! joined the pod's network namespace once (`setns`) and hands out non-blocking TCP
//! sockets created there ([`NetnsDialer`]); a socket keeps the namespace it was created
//! in, so the connect and the HTTP exchange run on the agent's tokio runtime like any
//! other socket. The thread ends when the pod's worker drops its [`Prober`]. exec probes
//! go through the container runtime ([`Runtime::exec_sync`]), which runs the command in
//! the container's namespaces.

use super::machine::ProbeJob;
use crate::runtime::Runtime;
use http_body_util::Empty;
use hyper::body::Bytes;
use kube_lite_proto::v1::ContainerPort;
use nix::sched::CloneFlags;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// Bytes of an exec probe's output kept for the message.
const EXEC_OUTPUT_MAX: usize = 1024;

type SocketRequest = oneshot::Sender<std::io::Result<OwnedFd>>;

/// A thread inside a network namespace that creates sockets there.
pub struct NetnsDialer {
    tx: std::sync::mpsc::Sender<SocketRequest>,
}

impl NetnsDialer {
    /// Starts the thread; fails when the namespace cannot be joined.
    pub fn spawn(netns: &Path) -> std::io::Result<NetnsDialer> {
        let f = std::fs::File::open(netns)?;
        let (tx, rx) = std::sync::mpsc::channel::<SocketRequest>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("probe-netns".into())
            .spawn(move || {
                if let Err(e) = nix::sched::setns(&f, CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(std::io::Error::from(e)));
                    return;
                }
                drop(f);
                let _ = ready_tx.send(Ok(()));
                for reply in rx {
                    let s = socket(
                        AddressFamily::Inet,
                        SockType::Stream,
                        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                        None,
                    )
                    .map_err(std::io::Error::from);
                    let _ = reply.send(s);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("netns thread ended"))??;
        Ok(NetnsDialer { tx })
    }

    /// A TCP connection to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddrV4) -> std::io::Result<TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| std::io::Error::other("netns thread ended"))?;
        let fd = rx
            .await
            .map_err(|_| std::io::Error::other("netns thread ended"))??;
        let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        sock.connect(SocketAddr::V4(addr)).await
    }
}

/// The probes of one pod.
pub struct Prober {
    netns: PathBuf,
    dialer: Mutex<Option<Arc<NetnsDialer>>>,
    runtime: Arc<dyn Runtime>,
}

impl Prober {
    pub fn new(netns: PathBuf, runtime: Arc<dyn Runtime>) -> Prober {
        Prober {
            netns,
            dialer: Mutex::new(None),
            runtime,
        }
    }

    fn dialer(&self) -> std::io::Result<Arc<NetnsDialer>> {
        let mut d = self.dialer.lock().unwrap();
        if let Some(d) = &*d {
            return Ok(d.clone());
        }
        let n = Arc::new(NetnsDialer::spawn(&self.netns)?);
        *d = Some(n.clone());
        Ok(n)
    }

    /// Runs one probe: (success, message on failure). The timeout is the probe's.
    pub async fn run(
        &self,
        job: &ProbeJob,
        pod_ip: Ipv4Addr,
        ports: &[ContainerPort],
    ) -> (bool, String) {
        match tokio::time::timeout(job.timeout, self.run_inner(job, pod_ip, ports)).await {
            Ok(Ok(())) => (true, String::new()),
            Ok(Err(m)) => (false, m),
            Err(_) => (
                false,
                format!("timeout: no answer within {}s", job.timeout.as_secs()),
            ),
        }
    }

    async fn run_inner(
        &self,
        job: &ProbeJob,
        pod_ip: Ipv4Addr,
        ports: &[ContainerPort],
    ) -> Result<(), String> {
        let p = &job.probe;
        if let Some(e) = &p.exec {
            let out = self
                .runtime
                .exec_sync(&job.handle, &e.command, job.timeout)
                .await
                .map_err(|e| e.to_string())?;
            if out.exit_code == 0 {
                return Ok(());
            }
            // As the kubelet: the failure is the command's output (an event reads
            // `Liveness probe failed: cat: can't open '/x': No such file or
            // directory`); without output, the exit code.
            let text = String::from_utf8_lossy(&out.output);
            return Err(if text.trim().is_empty() {
                format!(
                    "command {:?} exited with {}",
                    e.command.join(" "),
                    out.exit_code
                )
            } else {
                text.trim().to_string()
            });
        }
        if let Some(t) = &p.tcp_socket {
            let addr = target(&t.host, pod_ip, t.port, &t.port_name, ports)?;
            self.connect(addr).await?;
            return Ok(());
        }
        if let Some(h) = &p.http_get {
            let addr = target(&h.host, pod_ip, h.port, &h.port_name, ports)?;
            let stream = self.connect(addr).await?;
            let status = http_get(stream, addr, &h.path, &h.http_headers).await?;
            if (200..400).contains(&status) {
                return Ok(());
            }
            return Err(format!("HTTP probe failed with statuscode: {status}"));
        }
        Err("probe has no handler".into())
    }

    async fn connect(&self, addr: SocketAddrV4) -> Result<TcpStream, String> {
        let d = self
            .dialer()
            .map_err(|e| format!("joining the pod network: {e}"))?;
        d.connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))
    }
}

/// The address a tcpSocket/httpGet probe goes to: host (default the pod IP) and the port
/// by number or by the name of one of the container's ports.
pub fn target(
    host: &str,
    pod_ip: Ipv4Addr,
    port: i32,
    port_name: &str,
    ports: &[ContainerPort],
) -> Result<SocketAddrV4, String> {
    let ip = if host.is_empty() {
        pod_ip
    } else {
        host.parse()
            .map_err(|_| format!("bad probe host {host:?}"))?
    };
    let port = if port_name.is_empty() {
        port
    } else {
        ports
            .iter()
            .find(|p| p.name == port_name)
            .map(|p| p.container_port)
            .ok_or_else(|| format!("port {port_name:?} not found in the container's ports"))?
    };
    let port = u16::try_from(port).map_err(|_| format!("bad probe port {port}"))?;
    Ok(SocketAddrV4::new(ip, port))
}

/// One HTTP/1.1 GET over `stream`; the response's status code.
async fn http_get(
    stream: TcpStream,
    addr: SocketAddrV4,
    path: &str,
    headers: &[kube_lite_proto::v1::HttpHeader],
) -> Result<u16, String> {
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(if path.is_empty() { "/" } else { path })
        .header(hyper::header::USER_AGENT, "kube-probe/1.32")
        .header(hyper::header::ACCEPT, "*/*")
        .header(hyper::header::CONNECTION, "close");
    let mut host_set = false;
    for h in headers {
        host_set |= h.name.eq_ignore_ascii_case("host");
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    if !host_set {
        req = req.header(hyper::header::HOST, addr.to_string());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("HTTP request: {e}"))?;
    let res = sender.send_request(req).await;
    conn.abort();
    let res = res.map_err(|e| format!("HTTP GET http://{addr}{path}: {e}"))?;
    Ok(res.status().as_u16())
}

/// Keeps the first [`EXEC_OUTPUT_MAX`] bytes.
pub fn clip_output(mut v: Vec<u8>) -> Vec<u8> {
    v.truncate(EXEC_OUTPUT_MAX);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_by_number_name_and_host() {
        let ip: Ipv4Addr = "10.0.1.2".parse().unwrap();
        let ports = [ContainerPort {
            name: "http".into(),
            container_port: 8080,
            protocol: "TCP".into(),
        }];
        assert_eq!(
            target("", ip, 80, "", &ports).unwrap().to_string(),
            "10.0.1.2:80"
        );
        assert_eq!(
            target("", ip, 0, "http", &ports).unwrap().to_string(),
            "10.0.1.2:8080"
        );
        assert_eq!(
            target("127.0.0.1", ip, 9, "", &ports).unwrap().to_string(),
            "127.0.0.1:9"
        );
        assert!(target("", ip, 0, "nope", &ports)
            .unwrap_err()
            .contains("\"nope\" not found"));
        assert!(target("", ip, 70000, "", &ports).is_err());
    }
}
