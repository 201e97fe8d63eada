//! Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) and the pod-level
//! resource rules built on them: requests (limits when a request is missing), QoS class.
//!
//! A quantity is kept exactly, in thousandths of its unit (milli-units) as an `i128`:
//! `"100m"` → 100, `"0.5"` → 500, `"128Mi"` → 134_217_728_000. CPU is then read in
//! millicores ([`Quantity::millis`]) and memory in bytes ([`Quantity::units`]), both
//! rounded up as Kubernetes does (`"0.1m"` cpu is 1m). Kubernetes' canonical forms are not
//! reproduced: the string the user wrote is what is stored and shown.

use std::collections::HashMap;

/// A parsed quantity in milli-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(i128);

/// The largest quantity accepted: 2^63 units (Kubernetes' int64 bound).
const MAX_MILLI: i128 = (i64::MAX as i128) * 1000;

impl Quantity {
    pub fn from_millis(m: i128) -> Quantity {
        Quantity(m)
    }
    /// Thousandths of the unit, rounded up (cpu in millicores).
    pub fn millis(self) -> i64 {
        self.0.clamp(0, i64::MAX as i128) as i64
    }
    /// Whole units, rounded up (memory in bytes).
    pub fn units(self) -> i64 {
        ((self.0 + 999).div_euclid(1000)).clamp(0, i64::MAX as i128) as i64
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Parses a Kubernetes quantity: an unsigned decimal number (`1`, `0.5`, `.5`, `1.`),
/// optionally with an exponent (`1e3`, `2E-3`), or with one suffix: binary `Ki Mi Gi Ti
/// Pi Ei`, decimal `n u m k M G T P E`. The error says what is wrong.
pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    let bad = |why: &str| format!("invalid quantity {s:?}: {why} (e.g. 100m, 0.5, 128Mi, 1G)");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.len() > 64 {
        return Err(bad("too long"));
    }
    let b = s.as_bytes();
    let mut i = 0;
    if b[0] == b'+' {
        i = 1;
    } else if b[0] == b'-' {
        return Err(bad("must not be negative"));
    }
    // Mantissa digits, as an integer with `frac` digits after the point.
    let (mut mant, mut frac, mut digits, mut seen_point) = (0i128, 0i32, 0usize, false);
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            digits += 1;
            if digits > 30 {
                return Err(bad("too many digits"));
            }
            mant = mant * 10 + (c - b'0') as i128;
            if seen_point {
                frac += 1;
            }
        } else if c == b'.' && !seen_point {
            seen_point = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return Err(bad("no number"));
    }
    let suffix = &s[i..];
    // Value = mant * 10^(dec_exp - frac) * 2^(bin_exp), in units; we want milli-units.
    let (dec_exp, bin_exp): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.starts_with(['e', 'E']) => {
            let n: i32 = match e[1..].parse() {
                Ok(n) if e.len() > 1 && e.len() <= 4 => n,
                _ => return Err(bad("bad exponent")),
            };
            (n, 0)
        }
        other => return Err(bad(&format!("unknown suffix {other:?}"))),
    };
    let mut v = mant
        .checked_mul(1i128 << bin_exp)
        .ok_or_else(|| bad("too large"))?;
    let exp = dec_exp + 3 - frac; // milli
    if exp >= 0 {
        for _ in 0..exp {
            v = match v.checked_mul(10) {
                Some(v) if v <= MAX_MILLI => v,
                _ => return Err(bad("too large")),
            };
        }
    } else {
        // Round up what falls below a milli-unit.
        let d = 10i128.checked_pow((-exp) as u32).unwrap_or(i128::MAX);
        v = if d == i128::MAX {
            (v > 0) as i128
        } else {
            (v + d - 1) / d
        };
    }
    if v > MAX_MILLI {
        return Err(bad("too large"));
    }
    Ok(Quantity(v))
}

/// Resource names kube-lite knows.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";

/// CPU (millicores) and memory (bytes) of one container or pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Res {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

impl Res {
    /// From a requests/limits map; unknown names and bad quantities are ignored here
    /// (validation refuses them at write).
    pub fn from_map(m: &HashMap<String, String>) -> Res {
        let q = |k: &str| m.get(k).and_then(|v| parse_quantity(v).ok());
        Res {
            cpu_millis: q(CPU).map(Quantity::millis).unwrap_or(0),
            memory_bytes: q(MEMORY).map(Quantity::units).unwrap_or(0),
        }
    }
    pub fn plus(self, o: Res) -> Res {
        Res {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
        }
    }
    pub fn max(self, o: Res) -> Res {
        Res {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
        }
    }
}

/// A container's requests and limits as the scheduler and the agent use them: a
/// missing request is the limit (Kubernetes' defaulting).
pub fn container_res(
    requests: &HashMap<String, String>,
    limits: &HashMap<String, String>,
) -> (Res, Res) {
    let (mut r, l) = (Res::from_map(requests), Res::from_map(limits));
    if !requests.contains_key(CPU) {
        r.cpu_millis = l.cpu_millis;
    }
    if !requests.contains_key(MEMORY) {
        r.memory_bytes = l.memory_bytes;
    }
    (r, l)
}

/// What a pod requests, as the scheduler fits it: per resource, the larger of the sum of
/// its containers' requests (each defaulted from its limits) and the largest init
/// container's request (init containers run one at a time, before the others).
pub fn pod_requests(spec: &kube_lite_proto::v1::PodSpec) -> Res {
    let req = |c: &kube_lite_proto::v1::Container| {
        c.resources
            .as_ref()
            .map_or(Res::default(), |r| container_res(&r.requests, &r.limits).0)
    };
    let apps = spec
        .containers
        .iter()
        .map(req)
        .fold(Res::default(), Res::plus);
    spec.init_containers.iter().map(req).fold(apps, Res::max)
}

/// What a node offers pods: `allocatable`, else `capacity`, per resource; a resource
/// the node reports neither way is not limited (`i64::MAX`).
pub fn node_allocatable(
    allocatable: &HashMap<String, String>,
    capacity: &HashMap<String, String>,
) -> Res {
    let get = |k: &str| {
        allocatable
            .get(k)
            .or_else(|| capacity.get(k))
            .and_then(|v| parse_quantity(v).ok())
    };
    Res {
        cpu_millis: get(CPU).map_or(i64::MAX, Quantity::millis),
        memory_bytes: get(MEMORY).map_or(i64::MAX, Quantity::units),
    }
}

/// QoS classes (`status.qosClass`).
pub mod qos {
    pub const GUARANTEED: &str = "Guaranteed";
    pub const BURSTABLE: &str = "Burstable";
    pub const BEST_EFFORT: &str = "BestEffort";
}

/// Kubernetes' QoS rule over each container's (requests, limits) maps: BestEffort when
/// nothing is set anywhere; Guaranteed when every container has cpu and memory limits and
/// its requests (defaulted from the limits) equal them; else Burstable.
pub fn qos_class<'a>(
    containers: impl IntoIterator<Item = (&'a HashMap<String, String>, &'a HashMap<String, String>)>,
) -> &'static str {
    let (mut any, mut guaranteed) = (false, true);
    for (req, lim) in containers {
        let set = |m: &HashMap<String, String>| {
            m.iter().any(|(k, v)| {
                (k == CPU || k == MEMORY) && parse_quantity(v).is_ok_and(|q| !q.is_zero())
            })
        };
        if set(req) || set(lim) {
            any = true;
        }
        let (r, l) = container_res(req, lim);
        if !(lim.contains_key(CPU) && lim.contains_key(MEMORY)) || r != l {
            guaranteed = false;
        }
    }
    match (any, guaranteed) {
        (false, _) => qos::BEST_EFFORT,
        (true, true) => qos::GUARANTEED,
        (true, false) => qos::BURSTABLE,
    }
}

/// Formats millicores as kubectl shows them: `500m`, `2`.
pub fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with the largest exact binary suffix: `128Mi`, `1Gi`, `1000`.
pub fn format_bytes(b: i64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1i64 << shift;
        if b != 0 && b % unit == 0 {
            return format!("{}{suffix}", b / unit);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> i128 {
        parse_quantity(s).unwrap().0
    }

    #[test]
    fn parses_kubernetes_syntax() {
        assert_eq!(q("100m"), 100);
        assert_eq!(q("0.5"), 500);
        assert_eq!(q(".5"), 500);
        assert_eq!(q("1."), 1000);
        assert_eq!(q("2"), 2000);
        assert_eq!(q("+2"), 2000);
        assert_eq!(q("128Mi"), 128 * (1 << 20) * 1000);
        assert_eq!(q("1G"), 1_000_000_000_000);
        assert_eq!(q("1Ki"), 1_024_000);
        assert_eq!(q("1.5Gi"), 1_610_612_736_000);
        assert_eq!(q("1e3"), 1_000_000);
        assert_eq!(q("1E-3"), 1);
        assert_eq!(q("500u"), 1); // rounded up to a milli-unit
        assert_eq!(q("1n"), 1);
        assert_eq!(q("0"), 0);
        assert_eq!(q("0.1m"), 1);
        assert_eq!(parse_quantity("250m").unwrap().millis(), 250);
        assert_eq!(parse_quantity("64Mi").unwrap().units(), 64 << 20);
        assert_eq!(parse_quantity("1.5").unwrap().units(), 2);
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("-1", "negative"),
            ("abc", "no number"),
            ("1.2.3", "unknown suffix"),
            ("10Xi", "unknown suffix"),
            ("1e", "bad exponent"),
            ("1e99999", "bad exponent"),
            ("99999999999999999999Ei", "too large"),
            ("1e30", "too large"),
            ("1 Mi", "unknown suffix"),
        ] {
            let e = parse_quantity(s).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
        }
        let long = "1".repeat(100);
        assert!(parse_quantity(&long).is_err());
    }

    fn m(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requests_default_to_limits() {
        let (r, l) = container_res(
            &m(&[("cpu", "100m")]),
            &m(&[("cpu", "1"), ("memory", "1Gi")]),
        );
        assert_eq!(
            r,
            Res {
                cpu_millis: 100,
                memory_bytes: 1 << 30
            }
        );
        assert_eq!(
            l,
            Res {
                cpu_millis: 1000,
                memory_bytes: 1 << 30
            }
        );
    }

    #[test]
    fn pod_requests_and_node_allocatable() {
        use kube_lite_proto::v1::{Container, PodSpec, ResourceRequirements};
        let c = |req: &[(&str, &str)], lim: &[(&str, &str)]| Container {
            resources: Some(ResourceRequirements {
                requests: m(req),
                limits: m(lim),
            }),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![
                c(&[("cpu", "100m")], &[("memory", "64Mi")]),
                c(&[("cpu", "1"), ("memory", "1Gi")], &[]),
                Container::default(),
            ],
            ..Default::default()
        };
        assert_eq!(
            pod_requests(&spec),
            Res {
                cpu_millis: 1100,
                memory_bytes: (64 << 20) + (1 << 30)
            }
        );
        let a = node_allocatable(
            &m(&[("memory", "1Gi")]),
            &m(&[("cpu", "2"), ("memory", "2Gi")]),
        );
        assert_eq!(
            a,
            Res {
                cpu_millis: 2000,
                memory_bytes: 1 << 30
            }
        );
        assert_eq!(node_allocatable(&m(&[]), &m(&[])).cpu_millis, i64::MAX);
    }

    #[test]
    fn qos_classes() {
        let none = m(&[]);
        assert_eq!(qos_class([(&none, &none)]), "BestEffort");
        let lim = m(&[("cpu", "500m"), ("memory", "64Mi")]);
        assert_eq!(qos_class([(&none, &lim)]), "Guaranteed");
        assert_eq!(qos_class([(&lim, &lim)]), "Guaranteed");
        let req = m(&[("cpu", "100m")]);
        assert_eq!(qos_class([(&req, &lim)]), "Burstable");
        assert_eq!(qos_class([(&req, &none)]), "Burstable");
        // One container without limits makes the pod Burstable.
        assert_eq!(qos_class([(&none, &lim), (&none, &none)]), "Burstable");
    }

    #[test]
    fn formats_like_kubectl() {
        assert_eq!(format_cpu(500), "500m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_bytes(128 << 20), "128Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
    }
}
