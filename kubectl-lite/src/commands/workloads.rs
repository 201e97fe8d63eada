//! The workload commands: `create deployment|namespace|configmap|secret generic`,
//! `scale`, `rollout status|history|undo|restart|pause|resume`, `label`, `annotate`.
//! Builders are pure (unit-tested); the rest reads, changes and updates with the
//! object's resource version (retrying a lost race).

use super::ctx::{out, Ctx};
use crate::api::{display, Api, Kind};
use crate::cli::{
    CreateConfigMapArgs, CreateDeploymentArgs, CreateNamespaceArgs, CreateSecretArgs, MetaArgs,
    RolloutArgs, RolloutCommand, ScaleArgs, SetImageArgs,
};
use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use kube_lite_core::consts::protocol;
use kube_lite_core::time::now_ms;
use kube_lite_core::workloads as wl;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    ConfigMap, Container, ContainerPort, Deployment, DeploymentSpec, Event, LabelSelector,
    ListRequest, Namespace, ObjectMeta, Pod, PodSpec, PodTemplateSpec, ReplicaSet, Secret, Service,
    WatchRequest,
};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;

// ---------- create ----------

/// `create deployment web --image whoami --replicas 3`: labels `app=web`, one container
/// per image named after the image (as kubectl).
pub fn deployment_from_args(a: &CreateDeploymentArgs, namespace: &str) -> Result<Deployment> {
    if a.replicas < 0 {
        bail!("--replicas {}: must be >= 0", a.replicas);
    }
    let labels: HashMap<String, String> = [("app".to_string(), a.name.clone())].into();
    let containers = a
        .image
        .iter()
        .map(|image| {
            let base = image.rsplit('/').next().unwrap_or(image);
            let base = base.split([':', '@']).next().unwrap_or(base);
            let name: String = base
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            Container {
                name: name.trim_matches('-').to_string(),
                image: image.clone(),
                command: a.command.clone(),
                ports: a
                    .port
                    .map(|p| ContainerPort {
                        name: String::new(),
                        container_port: p,
                        protocol: protocol::TCP.into(),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    Ok(Deployment {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.into(),
            labels: labels.clone(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(a.replicas),
            selector: Some(LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    })
}

pub fn namespace_from_args(a: &CreateNamespaceArgs) -> Namespace {
    Namespace {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `--from-literal k=v` and `--from-file [k=]path` → key → bytes (duplicates refused).
pub fn data_from_args(literals: &[String], files: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut push = |k: String, v: Vec<u8>| -> Result<()> {
        if out.iter().any(|(x, _)| *x == k) {
            bail!("cannot add key {k:?}: another key by that name already exists");
        }
        out.push((k, v));
        Ok(())
    };
    for l in literals {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("--from-literal {l:?}: must be KEY=VALUE"))?;
        if k.is_empty() {
            bail!("--from-literal {l:?}: the key is empty");
        }
        push(k.to_string(), v.as_bytes().to_vec())?;
    }
    for f in files {
        let (k, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p.to_string()),
            None => (
                std::path::Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.clone()),
                f.clone(),
            ),
        };
        let meta = std::fs::metadata(&path).map_err(|e| anyhow!("--from-file {path}: {e}"))?;
        if meta.len() > wl::MAX_CONFIG_BYTES as u64 {
            bail!(
                "--from-file {path}: {} bytes is over the 1 MiB limit of a ConfigMap/Secret",
                meta.len()
            );
        }
        let bytes = std::fs::read(&path).map_err(|e| anyhow!("--from-file {path}: {e}"))?;
        push(k, bytes)?;
    }
    Ok(out)
}

pub fn config_map_from_args(a: &CreateConfigMapArgs, namespace: &str) -> Result<ConfigMap> {
    let mut cm = ConfigMap {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    for (k, v) in data_from_args(&a.from_literal, &a.from_file)? {
        match String::from_utf8(v) {
            Ok(s) => {
                cm.data.insert(k, s);
            }
            Err(e) => {
                cm.binary_data.insert(k, e.into_bytes());
            }
        }
    }
    Ok(cm)
}

pub fn secret_from_args(a: &CreateSecretArgs, namespace: &str) -> Result<Secret> {
    Ok(Secret {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.into(),
            ..Default::default()
        }),
        data: data_from_args(&a.from_literal, &a.from_file)?
            .into_iter()
            .collect(),
        r#type: a.r#type.clone(),
        ..Default::default()
    })
}

// ---------- shared ----------

/// `deploy/web` or `deploy web` → (kind, names).
fn kind_names(resource: &str, names: &[String]) -> Result<(Kind, Vec<String>)> {
    let mut r = resource.to_string();
    let mut n = names.to_vec();
    let k = super::args::kind_and_names(&mut r, &mut n)?;
    if n.is_empty() {
        bail!("a NAME is required");
    }
    Ok((k, n))
}

/// Get, change, Update; retried on a conflict (someone else wrote first).
async fn modify<T: Api>(
    ctx: &Ctx,
    name: &str,
    mut change: impl FnMut(&mut T) -> Result<bool>,
) -> Result<T> {
    for _ in 0..10 {
        let mut obj = ctx.fetch::<T>(name).await?;
        if !change(&mut obj)? {
            return Ok(obj);
        }
        match T::update(&ctx.ch, obj).await {
            Ok(o) => return Ok(o),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => {
                return Err(ctx.error::<T>(&format!("update {}/{name}", display::<T>()), name, s))
            }
        }
    }
    bail!(
        "{}/{name}: too many conflicting updates; try again",
        display::<T>()
    )
}

// ---------- scale ----------

pub async fn scale(ctx: &Ctx, a: &ScaleArgs) -> Result<()> {
    let (kind, names) = kind_names(&a.resource, &a.names)?;
    if a.replicas < 0 {
        bail!("--replicas {}: must be >= 0", a.replicas);
    }
    let n = a.replicas;
    for name in names {
        match kind {
            Kind::Deployment => {
                modify::<Deployment>(ctx, &name, |d| {
                    d.spec.get_or_insert_with(Default::default).replicas = Some(n);
                    Ok(true)
                })
                .await?;
            }
            Kind::ReplicaSet => {
                modify::<ReplicaSet>(ctx, &name, |d| {
                    d.spec.get_or_insert_with(Default::default).replicas = Some(n);
                    Ok(true)
                })
                .await?;
            }
            other => bail!(
                "scale: {} cannot be scaled (deployments and replicasets can)",
                other.display()
            ),
        }
        out(format_args!("{}/{name} scaled\n", kind.display()))?;
    }
    Ok(())
}

// ---------- rollout ----------

fn rollout_target(a: &RolloutArgs) -> Result<Vec<String>> {
    let (kind, names) = kind_names(&a.resource, &a.names)?;
    if kind != Kind::Deployment {
        bail!(
            "rollout: only deployments are supported (got {})",
            kind.display()
        );
    }
    Ok(names)
}

/// The ReplicaSets a Deployment controls, oldest revision first.
async fn owned_replica_sets(ctx: &Ctx, d: &Deployment) -> Result<Vec<ReplicaSet>> {
    let (items, _) = ReplicaSet::list(
        &ctx.ch,
        ListRequest {
            namespace: d.namespace().to_string(),
            ..Default::default()
        },
    )
    .await
    .map_err(|s| ctx.error::<ReplicaSet>("list replicasets", "", s))?;
    let mut owned: Vec<ReplicaSet> = items
        .into_iter()
        .filter(|r| {
            r.meta()
                .owner_references
                .iter()
                .any(|o| o.controller && o.uid == d.uid())
        })
        .collect();
    owned.sort_by_key(|r| wl::revision_of(&r.meta().annotations));
    Ok(owned)
}

/// The rollout's state in kubectl's words; `None` when complete.
pub fn rollout_message(d: &Deployment) -> (bool, String) {
    let name = d.name();
    let spec = wl::deployment_spec(d);
    let want = wl::replicas(spec.replicas);
    let st = d.status.clone().unwrap_or_default();
    if st.observed_generation < d.meta().generation {
        return (
            false,
            "Waiting for deployment spec update to be observed...".into(),
        );
    }
    if st
        .conditions
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded")
    {
        return (
            true,
            format!("error: deployment {name:?} exceeded its progress deadline"),
        );
    }
    if st.updated_replicas < want {
        return (
            false,
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                st.updated_replicas
            ),
        );
    }
    if st.replicas > st.updated_replicas {
        return (
            false,
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                st.replicas - st.updated_replicas
            ),
        );
    }
    if st.available_replicas < st.updated_replicas {
        return (
            false,
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                st.available_replicas, st.updated_replicas
            ),
        );
    }
    (true, format!("deployment {name:?} successfully rolled out"))
}

pub async fn rollout(ctx: &Ctx, cmd: &RolloutCommand) -> Result<()> {
    match cmd {
        RolloutCommand::Status(a) => {
            let timeout =
                kube_lite_core::time::parse_duration(&a.timeout).map_err(|e| anyhow!(e))?;
            for name in rollout_target(a)? {
                let wait = rollout_status(ctx, &name, a.watch);
                if timeout.is_zero() {
                    wait.await?;
                } else {
                    tokio::time::timeout(timeout, wait)
                        .await
                        .map_err(|_| anyhow!("timed out waiting for the condition"))??;
                }
            }
            Ok(())
        }
        RolloutCommand::History(a) => {
            for name in rollout_target(a)? {
                let d = ctx.fetch::<Deployment>(&name).await?;
                let rss = owned_replica_sets(ctx, &d).await?;
                if a.revision > 0 {
                    let rs = rss
                        .iter()
                        .find(|r| wl::revision_of(&r.meta().annotations) == a.revision)
                        .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
                    let t = rs
                        .spec
                        .clone()
                        .unwrap_or_default()
                        .template
                        .unwrap_or_default();
                    out(format_args!(
                        "deployment.apps/{name} with revision #{}\n{}",
                        a.revision,
                        crate::describe::template_text(&t)
                    ))?;
                    continue;
                }
                let mut text = format!("deployment.apps/{name}\nREVISION  CHANGE-CAUSE\n");
                for r in &rss {
                    let m = r.meta();
                    let cause = m
                        .annotations
                        .get(wl::CHANGE_CAUSE_ANNOTATION)
                        .cloned()
                        .unwrap_or_else(|| "<none>".into());
                    text.push_str(&format!("{:<10}{cause}\n", wl::revision_of(&m.annotations)));
                }
                out(format_args!("{text}\n"))?;
            }
            Ok(())
        }
        RolloutCommand::Undo(a) => {
            for name in rollout_target(a)? {
                let d = ctx.fetch::<Deployment>(&name).await?;
                let rss = owned_replica_sets(ctx, &d).await?;
                let current = wl::revision_of(&d.meta().annotations);
                let target = if a.to_revision > 0 {
                    rss.iter()
                        .find(|r| wl::revision_of(&r.meta().annotations) == a.to_revision)
                        .ok_or_else(|| {
                            anyhow!(
                                "unable to find specified revision {} in history",
                                a.to_revision
                            )
                        })?
                } else {
                    rss.iter()
                        .rev()
                        .find(|r| wl::revision_of(&r.meta().annotations) < current)
                        .ok_or_else(|| {
                            anyhow!("no rollout history found for deployment {name:?}")
                        })?
                };
                let mut t = target
                    .spec
                    .clone()
                    .unwrap_or_default()
                    .template
                    .unwrap_or_default();
                if let Some(m) = t.metadata.as_mut() {
                    m.labels.remove(wl::POD_TEMPLATE_HASH);
                }
                modify::<Deployment>(ctx, &name, |d| {
                    d.spec.get_or_insert_with(Default::default).template = Some(t.clone());
                    Ok(true)
                })
                .await?;
                out(format_args!("deployment.apps/{name} rolled back\n"))?;
            }
            Ok(())
        }
        RolloutCommand::Restart(a) => {
            for name in rollout_target(a)? {
                let at = crate::util::rfc3339(now_ms());
                modify::<Deployment>(ctx, &name, |d| {
                    let spec = d.spec.get_or_insert_with(Default::default);
                    let t = spec.template.get_or_insert_with(Default::default);
                    t.metadata
                        .get_or_insert_with(Default::default)
                        .annotations
                        .insert(wl::RESTARTED_AT_ANNOTATION.into(), at.clone());
                    Ok(true)
                })
                .await?;
                out(format_args!("deployment.apps/{name} restarted\n"))?;
            }
            Ok(())
        }
        RolloutCommand::Pause(a) | RolloutCommand::Resume(a) => {
            let pause = matches!(cmd, RolloutCommand::Pause(_));
            for name in rollout_target(a)? {
                let mut changed = false;
                modify::<Deployment>(ctx, &name, |d| {
                    let spec = d.spec.get_or_insert_with(Default::default);
                    changed = spec.paused != pause;
                    spec.paused = pause;
                    Ok(changed)
                })
                .await?;
                let verb = if pause { "paused" } else { "resumed" };
                if changed {
                    out(format_args!("deployment.apps/{name} {verb}\n"))?;
                } else {
                    bail!("deployment.apps/{name} is already {verb}");
                }
            }
            Ok(())
        }
    }
}

async fn rollout_status(ctx: &Ctx, name: &str, watch: bool) -> Result<()> {
    let mut last = String::new();
    loop {
        let d = ctx.fetch::<Deployment>(name).await?;
        let (done, msg) = rollout_message(&d);
        if msg != last {
            out(format_args!("{msg}\n"))?;
            last = msg.clone();
        }
        if done {
            if msg.starts_with("error:") {
                bail!("{}", msg.trim_start_matches("error: "));
            }
            return Ok(());
        }
        if !watch {
            return Ok(());
        }
        // Wait for the next change of the Deployment (or a second).
        let req = WatchRequest {
            namespace: d.namespace().to_string(),
            resource_version: d.resource_version(),
            ..Default::default()
        };
        if let Ok(mut s) = Deployment::watch(&ctx.ch, req).await {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(ev)) = s.next().await {
                    if ev.object.as_ref().is_some_and(|o| o.name() == name) {
                        return;
                    }
                }
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------- set image ----------

/// `KIND/NAME C=IMAGE…` or `KIND NAME… C=IMAGE…` → (resource, names, (container, image)).
/// (container, image) pairs of `set image`.
pub type Images = Vec<(String, String)>;

pub fn split_image_args(args: &[String]) -> Result<(String, Vec<String>, Images)> {
    let (resource, names, changes) = split_meta_args(args)?;
    let mut images = Vec::new();
    for (c, image) in changes {
        match image {
            Some(i) if !i.is_empty() && !c.is_empty() => images.push((c, i)),
            _ => bail!("{c:?}: expected CONTAINER=IMAGE"),
        }
    }
    Ok((resource, names, images))
}

/// The pod spec of a workload's template, created empty where missing.
fn template_pod_spec(t: &mut Option<PodTemplateSpec>) -> &mut PodSpec {
    t.get_or_insert_with(Default::default)
        .spec
        .get_or_insert_with(Default::default)
}

/// Sets the images of the named containers (`*` = all) in `spec`; an unknown container
/// is an error naming it (as kubectl's `unable to find container named "x"`).
pub fn set_images(spec: &mut PodSpec, images: &[(String, String)]) -> Result<bool> {
    let mut changed = false;
    for (name, image) in images {
        let mut found = false;
        for c in spec
            .init_containers
            .iter_mut()
            .chain(spec.containers.iter_mut())
        {
            if name == "*" || c.name == *name {
                found = true;
                if c.image != *image {
                    c.image = image.clone();
                    changed = true;
                }
            }
        }
        if !found {
            bail!("unable to find container named {name:?}");
        }
    }
    Ok(changed)
}

/// `set image deployment/web web=IMAGE`: a new template, so a Deployment rolls out.
pub async fn set_image(ctx: &Ctx, a: &SetImageArgs) -> Result<()> {
    let (resource, names, images) = split_image_args(&a.args)?;
    let (kind, names) = kind_names(&resource, &names)?;
    for name in &names {
        let changed = std::cell::Cell::new(false);
        match kind {
            Kind::Deployment => {
                modify::<Deployment>(ctx, name, |d| {
                    let t = &mut d.spec.get_or_insert_with(Default::default).template;
                    let c = set_images(template_pod_spec(t), &images)?;
                    changed.set(c);
                    Ok(c)
                })
                .await?;
            }
            Kind::ReplicaSet => {
                modify::<ReplicaSet>(ctx, name, |d| {
                    let t = &mut d.spec.get_or_insert_with(Default::default).template;
                    let c = set_images(template_pod_spec(t), &images)?;
                    changed.set(c);
                    Ok(c)
                })
                .await?;
            }
            other => bail!(
                "set image: {} is not supported (deployments and replicasets are; a pod's \
                 image cannot be changed in kube-lite)",
                other.display()
            ),
        }
        if changed.get() {
            out(format_args!("{}/{name} image updated\n", kind.display()))?;
        } else {
            out(format_args!("{}/{name} unchanged\n", kind.display()))?;
        }
    }
    Ok(())
}

// ---------- label / annotate ----------

/// Label/annotation changes: (key, Some(value)) sets, (key, None) removes.
pub type Changes = Vec<(String, Option<String>)>;

/// `KEY=VALUE` sets, `KEY-` removes; the rest are the kind and names.
pub fn split_meta_args(args: &[String]) -> Result<(String, Vec<String>, Changes)> {
    let mut it = args.iter();
    let resource = it
        .next()
        .cloned()
        .ok_or_else(|| anyhow!("a KIND is required"))?;
    let mut names = Vec::new();
    let mut changes = Vec::new();
    for a in it {
        if let Some((k, v)) = a.split_once('=') {
            changes.push((k.to_string(), Some(v.to_string())));
        } else if let Some(k) = a.strip_suffix('-') {
            changes.push((k.to_string(), None));
        } else if changes.is_empty() {
            names.push(a.clone());
        } else {
            bail!("{a:?}: expected KEY=VALUE or KEY- after the first change");
        }
    }
    if changes.is_empty() {
        bail!("at least one KEY=VALUE or KEY- is required");
    }
    Ok((resource, names, changes))
}

fn apply_changes(
    map: &mut HashMap<String, String>,
    changes: &[(String, Option<String>)],
    overwrite: bool,
    what: &str,
) -> Result<bool> {
    let mut changed = false;
    for (k, v) in changes {
        match v {
            Some(v) => {
                if let Some(old) = map.get(k) {
                    if old == v {
                        continue;
                    }
                    if !overwrite {
                        bail!("'{k}' already has a value ({old}), and --overwrite is false");
                    }
                }
                map.insert(k.clone(), v.clone());
                changed = true;
            }
            None => {
                if map.remove(k).is_none() {
                    eprintln!("{what} {k:?} not found.");
                } else {
                    changed = true;
                }
            }
        }
    }
    Ok(changed)
}

pub async fn label_or_annotate(ctx: &Ctx, a: &MetaArgs, labels: bool) -> Result<()> {
    let (resource, names, changes) = split_meta_args(&a.args)?;
    let (kind, names) = kind_names(&resource, &names)?;
    let verb = if labels { "labeled" } else { "annotated" };
    macro_rules! go {
        ($t:ty) => {{
            for name in &names {
                modify::<$t>(ctx, name, |o| {
                    let m = o.meta_mut();
                    let map = if labels {
                        &mut m.labels
                    } else {
                        &mut m.annotations
                    };
                    apply_changes(
                        map,
                        &changes,
                        a.overwrite,
                        if labels { "label" } else { "annotation" },
                    )
                })
                .await?;
                out(format_args!("{}/{name} {verb}\n", kind.display()))?;
            }
        }};
    }
    match kind {
        Kind::Pod => go!(Pod),
        Kind::Service => go!(Service),
        Kind::Node => go!(kube_lite_proto::v1::Node),
        Kind::Endpoints => go!(kube_lite_proto::v1::Endpoints),
        Kind::Namespace => go!(Namespace),
        Kind::ConfigMap => go!(ConfigMap),
        Kind::Secret => go!(Secret),
        Kind::Event => go!(Event),
        Kind::ReplicaSet => go!(ReplicaSet),
        Kind::Deployment => go!(Deployment),
    }
    Ok(())
}

// ---------- events for describe ----------

/// The Events about one object (by uid), oldest first.
pub async fn events_for(ctx: &Ctx, namespace: &str, uid: &str) -> Vec<Event> {
    let req = ListRequest {
        namespace: if namespace.is_empty() {
            kube_lite_core::DEFAULT_NAMESPACE.into()
        } else {
            namespace.into()
        },
        ..Default::default()
    };
    let Ok((items, _)) = Event::list(&ctx.ch, req).await else {
        return Vec::new();
    };
    let mut evs: Vec<Event> = items
        .into_iter()
        .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.uid == uid))
        .collect();
    evs.sort_by_key(|e| e.first_timestamp);
    evs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_from_flags() {
        let a = CreateDeploymentArgs {
            name: "web".into(),
            image: vec!["registry/whoami:1.2".into()],
            replicas: 3,
            port: Some(8080),
            command: vec![],
        };
        let d = deployment_from_args(&a, "dev").unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.unwrap().match_labels["app"], "web");
        let t = spec.template.unwrap();
        assert_eq!(t.metadata.unwrap().labels["app"], "web");
        let c = &t.spec.unwrap().containers[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_str()),
            ("whoami", "registry/whoami:1.2")
        );
        assert_eq!(c.ports[0].container_port, 8080);
        assert_eq!(d.metadata.unwrap().namespace, "dev");
    }

    #[test]
    fn set_image_by_container_name_or_star() {
        let (r, n, i) =
            split_image_args(&["deployment/web".into(), "web=whoami:v2".into()]).unwrap();
        assert_eq!((r.as_str(), n.len()), ("deployment/web", 0));
        assert_eq!(i, vec![("web".to_string(), "whoami:v2".to_string())]);
        assert!(split_image_args(&["deploy".into(), "web".into(), "c-".into()]).is_err());
        let ctr = |n: &str| Container {
            name: n.into(),
            image: "old".into(),
            ..Default::default()
        };
        let mut spec = PodSpec {
            containers: vec![ctr("a"), ctr("b")],
            ..Default::default()
        };
        assert!(set_images(&mut spec, &[("b".into(), "new".into())]).unwrap());
        assert_eq!(
            (
                spec.containers[0].image.as_str(),
                spec.containers[1].image.as_str()
            ),
            ("old", "new")
        );
        assert!(!set_images(&mut spec, &[("b".into(), "new".into())]).unwrap());
        assert!(set_images(&mut spec, &[("*".into(), "x".into())]).unwrap());
        assert!(spec.containers.iter().all(|c| c.image == "x"));
        let e = set_images(&mut spec, &[("c".into(), "y".into())]).unwrap_err();
        assert!(e
            .to_string()
            .contains("unable to find container named \"c\""));
    }

    #[test]
    fn literals_files_and_meta_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.conf");
        std::fs::write(&f, "x=1\n").unwrap();
        let data = data_from_args(
            &["a=b".into(), "c=d=e".into()],
            &[f.display().to_string(), format!("k={}", f.display())],
        )
        .unwrap();
        let keys: Vec<_> = data.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "c", "app.conf", "k"]);
        assert_eq!(data[1].1, b"d=e");
        assert!(data_from_args(&["a=1".into(), "a=2".into()], &[])
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(data_from_args(&["nokey".into()], &[]).is_err());

        let (r, n, c) = split_meta_args(&[
            "deploy".into(),
            "web".into(),
            "tier=front".into(),
            "old-".into(),
        ])
        .unwrap();
        assert_eq!((r.as_str(), n), ("deploy", vec!["web".to_string()]));
        assert_eq!(
            c,
            vec![
                ("tier".to_string(), Some("front".to_string())),
                ("old".to_string(), None)
            ]
        );
        let mut m: HashMap<String, String> = [("tier".to_string(), "back".to_string())].into();
        assert!(apply_changes(&mut m, &c, false, "label").is_err());
        assert!(apply_changes(&mut m, &c, true, "label").unwrap());
        assert_eq!(m["tier"], "front");
    }

    #[test]
    fn rollout_messages() {
        let mut d = Deployment {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                generation: 2,
                ..Default::default()
            }),
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        assert!(!rollout_message(&d).0);
        let st = d.status.as_mut().unwrap();
        st.observed_generation = 2;
        st.updated_replicas = 1;
        st.replicas = 3;
        assert_eq!(
            rollout_message(&d).1,
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        let st = d.status.as_mut().unwrap();
        st.updated_replicas = 3;
        st.available_replicas = 3;
        assert_eq!(
            rollout_message(&d),
            (true, "deployment \"web\" successfully rolled out".into())
        );
    }
}
