//! `describe KIND NAME…`: fetch each object (and what its text also shows: a Service's
//! Endpoints, a Node's pods) and print the texts of [`crate::describe`].

use super::ctx::{out, Ctx};
use crate::api::{Api, Kind};
use crate::cli::DescribeArgs;
use crate::describe;
use anyhow::Result;
use kube_lite_core::consts::phase;
use kube_lite_core::time::now_ms;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Endpoints, Event, ListRequest, Namespace, Node, Pod, ReplicaSet, Secret,
    Service,
};

pub async fn run(ctx: &Ctx, kind: Kind, a: DescribeArgs) -> Result<()> {
    let now = now_ms();
    let mut texts = Vec::new();
    for name in &a.names {
        // (namespace, uid) of the object, for its Events.
        let mut about: Option<(String, String)> = None;
        macro_rules! fetch {
            ($t:ty) => {{
                let o = ctx.fetch::<$t>(name).await?;
                about = Some((o.namespace().to_string(), o.uid().to_string()));
                o
            }};
        }
        let text = match kind {
            Kind::Pod => describe::describe_pod(&fetch!(Pod), now),
            Kind::Namespace => describe::describe_namespace(&fetch!(Namespace)),
            Kind::ConfigMap => describe::describe_config_map(&fetch!(ConfigMap)),
            Kind::Secret => describe::describe_secret(&fetch!(Secret)),
            Kind::Event => describe::describe_event(&ctx.fetch::<Event>(name).await?),
            Kind::ReplicaSet => {
                let rs = fetch!(ReplicaSet);
                let by = rs
                    .meta()
                    .owner_references
                    .iter()
                    .find(|r| r.controller)
                    .map(|r| format!("{}/{}", r.kind, r.name))
                    .unwrap_or_default();
                describe::describe_replica_set(&rs, &by)
            }
            Kind::Deployment => {
                let d = fetch!(Deployment);
                let (rss, _) = ReplicaSet::list(
                    &ctx.ch,
                    ListRequest {
                        namespace: d.namespace().to_string(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_default();
                let template = d.spec.clone().unwrap_or_default().template;
                let mut new_rs = String::new();
                let mut old = Vec::new();
                for r in rss.iter().filter(|r| {
                    r.meta()
                        .owner_references
                        .iter()
                        .any(|o| o.controller && o.uid == d.uid())
                }) {
                    let mut t = r.spec.clone().unwrap_or_default().template;
                    if let Some(m) = t.as_mut().and_then(|t| t.metadata.as_mut()) {
                        m.labels
                            .remove(kube_lite_core::workloads::POD_TEMPLATE_HASH);
                    }
                    let st = r.status.clone().unwrap_or_default();
                    let line = format!(
                        "{} ({}/{} replicas created)",
                        r.name(),
                        st.replicas,
                        kube_lite_core::workloads::replicas(
                            r.spec.as_ref().and_then(|s| s.replicas)
                        )
                    );
                    if t == template {
                        new_rs = line;
                    } else if st.replicas > 0 {
                        old.push(line);
                    }
                }
                describe::describe_deployment(&d, &new_rs, &old.join(", "))
            }
            Kind::Service => {
                let svc = fetch!(Service);
                let ep = Endpoints::get(&ctx.ch, &ctx.namespace, name).await.ok();
                describe::describe_service(&svc, ep.as_ref())
            }
            Kind::Node => {
                let node = fetch!(Node);
                let req = ListRequest {
                    namespace: String::new(),
                    label_selector: String::new(),
                    node_name: name.clone(),
                    ..Default::default()
                };
                let (pods, _) = Pod::list(&ctx.ch, req).await.unwrap_or_default();
                describe::describe_node(&node, &running_on_node(pods), now)
            }
            Kind::Endpoints => describe::describe_endpoints(&fetch!(Endpoints)),
        };
        let mut text = text;
        if let Some((ns, uid)) = about {
            let events = super::workloads::events_for(ctx, &ns, &uid).await;
            text.push_str(&describe::events_section(&events, now));
        }
        texts.push(text);
    }
    out(format_args!("{}", texts.join("\n\n")))?;
    Ok(())
}

/// The pods a node's text lists: those not finished (Succeeded or Failed).
fn running_on_node(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().map(|s| s.phase.as_str()),
                Some(phase::SUCCEEDED | phase::FAILED)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{ObjectMeta, PodStatus};

    #[test]
    fn a_node_lists_its_unfinished_pods() {
        let pod = |name: &str, phase: Option<&str>| Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            status: phase.map(|p| PodStatus {
                phase: p.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![
            pod("a", Some("Running")),
            pod("b", Some("Succeeded")),
            pod("c", Some("Failed")),
            pod("d", None),
            pod("e", Some("Pending")),
        ];
        let names: Vec<String> = running_on_node(pods)
            .iter()
            .map(|p| p.metadata.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names, ["a", "d", "e"]);
    }
}
