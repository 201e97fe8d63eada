//! Multi-node test clusters in network namespaces: a real apiserver on loopback
//! ([`TestApiServer`]), an underlay namespace `kl<id>-u` with a bridge, one namespace
//! `kl<id>-n<i>` per node joined to it by a veth (address `192.168.<x>.<i+1>/24`), and
//! one real `nodeagent` process per node, spawned in the root namespace with
//! `--netns kl<id>-n<i>` (so it reaches the apiserver on 127.0.0.1).
//!
//! ```ignore
//! let mut c = TestCluster::start(ClusterOptions::new(2, env!("CARGO_BIN_EXE_nodeagent"))).await?;
//! // ... create pods with c.api.pods(), check them with c.exec_in_pod_netns(..)
//! c.kill_agent(0); c.start_agent(0);          // restart safety
//! // Drop: agents killed by PID, processes left in the cluster's namespaces killed,
//! // namespaces and state dirs removed (also when the test panics; then the agent logs'
//! // tails are printed first).
//! ```
//!
//! `<id>` is 6 random hex digits, so parallel tests never collide. Pod netns of node `i`
//! are named `kl<id>-n<i>-<pod uid>` (the agent gets `--netns-prefix kl<id>-n<i>`); see
//! [`TestNode::pod_netns`].

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kube_lite_net::{netns, pod_netns_name, underlay, Ipv4Net};
use kube_lite_proto::v1::{GetRequest, ListRequest, Node, Pod};

use crate::apiserver::TestApiServer;

/// Busybox binary of the machine (`/bin/busybox`, else `/usr/bin/busybox`).
pub fn busybox() -> &'static str {
    if Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/usr/bin/busybox"
    }
}

/// Whether the test runs as root (needed for namespaces). Prints a skip note if not.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: this test needs root (network namespaces)");
    false
}

/// Builds the `kl-whoami` demo binary next to `agent_bin` (where the agent resolves
/// `--image whoami`) unless it is already there; a `--release` build when the agent is a
/// release build.
pub fn ensure_whoami(agent_bin: &Path) {
    let p = agent_bin.with_file_name("kl-whoami");
    if p.exists() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "kube-lite-demo", "--bin", "kl-whoami"]);
    if p.to_string_lossy().contains("/release/") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("cargo build kl-whoami");
    assert!(st.success(), "building kl-whoami failed");
    assert!(p.exists(), "{} missing after build", p.display());
}

/// The cluster of the node agent's end-to-end tests: `kl-whoami` built beside the agent
/// ([`ensure_whoami`]), agents heartbeating every second (`--heartbeat-interval 1s`).
/// Panics if the cluster does not come up.
pub async fn whoami_cluster(mut opts: ClusterOptions) -> TestCluster {
    ensure_whoami(&opts.agent_bin);
    opts.extra_agent_args
        .extend(["--heartbeat-interval".to_string(), "1s".to_string()]);
    TestCluster::start(opts).await.expect("test cluster")
}

/// Options of [`TestCluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes (agents), at least 1.
    pub nodes: usize,
    /// The `nodeagent` binary (`env!("CARGO_BIN_EXE_nodeagent")` in the nodeagent
    /// package; see [`default_agent_bin`] elsewhere).
    pub agent_bin: PathBuf,
    /// Appended to every agent's command line.
    pub extra_agent_args: Vec<String>,
    /// Extra environment of the agents (RUST_LOG defaults to `info`).
    pub agent_env: Vec<(String, String)>,
    /// How long [`TestCluster::start`] waits for every node to be Ready.
    pub ready_timeout: Duration,
    /// Apiserver settings (data dir: a temp dir unless set).
    pub apiserver: apiserver::Config,
}

impl ClusterOptions {
    /// `nodes` agents running `agent_bin`, default settings otherwise.
    pub fn new(nodes: usize, agent_bin: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            nodes,
            agent_bin: agent_bin.into(),
            extra_agent_args: Vec::new(),
            agent_env: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            apiserver: apiserver::Config::default(),
        }
    }
}

/// The `nodeagent` binary next to the running test's target dir
/// (`target/<profile>/nodeagent`), or `$KUBE_LITE_AGENT_BIN`.
pub fn default_agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBE_LITE_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/nodeagent
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("nodeagent"))
        .unwrap_or_else(|| PathBuf::from("nodeagent"))
}

/// One node: its namespace, address, state dir and agent process.
#[derive(Debug)]
pub struct TestNode {
    /// Node name (`node<i>`).
    pub name: String,
    /// Node network namespace (`kl<id>-n<i>`).
    pub netns: String,
    /// Underlay address of the node.
    pub address: Ipv4Addr,
    /// Agent state dir (ipam.json, logs, ...); the agent log is `agent.log` in it.
    pub state_dir: PathBuf,
    /// The running agent, if any.
    pub agent: Option<Child>,
    /// Prefix of the pod netns of this node (`--netns-prefix`).
    pub netns_prefix: String,
    /// Agent stdout+stderr.
    pub log_path: PathBuf,
}

impl TestNode {
    /// Name of the netns of the pod with `uid` on this node.
    pub fn pod_netns(&self, uid: &str) -> String {
        pod_netns_name(&self.netns_prefix, uid)
    }

    /// Pod netns currently present on this node.
    pub fn pod_netns_list(&self) -> Vec<String> {
        netns::list_netns(&kube_lite_net::pod_netns_prefix(&self.netns_prefix)).unwrap_or_default()
    }
}

/// A running multi-node cluster; everything is removed on drop.
pub struct TestCluster {
    /// 6 hex digits; every namespace of the cluster starts with `kl<id>`.
    pub id: String,
    pub api: TestApiServer,
    /// Underlay namespace (`kl<id>-u`).
    pub underlay_ns: String,
    pub nodes: Vec<TestNode>,
    agent_bin: PathBuf,
    extra_agent_args: Vec<String>,
    agent_env: Vec<(String, String)>,
    base: Option<tempfile::TempDir>,
}

/// 6 random hex digits (the kit's unique ids).
pub fn random_hex() -> String {
    random_id()
}

fn random_id() -> String {
    let mut b = [0u8; 3];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
            ^ std::process::id();
        b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
    }
    format!("{:02x}{:02x}{:02x}", b[0], b[1], b[2])
}

impl TestCluster {
    /// Build the namespaces, start one agent per node and wait until every node is
    /// Ready (with a pod CIDR). On failure everything made so far is removed and the
    /// error carries the agent log tails.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<TestCluster> {
        if opts.nodes == 0 || opts.nodes > 250 {
            bail!("nodes must be 1..=250, got {}", opts.nodes);
        }
        if !opts.agent_bin.exists() {
            bail!(
                "agent binary {} not found (build it: cargo build -p nodeagent)",
                opts.agent_bin.display()
            );
        }
        if let Some(dir) = opts.agent_bin.parent() {
            if !dir.join("kl-whoami").exists() {
                eprintln!(
                    "note: no kl-whoami next to {}: `--image whoami` pods will fail \
                     (cargo build -p kube-lite-demo)",
                    opts.agent_bin.display()
                );
            }
        }
        let id = random_id();
        let base = tempfile::Builder::new()
            .prefix(&format!("kl{id}-cluster-"))
            .tempdir()
            .context("state dir")?;
        let api = TestApiServer::start_with(opts.apiserver.clone()).await;
        let mut c = TestCluster {
            underlay_ns: format!("kl{id}-u"),
            id: id.clone(),
            api,
            nodes: Vec::new(),
            agent_bin: opts.agent_bin.clone(),
            extra_agent_args: opts.extra_agent_args.clone(),
            agent_env: opts.agent_env.clone(),
            base: None,
        };
        let base_path = base.path().to_path_buf();
        c.base = Some(base);
        // From here on, Drop cleans up whatever exists.
        underlay::create_underlay(&c.underlay_ns)
            .await
            .context("underlay namespace")?;
        let x = u8::from_str_radix(&id[..2], 16).unwrap_or(0);
        for i in 0..opts.nodes {
            let netns_name = format!("kl{id}-n{i}");
            let address = Ipv4Addr::new(192, 168, x, i as u8 + 1);
            underlay::attach_node(
                &c.underlay_ns,
                &netns_name,
                &format!("kl{id}p{i}"),
                Ipv4Net::new(address, 24).expect("prefix 24"),
            )
            .await
            .with_context(|| format!("node namespace {netns_name}"))?;
            let state_dir = base_path.join(format!("node{i}"));
            std::fs::create_dir_all(&state_dir).context("node state dir")?;
            c.nodes.push(TestNode {
                name: format!("node{i}"),
                netns_prefix: netns_name.clone(),
                netns: netns_name,
                address,
                log_path: state_dir.join("agent.log"),
                state_dir,
                agent: None,
            });
        }
        for i in 0..opts.nodes {
            c.try_start_agent(i)?;
        }
        c.wait_ready(opts.ready_timeout).await?;
        Ok(c)
    }

    /// Wait until every node is registered, Ready=True and has a pod CIDR.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Vec<Node>> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if let Some(a) = n.agent.as_mut() {
                    if let Ok(Some(st)) = a.try_wait() {
                        n.agent = None;
                        bail!(
                            "agent of node{i} exited ({st}) before Ready; log {}:\n{}",
                            n.log_path.display(),
                            tail(&n.log_path, 40)
                        );
                    }
                }
            }
            match self.api.nodes().list(ListRequest::default()).await {
                Ok(list) => {
                    let items = list.into_inner().items;
                    let missing: Vec<&str> = self
                        .nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .filter(|name| {
                            !items
                                .iter()
                                .any(|it| node_name(it) == *name && node_ready(it))
                        })
                        .collect();
                    if missing.is_empty() {
                        return Ok(items);
                    }
                    last = format!("not Ready yet: {missing:?}");
                }
                Err(e) => last = format!("list nodes: {e}"),
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "--- {} ({}):\n{}",
                            n.name,
                            n.log_path.display(),
                            tail(&n.log_path, 30)
                        )
                    })
                    .collect();
                bail!(
                    "cluster kl{} not Ready after {timeout:?}: {last}\n{}",
                    self.id,
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn try_start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        if n.agent.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .with_context(|| format!("open {}", n.log_path.display()))?;
        let log2 = log.try_clone().context("dup log")?;
        let mut cmd = Command::new(&self.agent_bin);
        cmd.arg("--server")
            .arg(&self.api.url)
            .arg("--node-name")
            .arg(&n.name)
            .arg("--netns")
            .arg(&n.netns)
            .arg("--address")
            .arg(n.address.to_string())
            .arg("--state-dir")
            .arg(&n.state_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--netns-prefix")
            .arg(&n.netns_prefix);
        if self.api.secure() {
            // Joins with the token the first time; later starts use the identity
            // saved in the state dir.
            cmd.arg("--join-token-file")
                .arg(self.api.join_token_path())
                .arg("--certificate-authority")
                .arg(self.api.ca_path());
        }
        cmd.args(&self.extra_agent_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &self.agent_env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.agent_bin.display()))?;
        n.agent = Some(child);
        Ok(())
    }

    /// Start the agent of node `i` again (after [`kill_agent`](Self::kill_agent)); its log
    /// is appended to. Panics if it cannot be spawned.
    pub fn start_agent(&mut self, i: usize) {
        if let Err(e) = self.try_start_agent(i) {
            panic!("start agent of node{i}: {e:#}");
        }
    }

    /// SIGKILL the agent of node `i` by PID and reap it. Its pods keep running.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    /// Run `argv` inside the network namespace of node `i`.
    pub fn exec_in_node(&self, i: usize, argv: &[&str]) -> Output {
        exec_in(&self.nodes[i].netns, argv)
    }

    /// Run `argv` inside the named netns `netns` (e.g. a pod's).
    pub fn exec_in_pod_netns(&self, netns: &str, argv: &[&str]) -> Output {
        exec_in(netns, argv)
    }

    /// `busybox wget -qO- url` run inside `netns` with a 5 s limit (busybox's own `-T`
    /// segfaults; see DATAPATH-NOTES). `Ok(body)` on success, `Err(stderr)` otherwise.
    pub fn http_get_from(&self, netns: &str, url: &str) -> Result<String, String> {
        let bb = busybox();
        let out = exec_in(netns, &[bb, "timeout", "5", bb, "wget", "-qO-", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "wget {url} in {netns}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Every named netns of this cluster (underlay, nodes, pods).
    pub fn all_netns(&self) -> Vec<String> {
        netns::list_netns(&format!("kl{}-", self.id)).unwrap_or_default()
    }

    /// The agent log of node `i` (last `lines` lines).
    pub fn agent_log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.nodes[i].log_path, lines)
    }

    /// Pod `default/name`, if it exists.
    pub async fn get_pod(&self, name: &str) -> Option<Pod> {
        self.api
            .pods()
            .get(GetRequest {
                name: name.into(),
                namespace: "default".into(),
            })
            .await
            .ok()
            .map(|p| p.into_inner())
    }

    /// Polls pod `default/name` until `pred` holds (60 s; the failure names `what` and
    /// shows the last status and node 0's agent log).
    pub async fn wait_pod(&self, name: &str, what: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.get_pod(name).await;
            if let Some(p) = &p {
                if pred(p) {
                    return p.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "pod {name}: timed out waiting for {what}; last: {:?}\n{}",
                p.map(|p| p.status),
                self.agent_log_tail(0, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes pod `default/name` with grace period `grace` (seconds).
    pub async fn delete_pod(&self, name: &str, grace: i64) -> Result<(), tonic::Status> {
        self.api
            .pods()
            .delete(kube_lite_proto::v1::DeleteRequest {
                name: name.into(),
                namespace: "default".into(),
                resource_version: 0,
                grace_period_seconds: grace,
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// The whole log of `container` ("" = the only one) of pod `default/name`, of its
    /// previous instance if `previous` (panics if the apiserver refuses).
    pub async fn pod_logs(&self, name: &str, container: &str, previous: bool) -> String {
        use futures::StreamExt;
        let mut s = self
            .api
            .pods()
            .logs(kube_lite_proto::v1::LogsRequest {
                name: name.into(),
                namespace: "default".into(),
                container: container.into(),
                previous,
                tail_lines: -1,
                ..Default::default()
            })
            .await
            .expect("logs")
            .into_inner();
        let mut out = Vec::new();
        while let Some(ch) = s.next().await {
            out.extend(ch.expect("log chunk").data);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// This process's cgroup directory in v1 hierarchy `dir` ("" = the v2 one; "systemd" =
/// the `name=systemd` one), as the agents (its children) and their containers have it.
pub fn own_cgroup_dir(dir: &str) -> PathBuf {
    let me = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let ctrl = if dir == "systemd" {
        "name=systemd"
    } else {
        dir
    };
    for l in me.lines() {
        let mut p = l.splitn(3, ':');
        let (_, ctrls, path) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        let path = path.trim_start_matches('/');
        if ctrl.is_empty() && ctrls.is_empty() {
            return Path::new("/sys/fs/cgroup").join(path);
        }
        if !ctrl.is_empty() && ctrls.split(',').any(|c| c == ctrl) {
            return Path::new("/sys/fs/cgroup").join(dir).join(path);
        }
    }
    panic!("no {ctrl} cgroup in {me}")
}

/// A package's binary next to the running test's (`target/<profile>/<bin>` for the
/// `sibling` path given), built with `cargo build -p <package> --bin <bin>` if missing
/// (the tests of one binary wait for each other here).
pub fn built_sibling(sibling: PathBuf, package: &str, bin: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !sibling.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .unwrap_or_else(|e| panic!("cargo build {bin}: {e}"));
        assert!(st.success(), "building {bin} failed");
    }
    sibling
}

fn exec_in(ns: &str, argv: &[&str]) -> Output {
    assert!(!argv.is_empty(), "empty argv");
    match netns::command_in_netns(ns, argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("run {argv:?} in {ns}: {e}"),
    }
}

fn node_name(n: &Node) -> &str {
    n.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

fn node_ready(n: &Node) -> bool {
    let cidr = n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty());
    let ready = n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    });
    cidr && ready
}

/// Last `lines` lines of a file (or a note that it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let v: Vec<&str> = s.lines().collect();
            v[v.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            for n in &self.nodes {
                eprintln!(
                    "--- agent log of {} ({}), last 60 lines:\n{}",
                    n.name,
                    n.log_path.display(),
                    tail(&n.log_path, 60)
                );
            }
        }
        // 1. Agents, by PID.
        for i in 0..self.nodes.len() {
            self.kill_agent(i);
        }
        // 2. Processes still inside the cluster's namespaces (pods: children of killed
        //    agents), found by their netns inode, by PID. Pods first, then nodes.
        let mut all = self.all_netns();
        all.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for _ in 0..50 {
            let mut alive = false;
            for ns in &all {
                for pid in netns::pids_in_netns(ns) {
                    alive = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // 3. Namespaces: pods, nodes, underlay (their links go with them).
        for ns in &all {
            if let Err(e) = netns::delete_netns_blocking(ns) {
                eprintln!("cleanup of cluster kl{}: {e}", self.id);
            }
        }
        // 3b. The agents' cgroups (`kube-lite-<netns prefix>`, issue 13), their pods' in them.
        for n in &self.nodes {
            remove_agent_cgroups(&format!("kube-lite-{}", n.netns_prefix));
        }
        // 4. State dirs (TempDir), unless asked to keep them for debugging.
        if let Some(b) = self.base.take() {
            if panicking && std::env::var_os("KUBE_LITE_KEEP_STATE").is_some() {
                eprintln!("keeping state dir {}", b.keep().display());
            }
        }
    }
}

/// Removes the cgroup `name` an agent made below this process's cgroup (the agent's is
/// the same: it inherits it) in the v2 hierarchy or every v1 one.
pub fn remove_agent_cgroups(name: &str) {
    fn rmdir_tree(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let me = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for l in me.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let bases: Vec<&str> = if ctrls.is_empty() {
            // v2, or the v2 hierarchy of a hybrid host.
            vec!["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        } else {
            ctrls
                .split(',')
                .map(|c| c.strip_prefix("name=").unwrap_or(c))
                .collect()
        };
        for b in bases {
            // The v1 hierarchy of each controller (runc makes the containerd runtime's
            // cgroups in all of them).
            let b = if b.starts_with('/') {
                PathBuf::from(b)
            } else {
                Path::new("/sys/fs/cgroup").join(b)
            };
            let d = b.join(path).join(name);
            if d.is_dir() && d.join("cgroup.procs").exists() {
                // A killed pod's last task may still be exiting (rmdir gets EBUSY until
                // it is gone): retried for up to 5 s.
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                rmdir_tree(&d);
                while d.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                    rmdir_tree(&d);
                }
            }
        }
    }
}
