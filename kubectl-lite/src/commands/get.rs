//! `get`: one object, several, or a list, as a table, JSON, YAML or names; with `-w`,
//! then every change ([`super::watch`]).

use super::ctx::{out, Ctx};
use super::watch;
use crate::api::Kind;
use crate::cli::GetArgs;
use crate::output::{self, Format, Show, Table};
use anyhow::{anyhow, Result};
use kube_lite_client::WatchParams;
use kube_lite_core::time::now_ms;
use kube_lite_proto::v1::{Endpoints, ListRequest, Node, Pod, Service};
use std::io::Write;

pub async fn run(ctx: &Ctx, kind: Kind, a: &GetArgs) -> Result<()> {
    match kind {
        Kind::Pod => get::<Pod>(ctx, a).await,
        Kind::Service => get::<Service>(ctx, a).await,
        Kind::Node => get::<Node>(ctx, a).await,
        Kind::Endpoints => get::<Endpoints>(ctx, a).await,
    }
}

/// JSON/YAML (one object or a `List`) or `kind/name` lines.
fn print_objects<T: Show>(items: &[T], single: bool, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json | Format::Yaml => {
            let v = if single {
                items[0].to_json()
            } else {
                output::list_json(items.iter().map(Show::to_json).collect())
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

async fn get<T: Show>(ctx: &Ctx, a: &GetArgs) -> Result<()> {
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
    let mut table = Table::default();
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
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    let params = WatchParams {
        namespace,
        label_selector: selector,
        ..Default::default()
    };
    let changes = watch::Changes::new(items, a.names.clone());
    let printer = watch::Printer::new(a.output, table, with_ns);
    watch::follow(ctx, params, revision, changes, printer).await
}
