//! The container init: what runs between the agent and a container's program.
//!
//! The agent starts every container as `nodeagent init shim …` (a re-exec of its own
//! binary, see [`crate::runtime::ProcessRuntime`]). Two stages, both plain synchronous
//! code (no tokio: `unshare(CLONE_NEWNS)` needs a single-threaded process):
//!
//! 1. **shim** (host PID namespace): `setsid()` (its own session, so it survives the
//!    agent), joins the pod's network namespace, unshares mount + UTS + PID namespaces,
//!    then spawns stage 2, which becomes PID 1 of the new PID namespace. It forwards
//!    SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to it, waits, and if stage 2 died
//!    without writing the exit file (SIGKILL) writes one itself. The agent tracks and
//!    signals the shim; `killpg(shim)` kills the shim and PID 1, and the death of PID 1
//!    kills everything else in the namespace.
//! 2. **pid1**: sets the hostname (pod name), makes mounts private and mounts a fresh
//!    `/proc`, spawns the program (PID 2), forwards the same signals to it, reaps every
//!    zombie, and when the program ends writes `<exit file>` (JSON [`ExitInfo`],
//!    atomically) and exits with the program's code.
//!
//! Argument layout (internal interface between the agent and itself):
//! `nodeagent init shim|pid1 <netns path or -> <hostname> <exit file> <log file or ->
//! <log max bytes> -- PROGRAM ARGS…`. The exit file path is also the marker by which a
//! restarted agent finds the instance ([`crate::runtime::parse_shim_cmdline`]).
//!
//! Logs: the init's own stdout/stderr are the log file (the agent opens it). With a log
//! file, pid1 gives the program a pipe as stdout/stderr and copies it into the file
//! through a [`RotatingWriter`] (rotation at `log max` bytes, one rotated part kept),
//! draining it before it writes the exit file. Without (`-`), the program inherits.

use crate::logfile::RotatingWriter;
use crate::state::ExitInfo;
use kube_lite_core::consts::reason;
use kube_lite_core::time::now_ms;
use kube_lite_net::write_atomic;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Signals the init stages pass on to their child.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Parsed `init` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct InitArgs {
    pub stage: Stage,
    pub netns: Option<PathBuf>,
    pub hostname: String,
    pub exit_file: PathBuf,
    /// The container's log file (pid1 writes it, rotating); None = inherit stdout.
    pub log: Option<PathBuf>,
    /// Rotation size of the log (0 = never).
    pub log_max: u64,
    pub program: String,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Shim,
    Pid1,
}

impl InitArgs {
    /// Parses the arguments after `init`.
    pub fn parse(argv: &[String]) -> Result<InitArgs, String> {
        let usage = "usage: nodeagent init shim|pid1 NETNS|- HOSTNAME EXIT_FILE LOG_FILE|- \
                     LOG_MAX_BYTES -- PROGRAM [ARGS...]";
        if argv.len() < 8 || argv[6] != "--" {
            return Err(usage.to_string());
        }
        let stage = match argv[0].as_str() {
            "shim" => Stage::Shim,
            "pid1" => Stage::Pid1,
            _ => return Err(usage.to_string()),
        };
        Ok(InitArgs {
            stage,
            netns: (argv[1] != "-").then(|| PathBuf::from(&argv[1])),
            hostname: argv[2].clone(),
            exit_file: PathBuf::from(&argv[3]),
            log: (argv[4] != "-").then(|| PathBuf::from(&argv[4])),
            log_max: argv[5].parse().map_err(|_| usage.to_string())?,
            program: argv[7].clone(),
            args: argv[8..].to_vec(),
        })
    }

    /// The argument vector (after the binary) that [`InitArgs::parse`] reads back.
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            "init".to_string(),
            match self.stage {
                Stage::Shim => "shim",
                Stage::Pid1 => "pid1",
            }
            .to_string(),
            self.netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".to_string()),
            self.hostname.clone(),
            self.exit_file.display().to_string(),
            self.log
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".to_string()),
            self.log_max.to_string(),
            "--".to_string(),
            self.program.clone(),
        ];
        v.extend(self.args.iter().cloned());
        v
    }
}

/// The arguments (after the binary) of `nodeagent init exec PID -- CMD…`: run CMD in
/// the namespaces of process PID (a container's init), with its environment.
pub fn exec_argv(pid: i32, cmd: &[String]) -> Vec<String> {
    exec_argv_with(pid, cmd, false)
}

/// [`exec_argv`]; with `tty` (`init exec --tty PID -- CMD…`) CMD gets a session of its
/// own whose controlling terminal is its stdin (a pseudo-terminal the caller made).
pub fn exec_argv_with(pid: i32, cmd: &[String], tty: bool) -> Vec<String> {
    let mut v: Vec<String> = vec!["init".into(), "exec".into()];
    if tty {
        v.push("--tty".into());
    }
    v.extend([pid.to_string(), "--".into()]);
    v.extend(cmd.iter().cloned());
    v
}

/// Variables of the container init that are for the init alone: never passed on to
/// what runs in the container.
fn init_only(key: &str) -> bool {
    key.starts_with("KUBE_LITE_INIT_")
}

/// `init exec PID -- CMD…` (see [`exec_argv`]): joins the UTS, IPC, network, PID and
/// mount namespaces of PID, takes its environment, runs CMD as a child (so it is in the
/// PID namespace), forwards signals, and exits with its code. The child dies with us
/// (PR_SET_PDEATHSIG), so a timed-out probe leaves nothing behind.
fn exec_in(argv: &[String]) -> i32 {
    let (tty, argv) = match argv.first().map(String::as_str) {
        Some("--tty") => (true, &argv[1..]),
        _ => (false, argv),
    };
    if argv.len() < 3 || argv[1] != "--" {
        warn("usage: nodeagent init exec [--tty] PID -- PROGRAM [ARGS...]");
        return 2;
    }
    let Ok(pid) = argv[0].parse::<i32>() else {
        warn("init exec: PID must be a number");
        return 2;
    };
    let env: Vec<(String, String)> = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    // The container's user, groups and capabilities (securityContext) for the command.
    let security = match env.iter().find(|(k, _)| k == crate::security::SECURITY_ENV) {
        Some((_, v)) => match crate::security::ProcessSecurity::decode(v) {
            Ok(s) => s,
            Err(e) => {
                warn(&format!("init exec: {e}"));
                return 126;
            }
        },
        None => Default::default(),
    };
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| !init_only(k)).collect();
    join_cgroups_of(pid);
    // Open every namespace first: joining the mount namespace changes what /proc is.
    let mut fds = Vec::new();
    for (ns, flag) in [
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        match std::fs::File::open(format!("/proc/{pid}/ns/{ns}")) {
            Ok(f) => fds.push((ns, f, flag)),
            Err(e) => {
                warn(&format!(
                    "init exec: opening the {ns} namespace of {pid}: {e}"
                ));
                return 126;
            }
        }
    }
    for (ns, f, flag) in &fds {
        if let Err(e) = nix::sched::setns(f, *flag) {
            warn(&format!(
                "init exec: joining the {ns} namespace of {pid}: {e}"
            ));
            return 126;
        }
    }
    drop(fds);
    let _ = std::env::set_current_dir("/");
    let set = signal_set();
    if let Err(e) = set.thread_block() {
        warn(&format!("blocking signals: {e}"));
    }
    let mut cmd = Command::new(&argv[2]);
    cmd.args(&argv[3..]).env_clear().envs(env);
    die_with_parent(&mut cmd);
    unblock_in_child(&mut cmd);
    crate::security::apply(&mut cmd, &security);
    if tty {
        controlling_terminal(&mut cmd);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("exec {:?}: {e}", argv[2]);
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    match supervise(&set, Pid::from_raw(child.id() as i32)) {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    }
}

/// Moves this process into the memory and cpu cgroups of `pid` (v1), or its v2 cgroup,
/// so what runs in a container is accounted and limited with it.
fn join_cgroups_of(pid: i32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let dirs: Vec<String> = if ctrls.is_empty() {
            if unified {
                vec![format!("/sys/fs/cgroup{path}")]
            } else {
                vec![]
            }
        } else {
            ctrls
                .split(',')
                .filter(|c| *c == "memory" || *c == "cpu")
                .map(|c| format!("/sys/fs/cgroup/{c}{path}"))
                .collect()
        };
        for d in dirs {
            if let Err(e) = std::fs::write(format!("{d}/cgroup.procs"), "0") {
                warn(&format!("init exec: joining cgroup {d}: {e}"));
            }
        }
    }
}

/// The child leads a new session whose controlling terminal is its stdin (a terminal:
/// job control, ^C and window-size signals reach it).
#[allow(unsafe_code)]
fn controlling_terminal(cmd: &mut Command) {
    // SAFETY: runs between fork and exec; setsid and ioctl are async-signal-safe and
    // allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child gets SIGKILL when we die.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: runs between fork and exec; prctl is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Entry point of `nodeagent init …`; never returns.
pub fn main(argv: &[String]) -> ! {
    if argv.first().map(String::as_str) == Some("exec") {
        std::process::exit(exec_in(&argv[1..]));
    }
    let args = match InitArgs::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kube-lite init: {e}");
            std::process::exit(2);
        }
    };
    let code = match args.stage {
        Stage::Shim => shim(&args),
        Stage::Pid1 => pid1(&args),
    };
    std::process::exit(code)
}

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

fn warn(msg: &str) {
    eprintln!("kube-lite init: {msg}");
}

/// Code and reason for a wait status, as the container status reports them.
fn exit_info(status: WaitStatus, message: String) -> ExitInfo {
    let (code, signal) = match status {
        WaitStatus::Exited(_, c) => (c, None),
        WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
        _ => (255, None),
    };
    ExitInfo {
        exit_code: code,
        signal,
        reason: if code == 0 {
            reason::COMPLETED
        } else {
            reason::ERROR
        }
        .to_string(),
        message,
        finished_at: now_ms(),
    }
}

fn write_exit(path: &Path, info: &ExitInfo) {
    match serde_json::to_vec(info) {
        Ok(b) => {
            if let Err(e) = write_atomic(path, &b) {
                warn(&format!("writing {}: {e}", path.display()));
            }
        }
        Err(e) => warn(&format!("encoding exit status: {e}")),
    }
}

/// Waits for `child`, forwarding signals to it, reaping any other child on the way.
/// Returns the child's wait status.
fn supervise(set: &SigSet, child: Pid) -> WaitStatus {
    loop {
        // Reap everything that is ready; note our child's end.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(st @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) => {
                    if p == child {
                        return st;
                    }
                }
                Ok(_) => {}
                Err(nix::errno::Errno::ECHILD) => {
                    return WaitStatus::Exited(child, 255);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    warn(&format!("waitpid: {e}"));
                    break;
                }
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(e) => warn(&format!("sigwait: {e}")),
        }
    }
}

fn shim(a: &InitArgs) -> i32 {
    // Own session: not in the agent's process group, survives it.
    let _ = nix::unistd::setsid();
    if let Some(ns) = &a.netns {
        match std::fs::File::open(ns) {
            Ok(f) => {
                if let Err(e) = nix::sched::setns(&f, CloneFlags::CLONE_NEWNET) {
                    let msg = format!("cannot join network namespace {}: {e}", ns.display());
                    warn(&msg);
                    write_exit(&a.exit_file, &failed_start(msg));
                    return 128;
                }
            }
            Err(e) => {
                let msg = format!("cannot open network namespace {}: {e}", ns.display());
                warn(&msg);
                write_exit(&a.exit_file, &failed_start(msg));
                return 128;
            }
        }
    }
    if let Err(e) = nix::sched::unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID,
    ) {
        // "where the kernel allows": carry on in the current namespaces.
        warn(&format!(
            "unshare(mount, UTS, PID) failed: {e}; running without them"
        ));
    }
    let set = signal_set();
    if let Err(e) = set.thread_block() {
        warn(&format!("blocking signals: {e}"));
    }
    // Our own binary, even if its file was replaced since the agent started.
    let exe = PathBuf::from("/proc/self/exe");
    let mut next = a.clone();
    next.stage = Stage::Pid1;
    next.netns = None;
    let mut cmd = Command::new(exe);
    cmd.arg0("nodeagent").args(next.to_argv());
    unblock_in_child(&mut cmd);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start the container init: {e}");
            warn(&msg);
            write_exit(&a.exit_file, &failed_start(msg));
            return 128;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let st = supervise(&set, pid);
    if !a.exit_file.exists() {
        let msg = match st {
            WaitStatus::Signaled(_, s, _) => format!("container init killed by {s}"),
            _ => String::new(),
        };
        write_exit(&a.exit_file, &exit_info(st, msg));
    }
    match st {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    }
}

/// The child must not inherit our blocked signals (std keeps the mask across exec).
#[allow(unsafe_code)]
fn unblock_in_child(cmd: &mut Command) {
    use nix::sys::signal::{pthread_sigmask, SigmaskHow};
    // SAFETY: the closure runs between fork and exec and only calls pthread_sigmask,
    // which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
}

/// Points the program's stdout/stderr at a pipe whose other end [`copy_log`] copies
/// into `log`. None (the program inherits our stdout/stderr, the log file) when the
/// pipe or file cannot be made.
fn log_pipe(
    cmd: &mut Command,
    log: &Path,
    max: u64,
) -> Option<(std::io::PipeReader, RotatingWriter)> {
    let writer = match RotatingWriter::open(log, max) {
        Ok(w) => w,
        Err(e) => {
            warn(&format!("opening log {}: {e}", log.display()));
            return None;
        }
    };
    let (rd, wr) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            warn(&format!("log pipe: {e}"));
            return None;
        }
    };
    let wr2 = wr.try_clone().ok()?;
    cmd.stdout(wr).stderr(wr2);
    Some((rd, writer))
}

/// Copies the pipe into the log from a thread; the receiver resolves at EOF.
fn copy_log(
    mut rd: std::io::PipeReader,
    mut writer: RotatingWriter,
) -> std::sync::mpsc::Receiver<()> {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; crate::logfile::CHUNK];
        loop {
            match rd.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = writer.write(&buf[..n]) {
                        warn(&format!("writing log: {e}"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    rx
}

fn failed_start(message: String) -> ExitInfo {
    ExitInfo {
        exit_code: 128,
        signal: None,
        reason: reason::START_ERROR.to_string(),
        message,
        finished_at: now_ms(),
    }
}

/// The container cannot start: the exit file says why (StartError), code 128.
fn start_error(a: &InitArgs, msg: String) -> i32 {
    warn(&msg);
    write_exit(&a.exit_file, &failed_start(msg));
    128
}

/// Remounts `/` read-only in our mount namespace (PID 1 of a new one only: never the
/// node's). The pod's state directory (log, exit file) is bound onto itself first so it
/// stays writable, as every other mount does.
fn read_only_root(a: &InitArgs) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    if nix::unistd::getpid().as_raw() != 1 {
        return Err("the container has no mount namespace of its own".into());
    }
    if let Some(dir) = a.exit_file.parent() {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("binding {}: {e}", dir.display()))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("remounting / read-only: {e}"))
}

fn pid1(a: &InitArgs) -> i32 {
    use nix::mount::{mount, MsFlags};
    if !a.hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(&a.hostname) {
            warn(&format!("sethostname {}: {e}", a.hostname));
        }
    }
    // Only when we really are PID 1 of a new namespace (unshare worked).
    if nix::unistd::getpid().as_raw() == 1 {
        if let Err(e) = mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            warn(&format!("making mounts private: {e}"));
        } else if let Err(e) = mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            warn(&format!("mounting /proc: {e}"));
        }
        // The pod's resolv.conf over the node's, in this mount namespace only.
        if let Some(src) = std::env::var_os(crate::runtime::RESOLV_CONF_ENV) {
            if let Err(e) = mount(
                Some(src.as_os_str()),
                "/etc/resolv.conf",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ) {
                warn(&format!("bind-mounting {src:?} on /etc/resolv.conf: {e}"));
            }
        }
        // The pod's volumes at their volumeMounts paths (issue 13).
        if let Some(f) = std::env::var_os(crate::mounts::MOUNTS_ENV) {
            // Scratch space for private mount points: `<c>.mounts` → `<c>.private`.
            let scratch = Path::new(&f).with_extension("private");
            if let Err(msg) =
                crate::mounts::read(Path::new(&f)).and_then(|m| crate::mounts::apply(&m, &scratch))
            {
                warn(&msg);
                write_exit(&a.exit_file, &failed_start(msg));
                return 128;
            }
        }
    } else if std::env::var_os(crate::mounts::MOUNTS_ENV).is_some() {
        let msg = "volume mounts need a mount namespace, which the kernel refused".to_string();
        warn(&msg);
        write_exit(&a.exit_file, &failed_start(msg));
        return 128;
    } else {
        // Not PID 1 (no PID namespace): at least adopt orphans of the program.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let security = match std::env::var(crate::security::SECURITY_ENV) {
        Ok(v) => match crate::security::ProcessSecurity::decode(&v) {
            Ok(s) => s,
            Err(e) => return start_error(a, format!("securityContext: {e}")),
        },
        Err(_) => Default::default(),
    };
    if security.read_only_root {
        if let Err(e) = read_only_root(a) {
            return start_error(a, format!("readOnlyRootFilesystem: {e}"));
        }
    }
    let set = signal_set();
    if let Err(e) = set.thread_block() {
        warn(&format!("blocking signals: {e}"));
    }
    let mut cmd = Command::new(&a.program);
    cmd.args(&a.args)
        .env_remove(crate::runtime::RESOLV_CONF_ENV)
        .env_remove(crate::mounts::MOUNTS_ENV)
        .env_remove(crate::security::SECURITY_ENV);
    unblock_in_child(&mut cmd);
    crate::security::apply(&mut cmd, &security);
    let pipe = a
        .log
        .as_ref()
        .and_then(|log| log_pipe(&mut cmd, log, a.log_max));
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end go: EOF comes when the program's do.
    drop(cmd);
    // The copier thread starts after the program, which so stays PID 2 (a thread takes
    // a PID of the namespace too), and after the signal mask is set (it inherits it).
    let copier = pipe.map(|(rd, w)| copy_log(rd, w));
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let msg = format!("cannot run {:?}: {e}", a.program);
            warn(&msg);
            write_exit(
                &a.exit_file,
                &ExitInfo {
                    exit_code: code,
                    signal: None,
                    reason: reason::START_ERROR.to_string(),
                    message: msg,
                    finished_at: now_ms(),
                },
            );
            return code;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let st = supervise(&set, pid);
    if let Some(done) = copier {
        // Everything the program wrote is in the file before its exit is recorded
        // (bounded: a left-over background process may hold the pipe open).
        let _ = done.recv_timeout(std::time::Duration::from_secs(2));
    }
    let info = exit_info(st, String::new());
    write_exit(&a.exit_file, &info);
    info.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = InitArgs {
            stage: Stage::Shim,
            netns: Some("/run/netns/kl-x".into()),
            hostname: "web".into(),
            exit_file: "/tmp/x/c.exit".into(),
            log: Some("/tmp/x/c.log".into()),
            log_max: 1 << 20,
            program: "/bin/busybox".into(),
            args: vec!["sh".into(), "-c".into(), "echo hi -- there".into()],
        };
        let argv = a.to_argv();
        assert_eq!(argv[0], "init");
        assert_eq!(InitArgs::parse(&argv[1..]).unwrap(), a);
        let b = InitArgs {
            netns: None,
            log: None,
            log_max: 0,
            args: vec![],
            ..a
        };
        assert_eq!(InitArgs::parse(&b.to_argv()[1..]).unwrap(), b);
    }

    #[test]
    fn bad_args_are_refused() {
        assert!(InitArgs::parse(&["shim".into()]).is_err());
        let v: Vec<String> = ["x", "-", "h", "f", "-", "0", "--", "p"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(InitArgs::parse(&v).is_err());
        let v: Vec<String> = ["shim", "-", "h", "f", "-", "lots", "--", "p"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(InitArgs::parse(&v).is_err());
    }
}
