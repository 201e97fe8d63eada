//! Node resources: capacity from the machine (CPUs, MemTotal) unless a flag says
//! otherwise, and allocatable = capacity − reserved (what the scheduler fits pods into).

use crate::cgroups::Limits;
use crate::config::{Config, Quantity};
use crate::runtime::ContainerResources;
use kube_lite_core::quantity::{
    container_res, format_bytes, format_cpu, parse_quantity, Res, CPU, MEMORY,
};
use kube_lite_proto::v1::Container;
use std::collections::BTreeMap;

/// Capacity and allocatable of one resource, as `(capacity, allocatable)` quantities.
/// `machine`: what the machine has (milli-units); `flag`: the override; `reserved`.
pub fn resource(
    machine: Option<Quantity>,
    flag: Option<Quantity>,
    reserved: Quantity,
) -> Option<(Quantity, Quantity)> {
    let cap = flag.or(machine)?;
    let alloc = Quantity::from_millis((cap.millis() - reserved.millis()).max(0) as i128);
    Some((cap, alloc))
}

/// Applies `--capacity-*` / `--reserved-*` to the machine's capacity map (which holds
/// `cpu`, `memory`, `pods`), and fills `allocatable`.
pub fn apply_node_flags(
    capacity: &mut BTreeMap<String, String>,
    allocatable: &mut BTreeMap<String, String>,
    cfg: &Config,
) {
    let machine = |k: &str| capacity.get(k).and_then(|v| parse_quantity(v).ok());
    let cpu = resource(machine(CPU), cfg.capacity_cpu, cfg.reserved_cpu);
    let mem = resource(machine(MEMORY), cfg.capacity_memory, cfg.reserved_memory);
    allocatable.clear();
    for (k, v) in capacity.iter() {
        allocatable.insert(k.clone(), v.clone());
    }
    if let Some((c, a)) = cpu {
        capacity.insert(CPU.into(), format_cpu(c.millis()));
        allocatable.insert(CPU.into(), format_cpu(a.millis()));
    }
    if let Some((c, a)) = mem {
        capacity.insert(MEMORY.into(), format_bytes(c.units()));
        allocatable.insert(MEMORY.into(), format_bytes(a.units()));
    }
}

/// The cgroup limits of container `c` and of its pod (`all`: the pod's containers):
/// a pod-level limit is the sum of its containers' limits when each has one, as the
/// kubelet sets it; else none.
pub fn container_resources(all: &[Container], c: &Container) -> ContainerResources {
    let lim = |c: &Container| {
        c.resources
            .as_ref()
            .map_or((Res::default(), Res::default(), false, false), |r| {
                let (req, lim) = container_res(&r.requests, &r.limits);
                (
                    req,
                    lim,
                    r.limits.contains_key(CPU),
                    r.limits.contains_key(MEMORY),
                )
            })
    };
    let (req, l, _, _) = lim(c);
    let mut pod = Limits::default();
    if all.iter().all(|c| lim(c).3) {
        pod.memory_bytes = all.iter().map(|c| lim(c).1.memory_bytes).sum();
    }
    if all.iter().all(|c| lim(c).2) {
        pod.cpu_limit_millis = all.iter().map(|c| lim(c).1.cpu_millis).sum();
    }
    ContainerResources {
        container: Limits {
            memory_bytes: l.memory_bytes,
            cpu_limit_millis: l.cpu_millis,
            cpu_request_millis: req.cpu_millis,
        },
        pod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        parse_quantity(s).unwrap()
    }

    #[test]
    fn flags_override_the_machine_and_reserve() {
        let (c, a) = resource(Some(q("2")), None, q("500m")).unwrap();
        assert_eq!((c.millis(), a.millis()), (2000, 1500));
        let (c, a) = resource(Some(q("2")), Some(q("4")), q("0")).unwrap();
        assert_eq!((c.millis(), a.millis()), (4000, 4000));
        let (_, a) = resource(Some(q("1Gi")), None, q("2Gi")).unwrap();
        assert_eq!(a.units(), 0, "never negative");
        assert!(resource(None, None, q("1")).is_none());
    }

    #[test]
    fn pod_limits_are_the_sum_when_every_container_has_one() {
        use kube_lite_proto::v1::ResourceRequirements;
        let c = |lim: &[(&str, &str)]| Container {
            resources: Some(ResourceRequirements {
                limits: lim
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = c(&[("memory", "64Mi"), ("cpu", "500m")]);
        let b = c(&[("memory", "32Mi")]);
        let r = container_resources(&[a.clone(), b.clone()], &a);
        assert_eq!(r.container.memory_bytes, 64 << 20);
        assert_eq!(r.container.cpu_limit_millis, 500);
        assert_eq!(
            r.container.cpu_request_millis, 500,
            "request defaults to the limit"
        );
        assert_eq!(r.pod.memory_bytes, 96 << 20);
        assert_eq!(r.pod.cpu_limit_millis, 0, "b has no cpu limit");
        assert_eq!(
            container_resources(&[Container::default()], &Container::default()),
            ContainerResources::default()
        );
    }
}
