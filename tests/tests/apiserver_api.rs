//! Validation errors (field + rule in the message), the Logs proxy, gRPC reflection and
//! health, over a real apiserver.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use kube_lite_proto::v1::*;
use kube_lite_tests::apiserver::TestApiServer;
use kube_lite_tests::fixtures::{meta, pod, selected};
use tonic::{Code, Request, Response, Status};

fn good_pod() -> Pod {
    pod("ok", &[])
}

fn good_service() -> Service {
    Service {
        metadata: meta("ok"),
        spec: Some(ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

#[tokio::test]
async fn every_validation_error_names_field_and_rule() {
    let s = TestApiServer::start().await;
    type PodCase = (&'static str, fn(&mut Pod), &'static str);
    let pod_cases: Vec<PodCase> = vec![
        (
            "metadata.name",
            |p| p.metadata.as_mut().unwrap().name = "Bad_Name".into(),
            "must be a DNS-1123 label (lowercase a-z, 0-9, '-', at most 63 characters)",
        ),
        (
            "metadata.name",
            |p| p.metadata.as_mut().unwrap().name = "a".repeat(64),
            "DNS-1123 label",
        ),
        (
            "metadata.name",
            |p| p.metadata.as_mut().unwrap().name.clear(),
            "is required",
        ),
        (
            "metadata.namespace",
            |p| p.metadata.as_mut().unwrap().namespace = "NS".into(),
            "DNS-1123 label",
        ),
        (
            "metadata.labels",
            |p| {
                p.metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .insert("-bad".into(), "v".into());
            },
            "label key",
        ),
        (
            "metadata.labels",
            |p| {
                p.metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .insert("Bad.Prefix/x".into(), "v".into());
            },
            "prefix",
        ),
        (
            "metadata.labels[k]",
            |p| {
                p.metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .insert("k".into(), "bad value".into());
            },
            "label value",
        ),
        (
            "metadata.labels[k]",
            |p| {
                p.metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .insert("k".into(), "v".repeat(64));
            },
            "at most 63",
        ),
        (
            "metadata.annotations",
            |p| {
                p.metadata
                    .as_mut()
                    .unwrap()
                    .annotations
                    .insert("bad key".into(), "v".into());
            },
            "label key",
        ),
        (
            "spec.containers",
            |p| p.spec.as_mut().unwrap().containers.clear(),
            "at least one container is required",
        ),
        (
            "spec.containers[0].name",
            |p| p.spec.as_mut().unwrap().containers[0].name = "C".into(),
            "DNS-1123 label",
        ),
        (
            "spec.containers[1].name",
            |p| {
                let c = p.spec.as_ref().unwrap().containers[0].clone();
                p.spec.as_mut().unwrap().containers.push(c);
            },
            "duplicate container name",
        ),
        (
            "spec.containers[0].image",
            |p| p.spec.as_mut().unwrap().containers[0].image.clear(),
            "is required",
        ),
        (
            "spec.containers[0].ports[0].container_port",
            |p| {
                p.spec.as_mut().unwrap().containers[0]
                    .ports
                    .push(ContainerPort {
                        container_port: 70000,
                        ..Default::default()
                    })
            },
            "must be between 1 and 65535",
        ),
        (
            "spec.containers[0].ports[0].protocol",
            |p| {
                p.spec.as_mut().unwrap().containers[0]
                    .ports
                    .push(ContainerPort {
                        container_port: 80,
                        protocol: "SCTP".into(),
                        ..Default::default()
                    })
            },
            "TCP or UDP",
        ),
        (
            "spec.containers[0].env[0].name",
            |p| {
                p.spec.as_mut().unwrap().containers[0].env.push(EnvVar {
                    name: "".into(),
                    value: "x".into(),
                    ..Default::default()
                })
            },
            "non-empty",
        ),
        (
            "spec.restart_policy",
            |p| p.spec.as_mut().unwrap().restart_policy = "Sometimes".into(),
            "Always, OnFailure, Never",
        ),
        (
            "spec.termination_grace_period_seconds",
            |p| p.spec.as_mut().unwrap().termination_grace_period_seconds = -5,
            ">= 0",
        ),
        (
            "spec.node_selector",
            |p| {
                p.spec
                    .as_mut()
                    .unwrap()
                    .node_selector
                    .insert("a b".into(), "x".into());
            },
            "label key",
        ),
        (
            "spec.node_name",
            |p| p.spec.as_mut().unwrap().node_name = "Node_1".into(),
            "DNS-1123 subdomain",
        ),
    ];
    for (field, mutate, rule) in pod_cases {
        let mut p = good_pod();
        mutate(&mut p);
        let e = s.pods().create(p).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            e.message()
        );
        assert!(e.message().contains(rule), "{field}: {}", e.message());
    }
    // Status validation on UpdateStatus.
    let mut p = s.pods().create(good_pod()).await.unwrap().into_inner();
    p.metadata.as_mut().unwrap().resource_version = 0; // the scheduler may have written since
    p.status = Some(PodStatus {
        phase: "Dancing".into(),
        ..Default::default()
    });
    let e = s.pods().update_status(p.clone()).await.unwrap_err();
    assert!(e.message().starts_with("status.phase: "), "{}", e.message());
    p.status = Some(PodStatus {
        phase: "Running".into(),
        pod_ip: "10.0.1".into(),
        ..Default::default()
    });
    let e = s.pods().update_status(p).await.unwrap_err();
    assert_eq!(
        e.message(),
        "status.pod_ip: \"10.0.1\" is not a valid IPv4 address"
    );

    type SvcCase = (&'static str, fn(&mut Service), &'static str);
    let svc_cases: Vec<SvcCase> = vec![
        (
            "spec.ports",
            |s| s.spec.as_mut().unwrap().ports.clear(),
            "at least one port is required",
        ),
        (
            "spec.ports[0].port",
            |s| s.spec.as_mut().unwrap().ports[0].port = 0,
            "must be between 1 and 65535",
        ),
        (
            "spec.ports[0].target_port",
            |s| s.spec.as_mut().unwrap().ports[0].target_port = 70000,
            "must be between 1 and 65535",
        ),
        (
            "spec.ports[0].protocol",
            |s| s.spec.as_mut().unwrap().ports[0].protocol = "tcp".into(),
            "TCP or UDP",
        ),
        (
            "spec.ports[0].name",
            |s| {
                s.spec.as_mut().unwrap().ports.push(ServicePort {
                    name: "b".into(),
                    port: 81,
                    ..Default::default()
                })
            },
            "required when the service has more than one port",
        ),
        (
            "spec.ports[1].name",
            |s| {
                let sp = s.spec.as_mut().unwrap();
                sp.ports[0].name = "a".into();
                sp.ports.push(ServicePort {
                    name: "a".into(),
                    port: 81,
                    ..Default::default()
                });
            },
            "duplicate port name",
        ),
        (
            "spec.cluster_ip",
            |s| s.spec.as_mut().unwrap().cluster_ip = "1.2.3".into(),
            "\"1.2.3\" is not a valid IPv4 address",
        ),
        (
            "spec.type",
            |s| s.spec.as_mut().unwrap().r#type = "ExternalName".into(),
            "must be one of ClusterIP, NodePort, LoadBalancer",
        ),
        (
            "spec.selector",
            |s| {
                s.spec
                    .as_mut()
                    .unwrap()
                    .selector
                    .insert("k".into(), "bad value!".into());
            },
            "label value",
        ),
        (
            "metadata.name",
            |s| s.metadata.as_mut().unwrap().name = "my.svc".into(),
            "DNS-1123 label",
        ),
    ];
    for (field, mutate, rule) in svc_cases {
        let mut sv = good_service();
        mutate(&mut sv);
        let e = s.services().create(sv).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
        assert!(e.message().contains(rule), "{field}: {}", e.message());
    }

    let e = s
        .nodes()
        .create(Node {
            metadata: meta("n1"),
            spec: Some(NodeSpec {
                address: "999.1.1.1".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("spec.address: "), "{}", e.message());
    let e = s
        .endpoints()
        .create(Endpoints {
            metadata: meta("e"),
            subsets: vec![EndpointSubset {
                addresses: vec![EndpointAddress {
                    ip: "nope".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("subsets[0].addresses[0].ip: "),
        "{}",
        e.message()
    );
    let e = s.pods().list(selected("a in b")).await.unwrap_err();
    assert!(
        e.message().starts_with("label_selector: "),
        "{}",
        e.message()
    );
    let e = s
        .services()
        .list(ListRequest {
            node_name: "n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("node_name: "), "{}", e.message());
    // Nothing invalid was stored.
    assert_eq!(
        s.pods()
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .len(),
        1
    );
    assert!(s
        .services()
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
}

/// A stand-in node agent: the peer of the thing under test (the proxy).
struct FakeAgent;

#[tonic::async_trait]
impl node_agent_server::NodeAgent for FakeAgent {
    async fn load_image(
        &self,
        _req: Request<tonic::Streaming<kube_lite_proto::v1::ImageChunk>>,
    ) -> Result<Response<kube_lite_proto::v1::LoadImageResponse>, Status> {
        Err(Status::unimplemented("fake agent"))
    }
    type LogsStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;
    async fn logs(&self, r: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let r = r.into_inner();
        let chunks = vec![
            Ok(LogChunk {
                data: format!(
                    "pod={} ns={} container={}\n",
                    r.name, r.namespace, r.container
                )
                .into_bytes(),
            }),
            Ok(LogChunk {
                data: b"line 2\n".to_vec(),
            }),
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

#[tokio::test]
async fn logs_are_proxied_to_the_node_agent() {
    let s = TestApiServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = listener.local_addr().unwrap();
    // Secure mode: the stand-in agent serves TLS with n1's certificate, as a real one.
    let agent = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(kube_lite_tests::apiserver::agent_server_tls("n1"))
            .unwrap()
            .add_service(node_agent_server::NodeAgentServer::new(FakeAgent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let logs_req = |name: &str| LogsRequest {
        name: name.into(),
        container: "c".into(),
        ..Default::default()
    };

    let e = s.pods().logs(logs_req("missing")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut p = good_pod();
    p.metadata.as_mut().unwrap().name = "unbound".into();
    s.pods().create(p).await.unwrap();
    let e = s.pods().logs(logs_req("unbound")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let mut n = s
        .nodes()
        .create(Node {
            metadata: meta("n1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut p = good_pod();
    p.metadata.as_mut().unwrap().name = "web".into();
    p.spec.as_mut().unwrap().node_name = "n1".into();
    s.pods().create(p).await.unwrap();
    let e = s.pods().logs(logs_req("web")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("daemon endpoint"), "{}", e.message());

    // Unreachable endpoint: UNAVAILABLE naming it.
    n.status = Some(NodeStatus {
        daemon_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    });
    let n = s.nodes().update_status(n).await.unwrap().into_inner();
    let e = s.pods().logs(logs_req("web")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message().contains("http://127.0.0.1:1"),
        "{}",
        e.message()
    );

    let mut n = n;
    n.status = Some(NodeStatus {
        daemon_endpoint: format!("https://{agent_addr}"),
        ..Default::default()
    });
    s.nodes().update_status(n).await.unwrap();
    let mut stream = s.pods().logs(logs_req("web")).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.next().await {
        out.extend(c.unwrap().data);
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "pod=web ns=default container=c\nline 2\n"
    );
    agent.abort();
}

#[tokio::test]
async fn reflection_and_health_are_served() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let s = TestApiServer::start().await;
    let mut h = HealthClient::new(s.channel());
    for svc in [
        "",
        "kubelite.v1.PodApi",
        "kubelite.v1.NodeApi",
        "kubelite.v1.ServiceApi",
        "kubelite.v1.EndpointsApi",
    ] {
        let r = h
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{svc}");
    }
    let mut r = ServerReflectionClient::new(s.channel());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = r
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "kubelite.v1.PodApi",
        "kubelite.v1.NodeApi",
        "kubelite.v1.ServiceApi",
        "kubelite.v1.EndpointsApi",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "kubelite.v1.Pod".into(),
        )),
    };
    let mut resp = r
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    assert!(
        matches!(
            msg.message_response,
            Some(MessageResponse::FileDescriptorResponse(_))
        ),
        "{msg:?}"
    );
}
