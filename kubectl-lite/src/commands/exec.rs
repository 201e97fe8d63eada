//! `exec [-i] [-t] POD [-c C] -- CMD…`: a command in a running container, through the
//! apiserver (PodExec) to the pod's node agent. As kubectl: `-t` allocates a terminal
//! (only when our stdin is one; else a warning and none), which puts ours in raw mode
//! and follows its size; `-i` passes stdin; kubectl-lite ends with the command's exit
//! code ("command terminated with exit code N" on stderr when it is not 0).

use super::ctx::Ctx;
use crate::cli::ExecArgs;
use anyhow::Result;
use futures::StreamExt;
use kube_lite_proto::v1::{
    pod_exec_client::PodExecClient, ExecRequest, ExecStart, Pod, TerminalSize,
};
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The command ended with this non-zero code: kubectl-lite exits with it.
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command terminated with exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

/// The start message (pure).
pub fn start(a: &ExecArgs, namespace: &str, tty: bool, size: Option<TerminalSize>) -> ExecStart {
    ExecStart {
        name: a.pod.clone(),
        namespace: namespace.to_string(),
        container: a.container.clone(),
        command: a.command.clone(),
        stdin: a.stdin,
        tty,
        size: if tty { size } else { None },
    }
}

/// Our terminal in raw mode until dropped (then as it was).
struct Raw(Option<nix::sys::termios::Termios>);

impl Raw {
    fn enter() -> Raw {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let fd = std::io::stdin();
        let Ok(old) = tcgetattr(&fd) else {
            return Raw(None);
        };
        let mut raw = old.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&fd, SetArg::TCSANOW, &raw).is_err() {
            return Raw(None);
        }
        Raw(Some(old))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                old,
            );
        }
    }
}

/// The size of our terminal (stdout's, else stdin's).
#[allow(unsafe_code)]
fn terminal_size() -> Option<TerminalSize> {
    for fd in [1, 0] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, valid for the call.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return Some(TerminalSize {
                width: ws.ws_col as u32,
                height: ws.ws_row as u32,
            });
        }
    }
    None
}

pub async fn run(ctx: &Ctx, a: ExecArgs) -> Result<()> {
    let mut tty = a.tty;
    if tty && !std::io::stdin().is_terminal() {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        tty = false;
    }
    let first = start(&a, &ctx.namespace, tty, terminal_size());
    let (tx, rx) = mpsc::channel::<ExecRequest>(8);
    tx.send(ExecRequest {
        start: Some(first),
        ..Default::default()
    })
    .await?;
    let what = format!("exec pod/{}", a.pod);
    let mut replies = PodExecClient::new(ctx.ch.clone())
        .max_decoding_message_size(kube_lite_core::exec::MAX_EXEC_MESSAGE_BYTES)
        .exec(ReceiverStream::new(rx))
        .await
        .map_err(|s| ctx.error::<Pod>(&what, &a.pod, s))?
        .into_inner();
    let _raw = tty.then(Raw::enter);
    if a.stdin {
        // A thread of its own: a blocking read of stdin cannot be cancelled, and must
        // not hold up the end of the runtime.
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            let mut stdin = std::io::stdin().lock();
            loop {
                let m = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => ExecRequest {
                        stdin_eof: true,
                        ..Default::default()
                    },
                    Ok(n) => ExecRequest {
                        stdin: buf[..n].to_vec(),
                        ..Default::default()
                    },
                };
                let eof = m.stdin_eof;
                if tx.blocking_send(m).is_err() || eof {
                    return;
                }
            }
        });
    }
    if tty {
        let tx = tx.clone();
        if let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some(sz) = terminal_size() {
                        let m = ExecRequest {
                            resize: Some(sz),
                            ..Default::default()
                        };
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    // Without stdin or a terminal nothing more goes up: the request side stays open
    // (its end would read as "stdin closed", which is what it is without -i anyway).
    let _keep = tx;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(r) = replies.next().await {
        let r = r.map_err(|s| ctx.error::<Pod>(&what, &a.pod, s))?;
        if !r.stdout.is_empty() {
            out.write_all(&r.stdout)?;
            out.flush()?;
        }
        if !r.stderr.is_empty() {
            err.write_all(&r.stderr)?;
            err.flush()?;
        }
        if let Some(exit) = r.exit {
            if exit.exit_code == 0 {
                return Ok(());
            }
            if exit.reason == "Error" && !exit.message.is_empty() {
                anyhow::bail!("{}", exit.message);
            }
            return Err(ExitCode(exit.exit_code).into());
        }
    }
    anyhow::bail!("{what}: the stream ended without the command's exit status")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ExecArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("kubectl-lite").chain(args.iter().copied()))?;
        match cli.command {
            Command::Exec(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_and_command_after_the_dashes() {
        let a = parse(&["exec", "-it", "web", "-c", "app", "--", "sh", "-c", "id -u"]).unwrap();
        assert!(a.stdin && a.tty);
        assert_eq!(a.container, "app");
        assert_eq!(a.command, ["sh", "-c", "id -u"]);
        let sz = TerminalSize {
            width: 100,
            height: 30,
        };
        let s = start(&a, "dev", true, Some(sz));
        assert_eq!(
            (s.namespace.as_str(), s.tty, s.size),
            ("dev", true, Some(sz))
        );
        assert_eq!(start(&a, "dev", false, Some(sz)).size, None);
        let a = parse(&["exec", "web", "--", "ls", "-l"]).unwrap();
        assert!(!a.stdin && !a.tty && a.container.is_empty());
        assert_eq!(a.command, ["ls", "-l"]);
        assert!(parse(&["exec", "web"]).is_err(), "a command is required");
    }

    #[test]
    fn exit_codes_read_as_kubectl_prints_them() {
        assert_eq!(
            ExitCode(3).to_string(),
            "command terminated with exit code 3"
        );
    }
}
