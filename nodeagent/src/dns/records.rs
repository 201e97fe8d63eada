//! The cluster's names, from the Services and Endpoints an agent watches: a pure
//! name → answer lookup (no I/O, no DNS wire format), as CoreDNS's kubernetes plugin
//! answers them.
//!
//! - `<svc>.<ns>.svc.<domain>` A: the ClusterIP; headless (`clusterIP: None`): every
//!   ready endpoint's IP. `<ip-dashed>.<svc>.<ns>.svc.<domain>` A: one endpoint of a
//!   headless Service.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports: the Service name
//!   and port; headless: one record per endpoint (`<ip-dashed>.<svc>...`, its port).
//! - `<a-b-c-d>.<ns>.pod.<domain>` A: a.b.c.d (kube-dns' "pods insecure").
//! - `<domain>`, `svc.<domain>`, `<ns>.svc.<domain>`, `pod.<domain>`… exist (no data);
//!   any other name under `<domain>` is NXDOMAIN (the caller adds the SOA).
//! - Names outside `<domain>`: [`Answer::NotCluster`] (forwarded).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kube_lite_proto::v1::{Endpoints, Service};

/// Record types the lookup knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Srv,
    /// Any other type: a name that exists answers with no data.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub target: String,
    pub port: u16,
    /// The target's address (the additional section).
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    A(Vec<Ipv4Addr>),
    Srv(Vec<Srv>),
    /// The name exists, but has no record of that type.
    NoData,
    NxDomain,
    NotCluster,
}

/// Port name, protocol (lower case), port.
type NamedPort = (String, String, u16);

#[derive(Debug, Clone, Default, PartialEq)]
struct SvcEntry {
    cluster_ip: Option<Ipv4Addr>,
    headless: bool,
    /// Service port name, protocol (lower case), port.
    ports: Vec<NamedPort>,
    /// Ready endpoints: IP, and per port name+protocol the endpoint's port.
    endpoints: Vec<(Ipv4Addr, Vec<NamedPort>)>,
}

/// The lookup table; feed it Services and Endpoints as the watch delivers them.
#[derive(Debug, Clone)]
pub struct Records {
    domain: String,
    services: BTreeMap<(String, String), SvcEntry>,
    raw_services: BTreeMap<(String, String), Service>,
    raw_endpoints: BTreeMap<(String, String), Endpoints>,
}

fn key(meta: Option<&kube_lite_proto::v1::ObjectMeta>) -> (String, String) {
    let m = meta.cloned().unwrap_or_default();
    let ns = if m.namespace.is_empty() {
        "default".to_string()
    } else {
        m.namespace
    };
    (ns, m.name)
}

/// `10-0-1-2` → 10.0.1.2.
pub fn parse_dashed(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[i] = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(o))
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

impl Records {
    /// A table for cluster domain `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Records {
        Records {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            services: BTreeMap::new(),
            raw_services: BTreeMap::new(),
            raw_endpoints: BTreeMap::new(),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn upsert_service(&mut self, s: Service) {
        let k = key(s.metadata.as_ref());
        self.raw_services.insert(k.clone(), s);
        self.rebuild(&k);
    }
    pub fn delete_service(&mut self, s: &Service) {
        let k = key(s.metadata.as_ref());
        self.raw_services.remove(&k);
        self.rebuild(&k);
    }
    pub fn upsert_endpoints(&mut self, e: Endpoints) {
        let k = key(e.metadata.as_ref());
        self.raw_endpoints.insert(k.clone(), e);
        self.rebuild(&k);
    }
    pub fn delete_endpoints(&mut self, e: &Endpoints) {
        let k = key(e.metadata.as_ref());
        self.raw_endpoints.remove(&k);
        self.rebuild(&k);
    }
    pub fn replace_services(&mut self, all: Vec<Service>) {
        self.raw_services = all
            .into_iter()
            .map(|s| (key(s.metadata.as_ref()), s))
            .collect();
        self.rebuild_all();
    }
    pub fn replace_endpoints(&mut self, all: Vec<Endpoints>) {
        self.raw_endpoints = all
            .into_iter()
            .map(|e| (key(e.metadata.as_ref()), e))
            .collect();
        self.rebuild_all();
    }

    fn rebuild_all(&mut self) {
        let keys: Vec<(String, String)> = self
            .raw_services
            .keys()
            .chain(self.services.keys())
            .cloned()
            .collect();
        for k in keys {
            self.rebuild(&k);
        }
    }

    fn rebuild(&mut self, k: &(String, String)) {
        let Some(svc) = self.raw_services.get(k) else {
            self.services.remove(k);
            return;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let headless = spec.cluster_ip == "None";
        let proto = |p: &str| {
            if p.is_empty() {
                "tcp".to_string()
            } else {
                p.to_ascii_lowercase()
            }
        };
        let mut e = SvcEntry {
            cluster_ip: spec.cluster_ip.parse().ok(),
            headless,
            ports: spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some((
                        p.name.clone(),
                        proto(&p.protocol),
                        u16::try_from(p.port).ok()?,
                    ))
                })
                .collect(),
            endpoints: Vec::new(),
        };
        if let Some(eps) = self.raw_endpoints.get(k) {
            for s in &eps.subsets {
                let ports: Vec<NamedPort> = s
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.name.clone(),
                            proto(&p.protocol),
                            u16::try_from(p.port).ok()?,
                        ))
                    })
                    .collect();
                for a in &s.addresses {
                    if let Ok(ip) = a.ip.parse() {
                        e.endpoints.push((ip, ports.clone()));
                    }
                }
            }
            e.endpoints.sort();
            e.endpoints.dedup_by(|a, b| a.0 == b.0);
        }
        self.services.insert(k.clone(), e);
    }

    /// The answer for `name` (any case, with or without the final dot).
    pub fn lookup(&self, name: &str, qtype: QType) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(rel) = strip_domain(&name, &self.domain) else {
            return Answer::NotCluster;
        };
        let labels: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('.').collect()
        };
        // Read right to left: [..., ns, "svc"] or [..., ns, "pod"].
        let n = labels.len();
        if n == 0 {
            return Answer::NoData;
        }
        match labels[n - 1] {
            "svc" => self.lookup_svc(&labels[..n - 1], qtype),
            "pod" => match &labels[..n - 1] {
                [] | [_] => Answer::NoData,
                [ip, _ns] => match parse_dashed(ip) {
                    Some(ip) if qtype == QType::A => Answer::A(vec![ip]),
                    Some(_) => Answer::NoData,
                    None => Answer::NxDomain,
                },
                _ => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }

    fn fqdn(&self, parts: &[&str]) -> String {
        format!("{}.svc.{}", parts.join("."), self.domain)
    }

    fn lookup_svc(&self, labels: &[&str], qtype: QType) -> Answer {
        match labels {
            [] => Answer::NoData,
            [ns] => {
                if self.services.keys().any(|(n, _)| n == ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [svc, ns] => {
                let Some(e) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Answer::NxDomain;
                };
                match qtype {
                    QType::A if e.headless => {
                        let ips: Vec<Ipv4Addr> = e.endpoints.iter().map(|(ip, _)| *ip).collect();
                        if ips.is_empty() {
                            Answer::NoData
                        } else {
                            Answer::A(ips)
                        }
                    }
                    QType::A => match e.cluster_ip {
                        Some(ip) => Answer::A(vec![ip]),
                        None => Answer::NoData,
                    },
                    // SRV for the Service name itself: every named port.
                    QType::Srv => self.srv(e, svc, ns, None),
                    QType::Other => Answer::NoData,
                }
            }
            [host, svc, ns] => {
                let Some(e) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Answer::NxDomain;
                };
                match parse_dashed(host) {
                    Some(ip) if e.headless && e.endpoints.iter().any(|(i, _)| *i == ip) => {
                        if qtype == QType::A {
                            Answer::A(vec![ip])
                        } else {
                            Answer::NoData
                        }
                    }
                    _ => Answer::NxDomain,
                }
            }
            [port, proto, svc, ns] if port.starts_with('_') && proto.starts_with('_') => {
                let Some(e) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Answer::NxDomain;
                };
                let want = (&port[1..], &proto[1..]);
                if !e
                    .ports
                    .iter()
                    .any(|(n, p, _)| (n.as_str(), p.as_str()) == want)
                {
                    return Answer::NxDomain;
                }
                if qtype != QType::Srv {
                    return Answer::NoData;
                }
                self.srv(e, svc, ns, Some(want))
            }
            _ => Answer::NxDomain,
        }
    }

    fn srv(&self, e: &SvcEntry, svc: &str, ns: &str, only: Option<(&str, &str)>) -> Answer {
        let mut out = Vec::new();
        for (name, proto, port) in &e.ports {
            if name.is_empty() || only.is_some_and(|w| w != (name.as_str(), proto.as_str())) {
                continue;
            }
            if e.headless {
                for (ip, eports) in &e.endpoints {
                    if let Some((_, _, p)) =
                        eports.iter().find(|(n, pr, _)| n == name && pr == proto)
                    {
                        out.push(Srv {
                            target: self.fqdn(&[&dashed(*ip), svc, ns]),
                            port: *p,
                            ip: Some(*ip),
                        });
                    }
                }
            } else {
                out.push(Srv {
                    target: self.fqdn(&[svc, ns]),
                    port: *port,
                    ip: e.cluster_ip,
                });
            }
        }
        if out.is_empty() {
            Answer::NoData
        } else {
            Answer::Srv(out)
        }
    }
}

fn strip_domain<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, ObjectMeta, ServicePort, ServiceSpec,
    };

    fn svc(name: &str, ip: &str) -> Service {
        Service {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                cluster_ip: ip.into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 3001,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn eps(name: &str, ips: &[&str]) -> Endpoints {
        Endpoints {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            subsets: vec![EndpointSubset {
                addresses: ips
                    .iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                not_ready_addresses: vec![],
                ports: vec![EndpointPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: "TCP".into(),
                }],
            }],
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_ip_and_headless_a_records() {
        let mut r = Records::new("cluster.local.");
        r.replace_services(vec![svc("web", "10.96.0.5"), svc("db", "None")]);
        r.replace_endpoints(vec![
            eps("web", &["10.0.1.2"]),
            eps("db", &["10.0.2.3", "10.0.1.7"]),
        ]);
        assert_eq!(
            r.lookup("web.shop.svc.cluster.local.", QType::A),
            Answer::A(vec![ip("10.96.0.5")])
        );
        assert_eq!(
            r.lookup("WEB.Shop.svc.cluster.local", QType::A),
            Answer::A(vec![ip("10.96.0.5")]),
            "case-insensitive"
        );
        assert_eq!(
            r.lookup("db.shop.svc.cluster.local", QType::A),
            Answer::A(vec![ip("10.0.1.7"), ip("10.0.2.3")])
        );
        assert_eq!(
            r.lookup("10-0-1-7.db.shop.svc.cluster.local", QType::A),
            Answer::A(vec![ip("10.0.1.7")])
        );
        // A pod leaves the Endpoints: it leaves the answer.
        r.upsert_endpoints(eps("db", &["10.0.2.3"]));
        assert_eq!(
            r.lookup("db.shop.svc.cluster.local", QType::A),
            Answer::A(vec![ip("10.0.2.3")])
        );
        assert_eq!(
            r.lookup("web.shop.svc.cluster.local", QType::Other),
            Answer::NoData
        );
        r.delete_service(&svc("web", ""));
        assert_eq!(
            r.lookup("web.shop.svc.cluster.local", QType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn srv_for_named_ports() {
        let mut r = Records::new("cluster.local");
        r.replace_services(vec![svc("web", "10.96.0.5"), svc("db", "None")]);
        r.replace_endpoints(vec![eps("db", &["10.0.2.3"])]);
        assert_eq!(
            r.lookup("_http._tcp.web.shop.svc.cluster.local", QType::Srv),
            Answer::Srv(vec![Srv {
                target: "web.shop.svc.cluster.local".into(),
                port: 3001,
                ip: Some(ip("10.96.0.5"))
            }])
        );
        assert_eq!(
            r.lookup("_http._tcp.db.shop.svc.cluster.local", QType::Srv),
            Answer::Srv(vec![Srv {
                target: "10-0-2-3.db.shop.svc.cluster.local".into(),
                port: 8080,
                ip: Some(ip("10.0.2.3"))
            }])
        );
        assert_eq!(
            r.lookup("_dns._udp.web.shop.svc.cluster.local", QType::Srv),
            Answer::NxDomain
        );
    }

    #[test]
    fn pods_zones_unknown_and_foreign_names() {
        let mut r = Records::new("cluster.local");
        r.replace_services(vec![svc("web", "10.96.0.5")]);
        assert_eq!(
            r.lookup("10-0-1-2.shop.pod.cluster.local", QType::A),
            Answer::A(vec![ip("10.0.1.2")])
        );
        assert_eq!(
            r.lookup("1-2-3.shop.pod.cluster.local", QType::A),
            Answer::NxDomain
        );
        for name in [
            "cluster.local",
            "svc.cluster.local",
            "shop.svc.cluster.local",
        ] {
            assert_eq!(r.lookup(name, QType::A), Answer::NoData, "{name}");
        }
        for name in [
            "nope.shop.svc.cluster.local",
            "web.other.svc.cluster.local",
            "other.svc.cluster.local",
            "x.cluster.local",
            "a.b.c.d.e.svc.cluster.local",
        ] {
            assert_eq!(r.lookup(name, QType::A), Answer::NxDomain, "{name}");
        }
        assert_eq!(r.lookup("example.com", QType::A), Answer::NotCluster);
        assert_eq!(r.lookup("notcluster.local", QType::A), Answer::NotCluster);
        assert_eq!(parse_dashed("10-0-1-256"), None);
        assert_eq!(parse_dashed("10-0-1-2"), Some(ip("10.0.1.2")));
    }
}
