//! Node ports: every port of a NodePort or LoadBalancer Service gets a node port at
//! create (and at an update that needs new ones), the requested one if it is in the
//! node port range and free (else INVALID_ARGUMENT naming the port), or the first free
//! one of the range. Node ports are unique across Services whatever the protocol (as
//! Kubernetes); the ports of one Service may share a number between TCP and UDP. A
//! delete, or a change to type ClusterIP, frees them. The index is derived from the
//! stored Services (rebuilt at start).

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use kube_lite_core::defaults::needs_node_ports;
use kube_lite_core::ObjectRef;
use kube_lite_proto::v1::{Service, ServiceSpec};

use crate::config::Config;
use crate::error::ApiError;
use crate::resource::Object;
use crate::store::{Change, Hook, Objects};

pub struct NodePorts {
    range: RangeInclusive<u16>,
    /// Node port → its Service.
    taken: HashMap<u16, ObjectRef>,
}

fn node_ports(s: &Service) -> Vec<u16> {
    s.spec
        .as_ref()
        .filter(|s| needs_node_ports(&s.r#type))
        .map(|s| {
            s.ports
                .iter()
                .filter_map(|p| u16::try_from(p.node_port).ok().filter(|p| *p != 0))
                .collect()
        })
        .unwrap_or_default()
}

impl NodePorts {
    pub fn new(cfg: &Config) -> NodePorts {
        NodePorts {
            range: cfg.node_port_range.clone(),
            taken: HashMap::new(),
        }
    }

    /// Fills in the node ports of `spec` (Service `key`): explicit ones checked, zero
    /// ones allocated. A Service that needs none gets its node ports cleared.
    pub fn assign(&self, spec: &mut ServiceSpec, key: &ObjectRef) -> Result<(), ApiError> {
        if !needs_node_ports(&spec.r#type) {
            for p in &mut spec.ports {
                p.node_port = 0;
            }
            return Ok(());
        }
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let free = |n: u16| self.taken.get(&n).is_none_or(|o| o == key);
        // This Service's explicit ports first (the allocation must not hand them out).
        let mut mine: HashSet<u16> = HashSet::new();
        for (i, p) in spec.ports.iter().enumerate() {
            if p.node_port == 0 {
                continue;
            }
            let f = format!("spec.ports[{i}].node_port");
            let n = u16::try_from(p.node_port)
                .ok()
                .filter(|n| self.range.contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        &f,
                        format!("{} is not in the node port range {lo}-{hi}", p.node_port),
                    )
                })?;
            if !free(n) {
                return Err(ApiError::invalid(
                    &f,
                    format!(
                        "provided port {n} is already allocated to service {}",
                        self.taken[&n]
                    ),
                ));
            }
            mine.insert(n);
        }
        let mut candidates = lo..=hi;
        for p in &mut spec.ports {
            if p.node_port != 0 {
                continue;
            }
            let n = candidates
                .by_ref()
                .find(|n| free(*n) && !mine.contains(n))
                .ok_or_else(|| ApiError::Exhausted(format!("no free node port in {lo}-{hi}")))?;
            mine.insert(n);
            p.node_port = i32::from(n);
        }
        Ok(())
    }
}

impl Hook for NodePorts {
    fn observe(&mut self, _: &Objects, change: &Change<'_>) {
        if let Some(o @ Object::Service(s)) = change.prev {
            for n in node_ports(s) {
                if self.taken.get(&n) == Some(&o.key()) {
                    self.taken.remove(&n);
                }
            }
        }
        if let Some(o @ Object::Service(s)) = change.new {
            for n in node_ports(s) {
                self.taken.insert(n, o.key());
            }
        }
    }

    fn admit(&mut self, _: &Objects, obj: &mut Object) -> Result<(), ApiError> {
        let key = obj.key();
        if let Object::Service(s) = obj {
            let spec = s.spec.get_or_insert_with(Default::default);
            self.assign(spec, &key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::ServicePort;

    fn spec(ty: &str, ports: &[i32]) -> ServiceSpec {
        ServiceSpec {
            r#type: ty.into(),
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, n)| ServicePort {
                    name: format!("p{i}"),
                    port: 80 + i as i32,
                    node_port: *n,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
    fn nps(s: &ServiceSpec) -> Vec<i32> {
        s.ports.iter().map(|p| p.node_port).collect()
    }

    #[test]
    fn allocates_first_free_honours_explicit_refuses_taken() {
        let cfg = Config {
            node_port_range: 30000..=30003,
            ..Default::default()
        };
        let mut st = NodePorts::new(&cfg);
        let k = |n: &str| ObjectRef::new("default", n);
        let mut a = spec("NodePort", &[0, 30001]);
        st.assign(&mut a, &k("a")).unwrap();
        assert_eq!(nps(&a), vec![30000, 30001]);
        st.taken.insert(30000, k("a"));
        st.taken.insert(30001, k("a"));
        let mut b = spec("LoadBalancer", &[0]);
        st.assign(&mut b, &k("b")).unwrap();
        assert_eq!(nps(&b), vec![30002]);
        // Explicit and taken by another Service: refused, naming the field and owner.
        let mut c = spec("NodePort", &[0, 30001]);
        assert_eq!(
            st.assign(&mut c, &k("c")).unwrap_err(),
            ApiError::Invalid(
                "spec.ports[1].node_port: provided port 30001 is already allocated to service default/a".into()
            )
        );
        // Its own ports again (an update): fine.
        let mut a2 = spec("NodePort", &[30000, 30001]);
        st.assign(&mut a2, &k("a")).unwrap();
        // Out of range.
        let mut d = spec("NodePort", &[8080]);
        assert_eq!(
            st.assign(&mut d, &k("d")).unwrap_err(),
            ApiError::Invalid(
                "spec.ports[0].node_port: 8080 is not in the node port range 30000-30003".into()
            )
        );
        // Exhausted.
        st.taken.insert(30002, k("b"));
        let mut e = spec("NodePort", &[0, 0]);
        assert!(matches!(
            st.assign(&mut e, &k("e")),
            Err(ApiError::Exhausted(_))
        ));
        // ClusterIP: node ports cleared.
        let mut f = spec("ClusterIP", &[30003]);
        st.assign(&mut f, &k("f")).unwrap();
        assert_eq!(nps(&f), vec![0]);
    }

    #[test]
    fn range_ending_at_65535_does_not_wrap() {
        let cfg = Config {
            node_port_range: 65534..=65535,
            ..Default::default()
        };
        let st = NodePorts::new(&cfg);
        let k = ObjectRef::new("default", "a");
        let mut a = spec("NodePort", &[0, 0]);
        st.assign(&mut a, &k).unwrap();
        assert_eq!(nps(&a), vec![65534, 65535]);
        let mut b = spec("NodePort", &[0, 0, 0]);
        assert!(matches!(st.assign(&mut b, &k), Err(ApiError::Exhausted(_))));
    }
}
