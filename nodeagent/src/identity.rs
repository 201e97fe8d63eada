//! The node's identity (issue 14): a client certificate for `system:node:<name>`
//! issued by the cluster CA, kept in the state directory and used on every start.
//!
//! - First start: no saved identity, so the agent needs the join token (`--join-token`,
//!   `--join-token-file` or `KUBE_LITE_JOIN_TOKEN`) and the CA (`--certificate-authority`):
//!   it makes a key and a CSR (its names: the node address, the agent's listen address,
//!   the node name), calls `NodeBootstrap.Join` over TLS trusting the CA, and saves
//!   `pki/node.key` (0600), `pki/node.crt` and `pki/ca.crt` in the state directory.
//! - Later starts: the saved identity, no join token needed (a saved certificate for
//!   another node name, or an expired one, is not used).
//! - Renewal ([`renew_when_due`]): after two thirds of its life the agent asks
//!   `NodeBootstrap.Renew` (authenticated by the current certificate) for a new one,
//!   saves it and restarts itself (exec of the same binary with the same arguments);
//!   pods keep running and the new agent adopts them, as after any restart.
//!
//! With an `http://` server the agent runs insecure (no identity, plaintext port).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use kube_lite_pki::{self as pki, CertInfo, CertKey};
use kube_lite_proto::v1::{node_bootstrap_client::NodeBootstrapClient, JoinRequest, RenewRequest};
use tonic::transport::Channel;

/// What the agent authenticates with, and the CA it trusts.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub ca_pem: String,
    pub cert: CertKey,
    pub info: CertInfo,
    pub dir: PathBuf,
}

impl NodeIdentity {
    /// TLS client config: trust the CA, present the node certificate.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(Arc::new(pki::client_config(
            &pki::Trust::Ca(self.ca_pem.clone()),
            Some(&self.cert),
        )?))
    }
}

/// Where the join token comes from.
#[derive(Clone, Debug, Default)]
pub struct JoinToken {
    pub token: Option<String>,
    pub file: Option<PathBuf>,
}

impl JoinToken {
    fn read(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        match &self.file {
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("reading the join token file {}", f.display()))?;
                Ok(Some(t.trim().to_string()))
            }
            None => Ok(None),
        }
    }
}

/// What is decided at start from the saved files (pure, tested).
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    /// A usable saved certificate for this node.
    Use,
    /// None saved, or not usable (why): join.
    Join(String),
}

pub fn check_saved(info: Option<&CertInfo>, node: &str, now: i64) -> Saved {
    match info {
        None => Saved::Join("no saved node identity".into()),
        Some(i) if i.identity.node_name() != Some(node) => Saved::Join(format!(
            "the saved certificate is for {:?}, not system:node:{node}",
            i.identity.user
        )),
        Some(i) if i.expired(now) => Saved::Join("the saved certificate has expired".into()),
        Some(_) => Saved::Use,
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The node identity: the saved one, or a new one from a join (retried while the
/// apiserver cannot be reached; a refused token is final).
pub async fn obtain(
    server: &str,
    node: &str,
    names: &[String],
    state_dir: &Path,
    ca_file: Option<&Path>,
    join: &JoinToken,
) -> anyhow::Result<NodeIdentity> {
    let dir = state_dir.join("pki");
    // A CA or token file that is not there yet (the apiserver writes them at its first
    // start, e.g. into a shared volume) is waited for, two minutes at most.
    let have_identity = dir.join("node.crt").exists();
    for f in ca_file
        .into_iter()
        .chain(join.file.as_deref().filter(|_| !have_identity))
    {
        wait_for_file(f, Duration::from_secs(120)).await;
    }
    let ca_pem = match ca_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the cluster CA {}", f.display()))?,
        None => read(&dir.join("ca.crt")).with_context(|| {
            format!(
                "no cluster CA: pass --certificate-authority (the apiserver's <data dir>/pki/ca.crt); none saved in {}",
                dir.display()
            )
        })?,
    };
    pki::certs_der(&ca_pem).context("the cluster CA")?;
    let saved = match (read(&dir.join("node.crt")), read(&dir.join("node.key"))) {
        (Some(c), Some(k)) => pki::cert_info_pem(&c).ok().map(|i| (c, k, i)),
        _ => None,
    };
    match check_saved(saved.as_ref().map(|s| &s.2), node, pki::now_unix()) {
        Saved::Use => {
            let (cert_pem, key_pem, info) = saved.expect("checked");
            tracing::info!(node, not_after = info.not_after, dir = %dir.display(), "using the saved node identity");
            return Ok(NodeIdentity {
                ca_pem,
                cert: CertKey { cert_pem, key_pem },
                info,
                dir,
            });
        }
        Saved::Join(why) => tracing::info!(node, reason = %why, "joining the cluster"),
    }
    let Some(token) = join.read()? else {
        bail!(
            "no saved node identity in {} and no join token: pass --join-token, \
             --join-token-file or KUBE_LITE_JOIN_TOKEN (the apiserver's <data dir>/join-token)",
            dir.display()
        );
    };
    let (csr_pem, key_pem) = pki::new_csr(names)?;
    let anon = Arc::new(pki::client_config(&pki::Trust::Ca(ca_pem.clone()), None)?);
    let mut delay = Duration::from_millis(200);
    let creds = loop {
        let attempt = async {
            let ch = kube_lite_client::connect_tls(server, anon.clone()).await?;
            let r = NodeBootstrapClient::new(ch)
                .join(JoinRequest {
                    token: token.clone(),
                    node_name: node.to_string(),
                    csr_pem: csr_pem.clone(),
                })
                .await?;
            Ok::<_, kube_lite_client::ClientError>(r.into_inner())
        };
        match attempt.await {
            Ok(c) => break c,
            Err(kube_lite_client::ClientError::Status(s))
                if s.code() != tonic::Code::Unavailable =>
            {
                bail!(
                    "joining the cluster at {server} failed: {} ({:?})",
                    s.message(),
                    s.code()
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "apiserver not reachable for the join; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    save(&dir, &creds.certificate_pem, &key_pem, &creds.ca_pem)?;
    let info = pki::cert_info_pem(&creds.certificate_pem)?;
    tracing::info!(node, user = %info.identity.user, not_after = info.not_after, dir = %dir.display(), "joined: node identity saved");
    Ok(NodeIdentity {
        ca_pem: creds.ca_pem,
        cert: CertKey {
            cert_pem: creds.certificate_pem,
            key_pem,
        },
        info,
        dir,
    })
}

async fn wait_for_file(f: &Path, limit: Duration) {
    let start = std::time::Instant::now();
    let mut said = false;
    while !f.exists() && start.elapsed() < limit {
        if !said {
            tracing::info!(file = %f.display(), "waiting for the file to appear");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn save(dir: &Path, cert: &str, key: &str, ca: &str) -> anyhow::Result<()> {
    pki::write_private(&dir.join("node.key"), key.as_bytes())?;
    pki::write_public(&dir.join("node.crt"), cert.as_bytes())?;
    pki::write_public(&dir.join("ca.crt"), ca.as_bytes())?;
    Ok(())
}

/// Waits until the certificate is due for renewal, renews it over `channel` (the
/// agent's authenticated connection), saves it and restarts the agent in place.
pub async fn renew_when_due(id: NodeIdentity, channel: Channel, names: Vec<String>) {
    let info = &id.info;
    let life = (info.not_after - info.not_before).max(0);
    let due = info.not_before + life * 2 / 3;
    let wait = (due - pki::now_unix()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let mut delay = Duration::from_secs(1);
    loop {
        match renew_once(&id, channel.clone(), &names).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "renewing the node certificate failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    tracing::info!("node certificate renewed; restarting the agent with it (pods keep running)");
    restart_self();
}

async fn renew_once(id: &NodeIdentity, channel: Channel, names: &[String]) -> anyhow::Result<()> {
    let (csr_pem, key_pem) = pki::new_csr(names)?;
    let creds = NodeBootstrapClient::new(channel)
        .renew(RenewRequest { csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
        .into_inner();
    save(&id.dir, &creds.certificate_pem, &key_pem, &creds.ca_pem)
}

/// exec(2) of this binary with the same arguments (never returns unless exec failed).
fn restart_self() {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let err = std::process::Command::new("/proc/self/exe")
        .args(args)
        .exec();
    tracing::error!(error = %err, "restarting the agent failed; exiting");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_pki::Identity;

    fn info(id: Identity, nb: i64, na: i64) -> CertInfo {
        CertInfo {
            identity: id,
            not_before: nb,
            not_after: na,
        }
    }

    #[test]
    fn saved_identity_used_only_for_this_node_and_unexpired() {
        assert_eq!(
            check_saved(Some(&info(Identity::node("n1"), 0, 100)), "n1", 50),
            Saved::Use
        );
        assert!(matches!(check_saved(None, "n1", 0), Saved::Join(_)));
        let Saved::Join(why) = check_saved(Some(&info(Identity::node("n2"), 0, 100)), "n1", 50)
        else {
            panic!()
        };
        assert!(why.contains("system:node:n2"), "{why}");
        assert!(matches!(
            check_saved(Some(&info(Identity::node("n1"), 0, 100)), "n1", 100),
            Saved::Join(_)
        ));
        assert!(matches!(
            check_saved(Some(&info(Identity::admin(), 0, 100)), "n1", 1),
            Saved::Join(_)
        ));
    }
}
