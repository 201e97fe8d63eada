//! Exec on the containerd runtime (issue 16) against real containerd, a real agent and
//! a real apiserver (root, containerd and runc installed; skipped otherwise): each test
//! starts its own containerd and loads the project's busybox image, as
//! tests/containerd.rs does. `kubectl-lite exec` gives output, stderr and the exit code,
//! stdin with `-i`, a terminal with `-it` (its size and a resize); a client that leaves
//! kills its command; exec liveness and readiness probes and an exec postStart hook run
//! through containerd's exec; nothing is left behind (no exec process in the task, no
//! FIFO directory, no container).

use kube_lite_proto::v1::{
    Container, DeleteRequest, EnvVar, ExecAction, Lifecycle, LifecycleHandler, ObjectMeta, Pod,
    PodSpec, Probe,
};
use kube_lite_tests::cluster::{require_root, ClusterOptions, TestCluster};
use kube_lite_tests::containerd::{self as kit, TestContainerd};
use kube_lite_tests::fixtures::eventually;
use nodeagent::containerd::client::Ctrd;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeagent"))
}

/// kubectl-lite, built beside the agent if missing (another package of the workspace).
fn kubectl_lite() -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let p = agent_bin().with_file_name("kubectl-lite");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-p", "kubectl-lite", "--bin", "kubectl-lite"])
            .status()
            .expect("cargo build kubectl-lite");
        assert!(st.success(), "building kubectl-lite failed");
    }
    p
}

fn skip() -> bool {
    if !require_root() {
        return true;
    }
    if !kit::available() {
        eprintln!("skipping: containerd/runc not installed (apt-get install containerd runc)");
        return true;
    }
    false
}

/// A one-node cluster on `ctrd` with the busybox image loaded (through the apiserver's
/// NodeApi.LoadImage, the `kubectl-lite image load` path).
async fn cluster(ctrd: &TestContainerd) -> TestCluster {
    let imgs = kit::image_archives(&agent_bin());
    let mut o = ClusterOptions::new(1, agent_bin());
    o.extra_agent_args.extend(ctrd.agent_args());
    o.extra_agent_args
        .extend(["--heartbeat-interval".to_string(), "1s".to_string()]);
    let c = TestCluster::start(o).await.expect("test cluster");
    kit::load_image(&c, 0, &imgs.join("busybox.tar")).await;
    c
}

fn pod(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: "node0".into(),
            containers,
            restart_policy: "Always".into(),
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

fn shell(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![EnvVar {
            name: "GREETING".into(),
            value: "hello-from-env".into(),
            value_from: None,
        }],
        ..Default::default()
    }
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

fn uid(p: &Pod) -> String {
    p.metadata.as_ref().unwrap().uid.clone()
}

/// kubectl-lite with `stdin` fed to it: (exit code, stdout, stderr).
async fn kl(server: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(kubectl_lite())
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut i = child.stdin.take().unwrap();
    i.write_all(stdin.as_bytes()).await.unwrap();
    drop(i);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl-lite finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: TIOCSWINSZ reads one winsize from a pointer valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ");
}

/// PIDs whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
                    (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `cmd` (an `exec -it … -- sh`) on a pseudo-terminal of ours sized 30x100: the
/// remote end is a terminal of its own with that size and TERM; a resize (SIGWINCH to
/// the client) reaches it; `exit 5` ends the client with 5.
async fn terminal_session(mut cmd: Command) {
    let pty = nix::pty::openpty(None, None).unwrap();
    set_size(&pty.master, 30, 100);
    let slave = std::fs::File::from(pty.slave);
    let mut child = cmd
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    drop(cmd);
    let master = std::fs::File::from(pty.master);
    let seen = Arc::new(Mutex::new(String::new()));
    {
        let (mut r, seen) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    // Ask until `needle` shows (the first size and a resize race the next line).
    let until = |line: &'static str, needle: &'static str| {
        let (master, seen) = (master.try_clone().unwrap(), seen.clone());
        async move {
            eventually(needle, Duration::from_secs(30), || {
                let mut w = master.try_clone().unwrap();
                let seen = seen.clone();
                async move {
                    writeln!(w, "{line}").unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    seen.lock().unwrap().contains(needle).then_some(())
                }
            })
            .await
        }
    };
    until("tty; echo $TERM-$((6 * 7))x", "xterm-42x").await;
    until("stty size", "30 100").await;
    assert!(
        seen.lock().unwrap().contains("/dev/pts/"),
        "{}",
        seen.lock().unwrap()
    );
    set_size(&OwnedFd::from(master.try_clone().unwrap()), 40, 120);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    until("stty size", "40 120").await;
    writeln!(master.try_clone().unwrap(), "exit 5").unwrap();
    let st = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the exec client exits")
        .unwrap();
    assert_eq!(st.code(), Some(5), "{}", seen.lock().unwrap());
}

/// The processes in container `id`'s task (its init and any exec process).
async fn task_pids(ctrd: &TestContainerd, id: &str) -> Vec<u32> {
    use containerd_client::services::v1::ListPidsRequest;
    let c = Ctrd::connect(&ctrd.socket, &ctrd.namespace).await.unwrap();
    c.tasks()
        .list_pids(c.req(ListPidsRequest {
            container_id: id.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .processes
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

/// Entries of the agent's exec FIFO directory (none when no exec runs).
fn fifo_dirs(c: &TestCluster) -> Vec<String> {
    std::fs::read_dir(c.nodes[0].state_dir.join("exec"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until container `id`'s task runs its init alone and no FIFO directory is left.
async fn no_exec_left(c: &TestCluster, ctrd: &TestContainerd, id: &str) {
    eventually(
        "exec processes and FIFOs gone",
        Duration::from_secs(30),
        || async {
            (task_pids(ctrd, id).await.len() == 1 && fifo_dirs(c).is_empty()).then_some(())
        },
    )
    .await
}

/// Containers left in the test's containerd namespace.
async fn containers_left(ctrd: &TestContainerd) -> Vec<String> {
    use containerd_client::services::v1::ListContainersRequest;
    let c = Ctrd::connect(&ctrd.socket, &ctrd.namespace).await.unwrap();
    c.containers()
        .list(c.req(ListContainersRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|x| x.id)
        .collect()
}

async fn delete_and_wait(c: &TestCluster, ctrd: &TestContainerd, names: &[&str]) {
    for n in names {
        c.api
            .pods()
            .delete(DeleteRequest {
                name: n.to_string(),
                namespace: "default".into(),
                grace_period_seconds: 0,
                ..Default::default()
            })
            .await
            .expect("delete pod");
    }
    for n in names {
        eventually(
            &format!("pod {n} gone"),
            Duration::from_secs(60),
            || async { c.get_pod(n).await.is_none().then_some(()) },
        )
        .await;
    }
    eventually(
        "no containerd container left",
        Duration::from_secs(30),
        || async { containers_left(ctrd).await.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_on_images_output_exit_code_stdin_terminal_and_cleanup() {
    if skip() {
        return;
    }
    let ctrd = TestContainerd::start().expect("containerd");
    let mut c = cluster(&ctrd).await;
    let s = c.api.url.clone();
    let s = s.as_str();
    c.api
        .pods()
        .create(pod("shell", vec![shell("app", "exec sleep 3600")]))
        .await
        .unwrap();
    let p = c.wait_pod("shell", "Running", running).await;
    let id = format!("{}-app", uid(&p));
    assert_eq!(
        task_pids(&ctrd, &id).await.len(),
        1,
        "the container's sleep"
    );

    // Output, stderr, the container's environment, hostname and the exit code.
    let script = "echo out; echo err >&2; echo $GREETING; hostname; exit 3";
    let (code, out, err) = kl(s, &["exec", "shell", "--", "sh", "-c", script], "").await;
    assert_eq!(code, 3, "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "out\nhello-from-env\nshell\n");
    assert_eq!(err, "err\ncommand terminated with exit code 3\n");

    // The container's own filesystem and PID namespace (PID 1 is its sleep), -c.
    let (code, out, err) = kl(
        s,
        &[
            "exec",
            "shell",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "grep ^NAME= /etc/os-release; tr '\\0' ' ' < /proc/1/cmdline",
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "NAME=\"kube-lite busybox\"\nsleep 3600 ");

    // stdin with -i, to its end.
    let (code, out, err) = kl(
        s,
        &["exec", "-i", "shell", "--", "sh", "-c", "cat; echo done"],
        "line one\nline two\n",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "line one\nline two\ndone\n"),
        "{err}"
    );

    // No such program: an error with containerd's reason, as kubectl reports CRI's;
    // no such container.
    let (code, _, err) = kl(s, &["exec", "shell", "--", "/no/such/program"], "").await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("failed to start exec") && err.contains("no such file or directory"),
        "{err}"
    );
    let (code, _, err) = kl(s, &["exec", "shell", "-c", "other", "--", "true"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("container \"other\" is not in pod"), "{err}");

    // -it under a pseudo-terminal: kubectl-lite's stdin/stdout are a terminal of ours.
    let mut cmd = Command::new(kubectl_lite());
    cmd.arg("--server")
        .arg(s)
        .args(["exec", "-it", "shell", "--", "sh"]);
    terminal_session(cmd).await;

    // A client that leaves: its command is killed.
    let mut gone = Command::new(kubectl_lite())
        .arg("--server")
        .arg(s)
        .args(["exec", "shell", "--", "sleep", "987654"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the exec'd sleep", Duration::from_secs(30), || async {
        (!pids_running(&["sleep", "987654"]).is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        task_pids(&ctrd, &id).await.len(),
        2,
        "the sleep and the exec"
    );
    gone.kill().await.unwrap();
    eventually(
        "the exec'd sleep killed",
        Duration::from_secs(30),
        || async { pids_running(&["sleep", "987654"]).is_empty().then_some(()) },
    )
    .await;

    // Nothing left: no exec process in the task, no FIFO directory.
    no_exec_left(&c, &ctrd, &id).await;

    // kill -9 of the agent during a session: the next agent process kills and deletes
    // the exec it left and removes its FIFOs; the container itself is adopted.
    let mut orphan = Command::new(kubectl_lite())
        .arg("--server")
        .arg(s)
        .args(["exec", "shell", "--", "sleep", "987655"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the exec'd sleep", Duration::from_secs(30), || async {
        (!pids_running(&["sleep", "987655"]).is_empty()).then_some(())
    })
    .await;
    c.kill_agent(0);
    let _ = orphan.kill().await;
    assert_eq!(
        fifo_dirs(&c).len(),
        1,
        "the session's FIFOs outlive the agent"
    );
    c.start_agent(0);
    c.wait_ready(Duration::from_secs(60)).await.unwrap();
    eventually(
        "the orphaned exec killed",
        Duration::from_secs(30),
        || async { pids_running(&["sleep", "987655"]).is_empty().then_some(()) },
    )
    .await;
    no_exec_left(&c, &ctrd, &id).await;
    let p = c.wait_pod("shell", "Running", running).await;
    assert_eq!(p.status.unwrap().container_statuses[0].restart_count, 0);
    delete_and_wait(&c, &ctrd, &["shell"]).await;
    drop(c);
}

fn exec_probe(cmd: &[&str], failure: i32) -> Option<Probe> {
    Some(Probe {
        exec: Some(ExecAction {
            command: cmd.iter().map(|s| s.to_string()).collect(),
        }),
        period_seconds: 1,
        timeout_seconds: 1,
        success_threshold: 1,
        failure_threshold: failure,
        ..Default::default()
    })
}

fn cstatus(p: &Pod) -> kube_lite_proto::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_probes_and_post_start_hooks_on_images() {
    if skip() {
        return;
    }
    let ctrd = TestContainerd::start().expect("containerd");
    let c = cluster(&ctrd).await;
    let s = c.api.url.clone();
    let s = s.as_str();
    // The postStart hook writes /tmp/ready (with the container's env); readiness reads
    // it; liveness fails once /tmp/die exists.
    let mut app = shell("app", "exec sleep 3600");
    app.lifecycle = Some(Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hook-$GREETING > /tmp/ready".into(),
                ],
            }),
            ..Default::default()
        }),
        pre_stop: None,
    });
    app.readiness_probe = exec_probe(&["cat", "/tmp/ready"], 1);
    app.liveness_probe = exec_probe(&["sh", "-c", "! test -e /tmp/die"], 2);
    c.api.pods().create(pod("probed", vec![app])).await.unwrap();
    let p = c
        .wait_pod("probed", "ready after the postStart hook", |p| {
            running(p) && cstatus(p).ready
        })
        .await;
    assert_eq!(cstatus(&p).restart_count, 0);
    let (code, out, err) = kl(s, &["exec", "probed", "--", "cat", "/tmp/ready"], "").await;
    assert_eq!((code, out.as_str()), (0, "hook-hello-from-env\n"), "{err}");

    // Liveness fails: restarted (a fresh rootfs; the hook runs again, ready again).
    let (code, _, err) = kl(s, &["exec", "probed", "--", "touch", "/tmp/die"], "").await;
    assert_eq!(code, 0, "{err}");
    c.wait_pod("probed", "restarted by liveness, ready again", |p| {
        running(p) && cstatus(p).restart_count == 1 && cstatus(p).ready
    })
    .await;
    assert!(
        c.agent_log_tail(0, 400)
            .contains("failed liveness probe, will be restarted"),
        "{}",
        c.agent_log_tail(0, 40)
    );

    // A probe that outlives its timeout fails (killed, cleaned up): restarted.
    let mut slow = shell("slow", "exec sleep 3600");
    slow.liveness_probe = exec_probe(&["sleep", "30"], 1);
    c.api
        .pods()
        .create(pod("slowprobe", vec![slow]))
        .await
        .unwrap();
    let p = c
        .wait_pod("slowprobe", "restarted after a probe timeout", |p| {
            cstatus(p).restart_count >= 1
        })
        .await;
    assert!(cstatus(&p).restart_count >= 1);

    delete_and_wait(&c, &ctrd, &["probed", "slowprobe"]).await;
    assert!(
        pids_running(&["sleep", "30"]).is_empty(),
        "timed-out probes killed"
    );
    eventually("exec FIFOs gone", Duration::from_secs(30), || async {
        fifo_dirs(&c).is_empty().then_some(())
    })
    .await;
    drop(c);
}

/// The official kubectl (the REST face: WebSocket exec through the apiserver to the
/// same NodeExec service) on an image pod: output, stderr, exit code, `-i`, `-it` with
/// a resize. Skipped without the kubectl venv (kube_lite_tests::k8s_tools).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_exec_on_images() {
    if skip() {
        return;
    }
    let Some(venv) = kube_lite_tests::k8s_tools::k8s_venv() else {
        return;
    };
    let ctrd = TestContainerd::start().expect("containerd");
    let c = cluster(&ctrd).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let text = std::fs::read_to_string(&kube_lite_tests::apiserver::test_pki().kubeconfig)
        .unwrap()
        .replace("https://127.0.0.1:6443", &c.api.url);
    std::fs::write(&kubeconfig, text).unwrap();
    let kubectl = |args: &[&str]| {
        let mut k = Command::new(venv.join("bin/kubectl"));
        k.arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("HOME", dir.path())
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .args(args)
            .kill_on_drop(true);
        k
    };
    c.api
        .pods()
        .create(pod("shell", vec![shell("app", "exec sleep 3600")]))
        .await
        .unwrap();
    let p = c.wait_pod("shell", "Running", running).await;
    let o = kubectl(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo out-$GREETING; grep ^NAME= /etc/os-release; echo err-line >&2; exit 3",
    ])
    .output()
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "kubectl exec: {err}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "out-hello-from-env\nNAME=\"kube-lite busybox\"\n"
    );
    assert!(err.contains("err-line"), "{err}");
    let mut child = kubectl(&["exec", "-i", "shell", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello exec\n").await.unwrap();
    drop(stdin);
    let o = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl exec -i ends")
        .unwrap();
    assert!(
        o.status.success(),
        "kubectl exec -i: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "HELLO EXEC\n");
    terminal_session(kubectl(&["exec", "-it", "shell", "--", "sh"])).await;
    no_exec_left(&c, &ctrd, &format!("{}-app", uid(&p))).await;
    delete_and_wait(&c, &ctrd, &["shell"]).await;
    drop(c);
}
