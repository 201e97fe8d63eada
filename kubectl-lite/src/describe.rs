//! `describe`: kubectl-like multi-line text for one object.

use crate::output::{endpoints_text, node_status_text, pod_status_text};
use crate::util::{escape_control, format_map, human_duration, rfc3339};
use kube_lite_core::consts::{
    condition_status, container_state, phase, protocol, restart_policy, service_type,
};
use kube_lite_proto::v1::{Endpoints, Node, ObjectMeta, Pod, Service};
use std::collections::HashMap;
use std::fmt::Write;

mod workloads;
pub use workloads::{
    describe_config_map, describe_deployment, describe_event, describe_namespace,
    describe_replica_set, describe_secret, events_section, template_text,
};

/// Builds the text; keys of one level are padded to the same column.
struct Text {
    out: String,
    width: usize,
}

impl Text {
    fn new(width: usize) -> Text {
        Text {
            out: String::new(),
            width,
        }
    }

    /// `indent` spaces, `key:` padded, value; multi-line values continue in the value
    /// column.
    fn field(&mut self, indent: usize, key: &str, value: impl AsRef<str>) {
        let label = format!("{}{key}:", " ".repeat(indent));
        let width = self.width.max(label.len() + 1);
        let mut lines = value.as_ref().lines();
        let first = lines.next().unwrap_or("");
        let _ = writeln!(self.out, "{label:<width$}{}", escape_control(first));
        for l in lines {
            let _ = writeln!(self.out, "{:width$}{}", "", escape_control(l));
        }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        let _ = writeln!(self.out, "{}", escape_control(text.as_ref()));
    }
}

/// Rows of a table, each cell padded to its column's width: at least `min[i]`, and at
/// least the longest cell plus two spaces (the last column is not padded).
fn table_lines(indent: usize, min: &[usize], rows: &[Vec<String>]) -> Vec<String> {
    let mut width = min.to_vec();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i >= width.len() {
                width.push(0);
            }
            width[i] = width[i].max(cell.len() + 2);
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = " ".repeat(indent);
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}", w = width[i]);
                }
            }
            line
        })
        .collect()
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn map_lines(m: &HashMap<String, String>) -> String {
    format_map(m, "\n")
}

fn time(ms: i64) -> String {
    if ms == 0 {
        "<unset>".into()
    } else {
        rfc3339(ms)
    }
}

fn meta_fields(t: &mut Text, m: &ObjectMeta, namespaced: bool) {
    t.field(0, "Name", &m.name);
    if namespaced {
        t.field(0, "Namespace", &m.namespace);
    }
    t.field(0, "Labels", map_lines(&m.labels));
    t.field(0, "Annotations", map_lines(&m.annotations));
    t.field(0, "CreationTimestamp", time(m.creation_timestamp));
}

pub fn describe_pod(pod: &Pod, now_ms: i64) -> String {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let st = pod.status.clone().unwrap_or_default();
    let mut t = Text::new(20);
    meta_fields(&mut t, &meta, true);
    let node = match (spec.node_name.as_str(), st.host_ip.as_str()) {
        ("", _) => "<none>".to_string(),
        (n, "") => n.to_string(),
        (n, ip) => format!("{n}/{ip}"),
    };
    t.field(0, "Node", node);
    if st.start_time != 0 {
        t.field(0, "Start Time", rfc3339(st.start_time));
    }
    let mut status = if st.phase.is_empty() {
        phase::PENDING.to_string()
    } else {
        st.phase.clone()
    };
    if meta.deletion_timestamp != 0 {
        status = format!(
            "Terminating (lasts {})",
            human_duration((now_ms - meta.deletion_timestamp).max(0))
        );
        t.field(0, "Status", status);
        t.field(
            0,
            "Grace Period",
            format!("{}s", meta.deletion_grace_period_seconds),
        );
    } else {
        t.field(0, "Status", status);
    }
    if !st.reason.is_empty() {
        t.field(0, "Reason", &st.reason);
    }
    if !st.message.is_empty() {
        t.field(0, "Message", &st.message);
    }
    t.field(0, "IP", or_none(&st.pod_ip));
    t.line("Containers:");
    for c in &spec.containers {
        t.line(format!("  {}:", c.name));
        t.field(4, "Image", &c.image);
        if !c.command.is_empty() {
            t.line("    Command:");
            for a in &c.command {
                t.line(format!("      {a}"));
            }
        }
        if !c.args.is_empty() {
            t.line("    Args:");
            for a in &c.args {
                t.line(format!("      {a}"));
            }
        }
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                let proto = if p.protocol.is_empty() {
                    protocol::TCP
                } else {
                    &p.protocol
                };
                if p.name.is_empty() {
                    format!("{}/{proto}", p.container_port)
                } else {
                    format!("{}/{proto} ({})", p.container_port, p.name)
                }
            })
            .collect();
        t.field(
            4,
            "Port",
            if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(", ")
            },
        );
        match st.container_statuses.iter().find(|s| s.name == c.name) {
            Some(cs) => {
                t.field(
                    4,
                    "State",
                    if cs.state.is_empty() {
                        container_state::WAITING
                    } else {
                        &cs.state
                    },
                );
                if !cs.reason.is_empty() {
                    t.field(6, "Reason", &cs.reason);
                }
                // kubectl trims a message (a termination message often ends in "\n").
                if !cs.message.trim().is_empty() {
                    t.field(6, "Message", cs.message.trim());
                }
                if cs.state == container_state::TERMINATED {
                    t.field(6, "Exit Code", cs.exit_code.to_string());
                }
                if cs.started_at != 0 {
                    t.field(6, "Started", rfc3339(cs.started_at));
                }
                if cs.finished_at != 0 {
                    t.field(6, "Finished", rfc3339(cs.finished_at));
                }
                if let Some(l) = &cs.last_state {
                    t.field(4, "Last State", container_state::TERMINATED);
                    if !l.reason.is_empty() {
                        t.field(6, "Reason", &l.reason);
                    }
                    if !l.message.trim().is_empty() {
                        t.field(6, "Message", l.message.trim());
                    }
                    t.field(6, "Exit Code", l.exit_code.to_string());
                    if l.started_at != 0 {
                        t.field(6, "Started", rfc3339(l.started_at));
                    }
                    if l.finished_at != 0 {
                        t.field(6, "Finished", rfc3339(l.finished_at));
                    }
                }
                t.field(
                    4,
                    "Ready",
                    if cs.ready {
                        condition_status::TRUE
                    } else {
                        condition_status::FALSE
                    },
                );
                t.field(4, "Restart Count", cs.restart_count.to_string());
            }
            None => {
                t.field(4, "State", container_state::WAITING);
                t.field(4, "Ready", condition_status::FALSE);
                t.field(4, "Restart Count", "0");
            }
        }
        for l in crate::output::container_describe_lines(c) {
            t.line(l);
        }
        if c.env.is_empty() {
            t.field(4, "Environment", "<none>");
        } else {
            t.line("    Environment:");
            for e in &c.env {
                t.line(format!("      {}:  {}", e.name, e.value));
            }
        }
    }
    if st.conditions.is_empty() {
        t.field(0, "Conditions", "<none>");
    } else {
        t.line("Conditions:");
        let w = st
            .conditions
            .iter()
            .map(|c| c.r#type.len())
            .max()
            .unwrap_or(4)
            .max(4)
            + 3;
        t.line(format!("  {:w$}Status", "Type"));
        for c in &st.conditions {
            t.line(format!("  {:w$}{}", c.r#type, c.status));
        }
    }
    t.field(
        0,
        "Restart Policy",
        if spec.restart_policy.is_empty() {
            restart_policy::ALWAYS
        } else {
            &spec.restart_policy
        },
    );
    if !st.qos_class.is_empty() {
        t.field(0, "QoS Class", &st.qos_class);
    }
    t.field(0, "Node-Selectors", map_lines(&spec.node_selector));
    t.out
}

pub fn describe_service(svc: &Service, endpoints: Option<&Endpoints>) -> String {
    let meta = svc.metadata.clone().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut t = Text::new(20);
    meta_fields(&mut t, &meta, true);
    t.field(0, "Selector", format_map(&spec.selector, ","));
    t.field(
        0,
        "Type",
        if spec.r#type.is_empty() {
            service_type::CLUSTER_IP
        } else {
            &spec.r#type
        },
    );
    t.field(0, "IP", or_none(&spec.cluster_ip));
    for p in &spec.ports {
        let proto = if p.protocol.is_empty() {
            protocol::TCP
        } else {
            &p.protocol
        };
        let name = if p.name.is_empty() {
            "<unset>"
        } else {
            &p.name
        };
        t.field(0, "Port", format!("{name}  {}/{proto}", p.port));
        t.field(0, "TargetPort", format!("{}/{proto}", p.target_port));
    }
    t.field(
        0,
        "Endpoints",
        endpoints
            .map(endpoints_text)
            .unwrap_or_else(|| "<none>".into()),
    );
    t.out
}

pub fn describe_node(node: &Node, pods: &[Pod], now_ms: i64) -> String {
    let meta = node.metadata.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let st = node.status.clone().unwrap_or_default();
    let mut t = Text::new(20);
    meta_fields(&mut t, &meta, false);
    t.field(0, "Status", node_status_text(node));
    t.field(0, "Unschedulable", spec.unschedulable.to_string());
    t.field(0, "PodCIDR", or_none(&spec.pod_cidr));
    t.field(
        0,
        "Address",
        or_none(if spec.address.is_empty() {
            &st.address
        } else {
            &spec.address
        }),
    );
    t.field(0, "DaemonEndpoint", or_none(&st.daemon_endpoint));
    let hb = if st.last_heartbeat_time == 0 {
        "<never>".to_string()
    } else {
        format!(
            "{} ({} ago)",
            rfc3339(st.last_heartbeat_time),
            human_duration(now_ms - st.last_heartbeat_time)
        )
    };
    t.field(0, "Last Heartbeat", hb);
    if st.conditions.is_empty() {
        t.field(0, "Conditions", "<none>");
    } else {
        t.line("Conditions:");
        let mut rows = vec![
            ["Type", "Status", "LastTransitionTime", "Reason", "Message"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &st.conditions {
            rows.push(vec![
                c.r#type.clone(),
                c.status.clone(),
                time(c.last_transition_time),
                or_none(&c.reason),
                c.message.clone(),
            ]);
        }
        for l in table_lines(2, &[8, 9, 23, 9], &rows) {
            t.line(l);
        }
    }
    t.field(0, "Capacity", map_lines(&st.capacity));
    t.line(format!("Non-terminated Pods:  ({} in total)", pods.len()));
    if !pods.is_empty() {
        let mut rows = vec![vec![
            "Namespace".to_string(),
            "Name".into(),
            "Status".into(),
        ]];
        for p in pods {
            let m = p.metadata.clone().unwrap_or_default();
            rows.push(vec![m.namespace, m.name, pod_status_text(p)]);
        }
        for l in table_lines(2, &[12, 6], &rows) {
            t.line(l);
        }
    }
    t.out
}

pub fn describe_endpoints(ep: &Endpoints) -> String {
    let meta = ep.metadata.clone().unwrap_or_default();
    let mut t = Text::new(22);
    meta_fields(&mut t, &meta, true);
    if ep.subsets.is_empty() {
        t.field(0, "Subsets", "<none>");
    } else {
        t.line("Subsets:");
        for s in &ep.subsets {
            let addrs: Vec<String> = s.addresses.iter().map(|a| a.ip.clone()).collect();
            let not_ready: Vec<String> =
                s.not_ready_addresses.iter().map(|a| a.ip.clone()).collect();
            t.field(
                2,
                "Addresses",
                if addrs.is_empty() {
                    "<none>".into()
                } else {
                    addrs.join(",")
                },
            );
            t.field(
                2,
                "NotReadyAddresses",
                if not_ready.is_empty() {
                    "<none>".into()
                } else {
                    not_ready.join(",")
                },
            );
            t.line("  Ports:");
            let mut rows = vec![
                ["Name", "Port", "Protocol"].map(String::from).to_vec(),
                ["----", "----", "--------"].map(String::from).to_vec(),
            ];
            for p in &s.ports {
                rows.push(vec![
                    or_none(&p.name),
                    p.port.to_string(),
                    p.protocol.clone(),
                ]);
            }
            for l in table_lines(4, &[9, 6], &rows) {
                t.line(l);
            }
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        Container, ContainerPort, ContainerStateTerminated, ContainerStatus, EndpointAddress,
        EndpointPort, EndpointSubset, EnvVar, PodCondition, PodSpec, PodStatus, ServicePort,
        ServiceSpec,
    };

    const T0: i64 = 1_795_823_230_000; // 2026-11-27T23:47:10Z

    #[test]
    fn pod_text() {
        let pod = Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                labels: [
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front".to_string()),
                ]
                .into(),
                creation_timestamp: T0,
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: "node-1".into(),
                containers: vec![Container {
                    name: "web".into(),
                    image: "busybox".into(),
                    command: vec!["httpd".into()],
                    args: vec!["-f".into()],
                    env: vec![EnvVar {
                        name: "A".into(),
                        value: "1".into(),
                        value_from: None,
                    }],
                    ports: vec![ContainerPort {
                        name: "http".into(),
                        container_port: 8080,
                        protocol: "TCP".into(),
                    }],
                    ..Default::default()
                }],
                restart_policy: "OnFailure".into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                pod_ip: "10.0.1.2".into(),
                host_ip: "192.168.1.10".into(),
                container_statuses: vec![ContainerStatus {
                    name: "web".into(),
                    state: "Terminated".into(),
                    reason: "Error".into(),
                    exit_code: 2,
                    restart_count: 3,
                    finished_at: T0 + 1000,
                    ..Default::default()
                }],
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: "False".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let want = "\
Name:               web
Namespace:          default
Labels:             app=web
                    tier=front
Annotations:        <none>
CreationTimestamp:  2026-11-27T23:47:10Z
Node:               node-1/192.168.1.10
Status:             Running
IP:                 10.0.1.2
Containers:
  web:
    Image:          busybox
    Command:
      httpd
    Args:
      -f
    Port:           8080/TCP (http)
    State:          Terminated
      Reason:       Error
      Exit Code:    2
      Finished:     2026-11-27T23:47:11Z
    Ready:          False
    Restart Count:  3
    Environment:
      A:  1
Conditions:
  Type    Status
  Ready   False
Restart Policy:     OnFailure
Node-Selectors:     <none>
";
        assert_eq!(describe_pod(&pod, T0), want);
        // A termination message, in the state and the last state, trimmed as kubectl's.
        let mut pod = pod;
        let st = pod.status.as_mut().unwrap();
        st.container_statuses[0].message = "disk full\nbye\n".into();
        st.container_statuses[0].last_state = Some(ContainerStateTerminated {
            exit_code: 1,
            reason: "Error".into(),
            message: "first\n".into(),
            ..Default::default()
        });
        let text = describe_pod(&pod, T0);
        assert!(
            text.contains(
                "      Reason:       Error\n      Message:      disk full\n                    bye\n      Exit Code:    2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    Last State:     Terminated\n      Reason:       Error\n      Message:      first\n      Exit Code:    1\n"),
            "{text}"
        );
    }

    #[test]
    fn service_and_endpoints_text() {
        let svc = Service {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80,
                    target_port: 8080,
                    ..Default::default()
                }],
                cluster_ip: "10.96.0.10".into(),
                r#type: "ClusterIP".into(),
                ..Default::default()
            }),
            status: None,
        };
        let ep = Endpoints {
            metadata: svc.metadata.clone(),
            subsets: vec![EndpointSubset {
                addresses: vec![EndpointAddress {
                    ip: "10.0.1.2".into(),
                    node_name: "n".into(),
                    pod_name: "p".into(),
                }],
                not_ready_addresses: vec![],
                ports: vec![EndpointPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: "TCP".into(),
                }],
            }],
        };
        let text = describe_service(&svc, Some(&ep));
        assert!(text.contains("Selector:           app=web\n"), "{text}");
        assert!(
            text.contains("Port:               http  80/TCP\nTargetPort:         8080/TCP\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Endpoints:          10.0.1.2:8080\n"),
            "{text}"
        );
        assert!(describe_service(&svc, None).ends_with("Endpoints:          <none>\n"));
        let text = describe_endpoints(&ep);
        assert!(text.contains("  Addresses:          10.0.1.2\n"), "{text}");
        assert!(text.contains("    http     8080  TCP\n"), "{text}");
    }

    #[test]
    fn tables_widen_for_long_cells() {
        use kube_lite_proto::v1::{NodeCondition, NodeSpec, NodeStatus};
        let node = Node {
            metadata: Some(ObjectMeta {
                name: "node0".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    reason: "AgentReady".into(),
                    message: "agent is posting ready status".into(),
                    last_transition_time: 0,
                }],
                ..Default::default()
            }),
        };
        let pod = Pod {
            metadata: Some(ObjectMeta {
                name: "a-rather-long-pod-name".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = describe_node(&node, &[pod], T0);
        assert!(
            text.contains("  Ready   True     <unset>                AgentReady  agent is posting"),
            "{text}"
        );
        assert!(
            text.contains("  Namespace   Name                    Status\n  default     a-rather-long-pod-name  "),
            "{text}"
        );
        let ep = Endpoints {
            metadata: None,
            subsets: vec![EndpointSubset {
                addresses: vec![],
                not_ready_addresses: vec![],
                ports: vec![EndpointPort {
                    name: "3001-tcp".into(),
                    port: 8080,
                    protocol: "TCP".into(),
                }],
            }],
        };
        let text = describe_endpoints(&ep);
        assert!(text.contains("    Name      Port  Protocol\n"), "{text}");
        assert!(text.contains("    3001-tcp  8080  TCP\n"), "{text}");
    }
}
