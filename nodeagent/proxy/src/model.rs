//! The proxy's view of the API: Services + Endpoints resolved into one entry per
//! Service port with its endpoints. Pure; no I/O.

use kube_lite_proto::v1::{Endpoints, Service};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Parses the API's protocol string; empty means TCP (the server default).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "" | "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
    /// Lower-case name as iptables wants it (`-p tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port of one Service, with the endpoints that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortView {
    pub namespace: String,
    pub name: String,
    /// The Service port's name ("" for a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Pod IP:target port, sorted, deduplicated.
    pub endpoints: Vec<SocketAddrV4>,
    /// NodePort / LoadBalancer: the node port (every node address forwards it).
    pub node_port: Option<u16>,
    /// externalTrafficPolicy Local: node port and load balancer traffic goes only to
    /// this node's endpoints, unmasqueraded.
    pub external_local: bool,
    /// The endpoints on this node (their Endpoints address names it), sorted.
    pub local_endpoints: Vec<SocketAddrV4>,
    /// LoadBalancer: `status.load_balancer_ingress` addresses serving `port`.
    pub lb_ips: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP: seconds a client sticks to its endpoint.
    pub affinity_seconds: Option<u32>,
}

impl Default for ServicePortView {
    /// TCP, unspecified cluster IP, port 0, no endpoints, no node port, no affinity.
    fn default() -> Self {
        ServicePortView {
            namespace: String::new(),
            name: String::new(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            cluster_ip: Ipv4Addr::UNSPECIFIED,
            port: 0,
            endpoints: Vec::new(),
            node_port: None,
            external_local: false,
            local_endpoints: Vec::new(),
            lb_ips: Vec::new(),
            affinity_seconds: None,
        }
    }
}

impl ServicePortView {
    /// `ns/name` or `ns/name:port`, used in comments and to derive chain names.
    pub fn display_name(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// Why a Service was skipped (logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("no cluster IP (headless or not yet assigned)")]
    NoClusterIp,
    #[error("spec.cluster_ip {0:?} is not an IPv4 address")]
    BadClusterIp(String),
    #[error("spec.ports[{0}]: {1}")]
    BadPort(usize, String),
}

/// Resolves a Service and its Endpoints (if any) into one view per Service port.
///
/// Endpoint ports are matched to Service ports by name (and protocol), as Kubernetes
/// does; a subset that lists no ports at all serves the Service port's target port.
/// Bad ports are skipped individually; a Service without a usable ClusterIP yields an
/// error.
pub fn resolve(
    svc: &Service,
    eps: Option<&Endpoints>,
    local_node: Option<&str>,
) -> Result<(Vec<ServicePortView>, Vec<SkipReason>), SkipReason> {
    let (namespace, name) = match &svc.metadata {
        Some(m) if !m.namespace.is_empty() => (m.namespace.as_str(), m.name.as_str()),
        Some(m) => ("default", m.name.as_str()),
        None => ("default", ""),
    };
    let default_spec = Default::default();
    let spec: &kube_lite_proto::v1::ServiceSpec = svc.spec.as_ref().unwrap_or(&default_spec);
    let ip = spec.cluster_ip.trim();
    if ip.is_empty() || ip.eq_ignore_ascii_case("none") {
        return Err(SkipReason::NoClusterIp);
    }
    let cluster_ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| SkipReason::BadClusterIp(spec.cluster_ip.clone()))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let node_ports = spec.r#type == "NodePort" || spec.r#type == "LoadBalancer";
    let external_local = node_ports && spec.external_traffic_policy == "Local";
    let lb_ips: Vec<Ipv4Addr> = if spec.r#type == "LoadBalancer" {
        let mut v: Vec<Ipv4Addr> = svc
            .status
            .iter()
            .flat_map(|s| &s.load_balancer_ingress)
            .filter_map(|i| i.ip.parse().ok())
            .collect();
        v.sort();
        v.dedup();
        v
    } else {
        Vec::new()
    };
    let affinity_seconds = (spec.session_affinity == "ClientIP").then(|| {
        u32::try_from(spec.session_affinity_timeout_seconds)
            .ok()
            .filter(|t| *t > 0)
            .unwrap_or(10800)
    });
    for (i, p) in spec.ports.iter().enumerate() {
        let Some(protocol) = Protocol::parse(&p.protocol) else {
            skipped.push(SkipReason::BadPort(
                i,
                format!("unknown protocol {:?}", p.protocol),
            ));
            continue;
        };
        let Some(port) = to_port(p.port) else {
            skipped.push(SkipReason::BadPort(i, format!("bad port {}", p.port)));
            continue;
        };
        // A named target port is only known per pod: from the Endpoints' ports.
        let target = if !p.target_port_name.is_empty() {
            None
        } else if p.target_port == 0 {
            Some(port)
        } else {
            to_port(p.target_port)
        };
        let node_port = if node_ports {
            to_port(p.node_port)
        } else {
            None
        };
        let mut endpoints = Vec::new();
        let mut local_endpoints = Vec::new();
        if let Some(eps) = eps {
            for subset in &eps.subsets {
                let ep_port = if subset.ports.is_empty() {
                    target
                } else {
                    subset
                        .ports
                        .iter()
                        .find(|ep| {
                            ep.name == p.name
                                && Protocol::parse(&ep.protocol).unwrap_or(Protocol::Tcp)
                                    == protocol
                        })
                        .and_then(|ep| to_port(ep.port))
                };
                let Some(ep_port) = ep_port else { continue };
                for a in &subset.addresses {
                    if let Ok(ip) = a.ip.parse::<Ipv4Addr>() {
                        endpoints.push(SocketAddrV4::new(ip, ep_port));
                        if local_node.is_some_and(|n| n == a.node_name) {
                            local_endpoints.push(SocketAddrV4::new(ip, ep_port));
                        }
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        local_endpoints.sort();
        local_endpoints.dedup();
        out.push(ServicePortView {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port_name: p.name.clone(),
            protocol,
            cluster_ip,
            port,
            endpoints,
            node_port,
            external_local,
            local_endpoints,
            lb_ips: lb_ips.clone(),
            affinity_seconds,
        });
    }
    Ok((out, skipped))
}

fn to_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, ObjectMeta, ServicePort, ServiceSpec,
    };

    fn svc() -> Service {
        Service {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                cluster_ip: "172.17.10.10".into(),
                ports: vec![
                    ServicePort {
                        name: "http".into(),
                        protocol: "TCP".into(),
                        port: 3001,
                        target_port: 8080,
                        ..Default::default()
                    },
                    ServicePort {
                        name: "dns".into(),
                        protocol: "UDP".into(),
                        port: 53,
                        target_port: 0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_ports_by_name() {
        let eps = Endpoints {
            metadata: None,
            subsets: vec![EndpointSubset {
                addresses: vec![
                    EndpointAddress {
                        ip: "10.0.1.3".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "10.0.1.2".into(),
                        ..Default::default()
                    },
                ],
                not_ready_addresses: vec![],
                ports: vec![EndpointPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: "TCP".into(),
                }],
            }],
        };
        let (v, skipped) = resolve(&svc(), Some(&eps), None).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].display_name(), "default/web:http");
        assert_eq!(
            v[0].endpoints,
            vec![
                "10.0.1.2:8080".parse().unwrap(),
                "10.0.1.3:8080".parse().unwrap()
            ]
        );
        // No endpoint port named "dns": no endpoints for it.
        assert_eq!(v[1].protocol, Protocol::Udp);
        assert_eq!(v[1].port, 53);
        assert!(v[1].endpoints.is_empty());
    }

    #[test]
    fn headless_and_bad_ip_are_skipped() {
        let mut s = svc();
        s.spec.as_mut().unwrap().cluster_ip = "None".into();
        assert_eq!(
            resolve(&s, None, None).unwrap_err(),
            SkipReason::NoClusterIp
        );
        s.spec.as_mut().unwrap().cluster_ip = "1.2.3".into();
        assert!(matches!(
            resolve(&s, None, None).unwrap_err(),
            SkipReason::BadClusterIp(_)
        ));
    }

    #[test]
    fn subset_without_ports_uses_target_port() {
        let eps = Endpoints {
            metadata: None,
            subsets: vec![EndpointSubset {
                addresses: vec![EndpointAddress {
                    ip: "10.0.2.2".into(),
                    ..Default::default()
                }],
                not_ready_addresses: vec![],
                ports: vec![],
            }],
        };
        let (v, _) = resolve(&svc(), Some(&eps), None).unwrap();
        assert_eq!(v[0].endpoints, vec!["10.0.2.2:8080".parse().unwrap()]);
        assert_eq!(v[1].endpoints, vec!["10.0.2.2:53".parse().unwrap()]);
    }
}
