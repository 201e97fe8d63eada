//! Probe bookkeeping as pure state: when each probe of a container instance is due, how
//! results cross the success/failure thresholds, and what the container's `started`
//! and `ready` are. No I/O, no clock of its own; the executor runs the probes
//! ([`super::prober`]) and feeds results back through [`super::machine::PodMachine`].
//!
//! Kubernetes' rules:
//! - the first run of each probe is `initial_delay_seconds` after the instance started,
//!   then every `period_seconds`; a result counts once `success_threshold` (resp.
//!   `failure_threshold`) consecutive runs agree;
//! - a startup probe holds the other two off until it succeeds (`started`); its failure
//!   (like a liveness failure) has the container killed and restarted per policy;
//! - `ready` is false until the readiness probe succeeds, and follows it after; without
//!   a readiness probe a started container is ready.
//!
//! Our choice where Kubernetes is silent on timing: until a readiness probe's first
//! success, a failed run is retried sooner than the period (25 ms doubling up to the
//! period), so a pod becomes Ready within milliseconds of its server listening instead of
//! a period later; failures before the first success do not change anything (the
//! container is not ready yet).

use kube_lite_proto::v1::{Container, Probe};
use std::time::Duration;
use tokio::time::Instant;

/// First retry of a readiness probe that has not yet succeeded.
pub const READINESS_FAST_RETRY: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

/// One probe of one container instance.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub kind: Kind,
    pub probe: Probe,
    /// The current result (None: no result yet).
    pub result: Option<bool>,
    ok_streak: u32,
    fail_streak: u32,
    /// When the next run is due.
    pub next: Instant,
    /// A run is under way (no second one until it reports).
    pub in_flight: bool,
    fast: Duration,
    /// The last failure's message.
    pub last_message: String,
}

impl Tracker {
    pub fn new(kind: Kind, probe: Probe, started: Instant) -> Tracker {
        let next = started + secs(probe.initial_delay_seconds);
        Tracker {
            kind,
            probe,
            result: None,
            ok_streak: 0,
            fail_streak: 0,
            next,
            in_flight: false,
            fast: READINESS_FAST_RETRY,
            last_message: String::new(),
        }
    }

    pub fn period(&self) -> Duration {
        secs(self.probe.period_seconds).max(Duration::from_secs(1))
    }

    pub fn timeout(&self) -> Duration {
        secs(self.probe.timeout_seconds).max(Duration::from_secs(1))
    }

    pub fn due(&self, now: Instant) -> bool {
        !self.in_flight && self.next <= now
    }

    /// A run starts now; the next one is due a period later.
    pub fn begin(&mut self, now: Instant) {
        self.in_flight = true;
        self.next = now + self.period();
    }

    /// A run ended. Returns the new result when it changed.
    pub fn done(&mut self, now: Instant, ok: bool, message: &str) -> Option<bool> {
        self.in_flight = false;
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            self.last_message = message.to_string();
        }
        let before = self.result;
        if ok && self.ok_streak >= self.probe.success_threshold.max(1) as u32 {
            self.result = Some(true);
        } else if !ok && self.fail_streak >= self.probe.failure_threshold.max(1) as u32 {
            self.result = Some(false);
        }
        if !ok && self.kind == Kind::Readiness && self.result != Some(true) {
            let never_ready = before != Some(true) && self.result != Some(true);
            if never_ready {
                // Not ready since the start: try again soon (see the module docs).
                self.next = now + self.fast.min(self.period());
                self.fast = (self.fast * 2).min(self.period());
            }
        }
        (self.result != before).then_some(self.result.unwrap_or(false))
    }
}

/// The probes of one container instance and what they make of it.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    pub startup: Option<Tracker>,
    pub liveness: Option<Tracker>,
    pub readiness: Option<Tracker>,
}

/// What a probe result means for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do (or only `ready`/`started` changed).
    None,
    /// Kill the instance (liveness or startup failure): restart per policy.
    Kill { message: String },
}

impl Probes {
    /// The probes of `c` for an instance that started at `started`.
    pub fn for_container(c: &Container, started: Instant) -> Probes {
        let t = |k, p: &Option<Probe>| p.clone().map(|p| Tracker::new(k, p, started));
        Probes {
            startup: t(Kind::Startup, &c.startup_probe),
            liveness: t(Kind::Liveness, &c.liveness_probe),
            readiness: t(Kind::Readiness, &c.readiness_probe),
        }
    }

    /// Startup probe passed (or none).
    pub fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|s| s.result == Some(true))
    }

    /// Started, and the readiness probe passes (or none).
    pub fn ready(&self) -> bool {
        self.started()
            && self
                .readiness
                .as_ref()
                .is_none_or(|r| r.result == Some(true))
    }

    pub fn get_mut(&mut self, k: Kind) -> Option<&mut Tracker> {
        match k {
            Kind::Startup => self.startup.as_mut(),
            Kind::Liveness => self.liveness.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
        }
    }

    /// The probes that may run now (the startup probe alone until it passed).
    fn active(&mut self) -> Vec<&mut Tracker> {
        if !self.started() {
            return self.startup.iter_mut().collect();
        }
        self.liveness
            .iter_mut()
            .chain(self.readiness.iter_mut())
            .collect()
    }

    /// The probes due at `now`, marked as running.
    pub fn take_due(&mut self, now: Instant) -> Vec<(Kind, Probe, Duration)> {
        let mut out = Vec::new();
        for t in self.active() {
            if t.due(now) {
                t.begin(now);
                out.push((t.kind, t.probe.clone(), t.timeout()));
            }
        }
        out
    }

    /// When a probe is due next (None: nothing scheduled).
    pub fn next_due(&self) -> Option<Instant> {
        let ts: Vec<&Tracker> = if !self.started() {
            self.startup.iter().collect()
        } else {
            self.liveness.iter().chain(self.readiness.iter()).collect()
        };
        ts.into_iter()
            .filter(|t| !t.in_flight)
            .map(|t| t.next)
            .min()
    }

    /// A run of probe `k` ended.
    pub fn result(&mut self, k: Kind, now: Instant, ok: bool, message: &str) -> Verdict {
        let Some(t) = self.get_mut(k) else {
            return Verdict::None;
        };
        let changed = t.done(now, ok, message);
        match (k, changed) {
            (Kind::Liveness | Kind::Startup, Some(false)) => Verdict::Kill {
                message: format!("{} probe failed: {message}", k.name()),
            },
            (Kind::Startup, Some(true)) => {
                // Liveness and readiness start now (their initial delay counts from here).
                for t in self.liveness.iter_mut().chain(self.readiness.iter_mut()) {
                    t.next = now + secs(t.probe.initial_delay_seconds);
                }
                Verdict::None
            }
            _ => Verdict::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{ExecAction, TcpSocketAction};

    fn probe(period: i32, fail: i32, success: i32, delay: i32) -> Probe {
        Probe {
            tcp_socket: Some(TcpSocketAction {
                port: 80,
                ..Default::default()
            }),
            period_seconds: period,
            timeout_seconds: 1,
            failure_threshold: fail,
            success_threshold: success,
            initial_delay_seconds: delay,
            ..Default::default()
        }
    }

    fn ctr(startup: Option<Probe>, live: Option<Probe>, ready: Option<Probe>) -> Container {
        Container {
            name: "c".into(),
            startup_probe: startup,
            liveness_probe: live,
            readiness_probe: ready,
            ..Default::default()
        }
    }

    #[test]
    fn no_probes_means_started_and_ready() {
        let p = Probes::for_container(&ctr(None, None, None), Instant::now());
        assert!(p.started() && p.ready());
        assert_eq!(p.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_thresholds_with_fast_first_retries() {
        let t0 = Instant::now();
        let mut p = Probes::for_container(&ctr(None, None, Some(probe(10, 3, 2, 1))), t0);
        assert!(!p.ready(), "not ready before the first success");
        assert!(p.take_due(t0).is_empty(), "initial delay");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(p.take_due(t1).len(), 1);
        assert!(p.take_due(t1).is_empty(), "one run at a time");
        assert_eq!(
            p.result(Kind::Readiness, t1, false, "refused"),
            Verdict::None
        );
        // Not ready yet: retried after 25 ms, then 50 ms, not after the 10 s period.
        assert_eq!(p.next_due(), Some(t1 + Duration::from_millis(25)));
        let t2 = t1 + Duration::from_millis(25);
        p.take_due(t2);
        p.result(Kind::Readiness, t2, false, "refused");
        assert_eq!(p.next_due(), Some(t2 + Duration::from_millis(50)));
        // Two successes in a row (success_threshold 2) make it ready.
        let t3 = t2 + Duration::from_millis(50);
        p.take_due(t3);
        p.result(Kind::Readiness, t3, true, "");
        assert!(!p.ready());
        assert_eq!(
            p.next_due(),
            Some(t3 + Duration::from_secs(10)),
            "period after a success"
        );
        let t4 = t3 + Duration::from_secs(10);
        p.take_due(t4);
        p.result(Kind::Readiness, t4, true, "");
        assert!(p.ready());
        // Three failures (failure_threshold 3) make it unready; retries at the period.
        let mut t = t4;
        for n in 1..=3 {
            t += Duration::from_secs(10);
            assert_eq!(p.take_due(t).len(), 1);
            p.result(
                Kind::Readiness,
                t,
                false,
                "HTTP probe failed with statuscode: 500",
            );
            assert_eq!(p.ready(), n < 3, "after {n} failures");
            assert_eq!(p.next_due(), Some(t + Duration::from_secs(10)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_kills_after_failure_threshold() {
        let t0 = Instant::now();
        let mut p = Probes::for_container(&ctr(None, Some(probe(1, 2, 1, 0)), None), t0);
        assert!(p.ready(), "liveness alone does not gate readiness");
        p.take_due(t0);
        assert_eq!(p.result(Kind::Liveness, t0, false, "x"), Verdict::None);
        let t1 = t0 + Duration::from_secs(1);
        p.take_due(t1);
        assert_eq!(
            p.result(
                Kind::Liveness,
                t1,
                false,
                "dial tcp 10.0.1.2:80: connection refused"
            ),
            Verdict::Kill {
                message: "Liveness probe failed: dial tcp 10.0.1.2:80: connection refused".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_probe_holds_the_others_off() {
        let t0 = Instant::now();
        let exec = Probe {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            ..probe(1, 3, 1, 0)
        };
        let mut p = Probes::for_container(
            &ctr(Some(exec), Some(probe(1, 1, 1, 5)), Some(probe(1, 1, 1, 0))),
            t0,
        );
        assert!(!p.started() && !p.ready());
        let due = p.take_due(t0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, Kind::Startup);
        p.result(Kind::Startup, t0, false, "no");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            p.take_due(t1).iter().map(|d| d.0).collect::<Vec<_>>(),
            [Kind::Startup]
        );
        p.result(Kind::Startup, t1, true, "");
        assert!(p.started());
        assert!(!p.ready(), "readiness not yet run");
        // The liveness delay (5 s) counts from the startup success.
        let kinds: Vec<Kind> = p.take_due(t1).iter().map(|d| d.0).collect();
        assert_eq!(kinds, [Kind::Readiness]);
        assert_eq!(p.next_due(), Some(t1 + Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn startup_failure_kills() {
        let t0 = Instant::now();
        let mut p = Probes::for_container(&ctr(Some(probe(1, 2, 1, 0)), None, None), t0);
        p.take_due(t0);
        p.result(Kind::Startup, t0, false, "a");
        let t1 = t0 + Duration::from_secs(1);
        p.take_due(t1);
        assert!(matches!(
            p.result(Kind::Startup, t1, false, "b"),
            Verdict::Kill { message } if message == "Startup probe failed: b"
        ));
    }
}
