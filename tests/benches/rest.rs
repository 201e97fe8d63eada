//! The REST face against the gRPC face, in one run on one server:
//! - List of N pods (default 10,000): REST JSON (`GET /api/v1/pods`) vs gRPC List
//!   (target: REST within 2x of gRPC);
//! - watch delivery: one REST watch (`?watch=1`, newline-delimited JSON) and one gRPC
//!   Watch follow the same creates; latency from the create call to the event, p50/p99
//!   (target: REST p99 under 10 ms);
//! - creates/s through REST (POST, Kubernetes JSON) at 64 clients, each its own
//!   HTTP/1.1 connection, with gRPC creates/s at 64 clients as the anchor.
//!
//!   cargo bench -p kube-lite-tests --bench rest            # N=10000
//!   KL_BENCH_PODS=2000 cargo bench -p kube-lite-tests --bench rest   # quicker

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;

const CLIENTS: usize = 64;

fn pod_json(ns: &str, name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"{ns}","labels":{{"app":"bench","tier":"web"}}}},"spec":{{"nodeName":"bench-node","containers":[{{"name":"web","image":"/usr/bin/kl-whoami","args":["--port","8080"],"env":[{{"name":"MODE","value":"bench"}}],"ports":[{{"name":"http","containerPort":8080,"protocol":"TCP"}}]}}]}}}}"#
    )
}

fn pod(ns: &str, name: &str) -> Pod {
    let k: serde_json::Value = serde_json::from_str(&pod_json(ns, name)).unwrap();
    let mut p = Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = PodSpec {
        node_name: "bench-node".into(),
        containers: vec![Container {
            name: "web".into(),
            image: k["spec"]["containers"][0]["image"].as_str().unwrap().into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    p.spec = Some(spec);
    p
}

async fn connect(addr: std::net::SocketAddr) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn request(
    s: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, Bytes) {
    s.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, body)
}

type Arrivals = tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>;

/// Latencies (µs) of `events` arrivals from their create calls.
async fn hist(
    rx: &mut Arrivals,
    sent: &Mutex<HashMap<String, Instant>>,
    events: usize,
) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..events {
        let (name, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("event within 30 s")
            .unwrap();
        let t = sent.lock().unwrap()[&name];
        h.record(at.duration_since(t).as_micros() as u64).unwrap();
    }
    h
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KL_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let server = TestApiServer::start_insecure().await;
    let addr = server.addr;
    println!("rest bench: {n} pods, {CLIENTS} clients");
    // Namespaces are objects (issue 11): the bench's own, created first.
    {
        let mut c = connect(addr).await;
        for ns in ["list", "grpc", "w"] {
            let body =
                format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
            let (code, body) = request(&mut c, "POST", "/api/v1/namespaces", Some(body)).await;
            assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
        }
    }

    // Creates/s through REST at 64 clients (n pods in namespace "list").
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let (code, body) = request(
                    &mut c,
                    "POST",
                    "/api/v1/namespaces/list/pods",
                    Some(pod_json("list", &format!("p{i}"))),
                )
                .await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rest_creates = n as f64 / t0.elapsed().as_secs_f64();
    // The anchor: gRPC creates at 64 clients (n/2 pods in namespace "grpc").
    let m = n / 2;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let next = next.clone();
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = pod_api_client::PodApiClient::new(ch);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= m {
                    return;
                }
                c.create(pod("grpc", &format!("g{i}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let grpc_creates = m as f64 / t0.elapsed().as_secs_f64();
    println!(
        "creates/s at {CLIENTS} clients: REST {rest_creates:.0}/s, gRPC {grpc_creates:.0}/s (REST/gRPC {:.2})",
        rest_creates / grpc_creates
    );

    // List of the n pods in "list": best of 5 each.
    let mut pods = server.pods();
    let mut grpc_best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let l = pods
            .list(ListRequest {
                namespace: "list".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(l.items.len(), n);
        grpc_best = grpc_best.min(t.elapsed());
    }
    let mut c = connect(addr).await;
    let mut rest_best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (code, body) = request(&mut c, "GET", "/api/v1/namespaces/list/pods", None).await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), n);
        rest_best = rest_best.min(t.elapsed());
        bytes = body.len();
    }
    let ratio = rest_best.as_secs_f64() / grpc_best.as_secs_f64();
    println!(
        "list of {n} pods: REST {:.1} ms ({:.1} MB JSON, parsed), gRPC {:.1} ms; REST/gRPC {ratio:.2} (target <= 2): {}",
        ms(rest_best),
        bytes as f64 / 1e6,
        ms(grpc_best),
        if ratio <= 2.0 { "MET" } else { "MISSED" }
    );

    // Watch delivery: one REST and one gRPC watch on namespace "w", 300 creates.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (rest_tx, mut rest_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (grpc_tx, mut grpc_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut wc = connect(addr).await;
    wc.ready().await.unwrap();
    let req = hyper::Request::builder()
        .uri("/api/v1/namespaces/w/pods?watch=1")
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = wc.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let now = Instant::now();
                    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                    if v["type"] == "ADDED" {
                        let name = v["object"]["metadata"]["name"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        let _ = rest_tx.send((name, now));
                    }
                }
            }
        }
    });
    let mut gw = server.pods();
    let mut stream = gw
        .watch(WatchRequest {
            namespace: "w".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            let now = Instant::now();
            if ev.r#type == EventType::Added as i32 {
                let name = ev.object.unwrap().metadata.unwrap().name;
                let _ = grpc_tx.send((name, now));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = 300;
    for i in 0..events {
        let name = format!("w{i}");
        sent.lock().unwrap().insert(name.clone(), Instant::now());
        pods.create(pod("w", &name)).await.unwrap();
    }
    let hr = hist(&mut rest_rx, &sent, events).await;
    let hg = hist(&mut grpc_rx, &sent, events).await;
    let p99 = hr.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "watch delivery ({events} creates, from the create call): REST p50 {:.2} ms p99 {p99:.2} ms, gRPC p50 {:.2} ms p99 {:.2} ms; REST p99 < 10 ms: {}",
        hr.value_at_quantile(0.5) as f64 / 1000.0,
        hg.value_at_quantile(0.5) as f64 / 1000.0,
        hg.value_at_quantile(0.99) as f64 / 1000.0,
        if p99 < 10.0 { "MET" } else { "MISSED" }
    );
    drop(server);
}
