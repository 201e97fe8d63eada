//! kl-whoami: the demo program of kube-lite pods (like the tutorial's whats-my-ip image).
//!
//! Listens on `0.0.0.0:<port>` (port 8080; `--port N` or env `PORT` override, flag
//! first) for TCP and UDP. Every HTTP request gets `HOSTNAME:<hostname> IP:<ip>\n` with
//! `Connection: close`, where `<hostname>` is the UTS hostname (the pod name under
//! kube-lite) and `<ip>` the first non-loopback IPv4 address (the pod IP); `GET /client`
//! adds a line `CLIENT:<source address of the connection>`. Every UDP
//! datagram gets the same text back. SIGTERM/SIGINT end it at once with status 0, also
//! when it is PID 1 of its namespace (the signals are waited for, not left to defaults).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: kl-whoami [--port PORT]   (env PORT also works; default 8080)";

fn parse_port(args: &[String], env: Option<String>) -> Result<u16, String> {
    let mut port: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" | "-p" => {
                port = Some(it.next().ok_or("--port needs a value")?.clone());
            }
            s if s.starts_with("--port=") => port = Some(s["--port=".len()..].to_string()),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    let raw = port.or(env).unwrap_or_else(|| "8080".to_string());
    raw.trim()
        .parse::<u16>()
        .map_err(|_| format!("invalid port {raw:?}\n{USAGE}"))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// First non-loopback IPv4 address (interfaces in kernel order), or 0.0.0.0.
fn first_ipv4() -> Ipv4Addr {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Ipv4Addr::UNSPECIFIED;
    };
    addrs
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// The text every request gets.
fn answer() -> String {
    format!("HOSTNAME:{} IP:{}\n", hostname(), first_ipv4())
}

fn serve_tcp(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    // Read the request head (or whatever arrives before the timeout / EOF).
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            break;
        }
    }
    let head = buf.starts_with(b"HEAD ");
    // `GET /client`: the address the connection came from (is the client's source
    // preserved through a Service?), after the usual line.
    let body = if buf.starts_with(b"GET /client ") {
        let peer = s
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        format!("{}CLIENT:{peer}\n", answer())
    } else {
        answer()
    };
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head {
        resp.push_str(&body);
    }
    let _ = s.write_all(resp.as_bytes());
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Write);
}

fn serve_udp(sock: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let _ = sock.send_to(answer().as_bytes(), peer);
            }
            Err(e) => {
                eprintln!("kl-whoami: udp: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match parse_port(&args, std::env::var("PORT").ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kl-whoami: {e}");
            return ExitCode::from(2);
        }
    };
    // Block the termination signals in every thread (threads inherit the mask) and wait
    // for them on one: works as PID 1 too, where default actions do not apply.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("kl-whoami: block signals: {e}");
    }
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kl-whoami: listen tcp {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    // Port 0 means "any": UDP then uses the port TCP got.
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    match UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, bound))) {
        Ok(u) => {
            std::thread::spawn(move || serve_udp(u));
        }
        Err(e) => eprintln!("kl-whoami: listen udp {bound}: {e} (TCP only)"),
    }
    // Never println!: a closed stdout must not kill the server.
    let _ = writeln!(
        std::io::stdout(),
        "kl-whoami listening on 0.0.0.0:{bound} (tcp+udp) as {}",
        answer().trim_end()
    );
    let _ = std::io::stdout().flush();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(s) => {
                    std::thread::spawn(move || serve_tcp(s));
                }
                Err(e) => eprintln!("kl-whoami: accept: {e}"),
            }
        }
    });
    match signals.wait() {
        Ok(sig) => {
            let _ = writeln!(std::io::stdout(), "kl-whoami: {sig}, exiting");
        }
        Err(e) => eprintln!("kl-whoami: sigwait: {e}"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn port_from_flag_env_default() {
        assert_eq!(parse_port(&[], None).unwrap(), 8080);
        assert_eq!(parse_port(&[], Some("9000".into())).unwrap(), 9000);
        assert_eq!(
            parse_port(&s(&["--port", "81"]), Some("9000".into())).unwrap(),
            81
        );
        assert_eq!(parse_port(&s(&["--port=82"]), None).unwrap(), 82);
        assert!(parse_port(&s(&["--port"]), None).is_err());
        assert!(parse_port(&s(&["--port", "x"]), None).is_err());
        assert!(parse_port(&s(&["extra"]), None).is_err());
        assert!(parse_port(&[], Some("70000".into())).is_err());
    }

    #[test]
    fn answer_format() {
        let a = answer();
        assert!(a.starts_with("HOSTNAME:") && a.contains(" IP:") && a.ends_with('\n'));
    }
}
