//! `expose pod|deployment|service NAME`: a Service selecting what the object selects
//! (a pod: its labels; a deployment: its matchLabels; a service: its selector), on
//! `--port` or the object's ports, as kubectl does.

use super::ctx::{out, Ctx};
use crate::api::{Api, Kind};
use crate::cli::ExposeArgs;
use crate::util::parse_map;
use anyhow::{anyhow, bail, Result};
use kube_lite_core::consts::{protocol, service_type};
use kube_lite_proto::v1::{
    Deployment, ObjectMeta, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use std::collections::HashMap;

/// What `expose` needs from the exposed object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub labels: HashMap<String, String>,
    /// What the Service should select (`None`: the object selects nothing usable).
    pub selector: Option<HashMap<String, String>>,
    /// Its ports: (name, port, target port number, target port name, protocol).
    pub ports: Vec<ServicePort>,
}

fn pod_ports(spec: Option<&PodSpec>) -> Vec<ServicePort> {
    spec.iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| &c.ports)
        .map(|p| ServicePort {
            name: p.name.clone(),
            protocol: p.protocol.clone(),
            port: p.container_port,
            target_port: p.container_port,
            ..Default::default()
        })
        .collect()
}

pub fn pod_source(p: &Pod) -> Source {
    let m = p.metadata.clone().unwrap_or_default();
    Source {
        name: m.name,
        selector: (!m.labels.is_empty()).then(|| m.labels.clone()),
        labels: m.labels,
        ports: pod_ports(p.spec.as_ref()),
    }
}

pub fn deployment_source(d: &Deployment) -> Result<Source> {
    let m = d.metadata.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let sel = spec.selector.unwrap_or_default();
    if !sel.match_expressions.is_empty() {
        bail!(
            "deployment/{}: its selector has matchExpressions, which a Service cannot express (use --selector)",
            m.name
        );
    }
    Ok(Source {
        name: m.name,
        labels: m.labels,
        selector: (!sel.match_labels.is_empty()).then_some(sel.match_labels),
        ports: pod_ports(spec.template.as_ref().and_then(|t| t.spec.as_ref())),
    })
}

pub fn service_source(s: &Service) -> Source {
    let m = s.metadata.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    Source {
        name: m.name,
        labels: m.labels,
        selector: (!spec.selector.is_empty()).then_some(spec.selector),
        ports: spec
            .ports
            .into_iter()
            .map(|p| ServicePort { node_port: 0, ..p })
            .collect(),
    }
}

/// The Service `expose` creates (pure, unit-tested).
pub fn service_for(src: &Source, a: &ExposeArgs, namespace: &str) -> Result<Service> {
    let selector = match &a.selector {
        Some(s) => parse_map("--selector", s).map_err(|e| anyhow!(e))?,
        None => src.selector.clone().ok_or_else(|| {
            anyhow!(
                "couldn't retrieve selectors via --selector flag or introspection: {} has no labels to select",
                src.name
            )
        })?,
    };
    let ty = match a.r#type.to_ascii_lowercase().as_str() {
        "clusterip" => service_type::CLUSTER_IP,
        "nodeport" => service_type::NODE_PORT,
        "loadbalancer" => service_type::LOAD_BALANCER,
        other => bail!(
            "--type {other:?}: must be ClusterIP, NodePort or LoadBalancer (ExternalName is not supported)"
        ),
    };
    let proto = match a.protocol.to_ascii_uppercase().as_str() {
        "TCP" => protocol::TCP,
        "UDP" => protocol::UDP,
        other => bail!("--protocol {other:?}: must be TCP or UDP"),
    };
    let target = |default: i32| -> Result<(i32, String)> {
        match &a.target_port {
            None => Ok((default, String::new())),
            Some(t) => match t.parse::<i32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok((n, String::new())),
                Ok(_) => bail!("--target-port {t}: must be between 1 and 65535"),
                Err(_) if is_port_name(t) => Ok((0, t.clone())),
                Err(_) => bail!(
                    "--target-port {t:?}: not a port number or a port name (IANA_SVC_NAME: 1-15 lowercase letters, digits, '-')"
                ),
            },
        }
    };
    let ports = match a.port {
        Some(p) => {
            if !(1..=65535).contains(&p) {
                bail!("--port {p}: must be between 1 and 65535");
            }
            let (target_port, target_port_name) = target(p)?;
            vec![ServicePort {
                protocol: proto.into(),
                port: p,
                target_port,
                target_port_name,
                ..Default::default()
            }]
        }
        None if src.ports.is_empty() => bail!(
            "couldn't find port via --port flag or introspection: {} declares no ports",
            src.name
        ),
        None => {
            let many = src.ports.len() > 1;
            let mut v = Vec::new();
            for (i, p) in src.ports.iter().enumerate() {
                let (mut target_port, mut target_port_name) =
                    (p.target_port, p.target_port_name.clone());
                if a.target_port.is_some() {
                    (target_port, target_port_name) = target(p.port)?;
                }
                v.push(ServicePort {
                    // kubectl: several ports are named port-1, port-2 … unless named.
                    name: if !p.name.is_empty() {
                        p.name.clone()
                    } else if many {
                        format!("port-{}", i + 1)
                    } else {
                        String::new()
                    },
                    protocol: if p.protocol.is_empty() {
                        proto.into()
                    } else {
                        p.protocol.clone()
                    },
                    port: p.port,
                    target_port,
                    target_port_name,
                    ..Default::default()
                });
            }
            v
        }
    };
    Ok(Service {
        metadata: Some(ObjectMeta {
            name: a.service_name.clone().unwrap_or_else(|| src.name.clone()),
            namespace: namespace.to_string(),
            labels: src.labels.clone(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            selector,
            ports,
            cluster_ip: a.cluster_ip.clone().unwrap_or_default(),
            r#type: ty.into(),
            ..Default::default()
        }),
        status: None,
    })
}

fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `pod NAME`, `pod/NAME`: the kind (pod, deployment, service) and name.
pub fn target(a: &ExposeArgs) -> Result<(Kind, String)> {
    let mut r = a.resource.clone();
    let mut names: Vec<String> = a.name.iter().cloned().collect();
    let k = super::args::kind_and_names(&mut r, &mut names)?;
    let [name] = names.as_slice() else {
        bail!("expose: exactly one NAME is required (expose pod|deployment|service NAME)");
    };
    match k {
        Kind::Pod | Kind::Deployment | Kind::Service => Ok((k, name.clone())),
        other => bail!(
            "expose: cannot expose a {} (pods, deployments and services can be)",
            other.display()
        ),
    }
}

async fn get<T: Api>(ctx: &Ctx, name: &str) -> Result<T> {
    T::get(&ctx.ch, &ctx.namespace, name)
        .await
        .map_err(|s| ctx.error::<T>(&format!("get {}/{name}", T::SINGULAR), name, s))
}

pub async fn run(ctx: &Ctx, kind: Kind, name: &str, a: &ExposeArgs) -> Result<()> {
    let src = match kind {
        Kind::Pod => pod_source(&get::<Pod>(ctx, name).await?),
        Kind::Deployment => deployment_source(&get::<Deployment>(ctx, name).await?)?,
        _ => service_source(&get::<Service>(ctx, name).await?),
    };
    let svc = service_for(&src, a, &ctx.namespace)?;
    let svc_name = svc
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    Service::create(&ctx.ch, svc)
        .await
        .map_err(|s| ctx.error::<Service>(&format!("create service/{svc_name}"), "", s))?;
    out(format_args!("service/{svc_name} exposed\n"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use kube_lite_proto::v1::{Container, ContainerPort};

    fn args(v: &[&str]) -> ExposeArgs {
        let mut all = vec!["kubectl-lite", "expose"];
        all.extend(v);
        let Command::Expose(a) = Cli::try_parse_from(all).unwrap().command else {
            panic!()
        };
        a
    }

    fn pod() -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: vec![
                        ContainerPort {
                            name: "http".into(),
                            container_port: 8080,
                            protocol: "TCP".into(),
                        },
                        ContainerPort {
                            name: String::new(),
                            container_port: 9090,
                            protocol: "TCP".into(),
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn expose_a_pod_on_a_port_as_a_node_port() {
        let a = args(&[
            "pod",
            "web",
            "--port",
            "80",
            "--target-port",
            "http",
            "--type",
            "NodePort",
            "--name",
            "web-np",
        ]);
        assert_eq!(target(&a).unwrap(), (Kind::Pod, "web".to_string()));
        let s = service_for(&pod_source(&pod()), &a, "ns1").unwrap();
        let m = s.metadata.unwrap();
        assert_eq!((m.name.as_str(), m.namespace.as_str()), ("web-np", "ns1"));
        assert_eq!(m.labels["app"], "web");
        let spec = s.spec.unwrap();
        assert_eq!(spec.r#type, "NodePort");
        assert_eq!(spec.selector["app"], "web");
        assert_eq!(spec.ports.len(), 1);
        let p = &spec.ports[0];
        assert_eq!(
            (
                p.port,
                p.target_port,
                p.target_port_name.as_str(),
                p.name.as_str()
            ),
            (80, 0, "http", "")
        );
    }

    #[test]
    fn expose_without_port_takes_the_objects_ports() {
        let a = args(&["deploy/web"]);
        let s = service_for(&pod_source(&pod()), &a, "default").unwrap();
        let ports = s.spec.unwrap().ports;
        let got: Vec<(String, i32, i32)> = ports
            .iter()
            .map(|p| (p.name.clone(), p.port, p.target_port))
            .collect();
        assert_eq!(
            got,
            [
                ("http".to_string(), 8080, 8080),
                ("port-2".to_string(), 9090, 9090)
            ]
        );
        // A service exposed again: its ports and selector, node ports not copied.
        let svc = Service {
            metadata: Some(ObjectMeta {
                name: "old".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![ServicePort {
                    port: 80,
                    target_port: 8080,
                    node_port: 30001,
                    protocol: "TCP".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let a = args(&["service", "old", "--type", "LoadBalancer", "--name", "lb"]);
        let spec = service_for(&service_source(&svc), &a, "default")
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.r#type, "LoadBalancer");
        assert_eq!((spec.ports[0].port, spec.ports[0].target_port), (80, 8080));
        assert_eq!(spec.ports[0].node_port, 0);
    }

    #[test]
    fn expose_refuses_what_kubectl_refuses() {
        let mut p = pod();
        p.metadata.as_mut().unwrap().labels.clear();
        let e =
            service_for(&pod_source(&p), &args(&["pod", "web", "--port", "80"]), "d").unwrap_err();
        assert!(e.to_string().contains("couldn't retrieve selectors"), "{e}");
        p.spec = None;
        let e = service_for(
            &pod_source(&p),
            &args(&["pod", "web", "--selector", "a=b"]),
            "d",
        )
        .unwrap_err();
        assert!(e.to_string().contains("couldn't find port"), "{e}");
        let e = service_for(
            &pod_source(&pod()),
            &args(&["pod", "web", "--port", "80", "--type", "ExternalName"]),
            "d",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--type"), "{e}");
        let e = service_for(
            &pod_source(&pod()),
            &args(&["pod", "web", "--port", "80", "--target-port", "Bad_Name"]),
            "d",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--target-port"), "{e}");
        let e = target(&args(&["node", "n0"])).unwrap_err();
        assert!(e.to_string().contains("cannot expose"), "{e}");
    }
}
