//! Side effects: iptables-restore / iptables-save, conntrack, ip route and sysctls, all
//! run inside the node's network namespace (`nsenter --net=/run/netns/NS`).
//!
//! [`Exec`] is the small interface the [`crate::Proxier`] drives; [`Runner`] is the real
//! implementation (the tools as processes). Unit tests use a recording fake.

use crate::Backend;
use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Route protocol number marking the routes the proxy adds (so it can find and remove
/// exactly its own). kube-lite-net marks its peer-subnet routes with 77.
pub const ROUTE_PROTO: &str = "78";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// The side effects of the proxier, in the node's network namespace.
pub trait Exec: Clone + Send + Sync + 'static {
    /// A started `iptables-save` (see [`Exec::start_save`]).
    type Save: Send;

    /// Can UDP conntrack entries be flushed (is `conntrack` installed)?
    fn have_conntrack(&self) -> bool;
    /// `iptables-restore --noflush -w` with `text` on stdin.
    fn restore(&self, text: &str) -> impl Future<Output = Result<(), ExecError>> + Send;
    /// Starts `iptables-save` (every table) now; collect it with [`Exec::finish_save`].
    fn start_save(&self) -> Result<Self::Save, ExecError>;
    /// The output of a save started with [`Exec::start_save`].
    fn finish_save(
        &self,
        save: Self::Save,
    ) -> impl Future<Output = Result<String, ExecError>> + Send;
    /// `iptables-save` of every table.
    fn save(&self) -> impl Future<Output = Result<String, ExecError>> + Send;
    /// Deletes UDP conntrack entries to `orig_dst` (optionally only those DNAT'd to
    /// `dnat_to`). "Nothing to delete" is not an error.
    fn conntrack_flush_udp(
        &self,
        orig_dst: Ipv4Addr,
        dnat_to: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;
    /// Cluster IPs routed by the proxy.
    fn list_routes(&self) -> impl Future<Output = Result<Vec<Ipv4Addr>, ExecError>> + Send;
    /// IPv4 networks of the addresses on `dev`.
    fn addresses(
        &self,
        dev: &str,
    ) -> impl Future<Output = Result<Vec<ipnet::Ipv4Net>, ExecError>> + Send;
    /// Adds `add` and removes `del` /32 routes via `dev` (one batch).
    fn update_routes(
        &self,
        dev: &str,
        add: &[Ipv4Addr],
        del: &[Ipv4Addr],
    ) -> impl Future<Output = Result<(), ExecError>> + Send;
    /// `(key, value)` of those sysctls that exist.
    fn sysctl_get(&self, keys: &[&str]) -> impl Future<Output = Vec<(String, String)>> + Send;
    fn sysctl_set(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;
}

impl Exec for Runner {
    type Save = (String, tokio::process::Child);

    fn have_conntrack(&self) -> bool {
        have_program("conntrack")
    }
    fn restore(&self, text: &str) -> impl Future<Output = Result<(), ExecError>> + Send {
        Runner::restore(self, text)
    }
    fn start_save(&self) -> Result<Self::Save, ExecError> {
        Runner::start_save(self)
    }
    fn finish_save(
        &self,
        save: Self::Save,
    ) -> impl Future<Output = Result<String, ExecError>> + Send {
        Runner::finish(save)
    }
    fn save(&self) -> impl Future<Output = Result<String, ExecError>> + Send {
        Runner::save(self)
    }
    fn conntrack_flush_udp(
        &self,
        orig_dst: Ipv4Addr,
        dnat_to: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<(), ExecError>> + Send {
        Runner::conntrack_flush_udp(self, orig_dst, dnat_to)
    }
    fn list_routes(&self) -> impl Future<Output = Result<Vec<Ipv4Addr>, ExecError>> + Send {
        Runner::list_routes(self)
    }
    fn addresses(
        &self,
        dev: &str,
    ) -> impl Future<Output = Result<Vec<ipnet::Ipv4Net>, ExecError>> + Send {
        Runner::addresses(self, dev)
    }
    fn update_routes(
        &self,
        dev: &str,
        add: &[Ipv4Addr],
        del: &[Ipv4Addr],
    ) -> impl Future<Output = Result<(), ExecError>> + Send {
        Runner::update_routes(self, dev, add, del)
    }
    fn sysctl_get(&self, keys: &[&str]) -> impl Future<Output = Vec<(String, String)>> + Send {
        Runner::sysctl_get(self, keys)
    }
    fn sysctl_set(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), ExecError>> + Send {
        Runner::sysctl_set(self, key, value)
    }
}

/// Runs the tools inside one network namespace.
#[derive(Debug, Clone)]
pub struct Runner {
    pub netns: Option<String>,
    pub backend: Backend,
}

impl Runner {
    pub fn new(netns: Option<String>, backend: Backend) -> Runner {
        Runner { netns, backend }
    }

    /// A command that runs `program` in the namespace.
    pub fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Same as [`Runner::command`], blocking flavour (tests, benchmarks).
    pub fn std_command(&self, program: &str) -> std::process::Command {
        match &self.netns {
            Some(ns) => {
                let mut c = std::process::Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(program);
                c
            }
            None => std::process::Command::new(program),
        }
    }

    pub fn restore_program(&self) -> &'static str {
        match self.backend {
            Backend::Nft => "iptables-restore",
            Backend::Legacy => "iptables-legacy-restore",
        }
    }
    pub fn save_program(&self) -> &'static str {
        match self.backend {
            Backend::Nft => "iptables-save",
            Backend::Legacy => "iptables-legacy-save",
        }
    }
    pub fn iptables_program(&self) -> &'static str {
        match self.backend {
            Backend::Nft => "iptables",
            Backend::Legacy => "iptables-legacy",
        }
    }

    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ExecError> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_err = |source| ExecError::Spawn {
            program: program.to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            let input = input.to_string();
            // Write concurrently with reading the output so large inputs cannot deadlock.
            let writer = tokio::spawn(async move {
                let r = w.write_all(input.as_bytes()).await;
                drop(w);
                r
            });
            let out = child.wait_with_output().await.map_err(spawn_err)?;
            let _ = writer.await;
            return check(program, out);
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        check(program, out)
    }

    /// `iptables-restore --noflush -w` with `text` on stdin.
    pub async fn restore(&self, text: &str) -> Result<(), ExecError> {
        self.run(self.restore_program(), &["--noflush", "-w"], Some(text))
            .await
            .map(|_| ())
    }

    /// Starts `iptables-save` (every table) now; collect it with [`Runner::finish`].
    pub fn start_save(&self) -> Result<(String, tokio::process::Child), ExecError> {
        let program = self.save_program();
        let mut cmd = self.command(program);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| ExecError::Spawn {
            program: program.to_string(),
            source,
        })?;
        Ok((program.to_string(), child))
    }

    /// Waits for a process from [`Runner::start_save`]; its stdout.
    pub async fn finish(
        (program, child): (String, tokio::process::Child),
    ) -> Result<String, ExecError> {
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| ExecError::Spawn {
                program: program.clone(),
                source,
            })?;
        check(&program, out)
    }

    /// `iptables-save` of every table (one process; callers keep nat and filter).
    pub async fn save(&self) -> Result<String, ExecError> {
        self.run(self.save_program(), &[], None).await
    }

    /// Deletes UDP conntrack entries to `orig_dst` (optionally only those DNAT'd to
    /// `dnat_to`). "Nothing to delete" is not an error.
    pub async fn conntrack_flush_udp(
        &self,
        orig_dst: Ipv4Addr,
        dnat_to: Option<Ipv4Addr>,
    ) -> Result<(), ExecError> {
        let dst = orig_dst.to_string();
        let nat = dnat_to.map(|i| i.to_string());
        let mut args = vec!["-D", "-p", "udp", "--orig-dst", &dst];
        if let Some(n) = &nat {
            args.extend(["--dst-nat", n]);
        }
        match self.run("conntrack", &args, None).await {
            Ok(_) => Ok(()),
            Err(ExecError::Failed { stderr, .. }) if stderr.contains("0 flow entries") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Cluster IPs routed by the proxy (`ip route show proto 78`).
    pub async fn list_routes(&self) -> Result<Vec<Ipv4Addr>, ExecError> {
        let out = self
            .run("ip", &["-4", "route", "show", "proto", ROUTE_PROTO], None)
            .await?;
        // Host routes only ("172.17.10.10 dev kl0 scope link"): never a subnet.
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|d| d.trim_end_matches("/32").parse().ok())
            .collect())
    }

    /// IPv4 networks of the addresses on `dev` (`ip -4 -o addr show dev DEV`).
    pub async fn addresses(&self, dev: &str) -> Result<Vec<ipnet::Ipv4Net>, ExecError> {
        let out = self
            .run("ip", &["-4", "-o", "addr", "show", "dev", dev], None)
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|x| *x == "inet")?;
                w.next()?.parse::<ipnet::Ipv4Net>().ok().map(|n| n.trunc())
            })
            .collect())
    }

    /// One `ip -force -batch -` adding `add` and removing `del` /32 routes via `dev`.
    pub async fn update_routes(
        &self,
        dev: &str,
        add: &[Ipv4Addr],
        del: &[Ipv4Addr],
    ) -> Result<(), ExecError> {
        if add.is_empty() && del.is_empty() {
            return Ok(());
        }
        let mut batch = String::new();
        for ip in del {
            batch.push_str(&format!("route del {ip}/32 proto {ROUTE_PROTO}\n"));
        }
        for ip in add {
            batch.push_str(&format!(
                "route replace {ip}/32 dev {dev} proto {ROUTE_PROTO}\n"
            ));
        }
        self.run("ip", &["-force", "-batch", "-"], Some(&batch))
            .await
            .map(|_| ())
    }

    /// Reads sysctls of the namespace (one `sysctl` process; in the own namespace
    /// straight from /proc/sys): `(key, value)` for those that exist.
    pub async fn sysctl_get(&self, keys: &[&str]) -> Vec<(String, String)> {
        if self.netns.is_none() {
            return keys
                .iter()
                .filter_map(|k| {
                    let path = format!("/proc/sys/{}", k.replace('.', "/"));
                    std::fs::read_to_string(path)
                        .ok()
                        .map(|v| (k.to_string(), v.trim().to_string()))
                })
                .collect();
        }
        let mut args = vec!["-e"];
        args.extend_from_slice(keys);
        let Ok(out) = self.run("sysctl", &args, None).await else {
            return Vec::new();
        };
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    pub async fn sysctl_set(&self, key: &str, value: &str) -> Result<(), ExecError> {
        if self.netns.is_none() {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            return std::fs::write(&path, value).map_err(|source| ExecError::Spawn {
                program: format!("write {path}"),
                source,
            });
        }
        self.run("sysctl", &["-w", &format!("{key}={value}")], None)
            .await
            .map(|_| ())
    }
}

fn check(program: &str, out: std::process::Output) -> Result<String, ExecError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.len() > 2000 {
            stderr.truncate(2000);
            stderr.push('…');
        }
        Err(ExecError::Failed {
            program: program.to_string(),
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// Is `program` on PATH?
pub fn have_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
