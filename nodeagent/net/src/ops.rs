//! Side effects of the datapath.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{NetError, NodeNetConfig, Peer, PodNet};

/// rtnetlink implementation.
pub struct RtnlOps {}

impl RtnlOps {
    pub(crate) async fn open(_netns: Option<String>) -> Result<Self, NetError> {
        Err(NetError::Invalid("not implemented yet".into()))
    }
}

pub(crate) async fn setup_node(
    _o: &RtnlOps,
    _c: &NodeNetConfig,
    _s: Ipv4Net,
    _u: Ipv4Addr,
) -> Result<(), NetError> {
    Err(NetError::Invalid("not implemented yet".into()))
}
pub(crate) async fn sync_peers(
    _o: &RtnlOps,
    _c: &NodeNetConfig,
    _p: &[Peer],
) -> Result<(), NetError> {
    Err(NetError::Invalid("not implemented yet".into()))
}
pub(crate) async fn create_pod_net(
    _o: &RtnlOps,
    _c: &NodeNetConfig,
    _p: &PodNet,
) -> Result<(), NetError> {
    Err(NetError::Invalid("not implemented yet".into()))
}
pub(crate) async fn delete_pod_net(_o: &RtnlOps, _n: &str, _h: &str) -> Result<(), NetError> {
    Err(NetError::Invalid("not implemented yet".into()))
}
pub(crate) async fn list_host_ifs(_o: &RtnlOps, _p: &str) -> Result<Vec<String>, NetError> {
    Err(NetError::Invalid("not implemented yet".into()))
}
