//! Kubernetes label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let err = |reason: &str| SelectorError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let mut reqs = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(check_key(key.trim()).map_err(|r| err(&r))?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEq(
                    check_key(k.trim()).map_err(|r| err(&r))?,
                    v.trim().to_string(),
                )
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Eq(
                    check_key(k.trim()).map_err(|r| err(&r))?,
                    v.trim().to_string(),
                )
            } else if let Some((k, rest)) = split_set_op(term, " notin ") {
                Requirement::NotIn(
                    check_key(k).map_err(|r| err(&r))?,
                    parse_set(rest).map_err(|r| err(&r))?,
                )
            } else if let Some((k, rest)) = split_set_op(term, " in ") {
                Requirement::In(
                    check_key(k).map_err(|r| err(&r))?,
                    parse_set(rest).map_err(|r| err(&r))?,
                )
            } else {
                Requirement::Exists(check_key(term).map_err(|r| err(&r))?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// A selector requiring every `k=v` of the map (a Service's selector).
    pub fn from_map(map: &HashMap<String, String>) -> Selector {
        let mut reqs: Vec<_> = map
            .iter()
            .map(|(k, v)| Requirement::Eq(k.clone(), v.clone()))
            .collect();
        reqs.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        Selector(reqs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// `true` when every `k=v` of `selector` is among `labels` (map-style selectors, as
/// Services and nodeSelector use). An empty map matches everything.
pub fn map_matches(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn split_terms(input: &str) -> Vec<&str> {
    // Commas inside "(...)" belong to a set.
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&input[start..]);
    out
}

fn split_set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    term.find(op)
        .map(|i| (term[..i].trim(), term[i + op.len()..].trim()))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| "a set must be written as (a,b,...)".to_string())?;
    Ok(inner
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

fn check_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("empty label key".into());
    }
    if key.contains(char::is_whitespace) || key.contains(['(', ')', '=', '!']) {
        return Err(format!("bad label key {key:?}"));
    }
    Ok(key.to_string())
}

/// A Kubernetes `LabelSelector` (matchLabels and matchExpressions) as a [`Selector`].
pub fn from_label_selector(s: &crate::v1::LabelSelector) -> Result<Selector, String> {
    let mut sel = Selector::from_map(&s.match_labels);
    for (i, e) in s.match_expressions.iter().enumerate() {
        let key = check_key(&e.key).map_err(|r| format!("match_expressions[{i}].key: {r}"))?;
        if !matches!(
            e.operator.as_str(),
            "In" | "NotIn" | "Exists" | "DoesNotExist"
        ) {
            return Err(format!(
                "match_expressions[{i}].operator: {:?} is not a valid operator (In, NotIn, Exists, DoesNotExist)",
                e.operator
            ));
        }
        let needs_values = matches!(e.operator.as_str(), "In" | "NotIn");
        if needs_values && e.values.is_empty() {
            return Err(format!(
                "match_expressions[{i}].values: must be non-empty for operator {}",
                e.operator
            ));
        }
        if !needs_values && !e.values.is_empty() {
            return Err(format!(
                "match_expressions[{i}].values: must be empty for operator {}",
                e.operator
            ));
        }
        sel.0.push(match e.operator.as_str() {
            "In" => Requirement::In(key, e.values.clone()),
            "NotIn" => Requirement::NotIn(key, e.values.clone()),
            "Exists" => Requirement::Exists(key),
            "DoesNotExist" => Requirement::NotExists(key),
            other => {
                return Err(format!(
                    "match_expressions[{i}].operator: {other:?} is not a valid operator (In, NotIn, Exists, DoesNotExist)"
                ))
            }
        });
    }
    Ok(sel)
}

impl std::fmt::Display for Selector {
    /// The selector in `-l` syntax: `app=web,tier in (a,b),!x`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Eq(k, v) => format!("{k}={v}"),
                Requirement::NotEq(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "tier in (front,back)",
            "env notin (prod)",
            "app",
            "!env",
            "app=web,tier=front",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s} should match");
        }
        let no = [
            "app=db",
            "app!=web",
            "tier in (back)",
            "tier notin (front)",
            "env",
            "!app",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(
                !Selector::parse(s).unwrap().matches(&l),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn rejects_malformed() {
        assert!(Selector::parse("a in b").is_err());
        assert!(Selector::parse("=x").is_err());
    }

    #[test]
    fn label_selectors_with_expressions() {
        use crate::v1::{LabelSelector, LabelSelectorRequirement};
        let ls = LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: vec!["a".into(), "b".into()],
            }],
        };
        let s = from_label_selector(&ls).unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (a,b)");
        let l = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&l(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "c")])));
        let mut bad = ls.clone();
        bad.match_expressions[0].operator = "Near".into();
        assert!(from_label_selector(&bad)
            .unwrap_err()
            .contains("not a valid operator"));
        bad.match_expressions[0].operator = "Exists".into();
        assert!(from_label_selector(&bad)
            .unwrap_err()
            .contains("must be empty"));
    }
}
