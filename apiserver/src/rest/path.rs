//! Kubernetes REST paths, parsed (pure).
//!
//! `/api/v1/{resource}[/{name}[/{sub}]]`, `/api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]`
//! and the same under `/apis/{group}/{version}`. `/api/v1/namespaces/{name}[/status|/finalize]`
//! is the Namespace object itself.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// `None`: cluster-scoped, or all namespaces for a namespaced kind.
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// The target of `path`, `None` when it is not a resource path.
pub fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut t = Target {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    let s = |x: &str| Some(x.to_string());
    match rest {
        [] => return None,
        ["namespaces", ns, res, tail @ ..] if !matches!(*res, "status" | "finalize") => {
            t.namespace = s(ns);
            t.resource = res.to_string();
            match tail {
                [] => {}
                [name] => t.name = s(name),
                [name, sub] => {
                    t.name = s(name);
                    t.sub = s(sub);
                }
                _ => return None,
            }
        }
        [res, tail @ ..] => {
            t.resource = res.to_string();
            match tail {
                [] => {}
                [name] => t.name = s(name),
                [name, sub] => {
                    t.name = s(name);
                    t.sub = s(sub);
                }
                _ => return None,
            }
        }
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: Option<&str>, res: &str, name: Option<&str>, sub: Option<&str>) -> Target {
        Target {
            group: "".into(),
            version: "v1".into(),
            namespace: ns.map(String::from),
            resource: res.into(),
            name: name.map(String::from),
            sub: sub.map(String::from),
        }
    }

    #[test]
    fn core_paths() {
        assert_eq!(parse("/api/v1/pods"), Some(t(None, "pods", None, None)));
        assert_eq!(
            parse("/api/v1/nodes/n1"),
            Some(t(None, "nodes", Some("n1"), None))
        );
        assert_eq!(
            parse("/api/v1/nodes/n1/status"),
            Some(t(None, "nodes", Some("n1"), Some("status")))
        );
        assert_eq!(
            parse("/api/v1/namespaces/default/pods"),
            Some(t(Some("default"), "pods", None, None))
        );
        assert_eq!(
            parse("/api/v1/namespaces/default/pods/web/log"),
            Some(t(Some("default"), "pods", Some("web"), Some("log")))
        );
        // The Namespace object and its subresources.
        assert_eq!(
            parse("/api/v1/namespaces/blue"),
            Some(t(None, "namespaces", Some("blue"), None))
        );
        assert_eq!(
            parse("/api/v1/namespaces/blue/status"),
            Some(t(None, "namespaces", Some("blue"), Some("status")))
        );
        assert_eq!(
            parse("/api/v1/namespaces"),
            Some(t(None, "namespaces", None, None))
        );
    }

    #[test]
    fn group_paths_and_junk() {
        let d = parse("/apis/apps/v1/namespaces/x/deployments/web/scale").unwrap();
        assert_eq!(d.group, "apps");
        assert_eq!(d.sub.as_deref(), Some("scale"));
        assert_eq!(parse("/api/v1"), None);
        assert_eq!(parse("/api"), None);
        assert_eq!(parse("/foo/v1/pods"), None);
        assert_eq!(parse("/api/v1//pods"), None);
        assert_eq!(parse("/api/v1/namespaces/x/pods/a/b/c"), None);
    }
}
