//! Workloads on a real 2-node cluster (issue 11): a real apiserver with its controller
//! manager, real `nodeagent` processes in node namespaces, real pods. ReplicaSets scale,
//! replace deleted pods, release and adopt by labels and survive a lost node; a
//! Deployment rolls out behind a ClusterIP while a client pod requests the Service
//! continuously (0 failed requests, answered only by new pods at the end), rolls back
//! (undo) and is recreated; Events come from the scheduler, the controllers and the
//! pods' lifecycle, deduplicated. Root only (skipped otherwise).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kube_lite_proto::v1::*;
use kube_lite_tests::cluster::{
    busybox, require_root, whoami_cluster, ClusterOptions, TestCluster,
};

const VIP: &str = "10.96.10.10";
const URL: &str = "http://10.96.10.10:3001/";

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

/// [`fixtures::eventually`] with this file's deadline (real pods start in seconds; the
/// machine is shared, so allow a minute).
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    kube_lite_tests::fixtures::eventually(what, Duration::from_secs(90), f).await
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    })
}

fn get(name: &str) -> GetRequest {
    GetRequest {
        name: name.into(),
        namespace: "default".into(),
    }
}

fn m(p: &Pod) -> &ObjectMeta {
    p.metadata.as_ref().unwrap()
}

fn template(app: &str, containers: Vec<Container>, grace: i64) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: labels(&[("app", app)]),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers,
            restart_policy: "Always".into(),
            termination_grace_period_seconds: grace,
            ..Default::default()
        }),
    }
}

fn whoami_container() -> Container {
    Container {
        name: "web".into(),
        image: "whoami".into(),
        ..Default::default()
    }
}

fn selector(app: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: labels(&[("app", app)]),
        ..Default::default()
    })
}

async fn pods_with(c: &TestCluster, sel: &str) -> Vec<Pod> {
    c.api
        .pods()
        .list(ListRequest {
            namespace: "default".into(),
            label_selector: sel.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| m(p).deletion_timestamp == 0)
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && !s.pod_ip.is_empty()
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn node_of(p: &Pod) -> &str {
    &p.spec.as_ref().unwrap().node_name
}

fn owner_uid(p: &Pod) -> Option<&str> {
    m(p).owner_references
        .iter()
        .find(|o| o.controller)
        .map(|o| o.uid.as_str())
}

fn logs(c: &TestCluster) -> String {
    format!(
        "--- node0\n{}\n--- node1\n{}",
        c.agent_log_tail(0, 25),
        c.agent_log_tail(1, 25)
    )
}

/// Exactly `n` pods match `sel`, none terminating, all Running and Ready; `check` holds
/// for the set.
async fn wait_ready_pods(
    c: &TestCluster,
    sel: &str,
    n: usize,
    what: &str,
    check: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    let r = kube_lite_tests::fixtures::eventually_or(
        &format!("{n} ready pods {sel}: {what}"),
        Duration::from_secs(90),
        || async {
            let all = pods_with(c, sel).await;
            (all.len() == n
                && all.iter().all(|p| m(p).deletion_timestamp == 0 && ready(p))
                && check(&all))
            .then_some(all)
        },
    )
    .await;
    r.unwrap_or_else(|e| panic!("{e}\n{}", logs(c)))
}

async fn get_rs(c: &TestCluster, name: &str) -> ReplicaSet {
    c.api
        .replica_sets()
        .get(get(name))
        .await
        .unwrap()
        .into_inner()
}

/// A read-modify-write retried on a conflict, as client-go's `RetryOnConflict`: the
/// controllers and agents write the same objects' status meanwhile.
const CONFLICT_RETRIES: usize = 20;

async fn scale_rs(c: &TestCluster, name: &str, n: i32) {
    for _ in 0..CONFLICT_RETRIES {
        let mut rs = get_rs(c, name).await;
        rs.spec.as_mut().unwrap().replicas = Some(n);
        match c.api.replica_sets().update(rs).await {
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            r => {
                r.expect("scale rs");
                return;
            }
        }
    }
    panic!("scale rs: still conflicting after {CONFLICT_RETRIES} tries");
}

async fn relabel(c: &TestCluster, pod: &str, app: &str) {
    for _ in 0..CONFLICT_RETRIES {
        let mut p = c.api.pods().get(get(pod)).await.unwrap().into_inner();
        p.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), app.into());
        match c.api.pods().update(p).await {
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            r => {
                r.expect("relabel pod");
                return;
            }
        }
    }
    panic!("relabel pod: still conflicting after {CONFLICT_RETRIES} tries");
}

/// Scale up and down, a deleted pod replaced, release and adoption by labels, and a lost
/// node: its pods come back on the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_scales_replaces_adopts_releases_and_survives_a_lost_node() {
    if !require_root() {
        return;
    }
    let mut opts = ClusterOptions::new(2, agent_bin());
    opts.apiserver.node_grace_period = Duration::from_secs(3);
    opts.apiserver.pod_eviction_timeout = Duration::from_secs(2);
    let mut c = whoami_cluster(opts).await;
    let rs = c
        .api
        .replica_sets()
        .create(ReplicaSet {
            metadata: meta("rs"),
            spec: Some(ReplicaSetSpec {
                replicas: Some(4),
                selector: selector("rs"),
                template: Some(template("rs", vec![whoami_container()], 1)),
                min_ready_seconds: 0,
            }),
            status: None,
        })
        .await
        .expect("create rs")
        .into_inner();
    let rs_uid = rs.metadata.as_ref().unwrap().uid.clone();
    let pods = wait_ready_pods(&c, "app=rs", 4, "spread over both nodes", |ps| {
        ps.iter().map(node_of).collect::<BTreeSet<_>>().len() == 2
    })
    .await;
    for p in &pods {
        assert!(
            m(p).name.starts_with("rs-") && m(p).name.len() == 8,
            "{}",
            m(p).name
        );
        assert_eq!(owner_uid(p), Some(rs_uid.as_str()));
    }
    eventually("rs status 4 ready/available", || async {
        let st = get_rs(&c, "rs").await.status.unwrap_or_default();
        (st.replicas == 4 && st.ready_replicas == 4 && st.available_replicas == 4).then_some(())
    })
    .await;

    // Scale up to 6, down to 3.
    scale_rs(&c, "rs", 6).await;
    wait_ready_pods(&c, "app=rs", 6, "scaled up", |_| true).await;
    scale_rs(&c, "rs", 3).await;
    let three = wait_ready_pods(&c, "app=rs", 3, "scaled down", |_| true).await;

    // A deleted pod is replaced by a new one.
    let victim = m(&three[0]).name.clone();
    c.api
        .pods()
        .delete(DeleteRequest {
            name: victim.clone(),
            namespace: "default".into(),
            grace_period_seconds: -1,
            ..Default::default()
        })
        .await
        .expect("delete pod");
    let replaced = wait_ready_pods(&c, "app=rs", 3, "the deleted pod replaced", |ps| {
        ps.iter().all(|p| m(p).name != victim)
    })
    .await;

    // Release: a pod whose labels stop matching loses its ownerReference and is replaced;
    // it keeps running.
    let mut watch = c
        .api
        .pods()
        .watch(WatchRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let moved = m(&replaced[0]).name.clone();
    relabel(&c, &moved, "elsewhere").await;
    wait_ready_pods(
        &c,
        "app=rs",
        3,
        "a replacement for the released pod",
        |ps| ps.iter().all(|p| m(p).name != moved),
    )
    .await;
    let released = eventually("released pod without owner", || async {
        let p = c.api.pods().get(get(&moved)).await.unwrap().into_inner();
        (owner_uid(&p).is_none() && ready(&p)).then_some(p)
    })
    .await;
    assert!(m(&released).owner_references.is_empty());

    // Adoption: it matches again → owned by the ReplicaSet again, which now has one too
    // many and deletes one (Kubernetes does the same).
    relabel(&c, &moved, "rs").await;
    let adopted = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = watch.next().await {
            let ev = ev.expect("watch");
            if let Some(p) = ev.object {
                if m(&p).name == moved && m(&p).labels.get("app").map(String::as_str) == Some("rs")
                {
                    if let Some(uid) = owner_uid(&p) {
                        return uid.to_string();
                    }
                }
            }
        }
        String::new()
    })
    .await
    .expect("the relabeled pod adopted within 60 s");
    assert_eq!(adopted, rs_uid);
    let owned = wait_ready_pods(&c, "app=rs", 3, "back to 3 after the adoption", |_| true).await;
    assert!(owned.iter().all(|p| owner_uid(p) == Some(rs_uid.as_str())));
    // The extra one goes away entirely.
    eventually("3 pods in total: the extra one is gone", || async {
        let n = live(pods_with(&c, "").await).len();
        let all = pods_with(&c, "").await.len();
        (n == 3 && all == 3).then_some(())
    })
    .await;

    // node0 is lost (its agent stops): every pod ends up Running and Ready on node1.
    let n1 = c.nodes[1].name.clone();
    c.kill_agent(0);
    let after = wait_ready_pods(&c, "app=rs", 3, "all on node1 after node0 was lost", |ps| {
        ps.iter().all(|p| node_of(p) == n1)
    })
    .await;
    for p in &after {
        // Ready is the agent's word; the first request may still race the pod's
        // routes on a loaded machine, so ask until it answers (bounded by eventually).
        let url = format!("http://{}:8080/", p.status.as_ref().unwrap().pod_ip);
        let want = format!("HOSTNAME:{}", m(p).name);
        eventually("the pod on node1 serves", || {
            let out = c.exec_in_node(
                1,
                &[busybox(), "timeout", "5", busybox(), "wget", "-qO-", &url],
            );
            let first = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .map(str::to_string);
            let ok = first.as_deref() == Some(want.as_str());
            async move { ok.then_some(()) }
        })
        .await;
    }
    eventually("rs status 3 ready", || async {
        let st = get_rs(&c, "rs").await.status.unwrap_or_default();
        (st.replicas == 3 && st.ready_replicas == 3).then_some(())
    })
    .await;
}

/// A whoami server that keeps serving for 2 s after SIGTERM (the well-behaved shutdown
/// Kubernetes expects of a server behind a Service: endpoints are removed while the pod
/// terminates, and the nodes' rules follow a moment later), with a readiness probe on its
/// port.
fn graceful_whoami(whoami: &Path, version: &str) -> Container {
    let script = format!(
        "trap 'sleep 2; kill $P; exit 0' TERM; {} & P=$!; wait $P",
        whoami.display()
    );
    Container {
        name: "web".into(),
        image: busybox().into(),
        args: vec!["sh".into(), "-c".into(), script],
        env: vec![EnvVar {
            name: "VERSION".into(),
            value: version.into(),
            ..Default::default()
        }],
        ports: vec![ContainerPort {
            name: "http".into(),
            container_port: 8080,
            ..Default::default()
        }],
        readiness_probe: Some(Probe {
            http_get: Some(HttpGetAction {
                path: "/".into(),
                port: 8080,
                ..Default::default()
            }),
            period_seconds: 1,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn get_deploy(c: &TestCluster, name: &str) -> Deployment {
    c.api
        .deployments()
        .get(get(name))
        .await
        .unwrap()
        .into_inner()
}

/// Changes the Deployment by `f`, read-modify-write retried on a conflict (the controller
/// writes its status meanwhile).
async fn update_deploy(c: &TestCluster, name: &str, what: &str, f: impl Fn(&mut Deployment)) {
    for _ in 0..CONFLICT_RETRIES {
        let mut d = get_deploy(c, name).await;
        f(&mut d);
        match c.api.deployments().update(d).await {
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            r => {
                r.unwrap_or_else(|e| panic!("{what}: {e}"));
                return;
            }
        }
    }
    panic!("{what}: still conflicting after {CONFLICT_RETRIES} tries");
}

/// The Deployment's status says `n` updated, ready and available replicas, and exactly
/// `n` pods (none terminating) exist, all of the current ReplicaSet; returns its name.
async fn wait_rolled_out(c: &TestCluster, name: &str, n: i32) -> String {
    let r = kube_lite_tests::fixtures::eventually_or(
        &format!("deployment {name} rolled out"),
        Duration::from_secs(120),
        || async {
            let d = get_deploy(c, name).await;
            let st = d.status.clone().unwrap_or_default();
            let gen = d.metadata.as_ref().unwrap().generation;
            if st.observed_generation != gen
                || st.updated_replicas != n
                || st.ready_replicas != n
                || st.available_replicas != n
                || st.replicas != n
            {
                return None;
            }
            let pods = pods_with(c, &format!("app={name}")).await;
            let owners: BTreeSet<String> = pods
                .iter()
                .map(|p| {
                    m(p).owner_references
                        .first()
                        .map(|o| o.name.clone())
                        .unwrap_or_default()
                })
                .collect();
            (pods.len() == n as usize && owners.len() == 1 && pods.iter().all(ready))
                .then(|| owners.into_iter().next().unwrap())
        },
    )
    .await;
    r.unwrap_or_else(|e| panic!("{e}\n{}", logs(c)))
}

/// Each node's nat rules send the Service to exactly the current endpoints.
async fn wait_rules(c: &TestCluster, n: usize) {
    eventually(&format!("{n} DNAT targets on both nodes"), || async {
        let ok = (0..2).all(|i| {
            let save = c.exec_in_node(i, &["iptables-save", "-t", "nat"]);
            String::from_utf8_lossy(&save.stdout)
                .lines()
                .filter(|l| l.contains("\"default/web:http -> ") && l.contains("-j DNAT"))
                .count()
                == n
        });
        ok.then_some(())
    })
    .await;
}

/// The client pod's answers so far: one line per request, `HOSTNAME:<pod> ...` or FAIL.
fn answers(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches("HOSTNAME:")
                .to_string()
        })
        .collect()
}

/// Waits until the client has made `more` requests after the `from`th.
async fn wait_answers(log: &Path, from: usize, more: usize) -> Vec<String> {
    eventually(&format!("{more} more requests from the client"), || async {
        let a = answers(log);
        (a.len() >= from + more).then_some(a)
    })
    .await
}

fn old_template(rs: &ReplicaSet) -> PodTemplateSpec {
    let mut t = rs.spec.clone().unwrap().template.unwrap();
    t.metadata
        .as_mut()
        .unwrap()
        .labels
        .remove("pod-template-hash");
    t
}

/// A 4-replica Deployment (maxSurge 1, maxUnavailable 0) behind a ClusterIP, a client pod
/// requesting it without pause: the rolling update fails no request and ends with only
/// new pods answering; undo (the old template again) rolls back the same way and
/// re-uses the first ReplicaSet; Recreate takes every old pod down before a new one
/// starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_behind_a_cluster_ip_fails_no_request_then_undo_and_recreate() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(2, agent_bin())).await;
    let whoami = agent_bin().with_file_name("kl-whoami");
    let dir = tempfile::Builder::new()
        .prefix(&format!("kl{}-client-", c.id))
        .tempdir()
        .unwrap();
    let log = dir.path().join("answers");
    let stop = dir.path().join("stop");

    c.api
        .services()
        .create(Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec {
                selector: labels(&[("app", "web")]),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 3001,
                    target_port: 8080,
                    ..Default::default()
                }],
                cluster_ip: VIP.into(),
                r#type: "ClusterIP".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create service");
    c.api
        .deployments()
        .create(Deployment {
            metadata: meta("web"),
            spec: Some(DeploymentSpec {
                replicas: Some(4),
                selector: selector("web"),
                template: Some(template("web", vec![graceful_whoami(&whoami, "v1")], 5)),
                strategy: Some(DeploymentStrategy {
                    r#type: "RollingUpdate".into(),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: "1".into(),
                        max_unavailable: "0".into(),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create deployment");
    let rs1 = wait_rolled_out(&c, "web", 4).await;
    wait_rules(&c, 4).await;

    // The client: a pod requesting the Service one request after the other until told
    // to stop, one line per request.
    let bb = busybox();
    let script = format!(
        "while [ ! -e {stop} ]; do {bb} timeout 3 {bb} wget -qO- {URL} || echo FAIL; done >> {log}",
        stop = stop.display(),
        log = log.display()
    );
    c.api
        .pods()
        .create(Pod {
            metadata: Some(ObjectMeta {
                name: "client".into(),
                namespace: "default".into(),
                labels: labels(&[("app", "client")]),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "client".into(),
                    image: bb.into(),
                    args: vec!["sh".into(), "-c".into(), script],
                    ..Default::default()
                }],
                restart_policy: "Never".into(),
                termination_grace_period_seconds: 1,
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create client");
    let before = wait_answers(&log, 0, 20).await;
    assert!(
        before.iter().all(|h| h.starts_with(&format!("{rs1}-"))),
        "before the update only {rs1} answers: {before:?}"
    );

    // Rolling update to v2.
    update_deploy(&c, "web", "update template", |d| {
        d.spec.as_mut().unwrap().template =
            Some(template("web", vec![graceful_whoami(&whoami, "v2")], 5));
    })
    .await;
    let rs2 = wait_rolled_out(&c, "web", 4).await;
    assert_ne!(rs2, rs1);
    wait_rules(&c, 4).await;
    let mark = answers(&log).len();
    let during = wait_answers(&log, mark, 20).await;
    let fails = during.iter().filter(|h| *h == "FAIL").count();
    assert_eq!(
        fails, 0,
        "failed requests during the rolling update: {during:?}"
    );
    let tail = &during[mark..];
    assert!(
        tail.iter().all(|h| h.starts_with(&format!("{rs2}-"))),
        "after the update only {rs2} answers: {tail:?}"
    );
    assert!(
        during.iter().any(|h| h.starts_with(&format!("{rs2}-")))
            && during.iter().any(|h| h.starts_with(&format!("{rs1}-"))),
        "answered by old and then new pods"
    );
    let d = get_deploy(&c, "web").await;
    assert_eq!(
        d.metadata.as_ref().unwrap().annotations["deployment.kubernetes.io/revision"],
        "2"
    );

    // Undo (what `rollout undo` writes): the template of revision 1 → its ReplicaSet is
    // scaled up again (revision 3), still without a failed request.
    let old = get_rs(&c, &rs1).await;
    update_deploy(&c, "web", "undo", |d| {
        d.spec.as_mut().unwrap().template = Some(old_template(&old));
    })
    .await;
    let back = wait_rolled_out(&c, "web", 4).await;
    assert_eq!(back, rs1, "undo re-uses the first ReplicaSet");
    wait_rules(&c, 4).await;
    let mark2 = answers(&log).len();
    let all = wait_answers(&log, mark2, 20).await;
    let fails = all.iter().filter(|h| *h == "FAIL").count();
    assert_eq!(fails, 0, "failed requests during undo: {:?}", &all[mark..]);
    assert!(
        all[mark2..]
            .iter()
            .all(|h| h.starts_with(&format!("{rs1}-"))),
        "after undo only {rs1} answers: {:?}",
        &all[mark2..]
    );
    let d = get_deploy(&c, "web").await;
    assert_eq!(
        d.metadata.as_ref().unwrap().annotations["deployment.kubernetes.io/revision"],
        "3"
    );
    std::fs::write(&stop, b"").unwrap();
    eprintln!(
        "rolling update + undo: {} requests through {VIP}, 0 failed",
        answers(&log).len()
    );

    // Recreate: every old pod is gone before the first new one exists.
    update_deploy(&c, "web", "recreate", |d| {
        let spec = d.spec.as_mut().unwrap();
        spec.strategy = Some(DeploymentStrategy {
            r#type: "Recreate".into(),
            rolling_update: None,
        });
        spec.template = Some(template("web", vec![graceful_whoami(&whoami, "v3")], 5));
    })
    .await;
    let r =
        kube_lite_tests::fixtures::eventually_or("recreated", Duration::from_secs(120), || async {
            let pods = pods_with(&c, "app=web").await;
            let rss: BTreeSet<String> = pods
                .iter()
                .map(|p| {
                    m(p).owner_references
                        .first()
                        .map(|o| o.name.clone())
                        .unwrap_or_default()
                })
                .collect();
            assert!(rss.len() <= 1, "old and new pods at once: {rss:?}");
            (pods.len() == 4
                && pods.iter().all(ready)
                && rss.iter().all(|r| *r != rs1 && *r != rs2))
            .then_some(())
        })
        .await;
    r.unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
}

async fn events(c: &TestCluster) -> Vec<Event> {
    c.api
        .events()
        .list(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// Events from a real cluster: Scheduled, Started, SuccessfulCreate, ScalingReplicaSet,
/// Killing; a crashing container's BackOff is one event whose count grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_scheduling_start_kill_back_off_and_scaling_deduplicated() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(2, agent_bin())).await;
    c.api
        .deployments()
        .create(Deployment {
            metadata: meta("ev"),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: selector("ev"),
                template: Some(template("ev", vec![whoami_container()], 1)),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create deployment");
    let pod = wait_ready_pods(&c, "app=ev", 1, "running", |_| true).await;
    let pod = m(&pod[0]).name.clone();
    let crash = Container {
        name: "crash".into(),
        image: busybox().into(),
        args: vec!["sh".into(), "-c".into(), "exit 1".into()],
        ..Default::default()
    };
    c.api
        .replica_sets()
        .create(ReplicaSet {
            metadata: meta("crash"),
            spec: Some(ReplicaSetSpec {
                replicas: Some(1),
                selector: selector("crash"),
                template: Some(template("crash", vec![crash], 1)),
                min_ready_seconds: 0,
            }),
            status: None,
        })
        .await
        .expect("create crashing rs");

    // Scale the Deployment to 0: its pod is killed.
    update_deploy(&c, "ev", "scale to 0", |d| {
        d.spec.as_mut().unwrap().replicas = Some(0);
    })
    .await;

    let evs = eventually("events of every kind", || async {
        let evs = events(&c).await;
        let has = |reason: &str, kind: &str, name_prefix: &str| {
            evs.iter().any(|e| {
                let o = e.involved_object.as_ref().unwrap();
                e.reason == reason && o.kind == kind && o.name.starts_with(name_prefix)
            })
        };
        let backoff = evs.iter().any(|e| e.reason == "BackOff" && e.count >= 2);
        (has("Scheduled", "Pod", &pod)
            && has("Started", "Pod", &pod)
            && has("Killing", "Pod", &pod)
            && has("SuccessfulCreate", "ReplicaSet", "ev-")
            && has("SuccessfulDelete", "ReplicaSet", "ev-")
            && has("ScalingReplicaSet", "Deployment", "ev")
            && backoff)
            .then_some(evs)
    })
    .await;
    let find = |reason: &str| evs.iter().find(|e| e.reason == reason).unwrap();
    let scheduled = evs
        .iter()
        .find(|e| e.reason == "Scheduled" && e.involved_object.as_ref().unwrap().name == pod)
        .unwrap();
    assert_eq!(scheduled.r#type, "Normal");
    assert!(
        scheduled
            .message
            .starts_with(&format!("Successfully assigned default/{pod} to node")),
        "{}",
        scheduled.message
    );
    let started = evs
        .iter()
        .find(|e| e.reason == "Started" && e.involved_object.as_ref().unwrap().name == pod)
        .unwrap();
    let host = &started.source.as_ref().unwrap().host;
    assert!(
        host.starts_with("node"),
        "Started comes from the pod's node: {host}"
    );
    let backoff = find("BackOff");
    assert_eq!(backoff.r#type, "Warning");
    assert!(backoff.last_timestamp > backoff.first_timestamp);
    // Deduplicated: one BackOff event for the crashing pod, however often it crashed.
    let crash_pod = &backoff.involved_object.as_ref().unwrap().name;
    assert_eq!(
        evs.iter()
            .filter(
                |e| e.reason == "BackOff" && e.involved_object.as_ref().unwrap().name == *crash_pod
            )
            .count(),
        1
    );
    assert!(find("ScalingReplicaSet").message.contains("Scaled"));
}
