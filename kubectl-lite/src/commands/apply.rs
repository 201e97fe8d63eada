//! `apply -f`: read and convert every manifest first, then create or update each object
//! (`pod/web created|configured|unchanged`).

use super::ctx::{out, Ctx};
use crate::api::Api;
use crate::cli::ApplyArgs;
use crate::manifest::{self, Converted, Manifest};
use anyhow::{anyhow, bail, Result};
use kube_lite_core::workloads as wl;
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Pod, Service};
use std::io::Read;
use tonic::Code;

/// Every document of every file, converted (nothing is sent unless all convert).
pub fn parse(
    a: &ApplyArgs,
    namespace: &str,
    explicit_namespace: bool,
) -> Result<Vec<(String, Converted)>> {
    let mut sources = Vec::new();
    for f in &a.files {
        if f != "-" && std::path::Path::new(f).is_dir() {
            for path in manifest_files(std::path::Path::new(f), a.recursive)? {
                let p = path.display().to_string();
                let text = read_source(&p)?;
                sources.push((p, text));
            }
            continue;
        }
        sources.push((
            if f == "-" {
                "<stdin>".to_string()
            } else {
                f.clone()
            },
            read_source(f)?,
        ));
    }
    load_manifests(&sources, namespace, explicit_namespace)
}

/// The `.yaml`, `.yml` and `.json` files of a directory, sorted (and of its
/// subdirectories with `-R`), as kubectl.
pub fn manifest_files(dir: &std::path::Path, recursive: bool) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                out.extend(manifest_files(&p, true)?);
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(out)
}

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

pub async fn run(ctx: &Ctx, mut docs: Vec<(String, Converted)>) -> Result<()> {
    let mut failures = Vec::new();
    // Dependency order: namespaces first, workloads after what they use.
    docs.sort_by_key(|(_, c)| c.manifest.apply_rank());
    for (src, c) in docs {
        let who = c.manifest.display();
        for w in &c.warnings {
            eprintln!("warning: {src}: {who}: {w}");
        }
        let result = match c.manifest {
            Manifest::Pod(p) => apply_pod(ctx, p).await,
            Manifest::Service(s) => apply_service(ctx, s).await,
            Manifest::Namespace(n) => {
                apply_generic(ctx, n, |_, _| true, |stored, _| stored.clone()).await
            }
            Manifest::ConfigMap(c) => {
                apply_generic(
                    ctx,
                    c,
                    |s, d| {
                        s.data == d.data
                            && s.binary_data == d.binary_data
                            && s.immutable == d.immutable
                    },
                    |stored, d| {
                        let mut u = stored.clone();
                        u.data = d.data.clone();
                        u.binary_data = d.binary_data.clone();
                        u.immutable = d.immutable;
                        u
                    },
                )
                .await
            }
            Manifest::Secret(mut sec) => {
                for (k, v) in std::mem::take(&mut sec.string_data) {
                    sec.data.insert(k, v.into_bytes());
                }
                if sec.r#type.is_empty() {
                    sec.r#type = "Opaque".into();
                }
                apply_generic(
                    ctx,
                    sec,
                    |s, d| s.data == d.data && s.r#type == d.r#type && s.immutable == d.immutable,
                    |stored, d| {
                        let mut u = stored.clone();
                        u.data = d.data.clone();
                        u.r#type = d.r#type.clone();
                        u.immutable = d.immutable;
                        u
                    },
                )
                .await
            }
            Manifest::Deployment(mut d) => {
                wl::default_deployment_spec(d.spec.get_or_insert_with(Default::default));
                apply_generic(
                    ctx,
                    d,
                    |s, d| s.spec == d.spec,
                    |stored, d| {
                        let mut u = stored.clone();
                        u.spec = d.spec.clone();
                        u
                    },
                )
                .await
            }
            Manifest::ReplicaSet(mut r) => {
                wl::default_replica_set_spec(r.spec.get_or_insert_with(Default::default));
                apply_generic(
                    ctx,
                    r,
                    |s, d| s.spec == d.spec,
                    |stored, d| {
                        let mut u = stored.clone();
                        u.spec = d.spec.clone();
                        u
                    },
                )
                .await
            }
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

/// Create, or update when the content (`same`) or the labels/annotations differ. The
/// stored annotations the server writes (`deployment.kubernetes.io/…`) are kept.
async fn apply_generic<T: Api>(
    ctx: &Ctx,
    desired: T,
    same: impl Fn(&T, &T) -> bool,
    merge: impl Fn(&T, &T) -> T,
) -> Result<&'static str> {
    let meta = desired.meta().clone();
    let who = format!("{}/{}", crate::api::display::<T>(), meta.name);
    let ns = if T::NAMESPACED {
        meta.namespace.clone()
    } else {
        String::new()
    };
    match T::get(&ctx.ch, &ns, &meta.name).await {
        Err(s) if s.code() == Code::NotFound => {
            T::create(&ctx.ch, desired)
                .await
                .map_err(|s| ctx.error::<T>(&format!("apply {who}"), "", s))?;
            Ok("created")
        }
        Err(s) => Err(ctx.error::<T>(&format!("apply {who}"), "", s)),
        Ok(stored) => {
            let sm = stored.meta().clone();
            let mut annotations = meta.annotations.clone();
            for (k, v) in &sm.annotations {
                if k.starts_with("deployment.kubernetes.io/") {
                    annotations.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            if same(&stored, &desired) && sm.labels == meta.labels && sm.annotations == annotations
            {
                return Ok("unchanged");
            }
            let mut updated = merge(&stored, &desired);
            updated.meta_mut().labels = meta.labels;
            updated.meta_mut().annotations = annotations;
            T::update(&ctx.ch, updated)
                .await
                .map_err(|s| ctx.error::<T>(&format!("apply {who}"), "", s))?;
            Ok("configured")
        }
    }
}

/// `delete -f`: the objects the manifests name, workloads first and namespaces last
/// (reverse apply order); missing ones are reported and skipped, as kubectl.
pub async fn delete_all(
    ctx: &Ctx,
    mut docs: Vec<(String, Converted)>,
    a: &crate::cli::DeleteArgs,
) -> Result<()> {
    docs.sort_by_key(|(_, c)| std::cmp::Reverse(c.manifest.apply_rank()));
    let mut failures = Vec::new();
    for (_, c) in docs {
        let kind = c.manifest.kind();
        let m = c.manifest.meta();
        let names = [m.name.clone()];
        if let Err(e) = super::delete::run_names(ctx, kind, a, &m.namespace, &names).await {
            failures.push(e.to_string());
        }
    }
    match failures.pop() {
        None => Ok(()),
        Some(last) => {
            for f in failures {
                eprintln!("error: {f}");
            }
            Err(anyhow!("{last}"))
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
                .map_err(|s| ctx.error::<Pod>(&format!("apply {who}"), "", s))?;
            Ok("created")
        }
        Err(s) => Err(ctx.error::<Pod>(&format!("apply {who}"), "", s)),
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
                .map_err(|s| ctx.error::<Pod>(&format!("apply {who}"), "", s))?;
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
                .map_err(|s| ctx.error::<Service>(&format!("apply {who}"), "", s))?;
            Ok("created")
        }
        Err(s) => Err(ctx.error::<Service>(&format!("apply {who}"), "", s)),
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
                .map_err(|s| ctx.error::<Service>(&format!("apply {who}"), "", s))?;
            Ok("configured")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_all_checked_before_anything_is_applied() {
        let good =
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n"
                .to_string();
        let bad = format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec:\n  containers: [{{name: b, image: i}}]\n  volumes: [{{name: v, nfs: {{server: x, path: /}}}}]\n");
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
            "b.yaml: document 2 (Pod \"b\"): spec.volumes[0].nfs: not supported by kube-lite"
        );
        let err = load_manifests(&[("e.yaml".into(), "# nothing\n".into())], "default", false)
            .unwrap_err();
        assert_eq!(err.to_string(), "e.yaml: no objects found");
    }
}
