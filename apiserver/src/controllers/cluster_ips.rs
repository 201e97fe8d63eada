//! ClusterIPs: every Service gets one at create, the requested one if it is free and
//! usable (else INVALID_ARGUMENT), or the first free host address of the service CIDR
//! (10.96.0.1 first); a delete frees it. The index is derived from the stored
//! Services (rebuilt at start).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::Service;

use crate::config::Config;
use crate::error::ApiError;
use crate::resource::Object;
use crate::store::{Change, Hook, Objects};

pub struct ClusterIps {
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
            cluster_cidr: cfg.cluster_cidr,
            service_cidr: cfg.service_cidr,
            taken: HashMap::new(),
        }
    }

    /// The requested ClusterIP if free (INVALID_ARGUMENT when taken), else the first
    /// free host address of the service CIDR.
    pub fn choose(&self, requested: &str, key: &ObjectRef) -> Result<String, ApiError> {
        if !requested.is_empty() {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                ApiError::invalid(
                    "spec.cluster_ip",
                    format!("{requested:?} is not a valid IPv4 address"),
                )
            })?;
            // Any address outside the pod network works (the demo's 172.17.10.10), but
            // not one the proxy's DNAT would steal from a pod or the node, nor a special one.
            if self.cluster_cidr.contains(&ip) {
                return Err(ApiError::invalid(
                    "spec.cluster_ip",
                    format!(
                        "{ip} is in the pod network {} (use the service range {})",
                        self.cluster_cidr, self.service_cidr
                    ),
                ));
            }
            if ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_link_local()
            {
                return Err(ApiError::invalid(
                    "spec.cluster_ip",
                    format!("{ip} is not a usable unicast address"),
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
            .find(|ip| !self.taken.contains_key(ip))
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
        assert_eq!(st.choose("172.17.10.10", &k("c")).unwrap(), "172.17.10.10");
        assert_eq!(
            st.choose("10.96.0.1", &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.cluster_ip: 10.96.0.1 is already allocated to default/a".into()
            )
        );
        assert_eq!(
            st.choose("10.0.1.5", &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.cluster_ip: 10.0.1.5 is in the pod network 10.0.0.0/16 (use the service range 10.96.0.0/30)".into()
            )
        );
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
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
}
