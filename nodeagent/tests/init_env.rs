//! Init containers and the environment end to end (issue 13): init containers run in
//! order and block the app until they succeed (failing ones are retried with back-off);
//! env from fieldRef/resourceFieldRef and `$(VAR)` expansion reach the program; a
//! reference that does not resolve leaves the container waiting with
//! CreateContainerConfigError. Real apiserver and agent. Root only.

use kube_lite_proto::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector,
    ResourceRequirements,
};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions};
use kube_lite_tests::fixtures::{node_pod, sh};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: String::new(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

fn resource(name: &str, container: &str, res: &str, divisor: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: String::new(),
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: container.into(),
                resource: res.into(),
                divisor: divisor.into(),
            }),
            ..Default::default()
        }),
    }
}

fn pod(name: &str, node: &str, init: Vec<Container>, app: Container) -> Pod {
    let mut p = node_pod(name, node, vec![app], "Always", 1);
    p.metadata.as_mut().unwrap().labels = [("tier".to_string(), "web".to_string())].into();
    p.spec.as_mut().unwrap().init_containers = init;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_in_order_block_the_app_and_env_sources_resolve() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let tmp = tempfile::tempdir().unwrap();
    let (go, order, out) = (
        tmp.path().join("go"),
        tmp.path().join("order"),
        tmp.path().join("out"),
    );
    let (go_s, order_s, out_s) = (
        go.display().to_string(),
        order.display().to_string(),
        out.display().to_string(),
    );
    let node = c.nodes[0].name.clone();
    let first = sh(
        "first",
        &format!("test -f {go_s} || exit 3; echo first >> {order_s}"),
    );
    let second = sh("second", &format!("echo second >> {order_s}"));
    let mut app = sh(
        "app",
        &format!("cat {order_s} > {out_s}; echo \"$POD $NODE $IP $TIER $MEM $CPU $(GREETING)\" >> {out_s}; sleep 3600"),
    );
    app.env = vec![
        field("POD", "metadata.name"),
        field("NODE", "spec.nodeName"),
        field("IP", "status.podIP"),
        field("TIER", "metadata.labels['tier']"),
        resource("MEM", "", "limits.memory", "1Mi"),
        resource("CPU", "", "requests.cpu", "1m"),
        EnvVar {
            name: "GREETING".into(),
            value: "hi-$(POD)".into(),
            value_from: None,
        },
    ];
    app.resources = Some(ResourceRequirements {
        requests: [("cpu".to_string(), "250m".to_string())].into(),
        limits: [("memory".to_string(), "64Mi".to_string())].into(),
    });
    c.api
        .pods()
        .create(pod("ordered", &node, vec![first, second], app))
        .await
        .unwrap();
    // The first init container fails until `go` exists: retried, the rest waits.
    let p = c
        .wait_pod("ordered", "a failed init container", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.init_container_statuses
                    .first()
                    .is_some_and(|c| c.restart_count >= 1)
            })
        })
        .await;
    let st = p.status.unwrap();
    assert_eq!(st.phase, "Pending");
    assert_eq!(st.init_container_statuses.len(), 2);
    assert_eq!(st.init_container_statuses[1].state, "Waiting");
    assert_eq!(st.container_statuses[0].reason, "PodInitializing");
    assert!(
        !order.exists() && !out.exists(),
        "nothing after the failing init container ran"
    );
    std::fs::write(&go, "").unwrap();
    let p = c
        .wait_pod("ordered", "Running", |p| {
            p.status.as_ref().is_some_and(|s| s.phase == "Running")
        })
        .await;
    let st = p.status.unwrap();
    assert!(st
        .init_container_statuses
        .iter()
        .all(|c| c.state == "Terminated" && c.exit_code == 0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        if t.lines().count() >= 3 {
            break t;
        }
        assert!(Instant::now() < deadline, "app output: {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..2],
        ["first", "second"],
        "init containers in order, each once"
    );
    assert_eq!(
        lines[2],
        format!("ordered {node} {} web 64 250 hi-ordered", st.pod_ip),
        "fieldRef, resourceFieldRef and $(VAR) in env and args"
    );

    // A reference that does not resolve: CreateContainerConfigError naming it.
    let mut bad = sh("app", "sleep 3600");
    bad.env = vec![resource("X", "nope", "limits.cpu", "")];
    c.api
        .pods()
        .create(pod("badref", &node, vec![], bad))
        .await
        .unwrap();
    let p = c
        .wait_pod("badref", "CreateContainerConfigError", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.container_statuses
                    .first()
                    .is_some_and(|c| c.reason == "CreateContainerConfigError")
            })
        })
        .await;
    let cs = &p.status.unwrap().container_statuses[0];
    assert!(
        cs.message.contains("env X: container \"nope\" not found"),
        "{cs:?}"
    );
}
