//! The container log writer containerd's shim runs for each task (`binary://` log URI):
//! `nodeagent kl-log <max>,<log path>`, with the container's stdout on fd 3, stderr on
//! fd 4 and fd 5 to signal readiness. Writes both into the container's log file through
//! the process runtime's [`RotatingWriter`] (same file, same rotation), so
//! `kubectl-lite logs` reads containerd containers unchanged. It is the shim's child,
//! not the agent's: logs keep flowing while the agent is down.

use crate::logfile::{RotatingWriter, CHUNK};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// The first argument (the URI's query key).
pub const ARG: &str = "kl-log";

/// `max,path` → (max, path).
pub fn parse(arg: &str) -> Option<(u64, String)> {
    let (max, path) = arg.split_once(',')?;
    Some((max.parse().ok()?, path.to_string()).clone()).filter(|(_, p)| p.starts_with('/'))
}

fn copy(mut from: std::fs::File, to: Arc<Mutex<RotatingWriter>>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = to.lock().unwrap().write(&buf[..n]) {
                    eprintln!("kl-log: writing: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

pub fn main(args: &[String]) -> ! {
    let Some((max, path)) = args.first().and_then(|a| parse(a)) else {
        eprintln!("usage: nodeagent {ARG} <max bytes>,<log path>");
        std::process::exit(2);
    };
    let w = match RotatingWriter::open(&path, max) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            eprintln!("kl-log: opening {path}: {e}");
            std::process::exit(1);
        }
    };
    // The pipes, reopened through /proc (no unsafe fd adoption needed).
    let out = std::fs::File::open("/proc/self/fd/3");
    let err = std::fs::File::open("/proc/self/fd/4");
    // Ready: one byte on fd 5 (the shim waits for a byte or EOF).
    if let Ok(mut ready) = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/5")
    {
        let _ = ready.write_all(b"r");
    }
    let mut threads = Vec::new();
    for f in [out, err].into_iter().flatten() {
        let w = w.clone();
        threads.push(std::thread::spawn(move || copy(f, w)));
    }
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    #[test]
    fn args() {
        assert_eq!(
            super::parse("1024,/a/b.log"),
            Some((1024, "/a/b.log".into()))
        );
        assert_eq!(super::parse("x,/a"), None);
        assert_eq!(super::parse("1,rel"), None);
        assert_eq!(super::parse("1"), None);
    }
}
