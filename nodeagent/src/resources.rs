//! Node resources: capacity from the machine (CPUs, MemTotal) unless a flag says
//! otherwise, and allocatable = capacity − reserved (what the scheduler fits pods into).

use crate::config::{Config, Quantity};
use kube_lite_core::quantity::{format_bytes, format_cpu, parse_quantity, CPU, MEMORY};
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
}
