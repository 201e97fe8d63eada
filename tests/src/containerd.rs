//! A private containerd for a test (or a local cluster): its own root, state dir,
//! sockets and config in a temp dir, never the system containerd's paths, and a
//! containerd namespace `kube-lite-<id>` unique to it.
//!
//! ```ignore
//! let ctrd = TestContainerd::start()?;            // skip the test if !TestContainerd::available()
//! opts.extra_agent_args.extend(ctrd.agent_args()); // agents use the containerd runtime
//! // Drop: shims of this containerd and containerd itself killed by PID, mounts under
//! // its dirs detached, its dirs removed.
//! ```
//!
//! Shim sockets still go to containerd's fixed `/run/containerd/s/<hash of our socket
//! path>` and runc's state to `/run/containerd/runc/<namespace>`: both are unique to this
//! instance and removed on drop.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `containerd` and `runc` are installed (Debian's `containerd runc`).
pub fn available() -> bool {
    let found = |b: &str| {
        [
            "/usr/bin",
            "/usr/sbin",
            "/usr/local/bin",
            "/usr/local/sbin",
            "/bin",
            "/sbin",
        ]
        .iter()
        .any(|d| Path::new(d).join(b).exists())
    };
    found("containerd") && found("runc") && found("containerd-shim-runc-v2")
}

/// The config of a private containerd under `dir` (CRI and the snapshotters that
/// need special filesystems off; overlayfs is the snapshotter).
pub fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    )
}

/// A running private containerd.
pub struct TestContainerd {
    /// Everything of this containerd lives here.
    pub dir: PathBuf,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace the agents use (`kube-lite-<id>`).
    pub namespace: String,
    child: Option<Child>,
    tmp: Option<tempfile::TempDir>,
}

impl TestContainerd {
    /// Starts containerd and waits (up to 30 s) until its socket accepts connections.
    pub fn start() -> anyhow::Result<TestContainerd> {
        let id = crate::cluster::random_hex();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("kl{id}-ctrd-"))
            .tempdir()
            .context("containerd temp dir")?;
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("config.toml"), config_toml(&dir)).context("config")?;
        let log = std::fs::File::create(dir.join("containerd.log")).context("log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning containerd")?;
        let mut c = TestContainerd {
            socket: dir.join("c.sock"),
            namespace: format!("kube-lite-{id}"),
            dir,
            child: Some(child),
            tmp: Some(tmp),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&c.socket).is_ok() {
                return Ok(c);
            }
            if let Some(Ok(Some(st))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                c.child = None;
                bail!(
                    "containerd exited ({st}): {}",
                    crate::cluster::tail(&c.dir.join("containerd.log"), 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd socket {} not ready after 30 s",
                    c.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent flags that select this containerd.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--runtime".into(),
            "containerd".into(),
            "--containerd-socket".into(),
            self.socket.display().to_string(),
            "--containerd-namespace".into(),
            self.namespace.clone(),
        ]
    }

    /// Tail of containerd's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::cluster::tail(&self.dir.join("containerd.log"), lines)
    }
}

/// PIDs whose command line contains `marker` (e.g. our unique socket path).
pub fn pids_with_cmdline(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if text.contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}

/// Mount points at or under `dir` (deepest first), from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

/// The project's image archives (`busybox.tar`, `whoami.tar`), built once into
/// `target/images` by deploy/images/build-images.sh (the tests of one binary wait for
/// each other here).
pub fn image_archives(agent_bin: &Path) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = root.join("target/images");
    if out.join("busybox.tar").exists() && out.join("whoami.tar").exists() {
        return out;
    }
    crate::cluster::ensure_whoami(agent_bin);
    let st = Command::new(root.join("deploy/images/build-images.sh"))
        .arg(&out)
        .env("KL_WHOAMI_BIN", agent_bin.with_file_name("kl-whoami"))
        .status()
        .expect("running deploy/images/build-images.sh");
    assert!(st.success(), "deploy/images/build-images.sh failed");
    out
}

/// Loads `archive` onto node `i` the `kubectl-lite image load` way (admin channel,
/// NodeApi.LoadImage in 1 MiB chunks, proxied to the agent): the image names.
pub async fn load_image(c: &crate::cluster::TestCluster, i: usize, archive: &Path) -> Vec<String> {
    use kube_lite_proto::v1::ImageChunk;
    let data = std::fs::read(archive).unwrap();
    let name = archive.file_name().unwrap().to_string_lossy().to_string();
    let node = c.nodes[i].name.clone();
    let chunks: Vec<ImageChunk> = data
        .chunks(1 << 20)
        .enumerate()
        .map(|(k, d)| ImageChunk {
            data: d.to_vec(),
            file_name: if k == 0 { name.clone() } else { String::new() },
            node: if k == 0 { node.clone() } else { String::new() },
        })
        .collect();
    c.api
        .nodes()
        .load_image(futures::stream::iter(chunks))
        .await
        .unwrap_or_else(|e| panic!("load {name}: {e}\n{}", c.agent_log_tail(i, 30)))
        .into_inner()
        .names
}

/// Removes the (empty, once its containers are gone) cgroup `/<name>` runc made for
/// the namespace's containers in every hierarchy (cgroup v1 and v2).
pub fn remove_cgroups(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(name)];
    if let Ok(rd) = std::fs::read_dir(root) {
        dirs.extend(rd.flatten().map(|e| e.path().join(name)));
    }
    for d in dirs {
        if !d.is_dir() {
            continue;
        }
        // Children first (containers' cgroups left by a killed shim), then the dir.
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let sock = self.socket.display().to_string();
        // Shims of this containerd (their command line names our socket), by PID.
        for pid in pids_with_cmdline(&sock) {
            if Some(pid as u32) != self.child.as_ref().map(|c| c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in mounts_under(&self.dir) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        remove_cgroups(&self.namespace);
        if let Some(t) = self.tmp.take() {
            if std::thread::panicking() {
                eprintln!("--- containerd log:\n{}", self.log_tail(40));
            }
            if std::thread::panicking() && std::env::var_os("KUBE_LITE_KEEP_STATE").is_some() {
                eprintln!("keeping containerd dir {}", t.keep().display());
            } else if let Err(e) = std::fs::remove_dir_all(t.path()) {
                eprintln!("removing {}: {e}", t.path().display());
            }
        }
    }
}
