//! The executor (workers, recovery, the manager's event handling) over in-memory fakes
//! and tokio's paused clock: no root, no processes, no namespaces.

use super::fakes::{FakeApi, FakeNet, FakeRuntime, FakeState};
use super::*;
use kube_lite_proto::v1::PodStatus;
use kube_lite_proto::v1::{Container, PodSpec};
use std::sync::atomic::Ordering;

struct Env {
    node: Arc<Node>,
    rt: Arc<FakeRuntime>,
    net: Arc<FakeNet>,
    state: Arc<FakeState>,
    api: Arc<FakeApi>,
    _dir: tempfile::TempDir,
}

fn env_with(subnet: &str, prep: impl FnOnce(&Arc<FakeRuntime>, &FakeNet, &FakeState)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let subnet: Ipv4Net = subnet.parse().unwrap();
    let rt = Arc::new(FakeRuntime::new());
    let net = Arc::new(FakeNet::default());
    let state = Arc::new(FakeState::default());
    prep(&rt, &net, &state);
    let api = Arc::new(FakeApi::default());
    let ipam = Ipam::open(dir.path().join("ipam.json"), subnet).unwrap();
    let node = Node::new(
        "node1".into(),
        "192.168.1.1".parse().unwrap(),
        subnet,
        "kl-n1".into(),
        1450,
        api.clone(),
        net.clone(),
        ipam,
        state.clone(),
        rt.clone(),
        Resolver {
            node: "node1".into(),
            image_dir: None,
            self_dir: None,
            path: "/usr/bin:/bin".into(),
        },
    );
    Env {
        node,
        rt,
        net,
        state,
        api,
        _dir: dir,
    }
}

fn env() -> Env {
    env_with("10.0.1.0/24", |_, _, _| {})
}

fn uid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}

fn pod(n: u32, policy: &str, grace: i64) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: format!("p{n}"),
            namespace: "default".into(),
            uid: uid(n),
            resource_version: 7,
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: "node1".into(),
            containers: vec![Container {
                name: "c".into(),
                image: "sh".into(),
                ..Default::default()
            }],
            restart_policy: policy.into(),
            termination_grace_period_seconds: grace,
            ..Default::default()
        }),
        status: None,
    }
}

fn deleting(mut p: Pod, grace: i64) -> Pod {
    let m = p.metadata.as_mut().unwrap();
    m.deletion_timestamp = 1;
    m.deletion_grace_period_seconds = grace;
    m.resource_version = 8;
    p
}

/// Waits (in virtual time) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Env {
    fn create(&self, p: Pod) {
        self.api.put(p.clone());
        self.node.on_event(Event::Applied(p));
    }
    fn phase(&self, name: &str) -> String {
        self.api
            .last_status(name)
            .map(|s| s.phase)
            .unwrap_or_default()
    }
    fn status(&self, name: &str) -> PodStatus {
        self.api.last_status(name).unwrap_or_default()
    }
    async fn running(&self, name: &str) -> i32 {
        until("running", || {
            self.rt.pid_of("c").is_some() && self.phase(name) == "Running"
        })
        .await;
        self.rt.pid_of("c").unwrap()
    }
    fn ip_held(&self, u: &str) -> bool {
        self.node.ipam.lock().unwrap().get(u).is_some()
    }
}

#[tokio::test(start_paused = true)]
async fn pod_starts_with_network_record_and_status() {
    let e = env();
    e.create(pod(1, "Always", 30));
    e.running("p1").await;
    let st = e.status("p1");
    assert_eq!(st.pod_ip, "10.0.1.2");
    assert_eq!(st.host_ip, "192.168.1.1");
    assert_eq!(st.container_statuses[0].state, "Running");
    let created = e.net.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].netns, format!("kl-n1-{}", uid(1)));
    let rec = e.state.records.lock().unwrap()[&uid(1)].clone();
    assert_eq!(rec.containers[0].pid, e.rt.pid_of("c"));
    assert_eq!(e.node.worker_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn crash_loop_restarts_after_doubling_back_off() {
    let e = env();
    e.create(pod(1, "Always", 30));
    let mut pid = e.running("p1").await;
    for n in 0..4 {
        e.rt.exit(pid, 1);
        until("back-off status", || {
            e.status("p1").reason == "CrashLoopBackOff"
        })
        .await;
        assert_eq!(e.phase("p1"), "Running");
        until("restart", || e.rt.starts().len() == n + 2).await;
        pid = e.rt.pid_of("c").unwrap();
    }
    let starts = e.rt.starts();
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1].2 - w[0].2).as_millis())
        .collect();
    // Each exit came within a poll (10 ms) of its start: the gaps are the back-off.
    for (gap, want) in gaps.iter().zip([1000u128, 2000, 4000, 8000]) {
        assert!(*gap >= want && *gap < want + 100, "gaps {gaps:?}");
    }
    until("restart count", || {
        e.status("p1").container_statuses[0].restart_count == 4
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn on_failure_and_never_pods_finish_and_give_back_their_network() {
    let e = env();
    e.create(pod(1, "OnFailure", 30));
    let pid = e.running("p1").await;
    e.rt.exit(pid, 0);
    until("succeeded", || e.phase("p1") == "Succeeded").await;
    until("network released", || !e.ip_held(&uid(1))).await;
    assert_eq!(e.net.deleted.lock().unwrap().len(), 1);
    assert!(e.state.records.lock().unwrap()[&uid(1)].network_released);

    e.create(pod(2, "Never", 30));
    let pid = e.running("p2").await;
    e.rt.exit(pid, 3);
    until("failed", || e.phase("p2") == "Failed").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(e.rt.starts().len(), 2, "neither pod restarted");
    assert_eq!(e.status("p2").container_statuses[0].exit_code, 3);
}

#[tokio::test(start_paused = true)]
async fn graceful_delete_sigterm_grace_sigkill_then_final_delete() {
    let e = env();
    e.rt.ignore_sigterm.store(true, Ordering::SeqCst);
    e.create(pod(1, "Always", 30));
    let pid = e.running("p1").await;
    let p = deleting(pod(1, "Always", 30), 5);
    e.api.put(p.clone());
    e.node.on_event(Event::Applied(p));
    until("final delete", || !e.api.deletes.lock().unwrap().is_empty()).await;
    let sig = e.rt.signals();
    assert_eq!(sig[0].0, format!("term {pid}"));
    assert_eq!(sig[1].0, format!("kill {pid}"));
    let waited = sig[1].1 - sig[0].1;
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5100),
        "{waited:?}"
    );
    // Released before the Delete: network, IP, state.
    assert_eq!(e.net.deleted.lock().unwrap().len(), 1);
    assert!(!e.ip_held(&uid(1)));
    assert!(e.state.records.lock().unwrap().is_empty());
    let (req, _) = e.api.deletes.lock().unwrap()[0].clone();
    assert_eq!((req.grace_period_seconds, req.resource_version), (0, 8));
    until("worker gone", || e.node.worker_count() == 0).await;
    // Late events of a deleted pod start nothing.
    e.node.on_event(Event::Applied(pod(1, "Always", 30)));
    assert_eq!(e.node.worker_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_container_that_obeys_sigterm_is_not_killed() {
    let e = env();
    e.create(pod(1, "Always", 30));
    e.running("p1").await;
    let p = deleting(pod(1, "Always", 30), 30);
    e.api.put(p.clone());
    let t = Instant::now();
    e.node.on_event(Event::Applied(p));
    until("final delete", || !e.api.deletes.lock().unwrap().is_empty()).await;
    assert!(Instant::now() - t < Duration::from_secs(1));
    assert_eq!(e.rt.signals().len(), 1, "{:?}", e.rt.signals());
    assert_eq!(e.rt.starts().len(), 1, "not restarted while stopping");
}

#[tokio::test(start_paused = true)]
async fn force_delete_stops_with_two_seconds_and_no_api_call() {
    let e = env();
    e.rt.ignore_sigterm.store(true, Ordering::SeqCst);
    e.create(pod(1, "Always", 30));
    e.running("p1").await;
    e.api.pods.lock().unwrap().clear();
    e.node.on_event(Event::Deleted(pod(1, "Always", 30)));
    until("released", || e.state.records.lock().unwrap().is_empty()).await;
    let sig = e.rt.signals();
    let waited = sig[1].1 - sig[0].1;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    assert!(!e.ip_held(&uid(1)));
    assert!(e.api.deletes.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn evicted_pod_is_torn_down_and_started_again_when_it_comes_back() {
    let e = env();
    e.create(pod(1, "Always", 30));
    let first = e.running("p1").await;
    // Relist without the pod (evicted / unbound).
    e.node.on_event(Event::Restarted(Vec::new(), 9));
    until("torn down", || e.node.worker_count() == 0).await;
    assert!(e.rt.alive_pids().is_empty());
    assert!(!e.ip_held(&uid(1)));
    assert!(e.api.deletes.lock().unwrap().is_empty());
    // Bound here again.
    e.node
        .on_event(Event::Restarted(vec![pod(1, "Always", 30)], 10));
    until("started again", || e.rt.starts().len() == 2).await;
    assert_ne!(e.rt.pid_of("c"), Some(first));
    assert_eq!(e.net.created.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn full_subnet_leaves_the_pod_pending_and_retries() {
    // A /30 has one pod address (.2); another pod holds it.
    let e = env_with("10.0.1.0/30", |_, _, _| {});
    e.node.ipam.lock().unwrap().allocate("other").unwrap();
    e.create(pod(1, "Always", 30));
    until("pending", || {
        e.status("p1").reason == "no free IP in 10.0.1.0/30"
    })
    .await;
    let st = e.status("p1");
    assert_eq!(st.phase, "Pending");
    assert_eq!(
        st.message,
        "no free IP in 10.0.1.0/30: waiting for a pod on node node1 to release one"
    );
    assert!(e.rt.starts().is_empty());
    e.node.ipam.lock().unwrap().release("other").unwrap();
    e.running("p1").await;
    assert_eq!(e.status("p1").pod_ip, "10.0.1.2");
    assert_eq!(e.status("p1").reason, "");
}

#[tokio::test(start_paused = true)]
async fn recovery_adopts_live_pods_and_cleans_up_the_rest() {
    let (mut live, mut gone) = (None, None);
    let orphan = format!("kl-n1-{}", uid(3));
    let e = env_with("10.0.1.0/24", |rt, net, state| {
        for (n, slot) in [(1, &mut live), (2, &mut gone)] {
            let h = rt.existing("c");
            *slot = Some(h);
            state
                .save(&PodRecord {
                    uid: uid(n),
                    name: format!("p{n}"),
                    namespace: "default".into(),
                    ip: Some(format!("10.0.1.{}", n + 1).parse().unwrap()),
                    netns: format!("kl-n1-{}", uid(n)),
                    host_if: host_if_name(&uid(n)),
                    start_time: 5,
                    containers: vec![crate::state::ContainerRecord {
                        name: "c".into(),
                        pid: Some(h.pid),
                        proc_start: Some(h.proc_start),
                        started_at: h.started_at,
                        restart_count: 3,
                        ..Default::default()
                    }],
                    network_released: false,
                })
                .unwrap();
            net.netns.lock().unwrap().push(format!("kl-n1-{}", uid(n)));
            net.host_ifs.lock().unwrap().push(host_if_name(&uid(n)));
        }
        net.netns.lock().unwrap().push(orphan.clone());
        net.host_ifs.lock().unwrap().push(host_if_name(&uid(3)));
    });
    let (live, gone) = (live.unwrap(), gone.unwrap());
    // The apiserver still has pod 1; pod 2 was deleted while the agent was down.
    e.api.put(pod(1, "Always", 30));
    recover(&e.node).await;
    // Pod 2: killed, network and record gone. The orphan: removed.
    assert_eq!(e.rt.alive_pids(), vec![live.pid]);
    let kill = format!("kill {}", gone.pid);
    assert!(e.rt.signals().iter().any(|(s, _)| *s == kill));
    assert!(!e.state.records.lock().unwrap().contains_key(&uid(2)));
    let ns = e.net.netns.lock().unwrap().clone();
    assert_eq!(ns, vec![format!("kl-n1-{}", uid(1))]);
    assert_eq!(
        e.net.host_ifs.lock().unwrap().clone(),
        vec![host_if_name(&uid(1))]
    );
    // Pod 1: adopted, not restarted; keeps its IP and restart count.
    until("adopted status", || e.phase("p1") == "Running").await;
    assert!(e.rt.starts().is_empty());
    let st = e.status("p1");
    assert_eq!(st.pod_ip, "10.0.1.2");
    assert_eq!(st.container_statuses[0].pid, live.pid);
    assert_eq!(st.container_statuses[0].restart_count, 3);
    assert!(!e.ip_held(&uid(2)));
    // Its end is followed like one of ours: restarted after the back-off.
    e.rt.exit(live.pid, 1);
    until("restarted", || e.rt.starts().len() == 1).await;
    until("count", || {
        e.status("p1").container_statuses[0].restart_count == 4
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_huge_grace_period_stops_the_pod_without_panicking() {
    // Issue 9 point 2: spec and DeleteRequest grace of i64::MAX seconds.
    let e = env();
    e.create(pod(1, "Always", i64::MAX));
    e.running("p1").await;
    let p = deleting(pod(1, "Always", i64::MAX), i64::MAX);
    e.api.put(p.clone());
    e.node.on_event(Event::Applied(p));
    until("final delete", || !e.api.deletes.lock().unwrap().is_empty()).await;
    assert!(!e.ip_held(&uid(1)));
    assert!(e.state.records.lock().unwrap().is_empty());
    assert_eq!(e.net.deleted.lock().unwrap().len(), 1);
    // A pod that was terminating with such a grace and then vanishes (force delete).
    e.create(pod(2, "Always", i64::MAX));
    until("p2 running", || e.phase("p2") == "Running").await;
    let p = deleting(pod(2, "Always", i64::MAX), i64::MAX);
    e.node.on_event(Event::Applied(p.clone()));
    e.api.pods.lock().unwrap().clear();
    e.node.on_event(Event::Deleted(p));
    until("p2 released", || e.state.records.lock().unwrap().is_empty()).await;
    until("workers gone", || e.node.worker_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn recovery_adopts_an_unrecorded_instance_and_kills_duplicates_and_strays() {
    // Issue 9 point 3: kill -9 of the agent between spawn and record.
    let (mut first, mut second, mut stray) = (None, None, None);
    let e = env_with("10.0.1.0/24", |rt, net, state| {
        first = Some(rt.existing_in(&uid(1), "c"));
        second = Some(rt.existing_in(&uid(1), "c"));
        // An instance of a pod with no record at all (deleted meanwhile).
        stray = Some(rt.existing_in(&uid(5), "c"));
        state
            .save(&PodRecord {
                uid: uid(1),
                name: "p1".into(),
                namespace: "default".into(),
                ip: Some("10.0.1.2".parse().unwrap()),
                netns: format!("kl-n1-{}", uid(1)),
                host_if: host_if_name(&uid(1)),
                start_time: 5,
                containers: vec![crate::state::ContainerRecord {
                    name: "c".into(),
                    ..Default::default()
                }],
                network_released: false,
            })
            .unwrap();
        net.netns.lock().unwrap().push(format!("kl-n1-{}", uid(1)));
        net.host_ifs.lock().unwrap().push(host_if_name(&uid(1)));
    });
    let (first, second, stray) = (first.unwrap(), second.unwrap(), stray.unwrap());
    e.api.put(pod(1, "Always", 30));
    recover(&e.node).await;
    assert_eq!(e.rt.alive_pids(), vec![second.pid]);
    for h in [first, stray] {
        let kill = format!("kill {}", h.pid);
        assert!(e.rt.signals().iter().any(|(s, _)| *s == kill), "{kill}");
    }
    until("adopted status", || e.phase("p1") == "Running").await;
    assert!(e.rt.starts().is_empty(), "a second instance was started");
    assert_eq!(e.status("p1").container_statuses[0].pid, second.pid);
    assert_eq!(e.status("p1").container_statuses[0].restart_count, 0);
    // Deleting the pod stops the adopted instance: nothing survives.
    let p = deleting(pod(1, "Always", 30), 30);
    e.api.put(p.clone());
    e.node.on_event(Event::Applied(p));
    until("final delete", || !e.api.deletes.lock().unwrap().is_empty()).await;
    assert!(e.rt.alive_pids().is_empty());
}
