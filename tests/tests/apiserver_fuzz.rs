//! Bad input (issue 9): thousands of random and hostile messages for every RPC of every
//! service against a real apiserver: random bytes as the body (raw codec), mutated
//! encodings, and typed messages with hostile field values (huge strings, NUL and
//! control characters, extreme numbers, special addresses). Asserts that every answer
//! is a defined gRPC code with a bounded message (never INTERNAL / UNKNOWN), that the
//! server still answers health and a normal create afterwards, and that the stored
//! objects are exactly what the accepted writes (and the controllers' own fields) made.
//!
//! Seeded (`KL_FUZZ_SEED`, default 9), 4 concurrent clients, each on its own namespace
//! and node names so each keeps an exact model of its accepted writes.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::pod;
use kube_lite_tests::raw::RawClient;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

const TASKS: usize = 4;
const PER_TASK: usize = 1300;
/// apiserver::error::MAX_MESSAGE_BYTES.
const MAX_MESSAGE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum K {
    Node,
    Pod,
    Service,
    Endpoints,
}

const KINDS: [(K, &str); 4] = [
    (K::Node, "NodeApi"),
    (K::Pod, "PodApi"),
    (K::Service, "ServiceApi"),
    (K::Endpoints, "EndpointsApi"),
];
const METHODS: [&str; 8] = [
    "Create",
    "Get",
    "List",
    "Update",
    "UpdateStatus",
    "Delete",
    "Watch",
    "Logs",
];

type Key = (K, String, String);

/// What a client's accepted writes left: the object as the server answered.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Obj {
    Node(Node),
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
}

fn decode(kind: K, b: &[u8]) -> Obj {
    match kind {
        K::Node => Obj::Node(Node::decode(b).expect("node answer")),
        K::Pod => Obj::Pod(Pod::decode(b).expect("pod answer")),
        K::Service => Obj::Service(Service::decode(b).expect("service answer")),
        K::Endpoints => Obj::Endpoints(Endpoints::decode(b).expect("endpoints answer")),
    }
}

impl Obj {
    fn meta(&self) -> ObjectMeta {
        match self {
            Obj::Node(x) => x.metadata.clone(),
            Obj::Pod(x) => x.metadata.clone(),
            Obj::Service(x) => x.metadata.clone(),
            Obj::Endpoints(x) => x.metadata.clone(),
        }
        .unwrap_or_default()
    }
    fn key(&self, kind: K) -> Key {
        let m = self.meta();
        (kind, m.namespace, m.name)
    }
}

struct Gen {
    rng: StdRng,
    /// Chance of a hostile value for each field of the current message.
    hostility: f64,
    /// This client's namespace ("" and "default" for client 0) and node names.
    namespaces: Vec<String>,
    nodes: Vec<String>,
}

/// Strings no name rule accepts (so hostile writes never reach another client's keys).
fn invalid_strings(rng: &mut StdRng) -> String {
    match rng.random_range(0..12) {
        0 => "\0".into(),
        1 => "a\0b".into(),
        2 => "evil\u{1b}]0;title\u{7}".into(),
        3 => "line\ninjected".into(),
        4 => "x".repeat(100_000),
        5 => "y".repeat(254),
        6 => "UPPER".into(),
        7 => "-a".into(),
        8 => "../../etc/passwd".into(),
        9 => "é€😀".into(),
        10 => (0..rng.random_range(1..300))
            .map(|_| char::from(rng.random_range(0u8..0x20)))
            .collect(),
        _ => "a b".into(),
    }
}

impl Gen {
    fn hostile(&mut self) -> bool {
        self.rng.random_bool(self.hostility)
    }
    /// One of the first `valid` entries, or (hostile) any entry or an invalid string.
    fn pick(&mut self, valid: usize, pool: &[&str]) -> String {
        if !self.hostile() {
            return pool[self.rng.random_range(0..valid)].to_string();
        }
        if self.rng.random_bool(0.5) {
            pool[self.rng.random_range(0..pool.len())].to_string()
        } else {
            invalid_strings(&mut self.rng)
        }
    }
    fn any_string(&mut self) -> String {
        if self.hostile() {
            invalid_strings(&mut self.rng)
        } else {
            ["", "ok", "some text"][self.rng.random_range(0..3)].into()
        }
    }
    fn i64v(&mut self, valid: &[i64]) -> i64 {
        if self.hostile() {
            [0, -1, 1, -2, 86_400, 86_401, i64::MAX, i64::MIN, 1 << 40][self.rng.random_range(0..9)]
        } else {
            valid[self.rng.random_range(0..valid.len())]
        }
    }
    fn i32v(&mut self, valid: &[i32]) -> i32 {
        if self.hostile() {
            [0, 1, 80, 65_535, 65_536, -1, i32::MAX, i32::MIN][self.rng.random_range(0..8)]
        } else {
            valid[self.rng.random_range(0..valid.len())]
        }
    }
    fn u64v(&mut self) -> u64 {
        if self.hostile() {
            [
                0,
                1,
                5,
                1 << 32,
                i64::MAX as u64,
                i64::MAX as u64 + 1,
                u64::MAX,
            ][self.rng.random_range(0..7)]
        } else {
            0
        }
    }
    fn ip(&mut self) -> String {
        self.pick(
            3,
            &[
                "10.0.1.5",
                "10.0.2.9",
                "",
                "10.96.0.7",
                "192.168.9.1",
                "127.0.0.1",
                "0.0.0.0",
                "255.255.255.255",
                "224.0.0.1",
                "169.254.0.1",
                "999.1.1.1",
                "1.2.3",
            ],
        )
    }
    fn map(&mut self, n: usize) -> HashMap<String, String> {
        (0..self.rng.random_range(0..=n))
            .map(|_| {
                (
                    self.pick(3, &["app", "tier", "example.com/x", "Bad Key", "/x"]),
                    self.pick(3, &["web", "", "v1.2", "bad value!", "-x"]),
                )
            })
            .collect()
    }
    fn namespace(&mut self, kind: K) -> String {
        if kind == K::Node {
            return if self.hostile() {
                invalid_strings(&mut self.rng)
            } else {
                String::new()
            };
        }
        if self.hostile() {
            return invalid_strings(&mut self.rng);
        }
        let i = self.rng.random_range(0..self.namespaces.len());
        self.namespaces[i].clone()
    }
    fn name(&mut self, kind: K) -> String {
        if self.hostile() && self.rng.random_bool(0.5) {
            return invalid_strings(&mut self.rng);
        }
        if kind == K::Node {
            let i = self.rng.random_range(0..self.nodes.len());
            return self.nodes[i].clone();
        }
        ["a", "b", "web", &"z".repeat(63)][self.rng.random_range(0..4)].to_string()
    }
    fn meta(&mut self, kind: K) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: self.name(kind),
            namespace: self.namespace(kind),
            uid: self.any_string(),
            labels: self.map(3),
            annotations: (0..self.rng.random_range(0..3))
                .map(|_| {
                    (
                        self.pick(2, &["note", "a.b/c", "Bad Key"]),
                        self.any_string(),
                    )
                })
                .collect(),
            resource_version: self.u64v(),
            creation_timestamp: self.i64v(&[0]),
            deletion_timestamp: self.i64v(&[0]),
            deletion_grace_period_seconds: self.i64v(&[0]),
            ..Default::default()
        })
    }

    fn node(&mut self) -> Node {
        Node {
            metadata: self.meta(K::Node),
            spec: Some(NodeSpec {
                pod_cidr: self.pick(2, &["", "10.0.5.0/24", "garbage"]),
                address: self.ip(),
                unschedulable: self.rng.random_bool(0.2),
            }),
            status: self.rng.random_bool(0.7).then(|| NodeStatus {
                conditions: (0..self.rng.random_range(0..3))
                    .map(|_| NodeCondition {
                        r#type: self.pick(1, &["Ready", "", "Weird"]),
                        status: self.pick(3, &["True", "False", "Unknown", "maybe"]),
                        reason: self.any_string(),
                        message: self.any_string(),
                        last_transition_time: self.i64v(&[0]),
                    })
                    .collect(),
                last_heartbeat_time: self.i64v(&[0]),
                capacity: self.map(2),
                images: Vec::new(),
                address: self.ip(),
                daemon_endpoint: self.pick(
                    2,
                    &[
                        "",
                        "http://127.0.0.1:1",
                        "http://[::1",
                        "ftp://x",
                        "http://x/y",
                    ],
                ),
                ..Default::default()
            }),
        }
    }

    fn pod(&mut self) -> Pod {
        let node_name = if self.rng.random_bool(0.3) {
            let i = self.rng.random_range(0..self.nodes.len());
            self.nodes[i].clone()
        } else if self.hostile() {
            invalid_strings(&mut self.rng)
        } else {
            String::new()
        };
        Pod {
            metadata: self.meta(K::Pod),
            spec: Some(PodSpec {
                node_name,
                containers: (0..self.rng.random_range(0..3) + usize::from(!self.hostile()))
                    .map(|_| Container {
                        name: self.pick(2, &["c", "d", "C", ""]),
                        image: self.pick(1, &["/bin/true", "", " "]),
                        image_pull_policy: self.pick(1, &["", "Never", "Sometimes"]),
                        command: (0..self.rng.random_range(0..3))
                            .map(|_| self.any_string())
                            .collect(),
                        args: (0..self.rng.random_range(0..2))
                            .map(|_| self.any_string())
                            .collect(),
                        env: (0..self.rng.random_range(0..3))
                            .map(|_| EnvVar {
                                name: self.pick(2, &["A", "PATH", "", "A=B", "\0"]),
                                value: self.any_string(),
                                value_from: self.rng.random_bool(0.1).then(|| EnvVarSource {
                                    field_ref: Some(ObjectFieldSelector {
                                        field_path: self.pick(
                                            2,
                                            &["metadata.name", "x", "metadata.labels['a']"],
                                        ),
                                    }),
                                    ..Default::default()
                                }),
                            })
                            .collect(),
                        ports: (0..self.rng.random_range(0..3))
                            .map(|_| ContainerPort {
                                name: self.pick(2, &["", "http", "Http", "a--b", "80"]),
                                container_port: self.i32v(&[80, 8080]),
                                protocol: self.pick(3, &["", "TCP", "UDP", "SCTP"]),
                            })
                            .collect(),
                        readiness_probe: self.rng.random_bool(0.2).then(|| Probe {
                            http_get: self.rng.random_bool(0.7).then(|| HttpGetAction {
                                path: self.pick(2, &["/", "", "no-slash", "/a b"]),
                                port: self.i32v(&[8080]),
                                ..Default::default()
                            }),
                            period_seconds: self.i32v(&[0, 1]),
                            ..Default::default()
                        }),
                        resources: self.rng.random_bool(0.2).then(|| ResourceRequirements {
                            requests: [(
                                self.pick(2, &["cpu", "memory", "gpu"]),
                                self.pick(2, &["100m", "1Gi", "-1", "x", ""]),
                            )]
                            .into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                restart_policy: self.pick(4, &["", "Always", "OnFailure", "Never", "Sometimes"]),
                node_selector: self.map(2),
                termination_grace_period_seconds: self.i64v(&[0, 1, 30]),
                dns_policy: self.pick(3, &["", "ClusterFirst", "Default", "None", "Maybe"]),
                hostname: self.pick(2, &["", "web-0", "Web_0"]),
                ..Default::default()
            }),
            status: self.rng.random_bool(0.5).then(|| PodStatus {
                phase: self.pick(
                    5,
                    &["", "Pending", "Running", "Succeeded", "Failed", "Exploded"],
                ),
                pod_ip: self.ip(),
                host_ip: self.ip(),
                start_time: self.i64v(&[0]),
                container_statuses: (0..self.rng.random_range(0..2))
                    .map(|_| ContainerStatus {
                        name: self.any_string(),
                        state: self.pick(3, &["Waiting", "Running", "Terminated", "?"]),
                        reason: self.any_string(),
                        message: self.any_string(),
                        exit_code: self.i32v(&[0]),
                        restart_count: self.i32v(&[0]),
                        started_at: self.i64v(&[0]),
                        finished_at: self.i64v(&[0]),
                        ready: self.rng.random_bool(0.5),
                        pid: self.i32v(&[0]),
                        ..Default::default()
                    })
                    .collect(),
                reason: self.any_string(),
                message: self.any_string(),
                conditions: (0..self.rng.random_range(0..2))
                    .map(|_| PodCondition {
                        r#type: self.any_string(),
                        status: self.any_string(),
                        reason: self.any_string(),
                        message: self.any_string(),
                    })
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn service(&mut self) -> Service {
        Service {
            metadata: self.meta(K::Service),
            spec: Some(ServiceSpec {
                selector: if self.rng.random_bool(0.5) {
                    HashMap::new()
                } else {
                    self.map(2)
                },
                ports: (0..self.rng.random_range(0..3) + usize::from(!self.hostile()))
                    .map(|i| ServicePort {
                        name: if i == 0 {
                            self.pick(1, &["", "http", "HTTP"])
                        } else {
                            self.pick(2, &["dns", "metrics", "", "http"])
                        },
                        protocol: self.pick(3, &["", "TCP", "UDP", "SCTP"]),
                        port: self.i32v(&[80, 53 + i as i32]),
                        target_port: self.i32v(&[0, 8080]),
                        target_port_name: self.pick(1, &["", "http", "HTTP", "a--b"]),
                        node_port: self.i32v(&[0, 30080, 80]),
                    })
                    .collect(),
                cluster_ip: self.pick(
                    2,
                    &[
                        "",
                        "10.96.0.77",
                        "10.96.0.0",
                        "192.168.9.1",
                        "127.0.0.1",
                        "1.2.3",
                        "None",
                    ],
                ),
                r#type: self.pick(
                    2,
                    &["", "ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
                ),
                external_traffic_policy: self.pick(2, &["", "Cluster", "Local", "Remote"]),
                session_affinity: self.pick(2, &["", "None", "ClientIP", "Sticky"]),
                session_affinity_timeout_seconds: self.i32v(&[0, 10, 100_000]),
            }),
            status: self.rng.random_bool(0.3).then(ServiceStatus::default),
        }
    }

    fn endpoints(&mut self) -> Endpoints {
        let addr = |g: &mut Gen| EndpointAddress {
            ip: g.ip(),
            node_name: g.pick(2, &["", "node-1", "Node 1"]),
            pod_name: g.pick(2, &["", "web-1", "Web_1"]),
        };
        Endpoints {
            metadata: self.meta(K::Endpoints),
            subsets: (0..self.rng.random_range(0..3))
                .map(|_| EndpointSubset {
                    addresses: (0..self.rng.random_range(0..3))
                        .map(|_| addr(self))
                        .collect(),
                    not_ready_addresses: (0..self.rng.random_range(0..2))
                        .map(|_| addr(self))
                        .collect(),
                    ports: (0..self.rng.random_range(0..2))
                        .map(|_| EndpointPort {
                            name: self.pick(1, &["", "http", "HTTP"]),
                            port: self.i32v(&[80]),
                            protocol: self.pick(3, &["", "TCP", "UDP", "SCTP"]),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn object(&mut self, kind: K) -> Vec<u8> {
        match kind {
            K::Node => self.node().encode_to_vec(),
            K::Pod => self.pod().encode_to_vec(),
            K::Service => self.service().encode_to_vec(),
            K::Endpoints => self.endpoints().encode_to_vec(),
        }
    }

    fn selector(&mut self) -> String {
        self.pick(
            3,
            &["", "app=web", "tier!=x,app", "a in (b", "!", "a==b==c"],
        )
    }

    fn typed(&mut self, kind: K, method: &str) -> Vec<u8> {
        match method {
            "Create" | "Update" | "UpdateStatus" => self.object(kind),
            "Get" => GetRequest {
                name: self.name(kind),
                namespace: self.namespace(kind),
            }
            .encode_to_vec(),
            "List" => ListRequest {
                namespace: self.namespace(kind),
                label_selector: self.selector(),
                node_name: if self.hostile() {
                    self.name(K::Node)
                } else {
                    String::new()
                },
                limit: if self.hostile() { 2 } else { 0 },
                r#continue: if self.hostile() {
                    self.name(kind)
                } else {
                    String::new()
                },
            }
            .encode_to_vec(),
            "Delete" => DeleteRequest {
                name: self.name(kind),
                namespace: self.namespace(kind),
                resource_version: self.u64v(),
                grace_period_seconds: self.i64v(&[-1, 0, 1]),
                ..Default::default()
            }
            .encode_to_vec(),
            "Watch" => WatchRequest {
                namespace: self.namespace(kind),
                label_selector: self.selector(),
                node_name: if self.hostile() {
                    self.name(K::Node)
                } else {
                    String::new()
                },
                resource_version: self.u64v(),
                bookmark_interval_ms: if self.hostile() {
                    [0, 1, 10, 3_600_000, 3_600_001, u32::MAX][self.rng.random_range(0..6)]
                } else {
                    0
                },
            }
            .encode_to_vec(),
            _ => LogsRequest {
                name: self.name(K::Pod),
                namespace: self.namespace(K::Pod),
                container: self.pick(2, &["", "c", "../x"]),
                follow: self.rng.random_bool(0.3),
                tail_lines: self.i64v(&[0, 10]),
                previous: self.rng.random_bool(0.2),
            }
            .encode_to_vec(),
        }
    }

    /// The body of one request: random bytes, a mutated encoding, or a typed message.
    fn body(&mut self, kind: K, method: &str) -> Vec<u8> {
        self.hostility = [0.0, 0.05, 0.3, 1.0][self.rng.random_range(0..4)];
        match self.rng.random_range(0..10) {
            0 => (0..self.rng.random_range(0..400))
                .map(|_| self.rng.random())
                .collect(),
            1 => {
                let mut b = self.typed(kind, method);
                for _ in 0..self.rng.random_range(1..4) {
                    match self.rng.random_range(0..3) {
                        0 if !b.is_empty() => {
                            let i = self.rng.random_range(0..b.len());
                            b[i] = self.rng.random();
                        }
                        1 if !b.is_empty() => {
                            let n = self.rng.random_range(0..b.len());
                            b.truncate(n);
                        }
                        _ => b.extend(
                            (0..self.rng.random_range(1..8)).map(|_| self.rng.random::<u8>()),
                        ),
                    }
                }
                b
            }
            _ => self.typed(kind, method),
        }
    }
}

#[derive(Default)]
struct Tally {
    requests: usize,
    codes: BTreeMap<String, usize>,
    accepted_writes: usize,
}

/// Entries of a client's model: the object its last accepted write left, or `None`
/// when that write deleted it.
type Model = BTreeMap<Key, Option<Obj>>;

async fn client(
    s_url: String,
    channel: tonic::transport::Channel,
    task: usize,
    seed: u64,
) -> (Model, Tally) {
    let _ = s_url;
    let mut raw = RawClient::new(channel);
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(task as u64)),
        hostility: 0.0,
        namespaces: if task == 0 {
            vec!["".into(), "default".into()]
        } else {
            vec![format!("fuzz-{task}")]
        },
        nodes: (1..=3).map(|i| format!("t{task}-n{i}")).collect(),
    };
    let mut model = Model::new();
    let mut t = Tally::default();
    for _ in 0..PER_TASK {
        let (kind, svc) = KINDS[g.rng.random_range(0..KINDS.len())];
        let methods = if kind == K::Pod { 8 } else { 7 };
        let method = METHODS[g.rng.random_range(0..methods)];
        let path = format!("/kubelite.v1.{svc}/{method}");
        let body = g.body(kind, method);
        let streaming = matches!(method, "Watch" | "Logs");
        let answer = if streaming {
            raw.open_stream(&path, body).await.map(|_| Vec::new())
        } else {
            raw.unary(&path, body).await
        };
        t.requests += 1;
        let code = match &answer {
            Ok(_) => Code::Ok,
            Err(st) => st.code(),
        };
        *t.codes.entry(format!("{code:?}")).or_default() += 1;
        if let Err(st) = &answer {
            let allowed = matches!(
                st.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::Aborted
                    | Code::ResourceExhausted
                    | Code::FailedPrecondition
                    | Code::OutOfRange
            ) || (method == "Logs" && st.code() == Code::Unavailable);
            assert!(allowed, "{path}: undefined answer {st:?}");
            assert!(
                st.message().len() <= MAX_MESSAGE,
                "{path}: message of {} bytes",
                st.message().len()
            );
        }
        let Ok(bytes) = answer else { continue };
        if !matches!(method, "Create" | "Update" | "UpdateStatus" | "Delete") {
            continue;
        }
        t.accepted_writes += 1;
        let obj = decode(kind, &bytes);
        let key = obj.key(kind);
        if method != "Delete" {
            model.insert(key, Some(obj));
            continue;
        }
        match &obj {
            // A graceful pod delete leaves it terminating (or its node's deletion
            // removes it later): kept with its deletion timestamp.
            Obj::Pod(p)
                if p.metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp != 0) =>
            {
                model.insert(key, Some(obj));
            }
            _ => {
                if kind == K::Service {
                    // Its Endpoints go with it (the endpoints controller).
                    model.insert((K::Endpoints, key.1.clone(), key.2.clone()), None);
                }
                model.insert(key, None);
            }
        }
    }
    (model, t)
}

fn strip_rv(m: &Option<ObjectMeta>) -> ObjectMeta {
    let mut m = m.clone().unwrap_or_default();
    m.resource_version = 0;
    m
}

#[tokio::test]
async fn thousands_of_hostile_messages_leave_the_server_answering_and_the_store_exact() {
    let seed: u64 = std::env::var("KL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    let s = TestApiServer::start().await;
    for task in 1..TASKS {
        s.create_namespace(&format!("fuzz-{task}")).await;
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        handles.push(tokio::spawn(client(s.url.clone(), s.channel(), task, seed)));
    }
    let mut model = Model::new();
    let mut total = Tally::default();
    for h in handles {
        let (m, t) = h.await.expect("client task");
        model.extend(m);
        total.requests += t.requests;
        total.accepted_writes += t.accepted_writes;
        for (c, n) in t.codes {
            *total.codes.entry(c).or_default() += n;
        }
    }
    eprintln!(
        "fuzz seed {seed}: {} requests in {:.1?}, {} accepted writes, answers {:?}",
        total.requests,
        started.elapsed(),
        total.accepted_writes,
        total.codes
    );
    assert!(total.requests >= 5000);
    assert!(
        total.accepted_writes >= 100,
        "too few accepted writes to compare"
    );

    // Still serving: health and a normal create.
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let h = HealthClient::new(s.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
    assert_eq!(h.into_inner().status(), ServingStatus::Serving);

    // The store holds what the accepted writes left, plus the controllers' own work.
    let all = ListRequest::default;
    let mut stored: BTreeMap<Key, Obj> = BTreeMap::new();
    for n in s.nodes().list(all()).await.unwrap().into_inner().items {
        let o = Obj::Node(n);
        stored.insert(o.key(K::Node), o);
    }
    for p in s.pods().list(all()).await.unwrap().into_inner().items {
        let o = Obj::Pod(p);
        stored.insert(o.key(K::Pod), o);
    }
    for v in s.services().list(all()).await.unwrap().into_inner().items {
        let o = Obj::Service(v);
        stored.insert(o.key(K::Service), o);
    }
    for e in s.endpoints().list(all()).await.unwrap().into_inner().items {
        let o = Obj::Endpoints(e);
        stored.insert(o.key(K::Endpoints), o);
    }
    let service_of = |ns: &str, name: &str| match stored.get(&(K::Service, ns.into(), name.into()))
    {
        Some(Obj::Service(s)) => Some(s.clone()),
        _ => None,
    };
    let mut compared = 0;
    for (key, want) in &model {
        let got = stored.get(key);
        match (want, got) {
            (None, None) => {}
            (None, Some(g)) => {
                // Only the endpoints controller makes objects no client wrote.
                assert!(
                    key.0 == K::Endpoints && service_of(&key.1, &key.2).is_some(),
                    "{key:?} deleted by an accepted write but stored: {g:?}"
                );
            }
            (Some(Obj::Pod(w)), None) => assert!(
                w.metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp != 0),
                "{key:?} written and never deleted, but gone"
            ),
            (Some(w), None) => panic!("{key:?} written and never deleted, but gone: {w:?}"),
            (Some(w), Some(g)) => {
                compared += 1;
                let same_rv = w.meta().resource_version == g.meta().resource_version;
                match (w, g) {
                    (Obj::Node(w), Obj::Node(g)) => assert_eq!(w, g, "{key:?}"),
                    (Obj::Service(w), Obj::Service(g)) => assert_eq!(w, g, "{key:?}"),
                    (Obj::Pod(w), Obj::Pod(g)) if same_rv => assert_eq!(w, g, "{key:?}"),
                    (Obj::Pod(w), Obj::Pod(g)) => {
                        // The scheduler and node health bind, unbind and set status.
                        assert_eq!(strip_rv(&w.metadata), strip_rv(&g.metadata), "{key:?}");
                        let (mut ws, mut gs) = (w.spec.clone(), g.spec.clone());
                        for s in [&mut ws, &mut gs].into_iter().flatten() {
                            s.node_name.clear();
                        }
                        assert_eq!(ws, gs, "{key:?} spec");
                    }
                    (Obj::Endpoints(w), Obj::Endpoints(g)) if same_rv => {
                        assert_eq!(w, g, "{key:?}")
                    }
                    (Obj::Endpoints(_), Obj::Endpoints(g)) => assert!(
                        service_of(&key.1, &key.2).is_some(),
                        "{key:?} changed with no service to own it: {g:?}"
                    ),
                    _ => unreachable!(),
                }
            }
        }
    }
    for (key, g) in &stored {
        if !model.contains_key(key) {
            assert!(
                key.0 == K::Endpoints && service_of(&key.1, &key.2).is_some(),
                "{key:?} stored but no accepted write made it: {g:?}"
            );
        }
    }
    eprintln!(
        "fuzz: {} model entries, {compared} compared with the stored objects, {} stored",
        model.len(),
        stored.len()
    );
    s.pods()
        .create(pod("after-the-storm", &[]))
        .await
        .expect("a normal create still works");
}
