//! Object builders shared by the apiserver tests: names, requests and minimal valid
//! objects, so each test states only what it is about.

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
