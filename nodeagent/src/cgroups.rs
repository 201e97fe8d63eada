//! Container resource limits with cgroups, v2 or v1 (detected), through a thin module:
//! what to write is decided by pure functions ([`v1_writes`], [`v2_writes`], unit-tested);
//! [`Cgroups`] only makes directories and writes files.
//!
//! Layout: one cgroup per pod and one per container under a kube-lite cgroup named
//! `kube-lite-<unique>` (the agent's netns prefix, so parallel agents never share
//! one), placed below the agent's own cgroup in each hierarchy (so a containerised or
//! sandboxed agent stays inside its own limits):
//!
//! - v2: `<agent cgroup>/kube-lite-X/pod-<uid>/<container>` with `memory.max`,
//!   `cpu.max` (`quota period`), `cpu.weight`; the `cpu` and `memory` controllers are
//!   enabled in each parent's `cgroup.subtree_control`.
//! - v1 (hybrid hosts): the same path in the `memory` hierarchy
//!   (`memory.limit_in_bytes`) and in the `cpu` hierarchy (`cpu.cfs_period_us`,
//!   `cpu.cfs_quota_us`, `cpu.shares`).
//!
//! The pod cgroup gets the sum of its containers' limits when every container has one
//! (as the kubelet does); a container's cgroup is made anew for each instance, so its
//! OOM-kill counter (`memory.events` / `memory.oom_control`: `oom_kill N`) tells whether
//! the kernel killed that instance for its memory limit. Everything is removed with
//! the pod.
//!
//! An OCI runtime (runc with the cgroupfs driver, for the containerd runtime) is given
//! the same container cgroup as its `cgroupsPath` ([`Cgroups::oci_path`]): the agent
//! makes the pod's and the container's cgroups with their limits, runc places the task
//! in the container's and removes that when the task is deleted. runc also makes the
//! path in the other v1 hierarchies (pids, devices, …, and the v2 one of a hybrid
//! host): those directories are removed with the pod too.

use std::path::{Path, PathBuf};

/// CFS period: 100 ms, Kubernetes' default.
pub const CPU_PERIOD_US: i64 = 100_000;

/// Limits of one cgroup (0 = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: i64,
    pub cpu_limit_millis: i64,
    /// The cpu request, for the share/weight.
    pub cpu_request_millis: i64,
}

/// cpu.shares for a cpu request (Kubernetes' MilliCPUToShares: min 2).
pub fn shares(millis: i64) -> i64 {
    (millis * 1024 / 1000).max(2)
}

/// The CFS quota for a cpu limit (min 1 ms).
pub fn quota_us(millis: i64) -> i64 {
    (millis * CPU_PERIOD_US / 1000).max(1000)
}

/// Which v1 hierarchy a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hier {
    Memory,
    Cpu,
}

/// v1 files to write for `l`, in order.
pub fn v1_writes(l: &Limits) -> Vec<(Hier, &'static str, String)> {
    let mut v = vec![(
        Hier::Memory,
        "memory.limit_in_bytes",
        if l.memory_bytes > 0 {
            l.memory_bytes.to_string()
        } else {
            "-1".into()
        },
    )];
    v.push((Hier::Cpu, "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
    v.push((
        Hier::Cpu,
        "cpu.cfs_quota_us",
        if l.cpu_limit_millis > 0 {
            quota_us(l.cpu_limit_millis).to_string()
        } else {
            "-1".into()
        },
    ));
    if l.cpu_request_millis > 0 {
        v.push((
            Hier::Cpu,
            "cpu.shares",
            shares(l.cpu_request_millis).to_string(),
        ));
    }
    v
}

/// v2 files to write for `l`, in order.
pub fn v2_writes(l: &Limits) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "memory.max",
            if l.memory_bytes > 0 {
                l.memory_bytes.to_string()
            } else {
                "max".into()
            },
        ),
        (
            "cpu.max",
            if l.cpu_limit_millis > 0 {
                format!("{} {CPU_PERIOD_US}", quota_us(l.cpu_limit_millis))
            } else {
                format!("max {CPU_PERIOD_US}")
            },
        ),
    ];
    if l.cpu_request_millis > 0 {
        // The runc/kubelet mapping of shares [2, 262144] to weight [1, 10000].
        let w = 1 + ((shares(l.cpu_request_millis).min(262_144) - 2) * 9999) / 262_142;
        v.push(("cpu.weight", w.to_string()));
    }
    v
}

/// `oom_kill N` from `memory.events` (v2) or `memory.oom_control` (v1).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The agent's own cgroup path in a hierarchy from `/proc/self/cgroup`: `controller`
/// "memory"/"cpu" for v1, "" for the v2 line (`0::/path`).
pub fn own_path(proc_self_cgroup: &str, controller: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

/// Cgroup names are our own: `[A-Za-z0-9_.-]`, everything else becomes `-`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The `cgroupsPath` of a container for an OCI runtime (cgroupfs driver). `common`: the
/// agent's cgroup (relative to the hierarchy root) when it is the same in every
/// hierarchy used (v2; v1 when memory and cpu agree): then an absolute path. Otherwise
/// a relative one, which runc joins to its own cgroup in each hierarchy (the runtime
/// must then run in the agent's cgroups; [`Cgroups::holds`] checks where a task went).
pub fn oci_path(common: Option<&str>, name: &str, uid: &str, container: &str) -> String {
    let tail = format!(
        "{}/pod-{}/{}",
        sanitize(name),
        sanitize(uid),
        sanitize(container)
    );
    match common.map(|c| c.trim_matches('/')) {
        Some("") => format!("/{tail}"),
        Some(c) => format!("/{c}/{tail}"),
        None => tail,
    }
}

/// The root (field 4 of `/proc/self/mountinfo`) of the cgroup filesystem mounted at
/// `mount_point`: "/" on a host or in a cgroup namespace; the container's own cgroup
/// (e.g. `/docker/<id>`) where a container engine bind-mounts it without one (Docker on
/// cgroup v1, cgroupns mode host). None when no cgroup filesystem is mounted there.
pub fn mount_root(mountinfo: &str, mount_point: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        let fstype = post.split(' ').next()?;
        (f.len() >= 5 && f[4] == mount_point && fstype.starts_with("cgroup"))
            .then(|| f[3].to_string())
    })
}

/// `own` (a path from `/proc/self/cgroup`) as seen below a mount whose root is `root`:
/// the part after `root`, without a leading `/` ("" when `own` is the root itself).
/// Paths outside `root` are kept whole (what the hierarchy root would show).
pub fn below_root(own: &str, root: &str) -> String {
    let (own, root) = (own.trim_matches('/'), root.trim_matches('/'));
    if root.is_empty() {
        return own.to_string();
    }
    match own.strip_prefix(root) {
        Some("") => String::new(),
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/').to_string(),
        _ => own.to_string(),
    }
}

/// The v1 controller whose own path names hierarchy directory `dir` of /sys/fs/cgroup
/// (`systemd` is the named `name=systemd` one; `cpu,cpuacct` goes by its first;
/// `unified`, the v2 hierarchy of a hybrid host, by the `0::` line: "").
pub fn v1_controller(dir: &str) -> String {
    match dir {
        "systemd" => "name=systemd".into(),
        "unified" => String::new(),
        d => d.split(',').next().unwrap_or(d).to_string(),
    }
}

#[derive(Debug, Clone)]
enum Layout {
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        /// The kube-lite cgroup in the other hierarchies (where runc makes it).
        others: Vec<PathBuf>,
    },
    V2 {
        root: PathBuf,
    },
}

/// The cgroups of one agent (see the module docs).
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    name: String,
    /// The agent's cgroup when the same in the hierarchies used ([`oci_path`]).
    common: Option<String>,
}

fn write(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(file), value).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", dir.join(file).display()),
        )
    })
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Cgroups {
    /// Detects the host's cgroups: v2 when `/sys/fs/cgroup` is the unified hierarchy,
    /// else v1 with `memory` and `cpu` mounted; None when neither is usable.
    pub fn detect(name: &str) -> Option<Cgroups> {
        let name = sanitize(name);
        let base = Path::new("/sys/fs/cgroup");
        let me = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        // The agent's cgroup relative to the hierarchy's mount at `dir` (a container's
        // cgroup mounts show only its own subtree; runc resolves an absolute
        // cgroupsPath against the mount point the same way).
        let rel_at = |p: Option<String>, dir: &Path| {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            let root = mount_root(&mountinfo, &dir.to_string_lossy()).unwrap_or_default();
            below_root(&p.unwrap_or_default(), &root)
        };
        if base.join("cgroup.controllers").exists() {
            let own = rel_at(own_path(&me, ""), base);
            let root = base.join(&own).join(&name);
            return Some(Cgroups {
                layout: Layout::V2 { root },
                name,
                common: Some(own),
            });
        }
        let (m, c) = (base.join("memory"), base.join("cpu"));
        if m.join("memory.limit_in_bytes").exists() && c.join("cpu.cfs_quota_us").exists() {
            let (mem_rel, cpu_rel) = (
                rel_at(own_path(&me, "memory"), &m),
                rel_at(own_path(&me, "cpu"), &c),
            );
            let common = (mem_rel == cpu_rel).then(|| mem_rel.clone());
            let mut others = Vec::new();
            for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
                let dir = e.file_name().to_string_lossy().to_string();
                if ["memory", "cpu"].contains(&dir.as_str())
                    || !e.file_type().is_ok_and(|t| t.is_dir())
                {
                    continue;
                }
                let own = match &common {
                    Some(c) => c.clone(),
                    None => rel_at(own_path(&me, &v1_controller(&dir)), &e.path()),
                };
                others.push(e.path().join(own).join(&name));
            }
            return Some(Cgroups {
                layout: Layout::V1 {
                    memory: m.join(mem_rel).join(&name),
                    cpu: c.join(cpu_rel).join(&name),
                    others,
                },
                name,
                common,
            });
        }
        None
    }

    pub fn version(&self) -> u8 {
        match self.layout {
            Layout::V1 { .. } => 1,
            Layout::V2 { .. } => 2,
        }
    }

    fn roots(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V1 { memory, cpu, .. } => vec![memory, cpu],
            Layout::V2 { root } => vec![root],
        }
    }

    /// [`Cgroups::roots`] and the kube-lite cgroups an OCI runtime makes elsewhere.
    fn all_roots(&self) -> Vec<&Path> {
        let mut v = self.roots();
        if let Layout::V1 { others, .. } = &self.layout {
            v.extend(others.iter().map(PathBuf::as_path));
        }
        v
    }

    /// The container's cgroup as an OCI runtime's `cgroupsPath` ([`oci_path`]).
    pub fn oci_path(&self, uid: &str, container: &str) -> String {
        oci_path(self.common.as_deref(), &self.name, uid, container)
    }

    /// Whether process `pid` is in the container's cgroup (in every hierarchy used).
    pub fn holds(&self, uid: &str, container: &str, pid: i32) -> bool {
        self.container_dirs(uid, container).iter().all(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))
        })
    }

    fn pod_rel(uid: &str) -> String {
        format!("pod-{}", sanitize(uid))
    }

    /// The container's cgroup directories (memory first on v1).
    pub fn container_dirs(&self, uid: &str, container: &str) -> Vec<PathBuf> {
        self.roots()
            .into_iter()
            .map(|r| r.join(Self::pod_rel(uid)).join(sanitize(container)))
            .collect()
    }

    fn apply(&self, dirs: &[PathBuf], l: &Limits) -> std::io::Result<()> {
        match &self.layout {
            Layout::V1 { .. } => {
                for (h, f, v) in v1_writes(l) {
                    let d = match h {
                        Hier::Memory => &dirs[0],
                        Hier::Cpu => &dirs[1],
                    };
                    write(d, f, &v)?;
                }
            }
            Layout::V2 { .. } => {
                for (f, v) in v2_writes(l) {
                    write(&dirs[0], f, &v)?;
                }
            }
        }
        Ok(())
    }

    fn mkdir(&self, dir: &Path) -> std::io::Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("creating cgroup {}: {e}", dir.display()),
                ))
            }
        }
        if let Layout::V2 { .. } = self.layout {
            // Children need the controllers enabled here.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory");
        }
        Ok(())
    }

    /// Makes (or updates) the pod cgroup with `pod` limits and a fresh cgroup for a new
    /// instance of `container` with `ctr` limits. Returns the `cgroup.procs` files the
    /// instance's first process joins.
    pub fn setup_container(
        &self,
        uid: &str,
        container: &str,
        pod: &Limits,
        ctr: &Limits,
    ) -> std::io::Result<Vec<PathBuf>> {
        let mut procs = Vec::new();
        let pod_dirs: Vec<PathBuf> = self
            .roots()
            .iter()
            .map(|r| r.join(Self::pod_rel(uid)))
            .collect();
        for r in self.roots() {
            if let (Layout::V2 { .. }, Some(parent)) = (&self.layout, r.parent()) {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory");
            }
            self.mkdir(r)?;
        }
        for d in &pod_dirs {
            self.mkdir(d)?;
        }
        self.apply(&pod_dirs, pod)?;
        let dirs = self.container_dirs(uid, container);
        for d in &dirs {
            // A new instance gets a new cgroup (its OOM counter starts at 0); a busy one
            // (a process left behind) is reused.
            let _ = std::fs::remove_dir(d);
            self.mkdir(d)?;
            procs.push(d.join("cgroup.procs"));
        }
        self.apply(&dirs, ctr)?;
        Ok(procs)
    }

    /// OOM kills in the container's cgroup (its current instance).
    pub fn oom_kills(&self, uid: &str, container: &str) -> u64 {
        let d = &self.container_dirs(uid, container)[0];
        let file = match self.layout {
            Layout::V1 { .. } => "memory.oom_control",
            Layout::V2 { .. } => "memory.events",
        };
        std::fs::read_to_string(d.join(file))
            .map(|t| parse_oom_kills(&t))
            .unwrap_or(0)
    }

    /// Removes the pod's cgroups (their processes must be gone).
    pub fn remove_pod(&self, uid: &str) {
        for r in self.all_roots() {
            rmdir_tree(&r.join(Self::pod_rel(uid)));
        }
    }

    /// Uids of the pods that have a cgroup here.
    pub fn pods(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.all_roots() {
            if let Ok(rd) = std::fs::read_dir(r) {
                for e in rd.flatten() {
                    if let Some(uid) = e.file_name().to_string_lossy().strip_prefix("pod-") {
                        if !out.iter().any(|u: &String| u == uid) {
                            out.push(uid.to_string());
                        }
                    }
                }
            }
        }
        out
    }

    /// Removes the kube-lite cgroup itself (when no pod is left), e.g. at test end.
    pub fn remove_root(&self) {
        for r in self.all_roots() {
            let _ = std::fs::remove_dir(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_to_files() {
        let l = Limits {
            memory_bytes: 64 << 20,
            cpu_limit_millis: 500,
            cpu_request_millis: 250,
        };
        assert_eq!(
            v2_writes(&l),
            vec![
                ("memory.max", "67108864".to_string()),
                ("cpu.max", "50000 100000".to_string()),
                ("cpu.weight", "10".to_string()),
            ]
        );
        assert_eq!(
            v1_writes(&l),
            vec![
                (
                    Hier::Memory,
                    "memory.limit_in_bytes",
                    "67108864".to_string()
                ),
                (Hier::Cpu, "cpu.cfs_period_us", "100000".to_string()),
                (Hier::Cpu, "cpu.cfs_quota_us", "50000".to_string()),
                (Hier::Cpu, "cpu.shares", "256".to_string()),
            ]
        );
        let none = Limits::default();
        assert_eq!(v2_writes(&none)[0].1, "max");
        assert_eq!(v2_writes(&none)[1].1, "max 100000");
        assert_eq!(v1_writes(&none)[0].2, "-1");
        assert_eq!(v1_writes(&none)[2].2, "-1");
        assert_eq!(quota_us(1), 1000, "at least 1 ms");
        assert_eq!(shares(1), 2);
    }

    #[test]
    fn cgroup_paths_below_a_containers_mount_root() {
        // Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup names the
        // container's cgroup, which is also the root of each bind-mounted hierarchy.
        let mi = "77 76 0:46 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n\
                  81 77 0:32 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                  82 77 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  90 76 0:50 / /sys/fs/cgroup2 rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_root(mi, "/sys/fs/cgroup/memory").as_deref(),
            Some("/docker/abc")
        );
        assert_eq!(
            mount_root(mi, "/sys/fs/cgroup/cpu,cpuacct").as_deref(),
            Some("/")
        );
        assert_eq!(mount_root(mi, "/sys/fs/cgroup2").as_deref(), Some("/"));
        assert_eq!(mount_root(mi, "/sys/fs/cgroup"), None, "a tmpfs");
        assert_eq!(below_root("/docker/abc", "/docker/abc"), "");
        assert_eq!(below_root("/docker/abc/agent", "/docker/abc"), "agent");
        assert_eq!(below_root("/docker/abcd", "/docker/abc"), "docker/abcd");
        assert_eq!(below_root("/user.slice/x", "/"), "user.slice/x");
        assert_eq!(below_root("/", "/"), "");
    }

    #[test]
    fn parses_proc_files() {
        let me = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu,cpuacct:/x\n0::/unified/path\n";
        assert_eq!(own_path(me, "memory").as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(me, "cpu").as_deref(), Some("/x"));
        assert_eq!(own_path(me, "").as_deref(), Some("/unified/path"));
        assert_eq!(own_path(me, "pids"), None);
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(parse_oom_kills(""), 0);
        assert_eq!(sanitize("kl ab/c"), "kl-ab-c");
    }

    #[test]
    fn oci_paths_name_the_container_cgroup() {
        assert_eq!(
            oci_path(Some("process_api/x"), "kube-lite-kl-a", "u-1", "web"),
            "/process_api/x/kube-lite-kl-a/pod-u-1/web"
        );
        assert_eq!(
            oci_path(Some(""), "kube-lite-kl-a", "u-1", "web"),
            "/kube-lite-kl-a/pod-u-1/web"
        );
        assert_eq!(
            oci_path(None, "kube-lite-kl-a", "u/1", "web"),
            "kube-lite-kl-a/pod-u-1/web",
            "relative: below the runtime's own cgroup"
        );
        assert_eq!(v1_controller("systemd"), "name=systemd");
        assert_eq!(v1_controller("cpu,cpuacct"), "cpu");
        assert_eq!(v1_controller("pids"), "pids");
        assert_eq!(v1_controller("unified"), "");
    }
}
