//! Privileged tests: real iptables in real network namespaces (run as root; skipped
//! otherwise). The proxier is driven directly; `run` over a real apiserver is covered
//! in `watch.rs`.

mod common;

use common::*;
use kube_lite_proxy::render::{parse_save, Table};
use kube_lite_proxy::{Backend, Mode, Proxier, ProxyConfig, SyncReport};
use std::net::Ipv4Addr;

/// Not a test: the body of the helper processes (servers and clients in namespaces).
#[test]
fn helper_process() {
    if let Ok(spec) = std::env::var(HELPER_ENV) {
        helper_main(&spec);
    }
}

const VIP: &str = "172.17.10.10";

fn cfg(node: &Node) -> ProxyConfig {
    ProxyConfig {
        netns: Some(node.netns.clone()),
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A full resync of `p` on `rt`: its report.
fn resync(rt: &tokio::runtime::Runtime, p: &mut Proxier) -> SyncReport {
    p.request_resync();
    rt.block_on(p.sync()).unwrap()
}

/// `iptables <args>` run in the namespace `ns` (must succeed): its stdout.
fn iptables_in(ns: &str, args: &[&str]) -> String {
    let mut argv = vec!["ip", "netns", "exec", ns, "iptables"];
    argv.extend_from_slice(args);
    must(&argv)
}

/// 100 TCP connections from `netns` to web at VIP:3001: one answer line each.
fn hundred_to_web(netns: &str) -> Vec<String> {
    run_client(netns, &format!("tcp {VIP} 3001 100"))
}

/// A node with 5 pods; pods 0-3 serve on 8080 and are the endpoints of web:3001.
fn web_node(cfg_fn: impl Fn(&Node) -> ProxyConfig) -> (Node, Proxier) {
    let mut node = Node::new(5);
    for i in 0..4 {
        node.serve(i, 8080);
    }
    let mut p = Proxier::new(&cfg_fn(&node)).unwrap();
    p.upsert_service(service("web", VIP, &[("http", "TCP", 3001, 8080)]));
    let ips: Vec<Ipv4Addr> = node.pods[..4].iter().map(|p| p.ip).collect();
    p.upsert_endpoints(endpoints("web", &ips, &[("http", 8080, "TCP")]));
    rt().block_on(p.sync()).unwrap();
    (node, p)
}

fn assert_exact_round_robin(lines: &[String]) {
    let t = tally(lines);
    let want: std::collections::BTreeMap<String, usize> =
        (0..4).map(|i| (format!("pod{i}"), 25)).collect();
    assert_eq!(t, want, "answers: {lines:?}");
}

#[test]
fn round_robin_exact_from_another_pod() {
    if skip_unless_root() {
        return;
    }
    let (node, _p) = web_node(cfg);
    let lines = hundred_to_web(&node.pods[4].netns);
    assert_exact_round_robin(&lines);
}

#[test]
fn round_robin_exact_legacy_backend() {
    if skip_unless_root() {
        return;
    }
    let (node, mut p) = web_node(|n| ProxyConfig {
        backend: Backend::Legacy,
        ..cfg(n)
    });
    let lines = hundred_to_web(&node.pods[4].netns);
    assert_exact_round_robin(&lines);
    // iptables-legacy-save prints the rules exactly as rendered: a resync has nothing to do.
    assert_resync_clean(&mut p);
}

fn assert_resync_clean(p: &mut Proxier) {
    let r = resync(&rt(), p);
    assert!(r.full);
    assert_eq!((r.rewritten, r.deleted, r.jumps_fixed), (0, 0, 0), "{r:?}");
}

#[test]
fn hairpin_endpoint_reaches_itself() {
    if skip_unless_root() {
        return;
    }
    let (node, _p) = web_node(cfg);
    // pod0 is one of the endpoints: a quarter of its connections come back to itself.
    let lines = hundred_to_web(&node.pods[0].netns);
    assert_exact_round_robin(&lines);
    // Exactly those 25 self-connections went through the hairpin masquerade rule.
    let out = iptables_in(
        &node.netns,
        &["-t", "nat", "-L", "KL-POSTROUTING", "-v", "-n", "-x"],
    );
    let pkts: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("MASQUERADE") && l.contains("10.0.1.2 "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pkts, vec!["25"], "{out}");
}

#[test]
fn node_namespace_client_through_output() {
    if skip_unless_root() {
        return;
    }
    let (node, _p) = web_node(cfg);
    let routes = must(&["ip", "-n", &node.netns, "route", "show", "proto", "78"]);
    assert!(
        routes.contains(&format!("{VIP} dev kl0")),
        "routes: {routes}"
    );
    let lines = hundred_to_web(&node.netns);
    assert_exact_round_robin(&lines);
}

#[test]
fn random_mode_reaches_every_endpoint() {
    if skip_unless_root() {
        return;
    }
    let (node, mut p) = web_node(|n| ProxyConfig {
        mode: Mode::Random,
        ..cfg(n)
    });
    assert_resync_clean(&mut p);
    let lines = hundred_to_web(&node.pods[4].netns);
    let t = tally(&lines);
    assert_eq!(t.values().sum::<usize>(), 100, "{lines:?}");
    assert!(t.keys().all(|k| k.starts_with("pod")), "{t:?}");
    assert_eq!(t.len(), 4, "{t:?}");
}

#[test]
fn no_endpoints_is_refused_at_once_then_served() {
    if skip_unless_root() {
        return;
    }
    let mut node = Node::new(2);
    node.serve(0, 8080);
    let mut p = Proxier::new(&cfg(&node)).unwrap();
    let rt = rt();
    p.upsert_service(service("empty", "172.17.10.20", &[("", "TCP", 80, 8080)]));
    rt.block_on(p.sync()).unwrap();
    for client in [node.pods[1].netns.clone(), node.netns.clone()] {
        let lines = run_client(&client, "tcp 172.17.10.20 80 3");
        assert_eq!(lines, vec!["ERR ConnectionRefused"; 3], "from {client}");
    }
    // An endpoint appears: served, and the REJECT rule is gone.
    p.upsert_endpoints(endpoints("empty", &[node.pods[0].ip], &[("", 8080, "TCP")]));
    let r = rt.block_on(p.sync()).unwrap();
    assert!(!r.full);
    assert_eq!(
        run_client(&node.pods[1].netns, "tcp 172.17.10.20 80 2"),
        vec!["OK pod0"; 2]
    );
    assert!(!node.iptables_save().contains("REJECT"));
}

#[test]
fn deleted_service_leaves_no_chains_and_foreign_rules_stay() {
    if skip_unless_root() {
        return;
    }
    let (node, mut p) = web_node(cfg);
    // Someone else's chain and jump.
    let n = node.netns.as_str();
    iptables_in(n, &["-t", "nat", "-N", "FOREIGN"]);
    iptables_in(n, &["-t", "nat", "-A", "FOREIGN", "-j", "RETURN"]);
    iptables_in(n, &["-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN"]);
    let before = node.iptables_save();
    assert!(before.contains("KL-SVC-") && before.contains("-j MASQUERADE"));
    p.delete_service(&service("web", VIP, &[]));
    let rt = rt();
    let r = rt.block_on(p.sync()).unwrap();
    assert_eq!(r.deleted, 1, "{r:?}"); // the SVC chain
    let after = node.iptables_save();
    assert!(
        // The marked-traffic MASQUERADE rule is static; the hairpin ones go.
        !after.contains("KL-SVC-") && !after.contains("kube-lite hairpin"),
        "{after}"
    );
    assert!(after.contains("-A FOREIGN -j RETURN") && after.contains("-A PREROUTING -j FOREIGN"));
    let routes = must(&["ip", "-n", n, "route", "show", "proto", "78"]);
    assert!(routes.trim().is_empty(), "{routes}");
    // A full resync leaves the foreign chain alone too.
    let r = resync(&rt, &mut p);
    assert_eq!((r.rewritten, r.deleted, r.jumps_fixed), (0, 0, 0), "{r:?}");
    assert!(node.iptables_save().contains("-A FOREIGN -j RETURN"));
    // cleanup removes every owned chain and jump, nothing else.
    rt.block_on(p.cleanup()).unwrap();
    let clean = node.iptables_save();
    assert!(!clean.contains("KL-"), "{clean}");
    assert!(clean.contains("-A PREROUTING -j FOREIGN"));
}

#[test]
fn resync_repairs_drift() {
    if skip_unless_root() {
        return;
    }
    let (node, mut p) = web_node(cfg);
    let rt = rt();
    let want = node.iptables_save();
    // The state after a sync is what a resync expects: nothing to do.
    let r = resync(&rt, &mut p);
    assert_eq!((r.rewritten, r.deleted, r.jumps_fixed), (0, 0, 0), "{r:?}");
    let saved = parse_save(&want);
    let svc_chain = saved
        .nat
        .keys()
        .find(|c| c.starts_with("KL-SVC-"))
        .unwrap()
        .clone();
    let n = node.netns.as_str();
    // Damage: a rule deleted, a jump deleted, a jump duplicated, a stale chain added.
    iptables_in(n, &["-t", "nat", "-D", &svc_chain, "2"]);
    iptables_in(n, &["-t", "nat", "-D", "OUTPUT", "1"]);
    iptables_in(
        n,
        &[
            "-t",
            "filter",
            "-I",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kube-lite service portals",
            "-j",
            "KL-SERVICES",
        ],
    );
    iptables_in(n, &["-t", "nat", "-N", "KL-SEP-STALE"]);
    iptables_in(n, &["-t", "nat", "-A", "KL-SEP-STALE", "-j", "RETURN"]);
    assert_ne!(node.iptables_save(), want);
    let r = resync(&rt, &mut p);
    assert_eq!((r.rewritten, r.deleted, r.jumps_fixed), (1, 1, 2), "{r:?}");
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
    };
    let now = parse_save(&node.iptables_save());
    assert_eq!(now, parse_save(&want));
    assert_eq!(strip(&node.iptables_save()).len(), strip(&want).len());
    // Exactly one jump from each built-in chain.
    for (t, chain) in [
        (Table::Nat, "PREROUTING"),
        (Table::Nat, "OUTPUT"),
        (Table::Filter, "FORWARD"),
    ] {
        let n = now.get(t)[chain]
            .iter()
            .filter(|l| l.ends_with("-j KL-SERVICES"))
            .count();
        assert_eq!(n, 1, "{chain}");
    }
    let lines = hundred_to_web(&node.pods[4].netns);
    assert_exact_round_robin(&lines);
}

#[test]
fn incremental_sync_touches_only_the_changed_service() {
    if skip_unless_root() {
        return;
    }
    let node = Node::new(0);
    let mut p = Proxier::new(&cfg(&node)).unwrap();
    let rt = rt();
    for i in 0..50u8 {
        let name = format!("s{i}");
        p.upsert_service(service(
            &name,
            &format!("172.17.20.{i}"),
            &[("", "TCP", 80, 8080)],
        ));
        let ips: Vec<Ipv4Addr> = (0..4).map(|k| Ipv4Addr::new(10, 0, 1, 10 + k)).collect();
        p.upsert_endpoints(endpoints(&name, &ips, &[("", 8080, "TCP")]));
    }
    let r = rt.block_on(p.sync()).unwrap();
    assert!(r.full);
    // SVC chains, POSTROUTING, MARK-MASQ, NODEPORTS, 2 × SERVICES.
    assert_eq!(r.rewritten, 50 + 5, "{r:?}");
    // One endpoint leaves one Service: only its SVC chain is rewritten (the address
    // still serves other Services, so the hairpin rules stay).
    let ips: Vec<Ipv4Addr> = (0..3).map(|k| Ipv4Addr::new(10, 0, 1, 10 + k)).collect();
    p.upsert_endpoints(endpoints("s7", &ips, &[("", 8080, "TCP")]));
    let r = rt.block_on(p.sync()).unwrap();
    assert!(!r.full);
    assert_eq!((r.rewritten, r.deleted), (1, 0), "{r:?}");
    // A burst of changes to 20 Services is one restore.
    for i in 0..20u8 {
        p.upsert_endpoints(endpoints(&format!("s{i}"), &ips[..2], &[("", 8080, "TCP")]));
    }
    let r = rt.block_on(p.sync()).unwrap();
    assert_eq!(r.rewritten, 20, "{r:?}");
    // And what was written incrementally equals a full render: a resync finds nothing.
    let r = resync(&rt, &mut p);
    assert_eq!((r.rewritten, r.deleted, r.jumps_fixed), (0, 0, 0), "{r:?}");
}

#[test]
fn udp_service_and_conntrack_flush() {
    if skip_unless_root() {
        return;
    }
    let mut node = Node::new(3);
    node.serve(0, 5353);
    node.serve(1, 5353);
    let mut p = Proxier::new(&cfg(&node)).unwrap();
    let rt = rt();
    p.upsert_service(service("dns", "172.17.10.53", &[("dns", "UDP", 53, 5353)]));
    let both = [node.pods[0].ip, node.pods[1].ip];
    p.upsert_endpoints(endpoints("dns", &both, &[("dns", 5353, "UDP")]));
    rt.block_on(p.sync()).unwrap();
    // Different source ports: new flows, round robin.
    let mut seen = std::collections::BTreeSet::new();
    for src in [40001, 40002] {
        for l in run_client(&node.pods[2].netns, &format!("udp 172.17.10.53 53 1 {src}")) {
            seen.insert(l);
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // One flow (fixed source port) sticks to one endpoint.
    let first = run_client(&node.pods[2].netns, "udp 172.17.10.53 53 3 40100");
    assert!(
        first.iter().all(|l| l == &first[0]) && first[0].starts_with("OK pod"),
        "{first:?}"
    );
    // Remove that endpoint: its conntrack entries are flushed, the same flow moves on.
    let (gone, stay) = if first[0] == "OK pod0" {
        (0, 1)
    } else {
        (1, 0)
    };
    p.upsert_endpoints(endpoints(
        "dns",
        &[node.pods[stay].ip],
        &[("dns", 5353, "UDP")],
    ));
    rt.block_on(p.sync()).unwrap();
    let after = run_client(&node.pods[2].netns, "udp 172.17.10.53 53 3 40100");
    assert_eq!(after, vec![format!("OK pod{stay}"); 3], "removed pod{gone}");
}
