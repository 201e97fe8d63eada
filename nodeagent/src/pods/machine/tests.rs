//! The pod state machine, driven by hand with an explicit clock. No root, no I/O.

use super::*;
use kube_lite_proto::v1::{ObjectMeta, PodSpec};

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

fn web(policy: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "sh".into(),
                ..Default::default()
            }],
            restart_policy: policy.into(),
            termination_grace_period_seconds: 30,
            ..Default::default()
        }),
        status: None,
    }
}

fn rec() -> PodRecord {
    PodRecord {
        uid: "u1".into(),
        name: "web".into(),
        namespace: "default".into(),
        netns: "kl-u1".into(),
        host_if: "klv0".into(),
        ..Default::default()
    }
}

fn machine(policy: &str) -> PodMachine {
    PodMachine::new("u1".into(), web(policy), rec(), false)
}

fn h(pid: i32, started_at: i64) -> Handle {
    Handle {
        pid,
        proc_start: 1,
        started_at,
    }
}

fn exit(code: i32, finished_at: i64) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        signal: None,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message: String::new(),
        finished_at,
    }
}

/// A machine whose network is ready and whose container is due at `t0`.
fn running_machine(policy: &str, t0: Instant) -> PodMachine {
    let mut m = machine(policy);
    m.network_created("10.0.1.2".parse().unwrap(), 1000);
    m.network_ready();
    assert!(m
        .adopt_or_schedule(t0, 1000, |_, _| unreachable!())
        .is_empty());
    assert_eq!(m.due(t0), vec![0]);
    m
}

fn waiting_reason(m: &PodMachine) -> (String, String) {
    match &m.ctrs[0].view.state {
        CState::Waiting { reason, message } => (reason.clone(), message.clone()),
        s => panic!("not waiting: {s:?}"),
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

#[test]
fn deletion_uses_its_grace_else_the_specs() {
    let mut m = machine("Always");
    let mut p = web("Always");
    p.metadata.as_mut().unwrap().deletion_timestamp = 5;
    p.metadata.as_mut().unwrap().deletion_grace_period_seconds = 7;
    assert_eq!(
        m.on_msg(PodMsg::Pod(Box::new(p.clone()))),
        Some(Stop::Deleted {
            grace: Duration::from_secs(7)
        })
    );
    p.metadata.as_mut().unwrap().deletion_grace_period_seconds = 0;
    assert_eq!(
        m.on_msg(PodMsg::Pod(Box::new(p))),
        Some(Stop::Deleted {
            grace: Duration::from_secs(30)
        })
    );
    // A plain update is no stop; a vanished pod is a force delete (2 s).
    let mut m = machine("Always");
    assert_eq!(m.on_msg(PodMsg::Pod(Box::new(web("Always")))), None);
    assert_eq!(
        m.on_msg(PodMsg::Gone),
        Some(Stop::Gone { grace: GONE_GRACE })
    );
}

#[test]
fn restart_backoff_doubles_to_five_minutes_in_crash_loop_back_off() {
    let t0 = Instant::now();
    let mut m = running_machine("Always", t0);
    let mut now = t0;
    let mut wall = 10_000;
    let mut delays = Vec::new();
    for n in 0..11 {
        m.started(0, h(100 + n, wall), Instant::now());
        assert_eq!(m.ctrs[0].view.restart_count, n);
        wall += 1_000; // ran 1 s
        assert!(m.exited(0, 100 + n, exit(1, wall), now));
        let (r, msg) = waiting_reason(&m);
        assert_eq!(r, "CrashLoopBackOff");
        assert!(msg.contains("last exit code 1"), "{msg}");
        let due = m.ctrs[0].next_start.unwrap();
        delays.push((due - now).as_secs());
        // Not due a moment before, due at the time.
        assert!(m.due(due - Duration::from_millis(1)).is_empty());
        assert_eq!(m.next_wake(), Some(due));
        assert_eq!(m.due(due), vec![0]);
        now = due;
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(m.status("h").phase, "Running");
    assert_eq!(m.status("h").reason, "CrashLoopBackOff");
}

#[test]
fn backoff_starts_over_after_ten_minutes_running() {
    let t0 = Instant::now();
    let mut m = running_machine("Always", t0);
    for (n, ran_ms) in [(0, 1_000), (1, 1_000), (2, 1_000)] {
        m.started(0, h(10 + n, 0), Instant::now());
        m.exited(0, 10 + n, exit(1, ran_ms), t0);
    }
    assert_eq!(m.ctrs[0].next_start, Some(t0 + Duration::from_secs(4)));
    // Ran 9:59: the streak goes on (8 s).
    m.started(0, h(20, 0), Instant::now());
    m.exited(0, 20, exit(1, 599_000), t0);
    assert_eq!(m.ctrs[0].next_start, Some(t0 + Duration::from_secs(8)));
    // Ran 10 minutes: back to 1 s.
    m.started(0, h(21, 0), Instant::now());
    m.exited(0, 21, exit(1, 600_000), t0);
    assert_eq!(m.ctrs[0].next_start, Some(t0 + Duration::from_secs(1)));
}

#[test]
fn on_failure_restarts_only_failures() {
    let t0 = Instant::now();
    let mut m = running_machine("OnFailure", t0);
    m.started(0, h(5, 0), Instant::now());
    m.record(); // the executor saves the record after each start
    m.exited(0, 5, exit(3, 10), t0);
    assert_eq!(waiting_reason(&m).0, "CrashLoopBackOff");
    m.due(t0 + Duration::from_secs(1));
    m.started(0, h(6, 20), Instant::now());
    m.exited(0, 6, exit(0, 30), t0);
    assert!(m.ctrs[0].next_start.is_none());
    assert_eq!(m.status("h").phase, "Succeeded");
    assert_eq!(m.status("h").container_statuses[0].restart_count, 1);
    assert_eq!(m.finished_holding_network(), Some("Succeeded"));
    m.network_released();
    assert_eq!(m.finished_holding_network(), None);
    let r = m.record().clone();
    assert!(r.network_released && r.containers[0].done);
    assert_eq!(r.containers[0].last_exit.as_ref().unwrap().exit_code, 0);
}

#[test]
fn never_does_not_restart() {
    let t0 = Instant::now();
    let mut m = running_machine("Never", t0);
    m.started(0, h(5, 0), Instant::now());
    m.exited(0, 5, exit(2, 10), t0);
    assert!(m.next_wake().is_none());
    let st = m.status("h");
    assert_eq!(st.phase, "Failed");
    assert_eq!(st.container_statuses[0].exit_code, 2);
    assert_eq!(m.finished_holding_network(), Some("Failed"));
}

#[test]
fn missing_image_fails_never_pods_and_retries_others() {
    let t0 = Instant::now();
    let mut m = running_machine("Never", t0);
    m.image_not_found(0, "image \"nope\": no such program".into(), t0, 5);
    let st = m.status("h");
    assert_eq!(st.phase, "Failed");
    assert_eq!(st.reason, "ImageNotFound");
    assert_eq!(st.container_statuses[0].exit_code, 127);

    let mut m = running_machine("Always", t0);
    m.image_not_found(0, "nope".into(), t0, 5);
    assert_eq!(waiting_reason(&m).0, "ImageNotFound");
    assert_eq!(m.next_wake(), Some(t0 + Duration::from_secs(1)));
    m.start_failed(0, "EPERM".into(), t0);
    assert_eq!(waiting_reason(&m).0, "StartError");
    assert_eq!(m.next_wake(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(m.status("h").phase, "Pending");
}

#[test]
fn stale_exits_are_ignored() {
    let t0 = Instant::now();
    let mut m = running_machine("Always", t0);
    m.started(0, h(5, 0), Instant::now());
    assert!(!m.exited(0, 4, exit(1, 1), t0));
    assert!(!m.exited(3, 5, exit(1, 1), t0));
    assert!(matches!(
        m.ctrs[0].view.state,
        CState::Running { pid: 5, .. }
    ));
    assert!(m.exited(0, 5, exit(1, 1), t0));
    assert!(!m.exited(0, 5, exit(1, 1), t0));
}

#[test]
fn full_subnet_leaves_the_pod_pending_with_the_reason() {
    let subnet: kube_lite_net::Ipv4Net = "10.0.1.0/30".parse().unwrap();
    let (r, msg) = ip_failure(&IpamError::NoFreeIp(subnet), "node1");
    assert_eq!(r, "no free IP in 10.0.1.0/30");
    assert_eq!(
        msg,
        "no free IP in 10.0.1.0/30: waiting for a pod on node node1 to release one"
    );
    let mut m = machine("Always");
    m.network_failed((r, msg));
    let st = m.status("192.168.1.1");
    assert_eq!(st.phase, "Pending");
    assert_eq!(st.reason, "no free IP in 10.0.1.0/30");
    assert_eq!(st.pod_ip, "");
    // Retried and working: the reason goes, the IP shows.
    m.network_created("10.0.1.2".parse().unwrap(), 77);
    m.network_ready();
    let st = m.status("192.168.1.1");
    assert_eq!(st.reason, "");
    assert_eq!(st.pod_ip, "10.0.1.2");
    assert_eq!(st.start_time, 77);
}

#[test]
fn adoption_follows_live_instances_and_accounts_for_ended_ones() {
    let t0 = Instant::now();
    let spec = PodSpec {
        containers: ["live", "ended", "done", "new"]
            .iter()
            .map(|n| Container {
                name: n.to_string(),
                image: "sh".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut p = web("Always");
    p.spec = Some(spec);
    let mut r = rec();
    r.ip = Some("10.0.1.9".parse().unwrap());
    r.start_time = 3;
    r.containers = vec![
        ContainerRecord {
            name: "live".into(),
            pid: Some(41),
            proc_start: Some(7),
            started_at: 100,
            restart_count: 2,
            ..Default::default()
        },
        ContainerRecord {
            name: "ended".into(),
            pid: Some(42),
            proc_start: Some(8),
            started_at: 100,
            ..Default::default()
        },
        ContainerRecord {
            name: "done".into(),
            started_at: 50,
            last_exit: Some(exit(0, 60)),
            done: true,
            ..Default::default()
        },
    ];
    let mut m = PodMachine::new("u1".into(), p, r, true);
    assert!(!m.finished_before_start());
    m.network_created("10.0.1.9".parse().unwrap(), 999);
    m.network_ready();
    let mut asked = Vec::new();
    let follow = m.adopt_or_schedule(t0, 1000, |r, h| {
        asked.push((r.name.clone(), h.pid));
        if h.pid == 41 {
            Observed::Alive
        } else {
            Observed::Ended(exit(1, 200))
        }
    });
    assert_eq!(asked, vec![("live".into(), 41), ("ended".into(), 42)]);
    assert_eq!(follow, vec![(0, h(41, 100).with_start(7))]);
    // live: Running, restart count kept; ended: in back-off; done: Terminated; new: due.
    assert!(matches!(
        m.ctrs[0].view.state,
        CState::Running { pid: 41, .. }
    ));
    assert_eq!(m.ctrs[0].view.restart_count, 2);
    assert_eq!(waiting_reason_of(&m, 1), "CrashLoopBackOff");
    assert_eq!(m.ctrs[1].next_start, Some(t0 + Duration::from_secs(1)));
    assert!(matches!(
        m.ctrs[2].view.state,
        CState::Terminated { done: true, .. }
    ));
    assert_eq!(m.due(t0), vec![3]);
    // The record's start time survives; status carries the adopted IP.
    assert_eq!(m.status("h").start_time, 3);
    assert_eq!(m.status("h").pod_ip, "10.0.1.9");
    let rec = m.record().clone();
    assert_eq!(rec.containers[0].pid, Some(41));
    assert_eq!(rec.containers[1].pid, None);
    assert_eq!(rec.containers[1].last_exit, Some(exit(1, 200)));
}

trait WithStart {
    fn with_start(self, s: u64) -> Self;
}
impl WithStart for Handle {
    fn with_start(mut self, s: u64) -> Self {
        self.proc_start = s;
        self
    }
}

fn waiting_reason_of(m: &PodMachine, i: usize) -> String {
    match &m.ctrs[i].view.state {
        CState::Waiting { reason, .. } => reason.clone(),
        s => panic!("not waiting: {s:?}"),
    }
}

#[test]
fn finished_pods_are_not_started_again_unless_adopted() {
    let mut p = web("Never");
    p.status = Some(PodStatus {
        phase: "Succeeded".into(),
        ..Default::default()
    });
    assert!(PodMachine::new("u1".into(), p.clone(), rec(), false).finished_before_start());
    assert!(!PodMachine::new("u1".into(), p, rec(), true).finished_before_start());
    assert!(!machine("Never").finished_before_start());
}

#[test]
fn live_handles_include_an_adopted_records_instances() {
    let mut r = rec();
    r.containers = vec![ContainerRecord {
        name: "c".into(),
        pid: Some(9),
        proc_start: Some(3),
        started_at: 4,
        ..Default::default()
    }];
    let mut m = PodMachine::new("u1".into(), web("Always"), r, true);
    assert_eq!(
        m.live_handles(),
        vec![Handle {
            pid: 9,
            proc_start: 3,
            started_at: 4
        }]
    );
    assert!(!m.holds_network());
    // Once followed it is not listed twice.
    m.started(0, h(9, 4).with_start(3), Instant::now());
    assert_eq!(m.live_handles().len(), 1);
}

#[test]
fn status_is_sent_once_retried_after_failure_and_skipped_when_the_server_has_it() {
    let t0 = Instant::now();
    let mut m = machine("Always");
    let st = m.status_to_push("h").expect("first status");
    m.status_push_failed(t0);
    assert_eq!(m.next_wake(), Some(t0 + STATUS_RETRY));
    assert_eq!(m.status_to_push("h"), Some(st.clone()));
    m.status_pushed(st);
    assert_eq!(m.status_to_push("h"), None);
    assert_eq!(m.next_wake(), None);
    // Adopted pod whose status the apiserver already holds: nothing to send.
    let mut p = web("Always");
    p.status = Some(machine("Always").status("h"));
    let mut m = PodMachine::new("u1".into(), p, rec(), true);
    assert_eq!(m.status_to_push("h"), None);
}

#[test]
fn recovery_adopts_bound_pods_and_tears_down_the_rest() {
    let mut other = rec();
    other.uid = "u2".into();
    let plan = plan_recovery(vec![rec(), other.clone()], vec![web("Always")]);
    assert_eq!(
        plan,
        vec![
            Recovery::Adopt(rec(), Box::new(web("Always"))),
            Recovery::TearDown(other)
        ]
    );
}

#[test]
fn orphans_are_ours_and_unkept() {
    let kept_uid = "0b9f4e1c-1111-2222-3333-444455556666".to_string();
    let gone_uid = "aaaaaaaa-1111-2222-3333-444455556666".to_string();
    let list = vec![
        format!("kl-n1-{kept_uid}"),
        format!("kl-n1-{gone_uid}"),
        "kl-n1-not-a-uid".to_string(),
        "other".to_string(),
    ];
    let kept: HashSet<String> = [kept_uid.clone()].into();
    assert_eq!(
        orphan_netns(&list, "kl-n1-", &kept),
        vec![(list[1].as_str(), gone_uid.as_str())]
    );
    let ifs = vec![
        kube_lite_net::host_if_name(&kept_uid),
        kube_lite_net::host_if_name(&gone_uid),
    ];
    assert_eq!(orphan_host_ifs(&ifs, &kept), vec![ifs[1].as_str()]);
}

/// A grace period of i64::MAX (which once panicked the worker at `Instant + grace`)
/// and negative ones are clamped: the timer is always representable.
#[test]
fn huge_and_negative_grace_periods_are_clamped() {
    assert_eq!(deletion_grace(&pod(1, i64::MAX, 30)), MAX_GRACE);
    assert_eq!(deletion_grace(&pod(1, 0, i64::MAX)), MAX_GRACE);
    assert_eq!(deletion_grace(&pod(1, 0, -5)), Duration::ZERO);
    assert_eq!(gone_grace(&pod(1, i64::MAX, 30)), MAX_GRACE);
    assert_eq!(gone_grace(&pod(0, 0, i64::MAX)), GONE_GRACE);
    assert_eq!(grace_from_secs(i64::MIN), Duration::ZERO);
    assert!(std::time::Instant::now()
        .checked_add(deletion_grace(&pod(1, i64::MAX, i64::MAX)))
        .is_some());
}

#[test]
fn huge_graces_are_clamped_and_never_overflow_a_deadline() {
    // Issue 9 point 2: i64::MAX from the spec or a DeleteRequest panicked at
    // `Instant::now() + grace`.
    assert_eq!(grace_from_secs(i64::MAX), MAX_GRACE);
    assert_eq!(grace_from_secs(i64::MIN), Duration::ZERO);
    assert_eq!(grace_from_secs(-1), Duration::ZERO);
    assert_eq!(grace_from_secs(45), Duration::from_secs(45));
    assert_eq!(deletion_grace(&pod(1, i64::MAX, 30)), MAX_GRACE);
    assert_eq!(deletion_grace(&pod(1, 0, i64::MAX)), MAX_GRACE);
    assert_eq!(gone_grace(&pod(1, i64::MAX, 30)), MAX_GRACE);
    assert_eq!(gone_grace(&pod(0, 0, i64::MAX)), GONE_GRACE);
    assert_eq!(gone_grace(&pod(0, 0, i64::MIN)), Duration::ZERO);
    let now = Instant::now();
    assert!(deadline_after(now, Duration::MAX) > now);
    assert!(deadline_after(now, MAX_GRACE) > now);
    assert_eq!(
        deadline_after(now, Duration::from_secs(1)),
        now + Duration::from_secs(1)
    );
    let mut m = machine("Always");
    let mut p = web("Always");
    p.metadata.as_mut().unwrap().deletion_timestamp = i64::MAX;
    p.metadata.as_mut().unwrap().deletion_grace_period_seconds = i64::MAX;
    assert_eq!(
        m.on_msg(PodMsg::Pod(Box::new(p))),
        Some(Stop::Deleted { grace: MAX_GRACE })
    );
}

#[test]
fn odd_exit_times_do_not_overflow_the_back_off_reset() {
    let t0 = Instant::now();
    let mut m = running_machine("Always", t0);
    m.due(t0);
    m.started(0, h(10, i64::MAX), Instant::now());
    assert!(m.exited(0, 10, exit(1, i64::MIN), t0));
    let mut m = running_machine("Always", t0);
    m.due(t0);
    m.started(0, h(10, i64::MIN), Instant::now());
    assert!(m.exited(0, 10, exit(1, i64::MAX), t0));
}

fn hs(pid: i32, start: u64) -> Handle {
    Handle {
        pid,
        proc_start: start,
        started_at: 77,
    }
}

fn rec_with(pid: Option<i32>, start: Option<u64>, started_at: i64) -> PodRecord {
    let mut r = rec();
    r.containers = vec![ContainerRecord {
        name: "c".into(),
        pid,
        proc_start: start,
        started_at,
        restart_count: 2,
        ..Default::default()
    }];
    r
}

#[test]
fn an_unrecorded_instance_is_adopted_and_a_second_one_killed() {
    // Issue 9 point 3: the agent died between spawning and recording.
    let mut r = rec_with(None, None, 0);
    let found = vec![
        ("c".to_string(), hs(10, 100)),
        ("c".to_string(), hs(11, 101)),
    ];
    let kill = reconcile_instances(&mut r, &found);
    assert_eq!(kill, vec![hs(10, 100)]);
    let c = &r.containers[0];
    assert_eq!(
        (c.pid, c.proc_start, c.started_at),
        (Some(11), Some(101), 77)
    );
    assert_eq!(c.restart_count, 2, "a first start is no restart");
    // The adopted record is then adopted like any other.
    let t0 = Instant::now();
    let mut m = PodMachine::new("u1".into(), web("Always"), r, true);
    m.network_ready();
    let follow = m.adopt_or_schedule(t0, 1000, |_, _| Observed::Alive);
    assert_eq!(
        follow,
        vec![(
            0,
            Handle {
                started_at: 77,
                ..hs(11, 101)
            }
        )]
    );
    assert!(m.due(t0).is_empty(), "no second start");
}

#[test]
fn the_recorded_instance_wins_and_strays_are_killed() {
    let mut r = rec_with(Some(10), Some(100), 5);
    let found = vec![
        ("c".to_string(), hs(10, 100)),
        ("c".to_string(), hs(12, 102)),
        ("other".to_string(), hs(13, 103)),
    ];
    let mut kill = reconcile_instances(&mut r, &found);
    kill.sort_by_key(|h| h.pid);
    assert_eq!(kill, vec![hs(12, 102), hs(13, 103)]);
    assert_eq!(r.containers[0].pid, Some(10));
    assert_eq!(r.containers[0].started_at, 5);
    // A recorded instance that is gone, and a restart that was not recorded yet.
    let mut r = rec_with(Some(10), Some(100), 5);
    let kill = reconcile_instances(&mut r, &[("c".to_string(), hs(14, 104))]);
    assert!(kill.is_empty());
    assert_eq!(r.containers[0].pid, Some(14));
    assert_eq!(r.containers[0].restart_count, 3);
    // Nothing found: the record stays as it is (the machine sees it ended).
    let mut r = rec_with(Some(10), Some(100), 5);
    assert!(reconcile_instances(&mut r, &[]).is_empty());
    assert_eq!(r, rec_with(Some(10), Some(100), 5));
}

fn probed(policy: &str, f: impl FnOnce(&mut Container)) -> PodMachine {
    let mut p = web(policy);
    f(&mut p.spec.as_mut().unwrap().containers[0]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = 2;
    let mut m = PodMachine::new("u1".into(), p, rec(), false);
    m.network_created("10.0.1.2".parse().unwrap(), 1000);
    m.network_ready();
    m
}

fn http_probe(period: i32, failure: i32) -> Option<kube_lite_proto::v1::Probe> {
    Some(kube_lite_proto::v1::Probe {
        http_get: Some(kube_lite_proto::v1::HttpGetAction {
            path: "/".into(),
            port: 8080,
            scheme: "HTTP".into(),
            ..Default::default()
        }),
        period_seconds: period,
        timeout_seconds: 1,
        success_threshold: 1,
        failure_threshold: failure,
        ..Default::default()
    })
}

fn ready_of(m: &PodMachine) -> (bool, String) {
    let st = m.status("192.168.1.1");
    let c = st.conditions.iter().find(|c| c.r#type == "Ready").unwrap();
    (st.container_statuses[0].ready, c.status.clone())
}

#[tokio::test(start_paused = true)]
async fn readiness_probe_drives_container_ready_and_the_pod_condition() {
    let t0 = Instant::now();
    let mut m = probed("Always", |c| c.readiness_probe = http_probe(1, 2));
    m.started(0, h(5, 0), t0);
    assert_eq!(
        ready_of(&m),
        (false, "False".into()),
        "not ready before the first success"
    );
    let jobs = m.due_probes(t0);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].kind, ProbeKind::Readiness);
    assert!(m.due_probes(t0).is_empty(), "one run at a time");
    assert_eq!(
        m.probe_result(0, jobs[0].kind, 5, true, "", t0),
        ProbeAction::None
    );
    assert_eq!(ready_of(&m), (true, "True".into()));
    // Two failures (threshold 2) make it unready; it is not killed.
    let mut t = t0;
    for _ in 0..2 {
        t += Duration::from_secs(1);
        assert_eq!(m.next_wake(), Some(t));
        let j = m.due_probes(t);
        assert_eq!(
            m.probe_result(
                0,
                j[0].kind,
                5,
                false,
                "HTTP probe failed with statuscode: 503",
                t
            ),
            ProbeAction::None
        );
    }
    assert_eq!(ready_of(&m), (false, "False".into()));
    // A stale result (another instance) changes nothing.
    assert_eq!(
        m.probe_result(0, ProbeKind::Readiness, 99, true, "", t),
        ProbeAction::None
    );
    assert!(!ready_of(&m).0);
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_terminates_then_kills_and_restarts_with_the_reason() {
    let t0 = Instant::now();
    let mut m = probed("Always", |c| c.liveness_probe = http_probe(1, 1));
    m.started(0, h(5, 0), t0);
    assert!(ready_of(&m).0, "liveness does not gate readiness");
    let j = m.due_probes(t0);
    let act = m.probe_result(
        0,
        j[0].kind,
        5,
        false,
        "dial tcp 10.0.1.2:8080: connection refused",
        t0,
    );
    assert_eq!(
        act,
        ProbeAction::Kill {
            handle: h(5, 0),
            pre_stop: false,
            grace: Duration::from_secs(2),
            killing: "Container c failed liveness probe, will be restarted".into()
        }
    );
    assert!(!ready_of(&m).0, "a container being killed is not ready");
    assert!(
        m.due_probes(t0 + Duration::from_secs(1)).is_empty(),
        "no probes while killing"
    );
    // SIGKILL after the pod's grace (2 s) if it is still there.
    assert!(m.due_kills(t0 + Duration::from_secs(1)).is_empty());
    assert_eq!(m.next_wake(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(m.due_kills(t0 + Duration::from_secs(2)), vec![h(5, 0)]);
    assert!(m.due_kills(t0 + Duration::from_secs(3)).is_empty(), "once");
    // The end of the instance carries why; the restart follows the policy.
    assert!(m.exited(0, 5, exit(137, 3000), t0 + Duration::from_secs(2)));
    let (r, msg) = waiting_reason(&m);
    assert_eq!(r, "CrashLoopBackOff");
    assert!(msg.contains("failed liveness probe"), "{msg}");
    let st = m.status("h");
    let last = st.container_statuses[0].last_state.clone().unwrap();
    assert_eq!(last.exit_code, 137);
    assert!(
        last.message.starts_with(
            "Container c failed liveness probe, will be restarted: Liveness probe failed: dial tcp"
        ),
        "{}",
        last.message
    );
    let t1 = t0 + Duration::from_secs(3);
    assert_eq!(m.due(t1), vec![0]);
    m.started(0, h(6, 4000), t1);
    assert_eq!(m.ctrs[0].view.restart_count, 1);
    assert!(m.kill_message(0).is_none());
    assert_eq!(
        m.due_probes(t1).len(),
        1,
        "the new instance is probed from its start"
    );
}

#[tokio::test(start_paused = true)]
async fn a_liveness_kill_runs_the_pre_stop_hook_first_within_the_grace() {
    let t0 = Instant::now();
    let mut m = probed("Never", |c| {
        c.liveness_probe = http_probe(1, 1);
        c.lifecycle = Some(kube_lite_proto::v1::Lifecycle {
            post_start: None,
            pre_stop: Some(kube_lite_proto::v1::LifecycleHandler {
                exec: Some(kube_lite_proto::v1::ExecAction {
                    command: vec!["true".into()],
                }),
                ..Default::default()
            }),
        });
    });
    m.started(0, h(5, 0), t0);
    let j = m.due_probes(t0);
    let act = m.probe_result(0, j[0].kind, 5, false, "x", t0);
    // Never: the message says nothing of a restart.
    assert_eq!(
        act,
        ProbeAction::Kill {
            handle: h(5, 0),
            pre_stop: true,
            grace: Duration::from_secs(2),
            killing: "Container c failed liveness probe".into()
        }
    );
    // No SIGKILL while the hook runs, even past the grace.
    assert!(m.due_kills(t0 + Duration::from_secs(5)).is_empty());
    assert_eq!(m.next_wake(), None);
    // A stale end of a hook (another instance) is ignored.
    assert_eq!(m.pre_stop_done(0, 99, t0), None);
    // The hook took 1.5 s of the 2 s: SIGTERM now, SIGKILL at least 2 s later.
    let t1 = t0 + Duration::from_millis(1500);
    assert_eq!(m.pre_stop_done(0, 5, t1), Some(h(5, 0)));
    assert_eq!(m.pre_stop_done(0, 5, t1), None, "once");
    assert_eq!(m.next_wake(), Some(t1 + Duration::from_secs(2)));
    assert_eq!(m.due_kills(t1 + Duration::from_secs(2)), vec![h(5, 0)]);
    // With Never the container stays terminated.
    assert!(m.exited(0, 5, exit(137, 4000), t1 + Duration::from_secs(2)));
    assert!(matches!(
        m.ctrs[0].view.state,
        CState::Terminated { done: true, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn startup_probe_holds_liveness_and_readiness() {
    let t0 = Instant::now();
    let mut m = probed("Always", |c| {
        c.startup_probe = http_probe(1, 3);
        c.liveness_probe = http_probe(1, 1);
    });
    m.started(0, h(5, 0), t0);
    let st = m.status("h");
    assert!(!st.container_statuses[0].started && !st.container_statuses[0].ready);
    let j = m.due_probes(t0);
    assert_eq!(
        j.iter().map(|j| j.kind).collect::<Vec<_>>(),
        [ProbeKind::Startup]
    );
    // Startup failing below its threshold: no kill, liveness not run.
    assert_eq!(
        m.probe_result(0, j[0].kind, 5, false, "no", t0),
        ProbeAction::None
    );
    let t1 = t0 + Duration::from_secs(1);
    let j = m.due_probes(t1);
    assert_eq!(
        j.iter().map(|j| j.kind).collect::<Vec<_>>(),
        [ProbeKind::Startup]
    );
    m.probe_result(0, j[0].kind, 5, true, "", t1);
    let st = m.status("h");
    assert!(st.container_statuses[0].started && st.container_statuses[0].ready);
    let j = m.due_probes(t1);
    assert_eq!(
        j.iter().map(|j| j.kind).collect::<Vec<_>>(),
        [ProbeKind::Liveness]
    );
}

#[test]
fn qos_class_is_reported() {
    let m = probed("Always", |c| {
        c.resources = Some(kube_lite_proto::v1::ResourceRequirements {
            limits: [
                ("cpu".to_string(), "500m".to_string()),
                ("memory".to_string(), "64Mi".to_string()),
            ]
            .into(),
            ..Default::default()
        })
    });
    assert_eq!(m.status("h").qos_class, "Guaranteed");
    assert_eq!(machine("Always").status("h").qos_class, "BestEffort");
}

fn with_init(policy: &str, n: usize) -> PodMachine {
    let mut p = web(policy);
    p.spec.as_mut().unwrap().init_containers = (0..n)
        .map(|i| Container {
            name: format!("init-{i}"),
            image: "sh".into(),
            ..Default::default()
        })
        .collect();
    let mut m = PodMachine::new("u1".into(), p, rec(), false);
    m.network_created("10.0.1.2".parse().unwrap(), 1000);
    m.network_ready();
    m
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_after_another_before_the_app() {
    let t0 = Instant::now();
    let mut m = with_init("Always", 2);
    assert!(m
        .adopt_or_schedule(t0, 1000, |_, _| unreachable!())
        .is_empty());
    assert_eq!(m.due(t0), vec![0], "only the first init container");
    m.started(0, h(10, 0), t0);
    let st = m.status("h");
    assert_eq!(st.phase, "Pending");
    assert_eq!(st.init_container_statuses.len(), 2);
    assert_eq!(st.container_statuses[0].reason, "PodInitializing");
    assert!(m.due(t0).is_empty());
    // init-0 fails: restarted after the back-off (Always counts as OnFailure for init).
    assert!(m.exited(0, 10, exit(1, 100), t0));
    let st = m.status("h");
    assert_eq!(st.phase, "Pending");
    assert_eq!(st.reason, "CrashLoopBackOff");
    assert!(m.due(t0).is_empty());
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(m.due(t1), vec![0]);
    m.started(0, h(11, 0), t1);
    assert!(m.exited(0, 11, exit(0, 200), t1));
    assert_eq!(m.due(t1), vec![1], "then the second");
    m.started(1, h(12, 0), t1);
    assert!(m.exited(1, 12, exit(0, 300), t1));
    assert!(m.initialized());
    assert_eq!(m.due(t1), vec![2], "then the app");
    m.started(2, h(13, 0), t1);
    let st = m.status("h");
    assert_eq!(st.phase, "Running");
    assert!(st
        .init_container_statuses
        .iter()
        .all(|c| c.state == "Terminated" && c.ready));
    assert_eq!(st.init_container_statuses[0].restart_count, 1);
    assert_eq!(st.conditions[0].status, "True");
    // An init container that completed never runs again when the app restarts.
    assert!(m.exited(2, 13, exit(1, 400), t1));
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(m.due(t2), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_fails_a_never_pod() {
    let t0 = Instant::now();
    let mut m = with_init("Never", 2);
    m.adopt_or_schedule(t0, 1000, |_, _| unreachable!());
    assert_eq!(m.due(t0), vec![0]);
    m.started(0, h(10, 0), t0);
    assert!(m.exited(0, 10, exit(3, 100), t0));
    let st = m.status("h");
    assert_eq!(st.phase, "Failed");
    assert_eq!(st.reason, "Error");
    assert!(
        m.due(t0 + Duration::from_secs(60)).is_empty(),
        "nothing else starts"
    );
    assert_eq!(m.finished_holding_network(), Some("Failed"));
}

#[tokio::test(start_paused = true)]
async fn held_starts_wait_in_container_creating_and_go_when_released() {
    let t0 = Instant::now();
    let mut m = machine("Always");
    m.network_created("10.0.1.2".parse().unwrap(), 1000);
    m.network_ready();
    let _ = m.adopt_or_schedule(t0, 1000, |_, _| unreachable!());
    m.hold_starts = true;
    assert!(m.due(t0 + Duration::from_secs(60)).is_empty());
    assert_eq!(m.next_wake(), None, "no busy wake-ups while held");
    let st = m.status("h");
    assert_eq!(st.container_statuses[0].reason, "ContainerCreating");
    m.hold_starts = false;
    assert_eq!(m.due(t0 + Duration::from_secs(61)), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn an_eviction_kills_without_restart_and_fails_the_pod() {
    let t0 = Instant::now();
    let mut m = running_machine("Always", t0);
    m.started(0, h(5, 0), t0);
    let msg = "Usage of EmptyDir volume \"v\" exceeds the limit \"1Mi\".".to_string();
    assert_eq!(m.evict(msg.clone(), t0), vec![(0, h(5, 0), false)]);
    assert!(m.evict(msg.clone(), t0).is_empty(), "once");
    let st = m.status("h");
    assert_eq!(
        (st.phase.as_str(), st.reason.as_str()),
        ("Failed", "Evicted")
    );
    assert_eq!(st.message, msg);
    assert!(st
        .conditions
        .iter()
        .any(|c| c.r#type == "Ready" && c.status == "False"));
    assert_eq!(m.finished_holding_network(), None, "not while it runs");
    assert_eq!(m.due_kills(t0 + Duration::from_secs(2)), vec![h(5, 0)]);
    assert!(m.exited(0, 5, exit(137, 3000), t0 + Duration::from_secs(2)));
    assert!(
        m.due(t0 + Duration::from_secs(600)).is_empty(),
        "no restart"
    );
    assert_eq!(m.next_wake(), None);
    assert_eq!(m.finished_holding_network(), Some("Failed"));
    assert_eq!(m.status("h").phase, "Failed");
}
