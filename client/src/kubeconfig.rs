//! kubeconfig files (issue 14), as kubectl reads them: clusters, users and contexts by
//! name, `current-context`, `*-data` fields (base64 PEM) or file paths (relative to the
//! kubeconfig's directory), and where to find the file (`--kubeconfig`, then the first
//! existing file of `KUBECONFIG`, then `~/.kube/config`).
//!
//! [`resolve`] turns a kubeconfig plus command-line overrides into what a connection
//! needs ([`Resolved`]); it is pure (files are read through a closure) and unit-tested.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub clusters: Vec<NamedCluster>,
    pub users: Vec<NamedUser>,
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferences: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "tokenFile", skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Kubeconfig {
    pub fn parse(text: &str) -> Result<Kubeconfig, String> {
        if text.trim().is_empty() {
            return Ok(Kubeconfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| format!("not a kubeconfig: {e}"))
    }

    pub fn to_yaml(&self) -> Result<String, String> {
        serde_saphyr::to_string(self).map_err(|e| format!("cannot render the kubeconfig: {e}"))
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.context)
    }
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.cluster)
    }
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|c| c.name == name).map(|c| &c.user)
    }

    /// The same with every secret replaced by `DATA+OMITTED` / `REDACTED`, as
    /// `kubectl config view` prints it.
    pub fn redacted(&self) -> Kubeconfig {
        let mut k = self.clone();
        for c in &mut k.clusters {
            if c.cluster.certificate_authority_data.is_some() {
                c.cluster.certificate_authority_data = Some("DATA+OMITTED".into());
            }
        }
        for u in &mut k.users {
            if u.user.client_certificate_data.is_some() {
                u.user.client_certificate_data = Some("DATA+OMITTED".into());
            }
            if u.user.client_key_data.is_some() {
                u.user.client_key_data = Some("DATA+OMITTED".into());
            }
            if u.user.token.is_some() {
                u.user.token = Some("REDACTED".into());
            }
        }
        k
    }
}

/// Where the kubeconfig is: `flag`, else the first existing file of `KUBECONFIG`
/// (colon-separated; kubectl merges them, kube-lite takes the first), else
/// `~/.kube/config` if it exists. `None`: no kubeconfig (defaults apply).
pub fn locate(
    flag: Option<&Path>,
    env: Option<&str>,
    home: Option<&Path>,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(f) = flag {
        return Some(f.to_path_buf());
    }
    if let Some(list) = env.filter(|e| !e.is_empty()) {
        return list
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .find(|p| exists(p));
    }
    home.map(|h| h.join(".kube").join("config"))
        .filter(|p| exists(p))
}

/// Command-line settings that win over the kubeconfig (kubectl's flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub context: Option<String>,
    pub server: Option<String>,
    pub token: Option<String>,
    pub certificate_authority: Option<String>,
    pub insecure_skip_tls_verify: bool,
}

/// What a connection needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resolved {
    pub server: String,
    /// PEM of the CA to trust (`None` with an `http://` server or skip-verify).
    pub ca_pem: Option<String>,
    pub insecure_skip_tls_verify: bool,
    /// Client certificate and key, PEM.
    pub client_cert: Option<(String, String)>,
    pub token: Option<String>,
    pub namespace: Option<String>,
    /// The context used (`None`: no kubeconfig).
    pub context: Option<String>,
}

fn data_or_file(
    data: &Option<String>,
    file: &Option<String>,
    what: &str,
    base: &Path,
    read: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<Option<String>, String> {
    if let Some(d) = data {
        let bytes = kube_lite_pki::unb64(d).map_err(|e| format!("{what}-data: {e}"))?;
        return String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{what}-data: not PEM text"));
    }
    match file {
        Some(f) => {
            let p = base.join(f);
            read(&p)
                .map(Some)
                .map_err(|e| format!("{what} {}: {e}", p.display()))
        }
        None => Ok(None),
    }
}

/// Resolves `cfg` (read from `path`; `None`: there is no kubeconfig) with `o` into the
/// connection settings; `default_server` when neither gives a server. Errors name what
/// is missing (`context "x" not found in /root/.kube/config`).
pub fn resolve(
    cfg: Option<(&Kubeconfig, &Path)>,
    o: &Overrides,
    default_server: &str,
    read: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<Resolved, String> {
    let mut r = Resolved {
        insecure_skip_tls_verify: o.insecure_skip_tls_verify,
        token: o.token.clone(),
        ..Default::default()
    };
    if let Some((k, path)) = cfg {
        let base = path.parent().unwrap_or(Path::new("."));
        let ctx_name = match o.context.clone().or_else(|| k.current_context.clone()) {
            Some(c) if !c.is_empty() => Some(c),
            _ if o.context.is_some() => {
                return Err("--context: empty context name".into());
            }
            _ => None,
        };
        if let Some(name) = ctx_name {
            let ctx = k
                .context(&name)
                .ok_or_else(|| format!("context {name:?} not found in {}", path.display()))?;
            r.context = Some(name.clone());
            r.namespace = ctx.namespace.clone().filter(|n| !n.is_empty());
            if let Some(c) = k.cluster(&ctx.cluster) {
                r.server = c.server.clone();
                r.insecure_skip_tls_verify |= c.insecure_skip_tls_verify;
                r.ca_pem = data_or_file(
                    &c.certificate_authority_data,
                    &c.certificate_authority,
                    "certificate-authority",
                    base,
                    read,
                )?;
            } else if o.server.is_none() {
                return Err(format!(
                    "cluster {:?} of context {name:?} not found in {}",
                    ctx.cluster,
                    path.display()
                ));
            }
            if let Some(u) = k.user(&ctx.user) {
                // An explicit --token replaces the kubeconfig user's credentials.
                if o.token.is_none() {
                    let cert = data_or_file(
                        &u.client_certificate_data,
                        &u.client_certificate,
                        "client-certificate",
                        base,
                        read,
                    )?;
                    let key =
                        data_or_file(&u.client_key_data, &u.client_key, "client-key", base, read)?;
                    match (cert, key) {
                        (Some(c), Some(k)) => r.client_cert = Some((c, k)),
                        (None, None) => {}
                        _ => {
                            return Err(format!(
                                "user {:?}: client-certificate and client-key go together",
                                ctx.user
                            ))
                        }
                    }
                    r.token = match (&u.token, &u.token_file) {
                        (Some(t), _) => Some(t.clone()),
                        (None, Some(f)) => Some(
                            read(&base.join(f))
                                .map_err(|e| format!("tokenFile {f}: {e}"))?
                                .trim()
                                .to_string(),
                        ),
                        _ => None,
                    };
                }
            }
        }
    } else if let Some(c) = &o.context {
        return Err(format!(
            "--context {c:?}: no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config)"
        ));
    }
    if let Some(s) = &o.server {
        r.server = s.clone();
    }
    if r.server.is_empty() {
        r.server = default_server.to_string();
    }
    if !r.server.contains("://") {
        r.server = format!("https://{}", r.server);
    }
    if let Some(f) = &o.certificate_authority {
        r.ca_pem =
            Some(read(Path::new(f)).map_err(|e| format!("--certificate-authority {f}: {e}"))?);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "apiVersion: v1
kind: Config
clusters:
- name: kube-lite
  cluster:
    certificate-authority-data: Q0EtUEVN
    server: https://127.0.0.1:6443
- name: other
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: ca.crt
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
- name: bob
  user:
    token: t0k
contexts:
- name: kube-lite
  context:
    cluster: kube-lite
    user: admin
- name: dev
  context:
    cluster: other
    user: bob
    namespace: team
current-context: kube-lite
preferences: {}
";

    fn no_files(p: &Path) -> Result<String, String> {
        if p.ends_with("ca.crt") {
            Ok("FILE-CA".into())
        } else {
            Err("No such file or directory".into())
        }
    }

    #[test]
    fn current_context_with_data_fields() {
        let k = Kubeconfig::parse(K).unwrap();
        let r = resolve(
            Some((&k, Path::new("/home/u/.kube/config"))),
            &Overrides::default(),
            "http://127.0.0.1:6443",
            &no_files,
        )
        .unwrap();
        assert_eq!(r.server, "https://127.0.0.1:6443");
        assert_eq!(r.ca_pem.as_deref(), Some("CA-PEM"));
        assert_eq!(r.client_cert, Some(("CERT".into(), "KEY".into())));
        assert_eq!(r.token, None);
        assert_eq!(r.context.as_deref(), Some("kube-lite"));
    }

    #[test]
    fn context_flag_files_and_overrides() {
        let k = Kubeconfig::parse(K).unwrap();
        let o = Overrides {
            context: Some("dev".into()),
            ..Default::default()
        };
        let r = resolve(Some((&k, Path::new("/k/config"))), &o, "x", &no_files).unwrap();
        assert_eq!(r.server, "https://10.0.0.1:6443");
        assert_eq!(r.ca_pem.as_deref(), Some("FILE-CA"));
        assert!(r.insecure_skip_tls_verify);
        assert_eq!(r.token.as_deref(), Some("t0k"));
        assert_eq!(r.namespace.as_deref(), Some("team"));

        let o = Overrides {
            server: Some("https://127.0.0.1:7000".into()),
            token: Some("flag-token".into()),
            ..Default::default()
        };
        let r = resolve(Some((&k, Path::new("/k/config"))), &o, "x", &no_files).unwrap();
        assert_eq!(r.server, "https://127.0.0.1:7000");
        assert_eq!(r.token.as_deref(), Some("flag-token"));
        assert_eq!(
            r.client_cert, None,
            "--token replaces the user's certificate"
        );
        assert_eq!(
            r.ca_pem.as_deref(),
            Some("CA-PEM"),
            "the cluster's CA is kept"
        );

        let o = Overrides {
            context: Some("nope".into()),
            ..Default::default()
        };
        let e = resolve(Some((&k, Path::new("/k/config"))), &o, "x", &no_files).unwrap_err();
        assert_eq!(e, "context \"nope\" not found in /k/config");
    }

    #[test]
    fn without_a_kubeconfig() {
        let r = resolve(
            None,
            &Overrides::default(),
            "http://127.0.0.1:6443",
            &no_files,
        )
        .unwrap();
        assert_eq!(r.server, "http://127.0.0.1:6443");
        assert_eq!(r.ca_pem, None);
        let o = Overrides {
            certificate_authority: Some("/nope/ca.pem".into()),
            ..Default::default()
        };
        let e = resolve(None, &o, "x", &no_files).unwrap_err();
        assert!(
            e.starts_with("--certificate-authority /nope/ca.pem: "),
            "{e}"
        );
    }

    #[test]
    fn locating_like_kubectl() {
        let yes = |_: &Path| true;
        let only_b = |p: &Path| p == Path::new("/b");
        let no = |_: &Path| false;
        assert_eq!(
            locate(Some(Path::new("/f")), Some("/b"), None, &no),
            Some("/f".into())
        );
        assert_eq!(
            locate(None, Some("/a:/b"), None, &only_b),
            Some("/b".into())
        );
        assert_eq!(
            locate(None, None, Some(Path::new("/root")), &yes),
            Some("/root/.kube/config".into())
        );
        assert_eq!(locate(None, None, Some(Path::new("/root")), &no), None);
    }

    #[test]
    fn round_trip_and_redaction() {
        let k = Kubeconfig::parse(K).unwrap();
        let again = Kubeconfig::parse(&k.to_yaml().unwrap()).unwrap();
        assert_eq!(again, k);
        let r = k.redacted();
        assert_eq!(
            r.users[0].user.client_key_data.as_deref(),
            Some("DATA+OMITTED")
        );
        assert_eq!(r.users[1].user.token.as_deref(), Some("REDACTED"));
    }
}
