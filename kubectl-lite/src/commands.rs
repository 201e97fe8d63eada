//! The commands, each written once over [`Resource`]/[`Show`] for the four kinds.

use crate::api::{Kind, Resource, WatchEvent};
use crate::cli::*;
use crate::describe;
use crate::manifest::{self, Converted, Manifest};
use crate::output::{self, Format, Show, Table};
use crate::util::{now_millis, parse_env, parse_map, parse_port_spec};
use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use kube_lite_proto::v1::{
    pod_api_client::PodApiClient, Container, ContainerPort, DeleteRequest, Endpoints, EnvVar,
    EventType, ListRequest, LogsRequest, Node, ObjectMeta, Pod, PodSpec, Service, ServicePort,
    ServiceSpec, WatchRequest,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Connection and defaults shared by every command.
pub struct Ctx {
    pub ch: Channel,
    pub server: String,
    pub namespace: String,
    pub explicit_namespace: bool,
}

/// The one-line message for an unreachable apiserver.
pub fn unreachable(server: &str, cause: &str) -> anyhow::Error {
    anyhow!("cannot reach the apiserver at {server}: {cause} (set --server or KUBE_LITE_SERVER)")
}

/// Every cause of an error on one line, without repeating itself.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

pub async fn connect(server: &str) -> Result<Channel> {
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let ep = Endpoint::from_shared(url)
        .map_err(|e| anyhow!("invalid --server {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    ep.connect()
        .await
        .map_err(|e| unreachable(server, &error_chain(&e)))
}

/// gRPC status → one line. `what` names the operation and object (`create pod/web`).
/// NotFound and AlreadyExists read like kubectl (`pods "web" not found`).
fn status_error<T: Resource>(ctx: &Ctx, what: &str, name: &str, s: Status) -> anyhow::Error {
    match s.code() {
        // (a missing container of an existing pod keeps the server's words)
        Code::NotFound if !name.is_empty() && !s.message().contains("container") => {
            anyhow!("{} {name:?} not found", T::PLURAL)
        }
        Code::AlreadyExists if !name.is_empty() && s.message().is_empty() => {
            anyhow!("{} {name:?} already exists", T::PLURAL)
        }
        // The connection to the apiserver failed (not an Unavailable the server reports
        // about something else, such as a node agent for `logs`).
        Code::Unavailable
            if [
                "tcp connect",
                "transport",
                "connection",
                "connect error",
                "broken pipe",
            ]
            .iter()
            .any(|m| s.message().to_ascii_lowercase().contains(m))
                && !what.starts_with("logs") =>
        {
            unreachable(&ctx.server, &one_line(s.message()))
        }
        code => anyhow!("{what}: {} ({code:?})", one_line(s.message())),
    }
}

/// Writes to stdout; a closed pipe (`| head`) surfaces as an io error that `main` treats
/// as a quiet end instead of a panic.
fn out(args: std::fmt::Arguments) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)?;
    o.flush()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ns_for<T: Resource>(ctx: &Ctx) -> String {
    if T::NAMESPACED {
        ctx.namespace.clone()
    } else {
        String::new()
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let explicit_namespace = cli.namespace.is_some();
    let namespace = cli.namespace.unwrap_or_else(|| "default".into());
    // Everything that can be checked without the server is checked before connecting.
    let kind = |word: &str| Kind::parse(word).map_err(|e| anyhow!(e));
    // `get pod/web` = `get pod web`.
    let split = |resource: &mut String, names: &mut Vec<String>| -> Result<Kind> {
        if let Some((k, n)) = resource.clone().split_once('/') {
            names.insert(0, n.to_string());
            *resource = k.to_string();
        }
        kind(resource)
    };
    enum Plan {
        CreatePod(Pod),
        CreateService(Service),
        Apply(Vec<(String, Converted)>),
        Get(Kind, GetArgs),
        Describe(Kind, DescribeArgs),
        Delete(Kind, DeleteArgs),
        Logs(LogsArgs),
    }
    let plan = match cli.command {
        Command::Create(CreateCommand::Pod(a)) => Plan::CreatePod(pod_from_args(&a, &namespace)?),
        Command::Create(CreateCommand::Service(a)) => {
            Plan::CreateService(service_from_args(&a, &namespace)?)
        }
        Command::Apply(a) => {
            let mut sources = Vec::new();
            for f in &a.files {
                sources.push((
                    if f == "-" {
                        "<stdin>".to_string()
                    } else {
                        f.clone()
                    },
                    read_source(f)?,
                ));
            }
            Plan::Apply(load_manifests(&sources, &namespace, explicit_namespace)?)
        }
        Command::Get(mut a) => Plan::Get(split(&mut a.resource, &mut a.names)?, a),
        Command::Describe(mut a) => {
            let k = split(&mut a.resource, &mut a.names)?;
            if a.names.is_empty() {
                bail!("describe {}: a NAME is required", a.resource);
            }
            Plan::Describe(k, a)
        }
        Command::Delete(mut a) => {
            let k = split(&mut a.resource, &mut a.names)?;
            if a.names.is_empty() {
                bail!("delete {}: a NAME is required", a.resource);
            }
            Plan::Delete(k, a)
        }
        Command::Logs(a) => Plan::Logs(a),
    };
    let ch = connect(&cli.server).await?;
    let ctx = Ctx {
        ch,
        server: cli.server,
        explicit_namespace,
        namespace,
    };
    match plan {
        Plan::CreatePod(p) => create(&ctx, p).await,
        Plan::CreateService(s) => create(&ctx, s).await,
        Plan::Apply(docs) => apply(&ctx, docs).await,
        Plan::Get(k, a) => match k {
            Kind::Pod => get::<Pod>(&ctx, &a).await,
            Kind::Service => get::<Service>(&ctx, &a).await,
            Kind::Node => get::<Node>(&ctx, &a).await,
            Kind::Endpoints => get::<Endpoints>(&ctx, &a).await,
        },
        Plan::Describe(k, a) => describe_cmd(&ctx, k, a).await,
        Plan::Delete(k, a) => match k {
            Kind::Pod => delete::<Pod>(&ctx, &a).await,
            Kind::Service => delete::<Service>(&ctx, &a).await,
            Kind::Node => delete::<Node>(&ctx, &a).await,
            Kind::Endpoints => delete::<Endpoints>(&ctx, &a).await,
        },
        Plan::Logs(a) => logs(&ctx, a).await,
    }
}

// ---------- create ----------

/// The pod `create pod` sends (pure, unit-tested).
pub fn pod_from_args(a: &CreatePodArgs, namespace: &str) -> Result<Pod> {
    let labels = parse_map("--labels", &a.labels).map_err(|e| anyhow!(e))?;
    let env = a
        .env
        .iter()
        .map(|e| parse_env(e).map(|(name, value)| EnvVar { name, value }))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!(e))?;
    let ports = a
        .ports
        .iter()
        .map(|&p| {
            if (1..=65535).contains(&p) {
                Ok(ContainerPort {
                    name: String::new(),
                    container_port: p,
                    protocol: "TCP".into(),
                })
            } else {
                Err(anyhow!("--port {p}: must be between 1 and 65535"))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let (command, args) = if a.command {
        (a.args.clone(), vec![])
    } else {
        (vec![], a.args.clone())
    };
    Ok(Pod {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.to_string(),
            labels,
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: a.node.clone().unwrap_or_default(),
            containers: vec![Container {
                name: a.name.clone(),
                image: a.image.clone(),
                command,
                args,
                env,
                ports,
            }],
            restart_policy: a.restart.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

/// The service `create service` sends (pure, unit-tested).
pub fn service_from_args(a: &CreateServiceArgs, namespace: &str) -> Result<Service> {
    let selector = parse_map("--selector", &a.selector).map_err(|e| anyhow!(e))?;
    let mut ports = Vec::new();
    for p in &a.ports {
        let spec = parse_port_spec(p).map_err(|e| anyhow!(e))?;
        ports.push(ServicePort {
            name: spec.name(),
            protocol: spec.protocol.clone(),
            port: spec.port,
            target_port: spec.target_port,
        });
    }
    Ok(Service {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.to_string(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            selector,
            ports,
            cluster_ip: a.cluster_ip.clone().unwrap_or_default(),
            r#type: "ClusterIP".into(),
        }),
        status: None,
    })
}

async fn create<T: Resource>(ctx: &Ctx, obj: T) -> Result<()> {
    let name = obj.name().to_string();
    T::create(&ctx.ch, obj)
        .await
        .map_err(|s| status_error::<T>(ctx, &format!("create {}/{name}", T::SINGULAR), "", s))?;
    out(format_args!("{}/{name} created\n", T::SINGULAR))?;
    Ok(())
}

// ---------- apply ----------

fn read_source(src: &str) -> Result<String> {
    if src == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| anyhow!("cannot read stdin: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(src).map_err(|e| anyhow!("cannot read {src}: {e}"))
    }
}

/// Reads and converts every document of every file first; any problem refuses the whole
/// apply (nothing is written) with one line naming the file, document and field paths.
pub fn load_manifests(
    sources: &[(String, String)],
    namespace: &str,
    explicit_namespace: bool,
) -> Result<Vec<(String, Converted)>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (src, text) in sources {
        let docs = manifest::parse_documents(text).map_err(|e| anyhow!("{src}: {e}"))?;
        let many = docs.len() > 1;
        for (i, doc) in docs.iter().enumerate() {
            let label = if many {
                format!(
                    "{src}: document {} ({})",
                    i + 1,
                    manifest::describe_doc(doc)
                )
            } else {
                format!("{src}: {}", manifest::describe_doc(doc))
            };
            match manifest::convert(doc, namespace, explicit_namespace) {
                Ok(c) => out.push((src.clone(), c)),
                Err(errs) => problems.push(format!("{label}: {}", errs.join("; "))),
            }
        }
        if docs.is_empty() {
            problems.push(format!("{src}: no objects found"));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(out)
}

async fn apply(ctx: &Ctx, docs: Vec<(String, Converted)>) -> Result<()> {
    let mut failures = Vec::new();
    for (src, c) in docs {
        let who = c.manifest.display();
        for w in &c.warnings {
            eprintln!("warning: {src}: {who}: {w}");
        }
        let result = match c.manifest {
            Manifest::Pod(p) => apply_pod(ctx, p).await,
            Manifest::Service(s) => apply_service(ctx, s).await,
        };
        match result {
            Ok(verb) => out(format_args!("{who} {verb}\n"))?,
            Err(e) => failures.push(format!("{e}")),
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => {
            for f in &failures[..failures.len() - 1] {
                eprintln!("error: {f}");
            }
            Err(anyhow!("{}", failures[failures.len() - 1]))
        }
    }
}

async fn apply_pod(ctx: &Ctx, desired: Pod) -> Result<&'static str> {
    let meta = desired.meta().clone();
    let who = format!("pod/{}", meta.name);
    match Pod::get(&ctx.ch, &meta.namespace, &meta.name).await {
        Err(s) if s.code() == Code::NotFound => {
            Pod::create(&ctx.ch, desired)
                .await
                .map_err(|s| status_error::<Pod>(ctx, &format!("apply {who}"), "", s))?;
            Ok("created")
        }
        Err(s) => Err(status_error::<Pod>(ctx, &format!("apply {who}"), "", s)),
        Ok(stored) => {
            let stored_spec = stored.spec.clone().unwrap_or_default();
            let want = manifest::normalize_pod_spec(
                &desired.spec.clone().unwrap_or_default(),
                &stored_spec,
            );
            if want != stored_spec {
                bail!("{who}: spec is immutable: only metadata.labels and metadata.annotations of an existing pod can change (delete the pod and apply again)");
            }
            let sm = stored.meta();
            if sm.labels == meta.labels && sm.annotations == meta.annotations {
                return Ok("unchanged");
            }
            let mut updated = stored.clone();
            updated.meta_mut().labels = meta.labels;
            updated.meta_mut().annotations = meta.annotations;
            Pod::update(&ctx.ch, updated)
                .await
                .map_err(|s| status_error::<Pod>(ctx, &format!("apply {who}"), "", s))?;
            Ok("configured")
        }
    }
}

async fn apply_service(ctx: &Ctx, desired: Service) -> Result<&'static str> {
    let meta = desired.meta().clone();
    let who = format!("service/{}", meta.name);
    match Service::get(&ctx.ch, &meta.namespace, &meta.name).await {
        Err(s) if s.code() == Code::NotFound => {
            Service::create(&ctx.ch, desired)
                .await
                .map_err(|s| status_error::<Service>(ctx, &format!("apply {who}"), "", s))?;
            Ok("created")
        }
        Err(s) => Err(status_error::<Service>(ctx, &format!("apply {who}"), "", s)),
        Ok(stored) => {
            let stored_spec = stored.spec.clone().unwrap_or_default();
            let want = manifest::normalize_service_spec(
                &desired.spec.clone().unwrap_or_default(),
                &stored_spec,
            );
            let sm = stored.meta();
            if want == stored_spec && sm.labels == meta.labels && sm.annotations == meta.annotations
            {
                return Ok("unchanged");
            }
            let mut updated = stored.clone();
            updated.meta_mut().labels = meta.labels;
            updated.meta_mut().annotations = meta.annotations;
            updated.spec = Some(want);
            Service::update(&ctx.ch, updated)
                .await
                .map_err(|s| status_error::<Service>(ctx, &format!("apply {who}"), "", s))?;
            Ok("configured")
        }
    }
}

// ---------- get ----------

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
        ns_for::<T>(ctx)
    };
    let selector = a.selector.clone().unwrap_or_default();
    let with_ns = a.all_namespaces && T::NAMESPACED && a.names.is_empty();
    let wide = a.output == Some(Format::Wide);
    let table_mode = a.output.is_none() || wide;
    let (items, revision) = match a.names.as_slice() {
        [_, ..] => {
            let mut items = Vec::new();
            for name in &a.names {
                let obj = T::get(&ctx.ch, &ns_for::<T>(ctx), name)
                    .await
                    .map_err(|s| {
                        status_error::<T>(ctx, &format!("get {}/{name}", T::SINGULAR), name, s)
                    })?;
                items.push(obj);
            }
            let rv = items
                .iter()
                .map(|o| o.meta().resource_version)
                .max()
                .unwrap_or(0);
            (items, rv)
        }
        [] => {
            let req = ListRequest {
                namespace: namespace.clone(),
                label_selector: selector.clone(),
                node_name: String::new(),
            };
            T::list(&ctx.ch, req)
                .await
                .map_err(|s| status_error::<T>(ctx, &format!("list {}", T::PLURAL), "", s))?
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
            let (header, rows) = output::table_rows(&items, now_millis(), wide, with_ns);
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
    watch_loop::<T>(ctx, a, namespace, selector, items, revision, table, with_ns).await
}

fn key_of<T: Resource>(o: &T) -> (String, String) {
    (o.meta().namespace.clone(), o.name().to_string())
}

#[allow(clippy::too_many_arguments)]
async fn watch_loop<T: Show>(
    ctx: &Ctx,
    a: &GetArgs,
    namespace: String,
    selector: String,
    items: Vec<T>,
    mut from: u64,
    mut table: Table,
    with_ns: bool,
) -> Result<()> {
    let wide = a.output == Some(Format::Wide);
    let mut known: BTreeMap<(String, String), T> =
        items.into_iter().map(|o| (key_of(&o), o)).collect();
    let wanted = |o: &T| a.names.is_empty() || a.names.iter().any(|n| n == o.name());
    let print = |table: &mut Table, o: &T| -> Result<()> {
        let mut out = std::io::stdout().lock();
        match a.output {
            None | Some(Format::Wide) => {
                if table.is_empty() {
                    let (header, _) = output::table_rows::<T>(&[], 0, wide, with_ns);
                    out.write_all(table.render(&header, &[]).as_bytes())?;
                }
                let row = output::row_of(o, now_millis(), wide, with_ns);
                out.write_all(table.render_row(&row).as_bytes())?;
            }
            Some(Format::Json) => out.write_all(output::to_json_text(&o.to_json()).as_bytes())?,
            Some(Format::Yaml) => {
                out.write_all(b"---\n")?;
                out.write_all(
                    output::to_yaml_text(&o.to_json())
                        .map_err(|e| anyhow!(e))?
                        .as_bytes(),
                )?;
            }
            Some(Format::Name) => writeln!(out, "{}/{}", T::SINGULAR, o.name())?,
        }
        out.flush()?;
        Ok(())
    };
    loop {
        let req = WatchRequest {
            namespace: namespace.clone(),
            label_selector: selector.clone(),
            node_name: String::new(),
            resource_version: from,
            bookmark_interval_ms: 0,
        };
        let mut relist = false;
        match T::watch(&ctx.ch, req).await {
            Ok(mut stream) => {
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(WatchEvent {
                            kind,
                            object,
                            resource_version,
                        }) => {
                            from = from.max(resource_version);
                            match kind {
                                EventType::Added | EventType::Modified => {
                                    known.insert(key_of(&object), object.clone());
                                }
                                EventType::Deleted => {
                                    known.remove(&key_of(&object));
                                }
                                _ => continue,
                            }
                            if wanted(&object) {
                                print(&mut table, &object)?;
                            }
                        }
                        Err(s) if s.code() == Code::OutOfRange => {
                            relist = true;
                            break;
                        }
                        Err(s) => {
                            return Err(status_error::<T>(
                                ctx,
                                &format!("watch {}", T::PLURAL),
                                "",
                                s,
                            ))
                        }
                    }
                }
            }
            Err(s) if s.code() == Code::OutOfRange => relist = true,
            Err(s) => {
                return Err(status_error::<T>(
                    ctx,
                    &format!("watch {}", T::PLURAL),
                    "",
                    s,
                ))
            }
        }
        if relist {
            let req = ListRequest {
                namespace: namespace.clone(),
                label_selector: selector.clone(),
                node_name: String::new(),
            };
            let (items, rv) = T::list(&ctx.ch, req)
                .await
                .map_err(|s| status_error::<T>(ctx, &format!("list {}", T::PLURAL), "", s))?;
            let fresh: BTreeMap<_, _> = items.into_iter().map(|o| (key_of(&o), o)).collect();
            for (k, old) in &known {
                if !fresh.contains_key(k) && wanted(old) {
                    print(&mut table, old)?;
                }
            }
            for (k, o) in &fresh {
                let changed = known
                    .get(k)
                    .is_none_or(|old| old.meta().resource_version != o.meta().resource_version);
                if changed && wanted(o) {
                    print(&mut table, o)?;
                }
            }
            known = fresh;
            from = rv;
        } else {
            // The stream ended without an error (e.g. the server restarted): resume.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------- describe ----------

async fn describe_cmd(ctx: &Ctx, kind: Kind, a: DescribeArgs) -> Result<()> {
    let now = now_millis();
    let mut texts = Vec::new();
    for name in &a.names {
        let text = match kind {
            Kind::Pod => describe::describe_pod(&fetch::<Pod>(ctx, name).await?, now),
            Kind::Service => {
                let svc = fetch::<Service>(ctx, name).await?;
                let ep = Endpoints::get(&ctx.ch, &ctx.namespace, name).await.ok();
                describe::describe_service(&svc, ep.as_ref())
            }
            Kind::Node => {
                let node = fetch::<Node>(ctx, name).await?;
                let req = ListRequest {
                    namespace: String::new(),
                    label_selector: String::new(),
                    node_name: name.clone(),
                };
                let (pods, _) = Pod::list(&ctx.ch, req).await.unwrap_or_default();
                let pods: Vec<Pod> = pods
                    .into_iter()
                    .filter(|p| {
                        !matches!(
                            p.status.as_ref().map(|s| s.phase.as_str()),
                            Some("Succeeded" | "Failed")
                        )
                    })
                    .collect();
                describe::describe_node(&node, &pods, now)
            }
            Kind::Endpoints => describe::describe_endpoints(&fetch::<Endpoints>(ctx, name).await?),
        };
        texts.push(text);
    }
    out(format_args!("{}", texts.join("\n\n")))?;
    Ok(())
}

async fn fetch<T: Resource>(ctx: &Ctx, name: &str) -> Result<T> {
    T::get(&ctx.ch, &ns_for::<T>(ctx), name)
        .await
        .map_err(|s| status_error::<T>(ctx, &format!("get {}/{name}", T::SINGULAR), name, s))
}

// ---------- delete ----------

async fn delete<T: Show>(ctx: &Ctx, a: &DeleteArgs) -> Result<()> {
    let grace = if a.force {
        0
    } else {
        a.grace_period.unwrap_or(-1)
    };
    if a.force && T::KIND == "Pod" {
        eprintln!(
            "warning: immediate deletion does not wait for the node to stop the pod's containers"
        );
    }
    let namespace = ns_for::<T>(ctx);
    let mut pending = Vec::new();
    for name in &a.names {
        let req = DeleteRequest {
            name: name.clone(),
            namespace: namespace.clone(),
            resource_version: 0,
            grace_period_seconds: grace,
        };
        let obj = T::delete(&ctx.ch, req).await.map_err(|s| {
            status_error::<T>(ctx, &format!("delete {}/{name}", T::SINGULAR), name, s)
        })?;
        out(format_args!("{} {name:?} deleted\n", T::SINGULAR))?;
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
async fn wait_gone<T: Resource>(ctx: &Ctx, namespace: &str, name: &str) -> Result<()> {
    loop {
        let obj = match T::get(&ctx.ch, namespace, name).await {
            Err(s) if s.code() == Code::NotFound => return Ok(()),
            Err(s) => {
                return Err(status_error::<T>(
                    ctx,
                    &format!("wait for {}/{name}", T::SINGULAR),
                    "",
                    s,
                ))
            }
            Ok(o) => o,
        };
        let req = WatchRequest {
            namespace: namespace.to_string(),
            label_selector: String::new(),
            node_name: String::new(),
            resource_version: obj.meta().resource_version,
            bookmark_interval_ms: 0,
        };
        let mut stream = match T::watch(&ctx.ch, req).await {
            Ok(s) => s,
            Err(s) if s.code() == Code::OutOfRange => continue,
            Err(s) => {
                return Err(status_error::<T>(
                    ctx,
                    &format!("wait for {}/{name}", T::SINGULAR),
                    "",
                    s,
                ))
            }
        };
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) if ev.kind == EventType::Deleted && ev.object.name() == name => {
                    return Ok(())
                }
                Ok(_) => {}
                Err(s) if s.code() == Code::OutOfRange => break,
                Err(s) => {
                    return Err(status_error::<T>(
                        ctx,
                        &format!("wait for {}/{name}", T::SINGULAR),
                        "",
                        s,
                    ))
                }
            }
        }
    }
}

// ---------- logs ----------

async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    // The API has no "no lines" (tail_lines <= 0 means all): `--tail 0` asks for one
    // line (so a missing pod or container is still an error) and prints nothing.
    let none = a.tail == Some(0);
    if none && a.follow {
        bail!(
            "--tail 0 with -f is not supported (the API cannot skip the old lines); use --tail 1"
        );
    }
    let req = LogsRequest {
        name: a.pod.clone(),
        namespace: ctx.namespace.clone(),
        container: a.container.clone(),
        follow: a.follow,
        tail_lines: if none { 1 } else { a.tail.unwrap_or(-1) },
        previous: a.previous,
    };
    let what = format!("logs pod/{}", a.pod);
    let mut stream = PodApiClient::new(ctx.ch.clone())
        .logs(req)
        .await
        .map_err(|s| status_error::<Pod>(ctx, &what, &a.pod, s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| status_error::<Pod>(ctx, &what, "", s))?;
        if none {
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
    use clap::Parser;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kubectl-lite").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn create_pod_flags_become_a_pod() {
        let cli = parse(&[
            "-n",
            "dev",
            "create",
            "pod",
            "web",
            "--image",
            "busybox",
            "-l",
            "app=web,tier=front",
            "--node",
            "node-1",
            "--restart",
            "Never",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--port",
            "8080",
            "--",
            "httpd",
            "-f",
        ]);
        assert_eq!(cli.namespace.as_deref(), Some("dev"));
        let Command::Create(CreateCommand::Pod(a)) = cli.command else {
            panic!()
        };
        let pod = pod_from_args(&a, "dev").unwrap();
        let m = pod.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.labels.len()),
            ("web", "dev", 2)
        );
        let s = pod.spec.unwrap();
        assert_eq!(
            (s.node_name.as_str(), s.restart_policy.as_str()),
            ("node-1", "Never")
        );
        let c = &s.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_str()), ("web", "busybox"));
        assert_eq!(c.args, vec!["httpd", "-f"]);
        assert!(c.command.is_empty());
        assert_eq!(
            c.env[1],
            EnvVar {
                name: "B".into(),
                value: "x=y".into()
            }
        );
        assert_eq!(c.ports[0].container_port, 8080);

        let cli = parse(&[
            "create",
            "po",
            "x",
            "--image",
            "i",
            "--command",
            "--",
            "sleep",
            "1",
        ]);
        let Command::Create(CreateCommand::Pod(a)) = cli.command else {
            panic!()
        };
        let s = pod_from_args(&a, "default").unwrap().spec.unwrap();
        assert_eq!(s.containers[0].command, vec!["sleep", "1"]);
        assert_eq!(s.restart_policy, "Always");
    }

    #[test]
    fn create_service_names_ports_by_port_and_protocol() {
        let cli = parse(&[
            "create",
            "svc",
            "web",
            "--selector",
            "app=web",
            "--port",
            "80:8080",
            "--port",
            "53/udp",
            "--cluster-ip",
            "172.17.10.10",
        ]);
        let Command::Create(CreateCommand::Service(a)) = cli.command else {
            panic!()
        };
        let spec = service_from_args(&a, "default").unwrap().spec.unwrap();
        assert_eq!(spec.cluster_ip, "172.17.10.10");
        assert_eq!(
            spec.ports,
            vec![
                ServicePort {
                    name: "80-tcp".into(),
                    protocol: "TCP".into(),
                    port: 80,
                    target_port: 8080
                },
                ServicePort {
                    name: "53-udp".into(),
                    protocol: "UDP".into(),
                    port: 53,
                    target_port: 53
                },
            ]
        );
        let cli = parse(&[
            "create",
            "service",
            "web",
            "--selector",
            "app",
            "--port",
            "80",
        ]);
        let Command::Create(CreateCommand::Service(a)) = cli.command else {
            panic!()
        };
        assert!(service_from_args(&a, "default")
            .unwrap_err()
            .to_string()
            .contains("--selector"));
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

    #[test]
    fn manifests_are_all_checked_before_anything_is_applied() {
        let good =
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n"
                .to_string();
        let bad = format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec:\n  containers: [{{name: b, image: i}}]\n  volumes: [{{name: v}}]\n");
        let ok = load_manifests(&[("a.yaml".into(), good.clone())], "default", false).unwrap();
        assert_eq!(ok.len(), 1);
        let err = load_manifests(
            &[("a.yaml".into(), good), ("b.yaml".into(), bad)],
            "default",
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.yaml: document 2 (Pod \"b\"): spec.volumes: not supported by kube-lite"
        );
        let err = load_manifests(&[("e.yaml".into(), "# nothing\n".into())], "default", false)
            .unwrap_err();
        assert_eq!(err.to_string(), "e.yaml: no objects found");
    }

    #[test]
    fn logs_tail_accepts_minus_one() {
        for (arg, want) in [("-1", -1), ("0", 0), ("5", 5)] {
            match parse(&["logs", "web", "--tail", arg]).command {
                Command::Logs(l) => assert_eq!(l.tail, Some(want)),
                other => panic!("{other:?}"),
            }
        }
    }
}
