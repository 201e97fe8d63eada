//! `image load FILE.tar…`: loads each archive onto every node (or the `--node`s named),
//! as `kind load image-archive` does. One stream per node and archive to the
//! apiserver's `NodeApi.LoadImage` (admins only), which passes it on to that node's
//! agent (`NodeAgent.LoadImage`, the agent's mTLS port admits the apiserver alone, as
//! for logs); the agent imports it into its containerd. Prints one line per node and
//! archive: `node0: loaded docker.io/library/busybox:latest`.

use super::ctx::{out, Ctx};
use crate::cli::ImageLoadArgs;
use anyhow::{anyhow, bail, Context, Result};
use kube_lite_proto::v1::node_api_client::NodeApiClient;
use kube_lite_proto::v1::{ImageChunk, ListRequest, Node};
use std::io::Read;

/// Bytes per message (the apiserver takes at most 2 MiB per chunk).
const CHUNK: usize = 1 << 20;

/// Checks the files before connecting.
pub fn parse(a: ImageLoadArgs) -> Result<ImageLoadArgs> {
    for f in &a.files {
        let m = std::fs::metadata(f).with_context(|| format!("image load: {f}"))?;
        if !m.is_file() {
            bail!("image load: {f}: not a file");
        }
    }
    Ok(a)
}

/// The nodes to load onto: every node, or those named (each must exist).
pub fn targets(nodes: &[Node], wanted: &[String]) -> Result<Vec<String>> {
    let all: Vec<String> = nodes
        .iter()
        .map(|n| {
            n.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        })
        .collect();
    for w in wanted {
        if !all.contains(w) {
            bail!("image load: node {w:?} not found");
        }
    }
    let picked: Vec<String> = all
        .into_iter()
        .filter(|n| wanted.is_empty() || wanted.contains(n))
        .collect();
    if picked.is_empty() {
        bail!("image load: the cluster has no nodes");
    }
    Ok(picked)
}

async fn send(ctx: &Ctx, node: &str, file: &str) -> Result<Vec<String>> {
    let mut c = NodeApiClient::new(ctx.ch.clone());
    let node = node.to_string();
    let mut f = std::fs::File::open(file).with_context(|| file.to_string())?;
    let name = std::path::Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<ImageChunk>(4);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = ImageChunk {
                data: buf,
                file_name: if first { name.clone() } else { String::new() },
                node: if first { node.clone() } else { String::new() },
            };
            first = false;
            if tx.blocking_send(chunk).is_err() {
                return Ok(());
            }
        }
    });
    let r = c
        .load_image(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await??;
    Ok(r.map_err(|s| anyhow!("{}", s.message()))?
        .into_inner()
        .names)
}

pub async fn run(ctx: &Ctx, a: ImageLoadArgs) -> Result<()> {
    let nodes = kube_lite_proto::v1::node_api_client::NodeApiClient::new(ctx.ch.clone())
        .list(ListRequest::default())
        .await
        .map_err(|s| ctx.error::<Node>("list nodes", "", s))?
        .into_inner()
        .items;
    let targets = targets(&nodes, &a.nodes)?;
    let mut failed = 0;
    for file in &a.files {
        for node in &targets {
            match send(ctx, node, file).await {
                Ok(names) => out(format_args!("{node}: loaded {}\n", names.join(", ")))?,
                Err(e) => {
                    eprintln!("{node}: {file}: {e:#}");
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        bail!(
            "image load: {failed} of {} loads failed",
            a.files.len() * targets.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::ObjectMeta;

    fn node(name: &str) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: None,
            status: None,
        }
    }

    #[test]
    fn every_node_or_the_named_ones() {
        let ns = [node("a"), node("b")];
        assert_eq!(targets(&ns, &[]).unwrap(), vec!["a", "b"]);
        let t = targets(&ns, &["b".to_string()]).unwrap();
        assert_eq!(t, vec!["b".to_string()]);
        let e = targets(&ns, &["c".to_string()]).unwrap_err().to_string();
        assert!(e.contains("node \"c\" not found"), "{e}");
        assert!(targets(&[], &[]).is_err());
    }
}
