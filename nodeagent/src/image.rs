//! Image resolution for the process runtime: an image names a program on the node.
//!
//! - contains `/` → that path;
//! - `whoami` → `kl-whoami` in `--image-dir` if given, else next to the agent's own
//!   executable;
//! - `kl-whoami` → the same place first, then `PATH` (the binaries are built side by side,
//!   so the program's own name works as an image too);
//! - anything else → a name looked up in `--image-dir` (if given) and then in `PATH`.
//!
//! Kubernetes' `command` overrides the image's entrypoint: for us the program itself,
//! so `command[0]` is resolved the same way and `args` are appended.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {image:?}: no such program on node {node} (looked in {looked})")]
pub struct ImageNotFound {
    pub image: String,
    pub node: String,
    pub looked: String,
}

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pub node: String,
    pub image_dir: Option<PathBuf>,
    /// Directory of the agent's executable.
    pub self_dir: Option<PathBuf>,
    /// The `PATH` to search.
    pub path: String,
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Resolver {
    pub fn from_env(node: &str, image_dir: Option<PathBuf>) -> Resolver {
        Resolver {
            node: node.to_string(),
            image_dir,
            self_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            path: std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        }
    }

    /// The candidate paths for `image`, in search order.
    pub fn candidates(&self, image: &str) -> Vec<PathBuf> {
        if image.contains('/') {
            return vec![PathBuf::from(image)];
        }
        let mut out = Vec::new();
        if image == "whoami" || image == "kl-whoami" {
            match &self.image_dir {
                Some(d) => out.push(d.join("kl-whoami")),
                None => {
                    if let Some(d) = &self.self_dir {
                        out.push(d.join("kl-whoami"));
                    }
                }
            }
            if image == "whoami" {
                return out;
            }
        } else if let Some(d) = &self.image_dir {
            out.push(d.join(image));
        }
        for dir in self.path.split(':').filter(|d| !d.is_empty()) {
            out.push(Path::new(dir).join(image));
        }
        out
    }

    pub fn resolve(&self, image: &str) -> Result<PathBuf, ImageNotFound> {
        let cands = self.candidates(image);
        if let Some(p) = cands.iter().find(|p| is_executable(p)) {
            return Ok(p.clone());
        }
        let looked = if cands.is_empty() {
            "nowhere".to_string()
        } else {
            cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(ImageNotFound {
            image: image.to_string(),
            node: self.node.clone(),
            looked,
        })
    }

    /// Program and arguments for a container: `command` (if any) replaces the image's
    /// program, `args` are appended.
    pub fn argv(
        &self,
        image: &str,
        command: &[String],
        args: &[String],
    ) -> Result<(PathBuf, Vec<String>), ImageNotFound> {
        match command.split_first() {
            Some((prog, rest)) => {
                let p = self.resolve(prog)?;
                let mut a = rest.to_vec();
                a.extend(args.iter().cloned());
                Ok((p, a))
            }
            None => Ok((self.resolve(image)?, args.to_vec())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(dir: &Path) -> Resolver {
        Resolver {
            node: "node1".into(),
            image_dir: None,
            self_dir: Some(dir.to_path_buf()),
            path: format!("/nonexistent:{}", dir.join("bin").display()),
        }
    }

    fn exe(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn resolves_paths_whoami_and_path_names() {
        let d = tempfile::tempdir().unwrap();
        exe(&d.path().join("kl-whoami"));
        exe(&d.path().join("bin/tool"));
        let r = resolver(d.path());
        assert_eq!(r.resolve("whoami").unwrap(), d.path().join("kl-whoami"));
        // The program's own name finds it next to the agent too (not only in PATH).
        assert_eq!(r.resolve("kl-whoami").unwrap(), d.path().join("kl-whoami"));
        assert_eq!(r.resolve("tool").unwrap(), d.path().join("bin/tool"));
        let abs = d.path().join("bin/tool");
        assert_eq!(r.resolve(abs.to_str().unwrap()).unwrap(), abs);
    }

    #[test]
    fn missing_program_has_a_clear_message() {
        let d = tempfile::tempdir().unwrap();
        let e = resolver(d.path()).resolve("nope").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "image \"nope\": no such program on node node1 (looked in /nonexistent/nope, "
            ),
            "{msg}"
        );
    }

    #[test]
    fn non_executable_files_do_not_count() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/data"), "x").unwrap();
        assert!(resolver(d.path()).resolve("data").is_err());
    }

    #[test]
    fn command_overrides_and_args_append() {
        let d = tempfile::tempdir().unwrap();
        exe(&d.path().join("bin/busybox"));
        exe(&d.path().join("bin/sh"));
        let r = resolver(d.path());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (p, a) = r.argv("busybox", &[], &s(&["wget", "-qO-", "x"])).unwrap();
        assert_eq!(p, d.path().join("bin/busybox"));
        assert_eq!(a, s(&["wget", "-qO-", "x"]));
        let (p, a) = r
            .argv("busybox", &s(&["sh", "-c"]), &s(&["echo hi"]))
            .unwrap();
        assert_eq!(p, d.path().join("bin/sh"));
        assert_eq!(a, s(&["-c", "echo hi"]));
    }
}
