//! securityContext (issue 13), pod and container, both ways. Fields kube-lite cannot
//! honour are not dropped: their names go into `unsupported`, which the apiserver's
//! validation refuses naming each (a Localhost seccomp/AppArmor profile keeps its type,
//! refused the same way).

use k8s_openapi::api::core::v1 as corev1;
use kube_lite_proto::v1::{Capabilities, PodSecurityContext, SecurityContext};

use crate::{opt, opt_vec};

fn profile_type(t: Option<String>) -> String {
    t.unwrap_or_default()
}

pub fn to_k8s(s: &SecurityContext) -> corev1::SecurityContext {
    corev1::SecurityContext {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        capabilities: s.capabilities.as_ref().map(|c| corev1::Capabilities {
            add: opt_vec(c.add.clone()),
            drop: opt_vec(c.drop.clone()),
        }),
        allow_privilege_escalation: s.allow_privilege_escalation,
        read_only_root_filesystem: s.read_only_root_filesystem,
        privileged: s.privileged,
        seccomp_profile: (!s.seccomp_profile_type.is_empty()).then(|| corev1::SeccompProfile {
            type_: s.seccomp_profile_type.clone(),
            ..Default::default()
        }),
        app_armor_profile: (!s.app_armor_profile_type.is_empty()).then(|| {
            corev1::AppArmorProfile {
                type_: s.app_armor_profile_type.clone(),
                ..Default::default()
            }
        }),
        proc_mount: opt(&s.proc_mount),
        ..Default::default()
    }
}

pub fn from_k8s(s: corev1::SecurityContext) -> SecurityContext {
    let mut unsupported = Vec::new();
    if s.se_linux_options.is_some() {
        unsupported.push("seLinuxOptions".to_string());
    }
    if s.windows_options.is_some() {
        unsupported.push("windowsOptions".to_string());
    }
    SecurityContext {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        capabilities: s.capabilities.map(|c| Capabilities {
            add: c.add.unwrap_or_default(),
            drop: c.drop.unwrap_or_default(),
        }),
        allow_privilege_escalation: s.allow_privilege_escalation,
        read_only_root_filesystem: s.read_only_root_filesystem,
        privileged: s.privileged,
        seccomp_profile_type: profile_type(s.seccomp_profile.map(|p| p.type_)),
        app_armor_profile_type: profile_type(s.app_armor_profile.map(|p| p.type_)),
        proc_mount: s.proc_mount.unwrap_or_default(),
        unsupported,
        ..Default::default()
    }
}

pub fn pod_to_k8s(p: &PodSecurityContext) -> corev1::PodSecurityContext {
    corev1::PodSecurityContext {
        run_as_user: p.run_as_user,
        run_as_group: p.run_as_group,
        run_as_non_root: p.run_as_non_root,
        supplemental_groups: opt_vec(p.supplemental_groups.clone()),
        fs_group: p.fs_group,
        fs_group_change_policy: opt(&p.fs_group_change_policy),
        seccomp_profile: (!p.seccomp_profile_type.is_empty()).then(|| corev1::SeccompProfile {
            type_: p.seccomp_profile_type.clone(),
            ..Default::default()
        }),
        app_armor_profile: (!p.app_armor_profile_type.is_empty()).then(|| {
            corev1::AppArmorProfile {
                type_: p.app_armor_profile_type.clone(),
                ..Default::default()
            }
        }),
        ..Default::default()
    }
}

pub fn pod_from_k8s(p: corev1::PodSecurityContext) -> PodSecurityContext {
    let mut unsupported = Vec::new();
    for (set, name) in [
        (p.se_linux_options.is_some(), "seLinuxOptions"),
        (p.windows_options.is_some(), "windowsOptions"),
        (p.sysctls.as_ref().is_some_and(|s| !s.is_empty()), "sysctls"),
        (p.se_linux_change_policy.is_some(), "seLinuxChangePolicy"),
        (
            p.supplemental_groups_policy
                .as_deref()
                .is_some_and(|s| s != "Merge"),
            "supplementalGroupsPolicy",
        ),
    ] {
        if set {
            unsupported.push(name.to_string());
        }
    }
    PodSecurityContext {
        run_as_user: p.run_as_user,
        run_as_group: p.run_as_group,
        run_as_non_root: p.run_as_non_root,
        supplemental_groups: p.supplemental_groups.unwrap_or_default(),
        fs_group: p.fs_group,
        fs_group_change_policy: p.fs_group_change_policy.unwrap_or_default(),
        seccomp_profile_type: profile_type(p.seccomp_profile.map(|s| s.type_)),
        app_armor_profile_type: profile_type(p.app_armor_profile.map(|s| s.type_)),
        unsupported,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_what_does_not_convert() {
        let s = SecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(0),
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
        let k = to_k8s(&s);
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(json["runAsUser"], 1000);
        assert_eq!(json["capabilities"]["drop"][0], "ALL");
        assert_eq!(json["seccompProfile"]["type"], "Unconfined");
        assert_eq!(from_k8s(k), s);
        let k: corev1::SecurityContext =
            serde_json::from_value(serde_json::json!({"seLinuxOptions": {"level": "s0"}})).unwrap();
        assert_eq!(from_k8s(k).unsupported, vec!["seLinuxOptions"]);

        let p = PodSecurityContext {
            run_as_user: Some(1000),
            fs_group: Some(2000),
            supplemental_groups: vec![3],
            ..Default::default()
        };
        assert_eq!(pod_from_k8s(pod_to_k8s(&p)), p);
        let k: corev1::PodSecurityContext = serde_json::from_value(
            serde_json::json!({"sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}]}),
        )
        .unwrap();
        assert_eq!(pod_from_k8s(k).unsupported, vec!["sysctls"]);
    }
}
