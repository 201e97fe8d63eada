//! Kubernetes' protobuf wire format (`application/vnd.kubernetes.protobuf`) to the
//! JSON form, for request bodies: client-go (kubectl's typed commands such as
//! `kubectl create deployment`, since 1.32) sends built-in kinds as protobuf and does
//! not fall back to JSON. Responses stay JSON (clients also accept it).
//!
//! The body is `k8s\0` + a `runtime.Unknown` (typeMeta, raw, ...); `raw` is the
//! object's message from the vendored `generated.proto` files (their field names are
//! the JSON names). Kubernetes' special messages become their JSON forms: `Time` and
//! `MicroTime` RFC 3339 strings, `IntOrString` a number or string, `Quantity` a string,
//! `RawExtension`/`FieldsV1` embedded JSON; bytes are base64.

use std::sync::OnceLock;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as PValue,
};
use serde_json::{Map, Value};

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";
const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/k8s_descriptor.bin"))[..])
            .expect("the descriptor set built by build.rs decodes")
    })
}

/// The message of `apiVersion`/`kind`: `v1` -> `k8s.io.api.core.v1`, `apps/v1` ->
/// `k8s.io.api.apps.v1`; meta kinds (DeleteOptions, Status) from meta/v1.
fn message_of(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.split_once('/').unwrap_or(("core", api_version));
    let group = group.split('.').next().unwrap_or(group);
    pool()
        .get_message_by_name(&format!("k8s.io.api.{group}.{version}.{kind}"))
        .or_else(|| pool().get_message_by_name(&format!("{META}.{kind}")))
}

/// A protobuf request body as Kubernetes JSON (with apiVersion and kind).
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("not Kubernetes protobuf (no k8s\\0 prefix)")?;
    let unknown = pool()
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .ok_or("no runtime.Unknown")?;
    let env = DynamicMessage::decode(unknown, rest).map_err(|e| format!("envelope: {e}"))?;
    let tm = env
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned());
    let text = |m: &Option<DynamicMessage>, f: &str| {
        m.as_ref()
            .and_then(|m| {
                m.get_field_by_name(f)
                    .and_then(|v| v.as_str().map(String::from))
            })
            .unwrap_or_default()
    };
    let (api_version, kind) = (text(&tm, "apiVersion"), text(&tm, "kind"));
    let raw = env
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let desc = message_of(&api_version, &kind)
        .ok_or_else(|| format!("no protobuf schema for {api_version} {kind}"))?;
    let msg = DynamicMessage::decode(desc, raw).map_err(|e| format!("{kind}: {e}"))?;
    let mut v = message(&msg);
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

fn message(m: &DynamicMessage) -> Value {
    let d = m.descriptor();
    let get = |f: &str| m.get_field_by_name(f);
    match d.full_name() {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time"
        | "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let s = get("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
            let n = get("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
            if s == 0 && n == 0 {
                return Value::Null;
            }
            return Timestamp::new(s, n)
                .map(|t| Value::String(t.to_string()))
                .unwrap_or(Value::Null);
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            return if get("type").and_then(|v| v.as_i64()).unwrap_or(0) == 1 {
                Value::String(
                    get("strVal")
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                )
            } else {
                Value::from(get("intVal").and_then(|v| v.as_i32()).unwrap_or(0))
            };
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => {
            return Value::String(
                get("string")
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            );
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => {
            let ns = get("duration").and_then(|v| v.as_i64()).unwrap_or(0);
            return Value::String(format!("{ns}ns"));
        }
        "k8s.io.apimachinery.pkg.runtime.RawExtension"
        | "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = get("raw")
                .or_else(|| get("Raw"))
                .and_then(|v| v.as_bytes().cloned())
                .unwrap_or_default();
            return serde_json::from_slice(&raw).unwrap_or(Value::Null);
        }
        _ => {}
    }
    let mut out = Map::new();
    for (f, v) in m.fields() {
        let v = value(v);
        if !v.is_null() {
            out.insert(f.name().to_string(), v);
        }
    }
    Value::Object(out)
}

fn value(v: &PValue) -> Value {
    match v {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(n) => Value::from(*n),
        PValue::I64(n) => Value::from(*n),
        PValue::U32(n) => Value::from(*n),
        PValue::U64(n) => Value::from(*n),
        PValue::F32(n) => Value::from(f64::from(*n)),
        PValue::F64(n) => Value::from(*n),
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::EnumNumber(n) => Value::from(*n),
        PValue::Message(m) => message(m),
        PValue::List(items) => Value::Array(items.iter().map(value).collect()),
        PValue::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                out.insert(key, value(v));
            }
            Value::Object(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body kubectl 1.37.1 sent for `kubectl create deployment d3 --image=whoami`
    /// (captured with `-v=9`).
    const CREATE_DEPLOYMENT: &str = concat!(
        "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412a9010a1d0a02643312001a0022002a0032003800",
        "42005a090a0361707012026433127a0801120b0a090a03617070120264331a610a1b0a0012001a0022002a0032003800",
        "42005a090a0361707012026433124212240a0677686f616d69120677686f616d692a0042006a00720080010088010090",
        "0100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018",
        "002000280038001a002200",
    );

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn kubectl_create_deployment_decodes() {
        let v = to_json(&hex(CREATE_DEPLOYMENT)).unwrap();
        assert_eq!(v["kind"], "Deployment");
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["metadata"]["name"], "d3");
        assert_eq!(v["metadata"]["labels"]["app"], "d3");
        assert!(v["metadata"].get("creationTimestamp").is_none(), "{v}");
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "d3");
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            (c["name"].as_str(), c["image"].as_str()),
            (Some("whoami"), Some("whoami"))
        );
        // And it converts like the JSON kubectl would have sent.
        use crate::K8sKind;
        let d = kube_lite_proto::v1::Deployment::from_json(v).unwrap();
        assert_eq!(
            d.spec.unwrap().template.unwrap().spec.unwrap().containers[0].image,
            "whoami"
        );
    }

    #[test]
    fn junk_is_an_error() {
        assert!(to_json(b"{}").is_err());
        assert!(to_json(b"k8s\0\xff\xff").is_err());
    }
}
