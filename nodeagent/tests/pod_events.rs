//! The Events the node agent writes itself, end to end (issue 13): real apiserver, real
//! `nodeagent` processes, real pods, Events read back through the API (as `kubectl-lite
//! describe pod` lists them, by the pod's uid). Root only.
//!
//! - A liveness failure: `Warning Unhealthy: Liveness probe failed: <output>` and
//!   `Normal Killing: Container app failed liveness probe, will be restarted`, with the
//!   preStop hook run before the SIGTERM; the same for a startup probe.
//! - Failing hooks: `Warning FailedPostStartHook` (and the container killed),
//!   `Warning FailedPreStopHook` on deletion, with the hook's error.
//! - A configMap volume whose ConfigMap is missing: `Warning FailedMount`, the pod stays
//!   ContainerCreating, and starts once the ConfigMap exists.
//! - An emptyDir over its sizeLimit: the pod is evicted (Failed, reason Evicted) with
//!   `Warning Evicted: Usage of EmptyDir volume "v" exceeds the limit "1Mi".`
//!
//! The containers share the node's filesystem (process runtime), so hooks and probes
//! read and write files in a test directory.

use kube_lite_proto::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, DeleteRequest, EmptyDirVolumeSource, Event,
    ExecAction, Lifecycle, LifecycleHandler, ListRequest, ObjectMeta, Pod, PodSpec, Probe, Volume,
    VolumeMount,
};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions, TestCluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn sh(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: "busybox".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn exec(script: &str) -> Option<ExecAction> {
    Some(ExecAction {
        command: vec!["sh".into(), "-c".into(), script.into()],
    })
}

fn hooks(post_start: Option<&str>, pre_stop: Option<&str>) -> Option<Lifecycle> {
    let h = |s: &str| LifecycleHandler {
        exec: exec(s),
        ..Default::default()
    };
    Some(Lifecycle {
        post_start: post_start.map(h),
        pre_stop: pre_stop.map(h),
    })
}

fn probe_cat(file: &Path, failure: i32) -> Option<Probe> {
    Some(Probe {
        exec: Some(ExecAction {
            command: vec!["cat".into(), file.display().to_string()],
        }),
        period_seconds: 1,
        timeout_seconds: 1,
        success_threshold: 1,
        failure_threshold: failure,
        ..Default::default()
    })
}

fn pod(name: &str, node: &str, policy: &str, grace: i64, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers,
            restart_policy: policy.into(),
            termination_grace_period_seconds: grace,
            ..Default::default()
        }),
        status: None,
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.as_ref().unwrap().uid.clone()
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .map_or(0, |c| c.restart_count)
}

/// `Type Reason: message` of the events of pod `uid`.
async fn events_of(c: &TestCluster, uid: &str) -> Vec<Event> {
    let items = c
        .api
        .events()
        .list(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .items;
    items
        .into_iter()
        .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.uid == uid))
        .collect()
}

fn line(e: &Event) -> String {
    format!("{} {}: {}", e.r#type, e.reason, e.message)
}

/// Waits (60 s) for an event of pod `uid` whose line starts with `prefix`.
async fn wait_event(c: &TestCluster, uid: &str, prefix: &str) -> Event {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let evs = events_of(c, uid).await;
        if let Some(e) = evs.iter().find(|e| line(e).starts_with(prefix)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no event {prefix:?} for pod {uid}; events: {:#?}\n{}",
            evs.iter().map(line).collect::<Vec<_>>(),
            c.agent_log_tail(0, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_startup_kills_leave_unhealthy_and_killing_events_after_pre_stop() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let alive = tmp.path().join("alive");
    std::fs::write(&alive, "ok").unwrap();

    // The main process records, on SIGTERM, whether the preStop hook ran before it.
    let mut app = sh(
        "app",
        &format!(
            "trap 'if [ -f {d}/prestop ]; then echo after > {d}/term; else echo before > {d}/term; fi; exit 0' TERM; \
             while true; do sleep 1; done"
        ),
    );
    app.liveness_probe = probe_cat(&alive, 2);
    app.lifecycle = hooks(None, Some(&format!("echo ran > {d}/prestop")));
    let created = c
        .api
        .pods()
        .create(pod("live", &node, "Always", 10, vec![app]))
        .await
        .expect("create")
        .into_inner();
    let u = uid(&created);
    c.wait_pod("live", "Running", |p| {
        p.status.as_ref().is_some_and(|s| s.phase == "Running")
    })
    .await;
    std::fs::remove_file(&alive).unwrap();
    let e = wait_event(&c, &u, "Warning Unhealthy: Liveness probe failed: cat: ").await;
    assert!(
        e.message.contains("No such file or directory"),
        "{}",
        line(&e)
    );
    let src = e.source.clone().unwrap();
    assert_eq!(
        (src.component.as_str(), src.host.as_str()),
        ("kubelet", node.as_str())
    );
    assert_eq!(
        e.involved_object.as_ref().unwrap().field_path,
        "spec.containers{app}"
    );
    wait_event(
        &c,
        &u,
        "Normal Killing: Container app failed liveness probe, will be restarted",
    )
    .await;
    assert_eq!(wait_file(&tmp.path().join("prestop")).trim(), "ran");
    assert_eq!(
        wait_file(&tmp.path().join("term")).trim(),
        "after",
        "the preStop hook runs before the SIGTERM"
    );
    std::fs::write(&alive, "ok").unwrap();
    c.wait_pod("live", "a restart", |p| restarts(p) >= 1).await;

    // A startup probe that never passes (threshold 2): Unhealthy, then Killing.
    let mut slow = sh("app", "sleep 3600");
    slow.startup_probe = probe_cat(&tmp.path().join("never"), 2);
    let created = c
        .api
        .pods()
        .create(pod("slow", &node, "Always", 1, vec![slow]))
        .await
        .expect("create")
        .into_inner();
    let u = uid(&created);
    wait_event(&c, &u, "Warning Unhealthy: Startup probe failed: cat: ").await;
    wait_event(
        &c,
        &u,
        "Normal Killing: Container app failed startup probe, will be restarted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hooks_leave_failed_post_start_and_pre_stop_events() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();

    // postStart fails: the event carries the hook's error; the container is killed
    // (restart policy Never: it stays terminated).
    let mut app = sh("app", "sleep 3600");
    app.lifecycle = hooks(Some("echo no config >&2; exit 3"), None);
    let created = c
        .api
        .pods()
        .create(pod("poststart", &node, "Never", 1, vec![app]))
        .await
        .expect("create")
        .into_inner();
    let u = uid(&created);
    let e = wait_event(&c, &u, "Warning FailedPostStartHook: Exec lifecycle hook ([sh -c echo no config >&2; exit 3]) for Container \"app\" in Pod \"default/poststart\" failed - error: ").await;
    assert!(e.message.contains("no config"), "{}", line(&e));
    wait_event(&c, &u, "Normal Killing: FailedPostStartHook").await;
    c.wait_pod("poststart", "Failed", |p| {
        p.status.as_ref().is_some_and(|s| s.phase == "Failed")
    })
    .await;

    // preStop fails on deletion: the event, and the pod still goes.
    let mut app = sh("app", "sleep 3600");
    app.lifecycle = hooks(None, Some("exit 4"));
    let created = c
        .api
        .pods()
        .create(pod("prestop", &node, "Always", 5, vec![app]))
        .await
        .expect("create")
        .into_inner();
    let u = uid(&created);
    c.wait_pod("prestop", "Running", |p| {
        p.status.as_ref().is_some_and(|s| s.phase == "Running")
    })
    .await;
    c.api
        .pods()
        .delete(DeleteRequest {
            name: "prestop".into(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let e = wait_event(&c, &u, "Warning FailedPreStopHook: Exec lifecycle hook ([sh -c exit 4]) for Container \"app\" in Pod \"default/prestop\" failed - error: ").await;
    assert!(e.message.contains("exited with 4"), "{}", line(&e));
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get_pod("prestop").await.is_some() {
        assert!(Instant::now() < deadline, "pod never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_map_is_failed_mount_until_it_exists() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let mut app = sh("app", "cat /etc/cfg/greeting; sleep 3600");
    app.volume_mounts = vec![VolumeMount {
        name: "cfg".into(),
        mount_path: "/etc/cfg".into(),
        ..Default::default()
    }];
    let mut p = pod("mount", &node, "Always", 1, vec![app]);
    p.spec.as_mut().unwrap().volumes = vec![Volume {
        name: "cfg".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "late".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let created = c.api.pods().create(p).await.expect("create").into_inner();
    let u = uid(&created);
    let e = wait_event(
        &c,
        &u,
        "Warning FailedMount: MountVolume.SetUp failed for volume \"cfg\" : configmap \"late\" not found",
    )
    .await;
    assert_eq!(e.source.unwrap().host, node);
    // It stays ContainerCreating (no back-off, no config error) meanwhile.
    let p = c.get_pod("mount").await.unwrap();
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(
        (cs.state.as_str(), cs.reason.as_str()),
        ("Waiting", "ContainerCreating"),
        "{cs:?}"
    );
    assert_eq!(p.status.as_ref().unwrap().phase, "Pending");
    // The ConfigMap appears: the pod starts (within the agent's source sync period).
    c.api
        .config_maps()
        .create(ConfigMap {
            metadata: Some(ObjectMeta {
                name: "late".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            data: [("greeting".to_string(), "hello".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("create configmap");
    let p = c
        .wait_pod("mount", "Running after the ConfigMap appeared", |p| {
            p.status.as_ref().is_some_and(|s| s.phase == "Running")
        })
        .await;
    assert_eq!(restarts(&p), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    // Writes 2 MiB into its 1Mi emptyDir once `go` exists.
    let mut app = sh(
        "app",
        &format!(
            "while [ ! -f {} ]; do sleep 1; done; dd if=/dev/zero of=/scratch/fill bs=1024 count=2048; sleep 3600",
            go.display()
        ),
    );
    app.volume_mounts = vec![VolumeMount {
        name: "scratch".into(),
        mount_path: "/scratch".into(),
        ..Default::default()
    }];
    let mut p = pod("hog", &node, "Always", 30, vec![app]);
    p.spec.as_mut().unwrap().volumes = vec![Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: String::new(),
            size_limit: "1Mi".into(),
        }),
        ..Default::default()
    }];
    let created = c.api.pods().create(p).await.expect("create").into_inner();
    let u = uid(&created);
    c.wait_pod("hog", "Running", |p| {
        p.status.as_ref().is_some_and(|s| s.phase == "Running")
    })
    .await;
    // Under its limit it runs on (a sync or two measure it).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        c.get_pod("hog").await.unwrap().status.unwrap().phase,
        "Running"
    );
    std::fs::write(&go, "1").unwrap();
    let p = c
        .wait_pod("hog", "Failed (Evicted)", |p| {
            p.status.as_ref().is_some_and(|s| s.phase == "Failed")
        })
        .await;
    let st = p.status.unwrap();
    assert_eq!(st.reason, "Evicted");
    let msg = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\".";
    assert_eq!(st.message, msg);
    wait_event(&c, &u, &format!("Warning Evicted: {msg}")).await;
    wait_event(&c, &u, "Normal Killing: Stopping container app").await;
    // Killed within the eviction grace (not the spec's 30 s), not restarted.
    let p = c
        .wait_pod("hog", "its container terminated", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.container_statuses
                    .first()
                    .is_some_and(|c| c.state == "Terminated")
            })
        })
        .await;
    assert_eq!(restarts(&p), 0);
    let evs = events_of(&c, &u).await;
    assert_eq!(
        evs.iter().filter(|e| e.reason == "Evicted").count(),
        1,
        "one Evicted event (the agent's): {:?}",
        evs.iter().map(line).collect::<Vec<_>>()
    );
}
