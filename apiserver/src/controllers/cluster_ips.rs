//! ClusterIPs: every Service gets one at create, the requested one if it is a free host
//! address of the service CIDR (else INVALID_ARGUMENT), or the first free host address of the service CIDR
//! (10.96.0.1 first); a delete frees it. `None` (headless) gets none; the cluster DNS
//! address is reserved. The index is derived from the stored
//! Services (rebuilt at start).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube_lite_core::consts::CLUSTER_IP_NONE;
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::Service;

use crate::config::Config;
use crate::error::ApiError;
use crate::resource::Object;
use crate::store::{Change, Hook, Objects};

pub struct ClusterIps {
    /// Reserved for the cluster DNS: never allocated, refused when asked for.
    cluster_dns: Option<Ipv4Addr>,
    cluster_cidr: Ipv4Net,
    service_cidr: Ipv4Net,
    /// ClusterIP → its Service.
    taken: HashMap<Ipv4Addr, ObjectRef>,
}

fn cluster_ip(s: &Service) -> Option<Ipv4Addr> {
    s.spec.as_ref().and_then(|s| s.cluster_ip.parse().ok())
}

impl ClusterIps {
    pub fn new(cfg: &Config) -> ClusterIps {
        ClusterIps {
            cluster_dns: cfg.cluster_dns,
            cluster_cidr: cfg.cluster_cidr,
            service_cidr: cfg.service_cidr,
            taken: HashMap::new(),
        }
    }

    /// The requested ClusterIP if free (INVALID_ARGUMENT when taken), else the first
    /// free host address of the service CIDR.
    pub fn choose(&self, requested: &str, key: &ObjectRef) -> Result<String, ApiError> {
        if requested == CLUSTER_IP_NONE {
            return Ok(requested.to_string());
        }
        if !requested.is_empty() {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                ApiError::invalid(
                    "spec.cluster_ip",
                    format!(
                        "{} is not a valid IPv4 address",
                        crate::error::quote(requested)
                    ),
                )
            })?;
            // As Kubernetes: an explicit ClusterIP must be a host address of the
            // service range. Anything else could be a node's underlay address, a pod's,
            // or a special address, which the proxy's DNAT rules would steal from
            // the datapath (a peer's address cut the VXLAN tunnel).
            let net = self.service_cidr;
            if !net.contains(&ip) || ip == net.network() || ip == net.broadcast() {
                return Err(ApiError::invalid(
                    "spec.cluster_ip",
                    format!(
                        "{ip} is not a host address of the service range {net} (leave it empty to have one allocated)"
                    ),
                ));
            }
            if self.cluster_cidr.contains(&ip) {
                return Err(ApiError::invalid(
                    "spec.cluster_ip",
                    format!(
                        "{ip} is in the pod network {} (use the service range {net})",
                        self.cluster_cidr
                    ),
                ));
            }
            if self.cluster_dns == Some(ip) {
                return Err(ApiError::invalid(
                    "spec.cluster_ip",
                    format!("{ip} is reserved for the cluster DNS"),
                ));
            }
            if let Some(owner) = self.taken.get(&ip) {
                if owner != key {
                    return Err(ApiError::invalid(
                        "spec.cluster_ip",
                        format!("{ip} is already allocated to {owner}"),
                    ));
                }
            }
            return Ok(ip.to_string());
        }
        self.service_cidr
            .hosts()
            .find(|ip| !self.taken.contains_key(ip) && self.cluster_dns != Some(*ip))
            .map(|ip| ip.to_string())
            .ok_or_else(|| {
                ApiError::Exhausted(format!("no free cluster IP in {}", self.service_cidr))
            })
    }
}

impl Hook for ClusterIps {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        if let Some(o @ Object::Service(s)) = change.prev {
            if let Some(ip) = cluster_ip(s) {
                if self.taken.get(&ip) == Some(&o.key()) {
                    self.taken.remove(&ip);
                }
            }
        }
        if let Some(o @ Object::Service(s)) = change.new {
            if let Some(ip) = cluster_ip(s) {
                self.taken.insert(ip, o.key());
            }
        }
    }

    fn admit(&mut self, _: &Objects, obj: &mut Object) -> Result<(), ApiError> {
        let key = obj.key();
        if let Object::Service(s) = obj {
            let spec = s.spec.get_or_insert_with(Default::default);
            spec.cluster_ip = self.choose(&spec.cluster_ip, &key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::Resource;
    use kube_lite_proto::v1::ServiceSpec;

    #[test]
    fn cluster_ips_first_free_explicit_and_taken() {
        let cfg = Config {
            service_cidr: "10.96.0.0/30".parse().unwrap(),
            ..Default::default()
        };
        let mut st = ClusterIps::new(&cfg);
        let k = |n: &str| ObjectRef::new("default", n);
        assert_eq!(st.choose("", &k("a")).unwrap(), "10.96.0.1");
        st.taken.insert("10.96.0.1".parse().unwrap(), k("a"));
        assert_eq!(st.choose("", &k("b")).unwrap(), "10.96.0.2");
        st.taken.insert("10.96.0.2".parse().unwrap(), k("b"));
        assert!(matches!(
            st.choose("", &k("c")),
            Err(ApiError::Exhausted(_))
        ));
        assert_eq!(st.choose("None", &k("h")).unwrap(), "None", "headless");
        assert_eq!(
            st.choose("10.96.0.2", &k("b")).unwrap(),
            "10.96.0.2",
            "its own"
        );
        assert_eq!(
            st.choose("10.96.0.1", &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.cluster_ip: 10.96.0.1 is already allocated to default/a".into()
            )
        );
        assert_eq!(
            st.choose("10.0.1.5", &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.cluster_ip: 10.0.1.5 is not a host address of the service range 10.96.0.0/30 (leave it empty to have one allocated)".into()
            )
        );
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
            // A node's underlay address, and the range's network and broadcast addresses.
            "192.168.0.2",
            "172.17.10.10",
            "10.96.0.0",
            "10.96.0.3",
        ] {
            assert!(
                matches!(st.choose(bad, &k("c")), Err(ApiError::Invalid(_))),
                "{bad}"
            );
        }
    }

    fn svc(name: &str, ip: &str) -> Object {
        let mut s = Service {
            spec: Some(ServiceSpec {
                cluster_ip: ip.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.meta_mut().name = name.into();
        s.meta_mut().namespace = "default".into();
        Object::Service(s)
    }

    #[test]
    fn admit_allocates_and_delete_frees() {
        let objects = Objects::default();
        let mut h = ClusterIps::new(&Config::default());
        let ch = |prev, new| Change {
            kind: crate::resource::Kind::Service,
            prev,
            new,
        };
        let mut a = svc("a", "");
        h.admit(&objects, &mut a).unwrap();
        assert_eq!(a, svc("a", "10.96.0.1"));
        h.observe(&objects, &ch(None, Some(&a)));
        let mut b = svc("b", "");
        h.admit(&objects, &mut b).unwrap();
        assert_eq!(b, svc("b", "10.96.0.2"));
        // Re-admitting a's own address (same key) is fine; another service's is not.
        assert!(h.admit(&objects, &mut svc("a", "10.96.0.1")).is_ok());
        assert!(h.admit(&objects, &mut svc("c", "10.96.0.1")).is_err());
        h.observe(&objects, &ch(Some(&a), None));
        let mut c = svc("c", "");
        h.admit(&objects, &mut c).unwrap();
        assert_eq!(c, svc("c", "10.96.0.1"), "a's address is free again");
    }

    #[test]
    fn cluster_dns_is_reserved() {
        let cfg = Config {
            service_cidr: "10.96.0.0/28".parse().unwrap(),
            cluster_dns: Some("10.96.0.2".parse().unwrap()),
            ..Default::default()
        };
        let mut st = ClusterIps::new(&cfg);
        let k = |n: &str| ObjectRef::new("default", n);
        st.taken.insert("10.96.0.1".parse().unwrap(), k("a"));
        assert_eq!(
            st.choose("", &k("b")).unwrap(),
            "10.96.0.3",
            "skips the DNS address"
        );
        assert_eq!(
            st.choose("10.96.0.2", &k("b")).unwrap_err(),
            ApiError::Invalid("spec.cluster_ip: 10.96.0.2 is reserved for the cluster DNS".into())
        );
    }
}
