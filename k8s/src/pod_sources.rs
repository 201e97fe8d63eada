//! Pod: conversion of env sources (`env[].valueFrom`, `envFrom`), `volumeMounts`,
//! `volumes` and `securityContext.fsGroup` (issue 13). Kept apart from `pod.rs` so the
//! other pod fields' conversions merge mechanically.
//!
//! A volume whose source kube-lite does not serve (nfs, csi…) converts to a volume with
//! no source, which the apiserver refuses naming `spec.volumes[i]`; a projection it does
//! not serve (clusterTrustBundle, podCertificate) to an empty projection, refused naming
//! `spec.volumes[i].projected.sources[j]` (serviceAccountToken converts, to be refused
//! by name).

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_lite_proto::v1::{
    ConfigMapVolumeSource, DownwardApiVolumeFile, DownwardApiVolumeSource, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HostPathVolumeSource, KeySelector, KeyToPath,
    ObjectFieldSelector, ObjectSelector, ProjectedVolumeSource, ResourceFieldSelector,
    SecretVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};

use crate::{opt, opt_vec};

fn yes(b: bool) -> Option<bool> {
    b.then_some(true)
}

pub(crate) fn env_to_k8s(env: &[EnvVar]) -> Option<Vec<corev1::EnvVar>> {
    opt_vec(
        env.iter()
            .map(|e| corev1::EnvVar {
                name: e.name.clone(),
                value: if e.value_from.is_some() {
                    opt(&e.value)
                } else {
                    Some(e.value.clone())
                },
                value_from: e.value_from.as_ref().map(|s| corev1::EnvVarSource {
                    field_ref: s.field_ref.as_ref().map(field_to_k8s),
                    resource_field_ref: s.resource_field_ref.as_ref().map(resource_to_k8s),
                    config_map_key_ref: s.config_map_key_ref.as_ref().map(|k| {
                        corev1::ConfigMapKeySelector {
                            name: k.name.clone(),
                            key: k.key.clone(),
                            optional: yes(k.optional),
                        }
                    }),
                    secret_key_ref: s
                        .secret_key_ref
                        .as_ref()
                        .map(|k| corev1::SecretKeySelector {
                            name: k.name.clone(),
                            key: k.key.clone(),
                            optional: yes(k.optional),
                        }),
                    ..Default::default()
                }),
            })
            .collect(),
    )
}

pub(crate) fn env_from_k8s(env: Option<Vec<corev1::EnvVar>>) -> Vec<EnvVar> {
    env.unwrap_or_default()
        .into_iter()
        .map(|e| EnvVar {
            name: e.name,
            value: e.value.unwrap_or_default(),
            value_from: e.value_from.map(|s| EnvVarSource {
                field_ref: s.field_ref.map(field_from_k8s),
                resource_field_ref: s.resource_field_ref.map(resource_from_k8s),
                config_map_key_ref: s.config_map_key_ref.map(|k| KeySelector {
                    name: k.name,
                    key: k.key,
                    optional: k.optional.unwrap_or(false),
                }),
                secret_key_ref: s.secret_key_ref.map(|k| KeySelector {
                    name: k.name,
                    key: k.key,
                    optional: k.optional.unwrap_or(false),
                }),
            }),
        })
        .collect()
}

fn field_to_k8s(f: &ObjectFieldSelector) -> corev1::ObjectFieldSelector {
    corev1::ObjectFieldSelector {
        api_version: None,
        field_path: f.field_path.clone(),
    }
}

fn field_from_k8s(f: corev1::ObjectFieldSelector) -> ObjectFieldSelector {
    ObjectFieldSelector {
        field_path: f.field_path,
    }
}

fn resource_to_k8s(r: &ResourceFieldSelector) -> corev1::ResourceFieldSelector {
    corev1::ResourceFieldSelector {
        container_name: opt(&r.container_name),
        divisor: opt(&r.divisor).map(Quantity),
        resource: r.resource.clone(),
    }
}

fn resource_from_k8s(r: corev1::ResourceFieldSelector) -> ResourceFieldSelector {
    ResourceFieldSelector {
        container_name: r.container_name.unwrap_or_default(),
        resource: r.resource,
        divisor: r.divisor.map(|q| q.0).unwrap_or_default(),
    }
}

pub(crate) fn env_from_to_k8s(v: &[EnvFromSource]) -> Option<Vec<corev1::EnvFromSource>> {
    opt_vec(
        v.iter()
            .map(|e| corev1::EnvFromSource {
                prefix: opt(&e.prefix),
                config_map_ref: e
                    .config_map_ref
                    .as_ref()
                    .map(|r| corev1::ConfigMapEnvSource {
                        name: r.name.clone(),
                        optional: yes(r.optional),
                    }),
                secret_ref: e.secret_ref.as_ref().map(|r| corev1::SecretEnvSource {
                    name: r.name.clone(),
                    optional: yes(r.optional),
                }),
            })
            .collect(),
    )
}

pub(crate) fn env_from_from_k8s(v: Option<Vec<corev1::EnvFromSource>>) -> Vec<EnvFromSource> {
    v.unwrap_or_default()
        .into_iter()
        .map(|e| EnvFromSource {
            prefix: e.prefix.unwrap_or_default(),
            config_map_ref: e.config_map_ref.map(|r| ObjectSelector {
                name: r.name,
                optional: r.optional.unwrap_or(false),
            }),
            secret_ref: e.secret_ref.map(|r| ObjectSelector {
                name: r.name,
                optional: r.optional.unwrap_or(false),
            }),
        })
        .collect()
}

pub(crate) fn mounts_to_k8s(v: &[VolumeMount]) -> Option<Vec<corev1::VolumeMount>> {
    opt_vec(
        v.iter()
            .map(|m| corev1::VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: yes(m.read_only),
                sub_path: opt(&m.sub_path),
                ..Default::default()
            })
            .collect(),
    )
}

pub(crate) fn mounts_from_k8s(v: Option<Vec<corev1::VolumeMount>>) -> Vec<VolumeMount> {
    v.unwrap_or_default()
        .into_iter()
        .map(|m| VolumeMount {
            name: m.name,
            mount_path: m.mount_path,
            read_only: m.read_only.unwrap_or(false),
            sub_path: m.sub_path.unwrap_or_default(),
        })
        .collect()
}

fn items_to_k8s(v: &[KeyToPath]) -> Option<Vec<corev1::KeyToPath>> {
    opt_vec(
        v.iter()
            .map(|i| corev1::KeyToPath {
                key: i.key.clone(),
                path: i.path.clone(),
                mode: i.mode,
                ..Default::default()
            })
            .collect(),
    )
}

fn items_from_k8s(v: Option<Vec<corev1::KeyToPath>>) -> Vec<KeyToPath> {
    v.unwrap_or_default()
        .into_iter()
        .map(|i| KeyToPath {
            key: i.key,
            path: i.path,
            mode: i.mode,
        })
        .collect()
}

pub(crate) fn volumes_to_k8s(v: &[Volume]) -> Option<Vec<corev1::Volume>> {
    opt_vec(
        v.iter()
            .map(|v| corev1::Volume {
                name: v.name.clone(),
                empty_dir: v.empty_dir.as_ref().map(|e| corev1::EmptyDirVolumeSource {
                    medium: opt(&e.medium),
                    size_limit: opt(&e.size_limit).map(Quantity),
                    ..Default::default()
                }),
                config_map: v
                    .config_map
                    .as_ref()
                    .map(|c| corev1::ConfigMapVolumeSource {
                        name: c.name.clone(),
                        items: items_to_k8s(&c.items),
                        default_mode: c.default_mode,
                        optional: yes(c.optional),
                        ..Default::default()
                    }),
                secret: v.secret.as_ref().map(|s| corev1::SecretVolumeSource {
                    secret_name: opt(&s.secret_name),
                    items: items_to_k8s(&s.items),
                    default_mode: s.default_mode,
                    optional: yes(s.optional),
                    ..Default::default()
                }),
                host_path: v.host_path.as_ref().map(|h| corev1::HostPathVolumeSource {
                    path: h.path.clone(),
                    type_: opt(&h.r#type),
                }),
                downward_api: v
                    .downward_api
                    .as_ref()
                    .map(|d| corev1::DownwardAPIVolumeSource {
                        items: downward_items_to_k8s(&d.items),
                        default_mode: d.default_mode,
                        ..Default::default()
                    }),
                projected: v.projected.as_ref().map(|p| corev1::ProjectedVolumeSource {
                    default_mode: p.default_mode,
                    sources: Some(
                        p.sources
                            .iter()
                            .map(|s| corev1::VolumeProjection {
                                config_map: s.config_map.as_ref().map(|c| {
                                    corev1::ConfigMapProjection {
                                        name: c.name.clone(),
                                        items: items_to_k8s(&c.items),
                                        optional: yes(c.optional),
                                    }
                                }),
                                secret: s.secret.as_ref().map(|c| corev1::SecretProjection {
                                    name: c.secret_name.clone(),
                                    items: items_to_k8s(&c.items),
                                    optional: yes(c.optional),
                                }),
                                downward_api: s.downward_api.as_ref().map(|d| {
                                    corev1::DownwardAPIProjection {
                                        items: downward_items_to_k8s(&d.items),
                                    }
                                }),
                                service_account_token: s.service_account_token.as_ref().map(|t| {
                                    corev1::ServiceAccountTokenProjection {
                                        audience: opt(&t.audience),
                                        expiration_seconds: (t.expiration_seconds != 0)
                                            .then_some(t.expiration_seconds),
                                        path: t.path.clone(),
                                        ..Default::default()
                                    }
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
    )
}

pub(crate) fn volumes_from_k8s(v: Option<Vec<corev1::Volume>>) -> Vec<Volume> {
    v.unwrap_or_default()
        .into_iter()
        .map(|v| Volume {
            name: v.name,
            empty_dir: v.empty_dir.map(|e| EmptyDirVolumeSource {
                medium: e.medium.unwrap_or_default(),
                size_limit: e.size_limit.map(|q| q.0).unwrap_or_default(),
            }),
            config_map: v.config_map.map(|c| ConfigMapVolumeSource {
                name: c.name,
                items: items_from_k8s(c.items),
                default_mode: c.default_mode,
                optional: c.optional.unwrap_or(false),
            }),
            secret: v.secret.map(|s| SecretVolumeSource {
                secret_name: s.secret_name.unwrap_or_default(),
                items: items_from_k8s(s.items),
                default_mode: s.default_mode,
                optional: s.optional.unwrap_or(false),
            }),
            host_path: v.host_path.map(|h| HostPathVolumeSource {
                path: h.path,
                r#type: h.type_.unwrap_or_default(),
            }),
            downward_api: v.downward_api.map(|d| DownwardApiVolumeSource {
                items: downward_items_from_k8s(d.items),
                default_mode: d.default_mode,
            }),
            projected: v.projected.map(|p| ProjectedVolumeSource {
                default_mode: p.default_mode,
                sources: p
                    .sources
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| VolumeProjection {
                        config_map: s.config_map.map(|c| ConfigMapVolumeSource {
                            name: c.name,
                            items: items_from_k8s(c.items),
                            default_mode: None,
                            optional: c.optional.unwrap_or(false),
                        }),
                        secret: s.secret.map(|c| SecretVolumeSource {
                            secret_name: c.name,
                            items: items_from_k8s(c.items),
                            default_mode: None,
                            optional: c.optional.unwrap_or(false),
                        }),
                        downward_api: s.downward_api.map(|d| DownwardApiVolumeSource {
                            items: downward_items_from_k8s(d.items),
                            default_mode: None,
                        }),
                        service_account_token: s.service_account_token.map(|t| {
                            ServiceAccountTokenProjection {
                                audience: t.audience.unwrap_or_default(),
                                expiration_seconds: t.expiration_seconds.unwrap_or(0),
                                path: t.path,
                            }
                        }),
                    })
                    .collect(),
            }),
        })
        .collect()
}

fn downward_items_to_k8s(
    items: &[DownwardApiVolumeFile],
) -> Option<Vec<corev1::DownwardAPIVolumeFile>> {
    opt_vec(
        items
            .iter()
            .map(|f| corev1::DownwardAPIVolumeFile {
                path: f.path.clone(),
                field_ref: f.field_ref.as_ref().map(field_to_k8s),
                resource_field_ref: f.resource_field_ref.as_ref().map(resource_to_k8s),
                mode: f.mode,
                ..Default::default()
            })
            .collect(),
    )
}

fn downward_items_from_k8s(
    items: Option<Vec<corev1::DownwardAPIVolumeFile>>,
) -> Vec<DownwardApiVolumeFile> {
    items
        .unwrap_or_default()
        .into_iter()
        .map(|f| DownwardApiVolumeFile {
            path: f.path,
            field_ref: f.field_ref.map(field_from_k8s),
            resource_field_ref: f.resource_field_ref.map(resource_from_k8s),
            mode: f.mode,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::K8sKind;
    use kube_lite_proto::v1::Pod;
    use serde_json::json;

    #[test]
    fn env_sources_volumes_and_fs_group_round_trip_in_kubernetes_spelling() {
        let v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "securityContext": {"fsGroup": 2000},
                "containers": [{
                    "name": "c", "image": "busybox",
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": true}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "D", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                        {"name": "E", "value": "e"}
                    ],
                    "envFrom": [{"prefix": "X_", "configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s", "optional": true}}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}, {"name": "d", "mountPath": "/d", "subPath": "x"}]
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "k", "path": "k.txt", "mode": 256}], "defaultMode": 420}},
                    {"name": "sec", "secret": {"secretName": "s", "optional": true}},
                    {"name": "d", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    {"name": "h", "hostPath": {"path": "/var/log", "type": "Directory"}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
                ]
            }
        });
        let p = Pod::from_json(v.clone()).unwrap();
        let s = p.spec.clone().unwrap();
        assert_eq!(s.security_context.as_ref().unwrap().fs_group, Some(2000));
        let c = &s.containers[0];
        let k = c.env[0].value_from.as_ref().unwrap();
        assert_eq!(k.config_map_key_ref.as_ref().unwrap().key, "k");
        assert!(k.config_map_key_ref.as_ref().unwrap().optional);
        assert_eq!(c.env_from[0].prefix, "X_");
        assert!(c.env_from[1].secret_ref.as_ref().unwrap().optional);
        assert!(c.volume_mounts[0].read_only);
        assert_eq!(
            s.volumes[0].config_map.as_ref().unwrap().items[0].mode,
            Some(256)
        );
        assert_eq!(s.volumes[2].empty_dir.as_ref().unwrap().size_limit, "16Mi");
        let out = p.to_json();
        let spec = &out["spec"];
        assert_eq!(spec["securityContext"]["fsGroup"], 2000);
        assert_eq!(
            spec["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["key"],
            "pw"
        );
        assert_eq!(
            spec["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            "cm"
        );
        assert_eq!(spec["volumes"][1]["secret"]["secretName"], "s");
        assert_eq!(
            spec["volumes"][4]["downwardAPI"]["items"][0]["path"],
            "labels"
        );
        assert_eq!(Pod::from_json(out).unwrap(), p);
    }

    #[test]
    fn projected_volumes_round_trip_and_keep_a_service_account_token_to_refuse() {
        let v = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "all", "projected": {
                "defaultMode": 288,
                "sources": [
                    {"configMap": {"name": "cm", "items": [{"key": "k", "path": "k.txt"}]}},
                    {"secret": {"name": "s", "optional": true}},
                    {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"clusterTrustBundle": {"path": "ca.pem", "name": "b"}}
                ]
            }}]}
        });
        let p = Pod::from_json(v).unwrap();
        let pv = p.spec.clone().unwrap().volumes[0]
            .projected
            .clone()
            .unwrap();
        assert_eq!(pv.default_mode, Some(288));
        assert_eq!(
            pv.sources[0].config_map.as_ref().unwrap().items[0].path,
            "k.txt"
        );
        let sec = pv.sources[1].secret.as_ref().unwrap();
        assert!(sec.secret_name == "s" && sec.optional);
        assert_eq!(
            pv.sources[2].downward_api.as_ref().unwrap().items[0].path,
            "name"
        );
        let t = pv.sources[3].service_account_token.as_ref().unwrap();
        assert_eq!((t.path.as_str(), t.expiration_seconds), ("token", 3600));
        assert_eq!(
            pv.sources[4],
            Default::default(),
            "unserved: an empty projection"
        );
        let out = p.to_json();
        let src = &out["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(src[1]["secret"]["name"], "s");
        assert_eq!(src[3]["serviceAccountToken"]["path"], "token");
        assert_eq!(Pod::from_json(out).unwrap(), p);
    }

    #[test]
    fn an_unserved_volume_source_converts_to_no_source() {
        let p = Pod::from_json(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}
        }))
        .unwrap();
        let v = &p.spec.unwrap().volumes[0];
        assert_eq!(v.name, "n");
        assert!(v.empty_dir.is_none() && v.config_map.is_none() && v.host_path.is_none());
    }
}
