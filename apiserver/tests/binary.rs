//! The `apiserver` binary: flags and environment, serving, clean shutdown on SIGTERM
//! with everything acknowledged on disk, and a restart on the same data directory.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube_lite_proto::v1::{
    pod_api_client::PodApiClient, Container, GetRequest, ObjectMeta, Pod, PodSpec,
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path, port: u16) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_apiserver"))
            .current_dir(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // Plaintext: this file tests the process (start, SIGTERM, flags); TLS and
            // authentication are tested through the test kit (tests/tests/security.rs).
            .arg("--insecure")
            .env("KUBE_LITE_NODE_GRACE_PERIOD", "500ms")
            .env("KUBE_LITE_POD_EVICTION_TIMEOUT", "2m")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn apiserver"),
    )
}

async fn client(port: u16) -> PodApiClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if let Ok(c) = PodApiClient::connect(format!("http://127.0.0.1:{port}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("apiserver did not start listening on port {port}");
}

/// A pod with one `/bin/true` container, bound to `node` (empty: unbound).
fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
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

fn get(name: &str) -> GetRequest {
    GetRequest {
        name: name.into(),
        namespace: String::new(),
    }
}

fn sigterm(s: &Server) {
    let ok = Command::new("kill")
        .args(["-TERM", &s.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

#[tokio::test]
async fn binary_serves_stops_on_sigterm_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = start(dir.path(), port);
    let mut c = client(port).await;
    let created = c.create(pod("web", "")).await.unwrap().into_inner();
    // Default data directory under the working directory.
    assert!(dir.path().join("kube-lite-data").is_dir());

    sigterm(&s);
    let status = tokio::task::spawn_blocking(move || {
        let st = s.0.wait().unwrap();
        std::mem::forget(s); // already reaped
        st
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");

    let s2 = start(dir.path(), port);
    let mut c = client(port).await;
    let got = c.get(get("web")).await.unwrap().into_inner();
    assert_eq!(
        got.metadata.as_ref().unwrap().uid,
        created.metadata.as_ref().unwrap().uid
    );
    drop(s2);
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_apiserver"))
        .args(["--node-grace-period", "forty"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--node-grace-period"), "{err}");
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn overlapping_cidrs_and_bad_mask_sizes_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_apiserver"))
            .current_dir(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--cluster-cidr", "10.0.0.0/8"]);
    assert!(
        err.contains("--service-cidr 10.96.0.0/16 overlaps --cluster-cidr 10.0.0.0/8"),
        "{err}"
    );
    let err = run(&["--node-cidr-mask-size", "16"]);
    assert!(
        err.contains("node subnet prefix /16 (--node-cidr-mask-size) does not fit in cluster CIDR 10.0.0.0/16"),
        "{err}"
    );
    let err = run(&["--node-cidr-mask-size", "31"]);
    assert!(err.contains("--node-cidr-mask-size"), "{err}");
    // Refused before anything is written.
    assert!(!dir.path().join("kube-lite-data").exists());
}

/// kill -9 while clients write: every acknowledged create is there after the restart,
/// and the revision counter continues above every acknowledged revision.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = start(dir.path(), port);
    let _ = client(port).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = client(port).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.create(pod(&format!("p{t}-{i}"), "n")).await {
                    Ok(p) => acked.push((
                        format!("p{t}-{i}"),
                        p.into_inner().metadata.unwrap().resource_version,
                    )),
                    Err(_) => break, // the server is gone
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.0.kill().unwrap(); // SIGKILL
    s.0.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    let max_rev = acked.iter().map(|a| a.1).max().unwrap();

    let _s2 = start(dir.path(), port);
    let mut c = client(port).await;
    for (name, rev) in &acked {
        let p = c
            .get(get(name))
            .await
            .unwrap_or_else(|e| panic!("acknowledged pod {name} lost: {e}"))
            .into_inner();
        assert_eq!(p.metadata.unwrap().resource_version, *rev);
    }
    let list = c
        .list(kube_lite_proto::v1::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.resource_version >= max_rev);
    let p = c.create(pod("after", "n")).await.unwrap().into_inner();
    assert!(p.metadata.unwrap().resource_version > list.resource_version);
}

/// kill -9 while clients rewrite large objects (stored as value files, replaced and
/// deleted as the watch window moves on): after the restart every object is at its
/// last acknowledged version or later, with its content intact, and the value files
/// left are only those still referred to (at most the window's plus the live ones).
#[tokio::test]
async fn acknowledged_large_objects_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let big = |name: &str, i: u64| {
        let mut p = pod(name, "n");
        let m = p.metadata.as_mut().unwrap();
        m.annotations
            .insert("pad".into(), format!("{i:08}").repeat(12_000)); // 96 KB
        p
    };
    let mut s = Server(
        Command::new(env!("CARGO_BIN_EXE_apiserver"))
            .current_dir(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--watch-window-bytes", "1Mi"])
            .arg("--insecure")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn apiserver"),
    );
    let _ = client(port).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut c = client(port).await;
        let stop = stop.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            // (name, acknowledged revision, content index)
            let mut acked: Vec<(String, u64, u64)> = Vec::new();
            let mut i = 0u64;
            'run: while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("big{t}-{}", i % 3);
                let res = if i < 3 {
                    c.create(big(&name, i)).await
                } else {
                    c.update(big(&name, i)).await
                };
                match res {
                    Ok(p) => {
                        let rv = p.into_inner().metadata.unwrap().resource_version;
                        acked.retain(|a| a.0 != name);
                        acked.push((name, rv, i));
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => break 'run, // the server is gone
                }
                i += 1;
            }
            (acked, i)
        }));
    }
    // Killed mid-stream once enough writes were acknowledged (a busy machine gets there
    // later, not with fewer writes).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while done.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} writes acknowledged in 120 s",
            done.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.0.kill().unwrap(); // SIGKILL
    s.0.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, mut writes) = (Vec::new(), 0);
    for t in tasks {
        let (a, n) = t.await.unwrap();
        acked.extend(a);
        writes += n;
    }
    // More versions than the bound below: without deletion, more files would stay.
    assert!(writes > 40, "only {writes} writes acknowledged");

    let _s2 = start(dir.path(), port);
    let mut c = client(port).await;
    for (name, rev, i) in &acked {
        let p = c
            .get(get(name))
            .await
            .unwrap_or_else(|e| panic!("acknowledged pod {name} lost: {e}"))
            .into_inner();
        let m = p.metadata.unwrap();
        assert!(
            m.resource_version >= *rev,
            "{name}: {} < {rev}",
            m.resource_version
        );
        if m.resource_version == *rev {
            assert_eq!(
                m.annotations["pad"],
                format!("{i:08}").repeat(12_000),
                "{name}"
            );
        }
    }
    // What is left: the live objects' files and at most a 1 MiB window's.
    let files = std::fs::read_dir(dir.path().join("kube-lite-data/values"))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!("{writes} versions written, {files} value files left");
    assert!(
        files <= 12 + 12,
        "{files} value files left for 12 objects and a 1 MiB window ({writes} versions written)"
    );
}

/// Secure by default: with no flags the binary serves TLS and writes the admin
/// kubeconfig, whose CA and certificate get a client in; without them nothing does.
#[tokio::test]
async fn binary_is_secure_by_default_and_writes_an_admin_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _s = Server(
        Command::new(env!("CARGO_BIN_EXE_apiserver"))
            .current_dir(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn apiserver"),
    );
    let data = dir.path().join("kube-lite-data");
    let kc_path = data.join("admin.kubeconfig");
    for _ in 0..200 {
        if kc_path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&kc_path).expect("admin.kubeconfig written");
    let kc = kube_lite_client::kubeconfig::Kubeconfig::parse(&text).unwrap();
    let r = kube_lite_client::kubeconfig::resolve(
        Some((&kc, &kc_path)),
        &Default::default(),
        "",
        &|p| std::fs::read_to_string(p).map_err(|e| e.to_string()),
    )
    .unwrap();
    assert_eq!(r.server, format!("https://127.0.0.1:{port}"));
    let (cert_pem, key_pem) = r.client_cert.clone().unwrap();
    let cfg = kube_lite_pki::client_config(
        &kube_lite_pki::Trust::Ca(r.ca_pem.clone().unwrap()),
        Some(&kube_lite_pki::CertKey { cert_pem, key_pem }),
    )
    .unwrap();
    let mut ch = None;
    for _ in 0..100 {
        if let Ok(c) =
            kube_lite_client::connect_tls(&r.server, std::sync::Arc::new(cfg.clone())).await
        {
            ch = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = PodApiClient::new(ch.expect("TLS connection with the kubeconfig"));
    c.create(pod("web", "")).await.unwrap();
    // Plaintext gets nowhere.
    let plain = PodApiClient::connect(format!("http://127.0.0.1:{port}")).await;
    if let Ok(mut p) = plain {
        assert!(p.get(get("web")).await.is_err());
    }
    // Keys and tokens are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "pki/ca.key",
        "admin-token",
        "join-token",
        "admin.kubeconfig",
    ] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}
