//! Endpoints: one Endpoints object per Service with a selector, named like it, listing
//! the ready pods it selects (Running, with an IP, not being deleted, and Ready: the
//! pod's Ready condition True, or no Ready condition at all, as a status written without
//! one by hand), sorted by IP. Selected pods with an IP that are alive but not ready
//! (readiness probe failing, still starting) are listed under `not_ready_addresses`,
//! which the proxies do not send to.
//! A Service without a selector leaves its Endpoints to the user; a deleted Service's
//! Endpoints go with it.
//!
//! The Endpoints of a Service with a selector belong to this controller: a user's
//! create, update or delete of them is refused with FAILED_PRECONDITION
//! ([`check_user_write`]). Kubernetes lets such a write through and reconciles it
//! back; kube-lite refuses it so that the proxies never see the user's version, not
//! even for one revision.
//!
//! Work list: the Services whose Endpoints may have changed since the last batch (the
//! Service itself changed, or a pod it selects, selected, changed in what counts).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use kube_lite_core::consts::{condition, condition_status, phase};
use kube_lite_core::{ObjectRef, Resource};
use kube_lite_proto::labels::map_matches;
use kube_lite_proto::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectMeta, Pod, Service,
    ServicePort, ServiceSpec,
};

use crate::error::ApiError;
use crate::resource::{Kind, Object};
use crate::store::{Change, Hook, Objects, Txn};

/// What the endpoints controller looks at in a pod.
#[derive(Debug, PartialEq)]
pub struct PodView<'a> {
    /// Running with an IP, not being deleted, and Ready.
    pub ready: bool,
    /// Pending or Running with an IP, not being deleted, not ready.
    pub not_ready: bool,
    pub ip: &'a str,
    pub node: &'a str,
    pub labels: &'a HashMap<String, String>,
}

impl<'a> PodView<'a> {
    pub fn of(p: &'a Pod) -> PodView<'a> {
        let st = p.status.as_ref();
        let alive = st.is_some_and(|s| {
            (s.phase == phase::RUNNING || s.phase == phase::PENDING) && !s.pod_ip.is_empty()
        }) && p.meta().deletion_timestamp == 0;
        let ready = alive
            && st.is_some_and(|s| {
                s.phase == phase::RUNNING
                    && s.conditions
                        .iter()
                        .find(|c| c.r#type == condition::READY)
                        .is_none_or(|c| c.status == condition_status::TRUE)
            });
        PodView {
            ready,
            not_ready: alive && !ready,
            ip: st.map(|s| s.pod_ip.as_str()).unwrap_or(""),
            node: p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or(""),
            labels: p.labels(),
        }
    }
}

/// The target port of Service port `sp` on pod `p`: the number, or for a named
/// `target_port_name` the pod's container port of that name and protocol (`None`: the
/// pod has no such port, as Kubernetes' `findPort`).
pub fn resolve_target_port(sp: &ServicePort, p: &Pod) -> Option<i32> {
    if sp.target_port_name.is_empty() {
        return Some(sp.target_port);
    }
    let proto = |s: &str| {
        if s.is_empty() {
            "TCP".to_string()
        } else {
            s.to_ascii_uppercase()
        }
    };
    p.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|cp| cp.name == sp.target_port_name && proto(&cp.protocol) == proto(&sp.protocol))
        .map(|cp| cp.container_port)
}

/// The subsets for a Service with `spec`, from the pods of its namespace: the selected
/// pods with an IP grouped by their resolved target ports (named target ports may
/// resolve to different numbers on different pods: one subset per distinct port set,
/// ordered by it), the ready ones under `addresses` and the unready ones under
/// `not_ready_addresses` (by IP, then name), or none when no selected pod has an IP. A
/// pod on which no port of the Service resolves is no endpoint; one on which some ports
/// resolve serves those. A Service without ports (headless) lists its pods with no ports.
pub fn desired_subsets<'a>(
    spec: &ServiceSpec,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<EndpointSubset> {
    type PortKey = Vec<(String, i32, String)>;
    type Addrs = Vec<(Ipv4Addr, EndpointAddress)>;
    let mut groups: BTreeMap<PortKey, (Addrs, Addrs)> = BTreeMap::new();
    for p in pods {
        let v = PodView::of(p);
        if !(v.ready || v.not_ready) || !map_matches(&spec.selector, v.labels) {
            continue;
        }
        let ports: PortKey = spec
            .ports
            .iter()
            .filter_map(|sp| {
                resolve_target_port(sp, p).map(|n| (sp.name.clone(), n, sp.protocol.clone()))
            })
            .collect();
        if ports.is_empty() && !spec.ports.is_empty() {
            continue;
        }
        let group = groups.entry(ports).or_default();
        let list = if v.ready { &mut group.0 } else { &mut group.1 };
        list.push((
            v.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            EndpointAddress {
                ip: v.ip.to_string(),
                node_name: v.node.to_string(),
                pod_name: p.name().to_string(),
            },
        ));
    }
    let sorted = |mut v: Addrs| {
        v.sort_by(|a, b| (a.0, &a.1.pod_name).cmp(&(b.0, &b.1.pod_name)));
        v.into_iter().map(|(_, a)| a).collect::<Vec<_>>()
    };
    groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: sorted(ready),
            not_ready_addresses: sorted(not_ready),
            ports: ports
                .into_iter()
                .map(|(name, port, protocol)| EndpointPort {
                    name,
                    port,
                    protocol,
                })
                .collect(),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Delete,
    /// A new Endpoints (the writer adds uid and creation time).
    Create(Endpoints),
    Update(Endpoints),
}

/// What to do with the Endpoints `key` of Service `svc` (`None`: deleted), given the
/// existing Endpoints and the pods of the namespace. `None`: nothing.
pub fn decide<'a>(
    key: &ObjectRef,
    svc: Option<&Service>,
    existing: Option<&Endpoints>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<Action> {
    let Some(svc) = svc else {
        return existing.map(|_| Action::Delete);
    };
    let spec = svc.spec.as_ref().filter(|s| !s.selector.is_empty())?;
    let subsets = desired_subsets(spec, pods);
    match existing {
        Some(e) if e.subsets == subsets => None,
        Some(e) => {
            let mut e = e.clone();
            e.subsets = subsets;
            Some(Action::Update(e))
        }
        None => Some(Action::Create(Endpoints {
            metadata: Some(ObjectMeta {
                name: key.name.clone(),
                namespace: key.namespace.clone(),
                labels: svc.labels().clone(),
                ..Default::default()
            }),
            subsets,
        })),
    }
}

/// Whether a user (not this controller) may write the Endpoints `key`: not while the
/// Service of that name has a selector (FAILED_PRECONDITION, naming why).
pub fn check_user_write(objects: &Objects, key: &ObjectRef) -> Result<(), ApiError> {
    let managed = objects
        .get(Kind::Service, key)
        .and_then(|o| o.as_service())
        .and_then(|s| s.spec.as_ref())
        .is_some_and(|s| !s.selector.is_empty());
    if managed {
        return Err(ApiError::FailedPrecondition(format!(
            "endpoints \"{key}\" are managed by the endpoints controller because service \"{key}\" has a selector; remove the selector to manage them by hand"
        )));
    }
    Ok(())
}

#[derive(Default)]
pub struct EndpointsController {
    /// Services whose Endpoints must be recomputed.
    dirty: BTreeSet<ObjectRef>,
}

impl Hook for EndpointsController {
    fn observe(&mut self, objects: &Objects, change: &Change<'_>) {
        match change.kind {
            Kind::Service => {
                if let Some(o) = change.prev.or(change.new) {
                    self.dirty.insert(o.key());
                }
            }
            Kind::Pod => {
                let v0 = change.prev.and_then(Object::as_pod).map(PodView::of);
                let v1 = change.new.and_then(Object::as_pod).map(PodView::of);
                if v0 == v1 {
                    return;
                }
                let ns = change
                    .prev
                    .or(change.new)
                    .map(|o| o.meta().namespace.as_str())
                    .unwrap_or("");
                for (k, svc) in objects.in_namespace(Kind::Service, ns) {
                    let Some(sel) = svc
                        .as_service()
                        .and_then(|s| s.spec.as_ref())
                        .map(|s| &s.selector)
                        .filter(|s| !s.is_empty())
                    else {
                        continue;
                    };
                    let hit = |v: &Option<PodView<'_>>| {
                        v.as_ref().is_some_and(|v| map_matches(sel, v.labels))
                    };
                    if hit(&v0) || hit(&v1) {
                        self.dirty.insert(k.clone());
                    }
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, txn: &mut Txn<'_>) {
        for key in std::mem::take(&mut self.dirty) {
            let objects = txn.objects();
            let svc = objects
                .get(Kind::Service, &key)
                .and_then(|o| o.as_service());
            let existing = objects
                .get(Kind::Endpoints, &key)
                .and_then(|o| o.as_endpoints());
            let pods = objects
                .in_namespace(Kind::Pod, &key.namespace)
                .filter_map(|(_, o)| o.as_pod());
            match decide(&key, svc, existing, pods) {
                None => {}
                Some(Action::Delete) => {
                    txn.remove(Kind::Endpoints, &key);
                }
                Some(Action::Update(e)) => {
                    txn.put(Object::Endpoints(e));
                }
                Some(Action::Create(mut e)) => {
                    let m = e.meta_mut();
                    m.uid = uuid::Uuid::new_v4().to_string();
                    m.creation_timestamp = txn.now_ms;
                    txn.put(Object::Endpoints(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn pod(name: &str, app: &str, phase: &str, ip: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                pod_ip: ip.into(),
                ..Default::default()
            }),
        }
    }

    fn svc(selector: &[(&str, &str)]) -> Service {
        Service {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                labels: [("tier".to_string(), "front".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: 8080,
                    protocol: "TCP".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn with_port(mut p: Pod, name: &str, n: i32) -> Pod {
        p.spec.as_mut().unwrap().containers.push(Container {
            name: "c".into(),
            ports: vec![ContainerPort {
                name: name.into(),
                container_port: n,
                protocol: "TCP".into(),
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let mut s = svc(&[("app", "web")]);
        let sp = &mut s.spec.as_mut().unwrap().ports[0];
        sp.target_port = 0;
        sp.target_port_name = "web".into();
        let pods = [
            with_port(pod("a", "web", "Running", "10.0.1.2"), "web", 8080),
            with_port(pod("b", "web", "Running", "10.0.1.3"), "web", 9090),
            with_port(pod("c", "web", "Running", "10.0.1.4"), "web", 8080),
            // No port of that name: not an endpoint.
            with_port(pod("d", "web", "Running", "10.0.1.5"), "other", 8080),
            pod("e", "web", "Running", "10.0.1.6"),
        ];
        let subsets = desired_subsets(s.spec.as_ref().unwrap(), &pods);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        assert_eq!(ips(&subsets[..1]), ["10.0.1.2", "10.0.1.4"]);
        assert_eq!(subsets[0].ports[0].port, 8080);
        assert_eq!(subsets[0].ports[0].name, "http");
        assert_eq!(ips(&subsets[1..]), ["10.0.1.3"]);
        assert_eq!(subsets[1].ports[0].port, 9090);
        // The protocol must match too.
        let mut udp = s.clone();
        udp.spec.as_mut().unwrap().ports[0].protocol = "UDP".into();
        assert!(desired_subsets(udp.spec.as_ref().unwrap(), &pods).is_empty());
    }

    #[test]
    fn headless_without_ports_lists_pods() {
        let mut s = svc(&[("app", "web")]);
        let spec = s.spec.as_mut().unwrap();
        spec.ports.clear();
        spec.cluster_ip = "None".into();
        let pods = [pod("a", "web", "Running", "10.0.1.2")];
        let subsets = desired_subsets(s.spec.as_ref().unwrap(), &pods);
        assert_eq!(ips(&subsets), ["10.0.1.2"]);
        assert!(subsets[0].ports.is_empty());
    }

    fn ips(subsets: &[EndpointSubset]) -> Vec<&str> {
        subsets
            .iter()
            .flat_map(|s| &s.addresses)
            .map(|a| a.ip.as_str())
            .collect()
    }

    #[test]
    fn subsets_hold_ready_selected_pods_by_ip() {
        let mut deleting = pod("d", "web", "Running", "10.0.1.9");
        deleting.meta_mut().deletion_timestamp = 1;
        let pods = [
            pod("b", "web", "Running", "10.0.1.10"),
            pod("a", "web", "Running", "10.0.1.9"),
            pod("c", "web", "Pending", "10.0.1.2"),
            pod("e", "web", "Running", ""),
            pod("f", "db", "Running", "10.0.1.3"),
            deleting,
        ];
        let s = desired_subsets(svc(&[("app", "web")]).spec.as_ref().unwrap(), &pods);
        assert_eq!(ips(&s), ["10.0.1.9", "10.0.1.10"], "numeric IP order");
        let nr: Vec<&str> = s[0]
            .not_ready_addresses
            .iter()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(nr, ["10.0.1.2"], "the Pending pod with an IP is not ready");
        assert_eq!(s[0].addresses[0].pod_name, "a");
        assert_eq!(s[0].addresses[0].node_name, "n1");
        assert_eq!(
            s[0].ports,
            [EndpointPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into()
            }]
        );
        assert!(desired_subsets(svc(&[("app", "x")]).spec.as_ref().unwrap(), &pods).is_empty());
    }

    #[test]
    fn readiness_condition_moves_pods_between_addresses_and_not_ready() {
        let with_ready = |name: &str, ip: &str, ready: &str| {
            let mut p = pod(name, "web", "Running", ip);
            p.status.as_mut().unwrap().conditions = vec![kube_lite_proto::v1::PodCondition {
                r#type: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }];
            p
        };
        let pods = [
            with_ready("a", "10.0.1.2", "True"),
            with_ready("b", "10.0.1.3", "False"),
            pod("c", "web", "Running", "10.0.1.4"), // no condition: ready
        ];
        let s = desired_subsets(svc(&[("app", "web")]).spec.as_ref().unwrap(), &pods);
        assert_eq!(ips(&s), ["10.0.1.2", "10.0.1.4"]);
        assert_eq!(s[0].not_ready_addresses.len(), 1);
        assert_eq!(s[0].not_ready_addresses[0].pod_name, "b");
        // All unready: one subset with no addresses (the proxies send nowhere).
        let s = desired_subsets(
            svc(&[("app", "web")]).spec.as_ref().unwrap(),
            &[with_ready("b", "10.0.1.3", "False")],
        );
        assert!(ips(&s).is_empty());
        assert_eq!(s[0].not_ready_addresses.len(), 1);
        // A change of readiness alone is a change the controller sees.
        assert_ne!(
            PodView::of(&pods[0]),
            PodView::of(&with_ready("a", "10.0.1.2", "False"))
        );
    }

    #[test]
    fn decide_creates_updates_deletes_or_leaves() {
        let key = ObjectRef::new("default", "web");
        let s = svc(&[("app", "web")]);
        let pods = [pod("a", "web", "Running", "10.0.1.9")];
        let Some(Action::Create(e)) = decide(&key, Some(&s), None, &pods) else {
            panic!("expected create")
        };
        assert_eq!(e.meta().name, "web");
        assert_eq!(e.labels().get("tier").map(String::as_str), Some("front"));
        assert_eq!(ips(&e.subsets), ["10.0.1.9"]);
        assert_eq!(decide(&key, Some(&s), Some(&e), &pods), None, "unchanged");
        let Some(Action::Update(u)) = decide(&key, Some(&s), Some(&e), &[]) else {
            panic!("expected update")
        };
        assert!(u.subsets.is_empty());
        assert_eq!(decide(&key, None, Some(&e), &pods), Some(Action::Delete));
        assert_eq!(decide(&key, None, None, &pods), None);
        assert_eq!(
            decide(&key, Some(&svc(&[])), Some(&e), &[]),
            None,
            "no selector: user-managed"
        );
    }

    #[test]
    fn users_may_not_write_the_endpoints_of_a_selector_service() {
        let mut objects = Objects::default();
        let key = ObjectRef::new("default", "web");
        assert!(check_user_write(&objects, &key).is_ok(), "no service");
        objects.insert(Object::Service(svc(&[])));
        assert!(check_user_write(&objects, &key).is_ok(), "no selector");
        objects.insert(Object::Service(svc(&[("app", "web")])));
        let e = check_user_write(&objects, &key).unwrap_err();
        assert!(
            matches!(&e, ApiError::FailedPrecondition(m) if m.contains("has a selector")),
            "{e:?}"
        );
        assert!(check_user_write(&objects, &ObjectRef::new("other", "web")).is_ok());
    }

    #[test]
    fn only_relevant_pod_changes_mark_services() {
        let mut objects = Objects::default();
        objects.insert(Object::Service(svc(&[("app", "web")])));
        let mut h = EndpointsController::default();
        let web = Object::Pod(pod("a", "web", "Pending", ""));
        let db = Object::Pod(pod("b", "db", "Running", "10.0.1.3"));
        let ch = |prev, new| Change {
            kind: Kind::Pod,
            prev,
            new,
        };
        h.observe(&objects, &ch(None, Some(&db)));
        assert!(h.dirty.is_empty(), "not selected");
        h.observe(&objects, &ch(None, Some(&web)));
        assert_eq!(h.dirty.len(), 1);
        h.dirty.clear();
        h.observe(&objects, &ch(Some(&web), Some(&web)));
        assert!(h.dirty.is_empty(), "nothing that counts changed");
        let running = Object::Pod(pod("a", "web", "Running", "10.0.1.9"));
        h.observe(&objects, &ch(Some(&web), Some(&running)));
        assert!(h.dirty.contains(&ObjectRef::new("default", "web")));
    }
}
