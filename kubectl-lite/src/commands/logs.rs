//! `logs POD`: the apiserver streams the container's log from the pod's node.

use super::ctx::Ctx;
use crate::cli::LogsArgs;
use anyhow::{bail, Result};
use futures::StreamExt;
use kube_lite_proto::v1::{pod_api_client::PodApiClient, LogsRequest, Pod};
use std::io::Write;

/// The request `logs` sends (pure; checked after connecting, as always). The API has no "no
/// lines" (tail_lines <= 0 means all): `--tail 0` asks for one line (so a missing pod or
/// container is still an error) and prints nothing (`None` in the second field).
pub fn parse(a: &LogsArgs, namespace: &str) -> Result<(LogsRequest, bool)> {
    let none = a.tail == Some(0);
    if none && a.follow {
        bail!(
            "--tail 0 with -f is not supported (the API cannot skip the old lines); use --tail 1"
        );
    }
    let req = LogsRequest {
        name: a.pod.clone(),
        namespace: namespace.to_string(),
        container: a.container.clone(),
        follow: a.follow,
        tail_lines: if none { 1 } else { a.tail.unwrap_or(-1) },
        previous: a.previous,
    };
    Ok((req, !none))
}

pub async fn run(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let (req, print) = parse(&a, &ctx.namespace)?;
    let what = format!("logs pod/{}", a.pod);
    let mut stream = PodApiClient::new(ctx.ch.clone())
        .logs(req)
        .await
        .map_err(|s| ctx.error::<Pod>(&what, &a.pod, s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| ctx.error::<Pod>(&what, "", s))?;
        if !print {
            continue;
        }
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse_cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kubectl-lite").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn logs_tail_accepts_minus_one() {
        for (arg, want) in [("-1", -1), ("0", 0), ("5", 5)] {
            match parse_cli(&["logs", "web", "--tail", arg]).command {
                Command::Logs(l) => assert_eq!(l.tail, Some(want)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn tail_zero_asks_for_one_line_and_prints_none() {
        let logs = |args: &[&str]| match parse_cli(args).command {
            Command::Logs(l) => parse(&l, "dev"),
            other => panic!("{other:?}"),
        };
        let (req, print) = logs(&["logs", "web", "--tail", "0"]).unwrap();
        assert_eq!((req.tail_lines, print), (1, false));
        let (req, print) = logs(&["logs", "web", "-c", "c", "-p"]).unwrap();
        assert_eq!(
            (
                req.namespace.as_str(),
                req.container.as_str(),
                req.tail_lines,
                req.previous,
                print
            ),
            ("dev", "c", -1, true, true)
        );
        assert!(logs(&["logs", "web", "--tail", "0", "-f"])
            .unwrap_err()
            .to_string()
            .starts_with("--tail 0 with -f is not supported"));
    }
}
