//! `delete KIND NAME…`: Delete each object (`pod "web" deleted`), then (unless
//! `--wait=false`) wait, by watching, until those that were only marked are gone.

use super::ctx::{out, Ctx};
use crate::api::{Api, Kind};
use crate::cli::DeleteArgs;
use anyhow::{anyhow, Result};
use futures::StreamExt;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    ConfigMap, DeleteRequest, Deployment, Endpoints, Event, EventType, Namespace, Node, Pod,
    ReplicaSet, Secret, Service, WatchRequest,
};
use std::time::Duration;
use tonic::Code;

pub async fn run(ctx: &Ctx, kind: Kind, a: &DeleteArgs) -> Result<()> {
    run_names(ctx, kind, a, &ctx.namespace.clone(), &a.names).await
}

/// Deletes `names` of `kind` in `namespace` (the names of `a` are ignored).
pub async fn run_names(
    ctx: &Ctx,
    kind: Kind,
    a: &DeleteArgs,
    namespace: &str,
    names: &[String],
) -> Result<()> {
    macro_rules! go {
        ($t:ty) => {
            delete::<$t>(ctx, a, namespace, names).await
        };
    }
    match kind {
        Kind::Pod => go!(Pod),
        Kind::Service => go!(Service),
        Kind::Node => go!(Node),
        Kind::Endpoints => go!(Endpoints),
        Kind::Namespace => go!(Namespace),
        Kind::ConfigMap => go!(ConfigMap),
        Kind::Secret => go!(Secret),
        Kind::Event => go!(Event),
        Kind::ReplicaSet => go!(ReplicaSet),
        Kind::Deployment => go!(Deployment),
    }
}

/// `--cascade`: background|true (default), foreground, orphan|false.
pub fn propagation(cascade: &str) -> Result<&'static str> {
    match cascade {
        "background" | "true" | "" => Ok("Background"),
        "foreground" => Ok("Foreground"),
        "orphan" | "false" => Ok("Orphan"),
        other => Err(anyhow!(
            "--cascade {other:?}: must be background, foreground or orphan"
        )),
    }
}

/// The grace period sent: 0 with `--force`, else `--grace-period` or -1 (the pod's own).
pub fn grace_period(a: &DeleteArgs) -> i64 {
    if a.force {
        0
    } else {
        a.grace_period.unwrap_or(-1)
    }
}

async fn delete<T: Api>(
    ctx: &Ctx,
    a: &DeleteArgs,
    namespace: &str,
    names: &[String],
) -> Result<()> {
    let grace = grace_period(a);
    let policy = propagation(&a.cascade)?;
    if a.force && T::KIND == Pod::KIND {
        eprintln!(
            "warning: immediate deletion does not wait for the node to stop the pod's containers"
        );
    }
    let namespace = if T::NAMESPACED {
        namespace.to_string()
    } else {
        String::new()
    };
    let mut pending = Vec::new();
    for name in names {
        let req = DeleteRequest {
            name: name.clone(),
            namespace: namespace.clone(),
            resource_version: 0,
            grace_period_seconds: grace,
            propagation_policy: policy.into(),
        };
        let obj = T::delete(&ctx.ch, req)
            .await
            .map_err(|s| ctx.error::<T>(&format!("delete {}/{name}", T::SINGULAR), name, s))?;
        out(format_args!(
            "{} {name:?} deleted\n",
            crate::api::display::<T>()
        ))?;
        if obj.meta().deletion_timestamp != 0 {
            pending.push(name.clone());
        }
    }
    if a.wait {
        for name in pending {
            let wait = wait_gone::<T>(ctx, &namespace, &name);
            match a.timeout {
                None => wait.await?,
                Some(secs) => tokio::time::timeout(Duration::from_secs(secs), wait).await.map_err(|_| {
                    anyhow!(
                        "timed out after {secs}s waiting for {} {name:?} to be deleted (its node has not confirmed yet; --force deletes at once)",
                        T::SINGULAR
                    )
                })??,
            }
        }
    }
    Ok(())
}

/// Waits (with Watch) until the object is gone.
async fn wait_gone<T: Api>(ctx: &Ctx, namespace: &str, name: &str) -> Result<()> {
    let what = format!("wait for {}/{name}", T::SINGULAR);
    loop {
        let obj = match T::get(&ctx.ch, namespace, name).await {
            Err(s) if s.code() == Code::NotFound => return Ok(()),
            Err(s) => return Err(ctx.error::<T>(&what, "", s)),
            Ok(o) => o,
        };
        let req = WatchRequest {
            namespace: namespace.to_string(),
            label_selector: String::new(),
            node_name: String::new(),
            resource_version: obj.resource_version(),
            bookmark_interval_ms: 0,
        };
        let mut stream = match T::watch(&ctx.ch, req).await {
            Ok(s) => s,
            Err(s) if s.code() == Code::OutOfRange => continue,
            Err(s) => return Err(ctx.error::<T>(&what, "", s)),
        };
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev)
                    if ev.kind == EventType::Deleted
                        && ev.object.as_ref().map_or("", |o| o.name()) == name =>
                {
                    return Ok(())
                }
                Ok(_) => {}
                Err(s) if s.code() == Code::OutOfRange => break,
                Err(s) => return Err(ctx.error::<T>(&what, "", s)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn delete_args(args: &[&str]) -> DeleteArgs {
        let args = std::iter::once("kubectl-lite").chain(args.iter().copied());
        match Cli::try_parse_from(args).unwrap().command {
            Command::Delete(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn force_means_grace_zero_and_none_means_the_pods_own() {
        assert_eq!(grace_period(&delete_args(&["delete", "po", "a"])), -1);
        assert_eq!(
            grace_period(&delete_args(&["delete", "po", "a", "--grace-period", "5"])),
            5
        );
        assert_eq!(
            grace_period(&delete_args(&[
                "delete",
                "po",
                "a",
                "--grace-period",
                "5",
                "--force"
            ])),
            0
        );
    }
}
