//! Cluster DNS, served by every node agent inside its node namespace at the cluster
//! DNS address (`--cluster-dns`, 10.96.0.10 by default: put on the node's `lo`, so the
//! node's pods reach it through their default route), over UDP and TCP port 53, with
//! hickory-server. Answers come from the agent's own Service and Endpoints watch
//! ([`records`], pure); names outside the cluster domain are forwarded to the node's
//! resolvers (`--dns-upstream`, default: the agent's /etc/resolv.conf) over UDP, or
//! answered SERVFAIL when there is none or none answers. Unknown names in the cluster
//! domain get NXDOMAIN with the zone's SOA. Every pod's `/etc/resolv.conf` comes from
//! [`resolv`] (pure).

pub mod records;
pub mod resolv;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use kube_lite_client::{watcher, Event, WatchParams};
use kube_lite_proto::v1::{
    endpoints_api_client::EndpointsApiClient, service_api_client::ServiceApiClient,
};
use records::{Answer, QType, Records};
use tracing::{debug, info, warn};

/// TTL of cluster answers (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;
/// How long one upstream may take to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest TCP query accepted / idle time of a TCP connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where to listen (port 53 of the cluster DNS address).
    pub listen: SocketAddr,
    /// `cluster.local`.
    pub domain: String,
    /// Resolvers for other names (empty: SERVFAIL).
    pub upstreams: Vec<SocketAddr>,
}

/// The nameservers of a resolv.conf text as upstreams (port 53), loopback ones
/// included (the forwarder runs in the agent's own namespace).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    resolv::ResolvConf::parse(text)
        .nameservers
        .iter()
        .filter_map(|n| n.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The handler: cluster names from `records`, the rest forwarded.
pub struct Handler {
    records: Arc<RwLock<Records>>,
    upstreams: Vec<SocketAddr>,
    soa: Record,
}

impl Handler {
    pub fn new(records: Arc<RwLock<Records>>, upstreams: Vec<SocketAddr>) -> Handler {
        let domain = records
            .read()
            .map(|r| r.domain().to_string())
            .unwrap_or_default();
        let zone = Name::from_ascii(format!("{domain}.")).unwrap_or_else(|_| Name::root());
        let soa = SOA::new(
            Name::from_ascii(format!("ns.dns.{domain}.")).unwrap_or_else(|_| Name::root()),
            Name::from_ascii(format!("hostmaster.{domain}.")).unwrap_or_else(|_| Name::root()),
            1,
            7200,
            1800,
            86400,
            TTL,
        );
        Handler {
            records,
            upstreams,
            soa: Record::from_rdata(zone, TTL, RData::SOA(soa)),
        }
    }

    /// Sends `qname`/`qtype` to the upstreams in turn; the first answer wins.
    async fn forward(&self, name: Name, qtype: RecordType) -> Option<Message> {
        for up in &self.upstreams {
            let mut m = Message::new();
            m.set_id(rand::random())
                .set_message_type(MessageType::Query)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(true)
                .add_query(Query::query(name.clone(), qtype));
            let Ok(bytes) = m.to_vec() else { return None };
            let bind: SocketAddr = if up.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let r = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                let sock = tokio::net::UdpSocket::bind(bind).await?;
                sock.connect(up).await?;
                sock.send(&bytes).await?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = sock.recv(&mut buf).await?;
                    if let Ok(reply) = Message::from_vec(&buf[..n]) {
                        if reply.id() == m.id() {
                            return Ok::<Message, std::io::Error>(reply);
                        }
                    }
                }
            })
            .await;
            match r {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => debug!(upstream = %up, "forwarding {name}: {e}"),
                Err(_) => debug!(upstream = %up, "forwarding {name}: timed out"),
            }
        }
        None
    }
}

fn name_of(s: &str) -> Name {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).unwrap_or_else(|_| Name::root())
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let Some(q) = request.queries().first() else {
            let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
            return send(&mut response, msg).await;
        };
        let qname = q.name().to_string();
        let qtype = q.query_type();
        let kind = match qtype {
            RecordType::A => QType::A,
            RecordType::SRV => QType::Srv,
            _ => QType::Other,
        };
        let answer = match self.records.read() {
            Ok(r) => r.lookup(&qname, kind),
            Err(_) => Answer::NotCluster,
        };
        let owner: Name = q.name().into();
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut soa = Vec::new();
        match answer {
            Answer::NotCluster => {
                return match self.forward(owner, qtype).await {
                    Some(reply) => {
                        header.set_response_code(reply.response_code());
                        let msg = builder.build(
                            header,
                            reply.answers(),
                            reply.name_servers(),
                            std::iter::empty(),
                            reply.additionals(),
                        );
                        send(&mut response, msg).await
                    }
                    None => {
                        if self.upstreams.is_empty() {
                            debug!(name = %qname, "no upstream resolver: SERVFAIL");
                        }
                        let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
                        send(&mut response, msg).await
                    }
                };
            }
            Answer::A(ips) => {
                header.set_authoritative(true);
                answers = ips
                    .into_iter()
                    .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(ip))))
                    .collect();
            }
            Answer::Srv(srvs) => {
                header.set_authoritative(true);
                for s in srvs {
                    let target = name_of(&s.target);
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, 100, s.port, target.clone())),
                    ));
                    if let Some(ip) = s.ip {
                        additionals.push(Record::from_rdata(target, TTL, RData::A(A(ip))));
                    }
                }
            }
            Answer::NoData => {
                header.set_authoritative(true);
                soa.push(self.soa.clone());
            }
            Answer::NxDomain => {
                header.set_authoritative(true);
                header.set_response_code(ResponseCode::NXDomain);
                soa.push(self.soa.clone());
            }
        }
        let msg = builder.build(
            header,
            answers.iter(),
            std::iter::empty(),
            soa.iter(),
            additionals.iter(),
        );
        send(&mut response, msg).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            debug!("sending a DNS response: {e}");
            let mut h = Header::new();
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}

/// Keeps `records` current from the Service and Endpoints watch on `channel`.
pub async fn watch_records(channel: tonic::transport::Channel, records: Arc<RwLock<Records>>) {
    const MAX: usize = 256 << 20;
    let mut services = Box::pin(watcher(
        ServiceApiClient::new(channel.clone()).max_decoding_message_size(MAX),
        WatchParams::default(),
    ));
    let mut endpoints = Box::pin(watcher(
        EndpointsApiClient::new(channel).max_decoding_message_size(MAX),
        WatchParams::default(),
    ));
    loop {
        tokio::select! {
            ev = services.next() => {
                let Some(ev) = ev else { return };
                let Ok(mut r) = records.write() else { return };
                match ev {
                    Ok(Event::Restarted(all, _)) => r.replace_services(all),
                    Ok(Event::Applied(s)) => r.upsert_service(s),
                    Ok(Event::Deleted(s)) => r.delete_service(&s),
                    Ok(Event::Bookmark(_)) => {}
                    Err(e) => warn!("dns: watching services: {e}"),
                }
            }
            ev = endpoints.next() => {
                let Some(ev) = ev else { return };
                let Ok(mut r) = records.write() else { return };
                match ev {
                    Ok(Event::Restarted(all, _)) => r.replace_endpoints(all),
                    Ok(Event::Applied(e)) => r.upsert_endpoints(e),
                    Ok(Event::Deleted(e)) => r.delete_endpoints(&e),
                    Ok(Event::Bookmark(_)) => {}
                    Err(e) => warn!("dns: watching endpoints: {e}"),
                }
            }
        }
    }
}

/// Serves `handler` on UDP and TCP sockets already bound (inside the node namespace)
/// until the task is dropped.
pub async fn serve(
    handler: Handler,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
) -> anyhow::Result<()> {
    let mut server = hickory_server::ServerFuture::new(handler);
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    server.register_socket(tokio::net::UdpSocket::from_std(udp)?);
    server.register_listener(tokio::net::TcpListener::from_std(tcp)?, TCP_TIMEOUT);
    server.block_until_done().await?;
    Ok(())
}

/// Puts the cluster DNS address on `lo` of `netns` (idempotent), binds port 53 there
/// and serves the cluster's names from the watch on `channel`.
pub async fn run(
    channel: tonic::transport::Channel,
    netns: Option<String>,
    cfg: DnsConfig,
) -> anyhow::Result<()> {
    let ip = cfg.listen.ip();
    let mut cmd = match &netns {
        Some(ns) => kube_lite_net::netns::command_in_netns(ns, "ip"),
        None => std::process::Command::new("ip"),
    };
    let out = cmd
        .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "adding the cluster DNS address {ip} to lo: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let listen = cfg.listen;
    let (udp, tcp) = kube_lite_net::netns::in_netns(netns.as_deref(), move || {
        let udp = std::net::UdpSocket::bind(listen)?;
        let tcp = std::net::TcpListener::bind(listen)?;
        Ok::<_, std::io::Error>((udp, tcp))
    })
    .await??;
    let records = Arc::new(RwLock::new(Records::new(&cfg.domain)));
    tokio::spawn(watch_records(channel, records.clone()));
    info!(listen = %cfg.listen, domain = %cfg.domain, upstreams = ?cfg.upstreams, "cluster DNS serving");
    serve(Handler::new(records, cfg.upstreams), udp, tcp).await
}
