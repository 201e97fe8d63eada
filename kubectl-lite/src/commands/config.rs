//! `config view|get-contexts|use-context|current-context`, and finding and resolving
//! the kubeconfig for every other command (kubectl's rules: `--kubeconfig`, then
//! `KUBECONFIG`, then `~/.kube/config`; `--context`, `--server`, `--token`,
//! `--certificate-authority`, `--insecure-skip-tls-verify` win over it).

use super::ctx::out;
use crate::cli::{Cli, ConfigCommand, DEFAULT_SERVER};
use anyhow::{anyhow, bail, Result};
use kube_lite_client::kubeconfig::{locate, resolve, Kubeconfig, Overrides, Resolved};
use std::path::{Path, PathBuf};

fn read_file(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| e.to_string())
}

/// The kubeconfig's path, if there is one.
pub fn kubeconfig_path(cli: &Cli) -> Option<PathBuf> {
    let env = std::env::var("KUBECONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    locate(
        cli.kubeconfig.as_deref(),
        env.as_deref(),
        home.as_deref(),
        &|p| p.exists(),
    )
}

/// The kubeconfig and its path (`None`: there is none).
pub fn load(cli: &Cli) -> Result<Option<(Kubeconfig, PathBuf)>> {
    let Some(path) = kubeconfig_path(cli) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow!("reading kubeconfig {}: {e}", path.display()))?;
    let k = Kubeconfig::parse(&text).map_err(|e| anyhow!("kubeconfig {}: {e}", path.display()))?;
    Ok(Some((k, path)))
}

/// What to connect to and with which credentials.
pub fn resolved(cli: &Cli) -> Result<Resolved> {
    let loaded = load(cli)?;
    let o = Overrides {
        context: cli.context.clone(),
        server: cli.server.clone(),
        token: cli.token.clone(),
        certificate_authority: cli.certificate_authority.clone(),
        insecure_skip_tls_verify: cli.insecure_skip_tls_verify,
    };
    resolve(
        loaded.as_ref().map(|(k, p)| (k, p.as_path())),
        &o,
        DEFAULT_SERVER,
        &read_file,
    )
    .map_err(|e| anyhow!(e))
}

pub fn run(cli: &Cli, cmd: &ConfigCommand) -> Result<()> {
    let loaded = load(cli)?;
    let need = || {
        loaded.clone().ok_or_else(|| {
            anyhow!("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or write ~/.kube/config")
        })
    };
    match cmd {
        ConfigCommand::View { raw } => {
            let k = loaded.map(|(k, _)| k).unwrap_or_default();
            let k = if *raw { k } else { k.redacted() };
            out(format_args!("{}", k.to_yaml().map_err(|e| anyhow!(e))?))?;
        }
        ConfigCommand::GetContexts => {
            let (k, _) = need()?;
            let current = cli.context.clone().or(k.current_context.clone());
            let mut rows = vec![[
                "CURRENT".to_string(),
                "NAME".into(),
                "CLUSTER".into(),
                "AUTHINFO".into(),
                "NAMESPACE".into(),
            ]];
            for c in &k.contexts {
                rows.push([
                    if current.as_deref() == Some(c.name.as_str()) {
                        "*".into()
                    } else {
                        String::new()
                    },
                    c.name.clone(),
                    c.context.cluster.clone(),
                    c.context.user.clone(),
                    c.context.namespace.clone().unwrap_or_default(),
                ]);
            }
            out(format_args!("{}", table(&rows)))?;
        }
        ConfigCommand::UseContext { name } => {
            let (mut k, path) = need()?;
            if k.context(name).is_none() {
                bail!(
                    "no context exists with the name: {name:?} in {}",
                    path.display()
                );
            }
            k.current_context = Some(name.clone());
            let text = k.to_yaml().map_err(|e| anyhow!(e))?;
            kube_lite_pki::write_private(&path, text.as_bytes())
                .map_err(|e| anyhow!("writing kubeconfig: {e}"))?;
            out(format_args!("Switched to context {name:?}.\n"))?;
        }
        ConfigCommand::CurrentContext => {
            let (k, _) = need()?;
            match k.current_context.filter(|c| !c.is_empty()) {
                Some(c) => out(format_args!("{c}\n"))?,
                None => bail!("current-context is not set"),
            }
        }
    }
    Ok(())
}

/// Columns separated by three spaces, as kubectl's tables.
fn table(rows: &[[String; 5]]) -> String {
    let mut w = [0usize; 5];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        s.push_str(line.join("   ").trim_end());
        s.push('\n');
    }
    s
}
