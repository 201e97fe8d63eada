//! The OCI runtime spec of a container, from its image config and the pod's container
//! (pure: unit-tested without containerd). Kubernetes' rules: `command` replaces the
//! image's Entrypoint (and drops its Cmd), `args` replace Cmd; the pod's env overrides
//! the image's; the network namespace is the pod's, made by the agent.

use super::images::ImageConfig;
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

/// Capabilities of a container (containerd's and Docker's default set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The spec (runtime-spec 1.0 JSON).
pub fn build(i: &SpecInput) -> Result<Value, String> {
    let args = argv(i.image, i.command, i.args)?;
    let (uid, gid) = user(&i.image.user)?;
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
    let caps = DEFAULT_CAPS;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    if let Some(p) = i.resolv_conf {
        mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind",
            "source": p.display().to_string(), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
    }
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env(&i.image.env, i.env, i.hostname),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": i.cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
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
}
