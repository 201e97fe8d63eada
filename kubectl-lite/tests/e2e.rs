//! kubectl-lite end to end: the real binary against a real apiserver (the test kit's
//! in-process server on 127.0.0.1 with sled in a temp dir).

use kube_lite_proto::v1::{
    node_agent_server::{NodeAgent, NodeAgentServer},
    node_api_client::NodeApiClient,
    pod_api_client::PodApiClient,
    ContainerStatus, DeleteRequest, GetRequest, LogChunk, LogsRequest, Node, NodeCondition,
    NodeSpec, NodeStatus, ObjectMeta, PodStatus,
};
use kube_lite_tests::apiserver::{agent_server_tls, channel_for, TestApiServer};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-lite");

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit 0 and nothing on stderr.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        &self.stdout
    }

    /// Exit 1 with exactly one `error: ...` line on stderr; returns that line.
    fn err(&self) -> &str {
        assert_eq!(self.code, 1, "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one error line expected: {self:?}");
        assert!(lines[0].starts_with("error: "), "{self:?}");
        lines[0]
    }
}

fn command(server: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("KUBE_LITE_SERVER")
        .kill_on_drop(true);
    c
}

async fn kl(server: &str, args: &[&str]) -> Run {
    kl_stdin(server, args, "").await
}

async fn kl_stdin(server: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = command(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl-lite");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl-lite did not finish within 60 s")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The cells of the table row whose first column is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

/// `kl` whose stdout (exit 0) is one JSON value.
async fn kl_json(server: &str, args: &[&str]) -> Value {
    serde_json::from_str(kl(server, args).await.ok()).unwrap()
}

/// kubectl-lite started in the background with stdout and stderr piped.
fn spawn_piped(server: &str, args: &[&str]) -> Child {
    command(server, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The next line of a running command's output (20 s at most); None at its end.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a line within 20 s")
        .unwrap()
}

/// Get `name` in the default namespace.
fn get_default(name: &str) -> GetRequest {
    GetRequest {
        name: name.into(),
        namespace: "default".into(),
    }
}

/// Exit 0 and every `want` in the output.
fn assert_shows_all(run: &Run, wants: &[&str]) {
    for want in wants {
        assert!(
            run.ok().contains(want),
            "{want:?} missing in:\n{}",
            run.stdout
        );
    }
}

async fn add_ready_node(url: &str, name: &str, address: &str) {
    add_node(url, name, address, "").await
}

async fn add_node(url: &str, name: &str, address: &str, daemon_endpoint: &str) {
    let mut nodes = NodeApiClient::new(channel_for(url));
    let node = Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            address: address.into(),
            ..Default::default()
        }),
        status: None,
    };
    let mut node = nodes.create(node).await.unwrap().into_inner();
    node.status = Some(NodeStatus {
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        address: address.into(),
        daemon_endpoint: daemon_endpoint.into(),
        ..Default::default()
    });
    nodes.update_status(node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_create_get_in_every_format_describe_delete() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();

    let out = kl(
        s,
        &[
            "create", "pod", "web", "--image", "busybox", "-l", "app=web", "--port", "8080",
            "--env", "A=1", "--", "httpd", "-f",
        ],
    )
    .await;
    assert_eq!(out.ok(), "pod/web created\n");

    let table = kl(s, &["get", "pods"]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let r = row(table.ok(), "web");
    assert_eq!(&r[1..4], ["0/1", r[2], "0"]);
    assert!(["Pending", "Unschedulable"].contains(&r[2]), "{r:?}");

    let wide = kl(s, &["get", "po", "-o", "wide"]).await;
    let header: Vec<&str> = wide
        .ok()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header[5..], ["IP", "NODE"], "{wide:?}");
    assert_eq!(row(wide.ok(), "web")[5..], ["<none>", "<none>"]);

    let json = kl(s, &["get", "pod", "web", "-o", "json"]).await;
    let v: Value = serde_json::from_str(json.ok()).unwrap();
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["metadata"]["name"], "web");
    assert_eq!(v["metadata"]["namespace"], "default");
    assert_eq!(v["metadata"]["labels"]["app"], "web");
    assert!(v["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(v["spec"]["containers"][0]["name"], "web");
    assert_eq!(
        v["spec"]["containers"][0]["args"],
        serde_json::json!(["httpd", "-f"])
    );
    assert_eq!(
        v["spec"]["containers"][0]["env"][0],
        serde_json::json!({"name": "A", "value": "1"})
    );
    assert_eq!(
        v["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(v["spec"]["restartPolicy"], "Always");
    assert_eq!(v["status"]["phase"], "Pending");
    // Same object, same text: stable output.
    assert_eq!(
        kl(s, &["get", "pod", "web", "-o", "json"]).await.ok(),
        json.ok()
    );

    let list = kl_json(s, &["get", "pods", "-o", "json"]).await;
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["uid"], v["metadata"]["uid"]);

    let yaml = kl(s, &["get", "pods", "-o", "yaml"]).await;
    let y: Value = serde_saphyr::from_str(yaml.ok()).unwrap();
    assert_eq!(y["items"][0]["metadata"]["name"], "web");
    assert_eq!(y["items"][0]["spec"], v["spec"]);

    assert_eq!(
        kl(s, &["get", "pods", "-o", "name"]).await.ok(),
        "pod/web\n"
    );
    assert_eq!(
        kl(s, &["get", "pod/web", "-o", "name"]).await.ok(),
        "pod/web\n"
    );
    kl(s, &["create", "pod", "web2", "--image", "busybox"])
        .await
        .ok();
    let two = kl_json(s, &["get", "pods", "web", "web2", "-o", "json"]).await;
    assert_eq!(two["kind"], "List");
    assert_eq!(two["items"][1]["metadata"]["name"], "web2");
    assert_eq!(
        kl(s, &["delete", "pod/web2"]).await.ok(),
        "pod \"web2\" deleted\n"
    );
    assert_eq!(
        kl(s, &["describe", "pod"]).await.err(),
        "error: describe pod: a NAME is required"
    );
    assert_eq!(
        kl(s, &["get", "pods", "-l", "app=db", "-o", "name"])
            .await
            .ok(),
        ""
    );
    assert_eq!(
        kl(s, &["get", "pods", "-l", "app in (web,db)", "-o", "name"])
            .await
            .ok(),
        "pod/web\n"
    );
    let none = kl(s, &["get", "pods", "-n", "empty"]).await;
    assert_eq!(
        (none.code, none.stdout.as_str(), none.stderr.as_str()),
        (0, "", "No resources found in empty namespace.\n")
    );

    let d = kl(s, &["describe", "pod", "web"]).await;
    assert_shows_all(
        &d,
        &[
            "Name:",
            "web",
            "Namespace:",
            "default",
            "Labels:",
            "app=web",
            "Image:",
            "busybox",
            "8080/TCP",
            "Restart Count:",
            "httpd",
            "A:  1",
        ],
    );

    assert_eq!(
        kl(s, &["delete", "pod", "web"]).await.ok(),
        "pod \"web\" deleted\n"
    );
    assert_eq!(
        kl(s, &["get", "pod", "web"]).await.err(),
        "error: pods \"web\" not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_endpoints() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    let out = kl(
        s,
        &[
            "create",
            "service",
            "web",
            "--selector",
            "app=web",
            "--port",
            "80:8080",
            "--port",
            "53/udp",
            "--cluster-ip",
            "10.96.10.10",
        ],
    )
    .await;
    assert_eq!(out.ok(), "service/web created\n");
    assert_eq!(
        kl(
            s,
            &[
                "create",
                "svc",
                "auto",
                "--selector",
                "app=x",
                "--port",
                "3001"
            ]
        )
        .await
        .ok(),
        "service/auto created\n"
    );

    let t = kl(s, &["get", "svc", "-o", "wide"]).await;
    assert_eq!(
        row(t.ok(), "web")[1..5],
        ["ClusterIP", "10.96.10.10", "<none>", "80/TCP,53/UDP"]
    );
    assert_eq!(row(t.ok(), "web").last(), Some(&"app=web"));
    let auto = row(t.ok(), "auto");
    assert!(auto[2].parse::<std::net::Ipv4Addr>().is_ok(), "{auto:?}");
    assert_eq!(auto[4], "3001/TCP");

    let v = kl_json(s, &["get", "service", "web", "-o", "json"]).await;
    assert_eq!(v["kind"], "Service");
    assert_eq!(v["spec"]["clusterIP"], "10.96.10.10");
    assert_eq!(v["spec"]["type"], "ClusterIP");
    assert_eq!(
        v["spec"]["ports"][0],
        serde_json::json!({"name": "80-tcp", "protocol": "TCP", "port": 80, "targetPort": 8080})
    );
    assert_eq!(v["spec"]["ports"][1]["name"], "53-udp");

    // The Endpoints object the apiserver keeps for the service (no pods yet; made by
    // the endpoints controller, asynchronously).
    let ep = kube_lite_tests::fixtures::eventually(
        "endpoints of web",
        Duration::from_secs(10),
        || async {
            let ep = kl(s, &["get", "endpoints"]).await;
            ep.ok().contains("web").then_some(ep)
        },
    )
    .await;
    assert_eq!(row(ep.ok(), "web")[1], "<none>");
    let d = kl(s, &["describe", "svc", "web"]).await;
    assert_shows_all(
        &d,
        &[
            "Selector:",
            "app=web",
            "IP:",
            "10.96.10.10",
            "80-tcp  80/TCP",
            "8080/TCP",
            "Endpoints:",
        ],
    );
    assert!(kl(s, &["describe", "ep", "web"])
        .await
        .ok()
        .contains("Name:"));

    // A Running pod with an IP (its status written as a node agent would) becomes an
    // endpoint of the service.
    add_ready_node(s, "node-1", "192.168.1.10").await;
    kl(
        s,
        &[
            "create", "pod", "web-1", "--image", "busybox", "-l", "app=web", "--node", "node-1",
        ],
    )
    .await
    .ok();
    let mut pods = PodApiClient::new(channel_for(s));
    let mut p = pods.get(get_default("web-1")).await.unwrap().into_inner();
    p.status = Some(PodStatus {
        phase: "Running".into(),
        pod_ip: "10.0.1.5".into(),
        host_ip: "192.168.1.10".into(),
        container_statuses: vec![ContainerStatus {
            name: "web-1".into(),
            state: "Running".into(),
            ready: true,
            restart_count: 1,
            ..Default::default()
        }],
        ..Default::default()
    });
    pods.update_status(p).await.unwrap();
    let pod_row = kl(s, &["get", "pods", "-o", "wide"]).await;
    assert_eq!(
        row(pod_row.ok(), "web-1")[1..],
        [
            "1/1",
            "Running",
            "1",
            row(pod_row.ok(), "web-1")[4],
            "10.0.1.5",
            "node-1"
        ]
    );
    let mut endpoints = String::new();
    for _ in 0..100 {
        endpoints = row(kl(s, &["get", "ep", "web"]).await.ok(), "web")[1].to_string();
        if endpoints != "<none>" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(endpoints, "10.0.1.5:8080,10.0.1.5:53");
    assert!(kl(s, &["describe", "svc", "web"])
        .await
        .ok()
        .contains("10.0.1.5:8080,10.0.1.5:53"));
    let ep = kl_json(s, &["get", "ep", "web", "-o", "json"]).await;
    assert_eq!(
        ep["subsets"][0]["addresses"][0],
        serde_json::json!({"ip": "10.0.1.5", "nodeName": "node-1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"}})
    );
    assert!(kl(s, &["describe", "node", "node-1"])
        .await
        .ok()
        .contains("web-1"));

    let dup = kl(
        s,
        &[
            "create",
            "service",
            "x",
            "--selector",
            "a=b",
            "--port",
            "80",
            "--cluster-ip",
            "10.96.10.10",
        ],
    )
    .await;
    assert!(dup.err().contains("10.96.10.10"), "{dup:?}");

    assert_eq!(
        kl(s, &["delete", "svc", "web", "auto"]).await.ok(),
        "service \"web\" deleted\nservice \"auto\" deleted\n"
    );
    kube_lite_tests::fixtures::eventually(
        "endpoints of web gone",
        Duration::from_secs(10),
        || async {
            let o = kl(s, &["get", "ep", "web"]).await;
            (o.code == 1 && o.err() == "error: endpoints \"web\" not found").then_some(())
        },
    )
    .await;
}

const MANIFEST: &str = r#"# A plain Kubernetes manifest, as written for a real cluster.
apiVersion: v1
kind: Pod
metadata:
  name: whoami
  labels:
    app: whoami
spec:
  containers:
  - name: whoami
    image: kl-whoami
    imagePullPolicy: IfNotPresent
    args: ["--port", "8080"]
    env:
    - name: MESSAGE
      value: hello
    ports:
    - name: http
      containerPort: 8080
      protocol: TCP
  restartPolicy: Always
---
apiVersion: v1
kind: Service
metadata:
  name: whoami
spec:
  type: ClusterIP
  selector:
    app: whoami
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: "8080"
  - name: metrics
    port: 9090
    targetPort: 9090
"#;

/// kubectl's service forms: `create service clusterip|nodeport|loadbalancer`, `expose`,
/// and the table's EXTERNAL-IP and PORT(S) columns, with the apiserver's LoadBalancer
/// status (ingress = the Ready nodes' addresses, a port clash in the condition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_types_expose_and_load_balancer_status() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    add_ready_node(s, "n0", "192.168.50.2").await;
    add_ready_node(s, "n1", "192.168.50.3").await;
    let create = |args: &'static [&'static str]| {
        let mut v = vec!["create", "service"];
        v.extend(args);
        v
    };
    for (args, name) in [
        (
            create(&["nodeport", "np", "--tcp=80:8080", "--node-port", "30080"]),
            "np",
        ),
        (create(&["loadbalancer", "lb", "--tcp=8081:8080"]), "lb"),
        (create(&["loadbalancer", "lb2", "--tcp", "8081"]), "lb2"),
        (create(&["clusterip", "hl", "--clusterip", "None"]), "hl"),
        (
            create(&["clusterip", "c", "--tcp", "80:8080,443:8443"]),
            "c",
        ),
    ] {
        assert_eq!(kl(s, &args).await.ok(), format!("service/{name} created\n"));
    }
    let t = kl(s, &["get", "svc"]).await;
    let t = t.ok();
    assert!(
        t.starts_with("NAME ")
            && t.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                == [
                    "NAME",
                    "TYPE",
                    "CLUSTER-IP",
                    "EXTERNAL-IP",
                    "PORT(S)",
                    "AGE"
                ],
        "{t}"
    );
    assert_eq!(row(t, "np")[1], "NodePort");
    assert_eq!(row(t, "np")[3..5], ["<none>", "80:30080/TCP"]);
    let lb = row(t, "lb");
    assert_eq!(lb[1], "LoadBalancer");
    assert_eq!(lb[3], "192.168.50.2,192.168.50.3");
    let (port, node_port) = lb[4].trim_end_matches("/TCP").split_once(':').unwrap();
    assert_eq!(port, "8081");
    assert!(node_port.parse::<u16>().unwrap() >= 30000, "{lb:?}");
    // The younger LoadBalancer on the same port: pending, and why.
    assert_eq!(row(t, "lb2")[3], "<pending>");
    let v = kl_json(s, &["get", "svc", "lb2", "-o", "json"]).await;
    let c = &v["status"]["conditions"][0];
    assert_eq!(c["type"], "LoadBalancerPortsAllocated");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("PortInUse"))
    );
    assert_eq!(
        c["message"],
        "port 8081/TCP on 192.168.50.2,192.168.50.3 is already used by service default/lb"
    );
    let v = kl_json(s, &["get", "svc", "lb", "-o", "json"]).await;
    assert_eq!(
        v["status"]["loadBalancer"]["ingress"],
        serde_json::json!([{"ip": "192.168.50.2"}, {"ip": "192.168.50.3"}])
    );
    assert_eq!(v["spec"]["selector"]["app"], "lb");
    assert_eq!(v["spec"]["ports"][0]["name"], "8081-8080");
    assert_eq!(row(t, "hl")[2..5], ["None", "<none>", "<none>"]);
    assert_eq!(row(t, "c")[4], "80/TCP,443/TCP");
    // lb gone: lb2 gets the addresses.
    kl(s, &["delete", "svc", "lb"]).await.ok();
    let t = kl(s, &["get", "svc", "lb2"]).await;
    assert_eq!(row(t.ok(), "lb2")[3], "192.168.50.2,192.168.50.3");

    // expose: a pod (its labels), a deployment (its selector, its template's ports), a
    // service (its selector and ports).
    kl(
        s,
        &[
            "create",
            "pod",
            "web",
            "--image",
            "busybox",
            "-l",
            "app=web,tier=f",
            "--port",
            "8080",
        ],
    )
    .await
    .ok();
    let out = kl(
        s,
        &[
            "expose",
            "pod",
            "web",
            "--port",
            "80",
            "--target-port",
            "8080",
            "--type",
            "NodePort",
            "--name",
            "web-np",
        ],
    )
    .await;
    assert_eq!(out.ok(), "service/web-np exposed\n");
    let v = kl_json(s, &["get", "svc", "web-np", "-o", "json"]).await;
    assert_eq!(v["spec"]["type"], "NodePort");
    assert_eq!(
        v["spec"]["selector"],
        serde_json::json!({"app": "web", "tier": "f"})
    );
    assert_eq!(v["spec"]["ports"][0]["port"], 80);
    assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
    assert!(v["spec"]["ports"][0]["nodePort"].as_i64().unwrap() >= 30000);
    kl(
        s,
        &[
            "create",
            "deployment",
            "d",
            "--image",
            "busybox",
            "--port",
            "9090",
        ],
    )
    .await
    .ok();
    assert_eq!(
        kl(
            s,
            &[
                "expose",
                "deployment/d",
                "--type",
                "LoadBalancer",
                "--port",
                "9091"
            ]
        )
        .await
        .ok(),
        "service/d exposed\n"
    );
    let t = kl(s, &["get", "svc", "d"]).await;
    assert_eq!(row(t.ok(), "d")[1], "LoadBalancer");
    assert_eq!(row(t.ok(), "d")[3], "192.168.50.2,192.168.50.3");
    let v = kl_json(s, &["get", "svc", "d", "-o", "json"]).await;
    assert_eq!(v["spec"]["ports"][0]["targetPort"], 9091);
    assert_eq!(
        kl(s, &["expose", "svc", "np", "--name", "np2"]).await.ok(),
        "service/np2 exposed\n"
    );
    let v = kl_json(s, &["get", "svc", "np2", "-o", "json"]).await;
    assert_eq!(v["spec"]["type"], "ClusterIP");
    assert_eq!(v["spec"]["ports"][0]["port"], 80);
    assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(v["spec"]["selector"]["app"], "np");
    // Errors: one line, exit 1.
    let e = kl(s, &["expose", "node", "n0"]).await;
    assert!(e.err().contains("cannot expose"), "{e:?}");
    let e = kl(s, &["expose", "pod", "nope", "--port", "80"]).await;
    assert!(e.err().contains("nope"), "{e:?}");
    let e = kl(
        s,
        &[
            "create",
            "service",
            "nodeport",
            "x",
            "--tcp",
            "80",
            "--node-port",
            "30080",
        ],
    )
    .await;
    assert!(e.err().contains("30080"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_a_kubernetes_manifest() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whoami.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let f = file.to_str().unwrap();

    let out = kl(s, &["apply", "-f", f]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // Dependency order: the Service before the pod it selects.
    assert_eq!(out.stdout, "service/whoami created\npod/whoami created\n");
    assert_eq!(out.stderr, "");
    let svc = kl_json(s, &["get", "svc", "whoami", "-o", "json"]).await;
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["ports"][1]["targetPort"], 9090);
    let pod = kl_json(s, &["get", "pod", "whoami", "-o", "json"]).await;
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["name"], "http");

    // Again: nothing to do.
    let again = kl(s, &["apply", "-f", f]).await;
    assert_eq!(
        again.stdout,
        "service/whoami unchanged\npod/whoami unchanged\n"
    );

    // Labels may change on a pod, and anything but the ClusterIP on a service; from stdin.
    let changed = MANIFEST
        .replace(
            "    app: whoami\nspec:\n  containers",
            "    app: whoami\n    tier: web\nspec:\n  containers",
        )
        .replace("port: 9090\n", "port: 9191\n");
    let out = kl_stdin(s, &["apply", "-f", "-"], &changed).await;
    assert_eq!(
        out.stdout, "service/whoami configured\npod/whoami configured\n",
        "{out:?}"
    );
    assert_eq!(
        kl(s, &["get", "po", "-l", "tier=web", "-o", "name"])
            .await
            .ok(),
        "pod/whoami\n"
    );
    assert!(kl(s, &["get", "svc", "whoami"])
        .await
        .ok()
        .contains("80/TCP,9191/TCP"));

    // A pod's spec is immutable.
    let image = changed.replace("image: kl-whoami", "image: kl-whoami:v2");
    let out = kl_stdin(s, &["apply", "-f", "-"], &image).await;
    assert_eq!(out.stdout, "service/whoami unchanged\n");
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(
        lines[0].starts_with("error: pod/whoami: spec is immutable"),
        "{out:?}"
    );

    // `get -o yaml` output applies back unchanged.
    let yaml = kl(s, &["get", "svc", "whoami", "-o", "yaml"]).await;
    let out = kl_stdin(s, &["apply", "-f", "-"], yaml.ok()).await;
    assert_eq!(out.stdout, "service/whoami unchanged\n", "{out:?}");

    // Unsupported fields: named by path, nothing applied.
    let bad = MANIFEST
        .replace("whoami", "other")
        .replace(
            "    imagePullPolicy: IfNotPresent\n",
            "    imagePullPolicy: IfNotPresent\n    volumeDevices:\n    - {name: d, devicePath: /dev/xvda}\n",
        )
        .replace("type: ClusterIP", "type: ExternalName");
    let out = kl_stdin(s, &["apply", "-f", "-"], &bad).await;
    assert_eq!(
        out.err(),
        "error: <stdin>: document 1 (Pod \"other\"): spec.containers[0].volumeDevices: not supported by kube-lite; \
         <stdin>: document 2 (Service \"other\"): spec.type: \"ExternalName\" is not supported (ClusterIP, NodePort, LoadBalancer)"
    );
    assert_eq!(out.stdout, "");
    assert_eq!(
        kl(s, &["get", "pods", "-o", "name"]).await.ok(),
        "pod/whoami\n"
    );

    let named = MANIFEST.replace("targetPort: \"8080\"", "targetPort: http");
    // Named target ports are supported since issue 12.
    let out = kl_stdin(s, &["apply", "-f", "-"], &named).await;
    // Named target ports are supported since the Services merge.
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_exit_code_1() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    assert_eq!(
        kl(s, &["get", "pod", "nope"]).await.err(),
        "error: pods \"nope\" not found"
    );
    assert_eq!(
        kl(s, &["describe", "svc", "nope"]).await.err(),
        "error: services \"nope\" not found"
    );
    assert_eq!(
        kl(s, &["delete", "node", "nope"]).await.err(),
        "error: nodes \"nope\" not found"
    );

    kl(s, &["create", "pod", "a", "--image", "busybox"])
        .await
        .ok();
    let dup = kl(s, &["create", "pod", "a", "--image", "busybox"]).await;
    let line = dup.err();
    assert!(line.starts_with("error: create pod/a: "), "{line}");
    assert!(line.ends_with("(AlreadyExists)"), "{line}");

    let bad = kl(s, &["create", "pod", "Bad_Name", "--image", "busybox"]).await;
    assert!(bad.err().contains("metadata.name"), "{bad:?}");
    assert!(bad.err().ends_with("(InvalidArgument)"), "{bad:?}");
    let bad = kl(
        s,
        &[
            "create",
            "pod",
            "r",
            "--image",
            "busybox",
            "--restart",
            "Sometimes",
        ],
    )
    .await;
    assert!(
        bad.err().contains("restart_policy") || bad.err().contains("restartPolicy"),
        "{bad:?}"
    );
    let bad = kl(s, &["get", "pods", "-l", "a in b"]).await;
    assert!(bad.err().contains("label_selector"), "{bad:?}");

    // Problems found before talking to the server.
    assert_eq!(
        kl(s, &["get", "ingresses"]).await.err(),
        "error: the server doesn't have a resource type \"ingresses\" (known: pods, services, nodes, endpoints, namespaces, configmaps, secrets, events, replicasets, deployments)"
    );
    assert!(kl(
        s,
        &[
            "create",
            "svc",
            "x",
            "--selector",
            "a=b",
            "--port",
            "80:http"
        ]
    )
    .await
    .err()
    .starts_with("error: --port \"80:http\""));
    assert!(kl(s, &["get"]).await.err().contains("<RESOURCE>"));

    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    let line = kl(&url, &["get", "pods"]).await;
    let line = line.err();
    assert!(
        line.starts_with(&format!("error: cannot reach the apiserver at {url}: ")),
        "{line}"
    );
    assert!(
        line.ends_with("(set --server, KUBE_LITE_SERVER or the kubeconfig's server)"),
        "{line}"
    );

    // KUBE_LITE_SERVER is used when --server is absent.
    let out = Command::new(BIN)
        .args(["get", "pods", "-o", "name"])
        .env("KUBE_LITE_SERVER", s)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/a\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_unbound_pod_fail_clearly() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    kl(s, &["create", "pod", "lonely", "--image", "busybox"])
        .await
        .ok();
    let out = kl(s, &["logs", "lonely"]).await;
    assert!(out.err().starts_with("error: logs pod/lonely: "), "{out:?}");
    assert!(out.err().ends_with("(FailedPrecondition)"), "{out:?}");
    assert_eq!(
        kl(s, &["logs", "ghost"]).await.err(),
        "error: pods \"ghost\" not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_namespaces_and_graceful_delete() {
    let srv = TestApiServer::start().await;
    srv.create_namespace("dev").await;
    let s = srv.url.as_str();
    add_ready_node(s, "node-1", "192.168.1.10").await;
    let t = kl(s, &["get", "nodes"]).await;
    let r = row(t.ok(), "node-1");
    assert_eq!(r[1..4], ["Ready", "10.0.1.0/24", "192.168.1.10"]);
    let d = kl(s, &["describe", "node", "node-1"]).await;
    assert!(
        d.ok().contains("PodCIDR:") && d.ok().contains("10.0.1.0/24"),
        "{d:?}"
    );
    let v = kl_json(s, &["get", "node", "node-1", "-o", "json"]).await;
    assert_eq!(v["kind"], "Node");
    assert!(v["metadata"].get("namespace").is_none());
    assert_eq!(v["spec"]["podCIDR"], "10.0.1.0/24");

    kl(
        s,
        &[
            "create", "pod", "p1", "--image", "busybox", "--node", "node-1",
        ],
    )
    .await
    .ok();
    kl(
        s,
        &["-n", "dev", "create", "pod", "p2", "--image", "busybox"],
    )
    .await
    .ok();
    let all = kl(s, &["get", "pods", "-A"]).await;
    assert_eq!(
        all.ok().lines().next().unwrap().split_whitespace().next(),
        Some("NAMESPACE")
    );
    assert_eq!(row(all.ok(), "default")[1], "p1");
    assert_eq!(row(all.ok(), "dev")[1], "p2");
    assert_eq!(kl(s, &["get", "pods", "-o", "name"]).await.ok(), "pod/p1\n");
    assert_eq!(
        kl(s, &["get", "pods", "-n", "dev", "-o", "name"])
            .await
            .ok(),
        "pod/p2\n"
    );

    // A bound pod is deleted gracefully: Terminating until its node confirms.
    assert_eq!(
        kl(s, &["delete", "pod", "p1", "--wait=false"]).await.ok(),
        "pod \"p1\" deleted\n"
    );
    assert_eq!(
        row(kl(s, &["get", "pods"]).await.ok(), "p1")[2],
        "Terminating"
    );
    assert!(kl(s, &["describe", "pod", "p1"])
        .await
        .ok()
        .contains("Terminating"));

    let out = kl(s, &["delete", "pod", "p1", "--timeout", "1"]).await;
    assert_eq!(out.stdout, "pod \"p1\" deleted\n");
    assert!(
        out.err()
            .starts_with("error: timed out after 1s waiting for pod \"p1\" to be deleted"),
        "{out:?}"
    );

    // `delete` waits (by watching) until the node agent removes it.
    let waiter = spawn_piped(s, &["delete", "pod", "p1"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pods = PodApiClient::new(channel_for(s));
    assert!(pods.get(get_default("p1")).await.is_ok());
    pods.delete(DeleteRequest {
        name: "p1".into(),
        namespace: "default".into(),
        resource_version: 0,
        grace_period_seconds: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), waiter.wait_with_output())
        .await
        .expect("delete --wait returns")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod \"p1\" deleted\n");

    // --force removes at once.
    kl(
        s,
        &[
            "create", "pod", "p3", "--image", "busybox", "--node", "node-1",
        ],
    )
    .await
    .ok();
    let out = kl(s, &["delete", "pod", "p3", "--force"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "pod \"p3\" deleted\n"));
    assert!(kl(s, &["get", "pod", "p3"])
        .await
        .err()
        .contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_a_row_per_change() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    kl(s, &["create", "pod", "first", "--image", "busybox"])
        .await
        .ok();
    let mut watch = spawn_piped(s, &["get", "pods", "-w"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || next_line(&mut lines).await.unwrap();
    assert!(next().await.starts_with("NAME"));
    assert!(next().await.starts_with("first "));
    kl(
        s,
        &[
            "create", "pod", "second", "--image", "busybox", "-l", "app=x",
        ],
    )
    .await
    .ok();
    // ADDED (and maybe MODIFIED by the scheduler) rows for the new pod.
    let line = next().await;
    assert!(line.starts_with("second "), "{line}");
    kl(s, &["delete", "pod", "first"]).await.ok();
    loop {
        let line = next().await;
        if line.starts_with("first ") {
            break;
        }
        assert!(line.starts_with("second "), "{line}");
    }
    let pid = watch.id().expect("running");
    watch.start_kill().unwrap();
    let status = watch.wait().await.unwrap();
    assert!(!status.success(), "watch {pid} ends only when killed");

    // The reader goes away (`| head -1`): a quiet exit, no panic.
    let mut watch = spawn_piped(s, &["get", "pods", "-w"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(lines
        .next_line()
        .await
        .unwrap()
        .unwrap()
        .starts_with("NAME"));
    drop(lines);
    kl(s, &["create", "pod", "fourth", "--image", "busybox"])
        .await
        .ok();
    let out = tokio::time::timeout(Duration::from_secs(20), watch.wait_with_output())
        .await
        .expect("exits once its output is closed")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // -o json -w: one JSON object per change.
    let mut watch = command(s, &["get", "pods", "-l", "app=x", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(watch.stdout.take().unwrap());
    kl(
        s,
        &[
            "create", "pod", "third", "--image", "busybox", "-l", "app=x",
        ],
    )
    .await
    .ok();
    let mut text = String::new();
    let mut names = Vec::new();
    while !names.contains(&"third".to_string()) {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), reader.read_line(&mut line))
            .await
            .expect("output")
            .unwrap();
        text.push_str(&line);
        if line == "}\n" {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["kind"], "Pod", "one object per change: {v}");
            names.push(v["metadata"]["name"].as_str().unwrap().to_string());
            text.clear();
        }
    }
    assert_eq!(names[0], "second");
    watch.start_kill().unwrap();
    watch.wait().await.unwrap();
}

/// Stands in for a node agent's log service (the agent is not under test here): answers
/// with the request it got, then two lines.
struct EchoAgent;

#[tonic::async_trait]
impl NodeAgent for EchoAgent {
    async fn load_image(
        &self,
        req: tonic::Request<tonic::Streaming<kube_lite_proto::v1::ImageChunk>>,
    ) -> Result<tonic::Response<kube_lite_proto::v1::LoadImageResponse>, tonic::Status> {
        // Echoes what arrived: the file name, the byte count and the chunks' node fields
        // (the apiserver clears them before passing the stream on).
        let mut s = req.into_inner();
        let (mut name, mut bytes, mut nodes) = (String::new(), 0usize, String::new());
        while let Some(c) = s.message().await? {
            if name.is_empty() {
                name = c.file_name.clone();
            }
            bytes += c.data.len();
            nodes.push_str(&c.node);
        }
        Ok(tonic::Response::new(
            kube_lite_proto::v1::LoadImageResponse {
                node: "node-1".into(),
                names: vec![format!("{name} {bytes} bytes node={nodes:?}")],
            },
        ))
    }
    type LogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogChunk, tonic::Status>> + Send>>;

    async fn logs(
        &self,
        req: tonic::Request<LogsRequest>,
    ) -> Result<tonic::Response<Self::LogsStream>, tonic::Status> {
        let r = req.into_inner();
        let head = format!(
            "pod={}/{} container={:?} tail={} follow={} previous={}\n",
            r.namespace, r.name, r.container, r.tail_lines, r.follow, r.previous
        );
        let chunks = vec![
            Ok(LogChunk {
                data: head.into_bytes(),
            }),
            Ok(LogChunk {
                data: b"line 1\nline 2\n".to_vec(),
            }),
        ];
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(
            chunks,
        ))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stream_through_the_apiserver_from_the_node() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Secure mode: the stand-in serves TLS with node-1's certificate and requires a
    // client certificate from the cluster CA, as the real agent does.
    let agent = format!("https://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(agent_server_tls("node-1"))
            .unwrap()
            .add_service(NodeAgentServer::new(EchoAgent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    add_node(s, "node-1", "192.168.1.10", &agent).await;
    kl(
        s,
        &[
            "create", "pod", "web", "--image", "busybox", "--node", "node-1",
        ],
    )
    .await
    .ok();

    let out = kl(s, &["logs", "web"]).await;
    assert_eq!(
        out.ok(),
        "pod=default/web container=\"\" tail=-1 follow=false previous=false\nline 1\nline 2\n"
    );
    let out = kl(s, &["logs", "web", "-c", "web", "--tail", "5", "-p", "-f"]).await;
    assert_eq!(
        out.ok(),
        "pod=default/web container=\"web\" tail=5 follow=true previous=true\nline 1\nline 2\n"
    );

    // image load: through the apiserver (NodeApi.LoadImage) to the node's agent, in
    // chunks (2.5 MiB: three of them), one line per node.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    std::fs::write(&tar, vec![7u8; 5 << 19]).unwrap();
    let f = tar.to_str().unwrap();
    let out = kl(s, &["image", "load", f]).await;
    assert_eq!(out.ok(), "node-1: loaded img.tar 2621440 bytes node=\"\"\n");
    let out = kl(s, &["image", "load", f, "--node", "nope"]).await;
    assert_eq!(out.err(), "error: image load: node \"nope\" not found");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_relists_when_its_resume_point_is_gone() {
    // A 5-revision change log: `get pod x -w` resumes from x's (old) resource version,
    // gets the "too old resource version; relist" status, relists and keeps watching.
    let srv = TestApiServer::start_with(apiserver::Config {
        watch_window: 5,
        ..Default::default()
    })
    .await;
    let s = srv.url.as_str();
    kl(
        s,
        &["create", "pod", "x", "--image", "busybox", "-l", "gen=1"],
    )
    .await
    .ok();
    let mut pods = PodApiClient::new(channel_for(s));
    for i in 0..20 {
        let mut p = pods.get(get_default("x")).await.unwrap().into_inner();
        p.metadata.as_mut().unwrap().name = format!("filler-{i}");
        p.metadata.as_mut().unwrap().resource_version = 0;
        pods.create(p).await.unwrap();
    }
    let mut watch = spawn_piped(s, &["get", "pod", "x", "-w", "-o", "name"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || next_line(&mut lines).await;
    assert_eq!(next().await.as_deref(), Some("pod/x"));
    // Give the watcher time to hit the relist path, then change x.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watch must survive the relist"
    );
    let mut p = pods.get(get_default("x")).await.unwrap().into_inner();
    p.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("gen".into(), "2".into());
    pods.update(p).await.unwrap();
    assert_eq!(next().await.as_deref(), Some("pod/x"));
    watch.start_kill().unwrap();
    watch.wait().await.unwrap();
}

/// Annotation values may hold NUL, newlines and escape sequences (the API accepts any
/// string there, as Kubernetes does); describe and get print them escaped, so they cannot
/// add lines or reach the terminal as control sequences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_user_values_are_escaped_on_output() {
    let srv = TestApiServer::start().await;
    let s = srv.url.as_str();
    let mut pods = srv.pods();
    let hostile = "x\nName:         injected\u{1b}]0;pwned\u{7}\0end";
    let mut pod = kube_lite_tests::fixtures::pod("evil", &[]);
    pod.metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert("note".into(), hostile.into());
    pods.create(pod)
        .await
        .expect("create pod with a hostile annotation");

    let d = kl(s, &["describe", "pod", "evil"]).await;
    let text = d.ok();
    assert!(!text.contains('\u{1b}') && !text.contains('\0') && !text.contains('\u{7}'));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Name:")).count(),
        1,
        "an annotation added a line: {text}"
    );
    assert!(
        text.contains(r"note=x\nName:         injected\x1b]0;pwned\x07\x00end"),
        "{text}"
    );
    // The stored value itself is kept exactly (JSON escapes it).
    let v = kl_json(s, &["get", "pod", "evil", "-o", "json"]).await;
    assert_eq!(v["metadata"]["annotations"]["note"], hostile);
    let table = kl(s, &["get", "pods", "-o", "wide"]).await;
    assert!(!table.ok().contains('\u{1b}'));
}
