//! Named network namespaces (`/run/netns/NAME`, made like `ip netns add`) and netlink
//! handles bound to one.
//!
//! A network namespace is a property of a thread, and a netlink socket belongs to the
//! namespace of the thread that created it. Work that must happen "inside" a namespace
//! (creating a socket, writing a per-namespace sysctl) runs on a short-lived dedicated OS
//! thread that `setns`es first ([`in_netns`]); never on a tokio worker or blocking-pool
//! thread, which would stay in the other namespace afterwards.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::sys::{AsyncSocket, TokioSocket};

use crate::NetError;

/// Directory of named network namespaces (as `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// `statfs` magic of nsfs: a bind-mounted namespace file.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Named network namespaces whose name starts with `prefix`, sorted.
pub fn list_netns(prefix: &str) -> Result<Vec<String>, NetError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io(format!("read {NETNS_DIR}"), e)),
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether the named netns exists (a mounted namespace file).
pub fn netns_exists(name: &str) -> bool {
    is_nsfs(&netns_path(name))
}

/// `program` run inside the named netns `netns` (`nsenter --net=/run/netns/<netns> --`).
/// Only the network namespace changes.
pub fn command_in_netns(netns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns_path(netns).display()))
        .arg("--")
        .arg(program);
    c
}

fn is_nsfs(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        #[allow(clippy::unnecessary_cast)] // fs_type_t differs across targets
        Ok(s) => s.filesystem_type().0 as i64 == NSFS_MAGIC,
        Err(_) => false,
    }
}

static RUN_DIR_READY: Mutex<bool> = Mutex::new(false);

/// Make `/run/netns` a shared mount point, as iproute2 does, so that namespace mounts and
/// unmounts propagate into mount namespaces made later (pods): otherwise a pod's copy of
/// the mount keeps a deleted namespace alive.
fn prepare_run_dir() -> Result<(), NetError> {
    let mut ready = RUN_DIR_READY.lock().unwrap_or_else(|e| e.into_inner());
    if *ready {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR)
        .map_err(|e| NetError::io(format!("mkdir {NETNS_DIR}"), e))?;
    let shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if let Err(nix::errno::Errno::EINVAL) = shared() {
        // Not a mount point yet: bind it onto itself, then make it shared.
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| NetError::io(format!("bind mount {NETNS_DIR}"), e.into()))?;
        shared().map_err(|e| NetError::io(format!("make {NETNS_DIR} shared"), e.into()))?;
    }
    *ready = true;
    Ok(())
}

/// Create the named netns `name` (idempotent: an existing one is kept; a stale file left
/// by a crash between create and mount is replaced).
pub async fn create_netns(name: &str) -> Result<(), NetError> {
    if !crate::names::valid_netns_name(name) {
        return Err(NetError::Invalid(format!("invalid netns name {name:?}")));
    }
    let name = name.to_string();
    on_thread(move || {
        prepare_run_dir()?;
        let path = netns_path(&name);
        if is_nsfs(&path) {
            return Ok(());
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) => return Err(NetError::io(format!("create {}", path.display()), e)),
        }
        let res = (|| {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::io(format!("unshare netns for {name}"), e.into()))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| NetError::io(format!("bind mount netns {name}"), e.into()))
        })();
        if res.is_err() && !is_nsfs(&path) {
            let _ = std::fs::remove_file(&path);
        }
        res
    })
    .await?
}

/// Delete the named netns `name` (lazy unmount + unlink). Missing is fine.
pub async fn delete_netns(name: &str) -> Result<(), NetError> {
    delete_netns_blocking(name)
}

/// [`delete_netns`] for synchronous callers (Drop guards): it never blocks for long.
pub fn delete_netns_blocking(name: &str) -> Result<(), NetError> {
    if !crate::names::valid_netns_name(name) {
        return Err(NetError::Invalid(format!("invalid netns name {name:?}")));
    }
    let path = netns_path(name);
    if !path.exists() {
        return Ok(());
    }
    if is_nsfs(&path) {
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(NetError::io(
                    format!("unmount {}", path.display()),
                    e.into(),
                ))
            }
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("remove {}", path.display()), e)),
    }
}

/// PIDs of the processes whose network namespace is the named netns `name` (found by
/// comparing `/proc/<pid>/ns/net` with `/run/netns/<name>`). Empty if it does not exist.
pub fn pids_in_netns(name: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(netns_path(name)) else {
        return Vec::new();
    };
    if !is_nsfs(&netns_path(name)) {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<i32> = procs
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
        .collect();
    out.sort();
    out
}

/// Open the namespace file of `name` (to pass as IFLA_NET_NS_FD or to `setns`).
pub fn open_netns(name: &str) -> Result<File, NetError> {
    let path = netns_path(name);
    if !is_nsfs(&path) {
        return Err(NetError::Invalid(format!("netns {name} does not exist")));
    }
    File::open(&path).map_err(|e| NetError::io(format!("open {}", path.display()), e))
}

/// Run `f` on a fresh OS thread and await its result.
async fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kl-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetError::io("spawn netns thread", e))?;
    rx.await
        .map_err(|_| NetError::Invalid("netns thread panicked".into()))
}

/// Run `f` inside the named netns `netns` (or in the caller's namespace for `None`) on a
/// dedicated OS thread that ends afterwards.
pub async fn in_netns<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let ns = match netns {
        Some(n) => Some((n.to_string(), open_netns(n)?)),
        None => None,
    };
    on_thread(move || {
        if let Some((name, file)) = ns {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::io(format!("setns into {name}"), e.into()))?;
        }
        Ok(f())
    })
    .await?
}

/// A netlink route handle bound to the named netns (or the caller's namespace). The
/// connection task is spawned on the current tokio runtime and ends with the handle.
pub async fn connect(netns: Option<&str>) -> Result<rtnetlink::Handle, NetError> {
    let rt = tokio::runtime::Handle::current();
    let label = netns.unwrap_or("own namespace").to_string();
    let socket = in_netns(netns, move || {
        let _guard = rt.enter();
        TokioSocket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)
    })
    .await?
    .map_err(|e| NetError::io(format!("netlink socket in {label}"), e))?;
    let (conn, handle, _messages) = rtnetlink::from_socket(socket);
    tokio::spawn(conn);
    Ok(handle)
}

/// Write a sysctl (`/proc/sys/<key with / separators>`) inside the named netns.
pub async fn write_sysctl(netns: Option<&str>, key: &str, value: &str) -> Result<(), NetError> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    let value = value.to_string();
    let op = format!(
        "sysctl {key}={value} in {}",
        netns.unwrap_or("own namespace")
    );
    in_netns(netns, move || std::fs::write(&path, value))
        .await?
        .map_err(|e| NetError::io(op, e))
}
