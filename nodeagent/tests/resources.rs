//! Resources end to end (issue 13): node capacity/allocatable from the agent flags, the
//! scheduler fitting requests (and naming the resource when nothing fits), cgroup
//! limits written for the pod and container (cpu quota, memory limit), a container over
//! its memory limit ending OOMKilled with exit code 137, qosClass, cgroups removed with
//! the pod. Real apiserver, real agents, real cgroups (v1 on this project's machines,
//! v2 elsewhere). Root only.

use kube_lite_proto::v1::{Container, GetRequest, Pod, ResourceRequirements};
use kube_lite_tests::cluster::{own_cgroup_dir, require_root, whoami_cluster, ClusterOptions};
use kube_lite_tests::fixtures::{node_pod, read_trimmed, res};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn pod(
    name: &str,
    node: &str,
    args: &[&str],
    r: Option<ResourceRequirements>,
    restart: &str,
) -> Pod {
    let app = Container {
        name: "app".into(),
        image: "busybox".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        resources: r,
        ..Default::default()
    };
    node_pod(name, node, vec![app], restart, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_cgroups_oom_killed_qos_and_scheduling_by_requests() {
    if !require_root() {
        return;
    }
    let mut opts = ClusterOptions::new(2, agent_bin());
    opts.extra_agent_args = [
        "--capacity-memory",
        "4Gi",
        "--reserved-memory",
        "1Gi",
        "--capacity-cpu",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let c = whoami_cluster(opts).await;
    let n0 = c.nodes[0].name.clone();

    // Capacity and allocatable from the flags.
    let node = c
        .api
        .nodes()
        .get(GetRequest {
            name: n0.clone(),
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let st = node.status.unwrap();
    assert_eq!(st.capacity["memory"], "4Gi");
    assert_eq!(st.allocatable["memory"], "3Gi");
    assert_eq!(st.allocatable["cpu"], "2");

    // Scheduling: 4Gi fits no node (3Gi allocatable each), named in the message.
    let mut big = pod(
        "big",
        "",
        &["sleep", "3600"],
        res(&[("memory", "4Gi")], &[]),
        "Always",
    );
    big.spec.as_mut().unwrap().node_name.clear();
    c.api.pods().create(big).await.unwrap();
    let p = c
        .wait_pod("big", "Unschedulable", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reason == "Unschedulable")
        })
        .await;
    assert_eq!(
        p.status.unwrap().message,
        "0/2 nodes are available: 2 Insufficient memory."
    );
    // Two pods of 2Gi: one per node (the first fills its node's 3Gi enough).
    for n in ["half-a", "half-b"] {
        c.api
            .pods()
            .create(pod(
                n,
                "",
                &["sleep", "3600"],
                res(&[("memory", "2Gi")], &[]),
                "Always",
            ))
            .await
            .unwrap();
    }
    let a = c
        .wait_pod("half-a", "bound", |p| {
            !p.spec.as_ref().unwrap().node_name.is_empty()
        })
        .await;
    let b = c
        .wait_pod("half-b", "bound", |p| {
            !p.spec.as_ref().unwrap().node_name.is_empty()
        })
        .await;
    assert_ne!(
        a.spec.unwrap().node_name,
        b.spec.unwrap().node_name,
        "requests spread the pods"
    );
    // A third one fits nowhere now.
    c.api
        .pods()
        .create(pod(
            "half-c",
            "",
            &["sleep", "3600"],
            res(&[("memory", "2Gi")], &[]),
            "Always",
        ))
        .await
        .unwrap();
    let p = c
        .wait_pod("half-c", "Unschedulable", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reason == "Unschedulable")
        })
        .await;
    assert_eq!(
        p.status.unwrap().message,
        "0/2 nodes are available: 2 Insufficient memory."
    );
    // Deleting one frees room: half-c is scheduled.
    c.delete_pod("half-a", 0).await.unwrap();
    c.wait_pod("half-c", "bound after room was freed", |p| {
        !p.spec.as_ref().unwrap().node_name.is_empty()
    })
    .await;

    // Limits in the cgroups of the container and its pod.
    let r = res(&[("cpu", "100m")], &[("cpu", "250m"), ("memory", "32Mi")]);
    c.api
        .pods()
        .create(pod("limited", &n0, &["sleep", "3600"], r, "Always"))
        .await
        .unwrap();
    let p = c
        .wait_pod("limited", "Running", |p| {
            p.status.as_ref().is_some_and(|s| s.phase == "Running")
        })
        .await;
    let st = p.status.clone().unwrap();
    assert_eq!(st.qos_class, "Burstable");
    let uid = p.metadata.as_ref().unwrap().uid.clone();
    let root = format!("kube-lite-{}", c.nodes[0].netns_prefix);
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (mem_pod, cpu_pod) = if v2 {
        let d = own_cgroup_dir("").join(&root).join(format!("pod-{uid}"));
        (d.clone(), d)
    } else {
        (
            own_cgroup_dir("memory")
                .join(&root)
                .join(format!("pod-{uid}")),
            own_cgroup_dir("cpu").join(&root).join(format!("pod-{uid}")),
        )
    };
    if v2 {
        assert_eq!(
            read_trimmed(&mem_pod.join("app/memory.max")),
            (32 << 20).to_string()
        );
        assert_eq!(read_trimmed(&cpu_pod.join("app/cpu.max")), "25000 100000");
        assert_eq!(
            read_trimmed(&cpu_pod.join("cpu.max")),
            "25000 100000",
            "pod: the sum"
        );
    } else {
        assert_eq!(
            read_trimmed(&mem_pod.join("app/memory.limit_in_bytes")),
            (32 << 20).to_string()
        );
        assert_eq!(
            read_trimmed(&mem_pod.join("memory.limit_in_bytes")),
            (32 << 20).to_string(),
            "pod: the sum"
        );
        assert_eq!(read_trimmed(&cpu_pod.join("app/cpu.cfs_quota_us")), "25000");
        assert_eq!(
            read_trimmed(&cpu_pod.join("app/cpu.cfs_period_us")),
            "100000"
        );
        assert_eq!(read_trimmed(&cpu_pod.join("app/cpu.shares")), "102");
    }
    // The container's processes are in it.
    let pid = st.container_statuses[0].pid;
    let procs = read_trimmed(&mem_pod.join("app/cgroup.procs"));
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "shim {pid} in {procs:?}"
    );
    // Deleted with the pod.
    c.delete_pod("limited", 0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while mem_pod.exists() || cpu_pod.exists() {
        assert!(
            Instant::now() < deadline,
            "pod cgroup {} still there",
            mem_pod.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Over the memory limit: OOMKilled, 137.
    let r = res(&[], &[("memory", "16Mi")]);
    c.api
        .pods()
        .create(pod(
            "hog",
            &n0,
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
            r,
            "Never",
        ))
        .await
        .unwrap();
    let p = c
        .wait_pod("hog", "Failed", |p| {
            p.status.as_ref().is_some_and(|s| s.phase == "Failed")
        })
        .await;
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(
        (cs.reason.as_str(), cs.exit_code),
        ("OOMKilled", 137),
        "{cs:?}"
    );
    assert_eq!(p.status.unwrap().qos_class, "Burstable");
}
