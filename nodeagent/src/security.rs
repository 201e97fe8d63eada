//! securityContext for the process runtime (issue 13): what a container's program (and
//! every command exec'd into it) runs as.
//!
//! [`resolve`] (pure) merges the pod's and the container's securityContext as the
//! kubelet does (the container's fields win) into a [`ProcessSecurity`]: user, group,
//! supplementary groups (supplementalGroups + fsGroup), the capabilities kept, no_new_privs
//! and a read-only root. A container that must not run as root and would is refused
//! with the kubelet's CreateContainerConfigError message. The runtime hands the result
//! to the container init in [`SECURITY_ENV`] ([`ProcessSecurity::encode`]); the init
//! applies it to the program between fork and exec ([`apply`]) and `init exec` reads
//! it back from the init's environment, so exec'd commands get the same.
//!
//! Choices where Kubernetes leaves it to the runtime:
//! - The process runtime has no image user: a container runs as root (uid 0, gid 0)
//!   unless runAsUser/runAsGroup say otherwise; runAsUser alone gives gid 0 (as a
//!   numeric `USER` does in an OCI runtime).
//! - Capabilities: with `capabilities` set, the kept set is containerd's default set
//!   plus `add` minus `drop` (`ALL` on either side); without it (and with
//!   `privileged: true`) the process keeps what the agent has (kube-lite's behaviour
//!   before securityContext). Only the bounding set is cut: root gets exactly it at exec,
//!   a non-root user gets no capabilities (no ambient ones, as containerd).
//! - An image runtime (containerd) carries the same result in the OCI spec; there, no
//!   `capabilities` means containerd's default set, `privileged: true` every capability
//!   the agent has with /proc and /sys unmasked (host devices are not added), and runAsNonRoot without
//!   runAsUser is checked against the image's USER.
//! - readOnlyRootFilesystem: the mount of `/` in the container's mount namespace is
//!   remounted read-only; other mounts (/proc, /dev, volumes, the pod's state) stay
//!   writable, as with an OCI runtime's read-only rootfs.

use kube_lite_proto::v1::{PodSecurityContext, SecurityContext};

/// Environment variable by which the runtime passes [`ProcessSecurity`] to the init.
pub const SECURITY_ENV: &str = "KUBE_LITE_INIT_SECURITY";

/// Linux capability names by number (`CAP_` dropped, as Kubernetes spells them).
pub use kube_lite_core::security::CAPS;

/// containerd's default capabilities of a container.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The number of a capability name (`NET_RAW` or `CAP_NET_RAW`, any case).
pub fn cap_number(name: &str) -> Option<u32> {
    let n = name.to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    CAPS.iter().position(|c| *c == n).map(|i| i as u32)
}

fn mask(names: &[&str]) -> u64 {
    names
        .iter()
        .filter_map(|n| cap_number(n))
        .fold(0, |m, c| m | (1 << c))
}

/// What the container's processes run as (the default: as the agent would, root).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSecurity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    /// Capabilities kept (bit n = capability n); None = no change.
    pub caps: Option<u64>,
    pub no_new_privs: bool,
    pub read_only_root: bool,
    /// An image runtime must check the image's USER against runAsNonRoot: Some(the
    /// kubelet's `(pod: …, container: …)` text for its message). Never encoded (the
    /// process runtime has no image user and checks in [`resolve`]).
    pub non_root_check: Option<String>,
    /// `privileged: true` for an image runtime: every capability the agent has
    /// ([`bounding_set`], given by the runtime), /proc and /sys unmasked, as containerd
    /// does. Never encoded (the process runtime keeps the agent's capabilities for it:
    /// `caps` None).
    pub privileged: bool,
}

impl ProcessSecurity {
    pub fn is_default(&self) -> bool {
        *self == ProcessSecurity::default()
    }

    /// `uid=1000;gid=0;groups=1,2;caps=0x…;nnp;ro` (only what is set).
    pub fn encode(&self) -> String {
        let mut v = Vec::new();
        if let Some(u) = self.uid {
            v.push(format!("uid={u}"));
        }
        if let Some(g) = self.gid {
            v.push(format!("gid={g}"));
        }
        if !self.groups.is_empty() {
            let g: Vec<String> = self.groups.iter().map(|g| g.to_string()).collect();
            v.push(format!("groups={}", g.join(",")));
        }
        if let Some(c) = self.caps {
            v.push(format!("caps={c:#x}"));
        }
        if self.no_new_privs {
            v.push("nnp".into());
        }
        if self.read_only_root {
            v.push("ro".into());
        }
        v.join(";")
    }

    /// Reads back [`ProcessSecurity::encode`].
    pub fn decode(s: &str) -> Result<ProcessSecurity, String> {
        let mut p = ProcessSecurity::default();
        for item in s.split(';').filter(|i| !i.is_empty()) {
            let bad = || format!("bad security setting {item:?}");
            match item.split_once('=') {
                Some(("uid", v)) => p.uid = Some(v.parse().map_err(|_| bad())?),
                Some(("gid", v)) => p.gid = Some(v.parse().map_err(|_| bad())?),
                Some(("groups", v)) => {
                    p.groups = v
                        .split(',')
                        .map(|g| g.parse().map_err(|_| bad()))
                        .collect::<Result<_, _>>()?
                }
                Some(("caps", v)) => {
                    let v = v.strip_prefix("0x").ok_or_else(bad)?;
                    p.caps = Some(u64::from_str_radix(v, 16).map_err(|_| bad())?)
                }
                None if item == "nnp" => p.no_new_privs = true,
                None if item == "ro" => p.read_only_root = true,
                _ => return Err(bad()),
            }
        }
        Ok(p)
    }
}

/// The bounding set (`CapBnd:`) of a `/proc/PID/status` text: what a process started
/// by that one can have at most (privileged containers get it).
pub fn bounding_set(status: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

/// Who the pod is, for the kubelet's messages: `web_default(<uid>)`.
pub struct PodName<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

fn id(v: i64) -> u32 {
    // Validation keeps ids in 0..=2^31-1; anything else reads as "nobody".
    u32::try_from(v).unwrap_or(65534)
}

/// The security of container `container` of pod `pod` (pure). Err: the
/// CreateContainerConfigError message. `image_runtime`: the runtime runs images (an
/// OCI runtime): without runAsUser the image's USER decides runAsNonRoot (checked by the
/// runtime, [`ProcessSecurity::non_root_check`]), and `privileged` keeps every
/// capability (no change = the OCI runtime's default set, not the agent's).
pub fn resolve(
    pod_sc: Option<&PodSecurityContext>,
    sc: Option<&SecurityContext>,
    pod: &PodName<'_>,
    container: &str,
    image_runtime: bool,
) -> Result<ProcessSecurity, String> {
    let user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|p| p.run_as_user));
    let group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|p| p.run_as_group));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    let who = format!(
        "(pod: \"{}_{}({})\", container: {container})",
        pod.name, pod.namespace, pod.uid
    );
    let mut non_root_check = None;
    if non_root {
        match user {
            None if image_runtime => non_root_check = Some(who.clone()),
            None => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root {who}"
                ))
            }
            Some(0) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy {who}"
                ))
            }
            Some(_) => {}
        }
    }
    let mut p = ProcessSecurity {
        uid: user.map(id),
        gid: group.map(id).or(user.map(|_| 0)),
        non_root_check,
        ..Default::default()
    };
    if let Some(ps) = pod_sc {
        p.groups = ps.supplemental_groups.iter().map(|g| id(*g)).collect();
        if let Some(fs) = ps.fs_group {
            if !p.groups.contains(&id(fs)) {
                p.groups.push(id(fs));
            }
        }
    }
    if let Some(s) = sc {
        let privileged = s.privileged.unwrap_or(false);
        if let (Some(c), false) = (&s.capabilities, privileged) {
            let all = |v: &[String]| v.iter().any(|n| n.eq_ignore_ascii_case("ALL"));
            let mut keep = if all(&c.drop) { 0 } else { mask(&DEFAULT_CAPS) };
            if !all(&c.drop) {
                for n in &c.drop {
                    keep &= !cap_number(n).map(|c| 1u64 << c).unwrap_or(0);
                }
            }
            if all(&c.add) {
                keep = (1u64 << CAPS.len()) - 1;
            } else {
                for n in &c.add {
                    keep |= cap_number(n).map(|c| 1u64 << c).unwrap_or(0);
                }
            }
            p.caps = Some(keep);
        }
        if privileged && image_runtime {
            p.caps = Some((1u64 << CAPS.len()) - 1);
            p.privileged = true;
        }
        p.no_new_privs = s.allow_privilege_escalation == Some(false);
        p.read_only_root = s.read_only_root_filesystem == Some(true);
    }
    Ok(p)
}

/// Makes `cmd`'s child run as `p` says: the bounding set cut to the kept capabilities,
/// the groups, gid and uid set, no_new_privs, between fork and exec.
#[allow(unsafe_code)]
pub fn apply(cmd: &mut std::process::Command, p: &ProcessSecurity) {
    use std::os::unix::process::CommandExt;
    if p.is_default() {
        return;
    }
    let p = p.clone();
    let groups: Vec<libc::gid_t> = p.groups.iter().map(|g| *g as libc::gid_t).collect();
    let change_ids = p.uid.is_some() || p.gid.is_some() || !groups.is_empty();
    // SAFETY: between fork and exec the closure only makes raw system calls (prctl,
    // setgroups, setresgid, setresuid), which are async-signal-safe in the single-threaded
    // child; it reads data allocated before the fork and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let err = std::io::Error::last_os_error;
            if let Some(keep) = p.caps {
                for cap in 0..64u64 {
                    if keep & (1 << cap) == 0
                        && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                        && *libc::__errno_location() != libc::EINVAL
                    {
                        return Err(err());
                    }
                }
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
            }
            if change_ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                    return Err(err());
                }
                let gid = p.gid.unwrap_or(0);
                if libc::setresgid(gid, gid, gid) < 0 {
                    return Err(err());
                }
                let uid = p.uid.unwrap_or(0);
                if libc::setresuid(uid, uid, uid) < 0 {
                    return Err(err());
                }
            }
            if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(err());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::Capabilities;

    const POD: PodName<'static> = PodName {
        name: "web",
        namespace: "default",
        uid: "u-1",
    };

    #[test]
    fn users_groups_and_the_non_root_rule() {
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            supplemental_groups: vec![5, 6],
            fs_group: Some(2000),
            ..Default::default()
        };
        let p = resolve(Some(&pod), None, &POD, "app", false).unwrap();
        assert_eq!((p.uid, p.gid), (Some(1000), Some(0)));
        assert_eq!(p.groups, vec![5, 6, 2000]);
        let c = SecurityContext {
            run_as_user: Some(1001),
            run_as_group: Some(3000),
            ..Default::default()
        };
        let p = resolve(Some(&pod), Some(&c), &POD, "app", false).unwrap();
        assert_eq!(
            (p.uid, p.gid),
            (Some(1001), Some(3000)),
            "the container's win"
        );
        assert!(resolve(None, None, &POD, "app", false)
            .unwrap()
            .is_default());

        let nr = SecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        assert_eq!(
            resolve(None, Some(&nr), &POD, "app", false).unwrap_err(),
            "container has runAsNonRoot and image will run as root (pod: \"web_default(u-1)\", container: app)"
        );
        let root = SecurityContext {
            run_as_user: Some(0),
            ..nr.clone()
        };
        assert!(resolve(None, Some(&root), &POD, "app", false)
            .unwrap_err()
            .starts_with("container's runAsUser breaks non-root policy"));
        assert!(resolve(Some(&pod), Some(&nr), &POD, "app", false).is_ok());
        // An image runtime checks the image's USER: the text for its message.
        let p = resolve(None, Some(&nr), &POD, "app", true).unwrap();
        assert_eq!(
            p.non_root_check.as_deref(),
            Some("(pod: \"web_default(u-1)\", container: app)")
        );
        assert!(resolve(None, Some(&root), &POD, "app", true).is_err());
        assert_eq!(
            resolve(Some(&pod), Some(&nr), &POD, "app", true)
                .unwrap()
                .non_root_check,
            None,
            "runAsUser given: nothing left to check"
        );
    }

    #[test]
    fn capabilities_from_the_default_set() {
        let caps = |add: &[&str], drop: &[&str]| SecurityContext {
            capabilities: Some(Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: drop.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        };
        let kept = |sc: SecurityContext| resolve(None, Some(&sc), &POD, "c", false).unwrap().caps;
        assert_eq!(kept(caps(&[], &["ALL"])), Some(0));
        let net_raw = 1u64 << 13;
        assert_eq!(kept(caps(&["NET_BIND_SERVICE"], &["all"])), Some(1 << 10));
        let d = kept(caps(&[], &["NET_RAW"])).unwrap();
        assert_eq!(d & net_raw, 0);
        assert_eq!(d, mask(&DEFAULT_CAPS) & !net_raw);
        assert_eq!(
            kept(caps(&["CAP_SYS_ADMIN"], &[])),
            Some(mask(&DEFAULT_CAPS) | 1 << 21)
        );
        let mut p = caps(&[], &["ALL"]);
        p.privileged = Some(true);
        assert_eq!(kept(p.clone()), None, "privileged keeps everything");
        let all = resolve(None, Some(&p), &POD, "c", true).unwrap().caps;
        assert_eq!(
            all,
            Some((1u64 << CAPS.len()) - 1),
            "an image runtime: all of them"
        );
        assert_eq!(cap_number("cap_net_raw"), Some(13));
        assert_eq!(
            bounding_set("Name:\tx\nCapEff:\t0\nCapBnd:\t000001fffeffffff\n"),
            Some(0x1fffeffffff)
        );
        assert_eq!(bounding_set("Name:\tx\n"), None);
        assert_eq!(cap_number("NOPE"), None);
    }

    #[test]
    fn encoding_round_trips() {
        let p = ProcessSecurity {
            uid: Some(1000),
            gid: Some(0),
            groups: vec![1, 2],
            caps: Some(0x2000),
            no_new_privs: true,
            read_only_root: true,
            non_root_check: None,
            privileged: false,
        };
        assert_eq!(p.encode(), "uid=1000;gid=0;groups=1,2;caps=0x2000;nnp;ro");
        assert_eq!(ProcessSecurity::decode(&p.encode()).unwrap(), p);
        assert_eq!(
            ProcessSecurity::decode("").unwrap(),
            ProcessSecurity::default()
        );
        assert!(ProcessSecurity::decode("uid=x").is_err());
        assert!(ProcessSecurity::decode("what").is_err());
    }
}
