//! Printers: kubectl-like borderless tables, and Kubernetes JSON/YAML through the one
//! conversion layer (`kube_lite_k8s`, as the REST face serves it: apiVersion, kind,
//! Kubernetes' field names, RFC 3339 times, empty fields left out).

mod pod_extras;
pub use pod_extras::describe_lines as container_describe_lines;

use crate::api::Api;
use crate::util::{age, format_map};
use kube_lite_core::consts::{condition, condition_status, container_state, phase, service_type};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{Endpoints, Node, Pod, Service};
use serde_json::{json, Value};

/// How a kind shows itself in tables and in Kubernetes-shaped documents.
pub trait Show: Api + kube_lite_k8s::K8sKind {
    fn headers(wide: bool) -> Vec<&'static str>;
    fn row(&self, now_ms: i64, wide: bool) -> Vec<String>;
}

/// The object as the REST face serves it (`kube_lite_k8s`, the one conversion layer):
/// apiVersion, kind, Kubernetes' field names, RFC 3339 times.
pub fn object_json<T: Show>(o: &T) -> Value {
    kube_lite_k8s::K8sKind::to_json(o)
}

/// Output format of `get` (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Wide,
    Json,
    Yaml,
    Name,
}

// ---------- tables ----------

/// Columns separated by three spaces, each padded to its widest cell (the last one is
/// not padded), like kubectl's tabwriter. Widths are remembered so the rows printed
/// later by `get -w` line up with the first table.
#[derive(Debug, Default)]
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    pub fn render(&mut self, header: &[String], rows: &[Vec<String>]) -> String {
        for r in std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())) {
            self.grow(r);
        }
        let mut out = String::new();
        out.push_str(&self.line(header));
        for r in rows {
            out.push_str(&self.line(r));
        }
        out
    }

    /// Nothing printed yet.
    pub fn is_empty(&self) -> bool {
        self.widths.is_empty()
    }

    /// One more row with the widths seen so far (growing them if needed).
    pub fn render_row(&mut self, row: &[String]) -> String {
        self.grow(row);
        self.line(row)
    }

    fn grow(&mut self, row: &[String]) {
        if self.widths.len() < row.len() {
            self.widths.resize(row.len(), 0);
        }
        for (w, c) in self.widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }

    fn line(&self, row: &[String]) -> String {
        let mut s = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                s.push_str(cell);
            } else {
                let pad = self.widths[i] - cell.chars().count() + 3;
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push('\n');
        s
    }
}

/// Header and rows of a table; `with_namespace` adds the NAMESPACE column (`-A`).
pub fn table_rows<T: Show>(
    items: &[T],
    now_ms: i64,
    wide: bool,
    with_namespace: bool,
) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Vec<String> = T::headers(wide).into_iter().map(String::from).collect();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    let rows = items
        .iter()
        .map(|i| row_of(i, now_ms, wide, with_namespace))
        .collect();
    (header, rows)
}

pub fn row_of<T: Show>(item: &T, now_ms: i64, wide: bool, with_namespace: bool) -> Vec<String> {
    let mut r = item.row(now_ms, wide);
    if with_namespace {
        r.insert(0, item.meta().namespace.clone());
    }
    r.into_iter()
        .map(|c| crate::util::escape_control(&c).into_owned())
        .collect()
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// kubectl's STATUS column for a pod: Terminating while a graceful delete runs, else a
/// container's waiting/terminated reason, else the pod's reason (Unschedulable,
/// Evicted), else the phase.
pub fn pod_status_text(pod: &Pod) -> String {
    if pod.meta().deletion_timestamp != 0 {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    let mut text = if status.phase.is_empty() {
        phase::PENDING.to_string()
    } else {
        status.phase.clone()
    };
    if !status.reason.is_empty() {
        text = status.reason.clone();
    }
    let n_init = pod.spec.as_ref().map_or(0, |s| s.init_containers.len());
    if let Some(t) = kube_lite_core::consts::init_status_text(
        status
            .init_container_statuses
            .iter()
            .map(|c| (c.state.as_str(), c.reason.as_str(), c.exit_code)),
        n_init,
    ) {
        return t;
    }
    for cs in &status.container_statuses {
        match cs.state.as_str() {
            container_state::WAITING if !cs.reason.is_empty() => text = cs.reason.clone(),
            container_state::TERMINATED if !cs.reason.is_empty() => text = cs.reason.clone(),
            container_state::TERMINATED if cs.exit_code != 0 => {
                text = format!("ExitCode:{}", cs.exit_code)
            }
            _ => {}
        }
    }
    text
}

impl Show for Pod {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
        if wide {
            h.extend(["IP", "NODE"]);
        }
        h
    }

    fn row(&self, now_ms: i64, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let ready = status.container_statuses.iter().filter(|c| c.ready).count();
        let restarts: i64 = status
            .container_statuses
            .iter()
            .chain(status.init_container_statuses.iter())
            .map(|c| c.restart_count as i64)
            .sum();
        let mut r = vec![
            self.name().to_string(),
            format!("{ready}/{}", spec.containers.len()),
            pod_status_text(self),
            restarts.to_string(),
            age(self.meta().creation_timestamp, now_ms),
        ];
        if wide {
            r.push(or_none(&status.pod_ip));
            r.push(or_none(&spec.node_name));
        }
        r
    }
}

/// `80/TCP,53/UDP`, `80:31234/TCP`, `<none>` without ports (the REST face's column).
pub fn service_ports_text(svc: &Service) -> String {
    kube_lite_k8s::service::ports_text(svc)
}

/// kubectl's EXTERNAL-IP: a LoadBalancer's ingress IPs, `<pending>` while it has none,
/// `<none>` for other types.
pub fn service_external_ips(svc: &Service) -> String {
    let ips: Vec<&str> = svc
        .status
        .iter()
        .flat_map(|st| st.load_balancer_ingress.iter().map(|i| i.ip.as_str()))
        .filter(|ip| !ip.is_empty())
        .collect();
    let lb = svc
        .spec
        .as_ref()
        .is_some_and(|s| s.r#type == service_type::LOAD_BALANCER);
    match (ips.is_empty(), lb) {
        (false, _) => ips.join(","),
        (true, true) => "<pending>".into(),
        (true, false) => "<none>".into(),
    }
}

impl Show for Service {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ];
        if wide {
            h.push("SELECTOR");
        }
        h
    }

    fn row(&self, now_ms: i64, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut r = vec![
            self.name().to_string(),
            if spec.r#type.is_empty() {
                service_type::CLUSTER_IP.into()
            } else {
                spec.r#type.clone()
            },
            or_none(&spec.cluster_ip),
            service_external_ips(self),
            service_ports_text(self),
            age(self.meta().creation_timestamp, now_ms),
        ];
        if wide {
            r.push(format_map(&spec.selector, ","));
        }
        r
    }
}

/// `Ready`, `NotReady`, `Unknown` (no condition yet), plus `,SchedulingDisabled`.
pub fn node_status_text(node: &Node) -> String {
    let status = node.status.clone().unwrap_or_default();
    let mut text = match status
        .conditions
        .iter()
        .find(|c| c.r#type == condition::READY)
    {
        Some(c) if c.status == condition_status::TRUE => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        text.push_str(",SchedulingDisabled");
    }
    text
}

fn node_address(node: &Node) -> String {
    let spec_addr = node
        .spec
        .as_ref()
        .map(|s| s.address.clone())
        .unwrap_or_default();
    if !spec_addr.is_empty() {
        return spec_addr;
    }
    or_none(
        &node
            .status
            .as_ref()
            .map(|s| s.address.clone())
            .unwrap_or_default(),
    )
}

impl Show for Node {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "STATUS", "SUBNET", "ADDRESS", "AGE"];
        if wide {
            h.push("HEARTBEAT");
        }
        h
    }

    fn row(&self, now_ms: i64, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut r = vec![
            self.name().to_string(),
            node_status_text(self),
            or_none(&spec.pod_cidr),
            node_address(self),
            age(self.meta().creation_timestamp, now_ms),
        ];
        if wide {
            let hb = self
                .status
                .as_ref()
                .map(|s| s.last_heartbeat_time)
                .unwrap_or(0);
            r.push(if hb == 0 {
                "<never>".into()
            } else {
                format!("{} ago", age(hb, now_ms))
            });
        }
        r
    }
}

/// kubectl's ENDPOINTS column: `ip:port` pairs, at most three then `+ N more...`.
pub fn endpoints_text(ep: &Endpoints) -> String {
    let mut all = Vec::new();
    for s in &ep.subsets {
        for a in &s.addresses {
            if s.ports.is_empty() {
                all.push(a.ip.clone());
            }
            for p in &s.ports {
                all.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    if all.is_empty() {
        return "<none>".into();
    }
    let extra = all.len().saturating_sub(3);
    let mut text = all.into_iter().take(3).collect::<Vec<_>>().join(",");
    if extra > 0 {
        text.push_str(&format!(" + {extra} more..."));
    }
    text
}

impl Show for Endpoints {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "ENDPOINTS", "AGE"]
    }

    fn row(&self, now_ms: i64, _wide: bool) -> Vec<String> {
        vec![
            self.name().to_string(),
            endpoints_text(self),
            age(self.meta().creation_timestamp, now_ms),
        ]
    }
}

mod workloads;
pub use workloads::{deployment_ready_text, event_object_text, selector_text};

// ---------- JSON helpers ----------

/// A single object as is, several as a Kubernetes `List`.
pub fn list_json(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

pub fn to_json_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

pub fn to_yaml_text(v: &Value) -> Result<String, String> {
    serde_saphyr::to_string(v).map_err(|e| format!("cannot render YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, NodeCondition,
        NodeSpec, NodeStatus, PodSpec, ServicePort, ServiceSpec,
    };
    use kube_lite_proto::v1::{ContainerStatus, ObjectMeta, PodStatus};

    const NOW: i64 = 1_795_823_230_000; // 2026-11-27T23:47:10Z

    fn meta(name: &str, age_s: i64) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            resource_version: 42,
            creation_timestamp: NOW - age_s * 1000,
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        })
    }

    fn pod(name: &str, age_s: i64, phase: &str, node: &str, ip: &str) -> Pod {
        Pod {
            metadata: meta(name, age_s),
            spec: Some(PodSpec {
                node_name: node.into(),
                containers: vec![Container {
                    name: name.into(),
                    image: "busybox".into(),
                    ports: vec![ContainerPort {
                        name: "".into(),
                        container_port: 8080,
                        protocol: "TCP".into(),
                    }],
                    ..Default::default()
                }],
                restart_policy: "Always".into(),
                termination_grace_period_seconds: 30,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                pod_ip: ip.into(),
                container_statuses: if phase == "Running" {
                    vec![ContainerStatus {
                        name: name.into(),
                        state: "Running".into(),
                        ready: true,
                        restart_count: 2,
                        started_at: NOW - 5000,
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
        }
    }

    fn table<T: Show>(items: &[T], wide: bool, ns: bool) -> String {
        let (h, r) = table_rows(items, NOW, wide, ns);
        Table::default().render(&h, &r)
    }

    #[test]
    fn pod_tables() {
        let mut pending = pod("db", 3 * 3600, "Pending", "", "");
        pending.status.as_mut().unwrap().reason = "Unschedulable".into();
        let mut term = pod("old-worker", 9 * 86400, "Running", "node-2", "10.0.2.7");
        term.metadata.as_mut().unwrap().deletion_timestamp = NOW + 30_000;
        let pods = vec![
            pod("web", 150, "Running", "node-1", "10.0.1.2"),
            pending,
            term,
        ];
        assert_eq!(
            table(&pods, false, false),
            "NAME         READY   STATUS          RESTARTS   AGE\n\
             web          1/1     Running         2          2m30s\n\
             db           0/1     Unschedulable   0          3h\n\
             old-worker   1/1     Terminating     2          9d\n"
        );
        assert_eq!(
            table(&pods[..1], true, true),
            "NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE     IP         NODE\n\
             default     web    1/1     Running   2          2m30s   10.0.1.2   node-1\n"
        );
    }

    #[test]
    fn container_reasons_win_over_phase() {
        let mut p = pod("web", 10, "Running", "n", "10.0.1.2");
        p.status.as_mut().unwrap().container_statuses[0] = ContainerStatus {
            name: "web".into(),
            state: "Waiting".into(),
            reason: "CrashLoopBackOff".into(),
            ..Default::default()
        };
        assert_eq!(pod_status_text(&p), "CrashLoopBackOff");
        p.status.as_mut().unwrap().container_statuses[0] = ContainerStatus {
            name: "web".into(),
            state: "Terminated".into(),
            exit_code: 3,
            ..Default::default()
        };
        assert_eq!(pod_status_text(&p), "ExitCode:3");
    }

    #[test]
    fn watch_rows_keep_the_first_tables_widths() {
        let mut t = Table::default();
        let (h, r) = table_rows(&[pod("web", 5, "Running", "n", "")], NOW, false, false);
        let first = t.render(&h, &r);
        let next = t.render_row(&row_of(&pod("x", 7, "Pending", "", ""), NOW, false, false));
        assert_eq!(
            first.lines().next().unwrap().find("READY"),
            next.find("0/1")
        );
    }

    fn service() -> Service {
        Service {
            metadata: meta("web", 65),
            spec: Some(ServiceSpec {
                selector: [
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front".to_string()),
                ]
                .into(),
                ports: vec![
                    ServicePort {
                        name: "80-tcp".into(),
                        protocol: "TCP".into(),
                        port: 80,
                        target_port: 8080,
                        ..Default::default()
                    },
                    ServicePort {
                        name: "53-udp".into(),
                        protocol: "UDP".into(),
                        port: 53,
                        target_port: 53,
                        ..Default::default()
                    },
                ],
                cluster_ip: "10.96.0.10".into(),
                r#type: "ClusterIP".into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn service_node_endpoints_tables() {
        assert_eq!(
            table(&[service()], true, false),
            "NAME   TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)         AGE   SELECTOR\n\
             web    ClusterIP   10.96.0.10   <none>        80/TCP,53/UDP   65s   app=web,tier=front\n"
        );
        let mut lb = service();
        let spec = lb.spec.as_mut().unwrap();
        spec.r#type = "LoadBalancer".into();
        spec.ports[0].node_port = 31234;
        spec.ports.truncate(1);
        let mut np = lb.clone();
        np.spec.as_mut().unwrap().r#type = "NodePort".into();
        np.metadata.as_mut().unwrap().name = "np".into();
        let mut lb2 = lb.clone();
        lb2.metadata.as_mut().unwrap().name = "lb2".into();
        lb2.status = Some(kube_lite_proto::v1::ServiceStatus {
            load_balancer_ingress: vec![
                kube_lite_proto::v1::LoadBalancerIngress {
                    ip: "192.168.1.2".into(),
                },
                kube_lite_proto::v1::LoadBalancerIngress {
                    ip: "192.168.1.3".into(),
                },
            ],
            conditions: vec![],
        });
        assert_eq!(
            table(&[lb, np, lb2], false, false),
            "NAME   TYPE           CLUSTER-IP   EXTERNAL-IP               PORT(S)        AGE\n\
             web    LoadBalancer   10.96.0.10   <pending>                 80:31234/TCP   65s\n\
             np     NodePort       10.96.0.10   <none>                    80:31234/TCP   65s\n\
             lb2    LoadBalancer   10.96.0.10   192.168.1.2,192.168.1.3   80:31234/TCP   65s\n"
        );
        let node = |name: &str, ready: &str, unsched: bool| Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                creation_timestamp: NOW - 86_400_000,
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                pod_cidr: "10.0.1.0/24".into(),
                address: "192.168.1.10".into(),
                unschedulable: unsched,
            }),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }],
                last_heartbeat_time: NOW - 4000,
                ..Default::default()
            }),
        };
        assert_eq!(
            table(
                &[
                    node("node-1", "True", false),
                    node("node-2", "Unknown", true)
                ],
                true,
                false
            ),
            "NAME     STATUS                        SUBNET        ADDRESS        AGE   HEARTBEAT\n\
             node-1   Ready                         10.0.1.0/24   192.168.1.10   24h   4s ago\n\
             node-2   NotReady,SchedulingDisabled   10.0.1.0/24   192.168.1.10   24h   4s ago\n"
        );
        let addr = |ip: &str| EndpointAddress {
            ip: ip.into(),
            node_name: "n".into(),
            pod_name: "p".into(),
        };
        let ep = |name: &str, ips: &[&str]| Endpoints {
            metadata: meta(name, 10),
            subsets: if ips.is_empty() {
                vec![]
            } else {
                vec![EndpointSubset {
                    addresses: ips.iter().map(|i| addr(i)).collect(),
                    not_ready_addresses: vec![],
                    ports: vec![EndpointPort {
                        name: "".into(),
                        port: 8080,
                        protocol: "TCP".into(),
                    }],
                }]
            },
        };
        assert_eq!(
            table(
                &[
                    ep("web", &["10.0.1.2", "10.0.2.2"]),
                    ep("db", &[]),
                    ep(
                        "big",
                        &["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"]
                    )
                ],
                false,
                false
            ),
            "NAME   ENDPOINTS                                            AGE\n\
             web    10.0.1.2:8080,10.0.2.2:8080                          10s\n\
             db     <none>                                               10s\n\
             big    1.1.1.1:8080,1.1.1.2:8080,1.1.1.3:8080 + 2 more...   10s\n"
        );
    }

    #[test]
    fn kubernetes_shaped_json() {
        let v = object_json(&pod("web", 150, "Running", "node-1", "10.0.1.2"));
        // The REST face's JSON (kube_lite_k8s): Kubernetes' names, RFC 3339 times.
        assert_eq!(
            v,
            kube_lite_k8s::K8sKind::to_json(&pod("web", 150, "Running", "node-1", "10.0.1.2"))
        );
        assert_eq!(
            (v["apiVersion"].as_str(), v["kind"].as_str()),
            (Some("v1"), Some("Pod"))
        );
        assert_eq!(v["metadata"]["creationTimestamp"], "2026-11-27T23:44:40Z");
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["status"]["podIP"], "10.0.1.2");
        assert_eq!(
            v["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-11-27T23:47:05Z"
        );
        assert_eq!(
            v["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
        let v = object_json(&service());
        assert_eq!(v["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(
            v["spec"]["ports"][1],
            serde_json::json!({"name":"53-udp","protocol":"UDP","port":53,"targetPort":53})
        );
        let list = list_json(vec![v.clone()]);
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][0]["kind"], "Service");
    }

    #[test]
    fn yaml_quotes_strings_that_look_like_other_types() {
        let v = json!({"labels": {"a": "y", "b": "true", "c": "1.5", "d": "null", "e": "~", "f": "0x10", "g": "no", "h": "2026-11-27"}});
        let text = to_yaml_text(&v).unwrap();
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn yaml_output_round_trips_through_apply() {
        // `get -o yaml` output is a manifest `apply` accepts (server-set fields warn).
        let yaml = to_yaml_text(&object_json(&service())).unwrap();
        assert!(
            yaml.starts_with("apiVersion: v1\nkind: Service\n"),
            "{yaml}"
        );
        let docs = crate::manifest::parse_documents(&yaml).unwrap();
        let c = crate::manifest::convert(&docs[0], "default", false).unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "status: ignored (not used by kube-lite)",
                "metadata.creationTimestamp: ignored (not used by kube-lite)",
                "metadata.resourceVersion: ignored (not used by kube-lite)",
                "metadata.uid: ignored (not used by kube-lite)",
                "spec.clusterIPs: ignored (not used by kube-lite)",
            ]
        );
        let crate::manifest::Manifest::Service(s) = c.manifest else {
            panic!()
        };
        assert_eq!(s.spec, service().spec);
        let yaml = to_yaml_text(&object_json(&pod(
            "web", 1, "Running", "node-1", "10.0.1.2",
        )))
        .unwrap();
        let docs = crate::manifest::parse_documents(&yaml).unwrap();
        let c = crate::manifest::convert(&docs[0], "default", false).unwrap();
        let crate::manifest::Manifest::Pod(p) = c.manifest else {
            panic!()
        };
        assert_eq!(p.spec, pod("web", 1, "Running", "node-1", "").spec);
    }
}
