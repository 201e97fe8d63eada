//! `terminationMessagePath` / `terminationMessagePolicy` (issue 13, point 7), as the
//! kubelet does them.
//!
//! Before each instance starts, the agent makes a fresh empty file per container in the
//! pod's state directory (`<c>.termination-log`, mode 0666 so any runAsUser can write
//! it) and adds a bind mount of it at the container's `terminationMessagePath` to the
//! generic [`ContainerSpec::mounts`](crate::runtime::ContainerSpec::mounts), so every
//! runtime gets it: the containerd runtime as an OCI bind mount (runc makes the target in
//! the container's own `/dev`), the process runtime through the container init, which
//! makes a missing target in the container's mount namespace only (a private overlay,
//! see [`crate::mounts`]) and never on the node's `/dev`.
//!
//! When the instance ends, its message is read into the terminated state (status and,
//! after a restart, lastState): the file's last bytes (at most [`MAX_MESSAGE_BYTES`],
//! and [`MAX_POD_MESSAGE_BYTES`] shared equally by the pod's containers); with
//! `FallbackToLogsOnError`, when the file is empty and the exit code is not 0, the log's
//! tail instead (its last [`LOG_TAIL_LINES`] lines, at most [`LOG_TAIL_BYTES`]). A
//! message the runtime gave (StartError, a probe kill) comes first, joined by `": "`, as
//! the kubelet joins its own.

use super::ports::StateStore;
use crate::mounts::Mount;
use crate::state::ExitInfo;
use kube_lite_core::consts::termination_message as tm;
use kube_lite_proto::v1::Container;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The kubelet's bounds: 4 KiB per container, 12 KiB per pod, and for the log fallback
/// the last 80 lines, at most 2 KiB.
pub const MAX_MESSAGE_BYTES: usize = 4096;
pub const MAX_POD_MESSAGE_BYTES: usize = 12 * 1024;
pub const LOG_TAIL_LINES: usize = 80;
pub const LOG_TAIL_BYTES: usize = 2048;

/// What one container's message may take when the pod has `containers` (init and app).
pub fn budget(containers: usize) -> usize {
    MAX_MESSAGE_BYTES.min(MAX_POD_MESSAGE_BYTES / containers.max(1))
}

/// The message of an ended instance: `runtime` (the runtime's own, may be empty), then
/// the file's content (`None`: no file), or with FallbackToLogsOnError and a failure
/// the log tail when the file is empty.
pub fn message(
    runtime: &str,
    file: Option<&[u8]>,
    policy: &str,
    exit_code: i32,
    log_tail: impl FnOnce() -> String,
) -> String {
    let fallback = policy == tm::FALLBACK_TO_LOGS_ON_ERROR && exit_code != 0;
    let own = match file {
        Some(b) if !b.is_empty() => String::from_utf8_lossy(b).into_owned(),
        _ if fallback => log_tail(),
        _ => String::new(),
    };
    match (runtime.is_empty(), own.is_empty()) {
        (_, true) => runtime.to_string(),
        (true, false) => own,
        (false, false) => format!("{runtime}: {own}"),
    }
}

/// The last [`LOG_TAIL_LINES`] lines of `bytes` (a final newline ends the last line).
pub fn last_lines(bytes: &[u8]) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    match body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, c)| **c == b'\n')
        .nth(LOG_TAIL_LINES - 1)
    {
        Some((i, _)) => &bytes[i + 1..],
        None => bytes,
    }
}

/// The last `max` bytes of a regular file (never through a symlink).
pub fn read_last(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let start = md.len().saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start))?;
    let mut out = Vec::with_capacity(max.min(md.len() as usize));
    f.take(max as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// The log's tail for FallbackToLogsOnError: the last [`LOG_TAIL_BYTES`] of the log
/// (its rotated part first), then its last [`LOG_TAIL_LINES`] lines.
pub fn log_tail(log: &Path) -> String {
    let mut bytes = read_last(log, LOG_TAIL_BYTES).unwrap_or_default();
    if bytes.len() < LOG_TAIL_BYTES {
        let older = read_last(
            &crate::logfile::rotated_path(log),
            LOG_TAIL_BYTES - bytes.len(),
        )
        .unwrap_or_default();
        bytes.splice(0..0, older);
    }
    String::from_utf8_lossy(last_lines(&bytes)).into_owned()
}

/// A fresh empty message file for a new instance of `c`, and its mount at the
/// container's path; None when the container has no path or the store has no files.
pub fn prepare(file: Option<PathBuf>, c: &Container) -> Result<Option<Mount>, String> {
    let (Some(file), false) = (file, c.termination_message_path.is_empty()) else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| format!("termination message file {}: {e}", file.display());
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    // A new file each time (not truncation: the file of an instance still being read
    // by nobody else is replaced, never shared).
    let _ = std::fs::remove_file(&file);
    std::fs::File::create(&file).map_err(err)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(Some(Mount {
        source: file,
        target: PathBuf::from(&c.termination_message_path),
        read_only: false,
    }))
}

/// `exit` with its termination message, for container `c` of a pod of `containers`.
pub fn enrich(
    state: &dyn StateStore,
    uid: &str,
    c: &Container,
    containers: usize,
    mut exit: ExitInfo,
) -> ExitInfo {
    let Some(file) = state.termination_log(uid, &c.name) else {
        return exit;
    };
    if c.termination_message_path.is_empty() {
        return exit;
    }
    let read = read_last(&file, budget(containers));
    let content = match &read {
        Ok(b) => Some(b.as_slice()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            let m = format!("Error on reading termination log {}: {e}", file.display());
            exit.message = message(&exit.message, Some(m.as_bytes()), tm::FILE, 0, String::new);
            return exit;
        }
    };
    let log = state.log_path(uid, &c.name);
    exit.message = message(
        &exit.message,
        content,
        &c.termination_message_policy,
        exit.exit_code,
        || log.map(|l| log_tail(&l)).unwrap_or_default(),
    );
    // The fallback's tail is bounded by its own limits; the whole by the budget.
    truncate_to(&mut exit.message, budget(containers) + MAX_MESSAGE_BYTES);
    exit
}

fn truncate_to(s: &mut String, max: usize) {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_share_twelve_kib() {
        assert_eq!(budget(1), 4096);
        assert_eq!(budget(3), 4096);
        assert_eq!(budget(4), 3072);
        assert_eq!(budget(12), 1024);
        assert_eq!(budget(0), 4096);
    }

    #[test]
    fn file_then_fallback_then_runtime_message() {
        let never = || -> String { panic!("log read") };
        assert_eq!(message("", Some(b"bye\n"), "File", 1, never), "bye\n");
        assert_eq!(message("", Some(b""), "File", 1, never), "");
        assert_eq!(message("", None, "File", 1, never), "");
        // Fallback only when the file is empty and the container failed.
        assert_eq!(
            message("", Some(b""), "FallbackToLogsOnError", 2, || "tail".into()),
            "tail"
        );
        assert_eq!(
            message("", None, "FallbackToLogsOnError", 2, || "tail".into()),
            "tail"
        );
        assert_eq!(
            message("", Some(b""), "FallbackToLogsOnError", 0, never),
            ""
        );
        assert_eq!(
            message("", Some(b"mine"), "FallbackToLogsOnError", 2, never),
            "mine"
        );
        assert_eq!(
            message("OOM", Some(b"mine"), "File", 137, never),
            "OOM: mine"
        );
        assert_eq!(message("OOM", Some(b""), "File", 137, never), "OOM");
    }

    #[test]
    fn log_tail_is_the_last_lines_and_bytes() {
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let tail = String::from_utf8(last_lines(text.as_bytes()).to_vec()).unwrap();
        assert!(
            tail.starts_with("line 21\n") && tail.ends_with("line 100\n"),
            "{tail}"
        );
        assert_eq!(last_lines(b"a\nb"), b"a\nb");
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        std::fs::write(&log, &text).unwrap();
        assert_eq!(log_tail(&log), tail);
        // Long lines: the byte bound wins; the rotated part fills a short log.
        let long = "x".repeat(3000) + "\nend\n";
        std::fs::write(&log, &long).unwrap();
        assert_eq!(log_tail(&log).len(), LOG_TAIL_BYTES);
        std::fs::write(crate::logfile::rotated_path(&log), "old\n").unwrap();
        std::fs::write(&log, "new\n").unwrap();
        assert_eq!(log_tail(&log), "old\nnew\n");
        assert_eq!(log_tail(&d.path().join("none")), "");
    }

    #[test]
    fn prepare_makes_a_fresh_writable_file_and_reads_keep_the_end() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pod/c.termination-log");
        let c = Container {
            name: "c".into(),
            termination_message_path: "/dev/termination-log".into(),
            ..Default::default()
        };
        let m = prepare(Some(f.clone()), &c).unwrap().unwrap();
        assert_eq!(m.target, PathBuf::from("/dev/termination-log"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        std::fs::write(&f, "a".repeat(5000) + "END").unwrap();
        let b = read_last(&f, 4096).unwrap();
        assert_eq!(b.len(), 4096);
        assert!(b.ends_with(b"END"));
        prepare(Some(f.clone()), &c).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"");
        // A symlink is not followed.
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(read_last(&l, 10).is_err());
        let none = Container::default();
        assert!(prepare(Some(f), &none).unwrap().is_none());
    }
}
