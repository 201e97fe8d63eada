//! Patches (pure): JSON merge patch (RFC 7386) and JSON patch (RFC 6902) through the
//! `json-patch` crate, and Kubernetes' strategic merge patch with the served kinds'
//! merge keys ([`kube_lite_k8s::K8sKind::MERGE_KEYS`]).
//!
//! Strategic merge: maps merge recursively, `null` deletes a key, a list with a merge
//! key merges element by element (`$patch: delete` removes an element, new ones are
//! appended), every other list is replaced; `$patch: replace` on a map replaces it,
//! `$deleteFromPrimitiveList/<field>` removes values from a list of scalars, and the
//! ordering directives (`$setElementOrder/<field>`, `$retainKeys`) are accepted and
//! ignored (order is the live object's, then the patch's).

use serde_json::{Map, Value};

/// The patch types of `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`): applied as a strategic merge
    /// of the whole intent, creating the object when missing (no field managers).
    Apply,
}

impl PatchType {
    pub fn of(content_type: &str) -> Option<PatchType> {
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match ct.as_str() {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// `target` with `patch` applied.
pub fn apply(
    kind: PatchType,
    target: &Value,
    patch: &Value,
    merge_keys: &[(&str, &str)],
) -> Result<Value, String> {
    let mut out = target.clone();
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(&mut out, &p).map_err(|e| format!("JSON patch failed: {e}"))?;
        }
        PatchType::Merge => json_patch::merge(&mut out, patch),
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err("a strategic merge patch must be a JSON object".into());
            }
            strategic(&mut out, patch, "", merge_keys)?;
        }
    }
    Ok(out)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn merge_key<'a>(path: &str, keys: &[(&str, &'a str)]) -> Option<&'a str> {
    keys.iter().find(|(p, _)| *p == path).map(|(_, k)| *k)
}

fn strategic(
    target: &mut Value,
    patch: &Value,
    path: &str,
    keys: &[(&str, &str)],
) -> Result<(), String> {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = pm.clone();
            m.remove("$patch");
            *target = Value::Object(m);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("{path}: unknown $patch directive {other:?}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tm = target.as_object_mut().expect("object");
    for (k, v) in pm {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (tm.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        let sub = join(path, k);
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Object(_) => {
                let slot = tm.entry(k.clone()).or_insert(Value::Null);
                strategic(slot, v, &sub, keys)?;
            }
            Value::Array(items) => match merge_key(&sub, keys) {
                Some(key) => {
                    let slot = tm.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                    if !slot.is_array() {
                        *slot = Value::Array(Vec::new());
                    }
                    merge_list(slot.as_array_mut().expect("array"), items, key, &sub, keys)?;
                }
                None => {
                    let cleaned: Vec<Value> = items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .collect();
                    tm.insert(k.clone(), Value::Array(cleaned));
                }
            },
            _ => {
                tm.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(
    list: &mut Vec<Value>,
    items: &[Value],
    key: &str,
    path: &str,
    keys: &[(&str, &str)],
) -> Result<(), String> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *list = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    for item in items {
        let Some(id) = item.get(key) else {
            return Err(format!("{path}: an element has no merge key {key:?}"));
        };
        let pos = list.iter().position(|x| x.get(key) == Some(id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                list.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic(&mut list[i], item, path, keys)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic(&mut fresh, item, path, keys)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEYS: &[(&str, &str)] = &[("spec.containers", "name"), ("spec.containers.env", "name")];

    fn pod() -> Value {
        json!({"metadata": {"labels": {"a": "1", "b": "2"}},
               "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]},
                                        {"name": "d", "image": "y"}],
                        "nodeSelector": {"k": "v"}}})
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::of("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::of("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::of("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::of("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::of("application/json"), None);
    }

    #[test]
    fn merge_and_json_patch() {
        let out = apply(
            PatchType::Merge,
            &pod(),
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
            KEYS,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        // A merge patch replaces lists.
        let out = apply(
            PatchType::Merge,
            &pod(),
            &json!({"spec": {"containers": []}}),
            KEYS,
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"], json!([]));
        let out = apply(
            PatchType::Json,
            &pod(),
            &json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "z"}]),
            KEYS,
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "z");
        let e = apply(
            PatchType::Json,
            &pod(),
            &json!([{"op": "test", "path": "/x", "value": 1}]),
            KEYS,
        )
        .unwrap_err();
        assert!(e.starts_with("JSON patch failed"), "{e}");
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let out = apply(
            PatchType::Strategic,
            &pod(),
            &json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "d"}],
                "containers": [{"name": "c", "image": "x2", "env": [{"name": "B", "value": "2"}]},
                               {"name": "d", "$patch": "delete"},
                               {"name": "e", "image": "new"}],
                "nodeSelector": {"$patch": "replace", "z": "1"}}}),
            KEYS,
        )
        .unwrap();
        let cs = &out["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "x2");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(cs[1], json!({"name": "e", "image": "new"}));
        assert_eq!(out["spec"]["nodeSelector"], json!({"z": "1"}));
        let e = apply(
            PatchType::Strategic,
            &pod(),
            &json!({"spec": {"containers": [{"image": "q"}]}}),
            KEYS,
        )
        .unwrap_err();
        assert!(e.contains("merge key"), "{e}");
        let out = apply(
            PatchType::Strategic,
            &json!({"metadata": {"finalizers": ["a", "b"]}}),
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            KEYS,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }
}
