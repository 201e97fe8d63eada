//! securityContext on a real node (issue 13): runAsUser/runAsGroup/fsGroup reach the
//! program and commands exec'd into it; capabilities drop ALL leaves no raw socket
//! (busybox ping fails where a default container's works); allowPrivilegeEscalation
//! false sets no_new_privs; readOnlyRootFilesystem makes `/` read-only; runAsNonRoot
//! without a user keeps the container waiting with CreateContainerConfigError; what the
//! process runtime cannot honour is refused at admission naming the field. Root only.

use futures::StreamExt;
use kube_lite_proto::v1::{
    pod_exec_client::PodExecClient, Capabilities, Container, ExecRequest, ExecStart, LogsRequest,
    Pod, PodSecurityContext, SecurityContext,
};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions, TestCluster};
use kube_lite_tests::fixtures::{eventually, node_pod};
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn sh(name: &str, script: &str, sc: Option<SecurityContext>) -> Container {
    Container {
        name: name.into(),
        image: "busybox".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            format!("{script}; exec sleep 3600"),
        ],
        security_context: sc,
        ..Default::default()
    }
}

fn pod(name: &str, psc: Option<PodSecurityContext>, containers: Vec<Container>) -> Pod {
    let mut p = node_pod(name, "node0", containers, "", 1);
    p.spec.as_mut().unwrap().security_context = psc;
    p
}

async fn logs(c: &TestCluster, pod: &str, container: &str) -> String {
    let Ok(s) = c
        .api
        .pods()
        .logs(LogsRequest {
            name: pod.into(),
            namespace: "default".into(),
            container: container.into(),
            ..Default::default()
        })
        .await
    else {
        return String::new();
    };
    let mut s = s.into_inner();
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.extend(chunk.data);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until the container's log has `lines` lines and returns it.
async fn log_lines(c: &TestCluster, pod: &str, container: &str, lines: usize) -> String {
    eventually(
        &format!("{lines} log lines of {pod}/{container}"),
        Duration::from_secs(60),
        || async move {
            let t = logs(c, pod, container).await;
            (t.lines().count() >= lines).then_some(t)
        },
    )
    .await
}

/// Output and exit code of `cmd` exec'd into `container` through the apiserver.
async fn exec(c: &TestCluster, pod: &str, container: &str, cmd: &[&str]) -> (String, i32) {
    let start = ExecRequest {
        start: Some(ExecStart {
            name: pod.into(),
            namespace: "default".into(),
            container: container.into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut r = PodExecClient::new(c.api.channel())
        .exec(futures::stream::iter([start]))
        .await
        .unwrap()
        .into_inner();
    let (mut out, mut code) = (Vec::new(), -1);
    while let Some(m) = r.next().await {
        let m = m.unwrap();
        out.extend(m.stdout);
        out.extend(m.stderr);
        if let Some(e) = m.exit {
            code = e.exit_code;
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_capabilities_no_new_privs_read_only_root_and_the_non_root_rule() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let probe_file = format!("/kl-ro-{}", c.id);
    let ping = "busybox ping -c1 -W2 127.0.0.1 >/dev/null 2>&1; echo ping=$?";
    let user = sh(
        "user",
        "id -u; id -g; id -G",
        Some(SecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        }),
    );
    let locked = sh(
        "locked",
        &format!(
            "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; {ping}; \
             touch {probe_file} 2>&1; echo touch=$?; echo done"
        ),
        Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: vec![],
                drop: vec!["ALL".into()],
            }),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
    );
    let control = sh(
        "control",
        &format!("{ping}; grep NoNewPrivs /proc/self/status"),
        None,
    );
    let psc = PodSecurityContext {
        run_as_group: Some(3000),
        fs_group: Some(2000),
        ..Default::default()
    };
    c.api
        .pods()
        .create(pod("secure", Some(psc), vec![user, locked, control]))
        .await
        .unwrap();
    let u = log_lines(&c, "secure", "user", 3).await;
    let _ = std::fs::remove_file(&probe_file);
    assert_eq!(
        u, "1000\n3000\n3000 2000\n",
        "uid, gid from the pod, fsGroup"
    );
    // A command exec'd into the container runs as its user too (once the agent has
    // recorded it Running: its output can come first).
    c.wait_pod("secure", "container user Running", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.container_statuses
                .iter()
                .any(|cs| cs.name == "user" && cs.state == "Running")
        })
    })
    .await;
    let (out, code) = exec(&c, "secure", "user", &["id", "-u"]).await;
    assert_eq!((out.as_str(), code), ("1000\n", 0));

    let control = log_lines(&c, "secure", "control", 2).await;
    assert_eq!(
        control, "ping=0\nNoNewPrivs:\t0\n",
        "a default container opens raw sockets"
    );
    let l = log_lines(&c, "secure", "locked", 7).await;
    let _ = std::fs::remove_file(&probe_file);
    assert!(l.contains("CapBnd:\t0000000000000000\n"), "{l}");
    assert!(l.contains("CapEff:\t0000000000000000\n"), "{l}");
    assert!(l.contains("NoNewPrivs:\t1\n"), "{l}");
    assert!(l.contains("ping=1\n"), "drop ALL: no raw socket: {l}");
    assert!(l.contains("Read-only file system"), "{l}");
    assert!(l.contains("touch=1\n"), "{l}");
    assert!(
        !std::path::Path::new(&probe_file).exists(),
        "the node's root stayed untouched"
    );
    // Exec'd commands get the same (no capabilities, read-only root).
    let (out, _) = exec(
        &c,
        "secure",
        "locked",
        &["grep", "CapBnd", "/proc/self/status"],
    )
    .await;
    assert_eq!(out, "CapBnd:\t0000000000000000\n");

    // runAsNonRoot with no user: the process runtime would run it as root.
    let nr = sh("app", "true", None);
    let psc = PodSecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    };
    c.api
        .pods()
        .create(pod("nonroot", Some(psc), vec![nr]))
        .await
        .unwrap();
    let p = c
        .wait_pod("nonroot", "CreateContainerConfigError", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.container_statuses
                    .first()
                    .is_some_and(|c| c.reason == "CreateContainerConfigError")
            })
        })
        .await;
    let uid = p.metadata.as_ref().unwrap().uid.clone();
    let cs = &p.status.unwrap().container_statuses[0];
    assert_eq!(
        cs.message,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: app)"
        )
    );

    // What the runtime cannot honour is refused at admission, naming the field.
    let bad = sh(
        "app",
        "true",
        Some(SecurityContext {
            seccomp_profile_type: "RuntimeDefault".into(),
            ..Default::default()
        }),
    );
    let e = c
        .api
        .pods()
        .create(pod("seccomp", None, vec![bad]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("spec.containers[0].security_context.seccomp_profile.type"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_post_start_pre_stop_and_a_failing_post_start_kills() {
    use kube_lite_proto::v1::{ExecAction, HttpGetAction, Lifecycle, LifecycleHandler};
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let tmp = tempfile::tempdir().unwrap();
    let (post, pre) = (tmp.path().join("post"), tmp.path().join("pre"));
    let exec = |script: String| LifecycleHandler {
        exec: Some(ExecAction {
            command: vec!["sh".into(), "-c".into(), script],
        }),
        ..Default::default()
    };
    let mut app = sh("app", "true", None);
    app.lifecycle = Some(Lifecycle {
        post_start: Some(exec(format!("echo post-$HOSTNAME > {}", post.display()))),
        pre_stop: Some(exec(format!("echo pre > {}", pre.display()))),
    });
    // postStart httpGet to a port nobody listens on: the container is killed, restarted.
    let mut bad = sh("bad", "true", None);
    bad.lifecycle = Some(Lifecycle {
        post_start: Some(LifecycleHandler {
            http_get: Some(HttpGetAction {
                path: "/".into(),
                port: 9,
                ..Default::default()
            }),
            ..Default::default()
        }),
        pre_stop: None,
    });
    let mut p = pod("hooks", None, vec![app, bad]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = 10;
    c.api.pods().create(p).await.unwrap();
    let text = eventually("the postStart hook's file", Duration::from_secs(60), || {
        let post = post.clone();
        async move { std::fs::read_to_string(&post).ok() }
    })
    .await;
    assert_eq!(
        text, "post-hooks\n",
        "ran in the container, with its environment"
    );
    c.wait_pod("hooks", "a restart after the failed postStart hook", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.container_statuses
                .iter()
                .any(|c| c.name == "bad" && c.restart_count >= 1)
        })
    })
    .await;
    assert!(!pre.exists());
    c.api
        .pods()
        .delete(kube_lite_tests::fixtures::del("hooks"))
        .await
        .unwrap();
    let text = eventually("the preStop hook's file", Duration::from_secs(60), || {
        let pre = pre.clone();
        async move { std::fs::read_to_string(&pre).ok() }
    })
    .await;
    assert_eq!(text, "pre\n");
    eventually("the pod gone", Duration::from_secs(60), || async {
        c.get_pod("hooks").await.is_none().then_some(())
    })
    .await;
}
