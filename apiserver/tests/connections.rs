//! The `apiserver` binary's accept loop: idle sockets that never speak HTTP/2 are
//! closed after the handshake timeout, the connection limit holds (excess connections
//! closed at once, logged), real clients are served meanwhile, and the open-files soft
//! limit is raised to the hard limit.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_lite_proto::v1::{pod_api_client::PodApiClient, ListRequest};

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Drop for Server {
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

fn start(port: u16, args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("apiserver.log");
    let child = Command::new(env!("CARGO_BIN_EXE_apiserver"))
        .current_dir(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Plaintext: these tests speak raw HTTP/2 to the connection layer.
        .arg("--insecure")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn apiserver");
    Server {
        child,
        _dir: dir,
        log,
    }
}

async fn list_pods(port: u16) -> Result<usize, String> {
    let mut c = PodApiClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| e.to_string())?;
    c.list(ListRequest::default())
        .await
        .map(|r| r.into_inner().items.len())
        .map_err(|e| e.to_string())
}

async fn wait_serving(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while list_pods(port).await.is_err() {
        assert!(Instant::now() < deadline, "apiserver not serving on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `true` once the server has closed this socket (read sees EOF or a reset).
fn closed_by_server(s: &mut std::net::TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. an HTTP/2 GOAWAY or SETTINGS frame
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_closed_and_the_connection_limit_holds() {
    let port = free_port();
    let srv = start(
        port,
        &["--max-connections", "20", "--handshake-timeout", "500ms"],
    );
    wait_serving(port).await;

    // The open-files soft limit was raised to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(line[3], line[4], "soft limit not raised: {line:?}");

    // 50 sockets that never send anything: 20 take every slot, 30 are closed at once.
    let mut idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let started = Instant::now();
    let mut closed = 0;
    for s in &mut idle {
        if closed_by_server(s, Duration::from_secs(5)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "every idle socket is closed by the server");
    // Closed by the handshake timeout (500 ms) or the limit, not held forever.
    assert!(started.elapsed() < Duration::from_secs(60));

    // A real client is served once the idle sockets are gone.
    assert_eq!(list_pods(port).await, Ok(0));
}

/// With every slot held by silent sockets (and a handshake timeout far away), one more
/// connection is closed at once and logged; closing the silent ones frees the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_connections_are_closed_and_logged() {
    let port = free_port();
    let srv = start(
        port,
        &["--max-connections", "20", "--handshake-timeout", "60s"],
    );
    wait_serving(port).await;
    let hold: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // The 21st is closed long before the 60 s handshake timeout could close it.
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_secs(20)));
    let log_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&srv.log).unwrap();
        if log.contains("connection limit reached") {
            break;
        }
        assert!(Instant::now() < log_deadline, "limit not logged: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The silent sockets leave; their slots are free again.
    drop(hold);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if list_pods(port).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Long-lived clients keep working with keepalive on: a watch stays open across
/// several keepalive intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_keepalive_pings() {
    use kube_lite_proto::v1::{Container, ObjectMeta, Pod, PodSpec, WatchRequest};
    let port = free_port();
    let _srv = start(port, &["--keepalive-interval", "200ms"]);
    wait_serving(port).await;
    let mut c = PodApiClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut w = c.watch(WatchRequest::default()).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pod = Pod {
        metadata: Some(ObjectMeta {
            name: "k".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    c.create(pod).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.message())
        .await
        .expect("event in time")
        .expect("stream ok")
        .expect("an event");
    assert_eq!(ev.object.unwrap().metadata.unwrap().name, "k");
}
