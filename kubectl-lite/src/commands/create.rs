//! `create pod|service`: flags → object → Create → `pod/web created`.

use super::ctx::{out, Ctx};
use crate::api::Api;
use crate::cli::{
    CreateCommand, CreatePodArgs, CreateServiceArgs, CreateServiceCommand, CreateServiceType,
    CreateTypedServiceArgs,
};
use crate::util::{parse_env, parse_map, parse_port_spec};
use anyhow::{anyhow, Result};
use kube_lite_core::consts::{protocol, service_type};
use kube_lite_proto::v1::{
    Container, ContainerPort, EnvVar, ObjectMeta, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};

/// The object to create.
#[allow(clippy::large_enum_variant)] // short-lived, one per command
pub enum New {
    Pod(Pod),
    Service(Service),
    Deployment(kube_lite_proto::v1::Deployment),
    Namespace(kube_lite_proto::v1::Namespace),
    ConfigMap(kube_lite_proto::v1::ConfigMap),
    Secret(kube_lite_proto::v1::Secret),
}

/// The flags → the object (pure; checked before connecting).
pub fn parse(cmd: &CreateCommand, namespace: &str) -> Result<New> {
    Ok(match cmd {
        CreateCommand::Pod(a) => New::Pod(pod_from_args(a, namespace)?),
        CreateCommand::Service(c) => New::Service(service_from_command(c, namespace)?),
        CreateCommand::Deployment(a) => {
            New::Deployment(super::workloads::deployment_from_args(a, namespace)?)
        }
        CreateCommand::Namespace(a) => New::Namespace(super::workloads::namespace_from_args(a)),
        CreateCommand::Configmap(a) => {
            New::ConfigMap(super::workloads::config_map_from_args(a, namespace)?)
        }
        CreateCommand::Secret(crate::cli::CreateSecretCommand::Generic(a)) => {
            New::Secret(super::workloads::secret_from_args(a, namespace)?)
        }
    })
}

pub async fn run(ctx: &Ctx, new: New) -> Result<()> {
    match new {
        New::Pod(p) => create(ctx, p).await,
        New::Service(s) => create(ctx, s).await,
        New::Deployment(d) => create(ctx, d).await,
        New::Namespace(n) => create(ctx, n).await,
        New::ConfigMap(c) => create(ctx, c).await,
        New::Secret(s) => create(ctx, s).await,
    }
}

/// The pod `create pod` sends (pure, unit-tested).
pub fn pod_from_args(a: &CreatePodArgs, namespace: &str) -> Result<Pod> {
    let labels = parse_map("--labels", &a.labels).map_err(|e| anyhow!(e))?;
    let env = a
        .env
        .iter()
        .map(|e| {
            parse_env(e).map(|(name, value)| EnvVar {
                name,
                value,
                value_from: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!(e))?;
    let ports = a
        .ports
        .iter()
        .map(|&p| {
            if (1..=65535).contains(&p) {
                Ok(ContainerPort {
                    name: String::new(),
                    container_port: p,
                    protocol: protocol::TCP.into(),
                })
            } else {
                Err(anyhow!("--port {p}: must be between 1 and 65535"))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let (command, args) = if a.command {
        (a.args.clone(), vec![])
    } else {
        (vec![], a.args.clone())
    };
    Ok(Pod {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.to_string(),
            labels,
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: a.node.clone().unwrap_or_default(),
            containers: vec![Container {
                name: a.name.clone(),
                image: a.image.clone(),
                command,
                args,
                env,
                ports,
                image_pull_policy: a.image_pull_policy.clone(),
                ..Default::default()
            }],
            restart_policy: a.restart.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

/// `create service …` in either form (pure, unit-tested).
pub fn service_from_command(c: &CreateServiceCommand, namespace: &str) -> Result<Service> {
    match &c.typed {
        None => service_from_args(&c.args, namespace),
        Some(CreateServiceType::Clusterip(a)) => {
            typed_service(a, service_type::CLUSTER_IP, namespace)
        }
        Some(CreateServiceType::Nodeport(a)) => {
            typed_service(a, service_type::NODE_PORT, namespace)
        }
        Some(CreateServiceType::Loadbalancer(a)) => {
            typed_service(a, service_type::LOAD_BALANCER, namespace)
        }
    }
}

/// kubectl's `create service <type> NAME --tcp=PORT[:TARGET]`: selector and label
/// `app=NAME`, ports named `PORT-TARGET`; `--node-port` sets the first port's (pure).
pub fn typed_service(a: &CreateTypedServiceArgs, ty: &str, namespace: &str) -> Result<Service> {
    let headless = a
        .cluster_ip
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("none"));
    if a.tcp.is_empty() && !headless {
        anyhow::bail!("--tcp is required (PORT[:TARGET], e.g. --tcp=80:8080)");
    }
    if a.cluster_ip.is_some() && ty != service_type::CLUSTER_IP {
        anyhow::bail!("--clusterip is only for create service clusterip");
    }
    if a.node_port.is_some() && ty == service_type::CLUSTER_IP {
        anyhow::bail!("--node-port is only for create service nodeport|loadbalancer");
    }
    let mut ports = Vec::new();
    for (i, t) in a.tcp.iter().enumerate() {
        let spec = parse_port_spec(t).map_err(|e| anyhow!(e.replacen("--port", "--tcp", 1)))?;
        if spec.protocol != protocol::TCP {
            anyhow::bail!("--tcp {t:?}: a protocol suffix is not allowed here");
        }
        let node_port = if i == 0 { a.node_port.unwrap_or(0) } else { 0 };
        if !(0..=65535).contains(&node_port) {
            anyhow::bail!("--node-port {node_port}: must be between 1 and 65535");
        }
        ports.push(ServicePort {
            name: format!("{}-{}", spec.port, spec.target_port),
            protocol: protocol::TCP.into(),
            port: spec.port,
            target_port: spec.target_port,
            node_port,
            ..Default::default()
        });
    }
    let app: std::collections::HashMap<String, String> =
        [("app".to_string(), a.name.clone())].into();
    Ok(Service {
        metadata: Some(ObjectMeta {
            name: a.name.clone(),
            namespace: namespace.to_string(),
            labels: app.clone(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            selector: app,
            ports,
            cluster_ip: a.cluster_ip.clone().unwrap_or_default(),
            r#type: ty.into(),
            ..Default::default()
        }),
        status: None,
    })
}

/// The service `create service NAME --selector --port` sends (pure, unit-tested).
pub fn service_from_args(a: &CreateServiceArgs, namespace: &str) -> Result<Service> {
    let Some(name) = a.name.clone() else {
        anyhow::bail!(
            "create service: a NAME is required (or: create service clusterip|nodeport|loadbalancer NAME --tcp=PORT:TARGET)"
        );
    };
    let selector =
        parse_map("--selector", a.selector.as_deref().unwrap_or("")).map_err(|e| anyhow!(e))?;
    let mut ports = Vec::new();
    for p in &a.ports {
        let spec = parse_port_spec(p).map_err(|e| anyhow!(e))?;
        ports.push(ServicePort {
            name: spec.name(),
            protocol: spec.protocol.clone(),
            port: spec.port,
            target_port: spec.target_port,
            ..Default::default()
        });
    }
    Ok(Service {
        metadata: Some(ObjectMeta {
            name,
            namespace: namespace.to_string(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            selector,
            ports,
            cluster_ip: a.cluster_ip.clone().unwrap_or_default(),
            r#type: service_type::CLUSTER_IP.into(),
            ..Default::default()
        }),
        status: None,
    })
}

async fn create<T: Api>(ctx: &Ctx, obj: T) -> Result<()> {
    let name = obj.name().to_string();
    T::create(&ctx.ch, obj)
        .await
        .map_err(|s| ctx.error::<T>(&format!("create {}/{name}", T::SINGULAR), "", s))?;
    out(format_args!(
        "{}/{name} created\n",
        crate::api::display::<T>()
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kubectl-lite").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn create_pod_flags_become_a_pod() {
        let cli = parse(&[
            "-n",
            "dev",
            "create",
            "pod",
            "web",
            "--image",
            "busybox",
            "-l",
            "app=web,tier=front",
            "--node",
            "node-1",
            "--restart",
            "Never",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--port",
            "8080",
            "--",
            "httpd",
            "-f",
        ]);
        assert_eq!(cli.namespace.as_deref(), Some("dev"));
        let Command::Create(CreateCommand::Pod(a)) = cli.command else {
            panic!()
        };
        let pod = pod_from_args(&a, "dev").unwrap();
        let m = pod.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.labels.len()),
            ("web", "dev", 2)
        );
        let s = pod.spec.unwrap();
        assert_eq!(
            (s.node_name.as_str(), s.restart_policy.as_str()),
            ("node-1", "Never")
        );
        let c = &s.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_str()), ("web", "busybox"));
        assert_eq!(c.args, vec!["httpd", "-f"]);
        assert!(c.command.is_empty());
        assert_eq!(
            c.env[1],
            EnvVar {
                name: "B".into(),
                value: "x=y".into(),
                value_from: None,
            }
        );
        assert_eq!(c.ports[0].container_port, 8080);

        let cli = parse(&[
            "create",
            "po",
            "x",
            "--image",
            "i",
            "--command",
            "--",
            "sleep",
            "1",
        ]);
        let Command::Create(CreateCommand::Pod(a)) = cli.command else {
            panic!()
        };
        let s = pod_from_args(&a, "default").unwrap().spec.unwrap();
        assert_eq!(s.containers[0].command, vec!["sleep", "1"]);
        assert_eq!(s.restart_policy, "Always");
    }

    #[test]
    fn create_service_names_ports_by_port_and_protocol() {
        let cli = parse(&[
            "create",
            "svc",
            "web",
            "--selector",
            "app=web",
            "--port",
            "80:8080",
            "--port",
            "53/udp",
            "--cluster-ip",
            "172.17.10.10",
        ]);
        let Command::Create(CreateCommand::Service(a)) = cli.command else {
            panic!()
        };
        let spec = service_from_command(&a, "default").unwrap().spec.unwrap();
        assert_eq!(spec.cluster_ip, "172.17.10.10");
        assert_eq!(
            spec.ports,
            vec![
                ServicePort {
                    name: "80-tcp".into(),
                    protocol: protocol::TCP.into(),
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
            ]
        );
        let cli = parse(&[
            "create",
            "service",
            "web",
            "--selector",
            "app",
            "--port",
            "80",
        ]);
        let Command::Create(CreateCommand::Service(a)) = cli.command else {
            panic!()
        };
        assert!(service_from_command(&a, "default")
            .unwrap_err()
            .to_string()
            .contains("--selector"));
    }

    #[test]
    fn create_service_by_type_as_kubectl() {
        let svc = |args: &[&str]| {
            let cli = parse(args);
            let Command::Create(CreateCommand::Service(a)) = cli.command else {
                panic!()
            };
            service_from_command(&a, "default")
        };
        let s = svc(&[
            "create",
            "service",
            "nodeport",
            "web",
            "--tcp=80:8080",
            "--node-port",
            "30080",
        ])
        .unwrap();
        let spec = s.spec.unwrap();
        assert_eq!(spec.r#type, "NodePort");
        assert_eq!(spec.selector["app"], "web");
        assert_eq!(s.metadata.unwrap().labels["app"], "web");
        assert_eq!(
            spec.ports,
            vec![ServicePort {
                name: "80-8080".into(),
                protocol: "TCP".into(),
                port: 80,
                target_port: 8080,
                node_port: 30080,
                ..Default::default()
            }]
        );
        let spec = svc(&[
            "create",
            "svc",
            "loadbalancer",
            "lb",
            "--tcp",
            "80,443:8443",
        ])
        .unwrap()
        .spec
        .unwrap();
        assert_eq!(spec.r#type, "LoadBalancer");
        assert_eq!(spec.ports[1].name, "443-8443");
        let spec = svc(&[
            "create",
            "service",
            "clusterip",
            "hl",
            "--clusterip",
            "None",
        ])
        .unwrap()
        .spec
        .unwrap();
        assert_eq!((spec.cluster_ip.as_str(), spec.ports.len()), ("None", 0));
        let e = svc(&["create", "service", "clusterip", "x"]).unwrap_err();
        assert!(e.to_string().contains("--tcp is required"), "{e}");
        let e = svc(&[
            "create",
            "service",
            "clusterip",
            "x",
            "--tcp",
            "80",
            "--node-port",
            "1",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--node-port"), "{e}");
        let e = svc(&["create", "service", "nodeport", "x", "--tcp", "0:1"]).unwrap_err();
        assert!(e.to_string().contains("--tcp \"0:1\""), "{e}");
    }
}
