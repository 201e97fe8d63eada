//! Workloads over real gRPC + real sled + the real controller manager: namespaces,
//! ConfigMaps and Secrets, ReplicaSets (scale, replace, adopt, release), garbage
//! collection (background, foreground, orphan), Deployments (rolling update with
//! maxUnavailable 0, Recreate, undo by template, history limit) and Events.
//!
//! No node agent runs here: where a pod must become ready, the test writes the status a
//! node agent would (Running + Ready), through the same UpdateStatus call.

use std::future::Future;
use std::time::Duration;

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use tonic::Code;

/// [`fixtures::eventually`] with this file's deadline.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    kube_lite_tests::fixtures::eventually(what, Duration::from_secs(30), f).await
}

/// A node that reports Ready (no agent: pods bound to it stay as the test writes them).
async fn add_node(s: &TestApiServer, name: &str) {
    let n = s
        .nodes()
        .create(Node {
            metadata: meta("", name),
            spec: Some(NodeSpec {
                address: "192.168.0.1".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = n;
    n.status = Some(NodeStatus {
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    s.nodes().update_status(n).await.unwrap();
}

/// A server whose nodes stay Ready for the whole test without heartbeats.
async fn server_with_node() -> TestApiServer {
    let s = TestApiServer::start_with(apiserver::Config {
        node_grace_period: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    add_node(&s, "n1").await;
    s
}

fn meta(ns: &str, name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: ns.into(),
        ..Default::default()
    })
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: labels(&[("app", app)]),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: image.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn selector(app: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: labels(&[("app", app)]),
        ..Default::default()
    })
}

fn replica_set(ns: &str, name: &str, app: &str, n: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: meta(ns, name),
        spec: Some(ReplicaSetSpec {
            replicas: Some(n),
            selector: selector(app),
            template: Some(template(app, "whoami")),
            min_ready_seconds: 0,
        }),
        status: None,
    }
}

async fn pods_with(s: &TestApiServer, ns: &str, sel: &str) -> Vec<Pod> {
    s.pods()
        .list(ListRequest {
            namespace: ns.into(),
            label_selector: sel.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

fn m(p: &Pod) -> &ObjectMeta {
    p.metadata.as_ref().unwrap()
}

/// Waits for exactly `n` live (not deleting) pods matching `sel`.
async fn wait_pods(s: &TestApiServer, ns: &str, sel: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} pods {sel}"), || async {
        let p: Vec<Pod> = pods_with(s, ns, sel)
            .await
            .into_iter()
            .filter(|p| m(p).deletion_timestamp == 0)
            .collect();
        (p.len() == n).then_some(p)
    })
    .await
}

/// What a node agent reports for a started pod: Running and Ready.
async fn make_ready(s: &TestApiServer, p: &Pod) {
    let mut p = p.clone();
    p.status = Some(PodStatus {
        phase: "Running".into(),
        start_time: 1,
        conditions: vec![PodCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        container_statuses: vec![ContainerStatus {
            name: "c".into(),
            state: "Running".into(),
            ready: true,
            started_at: 1,
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Err(e) = s.pods().update_status(p).await {
        eprintln!("make_ready: {e}");
    }
}

/// Plays the node agent: pods become Running + Ready, pods being deleted are finished
/// (the agent's final Delete with grace 0).
async fn make_all_ready(s: &TestApiServer, ns: &str, sel: &str) {
    for p in pods_with(s, ns, sel).await {
        if m(&p).deletion_timestamp != 0 {
            let _ = s
                .pods()
                .delete(DeleteRequest {
                    name: m(&p).name.clone(),
                    namespace: m(&p).namespace.clone(),
                    grace_period_seconds: 0,
                    ..Default::default()
                })
                .await;
            continue;
        }
        let ready = p
            .status
            .as_ref()
            .is_some_and(|st| st.conditions.iter().any(|c| c.status == "True"));
        if !ready && m(&p).deletion_timestamp == 0 {
            make_ready(s, &p).await;
        }
    }
}

fn del(ns: &str, name: &str, policy: &str) -> DeleteRequest {
    DeleteRequest {
        name: name.into(),
        namespace: ns.into(),
        grace_period_seconds: -1,
        propagation_policy: policy.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn namespaces_exist_are_required_and_delete_their_content() {
    let s = TestApiServer::start().await;
    let mut ns = s.namespaces();
    let names: Vec<String> = ns
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .iter()
        .map(|n| n.metadata.clone().unwrap().name)
        .collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-system"]);

    let e = s
        .config_maps()
        .create(ConfigMap {
            metadata: meta("dev", "cfg"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "namespaces \"dev\" not found");

    let created = ns
        .create(Namespace {
            metadata: meta("", "dev"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.status.unwrap().phase, "Active");
    assert_eq!(created.spec.unwrap().finalizers, ["kubernetes"]);
    s.config_maps()
        .create(ConfigMap {
            metadata: meta("dev", "cfg"),
            data: labels(&[("a", "b")]),
            ..Default::default()
        })
        .await
        .unwrap();
    s.replica_sets()
        .create(replica_set("dev", "web", "web", 2))
        .await
        .unwrap();
    wait_pods(&s, "dev", "app=web", 2).await;

    let e = ns.delete(del("", "default", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(
        e.message().contains("may not be deleted"),
        "{}",
        e.message()
    );

    // An object with a finalizer of its own holds the namespace in Terminating.
    s.config_maps()
        .create(ConfigMap {
            metadata: Some(ObjectMeta {
                name: "held".into(),
                namespace: "dev".into(),
                finalizers: vec!["example.com/hold".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let marked = ns.delete(del("", "dev", "")).await.unwrap().into_inner();
    assert_eq!(marked.status.unwrap().phase, "Terminating");
    let held = eventually("held configmap marked deleted", || async {
        let c = s
            .config_maps()
            .get(GetRequest {
                name: "held".into(),
                namespace: "dev".into(),
            })
            .await
            .ok()?
            .into_inner();
        (c.metadata.as_ref().unwrap().deletion_timestamp != 0).then_some(c)
    })
    .await;
    wait_pods(&s, "dev", "app=web", 0).await;
    let e = s
        .secrets()
        .create(Secret {
            metadata: meta("dev", "late"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("being terminated"), "{}", e.message());
    // Removing the finalizer lets the object, then the namespace, go.
    let mut release = held.clone();
    release.metadata.as_mut().unwrap().finalizers.clear();
    s.config_maps().update(release).await.unwrap();
    eventually("namespace dev gone", || async {
        let gone = s
            .namespaces()
            .get(GetRequest {
                name: "dev".into(),
                namespace: String::new(),
            })
            .await
            .is_err_and(|e| e.code() == Code::NotFound);
        gone.then_some(())
    })
    .await;
    assert!(pods_with(&s, "dev", "").await.is_empty());
    let cms = s
        .config_maps()
        .list(ListRequest {
            namespace: "dev".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(cms.is_empty());
}

#[tokio::test]
async fn config_maps_and_secrets() {
    let s = TestApiServer::start().await;
    let mut cms = s.config_maps();
    let cm = cms
        .create(ConfigMap {
            metadata: meta("", "app"),
            data: labels(&[("app.conf", "x=1")]),
            binary_data: [("blob".to_string(), vec![0u8, 1, 2])].into(),
            immutable: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut changed = cm.clone();
    changed.data.insert("app.conf".into(), "x=2".into());
    let e = cms.update(changed).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "data: field is immutable when `immutable` is set"
    );
    let big = ConfigMap {
        metadata: meta("", "big"),
        data: labels(&[("k", &"x".repeat(1 << 20))]),
        ..Default::default()
    };
    let e = cms.create(big).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("data: Too long"), "{}", e.message());

    let mut secrets = s.secrets();
    let sec = secrets
        .create(Secret {
            metadata: meta("", "db"),
            string_data: labels(&[("password", "hunter2")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sec.r#type, "Opaque");
    assert_eq!(sec.data["password"], b"hunter2");
    assert!(sec.string_data.is_empty());
    let e = secrets
        .create(Secret {
            metadata: meta("", "tls"),
            r#type: "kubernetes.io/tls".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "data[tls.crt]: is required for a Secret of type kubernetes.io/tls"
    );
}

#[tokio::test]
async fn replica_sets_scale_replace_adopt_and_release() {
    let s = server_with_node().await;
    let mut rss = s.replica_sets();
    let rs = rss
        .create(replica_set("", "web", "web", 3))
        .await
        .unwrap()
        .into_inner();
    let uid = rs.metadata.clone().unwrap().uid;
    let pods = wait_pods(&s, "default", "app=web", 3).await;
    for p in &pods {
        let pm = m(p);
        assert!(
            pm.name.starts_with("web-") && pm.name.len() == 9,
            "{}",
            pm.name
        );
        assert_eq!(pm.owner_references.len(), 1);
        assert_eq!(pm.owner_references[0].uid, uid);
        assert!(pm.owner_references[0].controller);
    }
    // Status follows the pods.
    make_all_ready(&s, "default", "app=web").await;
    eventually("rs status 3/3", || async {
        let r = s
            .replica_sets()
            .get(GetRequest {
                name: "web".into(),
                namespace: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let st = r.status.unwrap_or_default();
        (st.replicas == 3 && st.ready_replicas == 3 && st.available_replicas == 3).then_some(())
    })
    .await;
    // A deleted pod is replaced.
    let victim = m(&pods[0]).name.clone();
    s.pods()
        .delete(DeleteRequest {
            name: victim.clone(),
            grace_period_seconds: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let after = wait_pods(&s, "default", "app=web", 3).await;
    assert!(after.iter().all(|p| m(p).name != victim));
    // Scale down (retrying when the controller's status write came first, as clients do).
    loop {
        let mut cur = rss
            .get(GetRequest {
                name: "web".into(),
                namespace: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        cur.spec.as_mut().unwrap().replicas = Some(1);
        match rss.update(cur).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::Aborted => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let one = wait_pods(&s, "default", "app=web", 1).await;
    // An orphan with matching labels is adopted (and, being one too many, one goes).
    let orphan = Pod {
        metadata: Some(ObjectMeta {
            name: "stray".into(),
            labels: labels(&[("app", "web")]),
            ..Default::default()
        }),
        spec: template("web", "whoami").spec,
        status: None,
    };
    s.pods().create(orphan).await.unwrap();
    let adopted = wait_pods(&s, "default", "app=web", 1).await;
    assert_eq!(m(&adopted[0]).owner_references[0].uid, uid);
    // A pod whose labels stop matching is released (and replaced).
    loop {
        let mut keep = s
            .pods()
            .get(GetRequest {
                name: m(&adopted[0]).name.clone(),
                namespace: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        keep.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "debug".into());
        match s.pods().update(keep).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::Aborted => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let released = eventually("released pod", || async {
        let p = pods_with(&s, "default", "app=debug").await;
        p.into_iter().find(|p| m(p).owner_references.is_empty())
    })
    .await;
    assert_eq!(m(&released).name, m(&adopted[0]).name);
    wait_pods(&s, "default", "app=web", 1).await;
    let _ = one;
}

#[tokio::test]
async fn garbage_collection_background_foreground_and_orphan() {
    let s = TestApiServer::start().await;
    let mut rss = s.replica_sets();
    // Background (default): the owner goes at once, its pods after.
    rss.create(replica_set("", "bg", "bg", 2)).await.unwrap();
    wait_pods(&s, "default", "app=bg", 2).await;
    rss.delete(del("", "bg", "")).await.unwrap();
    wait_pods(&s, "default", "app=bg", 0).await;

    // Orphan: the pods stay, without the reference.
    rss.create(replica_set("", "or", "or", 2)).await.unwrap();
    wait_pods(&s, "default", "app=or", 2).await;
    rss.delete(del("", "or", "Orphan")).await.unwrap();
    eventually("orphaned pods released, owner gone", || async {
        let pods = pods_with(&s, "default", "app=or").await;
        let owner_gone = s
            .replica_sets()
            .get(GetRequest {
                name: "or".into(),
                namespace: String::new(),
            })
            .await
            .is_err();
        (owner_gone && pods.len() == 2 && pods.iter().all(|p| m(p).owner_references.is_empty()))
            .then_some(())
    })
    .await;

    // Foreground: the owner stays (deletion timestamp, finalizer) until its pods are gone.
    rss.create(replica_set("", "fg", "fg", 2)).await.unwrap();
    wait_pods(&s, "default", "app=fg", 2).await;
    let marked = rss
        .delete(del("", "fg", "Foreground"))
        .await
        .unwrap()
        .into_inner();
    let mm = marked.metadata.unwrap();
    assert_ne!(mm.deletion_timestamp, 0);
    assert_eq!(mm.finalizers, ["foregroundDeletion"]);
    eventually("foreground owner gone after its pods", || async {
        let owner_gone = s
            .replica_sets()
            .get(GetRequest {
                name: "fg".into(),
                namespace: String::new(),
            })
            .await
            .is_err();
        (owner_gone && pods_with(&s, "default", "app=fg").await.is_empty()).then_some(())
    })
    .await;
}

fn deployment(name: &str, image: &str, n: i32, surge: &str, unavailable: &str) -> Deployment {
    Deployment {
        metadata: meta("", name),
        spec: Some(DeploymentSpec {
            replicas: Some(n),
            selector: selector(name),
            template: Some(template(name, image)),
            strategy: Some(DeploymentStrategy {
                r#type: "RollingUpdate".into(),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: surge.into(),
                    max_unavailable: unavailable.into(),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

async fn get_deploy(s: &TestApiServer, name: &str) -> Deployment {
    s.deployments()
        .get(GetRequest {
            name: name.into(),
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn images(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone())
        .collect();
    v.sort();
    v
}

/// Drives a rollout to completion by marking new pods ready as they appear; checks at
/// every step that the ready pods never drop below `min_ready`.
async fn drive(s: &TestApiServer, name: &str, image: &str, n: usize, min_ready: usize) {
    let sel = format!("app={name}");
    eventually(&format!("{name} rolled out to {image}"), || async {
        let pods = pods_with(s, "default", &sel).await;
        let ready = pods
            .iter()
            .filter(|p| {
                m(p).deletion_timestamp == 0
                    && p.status
                        .as_ref()
                        .is_some_and(|st| st.conditions.iter().any(|c| c.status == "True"))
            })
            .count();
        assert!(
            ready >= min_ready,
            "only {ready} ready pods during the rollout"
        );
        make_all_ready(s, "default", &sel).await;
        let d = get_deploy(s, name).await;
        let st = d.status.clone().unwrap_or_default();
        let live: Vec<Pod> = pods
            .into_iter()
            .filter(|p| m(p).deletion_timestamp == 0)
            .collect();
        let done = st.updated_replicas == n as i32
            && st.available_replicas == n as i32
            && st.replicas == n as i32
            && live.len() == n
            && images(&live).iter().all(|i| i == image);
        done.then_some(())
    })
    .await;
}

#[tokio::test]
async fn deployment_rolling_update_undo_and_history() {
    let s = server_with_node().await;
    let mut ds = s.deployments();
    ds.create(deployment("web", "v1", 4, "1", "0"))
        .await
        .unwrap();
    drive(&s, "web", "v1", 4, 0).await;
    let d = get_deploy(&s, "web").await;
    let dm = d.metadata.clone().unwrap();
    assert_eq!(dm.annotations["deployment.kubernetes.io/revision"], "1");
    let st = d.status.clone().unwrap();
    let reasons: Vec<_> = st.conditions.iter().map(|c| c.reason.clone()).collect();
    assert_eq!(
        reasons,
        ["MinimumReplicasAvailable", "NewReplicaSetAvailable"]
    );
    assert_eq!(st.observed_generation, dm.generation);
    let pods = pods_with(&s, "default", "app=web").await;
    let hash = m(&pods[0]).labels["pod-template-hash"].clone();
    assert!(pods
        .iter()
        .all(|p| m(p).labels["pod-template-hash"] == hash));

    // Rolling update, maxUnavailable 0: never fewer than 4 ready pods.
    let mut d2 = d.clone();
    d2.spec.as_mut().unwrap().template = Some(template("web", "v2"));
    ds.update(d2).await.unwrap();
    drive(&s, "web", "v2", 4, 4).await;
    let d = get_deploy(&s, "web").await;
    assert_eq!(
        d.metadata.clone().unwrap().annotations["deployment.kubernetes.io/revision"],
        "2"
    );
    // Undo (as `rollout undo` does): the template of revision 1 again → revision 3.
    let mut back = d.clone();
    back.spec.as_mut().unwrap().template = Some(template("web", "v1"));
    ds.update(back).await.unwrap();
    drive(&s, "web", "v1", 4, 4).await;
    let d = get_deploy(&s, "web").await;
    assert_eq!(
        d.metadata.clone().unwrap().annotations["deployment.kubernetes.io/revision"],
        "3"
    );
    let rss = s
        .replica_sets()
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(rss.len(), 2, "v1's ReplicaSet was reused");

    // Events: the Deployment scaled ReplicaSets, the ReplicaSets created pods.
    let evs = eventually("events", || async {
        let evs = s
            .events()
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        let has = |r: &str| evs.iter().any(|e| e.reason == r);
        (has("ScalingReplicaSet") && has("SuccessfulCreate") && has("SuccessfulDelete"))
            .then_some(evs)
    })
    .await;
    let scaling = evs
        .iter()
        .find(|e| e.reason == "ScalingReplicaSet" && e.message.starts_with("Scaled up"))
        .unwrap();
    assert_eq!(scaling.involved_object.as_ref().unwrap().kind, "Deployment");
    assert!(
        scaling.message.starts_with("Scaled up replica set web-"),
        "{}",
        scaling.message
    );

    // Deleting the Deployment takes its ReplicaSets and pods (background).
    ds.delete(del("", "web", "")).await.unwrap();
    wait_pods(&s, "default", "app=web", 0).await;
    eventually("replica sets gone", || async {
        let rss = s
            .replica_sets()
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        rss.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn deployment_recreate_takes_all_pods_down_first() {
    let s = server_with_node().await;
    let mut ds = s.deployments();
    let mut d = deployment("db", "v1", 3, "", "");
    d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        r#type: "Recreate".into(),
        rolling_update: None,
    });
    ds.create(d).await.unwrap();
    drive(&s, "db", "v1", 3, 0).await;
    let mut d = get_deploy(&s, "db").await;
    d.spec.as_mut().unwrap().template = Some(template("db", "v2"));
    ds.update(d).await.unwrap();
    // Until the old pods are gone no new pod exists.
    eventually("recreated", || async {
        let pods = pods_with(&s, "default", "app=db").await;
        let imgs = images(&pods);
        assert!(
            !(imgs.contains(&"v1".to_string()) && imgs.contains(&"v2".to_string())),
            "old and new pods at once: {imgs:?}"
        );
        make_all_ready(&s, "default", "app=db").await;
        (imgs.len() == 3 && imgs.iter().all(|i| i == "v2")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn scheduling_failures_are_events_deduplicated_with_a_count() {
    let s = TestApiServer::start().await;
    // No node: the scheduler marks the pods Unschedulable; one event per pod.
    s.replica_sets()
        .create(replica_set("", "pending", "pending", 2))
        .await
        .unwrap();
    let evs = eventually("FailedScheduling events", || async {
        let evs: Vec<Event> = s
            .events()
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .filter(|e| e.reason == "FailedScheduling")
            .collect();
        (evs.len() == 2).then_some(evs)
    })
    .await;
    assert!(evs.iter().all(|e| e.r#type == "Warning"
        && e.involved_object.as_ref().unwrap().kind == "Pod"
        && e.count >= 1
        && e.first_timestamp > 0));
    let creates: Vec<Event> = s
        .events()
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .filter(|e| e.reason == "SuccessfulCreate")
        .collect();
    assert_eq!(creates.len(), 2, "one per created pod (different messages)");
    assert_eq!(
        creates[0].source.as_ref().unwrap().component,
        "replicaset-controller"
    );
}
