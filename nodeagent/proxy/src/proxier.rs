//! The proxier: the desired rule set kept up to date per Service, and the code that
//! brings the kernel to it — incrementally (only the chains a change touched) or by a
//! full resync against `iptables-save`.

use crate::exec::{have_program, Runner};
use crate::model::{object_key, resolve, Protocol, ServicePortView};
use crate::render::{
    diff, render_service, resync_plan, Names, Plan, RenderedService, Table, Tables,
};
use crate::{Mode, ProxyConfig};
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

/// Desired state and believed kernel state of one node's Service rules.
pub struct Proxier {
    names: Names,
    mode: Mode,
    runner: Runner,
    route_dev: Option<String>,
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

impl Proxier {
    pub fn new(cfg: &ProxyConfig) -> Result<Proxier, ProxyError> {
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
        let names = Names::new(&cfg.chain_prefix);
        let desired = names.static_chains();
        let have_conntrack = have_program("conntrack");
        if !have_conntrack {
            warn!("`conntrack` not found on PATH (Debian package `conntrack`): UDP conntrack entries will not be flushed when endpoints go away");
        }
        Ok(Proxier {
            names,
            mode: cfg.mode,
            runner: Runner::new(cfg.netns.clone(), cfg.backend),
            route_dev: cfg.node_local_route_dev.clone(),
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
    pub fn runner(&self) -> &Runner {
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
        let key = key_of(svc.metadata.as_ref());
        self.services.insert(key.clone(), svc);
        self.refresh(&key);
    }
    pub fn delete_service(&mut self, svc: &Service) {
        let key = key_of(svc.metadata.as_ref());
        self.services.remove(&key);
        self.refresh(&key);
    }
    pub fn upsert_endpoints(&mut self, eps: Endpoints) {
        let key = key_of(eps.metadata.as_ref());
        self.endpoints.insert(key.clone(), eps);
        self.refresh(&key);
    }
    pub fn delete_endpoints(&mut self, eps: &Endpoints) {
        let key = key_of(eps.metadata.as_ref());
        self.endpoints.remove(&key);
        self.refresh(&key);
    }
    /// A fresh list of every Service (replaces what was known).
    pub fn replace_services(&mut self, all: Vec<Service>) {
        let old: BTreeSet<String> = self.services.keys().cloned().collect();
        self.services = all
            .into_iter()
            .map(|s| (key_of(s.metadata.as_ref()), s))
            .collect();
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
        self.endpoints = all
            .into_iter()
            .map(|e| (key_of(e.metadata.as_ref()), e))
            .collect();
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
            Some(svc) => match resolve(svc, self.endpoints.get(key)) {
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
        if old.nat_dispatch != new.nat_dispatch || old.filter_dispatch != new.filter_dispatch {
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
        let nat: Vec<String> = self
            .rendered
            .values()
            .flat_map(|r| r.nat_dispatch.iter().cloned())
            .collect();
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
        let saved = Runner::finish(save).await.map_err(ProxyError::Save)?;
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

    /// bridge-nf-call-iptables=1 (bridged pod-to-pod replies must meet conntrack to be
    /// un-DNATed; kube-lite-net's setup_node sets it too) and ip_forward=1. Problems are
    /// logged once.
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

fn key_of(meta: Option<&kube_lite_proto::v1::ObjectMeta>) -> String {
    meta.map(|m| object_key(&m.namespace, &m.name))
        .unwrap_or_else(|| object_key("", ""))
}

/// bridge-nf-call-iptables=1 (bridged pod-to-pod replies must meet conntrack to be
/// un-DNATed; kube-lite-net's setup_node sets it too) and ip_forward=1. Problems are
/// logged once.
async fn ensure_sysctls(runner: Runner, warned: Arc<AtomicBool>) {
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
