//! Side effects of the datapath: the [`NetOps`] trait (what peer sync needs, so its
//! sequencing is unit-tested with a fake) and [`RtnlOps`], the rtnetlink implementation
//! that also builds bridges, VXLAN devices and pod networks.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};
use std::os::fd::AsRawFd;

use crate::names::valid_ifname;
use crate::netns;
use crate::plan::{plan_peers, Local, PeerPlan};
use crate::{NetError, NodeNetConfig, Peer, PodNet};

/// Route protocol number that marks the peer routes this crate adds (`ip route` shows
/// `proto 77`); only those are ever removed.
pub const ROUTE_PROTO: u8 = 77;
const MAIN_TABLE: u8 = 254;
const ZERO_MAC: [u8; 6] = [0; 6];
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;

/// What [`sync_peers_with`] needs from the kernel: VXLAN FDB entries and peer routes.
#[allow(async_fn_in_trait)]
pub trait NetOps {
    /// Destinations of the all-zero-MAC FDB entries of the VXLAN device `vxlan`.
    async fn fdb_peers(&self, vxlan: u32) -> Result<Vec<Ipv4Addr>, NetError>;
    /// Append `00:00:00:00:00:00 dst <dst>` to the VXLAN device.
    async fn add_fdb_peer(&self, vxlan: u32, dst: Ipv4Addr) -> Result<(), NetError>;
    /// Delete that entry.
    async fn del_fdb_peer(&self, vxlan: u32, dst: Ipv4Addr) -> Result<(), NetError>;
    /// Routes via `bridge` marked with [`ROUTE_PROTO`] in the main table.
    async fn peer_routes(&self, bridge: u32) -> Result<Vec<Ipv4Net>, NetError>;
    /// Add (or replace) the route `dst dev bridge proto 77 scope link`.
    async fn add_peer_route(&self, bridge: u32, dst: Ipv4Net) -> Result<(), NetError>;
    /// Delete that route.
    async fn del_peer_route(&self, bridge: u32, dst: Ipv4Net) -> Result<(), NetError>;
}

/// Bring the overlay to exactly `peers`: read the current state, plan, apply. Keeps
/// going past failures and reports them all. Returns the applied plan.
pub async fn sync_peers_with<O: NetOps>(
    ops: &O,
    vxlan: u32,
    bridge: u32,
    peers: &[Peer],
    local: Option<Local>,
) -> Result<PeerPlan, NetError> {
    let fdb = ops.fdb_peers(vxlan).await?;
    let routes = ops.peer_routes(bridge).await?;
    let plan = plan_peers(&fdb, &routes, peers, local);
    let mut errors = Vec::new();
    // Remove first: a peer that changed subnet frees its old route before the new one.
    for r in &plan.del_routes {
        if let Err(e) = ops.del_peer_route(bridge, *r).await {
            errors.push(e);
        }
    }
    for d in &plan.del_fdb {
        if let Err(e) = ops.del_fdb_peer(vxlan, *d).await {
            errors.push(e);
        }
    }
    for d in &plan.add_fdb {
        if let Err(e) = ops.add_fdb_peer(vxlan, *d).await {
            errors.push(e);
        }
    }
    for r in &plan.add_routes {
        if let Err(e) = ops.add_peer_route(bridge, *r).await {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(plan),
        1 => Err(errors.remove(0)),
        _ => Err(NetError::Multiple(errors)),
    }
}

/// Netlink error code (positive errno) of an rtnetlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A delete is done when it worked or the kernel answers with one of the `gone` errnos
/// (the thing was already missing); any other failure is reported as `what`.
fn deleted(
    r: Result<(), rtnetlink::Error>,
    gone: &[i32],
    what: impl FnOnce() -> String,
) -> Result<(), NetError> {
    match r {
        Err(e) if !errno(&e).is_some_and(|n| gone.contains(&n)) => Err(NetError::nl(what(), e)),
        _ => Ok(()),
    }
}

/// The rtnetlink implementation, bound to one network namespace.
pub struct RtnlOps {
    netns: Option<String>,
    handle: Handle,
}

impl RtnlOps {
    /// Connect to the named netns (or the caller's own).
    pub async fn open(netns: Option<String>) -> Result<Self, NetError> {
        let handle = netns::connect(netns.as_deref()).await?;
        Ok(RtnlOps { netns, handle })
    }

    fn where_(&self) -> &str {
        self.netns.as_deref().unwrap_or("own namespace")
    }

    /// The link named `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        link_by_name(&self.handle, name, self.where_()).await
    }

    /// Index of the link named `name`, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    async fn require_index(&self, name: &str, what: &str) -> Result<u32, NetError> {
        self.link_index(name).await?.ok_or_else(|| {
            NetError::Invalid(format!(
                "{what} {name} missing in {} (setup_node first)",
                self.where_()
            ))
        })
    }

    async fn set_up(&self, index: u32, name: &str) -> Result<(), NetError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("set {name} up in {}", self.where_()), e))
    }

    /// Idempotent node setup; see [`crate::NodeNet::setup_node`].
    pub async fn setup_node(
        &self,
        cfg: &NodeNetConfig,
        subnet: Ipv4Net,
        underlay: Ipv4Addr,
    ) -> Result<(), NetError> {
        for n in [&cfg.bridge, &cfg.vxlan] {
            if !valid_ifname(n) {
                return Err(NetError::Invalid(format!("invalid interface name {n:?}")));
            }
        }
        let at = self.where_().to_string();
        let subnet = subnet.trunc();
        let gateway = crate::ipam::gateway(subnet);

        // Bridge, with a MAC of its own derived from the gateway IP: a bridge without
        // one takes the lowest MAC of its ports and changes it when that port goes, which
        // leaves every pod with a stale ARP entry for its gateway (cross-node traffic
        // stalls for seconds after an unrelated pod is deleted).
        let bridge_mac = crate::pod_mac(gateway);
        let bridge = match self.link_index(&cfg.bridge).await? {
            Some(i) => {
                self.handle
                    .link()
                    .change(
                        LinkMessageBuilder::<LinkBridge>::new(&cfg.bridge)
                            .index(i)
                            .nf_call_iptables(true)
                            .address(bridge_mac.to_vec())
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| {
                        NetError::nl(format!("configure bridge {} in {at}", cfg.bridge), e)
                    })?;
                i
            }
            None => {
                self.handle
                    .link()
                    .add(
                        LinkBridge::new(&cfg.bridge)
                            .nf_call_iptables(true)
                            .address(bridge_mac.to_vec())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| NetError::nl(format!("add bridge {} in {at}", cfg.bridge), e))?;
                self.require_index(&cfg.bridge, "bridge").await?
            }
        };

        // Gateway address on the bridge. A gateway of another subnet (the node got a new
        // one) is removed: its connected route would shadow a peer's subnet. Other
        // addresses (someone else's) are left alone.
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::nl(format!("list addresses of {} in {at}", cfg.bridge), e))?;
        let mut have = false;
        for a in addrs {
            if a.header.family != AddressFamily::Inet || a.header.index != bridge {
                continue;
            }
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                _ => None,
            });
            let Some(ip) = ip else { continue };
            if ip == gateway && a.header.prefix_len == subnet.prefix_len() {
                have = true;
            } else if is_gateway_like(ip, a.header.prefix_len) {
                self.handle.address().del(a).execute().await.map_err(|e| {
                    NetError::nl(format!("remove old address of {} in {at}", cfg.bridge), e)
                })?;
            }
        }
        if !have {
            self.handle
                .address()
                .add(bridge, IpAddr::V4(gateway), subnet.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    NetError::nl(
                        format!(
                            "add {gateway}/{} to {} in {at}",
                            subnet.prefix_len(),
                            cfg.bridge
                        ),
                        e,
                    )
                })?;
        }

        // Per-namespace sysctls (files, not netlink).
        netns::write_sysctl(self.netns.as_deref(), "net.ipv4.ip_forward", "1").await?;
        if let Err(e) = netns::write_sysctl(
            self.netns.as_deref(),
            "net.bridge.bridge-nf-call-iptables",
            "1",
        )
        .await
        {
            tracing::warn!(error = %e, "bridge-nf-call-iptables (the bridge option is set anyway)");
        }

        // Underlay device: the interface holding `underlay`.
        let all: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::nl(format!("list addresses in {at}"), e))?;
        let dev = all
            .iter()
            .find(|a| {
                a.attributes.iter().any(|x| {
                    matches!(x, AddressAttribute::Address(IpAddr::V4(v)) | AddressAttribute::Local(IpAddr::V4(v)) if *v == underlay)
                })
            })
            .map(|a| a.header.index)
            .ok_or_else(|| NetError::Invalid(format!("underlay address {underlay} is on no interface in {at}")))?;

        // VXLAN: recreate when its parameters differ.
        if let Some(l) = self.link(&cfg.vxlan).await? {
            let want = [
                InfoVxlan::Id(cfg.vni),
                InfoVxlan::Local(underlay),
                InfoVxlan::Link(dev),
                InfoVxlan::Port(cfg.vxlan_port),
                InfoVxlan::Learning(false),
            ];
            let ok = vxlan_info(&l).is_some_and(|info| want.iter().all(|w| info.contains(w)));
            if !ok {
                self.handle
                    .link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(|e| NetError::nl(format!("delete stale {} in {at}", cfg.vxlan), e))?;
            }
        }
        let vxlan = match self.link_index(&cfg.vxlan).await? {
            Some(i) => i,
            None => {
                self.handle
                    .link()
                    .add(
                        LinkVxlan::new(&cfg.vxlan, cfg.vni)
                            .dev(dev)
                            .local(underlay)
                            .port(cfg.vxlan_port)
                            .learning(false)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| NetError::nl(format!("add vxlan {} in {at}", cfg.vxlan), e))?;
                self.require_index(&cfg.vxlan, "vxlan").await?
            }
        };
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(vxlan)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                NetError::nl(
                    format!("enslave {} to {} in {at}", cfg.vxlan, cfg.bridge),
                    e,
                )
            })?;
        self.set_up(bridge, &cfg.bridge).await
    }

    /// Idempotent pod network; see [`crate::NodeNet::create_pod_net`].
    pub async fn create_pod_net(&self, cfg: &NodeNetConfig, p: &PodNet) -> Result<(), NetError> {
        if !valid_ifname(&p.host_if) {
            return Err(NetError::Invalid(format!(
                "invalid interface name {:?}",
                p.host_if
            )));
        }
        if !p.subnet.contains(&p.ip) {
            return Err(NetError::Invalid(format!(
                "{} is not in {}",
                p.ip, p.subnet
            )));
        }
        let at = self.where_().to_string();
        let bridge = self.require_index(&cfg.bridge, "bridge").await?;
        netns::create_netns(&p.netns).await?;
        let pod = netns::connect(Some(&p.netns)).await?;
        let pod_at = format!("pod netns {}", p.netns);

        // Veth: reuse a complete pair, replace a half-made one.
        let host = self.link(&p.host_if).await?;
        let eth0 = link_by_name(&pod, "eth0", &pod_at).await?;
        let host = match (host, eth0) {
            (Some(h), Some(_)) => h.header.index,
            (h, e) => {
                if let Some(h) = h {
                    self.del_link(h.header.index, &p.host_if).await?;
                }
                if let Some(e) = e {
                    pod.link()
                        .del(e.header.index)
                        .execute()
                        .await
                        .map_err(|err| {
                            NetError::nl(format!("delete stale eth0 in {pod_at}"), err)
                        })?;
                }
                let ns_file = netns::open_netns(&p.netns)?;
                let peer = LinkMessageBuilder::<LinkUnspec>::new()
                    .name("eth0")
                    .address(crate::pod_mac(p.ip).to_vec())
                    .mtu(p.mtu)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build();
                let msg = LinkVeth::new(&p.host_if, "eth0")
                    .mtu(p.mtu)
                    .set_info_data(InfoData::Veth(
                        rtnetlink::packet_route::link::InfoVeth::Peer(peer),
                    ))
                    .build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(|e| NetError::nl(format!("add veth {} in {at}", p.host_if), e))?;
                drop(ns_file);
                self.require_index(&p.host_if, "veth").await?
            }
        };
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(host)
                    .mtu(p.mtu)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                NetError::nl(format!("attach {} to {} in {at}", p.host_if, cfg.bridge), e)
            })?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(host).hairpin(true).build())
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("hairpin on {} in {at}", p.host_if), e))?;

        // Inside the pod: lo up, eth0 address + MTU + up, default route.
        let lo = link_by_name(&pod, "lo", &pod_at)
            .await?
            .ok_or_else(|| NetError::Invalid(format!("no lo in {pod_at}")))?;
        pod.link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("lo up in {pod_at}"), e))?;
        let eth0 = link_by_name(&pod, "eth0", &pod_at)
            .await?
            .ok_or_else(|| NetError::Invalid(format!("no eth0 in {pod_at}")))?
            .header
            .index;
        let addrs: Vec<_> = pod
            .address()
            .get()
            .set_link_index_filter(eth0)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::nl(format!("list eth0 addresses in {pod_at}"), e))?;
        let mut have = false;
        for a in addrs {
            if a.header.family != AddressFamily::Inet || a.header.index != eth0 {
                continue;
            }
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                _ => None,
            });
            if ip == Some(p.ip) && a.header.prefix_len == p.subnet.prefix_len() {
                have = true;
            } else {
                pod.address()
                    .del(a)
                    .execute()
                    .await
                    .map_err(|e| NetError::nl(format!("remove old eth0 address in {pod_at}"), e))?;
            }
        }
        if !have {
            pod.address()
                .add(eth0, IpAddr::V4(p.ip), p.subnet.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    NetError::nl(
                        format!("add {}/{} to eth0 in {pod_at}", p.ip, p.subnet.prefix_len()),
                        e,
                    )
                })?;
        }
        pod.link()
            .set(
                LinkUnspec::new_with_index(eth0)
                    .address(crate::pod_mac(p.ip).to_vec())
                    .mtu(p.mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("eth0 up in {pod_at}"), e))?;
        pod.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(p.gateway)
                    .output_interface(eth0)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("default route via {} in {pod_at}", p.gateway), e))?;
        Ok(())
    }

    async fn del_link(&self, index: u32, name: &str) -> Result<(), NetError> {
        let r = self.handle.link().del(index).execute().await;
        deleted(r, &[ENODEV], || {
            format!("delete {name} in {}", self.where_())
        })
    }

    /// Idempotent teardown; see [`crate::NodeNet::delete_pod_net`].
    pub async fn delete_pod_net(&self, netns_name: &str, host_if: &str) -> Result<(), NetError> {
        let mut errors = Vec::new();
        if !valid_ifname(host_if) {
            errors.push(NetError::Invalid(format!(
                "invalid interface name {host_if:?}"
            )));
        }
        // The namespace first: when no process is left in it, the kernel destroys it
        // and its veth pair in its batched namespace cleanup, far cheaper than one
        // RTM_DELLINK per pod (each waits for an RCU grace period under the RTNL lock).
        let existed = netns::netns_exists(netns_name);
        if let Err(e) = netns::delete_netns(netns_name).await {
            errors.push(e);
        }
        if valid_ifname(host_if) {
            // Without a namespace there is nothing to wait for.
            let max_tries = if existed { 50 } else { 0 };
            // Wait briefly for that cleanup; delete the veth ourselves if something
            // still holds the namespace (a process not yet gone).
            let mut tries = 0;
            loop {
                match self.link_index(host_if).await {
                    Ok(None) => break,
                    Ok(Some(i)) if tries >= max_tries => {
                        if let Err(e) = self.del_link(i, host_if).await {
                            errors.push(e);
                        }
                        break;
                    }
                    Ok(Some(_)) => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        errors.push(e);
                        break;
                    }
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(NetError::Multiple(errors)),
        }
    }

    /// Delete the link `name` in this namespace; missing is fine.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        match self.link_index(name).await? {
            Some(i) => self.del_link(i, name).await,
            None => Ok(()),
        }
    }

    /// Names of links starting with `prefix`, sorted.
    pub async fn list_host_ifs(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::nl(format!("list links in {}", self.where_()), e))?;
        let mut names: Vec<String> = links
            .iter()
            .filter_map(link_name)
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Peer sync; see [`crate::NodeNet::sync_peers`].
    pub async fn sync_peers(
        &self,
        cfg: &NodeNetConfig,
        peers: &[Peer],
        local: Option<Local>,
    ) -> Result<PeerPlan, NetError> {
        let vxlan = self.require_index(&cfg.vxlan, "vxlan").await?;
        let bridge = self.require_index(&cfg.bridge, "bridge").await?;
        sync_peers_with(self, vxlan, bridge, peers, local).await
    }

    async fn request(
        &self,
        msg: NetlinkMessage<RouteNetlinkMessage>,
        op: String,
    ) -> Result<(), NetError> {
        let mut h = self.handle.clone();
        let mut resp = h.request(msg).map_err(|e| NetError::nl(op.clone(), e))?;
        use futures::StreamExt;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                return Err(NetError::nl(op, rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }
}

fn fdb_message(vxlan: u32, dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vxlan;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(ZERO_MAC.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    m
}

fn peer_route(bridge: u32, dst: Ipv4Net) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .output_interface(bridge)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::from(ROUTE_PROTO))
        .build()
}

impl NetOps for RtnlOps {
    async fn fdb_peers(&self, vxlan: u32) -> Result<Vec<Ipv4Addr>, NetError> {
        let entries: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::nl(format!("list fdb in {}", self.where_()), e))?;
        let mut out: Vec<Ipv4Addr> = entries
            .iter()
            .filter(|m| m.header.ifindex == vxlan)
            .filter(|m| {
                m.attributes
                    .iter()
                    .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l.as_slice() == ZERO_MAC))
            })
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(*v),
                    // In an AF_BRIDGE dump the destination is not parsed by family.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    _ => None,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn add_fdb_peer(&self, vxlan: u32, dst: Ipv4Addr) -> Result<(), NetError> {
        // rtnetlink's NeighbourAddRequest has no NLM_F_APPEND, which several entries for
        // one (zero) MAC need: build the request here.
        let mut req =
            NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(fdb_message(vxlan, dst)));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        match self
            .request(
                req,
                format!(
                    "fdb append 00:00:00:00:00:00 dst {dst} in {}",
                    self.where_()
                ),
            )
            .await
        {
            Err(NetError::Netlink { source, .. }) if errno(&source) == Some(EEXIST) => Ok(()),
            r => r,
        }
    }

    async fn del_fdb_peer(&self, vxlan: u32, dst: Ipv4Addr) -> Result<(), NetError> {
        let r = self
            .handle
            .neighbours()
            .del(fdb_message(vxlan, dst))
            .execute()
            .await;
        deleted(r, &[ENOENT, ENODEV], || {
            format!("fdb del dst {dst} in {}", self.where_())
        })
    }

    async fn peer_routes(&self, bridge: u32) -> Result<Vec<Ipv4Net>, NetError> {
        let routes: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::nl(format!("list routes in {}", self.where_()), e))?;
        let mut out = Vec::new();
        for r in routes {
            if r.header.table != MAIN_TABLE || r.header.protocol != RouteProtocol::from(ROUTE_PROTO)
            {
                continue;
            }
            if !r
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == bridge))
            {
                continue;
            }
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(v)) => Some(*v),
                _ => None,
            });
            if let Some(d) = dst {
                if let Ok(n) = Ipv4Net::new(d, r.header.destination_prefix_length) {
                    out.push(n);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn add_peer_route(&self, bridge: u32, dst: Ipv4Net) -> Result<(), NetError> {
        self.handle
            .route()
            .add(peer_route(bridge, dst))
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("route {dst} dev bridge in {}", self.where_()), e))
    }

    async fn del_peer_route(&self, bridge: u32, dst: Ipv4Net) -> Result<(), NetError> {
        let r = self
            .handle
            .route()
            .del(peer_route(bridge, dst))
            .execute()
            .await;
        deleted(r, &[ESRCH, ENOENT], || {
            format!("delete route {dst} in {}", self.where_())
        })
    }
}

/// Whether `ip/prefix` is the first host of its network (how this crate numbers the
/// bridge gateway).
fn is_gateway_like(ip: Ipv4Addr, prefix: u8) -> bool {
    Ipv4Net::new(ip, prefix).is_ok_and(|n| prefix < 31 && crate::ipam::gateway(n.trunc()) == ip)
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn vxlan_info(l: &LinkMessage) -> Option<Vec<InfoVxlan>> {
    let infos = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    if !infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
        _ => None,
    })
}

async fn link_by_name(h: &Handle, name: &str, at: &str) -> Result<Option<LinkMessage>, NetError> {
    if !valid_ifname(name) {
        return Err(NetError::Invalid(format!(
            "invalid interface name {name:?}"
        )));
    }
    let mut s = h.link().get().match_name(name).execute();
    match s.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(NetError::nl(format!("get link {name} in {at}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Recording fake: state plus the sequence of calls.
    #[derive(Default)]
    struct Fake {
        fdb: RefCell<Vec<Ipv4Addr>>,
        routes: RefCell<Vec<Ipv4Net>>,
        calls: RefCell<Vec<String>>,
        fail_add_fdb: Option<Ipv4Addr>,
    }

    impl NetOps for Fake {
        async fn fdb_peers(&self, _v: u32) -> Result<Vec<Ipv4Addr>, NetError> {
            Ok(self.fdb.borrow().clone())
        }
        async fn add_fdb_peer(&self, _v: u32, d: Ipv4Addr) -> Result<(), NetError> {
            self.calls.borrow_mut().push(format!("fdb+ {d}"));
            if self.fail_add_fdb == Some(d) {
                return Err(NetError::Invalid(format!("boom {d}")));
            }
            self.fdb.borrow_mut().push(d);
            Ok(())
        }
        async fn del_fdb_peer(&self, _v: u32, d: Ipv4Addr) -> Result<(), NetError> {
            self.calls.borrow_mut().push(format!("fdb- {d}"));
            self.fdb.borrow_mut().retain(|x| *x != d);
            Ok(())
        }
        async fn peer_routes(&self, _b: u32) -> Result<Vec<Ipv4Net>, NetError> {
            Ok(self.routes.borrow().clone())
        }
        async fn add_peer_route(&self, _b: u32, d: Ipv4Net) -> Result<(), NetError> {
            self.calls.borrow_mut().push(format!("route+ {d}"));
            self.routes.borrow_mut().push(d);
            Ok(())
        }
        async fn del_peer_route(&self, _b: u32, d: Ipv4Net) -> Result<(), NetError> {
            self.calls.borrow_mut().push(format!("route- {d}"));
            self.routes.borrow_mut().retain(|x| *x != d);
            Ok(())
        }
    }

    #[test]
    fn gateway_like_addresses() {
        assert!(is_gateway_like("10.0.3.1".parse().unwrap(), 24));
        assert!(!is_gateway_like("10.0.3.7".parse().unwrap(), 24));
        assert!(!is_gateway_like("10.96.0.1".parse().unwrap(), 32));
    }

    fn peer(a: &str, s: &str) -> Peer {
        Peer {
            name: a.into(),
            address: a.parse().unwrap(),
            subnet: s.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn sync_sequence_and_idempotence() {
        let f = Fake::default();
        f.fdb.borrow_mut().push("192.168.1.9".parse().unwrap());
        f.routes.borrow_mut().push("10.0.9.0/24".parse().unwrap());
        let peers = [peer("192.168.1.2", "10.0.2.0/24")];
        sync_peers_with(&f, 1, 2, &peers, None).await.unwrap();
        assert_eq!(
            *f.calls.borrow(),
            vec![
                "route- 10.0.9.0/24",
                "fdb- 192.168.1.9",
                "fdb+ 192.168.1.2",
                "route+ 10.0.2.0/24"
            ]
        );
        f.calls.borrow_mut().clear();
        let plan = sync_peers_with(&f, 1, 2, &peers, None).await.unwrap();
        assert!(plan.is_empty());
        assert!(f.calls.borrow().is_empty());
    }

    #[tokio::test]
    async fn sync_keeps_going_past_failures() {
        let f = Fake {
            fail_add_fdb: Some("192.168.1.2".parse().unwrap()),
            ..Default::default()
        };
        let peers = [
            peer("192.168.1.2", "10.0.2.0/24"),
            peer("192.168.1.3", "10.0.3.0/24"),
        ];
        let err = sync_peers_with(&f, 1, 2, &peers, None).await.unwrap_err();
        assert!(err.to_string().contains("boom 192.168.1.2"), "{err}");
        assert_eq!(f.fdb.borrow().len(), 1);
        assert_eq!(f.routes.borrow().len(), 2);
    }
}
