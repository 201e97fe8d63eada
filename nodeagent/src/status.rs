//! Pure pod-status logic: container states → pod phase and `PodStatus`, restart
//! decisions and back-off. No I/O; unit-tested.
//!
//! Restart back-off (our choice, Kubernetes-like): 1 s after the first exit, doubling
//! (1, 2, 4, … s) up to 5 minutes; the sequence starts over when an instance ran at
//! least 10 minutes. While waiting the container is `Waiting` with reason
//! `CrashLoopBackOff`.

use crate::state::ExitInfo;
use kube_lite_core::consts::{
    condition, condition_status, container_state, phase, reason, restart_policy,
};
use kube_lite_proto::v1::{ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus};
use std::time::Duration;

pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// An instance that ran this long resets the back-off.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// Delay before restart number `n` of a crash loop (n = 0 for the first restart).
pub fn backoff(n: u32) -> Duration {
    let f = 1u64.checked_shl(n.min(20)).unwrap_or(u64::MAX);
    BACKOFF_BASE
        .checked_mul(f.min(u32::MAX as u64) as u32)
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> RestartPolicy {
        match s {
            restart_policy::ON_FAILURE => RestartPolicy::OnFailure,
            restart_policy::NEVER => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that ended with `exit_code` starts again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// What one container is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CState {
    /// Not running: never started yet, or waiting for a restart.
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: i64,
        pid: i32,
    },
    /// Ended. `done` = will not be restarted.
    Terminated {
        exit: ExitInfo,
        started_at: i64,
        done: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CView {
    pub name: String,
    pub state: CState,
    pub restart_count: i32,
    /// Whether any instance has started (for Pending vs Running).
    pub ever_started: bool,
    /// Running and its startup probe passed (or it has none).
    pub started: bool,
    /// Running, started, and its readiness probe passes (or it has none).
    pub ready: bool,
    /// How the previous instance ended (`lastState.terminated`), if one did.
    pub last_exit: Option<(ExitInfo, i64)>,
}

impl CView {
    /// A container that has not started yet.
    pub fn new(name: &str, state: CState) -> CView {
        CView {
            name: name.to_string(),
            state,
            restart_count: 0,
            ever_started: false,
            started: false,
            ready: false,
            last_exit: None,
        }
    }
}

/// Kubernetes' phase rules.
pub fn phase(containers: &[CView]) -> &'static str {
    if containers.is_empty() {
        return phase::PENDING;
    }
    let all_done = containers
        .iter()
        .all(|c| matches!(c.state, CState::Terminated { done: true, .. }));
    if all_done {
        let ok = containers
            .iter()
            .all(|c| matches!(&c.state, CState::Terminated { exit, .. } if exit.exit_code == 0));
        return if ok { phase::SUCCEEDED } else { phase::FAILED };
    }
    if containers.iter().any(|c| !c.ever_started) {
        // A container that never ran and will never run makes the pod Failed.
        if containers.iter().all(|c| match &c.state {
            CState::Terminated { done, .. } => *done,
            CState::Waiting { .. } => false,
            CState::Running { .. } => false,
        }) {
            return phase::FAILED;
        }
        return phase::PENDING;
    }
    phase::RUNNING
}

/// The full status the agent reports.
pub fn pod_status(
    containers: &[CView],
    pod_ip: Option<std::net::Ipv4Addr>,
    host_ip: &str,
    start_time: i64,
    pod_reason: Option<(&str, &str)>,
) -> PodStatus {
    let phase = phase(containers).to_string();
    let statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| {
            let mut s = ContainerStatus {
                name: c.name.clone(),
                restart_count: c.restart_count,
                ..Default::default()
            };
            match &c.state {
                CState::Waiting { reason, message } => {
                    s.state = container_state::WAITING.into();
                    s.reason = reason.clone();
                    s.message = message.clone();
                }
                CState::Running { started_at, pid } => {
                    s.state = container_state::RUNNING.into();
                    s.started_at = *started_at;
                    s.pid = *pid;
                    s.ready = c.ready;
                    s.started = c.started;
                }
                CState::Terminated {
                    exit, started_at, ..
                } => {
                    s.state = container_state::TERMINATED.into();
                    s.reason = exit.reason.clone();
                    s.message = exit.message.clone();
                    s.exit_code = exit.exit_code;
                    s.started_at = *started_at;
                    s.finished_at = exit.finished_at;
                }
            }
            s.last_state = c
                .last_exit
                .as_ref()
                .map(|(e, started_at)| ContainerStateTerminated {
                    exit_code: e.exit_code,
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                    started_at: *started_at,
                    finished_at: e.finished_at,
                });
            s
        })
        .collect();
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let (reason, message) = match pod_reason {
        Some((r, m)) => (r.to_string(), m.to_string()),
        None => {
            // Surface the first container's trouble on the pod (what `get pods` shows).
            match containers.iter().find_map(|c| match &c.state {
                CState::Waiting { reason, message }
                    if !reason.is_empty() && reason != reason::CONTAINER_CREATING =>
                {
                    Some((reason.clone(), message.clone()))
                }
                _ => None,
            }) {
                Some(x)
                    if phase != phase::RUNNING
                        || x.0 == reason::CRASH_LOOP_BACK_OFF
                        || x.0 == reason::IMAGE_NOT_FOUND =>
                {
                    x
                }
                // A pod that failed because a program could not even start says why.
                _ => containers
                    .iter()
                    .find_map(|c| match &c.state {
                        CState::Terminated {
                            exit, done: true, ..
                        } if phase == phase::FAILED
                            && (exit.reason == reason::IMAGE_NOT_FOUND
                                || exit.reason == reason::START_ERROR) =>
                        {
                            Some((exit.reason.clone(), exit.message.clone()))
                        }
                        _ => None,
                    })
                    .unwrap_or_default(),
            }
        }
    };
    PodStatus {
        phase,
        pod_ip: pod_ip.map(|i| i.to_string()).unwrap_or_default(),
        host_ip: host_ip.to_string(),
        start_time,
        container_statuses: statuses,
        reason,
        message,
        conditions: vec![PodCondition {
            r#type: condition::READY.into(),
            status: if all_ready {
                condition_status::TRUE
            } else {
                condition_status::FALSE
            }
            .into(),
            reason: String::new(),
            message: String::new(),
        }],
        qos_class: String::new(),
        init_container_statuses: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitInfo {
        ExitInfo {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            finished_at: 9,
        }
    }

    fn c(state: CState, started: bool) -> CView {
        CView {
            ever_started: started,
            ..CView::new("c", state)
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn restart_policies() {
        assert!(RestartPolicy::parse("Always").restarts(0));
        assert!(RestartPolicy::parse("").restarts(1));
        assert!(!RestartPolicy::parse("OnFailure").restarts(0));
        assert!(RestartPolicy::parse("OnFailure").restarts(2));
        assert!(!RestartPolicy::parse("Never").restarts(2));
    }

    #[test]
    fn phases() {
        let waiting = CState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        };
        let running = CState::Running {
            started_at: 1,
            pid: 5,
        };
        assert_eq!(phase(&[c(waiting.clone(), false)]), "Pending");
        assert_eq!(phase(&[c(running.clone(), true)]), "Running");
        assert_eq!(
            phase(&[c(running, true), c(waiting.clone(), false)]),
            "Pending"
        );
        let done_ok = CState::Terminated {
            exit: exit(0),
            started_at: 1,
            done: true,
        };
        let done_bad = CState::Terminated {
            exit: exit(3),
            started_at: 1,
            done: true,
        };
        let restarting = CState::Terminated {
            exit: exit(3),
            started_at: 1,
            done: false,
        };
        assert_eq!(phase(&[c(done_ok.clone(), true)]), "Succeeded");
        assert_eq!(
            phase(&[c(done_ok, true), c(done_bad.clone(), true)]),
            "Failed"
        );
        assert_eq!(phase(&[c(restarting, true)]), "Running");
        let backoff = CState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
        };
        assert_eq!(phase(&[c(backoff, true)]), "Running");
        // Never started and never will (e.g. image missing with Never): Failed.
        let never = CState::Terminated {
            exit: ExitInfo {
                reason: "ImageNotFound".into(),
                ..exit(127)
            },
            started_at: 0,
            done: true,
        };
        assert_eq!(phase(&[c(never.clone(), false)]), "Failed");
        let s = pod_status(&[c(never, false)], None, "h", 0, None);
        assert_eq!(s.reason, "ImageNotFound");
    }

    #[test]
    fn status_carries_ip_reason_and_container_states() {
        let v = vec![CView {
            restart_count: 2,
            ..CView::new(
                "web",
                CState::Waiting {
                    reason: "ImageNotFound".into(),
                    message: "image \"nope\": no such program".into(),
                },
            )
        }];
        let s = pod_status(
            &v,
            Some("10.0.1.2".parse().unwrap()),
            "192.168.1.1",
            7,
            None,
        );
        assert_eq!(s.phase, "Pending");
        assert_eq!(s.pod_ip, "10.0.1.2");
        assert_eq!(s.host_ip, "192.168.1.1");
        assert_eq!(s.reason, "ImageNotFound");
        assert_eq!(s.container_statuses[0].state, "Waiting");
        assert_eq!(s.container_statuses[0].restart_count, 2);
        let s = pod_status(&[], None, "h", 0, Some(("no free IP in 10.0.1.0/29", "m")));
        assert_eq!(s.reason, "no free IP in 10.0.1.0/29");
        assert_eq!(s.pod_ip, "");
    }

    #[test]
    fn readiness_sets_container_ready_and_the_ready_condition() {
        let running = CState::Running {
            started_at: 1,
            pid: 5,
        };
        let ready = CView {
            ever_started: true,
            started: true,
            ready: true,
            ..CView::new("a", running.clone())
        };
        let unready = CView {
            ever_started: true,
            started: true,
            last_exit: Some((exit(137), 1)),
            ..CView::new("b", running)
        };
        let s = pod_status(&[ready.clone(), unready], None, "h", 0, None);
        assert_eq!(s.phase, "Running");
        assert!(s.container_statuses[0].ready && s.container_statuses[0].started);
        assert!(!s.container_statuses[1].ready);
        assert_eq!(
            s.container_statuses[1]
                .last_state
                .as_ref()
                .unwrap()
                .exit_code,
            137
        );
        assert_eq!(s.conditions[0].r#type, "Ready");
        assert_eq!(s.conditions[0].status, "False");
        let s = pod_status(&[ready], None, "h", 0, None);
        assert_eq!(s.conditions[0].status, "True");
    }
}
