//! Image references normalised as Kubernetes (and docker) do:
//! `busybox` → `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`,
//! `registry.local:5000/app` → `registry.local:5000/app:latest`; digests are kept
//! (`app@sha256:…` gets no tag).

/// A reference that cannot be an image name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {why}")]
pub struct BadReference {
    pub reference: String,
    pub why: &'static str,
}

/// The fully qualified form of `reference`.
pub fn normalize(reference: &str) -> Result<String, BadReference> {
    let bad = |why| BadReference {
        reference: reference.to_string(),
        why,
    };
    let r = reference.trim();
    if r.is_empty() {
        return Err(bad("empty"));
    }
    if r.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    if r.starts_with('/') || r.contains("//") || r.ends_with('/') {
        return Err(bad("not a name (a path?)"));
    }
    if !r.chars().all(|c| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || "._-/:@".contains(c)
            || c.is_ascii_uppercase()
    }) {
        return Err(bad("only letters, digits and . _ - / : @ are allowed"));
    }
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => {
            if !d.starts_with("sha256:") || d.len() != 71 {
                return Err(bad("digest must be sha256:<64 hex digits>"));
            }
            (n, Some(d))
        }
        None => (r, None),
    };
    // The tag is after the last ':' of the last path component.
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo, tag) = match last.rsplit_once(':') {
        Some((_, t)) => {
            if t.is_empty() || t.len() > 128 {
                return Err(bad("empty or too long tag"));
            }
            (&name[..name.len() - t.len() - 1], Some(t))
        }
        None => (name, None),
    };
    if repo.is_empty() {
        return Err(bad("empty repository"));
    }
    let mut parts = repo.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    let rest = parts.next();
    let is_domain = |s: &str| s.contains('.') || s.contains(':') || s == "localhost";
    let (domain, path) = match rest {
        Some(rest) if is_domain(first) => (first.to_string(), rest.to_string()),
        Some(_) => ("docker.io".to_string(), repo.to_string()),
        None => ("docker.io".to_string(), repo.to_string()),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository names must be lowercase"));
    }
    let domain = if domain == "index.docker.io" {
        "docker.io".to_string()
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// The tag of a normalised reference (`latest` when none and no digest).
pub fn tag_of(normalized: &str) -> Option<&str> {
    let name = normalized.split('@').next().unwrap_or(normalized);
    let last = name.rsplit('/').next()?;
    last.rsplit_once(':').map(|(_, t)| t)
}

/// The name as people write it: `docker.io/library/busybox:latest` → `busybox:latest`.
pub fn short(normalized: &str) -> String {
    normalized
        .strip_prefix("docker.io/library/")
        .or_else(|| normalized.strip_prefix("docker.io/"))
        .unwrap_or(normalized)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_kubernetes() {
        let n = |s| normalize(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            n("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(n("kube-lite/whoami"), "docker.io/kube-lite/whoami:latest");
        assert_eq!(
            n("registry.local:5000/app"),
            "registry.local:5000/app:latest"
        );
        assert_eq!(n("localhost/app:v2"), "localhost/app:v2");
        assert_eq!(n("ghcr.io/a/b/c:1"), "ghcr.io/a/b/c:1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(tag_of("docker.io/library/busybox:latest"), Some("latest"));
        assert_eq!(tag_of("registry.local:5000/app"), None);
        assert_eq!(short("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(
            short("docker.io/kube-lite/whoami:latest"),
            "kube-lite/whoami:latest"
        );
    }

    #[test]
    fn rejects_what_is_no_name() {
        for bad in [
            "",
            "/bin/sh",
            "a//b",
            "Busybox",
            "a b",
            "x:",
            "busybox@sha256:12",
            "a/",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} accepted");
        }
        let e = normalize("/bin/sh").unwrap_err().to_string();
        assert!(e.contains("/bin/sh") && e.contains("path"), "{e}");
    }
}
