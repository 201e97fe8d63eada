//! The commands, one module each (parse → call → print), written once over
//! [`Api`](crate::api::Api)/[`Show`](crate::output::Show) for the four kinds.
//!
//! Layering (each module imports only from those below it): this dispatcher →
//! `create`, `apply`, `get` (→ `watch`), `describe`, `delete`, `logs`, `exec` → `ctx` (connection,
//! namespace rule, stdout) and `args` → `errors` (status → one line).

mod apply;
mod args;
mod config;
mod create;
mod ctx;
mod delete;
mod describe;
mod errors;
pub mod exec;
mod expose;
mod get;
mod image;
mod logs;
mod watch;
pub mod workloads;

pub use apply::load_manifests;
pub use create::{pod_from_args, service_from_args, service_from_command};
pub use ctx::{connect, Ctx};
pub use errors::unreachable;

use crate::api::Kind;
use crate::cli::*;
use crate::manifest::Converted;
use anyhow::Result;
use args::{kind_and_names, kind_and_required_names};
use kube_lite_core::DEFAULT_NAMESPACE;

/// A command with its arguments checked, ready to run.
enum Plan {
    Create(Box<create::New>),
    Apply(Vec<(String, Converted)>),
    Get(Kind, GetArgs),
    GetMany(Vec<Kind>, GetArgs),
    Describe(Kind, DescribeArgs),
    Delete(Kind, DeleteArgs),
    DeleteFiles(Vec<(String, Converted)>, DeleteArgs),
    Logs(LogsArgs),
    Exec(ExecArgs),
    Scale(ScaleArgs),
    Expose(Kind, String, ExposeArgs),
    Rollout(RolloutCommand),
    Label(MetaArgs, bool),
    ImageLoad(ImageLoadArgs),
    SetImage(SetImageArgs),
}

/// The binary's body: [`run`] on a current-thread runtime. Not async and not generic,
/// so the commands' async code is compiled once, in this crate, not again in the binary.
pub fn run_blocking(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    rt.block_on(run(cli))
}

pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Config(c) = &cli.command {
        return config::run(&cli, c);
    }
    let resolved = config::resolved(&cli)?;
    let explicit_namespace = cli.namespace.is_some() || resolved.namespace.is_some();
    let namespace = cli
        .namespace
        .clone()
        .or(resolved.namespace.clone())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    // Everything that can be checked without the server is checked before connecting.
    let plan = match cli.command {
        Command::Create(c) => Plan::Create(Box::new(create::parse(&c, &namespace)?)),
        Command::Apply(a) => Plan::Apply(apply::parse(&a, &namespace, explicit_namespace)?),
        Command::Get(mut a) => match args::kinds(&a.resource)? {
            Some(kinds) => Plan::GetMany(kinds, a),
            None => Plan::Get(kind_and_names(&mut a.resource, &mut a.names)?, a),
        },
        Command::Describe(mut a) => {
            let k = kind_and_required_names("describe", &mut a.resource, &mut a.names)?;
            Plan::Describe(k, a)
        }
        Command::Delete(a) if !a.files.is_empty() => {
            if !a.resource.is_empty() {
                anyhow::bail!("delete: give either -f or KIND NAME, not both");
            }
            let apply = ApplyArgs {
                files: a.files.clone(),
                recursive: a.recursive,
            };
            Plan::DeleteFiles(apply::parse(&apply, &namespace, explicit_namespace)?, a)
        }
        Command::Delete(mut a) => {
            if a.resource.is_empty() {
                anyhow::bail!("delete: a KIND and NAME (or -f FILE) are required");
            }
            let k = kind_and_required_names("delete", &mut a.resource, &mut a.names)?;
            Plan::Delete(k, a)
        }
        Command::Logs(a) => Plan::Logs(a),
        Command::Exec(a) => Plan::Exec(a),
        Command::Scale(a) => Plan::Scale(a),
        Command::Expose(a) => {
            let (k, name) = expose::target(&a)?;
            Plan::Expose(k, name, a)
        }
        Command::Rollout(r) => Plan::Rollout(r),
        Command::Set(SetCommand::Image(a)) => Plan::SetImage(a),
        Command::Label(a) => Plan::Label(a, true),
        Command::Annotate(a) => Plan::Label(a, false),
        Command::Config(_) => unreachable!("handled above"),
        Command::Image(ImageCommand::Load(a)) => Plan::ImageLoad(image::parse(a)?),
    };
    let ch = connect(&resolved).await?;
    let ctx = Ctx {
        ch,
        server: resolved.server,
        explicit_namespace,
        namespace,
    };
    match plan {
        Plan::Create(new) => create::run(&ctx, *new).await,
        Plan::Apply(docs) => apply::run(&ctx, docs).await,
        Plan::Get(k, a) => get::run(&ctx, k, &a).await,
        Plan::GetMany(k, a) => get::run_many(&ctx, &k, &a).await,
        Plan::Describe(k, a) => describe::run(&ctx, k, a).await,
        Plan::Delete(k, a) => delete::run(&ctx, k, &a).await,
        Plan::DeleteFiles(docs, a) => apply::delete_all(&ctx, docs, &a).await,
        Plan::Logs(a) => logs::run(&ctx, a).await,
        Plan::Exec(a) => exec::run(&ctx, a).await,
        Plan::Scale(a) => workloads::scale(&ctx, &a).await,
        Plan::Expose(k, name, a) => expose::run(&ctx, k, &name, &a).await,
        Plan::Rollout(r) => workloads::rollout(&ctx, &r).await,
        Plan::Label(a, labels) => workloads::label_or_annotate(&ctx, &a, labels).await,
        Plan::ImageLoad(a) => image::run(&ctx, a).await,
        Plan::SetImage(a) => workloads::set_image(&ctx, &a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;
    use clap::Parser;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kubectl-lite").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn delete_and_get_flags() {
        let Command::Delete(d) = parse(&["delete", "pod", "a", "b"]).command else {
            panic!()
        };
        assert!(d.wait && !d.force && d.grace_period.is_none());
        assert_eq!(d.names, vec!["a", "b"]);
        let Command::Delete(d) =
            parse(&["delete", "po", "a", "--wait=false", "--grace-period", "5"]).command
        else {
            panic!()
        };
        assert!(!d.wait);
        assert_eq!(d.grace_period, Some(5));
        let Command::Get(g) =
            parse(&["get", "po", "-A", "-o", "wide", "-w", "-l", "app in (a,b)"]).command
        else {
            panic!()
        };
        assert!(g.all_namespaces && g.watch);
        assert_eq!(g.output, Some(Format::Wide));
        assert_eq!(g.selector.as_deref(), Some("app in (a,b)"));
        assert!(Cli::try_parse_from(["kubectl-lite", "get", "po", "-o", "xml"]).is_err());
    }
}
