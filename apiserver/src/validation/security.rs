//! Validation of securityContext (issue 13), pod and container, and of lifecycle hooks
//! (exactly one handler, checked as a probe's): ids in range, known
//! capability names, and what the process runtime cannot honour refused naming the
//! field (never ignored): seccomp and AppArmor profiles other than Unconfined, a
//! procMount other than Default, fields only Kubernetes models (`unsupported`).

use kube_lite_proto::v1::{Container, PodSecurityContext, PodSpec, SecurityContext};

use super::R;
use crate::error::{quote, ApiError};

/// Largest uid/gid (Kubernetes: 0..=2147483647).
const MAX_ID: i64 = i32::MAX as i64;
/// Most supplemental groups (Linux NGROUPS_MAX is 65536; a pod needs a handful).
const MAX_GROUPS: usize = 32;
/// Most capability names in add or drop.
const MAX_CAPS: usize = 64;

use kube_lite_core::security::CAPS;

fn id(f: &str, v: Option<i64>) -> R {
    match v {
        Some(v) if !(0..=MAX_ID).contains(&v) => Err(ApiError::invalid(
            f,
            format!("{v} must be between 0 and {MAX_ID}, inclusive"),
        )),
        _ => Ok(()),
    }
}

fn unconfined(f: &str, what: &str, v: &str) -> R {
    if v.is_empty() || v == "Unconfined" {
        return Ok(());
    }
    Err(ApiError::invalid(
        f,
        format!(
            "{} is not supported by the process runtime (it has no {what}; only Unconfined)",
            quote(v)
        ),
    ))
}

fn unsupported(f: &str, names: &[String]) -> R {
    match names.first() {
        Some(n) => Err(ApiError::invalid(
            format!("{f}.{n}"),
            "not supported by the process runtime",
        )),
        None => Ok(()),
    }
}

fn caps(f: &str, names: &[String]) -> R {
    if names.len() > MAX_CAPS {
        return Err(ApiError::invalid(
            f,
            format!("{} names; at most {MAX_CAPS}", names.len()),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        let u = n.to_ascii_uppercase();
        let u = u.strip_prefix("CAP_").unwrap_or(&u);
        if u != "ALL" && !CAPS.contains(&u) {
            return Err(ApiError::invalid(
                format!("{f}[{i}]"),
                format!("{} is not a Linux capability", quote(n)),
            ));
        }
    }
    Ok(())
}

/// A container's securityContext and lifecycle hooks at `f` (`spec.containers[0]`).
pub fn check_container(f: &str, c: &Container) -> R {
    if let Some(l) = &c.lifecycle {
        let ports: std::collections::HashSet<&str> =
            c.ports.iter().map(|p| p.name.as_str()).collect();
        for (name, h) in [("post_start", &l.post_start), ("pre_stop", &l.pre_stop)] {
            let Some(h) = h else { continue };
            let hf = format!("{f}.lifecycle.{name}");
            unsupported(&hf, &h.unsupported)?;
            if h.exec.is_some() == h.http_get.is_some() {
                return Err(ApiError::invalid(
                    hf,
                    "must specify exactly one of exec, http_get",
                ));
            }
            // The handler's rules are the probes' (command, port by number or name,
            // path, headers).
            let p = kube_lite_proto::v1::Probe {
                exec: h.exec.clone(),
                http_get: h.http_get.clone(),
                timeout_seconds: 1,
                period_seconds: 1,
                success_threshold: 1,
                failure_threshold: 1,
                ..Default::default()
            };
            super::pod_extras::check_probe(&hf, &p, &ports, false)?;
        }
    }
    let Some(s) = &c.security_context else {
        return Ok(());
    };
    check_context(&format!("{f}.security_context"), s)
}

fn check_context(f: &str, s: &SecurityContext) -> R {
    id(&format!("{f}.run_as_user"), s.run_as_user)?;
    id(&format!("{f}.run_as_group"), s.run_as_group)?;
    if s.run_as_non_root == Some(true) && s.run_as_user == Some(0) {
        return Err(ApiError::invalid(
            format!("{f}.run_as_non_root"),
            "must be false when run_as_user is 0",
        ));
    }
    if s.privileged == Some(true) && s.allow_privilege_escalation == Some(false) {
        return Err(ApiError::invalid(
            format!("{f}.allow_privilege_escalation"),
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    if let Some(c) = &s.capabilities {
        caps(&format!("{f}.capabilities.add"), &c.add)?;
        caps(&format!("{f}.capabilities.drop"), &c.drop)?;
    }
    unconfined(
        &format!("{f}.seccomp_profile.type"),
        "seccomp",
        &s.seccomp_profile_type,
    )?;
    unconfined(
        &format!("{f}.app_armor_profile.type"),
        "AppArmor",
        &s.app_armor_profile_type,
    )?;
    if !s.proc_mount.is_empty() && s.proc_mount != "Default" {
        return Err(ApiError::invalid(
            format!("{f}.proc_mount"),
            format!(
                "{} is not supported by the process runtime (only Default)",
                quote(&s.proc_mount)
            ),
        ));
    }
    unsupported(f, &s.unsupported)
}

/// Init containers have no lifecycle hooks (Kubernetes').
pub fn check_init_container(f: &str, c: &Container) -> R {
    if c.lifecycle.is_some() {
        return Err(ApiError::invalid(
            format!("{f}.lifecycle"),
            "must not be set for init containers",
        ));
    }
    Ok(())
}

/// The pod's securityContext.
pub fn check_pod(spec: &PodSpec) -> R {
    let Some(p) = &spec.security_context else {
        return Ok(());
    };
    check_pod_context("spec.security_context", p)
}

fn check_pod_context(f: &str, p: &PodSecurityContext) -> R {
    id(&format!("{f}.run_as_user"), p.run_as_user)?;
    id(&format!("{f}.run_as_group"), p.run_as_group)?;
    id(&format!("{f}.fs_group"), p.fs_group)?;
    if p.run_as_non_root == Some(true) && p.run_as_user == Some(0) {
        return Err(ApiError::invalid(
            format!("{f}.run_as_non_root"),
            "must be false when run_as_user is 0",
        ));
    }
    if p.supplemental_groups.len() > MAX_GROUPS {
        return Err(ApiError::invalid(
            format!("{f}.supplemental_groups"),
            format!(
                "{} groups; at most {MAX_GROUPS}",
                p.supplemental_groups.len()
            ),
        ));
    }
    for (i, g) in p.supplemental_groups.iter().enumerate() {
        id(&format!("{f}.supplemental_groups[{i}]"), Some(*g))?;
    }
    if !["", "Always", "OnRootMismatch"].contains(&p.fs_group_change_policy.as_str()) {
        return Err(ApiError::invalid(
            format!("{f}.fs_group_change_policy"),
            format!(
                "{} must be Always or OnRootMismatch",
                quote(&p.fs_group_change_policy)
            ),
        ));
    }
    unconfined(
        &format!("{f}.seccomp_profile.type"),
        "seccomp",
        &p.seccomp_profile_type,
    )?;
    unconfined(
        &format!("{f}.app_armor_profile.type"),
        "AppArmor",
        &p.app_armor_profile_type,
    )?;
    unsupported(f, &p.unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::Capabilities;

    fn ctr(s: SecurityContext) -> Container {
        Container {
            name: "c".into(),
            security_context: Some(s),
            ..Default::default()
        }
    }
    fn err(s: SecurityContext) -> String {
        check_container("spec.containers[0]", &ctr(s))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn lifecycle_hooks_have_one_handler() {
        use kube_lite_proto::v1::{ExecAction, HttpGetAction, Lifecycle, LifecycleHandler};
        let with = |h: LifecycleHandler| Container {
            name: "c".into(),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(h),
                post_start: None,
            }),
            ..Default::default()
        };
        let exec = LifecycleHandler {
            exec: Some(ExecAction {
                command: vec!["sh".into()],
            }),
            ..Default::default()
        };
        assert!(check_container("spec.containers[0]", &with(exec.clone())).is_ok());
        assert!(
            check_init_container("spec.init_containers[0]", &with(exec.clone()))
                .unwrap_err()
                .to_string()
                .contains("spec.init_containers[0].lifecycle")
        );
        let both = LifecycleHandler {
            http_get: Some(HttpGetAction {
                port: 80,
                ..Default::default()
            }),
            ..exec
        };
        assert!(check_container("spec.containers[0]", &with(both))
            .unwrap_err()
            .to_string()
            .contains("spec.containers[0].lifecycle.pre_stop: must specify exactly one"));
        let bad_port = LifecycleHandler {
            http_get: Some(HttpGetAction {
                port: 70000,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_container("spec.containers[0]", &with(bad_port))
            .unwrap_err()
            .to_string()
            .contains("spec.containers[0].lifecycle.pre_stop.http_get"));
        let sleep = LifecycleHandler {
            unsupported: vec!["sleep".into()],
            ..Default::default()
        };
        assert!(check_container("spec.containers[0]", &with(sleep))
            .unwrap_err()
            .to_string()
            .contains("spec.containers[0].lifecycle.pre_stop.sleep: not supported"));
    }

    #[test]
    fn good_contexts_pass() {
        let s = SecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(1000),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                add: vec!["NET_BIND_SERVICE".into()],
                drop: vec!["ALL".into()],
            }),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            seccomp_profile_type: "Unconfined".into(),
            ..Default::default()
        };
        assert!(check_container("spec.containers[0]", &ctr(s)).is_ok());
        let spec = PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_user: Some(1000),
                fs_group: Some(2000),
                supplemental_groups: vec![1, 2],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_pod(&spec).is_ok());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_field() {
        let e = err(SecurityContext {
            seccomp_profile_type: "RuntimeDefault".into(),
            ..Default::default()
        });
        assert!(
            e.contains("spec.containers[0].security_context.seccomp_profile.type")
                && e.contains("no seccomp"),
            "{e}"
        );
        let e = err(SecurityContext {
            unsupported: vec!["seLinuxOptions".into()],
            ..Default::default()
        });
        assert!(
            e.contains("spec.containers[0].security_context.seLinuxOptions: not supported"),
            "{e}"
        );
        let e = err(SecurityContext {
            run_as_user: Some(-1),
            ..Default::default()
        });
        assert!(e.contains("run_as_user: -1 must be between"), "{e}");
        let e = err(SecurityContext {
            capabilities: Some(Capabilities {
                add: vec!["NET_RAWR".into()],
                drop: vec![],
            }),
            ..Default::default()
        });
        assert!(
            e.contains("capabilities.add[0]: \"NET_RAWR\" is not a Linux capability"),
            "{e}"
        );
        let e = err(SecurityContext {
            privileged: Some(true),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        });
        assert!(e.contains("allow_privilege_escalation"), "{e}");
        let spec = PodSpec {
            security_context: Some(PodSecurityContext {
                unsupported: vec!["sysctls".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_pod(&spec)
            .unwrap_err()
            .to_string()
            .contains("spec.security_context.sysctls: not supported"));
    }
}
