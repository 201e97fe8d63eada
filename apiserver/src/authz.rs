//! Authorization (issue 14): who may do what, as a pure function ([`authorize`]) over
//! the caller's [`Identity`], the request's [`Attrs`] and what the rule needs to know of
//! the stored objects ([`Graph`]).
//!
//! - Admins (group `system:masters`) may do everything.
//! - Nodes (`system:node:<name>` in `system:nodes`): Kubernetes' Node authorizer and
//!   NodeRestriction admission together:
//!   * nodes: read all; create, update, update the status of and delete only their own;
//!   * pods: read all (the agent watches by node name); update the status of and delete
//!     only pods bound to them; never create, update the spec, or read logs;
//!   * services, endpoints: read only;
//!   * secrets, configmaps (by kind name, whichever kinds exist): `get` only those a pod
//!     bound to the node references ([`Graph::referenced_by_pod_on`]); never list/watch;
//!   * events: create (and update: Kubernetes' event recorder patches counts);
//!   * leases: their own lease (`kube-node-lease/<node>`) only.
//! - Everyone else: nothing.
//!
//! Denials read as Kubernetes': `User "system:node:n1" cannot update_status pods
//! "default/web": pod is bound to node "n2", not "n1"`.

use kube_lite_pki::Identity;

/// The verbs of the API (the gRPC methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    UpdateStatus,
    Delete,
    Logs,
    Exec,
    /// NodeApi.LoadImage (an image archive onto a node): admins only.
    LoadImage,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::UpdateStatus => "update_status",
            Verb::Delete => "delete",
            Verb::Logs => "logs",
            Verb::Exec => "exec",
            Verb::LoadImage => "load_image",
        }
    }
    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// What a request asks for: the verb on a kind (lowercase plural, `pods`), and the
/// object's namespace and name (empty for List/Watch, or the namespace filter).
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    pub verb: Verb,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// What the node rules need to know about stored objects.
pub trait Graph {
    /// The node a stored pod is bound to ("" if none, `None` if no such pod).
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String>;
    /// Whether a pod bound to `node` references the object `kind` `namespace/name`
    /// (a Secret or ConfigMap through its volumes, env or image pull secrets).
    fn referenced_by_pod_on(&self, node: &str, kind: &str, namespace: &str, name: &str) -> bool;
}

/// Namespace of the nodes' heartbeat leases (Kubernetes').
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// `Ok` when `id` may do `a`, else the PERMISSION_DENIED message.
pub fn authorize(id: &Identity, a: &Attrs<'_>, g: &dyn Graph) -> Result<(), String> {
    if id.is_admin() {
        return Ok(());
    }
    let deny = |why: &str| {
        let obj = match (a.namespace, a.name) {
            (_, "") if a.namespace.is_empty() => String::new(),
            ("", name) => format!(" {name:?}"),
            (ns, "") => format!(" in namespace {ns:?}"),
            (ns, name) => format!(" \"{ns}/{name}\""),
        };
        Err(format!(
            "User {:?} cannot {} {}{obj}: {why}",
            id.user,
            a.verb.as_str(),
            a.kind
        ))
    };
    let Some(node) = id.node_name() else {
        return deny("not an admin or a node identity");
    };
    match a.kind {
        "nodes" => {
            if a.verb.reads() {
                Ok(())
            } else if matches!(a.verb, Verb::Logs | Verb::Exec) {
                deny("nodes have no logs")
            } else if a.verb == Verb::LoadImage {
                deny("only admins load images onto nodes")
            } else if a.name == node {
                Ok(())
            } else {
                deny(&format!("a node may only change its own Node ({node:?})"))
            }
        }
        "pods" => match a.verb {
            v if v.reads() => Ok(()),
            Verb::UpdateStatus | Verb::Delete => match g.pod_node(a.namespace, a.name) {
                Some(n) if n == node => Ok(()),
                Some(n) if n.is_empty() => deny("the pod is not bound to a node"),
                Some(n) => deny(&format!("the pod is bound to node {n:?}, not {node:?}")),
                // Let the handler answer NOT_FOUND the same way for everyone.
                None => Ok(()),
            },
            Verb::Create => deny("nodes may not create pods"),
            Verb::Update => deny("nodes may only update the status of their pods"),
            Verb::Exec => deny("nodes may not exec in pods"),
            _ => deny("nodes may not read pod logs through the apiserver"),
        },
        "services" | "endpoints" => {
            if a.verb.reads() {
                Ok(())
            } else {
                deny("nodes may only read services and endpoints")
            }
        }
        "secrets" | "configmaps" => match a.verb {
            Verb::Get if g.referenced_by_pod_on(node, a.kind, a.namespace, a.name) => Ok(()),
            Verb::Get => deny(&format!("no pod bound to node {node:?} references it")),
            _ => deny(&format!(
                "nodes may only get the {} their pods reference",
                a.kind
            )),
        },
        "events" => match a.verb {
            Verb::Create | Verb::Update => Ok(()),
            _ => deny("nodes may only create events"),
        },
        "leases" => {
            if a.namespace == NODE_LEASE_NAMESPACE && (a.name == node || a.verb.reads()) {
                Ok(())
            } else {
                deny(&format!(
                    "a node may only use its own lease ({NODE_LEASE_NAMESPACE}/{node})"
                ))
            }
        }
        _ => deny("not allowed for nodes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Pods (ns/name → node) and references (node → [(kind, ns, name)]).
    #[derive(Default)]
    struct Fake {
        pods: BTreeMap<(String, String), String>,
        refs: Vec<(String, String, String, String)>,
    }

    impl Graph for Fake {
        fn pod_node(&self, ns: &str, name: &str) -> Option<String> {
            self.pods.get(&(ns.to_string(), name.to_string())).cloned()
        }
        fn referenced_by_pod_on(&self, node: &str, kind: &str, ns: &str, name: &str) -> bool {
            self.refs
                .iter()
                .any(|(n, k, s, m)| n == node && k == kind && s == ns && m == name)
        }
    }

    fn at<'a>(verb: Verb, kind: &'a str, ns: &'a str, name: &'a str) -> Attrs<'a> {
        Attrs {
            verb,
            kind,
            namespace: ns,
            name,
        }
    }

    fn world() -> Fake {
        let mut f = Fake::default();
        f.pods
            .insert(("default".into(), "mine".into()), "n1".into());
        f.pods
            .insert(("default".into(), "theirs".into()), "n2".into());
        f.pods
            .insert(("default".into(), "pending".into()), "".into());
        f.refs
            .push(("n1".into(), "secrets".into(), "default".into(), "db".into()));
        f.refs.push((
            "n2".into(),
            "configmaps".into(),
            "default".into(),
            "other".into(),
        ));
        f
    }

    #[test]
    fn admins_may_do_everything() {
        let g = world();
        for v in [
            Verb::Create,
            Verb::Delete,
            Verb::Logs,
            Verb::Exec,
            Verb::List,
        ] {
            assert!(authorize(&Identity::admin(), &at(v, "secrets", "x", "y"), &g).is_ok());
        }
    }

    #[test]
    fn only_admins_load_images() {
        let g = world();
        let a = at(Verb::LoadImage, "nodes", "", "n1");
        assert!(authorize(&Identity::admin(), &a, &g).is_ok());
        let e = authorize(&Identity::node("n1"), &a, &g).unwrap_err();
        assert!(
            e.contains("cannot load_image nodes \"n1\"") && e.contains("only admins"),
            "{e}"
        );
    }

    #[test]
    fn nodes_change_only_their_own_node() {
        let g = world();
        let n1 = Identity::node("n1");
        for v in [Verb::Create, Verb::Update, Verb::UpdateStatus, Verb::Delete] {
            assert!(
                authorize(&n1, &at(v, "nodes", "", "n1"), &g).is_ok(),
                "{v:?}"
            );
            let e = authorize(&n1, &at(v, "nodes", "", "n2"), &g).unwrap_err();
            assert!(
                e.contains("system:node:n1") && e.contains(v.as_str()),
                "{e}"
            );
        }
        assert!(authorize(&n1, &at(Verb::List, "nodes", "", ""), &g).is_ok());
        assert!(authorize(&n1, &at(Verb::Get, "nodes", "", "n2"), &g).is_ok());
    }

    #[test]
    fn nodes_touch_only_pods_bound_to_them() {
        let g = world();
        let n1 = Identity::node("n1");
        assert!(authorize(&n1, &at(Verb::UpdateStatus, "pods", "default", "mine"), &g).is_ok());
        assert!(authorize(&n1, &at(Verb::Delete, "pods", "default", "mine"), &g).is_ok());
        let e = authorize(
            &n1,
            &at(Verb::UpdateStatus, "pods", "default", "theirs"),
            &g,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "User \"system:node:n1\" cannot update_status pods \"default/theirs\": \
             the pod is bound to node \"n2\", not \"n1\""
        );
        assert!(authorize(&n1, &at(Verb::Delete, "pods", "default", "pending"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Create, "pods", "default", "new"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Update, "pods", "default", "mine"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Logs, "pods", "default", "mine"), &g).is_err());
        // Not even in its own pods (kube-lite's choice: exec is for people).
        assert_eq!(
            authorize(&n1, &at(Verb::Exec, "pods", "default", "mine"), &g).unwrap_err(),
            "User \"system:node:n1\" cannot exec pods \"default/mine\": nodes may not exec in pods"
        );
        assert!(authorize(&n1, &at(Verb::Watch, "pods", "", ""), &g).is_ok());
    }

    #[test]
    fn nodes_read_services_and_write_nothing_else() {
        let g = world();
        let n1 = Identity::node("n1");
        assert!(authorize(&n1, &at(Verb::List, "services", "", ""), &g).is_ok());
        assert!(authorize(&n1, &at(Verb::Watch, "endpoints", "", ""), &g).is_ok());
        assert!(authorize(&n1, &at(Verb::Create, "services", "default", "s"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Update, "endpoints", "default", "s"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Get, "deployments", "default", "d"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Create, "events", "default", "e"), &g).is_ok());
        assert!(authorize(&n1, &at(Verb::Delete, "events", "default", "e"), &g).is_err());
    }

    #[test]
    fn nodes_get_only_referenced_secrets_and_configmaps() {
        let g = world();
        let n1 = Identity::node("n1");
        assert!(authorize(&n1, &at(Verb::Get, "secrets", "default", "db"), &g).is_ok());
        let e = authorize(&n1, &at(Verb::Get, "configmaps", "default", "other"), &g).unwrap_err();
        assert!(
            e.contains("no pod bound to node \"n1\" references it"),
            "{e}"
        );
        assert!(authorize(&n1, &at(Verb::Get, "secrets", "other", "db"), &g).is_err());
        assert!(authorize(&n1, &at(Verb::List, "secrets", "default", ""), &g).is_err());
        assert!(authorize(&n1, &at(Verb::Watch, "configmaps", "", ""), &g).is_err());
        // The referencing pod's node may.
        let n2 = Identity::node("n2");
        assert!(authorize(&n2, &at(Verb::Get, "configmaps", "default", "other"), &g).is_ok());
    }

    #[test]
    fn leases_only_their_own() {
        let g = world();
        let n1 = Identity::node("n1");
        assert!(authorize(
            &n1,
            &at(Verb::Update, "leases", NODE_LEASE_NAMESPACE, "n1"),
            &g
        )
        .is_ok());
        assert!(authorize(
            &n1,
            &at(Verb::Update, "leases", NODE_LEASE_NAMESPACE, "n2"),
            &g
        )
        .is_err());
        assert!(authorize(&n1, &at(Verb::Update, "leases", "default", "n1"), &g).is_err());
    }

    #[test]
    fn others_may_do_nothing() {
        let g = world();
        let bob = Identity::new("bob", &["devs"]);
        let e = authorize(&bob, &at(Verb::List, "pods", "", ""), &g).unwrap_err();
        assert_eq!(
            e,
            "User \"bob\" cannot list pods: not an admin or a node identity"
        );
        let api = Identity::new(kube_lite_pki::APISERVER_CLIENT_USER, &[]);
        assert!(authorize(&api, &at(Verb::Get, "nodes", "", "n1"), &g).is_err());
    }
}
