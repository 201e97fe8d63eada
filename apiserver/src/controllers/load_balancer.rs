//! LoadBalancer Services the way k3s's ServiceLB serves a laptop: every Ready node
//! serves a LoadBalancer Service's ports on its own address (the node proxies render
//! `-d <ingress IP> --dport <port>` rules from `status.load_balancer_ingress`), so the
//! ingress addresses are the nodes' addresses.
//!
//! Port clashes: one address serves one Service per (port, protocol). LoadBalancer
//! Services claim their ports oldest first (creation time, then namespace/name); a
//! Service whose port is already claimed on an address does not get that address (as
//! ServiceLB's svclb pod stays Pending on that node). The outcome is the Service's
//! condition `LoadBalancerPortsAllocated`: `True` (reason `Allocated`) when every Ready
//! node serves it, else `False` with reason `PortInUse` and a message naming the port,
//! the addresses and the Service holding them. A Service refused everywhere keeps no
//! ingress (kubectl shows `<pending>`). When the older Service goes away, the next
//! batch gives the address to the younger one.
//!
//! Work: the status of every LoadBalancer Service is recomputed at the end of a batch
//! that changed a Service or a Node's address/readiness (there are few of them: the
//! decision is over all LoadBalancer Services at once, since a clash is between two).
//! A Service that is not (or no longer) a LoadBalancer gets its ingress and condition
//! cleared.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use kube_lite_core::consts::{condition, condition_status, service_type};
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::{LoadBalancerIngress, Node, Service, ServiceCondition, ServiceStatus};

use crate::resource::{Kind, Object};
use crate::store::{Change, Hook, Objects, Txn};

/// The Service condition this controller owns.
pub const CONDITION: &str = "LoadBalancerPortsAllocated";
pub const REASON_ALLOCATED: &str = "Allocated";
pub const REASON_PORT_IN_USE: &str = "PortInUse";

/// A Ready node's address (status.address, else spec.address), if it has one.
pub fn node_address(n: &Node) -> Option<Ipv4Addr> {
    if n.metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp != 0)
    {
        return None;
    }
    let ready = n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == condition::READY && c.status == condition_status::TRUE)
    });
    if !ready {
        return None;
    }
    let st = n.status.as_ref().map(|s| s.address.as_str()).unwrap_or("");
    let sp = n.spec.as_ref().map(|s| s.address.as_str()).unwrap_or("");
    [st, sp].iter().find_map(|a| a.parse().ok())
}

fn is_lb(s: &Service) -> bool {
    s.spec
        .as_ref()
        .is_some_and(|s| s.r#type == service_type::LOAD_BALANCER)
}

fn ports(s: &Service) -> BTreeSet<(i32, String)> {
    s.spec
        .iter()
        .flat_map(|s| &s.ports)
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                "TCP".to_string()
            } else {
                p.protocol.clone()
            };
            (p.port, proto)
        })
        .collect()
}

/// The status every LoadBalancer Service should have, given the Ready nodes'
/// addresses; `services` in any order (sorted here: oldest first). Pure.
pub fn decide(
    services: &[(ObjectRef, &Service)],
    nodes: &BTreeSet<Ipv4Addr>,
) -> BTreeMap<ObjectRef, ServiceStatus> {
    let mut lbs: Vec<&(ObjectRef, &Service)> = services.iter().filter(|(_, s)| is_lb(s)).collect();
    lbs.sort_by_key(|(k, s)| {
        (
            s.metadata
                .as_ref()
                .map(|m| m.creation_timestamp)
                .unwrap_or(0),
            k.namespace.clone(),
            k.name.clone(),
        )
    });
    // (address, port, protocol) → the Service serving it.
    let mut claimed: BTreeMap<(Ipv4Addr, i32, String), ObjectRef> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (key, svc) in lbs {
        let want = ports(svc);
        let mut ingress = Vec::new();
        // (port/proto, holder) → addresses refused for it.
        let mut clashes: BTreeMap<(String, String), Vec<Ipv4Addr>> = BTreeMap::new();
        for addr in nodes {
            let mut free = true;
            for (port, proto) in &want {
                if let Some(holder) = claimed.get(&(*addr, *port, proto.clone())) {
                    free = false;
                    clashes
                        .entry((format!("{port}/{proto}"), holder.to_string()))
                        .or_default()
                        .push(*addr);
                }
            }
            if free {
                for (port, proto) in &want {
                    claimed.insert((*addr, *port, proto.clone()), key.clone());
                }
                ingress.push(LoadBalancerIngress {
                    ip: addr.to_string(),
                });
            }
        }
        let cond = if nodes.is_empty() {
            ServiceCondition {
                r#type: CONDITION.into(),
                status: condition_status::FALSE.into(),
                reason: "NoReadyNodes".into(),
                message: "no Ready node with an address to serve it".into(),
            }
        } else if clashes.is_empty() {
            ServiceCondition {
                r#type: CONDITION.into(),
                status: condition_status::TRUE.into(),
                reason: REASON_ALLOCATED.into(),
                message: format!("served on {} node address(es)", ingress.len()),
            }
        } else {
            let parts: Vec<String> = clashes
                .iter()
                .map(|((port, holder), addrs)| {
                    let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                    format!(
                        "port {port} on {} is already used by service {holder}",
                        a.join(",")
                    )
                })
                .collect();
            ServiceCondition {
                r#type: CONDITION.into(),
                status: condition_status::FALSE.into(),
                reason: REASON_PORT_IN_USE.into(),
                message: parts.join("; "),
            }
        };
        let mut st = svc.status.clone().unwrap_or_default();
        st.load_balancer_ingress = ingress;
        st.conditions.retain(|c| c.r#type != CONDITION);
        st.conditions.push(cond);
        out.insert(key.clone(), st);
    }
    out
}

/// The status of a Service that is not a LoadBalancer: no ingress, no condition of ours
/// (`None` when it has neither already).
pub fn cleared(s: &Service) -> Option<ServiceStatus> {
    let st = s.status.as_ref()?;
    if st.load_balancer_ingress.is_empty() && st.conditions.iter().all(|c| c.r#type != CONDITION) {
        return None;
    }
    let mut st = st.clone();
    st.load_balancer_ingress.clear();
    st.conditions.retain(|c| c.r#type != CONDITION);
    Some(st)
}

#[derive(Default)]
pub struct LoadBalancers {
    dirty: bool,
    /// Services whose type moved away from LoadBalancer since the last batch.
    demoted: BTreeSet<ObjectRef>,
}

impl Hook for LoadBalancers {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        match change.kind {
            Kind::Service => {
                let was = change.prev.and_then(Object::as_service).is_some_and(is_lb);
                let now = change.new.and_then(Object::as_service).is_some_and(is_lb);
                if was || now {
                    self.dirty = true;
                }
                if was && !now {
                    if let Some(o) = change.new {
                        self.demoted.insert(o.key());
                    }
                }
            }
            Kind::Node => {
                let a0 = change.prev.and_then(Object::as_node).and_then(node_address);
                let a1 = change.new.and_then(Object::as_node).and_then(node_address);
                if a0 != a1 {
                    self.dirty = true;
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, txn: &mut Txn<'_>) {
        for key in std::mem::take(&mut self.demoted) {
            let Some(s) = txn.get(Kind::Service, &key).and_then(|o| o.as_service()) else {
                continue;
            };
            if is_lb(s) {
                continue;
            }
            if let Some(st) = cleared(s) {
                let mut s = s.clone();
                s.status = Some(st);
                txn.put(Object::Service(s));
            }
        }
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let objects = txn.objects();
        let nodes: BTreeSet<Ipv4Addr> = objects
            .of(Kind::Node)
            .values()
            .filter_map(|o| o.as_node())
            .filter_map(node_address)
            .collect();
        let services: Vec<(ObjectRef, &Service)> = objects
            .of(Kind::Service)
            .iter()
            .filter_map(|(k, o)| o.as_service().filter(|s| is_lb(s)).map(|s| (k.clone(), s)))
            .collect();
        let want = decide(&services, &nodes);
        let mut writes = Vec::new();
        for (key, s) in &services {
            let Some(st) = want.get(key) else { continue };
            if s.status.as_ref() != Some(st) {
                let mut s = (*s).clone();
                s.status = Some(st.clone());
                writes.push(s);
            }
        }
        for s in writes {
            let st = s.status.as_ref();
            tracing::info!(
                service = %Object::Service(s.clone()).key(),
                ingress = ?st.map(|st| st.load_balancer_ingress.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>()),
                condition = ?st.and_then(|st| st.conditions.iter().find(|c| c.r#type == CONDITION)).map(|c| &c.message),
                "load balancer status"
            );
            txn.put(Object::Service(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{ObjectMeta, ServicePort, ServiceSpec};

    fn svc(name: &str, created: i64, ty: &str, ports: &[(i32, &str)]) -> (ObjectRef, Service) {
        (
            ObjectRef::new("default", name),
            Service {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    creation_timestamp: created,
                    ..Default::default()
                }),
                spec: Some(ServiceSpec {
                    r#type: ty.into(),
                    ports: ports
                        .iter()
                        .map(|(p, proto)| ServicePort {
                            port: *p,
                            protocol: proto.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                status: None,
            },
        )
    }

    fn addrs(v: &[&str]) -> BTreeSet<Ipv4Addr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn ips(st: &ServiceStatus) -> Vec<String> {
        st.load_balancer_ingress
            .iter()
            .map(|i| i.ip.clone())
            .collect()
    }

    #[test]
    fn every_ready_node_address_serves_a_load_balancer() {
        let a = svc("a", 1, "LoadBalancer", &[(80, "TCP")]);
        let c = svc("c", 1, "NodePort", &[(80, "TCP")]);
        let nodes = addrs(&["192.168.1.2", "192.168.1.3"]);
        let out = decide(&[(a.0.clone(), &a.1), (c.0.clone(), &c.1)], &nodes);
        assert_eq!(out.len(), 1, "only LoadBalancers");
        let st = &out[&a.0];
        assert_eq!(ips(st), ["192.168.1.2", "192.168.1.3"]);
        assert_eq!(st.conditions[0].status, "True");
        assert_eq!(st.conditions[0].reason, REASON_ALLOCATED);
    }

    #[test]
    fn the_younger_service_loses_a_clashing_port_and_says_why() {
        let old = svc("old", 1, "LoadBalancer", &[(80, "TCP")]);
        let new = svc("new", 2, "LoadBalancer", &[(80, "TCP"), (443, "TCP")]);
        let udp = svc("udp", 3, "LoadBalancer", &[(80, "UDP")]);
        let nodes = addrs(&["192.168.1.2", "192.168.1.3"]);
        // Order of the input does not matter: the oldest claims first.
        let out = decide(
            &[
                (new.0.clone(), &new.1),
                (udp.0.clone(), &udp.1),
                (old.0.clone(), &old.1),
            ],
            &nodes,
        );
        assert_eq!(ips(&out[&old.0]).len(), 2);
        let st = &out[&new.0];
        assert!(ips(st).is_empty(), "pending: {st:?}");
        let c = &st.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", REASON_PORT_IN_USE)
        );
        assert_eq!(
            c.message,
            "port 80/TCP on 192.168.1.2,192.168.1.3 is already used by service default/old"
        );
        // Another protocol on the same port is no clash.
        assert_eq!(ips(&out[&udp.0]).len(), 2);
        assert_eq!(out[&udp.0].conditions[0].status, "True");
    }

    #[test]
    fn no_ready_node_means_pending_and_demotion_clears() {
        let a = svc("a", 1, "LoadBalancer", &[(80, "TCP")]);
        let out = decide(&[(a.0.clone(), &a.1)], &BTreeSet::new());
        assert!(ips(&out[&a.0]).is_empty());
        assert_eq!(out[&a.0].conditions[0].reason, "NoReadyNodes");
        let mut s = a.1.clone();
        s.status = Some(out[&a.0].clone());
        s.status
            .as_mut()
            .unwrap()
            .load_balancer_ingress
            .push(LoadBalancerIngress {
                ip: "192.168.1.2".into(),
            });
        let st = cleared(&s).unwrap();
        assert!(st.load_balancer_ingress.is_empty() && st.conditions.is_empty());
        assert_eq!(cleared(&Service::default()), None);
    }
}
