//! Issue 16 point 4 on real containerd: what the process runtime does with resources,
//! volumes and securityContext (tests/resources.rs, volumes.rs, security_context.rs),
//! the containerd runtime does too. Each test starts its own containerd and a secure
//! one-node cluster whose agent runs busybox from the project's image archive:
//! container and pod cgroups hold the limits asked (in the agent's kube-lite cgroup),
//! a container over its memory limit ends OOMKilled with 137, scheduling is unchanged;
//! configMap / emptyDir / hostPath / subPath volumes (an update reaches the file, the
//! emptyDir is shared, fsGroup owns it); runAsUser/runAsGroup/supplementalGroups,
//! capabilities drop ALL (no raw socket), privileged (all), allowPrivilegeEscalation: false,
//! readOnlyRootFilesystem, runAsNonRoot against the image's (root) user; cgroups,
//! mounts and containerd objects gone with the pods. Root, containerd and runc only.

use futures::StreamExt;
use kube_lite_proto::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, DeleteRequest, EmptyDirVolumeSource,
    GetRequest, HostPathVolumeSource, LogsRequest, ObjectMeta, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use kube_lite_tests::cluster::{require_root, ClusterOptions, TestCluster};
use kube_lite_tests::containerd::{self as kit, TestContainerd};
use std::os::unix::fs::PermissionsExt;
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

async fn cluster(ctrd: &TestContainerd, extra: &[&str]) -> TestCluster {
    let mut o = ClusterOptions::new(1, agent_bin());
    o.extra_agent_args.extend(ctrd.agent_args());
    o.extra_agent_args
        .extend(extra.iter().map(|s| s.to_string()));
    let c = TestCluster::start(o).await.expect("test cluster");
    let imgs = kit::image_archives(&agent_bin());
    let names = kit::load_image(&c, 0, &imgs.join("busybox.tar")).await;
    assert_eq!(names, vec!["docker.io/library/busybox:latest".to_string()]);
    c
}

fn sh(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn pod(name: &str, node: &str, containers: Vec<Container>, restart: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers,
            restart_policy: restart.into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

fn res(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
    let m = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Some(ResourceRequirements {
        requests: m(req),
        limits: m(lim),
    })
}

fn uid_of(p: &Pod) -> String {
    p.metadata.as_ref().unwrap().uid.clone()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// This process's cgroup directory in v1 hierarchy `dir` ("" = the v2 one), as the
/// agent (its child) and containerd's shims (children of containerd, its child) have it.
fn own_dir(dir: &str) -> PathBuf {
    let me = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let ctrl = if dir == "systemd" {
        "name=systemd"
    } else {
        dir
    };
    for l in me.lines() {
        let mut p = l.splitn(3, ':');
        let (_, ctrls, path) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        let path = path.trim_start_matches('/');
        if ctrl.is_empty() && ctrls.is_empty() {
            return Path::new("/sys/fs/cgroup").join(path);
        }
        if !ctrl.is_empty() && ctrls.split(',').any(|c| c == ctrl) {
            return Path::new("/sys/fs/cgroup").join(dir).join(path);
        }
    }
    panic!("no {ctrl} cgroup in {me}")
}

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The pod's cgroup in every hierarchy (v2: one).
fn pod_cgroups(root: &str, uid: &str) -> Vec<PathBuf> {
    if v2() {
        return vec![own_dir("").join(root).join(format!("pod-{uid}"))];
    }
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = e.file_name().to_string_lossy().to_string();
        if d == "unified" || !e.file_type().unwrap().is_dir() {
            continue;
        }
        v.push(own_dir(&d).join(root).join(format!("pod-{uid}")));
    }
    v
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

async fn logs(c: &TestCluster, pod: &str, container: &str) -> String {
    let mut s = c
        .api
        .pods()
        .logs(LogsRequest {
            name: pod.into(),
            namespace: "default".into(),
            container: container.into(),
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

async fn delete(c: &TestCluster, name: &str) {
    c.api
        .pods()
        .delete(DeleteRequest {
            name: name.into(),
            namespace: "default".into(),
            resource_version: 0,
            grace_period_seconds: 0,
            ..Default::default()
        })
        .await
        .expect("delete pod");
}

async fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `path` holds exactly `want` (trimmed).
async fn wait_file(path: &Path, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {t:?}, want {want:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Containers and tasks left in the test's containerd namespace.
async fn leftovers(ctrd: &TestContainerd) -> (Vec<String>, usize) {
    use containerd_client::services::v1::{ListContainersRequest, ListTasksRequest};
    use nodeagent::containerd::client::Ctrd;
    let c = Ctrd::connect(&ctrd.socket, &ctrd.namespace).await.unwrap();
    let cts = c
        .containers()
        .list(c.req(ListContainersRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    let tasks = c
        .tasks()
        .list(c.req(ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    (cts.into_iter().map(|x| x.id).collect(), tasks.len())
}

async fn wait_no_containers(ctrd: &TestContainerd) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = leftovers(ctrd).await;
        if l.0.is_empty() && l.1 == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "containerd leftovers: {l:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pods_get_their_limits_in_the_pod_cgroups_and_are_oom_killed() {
    if skip() {
        return;
    }
    let ctrd = TestContainerd::start().expect("containerd");
    let c = cluster(
        &ctrd,
        &[
            "--capacity-memory",
            "4Gi",
            "--reserved-memory",
            "1Gi",
            "--capacity-cpu",
            "2",
        ],
    )
    .await;
    let n0 = c.nodes[0].name.clone();
    let root = format!("kube-lite-{}", c.nodes[0].netns_prefix);

    // Scheduling by requests is the runtime's business no more than before.
    let mut big = sh("app", "sleep 3600");
    big.resources = res(&[("memory", "4Gi")], &[]);
    c.api
        .pods()
        .create(pod("big", "", vec![big], "Always"))
        .await
        .unwrap();
    let p = c
        .wait_pod("big", "Unschedulable", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reason == "Unschedulable")
        })
        .await;
    assert_eq!(
        p.status.unwrap().message,
        "0/1 nodes are available: 1 Insufficient memory."
    );

    // Limits in the cgroups of the container (runc's cgroupsPath) and its pod.
    let mut app = sh("app", "sleep 3600");
    app.resources = res(&[("cpu", "100m")], &[("cpu", "250m"), ("memory", "32Mi")]);
    c.api
        .pods()
        .create(pod("limited", &n0, vec![app], "Always"))
        .await
        .unwrap();
    let p = c
        .wait_pod("limited", "Running", |p| phase(p) == "Running")
        .await;
    let uid = uid_of(&p);
    let st = p.status.clone().unwrap();
    assert_eq!(st.qos_class, "Burstable");
    let pid = st.container_statuses[0].pid;
    if v2() {
        let d = own_dir("").join(&root).join(format!("pod-{uid}"));
        assert_eq!(read(&d.join("app/memory.max")), (32 << 20).to_string());
        assert_eq!(read(&d.join("app/cpu.max")), "25000 100000");
        assert_eq!(read(&d.join("cpu.max")), "25000 100000", "pod: the sum");
        let procs = read(&d.join("app/cgroup.procs"));
        assert!(procs.lines().any(|l| l == pid.to_string()), "{procs:?}");
    } else {
        let mem = own_dir("memory").join(&root).join(format!("pod-{uid}"));
        let cpu = own_dir("cpu").join(&root).join(format!("pod-{uid}"));
        assert_eq!(
            read(&mem.join("app/memory.limit_in_bytes")),
            (32 << 20).to_string()
        );
        assert_eq!(
            read(&mem.join("memory.limit_in_bytes")),
            (32 << 20).to_string(),
            "pod: the sum"
        );
        assert_eq!(read(&cpu.join("app/cpu.cfs_quota_us")), "25000");
        assert_eq!(read(&cpu.join("app/cpu.cfs_period_us")), "100000");
        assert_eq!(read(&cpu.join("app/cpu.shares")), "102");
        // The task (the container's PID 1 on the host) is in both.
        for d in [&mem, &cpu] {
            let procs = read(&d.join("app/cgroup.procs"));
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "task {pid} in {}: {procs:?}",
                d.display()
            );
        }
    }
    let cgroups = pod_cgroups(&root, &uid);
    assert!(cgroups.iter().any(|d| d.exists()));

    // Over the memory limit: OOMKilled, 137 (the container's cgroup counted the kill).
    let mut hog = sh("app", "dd if=/dev/zero of=/dev/null bs=64M count=1");
    hog.resources = res(&[], &[("memory", "16Mi")]);
    c.api
        .pods()
        .create(pod("hog", &n0, vec![hog], "Never"))
        .await
        .unwrap();
    let p = c.wait_pod("hog", "Failed", |p| phase(p) == "Failed").await;
    let hog_uid = uid_of(&p);
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(
        (cs.reason.as_str(), cs.exit_code),
        ("OOMKilled", 137),
        "{cs:?}\n{}",
        c.agent_log_tail(0, 20)
    );
    // A plain exit 137 (a SIGKILLed child's status, no OOM) stays an Error.
    let killed = sh("app", "sleep 100 & kill -9 $!; wait $!");
    c.api
        .pods()
        .create(pod("killed", &n0, vec![killed], "Never"))
        .await
        .unwrap();
    let p = c
        .wait_pod("killed", "Failed", |p| phase(p) == "Failed")
        .await;
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    assert_eq!((cs.reason.as_str(), cs.exit_code), ("Error", 137), "{cs:?}");

    // Deleted with the pods: the cgroups in every hierarchy, the containerd objects.
    for n in ["limited", "hog", "killed", "big"] {
        delete(&c, n).await;
    }
    let mut all = cgroups;
    all.extend(pod_cgroups(&root, &hog_uid));
    wait_until("pod cgroups removed", Duration::from_secs(60), || {
        all.iter().all(|d| !d.exists())
    })
    .await;
    wait_no_containers(&ctrd).await;
}

fn mount(name: &str, path: &str, read_only: bool, sub_path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only,
        sub_path: sub_path.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pods_get_their_volumes_and_security_context() {
    if skip() {
        return;
    }
    let ctrd = TestContainerd::start().expect("containerd");
    let c = cluster(&ctrd, &[]).await;
    let n0 = c.nodes[0].name.clone();
    // Results come out through a hostPath volume (writable for any user).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();

    c.api
        .config_maps()
        .create(ConfigMap {
            metadata: Some(ObjectMeta {
                name: "cfg".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            data: [
                ("greeting".to_string(), "hello".to_string()),
                ("extra".to_string(), "x1".to_string()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let volumes = vec![
        Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "shared".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "out".into(),
            host_path: Some(HostPathVolumeSource {
                path: out.display().to_string(),
                r#type: "Directory".into(),
            }),
            ..Default::default()
        },
    ];
    // writer: the mounted configMap copied out again and again (so an update shows),
    // whether the read-only mount refuses writes, the subPath file, a file for the
    // reader in the shared emptyDir (fsGroup's).
    let mut writer = sh(
        "writer",
        "echo from-writer > /klshared/f; \
         if touch /etc/klcfg/x 2>/dev/null; then echo rw > /out/ro; else echo ro > /out/ro; fi; \
         cat /etc/klextra > /out/extra; stat -c %g /klshared > /out/shared-gid; \
         while true; do cat /etc/klcfg/greeting > /out/g.tmp; mv /out/g.tmp /out/greeting; sleep 1; done",
    );
    writer.volume_mounts = vec![
        mount("cfg", "/etc/klcfg", true, ""),
        mount("cfg", "/etc/klextra", true, "extra"),
        mount("shared", "/klshared", false, ""),
        mount("out", "/out", false, ""),
    ];
    // reader: another container sees the writer's file.
    let mut reader = sh(
        "reader",
        "until test -f /klshared/f; do sleep 1; done; cp /klshared/f /out/seen-by-reader; sleep 3600",
    );
    reader.volume_mounts = vec![
        mount("shared", "/klshared", false, ""),
        mount("out", "/out", false, ""),
    ];
    let mut vols = pod("vols", &n0, vec![writer, reader], "Always");
    let spec = vols.spec.as_mut().unwrap();
    spec.volumes = volumes;
    spec.security_context = Some(PodSecurityContext {
        fs_group: Some(2345),
        ..Default::default()
    });
    c.api.pods().create(vols).await.unwrap();
    let p = c
        .wait_pod("vols", "Running", |p| phase(p) == "Running")
        .await;
    let vols_uid = uid_of(&p);
    let t = Duration::from_secs(30);
    wait_file(&out.join("seen-by-reader"), "from-writer", t).await;
    wait_file(&out.join("greeting"), "hello", t).await;
    wait_file(&out.join("ro"), "ro", t).await;
    wait_file(&out.join("extra"), "x1", t).await;
    wait_file(&out.join("shared-gid"), "2345", t).await;
    // Mount points are made in the containers' root filesystems, not on the node.
    assert!(!Path::new("/klshared").exists() && !Path::new("/etc/klcfg").exists());

    // An update of the ConfigMap reaches the mounted file (the volume directory is
    // bound, not the `..data` it pointed to then).
    let mut cm = c
        .api
        .config_maps()
        .get(GetRequest {
            name: "cfg".into(),
            namespace: "default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    cm.data.insert("greeting".into(), "bonjour".into());
    c.api.config_maps().update(cm).await.unwrap();
    wait_file(&out.join("greeting"), "bonjour", Duration::from_secs(90)).await;

    // securityContext: users and groups, capabilities, no_new_privs, read-only root.
    let ping = "busybox ping -c1 -W2 127.0.0.1 >/dev/null 2>&1; echo ping=$?";
    let mut user = sh("user", "id -u; id -g; id -G");
    user.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(3000),
        ..Default::default()
    });
    let plain = sh(
        "plain",
        &format!("{ping}; grep NoNewPrivs /proc/self/status"),
    );
    let mut nocaps = sh(
        "nocaps",
        &format!(
            "{ping}; grep CapEff /proc/self/status; touch /x 2>&1; echo touch=$?; \
             grep NoNewPrivs /proc/self/status"
        ),
    );
    nocaps.security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: vec![],
            drop: vec!["ALL".into()],
        }),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        ..Default::default()
    });
    let mut privileged = sh("privileged", "grep CapEff /proc/self/status");
    privileged.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let mut sec = pod("sec", &n0, vec![user, plain, nocaps, privileged], "Never");
    sec.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        supplemental_groups: vec![5],
        ..Default::default()
    });
    c.api.pods().create(sec).await.unwrap();
    let p = c
        .wait_pod("sec", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let sec_uid = uid_of(&p);
    let l = logs(&c, "sec", "user").await;
    let lines: Vec<&str> = l.lines().collect();
    assert_eq!(lines[..2], ["1000", "3000"], "runAsUser/runAsGroup: {l}");
    let groups: Vec<&str> = lines[2].split(' ').collect();
    assert!(
        groups.contains(&"3000") && groups.contains(&"5"),
        "supplementalGroups: {l}"
    );
    let l = logs(&c, "sec", "plain").await;
    assert_eq!(l, "ping=0\nNoNewPrivs:\t0\n", "the default container pings");
    let l = logs(&c, "sec", "nocaps").await;
    assert!(l.contains("ping=1\n"), "drop ALL: no raw socket: {l}");
    assert!(l.contains("CapEff:\t0000000000000000\n"), "{l}");
    assert!(l.contains("Read-only file system"), "{l}");
    assert!(l.contains("touch=1\n"), "{l}");
    assert!(l.contains("NoNewPrivs:\t1\n"), "{l}");
    // privileged: every capability this node has (the agent's bounding set).
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = host
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let l = logs(&c, "sec", "privileged").await;
    assert_eq!(l, format!("CapEff:\t{bnd}\n"), "privileged");

    // runAsNonRoot against the image's USER (busybox runs as root): refused with the
    // kubelet's message, the container never created.
    let mut nr = sh("app", "sleep 3600");
    nr.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let created = c
        .api
        .pods()
        .create(pod("nonroot", &n0, vec![nr], "Always"))
        .await
        .unwrap()
        .into_inner();
    let nr_uid = uid_of(&created);
    let p = c
        .wait_pod("nonroot", "CreateContainerConfigError", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.container_statuses
                    .first()
                    .is_some_and(|c| c.reason == "CreateContainerConfigError")
            })
        })
        .await;
    assert_eq!(
        p.status.unwrap().container_statuses[0].message,
        format!("container has runAsNonRoot and image will run as root (pod: \"nonroot_default({nr_uid})\", container: app)")
    );

    // Gone with the pods: volumes (no mount left under the volume directory), cgroups,
    // containerd objects.
    let vol_dir = c.nodes[0].state_dir.join("volumes").join(&vols_uid);
    assert!(vol_dir.exists());
    let root = format!("kube-lite-{}", c.nodes[0].netns_prefix);
    let mut cgroups = pod_cgroups(&root, &vols_uid);
    cgroups.extend(pod_cgroups(&root, &sec_uid));
    assert!(cgroups.iter().any(|d| d.exists()));
    for n in ["vols", "sec", "nonroot"] {
        delete(&c, n).await;
    }
    wait_until("pod volumes removed", Duration::from_secs(60), || {
        !vol_dir.exists()
    })
    .await;
    assert!(kit::mounts_under(&vol_dir).is_empty());
    wait_until("pod cgroups removed", Duration::from_secs(60), || {
        cgroups.iter().all(|d| !d.exists())
    })
    .await;
    wait_no_containers(&ctrd).await;
}
