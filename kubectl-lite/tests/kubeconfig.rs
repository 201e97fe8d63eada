//! kubectl-lite and kubeconfig (issue 14): the real binary against a secure apiserver,
//! with the kubeconfig the apiserver wrote, contexts, tokens, and the errors that say
//! what failed.

use kube_lite_pki as pki;
use kube_lite_tests::apiserver::{test_pki, TestApiServer};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-lite");

/// Runs kubectl-lite with `args` only (no --server), KUBECONFIG as given.
fn kl(kubeconfig_env: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("KUBE_LITE_SERVER")
        .env_remove("KUBE_LITE_TOKEN");
    match kubeconfig_env {
        Some(p) => c.env("KUBECONFIG", p),
        None => c.env_remove("KUBECONFIG"),
    };
    // No ~/.kube/config of the machine's user.
    c.env("HOME", "/nonexistent-home");
    let out = c.output().expect("run kubectl-lite");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubeconfig(server: &str, ca_pem: &str, cred: &pki::CertKey) -> String {
    apiserver::auth::kubeconfig_yaml(server, ca_pem, cred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiservers_kubeconfig_works_as_is_and_contexts_switch() {
    let srv = TestApiServer::start().await;
    // The server writes admin.kubeconfig once it serves.
    let kc = srv.kubeconfig_path();
    for _ in 0..100 {
        if kc.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kcs = kc.to_str().unwrap();
    let (code, out, err) = kl(None, &["--kubeconfig", kcs, "get", "nodes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.is_empty() || out.starts_with("NAME") || out.contains("No resources"),
        "{out}"
    );
    // Through KUBECONFIG too.
    let (code, _, err) = kl(Some(&kc), &["create", "pod", "web", "--image", "busybox"]);
    assert_eq!(code, 0, "{err}");

    // A kubeconfig with two contexts: the admin, and a node identity.
    let dir = tempfile::tempdir().unwrap();
    let node = test_pki().node_cert("n1", &["127.0.0.1".into()]);
    let admin_text = std::fs::read_to_string(&kc).unwrap();
    let mut k = kube_lite_client::kubeconfig::Kubeconfig::parse(&admin_text).unwrap();
    let node_k = kube_lite_client::kubeconfig::Kubeconfig::parse(&kubeconfig(
        &srv.url,
        test_pki().ca_pem(),
        &node,
    ))
    .unwrap();
    let mut user = node_k.users[0].clone();
    user.name = "node-n1".into();
    k.users.push(user);
    let mut ctx = node_k.contexts[0].clone();
    ctx.name = "as-node".into();
    ctx.context.user = "node-n1".into();
    k.contexts.push(ctx);
    let path = dir.path().join("config");
    std::fs::write(&path, k.to_yaml().unwrap()).unwrap();
    let p = path.to_str().unwrap();

    let (code, out, _) = kl(None, &["--kubeconfig", p, "config", "get-contexts"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CURRENT   NAME"), "{out}");
    assert!(lines[1].starts_with("*         kube-lite"), "{out}");
    assert!(lines[2].contains("as-node"), "{out}");

    // The node context: reads yes, creating a pod no (named identity and verb).
    let (code, _, err) = kl(
        None,
        &["--kubeconfig", p, "--context", "as-node", "get", "pods"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kl(
        None,
        &[
            "--kubeconfig",
            p,
            "--context",
            "as-node",
            "create",
            "pod",
            "x",
            "--image",
            "busybox",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("forbidden: User \"system:node:n1\" cannot create pods"),
        "{err}"
    );
    assert!(err.contains("(PermissionDenied)"), "{err}");

    // use-context writes current-context; view hides secrets unless --raw.
    let (code, out, _) = kl(
        None,
        &["--kubeconfig", p, "config", "use-context", "as-node"],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "Switched to context \"as-node\".\n")
    );
    let (_, out, _) = kl(None, &["--kubeconfig", p, "config", "current-context"]);
    assert_eq!(out, "as-node\n");
    let (_, out, _) = kl(None, &["--kubeconfig", p, "config", "view"]);
    assert!(
        out.contains("DATA+OMITTED") && !out.contains("BEGIN"),
        "{out}"
    );
    let (_, out, _) = kl(None, &["--kubeconfig", p, "config", "view", "--raw"]);
    assert!(!out.contains("DATA+OMITTED"), "{out}");
    let (code, _, err) = kl(None, &["--kubeconfig", p, "config", "use-context", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no context exists with the name: \"nope\""),
        "{err}"
    );
    let (code, _, err) = kl(
        None,
        &["--kubeconfig", p, "--context", "nope", "get", "pods"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("context \"nope\" not found in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_tokens_and_errors_that_say_what_failed() {
    let srv = TestApiServer::start().await;
    let ca = srv.ca_path();
    let ca = ca.to_str().unwrap();
    let url = srv.url.as_str();
    for _ in 0..100 {
        if !srv.admin_token().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = srv.admin_token();
    // --server + --certificate-authority + --token, no kubeconfig at all.
    let (code, _, err) = kl(
        None,
        &[
            "--server",
            url,
            "--certificate-authority",
            ca,
            "--token",
            &token,
            "get",
            "pods",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // A wrong token: refused, and the message says so.
    let (code, _, err) = kl(
        None,
        &[
            "--server",
            url,
            "--certificate-authority",
            ca,
            "--token",
            "garbage",
            "get",
            "pods",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("refused the credentials: invalid bearer token (Unauthenticated)"),
        "{err}"
    );
    // No credentials at all.
    let (code, _, err) = kl(
        None,
        &[
            "--server",
            url,
            "--certificate-authority",
            ca,
            "get",
            "pods",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no credentials"), "{err}");
    // A CA that did not issue the server's certificate: not trusted.
    let other = pki::Ca::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let (code, _, err) = kl(
        None,
        &[
            "--server",
            url,
            "--certificate-authority",
            other_ca.to_str().unwrap(),
            "--token",
            &token,
            "get",
            "pods",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not trusted"), "{err}");
    // No CA at all for https: says what to pass.
    let (code, _, err) = kl(None, &["--server", url, "get", "pods"]);
    assert_eq!(code, 1);
    assert!(err.contains("no CA to trust"), "{err}");
    // --insecure-skip-tls-verify with the token: works (and nothing is verified).
    let (code, _, err) = kl(
        None,
        &[
            "--server",
            url,
            "--insecure-skip-tls-verify",
            "--token",
            &token,
            "get",
            "pods",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // A missing --kubeconfig file names it.
    let (code, _, err) = kl(None, &["--kubeconfig", "/nonexistent/kc", "get", "pods"]);
    assert_eq!(code, 1);
    assert!(err.contains("reading kubeconfig /nonexistent/kc"), "{err}");
}
