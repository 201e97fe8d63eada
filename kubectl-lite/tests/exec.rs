//! `kubectl-lite exec` end to end (issue 13) on a real one-node cluster (real apiserver,
//! a real `nodeagent` in a network namespace): output, stderr and the exit code come
//! back; the command runs in the container's namespaces with its environment; stdin
//! with `-i`; `-it` under a pseudo-terminal (raw mode, the window size and a resize);
//! a node identity may not exec (PERMISSION_DENIED). Root only (skipped otherwise).

use futures::StreamExt;
use kube_lite_proto::v1::{
    pod_exec_client::PodExecClient, Container, EnvVar, ExecRequest, ExecStart, Pod,
};
use kube_lite_tests::cli::{collect, kl_stdin, set_size};
use kube_lite_tests::cluster::{
    built_sibling, busybox, default_agent_bin, require_root, ClusterOptions, TestCluster,
};
use kube_lite_tests::fixtures::{eventually, node_pod, sh};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-lite");

/// The agent binary, built if missing (it belongs to another package of the workspace).
fn agent_bin() -> PathBuf {
    built_sibling(default_agent_bin(), "nodeagent", "nodeagent")
}

/// kubectl-lite with `stdin` fed to it: (exit code, stdout, stderr).
async fn kl(server: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    kl_stdin(Path::new(BIN), server, args, stdin).await
}

fn pod(name: &str) -> Pod {
    let app = Container {
        image: busybox().into(),
        env: vec![EnvVar {
            name: "GREETING".into(),
            value: "hello-from-env".into(),
            value_from: None,
        }],
        ..sh("app", "exec sleep 3600")
    };
    node_pod(name, "", vec![app], "Always", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_exit_code_stdin_tty_and_node_identities_refused() {
    if !require_root() {
        return;
    }
    let c = TestCluster::start(ClusterOptions::new(1, agent_bin()))
        .await
        .expect("test cluster");
    let s = c.api.url.clone();
    let s = s.as_str();
    c.api.pods().create(pod("shell")).await.unwrap();
    let p = c
        .wait_pod("shell", "Running", |p| {
            p.status.as_ref().is_some_and(|s| s.phase == "Running")
        })
        .await;
    let ip = p.status.unwrap().pod_ip;
    let bb = busybox();

    // Output, stderr, environment, hostname and the exit code.
    let script = "echo out; echo err >&2; echo $GREETING; hostname; exit 3";
    let (code, out, err) = kl(s, &["exec", "shell", "--", bb, "sh", "-c", script], "").await;
    assert_eq!(code, 3, "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "out\nhello-from-env\nshell\n");
    assert_eq!(err, "err\ncommand terminated with exit code 3\n");

    // The container's namespaces: its network (the pod IP), its PID namespace (PID 2
    // is the container's program) and -c naming the container.
    let (code, out, err) = kl(
        s,
        &[
            "exec",
            "shell",
            "-c",
            "app",
            "--",
            bb,
            "sh",
            "-c",
            "cat /proc/net/fib_trie; tr '\\0' ' ' < /proc/2/cmdline",
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&ip), "pod IP {ip} in {out}");
    assert!(out.ends_with("sleep 3600 "), "{out}");

    // stdin with -i, to its end.
    let (code, out, err) = kl(
        s,
        &[
            "exec",
            "-i",
            "shell",
            "--",
            bb,
            "sh",
            "-c",
            "cat; echo done",
        ],
        "line one\nline two\n",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "line one\nline two\ndone\n"),
        "{err}"
    );

    // Errors: no such pod, no such container, no such program.
    let (code, _, err) = kl(s, &["exec", "nope", "--", "true"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let (code, _, err) = kl(s, &["exec", "shell", "-c", "other", "--", "true"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("container \"other\" is not in pod"), "{err}");
    let (code, _, err) = kl(s, &["exec", "shell", "--", "/no/such/program"], "").await;
    assert_eq!(code, 127, "{err}");

    // -it under a pseudo-terminal: kubectl-lite's stdin/stdout are a terminal of ours.
    let pty = nix::pty::openpty(None, None).unwrap();
    set_size(&pty.master, 30, 100);
    let slave = std::fs::File::from(pty.slave);
    let mut child = Command::new(BIN)
        .arg("--server")
        .arg(s)
        .args(["exec", "-it", "shell", "--", bb, "sh"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let master = std::fs::File::from(pty.master);
    let seen = collect(master.try_clone().unwrap());
    let mut w = master.try_clone().unwrap();
    let saw = |needle: &'static str| {
        let seen = seen.clone();
        async move {
            eventually(needle, Duration::from_secs(30), || {
                let t = seen.lock().unwrap().clone();
                async move { t.contains(needle).then_some(()) }
            })
            .await
        }
    };
    // The remote end is a terminal of its own, with our window size.
    writeln!(w, "{bb} tty; {bb} stty size; echo $((6 * 7))x").unwrap();
    saw("30 100").await;
    saw("42x").await;
    assert!(
        seen.lock().unwrap().contains("/dev/pts/"),
        "{}",
        seen.lock().unwrap()
    );
    // Raw mode here: ^C goes to the remote shell, not to kubectl-lite.
    w.write_all(b"\x03").unwrap();
    // A resize follows the local terminal (SIGWINCH to kubectl-lite).
    set_size(&OwnedFd::from(master.try_clone().unwrap()), 40, 120);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    // The resize and the next line race; ask until the new size shows.
    eventually("the new window size", Duration::from_secs(30), || {
        let mut w = master.try_clone().unwrap();
        let seen = seen.clone();
        async move {
            writeln!(w, "{bb} stty size").unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            seen.lock().unwrap().contains("40 120").then_some(())
        }
    })
    .await;
    writeln!(w, "exit 5").unwrap();
    let st = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("kubectl-lite exits")
        .unwrap();
    assert_eq!(st.code(), Some(5), "{}", seen.lock().unwrap());

    // A node identity may not exec, even in a pod of its own node.
    let start = ExecRequest {
        start: Some(ExecStart {
            name: "shell".into(),
            namespace: "default".into(),
            command: vec!["true".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = PodExecClient::new(c.api.node_channel("node0"))
        .exec(futures::stream::iter([start.clone()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("nodes may not exec in pods"), "{e:?}");
    // The admin over gRPC: the exit arrives last.
    let mut replies = PodExecClient::new(c.api.channel())
        .exec(futures::stream::iter([start]))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(r) = replies.next().await {
        last = Some(r.unwrap());
    }
    assert_eq!(last.and_then(|r| r.exit).map(|e| e.exit_code), Some(0));
}
