//! Pure decisions of the datapath (no I/O): what to add and remove to reach a state.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::Peer;

/// Changes that turn the current overlay state of a node into the desired one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPlan {
    /// `00:00:00:00:00:00 dst <addr>` FDB entries to append on the VXLAN device.
    pub add_fdb: Vec<Ipv4Addr>,
    /// FDB entries to delete.
    pub del_fdb: Vec<Ipv4Addr>,
    /// Routes `<subnet> dev <bridge>` to add.
    pub add_routes: Vec<Ipv4Net>,
    /// Routes (added by us earlier) to delete.
    pub del_routes: Vec<Ipv4Net>,
}

impl PeerPlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add_fdb.is_empty()
            && self.del_fdb.is_empty()
            && self.add_routes.is_empty()
            && self.del_routes.is_empty()
    }
}

/// The node's own identity on the overlay; peers that collide with it are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub underlay: Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// Desired FDB destinations and routes for `peers`: deduplicated, sorted, without the
/// node itself (same underlay address or same subnet) and without peers whose subnet
/// overlaps the node's own.
pub fn desired(peers: &[Peer], local: Option<Local>) -> (BTreeSet<Ipv4Addr>, BTreeSet<Ipv4Net>) {
    let mut fdb = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for p in peers {
        if let Some(l) = local {
            if p.address == l.underlay {
                continue;
            }
            let s = p.subnet.trunc();
            if s.contains(&l.subnet.network()) || l.subnet.contains(&s.network()) {
                continue;
            }
        }
        if p.address.is_unspecified() {
            continue;
        }
        fdb.insert(p.address);
        routes.insert(p.subnet.trunc());
    }
    (fdb, routes)
}

/// Diff the current FDB destinations and our routes against `peers`.
pub fn plan_peers(
    current_fdb: &[Ipv4Addr],
    current_routes: &[Ipv4Net],
    peers: &[Peer],
    local: Option<Local>,
) -> PeerPlan {
    let (want_fdb, want_routes) = desired(peers, local);
    let have_fdb: BTreeSet<Ipv4Addr> = current_fdb.iter().copied().collect();
    let have_routes: BTreeSet<Ipv4Net> = current_routes.iter().map(|n| n.trunc()).collect();
    PeerPlan {
        add_fdb: want_fdb.difference(&have_fdb).copied().collect(),
        del_fdb: have_fdb.difference(&want_fdb).copied().collect(),
        add_routes: want_routes.difference(&have_routes).copied().collect(),
        del_routes: have_routes.difference(&want_routes).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, addr: &str, subnet: &str) -> Peer {
        Peer {
            name: name.into(),
            address: addr.parse().unwrap(),
            subnet: subnet.parse().unwrap(),
        }
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn from_empty_adds_everything() {
        let p = plan_peers(
            &[],
            &[],
            &[
                peer("b", "192.168.5.3", "10.0.2.0/24"),
                peer("a", "192.168.5.2", "10.0.1.0/24"),
            ],
            None,
        );
        assert_eq!(p.add_fdb, vec![ip("192.168.5.2"), ip("192.168.5.3")]);
        assert_eq!(p.add_routes, vec![net("10.0.1.0/24"), net("10.0.2.0/24")]);
        assert!(p.del_fdb.is_empty() && p.del_routes.is_empty());
    }

    #[test]
    fn in_sync_is_empty() {
        let peers = [peer("a", "192.168.5.2", "10.0.1.0/24")];
        let p = plan_peers(&[ip("192.168.5.2")], &[net("10.0.1.0/24")], &peers, None);
        assert!(p.is_empty());
    }

    #[test]
    fn removes_gone_and_moves_changed() {
        let peers = [
            peer("a", "192.168.5.2", "10.0.1.0/24"),
            peer("c", "192.168.5.9", "10.0.3.0/24"),
        ];
        let p = plan_peers(
            &[ip("192.168.5.2"), ip("192.168.5.3")],
            &[net("10.0.1.0/24"), net("10.0.2.0/24")],
            &peers,
            None,
        );
        assert_eq!(p.add_fdb, vec![ip("192.168.5.9")]);
        assert_eq!(p.del_fdb, vec![ip("192.168.5.3")]);
        assert_eq!(p.add_routes, vec![net("10.0.3.0/24")]);
        assert_eq!(p.del_routes, vec![net("10.0.2.0/24")]);
    }

    #[test]
    fn ignores_self_duplicates_and_overlaps() {
        let local = Local {
            underlay: ip("192.168.5.1"),
            subnet: net("10.0.0.0/24"),
        };
        let peers = [
            peer("self", "192.168.5.1", "10.0.0.0/24"),
            peer("clash", "192.168.5.7", "10.0.0.0/24"),
            peer("a", "192.168.5.2", "10.0.1.0/24"),
            peer("a-again", "192.168.5.2", "10.0.1.0/24"),
            peer("unset", "0.0.0.0", "10.0.4.0/24"),
        ];
        let p = plan_peers(&[], &[], &peers, Some(local));
        assert_eq!(p.add_fdb, vec![ip("192.168.5.2")]);
        assert_eq!(p.add_routes, vec![net("10.0.1.0/24")]);
    }

    #[test]
    fn no_peers_removes_all() {
        let p = plan_peers(&[ip("192.168.5.2")], &[net("10.0.1.0/24")], &[], None);
        assert_eq!(p.del_fdb, vec![ip("192.168.5.2")]);
        assert_eq!(p.del_routes, vec![net("10.0.1.0/24")]);
        assert!(p.add_fdb.is_empty() && p.add_routes.is_empty());
    }
}
