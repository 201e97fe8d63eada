//! A pod's `/etc/resolv.conf`, as the kubelet writes it, from its `dnsPolicy` and
//! `dnsConfig`. Pure.
//!
//! - ClusterFirst (default): `nameserver <cluster DNS>`, `search <ns>.svc.<domain>
//!   svc.<domain> <domain>` then the node's search domains, `options ndots:5`; without
//!   a cluster DNS the kubelet falls back to Default, and so does this.
//! - Default: the node's nameservers, search domains and options.
//! - None: only `dnsConfig`.
//!
//! `dnsConfig` is merged in every case: nameservers and searches appended
//! (deduplicated; at most 3 nameservers and 32 search domains, as the kubelet), options
//! override by name.

use kube_lite_core::consts::dns_policy;
use kube_lite_proto::v1::PodDnsConfig;
use std::net::Ipv4Addr;

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<(String, Option<String>)>,
}

impl ResolvConf {
    /// Parses resolv.conf text (nameserver, search/domain, options; the rest ignored).
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => r.nameservers.extend(w.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    r.searches = w.map(str::to_string).collect();
                }
                Some("options") => {
                    for o in w {
                        r.set_option(o);
                    }
                }
                _ => {}
            }
        }
        r
    }

    fn set_option(&mut self, o: &str) {
        let (name, value) = match o.split_once(':') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (o.to_string(), None),
        };
        match self.options.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.options.push((name, value)),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            let opts: Vec<String> = self
                .options
                .iter()
                .map(|(n, v)| match v {
                    Some(v) => format!("{n}:{v}"),
                    None => n.clone(),
                })
                .collect();
            out.push_str(&format!("options {}\n", opts.join(" ")));
        }
        out
    }
}

fn push_unique(v: &mut Vec<String>, items: impl IntoIterator<Item = String>, max: usize) {
    for i in items {
        if v.len() >= max {
            break;
        }
        if !v.contains(&i) {
            v.push(i);
        }
    }
}

/// The resolv.conf of a pod in `namespace` with `policy` and `config`; `node` is the
/// node's own resolv.conf, `cluster_dns` the cluster DNS address (if any).
pub fn pod_resolv_conf(
    policy: &str,
    config: Option<&PodDnsConfig>,
    namespace: &str,
    cluster_dns: Option<Ipv4Addr>,
    domain: &str,
    node: &ResolvConf,
) -> ResolvConf {
    let domain = domain.trim_matches('.');
    let mut r = ResolvConf::default();
    match (policy, cluster_dns) {
        (dns_policy::NONE, _) => {}
        (p, Some(dns)) if p != dns_policy::DEFAULT => {
            r.nameservers.push(dns.to_string());
            let ns = if namespace.is_empty() {
                "default"
            } else {
                namespace
            };
            push_unique(
                &mut r.searches,
                [
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_string(),
                ]
                .into_iter()
                .chain(node.searches.iter().cloned()),
                MAX_SEARCHES,
            );
            r.options.push(("ndots".into(), Some("5".into())));
        }
        _ => {
            push_unique(
                &mut r.nameservers,
                node.nameservers.iter().cloned(),
                MAX_NAMESERVERS,
            );
            push_unique(&mut r.searches, node.searches.iter().cloned(), MAX_SEARCHES);
            r.options = node.options.clone();
        }
    }
    if let Some(c) = config {
        push_unique(
            &mut r.nameservers,
            c.nameservers.iter().cloned(),
            MAX_NAMESERVERS,
        );
        push_unique(
            &mut r.searches,
            c.searches
                .iter()
                .map(|s| s.trim_end_matches('.').to_string()),
            MAX_SEARCHES,
        );
        for o in &c.options {
            let text = if o.value.is_empty() {
                o.name.clone()
            } else {
                format!("{}:{}", o.name, o.value)
            };
            r.set_option(&text);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::PodDnsOption;

    const NODE: &str = "# generated\nnameserver 192.168.1.1\nnameserver 192.168.1.2 ; x\nsearch corp.example\noptions edns0 timeout:2\n";

    fn node() -> ResolvConf {
        ResolvConf::parse(NODE)
    }

    #[test]
    fn parses_the_node_file() {
        let n = node();
        assert_eq!(n.nameservers, vec!["192.168.1.1", "192.168.1.2"]);
        assert_eq!(n.searches, vec!["corp.example"]);
        assert_eq!(
            n.render(),
            "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch corp.example\noptions edns0 timeout:2\n"
        );
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns() {
        let dns = Some("10.96.0.10".parse().unwrap());
        let r = pod_resolv_conf("ClusterFirst", None, "shop", dns, "cluster.local", &node());
        assert_eq!(
            r.render(),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        // "" (a pod stored before dnsPolicy existed) is ClusterFirst too.
        assert_eq!(
            pod_resolv_conf("", None, "shop", dns, "cluster.local", &node()),
            r
        );
        // No cluster DNS: the node's (kubelet's fallback).
        let r = pod_resolv_conf("ClusterFirst", None, "shop", None, "cluster.local", &node());
        assert_eq!(r, node());
    }

    #[test]
    fn default_and_none_with_dns_config() {
        let dns = Some("10.96.0.10".parse().unwrap());
        let cfg = PodDnsConfig {
            nameservers: vec!["1.1.1.1".into(), "192.168.1.1".into(), "8.8.8.8".into()],
            searches: vec!["extra.example.".into()],
            options: vec![
                PodDnsOption {
                    name: "ndots".into(),
                    value: "2".into(),
                },
                PodDnsOption {
                    name: "edns0".into(),
                    value: String::new(),
                },
            ],
        };
        let r = pod_resolv_conf("Default", Some(&cfg), "shop", dns, "cluster.local", &node());
        assert_eq!(
            r.render(),
            "nameserver 192.168.1.1\nnameserver 192.168.1.2\nnameserver 1.1.1.1\nsearch corp.example extra.example\noptions edns0 timeout:2 ndots:2\n",
            "at most 3 nameservers, deduplicated; options merged by name"
        );
        let r = pod_resolv_conf("None", Some(&cfg), "shop", dns, "cluster.local", &node());
        assert_eq!(
            r.render(),
            "nameserver 1.1.1.1\nnameserver 192.168.1.1\nnameserver 8.8.8.8\nsearch extra.example\noptions ndots:2 edns0\n"
        );
    }
}
