//! `run(config)`: the agent's start-up sequence and long-running tasks.
//!
//! 1. Logs server bound (its address is published as status.daemon_endpoint).
//! 2. Node registered (Create, or take over an existing one keeping its subnet).
//! 3. Node datapath set up in the node namespace (bridge, VXLAN); heartbeats start.
//! 4. Recovery from the state dir: adopt live pods, clean up the rest, remove orphans.
//! 5. Pod watch, Node watch (VXLAN peers), Service proxy; until SIGTERM/SIGINT. Pods
//!    keep running when the agent stops (a new agent adopts them).

use crate::config::Config;
use crate::image::Resolver;
use crate::logs::LogsService;
use crate::node::{self, NodeInfo};
use crate::pods;
use crate::runtime::ProcessRuntime;
use crate::state::StateDir;
use anyhow::{anyhow, Context};
use kube_lite_client::Clients;
use kube_lite_net::ipam::Ipam;
use kube_lite_net::{NodeNet, NodeNetConfig};
use kube_lite_proto::v1::node_agent_server::NodeAgentServer;
use kube_lite_proto::v1::node_exec_server::NodeExecServer;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_stream::wrappers::TcpListenerStream;

/// First global IPv4 address of the node namespace (`ip -4 -o addr show scope global`).
fn detect_address(netns: Option<&str>) -> anyhow::Result<Ipv4Addr> {
    let mut cmd = match netns {
        Some(ns) => kube_lite_net::command_in_netns(ns, "ip"),
        None => std::process::Command::new("ip"),
    };
    let out = cmd
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .context("running `ip -4 -o addr show scope global`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    first_global_ipv4(&text).ok_or_else(|| {
        anyhow!(
            "no global IPv4 address in the node namespace{}; pass --address",
            netns.map(|n| format!(" {n}")).unwrap_or_default()
        )
    })
}

/// Parses `ip -4 -o addr` output: "2: eth0    inet 192.168.1.2/24 brd … scope global eth0".
pub fn first_global_ipv4(text: &str) -> Option<Ipv4Addr> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        it.find(|w| *w == "inet")?;
        let cidr = it.next()?;
        let ip: Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
        // Our own bridge holds a gateway address; never advertise it.
        (!ip.is_loopback() && !l.contains(" kl0")).then_some(ip)
    })
}

fn capacity(subnet: kube_lite_net::Ipv4Net) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let hosts = (1u64 << (32 - subnet.prefix_len() as u32)).saturating_sub(3);
    m.insert("pods".to_string(), hosts.to_string());
    m.insert(
        "cpu".to_string(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string(),
    );
    if let Ok(mi) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(kb) = mi
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
        {
            m.insert("memory".to_string(), format!("{kb}Ki"));
        }
    }
    m
}

/// The binary's body: [`run`] on a multi-thread runtime. Not async and not generic, so
/// the agent's async code is compiled once, in this crate, not again in the binary.
pub fn run_blocking(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let node_name = match &cfg.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname (pass --node-name)")?
            .to_string_lossy()
            .to_string(),
    };
    let state_dir = cfg
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/kube-lite").join(&node_name));
    let state = StateDir::new(&state_dir)
        .with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let address = match cfg.address {
        Some(a) => a,
        None => detect_address(cfg.netns.as_deref())?,
    };
    let netns_prefix = cfg
        .netns_prefix
        .clone()
        .unwrap_or_else(|| format!("kl-{node_name}"));

    let secure = !cfg.server.starts_with("http://");
    if !secure {
        tracing::warn!(server = %cfg.server, "INSECURE: plaintext to the apiserver, no node identity, NodeAgent port without TLS");
    }

    // The containerd runtime (images) when asked for; its image service answers
    // LoadImage on the NodeAgent server.
    let images: crate::containerd::service::ImageList = Default::default();
    let cgroups = crate::cgroups::Cgroups::detect(&format!("kube-lite-{netns_prefix}"));
    match &cgroups {
        Some(cg) => tracing::info!(version = cg.version(), "container limits with cgroups"),
        None => tracing::warn!("no usable cgroups: pods with resource limits will not start"),
    }
    let ctrd_rt = if cfg.runtime == "containerd" {
        let c = crate::containerd::client::Ctrd::connect(
            &cfg.containerd_socket,
            &cfg.containerd_namespace,
        )
        .await
        .context("--runtime containerd")?;
        let exe =
            std::env::current_exe().context("the agent's own path (containerd's log writer)")?;
        Some(crate::containerd::runtime::ContainerdRuntime::new(
            c,
            &node_name,
            state.clone(),
            exe,
            cfg.container_log_max_size,
            cgroups.clone(),
        ))
    } else {
        None
    };
    let image_svc = ctrd_rt.as_ref().map(|rt| {
        crate::containerd::service::ImageService::new(
            rt.clone(),
            &node_name,
            state_dir.join("uploads"),
            Some(
                cfg.image_import_dir
                    .clone()
                    .unwrap_or_else(|| state_dir.join("images")),
            ),
            cfg.max_image_archive_size,
            images.clone(),
        )
    });
    if let Some(svc) = &image_svc {
        crate::containerd::import::drop_stale_leases(&svc.c).await;
        svc.refresh().await;
        tracing::info!(socket = %cfg.containerd_socket.display(), namespace = %cfg.containerd_namespace,
            images = svc.images.lock().unwrap().len(), "containerd runtime");
    }

    // Logs server first: its address goes into the Node status. By default on the node
    // address, never on every interface.
    let listen = cfg
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::from((address, 10250)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the NodeAgent server on {listen}"))?;
    let local = listener.local_addr()?;
    let scheme = if secure { "https" } else { "http" };
    let endpoint = cfg.advertise_endpoint.clone().unwrap_or_else(|| {
        if local.ip().is_unspecified() {
            format!("{scheme}://{address}:{}", local.port())
        } else {
            format!("{scheme}://{local}")
        }
    });

    // The node identity: saved, or from a join (the names: what the apiserver dials).
    let mut names = vec![address.to_string(), node_name.clone()];
    if !local.ip().is_unspecified() {
        names.push(local.ip().to_string());
    }
    let identity = if secure {
        Some(
            crate::identity::obtain(
                &cfg.server,
                &node_name,
                &names,
                &state_dir,
                cfg.certificate_authority.as_deref(),
                &crate::identity::JoinToken {
                    token: cfg.join_token.clone(),
                    file: cfg.join_token_file.clone(),
                },
            )
            .await?,
        )
    } else {
        None
    };

    let logs = LogsService {
        state: state.clone(),
        require_apiserver: identity.is_some(),
        images: image_svc.clone(),
    };
    // The running binary even if its file is replaced meanwhile (e.g. rebuilt).
    let exe = PathBuf::from("/proc/self/exe");
    let runtime: Arc<dyn crate::runtime::Runtime> = match &ctrd_rt {
        Some(rt) => rt.clone(),
        None => {
            ProcessRuntime::with_cgroups(state.clone(), exe, cfg.container_log_max_size, cgroups)
        }
    };
    let exec = crate::exec::ExecService::new(state.clone(), identity.is_some(), runtime.clone());
    let mut server = tonic::transport::Server::builder();
    if let Some(id) = &identity {
        // mTLS: only clients with a certificate from the cluster CA get through the
        // handshake; the service then admits the apiserver's alone.
        server = server
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(
                        &id.cert.cert_pem,
                        &id.cert.key_pem,
                    ))
                    .client_ca_root(tonic::transport::Certificate::from_pem(&id.ca_pem)),
            )
            .context("NodeAgent TLS")?;
    }
    tokio::spawn(async move {
        if let Err(e) = server
            .add_service(NodeAgentServer::new(logs))
            .add_service(
                NodeExecServer::new(exec)
                    .max_decoding_message_size(kube_lite_core::exec::MAX_EXEC_MESSAGE_BYTES),
            )
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
        {
            tracing::error!("NodeAgent server: {e}");
        }
    });

    let channel = match &identity {
        Some(id) => kube_lite_client::connect_tls_lazy(&cfg.server, id.client_config()?)?,
        None => kube_lite_client::connect_lazy(&cfg.server)?,
    };
    if let Some(id) = &identity {
        tokio::spawn(crate::identity::renew_when_due(
            id.clone(),
            channel.clone(),
            names.clone(),
        ));
    }
    let clients = Clients::new(channel.clone());
    let mut info = NodeInfo {
        name: node_name.clone(),
        address,
        daemon_endpoint: endpoint.clone(),
        capacity: BTreeMap::new(),
        images: images.clone(),
        allocatable: BTreeMap::new(),
    };
    let registered = node::register(&clients, &info).await;
    let pod_cidr = registered.spec.clone().unwrap_or_default().pod_cidr;
    let subnet: kube_lite_net::Ipv4Net = pod_cidr
        .parse()
        .with_context(|| format!("node {node_name}: bad spec.pod_cidr {pod_cidr:?}"))?;
    info.capacity = capacity(subnet);
    crate::resources::apply_node_flags(&mut info.capacity, &mut info.allocatable, &cfg);
    tracing::info!(node = %node_name, %address, %subnet, %endpoint, netns = ?cfg.netns, "node registered");

    let net = NodeNet::open(NodeNetConfig {
        netns: cfg.netns.clone(),
        vni: cfg.vni,
        mtu: cfg.mtu,
        ..Default::default()
    })
    .await
    .context("opening the node datapath")?;
    net.setup_node(subnet, address).await.with_context(|| {
        format!("setting up the node datapath ({subnet} on the bridge, VXLAN via {address})")
    })?;
    let net = Arc::new(net);
    let ipam = Ipam::open(state.ipam_path(), subnet)
        .with_context(|| format!("opening IPAM {}", state.ipam_path().display()))?;

    tokio::spawn(node::heartbeat(
        clients.clone(),
        info.clone(),
        cfg.heartbeat_interval,
        cfg.node_status_report_interval,
    ));
    tokio::spawn(node::renew_lease_forever(
        clients.clone(),
        node_name.clone(),
        cfg.heartbeat_interval,
    ));

    let node = pods::Node::new(
        node_name.clone(),
        address,
        subnet,
        netns_prefix,
        cfg.mtu,
        Arc::new(pods::ports::GrpcPodApi(clients.clone())),
        net.clone(),
        ipam,
        Arc::new(state.clone()),
        runtime,
        Resolver::from_env(&node_name, cfg.image_dir.clone()),
    );
    // Cluster DNS: pods' resolv.conf, and the server in the node namespace.
    let node_resolv = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
    let cluster_dns = (!cfg.no_cluster_dns).then_some(cfg.cluster_dns);
    let _ = node.volumes_root.set(state_dir.join("volumes"));
    let (recorder, events_rx) = crate::events::Recorder::new();
    let _ = node.events.set(recorder);
    tokio::spawn(crate::events::run(
        events_rx,
        clients.events.clone(),
        node_name.clone(),
    ));
    let _ = node.dns.set(pods::PodDns {
        cluster_dns,
        domain: cfg.cluster_domain.clone(),
        node: crate::dns::resolv::ResolvConf::parse(&node_resolv),
    });
    if let Some(ip) = cluster_dns {
        let upstreams = match &cfg.dns_upstream {
            Some(s) => crate::config::parse_upstreams(s).map_err(anyhow::Error::msg)?,
            None => crate::dns::upstreams_from_resolv_conf(&node_resolv),
        };
        let dcfg = crate::dns::DnsConfig {
            listen: (ip, 53).into(),
            domain: cfg.cluster_domain.clone(),
            upstreams,
        };
        let (ch, ns) = (channel.clone(), cfg.netns.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::dns::run(ch, ns, dcfg).await {
                tracing::error!("cluster DNS: {e:#}");
            }
        });
    }
    pods::recover(&node).await;
    if let Some(svc) = &image_svc {
        tokio::spawn(svc.clone().watch_dir());
    }
    tokio::spawn(pods::watch_pods(node.clone(), clients.clone()));
    tokio::spawn(node::sync_peers_forever(
        clients.clone(),
        net.clone(),
        node_name.clone(),
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !cfg.no_proxy {
        let pcfg = kube_lite_proxy::ProxyConfig {
            netns: cfg.netns.clone(),
            pod_subnet: Some(subnet),
            node_name: Some(node_name.clone()),
            mode: match cfg.proxy_mode.as_str() {
                "random" => kube_lite_proxy::Mode::Random,
                _ => kube_lite_proxy::Mode::Nth,
            },
            backend: match cfg.iptables_backend.as_str() {
                "legacy" => kube_lite_proxy::Backend::Legacy,
                _ => kube_lite_proxy::Backend::Nft,
            },
            ..Default::default()
        };
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = kube_lite_proxy::run(channel, pcfg, shutdown).await {
                tracing::error!("service proxy: {e:#}");
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(node = %node_name, "stopping (pods keep running)");
    let _ = stop_tx.send(true);
    drop(stop_rx);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_addr_output() {
        let t = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                 5: kl0    inet 10.0.1.1/24 scope global kl0\n\
                 7: eth0    inet 192.168.3.2/24 brd 192.168.3.255 scope global eth0\n";
        assert_eq!(first_global_ipv4(t), Some(Ipv4Addr::new(192, 168, 3, 2)));
        assert_eq!(first_global_ipv4(""), None);
    }
}
