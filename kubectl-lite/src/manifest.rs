//! Kubernetes manifests → kube-lite objects.
//!
//! Documents are parsed (YAML with serde-saphyr, several per file; or JSON) into untyped
//! values and walked field by field, so that every field kube-lite does not support is
//! reported by its path (`spec.containers[0].resources`) instead of being dropped.
//!
//! Policy for fields we do not support:
//! * **warning** (the document is applied, the field is named on stderr): fields that are
//!   set by the cluster or are purely informational and common in real manifests —
//!   `status`, `metadata.{creationTimestamp,uid,resourceVersion,generation,managedFields,…}`,
//!   `spec.{schedulerName,enableServiceLinks,priority,preemptionPolicy,
//!   serviceAccountName}`, Service `spec.{sessionAffinity: None,clusterIPs,ipFamilies,
//!   ipFamilyPolicy,internalTrafficPolicy}`, `spec.ports[].appProtocol` — and any unknown
//!   field whose value is empty (`resources: {}`, `volumes: []`, `null`).
//! * **error** (the document is refused, nothing of the file is applied): every other
//!   unknown field (volume types other than emptyDir/configMap/secret/hostPath/
//!   downwardAPI, seLinuxOptions, `hostPort`, `valueFrom.fileKeyRef`,
//!   …), `type: ExternalName`, values of the wrong type, other apiVersions and kinds.
//!
//! Probes (`livenessProbe`, `readinessProbe`, `startupProbe`) and `resources` are read by
//! [`pod_extras`].

mod pod_extras;
mod pod_volumes;
mod security;

use kube_lite_core::consts::service_type;
use kube_lite_core::{defaults, Resource};
use kube_lite_proto::v1::{
    Container, ContainerPort, EnvVar, ObjectMeta, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use serde_json::{Map, Value};
use std::collections::HashMap;

mod workloads;

/// A converted document.
// Short-lived values, one per document: boxing the larger Pod buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Pod(Pod),
    Service(Service),
    Namespace(kube_lite_proto::v1::Namespace),
    ConfigMap(kube_lite_proto::v1::ConfigMap),
    Secret(kube_lite_proto::v1::Secret),
    ReplicaSet(kube_lite_proto::v1::ReplicaSet),
    Deployment(kube_lite_proto::v1::Deployment),
}

impl Manifest {
    /// `pod/web`, `deployment.apps/web`
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind().display(), self.name())
    }

    pub fn kind(&self) -> crate::api::Kind {
        use crate::api::Kind as K;
        match self {
            Manifest::Pod(_) => K::Pod,
            Manifest::Service(_) => K::Service,
            Manifest::Namespace(_) => K::Namespace,
            Manifest::ConfigMap(_) => K::ConfigMap,
            Manifest::Secret(_) => K::Secret,
            Manifest::ReplicaSet(_) => K::ReplicaSet,
            Manifest::Deployment(_) => K::Deployment,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Manifest::Pod(x) => x.meta(),
            Manifest::Service(x) => x.meta(),
            Manifest::Namespace(x) => x.meta(),
            Manifest::ConfigMap(x) => x.meta(),
            Manifest::Secret(x) => x.meta(),
            Manifest::ReplicaSet(x) => x.meta(),
            Manifest::Deployment(x) => x.meta(),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// Apply order: namespaces first, then what pods use (config, secrets), Services,
    /// then the workloads.
    pub fn apply_rank(&self) -> u8 {
        match self {
            Manifest::Namespace(_) => 0,
            Manifest::ConfigMap(_) | Manifest::Secret(_) => 1,
            Manifest::Service(_) => 2,
            Manifest::Deployment(_) | Manifest::ReplicaSet(_) => 3,
            Manifest::Pod(_) => 4,
        }
    }
}

/// A document that converted, with the warnings it produced (`path: why`).
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

/// Splits a file into documents: JSON when it starts with `{` or `[`, else (multi-document)
/// YAML. Empty documents are skipped; a `kind: List` is expanded into its items.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        match v {
            Value::Array(items) => items,
            v => vec![v],
        }
    } else {
        serde_saphyr::from_multiple::<Value>(&pod_volumes::octal_modes(text))
            .map_err(|e| format!("invalid YAML: {}", one_line(&e.to_string())))?
    };
    let mut out = Vec::new();
    for d in docs {
        if d.is_null() {
            continue;
        }
        if d.get("kind").and_then(Value::as_str) == Some("List") {
            if let Some(items) = d.get("items").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
                continue;
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// The parser's message on one line, without the source snippet it appends
/// (` --> <input>:3:11` and the quoted lines).
fn one_line(s: &str) -> String {
    let msg: Vec<&str> = s
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("-->"))
        .collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Pod "web"` for messages about a document, from whatever it has.
pub fn describe_doc(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("object");
    match v.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) => format!("{kind} {name:?}"),
        None => kind.to_string(),
    }
}

/// Converts one document. `namespace` is the effective namespace (`-n`, or "default"),
/// `explicit_namespace` whether the user gave `-n` (then a different
/// `metadata.namespace` is an error, as in kubectl). Errors: every problem, by path.
pub fn convert(
    v: &Value,
    namespace: &str,
    explicit_namespace: bool,
) -> Result<Converted, Vec<String>> {
    let mut w = Walker::default();
    let Some(top) = v.as_object() else {
        return Err(vec![
            "a manifest must be a mapping with apiVersion, kind, metadata and spec".into(),
        ]);
    };
    let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
    let want_version = match kind {
        "Deployment" | "ReplicaSet" => "apps/v1",
        _ => "v1",
    };
    let served = [
        "Pod",
        "Service",
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "ReplicaSet",
    ];
    if !kind.is_empty() && !served.contains(&kind) {
        w.err(
            "kind",
            format!("{kind:?} is not supported by kube-lite (it serves Pod, Service, Namespace, ConfigMap, Secret, Deployment and ReplicaSet)"),
        );
        return Err(w.errors);
    }
    match top.get("apiVersion") {
        Some(Value::String(s)) if s == want_version => {}
        Some(other) => w.err(
            "apiVersion",
            format!("{other} is not supported for {kind} (only {want_version})"),
        ),
        None => w.err("apiVersion", format!("is required ({want_version})")),
    }
    if let Some(m) = workloads::convert(&mut w, kind, top, namespace, explicit_namespace) {
        return if w.errors.is_empty() {
            Ok(Converted {
                manifest: m,
                warnings: w.warnings,
            })
        } else {
            Err(w.errors)
        };
    }
    let manifest = match kind {
        "Pod" => {
            w.unknown(
                "",
                top,
                &["apiVersion", "kind", "metadata", "spec"],
                Kind::Pod,
            );
            let metadata = w.metadata(top.get("metadata"), namespace, explicit_namespace);
            let spec = w.pod_spec(top.get("spec"));
            Manifest::Pod(Pod {
                metadata: Some(metadata),
                spec: Some(spec),
                status: None,
            })
        }
        "Service" => {
            w.unknown(
                "",
                top,
                &["apiVersion", "kind", "metadata", "spec"],
                Kind::Service,
            );
            let metadata = w.metadata(top.get("metadata"), namespace, explicit_namespace);
            let spec = w.service_spec(top.get("spec"));
            Manifest::Service(Service {
                metadata: Some(metadata),
                spec: Some(spec),
                status: None,
            })
        }
        "" => {
            w.err("kind", "is required (Pod, Service, Namespace, ConfigMap, Secret, Deployment or ReplicaSet)");
            return Err(w.errors);
        }
        _ => unreachable!("served kinds are converted above"),
    };
    if w.errors.is_empty() {
        Ok(Converted {
            manifest,
            warnings: w.warnings,
        })
    } else {
        Err(w.errors)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    Service,
    Namespace,
    /// ConfigMap, Secret
    Config,
    /// Deployment, ReplicaSet
    Workload,
}

const IGNORED_STATUS: &[&str] = &["status", "spec.template.metadata.creationTimestamp"];

/// Unknown fields that are applied with a warning (generic path, `[]` for any index).
const IGNORED_POD: &[&str] = &[
    "status",
    "spec.schedulerName",
    "spec.enableServiceLinks",
    "spec.priority",
    "spec.preemptionPolicy",
    "spec.serviceAccountName",
    "spec.serviceAccount",
];
const IGNORED_SERVICE: &[&str] = &[
    "status",
    "spec.clusterIPs",
    "spec.ipFamilies",
    "spec.ipFamilyPolicy",
    "spec.internalTrafficPolicy",
    "spec.ports[].appProtocol",
];
const IGNORED_META: &[&str] = &[
    "metadata.creationTimestamp",
    "metadata.uid",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.managedFields",
    "metadata.selfLink",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
];

/// `spec.containers[0].ports[1].name` → `spec.containers[].ports[].name`.
fn generic(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[derive(Default)]
pub(crate) struct Walker {
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Walker {
    fn err(&mut self, path: &str, why: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {why}"));
    }

    fn warn(&mut self, path: &str, why: impl std::fmt::Display) {
        self.warnings.push(format!("{path}: {why}"));
    }

    /// Reports every key of `map` not in `known`, as a warning or an error (see the module
    /// docs).
    fn unknown(&mut self, path: &str, map: &Map<String, Value>, known: &[&str], kind: Kind) {
        for (key, value) in map {
            if known.contains(&key.as_str()) {
                continue;
            }
            let p = join(path, key);
            let g = generic(&p);
            let ignored = match kind {
                Kind::Pod => IGNORED_POD,
                Kind::Service => IGNORED_SERVICE,
                Kind::Namespace | Kind::Config | Kind::Workload => IGNORED_STATUS,
            };
            if ignored.contains(&g.as_str()) || IGNORED_META.contains(&g.as_str()) {
                self.warn(&p, "ignored (not used by kube-lite)");
            } else if is_empty_value(value) {
                self.warn(
                    &p,
                    "not supported by kube-lite; ignored because it is empty",
                );
            } else {
                self.err(&p, "not supported by kube-lite");
            }
        }
    }

    fn object<'a>(&mut self, path: &str, v: Option<&'a Value>) -> Option<&'a Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.err(
                    path,
                    format!("expected a mapping, got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn array<'a>(&mut self, path: &str, v: Option<&'a Value>) -> &'a [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.err(path, format!("expected a list, got {}", type_name(other)));
                &[]
            }
        }
    }

    fn string(&mut self, path: &str, v: Option<&Value>) -> String {
        match v {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.err(path, format!("expected a string, got {}", type_name(other)));
                String::new()
            }
        }
    }

    fn strings(&mut self, path: &str, v: Option<&Value>) -> Vec<String> {
        let items = self.array(path, v);
        items
            .iter()
            .enumerate()
            .map(|(i, s)| self.string(&format!("{path}[{i}]"), Some(s)))
            .collect()
    }

    fn int(&mut self, path: &str, v: Option<&Value>) -> i64 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
            Some(other) => {
                self.err(
                    path,
                    format!("expected an integer, got {}", type_name(other)),
                );
                0
            }
        }
    }

    fn port(&mut self, path: &str, v: Option<&Value>) -> i32 {
        let n = self.int(path, v);
        if !(0..=65535).contains(&n) {
            self.err(path, format!("{n} is not a port number (1-65535)"));
            return 0;
        }
        n as i32
    }

    fn string_map(&mut self, path: &str, v: Option<&Value>) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(m) = self.object(path, v) {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    other => self.err(
                        &format!("{path}.{k}"),
                        format!("expected a string, got {} (quote it)", type_name(other)),
                    ),
                }
            }
        }
        out
    }

    fn metadata(
        &mut self,
        v: Option<&Value>,
        namespace: &str,
        explicit_namespace: bool,
    ) -> ObjectMeta {
        let mut meta = ObjectMeta::default();
        let Some(m) = self.object("metadata", v) else {
            self.err("metadata.name", "is required");
            return meta;
        };
        self.unknown(
            "metadata",
            m,
            &["name", "namespace", "labels", "annotations"],
            Kind::Pod,
        );
        meta.name = self.string("metadata.name", m.get("name"));
        if meta.name.is_empty() {
            self.err("metadata.name", "is required");
        }
        let ns = self.string("metadata.namespace", m.get("namespace"));
        meta.namespace = if ns.is_empty() {
            namespace.to_string()
        } else if explicit_namespace && ns != namespace {
            self.err(
                "metadata.namespace",
                format!("{ns:?} does not match the namespace {namespace:?} given with -n"),
            );
            ns
        } else {
            ns
        };
        meta.labels = self.string_map("metadata.labels", m.get("labels"));
        meta.annotations = self.string_map("metadata.annotations", m.get("annotations"));
        meta
    }

    fn pod_spec(&mut self, v: Option<&Value>) -> PodSpec {
        let mut spec = PodSpec::default();
        let Some(s) = self.object("spec", v) else {
            self.err("spec", "is required");
            return spec;
        };
        self.unknown(
            "spec",
            s,
            &[
                "containers",
                "initContainers",
                "restartPolicy",
                "nodeName",
                "nodeSelector",
                "terminationGracePeriodSeconds",
                "dnsPolicy",
                "dnsConfig",
                "hostname",
                "subdomain",
                "securityContext",
                "volumes",
            ],
            Kind::Pod,
        );
        spec.security_context =
            self.pod_security_context("spec.securityContext", s.get("securityContext"));
        spec.volumes = self.volumes("spec.volumes", s.get("volumes"));
        spec.dns_policy = self.string("spec.dnsPolicy", s.get("dnsPolicy"));
        spec.hostname = self.string("spec.hostname", s.get("hostname"));
        spec.subdomain = self.string("spec.subdomain", s.get("subdomain"));
        if let Some(d) = self.object("spec.dnsConfig", s.get("dnsConfig")) {
            self.unknown(
                "spec.dnsConfig",
                d,
                &["nameservers", "searches", "options"],
                Kind::Pod,
            );
            let mut cfg = kube_lite_proto::v1::PodDnsConfig {
                nameservers: self.strings("spec.dnsConfig.nameservers", d.get("nameservers")),
                searches: self.strings("spec.dnsConfig.searches", d.get("searches")),
                options: Vec::new(),
            };
            let path = "spec.dnsConfig.options";
            for (i, o) in self.array(path, d.get("options")).iter().enumerate() {
                let p = format!("{path}[{i}]");
                if let Some(o) = self.object(&p, Some(o)) {
                    self.unknown(&p, o, &["name", "value"], Kind::Pod);
                    cfg.options.push(kube_lite_proto::v1::PodDnsOption {
                        name: self.string(&join(&p, "name"), o.get("name")),
                        value: self.string(&join(&p, "value"), o.get("value")),
                    });
                }
            }
            spec.dns_config = Some(Box::new(cfg));
        }
        spec.node_name = self.string("spec.nodeName", s.get("nodeName"));
        spec.restart_policy = self.string("spec.restartPolicy", s.get("restartPolicy"));
        spec.node_selector = self.string_map("spec.nodeSelector", s.get("nodeSelector"));
        spec.termination_grace_period_seconds = self.int(
            "spec.terminationGracePeriodSeconds",
            s.get("terminationGracePeriodSeconds"),
        );
        if s.contains_key("terminationGracePeriodSeconds")
            && spec.termination_grace_period_seconds < 0
        {
            self.err("spec.terminationGracePeriodSeconds", "must be >= 0");
        }
        let containers = self.array("spec.containers", s.get("containers"));
        if containers.is_empty() {
            self.err("spec.containers", "at least one container is required");
        }
        for (i, c) in containers.iter().enumerate() {
            let path = format!("spec.containers[{i}]");
            if let Some(c) = self.object(&path, Some(c)) {
                let container = self.container(&path, c);
                spec.containers.push(container);
            }
        }
        let inits = self.array("spec.initContainers", s.get("initContainers"));
        for (i, c) in inits.iter().enumerate() {
            let path = format!("spec.initContainers[{i}]");
            if let Some(c) = self.object(&path, Some(c)) {
                let container = self.container(&path, c);
                spec.init_containers.push(container);
            }
        }
        spec
    }

    fn container(&mut self, path: &str, c: &Map<String, Value>) -> Container {
        let known: Vec<&str> = [
            "name",
            "image",
            "command",
            "args",
            "env",
            "ports",
            "securityContext",
            "imagePullPolicy",
            "lifecycle",
            "terminationMessagePath",
            "terminationMessagePolicy",
        ]
        .into_iter()
        .chain(pod_extras::CONTAINER_KEYS.iter().copied())
        .chain(pod_volumes::CONTAINER_KEYS.iter().copied())
        .collect();
        self.unknown(path, c, &known, Kind::Pod);
        let mut out = Container {
            name: self.string(&join(path, "name"), c.get("name")),
            image: self.string(&join(path, "image"), c.get("image")),
            command: self.strings(&join(path, "command"), c.get("command")),
            args: self.strings(&join(path, "args"), c.get("args")),
            image_pull_policy: self
                .string(&join(path, "imagePullPolicy"), c.get("imagePullPolicy")),
            termination_message_path: self.string(
                &join(path, "terminationMessagePath"),
                c.get("terminationMessagePath"),
            ),
            termination_message_policy: self.string(
                &join(path, "terminationMessagePolicy"),
                c.get("terminationMessagePolicy"),
            ),
            ..Default::default()
        };
        out.liveness_probe = self.probe(&join(path, "livenessProbe"), c.get("livenessProbe"));
        out.readiness_probe = self.probe(&join(path, "readinessProbe"), c.get("readinessProbe"));
        out.startup_probe = self.probe(&join(path, "startupProbe"), c.get("startupProbe"));
        out.resources = self.resources(&join(path, "resources"), c.get("resources"));
        out.security_context =
            self.security_context(&join(path, "securityContext"), c.get("securityContext"));
        out.env_from = self.env_from(&join(path, "envFrom"), c.get("envFrom"));
        out.volume_mounts = self.volume_mounts(&join(path, "volumeMounts"), c.get("volumeMounts"));
        out.lifecycle = self.lifecycle(&join(path, "lifecycle"), c.get("lifecycle"));
        let env_path = join(path, "env");
        for (i, e) in self.array(&env_path, c.get("env")).iter().enumerate() {
            let p = format!("{env_path}[{i}]");
            if let Some(e) = self.object(&p, Some(e)) {
                self.unknown(&p, e, &["name", "value", "valueFrom"], Kind::Pod);
                out.env.push(EnvVar {
                    name: self.string(&join(&p, "name"), e.get("name")),
                    value: self.string(&join(&p, "value"), e.get("value")),
                    value_from: self.env_source(&join(&p, "valueFrom"), e.get("valueFrom")),
                });
            }
        }
        let ports_path = join(path, "ports");
        for (i, port) in self.array(&ports_path, c.get("ports")).iter().enumerate() {
            let p = format!("{ports_path}[{i}]");
            if let Some(port) = self.object(&p, Some(port)) {
                self.unknown(&p, port, &["name", "containerPort", "protocol"], Kind::Pod);
                out.ports.push(ContainerPort {
                    name: self.string(&join(&p, "name"), port.get("name")),
                    container_port: self
                        .port(&join(&p, "containerPort"), port.get("containerPort")),
                    protocol: self.string(&join(&p, "protocol"), port.get("protocol")),
                });
            }
        }
        out
    }

    fn service_spec(&mut self, v: Option<&Value>) -> ServiceSpec {
        let mut spec = ServiceSpec::default();
        let Some(s) = self.object("spec", v) else {
            self.err("spec", "is required");
            return spec;
        };
        self.unknown(
            "spec",
            s,
            &[
                "selector",
                "ports",
                "clusterIP",
                "type",
                "sessionAffinity",
                "sessionAffinityConfig",
                "externalTrafficPolicy",
            ],
            Kind::Service,
        );
        spec.selector = self.string_map("spec.selector", s.get("selector"));
        spec.cluster_ip = self.string("spec.clusterIP", s.get("clusterIP"));
        spec.r#type = self.string("spec.type", s.get("type"));
        let types = [
            service_type::CLUSTER_IP,
            service_type::NODE_PORT,
            service_type::LOAD_BALANCER,
        ];
        if !spec.r#type.is_empty() && !types.contains(&spec.r#type.as_str()) {
            self.err(
                "spec.type",
                format!(
                    "{:?} is not supported (ClusterIP, NodePort, LoadBalancer)",
                    spec.r#type
                ),
            );
        }
        spec.external_traffic_policy =
            self.string("spec.externalTrafficPolicy", s.get("externalTrafficPolicy"));
        spec.session_affinity = self.string("spec.sessionAffinity", s.get("sessionAffinity"));
        if let Some(cfg) = self.object("spec.sessionAffinityConfig", s.get("sessionAffinityConfig"))
        {
            self.unknown(
                "spec.sessionAffinityConfig",
                cfg,
                &["clientIP"],
                Kind::Service,
            );
            if let Some(cip) =
                self.object("spec.sessionAffinityConfig.clientIP", cfg.get("clientIP"))
            {
                self.unknown(
                    "spec.sessionAffinityConfig.clientIP",
                    cip,
                    &["timeoutSeconds"],
                    Kind::Service,
                );
                let t = self.int(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    cip.get("timeoutSeconds"),
                );
                spec.session_affinity_timeout_seconds = i32::try_from(t).unwrap_or(i32::MAX);
            }
        }
        for (i, port) in self.array("spec.ports", s.get("ports")).iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            if let Some(port) = self.object(&p, Some(port)) {
                self.unknown(
                    &p,
                    port,
                    &["name", "protocol", "port", "targetPort", "nodePort"],
                    Kind::Service,
                );
                let target_path = join(&p, "targetPort");
                let mut target_port_name = String::new();
                let target_port = match port.get("targetPort") {
                    Some(Value::String(t)) => match t.parse::<i64>() {
                        Ok(n) => self.port(&target_path, Some(&Value::from(n))),
                        Err(_) => {
                            target_port_name = t.clone();
                            0
                        }
                    },
                    other => self.port(&target_path, other),
                };
                let node_port = match port.get("nodePort") {
                    None | Some(Value::Null) => 0,
                    other => self.port(&join(&p, "nodePort"), other),
                };
                spec.ports.push(ServicePort {
                    name: self.string(&join(&p, "name"), port.get("name")),
                    protocol: self.string(&join(&p, "protocol"), port.get("protocol")),
                    port: self.port(&join(&p, "port"), port.get("port")),
                    target_port,
                    target_port_name,
                    node_port,
                });
            }
        }
        spec
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The server's defaults ([`kube_lite_core::defaults`]) applied to a desired pod spec, so
/// that a manifest can be compared with the stored pod (`unchanged` vs `spec is
/// immutable`). An empty nodeName in the manifest accepts whatever node the scheduler
/// chose.
pub fn normalize_pod_spec(desired: &PodSpec, stored: &PodSpec) -> PodSpec {
    let mut d = desired.clone();
    defaults::default_pod_spec(&mut d);
    if d.node_name.is_empty() {
        d.node_name = stored.node_name.clone();
    }
    if stored.dns_policy.is_empty()
        && d.dns_policy == kube_lite_core::consts::dns_policy::CLUSTER_FIRST
    {
        d.dns_policy.clear();
    }
    d
}

/// The server's defaults ([`kube_lite_core::defaults`]: protocol TCP, targetPort = port,
/// type ClusterIP) applied to a desired service spec, with the allocated clusterIP when
/// none is asked for.
pub fn normalize_service_spec(desired: &ServiceSpec, stored: &ServiceSpec) -> ServiceSpec {
    let mut d = desired.clone();
    defaults::default_service_spec(&mut d);
    if d.cluster_ip.is_empty() {
        d.cluster_ip = stored.cluster_ip.clone();
    }
    for p in d.ports.iter_mut().filter(|p| p.node_port == 0) {
        if let Some(q) = stored
            .ports
            .iter()
            .find(|q| q.port == p.port && q.protocol == p.protocol)
        {
            p.node_port = q.node_port;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
  annotations:
    team: blue
spec:
  restartPolicy: OnFailure
  nodeSelector:
    disk: ssd
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    terminationMessagePath: /tmp/why
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["httpd"]
    args: ["-f", "-p", "8080"]
    env:
    - name: GREETING
      value: hello
    ports:
    - name: http
      containerPort: 8080
      protocol: TCP
"#;

    const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: alt
    protocol: UDP
    port: 81
    targetPort: "9090"
  clusterIP: 172.17.10.10
  type: ClusterIP
"#;

    fn one(text: &str) -> Result<Converted, Vec<String>> {
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        convert(&docs[0], "default", false)
    }

    #[test]
    fn converts_a_kubernetes_pod_with_its_image_pull_policy() {
        let c = one(POD).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let Manifest::Pod(pod) = c.manifest else {
            panic!("not a pod")
        };
        let meta = pod.metadata.unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str()),
            ("web", "default")
        );
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(meta.annotations["team"], "blue");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy, "OnFailure");
        assert_eq!(spec.node_selector["disk"], "ssd");
        assert_eq!(spec.termination_grace_period_seconds, 5);
        let c = &spec.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_str()), ("web", "busybox:1.36"));
        assert_eq!(c.image_pull_policy, "IfNotPresent");
        assert_eq!(
            (
                c.termination_message_path.as_str(),
                c.termination_message_policy.as_str()
            ),
            ("/tmp/why", "FallbackToLogsOnError")
        );
        assert_eq!(c.command, vec!["httpd"]);
        assert_eq!(c.args, vec!["-f", "-p", "8080"]);
        assert_eq!(
            c.env,
            vec![EnvVar {
                name: "GREETING".into(),
                value: "hello".into(),
                value_from: None,
            }]
        );
        assert_eq!(
            c.ports,
            vec![ContainerPort {
                name: "http".into(),
                container_port: 8080,
                protocol: "TCP".into()
            }]
        );
    }

    #[test]
    fn converts_a_service_with_number_and_string_target_ports() {
        let c = one(SERVICE).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let Manifest::Service(svc) = c.manifest else {
            panic!("not a service")
        };
        assert_eq!(svc.metadata.as_ref().unwrap().namespace, "shop");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector["app"], "web");
        assert_eq!(spec.cluster_ip, "172.17.10.10");
        assert_eq!(spec.r#type, "ClusterIP");
        assert_eq!(
            spec.ports,
            vec![
                ServicePort {
                    name: "http".into(),
                    protocol: "".into(),
                    port: 80,
                    target_port: 8080,
                    ..Default::default()
                },
                ServicePort {
                    name: "alt".into(),
                    protocol: "UDP".into(),
                    port: 81,
                    target_port: 9090,
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn multi_document_yaml_and_json() {
        let docs = parse_documents(&format!("{POD}\n---\n{SERVICE}\n---\n")).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(describe_doc(&docs[1]), "Service \"web\"");
        let json = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":1}]}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"b"},"spec":{"ports":[{"port":2}]}}]}"#;
        let docs = parse_documents(json).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(convert(&docs[1], "default", false).is_ok());
        assert!(parse_documents("a: [b")
            .unwrap_err()
            .starts_with("invalid YAML"));
        let e = parse_documents("apiVersion: v1\nkind: Pod\nmetadata: {name: p\n").unwrap_err();
        assert!(e.starts_with("invalid YAML: line 3 column 11: "), "{e}");
        assert!(!e.contains("-->") && !e.contains("apiVersion"), "{e}");
        assert!(parse_documents("{\"a\":")
            .unwrap_err()
            .starts_with("invalid JSON"));
    }

    #[test]
    fn probes_and_resources_convert() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: whoami
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /healthz, port: http, httpHeaders: [{name: X-A, value: b}]}
      periodSeconds: 2
    livenessProbe:
      tcpSocket: {port: 8080}
      failureThreshold: 5
    startupProbe:
      exec: {command: [cat, /tmp/ok]}
    resources:
      requests: {cpu: 0.5, memory: 64Mi}
      limits: {cpu: 1, memory: "128Mi"}
"#;
        let Manifest::Pod(p) = one(text).unwrap().manifest else {
            panic!("a pod")
        };
        let c = &p.spec.unwrap().containers[0];
        let r = c.readiness_probe.as_ref().unwrap();
        let h = r.http_get.as_ref().unwrap();
        assert_eq!(
            (h.path.as_str(), h.port, h.port_name.as_str()),
            ("/healthz", 0, "http")
        );
        assert_eq!(h.http_headers[0].name, "X-A");
        assert_eq!(r.period_seconds, 2);
        let l = c.liveness_probe.as_ref().unwrap();
        assert_eq!(l.tcp_socket.as_ref().unwrap().port, 8080);
        assert_eq!(l.failure_threshold, 5);
        assert_eq!(
            c.startup_probe
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command,
            ["cat", "/tmp/ok"]
        );
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.requests["cpu"], "0.5");
        assert_eq!(res.limits["cpu"], "1");
        assert_eq!(res.limits["memory"], "128Mi");
        let bad = text.replace(
            "periodSeconds: 2",
            "periodSeconds: 2\n      grpc: {port: 9}",
        );
        assert_eq!(
            one(&bad).unwrap_err(),
            vec!["spec.containers[0].readinessProbe.grpc: not supported by kube-lite"]
        );
    }

    #[test]
    fn volumes_mounts_and_env_sources_are_read() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  volumes:
  - {name: cfg, configMap: {name: app, items: [{key: k, path: k.txt, mode: 0400}], defaultMode: 0644}}
  - {name: sec, secret: {secretName: creds, optional: true}}
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
  - {name: logs, hostPath: {path: /var/log, type: Directory}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  containers:
  - name: web
    image: busybox
    env:
    - {name: A, valueFrom: {configMapKeyRef: {name: app, key: k}}}
    - {name: B, valueFrom: {secretKeyRef: {name: creds, key: pw, optional: true}}}
    envFrom:
    - {prefix: APP_, configMapRef: {name: app}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/app, readOnly: true}
    - {name: scratch, mountPath: /work, subPath: w}
"#;
        let c = one(text).unwrap();
        let Manifest::Pod(p) = c.manifest else {
            panic!("not a pod")
        };
        let s = p.spec.unwrap();
        assert_eq!(s.volumes.len(), 6);
        assert_eq!(
            s.volumes[0].config_map.as_ref().unwrap().items[0].mode,
            Some(0o400)
        );
        assert!(s.volumes[1].secret.as_ref().unwrap().optional);
        assert!(s.volumes[2].empty_dir.is_some());
        assert_eq!(s.volumes[3].empty_dir.as_ref().unwrap().size_limit, "16Mi");
        assert_eq!(s.volumes[4].host_path.as_ref().unwrap().r#type, "Directory");
        assert_eq!(
            s.volumes[5].downward_api.as_ref().unwrap().items[0].path,
            "labels"
        );
        let ct = &s.containers[0];
        let a = ct.env[0].value_from.as_ref().unwrap();
        assert_eq!(a.config_map_key_ref.as_ref().unwrap().key, "k");
        assert!(
            ct.env[1]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .optional
        );
        assert_eq!(ct.env_from[0].prefix, "APP_");
        assert!(ct.volume_mounts[0].read_only);
        assert_eq!(ct.volume_mounts[1].sub_path, "w");
    }

    #[test]
    fn unsupported_fields_are_reported_by_path() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  creationTimestamp: null
  finalizers: [x]
spec:
  dnsPolicy: ClusterFirst
  securityContext: {}
  volumes:
  - name: data
    nfs: {server: x, path: /}
  containers:
  - name: web
    image: nginx
    resources:
      limits:
        cpu: 100m
    env:
    - name: A
      valueFrom:
        fileKeyRef: {path: p, key: k}
    ports:
    - containerPort: 80
      hostPort: 8080
status:
  phase: Running
"#;
        let errs = one(text).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "metadata.finalizers: not supported by kube-lite",
                "spec.volumes[0].nfs: not supported by kube-lite",
                "spec.containers[0].env[0].valueFrom.fileKeyRef: not supported by kube-lite",
                "spec.containers[0].ports[0].hostPort: not supported by kube-lite",
            ]
        );
        // The same document without the behaviour-changing fields applies with warnings.
        let ok = text
            .replace("  finalizers: [x]\n", "")
            .replace(
                "  volumes:\n  - name: data\n    nfs: {server: x, path: /}\n",
                "",
            )
            .replace("    resources:\n      limits:\n        cpu: 100m\n", "")
            .replace(
                "      valueFrom:\n        fileKeyRef: {path: p, key: k}\n",
                "      value: x\n",
            )
            .replace("      hostPort: 8080\n", "");
        let c = one(&ok).unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "status: ignored (not used by kube-lite)",
                "metadata.creationTimestamp: ignored (not used by kube-lite)",
            ]
        );
    }

    #[test]
    fn service_types_named_ports_affinity_and_headless() {
        let text = SERVICE
            .replace(
                "type: ClusterIP",
                "type: NodePort\n  externalTrafficPolicy: Local\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}",
            )
            .replace(
                "targetPort: \"9090\"",
                "targetPort: metrics\n    nodePort: 30080",
            )
            .replace("  clusterIP: 172.17.10.10\n", "");
        let c = one(&text).unwrap();
        let Manifest::Service(s) = c.manifest else {
            panic!("not a service")
        };
        let spec = s.spec.unwrap();
        assert_eq!(spec.r#type, "NodePort");
        assert_eq!(spec.external_traffic_policy, "Local");
        assert_eq!(spec.session_affinity, "ClientIP");
        assert_eq!(spec.session_affinity_timeout_seconds, 5);
        assert_eq!(spec.ports[1].target_port_name, "metrics");
        assert_eq!(spec.ports[1].target_port, 0);
        assert_eq!(spec.ports[1].node_port, 30080);
        let headless = SERVICE.replace("clusterIP: 172.17.10.10", "clusterIP: None");
        let Manifest::Service(s) = one(&headless).unwrap().manifest else {
            panic!("not a service")
        };
        assert_eq!(s.spec.unwrap().cluster_ip, "None");
        let bad = SERVICE.replace("type: ClusterIP", "type: ExternalName");
        assert_eq!(
            one(&bad).unwrap_err(),
            vec![
                "spec.type: \"ExternalName\" is not supported (ClusterIP, NodePort, LoadBalancer)"
            ]
        );
    }

    #[test]
    fn bad_types_kinds_and_versions() {
        let errs = one("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: b}]}\n").unwrap_err();
        assert_eq!(
            errs,
            vec!["apiVersion: \"apps/v1\" is not supported for Pod (only v1)"]
        );
        let errs = one("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n")
            .unwrap_err();
        assert_eq!(
            errs,
            vec!["kind: \"Ingress\" is not supported by kube-lite (it serves Pod, Service, Namespace, ConfigMap, Secret, Deployment and ReplicaSet)"]
        );
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: {version: 2}\nspec:\n  containers:\n  - name: x\n    image: busybox\n    ports:\n    - containerPort: \"80\"\n    args: oops\n";
        let errs = one(text).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "metadata.labels.version: expected a string, got a number (quote it)",
                "spec.containers[0].args: expected a list, got a string",
                "spec.containers[0].ports[0].containerPort: expected an integer, got a string",
            ]
        );
        assert_eq!(
            one("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: []}\n").unwrap_err(),
            vec![
                "metadata.name: is required",
                "spec.containers: at least one container is required"
            ]
        );
    }

    #[test]
    fn namespace_rules() {
        let docs = parse_documents(SERVICE).unwrap();
        assert!(convert(&docs[0], "shop", true).is_ok());
        assert_eq!(
            convert(&docs[0], "other", true).unwrap_err(),
            vec![
                "metadata.namespace: \"shop\" does not match the namespace \"other\" given with -n"
            ]
        );
        let docs = parse_documents(POD).unwrap();
        let Manifest::Pod(p) = convert(&docs[0], "dev", true).unwrap().manifest else {
            panic!()
        };
        assert_eq!(p.metadata.unwrap().namespace, "dev");
    }

    #[test]
    fn normalization_matches_server_defaults() {
        let Manifest::Service(s) = one(SERVICE).unwrap().manifest else {
            panic!()
        };
        let desired = s.spec.unwrap();
        let mut stored = desired.clone();
        stored.ports[0].protocol = "TCP".into();
        stored.session_affinity = "None".into();
        assert_eq!(normalize_service_spec(&desired, &stored), stored);
        let Manifest::Pod(p) = one(POD).unwrap().manifest else {
            panic!()
        };
        let desired = p.spec.unwrap();
        let mut stored = desired.clone();
        stored.node_name = "node-1".into();
        stored.dns_policy = "ClusterFirst".into();
        assert_eq!(normalize_pod_spec(&desired, &stored), stored);
        // A pod stored before dnsPolicy existed has none: the default matches it.
        stored.dns_policy.clear();
        assert_eq!(normalize_pod_spec(&desired, &stored), stored);
    }

    #[test]
    fn normalization_applies_the_core_defaults() {
        let desired = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "i".into(),
                ports: vec![ContainerPort {
                    container_port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut stored = desired.clone();
        defaults::default_pod_spec(&mut stored);
        stored.node_name = "node-1".into();
        assert_eq!(normalize_pod_spec(&desired, &stored), stored);
        // A grace period of its own is a change.
        let mut other = stored.clone();
        other.termination_grace_period_seconds = 5;
        assert_ne!(normalize_pod_spec(&desired, &other), other);

        let desired = ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut stored = desired.clone();
        defaults::default_service_spec(&mut stored);
        stored.cluster_ip = "172.17.10.10".into();
        let want = normalize_service_spec(&desired, &stored);
        assert_eq!(want, stored);
        assert_eq!(
            (want.ports[0].target_port, want.r#type.as_str()),
            (80, "ClusterIP")
        );
    }
}
