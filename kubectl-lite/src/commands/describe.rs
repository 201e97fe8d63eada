//! `describe KIND NAME…`: fetch each object (and what its text also shows: a Service's
//! Endpoints, a Node's pods) and print the texts of [`crate::describe`].

use super::ctx::{out, Ctx};
use crate::api::{Api, Kind};
use crate::cli::DescribeArgs;
use crate::describe;
use anyhow::Result;
use kube_lite_core::consts::phase;
use kube_lite_core::time::now_ms;
use kube_lite_proto::v1::{Endpoints, ListRequest, Node, Pod, Service};

pub async fn run(ctx: &Ctx, kind: Kind, a: DescribeArgs) -> Result<()> {
    let now = now_ms();
    let mut texts = Vec::new();
    for name in &a.names {
        let text = match kind {
            Kind::Pod => describe::describe_pod(&ctx.fetch::<Pod>(name).await?, now),
            Kind::Service => {
                let svc = ctx.fetch::<Service>(name).await?;
                let ep = Endpoints::get(&ctx.ch, &ctx.namespace, name).await.ok();
                describe::describe_service(&svc, ep.as_ref())
            }
            Kind::Node => {
                let node = ctx.fetch::<Node>(name).await?;
                let req = ListRequest {
                    namespace: String::new(),
                    label_selector: String::new(),
                    node_name: name.clone(),
                    ..Default::default()
                };
                let (pods, _) = Pod::list(&ctx.ch, req).await.unwrap_or_default();
                describe::describe_node(&node, &running_on_node(pods), now)
            }
            Kind::Endpoints => describe::describe_endpoints(&ctx.fetch::<Endpoints>(name).await?),
        };
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
