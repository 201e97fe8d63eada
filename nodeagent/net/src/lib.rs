//! kube-lite-net: the node's datapath, built with rtnetlink.
//!
//! # API for the node agent (stable; tell C1 before relying on anything not listed)
//!
//! ```ignore
//! let net = NodeNet::open(NodeNetConfig { netns: Some("kl1a2b-n0".into()), ..Default::default() }).await?;
//! net.setup_node(subnet /* 10.0.N.0/24 */, underlay /* node address */).await?; // idempotent
//! net.sync_peers(&[Peer { name, address, subnet }, ..]).await?;                // full sync, idempotent
//! let mut ipam = ipam::Ipam::open(state_dir.join("ipam.json"), subnet)?;
//! let ip = ipam.allocate(&pod_uid)?;               // Err(NoFreeIp) displays "no free IP in 10.0.N.0/24"
//! let pod = PodNet { netns: pod_netns_name(&prefix, &pod_uid), host_if: host_if_name(&pod_uid),
//!                    ip, subnet, gateway: ipam::gateway(subnet), mtu: cfg.mtu };
//! net.create_pod_net(&pod).await?;                 // idempotent
//! // run the pod's processes in netns_path(&pod.netns) (setns) or command_in_netns(..)
//! net.delete_pod_net(&pod.netns, &pod.host_if).await?; // idempotent, reports all failures
//! ipam.release(&pod_uid)?;
//! // restart / orphan cleanup:
//! list_netns(&pod_netns_prefix(&prefix))?;  net.list_host_ifs(names::HOST_IF_PREFIX).await?;
//! net.delete_host_if(&orphan_veth).await?;
//! ```
//!
//! * Pod netns names: [`pod_netns_name`]`(prefix, uid)` = `"<prefix>-<uid>"`, so every pod
//!   netns of an agent starts with [`pod_netns_prefix`]`(prefix)` = `"<prefix>-"`. Use a
//!   prefix unique per node (e.g. `kl<id>-n0`): a prefix shared by two nodes would make
//!   each agent see the other's pods as orphans.
//! * Host veth names: [`host_if_name`]`(uid)` = `"klv" + 10 hex` (13 chars).
//! * Pod side is always `eth0`, MTU [`PodNet::mtu`] on both ends (1450 for VXLAN on 1500).
//!
//! # Modules
//! * [`names`]: pure naming functions.
//! * [`file`]: [`write_atomic`] (temp file, fsync, rename, fsync of the directory).
//! * [`ipam`]: persisted per-node IPAM.
//! * [`plan`]: pure decisions (which FDB entries and routes to add or remove).
//! * [`netns`]: named network namespaces (`/run/netns/NAME`, like `ip netns add`) and
//!   netlink handles bound to one.
//! * [`underlay`]: a namespace with a bridge standing in for the physical network, and
//!   node namespaces attached to it (test kit; deploy/local-cluster.sh builds the same
//!   with `ip`).
//! * [`ops`]: the [`ops::NetOps`] trait (the kernel state peer sync reads and writes,
//!   so its sequencing is unit-tested with a recording fake) and [`ops::RtnlOps`], the
//!   rtnetlink implementation of it and of node/pod setup (covered by the privileged
//!   tests in `tests/datapath.rs`).
//!
//! # Datapath, per node namespace
//! * bridge `kl0` with `10.0.N.1/24`, `nf_call_iptables` on (bridge option and the
//!   per-namespace sysctl), `net.ipv4.ip_forward=1`;
//! * `kl-vxlan`: VNI 10, UDP 4789, `local <underlay>`, `dev <underlay interface>`,
//!   `nolearning`, a port of `kl0`; per peer an FDB entry `00:00:00:00:00:00 dst <peer>`
//!   (flooding ARP/broadcast to every peer) and a route `10.0.M.0/24 dev kl0 proto 77`
//!   (only `proto 77` routes are ever removed);
//! * per pod a veth `klv…` (port of `kl0`, hairpin on) <-> `eth0` in `/run/netns/<name>`
//!   with the pod IP, `lo` up, `default via 10.0.N.1`.
//!
//! Where netlink is not used: `ip_forward` and `bridge-nf-call-iptables` are written to
//! `/proc/sys` from a thread inside the node namespace (sysctls are files, not netlink);
//! [`NodeNet::command_in`] runs programs through `nsenter` (tests, iptables-restore).

pub mod file;
pub mod ipam;
pub mod names;
pub mod netns;
pub mod ops;
pub mod plan;
pub mod underlay;

use std::net::Ipv4Addr;
use std::process::Command;

pub use file::write_atomic;
pub use ipnet::Ipv4Net;
pub use names::{host_if_name, pod_mac, pod_netns_name, pod_netns_prefix};
pub use netns::{command_in_netns, list_netns, netns_path};

/// Errors of datapath operations.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed; `op` says which (e.g. "add veth klv0123 in kl1-n0").
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// Something the operation needs is missing or not as expected.
    #[error("{0}")]
    Invalid(String),
    /// Teardown kept going past failures: all of them.
    #[error("{} failures: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<NetError>),
}

impl NetError {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            op: op.into(),
            source,
        }
    }
    pub(crate) fn nl(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            op: op.into(),
            source,
        }
    }
}

/// Configuration of a node's datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetConfig {
    /// Named network namespace of the node (`/run/netns/NAME`); `None` = the agent's own.
    pub netns: Option<String>,
    /// Node bridge, default `kl0`.
    pub bridge: String,
    /// VXLAN device, default `kl-vxlan`.
    pub vxlan: String,
    /// VXLAN network identifier, default 10.
    pub vni: u32,
    /// VXLAN UDP destination port, default 4789.
    pub vxlan_port: u16,
    /// Pod interface MTU, default 1450 (1500 underlay - 50 bytes of VXLAN).
    pub mtu: u32,
}

impl Default for NodeNetConfig {
    fn default() -> Self {
        NodeNetConfig {
            netns: None,
            bridge: "kl0".into(),
            vxlan: "kl-vxlan".into(),
            vni: 10,
            vxlan_port: 4789,
            mtu: 1450,
        }
    }
}

/// Another node, as the VXLAN overlay needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    /// Underlay address (the peer's `spec.address`).
    pub address: Ipv4Addr,
    /// Pod subnet of the peer.
    pub subnet: Ipv4Net,
}

/// A pod's network: namespace, veth and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// Named netns to create (`/run/netns/<netns>`).
    pub netns: String,
    /// Host side of the veth (on the bridge); see [`host_if_name`].
    pub host_if: String,
    /// Pod address (on `eth0`, with the prefix length of `subnet`).
    pub ip: Ipv4Addr,
    /// The node's pod subnet.
    pub subnet: Ipv4Net,
    /// Default gateway (the bridge address, `.1`).
    pub gateway: Ipv4Addr,
    /// MTU of both veth ends.
    pub mtu: u32,
}

/// The node's datapath: netlink handle bound to the node's network namespace.
pub struct NodeNet {
    cfg: NodeNetConfig,
    ops: ops::RtnlOps,
    /// Set by `setup_node`: the node itself is never its own peer.
    local: std::sync::Mutex<Option<plan::Local>>,
}

impl NodeNet {
    /// Connect to the node namespace (`cfg.netns`, or the caller's own).
    pub async fn open(cfg: NodeNetConfig) -> Result<Self, NetError> {
        let ops = ops::RtnlOps::open(cfg.netns.clone()).await?;
        Ok(NodeNet {
            cfg,
            ops,
            local: std::sync::Mutex::new(None),
        })
    }

    /// The configuration this datapath was opened with.
    pub fn config(&self) -> &NodeNetConfig {
        &self.cfg
    }

    /// Idempotent. Bridge holding the gateway `.1/<prefix>` of `subnet`, up, with
    /// nf_call_iptables on; `ip_forward=1`; VXLAN (unicast, nolearning, local = `underlay`,
    /// dev = the interface holding `underlay`) enslaved to the bridge, up.
    pub async fn setup_node(&self, subnet: Ipv4Net, underlay: Ipv4Addr) -> Result<(), NetError> {
        self.ops.setup_node(&self.cfg, subnet, underlay).await?;
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan::Local {
            underlay,
            subnet: subnet.trunc(),
        });
        Ok(())
    }

    /// Idempotent full sync to exactly these peers: FDB `00:00:00:00:00:00 dst <peer>` on
    /// the VXLAN device and routes `<peer subnet> dev <bridge>`; removes the others (only
    /// routes this crate added, recognised by their protocol number).
    pub async fn sync_peers(&self, peers: &[Peer]) -> Result<(), NetError> {
        let local = *self.local.lock().unwrap_or_else(|e| e.into_inner());
        self.ops
            .sync_peers(&self.cfg, peers, local)
            .await
            .map(|_| ())
    }

    /// Idempotent: named netns, veth `host_if` (on the bridge, up, hairpin on) <-> `eth0`
    /// in the pod netns with `ip/prefix`, MTU, `lo` up, default route via the gateway.
    pub async fn create_pod_net(&self, p: &PodNet) -> Result<(), NetError> {
        self.ops.create_pod_net(&self.cfg, p).await
    }

    /// Idempotent; missing pieces are fine. Deletes the veth and the netns, keeps going
    /// past failures and reports them all ([`NetError::Multiple`]).
    pub async fn delete_pod_net(&self, netns: &str, host_if: &str) -> Result<(), NetError> {
        self.ops.delete_pod_net(netns, host_if).await
    }

    /// Delete one host interface of the node namespace (an orphan veth); missing is fine.
    pub async fn delete_host_if(&self, host_if: &str) -> Result<(), NetError> {
        self.ops.delete_link(host_if).await
    }

    /// Names of the node namespace's interfaces starting with `prefix` (e.g. `"klv"`).
    pub async fn list_host_ifs(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        self.ops.list_host_ifs(prefix).await
    }

    /// Named network namespaces (`/run/netns`) whose name starts with `prefix`, sorted.
    pub fn list_netns(prefix: &str) -> Result<Vec<String>, NetError> {
        netns::list_netns(prefix)
    }

    /// `program` to run inside the node namespace (through `nsenter`), or plainly when
    /// the node is the agent's own namespace.
    pub fn command_in(&self, program: &str) -> Command {
        match &self.cfg.netns {
            Some(ns) => command_in_netns(ns, program),
            None => Command::new(program),
        }
    }
}
