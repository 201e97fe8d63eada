//! Persisted IP address management for one node subnet.
//!
//! State is a small JSON file in the agent's state directory
//! (`{"subnet":"10.0.1.0/24","allocations":{"<pod uid>":"10.0.1.2",...}}`), rewritten
//! atomically on every change (write a temp file, fsync, rename, fsync the directory), so
//! a `kill -9` at any moment leaves either the old or the new state, never a torn one.
//!
//! Rules: the network address, the gateway (first host, `.1`) and the broadcast address
//! are never handed out; allocation takes the lowest free address from `.2` upward; one
//! owner holds at most one address and asking again returns the same one; no address is
//! held by two owners.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::file::write_atomic;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// IPAM failures.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address of the subnet is taken. Display is exactly
    /// `no free IP in 10.0.N.0/24` (the pod's status reason).
    #[error("no free IP in {0}")]
    NoFreeIp(Ipv4Net),
    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IPAM state {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `assign` of an address outside the usable range or held by someone else.
    #[error("cannot assign {ip} to {owner}: {why}")]
    Conflict {
        owner: String,
        ip: Ipv4Addr,
        why: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct State {
    subnet: Option<Ipv4Net>,
    #[serde(default)]
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// IPAM for one subnet, persisted at `path`. Not internally synchronised: wrap it in a
/// `Mutex` when several tasks allocate.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    subnet: Ipv4Net,
    allocations: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    /// Open (or create) the state at `path` for `subnet`. Allocations outside `subnet`
    /// (the node got another subnet) are dropped. The file is created on first change.
    pub fn open(path: impl AsRef<Path>, subnet: Ipv4Net) -> Result<Ipam, IpamError> {
        let path = path.as_ref().to_path_buf();
        let subnet = subnet.trunc();
        let state = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|source| IpamError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(IpamError::Io { path, source }),
        };
        let before = state.allocations.len();
        let mut ipam = Ipam {
            path,
            subnet,
            allocations: state.allocations,
        };
        ipam.allocations.retain(|_, ip| usable(subnet, *ip));
        // Two owners of one address can only come from a hand-edited file: keep the first.
        let mut seen = std::collections::HashSet::new();
        ipam.allocations.retain(|_, ip| seen.insert(*ip));
        if state.subnet != Some(subnet) || ipam.allocations.len() != before {
            ipam.save()?;
        }
        Ok(ipam)
    }

    /// The subnet this IPAM allocates from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address (first host of the subnet, `.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.subnet)
    }

    /// The address of `owner`, allocating the lowest free one if it has none.
    /// Idempotent per owner. A full subnet gives [`IpamError::NoFreeIp`].
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.allocations.get(owner) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> =
            self.allocations.values().copied().collect();
        let ip = first_free(self.subnet, &used).ok_or(IpamError::NoFreeIp(self.subnet))?;
        self.allocations.insert(owner.to_string(), ip);
        if let Err(e) = self.save() {
            self.allocations.remove(owner);
            return Err(e);
        }
        Ok(ip)
    }

    /// Record that `owner` holds `ip` (adoption of a pod whose address is known).
    /// Fails if `ip` is not usable in the subnet or another owner holds it.
    pub fn assign(&mut self, owner: &str, ip: Ipv4Addr) -> Result<(), IpamError> {
        let conflict = |why: String| IpamError::Conflict {
            owner: owner.to_string(),
            ip,
            why,
        };
        if !usable(self.subnet, ip) {
            return Err(conflict(format!("not a pod address of {}", self.subnet)));
        }
        if let Some((other, _)) = self
            .allocations
            .iter()
            .find(|(o, a)| **a == ip && o.as_str() != owner)
        {
            return Err(conflict(format!("held by {other}")));
        }
        if self.allocations.get(owner) == Some(&ip) {
            return Ok(());
        }
        let old = self.allocations.insert(owner.to_string(), ip);
        if let Err(e) = self.save() {
            match old {
                Some(o) => self.allocations.insert(owner.to_string(), o),
                None => self.allocations.remove(owner),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Free the address of `owner`; returns it, or `None` if it held none.
    pub fn release(&mut self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.allocations.remove(owner) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.allocations.insert(owner.to_string(), ip);
            return Err(e);
        }
        Ok(Some(ip))
    }

    /// The address held by `owner`.
    pub fn get(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocations.get(owner).copied()
    }

    /// Every owner holding an address, sorted.
    pub fn owners(&self) -> Vec<String> {
        self.allocations.keys().cloned().collect()
    }

    /// Every (owner, address) pair, sorted by owner.
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.allocations
            .iter()
            .map(|(o, ip)| (o.clone(), *ip))
            .collect()
    }

    /// Keep only the owners for which `keep` is true; returns the released pairs.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<Vec<(String, Ipv4Addr)>, IpamError> {
        let removed: Vec<(String, Ipv4Addr)> = self
            .allocations
            .iter()
            .filter(|(o, _)| !keep(o))
            .map(|(o, ip)| (o.clone(), *ip))
            .collect();
        if removed.is_empty() {
            return Ok(removed);
        }
        for (o, _) in &removed {
            self.allocations.remove(o);
        }
        if let Err(e) = self.save() {
            for (o, ip) in &removed {
                self.allocations.insert(o.clone(), *ip);
            }
            return Err(e);
        }
        Ok(removed)
    }

    fn save(&self) -> Result<(), IpamError> {
        let state = State {
            subnet: Some(self.subnet),
            allocations: self.allocations.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&state).expect("IPAM state serialises");
        write_atomic(&self.path, &bytes).map_err(|source| IpamError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// The gateway of `subnet`: its first host address (`.1` of a /24).
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1))
}

/// Whether `ip` may be given to a pod: inside `subnet`, not the network, gateway or
/// broadcast address.
pub fn usable(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip)
        && ip != subnet.network()
        && ip != subnet.broadcast()
        && ip != gateway(subnet)
}

/// Lowest usable address of `subnet` not in `used`.
pub fn first_free(subnet: Ipv4Net, used: &std::collections::HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let start = u32::from(subnet.network()).checked_add(2)?;
    let end = u32::from(subnet.broadcast());
    (start..end)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_from_dot_two_upward_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path().join("ipam.json"), net("10.0.3.0/24")).unwrap();
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 0, 3, 1));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 0, 3, 2));
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 0, 3, 3));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 0, 3, 2));
        assert_eq!(ipam.owners(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn release_then_reuse_lowest_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path().join("ipam.json"), net("10.0.3.0/24")).unwrap();
        for o in ["a", "b", "c"] {
            ipam.allocate(o).unwrap();
        }
        assert_eq!(ipam.release("b").unwrap(), Some(Ipv4Addr::new(10, 0, 3, 3)));
        assert_eq!(ipam.release("b").unwrap(), None);
        assert_eq!(ipam.get("b"), None);
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(10, 0, 3, 3));
        assert_eq!(ipam.allocate("e").unwrap(), Ipv4Addr::new(10, 0, 3, 5));
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/ipam.json");
        {
            let mut ipam = Ipam::open(&path, net("10.0.7.0/24")).unwrap();
            ipam.allocate("a").unwrap();
            ipam.allocate("b").unwrap();
            ipam.release("a").unwrap();
        }
        let mut ipam = Ipam::open(&path, net("10.0.7.0/24")).unwrap();
        assert_eq!(ipam.get("b"), Some(Ipv4Addr::new(10, 0, 7, 3)));
        assert_eq!(ipam.get("a"), None);
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 0, 7, 2));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ipam.json")]);
    }

    #[test]
    fn full_subnet_gives_exact_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path().join("ipam.json"), net("10.0.9.0/24")).unwrap();
        for i in 0..253 {
            let ip = ipam.allocate(&format!("p{i}")).unwrap();
            assert!(usable(net("10.0.9.0/24"), ip));
        }
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert_eq!(err.to_string(), "no free IP in 10.0.9.0/24");
        // Existing owners still get theirs.
        assert_eq!(ipam.allocate("p0").unwrap(), Ipv4Addr::new(10, 0, 9, 2));
        ipam.release("p100").unwrap();
        assert!(ipam.allocate("one-too-many").is_ok());
    }

    #[test]
    fn small_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path().join("ipam.json"), net("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            ipam.allocate("b").unwrap_err().to_string(),
            "no free IP in 10.0.0.0/30"
        );
    }

    #[test]
    fn retain_and_assign() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path().join("ipam.json"), net("10.0.1.0/24")).unwrap();
        for o in ["a", "b", "c"] {
            ipam.allocate(o).unwrap();
        }
        let removed = ipam.retain(|o| o != "b").unwrap();
        assert_eq!(removed, vec![("b".to_string(), Ipv4Addr::new(10, 0, 1, 3))]);
        assert!(ipam.assign("x", Ipv4Addr::new(10, 0, 1, 2)).is_err());
        assert!(ipam.assign("x", Ipv4Addr::new(10, 0, 1, 1)).is_err());
        assert!(ipam.assign("x", Ipv4Addr::new(10, 0, 2, 9)).is_err());
        ipam.assign("x", Ipv4Addr::new(10, 0, 1, 9)).unwrap();
        assert_eq!(ipam.get("x"), Some(Ipv4Addr::new(10, 0, 1, 9)));
    }

    #[test]
    fn subnet_change_drops_foreign_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        Ipam::open(&path, net("10.0.1.0/24"))
            .unwrap()
            .allocate("a")
            .unwrap();
        let ipam = Ipam::open(&path, net("10.0.2.0/24")).unwrap();
        assert!(ipam.owners().is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        fs::write(&path, b"{not json").unwrap();
        let err = Ipam::open(&path, net("10.0.1.0/24")).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn no_address_twice_under_churn() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path().join("ipam.json"), net("10.0.4.0/28")).unwrap();
        let mut live: Vec<String> = Vec::new();
        for i in 0..200u32 {
            let owner = format!("o{i}");
            if i % 3 == 0 && !live.is_empty() {
                let victim = live.remove((i as usize * 7) % live.len());
                ipam.release(&victim).unwrap();
            }
            if ipam.allocate(&owner).is_ok() {
                live.push(owner);
            }
            let ips: std::collections::HashSet<_> =
                live.iter().map(|o| ipam.get(o).unwrap()).collect();
            assert_eq!(ips.len(), live.len());
        }
    }
}
