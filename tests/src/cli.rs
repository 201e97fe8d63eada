//! Running `kubectl-lite` as the tests' user does: with stdin fed to it, or on a
//! pseudo-terminal of a given size.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// `bin --server <server> <args>` with `stdin` fed to it (then closed), within 60 s:
/// (exit code, stdout, stderr).
pub async fn kl_stdin(
    bin: &Path,
    server: &str,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut child = Command::new(bin)
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

/// Sets the window size of the terminal `fd` (TIOCSWINSZ).
pub fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: TIOCSWINSZ reads one winsize from a pointer valid for the call.
    let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ");
}

/// Everything read from `r` (a pseudo-terminal's master end), appended to the returned
/// string by a thread until EOF or an error.
pub fn collect(mut r: std::fs::File) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}
