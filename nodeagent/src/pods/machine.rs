//! The pod lifecycle as a pure state machine: no I/O, no clock of its own.
//!
//! [`PodMachine`] holds what a worker knows about one pod (the latest object, the
//! record, each container's state, back-off streaks and timers, what status was sent)
//! and changes only when the executor tells it what happened: a new pod object, the
//! network is (not) ready, a container started / failed to start / exited, a status
//! update was (not) accepted. Time comes in as arguments (`now`: a monotonic instant
//! for timers; `wall_ms`: unix millis for the API's timestamps), so restart back-off,
//! grace periods and adoption are unit-tested without a runtime, a network or root.
//!
//! Also pure, for the node as a whole: [`plan_recovery`] (which records to adopt and
//! which to tear down after an agent restart) and [`orphan_netns`]/[`orphan_host_ifs`].

use super::probe::{Kind as ProbeKind, Probes, Verdict};
use crate::runtime::Handle;
use crate::state::{ContainerRecord, ExitInfo, PodRecord};
use crate::status::{backoff, pod_status, CState, CView, RestartPolicy, BACKOFF_RESET_AFTER};
use kube_lite_core::consts::{phase as ph, reason};
use kube_lite_core::defaults::DEFAULT_TERMINATION_GRACE_SECONDS;
use kube_lite_core::Resource;
use kube_lite_net::ipam::IpamError;
use kube_lite_proto::v1::{Container, Pod, PodStatus, Probe};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// Grace of a pod that vanished from the apiserver without a graceful deletion (force
/// delete, eviction): a short one, as the kubelet's minimum, not the spec's 30 s.
pub const GONE_GRACE: Duration = Duration::from_secs(2);

/// The longest grace period the agent waits for (a day): a grace from the API (spec or
/// DeleteRequest, up to `i64::MAX` seconds) is clamped to it, so no deadline overflows.
pub const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Seconds from the API as a grace period: negative → 0, at most [`MAX_GRACE`].
pub fn grace_from_secs(secs: i64) -> Duration {
    Duration::from_secs(secs.clamp(0, MAX_GRACE.as_secs() as i64) as u64)
}

/// `now + d`, saturating at a far-away instant instead of panicking on overflow.
pub fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_GRACE * 365))
        .unwrap_or(now)
}

/// The least time a container gets between the end of its preStop hook and SIGKILL
/// (the kubelet's minimum grace after a hook).
pub const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// The grace of the containers of a pod the node evicts (the kubelet's minimum).
pub const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// How long a failed status update waits before it is sent again.
pub const STATUS_RETRY: Duration = Duration::from_secs(1);

/// The latest word from the pod watch.
#[derive(Debug, Clone)]
pub enum PodMsg {
    Pod(Box<Pod>),
    Gone,
}

/// Why and how a pod stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// deletion_timestamp set: stop, release, then Delete(grace 0).
    Deleted { grace: Duration },
    /// Gone from the watch (force delete, eviction, unbound): stop and release, no API
    /// call.
    Gone { grace: Duration },
}

impl Stop {
    pub fn grace(self) -> Duration {
        match self {
            Stop::Deleted { grace } | Stop::Gone { grace } => grace,
        }
    }
}

fn spec_grace(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .map_or(DEFAULT_TERMINATION_GRACE_SECONDS, |s| {
            s.termination_grace_period_seconds
        })
}

/// The grace of a graceful deletion: the deletion's own, else the spec's.
pub fn deletion_grace(pod: &Pod) -> Duration {
    let m = pod.meta();
    let secs = if m.deletion_grace_period_seconds > 0 {
        m.deletion_grace_period_seconds
    } else {
        spec_grace(pod)
    };
    grace_from_secs(secs)
}

/// The grace for stopping a pod that is gone: the one of its graceful deletion if it
/// was terminating, else [`GONE_GRACE`] (or the spec's, when shorter).
pub fn gone_grace(pod: &Pod) -> Duration {
    let m = pod.meta();
    if m.deletion_timestamp != 0 && m.deletion_grace_period_seconds > 0 {
        return grace_from_secs(m.deletion_grace_period_seconds);
    }
    GONE_GRACE.min(grace_from_secs(spec_grace(pod)))
}

/// The pod's status reason and message for an IPAM failure (a full subnet leaves the
/// pod Pending with reason `no free IP in 10.0.N.0/24`).
pub fn ip_failure(e: &IpamError, node: &str) -> (String, String) {
    match e {
        IpamError::NoFreeIp(_) => {
            let r = e.to_string();
            let m = format!("{r}: waiting for a pod on node {node} to release one");
            (r, m)
        }
        _ => ("IPAMError".into(), e.to_string()),
    }
}

/// The pod status reason of a failed pod network set-up.
pub fn network_failure(message: String) -> (String, String) {
    (reason::NETWORK_SETUP_FAILED.to_string(), message)
}

/// One container's live state.
#[derive(Debug, Clone)]
pub struct Ctr {
    pub spec: Container,
    /// An init container (they come first in `PodMachine::ctrs`, in spec order).
    pub init: bool,
    pub view: CView,
    /// The instance being followed.
    pub handle: Option<Handle>,
    /// When the next start is due.
    pub next_start: Option<Instant>,
    /// Restarts in the current crash loop (back-off exponent).
    pub streak: u32,
    /// The probes of the running instance.
    pub probes: Probes,
    /// A kill under way (liveness/startup failure): SIGTERM sent, SIGKILL due then.
    pub kill: Option<PendingKill>,
}

/// An instance being killed because a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKill {
    pub pid: i32,
    /// When SIGKILL follows the SIGTERM (the pod's grace period).
    pub at: Instant,
    /// Why (shown as the ended instance's message).
    pub message: String,
    /// SIGKILL sent already.
    pub killed: bool,
    /// The container's preStop hook runs first: SIGTERM when it ends
    /// ([`PodMachine::pre_stop_done`]), no SIGKILL while it runs (it is bounded by the
    /// grace period).
    pub hook: bool,
}

/// A probe run the executor must start.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeJob {
    pub ctr: usize,
    pub kind: ProbeKind,
    /// The instance probed (a result for another instance is stale).
    pub handle: Handle,
    pub probe: Probe,
    pub timeout: Duration,
}

/// What the executor must do about a probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    None,
    /// Kill this instance: with `pre_stop`, run the container's preStop hook (within
    /// `grace`) and SIGTERM when it ends, else SIGTERM now; SIGKILL follows at the
    /// pending kill's time. `killing`: the kubelet's Killing event message
    /// (`Container c failed liveness probe, will be restarted`).
    Kill {
        handle: Handle,
        pre_stop: bool,
        grace: Duration,
        killing: String,
    },
}

/// How a recorded container instance looks when the agent comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Still running: follow it.
    Alive,
    /// Ended while the agent was away, like this.
    Ended(ExitInfo),
}

/// One pod's lifecycle state. See the module docs.
#[derive(Debug)]
pub struct PodMachine {
    pub uid: String,
    pub pod: Pod,
    pub rec: PodRecord,
    /// Started from a record of a previous agent process.
    pub adopted: bool,
    pub ctrs: Vec<Ctr>,
    pub policy: RestartPolicy,
    /// Reason shown on the pod before its network exists (e.g. no free IP).
    pub pod_reason: Option<(String, String)>,
    pub net_ready: bool,
    /// The pod's volumes are not set up (FailedMount): no container starts, none is
    /// due, and those waiting stay as they are (ContainerCreating), as the kubelet
    /// waits for every volume before it starts a container.
    pub hold_starts: bool,
    /// Evicted by this node (e.g. an emptyDir over its sizeLimit): the message. The pod
    /// is Failed with reason Evicted; nothing starts or restarts any more.
    pub evicted: Option<String>,
    last_sent: Option<PodStatus>,
    status_retry: Option<Instant>,
}

impl PodMachine {
    /// `rec`: the adopted record, or a fresh one (`adopted = false`).
    pub fn new(uid: String, pod: Pod, rec: PodRecord, adopted: bool) -> PodMachine {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(&spec.restart_policy);
        let n_init = spec.init_containers.len();
        let ctrs = spec
            .init_containers
            .iter()
            .chain(spec.containers.iter())
            .enumerate()
            .map(|(i, c)| {
                let r = rec.containers.iter().find(|r| r.name == c.name);
                Ctr {
                    spec: c.clone(),
                    init: i < n_init,
                    view: CView {
                        restart_count: r.map(|r| r.restart_count).unwrap_or(0),
                        ever_started: r.is_some_and(|r| r.started_at > 0),
                        last_exit: r.and_then(|r| r.last_exit.clone()).map(|e| (e, 0)),
                        ..CView::new(
                            &c.name,
                            CState::Waiting {
                                reason: reason::CONTAINER_CREATING.into(),
                                message: String::new(),
                            },
                        )
                    },
                    handle: None,
                    next_start: None,
                    streak: 0,
                    probes: Probes::default(),
                    kill: None,
                }
            })
            .collect();
        PodMachine {
            uid,
            pod,
            rec,
            adopted,
            ctrs,
            policy,
            pod_reason: None,
            net_ready: false,
            hold_starts: false,
            evicted: None,
            last_sent: None,
            status_retry: None,
        }
    }

    pub fn name(&self) -> String {
        self.pod.name().to_string()
    }

    /// The newest watch message; Some(stop) when the pod must go.
    pub fn on_msg(&mut self, msg: PodMsg) -> Option<Stop> {
        match msg {
            PodMsg::Gone => Some(Stop::Gone {
                grace: gone_grace(&self.pod),
            }),
            PodMsg::Pod(p) => {
                self.pod = *p;
                (self.pod.meta().deletion_timestamp != 0).then(|| Stop::Deleted {
                    grace: deletion_grace(&self.pod),
                })
            }
        }
    }

    /// The watch channel closed (the manager is gone).
    pub fn on_closed(&self) -> Stop {
        Stop::Gone {
            grace: deletion_grace(&self.pod),
        }
    }

    /// A pod that already finished (e.g. its state was lost) is not started again.
    pub fn finished_before_start(&self) -> bool {
        let p = self.pod.status.as_ref().map(|s| s.phase.as_str());
        !self.adopted && matches!(p, Some(ph::SUCCEEDED | ph::FAILED))
    }

    /// Network set-up failed: shown on the pod until it works.
    pub fn network_failed(&mut self, why: (String, String)) {
        self.pod_reason = Some(why);
    }

    /// The pod network exists with `ip`.
    pub fn network_created(&mut self, ip: std::net::Ipv4Addr, wall_ms: i64) {
        self.rec.ip = Some(ip);
        if self.rec.start_time == 0 {
            self.rec.start_time = wall_ms;
        }
    }

    /// From now on the pod runs (network created, or released already for a pod that
    /// had finished).
    pub fn network_ready(&mut self) {
        self.pod_reason = None;
        self.net_ready = true;
    }

    /// After the network is ready: for an adopted record keep live instances (returned:
    /// the executor follows them) and account for ones that ended while the agent was
    /// down; every other container starts now. `observe` says how a recorded instance
    /// looks now.
    pub fn adopt_or_schedule(
        &mut self,
        now: Instant,
        wall_ms: i64,
        mut observe: impl FnMut(&ContainerRecord, Handle) -> Observed,
    ) -> Vec<(usize, Handle)> {
        let mut follow = Vec::new();
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
                        reason: reason::COMPLETED.into(),
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
                    let h = Handle {
                        pid: r.pid.unwrap_or(0),
                        proc_start: r.proc_start.unwrap_or(0),
                        started_at: r.started_at,
                    };
                    match observe(&r, h) {
                        Observed::Alive => {
                            self.running(i, h, now);
                            follow.push((i, h));
                        }
                        Observed::Ended(exit) => {
                            let _ = wall_ms;
                            self.ctrs[i].handle = Some(h);
                            self.ctrs[i].view.state = CState::Running {
                                started_at: h.started_at,
                                pid: h.pid,
                            };
                            self.exited(i, h.pid, exit, now);
                        }
                    }
                }
                _ => {}
            }
        }
        self.schedule_next(now);
        follow
    }

    /// Whether every init container completed successfully.
    pub fn initialized(&self) -> bool {
        self.ctrs.iter().filter(|c| c.init).all(|c| {
            matches!(&c.view.state, CState::Terminated { exit, done: true, .. } if exit.exit_code == 0)
        })
    }

    /// Schedules what may start now: the first init container that has not completed
    /// (one at a time, in order), or, once all have, every app container not yet
    /// started or scheduled.
    fn schedule_next(&mut self, now: Instant) {
        let idle = |c: &Ctr| {
            c.handle.is_none()
                && c.next_start.is_none()
                && !matches!(c.view.state, CState::Terminated { done: true, .. })
                && !matches!(&c.view.state, CState::Waiting { reason: r, .. } if r == reason::CRASH_LOOP_BACK_OFF)
        };
        if let Some(i) = self.ctrs.iter().position(|c| {
            c.init
                && !matches!(&c.view.state, CState::Terminated { exit, done: true, .. } if exit.exit_code == 0)
        }) {
            let failed_for_good = matches!(self.ctrs[i].view.state, CState::Terminated { done: true, .. });
            if !failed_for_good && idle(&self.ctrs[i]) {
                self.ctrs[i].next_start = Some(now);
            }
            return;
        }
        for c in self.ctrs.iter_mut().filter(|c| !c.init) {
            if idle(c) {
                c.next_start = Some(now);
            }
        }
    }

    /// The exit assumed for an adopted instance that is gone without an exit file.
    pub fn lost_exit(wall_ms: i64) -> ExitInfo {
        ExitInfo {
            exit_code: 137,
            signal: None,
            reason: reason::ERROR.into(),
            message: "ended while the agent was down".into(),
            finished_at: wall_ms,
        }
    }

    /// The containers whose start is due at `now` (their timers are cleared).
    pub fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        if self.hold_starts || self.evicted.is_some() {
            return out;
        }
        for (i, c) in self.ctrs.iter_mut().enumerate() {
            if c.next_start.is_some_and(|t| t <= now) {
                c.next_start = None;
                out.push(i);
            }
        }
        out
    }

    fn retry_later(&mut self, i: usize, why: &str, message: String, now: Instant) {
        let c = &mut self.ctrs[i];
        let d = backoff(c.streak);
        c.streak += 1;
        c.next_start = Some(deadline_after(now, d));
        c.view.state = CState::Waiting {
            reason: why.into(),
            message,
        };
    }

    /// The image of container `i` names no program: with restart policy Never the
    /// container is done (exit 127), otherwise it is tried again after the back-off.
    pub fn image_not_found(&mut self, i: usize, message: String, now: Instant, wall_ms: i64) {
        if self.policy == RestartPolicy::Never {
            self.ctrs[i].view.state = CState::Terminated {
                exit: ExitInfo {
                    exit_code: 127,
                    signal: None,
                    reason: reason::IMAGE_NOT_FOUND.into(),
                    message,
                    finished_at: wall_ms,
                },
                started_at: 0,
                done: true,
            };
        } else {
            self.retry_later(i, reason::IMAGE_NOT_FOUND, message, now);
        }
    }

    /// The configuration of container `i` cannot be built (a reference that does not
    /// resolve): waiting with `CreateContainerConfigError`, tried again after the
    /// back-off.
    pub fn config_error(&mut self, i: usize, message: String, now: Instant) {
        self.retry_later(i, reason::CREATE_CONTAINER_CONFIG_ERROR, message, now);
    }

    /// The image of container `i` is not usable yet (not on the node, bad name):
    /// Waiting with Kubernetes' `reason` (ErrImagePull, ErrImageNeverPull, …) and tried
    /// again after the back-off whatever the restart policy, as the kubelet does (an
    /// image loaded meanwhile is picked up).
    pub fn image_unavailable(&mut self, i: usize, why: &str, message: String, now: Instant) {
        self.retry_later(i, why, message, now);
    }

    /// The runtime could not start container `i`: again after the back-off.
    pub fn start_failed(&mut self, i: usize, message: String, now: Instant) {
        self.retry_later(i, reason::START_ERROR, message, now);
    }

    /// Container `i` started as `h` at `now` (the executor follows it).
    pub fn started(&mut self, i: usize, h: Handle, now: Instant) {
        if self.ctrs[i].view.ever_started {
            self.ctrs[i].view.restart_count += 1;
        }
        self.running(i, h, now);
    }

    fn running(&mut self, i: usize, h: Handle, now: Instant) {
        let c = &mut self.ctrs[i];
        c.handle = Some(h);
        c.view.state = CState::Running {
            started_at: h.started_at,
            pid: h.pid,
        };
        c.view.ever_started = true;
        c.probes = Probes::for_container(&c.spec, now);
        c.kill = None;
    }

    /// The probe runs due at `now` (marked as running until their result comes).
    pub fn due_probes(&mut self, now: Instant) -> Vec<ProbeJob> {
        let mut out = Vec::new();
        for (i, c) in self.ctrs.iter_mut().enumerate() {
            let Some(h) = c.handle else { continue };
            if c.kill.is_some() {
                continue;
            }
            for (kind, probe, timeout) in c.probes.take_due(now) {
                out.push(ProbeJob {
                    ctr: i,
                    kind,
                    handle: h,
                    probe,
                    timeout,
                });
            }
        }
        out
    }

    /// A probe run of instance `pid` of container `i` ended. Stale results (another
    /// instance) are ignored. A liveness or startup failure starts a kill: SIGTERM now,
    /// SIGKILL after the pod's grace period; the restart follows the restart policy.
    pub fn probe_result(
        &mut self,
        i: usize,
        kind: ProbeKind,
        pid: i32,
        ok: bool,
        message: &str,
        now: Instant,
    ) -> ProbeAction {
        let grace = grace_from_secs(spec_grace(&self.pod));
        let Some(c) = self.ctrs.get_mut(i) else {
            return ProbeAction::None;
        };
        let Some(h) = c.handle.filter(|h| h.pid == pid) else {
            return ProbeAction::None;
        };
        if c.kill.is_some() {
            return ProbeAction::None;
        }
        match c.probes.result(kind, now, ok, message) {
            Verdict::None => ProbeAction::None,
            Verdict::Kill { message } => {
                // The kill ends with a signal: a non-zero exit.
                let restarts = if c.init {
                    self.policy != RestartPolicy::Never
                } else {
                    self.policy.restarts(137)
                };
                let killing = format!(
                    "Container {} failed {} probe{}",
                    c.spec.name,
                    kind.name().to_lowercase(),
                    if restarts { ", will be restarted" } else { "" }
                );
                let pre_stop = super::lifecycle::pre_stop(&c.spec).is_some();
                c.kill = Some(PendingKill {
                    pid,
                    at: deadline_after(now, grace),
                    message: format!("{killing}: {message}"),
                    killed: false,
                    hook: pre_stop,
                });
                ProbeAction::Kill {
                    handle: h,
                    pre_stop,
                    grace,
                    killing,
                }
            }
        }
    }

    /// The preStop hook run before a probe kill of instance `pid` of container `i`
    /// ended: the instance to SIGTERM now (None when stale). As the kubelet, the rest of
    /// the grace period follows, at least [`MIN_GRACE_AFTER_HOOK`].
    pub fn pre_stop_done(&mut self, i: usize, pid: i32, now: Instant) -> Option<Handle> {
        let c = self.ctrs.get_mut(i)?;
        let h = c.handle.filter(|h| h.pid == pid)?;
        let k = c.kill.as_mut().filter(|k| k.pid == pid && k.hook)?;
        k.hook = false;
        k.at = k.at.max(deadline_after(now, MIN_GRACE_AFTER_HOOK));
        Some(h)
    }

    /// The node evicts the pod (`message`, e.g. an emptyDir over its sizeLimit), as the
    /// kubelet's eviction manager: every running container is killed with
    /// [`EVICTION_GRACE`] (its preStop hook first, when it has one) and none restarts;
    /// the pod turns Failed with reason Evicted. Returns the kills to carry out:
    /// (container, instance, run the preStop hook first). Once only.
    pub fn evict(&mut self, message: String, now: Instant) -> Vec<(usize, Handle, bool)> {
        if self.evicted.is_some() {
            return Vec::new();
        }
        self.evicted = Some(message.clone());
        let mut out = Vec::new();
        for (i, c) in self.ctrs.iter_mut().enumerate() {
            c.next_start = None;
            let Some(h) = c.handle else { continue };
            if c.kill.is_some() {
                continue;
            }
            let hook = super::lifecycle::pre_stop(&c.spec).is_some();
            c.kill = Some(PendingKill {
                pid: h.pid,
                at: deadline_after(now, EVICTION_GRACE),
                message: message.clone(),
                killed: false,
                hook,
            });
            out.push((i, h, hook));
        }
        out
    }

    /// Instances whose probe kill reached its SIGKILL time (marked as killed).
    pub fn due_kills(&mut self, now: Instant) -> Vec<Handle> {
        let mut out = Vec::new();
        for c in &mut self.ctrs {
            if let (Some(k), Some(h)) = (&mut c.kill, c.handle) {
                if !k.killed && !k.hook && k.at <= now && k.pid == h.pid {
                    k.killed = true;
                    out.push(h);
                }
            }
        }
        out
    }

    /// The message of a probe kill under way for container `i`, if any.
    pub fn kill_message(&self, i: usize) -> Option<&str> {
        self.ctrs.get(i)?.kill.as_ref().map(|k| k.message.as_str())
    }

    /// Instance `pid` of container `i` ended. False when stale (not the instance
    /// followed). Restarts per policy: back-off 1 s doubling to 5 min, the streak
    /// reset by an instance that ran 10 minutes; `CrashLoopBackOff` while waiting.
    pub fn exited(&mut self, i: usize, pid: i32, exit: ExitInfo, now: Instant) -> bool {
        let Some(c) = self.ctrs.get_mut(i) else {
            return false;
        };
        if c.handle.map(|h| h.pid) != Some(pid) {
            return false;
        }
        let h = c.handle.take().unwrap();
        let init = c.init;
        let mut exit = exit;
        if let Some(k) = c.kill.take() {
            if exit.message.is_empty() {
                exit.message = k.message;
            }
        }
        c.probes = Probes::default();
        c.view.last_exit = Some((exit.clone(), h.started_at));
        // An init container is run again only when it failed (Always counts as OnFailure).
        let restart = self.evicted.is_none()
            && if init {
                exit.exit_code != 0 && self.policy != RestartPolicy::Never
            } else {
                self.policy.restarts(exit.exit_code)
            };
        let ran =
            Duration::from_millis(exit.finished_at.saturating_sub(h.started_at).max(0) as u64);
        if ran >= BACKOFF_RESET_AFTER {
            c.streak = 0;
        }
        if restart {
            let d = backoff(c.streak);
            c.streak += 1;
            c.next_start = Some(deadline_after(now, d));
            c.view.state = CState::Waiting {
                reason: reason::CRASH_LOOP_BACK_OFF.into(),
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
        let name = c.spec.name.clone();
        if let Some(r) = self.rec.containers.iter_mut().find(|r| r.name == name) {
            r.pid = None;
            r.proc_start = None;
            r.last_exit = Some(exit);
            r.done = !restart;
        }
        if init {
            self.schedule_next(now);
        }
        true
    }

    /// The record rebuilt from the live state (what the executor saves).
    pub fn record(&mut self) -> &PodRecord {
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
        &self.rec
    }

    fn views(&self) -> Vec<CView> {
        self.views_of(false)
    }

    /// The views of the init (`true`) or app containers.
    fn views_of(&self, init: bool) -> Vec<CView> {
        let initialized = self.initialized();
        self.ctrs
            .iter()
            .filter(|c| c.init == init)
            .map(|c| {
                let mut v = c.view.clone();
                let running = matches!(v.state, CState::Running { .. });
                v.started = running && c.probes.started();
                v.ready = running && c.kill.is_none() && c.probes.ready();
                if matches!(v.state, CState::Terminated { .. }) {
                    // The instance that ended is the state itself, not the last state.
                    v.last_exit = None;
                }
                if !init && !initialized {
                    if let CState::Waiting { reason: r, .. } = &mut v.state {
                        if r == reason::CONTAINER_CREATING {
                            *r = reason::POD_INITIALIZING.into();
                        }
                    }
                }
                if init && matches!(v.state, CState::Terminated { .. }) {
                    // A completed init container counts as ready (kubectl shows it so).
                    v.ready =
                        matches!(&v.state, CState::Terminated { exit, .. } if exit.exit_code == 0);
                }
                v
            })
            .collect()
    }

    /// The pod status as it stands.
    pub fn status(&self, host_ip: &str) -> PodStatus {
        let ip = if self.net_ready { self.rec.ip } else { None };
        let start = if self.net_ready {
            self.rec.start_time
        } else {
            0
        };
        let init_views = self.views_of(true);
        let mut st = pod_status(
            &self.views(),
            ip,
            host_ip,
            start,
            self.pod_reason
                .as_ref()
                .map(|(r, m)| (r.as_str(), m.as_str())),
        );
        let empty = Default::default();
        st.qos_class = kube_lite_core::quantity::qos_class(self.ctrs.iter().map(|c| {
            c.spec
                .resources
                .as_ref()
                .map_or((&empty, &empty), |r| (&r.requests, &r.limits))
        }))
        .to_string();
        if !init_views.is_empty() {
            apply_init(&mut st, &init_views, self.initialized());
        }
        if let Some(m) = &self.evicted {
            st.phase = ph::FAILED.into();
            st.reason = reason::EVICTED.into();
            st.message = m.clone();
            for c in &mut st.conditions {
                if c.r#type == kube_lite_core::consts::condition::READY {
                    c.status = kube_lite_core::consts::condition_status::FALSE.into();
                }
            }
        }
        st
    }

    /// The pod phase now (init containers included).
    pub fn phase_now(&self) -> String {
        self.status("").phase
    }

    /// The status to send now, if any: not what was sent last (unless a retry is due),
    /// and not what the apiserver holds already (an adopted pod).
    pub fn status_to_push(&mut self, host_ip: &str) -> Option<PodStatus> {
        let st = self.status(host_ip);
        if self.last_sent.as_ref() == Some(&st) && self.status_retry.is_none() {
            return None;
        }
        if self.last_sent.is_none() && self.pod.status.as_ref() == Some(&st) {
            self.last_sent = Some(st);
            return None;
        }
        Some(st)
    }

    /// The apiserver took `st` (or the pod is gone there: nothing more to send).
    pub fn status_pushed(&mut self, st: PodStatus) {
        self.last_sent = Some(st);
        self.status_retry = None;
    }

    /// The status update failed: again after [`STATUS_RETRY`].
    pub fn status_push_failed(&mut self, now: Instant) {
        self.status_retry = Some(deadline_after(now, STATUS_RETRY));
    }

    /// When the executor must act next without an outside event.
    pub fn next_wake(&self) -> Option<Instant> {
        self.ctrs
            .iter()
            .filter(|_| !self.hold_starts && self.evicted.is_none())
            .filter_map(|c| c.next_start)
            .chain(self.status_retry)
            .chain(
                self.ctrs
                    .iter()
                    .filter(|c| c.handle.is_some() && c.kill.is_none())
                    .filter_map(|c| c.probes.next_due()),
            )
            .chain(self.ctrs.iter().filter_map(|c| {
                c.kill
                    .as_ref()
                    .filter(|k| !k.killed && !k.hook)
                    .map(|k| k.at)
            }))
            .min()
    }

    /// `Some(phase)` when the pod finished for good (Succeeded/Failed) and still holds
    /// its network: Kubernetes gives back network and IP at once.
    pub fn finished_holding_network(&self) -> Option<&'static str> {
        if self.evicted.is_some() && self.ctrs.iter().any(|c| c.handle.is_some()) {
            // Not before its containers are gone.
            return None;
        }
        let p = match self.phase_now().as_str() {
            ph::SUCCEEDED => ph::SUCCEEDED,
            ph::FAILED => ph::FAILED,
            _ => return None,
        };
        (!self.rec.network_released).then_some(p)
    }

    pub fn network_released(&mut self) {
        self.rec.network_released = true;
    }

    /// Whether stopping must release a pod network (else only IPAM entry and state).
    pub fn holds_network(&self) -> bool {
        self.rec.ip.is_some() || self.net_ready
    }

    /// Instances to stop: the ones followed, plus those of an adopted record the
    /// worker never got to (a pod deleted while the agent was down).
    pub fn live_handles(&self) -> Vec<Handle> {
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
        live
    }
}

/// Init containers on the pod status: `init_container_statuses`, and while they have
/// not all completed: phase Pending (Failed when one failed for good), not Ready, the
/// failing init container's reason on the pod.
pub fn apply_init(st: &mut PodStatus, init: &[CView], initialized: bool) {
    let s = pod_status(init, None, "", 0, None);
    st.init_container_statuses = s.container_statuses;
    for (cs, v) in st.init_container_statuses.iter_mut().zip(init) {
        cs.ready = v.ready;
    }
    if initialized {
        return;
    }
    let failed = init.iter().any(
        |c| matches!(&c.state, CState::Terminated { exit, done: true, .. } if exit.exit_code != 0),
    );
    st.phase = if failed { ph::FAILED } else { ph::PENDING }.into();
    for c in &mut st.conditions {
        if c.r#type == kube_lite_core::consts::condition::READY {
            c.status = kube_lite_core::consts::condition_status::FALSE.into();
        }
    }
    if let Some((r, m)) = init.iter().find_map(|c| match &c.state {
        CState::Waiting { reason, message } if reason == reason::CRASH_LOOP_BACK_OFF => {
            Some((reason.clone(), message.clone()))
        }
        CState::Terminated {
            exit, done: true, ..
        } if exit.exit_code != 0 => Some((exit.reason.clone(), exit.message.clone())),
        _ => None,
    }) {
        st.reason = r;
        st.message = m;
    }
}

/// What to do with one record found in the state dir after an agent restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// The apiserver still binds the pod here: adopt it.
    Adopt(PodRecord, Box<Pod>),
    /// Deleted while the agent was down: kill what runs, release everything.
    TearDown(PodRecord),
}

/// Records × the apiserver's pods of this node → adopt or tear down, in record order.
pub fn plan_recovery(records: Vec<PodRecord>, pods: Vec<Pod>) -> Vec<Recovery> {
    let mut by_uid: HashMap<String, Pod> =
        pods.into_iter().map(|p| (p.uid().to_string(), p)).collect();
    records
        .into_iter()
        .map(|rec| match by_uid.remove(&rec.uid) {
            Some(p) => Recovery::Adopt(rec, Box::new(p)),
            None => Recovery::TearDown(rec),
        })
        .collect()
}

/// Reconciles an adopted record with the live instances of its pod found by marker
/// (`found`: `(container, handle)`, oldest first). Per container: the recorded instance
/// if it is among them; else (the agent died between spawning and recording) the newest
/// one found is adopted into the record. Every other instance — a second instance of a
/// container, or one of a container the record does not know — is returned, to be
/// killed: a container never has two live instances.
pub fn reconcile_instances(rec: &mut PodRecord, found: &[(String, Handle)]) -> Vec<Handle> {
    let mut kill = Vec::new();
    for (name, h) in found {
        if !rec.containers.iter().any(|r| &r.name == name) {
            kill.push(*h);
        }
    }
    for r in rec.containers.iter_mut() {
        let mine: Vec<Handle> = found
            .iter()
            .filter(|(n, _)| *n == r.name)
            .map(|(_, h)| *h)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let recorded = mine
            .iter()
            .find(|h| Some(h.pid) == r.pid && Some(h.proc_start) == r.proc_start)
            .copied();
        let keep = match recorded {
            Some(h) => h,
            None => {
                let h = *mine.last().unwrap();
                if r.started_at > 0 {
                    r.restart_count += 1;
                }
                r.pid = Some(h.pid);
                r.proc_start = Some(h.proc_start);
                r.started_at = h.started_at;
                r.done = false;
                h
            }
        };
        kill.extend(mine.into_iter().filter(|h| *h != keep));
    }
    kill
}

/// Pod netns names of ours (`<prefix><uuid>`) whose uid is not kept, with their uid.
pub fn orphan_netns<'a>(
    list: &'a [String],
    prefix: &str,
    kept: &HashSet<String>,
) -> Vec<(&'a str, &'a str)> {
    list.iter()
        .filter_map(|ns| {
            let uid = ns.strip_prefix(prefix)?;
            // Only names that look like ours: a uuid after the prefix.
            let ours = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            (ours && !kept.contains(uid)).then_some((ns.as_str(), uid))
        })
        .collect()
}

/// Host veths no kept pod owns.
pub fn orphan_host_ifs<'a>(ifs: &'a [String], kept: &HashSet<String>) -> Vec<&'a str> {
    let owned: HashSet<String> = kept
        .iter()
        .map(|u| kube_lite_net::host_if_name(u))
        .collect();
    ifs.iter()
        .filter(|i| !owned.contains(*i))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests;
