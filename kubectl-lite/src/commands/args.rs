//! Argument rules several commands share (pure, unit-tested).

use crate::api::Kind;
use anyhow::{anyhow, bail, Result};

/// The kind named by `resource`; `KIND/NAME` (`get pod/web`) puts NAME first in `names`
/// and leaves KIND in `resource`.
pub fn kind_and_names(resource: &mut String, names: &mut Vec<String>) -> Result<Kind> {
    if let Some((k, n)) = resource.clone().split_once('/') {
        names.insert(0, n.to_string());
        *resource = k.to_string();
    }
    Kind::parse(resource).map_err(|e| anyhow!(e))
}

/// `all` and `pods,svc`: several kinds (`None` for one kind).
pub fn kinds(resource: &str) -> Result<Option<Vec<Kind>>> {
    if resource == "all" {
        return Ok(Some(crate::api::ALL.to_vec()));
    }
    if !resource.contains(',') || resource.contains('/') {
        return Ok(None);
    }
    let mut out = Vec::new();
    for w in resource.split(',').filter(|w| !w.is_empty()) {
        let k = if w == "all" {
            out.extend(crate::api::ALL);
            continue;
        } else {
            Kind::parse(w).map_err(|e| anyhow!(e))?
        };
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(Some(out))
}

/// Like [`kind_and_names`], for commands that need at least one NAME (`describe`, `delete`).
pub fn kind_and_required_names(
    verb: &str,
    resource: &mut String,
    names: &mut Vec<String>,
) -> Result<Kind> {
    let kind = kind_and_names(resource, names)?;
    if names.is_empty() {
        bail!("{verb} {resource}: a NAME is required");
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(resource: &str, names: &[&str]) -> Result<(Kind, String, Vec<String>)> {
        let mut r = resource.to_string();
        let mut n: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let k = kind_and_names(&mut r, &mut n)?;
        Ok((k, r, n))
    }

    #[test]
    fn kind_slash_name_is_kind_then_name() {
        let (k, r, n) = split("pod/web", &["db"]).unwrap();
        assert_eq!(
            (k, r.as_str(), n),
            (Kind::Pod, "pod", vec!["web".into(), "db".into()])
        );
        let (k, _, n) = split("SVC", &[]).unwrap();
        assert_eq!((k, n.len()), (Kind::Service, 0));
        assert_eq!(
            split("deplo/x", &[]).unwrap_err().to_string(),
            "the server doesn't have a resource type \"deplo\" (known: pods, services, nodes, endpoints, namespaces, configmaps, secrets, events, replicasets, deployments)"
        );
    }

    #[test]
    fn several_kinds() {
        assert_eq!(
            kinds("pods,svc").unwrap(),
            Some(vec![Kind::Pod, Kind::Service])
        );
        assert_eq!(kinds("all").unwrap().unwrap().len(), 4);
        assert_eq!(kinds("deploy").unwrap(), None);
        assert!(kinds("pods,nope").is_err());
        let (k, _, n) = split("deployment.apps/web", &[]).unwrap();
        assert_eq!((k, n), (Kind::Deployment, vec!["web".to_string()]));
    }

    #[test]
    fn describe_and_delete_need_a_name() {
        let mut r = "po".to_string();
        let mut n = vec![];
        assert_eq!(
            kind_and_required_names("describe", &mut r, &mut n)
                .unwrap_err()
                .to_string(),
            "describe po: a NAME is required"
        );
        let mut r = "no/n1".to_string();
        assert_eq!(
            kind_and_required_names("delete", &mut r, &mut n).unwrap(),
            Kind::Node
        );
        assert_eq!(n, vec!["n1"]);
    }
}
