//! The REST face with the real tools: the official kubectl (v1.37) and the official
//! Python client against a real apiserver on loopback (same port as gRPC). The venv
//! comes from `kube_lite_tests::k8s_tools` (made once under target/, then offline).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::k8s_tools::{k8s_venv, write_kubeconfig};
use serde_json::Value;

struct Kubectl {
    bin: PathBuf,
    python: PathBuf,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(server: &TestApiServer) -> Option<Kubectl> {
        let venv = k8s_venv()?;
        let dir = tempfile::Builder::new()
            .prefix("kl-rest-")
            .tempdir()
            .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        if server.url.starts_with("https://") {
            // The kit's admin kubeconfig (CA + client certificate, issue 14), pointed at
            // this server: kubectl over TLS with the same credentials as gRPC.
            let text = std::fs::read_to_string(&kube_lite_tests::apiserver::test_pki().kubeconfig)
                .unwrap()
                .replace("https://127.0.0.1:6443", &server.url);
            std::fs::write(&kubeconfig, text).unwrap();
        } else {
            write_kubeconfig(&kubeconfig, &server.url);
        }
        Some(Kubectl {
            bin: venv.join("bin/kubectl"),
            python: venv.join("bin/python"),
            kubeconfig,
            dir,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // kubectl's discovery/OpenAPI cache stays in this test's directory.
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running kubectl")
    }

    /// stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {}\n{out}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl -o json")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: whoami
    ports: [{containerPort: 8080, name: http}]
";

const SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_discovery_openapi_and_health() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let v = k.ok(&["version"]);
    assert!(v.contains("Server Version: v1.37.0+kube-lite"), "{v}");
    let r = k.ok(&["api-resources"]);
    for want in [
        "pods",
        "po",
        "services",
        "svc",
        "endpoints",
        "nodes",
        "Pod",
        "Node",
    ] {
        assert!(r.contains(want), "api-resources lacks {want}:\n{r}");
    }
    let e = k.ok(&["explain", "pods.spec"]);
    assert!(e.contains("containers") && e.contains("nodeName"), "{e}");
    let e = k.ok(&["explain", "pods.spec.containers.ports"]);
    assert!(e.contains("containerPort"), "{e}");
    for p in ["/healthz", "/readyz", "/livez"] {
        assert_eq!(k.ok(&["get", "--raw", p]), "ok");
    }
    // gRPC still answers on the same port.
    let mut pods = server.pods();
    let list = pods
        .list(kube_lite_proto::v1::ListRequest::default())
        .await
        .unwrap();
    assert!(list.into_inner().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_apply_patch_delete() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let pod = k.file("pod.yaml", POD);
    let svc = k.file("svc.yaml", SVC);
    assert_eq!(k.ok(&["create", "-f", &pod]).trim(), "pod/web created");
    let dup = k.fails(&["create", "-f", &pod]);
    assert!(dup.contains("(AlreadyExists)"), "{dup}");

    // get in every output format.
    let t = k.ok(&["get", "pods"]);
    let head: Vec<&str> = t.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{t}");
    assert!(t.lines().nth(1).unwrap().starts_with("web "), "{t}");
    let w = k.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        w.lines().next().unwrap().contains("IP") && w.contains("NODE"),
        "{w}"
    );
    let j = k.json(&["get", "pod", "web"]);
    assert_eq!(j["kind"], "Pod");
    assert_eq!(j["apiVersion"], "v1");
    assert_eq!(
        j["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert!(j["metadata"]["resourceVersion"].is_string());
    let y = k.ok(&["get", "pod", "web", "-o", "yaml"]);
    assert!(
        y.contains("apiVersion: v1") && y.contains("kind: Pod"),
        "{y}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "whoami"
    );
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]).trim(), "pod/web");
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]).trim(),
        "pod/web"
    );
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=nope", "-o", "name"])
            .trim(),
        ""
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "--field-selector",
            "metadata.name=web",
            "-o",
            "name"
        ])
        .trim(),
        "pod/web"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name"
        ])
        .trim(),
        ""
    );
    let bad = k.fails(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(bad.contains("spec.bogus"), "{bad}");
    let d = k.ok(&["describe", "pod", "web"]);
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("whoami"),
        "{d}"
    );
    let nf = k.fails(&["get", "pod", "nope"]);
    assert!(nf.contains("(NotFound)"), "{nf}");

    // apply: created, unchanged, configured after an edit, unchanged again.
    assert_eq!(k.ok(&["apply", "-f", &svc]).trim(), "service/web created");
    assert_eq!(k.ok(&["apply", "-f", &svc]).trim(), "service/web unchanged");
    let edited = k.file(
        "svc2.yaml",
        &SVC.replace("labels: {app: web}", "labels: {app: web, tier: front}"),
    );
    assert_eq!(
        k.ok(&["apply", "-f", &edited]).trim(),
        "service/web configured"
    );
    assert_eq!(
        k.ok(&["apply", "-f", &edited]).trim(),
        "service/web unchanged"
    );
    let j = k.json(&["get", "svc", "web"]);
    assert_eq!(j["metadata"]["labels"]["tier"], "front");
    assert!(j["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .starts_with("10.96."));
    // The Kubernetes JSON round-trips: what get returns, put back (replace), is the
    // same object (no write: same resourceVersion); applied, the second time changes
    // nothing (the first records it as the last applied configuration).
    let live_text = k.ok(&["get", "svc", "web", "-o", "json"]);
    let live = k.file("live.json", &live_text);
    let before: Value = serde_json::from_str(&live_text).unwrap();
    k.ok(&["replace", "-f", &live]);
    let after = k.json(&["get", "svc", "web"]);
    // (kubectl replace rewrites its last-applied annotation; the object is the same.)
    for part in ["spec", "status"] {
        assert_eq!(after[part], before[part], "replace changed {part}");
    }
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    // (without its resourceVersion: with it, the second apply is a Conflict, as in
    // Kubernetes, since the first one wrote the annotation)
    let mut got = k.json(&["get", "svc", "web"]);
    got["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let live2 = k.file("live2.json", &got.to_string());
    k.ok(&["apply", "-f", &live2]);
    assert_eq!(
        k.ok(&["apply", "-f", &live2]).trim(),
        "service/web unchanged"
    );

    // label, annotate, patch in the three types.
    k.ok(&["label", "pod", "web", "l1=a"]);
    k.ok(&["annotate", "pod", "web", "note=hi"]);
    k.ok(&[
        "patch",
        "pod",
        "web",
        "-p",
        r#"{"metadata":{"labels":{"s":"1"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "pod",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1","l1":null}}}"#,
    ]);
    k.ok(&[
        "patch",
        "pod",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"1"}]"#,
    ]);
    let j = k.json(&["get", "pod", "web"]);
    let labels = &j["metadata"]["labels"];
    assert_eq!(
        (
            labels["s"].as_str(),
            labels["m"].as_str(),
            labels["j"].as_str()
        ),
        (Some("1"), Some("1"), Some("1")),
        "{labels}"
    );
    assert!(labels.get("l1").is_none(), "{labels}");
    assert_eq!(j["metadata"]["annotations"]["note"], "hi");
    // An immutable field is Invalid, naming it.
    let inv = k.fails(&[
        "patch",
        "pod",
        "web",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","image":"other"}]}}"#,
    ]);
    assert!(
        inv.contains("(Invalid)") || inv.contains("is invalid"),
        "{inv}"
    );
    // A stale resourceVersion is a Conflict.
    let stale = k.fails(&[
        "patch",
        "pod",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"resourceVersion":"1","labels":{"x":"1"}}}"#,
    ]);
    assert!(stale.contains("(Conflict)"), "{stale}");

    // run, expose.
    k.ok(&[
        "run",
        "r1",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "100",
    ]);
    assert_eq!(
        k.ok(&[
            "expose",
            "pod",
            "r1",
            "--port",
            "80",
            "--target-port",
            "8080"
        ])
        .trim(),
        "service/r1 exposed"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "svc",
            "r1",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "8080"
    );

    // An invalid object names the field.
    let badpod = k.file("bad.yaml", &POD.replace("name: web", "name: Bad_Name"));
    let e = k.fails(&["create", "-f", &badpod]);
    assert!(e.contains("metadata.name"), "{e}");

    // delete: without and with a grace period; the pods have no node, so both are
    // immediate, and kubectl waits for them to be gone (watch by name).
    assert!(k.ok(&["delete", "pod", "web"]).contains("deleted"));
    assert!(k
        .ok(&["delete", "pod", "r1", "--grace-period=0", "--force"])
        .contains("deleted"));
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]).trim(), "");
    assert!(k.ok(&["delete", "-f", &svc]).contains("deleted"));
    k.ok(&["delete", "svc", "r1"]);
}

/// `kubectl get -w` prints changes as they happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_changes() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let mut child = k
        .cmd(&["get", "pods", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let pod = k.file("pod.yaml", POD);
    // Create until the watch shows it (the watch may start after the first create).
    k.ok(&["create", "-f", &pod]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<String> = Vec::new();
    let mut relabels = 0;
    while seen.iter().filter(|l| l.as_str() == "pod/web").count() < 2 {
        if Instant::now() > deadline {
            break;
        }
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            seen.push(l);
        } else if relabels < 20 {
            relabels += 1;
            k.ok(&[
                "label",
                "pod",
                "web",
                "--overwrite",
                &format!("n={relabels}"),
            ]);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().filter(|l| l.as_str() == "pod/web").count() >= 2,
        "the watch printed {seen:?}"
    );
}

fn python(k: &Kubectl, script: &str) -> String {
    let p = k.dir.path().join("t.py");
    std::fs::write(&p, script).unwrap();
    let o = Command::new(&k.python)
        .arg(&p)
        .arg(&k.kubeconfig)
        .output()
        .expect("running python");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "python failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

const PY_CRUD: &str = r#"
import sys
from kubernetes import client, watch
from kubernetes import config
config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
ns = "default"
body = client.V1Pod(metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="whoami")]))
created = api.create_namespaced_pod(ns, body)
print("created", created.metadata.name, created.metadata.resource_version)
lst = api.list_namespaced_pod(ns, label_selector="app=py")
print("listed", [p.metadata.name for p in lst.items], lst.metadata.resource_version)
rv = lst.metadata.resource_version
p = api.patch_namespaced_pod("py", ns, {"metadata": {"labels": {"patched": "yes"}}})
print("patched", p.metadata.labels.get("patched"))
try:
    api.read_namespaced_pod("nope", ns)
except client.exceptions.ApiException as e:
    print("missing", e.status)
# Watch from the list's revision: the patch (MODIFIED) and the delete (DELETED).
api.delete_namespaced_pod("py", ns)
w = watch.Watch()
kinds = []
for ev in w.stream(api.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=10):
    kinds.append(ev["type"])
    if ev["type"] == "DELETED":
        w.stop()
print("watched", ",".join(kinds))
# Paging.
for i in range(5):
    api.create_namespaced_pod(ns, client.V1Pod(metadata=client.V1ObjectMeta(name="pg-%d" % i),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")])))
page = api.list_namespaced_pod(ns, limit=2)
names = [p.metadata.name for p in page.items]
while page.metadata._continue:
    page = api.list_namespaced_pod(ns, limit=2, _continue=page.metadata._continue)
    names += [p.metadata.name for p in page.items]
print("paged", ",".join(names))
api.delete_collection_namespaced_pod(ns)
print("left", len(api.list_namespaced_pod(ns).items))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_lists_creates_patches_deletes_watches() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let out = python(&k, PY_CRUD);
    let line = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p:?} in:\n{out}"))
            .to_string()
    };
    assert!(line("created py").len() > "created py".len());
    assert!(line("listed").contains("['py']"));
    assert_eq!(line("patched"), "patched yes");
    assert_eq!(line("missing"), "missing 404");
    assert_eq!(line("watched"), "watched MODIFIED,DELETED");
    assert_eq!(line("paged"), "paged pg-0,pg-1,pg-2,pg-3,pg-4");
    assert_eq!(line("left"), "left 0");
}

const PY_EXPIRED: &str = r#"
import sys
from kubernetes import client, watch
from kubernetes import config
config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
w = watch.Watch()
try:
    for ev in w.stream(api.list_namespaced_pod, "default", resource_version="1", timeout_seconds=5):
        print("event", ev["type"])
    print("ended")
except client.exceptions.ApiException as e:
    print("expired", e.status)
"#;

/// A watch from a revision the change log no longer holds: 410 Expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_watch_too_old_is_410() {
    let cfg = apiserver::Config {
        watch_window: 8,
        ..Default::default()
    };
    let server = TestApiServer::start_with(cfg).await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let mut pods = server.pods();
    for i in 0..30 {
        let p = kube_lite_tests::fixtures::pod(&format!("p{i}"), &[]);
        pods.create(p).await.unwrap();
    }
    let out = python(&k, PY_EXPIRED);
    assert!(out.contains("expired 410"), "{out}");
}

/// One manifest per issue-11 kind, with what kubectl calls it.
const KINDS: &[(&str, &str, &str)] = &[
    (
        "namespace/blue",
        "NAME STATUS AGE",
        "apiVersion: v1
kind: Namespace
metadata: {name: blue, labels: {team: a}}
",
    ),
    (
        "configmap/cfg",
        "NAME DATA AGE",
        "apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: '1', b: two}
",
    ),
    (
        "secret/s",
        "NAME TYPE DATA AGE",
        "apiVersion: v1
kind: Secret
metadata: {name: s}
type: Opaque
data: {password: aHVudGVyMg==}
",
    ),
    (
        "event/web.1",
        "LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME",
        "apiVersion: v1
kind: Event
metadata: {name: web.1}
involvedObject: {kind: Pod, name: web, namespace: default, apiVersion: v1}
reason: Tested
message: hello from the test
type: Normal
source: {component: tester}
firstTimestamp: '2026-01-01T00:00:00Z'
lastTimestamp: '2026-01-01T00:00:05Z'
count: 2
",
    ),
    (
        "deployment.apps/web",
        "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: whoami
        ports: [{containerPort: 8080, name: http}]
        env:
        - {name: A, value: b}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
",
    ),
    (
        "replicaset.apps/solo",
        "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR",
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: solo}
spec:
  replicas: 1
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      containers: [{name: c, image: busybox, args: [sleep, '100']}]
",
    ),
];

/// The header of a table, as words.
fn header(table: &str) -> String {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every issue-11 kind through the real kubectl: apply twice (created, unchanged), get in
/// every output format, get -> apply round trip (unchanged), then the workload verbs:
/// `create deployment`, `scale` (deployments and replicasets, through `/scale`),
/// `describe`, `explain`, `delete --grace-period`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_every_kind_and_workload_verbs() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let r = k.ok(&["api-resources"]);
    for want in [
        "namespaces",
        "configmaps",
        "secrets",
        "events",
        "deployments",
        "deploy",
        "replicasets",
        "apps/v1",
    ] {
        assert!(r.contains(want), "api-resources lacks {want}:\n{r}");
    }
    for (i, (name, wide, manifest)) in KINDS.iter().enumerate() {
        let (kind, obj) = name.split_once('/').unwrap();
        let resource = kind.split('.').next().unwrap();
        let f = k.file(&format!("k{i}.yaml"), manifest);
        assert_eq!(k.ok(&["apply", "-f", &f]).trim(), format!("{name} created"));
        assert_eq!(
            k.ok(&["apply", "-f", &f]).trim(),
            format!("{name} unchanged"),
            "second apply of {name}"
        );
        // -o wide: kubectl's columns for the kind.
        let t = k.ok(&["get", resource, obj, "-o", "wide"]);
        assert_eq!(header(&t), *wide, "{t}");
        // The plain table is the wide one without the priority-1 columns.
        let plain = k.ok(&["get", resource]);
        assert!(
            wide.starts_with(&header(&plain)[..header(&plain).len().min(8)]),
            "{plain}"
        );
        let j = k.json(&["get", resource, obj]);
        assert_eq!(j["metadata"]["name"], obj, "{j}");
        assert!(j["apiVersion"].as_str().unwrap().ends_with("v1"), "{j}");
        assert!(j["metadata"]["resourceVersion"].is_string());
        let y = k.ok(&["get", resource, obj, "-o", "yaml"]);
        assert!(y.contains(&format!("name: {obj}")), "{y}");
        assert_eq!(
            k.ok(&["get", resource, obj, "-o", "jsonpath={.metadata.name}"]),
            *obj
        );
        assert_eq!(k.ok(&["get", resource, obj, "-o", "name"]).trim(), *name);
        // get -> apply: what the server returns applies back without a change.
        let mut live = k.json(&["get", resource, obj]);
        let m = live["metadata"].as_object_mut().unwrap();
        m.remove("resourceVersion");
        // (The controllers may still be writing a workload's status.)
        live.as_object_mut().unwrap().remove("status");
        let lf = k.file(&format!("live{i}.json"), &live.to_string());
        k.ok(&["apply", "-f", &lf]);
        assert_eq!(
            k.ok(&["apply", "-f", &lf]).trim(),
            format!("{name} unchanged"),
            "get -> apply of {name}"
        );
    }
    // Kind-specific content.
    assert_eq!(
        k.ok(&["get", "secret", "s", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMg=="
    );
    assert_eq!(
        k.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.b}"]),
        "two"
    );
    let ev = k.ok(&["get", "events"]);
    assert!(
        ev.contains("pod/web") && ev.contains("hello from the test"),
        "{ev}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[1].valueFrom.fieldRef.fieldPath}"
        ]),
        "status.podIP"
    );
    // The deployment controller made a ReplicaSet with two pods.
    let rs_of_web = eventually_kubectl(&k, &["get", "rs", "-l", "app=web", "-o", "name"], |o| {
        !o.trim().is_empty()
    });
    assert!(rs_of_web.starts_with("replicaset.apps/web-"), "{rs_of_web}");
    eventually_kubectl(&k, &["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.lines().count() == 2
    });

    // kubectl's typed create commands send Kubernetes protobuf.
    for (args, want) in [
        (
            &["create", "configmap", "cfg2", "--from-literal=a=1"][..],
            "configmap/cfg2 created",
        ),
        (
            &["create", "secret", "generic", "s2", "--from-literal=p=x"][..],
            "secret/s2 created",
        ),
        (
            &["create", "namespace", "green"][..],
            "namespace/green created",
        ),
        (
            &["create", "service", "clusterip", "sv", "--tcp=80:8080"][..],
            "service/sv created",
        ),
    ] {
        assert_eq!(k.ok(args).trim(), want);
    }
    assert_eq!(
        k.ok(&["get", "secret", "s2", "-o", "jsonpath={.data.p}"]),
        "eA=="
    );
    assert_eq!(
        k.ok(&[
            "get",
            "svc",
            "sv",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "8080"
    );

    // create deployment, scale (through /scale), describe, explain.
    assert_eq!(
        k.ok(&[
            "create",
            "deployment",
            "d2",
            "--image=whoami",
            "--replicas=1"
        ])
        .trim(),
        "deployment.apps/d2 created"
    );
    assert_eq!(
        k.ok(&["scale", "deployment", "d2", "--replicas=3"]).trim(),
        "deployment.apps/d2 scaled"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "d2", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    eventually_kubectl(&k, &["get", "pods", "-l", "app=d2", "-o", "name"], |o| {
        o.lines().count() == 3
    });
    // With a precondition (kubectl then GETs and PUTs the Scale).
    assert!(k
        .ok(&[
            "scale",
            "rs",
            "solo",
            "--current-replicas=1",
            "--replicas=2"
        ])
        .contains("scaled"));
    let stale = k.fails(&[
        "scale",
        "rs",
        "solo",
        "--current-replicas=5",
        "--replicas=1",
    ]);
    assert!(
        stale.contains("Expected replicas to be 5, was 2"),
        "{stale}"
    );
    assert_eq!(
        k.ok(&["get", "rs", "solo", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    let scale: Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/d2/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=d2");
    let bad = k.fails(&["scale", "deployment", "d2", "--replicas=-1"]);
    assert!(!bad.is_empty());
    let d = k.ok(&["describe", "deployment", "web"]);
    assert!(d.contains("Replicas:") && d.contains("whoami"), "{d}");
    let e = k.ok(&["explain", "deployments.spec"]);
    assert!(e.contains("replicas") && e.contains("template"), "{e}");
    let all = k.ok(&["get", "all"]);
    assert!(
        all.contains("deployment.apps/web") && all.contains("replicaset.apps/solo"),
        "{all}"
    );
    // A strategic merge patch of the template's containers (merged by name).
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"whoami:2"}]}}}}"#,
    ]);
    let j = k.json(&["get", "deploy", "web"]);
    let c = &j["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c[0]["image"], "whoami:2");
    assert_eq!(c[0]["ports"][0]["containerPort"], 8080, "{c}");

    // delete with a grace period; kubectl waits until they are gone.
    assert!(k
        .ok(&["delete", "deployment", "d2", "--grace-period=5"])
        .contains("deleted"));
    assert!(k
        .ok(&["delete", "cm", "cfg", "--grace-period=0", "--force"])
        .contains("deleted"));
    assert!(k.ok(&["delete", "secret", "s"]).contains("deleted"));
    assert_eq!(
        k.ok(&["get", "deploy", "-o", "name"]).trim(),
        "deployment.apps/web"
    );
    assert!(k.ok(&["delete", "namespace", "blue"]).contains("deleted"));
}

/// Runs a kubectl command until its output satisfies `ok` (60 s), returning it.
fn eventually_kubectl(k: &Kubectl, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = k.ok(args);
        if ok(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} never matched: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
/// A client with the cluster's CA but no credentials, and kubectl with a wrong bearer
/// token, are refused with 401 Unauthorized; `/version` and the health endpoints stay
/// open, as in Kubernetes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_without_credentials_is_unauthorized() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    assert!(server.secure());
    let anon = k.file(
        "anon.kubeconfig",
        &format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: kl, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]
contexts: [{{name: kl, context: {{cluster: kl, user: anon}}}}]
users: [{{name: anon, user: {{}}}}]
current-context: kl
",
            server.url,
            server.ca_path().display()
        ),
    );
    let run = |extra: &[&str]| {
        let mut c = Command::new(&k.bin);
        c.arg("--kubeconfig")
            .arg(&anon)
            .env("HOME", k.dir.path())
            .env("KUBECACHEDIR", k.dir.path().join("anon-cache"))
            .args(extra);
        c.output().unwrap()
    };
    // (kubectl itself, with no credentials at all, asks for a username on the
    // terminal before it sends anything, as against any Kubernetes server; so the
    // anonymous request is the official Python client's.)
    let script = format!(
        r#"
from kubernetes import client
c = client.Configuration()
c.host = "{}"
c.ssl_ca_cert = "{}"
api = client.CoreV1Api(client.ApiClient(c))
try:
    api.list_namespaced_pod("default")
    print("listed")
except client.exceptions.ApiException as e:
    import json
    print("refused", e.status, json.loads(e.body)["reason"])
"#,
        server.url,
        server.ca_path().display()
    );
    let out = python(&k, &script);
    assert_eq!(out.trim(), "refused 401 Unauthorized");
    let o = run(&["--token", "not-the-token", "get", "pods"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    let o = run(&["--token", "not-the-token", "get", "--raw", "/healthz"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok");
    // The admin token works like the admin certificate.
    let o = run(&[
        "--token",
        &server.admin_token(),
        "get",
        "pods",
        "-o",
        "name",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The real kubectl against a real cluster (one node agent in a network namespace, the
/// kit's cluster): `create deployment`, `rollout status` (the deployment controller and
/// the agent make it Available), `scale` + `rollout status` again, `logs --tail` and
/// `logs -f --tail` of a running pod (through the apiserver to the agent's log port),
/// `delete --grace-period` (the agent stops the pods).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_scale_and_logs_on_a_real_cluster() {
    if !kube_lite_tests::cluster::require_root() {
        return;
    }
    let c =
        kube_lite_tests::cluster::whoami_cluster(kube_lite_tests::cluster::ClusterOptions::new(
            1,
            kube_lite_tests::cluster::default_agent_bin(),
        ))
        .await;
    let Some(k) = Kubectl::new(&c.api) else {
        return;
    };
    assert_eq!(
        k.ok(&[
            "create",
            "deployment",
            "web",
            "--image=whoami",
            "--replicas=2"
        ])
        .trim(),
        "deployment.apps/web created"
    );
    rollout(&k, &c, "web");
    k.ok(&["scale", "deployment", "web", "--replicas=3"]);
    rollout(&k, &c, "web");
    let t = k.ok(&["get", "deploy", "web", "--no-headers"]);
    let cols: Vec<&str> = t.split_whitespace().collect();
    assert_eq!(cols[..4], ["web", "3/3", "3", "3"], "{t}");
    let pods = k.ok(&["get", "pods", "-l", "app=web", "--no-headers"]);
    assert_eq!(
        pods.lines().filter(|l| l.contains(" Running ")).count(),
        3,
        "{pods}"
    );

    // A pod that logs three lines, then one a second.
    k.ok(&[
        "run",
        "logger",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo one; echo two; echo three; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
    ]);
    eventually_kubectl(
        &k,
        &["get", "pod", "logger", "-o", "jsonpath={.status.phase}"],
        |o| o == "Running",
    );
    eventually_kubectl(&k, &["logs", "logger"], |o| o.contains("tick-3"));
    let tail = k.ok(&["logs", "logger", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick-")), "{tail}");
    // -f: the last line, then new ones as they are written.
    let mut child = k
        .cmd(&["logs", "-f", "--tail=1", "logger"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.len() < 4 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 4, "kubectl logs -f printed {lines:?}");
    let n: Vec<u64> = lines
        .iter()
        .map(|l| l.trim_start_matches("tick-").parse().unwrap())
        .collect();
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
    let d = k.ok(&["describe", "pod", "logger"]);
    assert!(d.contains("Running") && d.contains("node0"), "{d}");

    // kubectl exec: WebSocket (v5.channel.k8s.io) to the apiserver, PodExec to the agent.
    let o = k
        .cmd(&[
            "exec",
            "logger",
            "--",
            "sh",
            "-c",
            "echo out-$((6*7)); echo err-line >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "kubectl exec: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "out-42");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("err-line"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // -i: stdin reaches the command, its end closes it.
    let mut child = k
        .cmd(&["exec", "-i", "logger", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello exec\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "kubectl exec -i: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "HELLO EXEC");

    assert!(k
        .ok(&["delete", "pod", "logger", "--grace-period=1"])
        .contains("deleted"));
    assert!(k
        .ok(&["delete", "deployment", "web", "--grace-period=2"])
        .contains("deleted"));
    eventually_kubectl(&k, &["get", "pods", "-o", "name"], |o| o.trim().is_empty());
}

/// `kubectl rollout status` to success; on failure, what the cluster shows.
fn rollout(k: &Kubectl, c: &kube_lite_tests::cluster::TestCluster, name: &str) {
    let o = k.run(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=90s",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() || !out.contains("successfully rolled out") {
        let state = k.run(&["get", "deploy,rs,pods", "-o", "wide"]);
        let d = k.run(&["get", "deploy", name, "-o", "json"]);
        panic!(
            "rollout status failed: {}{out}\n{}\n{}\nagent: {}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&d.stdout),
            c.agent_log_tail(0, 30)
        );
    }
}

/// terminationMessagePath/Policy (issue 13, point 7) through the REST face: the server's
/// defaults come back, set values round-trip through `apply` and `get -o json|yaml`, a
/// bad policy is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_termination_message_fields_round_trip() {
    let server = TestApiServer::start().await;
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let plain = k.file("plain.yaml", POD);
    k.ok(&["create", "-f", &plain]);
    let j = k.json(&["get", "pod", "web"]);
    let c = &j["spec"]["containers"][0];
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log", "{c}");
    assert_eq!(c["terminationMessagePolicy"], "File", "{c}");

    let set = POD.replace("name: web\n", "name: tm\n").replace(
        "    image: whoami\n",
        "    image: whoami\n    terminationMessagePath: /var/run/why\n    terminationMessagePolicy: FallbackToLogsOnError\n",
    );
    let f = k.file("tm.yaml", &set);
    k.ok(&["apply", "-f", &f]);
    let j = k.json(&["get", "pod", "tm"]);
    let c = &j["spec"]["containers"][0];
    assert_eq!(c["terminationMessagePath"], "/var/run/why", "{c}");
    assert_eq!(
        c["terminationMessagePolicy"], "FallbackToLogsOnError",
        "{c}"
    );
    let y = k.ok(&["get", "pod", "tm", "-o", "yaml"]);
    assert!(
        y.contains("terminationMessagePolicy: FallbackToLogsOnError"),
        "{y}"
    );
    // Applied again unchanged: the server's copy equals the manifest.
    assert!(k.ok(&["apply", "-f", &f]).contains("unchanged"));

    let bad = set
        .replace("name: tm\n", "name: bad\n")
        .replace("FallbackToLogsOnError", "Sometimes");
    let f = k.file("bad.yaml", &bad);
    let e = k.fails(&["create", "-f", &f]);
    assert!(
        (e.contains("termination_message_policy") || e.contains("terminationMessagePolicy"))
            && e.contains("Sometimes"),
        "{e}"
    );
}
