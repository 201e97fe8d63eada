//! The accept loop in front of the gRPC server: bounded connections, a handshake
//! deadline, logged back-off on accept errors, and the open-files limit raised.
//!
//! - At most `max_connections` connections are held; past that a new connection is
//!   accepted and closed at once (logged, at most once per second), so a flood of idle
//!   sockets cannot starve the process of file descriptors.
//! - A connection must send the HTTP/2 client preface within `handshake_timeout`, or it
//!   is closed; hyper would otherwise wait for it forever.
//! - Accept errors (EMFILE, ENFILE, …) back off from 10 ms to 1 s instead of spinning,
//!   and are logged at most once per second.
//! - After the handshake, HTTP/2 keepalive pings (set on the server builder) close
//!   connections whose peer stopped answering.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// An accepted connection; holds its slot until dropped.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Logs at most once per `every`, counting what it skipped.
struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimited {
    fn new(every: Duration) -> Self {
        RateLimited {
            every,
            last: None,
            skipped: 0,
        }
    }
    /// `Some(skipped since the last log)` when it is time to log.
    fn tick(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

/// The next accept back-off after an error: doubles from 10 ms up to 1 s.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Waits until the peer has sent the whole HTTP/2 preface (without consuming it).
async fn preface(stream: &TcpStream) -> io::Result<()> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        stream.readable().await?;
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if n >= PREFACE.len() || buf[..n] != PREFACE[..n] {
            // Complete, or not HTTP/2 at all: let the server answer it.
            return Ok(());
        }
        // Part of the preface: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Accepts connections from `listener` under `limits`; the returned stream feeds
/// `Server::serve_with_incoming`.
pub fn incoming(listener: TcpListener, limits: Limits) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        let mut accept_log = RateLimited::new(Duration::from_secs(1));
        let mut full_log = RateLimited::new(Duration::from_secs(1));
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        backoff = next_backoff(backoff);
                        if let Some(skipped) = accept_log.tick(Instant::now()) {
                            tracing::warn!(error = %e, ?backoff, skipped, "accept failed; backing off");
                        }
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            backoff = Duration::ZERO;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                if let Some(skipped) = full_log.tick(Instant::now()) {
                    tracing::warn!(
                        %peer,
                        max = limits.max_connections,
                        skipped,
                        "connection limit reached; closing new connection"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, preface(&stream)).await {
                    Ok(Ok(())) => {
                        let _ = tx
                            .send(Ok(Conn {
                                stream,
                                _permit: permit,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection closed before the handshake")
                    }
                    Err(_) => tracing::debug!(
                        %peer,
                        timeout = ?limits.handshake_timeout,
                        "closing connection: no HTTP/2 preface in time"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Raises the soft open-files limit to the hard limit (the accept loop's connection
/// limit is the real bound; the default soft limit of 1024 is far below it).
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..9 {
            b = next_backoff(b);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[test]
    fn rate_limited_logs_once_per_period_and_counts_skips() {
        let t0 = Instant::now();
        let mut r = RateLimited::new(Duration::from_secs(1));
        assert_eq!(r.tick(t0), Some(0));
        assert_eq!(r.tick(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.tick(t0 + Duration::from_millis(900)), None);
        assert_eq!(r.tick(t0 + Duration::from_millis(1001)), Some(2));
    }
}
