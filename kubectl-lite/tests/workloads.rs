//! kubectl-lite's workload commands end to end: the real binary against a real apiserver
//! (the test kit's in-process server, sled in a temp dir, its real controller manager).
//! No node agent runs: a task of the test plays it (bound pods become Running + Ready,
//! pods being deleted are finished), so Deployments roll out as on a cluster. The same
//! commands against real nodes: the README's example, checked on the local cluster.

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use serde_json::Value;
use std::time::Duration;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-lite");

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit 0; the output.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        &self.stdout
    }

    /// Exit 1 with one `error: ...` line; returns it.
    fn err(&self) -> &str {
        assert_eq!(self.code, 1, "{self:?}");
        let line = self.stderr.trim_end();
        assert!(
            line.starts_with("error: ") && !line.contains('\n'),
            "{self:?}"
        );
        line
    }
}

async fn kl(server: &str, args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(BIN)
            .arg("--server")
            .arg(server)
            .args(args)
            .env_remove("KUBE_LITE_SERVER")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl-lite finishes within 90 s")
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn kl_json(server: &str, args: &[&str]) -> Value {
    serde_json::from_str(kl(server, args).await.ok()).unwrap()
}

/// The cells of the table row whose first column is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

/// Data rows (without the header).
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// A server with one Ready node that needs no heartbeats, and a task playing its agent.
async fn server() -> (TestApiServer, tokio::task::JoinHandle<()>) {
    let s = TestApiServer::start_with(apiserver::Config {
        node_grace_period: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    let mut nodes = s.nodes();
    let mut n = nodes
        .create(Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                address: "192.168.0.1".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .into_inner();
    n.status = Some(NodeStatus {
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    nodes.update_status(n).await.unwrap();
    let pods = s.pods();
    let agent = tokio::spawn(async move {
        let mut pods = pods;
        loop {
            let list = match pods.list(ListRequest::default()).await {
                Ok(l) => l.into_inner().items,
                Err(_) => Vec::new(),
            };
            for p in list {
                let m = p.metadata.clone().unwrap();
                if p.spec.as_ref().is_none_or(|s| s.node_name.is_empty()) {
                    continue;
                }
                if m.deletion_timestamp != 0 {
                    let _ = pods
                        .delete(DeleteRequest {
                            name: m.name.clone(),
                            namespace: m.namespace.clone(),
                            grace_period_seconds: 0,
                            ..Default::default()
                        })
                        .await;
                    continue;
                }
                if p.status.as_ref().is_some_and(|s| s.phase == "Running") {
                    continue;
                }
                let mut p = p;
                let c = p.spec.as_ref().unwrap().containers[0].name.clone();
                p.status = Some(PodStatus {
                    phase: "Running".into(),
                    start_time: kube_lite_core::time::now_ms(),
                    pod_ip: "10.0.1.2".into(),
                    host_ip: "192.168.0.1".into(),
                    conditions: vec![PodCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }],
                    container_statuses: vec![ContainerStatus {
                        name: c,
                        state: "Running".into(),
                        ready: true,
                        started_at: kube_lite_core::time::now_ms(),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                let _ = pods.update_status(p).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (s, agent)
}

/// Polls `kl args` until `check` holds on its output (30 s).
async fn until(s: &str, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = kl(s, args).await;
        if r.code == 0 && check(&r.stdout) {
            return r.stdout;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kubectl-lite {args:?} never satisfied the check: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn template_image(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_create_scale_set_image_rollout_label_get_describe_delete() {
    let (srv, _agent) = server().await;
    let s = srv.url.as_str();

    let r = kl(
        s,
        &[
            "create",
            "deployment",
            "web",
            "--image",
            "whoami",
            "--replicas",
            "3",
        ],
    )
    .await;
    assert_eq!(r.ok(), "deployment.apps/web created\n");
    let r = kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    )
    .await;
    assert!(
        r.ok()
            .ends_with("deployment \"web\" successfully rolled out\n"),
        "{r:?}"
    );
    let t = kl(s, &["get", "deploy"]).await;
    assert_eq!(
        t.ok()
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(row(t.ok(), "web")[1..4], ["3/3", "3", "3"]);
    let d = kl_json(s, &["get", "deployment.apps/web", "-o", "json"]).await;
    assert_eq!(
        (d["apiVersion"].as_str(), d["kind"].as_str()),
        (Some("apps/v1"), Some("Deployment"))
    );
    assert_eq!(template_image(&d), "whoami");

    // ReplicaSets and pods: short names, KIND/NAME, several kinds, get all.
    let rs = kl(s, &["get", "rs"]).await;
    let rs_rows = rows(rs.ok());
    assert_eq!(rs_rows.len(), 1, "{rs:?}");
    let rs1 = rs_rows[0][0].to_string();
    assert!(rs1.starts_with("web-"), "{rs1}");
    assert_eq!(rs_rows[0][1..4], ["3", "3", "3"]);
    let pods = kl(s, &["get", "po", "-l", "app=web"]).await;
    let pod_names: Vec<String> = rows(pods.ok()).iter().map(|r| r[0].to_string()).collect();
    assert_eq!(pod_names.len(), 3);
    assert!(pod_names.iter().all(|p| p.starts_with(&format!("{rs1}-"))));
    let one = kl(s, &["get", &format!("pod/{}", pod_names[0])]).await;
    assert_eq!(rows(one.ok()).len(), 1);
    let many = kl(s, &["get", "deploy,rs"]).await;
    assert!(many.ok().contains("deployment.apps/web "), "{many:?}");
    assert!(
        many.ok().contains(&format!("replicaset.apps/{rs1} ")),
        "{many:?}"
    );
    let all = kl(s, &["get", "all"]).await;
    for want in [
        format!("pod/{} ", pod_names[0]),
        "deployment.apps/web ".to_string(),
        format!("replicaset.apps/{rs1} "),
    ] {
        assert!(all.ok().contains(&want), "get all lacks {want}: {all:?}");
    }

    // --field-selector on the common fields.
    let running = kl(
        s,
        &["get", "pods", "--field-selector", "status.phase=Running"],
    )
    .await;
    assert_eq!(rows(running.ok()).len(), 3);
    let by_name = kl(
        s,
        &[
            "get",
            "pods",
            "--field-selector",
            &format!("metadata.name={}", pod_names[1]),
        ],
    )
    .await;
    assert_eq!(rows(by_name.ok()).len(), 1);
    assert_eq!(rows(by_name.ok())[0][0], pod_names[1]);
    let none = kl(
        s,
        &[
            "get",
            "pods",
            "--field-selector",
            "status.phase!=Running,spec.nodeName=n1",
        ],
    )
    .await;
    assert_eq!(none.ok(), "");
    assert_eq!(none.stderr, "No resources found in default namespace.\n");
    let bad = kl(s, &["get", "deploy", "--field-selector", "status.phase=x"]).await;
    assert!(
        bad.err()
            .starts_with("error: field label not supported: status.phase"),
        "{bad:?}"
    );

    // scale
    let r = kl(s, &["scale", "deploy", "web", "--replicas", "5"]).await;
    assert_eq!(r.ok(), "deployment.apps/web scaled\n");
    until(s, &["get", "deploy", "web"], |t| row(t, "web")[1] == "5/5").await;
    let r = kl(s, &["scale", &format!("rs/{rs1}"), "--replicas", "5"]).await;
    assert_eq!(r.ok(), format!("replicaset.apps/{rs1} scaled\n"));

    // set image → a rolling update; history; undo returns to the old template.
    let r = kl(s, &["set", "image", "deployment/web", "whoami=whoami:v2"]).await;
    assert_eq!(r.ok(), "deployment.apps/web image updated\n");
    let r = kl(s, &["rollout", "status", "deploy/web", "--timeout", "60s"]).await;
    assert!(r.ok().contains("successfully rolled out"), "{r:?}");
    let d = kl_json(s, &["get", "deploy", "web", "-o", "json"]).await;
    assert_eq!(template_image(&d), "whoami:v2");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let h = kl(s, &["rollout", "history", "deployment/web"]).await;
    let revs: Vec<&str> = h
        .ok()
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["1", "2"], "{h:?}");
    let h1 = kl(
        s,
        &["rollout", "history", "deployment/web", "--revision", "1"],
    )
    .await;
    assert!(
        h1.ok().contains("whoami") && !h1.ok().contains("whoami:v2"),
        "{h1:?}"
    );
    let r = kl(s, &["rollout", "undo", "deployment/web"]).await;
    assert_eq!(r.ok(), "deployment.apps/web rolled back\n");
    kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    )
    .await
    .ok();
    let d = kl_json(s, &["get", "deploy", "web", "-o", "json"]).await;
    assert_eq!(
        template_image(&d),
        "whoami",
        "undo: the template of revision 1"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let rs = kl(s, &["get", "rs"]).await;
    assert_eq!(
        rows(rs.ok()).len(),
        2,
        "undo re-used revision 1's ReplicaSet: {rs:?}"
    );
    assert_eq!(row(rs.ok(), &rs1)[1], "5");

    // pause: template changes wait; resume rolls them out.
    assert_eq!(
        kl(s, &["rollout", "pause", "deployment/web"]).await.ok(),
        "deployment.apps/web paused\n"
    );
    kl(s, &["set", "image", "deploy/web", "*=whoami:v3"])
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rs = kl(s, &["get", "rs"]).await;
    assert_eq!(rows(rs.ok()).len(), 2, "paused: no new ReplicaSet: {rs:?}");
    assert_eq!(
        kl(s, &["rollout", "resume", "deployment/web"]).await.ok(),
        "deployment.apps/web resumed\n"
    );
    kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    )
    .await
    .ok();
    let rs = kl(s, &["get", "rs"]).await;
    assert_eq!(rows(rs.ok()).len(), 3, "{rs:?}");
    // restart: a new template (restartedAt annotation), so a new ReplicaSet.
    assert_eq!(
        kl(s, &["rollout", "restart", "deployment/web"]).await.ok(),
        "deployment.apps/web restarted\n"
    );
    kl(
        s,
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    )
    .await
    .ok();
    let d = kl_json(s, &["get", "deploy", "web", "-o", "json"]).await;
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d:#}"
    );
    until(s, &["get", "rs"], |t| rows(t).len() == 4).await;

    // label / annotate, selecting by the new label.
    assert_eq!(
        kl(s, &["label", "deploy", "web", "tier=front"]).await.ok(),
        "deployment.apps/web labeled\n"
    );
    let t = kl(s, &["get", "deploy", "-l", "tier=front"]).await;
    assert_eq!(rows(t.ok()).len(), 1);
    let again = kl(s, &["label", "deploy/web", "tier=back"]).await;
    assert!(again.err().contains("--overwrite"), "{again:?}");
    kl(s, &["label", "deploy/web", "tier=back", "--overwrite"])
        .await
        .ok();
    assert_eq!(
        kl(s, &["annotate", "deployment/web", "note=hello"])
            .await
            .ok(),
        "deployment.apps/web annotated\n"
    );
    let d = kl_json(s, &["get", "deploy", "web", "-o", "json"]).await;
    assert_eq!(d["metadata"]["labels"]["tier"], "back");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");
    kl(s, &["label", "deploy", "web", "tier-"]).await.ok();
    let t = kl(s, &["get", "deploy", "-l", "tier"]).await;
    assert_eq!(rows(t.ok()).len(), 0);

    // describe ends with the object's Events; events by short name and field.
    let desc = until(s, &["describe", "deploy", "web"], |t| {
        t.contains("ScalingReplicaSet")
    })
    .await;
    let events_at = desc.find("Events:").expect("Events section");
    assert!(
        desc[events_at..].contains("Scaled up replica set web-"),
        "{desc}"
    );
    assert!(
        desc.contains("Replicas:") && desc.contains("StrategyType:"),
        "{desc}"
    );
    let desc = until(s, &["describe", &format!("rs/{rs1}")], |t| {
        t.contains("SuccessfulCreate")
    })
    .await;
    let events_at = desc.find("\nEvents:\n").expect("Events section last");
    assert!(desc[events_at..].contains("Created pod: "), "{desc}");
    assert!(
        desc[events_at..]
            .lines()
            .skip(4)
            .all(|l| l.contains("replicaset-controller")),
        "only event rows after the header: {desc}"
    );
    let ev = kl(s, &["get", "ev"]).await;
    assert_eq!(
        ev.ok()
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    let dep_ev = kl(
        s,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Deployment",
        ],
    )
    .await;
    let dep_rows = rows(dep_ev.ok());
    assert!(!dep_rows.is_empty());
    assert!(
        dep_rows.iter().all(|r| r.contains(&"ScalingReplicaSet")),
        "{dep_ev:?}"
    );

    // delete: the Deployment and (background) everything it owns.
    let r = kl(s, &["delete", "deploy", "web"]).await;
    assert_eq!(r.ok(), "deployment.apps \"web\" deleted\n");
    until(s, &["get", "pods,rs", "-o", "name"], |t| t.is_empty()).await;
    let gone = kl(s, &["get", "deploy", "web"]).await;
    assert_eq!(gone.err(), "error: deployments.apps \"web\" not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_configmaps_secrets_and_apply_of_a_directory() {
    let (srv, _agent) = server().await;
    let s = srv.url.as_str();
    let dir = tempfile::tempdir().unwrap();

    assert_eq!(
        kl(s, &["create", "namespace", "dev"]).await.ok(),
        "namespace/dev created\n"
    );
    let ns = kl(s, &["get", "ns"]).await;
    for n in ["default", "kube-system", "dev"] {
        assert_eq!(row(ns.ok(), n)[1], "Active", "{ns:?}");
    }
    let conf = dir.path().join("app.conf");
    std::fs::write(&conf, "mode=fast\n").unwrap();
    let r = kl(
        s,
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "dev",
            "--from-literal",
            "a=1",
            "--from-file",
            &conf.display().to_string(),
        ],
    )
    .await;
    assert_eq!(r.ok(), "configmap/cfg created\n");
    let cm = kl(s, &["get", "cm", "-n", "dev"]).await;
    assert_eq!(row(cm.ok(), "cfg")[1], "2");
    let cm = kl_json(s, &["get", "configmap/cfg", "-n", "dev", "-o", "json"]).await;
    assert_eq!(cm["data"]["app.conf"], "mode=fast\n");
    assert_eq!(cm["data"]["a"], "1");
    let r = kl(
        s,
        &[
            "create",
            "secret",
            "generic",
            "pw",
            "--namespace",
            "dev",
            "--from-literal",
            "password=x",
        ],
    )
    .await;
    assert_eq!(r.ok(), "secret/pw created\n");
    let sec = kl_json(s, &["get", "secret", "pw", "-n", "dev", "-o", "json"]).await;
    assert_eq!(sec["data"]["password"], "eA==");
    assert_eq!(sec["type"], "Opaque");
    let desc = kl(s, &["describe", "secret", "pw", "-n", "dev"]).await;
    assert!(desc.ok().contains("password:  1 bytes"), "{desc:?}");
    assert!(
        !desc.ok().contains("eA=="),
        "describe shows sizes, not values"
    );
    let desc = kl(s, &["describe", "cm", "cfg", "-n", "dev"]).await;
    assert!(
        desc.ok().contains("mode=fast") && desc.ok().contains("Events:"),
        "{desc:?}"
    );
    // -A: every namespace, with a NAMESPACE column.
    let all = kl(s, &["get", "cm", "-A"]).await;
    assert_eq!(
        all.ok().lines().next().unwrap().split_whitespace().next(),
        Some("NAMESPACE")
    );
    assert_eq!(row(all.ok(), "dev")[1], "cfg");
    // Not in default.
    let r = kl(s, &["get", "cm", "cfg"]).await;
    assert_eq!(r.err(), "error: configmaps \"cfg\" not found");
    let fs = kl(
        s,
        &[
            "get",
            "secrets",
            "-n",
            "dev",
            "--field-selector",
            "type=Opaque",
        ],
    )
    .await;
    assert_eq!(rows(fs.ok()).len(), 1);

    // apply -f DIR (namespace declared after its content: applied first) and -R.
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(manifests.join("sub")).unwrap();
    std::fs::write(
        manifests.join("app.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: stage}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: whoami, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: stage}
data: {level: debug}
---
apiVersion: v1
kind: Namespace
metadata: {name: stage}
"#,
    )
    .unwrap();
    std::fs::write(
        manifests.join("sub/secret.yaml"),
        r#"apiVersion: v1
kind: Secret
metadata: {name: token, namespace: stage}
stringData: {token: abc}
"#,
    )
    .unwrap();
    let m = manifests.display().to_string();
    let r = kl(s, &["apply", "-f", &m]).await;
    assert_eq!(
        r.ok(),
        "namespace/stage created\nconfigmap/app-config created\ndeployment.apps/app created\n"
    );
    let r = kl(s, &["apply", "-f", &m, "-R"]).await;
    assert_eq!(
        r.ok(),
        "namespace/stage unchanged\nconfigmap/app-config unchanged\nsecret/token created\ndeployment.apps/app unchanged\n"
    );
    until(s, &["get", "deploy", "app", "-n", "stage"], |t| {
        row(t, "app")[1] == "2/2"
    })
    .await;
    let sec = kl_json(s, &["get", "secret", "token", "-n", "stage", "-o", "json"]).await;
    assert_eq!(sec["data"]["token"], "YWJj");

    // delete -f DIR -R: each object, reported.
    let r = kl(s, &["delete", "-f", &m, "-R"]).await;
    let out = r.ok();
    for want in [
        "deployment.apps \"app\" deleted",
        "secret \"token\" deleted",
        "configmap \"app-config\" deleted",
        "namespace \"stage\" deleted",
    ] {
        assert!(out.contains(want), "{want}: {r:?}");
    }
    let r = kl(s, &["get", "ns", "stage"]).await;
    assert_eq!(r.err(), "error: namespaces \"stage\" not found");

    // Deleting a namespace deletes what is in it.
    let r = kl(s, &["delete", "ns", "dev"]).await;
    assert_eq!(r.ok(), "namespace \"dev\" deleted\n");
    let r = kl(s, &["get", "cm", "-A"]).await;
    assert!(!r.ok().contains("cfg"), "{r:?}");
    let r = kl(
        s,
        &[
            "create",
            "configmap",
            "x",
            "-n",
            "dev",
            "--from-literal",
            "a=b",
        ],
    )
    .await;
    assert!(r.err().contains("namespaces \"dev\" not found"), "{r:?}");
}
