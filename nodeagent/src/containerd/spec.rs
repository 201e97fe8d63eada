//! The OCI runtime spec of a container, from its image config and the pod's container
//! (pure: unit-tested without containerd). Kubernetes' rules: `command` replaces the
//! image's Entrypoint (and drops its Cmd), `args` replace Cmd; the pod's env overrides
//! the image's; the network namespace is the pod's, made by the agent.
//!
//! What the process runtime applies itself, the spec carries, from the same decisions:
//! - resources ([`crate::cgroups`]): `linux.resources` (memory limit, CFS quota and
//!   period, shares) and `cgroupsPath` = the container's cgroup in the agent's per-pod
//!   layout ([`crate::cgroups::Cgroups::oci_path`]);
//! - volumes ([`crate::mounts::Mount`], planned by the agent): bind mounts (`rbind`,
//!   `rprivate`, `ro` when readOnly), shallowest first, of the volume directory itself
//!   (so a configMap's `..data` swap reaches the files);
//! - securityContext ([`crate::security::ProcessSecurity`]): `process.user` (runAsUser,
//!   runAsGroup, else the image's USER; additionalGids = the primary group,
//!   supplementalGroups and fsGroup, as containerd lists them), capabilities (the kept
//!   set in bounding/effective/permitted; containerd's default set when not set),
//!   `noNewPrivileges` (allowPrivilegeEscalation: false), `root.readonly`
//!   (readOnlyRootFilesystem); runAsNonRoot against the image's USER ([`check_non_root`],
//!   the kubelet's messages).

use super::images::ImageConfig;
use crate::cgroups::{self, Limits};
use crate::mounts::Mount;
use crate::security::{ProcessSecurity, CAPS};
use serde_json::{json, Value};
use std::path::Path;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the spec is made of.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub image: &'a ImageConfig,
    pub command: &'a [String],
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub hostname: &'a str,
    pub netns_path: Option<&'a Path>,
    pub cgroups_path: String,
    /// The pod's resolv.conf (its dnsPolicy), bind-mounted read-only on /etc/resolv.conf.
    pub resolv_conf: Option<&'a Path>,
    /// The container's limits (the pod's are on the pod cgroup, made by the agent).
    pub limits: Limits,
    /// Volume mounts (sources on the node, targets in the container).
    pub mounts: &'a [Mount],
    pub security: &'a ProcessSecurity,
}

/// The program and its arguments (Kubernetes' command/args over Entrypoint/Cmd).
pub fn argv(
    image: &ImageConfig,
    command: &[String],
    args: &[String],
) -> Result<Vec<String>, String> {
    let v: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (false, _) => command.iter().chain(args).cloned().collect(),
    };
    if v.is_empty() {
        return Err("no command to run: the image has no Entrypoint or Cmd and the container sets no command".into());
    }
    Ok(v)
}

/// `KEY=VALUE` list: the image's, then the pod's (a pod variable replaces the image's),
/// HOSTNAME, and PATH if the image has none.
pub fn env(image: &[String], pod: &[(String, String)], hostname: &str) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(ok, _)| ok == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for e in image {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    set("HOSTNAME", hostname);
    for (k, v) in pod {
        set(k, v);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `uid[:gid]` of the image's User (numeric only: no /etc/passwd lookup).
pub fn user(u: &str) -> Result<(u32, u32), String> {
    if u.is_empty() {
        return Ok((0, 0));
    }
    let (a, b) = u.split_once(':').unwrap_or((u, ""));
    let uid: u32 = a
        .parse()
        .map_err(|_| format!("image user {u:?}: only numeric uid[:gid] is supported"))?;
    let gid: u32 = if b.is_empty() {
        0
    } else {
        b.parse()
            .map_err(|_| format!("image user {u:?}: only numeric uid[:gid] is supported"))?
    };
    Ok((uid, gid))
}

/// runAsNonRoot against the image's USER (when runAsUser does not decide it): the
/// kubelet's CreateContainerConfigError messages.
pub fn check_non_root(image_user: &str, sec: &ProcessSecurity) -> Result<(), String> {
    let Some(who) = &sec.non_root_check else {
        return Ok(());
    };
    if sec.uid.is_some() {
        return Ok(());
    }
    let name = image_user.split_once(':').map_or(image_user, |(u, _)| u);
    if name.is_empty() {
        return Err(format!(
            "container has runAsNonRoot and image will run as root {who}"
        ));
    }
    match name.parse::<u32>() {
        Ok(0) => Err(format!("container has runAsNonRoot and image will run as root {who}")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root {who}")),
    }
}

/// `process.user`: runAsUser/runAsGroup over the image's USER; the additional groups
/// are the primary one and the pod's supplementalGroups and fsGroup (containerd's way).
pub fn process_user(image_user: &str, sec: &ProcessSecurity) -> Result<Value, String> {
    let (uid, gid) = match (sec.uid, sec.gid) {
        (Some(u), Some(g)) => (u, g),
        (u, g) => {
            let (iu, ig) = user(image_user)?;
            (u.unwrap_or(iu), g.unwrap_or(ig))
        }
    };
    let mut gids = vec![gid];
    for g in &sec.groups {
        if !gids.contains(g) {
            gids.push(*g);
        }
    }
    Ok(json!({"uid": uid, "gid": gid, "additionalGids": gids}))
}

/// The capabilities kept, as OCI names (`CAP_…`): the resolved set, else containerd's
/// default one.
pub fn capabilities(sec: &ProcessSecurity) -> Vec<String> {
    let names = |keep: u64| -> Vec<String> {
        CAPS.iter()
            .enumerate()
            .filter(|(i, _)| keep & (1 << i) != 0)
            .map(|(_, n)| format!("CAP_{n}"))
            .collect()
    };
    match sec.caps {
        Some(keep) => names(keep),
        None => crate::security::DEFAULT_CAPS
            .iter()
            .map(|n| format!("CAP_{n}"))
            .collect(),
    }
}

/// The volume mounts as OCI bind mounts, shallowest destination first (so a mount
/// below another one's path lands on top of it, as containerd orders them).
pub fn volume_mounts(mounts: &[Mount]) -> Result<Vec<Value>, String> {
    let mut v: Vec<&Mount> = mounts.iter().collect();
    for m in &v {
        if !m.target.is_absolute() {
            return Err(format!(
                "volumeMounts mountPath {:?}: must be an absolute path",
                m.target.display()
            ));
        }
    }
    v.sort_by_key(|m| m.target.components().count());
    Ok(v.into_iter()
        .map(|m| {
            json!({"destination": m.target.display().to_string(), "type": "bind",
                "source": m.source.display().to_string(),
                "options": ["rbind", "rprivate", if m.read_only { "ro" } else { "rw" }]})
        })
        .collect())
}

/// `linux.resources`: devices denied, and the container's limits (0 = none).
pub fn resources(l: &Limits) -> Value {
    let mut r = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if l.memory_bytes > 0 {
        r["memory"] = json!({"limit": l.memory_bytes});
    }
    let mut cpu = serde_json::Map::new();
    if l.cpu_limit_millis > 0 {
        cpu.insert("quota".into(), json!(cgroups::quota_us(l.cpu_limit_millis)));
        cpu.insert("period".into(), json!(cgroups::CPU_PERIOD_US));
    }
    if l.cpu_request_millis > 0 {
        cpu.insert(
            "shares".into(),
            json!(cgroups::shares(l.cpu_request_millis)),
        );
    }
    if !cpu.is_empty() {
        r["cpu"] = Value::Object(cpu);
    }
    r
}

/// Hidden from a (not privileged) container, as containerd does.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Read-only in a (not privileged) container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The spec (runtime-spec 1.0 JSON).
pub fn build(i: &SpecInput) -> Result<Value, String> {
    let args = argv(i.image, i.command, i.args)?;
    let user = process_user(&i.image.user, i.security)?;
    let cwd = if i.image.working_dir.is_empty() {
        "/".to_string()
    } else {
        i.image.working_dir.clone()
    };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match i.netns_path {
        Some(p) => namespaces.push(json!({"type": "network", "path": p.display().to_string()})),
        None => namespaces.push(json!({"type": "network"})),
    }
    let caps = capabilities(i.security);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if i.security.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    if let Some(p) = i.resolv_conf {
        mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind",
            "source": p.display().to_string(), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
    }
    mounts.extend(volume_mounts(i.mounts)?);
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": user,
            "args": args,
            "env": env(&i.image.env, i.env, i.hostname),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": i.security.no_new_privs
        },
        "root": {"path": "rootfs", "readonly": i.security.read_only_root},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": i.cgroups_path,
            "resources": resources(&i.limits),
            "namespaces": namespaces,
            "maskedPaths": if i.security.privileged { json!([]) } else { json!(MASKED_PATHS) },
            "readonlyPaths": if i.security.privileged { json!([]) } else { json!(READONLY_PATHS) }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let img = ImageConfig {
            entrypoint: s(&["/ep"]),
            cmd: s(&["--cmd"]),
            ..Default::default()
        };
        assert_eq!(argv(&img, &[], &[]).unwrap(), s(&["/ep", "--cmd"]));
        assert_eq!(argv(&img, &[], &s(&["a"])).unwrap(), s(&["/ep", "a"]));
        assert_eq!(argv(&img, &s(&["/c"]), &[]).unwrap(), s(&["/c"]));
        assert_eq!(
            argv(&img, &s(&["/c"]), &s(&["a"])).unwrap(),
            s(&["/c", "a"])
        );
        let e = argv(&ImageConfig::default(), &[], &[]).unwrap_err();
        assert!(e.contains("no command"), "{e}");
    }

    #[test]
    fn pod_env_overrides_image_env() {
        let e = env(
            &s(&["PATH=/bin", "A=1", "B=2"]),
            &[("A".into(), "x".into())],
            "web",
        );
        assert_eq!(e, s(&["PATH=/bin", "A=x", "B=2", "HOSTNAME=web"]));
        let e = env(&[], &[], "h");
        assert_eq!(e, s(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h"]));
    }

    #[test]
    fn users_are_numeric() {
        assert_eq!(user("").unwrap(), (0, 0));
        assert_eq!(user("1000").unwrap(), (1000, 0));
        assert_eq!(user("1000:50").unwrap(), (1000, 50));
        assert!(user("nobody").unwrap_err().contains("numeric"));
    }

    #[test]
    fn spec_joins_the_pod_netns_and_uses_the_image_config() {
        let img = ImageConfig {
            cmd: s(&["/bin/sh"]),
            working_dir: "/app".into(),
            ..Default::default()
        };
        let ns = Path::new("/run/netns/kl-x");
        let v = build(&SpecInput {
            image: &img,
            hostname: "web",
            netns_path: Some(ns),
            cgroups_path: "/kube-lite-ab/c1".into(),
            resolv_conf: Some(Path::new("/state/pods/u/resolv.conf")),
            command: &[],
            args: &[],
            env: &[],
            limits: Limits::default(),
            mounts: &[],
            security: &ProcessSecurity::default(),
        })
        .unwrap();
        assert_eq!(v["process"]["cwd"], "/app");
        assert_eq!(v["process"]["args"][0], "/bin/sh");
        assert_eq!(v["hostname"], "web");
        let mounts = v["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/resolv.conf"
            && m["source"] == "/state/pods/u/resolv.conf"
            && m["options"][1] == "ro"));
        assert_eq!(v["root"]["path"], "rootfs");
        let nss = v["linux"]["namespaces"].as_array().unwrap();
        assert!(nss
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/kl-x"));
        assert_eq!(v["linux"]["cgroupsPath"], "/kube-lite-ab/c1");
    }

    fn input<'a>(
        img: &'a ImageConfig,
        sec: &'a ProcessSecurity,
        mounts: &'a [Mount],
    ) -> SpecInput<'a> {
        SpecInput {
            image: img,
            hostname: "web",
            netns_path: None,
            cgroups_path: "/agent/kube-lite-kl-a/pod-u/c".into(),
            resolv_conf: None,
            command: &[],
            args: &[],
            env: &[],
            limits: Limits::default(),
            mounts,
            security: sec,
        }
    }

    fn img(user: &str) -> ImageConfig {
        ImageConfig {
            cmd: s(&["/bin/sh"]),
            user: user.into(),
            ..Default::default()
        }
    }

    #[test]
    fn limits_become_linux_resources() {
        let (i, sec) = (img(""), ProcessSecurity::default());
        let mut inp = input(&i, &sec, &[]);
        let v = build(&inp).unwrap();
        let r = &v["linux"]["resources"];
        assert!(r.get("memory").is_none() && r.get("cpu").is_none(), "{r}");
        assert_eq!(r["devices"][0]["allow"], false);
        inp.limits = Limits {
            memory_bytes: 32 << 20,
            cpu_limit_millis: 250,
            cpu_request_millis: 100,
        };
        let v = build(&inp).unwrap();
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 32 << 20);
        assert_eq!(r["cpu"]["quota"], 25_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 102);
        assert_eq!(v["linux"]["cgroupsPath"], "/agent/kube-lite-kl-a/pod-u/c");
        // A request alone: shares only.
        let r = resources(&Limits {
            cpu_request_millis: 500,
            ..Default::default()
        });
        assert_eq!(r["cpu"], json!({"shares": 512}));
    }

    #[test]
    fn volumes_are_bind_mounts_shallowest_first() {
        let m = |src: &str, dst: &str, ro: bool| Mount {
            source: src.into(),
            target: dst.into(),
            read_only: ro,
        };
        let mounts = vec![
            m("/v/u/cache", "/data/cache", false),
            m("/v/u/cfg", "/etc/app", true),
            m("/v/u/data", "/data", false),
        ];
        let (i, sec) = (img(""), ProcessSecurity::default());
        let v = build(&input(&i, &sec, &mounts)).unwrap();
        let binds: Vec<&Value> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .collect();
        let dst: Vec<&str> = binds
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(dst, ["/data", "/data/cache", "/etc/app"], "stable by depth");
        assert_eq!(binds[2]["source"], "/v/u/cfg");
        assert_eq!(binds[2]["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(binds[0]["options"], json!(["rbind", "rprivate", "rw"]));
        let bad = [m("/v/u/x", "rel/path", false)];
        let e = build(&input(&i, &sec, &bad)).unwrap_err();
        assert!(e.contains("mountPath") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn security_context_in_the_process() {
        let i = img("1000:50");
        let def = ProcessSecurity::default();
        let v = build(&input(&i, &def, &[])).unwrap();
        let p = &v["process"];
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 50, "additionalGids": [50]})
        );
        assert_eq!(
            p["noNewPrivileges"], false,
            "allowPrivilegeEscalation defaults true"
        );
        assert_eq!(v["root"]["readonly"], false);
        let caps = p["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.iter().any(|c| c == "CAP_NET_RAW"));

        let sec = ProcessSecurity {
            uid: Some(2000),
            gid: Some(0),
            groups: vec![5, 0, 3000],
            caps: Some(1 << 10),
            no_new_privs: true,
            read_only_root: true,
            non_root_check: None,
            privileged: false,
        };
        let v = build(&input(&i, &sec, &[])).unwrap();
        let p = &v["process"];
        assert_eq!(
            p["user"],
            json!({"uid": 2000, "gid": 0, "additionalGids": [0, 5, 3000]})
        );
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                p["capabilities"][set],
                json!(["CAP_NET_BIND_SERVICE"]),
                "{set}"
            );
        }
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(v["root"]["readonly"], true);
        // Drop ALL: none; runAsGroup alone keeps the image's uid.
        let none = ProcessSecurity {
            caps: Some(0),
            gid: Some(7),
            ..Default::default()
        };
        let v = build(&input(&i, &none, &[])).unwrap();
        assert_eq!(v["process"]["capabilities"]["effective"], json!([]));
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 7);
        assert_eq!(v["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        // privileged: every capability, /proc and /sys unmasked, /sys writable.
        let all = ProcessSecurity {
            caps: Some((1u64 << CAPS.len()) - 1),
            privileged: true,
            ..Default::default()
        };
        let v = build(&input(&i, &all, &[])).unwrap();
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            CAPS.len()
        );
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(v["linux"]["readonlyPaths"], json!([]));
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["options"][3], "rw");
        // runAsUser makes a non-numeric image user irrelevant.
        let named = img("nobody");
        assert!(build(&input(&named, &def, &[])).is_err());
        let v = build(&input(&named, &sec, &[])).unwrap();
        assert_eq!(v["process"]["user"]["uid"], 2000);
    }

    #[test]
    fn run_as_non_root_checks_the_image_user() {
        let who = "(pod: \"web_default(u-1)\", container: app)";
        let sec = ProcessSecurity {
            non_root_check: Some(who.into()),
            ..Default::default()
        };
        for root in ["", "0", "0:0", "root"] {
            let e = check_non_root(root, &sec).unwrap_err();
            if root == "root" {
                assert_eq!(e, format!("container has runAsNonRoot and image has non-numeric user (root), cannot verify user is non-root {who}"));
            } else {
                assert_eq!(
                    e,
                    format!("container has runAsNonRoot and image will run as root {who}"),
                    "{root:?}"
                );
            }
        }
        assert!(check_non_root("1000", &sec).is_ok());
        assert!(check_non_root("1000:0", &sec).is_ok());
        assert!(
            check_non_root("", &ProcessSecurity::default()).is_ok(),
            "not asked"
        );
    }
}
