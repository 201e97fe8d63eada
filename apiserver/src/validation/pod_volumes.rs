//! Validation of issue 13's env sources (configMapKeyRef, secretKeyRef, envFrom),
//! volumes, volumeMounts and fsGroup. Every error names the field path and the rule;
//! every count and size a request controls is bounded.

use std::collections::HashSet;

use kube_lite_core::quantity::parse_quantity;
use kube_lite_proto::v1::{
    Container, DownwardApiVolumeFile, EnvFromSource, KeySelector, KeyToPath, PodSpec,
    ProjectedVolumeSource, Volume, VolumeMount,
};

use super::{is_dns1123_label, is_dns1123_subdomain, R};
use crate::error::{quote, ApiError};

pub const MAX_VOLUMES: usize = 128;
pub const MAX_MOUNTS: usize = 128;
pub const MAX_ENV_FROM: usize = 64;
pub const MAX_ITEMS: usize = 1024;
pub const MAX_PATH: usize = 4096;
/// Largest emptyDir sizeLimit (a tmpfs of Memory is sized by it): 1 TiB.
pub const MAX_SIZE_LIMIT: i64 = 1 << 40;
const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// A ConfigMap/Secret key: `[-._a-zA-Z0-9]+`, at most 253 characters (Kubernetes').
pub fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// configMapKeyRef / secretKeyRef at `f` (`spec.containers[0].env[1].value_from.secret_key_ref`).
pub fn check_key_ref(f: &str, k: &KeySelector) -> R {
    if !is_dns1123_subdomain(&k.name) {
        return Err(ApiError::invalid(
            format!("{f}.name"),
            format!("{} must be a DNS-1123 subdomain", quote(&k.name)),
        ));
    }
    if !is_config_key(&k.key) {
        return Err(ApiError::invalid(
            format!("{f}.key"),
            format!(
                "{} must consist of alphanumeric characters, '-', '_' or '.' (at most 253)",
                quote(&k.key)
            ),
        ));
    }
    Ok(())
}

fn check_env_from(f: &str, e: &EnvFromSource) -> R {
    let r = match (&e.config_map_ref, &e.secret_ref) {
        (Some(r), None) => ("config_map_ref", r),
        (None, Some(r)) => ("secret_ref", r),
        _ => {
            return Err(ApiError::invalid(
                f,
                "must specify exactly one of config_map_ref, secret_ref",
            ))
        }
    };
    if !is_dns1123_subdomain(&r.1.name) {
        return Err(ApiError::invalid(
            format!("{f}.{}.name", r.0),
            format!("{} must be a DNS-1123 subdomain", quote(&r.1.name)),
        ));
    }
    if e.prefix.len() > 253 || e.prefix.contains('=') || e.prefix.contains('\0') {
        return Err(ApiError::invalid(
            format!("{f}.prefix"),
            "must be at most 253 characters and contain no '=' or NUL",
        ));
    }
    Ok(())
}

/// No `..` element, at most [`MAX_PATH`] bytes, no NUL.
fn clean_path(f: &str, p: &str) -> R {
    if p.len() > MAX_PATH || p.contains('\0') {
        return Err(ApiError::invalid(
            f,
            format!("must be at most {MAX_PATH} bytes with no NUL"),
        ));
    }
    if p.split('/').any(|e| e == "..") {
        return Err(ApiError::invalid(
            f,
            format!("{} must not contain '..'", quote(p)),
        ));
    }
    Ok(())
}

fn relative_path(f: &str, p: &str) -> R {
    if p.is_empty() {
        return Err(ApiError::invalid(f, "is required"));
    }
    if p.starts_with('/') {
        return Err(ApiError::invalid(
            f,
            format!("{} must be a relative path", quote(p)),
        ));
    }
    clean_path(f, p)
}

fn check_mode(f: &str, m: Option<i32>) -> R {
    match m {
        Some(m) if !(0..=0o777).contains(&m) => Err(ApiError::invalid(
            f,
            format!("must be a number between 0 and 0777 (octal), both inclusive (got {m})"),
        )),
        _ => Ok(()),
    }
}

fn check_items(f: &str, items: &[KeyToPath]) -> R {
    if items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(f, format!("at most {MAX_ITEMS} items")));
    }
    let mut paths = HashSet::new();
    for (i, it) in items.iter().enumerate() {
        if !is_config_key(&it.key) {
            return Err(ApiError::invalid(
                format!("{f}[{i}].key"),
                format!("{} is not a valid key", quote(&it.key)),
            ));
        }
        relative_path(&format!("{f}[{i}].path"), &it.path)?;
        if it.path.starts_with("..") {
            return Err(ApiError::invalid(
                format!("{f}[{i}].path"),
                "must not start with '..'",
            ));
        }
        if !paths.insert(it.path.as_str()) {
            return Err(ApiError::invalid(
                format!("{f}[{i}].path"),
                format!("duplicate path {}", quote(&it.path)),
            ));
        }
        check_mode(&format!("{f}[{i}].mode"), it.mode)?;
    }
    Ok(())
}

fn check_volume(f: &str, v: &Volume) -> R {
    if !is_dns1123_label(&v.name) {
        return Err(ApiError::invalid(
            format!("{f}.name"),
            format!("{} must be a DNS-1123 label", quote(&v.name)),
        ));
    }
    let set = [
        v.empty_dir.is_some(),
        v.config_map.is_some(),
        v.secret.is_some(),
        v.host_path.is_some(),
        v.downward_api.is_some(),
        v.projected.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(ApiError::invalid(
            f,
            "must specify exactly one of empty_dir, config_map, secret, host_path, downward_api, projected (other volume types are not supported by kube-lite)",
        ));
    }
    if let Some(p) = &v.projected {
        check_projected(&format!("{f}.projected"), p)?;
    }
    if let Some(e) = &v.empty_dir {
        if !e.medium.is_empty() && e.medium != "Memory" {
            return Err(ApiError::invalid(
                format!("{f}.empty_dir.medium"),
                format!("{} is not supported (\"\" or Memory)", quote(&e.medium)),
            ));
        }
        if !e.size_limit.is_empty() {
            let field = format!("{f}.empty_dir.size_limit");
            let q = parse_quantity(&e.size_limit).map_err(|m| ApiError::invalid(&field, m))?;
            let bytes = q.millis() / 1000;
            if bytes <= 0 || bytes > MAX_SIZE_LIMIT {
                return Err(ApiError::invalid(
                    field,
                    "must be more than 0 and at most 1Ti",
                ));
            }
        }
    }
    if let Some(c) = &v.config_map {
        if !is_dns1123_subdomain(&c.name) {
            return Err(ApiError::invalid(
                format!("{f}.config_map.name"),
                format!("{} must be a DNS-1123 subdomain", quote(&c.name)),
            ));
        }
        check_items(&format!("{f}.config_map.items"), &c.items)?;
        check_mode(&format!("{f}.config_map.default_mode"), c.default_mode)?;
    }
    if let Some(s) = &v.secret {
        if !is_dns1123_subdomain(&s.secret_name) {
            return Err(ApiError::invalid(
                format!("{f}.secret.secret_name"),
                format!("{} must be a DNS-1123 subdomain", quote(&s.secret_name)),
            ));
        }
        check_items(&format!("{f}.secret.items"), &s.items)?;
        check_mode(&format!("{f}.secret.default_mode"), s.default_mode)?;
    }
    if let Some(h) = &v.host_path {
        let field = format!("{f}.host_path.path");
        if !h.path.starts_with('/') {
            return Err(ApiError::invalid(field, "must be an absolute path"));
        }
        clean_path(&field, &h.path)?;
        if !HOST_PATH_TYPES.contains(&h.r#type.as_str()) {
            return Err(ApiError::invalid(
                format!("{f}.host_path.type"),
                format!(
                    "{} is not supported (\"\", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice)",
                    quote(&h.r#type)
                ),
            ));
        }
    }
    if let Some(d) = &v.downward_api {
        let f = format!("{f}.downward_api");
        check_mode(&format!("{f}.default_mode"), d.default_mode)?;
        check_downwaritems(&f, &d.items)?;
    }
    Ok(())
}

/// A projected volume: configMap, secret and downwardAPI sources (serviceAccountToken
/// refused: kube-lite has no service accounts), their item paths unique across sources,
/// the modes of the volume (a projection has no default_mode of its own).
fn check_projected(f: &str, p: &ProjectedVolumeSource) -> R {
    check_mode(&format!("{f}.default_mode"), p.default_mode)?;
    if p.sources.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            format!("{f}.sources"),
            format!("at most {MAX_ITEMS} sources"),
        ));
    }
    let mut paths = HashSet::new();
    for (j, s) in p.sources.iter().enumerate() {
        let fj = format!("{f}.sources[{j}]");
        if s.service_account_token.is_some() {
            return Err(ApiError::invalid(
                format!("{fj}.service_account_token"),
                "is not supported by kube-lite (it has no service accounts or tokens for them)",
            ));
        }
        let set = [
            s.config_map.is_some(),
            s.secret.is_some(),
            s.downward_api.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(ApiError::invalid(
                &fj,
                "must specify exactly one of config_map, secret, downward_api (other projections are not supported by kube-lite)",
            ));
        }
        let own_mode = |field: &str, m: Option<i32>| -> R {
            if m.is_some() {
                return Err(ApiError::invalid(
                    format!("{fj}.{field}.default_mode"),
                    "is not a field of a projection (use projected.default_mode)",
                ));
            }
            Ok(())
        };
        let mut item_paths: Vec<&str> = Vec::new();
        if let Some(c) = &s.config_map {
            if !is_dns1123_subdomain(&c.name) {
                return Err(ApiError::invalid(
                    format!("{fj}.config_map.name"),
                    format!("{} must be a DNS-1123 subdomain", quote(&c.name)),
                ));
            }
            own_mode("config_map", c.default_mode)?;
            check_items(&format!("{fj}.config_map.items"), &c.items)?;
            item_paths.extend(c.items.iter().map(|i| i.path.as_str()));
        }
        if let Some(c) = &s.secret {
            if !is_dns1123_subdomain(&c.secret_name) {
                return Err(ApiError::invalid(
                    format!("{fj}.secret.secret_name"),
                    format!("{} must be a DNS-1123 subdomain", quote(&c.secret_name)),
                ));
            }
            own_mode("secret", c.default_mode)?;
            check_items(&format!("{fj}.secret.items"), &c.items)?;
            item_paths.extend(c.items.iter().map(|i| i.path.as_str()));
        }
        if let Some(d) = &s.downward_api {
            own_mode("downward_api", d.default_mode)?;
            check_downwaritems(&format!("{fj}.downward_api"), &d.items)?;
            item_paths.extend(d.items.iter().map(|i| i.path.as_str()));
        }
        for path in item_paths {
            if !paths.insert(path.to_string()) {
                return Err(ApiError::invalid(
                    &fj,
                    format!("conflicting duplicate paths: {}", quote(path)),
                ));
            }
        }
    }
    Ok(())
}

/// The items of a downwardAPI volume or projection (`f`: its field).
fn check_downwaritems(f: &str, items: &[DownwardApiVolumeFile]) -> R {
    if items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            format!("{f}.items"),
            format!("at most {MAX_ITEMS} items"),
        ));
    }
    let mut paths = HashSet::new();
    for (i, it) in items.iter().enumerate() {
        let fi = format!("{f}.items[{i}]");
        relative_path(&format!("{fi}.path"), &it.path)?;
        if it.path.starts_with("..") || !paths.insert(it.path.as_str()) {
            return Err(ApiError::invalid(
                format!("{fi}.path"),
                format!("{} must be unique and not start with '..'", quote(&it.path)),
            ));
        }
        check_mode(&format!("{fi}.mode"), it.mode)?;
        match (&it.field_ref, &it.resource_field_ref) {
            (Some(fr), None) => {
                let p = fr.field_path.as_str();
                let ok = [
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "metadata.labels",
                    "metadata.annotations",
                ]
                .contains(&p)
                    || ((p.starts_with("metadata.labels['")
                        || p.starts_with("metadata.annotations['"))
                        && p.ends_with("']"));
                if !ok {
                    return Err(ApiError::invalid(
                            format!("{fi}.field_ref.field_path"),
                            format!("{} is not supported (metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['k'], metadata.annotations['k'])", quote(p)),
                        ));
                }
            }
            (None, Some(rr)) => {
                super::pod_extras::check_resource_field_ref(
                    &format!("{fi}.resource_field_ref"),
                    rr,
                )?;
            }
            _ => {
                return Err(ApiError::invalid(
                    fi,
                    "must specify exactly one of field_ref, resource_field_ref",
                ))
            }
        }
    }
    Ok(())
}

/// `spec.volumes` (fsGroup is checked with the rest of spec.security_context).
pub fn check_spec(spec: &PodSpec) -> R {
    if spec.volumes.len() > MAX_VOLUMES {
        return Err(ApiError::invalid(
            "spec.volumes",
            format!("at most {MAX_VOLUMES} volumes"),
        ));
    }
    let mut names = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let f = format!("spec.volumes[{i}]");
        check_volume(&f, v)?;
        if !names.insert(v.name.as_str()) {
            return Err(ApiError::invalid(
                format!("{f}.name"),
                format!("duplicate volume name {}", quote(&v.name)),
            ));
        }
    }
    Ok(())
}

fn check_mount(f: &str, m: &VolumeMount, spec: &PodSpec) -> R {
    if !spec.volumes.iter().any(|v| v.name == m.name) {
        return Err(ApiError::invalid(
            format!("{f}.name"),
            format!("volume {} not found in spec.volumes", quote(&m.name)),
        ));
    }
    let field = format!("{f}.mount_path");
    if !m.mount_path.starts_with('/') {
        return Err(ApiError::invalid(field, "must be an absolute path"));
    }
    clean_path(&field, &m.mount_path)?;
    if m.mount_path.trim_end_matches('/').is_empty() {
        return Err(ApiError::invalid(field, "must not be \"/\""));
    }
    if !m.sub_path.is_empty() {
        relative_path(&format!("{f}.sub_path"), &m.sub_path)?;
    }
    Ok(())
}

/// A container's `env_from`, `volume_mounts` (against the pod's volumes), at `f`.
pub fn check_container(f: &str, c: &Container, spec: &PodSpec) -> R {
    if c.env_from.len() > MAX_ENV_FROM {
        return Err(ApiError::invalid(
            format!("{f}.env_from"),
            format!("at most {MAX_ENV_FROM} sources"),
        ));
    }
    for (j, e) in c.env_from.iter().enumerate() {
        check_env_from(&format!("{f}.env_from[{j}]"), e)?;
    }
    if c.volume_mounts.len() > MAX_MOUNTS {
        return Err(ApiError::invalid(
            format!("{f}.volume_mounts"),
            format!("at most {MAX_MOUNTS} mounts"),
        ));
    }
    let mut paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let fm = format!("{f}.volume_mounts[{j}]");
        check_mount(&fm, m, spec)?;
        if !paths.insert(m.mount_path.trim_end_matches('/')) {
            return Err(ApiError::invalid(
                format!("{fm}.mount_path"),
                format!("{} must be unique", quote(&m.mount_path)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_proto::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, ObjectSelector,
    };

    fn spec_with(v: Volume) -> PodSpec {
        PodSpec {
            volumes: vec![v],
            ..Default::default()
        }
    }

    fn msg(r: R) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn projected_volumes_take_config_maps_secrets_and_downward_api_only() {
        use kube_lite_proto::v1::{
            DownwardApiVolumeSource, ObjectFieldSelector, SecretVolumeSource,
            ServiceAccountTokenProjection, VolumeProjection,
        };
        let item = |path: &str| KeyToPath {
            key: "k".into(),
            path: path.into(),
            mode: None,
        };
        let cm = |path: &str| VolumeProjection {
            config_map: Some(ConfigMapVolumeSource {
                name: "cm".into(),
                items: vec![item(path)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let projected = |sources: Vec<VolumeProjection>| {
            spec_with(Volume {
                name: "all".into(),
                projected: Some(ProjectedVolumeSource {
                    sources,
                    default_mode: Some(0o440),
                }),
                ..Default::default()
            })
        };
        let good = projected(vec![
            cm("a"),
            VolumeProjection {
                secret: Some(SecretVolumeSource {
                    secret_name: "s".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardApiVolumeSource {
                    items: vec![DownwardApiVolumeFile {
                        path: "name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                        }),
                        ..Default::default()
                    }],
                    default_mode: None,
                }),
                ..Default::default()
            },
        ]);
        check_spec(&good).unwrap();
        let token = projected(vec![VolumeProjection {
            service_account_token: Some(ServiceAccountTokenProjection {
                path: "token".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let m = msg(check_spec(&token));
        assert!(
            m.contains("spec.volumes[0].projected.sources[0].service_account_token")
                && m.contains("not supported"),
            "{m}"
        );
        let empty = projected(vec![VolumeProjection::default()]);
        assert!(msg(check_spec(&empty)).contains("spec.volumes[0].projected.sources[0]"));
        let dup = projected(vec![cm("a"), cm("a")]);
        assert!(msg(check_spec(&dup)).contains("conflicting duplicate paths"));
        let mut own = projected(vec![cm("a")]);
        own.volumes[0].projected.as_mut().unwrap().sources[0]
            .config_map
            .as_mut()
            .unwrap()
            .default_mode = Some(0o600);
        assert!(msg(check_spec(&own))
            .contains("spec.volumes[0].projected.sources[0].config_map.default_mode"));
    }

    #[test]
    fn volumes_name_the_field() {
        let none = Volume {
            name: "v".into(),
            ..Default::default()
        };
        assert!(msg(check_spec(&spec_with(none))).contains("spec.volumes[0]"));
        let mem = Volume {
            name: "v".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: "Memory".into(),
                size_limit: "0".into(),
            }),
            ..Default::default()
        };
        assert!(msg(check_spec(&spec_with(mem))).contains("spec.volumes[0].empty_dir.size_limit"));
        let cm = Volume {
            name: "v".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cm".into(),
                items: vec![KeyToPath {
                    key: "k".into(),
                    path: "../x".into(),
                    mode: None,
                }],
                default_mode: Some(0o1777),
                optional: false,
            }),
            ..Default::default()
        };
        assert!(
            msg(check_spec(&spec_with(cm))).contains("spec.volumes[0].config_map.items[0].path")
        );
        let host = Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "var".into(),
                r#type: String::new(),
            }),
            ..Default::default()
        };
        assert!(msg(check_spec(&spec_with(host))).contains("spec.volumes[0].host_path.path"));
        let ok = Volume {
            name: "d".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        let spec = PodSpec {
            volumes: vec![ok.clone(), ok],
            ..Default::default()
        };
        assert!(msg(check_spec(&spec)).contains("duplicate volume name"));
    }

    #[test]
    fn mounts_and_env_from_name_the_field() {
        let spec = spec_with(Volume {
            name: "d".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        let mut c = Container {
            volume_mounts: vec![VolumeMount {
                name: "nope".into(),
                mount_path: "/d".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(msg(check_container("spec.containers[0]", &c, &spec))
            .contains("spec.containers[0].volume_mounts[0].name"));
        c.volume_mounts[0].name = "d".into();
        c.volume_mounts[0].sub_path = "/abs".into();
        assert!(msg(check_container("spec.containers[0]", &c, &spec))
            .contains("volume_mounts[0].sub_path"));
        c.volume_mounts[0].sub_path = String::new();
        assert!(check_container("spec.containers[0]", &c, &spec).is_ok());
        c.env_from = vec![EnvFromSource {
            prefix: String::new(),
            config_map_ref: Some(ObjectSelector {
                name: "cm".into(),
                optional: false,
            }),
            secret_ref: Some(ObjectSelector::default()),
        }];
        assert!(msg(check_container("spec.containers[0]", &c, &spec))
            .contains("spec.containers[0].env_from[0]"));
        let k = KeySelector {
            name: "cm".into(),
            key: "a/b".into(),
            optional: false,
        };
        assert!(msg(check_key_ref("x.config_map_key_ref", &k)).contains("x.config_map_key_ref.key"));
    }
}
