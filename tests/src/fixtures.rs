//! Object builders shared by the apiserver tests: names, requests and minimal valid
//! objects, so each test states only what it is about; the node tests' pods, containers
//! and waits.

use kube_lite_proto::v1::*;

/// Metadata with only a name (namespace left for the apiserver to default).
pub fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        ..Default::default()
    })
}

/// Get by name in the default namespace.
pub fn get(name: &str) -> GetRequest {
    GetRequest {
        name: name.into(),
        namespace: String::new(),
    }
}

/// Label map from pairs.
pub fn labels<M: FromIterator<(String, String)>>(pairs: &[(&str, &str)]) -> M {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A minimal valid, unbound pod: one container `c` running `/bin/true`.
pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: self::labels(labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Delete by name; pods get their own grace period (`grace_period_seconds: -1`).
pub fn del(name: &str) -> DeleteRequest {
    DeleteRequest {
        name: name.into(),
        grace_period_seconds: -1,
        ..Default::default()
    }
}

/// Delete by name at once (`grace_period_seconds: 0`, as for every kind but pods).
pub fn del_now(name: &str) -> DeleteRequest {
    DeleteRequest {
        name: name.into(),
        ..Default::default()
    }
}

/// A Service selecting `app=<name>` on port 80; `ip` is the ClusterIP asked for (empty:
/// allocated).
pub fn service(name: &str, ip: &str) -> Service {
    Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            selector: [("app".to_string(), name.to_string())].into(),
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            cluster_ip: ip.into(),
            ..Default::default()
        }),
        status: None,
    }
}

/// List with a label selector.
pub fn selected(label_selector: &str) -> ListRequest {
    ListRequest {
        label_selector: label_selector.into(),
        ..Default::default()
    }
}

/// Polls `f` every 20 ms until it returns `Some`, panicking with `what` after `within`
/// (generous on a busy machine: a condition, never a fixed sleep).
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// [`eventually`] that returns an error naming `what` instead of panicking, so the
/// caller can add context (agent logs) to the failure.
pub async fn eventually_or<T, F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut f: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `name` in namespace `default`, no labels (the node tests' pods).
pub fn default_meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    })
}

/// A pod `name` in `default` bound to `node` ("" leaves it to the scheduler) running
/// `containers`, with `restart` policy and grace period `grace` ("" and 0: the
/// defaults). Tests set any other field on the result.
pub fn node_pod(
    name: &str,
    node: &str,
    containers: Vec<Container>,
    restart: &str,
    grace: i64,
) -> Pod {
    Pod {
        metadata: default_meta(name),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers,
            restart_policy: restart.into(),
            termination_grace_period_seconds: grace,
            ..Default::default()
        }),
        status: None,
    }
}

/// Container `name` running `sh -c script` on the process runtime (image `busybox`,
/// the script in `args`; the containerd form is `containerd::sh`).
pub fn sh(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: "busybox".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Resource requests and limits from (resource, quantity) pairs.
pub fn res(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
    Some(ResourceRequirements {
        requests: labels(req),
        limits: labels(lim),
    })
}

/// The pod's uid.
pub fn uid(p: &Pod) -> String {
    p.metadata.as_ref().unwrap().uid.clone()
}

/// The pod's phase ("" before it has a status).
pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// A file's text, trimmed (panics naming the file if it cannot be read).
pub fn read_trimmed(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Waits until `path` holds exactly `want` (trimmed), polling every 100 ms.
pub async fn wait_file(path: &std::path::Path, want: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.trim() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {t:?}, want {want:?}",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A pod `name` on `node` running the `whoami` image as container `web` (restart
/// Always, grace 30 s): the benchmarks' pod.
pub fn whoami_pod(name: &str, node: &str) -> Pod {
    let web = Container {
        name: "web".into(),
        image: "whoami".into(),
        ..Default::default()
    };
    node_pod(name, node, vec![web], "Always", 30)
}

/// ConfigMap `name` in `default` holding the (key, value) pairs `data`.
pub fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: default_meta(name),
        data: labels(data),
        ..Default::default()
    }
}
