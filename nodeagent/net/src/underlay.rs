//! Test and local-cluster plumbing: an "underlay" network made of a namespace with a
//! bridge, and node namespaces attached to it by veths. This is what a real cluster gets
//! from its physical network; on one machine we build it with namespaces. Everything
//! lives inside the named namespaces passed in, never in the caller's namespace.

use std::net::IpAddr;

use ipnet::Ipv4Net;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};
use std::os::fd::AsRawFd;

use crate::netns;
use crate::NetError;

/// Name of the bridge inside the underlay namespace.
pub const UNDERLAY_BRIDGE: &str = "kl-ubr";
/// Name of a node's underlay interface inside the node namespace.
pub const NODE_UPLINK: &str = "kl-up0";

async fn up(h: &rtnetlink::Handle, name: &str, at: &str) -> Result<u32, NetError> {
    let l = link(h, name, at)
        .await?
        .ok_or_else(|| NetError::Invalid(format!("no {name} in {at}")))?;
    h.link()
        .set(LinkUnspec::new_with_index(l).up().build())
        .execute()
        .await
        .map_err(|e| NetError::nl(format!("set {name} up in {at}"), e))?;
    Ok(l)
}

async fn link(h: &rtnetlink::Handle, name: &str, at: &str) -> Result<Option<u32>, NetError> {
    use futures::TryStreamExt;
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -19 => Ok(None),
        Err(e) => Err(NetError::nl(format!("get {name} in {at}"), e)),
    }
}

/// Create (idempotently) the underlay namespace `netns` with `lo` up and an up bridge
/// [`UNDERLAY_BRIDGE`].
pub async fn create_underlay(netns_name: &str) -> Result<(), NetError> {
    netns::create_netns(netns_name).await?;
    let h = netns::connect(Some(netns_name)).await?;
    up(&h, "lo", netns_name).await?;
    if link(&h, UNDERLAY_BRIDGE, netns_name).await?.is_none() {
        h.link()
            .add(LinkBridge::new(UNDERLAY_BRIDGE).build())
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("add bridge in {netns_name}"), e))?;
    }
    up(&h, UNDERLAY_BRIDGE, netns_name).await?;
    Ok(())
}

/// Create (idempotently) node namespace `node_ns` and join it to the underlay: a veth
/// `port` (≤ 15 chars) on the underlay bridge <-> [`NODE_UPLINK`] in the node namespace
/// holding `address` (e.g. 192.168.7.2/24); `lo` up in the node.
pub async fn attach_node(
    underlay_ns: &str,
    node_ns: &str,
    port: &str,
    address: Ipv4Net,
) -> Result<(), NetError> {
    if !crate::names::valid_ifname(port) {
        return Err(NetError::Invalid(format!(
            "invalid interface name {port:?}"
        )));
    }
    netns::create_netns(node_ns).await?;
    let u = netns::connect(Some(underlay_ns)).await?;
    let n = netns::connect(Some(node_ns)).await?;
    up(&n, "lo", node_ns).await?;
    let have_port = link(&u, port, underlay_ns).await?.is_some();
    let have_up = link(&n, NODE_UPLINK, node_ns).await?.is_some();
    if !(have_port && have_up) {
        if let Some(i) = link(&u, port, underlay_ns).await? {
            let _ = u.link().del(i).execute().await;
        }
        if let Some(i) = link(&n, NODE_UPLINK, node_ns).await? {
            let _ = n.link().del(i).execute().await;
        }
        let f = netns::open_netns(node_ns)?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(NODE_UPLINK)
            .setns_by_fd(f.as_raw_fd())
            .build();
        let msg = LinkVeth::new(port, NODE_UPLINK)
            .set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
                rtnetlink::packet_route::link::InfoVeth::Peer(peer),
            ))
            .build();
        u.link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetError::nl(format!("add veth {port} in {underlay_ns}"), e))?;
    }
    let bridge = link(&u, UNDERLAY_BRIDGE, underlay_ns)
        .await?
        .ok_or_else(|| NetError::Invalid(format!("no {UNDERLAY_BRIDGE} in {underlay_ns}")))?;
    let p = link(&u, port, underlay_ns)
        .await?
        .ok_or_else(|| NetError::Invalid(format!("no {port} in {underlay_ns}")))?;
    u.link()
        .set(
            LinkUnspec::new_with_index(p)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetError::nl(format!("attach {port} in {underlay_ns}"), e))?;
    let i = up(&n, NODE_UPLINK, node_ns).await?;
    n.address()
        .add(i, IpAddr::V4(address.addr()), address.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::nl(format!("add {address} in {node_ns}"), e))?;
    Ok(())
}
