//! Printers: kubectl-like borderless tables, and Kubernetes-shaped JSON/YAML
//! (apiVersion, kind, metadata with RFC 3339 timestamps, spec, status; camelCase; keys in
//! a fixed order; empty fields left out as the Kubernetes API does).

mod pod_extras;
pub use pod_extras::describe_lines as container_describe_lines;

use crate::api::Api;
use crate::util::{age, format_map, rfc3339};
use kube_lite_core::consts::{
    condition, condition_status, container_state, phase, protocol, service_type,
};
use kube_lite_core::Resource;
use kube_lite_proto::v1::{ContainerStatus, Endpoints, Node, ObjectMeta, Pod, PodStatus, Service};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// How a kind shows itself in tables and in Kubernetes-shaped documents.
pub trait Show: Api {
    fn headers(wide: bool) -> Vec<&'static str>;
    fn row(&self, now_ms: i64, wide: bool) -> Vec<String>;
    fn to_json(&self) -> Value;
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

    fn to_json(&self) -> Value {
        let spec = self.spec.clone().unwrap_or_default();
        let s = pod_spec_json(&spec);
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta_json(self.meta(), true),
            "spec": s,
            "status": pod_status_json(&self.status.clone().unwrap_or_default()),
        })
    }
}

/// A pod spec as Kubernetes writes it (also a template's spec).
pub fn pod_spec_json(spec: &kube_lite_proto::v1::PodSpec) -> Value {
    let container_json = |c: &kube_lite_proto::v1::Container| {
        let mut o = Map::new();
        o.insert("name".into(), json!(c.name));
        o.insert("image".into(), json!(c.image));
        put_nonempty(&mut o, "command", json!(c.command));
        put_nonempty(&mut o, "args", json!(c.args));
        let env: Vec<Value> = c
            .env
            .iter()
            .map(|e| json!({"name": e.name, "value": e.value}))
            .collect();
        put_nonempty(&mut o, "env", Value::Array(env));
        let ports: Vec<Value> = c
            .ports
            .iter()
            .map(|p| {
                Value::Object(port_json(
                    &p.name,
                    "containerPort",
                    p.container_port,
                    &p.protocol,
                ))
            })
            .collect();
        put_nonempty(&mut o, "ports", Value::Array(ports));
        pod_extras::container_json(&mut o, c);
        Value::Object(o)
    };
    let containers: Vec<Value> = spec.containers.iter().map(container_json).collect();
    let inits: Vec<Value> = spec.init_containers.iter().map(container_json).collect();
    let mut s = Map::new();
    put_str(&mut s, "nodeName", &spec.node_name);
    s.insert("containers".into(), Value::Array(containers));
    put_nonempty(&mut s, "initContainers", Value::Array(inits));
    put_str(&mut s, "restartPolicy", &spec.restart_policy);
    put_nonempty(&mut s, "nodeSelector", sorted_map(&spec.node_selector));
    s.insert(
        "terminationGracePeriodSeconds".into(),
        json!(spec.termination_grace_period_seconds),
    );
    Value::Object(s)
}

fn pod_status_json(st: &PodStatus) -> Value {
    let mut o = Map::new();
    put_str(&mut o, "phase", &st.phase);
    put_str(&mut o, "reason", &st.reason);
    put_str(&mut o, "message", &st.message);
    let conds: Vec<Value> = st
        .conditions
        .iter()
        .map(|c| {
            let mut o = Map::new();
            o.insert("type".into(), json!(c.r#type));
            o.insert("status".into(), json!(c.status));
            put_str(&mut o, "reason", &c.reason);
            put_str(&mut o, "message", &c.message);
            Value::Object(o)
        })
        .collect();
    put_nonempty(&mut o, "conditions", Value::Array(conds));
    put_str(&mut o, "hostIP", &st.host_ip);
    put_str(&mut o, "podIP", &st.pod_ip);
    put_time(&mut o, "startTime", st.start_time);
    let cs: Vec<Value> = st
        .container_statuses
        .iter()
        .map(container_status_json)
        .collect();
    put_nonempty(&mut o, "containerStatuses", Value::Array(cs));
    let ics: Vec<Value> = st
        .init_container_statuses
        .iter()
        .map(container_status_json)
        .collect();
    put_nonempty(&mut o, "initContainerStatuses", Value::Array(ics));
    put_str(&mut o, "qosClass", &st.qos_class);
    Value::Object(o)
}

/// Kubernetes' shape: `state: {running|waiting|terminated: {...}}`.
fn container_status_json(c: &ContainerStatus) -> Value {
    let mut detail = Map::new();
    let key = match c.state.as_str() {
        container_state::RUNNING => {
            put_time(&mut detail, "startedAt", c.started_at);
            "running"
        }
        container_state::TERMINATED => {
            detail.insert("exitCode".into(), json!(c.exit_code));
            put_str(&mut detail, "reason", &c.reason);
            put_str(&mut detail, "message", &c.message);
            put_time(&mut detail, "startedAt", c.started_at);
            put_time(&mut detail, "finishedAt", c.finished_at);
            "terminated"
        }
        _ => {
            put_str(&mut detail, "reason", &c.reason);
            put_str(&mut detail, "message", &c.message);
            "waiting"
        }
    };
    let mut state = Map::new();
    state.insert(key.into(), Value::Object(detail));
    let mut o = Map::new();
    o.insert("name".into(), json!(c.name));
    o.insert("ready".into(), json!(c.ready));
    o.insert("restartCount".into(), json!(c.restart_count));
    o.insert("state".into(), Value::Object(state));
    pod_extras::container_status_json(&mut o, c);
    Value::Object(o)
}

/// `80/TCP,53/UDP`, `<none>` without ports.
pub fn service_ports_text(svc: &Service) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.ports.is_empty() {
        return "<none>".into();
    }
    spec.ports
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                protocol::TCP
            } else {
                &p.protocol
            };
            if p.node_port != 0 {
                format!("{}:{}/{proto}", p.port, p.node_port)
            } else {
                format!("{}/{proto}", p.port)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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

    fn to_json(&self) -> Value {
        let spec = self.spec.clone().unwrap_or_default();
        let ports: Vec<Value> = spec
            .ports
            .iter()
            .map(|p| {
                let mut o = port_json(&p.name, "port", p.port, &p.protocol);
                if p.target_port_name.is_empty() {
                    o.insert("targetPort".into(), json!(p.target_port));
                } else {
                    o.insert("targetPort".into(), json!(p.target_port_name));
                }
                if p.node_port != 0 {
                    o.insert("nodePort".into(), json!(p.node_port));
                }
                Value::Object(o)
            })
            .collect();
        let mut s = Map::new();
        put_nonempty(&mut s, "selector", sorted_map(&spec.selector));
        s.insert("ports".into(), Value::Array(ports));
        put_str(&mut s, "clusterIP", &spec.cluster_ip);
        put_str(&mut s, "type", &spec.r#type);
        put_str(
            &mut s,
            "externalTrafficPolicy",
            &spec.external_traffic_policy,
        );
        put_str(&mut s, "sessionAffinity", &spec.session_affinity);
        let st = self.status.clone().unwrap_or_default();
        let mut status = Map::new();
        if !st.load_balancer_ingress.is_empty() {
            let ingress: Vec<Value> = st
                .load_balancer_ingress
                .iter()
                .map(|i| json!({ "ip": i.ip }))
                .collect();
            status.insert("loadBalancer".into(), json!({ "ingress": ingress }));
        }
        if !st.conditions.is_empty() {
            let conds: Vec<Value> = st
                .conditions
                .iter()
                .map(|c| {
                    json!({"type": c.r#type, "status": c.status, "reason": c.reason, "message": c.message})
                })
                .collect();
            status.insert("conditions".into(), Value::Array(conds));
        }
        let mut o = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta_json(self.meta(), true),
            "spec": Value::Object(s),
        });
        if !status.is_empty() {
            o["status"] = Value::Object(status);
        }
        o
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

    fn to_json(&self) -> Value {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let mut s = Map::new();
        put_str(&mut s, "podCIDR", &spec.pod_cidr);
        put_str(&mut s, "address", &spec.address);
        if spec.unschedulable {
            s.insert("unschedulable".into(), json!(true));
        }
        let mut o = Map::new();
        let conds: Vec<Value> = st
            .conditions
            .iter()
            .map(|c| {
                let mut o = Map::new();
                o.insert("type".into(), json!(c.r#type));
                o.insert("status".into(), json!(c.status));
                put_str(&mut o, "reason", &c.reason);
                put_str(&mut o, "message", &c.message);
                put_time(&mut o, "lastTransitionTime", c.last_transition_time);
                Value::Object(o)
            })
            .collect();
        put_nonempty(&mut o, "conditions", Value::Array(conds));
        if !st.address.is_empty() {
            o.insert(
                "addresses".into(),
                json!([{"type": "InternalIP", "address": st.address}]),
            );
        }
        put_nonempty(&mut o, "capacity", sorted_map(&st.capacity));
        put_time(&mut o, "lastHeartbeatTime", st.last_heartbeat_time);
        put_str(&mut o, "daemonEndpoint", &st.daemon_endpoint);
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": meta_json(self.meta(), false),
            "spec": Value::Object(s),
            "status": Value::Object(o),
        })
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

    fn to_json(&self) -> Value {
        let ns = self.meta().namespace.clone();
        let addr = |a: &kube_lite_proto::v1::EndpointAddress| {
            let mut o = Map::new();
            o.insert("ip".into(), json!(a.ip));
            put_str(&mut o, "nodeName", &a.node_name);
            if !a.pod_name.is_empty() {
                o.insert(
                    "targetRef".into(),
                    json!({"kind": "Pod", "namespace": ns, "name": a.pod_name}),
                );
            }
            Value::Object(o)
        };
        let subsets: Vec<Value> = self
            .subsets
            .iter()
            .map(|s| {
                let mut o = Map::new();
                put_nonempty(
                    &mut o,
                    "addresses",
                    Value::Array(s.addresses.iter().map(addr).collect()),
                );
                put_nonempty(
                    &mut o,
                    "notReadyAddresses",
                    Value::Array(s.not_ready_addresses.iter().map(addr).collect()),
                );
                let ports: Vec<Value> = s
                    .ports
                    .iter()
                    .map(|p| Value::Object(port_json(&p.name, "port", p.port, &p.protocol)))
                    .collect();
                put_nonempty(&mut o, "ports", Value::Array(ports));
                Value::Object(o)
            })
            .collect();
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!("v1"));
        out.insert("kind".into(), json!("Endpoints"));
        out.insert("metadata".into(), meta_json(self.meta(), true));
        put_nonempty(&mut out, "subsets", Value::Array(subsets));
        Value::Object(out)
    }
}

mod workloads;
pub use workloads::{deployment_ready_text, event_object_text, selector_text};

// ---------- JSON helpers ----------

pub fn meta_json(m: &ObjectMeta, namespaced: bool) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(m.name));
    if namespaced {
        o.insert("namespace".into(), json!(m.namespace));
    }
    put_str(&mut o, "uid", &m.uid);
    o.insert(
        "resourceVersion".into(),
        json!(m.resource_version.to_string()),
    );
    put_time(&mut o, "creationTimestamp", m.creation_timestamp);
    if m.deletion_timestamp != 0 {
        put_time(&mut o, "deletionTimestamp", m.deletion_timestamp);
        o.insert(
            "deletionGracePeriodSeconds".into(),
            json!(m.deletion_grace_period_seconds),
        );
    }
    if m.generation != 0 {
        o.insert("generation".into(), json!(m.generation));
    }
    put_nonempty(&mut o, "labels", sorted_map(&m.labels));
    put_nonempty(&mut o, "annotations", sorted_map(&m.annotations));
    let owners: Vec<Value> = m
        .owner_references
        .iter()
        .map(|r| {
            json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid,
                   "controller": r.controller, "blockOwnerDeletion": r.block_owner_deletion})
        })
        .collect();
    put_nonempty(&mut o, "ownerReferences", Value::Array(owners));
    put_nonempty(&mut o, "finalizers", json!(m.finalizers));
    Value::Object(o)
}

pub(crate) fn sorted_map(m: &HashMap<String, String>) -> Value {
    let sorted: BTreeMap<_, _> = m.iter().collect();
    let mut o = Map::new();
    for (k, v) in sorted {
        o.insert(k.clone(), json!(v));
    }
    Value::Object(o)
}

/// A port as Kubernetes writes it: `name` and `protocol` when set, the number under
/// `number_key` (`containerPort` for containers, `port` for Services and Endpoints).
fn port_json(name: &str, number_key: &str, number: i32, protocol: &str) -> Map<String, Value> {
    let mut o = Map::new();
    put_str(&mut o, "name", name);
    o.insert(number_key.into(), json!(number));
    put_str(&mut o, "protocol", protocol);
    o
}

pub(crate) fn put_str(o: &mut Map<String, Value>, key: &str, v: &str) {
    if !v.is_empty() {
        o.insert(key.into(), json!(v));
    }
}

pub(crate) fn put_time(o: &mut Map<String, Value>, key: &str, millis: i64) {
    if millis != 0 {
        o.insert(key.into(), json!(rfc3339(millis)));
    }
}

pub(crate) fn put_nonempty(o: &mut Map<String, Value>, key: &str, v: Value) {
    let empty = match &v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    };
    if !empty {
        o.insert(key.into(), v);
    }
}

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
        let v = pod("web", 150, "Running", "node-1", "10.0.1.2").to_json();
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","uid":"u-1","resourceVersion":"42","creationTimestamp":"2026-11-27T23:44:40Z","labels":{"app":"web"}},"spec":{"nodeName":"node-1","containers":[{"name":"web","image":"busybox","ports":[{"containerPort":8080,"protocol":"TCP"}]}],"restartPolicy":"Always","terminationGracePeriodSeconds":30},"status":{"phase":"Running","podIP":"10.0.1.2","containerStatuses":[{"name":"web","ready":true,"restartCount":2,"state":{"running":{"startedAt":"2026-11-27T23:47:05Z"}}}]}}"#
        );
        let v = service().to_json();
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
        let yaml = to_yaml_text(&service().to_json()).unwrap();
        assert!(
            yaml.starts_with("apiVersion: v1\nkind: Service\n"),
            "{yaml}"
        );
        let docs = crate::manifest::parse_documents(&yaml).unwrap();
        let c = crate::manifest::convert(&docs[0], "default", false).unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "metadata.uid: ignored (not used by kube-lite)",
                "metadata.resourceVersion: ignored (not used by kube-lite)",
                "metadata.creationTimestamp: ignored (not used by kube-lite)",
            ]
        );
        let crate::manifest::Manifest::Service(s) = c.manifest else {
            panic!()
        };
        assert_eq!(s.spec, service().spec);
        let yaml = to_yaml_text(&pod("web", 1, "Running", "node-1", "10.0.1.2").to_json()).unwrap();
        let docs = crate::manifest::parse_documents(&yaml).unwrap();
        let c = crate::manifest::convert(&docs[0], "default", false).unwrap();
        let crate::manifest::Manifest::Pod(p) = c.manifest else {
            panic!()
        };
        assert_eq!(p.spec, pod("web", 1, "Running", "node-1", "").spec);
    }
}
