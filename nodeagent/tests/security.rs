//! Issue 14 on a real node: the agent's port answers only the apiserver (mTLS), a pod's
//! secret in its logs is readable through the apiserver and not directly, and an agent
//! restarted with its saved identity comes back without the join token. Root only.

use futures::StreamExt;
use kube_lite_proto::v1::{
    node_agent_client::NodeAgentClient, Container, GetRequest, LogsRequest, Pod, PodSpec,
};
use kube_lite_tests::apiserver::{test_pki, tls_config};
use kube_lite_tests::cluster::{
    busybox, require_root, whoami_cluster, ClusterOptions, TestCluster,
};
use kube_lite_tests::fixtures::default_meta;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn logs_req() -> LogsRequest {
    LogsRequest {
        name: "leaky".into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

async fn logs_via_apiserver(c: &TestCluster) -> Result<String, tonic::Status> {
    let mut s = c.api.pods().logs(logs_req()).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend(chunk?.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn daemon_endpoint(c: &TestCluster) -> String {
    let n = c
        .api
        .nodes()
        .get(GetRequest {
            name: "node0".into(),
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    n.status.unwrap().daemon_endpoint
}

async fn heartbeat(c: &TestCluster) -> i64 {
    let n = c
        .api
        .nodes()
        .get(GetRequest {
            name: "node0".into(),
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    n.status.map(|s| s.last_heartbeat_time).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_port_answers_only_the_apiserver_and_identities_survive_restarts() {
    if !require_root() {
        return;
    }
    let mut c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let pod = Pod {
        metadata: default_meta("leaky"),
        spec: Some(PodSpec {
            node_name: "node0".into(),
            containers: vec![Container {
                name: "leaky".into(),
                image: busybox().into(),
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo DB_PASSWORD=hunter2; exec sleep 1000".into(),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    c.api.pods().create(pod).await.unwrap();
    // Through the apiserver (which dials the agent with its client certificate): yes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match logs_via_apiserver(&c).await {
            Ok(text) if text.contains("DB_PASSWORD=hunter2") => break,
            other => assert!(
                Instant::now() < deadline,
                "logs through the apiserver: {other:?}\n{}",
                c.agent_log_tail(0, 30)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let endpoint = daemon_endpoint(&c).await;
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    // Directly: plaintext gets nothing.
    let plain = endpoint.replacen("https://", "http://", 1);
    let r = async {
        let ch = tonic::transport::Endpoint::from_shared(plain)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(NodeAgentClient::new(ch).logs(logs_req()).await?)
    }
    .await;
    assert!(r.is_err(), "plaintext logs from the agent port");
    // TLS without a client certificate: the handshake is refused.
    let anon = kube_lite_client::connect_tls(&endpoint, tls_config(None)).await;
    if let Ok(ch) = anon {
        let e = NodeAgentClient::new(ch).logs(logs_req()).await.unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }
    // The cluster admin's certificate (from the CA, but not the apiserver's): refused.
    let ch = kube_lite_client::connect_tls(&endpoint, tls_config(Some(&test_pki().admin)))
        .await
        .expect("TLS with a CA-issued client certificate");
    let e = NodeAgentClient::new(ch).logs(logs_req()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("only the apiserver"),
        "{}",
        e.message()
    );

    // The identity is saved in the state dir; a restart needs no join token (the
    // token file now holds a wrong one, so a second join would be refused).
    let pki_dir = c.nodes[0].state_dir.join("pki");
    assert!(pki_dir.join("node.crt").exists() && pki_dir.join("node.key").exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki_dir.join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(c.api.join_token_path(), "wrong-token-wrong-token").unwrap();
    c.kill_agent(0);
    let before = heartbeat(&c).await;
    c.start_agent(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while heartbeat(&c).await <= before {
        assert!(
            Instant::now() < deadline,
            "the restarted agent never heartbeated:\n{}",
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        c.agent_log_tail(0, 200)
            .contains("using the saved node identity"),
        "{}",
        c.agent_log_tail(0, 40)
    );
    // And logs still flow through the apiserver to the restarted agent.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match logs_via_apiserver(&c).await {
            Ok(text) if text.contains("DB_PASSWORD=hunter2") => break,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_certificate_is_renewed_before_expiry_and_the_agent_carries_on() {
    if !require_root() {
        return;
    }
    let mut opts = ClusterOptions::new(1, agent_bin());
    // 30 s certificates: renewed after about 18 s (two thirds of the life).
    opts.apiserver.node_cert_validity = Duration::from_secs(30);
    let c = whoami_cluster(opts).await;
    let crt = c.nodes[0].state_dir.join("pki").join("node.crt");
    let first = std::fs::read_to_string(&crt).unwrap();
    let first_info = kube_lite_pki::cert_info_pem(&first).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = std::fs::read_to_string(&crt).unwrap_or_default();
        if !now.is_empty() && now != first {
            let info = kube_lite_pki::cert_info_pem(&now).unwrap();
            assert!(info.not_after > first_info.not_after);
            assert_eq!(info.identity, first_info.identity);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal:\n{}",
            c.agent_log_tail(0, 30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The old certificate expires; the restarted agent keeps heartbeating with the new.
    tokio::time::sleep(Duration::from_secs(
        (first_info.not_after - kube_lite_pki::now_unix()).max(0) as u64 + 1,
    ))
    .await;
    let before = heartbeat(&c).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while heartbeat(&c).await <= before {
        assert!(
            Instant::now() < deadline,
            "no heartbeat after the first certificate expired:\n{}",
            c.agent_log_tail(0, 40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        c.agent_log_tail(0, 400)
            .contains("node certificate renewed"),
        "{}",
        c.agent_log_tail(0, 40)
    );
}
