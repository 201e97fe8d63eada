//! Issue 14 end to end, against the real (secure) apiserver: authentication on every
//! service, TLS trust, the node restriction, and the Logs dial that goes nowhere a
//! client points it.

use std::time::Duration;

use kube_lite_pki as pki;
use kube_lite_proto::v1::{
    node_api_client::NodeApiClient, node_bootstrap_client::NodeBootstrapClient,
    pod_api_client::PodApiClient, JoinRequest, ListRequest, LogsRequest, Node, NodeSpec,
    NodeStatus, PodStatus,
};
use kube_lite_tests::apiserver::{test_pki, tls_config, TestApiServer};
use kube_lite_tests::fixtures::{meta, pod};
use kube_lite_tests::raw::RawCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Every method a client could call first, one per service (empty bodies decode).
const PATHS: &[&str] = &[
    "/kubelite.v1.NodeApi/List",
    "/kubelite.v1.PodApi/List",
    "/kubelite.v1.PodApi/Create",
    "/kubelite.v1.ServiceApi/List",
    "/kubelite.v1.EndpointsApi/List",
    "/kubelite.v1.NodeBootstrap/Renew",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A unary raw call of `path` over `ch` with `token` as bearer token (if any).
async fn call(ch: Channel, path: &str, token: Option<&str>) -> Result<Vec<u8>, Status> {
    let header = token.map(|t| format!("Bearer {t}").parse().unwrap());
    let svc = InterceptedService::new(ch, move |mut r: Request<()>| {
        if let Some(h) = &header {
            r.metadata_mut().insert("authorization", Clone::clone(h));
        }
        Ok(r)
    });
    let mut g = tonic::client::Grpc::new(svc);
    g.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let p: PathAndQuery = path.parse().unwrap();
    if path.contains("Reflection") {
        // A bidirectional stream: the refusal arrives as the response status.
        let out = g
            .streaming(
                Request::new(futures::stream::iter(Vec::<Vec<u8>>::new())),
                p,
                RawCodec,
            )
            .await?;
        let _ = out;
        return Ok(Vec::new());
    }
    g.unary(Request::new(Vec::new()), p, RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_garbage_tokens_are_refused_on_every_service() {
    let s = TestApiServer::start().await;
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let anon = s.channel_as(None);
    for path in PATHS {
        let e = call(anon.clone(), path, None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{path}: {e:?}");
        let e = call(anon.clone(), path, Some("garbage")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{path}: {e:?}");
        assert_eq!(e.message(), "invalid bearer token", "{path}");
    }
    // The admin token and the admin certificate are let in (reflection too).
    let token = s.admin_token();
    assert_eq!(token.len(), 64);
    call(anon.clone(), "/kubelite.v1.PodApi/List", Some(&token))
        .await
        .unwrap();
    call(
        s.channel(),
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        None,
    )
    .await
    .unwrap();
    // Health answers anyone.
    let mut health = tonic_health::pb::health_client::HealthClient::new(anon.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // A wrong join token is refused too.
    let (csr, _) = pki::new_csr(&["127.0.0.1".into()]).unwrap();
    let e = NodeBootstrapClient::new(anon)
        .join(JoinRequest {
            token: "not-the-token-0000".into(),
            node_name: "n1".into(),
            csr_pem: csr,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_trust_the_ca_or_speak_plaintext_cannot_connect() {
    let s = TestApiServer::start().await;
    let other_ca = pki::Ca::generate().unwrap();
    let cfg = pki::client_config(&pki::Trust::Ca(other_ca.cert_pem().into()), None).unwrap();
    let e = kube_lite_client::connect_tls(&s.url, std::sync::Arc::new(cfg))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
    // A client certificate from another CA is refused in the handshake.
    let stranger = other_ca
        .issue_client(pki::ADMIN_USER, Some(pki::ADMIN_GROUP), pki::CERT_VALIDITY)
        .unwrap();
    let ch = s.channel_as(Some(&stranger));
    let e = PodApiClient::new(ch)
        .list(ListRequest::default())
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    // Plaintext HTTP/2 to the TLS port: no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let e = PodApiClient::new(plain)
        .list(ListRequest::default())
        .await
        .unwrap_err();
    // (how the refusal surfaces depends on timing: closed, reset, or garbage frames)
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Internal | Code::Cancelled | Code::Unknown
        ),
        "{e:?}"
    );
    // The server wrote a standard kubeconfig and keeps its keys private.
    use std::os::unix::fs::PermissionsExt;
    let kc = std::fs::read_to_string(s.kubeconfig_path()).unwrap();
    let k = kube_lite_client::kubeconfig::Kubeconfig::parse(&kc).unwrap();
    assert_eq!(k.current_context.as_deref(), Some("kube-lite"));
    assert_eq!(k.clusters[0].cluster.server, s.url);
    for f in [
        "pki/ca.key",
        "pki/apiserver.key",
        "pki/admin.key",
        "admin-token",
        "join-token",
        "admin.kubeconfig",
    ] {
        let m = std::fs::metadata(s.data_dir().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
}

fn denied(e: &Status, user: &str, verb: &str) {
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains(&format!("User \"{user}\" cannot {verb} ")),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_may_only_touch_its_own_node_and_pods() {
    let s = TestApiServer::start().await;
    let admin_nodes = s.nodes();
    let mut n1 = NodeApiClient::new(s.node_channel("n1"));
    let mut n1_pods = PodApiClient::new(s.node_channel("n1"));
    let node = |name: &str| Node {
        metadata: meta(name),
        spec: Some(NodeSpec {
            address: "192.168.77.1".into(),
            ..Default::default()
        }),
        status: None,
    };
    // Its own Node: create and status, yes; another's: no.
    let mine = n1.create(node("n1")).await.unwrap().into_inner();
    let e = n1.create(node("n2")).await.unwrap_err();
    denied(&e, "system:node:n1", "create");
    let other = admin_nodes
        .clone()
        .create(node("n2"))
        .await
        .unwrap()
        .into_inner();
    let mut forged = other.clone();
    forged.status = Some(NodeStatus {
        daemon_endpoint: "https://127.0.0.1:1".into(),
        ..Default::default()
    });
    let e = n1.update_status(forged).await.unwrap_err();
    denied(&e, "system:node:n1", "update_status");
    let e = n1.update(other).await.unwrap_err();
    denied(&e, "system:node:n1", "update");
    let mut own = mine.clone();
    own.status = Some(NodeStatus {
        address: "192.168.77.1".into(),
        ..Default::default()
    });
    n1.update_status(own).await.unwrap();
    assert_eq!(
        n1.list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .len(),
        2
    );

    // Pods: never create; status only of pods bound to it.
    let e = n1_pods.create(pod("sneaky", &[])).await.unwrap_err();
    denied(&e, "system:node:n1", "create");
    let mut on1 = pod("on1", &[]);
    on1.spec.as_mut().unwrap().node_name = "n1".into();
    let mut on2 = pod("on2", &[]);
    on2.spec.as_mut().unwrap().node_name = "n2".into();
    let mut on1 = s.pods().create(on1).await.unwrap().into_inner();
    let mut on2 = s.pods().create(on2).await.unwrap().into_inner();
    on1.status = Some(PodStatus {
        phase: "Running".into(),
        ..Default::default()
    });
    on2.status = on1.status.clone();
    n1_pods.update_status(on1.clone()).await.unwrap();
    let e = n1_pods.update_status(on2.clone()).await.unwrap_err();
    denied(&e, "system:node:n1", "update_status");
    assert!(
        e.message().contains("bound to node \"n2\""),
        "{}",
        e.message()
    );
    let e = n1_pods.update(on1).await.unwrap_err();
    denied(&e, "system:node:n1", "update");
    let e = n1_pods
        .logs(LogsRequest {
            name: "on1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    denied(&e, "system:node:n1", "logs");
    // Reading pods, services, endpoints is allowed.
    n1_pods.list(ListRequest::default()).await.unwrap();
    let mut svcs =
        kube_lite_proto::v1::service_api_client::ServiceApiClient::new(s.node_channel("n1"));
    svcs.list(ListRequest::default()).await.unwrap();
    let e = svcs
        .create(kube_lite_tests::fixtures::service("s", ""))
        .await
        .unwrap_err();
    denied(&e, "system:node:n1", "create");

    // A certificate of the CA that is neither admin nor node may do nothing.
    let bob = test_pki().client_cert("bob", Some("devs"));
    let e = PodApiClient::new(s.channel_as(Some(&bob)))
        .list(ListRequest::default())
        .await
        .unwrap_err();
    denied(&e, "bob", "list");
}

/// Issue 14's "a node identity cannot read another node's pods' Secrets": the Node
/// authorizer rule over issue 13's references (secretKeyRef, envFrom, secret and
/// configMap volumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_the_secrets_and_config_maps_its_own_pods_reference() {
    use kube_lite_proto::v1::{
        config_map_api_client::ConfigMapApiClient, secret_api_client::SecretApiClient, ConfigMap,
        ConfigMapVolumeSource, EnvFromSource, EnvVar, EnvVarSource, GetRequest, KeySelector,
        ObjectSelector, Secret, SecretVolumeSource, Volume,
    };
    let s = TestApiServer::start().await;
    let get = |name: &str| GetRequest {
        name: name.into(),
        namespace: "default".into(),
    };
    for name in ["db-n1", "db-n2", "vol-n1", "from-n1", "unreferenced"] {
        s.secrets()
            .create(Secret {
                metadata: meta(name),
                data: [("pw".to_string(), b"hunter2".to_vec())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for name in ["cm-n1", "cm-n2"] {
        s.config_maps()
            .create(ConfigMap {
                metadata: meta(name),
                data: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let with_refs = |name: &str, node: &str, secret: &str, cm: &str, more: bool| {
        let mut p = pod(name, &[]);
        let spec = p.spec.as_mut().unwrap();
        spec.node_name = node.into();
        spec.containers[0].env = vec![EnvVar {
            name: "PW".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(KeySelector {
                    name: secret.into(),
                    key: "pw".into(),
                    optional: false,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }];
        spec.volumes = vec![Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.into(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        if more {
            spec.containers[0].env_from = vec![EnvFromSource {
                secret_ref: Some(ObjectSelector {
                    name: "from-n1".into(),
                    optional: false,
                }),
                ..Default::default()
            }];
            spec.volumes.push(Volume {
                name: "sec".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: "vol-n1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        p
    };
    s.pods()
        .create(with_refs("on1", "n1", "db-n1", "cm-n1", true))
        .await
        .unwrap();
    s.pods()
        .create(with_refs("on2", "n2", "db-n2", "cm-n2", false))
        .await
        .unwrap();
    let mut n1_secrets = SecretApiClient::new(s.node_channel("n1"));
    let mut n1_cms = ConfigMapApiClient::new(s.node_channel("n1"));
    // Its own pods' references, by every kind of reference: yes.
    for name in ["db-n1", "vol-n1", "from-n1"] {
        let got = n1_secrets.get(get(name)).await.unwrap().into_inner();
        assert_eq!(got.data["pw"], b"hunter2");
    }
    n1_cms.get(get("cm-n1")).await.unwrap();
    // Another node's pods' references, and what no pod references: no.
    for name in ["db-n2", "unreferenced"] {
        let e = n1_secrets.get(get(name)).await.unwrap_err();
        denied(&e, "system:node:n1", "get");
    }
    let e = n1_cms.get(get("cm-n2")).await.unwrap_err();
    denied(&e, "system:node:n1", "get");
    // Never all of them.
    let e = n1_secrets.list(ListRequest::default()).await.unwrap_err();
    denied(&e, "system:node:n1", "list");
    // n2 reads its own, not n1's.
    let mut n2_secrets = SecretApiClient::new(s.node_channel("n2"));
    n2_secrets.get(get("db-n2")).await.unwrap();
    let e = n2_secrets.get(get("db-n1")).await.unwrap_err();
    denied(&e, "system:node:n2", "get");
    // Once the pod is gone, so is the permission.
    s.pods()
        .delete(kube_lite_proto::v1::DeleteRequest {
            name: "on1".into(),
            namespace: "default".into(),
            grace_period_seconds: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let e = n1_secrets.get(get("db-n1")).await.unwrap_err();
    denied(&e, "system:node:n1", "get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_never_dialed_to_a_listener_a_client_chose() {
    let s = TestApiServer::start().await;
    // A plaintext listener a client would like the apiserver to talk to.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut sock, _) = trap.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0);
        buf.truncate(n);
        buf
    });
    let mut n = s
        .nodes()
        .create(Node {
            metadata: meta("n1"),
            spec: Some(NodeSpec {
                address: "192.168.77.7".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut p = pod("web", &[]);
    p.spec.as_mut().unwrap().node_name = "n1".into();
    s.pods().create(p).await.unwrap();
    let logs = || LogsRequest {
        name: "web".into(),
        ..Default::default()
    };

    // Not the node's address: refused without dialing.
    n.status = Some(NodeStatus {
        address: "192.168.77.7".into(),
        daemon_endpoint: "http://10.1.2.3:22".into(),
        ..Default::default()
    });
    let n = s.nodes().update_status(n).await.unwrap().into_inner();
    let e = s.pods().logs(logs()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message().contains("not on the node's address"),
        "{}",
        e.message()
    );

    // A loopback listener without the node's certificate: the apiserver only ever sends
    // it a TLS ClientHello (never a request), and the call fails.
    let mut n = n;
    n.status.as_mut().unwrap().daemon_endpoint = format!("http://{trap_addr}");
    s.nodes().update_status(n).await.unwrap();
    let e = s.pods().logs(logs()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let got = seen.await.unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0], 0x16, "a TLS handshake record, nothing else");
    assert!(
        !got.windows(3).any(|w| w == b"PRI"),
        "no HTTP/2 request reached the listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_the_token_and_its_certificate_authenticates_it() {
    let s = TestApiServer::start().await;
    let (csr, key) = pki::new_csr(&["127.0.0.1".into()]).unwrap();
    let creds = NodeBootstrapClient::new(s.channel_as(None))
        .join(JoinRequest {
            token: s.join_token(),
            node_name: "joiner".into(),
            csr_pem: csr,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(creds.ca_pem, test_pki().ca_pem());
    let info = pki::cert_info_pem(&creds.certificate_pem).unwrap();
    assert_eq!(info.identity, pki::Identity::node("joiner"));
    let id = pki::CertKey {
        cert_pem: creds.certificate_pem,
        key_pem: key,
    };
    let ch = kube_lite_client::connect_tls_lazy(&s.url, tls_config(Some(&id))).unwrap();
    let mut nodes = NodeApiClient::new(ch.clone());
    nodes
        .create(Node {
            metadata: meta("joiner"),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = nodes
        .create(Node {
            metadata: meta("someone-else"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    denied(&e, "system:node:joiner", "create");
    // Renewal, authenticated by the certificate; the admin may not renew.
    let (csr, _) = pki::new_csr(&["127.0.0.1".into()]).unwrap();
    let renewed = NodeBootstrapClient::new(ch)
        .renew(kube_lite_proto::v1::RenewRequest {
            csr_pem: csr.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pki::cert_info_pem(&renewed.certificate_pem)
            .unwrap()
            .identity,
        pki::Identity::node("joiner")
    );
    let e = NodeBootstrapClient::new(s.channel())
        .renew(kube_lite_proto::v1::RenewRequest { csr_pem: csr })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_still_serves_plaintext() {
    let s = TestApiServer::start_insecure().await;
    assert!(s.url.starts_with("http://"));
    PodApiClient::new(s.channel())
        .list(ListRequest::default())
        .await
        .unwrap();
}
