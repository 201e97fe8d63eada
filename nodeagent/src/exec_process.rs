//! The process runtime's interactive exec ([`crate::runtime::Runtime::exec`]): the
//! command runs as `nodeagent init exec PID -- CMD…` (see [`crate::init`]), which joins
//! the container init's namespaces (uts, ipc, net, pid, mount), its cgroups, its
//! environment and its user/capabilities, so the command sees what the container sees.
//! Without a tty stdout and stderr come back apart through pipes; with one, a
//! pseudo-terminal made here is the command's stdin/stdout/stderr (merged) and resizes
//! set its window size. The command dies with its `init exec` (PR_SET_PDEATHSIG), which
//! is killed when the session drops it.

use crate::runtime::{ExecIo, ExecOptions, ExecProcess, RuntimeError};
use futures::future::BoxFuture;
use std::path::Path;
use std::process::Stdio;

/// An `init exec` child and its terminal (with a tty).
pub struct ProcessExec {
    child: tokio::process::Child,
    io: ExecIo,
    master: Option<std::fs::File>,
}

fn start_failed(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::ExecStart {
        exit_code: 126,
        message: format!("cannot start the command: {e}"),
    }
}

/// Starts `o.command` in the namespaces of container init `target` (host PID).
pub fn spawn(exe: &Path, target: i32, o: &ExecOptions) -> Result<ProcessExec, RuntimeError> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg0("nodeagent")
        .args(crate::init::exec_argv_with(target, &o.command, o.tty))
        .kill_on_drop(true);
    let mut master = None;
    if o.tty {
        let (width, height) = o.size.unwrap_or((80, 24));
        let pty = nix::pty::openpty(Some(&winsize(width, height)), None)
            .map_err(|e| start_failed(format!("a pseudo-terminal: {e}")))?;
        let slave = std::fs::File::from(pty.slave);
        let a = slave.try_clone().map_err(start_failed)?;
        let b = slave.try_clone().map_err(start_failed)?;
        cmd.stdin(a).stdout(b).stderr(slave);
        master = Some(std::fs::File::from(pty.master));
    } else {
        cmd.stdin(if o.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(start_failed)?;
    // Our copies of the terminal's slave end go: EOF (EIO) comes when the command's do.
    drop(cmd);
    let mut io = ExecIo::default();
    match &master {
        Some(m) => {
            let r = m.try_clone().map_err(start_failed)?;
            io.stdout = Some(Box::new(tokio::fs::File::from_std(r)));
            if o.stdin {
                let w = m.try_clone().map_err(start_failed)?;
                io.stdin = Some(Box::new(tokio::fs::File::from_std(w)));
            }
        }
        None => {
            if let Some(out) = child.stdout.take() {
                io.stdout = Some(Box::new(out));
            }
            if let Some(err) = child.stderr.take() {
                io.stderr = Some(Box::new(err));
            }
            if let Some(i) = child.stdin.take() {
                io.stdin = Some(Box::new(i));
            }
        }
    }
    Ok(ProcessExec { child, io, master })
}

impl ExecProcess for ProcessExec {
    fn take_io(&mut self) -> ExecIo {
        std::mem::take(&mut self.io)
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>> {
        Box::pin(async move {
            use std::os::unix::process::ExitStatusExt;
            let st = self
                .child
                .wait()
                .await
                .map_err(|e| format!("waiting for the command: {e}"))?;
            Ok(st.code().or(st.signal().map(|s| 128 + s)).unwrap_or(255))
        })
    }

    fn resize(&mut self, width: u16, height: u16) -> BoxFuture<'_, ()> {
        if let Some(m) = &self.master {
            if let Err(e) = set_winsize(m, width, height) {
                tracing::debug!("exec resize: {e}");
            }
        }
        Box::pin(async {})
    }

    fn close_stdin(&mut self) -> BoxFuture<'_, ()> {
        // Dropping the pipe's writer was all it takes.
        Box::pin(async {})
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.child.kill().await;
        })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

fn winsize(width: u16, height: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// TIOCSWINSZ on the terminal's master: the command's foreground group gets SIGWINCH.
#[allow(unsafe_code)]
fn set_winsize(master: &std::fs::File, width: u16, height: u16) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = winsize(width, height);
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the
    // duration of the call; the descriptor is open (borrowed).
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
