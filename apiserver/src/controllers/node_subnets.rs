//! Node subnets: every Node gets a `node_subnet_prefix` slice of the cluster CIDR at
//! create (`spec.pod_cidr`), the first free one; a delete frees it. The index is derived
//! from the stored Nodes (rebuilt at start).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube_lite_core::Resource;
use kube_lite_proto::v1::Node;

use crate::config::Config;
use crate::error::ApiError;
use crate::resource::Object;
use crate::store::{Change, Hook, Objects};

pub struct NodeSubnets {
    cluster_cidr: Ipv4Net,
    prefix: u8,
    /// Subnet index (0 = the first slice of the cluster CIDR) → node name.
    taken: BTreeMap<u32, String>,
}

impl NodeSubnets {
    pub fn new(cfg: &Config) -> NodeSubnets {
        NodeSubnets {
            cluster_cidr: cfg.cluster_cidr,
            prefix: cfg.node_subnet_prefix,
            taken: BTreeMap::new(),
        }
    }

    /// The index of `cidr` if it is one of the node subnets.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let net: Ipv4Net = cidr.parse().ok()?;
        if net.prefix_len() != self.prefix || !self.cluster_cidr.contains(&net) {
            return None;
        }
        let off = u32::from(net.network()) - u32::from(self.cluster_cidr.network());
        Some(off >> (32 - self.prefix as u32))
    }

    /// First free node subnet (index 1..=N-2, e.g. 10.0.1.0/24 … 10.0.254.0/24).
    pub fn first_free(&self) -> Result<String, ApiError> {
        let bits = (self.prefix - self.cluster_cidr.prefix_len()) as u32;
        let count: u64 = 1u64 << bits;
        for i in 1..count.saturating_sub(1) as u32 {
            if !self.taken.contains_key(&i) {
                let base =
                    u32::from(self.cluster_cidr.network()) + (i << (32 - self.prefix as u32));
                let net = Ipv4Net::new(Ipv4Addr::from(base), self.prefix)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                return Ok(net.to_string());
            }
        }
        Err(ApiError::Exhausted(format!(
            "no free node subnet in {}",
            self.cluster_cidr
        )))
    }

    fn subnet(&self, n: &Node) -> Option<u32> {
        n.spec.as_ref().and_then(|s| self.index_of(&s.pod_cidr))
    }
}

impl Hook for NodeSubnets {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        if let Some(Object::Node(n)) = change.prev {
            if let Some(i) = self.subnet(n) {
                if self.taken.get(&i).map(String::as_str) == Some(n.name()) {
                    self.taken.remove(&i);
                }
            }
        }
        if let Some(Object::Node(n)) = change.new {
            if let Some(i) = self.subnet(n) {
                self.taken.insert(i, n.name().to_string());
            }
        }
    }

    fn admit(&mut self, _: &Objects, obj: &mut Object) -> Result<(), ApiError> {
        if let Object::Node(n) = obj {
            let cidr = self.first_free()?;
            n.spec.get_or_insert_with(Default::default).pod_cidr = cidr;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::NodeSpec;

    #[test]
    fn subnets_first_free_and_exhaustion() {
        let cfg = Config::default();
        let mut st = NodeSubnets::new(&cfg);
        assert_eq!(st.first_free().unwrap(), "10.0.1.0/24");
        st.taken.insert(1, "a".into());
        st.taken.insert(3, "c".into());
        assert_eq!(st.first_free().unwrap(), "10.0.2.0/24");
        for i in 1..=254 {
            st.taken.insert(i, format!("n{i}"));
        }
        assert_eq!(
            st.first_free().unwrap_err(),
            ApiError::Exhausted("no free node subnet in 10.0.0.0/16".into())
        );
        assert_eq!(st.index_of("10.0.7.0/24"), Some(7));
        assert_eq!(st.index_of("10.1.7.0/24"), None);
        assert_eq!(st.index_of("10.0.7.0/25"), None);
    }

    fn node(name: &str, cidr: &str) -> Object {
        let mut n = Node {
            spec: Some(NodeSpec {
                pod_cidr: cidr.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        n.meta_mut().name = name.into();
        Object::Node(n)
    }

    #[test]
    fn admit_allocates_and_delete_frees() {
        let objects = Objects::default();
        let mut h = NodeSubnets::new(&Config::default());
        let mut a = node("a", "");
        h.admit(&objects, &mut a).unwrap();
        assert_eq!(
            a.as_node().unwrap().spec.as_ref().unwrap().pod_cidr,
            "10.0.1.0/24"
        );
        let ch = |prev, new| Change {
            kind: crate::resource::Kind::Node,
            prev,
            new,
        };
        h.observe(&objects, &ch(None, Some(&a)));
        let mut b = node("b", "");
        h.admit(&objects, &mut b).unwrap();
        assert_eq!(
            b.as_node().unwrap().spec.as_ref().unwrap().pod_cidr,
            "10.0.2.0/24"
        );
        h.observe(&objects, &ch(None, Some(&b)));
        h.observe(&objects, &ch(Some(&a), None));
        assert_eq!(
            h.first_free().unwrap(),
            "10.0.1.0/24",
            "a's subnet is free again"
        );
        // A stale node record does not free a subnet another node holds.
        h.observe(&objects, &ch(Some(&node("x", "10.0.2.0/24")), None));
        assert_eq!(h.taken.get(&2).map(String::as_str), Some("b"));
        // Other kinds pass untouched.
        let mut pod = Object::Pod(Default::default());
        h.admit(&objects, &mut pod).unwrap();
        assert_eq!(pod, Object::Pod(Default::default()));
    }
}
