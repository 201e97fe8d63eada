//! The proxier: the desired rule set kept up to date per Service, and the code that
//! brings the kernel to it — incrementally (only the chains a change touched) or by a
//! full resync against `iptables-save`.

use crate::exec::{Exec, Runner};
use crate::model::{resolve, Protocol, ServicePortView};
use crate::render::{
    diff, render_service, resync_plan, Names, Plan, RenderedService, Table, Tables,
};
use crate::{Mode, ProxyConfig};
use kube_lite_core::{ObjectRef, Resource};
use kube_lite_proto::v1::{Endpoints, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the current rules: {0}")]
    Save(#[source] crate::exec::ExecError),
    #[error("applying rules: {0}")]
    Restore(#[source] crate::exec::ExecError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What one sync did (sent to `ProxyConfig::sync_events` if set; also returned).
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// A full resync (read back the kernel state) rather than an incremental update.
    pub full: bool,
    /// Chains (re)written and deleted.
    pub rewritten: usize,
    pub deleted: usize,
    /// Built-in chain jump lines fixed.
    pub jumps_fixed: usize,
    /// Bytes given to iptables-restore (0 = no restore was needed).
    pub restore_bytes: usize,
    /// Time spent rendering/diffing, and in the restore process.
    pub render: Duration,
    pub restore: Duration,
    pub finished: Instant,
}

/// Desired state and believed kernel state of one node's Service rules; `E` runs the
/// tools ([`Runner`]: the real ones in the configured namespace).
pub struct Proxier<E: Exec = Runner> {
    names: Names,
    mode: Mode,
    runner: E,
    route_dev: Option<String>,
    /// This node's name: endpoints on it are local (externalTrafficPolicy Local).
    node_name: Option<String>,
    services: BTreeMap<String, Service>,
    endpoints: BTreeMap<String, Endpoints>,
    views: BTreeMap<String, Vec<ServicePortView>>,
    rendered: BTreeMap<String, RenderedService>,
    desired: Tables,
    /// What is believed to be in the kernel (owned chains); exact after a resync.
    applied: Tables,
    touched: BTreeSet<(Table, String)>,
    /// Services changed since the last sync (not yet rendered).
    dirty: BTreeSet<String>,
    dispatch_dirty: bool,
    need_resync: bool,
    routes_applied: Option<BTreeSet<Ipv4Addr>>,
    conntrack_pending: Vec<(Ipv4Addr, Option<Ipv4Addr>)>,
    have_conntrack: bool,
    sysctl_warned: Arc<AtomicBool>,
    /// Configured pod subnet (hairpin), else detected from `route_dev`.
    pod_subnet: Option<ipnet::Ipv4Net>,
    local_subnets: Option<Vec<ipnet::Ipv4Net>>,
    hairpin_dirty: bool,
}

impl Proxier<Runner> {
    /// A proxier running the real tools in `cfg.netns` with `cfg.backend`.
    pub fn new(cfg: &ProxyConfig) -> Result<Proxier, ProxyError> {
        Proxier::with_exec(cfg, Runner::new(cfg.netns.clone(), cfg.backend))
    }
}

impl<E: Exec> Proxier<E> {
    /// A proxier whose side effects go through `runner` (`cfg.netns` and
    /// `cfg.backend` are the runner's business).
    pub fn with_exec(cfg: &ProxyConfig, runner: E) -> Result<Proxier<E>, ProxyError> {
        // Chain names are at most 28 characters: prefix + "SVC-" + 16 hex.
        if cfg.chain_prefix.is_empty() || cfg.chain_prefix.len() > 8 {
            return Err(ProxyError::Config(format!(
                "chain prefix {:?} must be 1 to 8 characters",
                cfg.chain_prefix
            )));
        }
        if !cfg
            .chain_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ProxyError::Config(format!(
                "chain prefix {:?}: only letters, digits, '-' and '_'",
                cfg.chain_prefix
            )));
        }
        let mut names = Names::new(&cfg.chain_prefix);
        if let (Some(net), Some(dev)) = (cfg.pod_subnet, cfg.node_local_route_dev.as_deref()) {
            names = names.with_egress(net, dev);
        }
        let desired = names.static_chains();
        let have_conntrack = runner.have_conntrack();
        if !have_conntrack {
            warn!("`conntrack` not found on PATH (Debian package `conntrack`): UDP conntrack entries will not be flushed when endpoints go away");
        }
        Ok(Proxier {
            names,
            mode: cfg.mode,
            runner,
            route_dev: cfg.node_local_route_dev.clone(),
            node_name: cfg.node_name.clone(),
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            views: BTreeMap::new(),
            rendered: BTreeMap::new(),
            desired,
            applied: Tables::default(),
            touched: BTreeSet::new(),
            dirty: BTreeSet::new(),
            dispatch_dirty: true,
            need_resync: true,
            routes_applied: None,
            conntrack_pending: Vec::new(),
            have_conntrack,
            sysctl_warned: Arc::new(AtomicBool::new(false)),
            pod_subnet: cfg.pod_subnet,
            local_subnets: cfg.pod_subnet.map(|n| vec![n]),
            hairpin_dirty: true,
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }
    pub fn runner(&self) -> &E {
        &self.runner
    }
    /// The complete desired rule set (owned chains).
    pub fn desired(&mut self) -> &Tables {
        self.rebuild_dispatch();
        &self.desired
    }
    /// Is there anything to write (or a resync due)?
    pub fn has_pending(&self) -> bool {
        self.need_resync
            || !self.dirty.is_empty()
            || !self.touched.is_empty()
            || self.dispatch_dirty
    }
    /// The next `sync` reads the kernel state back and repairs drift.
    pub fn request_resync(&mut self) {
        self.need_resync = true;
    }

    pub fn upsert_service(&mut self, svc: Service) {
        let key = key_of(&svc);
        self.services.insert(key.clone(), svc);
        self.refresh(&key);
    }
    pub fn delete_service(&mut self, svc: &Service) {
        let key = key_of(svc);
        self.services.remove(&key);
        self.refresh(&key);
    }
    pub fn upsert_endpoints(&mut self, eps: Endpoints) {
        let key = key_of(&eps);
        self.endpoints.insert(key.clone(), eps);
        self.refresh(&key);
    }
    pub fn delete_endpoints(&mut self, eps: &Endpoints) {
        let key = key_of(eps);
        self.endpoints.remove(&key);
        self.refresh(&key);
    }
    /// A fresh list of every Service (replaces what was known).
    pub fn replace_services(&mut self, all: Vec<Service>) {
        let old: BTreeSet<String> = self.services.keys().cloned().collect();
        self.services = all.into_iter().map(|s| (key_of(&s), s)).collect();
        let keys: BTreeSet<String> = old
            .into_iter()
            .chain(self.services.keys().cloned())
            .collect();
        for k in keys {
            self.refresh(&k);
        }
    }
    /// A fresh list of every Endpoints object.
    pub fn replace_endpoints(&mut self, all: Vec<Endpoints>) {
        let old: BTreeSet<String> = self.endpoints.keys().cloned().collect();
        self.endpoints = all.into_iter().map(|e| (key_of(&e), e)).collect();
        let keys: BTreeSet<String> = old
            .into_iter()
            .chain(self.endpoints.keys().cloned())
            .collect();
        for k in keys {
            self.refresh(&k);
        }
    }

    /// Marks a Service for re-rendering at the next sync (a Service updated many times
    /// before a sync is rendered once).
    fn refresh(&mut self, key: &str) {
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
    }

    /// Re-resolves and re-renders one Service; records which chains changed.
    fn render_key(&mut self, key: &str) {
        let views = match self.services.get(key) {
            None => Vec::new(),
            Some(svc) => match resolve(svc, self.endpoints.get(key), self.node_name.as_deref()) {
                Ok((v, skipped)) => {
                    for s in skipped {
                        warn!(service = key, "skipping port: {s}");
                    }
                    v
                }
                Err(e) => {
                    debug!(service = key, "no rules: {e}");
                    Vec::new()
                }
            },
        };
        let old_views = self.views.get(key).cloned().unwrap_or_default();
        if old_views == views && (self.rendered.contains_key(key) || views.is_empty()) {
            return;
        }
        self.queue_conntrack(&old_views, &views);
        self.hairpin_dirty = true;
        let new = render_service(&self.names, self.mode, &views);
        let old = self.rendered.remove(key).unwrap_or_default();
        for (c, rules) in &old.nat_chains {
            if new.nat_chains.get(c) != Some(rules) {
                self.desired.nat.remove(c);
                self.touched.insert((Table::Nat, c.clone()));
            }
        }
        for (c, rules) in &new.nat_chains {
            if old.nat_chains.get(c) != Some(rules) {
                self.desired.nat.insert(c.clone(), rules.clone());
                self.touched.insert((Table::Nat, c.clone()));
            }
        }
        if old.nat_dispatch != new.nat_dispatch
            || old.filter_dispatch != new.filter_dispatch
            || old.nodeport_dispatch != new.nodeport_dispatch
        {
            self.dispatch_dirty = true;
        }
        if views.is_empty() {
            self.views.remove(key);
        } else {
            self.views.insert(key.to_string(), views);
            self.rendered.insert(key.to_string(), new);
        }
    }

    /// UDP: entries to a removed endpoint, and entries made while the port had no
    /// endpoints (or to a removed cluster IP), must go so clients move on.
    fn queue_conntrack(&mut self, old: &[ServicePortView], new: &[ServicePortView]) {
        for o in old.iter().filter(|p| p.protocol == Protocol::Udp) {
            let n = new.iter().find(|p| {
                p.protocol == Protocol::Udp
                    && p.port_name == o.port_name
                    && p.cluster_ip == o.cluster_ip
            });
            match n {
                None => self.conntrack_pending.push((o.cluster_ip, None)),
                Some(n) => {
                    for ep in &o.endpoints {
                        if !n.endpoints.iter().any(|e| e.ip() == ep.ip()) {
                            self.conntrack_pending.push((o.cluster_ip, Some(*ep.ip())));
                        }
                    }
                }
            }
        }
        for n in new.iter().filter(|p| p.protocol == Protocol::Udp) {
            let was_empty = old
                .iter()
                .find(|p| {
                    p.protocol == Protocol::Udp
                        && p.port_name == n.port_name
                        && p.cluster_ip == n.cluster_ip
                })
                .map(|p| p.endpoints.is_empty())
                .unwrap_or(true);
            if was_empty && !n.endpoints.is_empty() {
                self.conntrack_pending.push((n.cluster_ip, None));
            }
        }
    }

    fn rebuild_hairpin(&mut self) {
        if !self.hairpin_dirty {
            return;
        }
        self.hairpin_dirty = false;
        let subnets = self.local_subnets.clone();
        let local = |ip: &Ipv4Addr| match &subnets {
            Some(nets) => nets.iter().any(|n| n.contains(ip)),
            None => true,
        };
        let ips: BTreeSet<Ipv4Addr> = self
            .views
            .values()
            .flatten()
            .flat_map(|p| p.endpoints.iter().map(|e| *e.ip()))
            .filter(|ip| local(ip))
            .collect();
        let rules = self.names.hairpin_rules(&ips);
        if self.desired.nat.get(&self.names.postrouting) != Some(&rules) {
            self.desired
                .nat
                .insert(self.names.postrouting.clone(), rules);
            self.touched
                .insert((Table::Nat, self.names.postrouting.clone()));
        }
    }

    fn render_dirty(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            self.render_key(&key);
        }
    }

    fn rebuild_dispatch(&mut self) {
        self.render_dirty();
        self.rebuild_hairpin();
        if !self.dispatch_dirty {
            return;
        }
        let mut nat: Vec<String> = self
            .rendered
            .values()
            .flat_map(|r| r.nat_dispatch.iter().cloned())
            .collect();
        nat.push(self.names.nodeports_jump());
        let nodeports: Vec<String> = self
            .rendered
            .values()
            .flat_map(|r| r.nodeport_dispatch.iter().cloned())
            .collect();
        if self.desired.nat.get(&self.names.nodeports) != Some(&nodeports) {
            self.desired
                .nat
                .insert(self.names.nodeports.clone(), nodeports);
            self.touched
                .insert((Table::Nat, self.names.nodeports.clone()));
        }
        let filter: Vec<String> = self
            .rendered
            .values()
            .flat_map(|r| r.filter_dispatch.iter().cloned())
            .collect();
        self.desired.nat.insert(self.names.services.clone(), nat);
        self.desired
            .filter
            .insert(self.names.services.clone(), filter);
        self.touched
            .insert((Table::Nat, self.names.services.clone()));
        self.touched
            .insert((Table::Filter, self.names.services.clone()));
        self.dispatch_dirty = false;
    }

    /// Brings the kernel to the desired state: a full resync if one is due, else an
    /// incremental restore of the touched chains. On error the next sync is a resync.
    pub async fn sync(&mut self) -> Result<SyncReport, ProxyError> {
        let r = if self.need_resync {
            self.full_resync().await
        } else {
            self.incremental().await
        };
        if r.is_err() {
            self.need_resync = true;
        }
        self.sync_routes().await;
        self.flush_conntrack().await;
        r
    }

    async fn incremental(&mut self) -> Result<SyncReport, ProxyError> {
        let t0 = Instant::now();
        self.rebuild_dispatch();
        let touched = std::mem::take(&mut self.touched);
        let plan = diff(&self.applied, &self.desired, Some(&touched));
        self.apply(plan, t0, false).await
    }

    /// Reads `iptables-save` and writes whatever differs from the desired state:
    /// drifted or missing owned chains, orphan owned chains, jump rules.
    pub async fn full_resync(&mut self) -> Result<SyncReport, ProxyError> {
        // The sysctl check is off the critical path.
        tokio::spawn(ensure_sysctls(
            self.runner.clone(),
            self.sysctl_warned.clone(),
        ));
        // iptables-save runs while the changed Services are rendered.
        let save = self.runner.start_save().map_err(ProxyError::Save)?;
        let t0 = Instant::now();
        self.render_dirty();
        let rendering = t0.elapsed();
        let addrs = match (&self.pod_subnet, &self.route_dev) {
            (None, Some(dev)) => self
                .runner
                .addresses(dev)
                .await
                .ok()
                .filter(|a| !a.is_empty()),
            _ => self.local_subnets.clone(),
        };
        if addrs != self.local_subnets {
            debug!(?addrs, "local pod subnets");
            self.local_subnets = addrs;
            self.hairpin_dirty = true;
        }
        let saved = self
            .runner
            .finish_save(save)
            .await
            .map_err(ProxyError::Save)?;
        let t0 = Instant::now() - rendering;
        self.rebuild_dispatch();
        self.touched.clear();
        let saved = crate::render::parse_save(&saved);
        let (owned, _) = crate::render::split_owned(&self.names, &saved);
        self.applied = owned;
        let plan = resync_plan(&self.names, &saved, &self.desired);
        let report = self.apply(plan, t0, true).await?;
        self.need_resync = false;
        self.routes_applied = None;
        Ok(report)
    }

    async fn apply(
        &mut self,
        plan: Plan,
        t0: Instant,
        full: bool,
    ) -> Result<SyncReport, ProxyError> {
        let text = if plan.is_empty() {
            String::new()
        } else {
            plan.restore_text(&self.desired)
        };
        let render = t0.elapsed();
        let t1 = Instant::now();
        if !text.is_empty() {
            self.runner
                .restore(&text)
                .await
                .map_err(ProxyError::Restore)?;
        }
        let restore = t1.elapsed();
        for (t, c) in &plan.rewritten {
            if let Some(rules) = self.desired.get(*t).get(c) {
                self.applied.get_mut(*t).insert(c.clone(), rules.clone());
            }
        }
        for (t, c) in &plan.deleted {
            self.applied.get_mut(*t).remove(c);
        }
        let report = SyncReport {
            full,
            rewritten: plan.rewritten.len(),
            deleted: plan.deleted.len(),
            jumps_fixed: plan.builtin_lines.values().map(Vec::len).sum(),
            restore_bytes: text.len(),
            render,
            restore,
            finished: Instant::now(),
        };
        if full && (report.rewritten > 0 || report.deleted > 0 || report.jumps_fixed > 0) {
            info!(
                rewritten = report.rewritten,
                deleted = report.deleted,
                jumps_fixed = report.jumps_fixed,
                "resync repaired rules"
            );
        } else {
            debug!(?report, "sync done");
        }
        Ok(report)
    }

    /// Routes `clusterIP/32 dev <bridge>` so clients in the node namespace reach them.
    async fn sync_routes(&mut self) {
        let Some(dev) = self.route_dev.clone() else {
            return;
        };
        let want: BTreeSet<Ipv4Addr> = self
            .views
            .values()
            .flat_map(|v| v.iter().map(|p| p.cluster_ip))
            .collect();
        let have = match &self.routes_applied {
            Some(h) => h.clone(),
            None => match self.runner.list_routes().await {
                Ok(r) => r.into_iter().collect(),
                Err(e) => {
                    warn!("listing routes: {e}");
                    return;
                }
            },
        };
        let add: Vec<Ipv4Addr> = want.difference(&have).copied().collect();
        let del: Vec<Ipv4Addr> = have.difference(&want).copied().collect();
        match self.runner.update_routes(&dev, &add, &del).await {
            Ok(()) => self.routes_applied = Some(want),
            Err(e) => {
                warn!("updating cluster IP routes via {dev}: {e}");
                self.routes_applied = None;
            }
        }
    }

    async fn flush_conntrack(&mut self) {
        let pending = std::mem::take(&mut self.conntrack_pending);
        if !self.have_conntrack {
            return;
        }
        for (ip, to) in pending {
            if let Err(e) = self.runner.conntrack_flush_udp(ip, to).await {
                warn!("flushing UDP conntrack entries for {ip}: {e}");
            }
        }
    }

    /// Removes every owned chain and the jumps to them (agent teardown, tests).
    pub async fn cleanup(&mut self) -> Result<(), ProxyError> {
        let saved = self.runner.save().await.map_err(ProxyError::Save)?;
        let saved = crate::render::parse_save(&saved);
        let empty_names_desired = Tables::default();
        let (owned, builtin) = crate::render::split_owned(&self.names, &saved);
        let mut plan = diff(&owned, &empty_names_desired, None);
        for table in [Table::Nat, Table::Filter] {
            let mut lines = Vec::new();
            for (chain, rules) in builtin.get(table) {
                for l in rules {
                    let rest = &l[format!("-A {chain} ").len().min(l.len())..];
                    if rest
                        .split_whitespace()
                        .skip_while(|w| *w != "-j")
                        .nth(1)
                        .map(|t| self.names.owns(t))
                        .unwrap_or(false)
                    {
                        lines.push(format!("-D {chain} {rest}"));
                    }
                }
            }
            plan.builtin_lines.insert(table, lines);
        }
        if !plan.is_empty() {
            let text = plan.restore_text(&Tables::default());
            self.runner
                .restore(&text)
                .await
                .map_err(ProxyError::Restore)?;
        }
        if let Some(dev) = &self.route_dev {
            if let Ok(routes) = self.runner.list_routes().await {
                let _ = self.runner.update_routes(dev, &[], &routes).await;
            }
        }
        self.applied = Tables::default();
        self.need_resync = true;
        Ok(())
    }
}

/// `namespace/name` with the default-namespace rule.
fn key_of<R: Resource>(o: &R) -> String {
    ObjectRef::of::<R>(o.namespace(), o.name()).to_string()
}

/// bridge-nf-call-iptables=1 (bridged pod-to-pod replies must meet conntrack to be
/// un-DNATed; kube-lite-net's setup_node sets it too) and ip_forward=1. Problems are
/// logged once.
async fn ensure_sysctls<E: Exec>(runner: E, warned: Arc<AtomicBool>) {
    let keys = ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"];
    let values = runner.sysctl_get(&keys).await;
    for key in keys {
        let problem = match values.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            Some(v) if v == "1" => None,
            Some(_) => match runner.sysctl_set(key, "1").await {
                Ok(()) => {
                    info!("set {key}=1");
                    None
                }
                Err(e) => Some(format!("setting {key}=1: {e}")),
            },
            None => Some(format!(
                "sysctl {key} is not readable in the node namespace"
            )),
        };
        if let Some(p) = problem {
            if !warned.swap(true, Ordering::Relaxed) {
                warn!("{p}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The proxier against the recording fake (no root): what it writes, and when.
    use super::*;
    use crate::fake::{Call, FakeExec};
    use crate::render::{parse_save, split_owned};
    use kube_lite_proto::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, ObjectMeta, ServicePort, ServiceSpec,
    };

    const VIP_A: &str = "172.17.10.10";
    const VIP_B: &str = "172.17.10.11";

    fn service(name: &str, ip: &str, ports: &[(&str, &str, i32, i32)]) -> Service {
        Service {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                cluster_ip: ip.into(),
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

    fn endpoints(name: &str, ips: &[&str], ports: &[(&str, i32, &str)]) -> Endpoints {
        Endpoints {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            subsets: vec![EndpointSubset {
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
            }],
        }
    }

    fn web(ip: &str) -> Service {
        service("a", ip, &[("http", "TCP", 80, 8080)])
    }
    fn web_eps(name: &str, ips: &[&str]) -> Endpoints {
        endpoints(name, ips, &[("http", 8080, "TCP")])
    }

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            pod_subnet: Some("10.0.1.0/24".parse().unwrap()),
            ..Default::default()
        }
    }

    fn proxier(cfg: &ProxyConfig) -> (Proxier<FakeExec>, FakeExec) {
        let fake = FakeExec::new();
        (Proxier::with_exec(cfg, fake.clone()).unwrap(), fake)
    }

    /// Two Services (a, b), both with endpoints, synced once; the record cleared.
    async fn two_services() -> (Proxier<FakeExec>, FakeExec) {
        let (mut p, fake) = proxier(&cfg());
        let mut b = web(VIP_B);
        b.metadata.as_mut().unwrap().name = "b".into();
        p.replace_services(vec![web(VIP_A), b]);
        p.replace_endpoints(vec![
            web_eps("a", &["10.0.1.2", "10.0.1.3"]),
            web_eps("b", &["10.0.1.4"]),
        ]);
        let r = p.sync().await.unwrap();
        assert!(r.full, "the first sync is a full resync");
        assert_in_sync(&mut p, &fake);
        fake.take_calls();
        (p, fake)
    }

    /// The owned chains in the fake kernel.
    fn kernel_owned(fake: &FakeExec) -> Tables {
        let saved = parse_save(&fake.kernel().save_text());
        split_owned(&Names::new("KL-"), &saved).0
    }

    fn assert_in_sync(p: &mut Proxier<FakeExec>, fake: &FakeExec) {
        let desired = p.desired().clone();
        assert_eq!(kernel_owned(fake), desired);
    }

    /// The SVC chain the nat dispatch sends `vip` to.
    fn svc_chain(fake: &FakeExec, vip: &str) -> String {
        let rules = fake.rules(Table::Nat, "KL-SERVICES").unwrap();
        let line = rules
            .iter()
            .find(|r| r.contains(&format!("-d {vip}/32")))
            .unwrap_or_else(|| panic!("no dispatch rule for {vip}: {rules:?}"));
        line.rsplit(' ').next().unwrap().to_string()
    }

    /// Chains a restore input declares (= rewrites or deletes).
    fn declared(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    fn count(rules: &[String], needle: &str) -> usize {
        rules.iter().filter(|r| r.contains(needle)).count()
    }

    #[tokio::test]
    async fn first_sync_creates_chains_jumps_and_routes_then_nothing_to_do() {
        let (mut p, fake) = two_services().await;
        let a = svc_chain(&fake, VIP_A);
        assert_eq!(count(&fake.rules(Table::Nat, &a).unwrap(), "-j DNAT"), 2);
        for (table, chain) in [
            (Table::Nat, "PREROUTING"),
            (Table::Nat, "OUTPUT"),
            (Table::Filter, "INPUT"),
            (Table::Filter, "FORWARD"),
            (Table::Filter, "OUTPUT"),
        ] {
            let rules = fake.rules(table, chain).unwrap();
            assert_eq!(count(&rules, "-j KL-SERVICES"), 1, "{chain}: {rules:?}");
        }
        let post = fake.rules(Table::Nat, "POSTROUTING").unwrap();
        assert_eq!(count(&post, "-j KL-POSTROUTING"), 1);
        let want: BTreeSet<Ipv4Addr> = [VIP_A, VIP_B].iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(fake.kernel().routes, want);

        // Nothing changed: an incremental sync writes nothing.
        assert!(!p.has_pending());
        let r = p.sync().await.unwrap();
        assert!(!r.full);
        assert_eq!((r.rewritten, r.deleted, r.restore_bytes), (0, 0, 0));
        assert_eq!(fake.take_calls(), vec![]);

        // A resync reads the kernel back and finds it clean.
        p.request_resync();
        assert!(p.has_pending());
        let r = p.sync().await.unwrap();
        assert!(r.full);
        assert_eq!((r.rewritten, r.deleted, r.jumps_fixed), (0, 0, 0));
        let calls = fake.take_calls();
        assert!(calls.contains(&Call::Save), "{calls:?}");
        assert!(
            !calls.iter().any(|c| matches!(c, Call::Restore(_))),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn endpoint_change_rewrites_only_that_services_chain() {
        let (mut p, fake) = two_services().await;
        let a = svc_chain(&fake, VIP_A);
        let b = svc_chain(&fake, VIP_B);
        let b_rules = fake.rules(Table::Nat, &b).unwrap();
        // Several updates before a sync: one restore with the last state. The new
        // endpoint is on another node (no hairpin change).
        p.upsert_endpoints(web_eps("a", &["10.0.1.2"]));
        p.upsert_endpoints(web_eps("a", &["10.0.1.2", "10.0.1.3", "10.0.2.9"]));
        let r = p.sync().await.unwrap();
        assert!(!r.full);
        assert_eq!((r.rewritten, r.deleted), (1, 0));
        let restores = fake.take_restores();
        assert_eq!(restores.len(), 1);
        assert_eq!(declared(&restores[0]), vec![a.clone()]);
        assert!(!restores[0].contains(&b), "{}", restores[0]);
        assert_eq!(count(&fake.rules(Table::Nat, &a).unwrap(), "-j DNAT"), 3);
        assert_eq!(fake.rules(Table::Nat, &b).unwrap(), b_rules);
        assert_in_sync(&mut p, &fake);

        // A local endpoint leaving changes the hairpin rules too.
        p.upsert_endpoints(web_eps("a", &["10.0.1.2", "10.0.2.9"]));
        let r = p.sync().await.unwrap();
        let restores = fake.take_restores();
        assert_eq!(
            declared(&restores[0]),
            vec!["KL-POSTROUTING".to_string(), a.clone()]
        );
        assert_eq!(r.rewritten, 2);
        let hairpin = fake.rules(Table::Nat, "KL-POSTROUTING").unwrap();
        assert!(
            !hairpin.iter().any(|r| r.contains("10.0.1.3")),
            "{hairpin:?}"
        );
        assert_in_sync(&mut p, &fake);

        // A port change moves the dispatch rule: KL-SERVICES (nat) is rewritten, the
        // filter one is unchanged.
        p.upsert_service(service("b", VIP_B, &[("http", "TCP", 81, 8080)]));
        let r = p.sync().await.unwrap();
        let restores = fake.take_restores();
        assert_eq!(declared(&restores[0]), vec!["KL-SERVICES".to_string()]);
        assert!(restores[0].starts_with("*nat\n") && !restores[0].contains("*filter"));
        assert_eq!(r.rewritten, 1);
        assert_in_sync(&mut p, &fake);
    }

    #[tokio::test]
    async fn deleted_service_chains_and_routes_are_removed() {
        let (mut p, fake) = two_services().await;
        let a = svc_chain(&fake, VIP_A);
        let b = svc_chain(&fake, VIP_B);
        p.delete_service(&web(VIP_A));
        let r = p.sync().await.unwrap();
        assert_eq!(r.deleted, 1);
        let calls = fake.take_calls();
        let restores: Vec<&String> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Restore(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(restores.len(), 1);
        let text = restores[0];
        assert!(text.contains(&format!("-X {a}\n")), "{text}");
        // b's chain is neither rewritten nor deleted.
        assert!(!declared(text).contains(&b), "{text}");
        // The dispatch rule goes before the chain is deleted.
        assert!(text.find(":KL-SERVICES").unwrap() < text.find(&format!("-X {a}")).unwrap());
        assert_eq!(fake.rules(Table::Nat, &a), None);
        assert!(fake.rules(Table::Nat, &b).is_some());
        assert!(calls.contains(&Call::UpdateRoutes {
            dev: "kl0".into(),
            add: vec![],
            del: vec![VIP_A.parse().unwrap()],
        }));
        assert_in_sync(&mut p, &fake);

        // Endpoints gone: the SVC chain goes, the port REJECTs.
        p.delete_endpoints(&web_eps("b", &[]));
        let r = p.sync().await.unwrap();
        assert_eq!(r.deleted, 1);
        assert_eq!(fake.rules(Table::Nat, &b), None);
        let reject = fake.rules(Table::Filter, "KL-SERVICES").unwrap();
        assert_eq!(count(&reject, &format!("-d {VIP_B}/32")), 1, "{reject:?}");
        assert_eq!(count(&reject, "--reject-with tcp-reset"), 1, "{reject:?}");
        // The route stays: the cluster IP still answers (with a reset).
        assert!(fake.kernel().routes.contains(&VIP_B.parse().unwrap()));
        assert_in_sync(&mut p, &fake);
    }

    #[tokio::test]
    async fn resync_repairs_drift_and_leaves_foreign_rules() {
        let (mut p, fake) = two_services().await;
        let a = svc_chain(&fake, VIP_A);
        let jump = "-m comment --comment \"kube-lite service portals\" -j KL-SERVICES";
        fake.iptables(&format!(
            "*nat\n-F {a}\n-D PREROUTING {jump}\n-I OUTPUT 1 {jump}\n\
             :KL-SVC-0000000000000000 - [0:0]\n\
             -A KL-SVC-0000000000000000 -j DNAT --to-destination 10.9.9.9:1\n\
             :MINE - [0:0]\n-A OUTPUT -j MINE\nCOMMIT\n"
        ));
        fake.kernel().routes.remove(&VIP_A.parse().unwrap());
        // The proxier believes all is well: an incremental sync changes nothing.
        let r = p.sync().await.unwrap();
        assert_eq!(r.restore_bytes, 0);
        assert!(fake.rules(Table::Nat, &a).unwrap().is_empty());

        p.request_resync();
        let r = p.sync().await.unwrap();
        assert!(r.full);
        assert_eq!(r.rewritten, 1, "{r:?}");
        assert_eq!(r.deleted, 1, "{r:?}");
        // PREROUTING jump back, duplicate OUTPUT jump removed.
        assert_eq!(r.jumps_fixed, 2, "{r:?}");
        assert_in_sync(&mut p, &fake);
        assert_eq!(count(&fake.rules(Table::Nat, &a).unwrap(), "-j DNAT"), 2);
        for chain in ["PREROUTING", "OUTPUT"] {
            let rules = fake.rules(Table::Nat, chain).unwrap();
            assert_eq!(count(&rules, "-j KL-SERVICES"), 1, "{chain}: {rules:?}");
        }
        // Foreign chain and jump untouched.
        assert_eq!(fake.rules(Table::Nat, "MINE"), Some(vec![]));
        assert_eq!(
            count(&fake.rules(Table::Nat, "OUTPUT").unwrap(), "-j MINE"),
            1
        );
        // The route list is read back and repaired too.
        assert!(fake.kernel().routes.contains(&VIP_A.parse().unwrap()));
    }

    #[tokio::test]
    async fn a_failed_restore_makes_the_next_sync_a_full_resync() {
        let (mut p, fake) = two_services().await;
        fake.kernel().fail_restores = 1;
        p.upsert_endpoints(web_eps("a", &["10.0.1.2"]));
        let e = p.sync().await.unwrap_err();
        assert!(matches!(e, ProxyError::Restore(_)), "{e}");
        assert!(p.has_pending());
        let r = p.sync().await.unwrap();
        assert!(r.full);
        // The SVC chain and the hairpin rules (10.0.1.3 is gone).
        assert_eq!(r.rewritten, 2);
        assert_in_sync(&mut p, &fake);
        assert_eq!(
            count(
                &fake.rules(Table::Nat, &svc_chain(&fake, VIP_A)).unwrap(),
                "DNAT"
            ),
            1
        );
    }

    fn conntrack(calls: &[Call]) -> Vec<(Ipv4Addr, Option<Ipv4Addr>)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Conntrack(ip, to) => Some((*ip, *to)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn udp_endpoint_changes_flush_conntrack() {
        let (mut p, fake) = proxier(&cfg());
        let vip: Ipv4Addr = VIP_A.parse().unwrap();
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let dns = service("dns", VIP_A, &[("dns", "UDP", 53, 5353)]);
        let eps = |ips: &[&str]| endpoints("dns", ips, &[("dns", 5353, "UDP")]);
        p.replace_services(vec![dns.clone()]);
        p.replace_endpoints(vec![eps(&["10.0.1.2", "10.0.1.3"])]);
        p.sync().await.unwrap();
        // From no endpoints to some: entries made meanwhile (to the REJECT) go.
        assert_eq!(conntrack(&fake.take_calls()), vec![(vip, None)]);

        p.upsert_endpoints(eps(&["10.0.1.2"]));
        p.sync().await.unwrap();
        assert_eq!(
            conntrack(&fake.take_calls()),
            vec![(vip, Some(ip("10.0.1.3")))]
        );

        // An endpoint added: nothing to flush.
        p.upsert_endpoints(eps(&["10.0.1.2", "10.0.1.4"]));
        p.sync().await.unwrap();
        assert_eq!(conntrack(&fake.take_calls()), vec![]);

        p.upsert_endpoints(eps(&[]));
        p.sync().await.unwrap();
        let mut got = conntrack(&fake.take_calls());
        got.sort();
        assert_eq!(
            got,
            vec![(vip, Some(ip("10.0.1.2"))), (vip, Some(ip("10.0.1.4")))]
        );

        p.upsert_endpoints(eps(&["10.0.1.5"]));
        p.sync().await.unwrap();
        assert_eq!(conntrack(&fake.take_calls()), vec![(vip, None)]);

        p.delete_service(&dns);
        p.sync().await.unwrap();
        assert_eq!(conntrack(&fake.take_calls()), vec![(vip, None)]);
    }

    #[tokio::test]
    async fn tcp_endpoint_removal_and_missing_conntrack_flush_nothing() {
        let (mut p, fake) = two_services().await;
        p.upsert_endpoints(web_eps("a", &["10.0.1.2"]));
        p.sync().await.unwrap();
        assert_eq!(conntrack(&fake.take_calls()), vec![]);

        let fake = FakeExec::new();
        fake.kernel().have_conntrack = false;
        let mut p = Proxier::with_exec(&cfg(), fake.clone()).unwrap();
        p.replace_services(vec![service("dns", VIP_A, &[("", "UDP", 53, 53)])]);
        p.replace_endpoints(vec![endpoints("dns", &["10.0.1.2"], &[])]);
        p.sync().await.unwrap();
        p.replace_endpoints(vec![]);
        p.sync().await.unwrap();
        assert_eq!(conntrack(&fake.take_calls()), vec![]);
    }

    #[tokio::test]
    async fn hairpin_subnet_comes_from_the_bridge_addresses() {
        let cfg = ProxyConfig::default(); // pod_subnet: None, route dev kl0
        let (mut p, fake) = proxier(&cfg);
        fake.kernel()
            .addresses
            .insert("kl0".into(), vec!["10.0.1.1/24".parse().unwrap()]);
        p.replace_services(vec![web(VIP_A)]);
        p.replace_endpoints(vec![web_eps("a", &["10.0.1.2", "10.0.2.2"])]);
        p.sync().await.unwrap();
        assert!(fake.take_calls().contains(&Call::Addresses("kl0".into())));
        let hairpin = fake.rules(Table::Nat, "KL-POSTROUTING").unwrap();
        assert_eq!(
            hairpin.len(),
            2,
            "masquerade of marked + one hairpin: {hairpin:?}"
        );
        assert!(hairpin[1].contains("-s 10.0.1.2/32 -d 10.0.1.2/32"));

        // Unknown subnet: every endpoint gets the rule.
        let (mut p, fake) = proxier(&cfg);
        p.replace_services(vec![web(VIP_A)]);
        p.replace_endpoints(vec![web_eps("a", &["10.0.1.2", "10.0.2.2"])]);
        p.sync().await.unwrap();
        assert_eq!(fake.rules(Table::Nat, "KL-POSTROUTING").unwrap().len(), 3);
    }

    #[tokio::test]
    async fn no_route_device_no_routes() {
        let cfg = ProxyConfig {
            node_local_route_dev: None,
            ..cfg()
        };
        let (mut p, fake) = proxier(&cfg);
        p.replace_services(vec![web(VIP_A)]);
        p.replace_endpoints(vec![web_eps("a", &["10.0.1.2"])]);
        p.sync().await.unwrap();
        let calls = fake.take_calls();
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::ListRoutes | Call::UpdateRoutes { .. })),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn cleanup_removes_owned_chains_jumps_and_routes_only() {
        let (mut p, fake) = two_services().await;
        fake.iptables("*nat\n:MINE - [0:0]\n-A OUTPUT -j MINE\nCOMMIT\n");
        p.cleanup().await.unwrap();
        assert_eq!(kernel_owned(&fake), Tables::default());
        {
            let k = fake.kernel();
            for rules in k.tables.nat.values().chain(k.tables.filter.values()) {
                assert!(!rules.iter().any(|r| r.contains("KL-")), "{rules:?}");
            }
            assert_eq!(k.tables.nat.get("MINE"), Some(&vec![]));
            assert_eq!(count(&k.tables.nat["OUTPUT"], "-j MINE"), 1);
            assert!(k.routes.is_empty());
        }
        // The next sync starts over with a full resync.
        assert!(p.has_pending());
        assert!(p.sync().await.unwrap().full);
        assert_in_sync(&mut p, &fake);
    }

    #[test]
    fn chain_prefix_is_checked() {
        for bad in ["", "TOO-LONG-X", "KL "] {
            let cfg = ProxyConfig {
                chain_prefix: bad.into(),
                ..Default::default()
            };
            let r = Proxier::with_exec(&cfg, FakeExec::new());
            assert!(matches!(r, Err(ProxyError::Config(_))), "{bad:?}");
        }
    }
}
