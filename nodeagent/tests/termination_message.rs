//! terminationMessagePath / terminationMessagePolicy end to end (issue 13, point 7): a
//! container writing /dev/termination-log and exiting 1 shows the message; with
//! FallbackToLogsOnError an empty file gives the log's tail; a custom path (whose
//! directory does not exist) works, as a non-root user, and the previous instance's
//! message is kept in lastState; the node's filesystem never gets the files (the process
//! runtime makes them in the container's mount namespace only); bad values are refused
//! naming the field. Real apiserver and agent. Root only.

use kube_lite_proto::v1::{Container, ContainerStatus, ObjectMeta, Pod, PodSpec, SecurityContext};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions};
use std::path::{Path, PathBuf};
use tonic::Code;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn sh(script: &str, path: &str, policy: &str) -> Container {
    Container {
        name: "c".into(),
        image: "busybox".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        termination_message_path: path.into(),
        termination_message_policy: policy.into(),
        ..Default::default()
    }
}

fn pod(name: &str, restart: &str, c: Container) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![c],
            restart_policy: restart.into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

fn status(p: &Pod) -> Option<&ContainerStatus> {
    p.status.as_ref()?.container_statuses.first()
}

fn terminated(p: &Pod) -> bool {
    status(p).is_some_and(|c| c.state == "Terminated")
}

/// No mount of the containers' private layers is visible on the node.
fn no_private_mounts_on_the_node() {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains("kube-lite-private"),
        "a container's private tmpfs leaked to the node:\n{info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages_from_the_file_the_logs_and_a_custom_path() {
    if !require_root() {
        return;
    }
    let node_dev_log = Path::new("/dev/termination-log");
    // A node that has one already (not made by kube-lite) cannot show that we made none.
    let check_node_dev = !node_dev_log.exists();
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let custom_dir = format!("/tmp/kl-tm-{}", c.id);
    let custom = format!("{custom_dir}/why");
    let mut pods = c.api.pods();

    // Defaults; the file's message on a failure.
    pods.create(pod(
        "tm-file",
        "Never",
        sh(
            "echo start; printf 'disk full\\n' > /dev/termination-log; exit 1",
            "",
            "",
        ),
    ))
    .await
    .unwrap();
    // FallbackToLogsOnError: nothing in the file, a failure: the log's last 80 lines.
    pods.create(pod(
        "tm-logs",
        "Never",
        sh(
            "i=1; while [ $i -le 100 ]; do echo line $i; i=$((i+1)); done; exit 2",
            "",
            "FallbackToLogsOnError",
        ),
    ))
    .await
    .unwrap();
    // A custom path in a directory that does not exist, written by a non-root user;
    // restarted on failure: the previous instance's message is its lastState's.
    let mut cu = sh(
        &format!("id -u > {custom}; exit 1"),
        &custom,
        "FallbackToLogsOnError",
    );
    cu.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    pods.create(pod("tm-custom", "OnFailure", cu))
        .await
        .unwrap();

    let p = c.wait_pod("tm-file", "terminated", terminated).await;
    let spec = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        (
            spec.termination_message_path.as_str(),
            spec.termination_message_policy.as_str()
        ),
        ("/dev/termination-log", "File"),
        "the server's defaults"
    );
    let cs = status(&p).unwrap();
    assert_eq!((cs.exit_code, cs.reason.as_str()), (1, "Error"), "{cs:?}");
    assert_eq!(cs.message, "disk full\n", "{cs:?}");

    let p = c.wait_pod("tm-logs", "terminated", terminated).await;
    let cs = status(&p).unwrap();
    assert_eq!(cs.exit_code, 2, "{cs:?}");
    let lines: Vec<&str> = cs.message.lines().collect();
    assert_eq!(lines.len(), 80, "{cs:?}");
    assert_eq!(
        (lines[0], lines[79]),
        ("line 21", "line 100"),
        "the log's last 80 lines"
    );

    let p = c
        .wait_pod("tm-custom", "a restart with lastState", |p| {
            status(p).is_some_and(|c| c.restart_count >= 1 && c.last_state.is_some())
        })
        .await;
    let last = status(&p).unwrap().last_state.clone().unwrap();
    assert_eq!(
        (last.exit_code, last.message.as_str()),
        (1, "1000\n"),
        "{last:?}"
    );

    // Nothing of it on the node: not /dev/termination-log, not the custom directory,
    // not the private layers' mounts.
    if check_node_dev {
        assert!(
            !node_dev_log.exists(),
            "the node's /dev got a termination log"
        );
    }
    assert!(
        !Path::new(&custom_dir).exists(),
        "{custom_dir} was made on the node"
    );
    no_private_mounts_on_the_node();

    // Bad values: refused, naming the field.
    for (path, policy, field, why) in [
        (
            "termination-log",
            "File",
            "spec.containers[0].termination_message_path",
            "must be an absolute path",
        ),
        (
            "/dev/termination-log",
            "Always",
            "spec.containers[0].termination_message_policy",
            "must be one of File, FallbackToLogsOnError",
        ),
    ] {
        let e = pods
            .create(pod("tm-bad", "Never", sh("true", path, policy)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(field) && e.message().contains(why),
            "{e:?}"
        );
    }
    let long = format!("/{}", "x".repeat(5000));
    let e = pods
        .create(pod("tm-bad", "Never", sh("true", &long, "File")))
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("spec.containers[0].termination_message_path: must be at most 4096"),
        "{e:?}"
    );
}
