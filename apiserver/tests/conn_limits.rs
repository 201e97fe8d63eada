//! The `apiserver` binary's connection handling and watch ends, tested through its
//! real accept loop: a stuck watcher ends with OUT_OF_RANGE "too slow … relist", a
//! future-revision Watch fails clearly, idle TCP connections are closed after the
//! handshake timeout, the connection limit closes the excess at once (logged) while a
//! real client is still served, an accept loop at the descriptor limit backs off and
//! logs instead of spinning, HTTP/2 keepalive and idle timeouts, and the soft
//! RLIMIT_NOFILE raised to the hard limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube_lite_proto::v1::{
    pod_api_client::PodApiClient, Container, EventType, ListRequest, ObjectMeta, Pod, PodSpec,
    WatchRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// The binary as a child with its output collected (and echoed).
struct Server {
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test (KUBE_LITE_APISERVER_BIN overrides it, e.g. to show a test
/// failing against an older build).
fn binary() -> String {
    std::env::var("KUBE_LITE_APISERVER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_apiserver").to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary with `args`; `ulimit` (e.g. "ulimit -Sn 256") runs first in the
/// shell that then execs it (so the child's pid is the apiserver's).
fn start_with(ulimit: &str, args: &[&str]) -> Server {
    let dir = tempfile::Builder::new()
        .prefix("kl-conn-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{ulimit} && exec \"$0\" \"$@\""))
        .arg(binary())
        .args(["--listen", &listen, "--data-dir", data.to_str().unwrap()])
        // Plaintext: these tests speak raw HTTP/2 to the connection layer.
        .arg("--insecure")
        .args(args)
        .env("RUST_LOG", "info,sled=warn,h2=warn,hyper=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn apiserver");
    let logs = Arc::new(Mutex::new(Vec::new()));
    // The log goes to stdout; stderr has panics and clap's errors.
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    for pipe in [out, err] {
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[apiserver:{port}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
    }
    Server {
        child,
        port,
        logs,
        _dir: dir,
    }
}

fn start(args: &[&str]) -> Server {
    start_with("true", args)
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.logged(needle) {
            assert!(
                Instant::now() < deadline,
                "apiserver did not log {needle:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the server listens and answers a List.
    async fn client(&self) -> PodApiClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = PodApiClient::connect(self.url()).await {
                if c.list(ListRequest::default()).await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "apiserver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pod(name: &str, annotation_bytes: usize) -> Pod {
    let mut meta = ObjectMeta {
        name: name.into(),
        ..Default::default()
    };
    if annotation_bytes > 0 {
        meta.annotations
            .insert("pad".into(), "x".repeat(annotation_bytes));
    }
    Pod {
        metadata: Some(meta),
        spec: Some(PodSpec {
            node_name: "n0".into(),
            containers: vec![Container {
                name: "c".into(),
                image: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// `true` once the peer closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a SETTINGS frame; keep reading
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A watcher whose client stops reading while writers fill its buffer is ended with
/// OUT_OF_RANGE "too slow … relist", ahead of its buffered events; still so after the
/// 30 s the server used to wait before ending it with a plain OK.
#[tokio::test]
async fn stuck_watcher_gets_out_of_range_too_slow() {
    let s = start(&[]);
    let mut writer = s.client().await;
    // The stuck client: small HTTP/2 windows (64 KiB), a channel of its own.
    let ch = Endpoint::from_shared(s.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stuck = PodApiClient::new(ch)
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    // 2,400 creates of ~1 KiB pods (2.4 MB): far more than 64 KiB of windows plus the
    // server's 1,024-event buffer. Nobody polls `stuck` meanwhile.
    const N: usize = 2400;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / 8 {
                c.create(pod(&format!("p{t}-{i}"), 1000)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wrote = started.elapsed();
    s.wait_log("ending watcher: relist", Duration::from_secs(10))
        .await;
    let ended_at = Instant::now();
    assert!(s.logged("watcher too slow"));
    // Stay stuck past the old give-up point (30 s after the buffer filled), then read.
    while ended_at.elapsed() < Duration::from_secs(31) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut got = 0usize;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.next())
            .await
            .expect("the stuck watcher's stream ends")
        {
            Some(Ok(e)) => {
                if e.r#type != EventType::Bookmark as i32 {
                    got += 1;
                }
            }
            Some(Err(st)) => break st,
            None => panic!("stuck watcher ended with status OK after {got} events"),
        }
    };
    eprintln!(
        "wrote {N} pods in {wrote:?}; the stuck watcher then read {got} events before {:?}: {}",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too slow"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("relist"), "{}", status.message());
    // The final status overtook the buffered events: fewer than the buffer holds.
    assert!(got < 1024, "read {got} events before the status");
    // The server still serves, watches included.
    let mut w = writer
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    writer.create(pod("after", 0)).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = w.next().await.unwrap().unwrap();
            if e.r#type != EventType::Bookmark as i32 {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(e.r#type, EventType::Added as i32);
}

/// A Watch from a revision the server has not reached is OUT_OF_RANGE naming the
/// current revision (Kubernetes: "Too large resource version"); the current one is fine;
/// u64::MAX neither wraps nor hangs.
#[tokio::test]
async fn future_revision_watch_fails_clearly() {
    let s = start(&[]);
    let mut c = s.client().await;
    let rev = c
        .create(pod("a", 0))
        .await
        .unwrap()
        .into_inner()
        .metadata
        .unwrap()
        .resource_version;
    let watch = |rv: u64| WatchRequest {
        resource_version: rv,
        ..Default::default()
    };
    let e = c.watch(watch(rev + 1000)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "too large resource version: {} (current: {rev})",
            rev + 1000
        )),
        "{}",
        e.message()
    );
    // Exactly the current revision: accepted, and sees the next change.
    let mut w = c.watch(watch(rev)).await.unwrap().into_inner();
    c.create(pod("b", 0)).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = w.next().await.unwrap().unwrap();
            if e.r#type != EventType::Bookmark as i32 {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev.object.unwrap().metadata.unwrap().name, "b");
    for rv in [u64::MAX, u64::MAX - 1, i64::MAX as u64] {
        let e = c.watch(watch(rv)).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::OutOfRange | Code::InvalidArgument),
            "{rv}: {e:?}"
        );
    }
    assert!(c.list(ListRequest::default()).await.is_ok());
}

/// Plain TCP connections that never send the HTTP/2 preface are closed after the
/// handshake timeout (they were held forever).
#[tokio::test]
async fn idle_tcp_connections_closed_after_handshake_timeout() {
    let s = start(&["--handshake-timeout", "1s"]);
    let _ = s.client().await;
    let addr = s.addr();
    let took = tokio::task::spawn_blocking(move || {
        let mut socks: Vec<TcpStream> = (0..40)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        let t0 = Instant::now();
        for (i, sock) in socks.iter_mut().enumerate() {
            assert!(
                closed_within(sock, Duration::from_secs(10)),
                "idle connection {i} still open after {:?}",
                t0.elapsed()
            );
        }
        t0.elapsed()
    })
    .await
    .unwrap();
    eprintln!("40 idle connections closed after {took:?} (handshake timeout 1s)");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    // A partial preface does not count as a handshake either.
    let addr = s.addr();
    tokio::task::spawn_blocking(move || {
        let mut sock = TcpStream::connect(&addr).unwrap();
        sock.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
        assert!(closed_within(&mut sock, Duration::from_secs(10)));
        // Not HTTP/2 at all: closed without waiting.
        let mut sock = TcpStream::connect(&addr).unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(closed_within(&mut sock, Duration::from_millis(900)));
    })
    .await
    .unwrap();
}

/// With the connection limit at 20 and 50 idle sockets open, the 30 beyond the limit
/// are closed at once (and that is logged), and a real client is served as soon as the
/// idle ones time out.
#[tokio::test]
async fn connection_limit_closes_excess_and_serves_real_clients() {
    let s = start(&["--max-connections", "20", "--handshake-timeout", "2s"]);
    drop(s.client().await);
    let addr = s.addr();
    let opened = Instant::now();
    let socks = tokio::task::spawn_blocking(move || {
        let socks: Vec<TcpStream> = (0..50)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        socks
    })
    .await
    .unwrap();
    s.wait_log("connection limit reached", Duration::from_secs(5))
        .await;
    // Within the handshake timeout (2 s) exactly the 30 beyond the limit are closed.
    let (quick, socks) = tokio::task::spawn_blocking(move || {
        let mut socks = socks;
        for sock in &socks {
            sock.set_nonblocking(true).unwrap();
        }
        let mut closed = vec![false; socks.len()];
        while opened.elapsed() < Duration::from_millis(1500)
            && closed.iter().filter(|c| **c).count() < 30
        {
            for (i, sock) in socks.iter_mut().enumerate() {
                let mut b = [0u8; 16];
                match sock.read(&mut b) {
                    Ok(0) => closed[i] = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Ok(_) => {}
                    Err(_) => closed[i] = true,
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (closed.iter().filter(|c| **c).count(), socks)
    })
    .await
    .unwrap();
    eprintln!("{quick} of 50 idle sockets closed at once (limit 20)");
    assert_eq!(quick, 30, "closed at once (limit 20 of 50)");
    // A real client: refused at once while the limit is full, served once the idle
    // ones time out (2 s).
    let t0 = Instant::now();
    let mut c = s.client().await;
    let served = t0.elapsed();
    eprintln!("a real client was served after {served:?}");
    assert!(served < Duration::from_secs(10), "served after {served:?}");
    assert!(c.list(ListRequest::default()).await.is_ok());
    drop(socks);
}

/// At the descriptor limit the accept loop backs off and logs instead of spinning, and
/// clients are served once descriptors are free again.
#[tokio::test]
async fn accept_loop_backs_off_at_the_descriptor_limit() {
    // Soft and hard 128: the server cannot raise it.
    let s = start_with(
        "ulimit -Sn 128 && ulimit -Hn 128",
        &["--handshake-timeout", "3s"],
    );
    drop(s.client().await);
    let addr = s.addr();
    let socks = tokio::task::spawn_blocking(move || {
        (0..200)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    s.wait_log(
        "accepting connections failed; backing off",
        Duration::from_secs(5),
    )
    .await;
    // CPU of the apiserver over one second while it is out of descriptors.
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap() // utime + stime
    };
    let (c0, t0) = (cpu(s.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ticks = cpu(s.pid()) - c0;
    let share = ticks as f64 / 100.0 / t0.elapsed().as_secs_f64();
    eprintln!(
        "apiserver CPU while out of descriptors: {:.0}%",
        share * 100.0
    );
    assert!(share < 0.3, "accept loop spins: {:.0}% CPU", share * 100.0);
    let t0 = Instant::now();
    let mut c = s.client().await;
    eprintln!("a real client was served after {:?}", t0.elapsed());
    assert!(c.list(ListRequest::default()).await.is_ok());
    drop(socks);
}

/// Reads HTTP/2 frame headers from a raw connection after the client preface and an
/// empty SETTINGS frame; returns the frame types seen until EOF or `within`.
fn raw_h2_frames(addr: &str, within: Duration, stop_at: u8) -> (Vec<u8>, bool, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // SETTINGS, empty
    let t0 = Instant::now();
    let mut types = Vec::new();
    loop {
        let left = within.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return (types, false, t0.elapsed());
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut h = [0u8; 9];
        if s.read_exact(&mut h).is_err() {
            return (types, true, t0.elapsed());
        }
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            return (types, true, t0.elapsed());
        }
        types.push(h[3]);
        if h[3] == stop_at {
            return (types, false, t0.elapsed());
        }
    }
}

const PING: u8 = 6;
const GOAWAY: u8 = 7;

/// An HTTP/2 connection with no stream gets GOAWAY after the idle timeout.
#[tokio::test]
async fn idle_http2_connection_gets_goaway() {
    let s = start(&["--idle-timeout", "1s", "--keepalive-interval", "0"]);
    let _ = s.client().await;
    let addr = s.addr();
    let (types, _, took) =
        tokio::task::spawn_blocking(move || raw_h2_frames(&addr, Duration::from_secs(10), GOAWAY))
            .await
            .unwrap();
    eprintln!("frames {types:?}; GOAWAY after {took:?}");
    assert_eq!(types.last(), Some(&GOAWAY), "{types:?}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

/// The server PINGs, and drops a peer that never answers.
#[tokio::test]
async fn keepalive_pings_and_drops_silent_peers() {
    let s = start(&[
        "--keepalive-interval",
        "500ms",
        "--keepalive-timeout",
        "500ms",
        "--idle-timeout",
        "0",
    ]);
    let _ = s.client().await;
    let addr = s.addr();
    let (types, closed, took) =
        tokio::task::spawn_blocking(move || raw_h2_frames(&addr, Duration::from_secs(10), 255))
            .await
            .unwrap();
    eprintln!("frames {types:?}; closed={closed} after {took:?}");
    assert!(types.contains(&PING), "no PING: {types:?}");
    assert!(
        closed,
        "a peer that never answers PINGs was kept: {types:?}"
    );
    // A real client answers PINGs: its watch outlives several keepalive periods.
    let mut c = s.client().await;
    let mut w = c
        .watch(WatchRequest {
            bookmark_interval_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let e = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("bookmark")
            .expect("stream open")
            .expect("event ok");
        assert_eq!(e.r#type, EventType::Bookmark as i32);
    }
}

/// The soft RLIMIT_NOFILE is raised to the hard limit at start.
#[tokio::test]
async fn soft_nofile_limit_raised_to_hard() {
    let s = start_with("ulimit -Sn 256 && ulimit -Hn 4096", &[]);
    let _ = s.client().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    eprintln!("{line}");
    assert_eq!((f[3], f[4]), ("4096", "4096"), "{line}");
    assert!(s.logged("raised the soft RLIMIT_NOFILE"));
}
