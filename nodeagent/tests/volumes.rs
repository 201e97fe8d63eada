//! Volumes and env sources end to end (issue 13, points 3 and 4): configMap and secret
//! volumes show the data and a ConfigMap update reaches the mounted file; an emptyDir
//! (medium Memory) is shared by two containers, each in its own mount namespace; a
//! downwardAPI volume; a hostPath volume; a subPath mount of one key; fsGroup owns the
//! volumes; env from configMapKeyRef, secretKeyRef and envFrom; a missing
//! key leaves the container waiting with CreateContainerConfigError naming it; the
//! volumes (tmpfs included) and the mount points the agent made go with the pod. The
//! agent reads the ConfigMap/Secret with its node identity (issue 14's Node
//! authorizer). Real apiserver and agent. Root only.

use kube_lite_proto::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, DeleteRequest, DownwardApiVolumeFile,
    DownwardApiVolumeSource, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    KeySelector, ObjectFieldSelector, ObjectMeta, ObjectSelector, Pod, PodSpec, Secret,
    SecretVolumeSource, Volume, VolumeMount,
};
use kube_lite_tests::cluster::{require_root, whoami_cluster, ClusterOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

fn sh(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: "busybox".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn key_env(name: &str, secret: bool, obj: &str, key: &str) -> EnvVar {
    let k = Some(KeySelector {
        name: obj.into(),
        key: key.into(),
        optional: false,
    });
    EnvVar {
        name: name.into(),
        value: String::new(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: if secret { None } else { k.clone() },
            secret_key_ref: if secret { k } else { None },
            ..Default::default()
        }),
    }
}

fn mount(name: &str, path: &Path, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.display().to_string(),
        read_only,
        sub_path: String::new(),
    }
}

fn pod(name: &str, node: &str, containers: Vec<Container>, volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "vols".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers,
            volumes,
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

/// Waits until `path` holds exactly `want` (trimmed).
async fn wait_file(path: &Path, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {t:?}, want {want:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_secret_empty_dir_downward_volumes_and_env_sources() {
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mnt = tmp.path().join("mnt"); // does not exist: the agent makes the mount points
    let (o, m) = (out.display().to_string(), mnt.display().to_string());
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("h.txt"), "from-host").unwrap();

    c.api
        .config_maps()
        .create(ConfigMap {
            metadata: Some(ObjectMeta {
                name: "cfg".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            data: [
                ("greeting".to_string(), "hello".to_string()),
                ("extra".to_string(), "x1".to_string()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.api
        .secrets()
        .create(Secret {
            metadata: Some(ObjectMeta {
                name: "creds".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            data: [("pw".to_string(), b"hunter2".to_vec())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let volumes = vec![
        Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "sec".into(),
            secret: Some(SecretVolumeSource {
                secret_name: "creds".into(),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "shared".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: "Memory".into(),
                size_limit: "8Mi".into(),
            }),
            ..Default::default()
        },
        Volume {
            name: "info".into(),
            downward_api: Some(DownwardApiVolumeSource {
                items: vec![DownwardApiVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".into(),
                    }),
                    ..Default::default()
                }],
                default_mode: None,
            }),
            ..Default::default()
        },
        Volume {
            name: "host".into(),
            host_path: Some(kube_lite_proto::v1::HostPathVolumeSource {
                path: host.display().to_string(),
                r#type: "Directory".into(),
            }),
            ..Default::default()
        },
    ];
    // writer: env sources into the shared emptyDir; mounted files copied out, again
    // and again (so an update shows); whether the read-only mount refuses writes.
    let mut writer = sh(
        "writer",
        &format!(
            "echo \"$GREETING $PW $CM_extra $CM_greeting\" > {m}/shared/env; \
             if touch {m}/cfg/x 2>/dev/null; then echo rw > {o}/ro; else echo ro > {o}/ro; fi; \
             stat -L -c %a {m}/sec/pw > {o}/pw-mode; cat {m}/info/labels > {o}/labels; \
             df -k {m}/shared | tail -1 | awk '{{print $2}}' > {o}/shared-size; \
             stat -c %g {m}/shared > {o}/shared-gid; stat -L -c %g {m}/cfg/greeting > {o}/cfg-gid; \
             cat {m}/host/h.txt > {o}/host; cat {m}/extra-file > {o}/extra; \
             while true; do cat {m}/cfg/greeting > {o}/greeting.tmp; mv {o}/greeting.tmp {o}/greeting; \
             cat {m}/sec/pw > {o}/pw; sleep 1; done"
        ),
    );
    writer.env = vec![
        key_env("GREETING", false, "cfg", "greeting"),
        key_env("PW", true, "creds", "pw"),
    ];
    writer.env_from = vec![EnvFromSource {
        prefix: "CM_".into(),
        config_map_ref: Some(ObjectSelector {
            name: "cfg".into(),
            optional: false,
        }),
        secret_ref: None,
    }];
    writer.volume_mounts = vec![
        mount("cfg", &mnt.join("cfg"), true),
        mount("sec", &mnt.join("sec"), true),
        mount("shared", &mnt.join("shared"), false),
        mount("info", &mnt.join("info"), false),
        mount("host", &mnt.join("host"), true),
        VolumeMount {
            name: "cfg".into(),
            mount_path: mnt.join("extra-file").display().to_string(),
            read_only: true,
            sub_path: "extra".into(),
        },
    ];
    // reader: another container (its own mount namespace) sees the writer's file.
    let mut reader = sh(
        "reader",
        &format!(
            "until test -f {m}/shared/env; do sleep 1; done; cp {m}/shared/env {o}/seen-by-reader; sleep 3600"
        ),
    );
    reader.volume_mounts = vec![mount("shared", &mnt.join("shared"), false)];
    let mut vols = pod("vols", &node, vec![writer, reader], volumes);
    vols.spec.as_mut().unwrap().security_context = Some(kube_lite_proto::v1::PodSecurityContext {
        fs_group: Some(2345),
        ..Default::default()
    });
    let created = c.api.pods().create(vols).await.unwrap().into_inner();
    let uid = created.metadata.unwrap().uid;
    c.wait_pod("vols", "Running", |p| {
        p.status.as_ref().is_some_and(|s| s.phase == "Running")
    })
    .await;
    let t = Duration::from_secs(30);
    wait_file(&out.join("seen-by-reader"), "hello hunter2 x1 hello", t).await;
    wait_file(&out.join("greeting"), "hello", t).await;
    wait_file(&out.join("pw"), "hunter2", t).await;
    wait_file(&out.join("pw-mode"), "400", t).await;
    wait_file(&out.join("ro"), "ro", t).await;
    wait_file(&out.join("labels"), "app=\"vols\"", t).await;
    wait_file(&out.join("shared-size"), "8192", t).await;
    wait_file(&out.join("shared-gid"), "2345", t).await;
    wait_file(&out.join("cfg-gid"), "2345", t).await;
    wait_file(&out.join("host"), "from-host", t).await;
    wait_file(&out.join("extra"), "x1", t).await;
    // The mounts live in the containers' namespaces only: the node sees the empty
    // mount point the agent made.
    assert!(mnt.join("cfg").is_dir());
    assert!(!mnt.join("cfg").join("greeting").exists());

    // An update of the ConfigMap reaches the mounted file (within a minute).
    let mut cm = c
        .api
        .config_maps()
        .get(kube_lite_proto::v1::GetRequest {
            name: "cfg".into(),
            namespace: "default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    cm.data.insert("greeting".into(), "bonjour".into());
    c.api.config_maps().update(cm).await.unwrap();
    wait_file(&out.join("greeting"), "bonjour", Duration::from_secs(60)).await;

    // A missing key: CreateContainerConfigError naming it.
    let mut bad = sh("app", "sleep 3600");
    bad.env = vec![key_env("NOPE", false, "cfg", "nope")];
    c.api
        .pods()
        .create(pod("missing-key", &node, vec![bad], vec![]))
        .await
        .unwrap();
    let p = c
        .wait_pod("missing-key", "CreateContainerConfigError", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.container_statuses
                    .first()
                    .is_some_and(|c| c.reason == "CreateContainerConfigError")
            })
        })
        .await;
    let cs = &p.status.unwrap().container_statuses[0];
    assert!(
        cs.message
            .contains("couldn't find key nope in ConfigMap default/cfg"),
        "{cs:?}"
    );

    // Deleted: volumes (the tmpfs too) and the mount points the agent made are gone.
    c.api
        .pods()
        .delete(DeleteRequest {
            name: "vols".into(),
            namespace: "default".into(),
            grace_period_seconds: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get_pod("vols").await.is_some() {
        assert!(Instant::now() < deadline, "pod vols not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&uid),
        "a tmpfs of the pod is still mounted"
    );
    assert!(!mnt.exists(), "mount points the agent made are removed");
    assert_eq!(
        std::fs::read_to_string(host.join("h.txt")).unwrap(),
        "from-host",
        "a hostPath is never removed"
    );
}

/// A projected volume: a ConfigMap key, a Secret and the pod's name in one directory,
/// with the volume's defaultMode; a serviceAccountToken source is refused at admission
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_volume_holds_config_map_secret_and_downward_api_files() {
    use kube_lite_proto::v1::{
        ProjectedVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };
    if !require_root() {
        return;
    }
    let c = whoami_cluster(ClusterOptions::new(1, agent_bin())).await;
    let node = c.nodes[0].name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mnt = tmp.path().join("all");
    let meta = |name: &str| {
        Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        })
    };
    c.api
        .config_maps()
        .create(ConfigMap {
            metadata: meta("pcfg"),
            data: [("greeting".to_string(), "hello".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.api
        .secrets()
        .create(Secret {
            metadata: meta("pcreds"),
            data: [("pw".to_string(), b"hunter2".to_vec())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let projected = |extra: Option<VolumeProjection>| Volume {
        name: "all".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: [
                VolumeProjection {
                    config_map: Some(ConfigMapVolumeSource {
                        name: "pcfg".into(),
                        items: vec![kube_lite_proto::v1::KeyToPath {
                            key: "greeting".into(),
                            path: "cfg/greeting".into(),
                            mode: None,
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    secret: Some(SecretVolumeSource {
                        secret_name: "pcreds".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardApiVolumeSource {
                        items: vec![DownwardApiVolumeFile {
                            path: "pod".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.name".into(),
                            }),
                            ..Default::default()
                        }],
                        default_mode: None,
                    }),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(extra)
            .collect(),
        }),
        ..Default::default()
    };
    // Refused at admission, naming the field.
    let token = VolumeProjection {
        service_account_token: Some(ServiceAccountTokenProjection {
            path: "token".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = c
        .api
        .pods()
        .create(pod(
            "tok",
            &node,
            vec![sh("app", "sleep 3600")],
            vec![projected(Some(token))],
        ))
        .await
        .expect_err("serviceAccountToken is refused");
    assert!(
        e.message()
            .contains("spec.volumes[0].projected.sources[3].service_account_token"),
        "{}",
        e.message()
    );

    let (o, m) = (out.display().to_string(), mnt.display().to_string());
    let mut app = sh(
        "app",
        &format!(
            "cat {m}/cfg/greeting > {o}/greeting; cat {m}/pw > {o}/pw; cat {m}/pod > {o}/pod; \
             stat -L -c %a {m}/pw > {o}/mode; sleep 3600"
        ),
    );
    app.volume_mounts = vec![mount("all", &mnt, true)];
    c.api
        .pods()
        .create(pod("proj", &node, vec![app], vec![projected(None)]))
        .await
        .expect("create");
    let within = Duration::from_secs(60);
    wait_file(&out.join("greeting"), "hello", within).await;
    wait_file(&out.join("pw"), "hunter2", within).await;
    wait_file(&out.join("pod"), "proj", within).await;
    wait_file(&out.join("mode"), "440", within).await;
}
