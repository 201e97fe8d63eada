//! `get`: one object, several, or a list, as a table, JSON, YAML or names; with `-w`,
//! then every change ([`super::watch`]).

use super::ctx::{out, Ctx};
use super::watch;
use crate::api::Kind;
use crate::cli::GetArgs;
use crate::field_selector;
use crate::output::{self, Format, Show, Table};
use anyhow::{anyhow, Result};
use kube_lite_client::WatchParams;
use kube_lite_core::time::now_ms;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{
    ConfigMap, Deployment, Endpoints, Event, ListRequest, Namespace, Node, Pod, ReplicaSet, Secret,
    Service,
};
use std::io::Write;

pub async fn run(ctx: &Ctx, kind: Kind, a: &GetArgs) -> Result<()> {
    run_one(ctx, kind, a, None).await.map(|_| ())
}

/// `get pods,svc` and `get all`: one table per kind, names as `kind/name`, a blank line
/// between tables (kubectl's layout); kinds with nothing are left out.
pub async fn run_many(ctx: &Ctx, kinds: &[Kind], a: &GetArgs) -> Result<()> {
    if a.watch {
        anyhow::bail!("watch is only supported on individual resources and resource object names");
    }
    let mut first = true;
    let mut any = false;
    for &k in kinds {
        let printed = run_one(ctx, k, a, Some(&mut first)).await?;
        any |= printed;
    }
    if !any && (a.output.is_none() || a.output == Some(Format::Wide)) {
        if a.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        }
    }
    Ok(())
}

async fn run_one(ctx: &Ctx, kind: Kind, a: &GetArgs, many: Option<&mut bool>) -> Result<bool> {
    macro_rules! go {
        ($t:ty) => {
            get::<$t>(ctx, a, kind, many).await
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

/// JSON/YAML (one object or a `List`) or `kind/name` lines.
fn print_objects<T: Show>(items: &[T], single: bool, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json | Format::Yaml => {
            let v = if single {
                output::object_json(&items[0])
            } else {
                output::list_json(items.iter().map(output::object_json).collect())
            };
            let text = if format == Format::Json {
                output::to_json_text(&v)
            } else {
                output::to_yaml_text(&v).map_err(|e| anyhow!(e))?
            };
            out.write_all(text.as_bytes())?;
        }
        Format::Name => {
            for i in items {
                writeln!(out, "{}/{}", T::SINGULAR, i.name())?;
            }
        }
        Format::Wide => unreachable!("tables are printed by the caller"),
    }
    Ok(())
}

async fn get<T: Show>(ctx: &Ctx, a: &GetArgs, kind: Kind, many: Option<&mut bool>) -> Result<bool> {
    let namespace = if a.all_namespaces {
        String::new()
    } else {
        ctx.ns_for::<T>()
    };
    let selector = a.selector.clone().unwrap_or_default();
    let with_ns = a.all_namespaces && T::NAMESPACED && a.names.is_empty();
    let wide = a.output == Some(Format::Wide);
    let table_mode = a.output.is_none() || wide;
    let (items, revision) = match a.names.as_slice() {
        [_, ..] => {
            let mut items = Vec::new();
            for name in &a.names {
                items.push(ctx.fetch::<T>(name).await?);
            }
            let rv = items
                .iter()
                .map(|o| o.resource_version())
                .max()
                .unwrap_or(0);
            (items, rv)
        }
        [] => {
            let req = ListRequest {
                namespace: namespace.clone(),
                label_selector: selector.clone(),
                node_name: String::new(),
                ..Default::default()
            };
            T::list(&ctx.ch, req)
                .await
                .map_err(|s| ctx.error::<T>(&format!("list {}", T::PLURAL), "", s))?
        }
    };
    let mut items = items;
    let fields = match a.field_selector.as_deref() {
        Some(fs) => field_selector::parse(T::KIND, fs).map_err(|e| anyhow!(e))?,
        None => Vec::new(),
    };
    if !fields.is_empty() {
        items.retain(|o| field_selector::matches(&fields, &o.to_json()));
    }
    if T::KIND == Event::KIND {
        // kubectl sorts events by time (oldest first).
        items.sort_by_key(|e| e.meta().creation_timestamp);
    }
    let mut table = Table::default();
    if let Some(first) = many {
        // One of several kinds: `kind/name` rows, a blank line between tables.
        if items.is_empty() {
            return Ok(false);
        }
        if table_mode {
            let (header, mut rows) = output::table_rows(&items, now_ms(), wide, with_ns);
            let name_col = usize::from(with_ns);
            for r in &mut rows {
                r[name_col] = format!("{}/{}", kind.display(), r[name_col]);
            }
            if !*first {
                out(format_args!("\n"))?;
            }
            out(format_args!("{}", table.render(&header, &rows)))?;
        } else {
            print_objects(&items, false, a.output.unwrap_or(Format::Json))?;
        }
        *first = false;
        return Ok(true);
    }
    if table_mode {
        if items.is_empty() {
            if T::NAMESPACED && !a.all_namespaces {
                eprintln!("No resources found in {} namespace.", ctx.namespace);
            } else {
                eprintln!("No resources found");
            }
        } else {
            let (header, rows) = output::table_rows(&items, now_ms(), wide, with_ns);
            out(format_args!("{}", table.render(&header, &rows)))?;
        }
    } else if a.watch {
        // A stream of single objects, as kubectl prints with -w.
        for item in &items {
            if a.output == Some(Format::Yaml) {
                out(format_args!("---\n"))?;
            }
            print_objects(
                std::slice::from_ref(item),
                true,
                a.output.unwrap_or(Format::Json),
            )?;
        }
    } else {
        print_objects(&items, a.names.len() == 1, a.output.unwrap_or(Format::Json))?;
    }
    if !a.watch {
        return Ok(!items.is_empty());
    }
    let _ = std::io::stdout().flush();
    let params = WatchParams {
        namespace,
        label_selector: selector,
        ..Default::default()
    };
    let mut changes = watch::Changes::new(items, a.names.clone());
    if !fields.is_empty() {
        changes = changes.with_filter(move |o: &T| field_selector::matches(&fields, &o.to_json()));
    }
    let printer = watch::Printer::new(a.output, table, with_ns);
    watch::follow(ctx, params, revision, changes, printer).await?;
    Ok(true)
}
