//! Pods: one worker task per pod bound to this node.
//!
//! The manager ([`watch_pods`]) follows the pods of this node (List + Watch with the
//! node-name filter through `kube-lite-client`'s watcher: resume from the last revision,
//! relist on "relist") and feeds each pod's latest object to its worker over a `watch`
//! channel; a pod that disappears (deleted with grace 0, evicted, unbound) gets
//! [`PodMsg::Gone`].
//!
//! A worker ([`PodWorker::run`]): IP from IPAM (a full subnet leaves the pod Pending with
//! reason "no free IP in 10.0.N.0/24" and retries), pod network (kube-lite-net), record in
//! the state dir, containers through the [`Runtime`], status to the apiserver, restarts per
//! restart_policy with back-off, and on deletion: SIGTERM, grace period, SIGKILL, network
//! + IP + state released, THEN `Delete` with grace 0.

use crate::image::Resolver;
use crate::runtime::{ContainerSpec, Handle, Runtime};
use crate::state::{now_ms, ContainerRecord, ExitInfo, PodRecord, StateDir};
use crate::status::{backoff, pod_status, CState, CView, RestartPolicy, BACKOFF_RESET_AFTER};
use futures::StreamExt;
use kube_lite_client::{watcher, Clients, Event, WatchParams};
use kube_lite_net::ipam::{Ipam, IpamError};
use kube_lite_net::{host_if_name, netns_path, pod_netns_name, Ipv4Net, NodeNet, PodNet};
use kube_lite_proto::v1::{DeleteRequest, ObjectMeta, Pod, PodStatus};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Code;
use tracing::{info, warn};

/// Everything pod workers share.
pub struct Node {
    pub name: String,
    pub address: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub netns_prefix: String,
    pub mtu: u32,
    pub clients: Clients,
    pub net: Arc<NodeNet>,
    pub ipam: Mutex<Ipam>,
    pub state: StateDir,
    pub runtime: Arc<dyn Runtime>,
    pub resolver: Resolver,
    /// Live workers by pod uid.
    workers: Mutex<HashMap<String, watch::Sender<PodMsg>>>,
    /// Uids whose worker finished (torn down): never start them again.
    finished: Mutex<HashSet<String>>,
    /// Bounds concurrent pod network set-ups/teardowns: hundreds at once overrun the
    /// netlink socket's receive buffer (a lost reply would hang a worker).
    net_ops: tokio::sync::Semaphore,
}

/// Longest a pod network set-up or teardown may take before it is retried/reported.
const NET_OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pod network operations running at once.
const NET_OP_CONCURRENCY: usize = 4;

/// Grace of a pod that vanished from the apiserver without a graceful deletion (force
/// delete, eviction): a short one, as the kubelet's minimum, not the spec's 30 s.
const GONE_GRACE: Duration = Duration::from_secs(2);

/// The grace for stopping a pod that is gone: the one of its graceful deletion if it
/// was terminating, else [`GONE_GRACE`] (or the spec's, when shorter).
fn gone_grace(pod: &Pod) -> Duration {
    let m = meta(pod);
    if m.deletion_timestamp != 0 && m.deletion_grace_period_seconds > 0 {
        return Duration::from_secs(m.deletion_grace_period_seconds as u64);
    }
    let spec = pod
        .spec
        .as_ref()
        .map_or(30, |s| s.termination_grace_period_seconds);
    GONE_GRACE.min(Duration::from_secs(spec.max(0) as u64))
}

#[derive(Debug, Clone)]
pub enum PodMsg {
    Pod(Box<Pod>),
    Gone,
}

fn meta(p: &Pod) -> ObjectMeta {
    p.metadata.clone().unwrap_or_default()
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        address: Ipv4Addr,
        subnet: Ipv4Net,
        netns_prefix: String,
        mtu: u32,
        clients: Clients,
        net: Arc<NodeNet>,
        ipam: Ipam,
        state: StateDir,
        runtime: Arc<dyn Runtime>,
        resolver: Resolver,
    ) -> Arc<Node> {
        Arc::new(Node {
            name,
            address,
            subnet,
            netns_prefix,
            mtu,
            clients,
            net,
            ipam: Mutex::new(ipam),
            state,
            runtime,
            resolver,
            workers: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
            net_ops: tokio::sync::Semaphore::new(NET_OP_CONCURRENCY),
        })
    }

    pub fn netns_for(&self, uid: &str) -> String {
        pod_netns_name(&self.netns_prefix, uid)
    }

    /// Hands `pod` to its worker, starting one if needed.
    fn dispatch(self: &Arc<Self>, pod: Pod, adopted: Option<PodRecord>) {
        let uid = meta(&pod).uid;
        if uid.is_empty() {
            return;
        }
        let mut workers = self.workers.lock().unwrap();
        if let Some(tx) = workers.get(&uid) {
            let _ = tx.send(PodMsg::Pod(Box::new(pod)));
            return;
        }
        if self.finished.lock().unwrap().contains(&uid) {
            return;
        }
        let (tx, rx) = watch::channel(PodMsg::Pod(Box::new(pod)));
        workers.insert(uid.clone(), tx);
        let w = PodWorker::new(self.clone(), uid, rx, adopted);
        tokio::spawn(w.run());
    }

    fn gone(&self, uid: &str) {
        if let Some(tx) = self.workers.lock().unwrap().get(uid) {
            let _ = tx.send(PodMsg::Gone);
        }
    }

    /// A worker ended. `deleted`: the pod had a deletion_timestamp (it never comes
    /// back: ignore its late events). Otherwise (gone from the watch) the pod may have
    /// come back meanwhile (e.g. bound here again after an eviction): `latest` is the
    /// newest message the worker had not acted on.
    fn worker_done(self: &Arc<Self>, uid: &str, deleted: bool, latest: PodMsg) {
        self.workers.lock().unwrap().remove(uid);
        if deleted {
            self.finished.lock().unwrap().insert(uid.to_string());
            return;
        }
        if let PodMsg::Pod(p) = latest {
            if meta(&p).deletion_timestamp == 0 {
                info!(pod = %meta(&p).name, uid, "pod is back on this node; starting it again");
                self.dispatch(*p, None);
            }
        }
    }

    /// Number of live pod workers (for tests and logs).
    pub fn worker_count(&self) -> usize {
        self.workers.lock().unwrap().len()
    }

    /// Kills whatever still runs of a record and releases its network, IP and state.
    pub async fn teardown_record(&self, rec: &PodRecord) {
        for c in &rec.containers {
            if let (Some(pid), Some(start)) = (c.pid, c.proc_start) {
                let h = Handle {
                    pid,
                    proc_start: start,
                    started_at: c.started_at,
                };
                if self.runtime.alive(&h) {
                    let _ = self.runtime.kill(&h);
                }
            }
        }
        self.release(&rec.uid, &rec.netns, &rec.host_if).await;
    }

    async fn release(&self, uid: &str, netns: &str, host_if: &str) {
        self.release_net(uid, netns, host_if).await;
        if let Err(e) = self.state.remove(uid) {
            warn!(uid, "removing pod state: {e}");
        }
    }

    /// Network namespace, veth and IP (not the state dir).
    async fn release_net(&self, uid: &str, netns: &str, host_if: &str) {
        let mut delay = Duration::from_millis(200);
        for attempt in 0..5 {
            let r = {
                let _permit = self.net_ops.acquire().await;
                tokio::time::timeout(NET_OP_TIMEOUT, self.net.delete_pod_net(netns, host_if)).await
            };
            match r {
                Ok(Ok(())) => break,
                Ok(Err(e)) => warn!(uid, netns, attempt, "deleting pod network: {e}"),
                Err(_) => warn!(uid, netns, attempt, "deleting pod network: timed out"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        if let Err(e) = self.ipam.lock().unwrap().release(uid) {
            warn!(uid, "releasing IP: {e}");
        }
    }
}

/// Restart safety, before the pod watch starts: adopt the records of pods the apiserver
/// still binds here, tear down the others, drop IPs nobody owns, and delete pod
/// netns/veths with our names that no record owns.
pub async fn recover(node: &Arc<Node>) {
    let (records, bad) = node.state.load_all();
    for b in bad {
        warn!(dir = %b, "unreadable pod record; removing it");
        let _ = node.state.remove(&b);
    }
    // The pods the apiserver has for us (retry until it answers).
    let pods = loop {
        let req = kube_lite_proto::v1::ListRequest {
            node_name: node.name.clone(),
            ..Default::default()
        };
        match node.clients.pods.clone().list(req).await {
            Ok(l) => break l.into_inner().items,
            Err(e) => {
                warn!("listing pods for recovery: {}", e.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    info!(
        records = records.len(),
        pods = pods.len(),
        "recovering pods from the state dir"
    );
    let by_uid: HashMap<String, Pod> = pods.into_iter().map(|p| (meta(&p).uid, p)).collect();
    let mut kept = HashSet::new();
    for rec in records {
        match by_uid.get(&rec.uid) {
            Some(p) => {
                info!(pod = %rec.name, uid = %rec.uid, ip = ?rec.ip, "adopting pod");
                kept.insert(rec.uid.clone());
                if let Some(ip) = rec.ip {
                    // Before any new pod can allocate (IPAM may have lost it).
                    let _ = node.ipam.lock().unwrap().assign(&rec.uid, ip);
                }
                node.dispatch(p.clone(), Some(rec));
            }
            None => {
                info!(pod = %rec.name, uid = %rec.uid, "pod deleted while the agent was down; cleaning up");
                node.teardown_record(&rec).await;
            }
        }
    }
    let released = node.ipam.lock().unwrap().retain(|uid| kept.contains(uid));
    match released {
        Ok(r) if !r.is_empty() => info!(?r, "released IPs of pods without a record"),
        Ok(_) => {}
        Err(e) => warn!("IPAM cleanup: {e}"),
    }
    sweep_orphans(node, &kept).await;
}

/// `<prefix>-<uuid>` of ours whose uid is not kept.
async fn sweep_orphans(node: &Arc<Node>, kept: &HashSet<String>) {
    let prefix = kube_lite_net::pod_netns_prefix(&node.netns_prefix);
    let owned_ifs: HashSet<String> = kept.iter().map(|u| host_if_name(u)).collect();
    match NodeNet::list_netns(&prefix) {
        Ok(list) => {
            for ns in list {
                let uid = &ns[prefix.len()..];
                // Only names that look like ours: a uuid after the prefix.
                if uid.len() != 36 || !uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    continue;
                }
                if !kept.contains(uid) {
                    info!(netns = %ns, "removing orphan pod network namespace");
                    if let Err(e) = node.net.delete_pod_net(&ns, &host_if_name(uid)).await {
                        warn!(netns = %ns, "removing orphan: {e}");
                    }
                }
            }
        }
        Err(e) => warn!("listing network namespaces: {e}"),
    }
    match node
        .net
        .list_host_ifs(kube_lite_net::names::HOST_IF_PREFIX)
        .await
    {
        Ok(ifs) => {
            for i in ifs {
                if !owned_ifs.contains(&i) {
                    info!(host_if = %i, "removing orphan veth");
                    let dummy = format!("{}-orphan", node.netns_prefix);
                    if let Err(e) = node.net.delete_pod_net(&dummy, &i).await {
                        warn!(host_if = %i, "removing orphan veth: {e}");
                    }
                }
            }
        }
        Err(e) => warn!("listing veths: {e}"),
    }
}

/// Follows this node's pods forever.
pub async fn watch_pods(node: Arc<Node>) {
    let params = WatchParams {
        node_name: node.name.clone(),
        ..Default::default()
    };
    let mut w = Box::pin(watcher(node.clients.pods.clone(), params));
    while let Some(ev) = w.next().await {
        match ev {
            Ok(Event::Restarted(items, rev)) => {
                let uids: HashSet<String> = items.iter().map(|p| meta(p).uid).collect();
                let live: Vec<String> = node.workers.lock().unwrap().keys().cloned().collect();
                for uid in live {
                    if !uids.contains(&uid) {
                        node.gone(&uid);
                    }
                }
                node.finished.lock().unwrap().retain(|u| uids.contains(u));
                tracing::debug!(pods = items.len(), rev, "pod list");
                for p in items {
                    node.dispatch(p, None);
                }
            }
            Ok(Event::Applied(p)) => node.dispatch(p, None),
            Ok(Event::Deleted(p)) => {
                let uid = meta(&p).uid;
                node.gone(&uid);
                node.finished.lock().unwrap().remove(&uid);
            }
            Ok(Event::Bookmark(_)) => {}
            Err(e) => warn!("pod watch: {e}"),
        }
    }
}

/// One container's live state in a worker.
struct Ctr {
    spec: kube_lite_proto::v1::Container,
    view: CView,
    handle: Option<Handle>,
    next_start: Option<Instant>,
    streak: u32,
}

struct PodWorker {
    node: Arc<Node>,
    uid: String,
    rx: watch::Receiver<PodMsg>,
    pod: Pod,
    rec: PodRecord,
    adopted: bool,
    ctrs: Vec<Ctr>,
    policy: RestartPolicy,
    exits_tx: mpsc::UnboundedSender<(usize, i32, ExitInfo)>,
    exits_rx: mpsc::UnboundedReceiver<(usize, i32, ExitInfo)>,
    /// Reason shown on the pod before its network exists (e.g. no free IP).
    pod_reason: Option<(String, String)>,
    last_sent: Option<PodStatus>,
    status_retry: Option<Instant>,
    net_ready: bool,
}

enum Stop {
    /// deletion_timestamp set: stop, release, then Delete(grace 0).
    Deleted { grace: Duration },
    /// Gone from the watch: stop and release, no API call.
    Gone { grace: Duration },
}

impl PodWorker {
    fn new(
        node: Arc<Node>,
        uid: String,
        rx: watch::Receiver<PodMsg>,
        adopted: Option<PodRecord>,
    ) -> PodWorker {
        let pod = match &*rx.borrow() {
            PodMsg::Pod(p) => (**p).clone(),
            PodMsg::Gone => Pod::default(),
        };
        let m = meta(&pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(&spec.restart_policy);
        let is_adopted = adopted.is_some();
        let rec = adopted.unwrap_or_else(|| PodRecord {
            uid: uid.clone(),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            ip: None,
            netns: node.netns_for(&uid),
            host_if: host_if_name(&uid),
            start_time: 0,
            containers: Vec::new(),
            network_released: false,
        });
        let ctrs = spec
            .containers
            .iter()
            .map(|c| {
                let r = rec.containers.iter().find(|r| r.name == c.name);
                Ctr {
                    spec: c.clone(),
                    view: CView {
                        name: c.name.clone(),
                        state: CState::Waiting {
                            reason: "ContainerCreating".into(),
                            message: String::new(),
                        },
                        restart_count: r.map(|r| r.restart_count).unwrap_or(0),
                        ever_started: r.is_some_and(|r| r.started_at > 0),
                    },
                    handle: None,
                    next_start: None,
                    streak: 0,
                }
            })
            .collect();
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        PodWorker {
            node,
            uid,
            rx,
            pod,
            rec,
            adopted: is_adopted,
            ctrs,
            policy,
            exits_tx,
            exits_rx,
            pod_reason: None,
            last_sent: None,
            status_retry: None,
            net_ready: false,
        }
    }

    fn name(&self) -> String {
        meta(&self.pod).name
    }

    fn grace(&self) -> Duration {
        let m = meta(&self.pod);
        let secs = if m.deletion_grace_period_seconds > 0 {
            m.deletion_grace_period_seconds
        } else {
            self.pod
                .spec
                .as_ref()
                .map(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
        };
        Duration::from_secs(secs.max(0) as u64)
    }

    /// Applies the newest message; Some(stop) when the pod must go.
    fn take_msg(&mut self) -> Option<Stop> {
        let msg = self.rx.borrow_and_update().clone();
        match msg {
            PodMsg::Gone => Some(Stop::Gone {
                grace: gone_grace(&self.pod),
            }),
            PodMsg::Pod(p) => {
                self.pod = *p;
                if meta(&self.pod).deletion_timestamp != 0 {
                    Some(Stop::Deleted {
                        grace: self.grace(),
                    })
                } else {
                    None
                }
            }
        }
    }

    async fn run(mut self) {
        let name = self.name();
        let span = tracing::info_span!("pod", pod = %name, uid = %self.uid);
        let _ = span; // fields are repeated on each event below for plain-text logs
        let stop = self.run_until_stop().await;
        let deleted = matches!(stop, Stop::Deleted { .. });
        self.stop(stop).await;
        let latest = if self.rx.has_changed().unwrap_or(false) {
            self.rx.borrow_and_update().clone()
        } else {
            PodMsg::Gone
        };
        self.node.worker_done(&self.uid, deleted, latest);
    }

    /// Sets up and runs the pod until it must stop.
    async fn run_until_stop(&mut self) -> Stop {
        if let Some(s) = self.take_msg() {
            return s;
        }
        // A pod that already finished (e.g. state lost) is not started again.
        let phase = self
            .pod
            .status
            .as_ref()
            .map(|s| s.phase.clone())
            .unwrap_or_default();
        if !self.adopted && (phase == "Succeeded" || phase == "Failed") {
            loop {
                if self.rx.changed().await.is_err() {
                    return Stop::Gone {
                        grace: self.grace(),
                    };
                }
                if let Some(s) = self.take_msg() {
                    return s;
                }
            }
        }
        // Network: IP then netns + veth. Retries until it works or the pod goes.
        // (Not for an adopted pod that had finished: its network is released.)
        let mut delay = Duration::from_millis(500);
        while !self.rec.network_released {
            match self.setup_network().await {
                Ok(()) => break,
                Err((reason, message)) => {
                    warn!(pod = %self.name(), uid = %self.uid, "{message}");
                    self.pod_reason = Some((reason, message));
                    self.push_status().await;
                    tokio::select! {
                        r = self.rx.changed() => {
                            if r.is_err() { return Stop::Gone { grace: self.grace() }; }
                            if let Some(s) = self.take_msg() { return s; }
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.pod_reason = None;
        self.net_ready = true;
        self.adopt_or_schedule();
        self.save_record();
        loop {
            self.start_due().await;
            self.release_if_finished().await;
            self.push_status().await;
            let next = self
                .ctrs
                .iter()
                .filter_map(|c| c.next_start)
                .chain(self.status_retry)
                .min();
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() { return Stop::Gone { grace: self.grace() }; }
                    if let Some(s) = self.take_msg() { return s; }
                }
                Some((i, pid, exit)) = self.exits_rx.recv() => self.on_exit(i, pid, exit, true),
                _ = sleep_until_opt(next) => {}
            }
        }
    }

    /// A pod that finished for good (Succeeded/Failed) gives back its network and IP
    /// at once, as Kubernetes does; status and logs stay until it is deleted.
    async fn release_if_finished(&mut self) {
        let views: Vec<CView> = self.ctrs.iter().map(|c| c.view.clone()).collect();
        let ph = crate::status::phase(&views);
        if self.rec.network_released || !(ph == "Succeeded" || ph == "Failed") {
            return;
        }
        self.push_status().await;
        self.node
            .release_net(&self.uid, &self.rec.netns, &self.rec.host_if)
            .await;
        self.rec.network_released = true;
        self.save_record();
        info!(pod = %self.name(), uid = %self.uid, phase = ph, "pod finished; network and IP released");
    }

    async fn setup_network(&mut self) -> Result<(), (String, String)> {
        // An adopted record keeps its IP if IPAM agrees (it may not after a subnet
        // change or a lost IPAM file).
        if let Some(ip) = self.rec.ip {
            let mut ipam = self.node.ipam.lock().unwrap();
            if ipam.get(&self.uid) != Some(ip) && ipam.assign(&self.uid, ip).is_err() {
                warn!(pod = %meta(&self.pod).name, uid = %self.uid, %ip, "recorded IP no longer valid; allocating a new one");
                self.rec.ip = None;
            }
        }
        let ip = match self.rec.ip {
            Some(ip) => ip,
            None => {
                let r = self.node.ipam.lock().unwrap().allocate(&self.uid);
                match r {
                    Ok(ip) => ip,
                    Err(e @ IpamError::NoFreeIp(_)) => {
                        let reason = e.to_string();
                        return Err((
                            reason.clone(),
                            format!(
                                "{reason}: waiting for a pod on node {} to release one",
                                self.node.name
                            ),
                        ));
                    }
                    Err(e) => return Err(("IPAMError".into(), e.to_string())),
                }
            }
        };
        self.rec.ip = Some(ip);
        let pn = PodNet {
            netns: self.rec.netns.clone(),
            host_if: self.rec.host_if.clone(),
            ip,
            subnet: self.node.subnet,
            gateway: kube_lite_net::ipam::gateway(self.node.subnet),
            mtu: self.node.mtu,
        };
        {
            let _permit = self.node.net_ops.acquire().await;
            match tokio::time::timeout(NET_OP_TIMEOUT, self.node.net.create_pod_net(&pn)).await {
                Ok(r) => r.map_err(|e| {
                    (
                        "NetworkSetupFailed".to_string(),
                        format!("pod network: {e}"),
                    )
                })?,
                Err(_) => {
                    return Err((
                        "NetworkSetupFailed".to_string(),
                        format!("pod network: no answer within {NET_OP_TIMEOUT:?}; retrying"),
                    ))
                }
            }
        }
        if self.rec.start_time == 0 {
            self.rec.start_time = now_ms();
        }
        info!(pod = %self.name(), uid = %self.uid, ip = %ip, netns = %self.rec.netns, "pod network ready");
        Ok(())
    }

    /// For an adopted record: keep live instances, account for ones that ended while
    /// we were down; everything else starts now.
    fn adopt_or_schedule(&mut self) {
        let now = Instant::now();
        for i in 0..self.ctrs.len() {
            let r = self
                .rec
                .containers
                .iter()
                .find(|r| r.name == self.ctrs[i].spec.name)
                .cloned();
            match r {
                Some(r) if r.done => {
                    let exit = r.last_exit.clone().unwrap_or(ExitInfo {
                        exit_code: 0,
                        signal: None,
                        reason: "Completed".into(),
                        message: String::new(),
                        finished_at: 0,
                    });
                    self.ctrs[i].view.state = CState::Terminated {
                        exit,
                        started_at: r.started_at,
                        done: true,
                    };
                }
                Some(r) if r.pid.is_some() && r.proc_start.is_some() => {
                    let (pid, start, started_at) =
                        (r.pid.unwrap_or(0), r.proc_start.unwrap_or(0), r.started_at);
                    let h = Handle {
                        pid,
                        proc_start: start,
                        started_at,
                    };
                    if self.node.runtime.adopt(&h) {
                        info!(pod = %self.name(), uid = %self.uid, container = %r.name, pid, "adopted running container");
                        self.watch_instance(i, h);
                    } else {
                        // Ended while the agent was away.
                        let exit =
                            self.node
                                .state
                                .read_exit(&self.uid, &r.name)
                                .unwrap_or(ExitInfo {
                                    exit_code: 137,
                                    signal: None,
                                    reason: "Error".into(),
                                    message: "ended while the agent was down".into(),
                                    finished_at: now_ms(),
                                });
                        self.ctrs[i].handle = Some(h);
                        self.ctrs[i].view.state = CState::Running { started_at, pid };
                        self.on_exit(i, pid, exit, false);
                    }
                }
                _ => self.ctrs[i].next_start = Some(now),
            }
        }
    }

    fn watch_instance(&mut self, i: usize, h: Handle) {
        let c = &mut self.ctrs[i];
        c.handle = Some(h);
        c.view.state = CState::Running {
            started_at: h.started_at,
            pid: h.pid,
        };
        c.view.ever_started = true;
        let fut = self.node.runtime.wait(&self.uid, &c.spec.name, h);
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let exit = fut.await;
            let _ = tx.send((i, h.pid, exit));
        });
    }

    async fn start_due(&mut self) {
        let now = Instant::now();
        let mut changed = false;
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].next_start.is_some_and(|t| t <= now) {
                self.ctrs[i].next_start = None;
                self.start(i);
                changed = true;
            }
        }
        if changed {
            self.save_record();
        }
    }

    fn start(&mut self, i: usize) {
        let spec = self.ctrs[i].spec.clone();
        let (program, args) = match self
            .node
            .resolver
            .argv(&spec.image, &spec.command, &spec.args)
        {
            Ok(x) => x,
            Err(e) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{e}");
                let c = &mut self.ctrs[i];
                if self.policy == RestartPolicy::Never {
                    c.view.state = CState::Terminated {
                        exit: ExitInfo {
                            exit_code: 127,
                            signal: None,
                            reason: "ImageNotFound".into(),
                            message: e.to_string(),
                            finished_at: now_ms(),
                        },
                        started_at: 0,
                        done: true,
                    };
                } else {
                    let d = backoff(c.streak);
                    c.streak += 1;
                    c.next_start = Some(Instant::now() + d);
                    c.view.state = CState::Waiting {
                        reason: "ImageNotFound".into(),
                        message: e.to_string(),
                    };
                }
                return;
            }
        };
        let was_started = self.ctrs[i].view.ever_started;
        let cs = ContainerSpec {
            pod_uid: self.uid.clone(),
            hostname: self.name(),
            container: spec.name.clone(),
            program,
            args,
            env: spec
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            netns_path: Some(netns_path(&self.rec.netns)),
        };
        match self.node.runtime.start(&cs) {
            Ok(h) => {
                if was_started {
                    self.ctrs[i].view.restart_count += 1;
                }
                info!(pod = %self.name(), uid = %self.uid, container = %spec.name, pid = h.pid, ip = ?self.rec.ip, "container started");
                self.watch_instance(i, h);
            }
            Err(e) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{e}");
                let c = &mut self.ctrs[i];
                let d = backoff(c.streak);
                c.streak += 1;
                c.next_start = Some(Instant::now() + d);
                c.view.state = CState::Waiting {
                    reason: "StartError".into(),
                    message: e.to_string(),
                };
            }
        }
    }

    /// A container instance ended; `live` = while running normally (restarts allowed).
    fn on_exit(&mut self, i: usize, pid: i32, exit: ExitInfo, live: bool) {
        let Some(c) = self.ctrs.get_mut(i) else {
            return;
        };
        if c.handle.map(|h| h.pid) != Some(pid) {
            return; // stale
        }
        let h = c.handle.take().unwrap();
        info!(pod = %self.pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""), uid = %self.uid,
              container = %c.spec.name, exit_code = exit.exit_code, reason = %exit.reason, "container exited");
        let restart = self.policy.restarts(exit.exit_code);
        let ran = Duration::from_millis((exit.finished_at - h.started_at).max(0) as u64);
        if ran >= BACKOFF_RESET_AFTER {
            c.streak = 0;
        }
        if restart {
            let d = backoff(c.streak);
            c.streak += 1;
            c.next_start = Some(Instant::now() + d);
            c.view.state = CState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting container {} (last exit code {}{})",
                    d.as_secs(),
                    c.spec.name,
                    exit.exit_code,
                    if exit.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", exit.message)
                    }
                ),
            };
        } else {
            c.view.state = CState::Terminated {
                exit: exit.clone(),
                started_at: h.started_at,
                done: true,
            };
        }
        let _ = live;
        self.record_exit(i, exit, !restart);
        self.save_record();
    }

    fn record_exit(&mut self, i: usize, exit: ExitInfo, done: bool) {
        let name = self.ctrs[i].spec.name.clone();
        if let Some(r) = self.rec.containers.iter_mut().find(|r| r.name == name) {
            r.pid = None;
            r.proc_start = None;
            r.last_exit = Some(exit);
            r.done = done;
        }
    }

    /// Rebuilds the container part of the record from the live state and saves it.
    fn save_record(&mut self) {
        let old = std::mem::take(&mut self.rec.containers);
        self.rec.containers = self
            .ctrs
            .iter()
            .map(|c| {
                let prev = old.iter().find(|r| r.name == c.spec.name);
                ContainerRecord {
                    name: c.spec.name.clone(),
                    pid: c.handle.map(|h| h.pid),
                    proc_start: c.handle.map(|h| h.proc_start),
                    started_at: match &c.view.state {
                        CState::Running { started_at, .. } => *started_at,
                        CState::Terminated { started_at, .. } => *started_at,
                        _ => prev.map(|p| p.started_at).unwrap_or(0),
                    },
                    restart_count: c.view.restart_count,
                    last_exit: prev.and_then(|p| p.last_exit.clone()),
                    done: matches!(c.view.state, CState::Terminated { done: true, .. }),
                }
            })
            .collect();
        if let Err(e) = self.node.state.save(&self.rec) {
            warn!(pod = %self.name(), uid = %self.uid, "saving pod record: {e}");
        }
    }

    fn status(&self) -> PodStatus {
        let views: Vec<CView> = self.ctrs.iter().map(|c| c.view.clone()).collect();
        let ip = if self.net_ready { self.rec.ip } else { None };
        let start = if self.net_ready {
            self.rec.start_time
        } else {
            0
        };
        let host_ip = self.node.address.to_string();
        pod_status(
            &views,
            ip,
            &host_ip,
            start,
            self.pod_reason
                .as_ref()
                .map(|(r, m)| (r.as_str(), m.as_str())),
        )
    }

    async fn push_status(&mut self) {
        let st = self.status();
        if self.last_sent.as_ref() == Some(&st) && self.status_retry.is_none() {
            return;
        }
        // The apiserver may hold our status already (adoption): skip if equal.
        if self.last_sent.is_none() && self.pod.status.as_ref() == Some(&st) {
            self.last_sent = Some(st);
            return;
        }
        let m = meta(&self.pod);
        let pod = Pod {
            metadata: Some(ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                ..Default::default()
            }),
            spec: None,
            status: Some(st.clone()),
        };
        match self.node.clients.pods.clone().update_status(pod).await {
            Ok(_) => {
                tracing::debug!(pod = %m.name, uid = %self.uid, phase = %st.phase, "status updated");
                self.last_sent = Some(st);
                self.status_retry = None;
            }
            Err(e) if e.code() == Code::NotFound => {
                self.last_sent = Some(st);
                self.status_retry = None;
            }
            Err(e) => {
                warn!(pod = %m.name, uid = %self.uid, "updating status: {}", e.message());
                self.status_retry = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// SIGTERM, grace, SIGKILL; network, IP and state released; then (for a graceful
    /// delete) the final Delete with grace 0.
    async fn stop(&mut self, stop: Stop) {
        let (grace, api_delete) = match stop {
            Stop::Deleted { grace } => (grace, true),
            Stop::Gone { grace } => (grace, false),
        };
        let name = self.name();
        info!(pod = %name, uid = %self.uid, grace_s = grace.as_secs(), "stopping pod");
        // Live instances: those we watch, plus those of an adopted record the worker
        // never got to (a pod deleted while the agent was down).
        let mut live: Vec<Handle> = self.ctrs.iter().filter_map(|c| c.handle).collect();
        for r in &self.rec.containers {
            if let (Some(pid), Some(start)) = (r.pid, r.proc_start) {
                if !live.iter().any(|h| h.pid == pid) {
                    live.push(Handle {
                        pid,
                        proc_start: start,
                        started_at: r.started_at,
                    });
                }
            }
        }
        live.retain(|h| self.node.runtime.alive(h));
        for h in &live {
            if let Err(e) = self.node.runtime.terminate(h) {
                warn!(pod = %name, uid = %self.uid, "SIGTERM: {e}");
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            live.retain(|h| self.node.runtime.alive(h));
            if live.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                Some((i, _pid, exit)) = self.exits_rx.recv() => {
                    if let Some(c) = self.ctrs.get(i) {
                        info!(pod = %name, uid = %self.uid, container = %c.spec.name, exit_code = exit.exit_code, "container stopped");
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        if !live.is_empty() {
            info!(pod = %name, uid = %self.uid, "grace period over; killing");
            for h in &live {
                let _ = self.node.runtime.kill(h);
            }
            // The kill is immediate; wait briefly for the processes to be gone.
            let until = Instant::now() + Duration::from_secs(5);
            while live.iter().any(|h| self.node.runtime.alive(h)) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if self.rec.ip.is_some() || self.net_ready {
            self.node
                .release(&self.uid, &self.rec.netns, &self.rec.host_if)
                .await;
        } else {
            // Nothing but maybe an IPAM entry and a state dir.
            let _ = self.node.ipam.lock().unwrap().release(&self.uid);
            let _ = self.node.state.remove(&self.uid);
        }
        info!(pod = %name, uid = %self.uid, "pod resources released");
        if api_delete {
            self.final_delete().await;
        }
    }

    /// `Delete` with grace 0 of exactly this pod (same uid, resource_version
    /// precondition), so a new pod of the same name is never hit.
    async fn final_delete(&self) {
        let m = meta(&self.pod);
        let mut api = self.node.clients.pods.clone();
        // Until it is gone: a pod left Terminating would never go otherwise.
        let mut delay = Duration::from_millis(200);
        for attempt in 0u64.. {
            let cur = match api
                .get(kube_lite_proto::v1::GetRequest {
                    name: m.name.clone(),
                    namespace: m.namespace.clone(),
                })
                .await
            {
                Ok(p) => p.into_inner(),
                Err(e) if e.code() == Code::NotFound => return,
                Err(e) => {
                    warn!(pod = %m.name, uid = %self.uid, attempt, "final delete: {}", e.message());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let cm = meta(&cur);
            if cm.uid != self.uid {
                return;
            }
            let req = DeleteRequest {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                resource_version: cm.resource_version,
                grace_period_seconds: 0,
            };
            match api.delete(req).await {
                Ok(_) => {
                    info!(pod = %m.name, uid = %self.uid, "pod deleted");
                    return;
                }
                Err(e) if e.code() == Code::NotFound => return,
                Err(e) if e.code() == Code::Aborted => continue,
                Err(e) => {
                    warn!(pod = %m.name, uid = %self.uid, attempt, "final delete: {}", e.message());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::PodSpec;

    fn pod(deletion_ts: i64, deletion_grace: i64, spec_grace: i64) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                deletion_timestamp: deletion_ts,
                deletion_grace_period_seconds: deletion_grace,
                ..Default::default()
            }),
            spec: Some(PodSpec {
                termination_grace_period_seconds: spec_grace,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn gone_pods_stop_with_a_short_grace_unless_terminating() {
        // Force-deleted / evicted: not the spec's 30 s.
        assert_eq!(gone_grace(&pod(0, 0, 30)), GONE_GRACE);
        assert_eq!(gone_grace(&pod(0, 0, 0)), Duration::ZERO);
        // Graceful deletion in progress: its grace.
        assert_eq!(gone_grace(&pod(1, 10, 30)), Duration::from_secs(10));
    }
}
