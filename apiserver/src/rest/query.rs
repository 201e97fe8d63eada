//! Query parameters and selectors of REST requests (pure).

use std::collections::HashMap;

use kube_lite_k8s::K8sKind;
use kube_lite_proto::labels::Selector;

/// The query string as key → value (the last one wins, as Go's `Get`).
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        if let Some(q) = q {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                m.insert(decode(k), decode(v));
            }
        }
        Query(m)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    pub fn str(&self, k: &str) -> &str {
        self.get(k).unwrap_or("")
    }
    /// `true`/`1` (Go's strconv.ParseBool accepts t, T, TRUE, true, True, 1).
    pub fn flag(&self, k: &str) -> bool {
        matches!(
            self.get(k),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
    /// An integer parameter, `Err` naming it when it is not one.
    pub fn int(&self, k: &str) -> Result<Option<i64>, String> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{k}: invalid value {v:?}: must be an integer")),
        }
    }
}

/// Percent-decoding (`+` is a space, as in forms); invalid escapes are kept as they are.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A parsed field selector: `metadata.name=web,status.phase!=Running`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldTerm>);

impl FieldSelector {
    /// Parses and checks every field against the kind's selectable fields.
    pub fn parse<R: K8sKind>(s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: {part:?}; can't understand it"));
            };
            let field = field.trim();
            let known = matches!(field, "metadata.name" | "metadata.namespace")
                || R::SELECTABLE_FIELDS.contains(&field);
            if !known {
                let mut all = vec!["metadata.name", "metadata.namespace"];
                all.extend_from_slice(R::SELECTABLE_FIELDS);
                return Err(format!(
                    "field label not supported: {field} (for {}: {})",
                    R::PLURAL,
                    all.join(", ")
                ));
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `spec.nodeName=X` when the selector has one (the store filters it).
    pub fn node_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|t| t.equal && t.field == "spec.nodeName")
            .map(|t| t.value.as_str())
    }

    pub fn matches<R: K8sKind>(&self, o: &R) -> bool {
        self.0.iter().all(|t| {
            let v = match t.field.as_str() {
                "metadata.name" => o.name().to_string(),
                "metadata.namespace" => o.namespace().to_string(),
                f => o.selectable_field(f).unwrap_or_default(),
            };
            (v == t.value) == t.equal
        })
    }
}

/// A label selector as the store parses it (the error names the parameter).
pub fn label_selector(s: &str) -> Result<Selector, String> {
    Selector::parse(s).map_err(|e| format!("labelSelector: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lite_core::Resource;
    use kube_lite_proto::v1::{Pod, PodSpec, PodStatus};

    #[test]
    fn query_strings() {
        let q = Query::parse(Some(
            "watch=1&labelSelector=app%3Dweb%2Ctier+in+(a)&x&timeoutSeconds=5&bad=%zz",
        ));
        assert!(q.flag("watch"));
        assert_eq!(q.str("labelSelector"), "app=web,tier in (a)");
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.int("timeoutSeconds").unwrap(), Some(5));
        assert!(q.int("labelSelector").is_err());
        assert_eq!(q.str("bad"), "%zz");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("a%2"), "a%2");
    }

    #[test]
    fn field_selectors() {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.meta_mut().name = "web".into();
        p.meta_mut().namespace = "default".into();
        let s = FieldSelector::parse::<Pod>("metadata.name=web,status.phase!=Failed").unwrap();
        assert!(s.matches(&p));
        let s = FieldSelector::parse::<Pod>("spec.nodeName==n2").unwrap();
        assert_eq!(s.node_name(), Some("n2"));
        assert!(!s.matches(&p));
        let e = FieldSelector::parse::<Pod>("spec.bogus=1").unwrap_err();
        assert!(
            e.contains("spec.bogus") && e.contains("status.phase"),
            "{e}"
        );
        assert!(FieldSelector::parse::<Pod>("junk").is_err());
        assert!(FieldSelector::parse::<Pod>("").unwrap().is_empty());
    }
}
