//! Lifecycle hooks (issue 13): postStart right after a container starts, preStop before
//! its SIGTERM when the pod stops or a liveness/startup probe kills it. A hook runs as a probe does ([`super::prober`]): exec
//! in the container (its namespaces, user, environment), httpGet from the node into the
//! pod network. Pure: which hook, as which job; the worker runs them.
//!
//! As the kubelet: a failed postStart kills the container (FailedPostStartHook; the
//! restart policy decides what follows) with a `Warning FailedPostStartHook` event
//! and `Normal Killing`; a failed preStop is a `Warning FailedPreStopHook` event and
//! the SIGTERM follows anyway; preStop counts against the grace period (before a probe
//! kill, at least 2 s are left after it). Unlike the kubelet, the container reads Running while its postStart
//! hook runs.

use super::machine::ProbeJob;
use super::probe::Kind;
use crate::runtime::Handle;
use kube_lite_proto::v1::{Container, LifecycleHandler, Probe};
use std::time::Duration;

/// Longest a postStart hook may run (Kubernetes has none; a hung hook would hold the
/// container forever).
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn post_start(c: &Container) -> Option<&LifecycleHandler> {
    c.lifecycle.as_ref()?.post_start.as_ref()
}

pub fn pre_stop(c: &Container) -> Option<&LifecycleHandler> {
    c.lifecycle.as_ref()?.pre_stop.as_ref()
}

/// The hook `h` of container `ctr` (instance `handle`) as a one-off probe job.
pub fn job(ctr: usize, handle: Handle, h: &LifecycleHandler, timeout: Duration) -> ProbeJob {
    ProbeJob {
        ctr,
        kind: Kind::Liveness,
        handle,
        probe: Probe {
            exec: h.exec.clone(),
            http_get: h.http_get.clone(),
            ..Default::default()
        },
        timeout: timeout.max(Duration::from_secs(1)),
    }
}

/// The kubelet's message of a failed hook (the FailedPostStartHook /
/// FailedPreStopHook event): `Exec lifecycle hook ([sh -c exit 3]) for Container "c"
/// in Pod "default/web" failed - error: <why>`, or `HTTP lifecycle hook (/path) …`.
pub fn failure_message(h: &LifecycleHandler, container: &str, pod: &str, why: &str) -> String {
    let what = match (&h.exec, &h.http_get) {
        (Some(e), _) => format!("Exec lifecycle hook ([{}])", e.command.join(" ")),
        (None, Some(g)) => format!("HTTP lifecycle hook ({})", g.path),
        (None, None) => "Lifecycle hook".to_string(),
    };
    format!("{what} for Container {container:?} in Pod {pod:?} failed - error: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{ExecAction, Lifecycle};

    #[test]
    fn hooks_become_jobs() {
        let c = Container {
            lifecycle: Some(Lifecycle {
                post_start: None,
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: vec!["sh".into(), "-c".into(), "sleep 1".into()],
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        assert!(post_start(&c).is_none());
        let h = Handle {
            pid: 7,
            proc_start: 1,
            started_at: 0,
        };
        let j = job(2, h, pre_stop(&c).unwrap(), Duration::ZERO);
        assert_eq!((j.ctr, j.handle, j.timeout), (2, h, Duration::from_secs(1)));
        assert_eq!(j.probe.exec.clone().unwrap().command[2], "sleep 1");
        assert_eq!(
            failure_message(pre_stop(&c).unwrap(), "app", "default/web", "timeout"),
            "Exec lifecycle hook ([sh -c sleep 1]) for Container \"app\" in Pod \"default/web\" failed - error: timeout"
        );
    }
}
