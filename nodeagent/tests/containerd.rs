//! The containerd runtime on real containerd (root, containerd and runc installed;
//! skipped otherwise): each test starts its own containerd (own root, state, socket,
//! namespace `kube-lite-<id>`), loads the project's images (deploy/images/build-images.sh)
//! through the apiserver's `NodeApi.LoadImage` (proxied to the agent's mTLS port) as
//! `kubectl-lite image load` does, and runs pods from them on a secure namespace cluster.

use futures::StreamExt;
use kube_lite_proto::v1::{
    Container, DeleteRequest, ImageChunk, ListRequest, LogsRequest, ObjectMeta, Pod, PodSpec,
    Service, ServicePort, ServiceSpec,
};
use kube_lite_tests::cluster::{busybox, require_root, ClusterOptions, TestCluster};
use kube_lite_tests::containerd::{self as kit, TestContainerd};
use nodeagent::containerd::client::{Ctrd, SNAPSHOTTER};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn skip() -> bool {
    if !require_root() {
        return true;
    }
    if !kit::available() {
        eprintln!("skipping: containerd/runc not installed (apt-get install containerd runc)");
        return true;
    }
    false
}

/// The project's image archives (built once into target/images).
fn images() -> PathBuf {
    kit::image_archives(&agent_bin())
}

async fn cluster(nodes: usize, ctrd: &TestContainerd) -> TestCluster {
    let mut o = ClusterOptions::new(nodes, agent_bin());
    o.extra_agent_args.extend(ctrd.agent_args());
    o.extra_agent_args
        .extend(["--heartbeat-interval".to_string(), "1s".to_string()]);
    TestCluster::start(o).await.expect("test cluster")
}

/// Streams `archive` to node `i` through the apiserver (the `kubectl-lite image load`
/// path: admin channel, NodeApi.LoadImage, the apiserver dials the agent over mTLS).
async fn load(c: &TestCluster, i: usize, archive: &Path) -> Vec<String> {
    kit::load_image(c, i, archive).await
}

/// The archive in 1 MiB chunks, the first naming the node and the file.
fn chunks(archive: &Path, node: &str) -> Vec<ImageChunk> {
    let data = std::fs::read(archive).unwrap();
    let name = archive.file_name().unwrap().to_string_lossy().to_string();
    data.chunks(1 << 20)
        .enumerate()
        .map(|(k, d)| ImageChunk {
            data: d.to_vec(),
            file_name: if k == 0 { name.clone() } else { String::new() },
            node: if k == 0 {
                node.to_string()
            } else {
                String::new()
            },
        })
        .collect()
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
}

fn pod(name: &str, node: &str, image: &str, command: &[&str], restart: &str) -> Pod {
    Pod {
        metadata: meta(name, &[]),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "c".into(),
                image: image.into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }],
            restart_policy: restart.into(),
            termination_grace_period_seconds: 2,
            ..Default::default()
        }),
        status: None,
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

fn running(p: &Pod) -> bool {
    phase(p) == "Running" && p.status.as_ref().is_some_and(|s| !s.pod_ip.is_empty())
}

async fn logs(c: &TestCluster, name: &str, previous: bool) -> String {
    let mut s = c
        .api
        .pods()
        .logs(LogsRequest {
            name: name.into(),
            namespace: "default".into(),
            previous,
            tail_lines: -1,
            ..Default::default()
        })
        .await
        .expect("logs")
        .into_inner();
    let mut out = Vec::new();
    while let Some(ch) = s.next().await {
        out.extend(ch.expect("log chunk").data);
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn delete(c: &TestCluster, name: &str, grace: i64) {
    c.api
        .pods()
        .delete(DeleteRequest {
            name: name.into(),
            namespace: "default".into(),
            resource_version: 0,
            grace_period_seconds: grace,
            ..Default::default()
        })
        .await
        .expect("delete pod");
}

async fn wait_gone(c: &TestCluster, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get_pod(name).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "pod {name} still there after 60 s\n{}",
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (containers, tasks, active snapshots) left in the test's containerd namespace.
async fn leftovers(ctrd: &TestContainerd) -> (Vec<String>, Vec<String>, Vec<String>) {
    use containerd_client::services::v1::{
        snapshots::ListSnapshotsRequest, ListContainersRequest, ListTasksRequest,
    };
    let c = Ctrd::connect(&ctrd.socket, &ctrd.namespace).await.unwrap();
    let cts = c
        .containers()
        .list(c.req(ListContainersRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|x| x.id)
        .collect();
    let tasks = c
        .tasks()
        .list(c.req(ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut snaps = Vec::new();
    let mut s = c
        .snapshots()
        .list(c.req(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    while let Some(r) = s.next().await {
        for i in r.unwrap().info {
            // Kind 3 = committed (image layers); anything else is a container's.
            if i.kind != 3 {
                snaps.push(i.name);
            }
        }
    }
    (cts, tasks, snaps)
}

async fn wait_no_leftovers(ctrd: &TestContainerd) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = leftovers(ctrd).await;
        if l.0.is_empty() && l.1.is_empty() && l.2.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containerd leftovers (containers, tasks, snapshots): {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn waiting_reason(p: &Pod) -> (String, String) {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .filter(|c| c.state == "Waiting")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// A pod from a loaded archive sees its image's filesystem, not the node's; exit codes;
/// restarts with `--previous` logs; missing images say how to load them; deleting pods
/// leaves no container, task or snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pods_see_their_image_and_leave_nothing_behind() {
    if skip() {
        return;
    }
    let imgs = images();
    let ctrd = TestContainerd::start().expect("containerd");
    let c = cluster(1, &ctrd).await;
    // Only admins load images: a node identity is refused by the apiserver, and the
    // agent's port refuses anyone but the apiserver.
    let denied = kube_lite_proto::v1::node_api_client::NodeApiClient::new(
        c.api.node_channel(&c.nodes[0].name),
    )
    .load_image(futures::stream::iter(chunks(
        &imgs.join("busybox.tar"),
        &c.nodes[0].name,
    )))
    .await
    .expect_err("a node may not load images");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("only admins load images"),
        "{denied:?}"
    );
    let names = load(&c, 0, &imgs.join("busybox.tar")).await;
    assert_eq!(names, vec!["docker.io/library/busybox:latest".to_string()]);
    // status.images lists it (the heartbeat publishes it).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = c
            .api
            .nodes()
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        let imgs: Vec<String> = n[0]
            .status
            .as_ref()
            .unwrap()
            .images
            .iter()
            .flat_map(|i| i.names.clone())
            .collect();
        if imgs.contains(&"docker.io/library/busybox:latest".to_string()) {
            assert!(n[0].status.as_ref().unwrap().images[0].size_bytes > 100_000);
            break;
        }
        assert!(Instant::now() < deadline, "status.images: {imgs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let script = "cat /etc/os-release; if [ -e /usr/bin/apt-get ] || [ -e /etc/debian_version ]; then echo NODE-FILES; else echo IMAGE-ONLY; fi; hostname; exit 3";
    c.api
        .pods()
        .create(pod(
            "os",
            "node0",
            "busybox",
            &["sh", "-c", script],
            "Never",
        ))
        .await
        .unwrap();
    let p = c.wait_pod("os", "Failed", |p| phase(p) == "Failed").await;
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!((cs.exit_code, cs.reason.as_str()), (3, "Error"), "{cs:?}");
    let out = logs(&c, "os", false).await;
    let host = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    assert!(out.contains("NAME=\"kube-lite busybox\""), "{out}");
    assert!(
        !host.contains("kube-lite busybox"),
        "the node's os-release differs"
    );
    assert!(
        out.contains("IMAGE-ONLY") && !out.contains("NODE-FILES"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "os"),
        "hostname is the pod name: {out}"
    );

    // Restarts: each instance logs, the previous one stays readable.
    c.api
        .pods()
        .create(pod(
            "flap",
            "node0",
            "busybox",
            &["sh", "-c", "echo run-$$; sleep 0.2; exit 1"],
            "Always",
        ))
        .await
        .unwrap();
    let p = c
        .wait_pod("flap", "restarted twice", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.first())
                .is_some_and(|c| c.restart_count >= 2)
        })
        .await;
    let last = &p.status.unwrap().container_statuses[0];
    assert!(last.restart_count >= 2, "{last:?}");
    let prev = logs(&c, "flap", true).await;
    assert!(
        prev.starts_with("run-"),
        "previous instance's log: {prev:?}"
    );

    // Missing images: Waiting with Kubernetes' reasons and how to load the image.
    let mut never = pod("never", "node0", "nginx", &[], "Always");
    never.spec.as_mut().unwrap().containers[0].image_pull_policy = "Never".into();
    c.api.pods().create(never).await.unwrap();
    let p = c
        .wait_pod("never", "ErrImageNeverPull", |p| {
            waiting_reason(p).0 == "ErrImageNeverPull"
        })
        .await;
    let (_, msg) = waiting_reason(&p);
    assert!(
        msg.contains("docker.io/library/nginx:latest") && msg.contains("kubectl-lite image load"),
        "{msg}"
    );
    c.api
        .pods()
        .create(pod("pull", "node0", "nginx:1.25", &[], "Always"))
        .await
        .unwrap();
    let p = c
        .wait_pod("pull", "ErrImagePull", |p| {
            waiting_reason(p).0 == "ErrImagePull"
        })
        .await;
    assert!(
        waiting_reason(&p).1.contains("no registry"),
        "{:?}",
        waiting_reason(&p)
    );

    for n in ["os", "flap", "never", "pull"] {
        delete(&c, n, 0).await;
    }
    for n in ["os", "flap", "never", "pull"] {
        wait_gone(&c, n).await;
    }
    wait_no_leftovers(&ctrd).await;
    drop(c);
}

fn service(name: &str) -> Service {
    Service {
        metadata: meta(name, &[]),
        spec: Some(ServiceSpec {
            selector: [("app".to_string(), "whoami".to_string())]
                .into_iter()
                .collect(),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 3001,
                target_port: 8080,
                ..Default::default()
            }],
            cluster_ip: "10.96.10.10".into(),
            r#type: "ClusterIP".into(),
            ..Default::default()
        }),
        status: None,
    }
}

fn task_pid(p: &Pod) -> i32 {
    p.status.as_ref().unwrap().container_statuses[0].pid
}

/// The tutorial's scene with image-based pods: four whoami pods from the loaded
/// archive on two nodes behind 10.96.10.10:3001, four different answers to a client pod
/// (busybox image); kill -9 of an agent adopts its running containers (same task PIDs,
/// no second instance); graceful deletion; nothing left in containerd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_scene_with_images_and_kill_9_adoption() {
    if skip() {
        return;
    }
    let imgs = images();
    let ctrd = TestContainerd::start().expect("containerd");
    let mut c = cluster(2, &ctrd).await;
    for i in 0..2 {
        let n = load(&c, i, &imgs.join("whoami.tar")).await;
        assert!(
            n.contains(&"docker.io/library/whoami:latest".to_string()),
            "{n:?}"
        );
        load(&c, i, &imgs.join("busybox.tar")).await;
    }
    for k in 0..4 {
        let mut p = pod(
            &format!("whoami-{k}"),
            &format!("node{}", k % 2),
            "whoami",
            &[],
            "Always",
        );
        p.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "whoami".into());
        p.spec.as_mut().unwrap().termination_grace_period_seconds = 30;
        c.api.pods().create(p).await.unwrap();
    }
    c.api.services().create(service("whoami")).await.unwrap();
    let mut before = Vec::new();
    for k in 0..4 {
        before.push(c.wait_pod(&format!("whoami-{k}"), "Running", running).await);
    }
    let script =
        "for i in 1 2 3 4; do timeout 5 wget -qO- http://10.96.10.10:3001 || echo FAIL; done";
    let ask = |name: &'static str| {
        let c = &c;
        async move {
            c.api
                .pods()
                .create(pod(
                    name,
                    "node0",
                    "busybox",
                    &["sh", "-c", script],
                    "Never",
                ))
                .await
                .unwrap();
            c.wait_pod(name, "Succeeded", |p| phase(p) == "Succeeded")
                .await;
            let out = logs(c, name, false).await;
            delete(c, name, 0).await;
            out
        }
    };
    // The Service's rules reach every node within a moment; ask until four answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut names = [
        "client-a", "client-b", "client-c", "client-d", "client-e", "client-f",
    ]
    .into_iter();
    let hosts = loop {
        let out = ask(names.next().expect("clients left")).await;
        let hosts: BTreeSet<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("HOSTNAME:"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        if hosts.len() == 4 || Instant::now() > deadline {
            break hosts;
        }
        eprintln!("answers so far: {out}");
    };
    assert_eq!(hosts.len(), 4, "four different pods answer: {hosts:?}");

    // kill -9 of node0's agent: the containers keep running and are adopted.
    let pids0: Vec<i32> = before.iter().map(task_pid).collect();
    c.kill_agent(0);
    assert!(
        pids0
            .iter()
            .all(|p| Path::new(&format!("/proc/{p}")).exists()),
        "containers outlive the agent"
    );
    c.start_agent(0);
    c.wait_ready(Duration::from_secs(60)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .agent_log_tail(0, 200)
        .contains("adopted running container")
    {
        assert!(
            Instant::now() < deadline,
            "no adoption in the log:\n{}",
            c.agent_log_tail(0, 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (k, pid) in pids0.iter().enumerate() {
        let p = c.wait_pod(&format!("whoami-{k}"), "Running", running).await;
        let cs = &p.status.as_ref().unwrap().container_statuses[0];
        assert_eq!(
            cs.pid, *pid,
            "whoami-{k}: same instance after the agent restart"
        );
        assert_eq!(cs.restart_count, 0, "whoami-{k} was not restarted");
    }
    let (cts, tasks, _) = leftovers(&ctrd).await;
    assert_eq!(
        (cts.len(), tasks.len()),
        (4, 4),
        "one container and task per pod: {cts:?} {tasks:?}"
    );

    // Graceful deletion: whoami ends on SIGTERM, well within its 30 s grace.
    let t = Instant::now();
    for k in 0..4 {
        delete(&c, &format!("whoami-{k}"), 30).await;
    }
    for k in 0..4 {
        wait_gone(&c, &format!("whoami-{k}")).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "SIGTERM ends whoami: {:?}",
        t.elapsed()
    );
    let _ = busybox();
    wait_no_leftovers(&ctrd).await;
    drop(c);
}
