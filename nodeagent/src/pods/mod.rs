//! Pods: one worker task per pod bound to this node.
//!
//! The manager ([`watch_pods`]) follows the pods of this node (List + Watch with the
//! node-name filter through `kube-lite-client`'s watcher: resume from the last revision,
//! relist on "relist") and feeds each pod's latest object to its worker over a `watch`
//! channel; a pod that disappears (deleted with grace 0, evicted, unbound) gets
//! [`PodMsg::Gone`].
//!
//! A worker (`PodWorker::run`): IP from IPAM (a full subnet leaves the pod Pending with
//! reason "no free IP in 10.0.N.0/24" and retries), pod network (kube-lite-net), record in
//! the state dir, containers through the [`Runtime`], status to the apiserver, restarts per
//! restart_policy with back-off, and on deletion: SIGTERM, grace period, SIGKILL, network
//! + IP + state released, THEN `Delete` with grace 0.
//!
//! Layout: [`machine`] decides (pure, unit-tested); this module executes, through the
//! small traits of [`ports`] and [`Runtime`] (fakes in `fakes`, for the executor's
//! unit tests in `tests`).

pub mod env;
pub mod lifecycle;
pub mod machine;
pub mod ports;
pub mod probe;
pub mod prober;
pub mod sources;
pub mod termination;
pub mod volumes;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

use crate::image::Resolver;
use crate::runtime::{ContainerSpec, Handle, Runtime};
use crate::state::{ExitInfo, PodRecord};
use futures::StreamExt;
use kube_lite_client::{watcher, Clients, Event, WatchParams};
use kube_lite_core::time::now_ms;
use kube_lite_core::Resource;
use kube_lite_net::ipam::Ipam;
use kube_lite_net::{host_if_name, netns_path, pod_netns_name, Ipv4Net, PodNet};
use kube_lite_proto::v1::{DeleteRequest, GetRequest, ObjectMeta, Pod};
pub use machine::PodMsg;
use machine::{
    ip_failure, network_failure, plan_recovery, reconcile_instances, Observed, PodMachine,
    ProbeAction, ProbeJob, Recovery, Stop,
};
use ports::{PodApi, PodNetwork, StateStore};
use prober::Prober;
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
    pub api: Arc<dyn PodApi>,
    pub net: Arc<dyn PodNetwork>,
    pub ipam: Mutex<Ipam>,
    pub state: Arc<dyn StateStore>,
    pub runtime: Arc<dyn Runtime>,
    pub resolver: Resolver,
    /// What pods' /etc/resolv.conf is made from (set once at start; unset: pods keep
    /// the node's file).
    pub dns: std::sync::OnceLock<PodDns>,
    /// Where pod volumes live (`<state dir>/volumes`; set once at start; unset: pods
    /// with volumes wait with a message saying so).
    pub volumes_root: std::sync::OnceLock<std::path::PathBuf>,
    /// Where the Events the agent writes go (set once at start; unset: not written).
    pub events: std::sync::OnceLock<crate::events::Recorder>,
    /// Live workers by pod uid.
    workers: Mutex<HashMap<String, watch::Sender<PodMsg>>>,
    /// Uids whose worker finished (torn down): never start them again.
    finished: Mutex<HashSet<String>>,
    /// Bounds concurrent pod network set-ups/teardowns: hundreds at once overrun the
    /// netlink socket's receive buffer (a lost reply would hang a worker).
    net_ops: tokio::sync::Semaphore,
}

/// The inputs of a pod's resolv.conf besides its own spec.
#[derive(Debug, Clone)]
pub struct PodDns {
    /// None: no cluster DNS (ClusterFirst falls back to Default).
    pub cluster_dns: Option<Ipv4Addr>,
    pub domain: String,
    /// The node's resolv.conf.
    pub node: crate::dns::resolv::ResolvConf,
}

/// Longest a pod network set-up or teardown may take before it is retried/reported.
const NET_OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pod network operations running at once.
const NET_OP_CONCURRENCY: usize = 4;

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        address: Ipv4Addr,
        subnet: Ipv4Net,
        netns_prefix: String,
        mtu: u32,
        api: Arc<dyn PodApi>,
        net: Arc<dyn PodNetwork>,
        ipam: Ipam,
        state: Arc<dyn StateStore>,
        runtime: Arc<dyn Runtime>,
        resolver: Resolver,
    ) -> Arc<Node> {
        Arc::new(Node {
            name,
            address,
            subnet,
            netns_prefix,
            mtu,
            api,
            net,
            ipam: Mutex::new(ipam),
            state,
            runtime,
            resolver,
            dns: std::sync::OnceLock::new(),
            volumes_root: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
            workers: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
            net_ops: tokio::sync::Semaphore::new(NET_OP_CONCURRENCY),
        })
    }

    /// Records an event about `pod` (`container` may be empty), if events are written.
    pub fn event(&self, pod: &Pod, container: &str, warning: bool, reason: &str, message: &str) {
        if let Some(r) = self.events.get() {
            if warning {
                r.warning(pod, container, reason, message);
            } else {
                r.normal(pod, container, reason, message);
            }
        }
    }

    pub fn netns_for(&self, uid: &str) -> String {
        pod_netns_name(&self.netns_prefix, uid)
    }

    /// Hands `pod` to its worker, starting one if needed.
    fn dispatch(self: &Arc<Self>, pod: Pod, adopted: Option<PodRecord>) {
        let uid = pod.uid().to_string();
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
            if p.meta().deletion_timestamp == 0 {
                info!(pod = %p.name(), uid, "pod is back on this node; starting it again");
                self.dispatch(*p, None);
            }
        }
    }

    /// Number of live pod workers (for tests and logs).
    pub fn worker_count(&self) -> usize {
        self.workers.lock().unwrap().len()
    }

    /// One event of the pod watch.
    pub fn on_event(self: &Arc<Self>, ev: Event<Pod>) {
        match ev {
            Event::Restarted(items, rev) => {
                let uids: HashSet<String> = items.iter().map(|p| p.uid().to_string()).collect();
                let live: Vec<String> = self.workers.lock().unwrap().keys().cloned().collect();
                for uid in live {
                    if !uids.contains(&uid) {
                        self.gone(&uid);
                    }
                }
                self.finished.lock().unwrap().retain(|u| uids.contains(u));
                tracing::debug!(pods = items.len(), rev, "pod list");
                for p in items {
                    self.dispatch(p, None);
                }
            }
            Event::Applied(p) => self.dispatch(p, None),
            Event::Deleted(p) => {
                let uid = p.uid().to_string();
                self.gone(&uid);
                self.finished.lock().unwrap().remove(&uid);
            }
            Event::Bookmark(_) => {}
        }
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
        self.runtime.release_pod(uid);
        if let Some(root) = self.volumes_root.get() {
            volumes::remove(root, uid);
        }
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
                tokio::time::timeout(NET_OP_TIMEOUT, self.net.delete(netns, host_if)).await
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
        match node.api.list_node_pods(&node.name).await {
            Ok(items) => break items,
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
    let plan = plan_recovery(records, pods);
    let kept_uids: HashSet<String> = plan
        .iter()
        .filter_map(|s| match s {
            Recovery::Adopt(r, _) => Some(r.uid.clone()),
            Recovery::TearDown(_) => None,
        })
        .collect();
    // Live instances by marker, recorded or not: those of pods not kept die now
    // (before their network goes); the others are reconciled with their records.
    let mut found: HashMap<String, Vec<(String, Handle)>> = HashMap::new();
    for inst in node.runtime.instances() {
        if kept_uids.contains(&inst.pod_uid) {
            found
                .entry(inst.pod_uid)
                .or_default()
                .push((inst.container, inst.handle));
        } else {
            info!(uid = %inst.pod_uid, container = %inst.container, pid = inst.handle.pid,
                  "killing container instance of a pod not on this node");
            let _ = node.runtime.kill(&inst.handle);
        }
    }
    let mut kept = HashSet::new();
    for step in plan {
        match step {
            Recovery::Adopt(mut rec, p) => {
                let live = found.remove(&rec.uid).unwrap_or_default();
                for h in reconcile_instances(&mut rec, &live) {
                    warn!(pod = %rec.name, uid = %rec.uid, pid = h.pid,
                          "killing a second instance of a container");
                    let _ = node.runtime.kill(&h);
                }
                info!(pod = %rec.name, uid = %rec.uid, ip = ?rec.ip, "adopting pod");
                kept.insert(rec.uid.clone());
                if let Some(ip) = rec.ip {
                    // Before any new pod can allocate (IPAM may have lost it).
                    let _ = node.ipam.lock().unwrap().assign(&rec.uid, ip);
                }
                node.dispatch(*p, Some(rec));
            }
            Recovery::TearDown(rec) => {
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
    node.runtime.sweep(&kept);
    if let Some(root) = node.volumes_root.get() {
        volumes::sweep(root, &kept);
    }
}

/// `<prefix>-<uuid>` of ours whose uid is not kept.
async fn sweep_orphans(node: &Arc<Node>, kept: &HashSet<String>) {
    let prefix = kube_lite_net::pod_netns_prefix(&node.netns_prefix);
    match node.net.list_netns(&prefix) {
        Ok(list) => {
            for (ns, uid) in machine::orphan_netns(&list, &prefix, kept) {
                info!(netns = %ns, "removing orphan pod network namespace");
                if let Err(e) = node.net.delete(ns, &host_if_name(uid)).await {
                    warn!(netns = %ns, "removing orphan: {e}");
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
            for i in machine::orphan_host_ifs(&ifs, kept) {
                info!(host_if = %i, "removing orphan veth");
                let dummy = format!("{}-orphan", node.netns_prefix);
                if let Err(e) = node.net.delete(&dummy, i).await {
                    warn!(host_if = %i, "removing orphan veth: {e}");
                }
            }
        }
        Err(e) => warn!("listing veths: {e}"),
    }
}

/// Follows this node's pods forever.
pub async fn watch_pods(node: Arc<Node>, clients: Clients) {
    let params = WatchParams {
        node_name: node.name.clone(),
        ..Default::default()
    };
    let mut w = Box::pin(watcher(clients.pods.clone(), params));
    while let Some(ev) = w.next().await {
        match ev {
            Ok(ev) => node.on_event(ev),
            Err(e) => warn!("pod watch: {e}"),
        }
    }
}

/// The executor of one pod's [`PodMachine`].
struct PodWorker {
    node: Arc<Node>,
    uid: String,
    rx: watch::Receiver<PodMsg>,
    m: PodMachine,
    exits_tx: mpsc::UnboundedSender<(usize, i32, ExitInfo)>,
    exits_rx: mpsc::UnboundedReceiver<(usize, i32, ExitInfo)>,
    probes_tx: mpsc::UnboundedSender<(ProbeJob, bool, String)>,
    probes_rx: mpsc::UnboundedReceiver<(ProbeJob, bool, String)>,
    /// Ends of preStop hooks run before a probe kill: (container, pid).
    hooks_tx: mpsc::UnboundedSender<(usize, i32)>,
    hooks_rx: mpsc::UnboundedReceiver<(usize, i32)>,
    prober: Arc<Prober>,
    /// The pod's ConfigMaps/Secrets and volumes (see [`volumes::WorkerVolumes`]).
    vols: volumes::WorkerVolumes,
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
        let is_adopted = adopted.is_some();
        let rec = adopted.unwrap_or_else(|| PodRecord {
            uid: uid.clone(),
            name: pod.name().to_string(),
            namespace: pod.namespace().to_string(),
            ip: None,
            netns: node.netns_for(&uid),
            host_if: host_if_name(&uid),
            start_time: 0,
            containers: Vec::new(),
            network_released: false,
        });
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probes_tx, probes_rx) = mpsc::unbounded_channel();
        let (hooks_tx, hooks_rx) = mpsc::unbounded_channel();
        let prober = Arc::new(Prober::new(netns_path(&rec.netns), node.runtime.clone()));
        PodWorker {
            probes_tx,
            probes_rx,
            hooks_tx,
            hooks_rx,
            prober,
            vols: volumes::WorkerVolumes::default(),
            m: PodMachine::new(uid.clone(), pod, rec, is_adopted),
            node,
            uid,
            rx,
            exits_tx,
            exits_rx,
        }
    }

    fn name(&self) -> String {
        self.m.name()
    }

    /// Applies the newest message; Some(stop) when the pod must go.
    fn take_msg(&mut self) -> Option<Stop> {
        let msg = self.rx.borrow_and_update().clone();
        self.m.on_msg(msg)
    }

    async fn run(mut self) {
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
        if self.m.finished_before_start() {
            loop {
                if self.rx.changed().await.is_err() {
                    return self.m.on_closed();
                }
                if let Some(s) = self.take_msg() {
                    return s;
                }
            }
        }
        // Network: IP then netns + veth. Retries until it works or the pod goes.
        // (Not for an adopted pod that had finished: its network is released.)
        let mut delay = Duration::from_millis(500);
        while !self.m.rec.network_released {
            match self.setup_network().await {
                Ok(()) => break,
                Err(why) => {
                    warn!(pod = %self.name(), uid = %self.uid, "{}", why.1);
                    self.m.network_failed(why);
                    self.push_status().await;
                    tokio::select! {
                        r = self.rx.changed() => {
                            if r.is_err() { return self.m.on_closed(); }
                            if let Some(s) = self.take_msg() { return s; }
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.m.network_ready();
        self.adopt_or_schedule();
        self.save_record();
        loop {
            self.sync_sources().await;
            self.m.hold_starts = self.vols.error.is_some() && volumes::has_volumes(&self.m.pod);
            self.start_due();
            self.run_probes();
            self.release_if_finished().await;
            self.push_status().await;
            let next = match (self.m.next_wake(), self.vols.next_sync) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() { return self.m.on_closed(); }
                    if let Some(s) = self.take_msg() { return s; }
                }
                Some((i, pid, exit)) = self.exits_rx.recv() => self.on_exit(i, pid, exit),
                Some((job, ok, msg)) = self.probes_rx.recv() => self.on_probe(job, ok, msg),
                Some((i, pid)) = self.hooks_rx.recv() => self.on_kill_hook_done(i, pid),
                _ = sleep_until_opt(next) => {}
            }
        }
    }

    /// A pod that finished for good (Succeeded/Failed) gives back its network and IP
    /// at once, as Kubernetes does; status and logs stay until it is deleted.
    async fn release_if_finished(&mut self) {
        let Some(ph) = self.m.finished_holding_network() else {
            return;
        };
        self.push_status().await;
        let (netns, host_if) = (self.m.rec.netns.clone(), self.m.rec.host_if.clone());
        self.node.release_net(&self.uid, &netns, &host_if).await;
        self.m.network_released();
        self.save_record();
        info!(pod = %self.name(), uid = %self.uid, phase = ph, "pod finished; network and IP released");
    }

    async fn setup_network(&mut self) -> Result<(), (String, String)> {
        // An adopted record keeps its IP if IPAM agrees (it may not after a subnet
        // change or a lost IPAM file).
        if let Some(ip) = self.m.rec.ip {
            let mut ipam = self.node.ipam.lock().unwrap();
            if ipam.get(&self.uid) != Some(ip) && ipam.assign(&self.uid, ip).is_err() {
                warn!(pod = %self.m.pod.name(), uid = %self.uid, %ip, "recorded IP no longer valid; allocating a new one");
                self.m.rec.ip = None;
            }
        }
        let ip = match self.m.rec.ip {
            Some(ip) => ip,
            None => {
                let r = self.node.ipam.lock().unwrap().allocate(&self.uid);
                r.map_err(|e| ip_failure(&e, &self.node.name))?
            }
        };
        self.m.rec.ip = Some(ip);
        let pn = PodNet {
            netns: self.m.rec.netns.clone(),
            host_if: self.m.rec.host_if.clone(),
            ip,
            subnet: self.node.subnet,
            gateway: kube_lite_net::ipam::gateway(self.node.subnet),
            mtu: self.node.mtu,
        };
        {
            let _permit = self.node.net_ops.acquire().await;
            match tokio::time::timeout(NET_OP_TIMEOUT, self.node.net.create(&pn)).await {
                Ok(r) => r.map_err(|e| network_failure(format!("pod network: {e}")))?,
                Err(_) => {
                    return Err(network_failure(format!(
                        "pod network: no answer within {NET_OP_TIMEOUT:?}; retrying"
                    )))
                }
            }
        }
        self.m.network_created(ip, now_ms());
        info!(pod = %self.name(), uid = %self.uid, ip = %ip, netns = %self.m.rec.netns, "pod network ready");
        Ok(())
    }

    /// For an adopted record: keep live instances, account for ones that ended while
    /// we were down; everything else starts now.
    fn adopt_or_schedule(&mut self) {
        let (runtime, state, uid) = (&self.node.runtime, &self.node.state, &self.uid);
        let pod = self.m.name();
        let specs: Vec<_> = self.m.ctrs.iter().map(|c| c.spec.clone()).collect();
        let follow = self
            .m
            .adopt_or_schedule(Instant::now(), now_ms(), |r, h| {
                if runtime.adopt(&h) {
                    info!(pod = %pod, uid = %uid, container = %r.name, pid = h.pid, "adopted running container");
                    Observed::Alive
                } else {
                    // Ended while the agent was away.
                    let exit = state
                        .read_exit(uid, &r.name)
                        .unwrap_or_else(|| PodMachine::lost_exit(now_ms()));
                    Observed::Ended(match specs.iter().find(|c| c.name == r.name) {
                        Some(c) => termination::enrich(state.as_ref(), uid, c, specs.len(), exit),
                        None => exit,
                    })
                }
            });
        for (i, h) in follow {
            self.follow(i, h);
        }
    }

    /// Forwards the end of instance `h` of container `i` to the worker loop.
    fn follow(&mut self, i: usize, h: Handle) {
        let fut = self
            .node
            .runtime
            .wait(&self.uid, &self.m.ctrs[i].spec.name, h);
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let exit = fut.await;
            let _ = tx.send((i, h.pid, exit));
        });
    }

    /// Starts the probe runs that are due, and SIGKILLs probe-killed instances whose
    /// grace is over.
    fn run_probes(&mut self) {
        let now = Instant::now();
        for h in self.m.due_kills(now) {
            info!(pod = %self.name(), uid = %self.uid, pid = h.pid, "grace period over; killing the container");
            let _ = self.node.runtime.kill(&h);
        }
        let Some(ip) = self.m.rec.ip else { return };
        for job in self.m.due_probes(now) {
            let (prober, tx) = (self.prober.clone(), self.probes_tx.clone());
            let ports = self.m.ctrs[job.ctr].spec.ports.clone();
            tokio::spawn(async move {
                let (ok, msg) = prober.run(&job, ip, &ports).await;
                let _ = tx.send((job, ok, msg));
            });
        }
    }

    /// A probe run ended. Every failure is a `Warning Unhealthy` event with the
    /// probe's output, as the kubelet's; a liveness/startup kill is a `Normal Killing`
    /// one, then the preStop hook (if any) and SIGTERM.
    fn on_probe(&mut self, job: ProbeJob, ok: bool, msg: String) {
        let c = &self.m.ctrs[job.ctr];
        let (was_ready, name) = (c.probes.ready(), c.spec.name.clone());
        let current = c.handle.is_some_and(|h| h.pid == job.handle.pid) && c.kill.is_none();
        if !ok {
            tracing::debug!(pod = %self.name(), container = %name, probe = job.kind.name(), "probe failed: {msg}");
            if current {
                let m = format!("{} probe failed: {msg}", job.kind.name());
                self.node.event(&self.m.pod, &name, true, "Unhealthy", &m);
            }
        }
        let action =
            self.m
                .probe_result(job.ctr, job.kind, job.handle.pid, ok, &msg, Instant::now());
        let now_ready = self.m.ctrs[job.ctr].probes.ready();
        if was_ready != now_ready {
            info!(pod = %self.name(), uid = %self.uid, container = %name, ready = now_ready,
                  probe = job.kind.name(), "container readiness changed{}",
                  if ok { String::new() } else { format!(": {msg}") });
        }
        if let ProbeAction::Kill {
            handle: h,
            pre_stop,
            grace,
            killing,
        } = action
        {
            warn!(pod = %self.name(), uid = %self.uid, container = %name, pid = h.pid,
                  reason = "Unhealthy", "{}", self.m.kill_message(job.ctr).unwrap_or_default());
            self.node
                .event(&self.m.pod, &name, false, "Killing", &killing);
            if pre_stop {
                self.kill_hook(job.ctr, h, grace);
            } else if let Err(e) = self.node.runtime.terminate(&h) {
                warn!(pod = %self.name(), uid = %self.uid, "SIGTERM: {e}");
            }
        }
    }

    /// Runs container `i`'s preStop hook before a probe kill of `h` (within `grace`);
    /// its end comes back to the worker loop ([`Self::on_kill_hook_done`]).
    fn kill_hook(&self, i: usize, h: Handle, grace: Duration) {
        let spec = &self.m.ctrs[i].spec;
        let Some(hook) = lifecycle::pre_stop(spec) else {
            return;
        };
        let job = lifecycle::job(i, h, hook, grace);
        let hook = hook.clone();
        let (prober, node, tx) = (
            self.prober.clone(),
            self.node.clone(),
            self.hooks_tx.clone(),
        );
        let ip = self.m.rec.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let (ports, pod, container) = (spec.ports.clone(), self.m.pod.clone(), spec.name.clone());
        tokio::spawn(async move {
            let (ok, msg) = prober.run(&job, ip, &ports).await;
            if !ok {
                pre_stop_failed(&node, &pod, &container, &hook, &msg);
            }
            let _ = tx.send((i, h.pid));
        });
    }

    /// The node evicts the pod (`message` says why): a `Warning Evicted` event, each
    /// running container killed (preStop first) with a `Normal Killing` event.
    fn evict(&mut self, message: String) {
        warn!(pod = %self.name(), uid = %self.uid, reason = "Evicted", "{message}");
        self.node.event(&self.m.pod, "", true, "Evicted", &message);
        for (i, h, hook) in self.m.evict(message, Instant::now()) {
            let name = self.m.ctrs[i].spec.name.clone();
            self.node.event(
                &self.m.pod,
                &name,
                false,
                "Killing",
                &format!("Stopping container {name}"),
            );
            if hook {
                self.kill_hook(i, h, machine::EVICTION_GRACE);
            } else if let Err(e) = self.node.runtime.terminate(&h) {
                warn!(pod = %self.name(), uid = %self.uid, "SIGTERM: {e}");
            }
        }
    }

    /// The preStop hook before a probe or eviction kill ended: SIGTERM now.
    fn on_kill_hook_done(&mut self, i: usize, pid: i32) {
        if let Some(h) = self.m.pre_stop_done(i, pid, Instant::now()) {
            if let Err(e) = self.node.runtime.terminate(&h) {
                warn!(pod = %self.name(), uid = %self.uid, "SIGTERM: {e}");
            }
        }
    }

    fn start_due(&mut self) {
        let due = self.m.due(Instant::now());
        for &i in &due {
            self.start(i);
        }
        if !due.is_empty() {
            self.save_record();
        }
    }

    fn start(&mut self, i: usize) {
        let spec = self.m.ctrs[i].spec.clone();
        let ip = self.m.rec.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let facts = env::PodFacts::of(&self.m.pod, &ip, &self.node.address.to_string());
        let all: Vec<&kube_lite_proto::v1::Container> =
            self.m.ctrs.iter().map(|c| &c.spec).collect();
        let envs = match env::build_env(&spec, &all, &facts, &self.vols.sources) {
            Ok(e) => e,
            Err(m) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{m}");
                self.m.config_error(i, m, Instant::now());
                return;
            }
        };
        let mounts = match self.container_mounts(&spec).and_then(|mut m| {
            let file = self.node.state.termination_log(&self.uid, &spec.name);
            m.extend(termination::prepare(file, &spec)?);
            Ok(m)
        }) {
            Ok(m) => m,
            Err(m) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{m}");
                self.m.config_error(i, m, Instant::now());
                return;
            }
        };
        let security = match crate::security::resolve(
            self.m
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref()),
            spec.security_context.as_ref(),
            &crate::security::PodName {
                name: &self.name(),
                namespace: self.m.pod.namespace(),
                uid: &self.uid,
            },
            &spec.name,
            self.node.runtime.uses_images(),
        ) {
            Ok(s) => s,
            Err(m) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{m}");
                self.m.config_error(i, m, Instant::now());
                return;
            }
        };
        let (command, cargs) = env::expand_argv(&spec, &envs);
        let resolved = if self.node.runtime.uses_images() {
            Ok((std::path::PathBuf::new(), cargs.clone()))
        } else {
            self.node.resolver.argv(&spec.image, &command, &cargs)
        };
        let (program, args) = match resolved {
            Ok(x) => x,
            Err(e) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{e}");
                self.m
                    .image_not_found(i, e.to_string(), Instant::now(), now_ms());
                return;
            }
        };
        let cs = ContainerSpec {
            pod_uid: self.uid.clone(),
            hostname: self.name(),
            container: spec.name.clone(),
            program,
            args,
            env: envs,
            netns_path: Some(netns_path(&self.m.rec.netns)),
            image: spec.image.clone(),
            command,
            image_args: cargs,
            image_pull_policy: spec.image_pull_policy.clone(),
            resources: crate::resources::container_resources(
                self.m
                    .pod
                    .spec
                    .as_ref()
                    .map(|s| s.containers.as_slice())
                    .unwrap_or(&[]),
                &spec,
            ),
            resolv_conf: self.node.dns.get().map(|d| {
                let spec = self.m.pod.spec.clone().unwrap_or_default();
                crate::dns::resolv::pod_resolv_conf(
                    &spec.dns_policy,
                    spec.dns_config.as_deref(),
                    self.m.pod.namespace(),
                    d.cluster_dns,
                    &d.domain,
                    &d.node,
                )
                .render()
            }),
            mounts,
            security,
        };
        match self.node.runtime.start(&cs) {
            Ok(h) => {
                self.m.started(i, h, Instant::now());
                info!(pod = %self.name(), uid = %self.uid, container = %spec.name, pid = h.pid, ip = ?self.m.rec.ip, "container started");
                self.follow(i, h);
                self.post_start(i, h, &spec);
            }
            Err(crate::runtime::RuntimeError::Image { reason, message }) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, reason = %reason, "{message}");
                self.m
                    .image_unavailable(i, &reason, message, Instant::now());
            }
            Err(e) => {
                warn!(pod = %self.name(), uid = %self.uid, container = %spec.name, "{e}");
                self.m.start_failed(i, e.to_string(), Instant::now());
            }
        }
    }

    /// Runs container `i`'s postStart hook (if any) against instance `h`; a failure
    /// kills the instance (its exit then goes the usual way).
    fn post_start(&self, i: usize, h: Handle, spec: &kube_lite_proto::v1::Container) {
        let Some(hook) = lifecycle::post_start(spec) else {
            return;
        };
        let job = lifecycle::job(i, h, hook, lifecycle::POST_START_TIMEOUT);
        let hook = hook.clone();
        let (prober, node) = (self.prober.clone(), self.node.clone());
        let ip = self.m.rec.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let (ports, pod, container) = (spec.ports.clone(), self.m.pod.clone(), spec.name.clone());
        tokio::spawn(async move {
            let (ok, msg) = prober.run(&job, ip, &ports).await;
            if !ok {
                let m = lifecycle::failure_message(&hook, &container, &pod_key(&pod), &msg);
                warn!(pod = %pod.name(), container = %container, pid = h.pid, reason = "FailedPostStartHook",
                      "{m}; killing the container");
                node.event(&pod, &container, true, "FailedPostStartHook", &m);
                node.event(&pod, &container, false, "Killing", "FailedPostStartHook");
                let _ = node.runtime.kill(&h);
            }
        });
    }

    /// Runs the preStop hooks of the running containers, together, until they end or
    /// `deadline` (the pod's grace) passes.
    async fn pre_stop(&self, deadline: Instant) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let ip = self.m.rec.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let runs: Vec<_> = self
            .m
            .ctrs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let h = c.handle.filter(|h| self.node.runtime.alive(h))?;
                let hook = lifecycle::pre_stop(&c.spec)?;
                let job = lifecycle::job(i, h, hook, timeout);
                let hook = hook.clone();
                let (prober, ports, name) = (
                    self.prober.clone(),
                    c.spec.ports.clone(),
                    c.spec.name.clone(),
                );
                let (pod, node) = (self.m.pod.clone(), self.node.clone());
                Some(async move {
                    let (ok, msg) = prober.run(&job, ip, &ports).await;
                    if ok {
                        info!(pod = %pod.name(), container = %name, "preStop hook done");
                    } else {
                        pre_stop_failed(&node, &pod, &name, &hook, &msg);
                    }
                })
            })
            .collect();
        if !runs.is_empty() {
            let _ = tokio::time::timeout_at(deadline, futures::future::join_all(runs)).await;
        }
    }

    /// A container instance ended.
    fn on_exit(&mut self, i: usize, pid: i32, exit: ExitInfo) {
        let c = &self.m.ctrs[i];
        let exit = if c.handle.map(|h| h.pid) == Some(pid) {
            termination::enrich(
                self.node.state.as_ref(),
                &self.uid,
                &c.spec,
                self.m.ctrs.len(),
                exit,
            )
        } else {
            exit
        };
        let (code, why) = (exit.exit_code, exit.reason.clone());
        if self.m.exited(i, pid, exit, Instant::now()) {
            info!(pod = %self.name(), uid = %self.uid, container = %self.m.ctrs[i].spec.name,
                  exit_code = code, reason = %why, "container exited");
            self.save_record();
        }
    }

    /// Rebuilds the container part of the record from the live state and saves it.
    fn save_record(&mut self) {
        let rec = self.m.record();
        if let Err(e) = self.node.state.save(rec) {
            warn!(pod = %self.m.name(), uid = %self.uid, "saving pod record: {e}");
        }
    }

    async fn push_status(&mut self) {
        let Some(st) = self.m.status_to_push(&self.node.address.to_string()) else {
            return;
        };
        let m = self.m.pod.meta();
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
        let name = m.name.clone();
        match self.node.api.update_status(pod).await {
            Ok(()) => {
                tracing::debug!(pod = %name, uid = %self.uid, phase = %st.phase, "status updated");
                self.m.status_pushed(st);
            }
            Err(e) if e.code() == Code::NotFound => self.m.status_pushed(st),
            Err(e) => {
                warn!(pod = %name, uid = %self.uid, "updating status: {}", e.message());
                self.m.status_push_failed(Instant::now());
            }
        }
    }

    /// SIGTERM, grace, SIGKILL; network, IP and state released; then (for a graceful
    /// delete) the final Delete with grace 0.
    async fn stop(&mut self, stop: Stop) {
        let grace = stop.grace();
        let api_delete = matches!(stop, Stop::Deleted { .. });
        let name = self.name();
        info!(pod = %name, uid = %self.uid, grace_s = grace.as_secs(), "stopping pod");
        let deadline = machine::deadline_after(Instant::now(), grace);
        // preStop hooks first (within the grace), then SIGTERM.
        self.pre_stop(deadline).await;
        let mut live = self.m.live_handles();
        live.retain(|h| self.node.runtime.alive(h));
        for h in &live {
            if let Err(e) = self.node.runtime.terminate(h) {
                warn!(pod = %name, uid = %self.uid, "SIGTERM: {e}");
            }
        }
        loop {
            live.retain(|h| self.node.runtime.alive(h));
            if live.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                Some((i, _pid, exit)) = self.exits_rx.recv() => {
                    if let Some(c) = self.m.ctrs.get(i) {
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
            let until = machine::deadline_after(Instant::now(), Duration::from_secs(5));
            while live.iter().any(|h| self.node.runtime.alive(h)) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if self.m.holds_network() {
            let (netns, host_if) = (self.m.rec.netns.clone(), self.m.rec.host_if.clone());
            self.node.release(&self.uid, &netns, &host_if).await;
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
        let (name, namespace) = (
            self.m.pod.name().to_string(),
            self.m.pod.namespace().to_string(),
        );
        // Until it is gone: a pod left Terminating would never go otherwise.
        let mut delay = Duration::from_millis(200);
        for attempt in 0u64.. {
            let cur = match self
                .node
                .api
                .get(GetRequest {
                    name: name.clone(),
                    namespace: namespace.clone(),
                })
                .await
            {
                Ok(p) => p,
                Err(e) if e.code() == Code::NotFound => return,
                Err(e) => {
                    warn!(pod = %name, uid = %self.uid, attempt, "final delete: {}", e.message());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if cur.uid() != self.uid {
                return;
            }
            let req = DeleteRequest {
                name: name.clone(),
                namespace: namespace.clone(),
                resource_version: cur.meta().resource_version,
                grace_period_seconds: 0,
                ..Default::default()
            };
            match self.node.api.delete(req).await {
                Ok(()) => {
                    info!(pod = %name, uid = %self.uid, "pod deleted");
                    return;
                }
                Err(e) if e.code() == Code::NotFound => return,
                Err(e) if e.code() == Code::Aborted => continue,
                Err(e) => {
                    warn!(pod = %name, uid = %self.uid, attempt, "final delete: {}", e.message());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// `namespace/name` of a pod (how the hook failure messages name it).
fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.namespace(), p.name())
}

/// A failed preStop hook: logged and a `Warning FailedPreStopHook` event; the SIGTERM
/// follows anyway.
fn pre_stop_failed(
    node: &Node,
    pod: &Pod,
    container: &str,
    hook: &kube_lite_proto::v1::LifecycleHandler,
    why: &str,
) {
    let m = lifecycle::failure_message(hook, container, &pod_key(pod), why);
    warn!(pod = %pod.name(), container = %container, reason = "FailedPreStopHook", "{m}");
    node.event(pod, container, true, "FailedPreStopHook", &m);
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}
