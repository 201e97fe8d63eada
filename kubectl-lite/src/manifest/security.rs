//! Manifest fields of issue 13: pod and container `securityContext`, `lifecycle`. Keys kube-lite
//! cannot honour (seLinuxOptions, windowsOptions, sysctls, ...) are refused by the
//! walker naming them; profile types and procMount are checked by the apiserver.

use super::{join, type_name, Kind, Walker};
use kube_lite_proto::v1::{
    Capabilities, Lifecycle, LifecycleHandler, PodSecurityContext, SecurityContext,
};
use serde_json::{Map, Value};

impl Walker {
    fn opt_bool(&mut self, path: &str, v: Option<&Value>) -> Option<bool> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.err(
                    path,
                    format!("expected a boolean, got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn opt_int(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
        match v {
            None | Some(Value::Null) => None,
            some => Some(self.int(path, some)),
        }
    }

    fn profile_type(&mut self, path: &str, v: Option<&Value>) -> String {
        let Some(m) = self.object(path, v) else {
            return String::new();
        };
        self.unknown(path, m, &["type", "localhostProfile"], Kind::Pod);
        self.string(&join(path, "type"), m.get("type"))
    }

    fn ids(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
    ) -> (Option<i64>, Option<i64>, Option<bool>) {
        (
            self.opt_int(&join(path, "runAsUser"), m.get("runAsUser")),
            self.opt_int(&join(path, "runAsGroup"), m.get("runAsGroup")),
            self.opt_bool(&join(path, "runAsNonRoot"), m.get("runAsNonRoot")),
        )
    }

    pub(super) fn security_context(
        &mut self,
        path: &str,
        v: Option<&Value>,
    ) -> Option<SecurityContext> {
        let m = self.object(path, v)?;
        self.unknown(
            path,
            m,
            &[
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
                "capabilities",
                "allowPrivilegeEscalation",
                "readOnlyRootFilesystem",
                "privileged",
                "seccompProfile",
                "appArmorProfile",
                "procMount",
            ],
            Kind::Pod,
        );
        let (run_as_user, run_as_group, run_as_non_root) = self.ids(path, m);
        let capabilities = match self.object(&join(path, "capabilities"), m.get("capabilities")) {
            Some(c) => {
                let cp = join(path, "capabilities");
                self.unknown(&cp, c, &["add", "drop"], Kind::Pod);
                Some(Capabilities {
                    add: self.strings(&join(&cp, "add"), c.get("add")),
                    drop: self.strings(&join(&cp, "drop"), c.get("drop")),
                })
            }
            None => None,
        };
        Some(SecurityContext {
            run_as_user,
            run_as_group,
            run_as_non_root,
            capabilities,
            allow_privilege_escalation: self.opt_bool(
                &join(path, "allowPrivilegeEscalation"),
                m.get("allowPrivilegeEscalation"),
            ),
            read_only_root_filesystem: self.opt_bool(
                &join(path, "readOnlyRootFilesystem"),
                m.get("readOnlyRootFilesystem"),
            ),
            privileged: self.opt_bool(&join(path, "privileged"), m.get("privileged")),
            seccomp_profile_type: self
                .profile_type(&join(path, "seccompProfile"), m.get("seccompProfile")),
            app_armor_profile_type: self
                .profile_type(&join(path, "appArmorProfile"), m.get("appArmorProfile")),
            proc_mount: self.string(&join(path, "procMount"), m.get("procMount")),
            ..Default::default()
        })
    }

    pub(super) fn pod_security_context(
        &mut self,
        path: &str,
        v: Option<&Value>,
    ) -> Option<PodSecurityContext> {
        let m = self.object(path, v)?;
        self.unknown(
            path,
            m,
            &[
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
                "supplementalGroups",
                "fsGroup",
                "fsGroupChangePolicy",
                "seccompProfile",
                "appArmorProfile",
            ],
            Kind::Pod,
        );
        let (run_as_user, run_as_group, run_as_non_root) = self.ids(path, m);
        let gp = join(path, "supplementalGroups");
        let groups = self
            .array(&gp, m.get("supplementalGroups"))
            .iter()
            .enumerate()
            .map(|(i, g)| self.int(&format!("{gp}[{i}]"), Some(g)))
            .collect();
        Some(PodSecurityContext {
            run_as_user,
            run_as_group,
            run_as_non_root,
            supplemental_groups: groups,
            fs_group: self.opt_int(&join(path, "fsGroup"), m.get("fsGroup")),
            fs_group_change_policy: self.string(
                &join(path, "fsGroupChangePolicy"),
                m.get("fsGroupChangePolicy"),
            ),
            seccomp_profile_type: self
                .profile_type(&join(path, "seccompProfile"), m.get("seccompProfile")),
            app_armor_profile_type: self
                .profile_type(&join(path, "appArmorProfile"), m.get("appArmorProfile")),
            ..Default::default()
        })
    }

    fn handler(&mut self, path: &str, v: Option<&Value>) -> Option<LifecycleHandler> {
        let m = self.object(path, v)?;
        // sleep and tcpSocket: refused here, naming them.
        self.unknown(path, m, &["exec", "httpGet"], Kind::Pod);
        // The handler's own keys read as a probe's (each refusal reported once).
        let own: Map<String, Value> = m
            .iter()
            .filter(|(k, _)| *k == "exec" || *k == "httpGet")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let p = self.probe(path, Some(&Value::Object(own)))?;
        Some(LifecycleHandler {
            exec: p.exec,
            http_get: p.http_get,
            ..Default::default()
        })
    }

    pub(super) fn lifecycle(&mut self, path: &str, v: Option<&Value>) -> Option<Lifecycle> {
        let m = self.object(path, v)?;
        self.unknown(path, m, &["postStart", "preStop"], Kind::Pod);
        Some(Lifecycle {
            post_start: self.handler(&join(path, "postStart"), m.get("postStart")),
            pre_stop: self.handler(&join(path, "preStop"), m.get("preStop")),
        })
    }
}
