//! Client connections: the accept loop and the life of each connection, with the
//! limits of [`ConnLimits`] (from [`Config`]).
//!
//! - At most `max_connections` open at once (one semaphore permit each). One more is
//!   accepted and closed at once (the client sees the connection closed, not a hang),
//!   and that is logged, at most once per [`LOG_EVERY`].
//! - An accept error that is about resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off
//!   exponentially ([`Backoff`], 5 ms to 1 s) and is logged (rate-limited) instead of
//!   spinning; one about the aborted new connection itself is retried at once.
//! - Handshake: a connection that has not sent the 24-byte HTTP/2 client preface
//!   within `handshake_timeout` is closed, as is one that sends something else.
//! - HTTP/2 (hyper): keepalive PINGs, at most `max_streams_per_connection` concurrent
//!   streams, an idle timeout (no open stream for `idle_timeout` → GOAWAY), and a
//!   request timeout on the response head only (a Watch or Logs stream is never timed).
//! - Shutdown: stop accepting (the listener is closed), GOAWAY on every connection, wait
//!   up to `drain` for them to finish, then drop the rest.
//! - [`raise_nofile_limit`]: the soft RLIMIT_NOFILE up to the hard limit (the binary
//!   calls it at start).
//!
//! The decisions ([`preface`], [`Backoff`], [`LogLimiter`], [`classify_accept_error`],
//! [`nofile_target`]) are pure functions with unit tests; the rest is thin I/O.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http::{Request, Response};
use tonic::Status;

use crate::config::Config;

/// The connection settings of a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most; a connection beyond it is accepted and closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (a Watch is one long stream: agents and
    /// kubectl-lite multiplex several over one connection).
    pub max_streams_per_connection: u32,
    /// A connection that has not sent the HTTP/2 preface by then is closed.
    pub handshake_timeout: Duration,
    /// A connection with no open stream for this long is closed (GOAWAY); zero: never.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval (zero: none); a peer that does not answer within
    /// `keepalive_timeout` is dropped.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Longest time to the response head (zero: none); streams are never timed.
    pub request_timeout: Duration,
}

impl ConnLimits {
    pub fn of(cfg: &Config) -> ConnLimits {
        ConnLimits {
            max_connections: cfg.max_connections,
            max_streams_per_connection: cfg.max_streams_per_connection,
            handshake_timeout: cfg.handshake_timeout,
            idle_timeout: cfg.idle_timeout,
            keepalive_interval: cfg.keepalive_interval,
            keepalive_timeout: cfg.keepalive_timeout,
            request_timeout: cfg.request_timeout,
        }
    }
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Least time between two log lines of the same rate-limited kind.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How far a connection's first bytes are into the HTTP/2 preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// A prefix of it so far.
    Partial,
    Complete,
    /// Not HTTP/2 (e.g. HTTP/1 or TLS): the connection is closed.
    NotHttp2,
}

pub fn preface(got: &[u8]) -> Preface {
    let n = got.len().min(PREFACE.len());
    if got[..n] != PREFACE[..n] {
        Preface::NotHttp2
    } else if n == PREFACE.len() {
        Preface::Complete
    } else {
        Preface::Partial
    }
}

/// Exponential backoff: `min`, doubling up to `max`, back to `min` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }
    /// The delay before the next attempt after a failure.
    pub fn failure(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }
    pub fn success(&mut self) {
        self.next = self.min;
    }
}

/// At most one log line per `every`: [`LogLimiter::allow`] says whether to log now
/// and how many were suppressed since the last line.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }
    /// `Some(suppressed)` when a line may be logged at `now`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What an accept error means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// About the new connection only (aborted, reset, or one of the network errors
    /// accept(2) passes on): accept again at once.
    Connection,
    /// Out of descriptors or memory (or unknown): back off, log.
    Resources,
}

pub fn classify_accept_error(e: &io::Error) -> AcceptError {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        return AcceptError::Connection;
    }
    match e.raw_os_error().map(Errno::from_raw) {
        Some(
            Errno::EPROTO
            | Errno::ENOPROTOOPT
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EHOSTUNREACH
            | Errno::EOPNOTSUPP
            | Errno::ENETUNREACH
            | Errno::EPERM,
        ) => AcceptError::Connection,
        _ => AcceptError::Resources,
    }
}

/// The soft RLIMIT_NOFILE to set: the hard limit (no more than the kernel's
/// `fs.nr_open` when known), `None` when the soft one is already there.
pub fn nofile_target(soft: u64, hard: u64, nr_open: Option<u64>) -> Option<u64> {
    let target = nr_open.map_or(hard, |n| hard.min(n));
    (target > soft).then_some(target)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    match nofile_target(soft, hard, nr_open) {
        Some(target) => {
            setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(io::Error::from)?;
            Ok((soft, target))
        }
        None => Ok((soft, soft)),
    }
}

/// Where the server is in its life, as each connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// GOAWAY sent: finish the open streams.
    Draining,
    /// The drain period is over: drop the connection.
    Closing,
}

/// Serves `svc` on `listener` with `limits` until `shutdown` resolves, then drains for
/// at most `drain`. With `tls`, every connection is a TLS one first (handshake within
/// the handshake timeout); the client certificate's holder, when one was sent, is
/// passed to `svc` in each request's extensions as [`PeerIdentity`].
pub async fn serve<S>(
    listener: TcpListener,
    svc: S,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    let mut full_log = LogLimiter::new(LOG_EVERY);
    let mut error_log = LogLimiter::new(LOG_EVERY);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff.success();
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(accepted_connection(
                            sock,
                            peer,
                            permit,
                            svc.clone(),
                            limits.clone(),
                            tls.clone(),
                            phase_rx.clone(),
                        ));
                    }
                    Err(_) => {
                        if let Some(suppressed) = full_log.allow(Instant::now()) {
                            tracing::warn!(
                                max_connections = max,
                                %peer,
                                suppressed,
                                "connection limit reached: closing new connections at once"
                            );
                        }
                        drop(sock);
                    }
                }
            }
            Err(e) => match classify_accept_error(&e) {
                AcceptError::Connection => {}
                AcceptError::Resources => {
                    let delay = backoff.failure();
                    if let Some(suppressed) = error_log.allow(Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            retry_in = ?delay,
                            open_connections = max - permits.available_permits(),
                            suppressed,
                            "accepting connections failed; backing off"
                        );
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            },
        }
    }
    // No new connections from here (the kernel refuses them once the socket is gone).
    drop(listener);
    phase_tx.send_replace(Phase::Draining);
    // Every connection holds a permit: all of them back = all connections closed.
    let all_closed = permits.acquire_many(max as u32);
    if tokio::time::timeout(drain, all_closed).await.is_err() {
        tracing::info!(
            ?drain,
            open_connections = max - permits.available_permits(),
            "connections still open after the drain period; closing them"
        );
        phase_tx.send_replace(Phase::Closing);
    }
}

/// The holder of the client certificate of a TLS connection (from
/// [`kube_lite_pki::cert_info_der`]), put into every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub kube_lite_pki::Identity);

/// TLS first when configured (bounded by the handshake timeout), then the HTTP/2
/// connection over whichever stream there is.
async fn accepted_connection<S>(
    sock: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    svc: S,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    phase: watch::Receiver<Phase>,
) where
    S: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Nagle off: responses go out in one round trip.
    let _ = sock.set_nodelay(true);
    let Some(tls) = tls else {
        return connection(sock, peer, None, permit, svc, limits, phase).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(sock)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, timeout = ?limits.handshake_timeout, "closing connection: no TLS handshake within the handshake timeout");
            return;
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| match kube_lite_pki::cert_info_der(der) {
            Ok(info) => Some(PeerIdentity(info.identity)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "client certificate not readable");
                None
            }
        });
    connection(stream, peer, identity, permit, svc, limits, phase).await
}

async fn connection<IO, S>(
    mut sock: IO,
    peer: SocketAddr,
    identity: Option<PeerIdentity>,
    permit: OwnedSemaphorePermit,
    svc: S,
    limits: ConnLimits,
    mut phase: watch::Receiver<Phase>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _permit = permit;
    let head = tokio::select! {
        r = tokio::time::timeout(limits.handshake_timeout, read_preface(&mut sock)) => match r {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => {
                tracing::debug!(%peer, "closing connection: not HTTP/2");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed before the HTTP/2 preface");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?limits.handshake_timeout, "closing connection: no HTTP/2 preface within the handshake timeout");
                return;
            }
        },
        _ = phase.wait_for(|p| *p != Phase::Serving) => return,
    };

    let (active_tx, mut active_rx) = watch::channel(0usize);
    let service = ConnService {
        inner: svc,
        identity: identity.map(Arc::new),
        active: Arc::new(active_tx),
        request_timeout: (!limits.request_timeout.is_zero()).then_some(limits.request_timeout),
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection);
    if !limits.keepalive_interval.is_zero() {
        builder
            .keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout);
    }
    let io = TokioIo::new(Prefaced {
        head,
        pos: 0,
        io: sock,
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    if *phase.borrow_and_update() != Phase::Serving {
        conn.as_mut().graceful_shutdown();
        draining = true;
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = idle(&mut active_rx, limits.idle_timeout), if !draining => {
                tracing::debug!(%peer, timeout = ?limits.idle_timeout, "closing idle connection (no stream open)");
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            r = phase.changed() => {
                let p = *phase.borrow_and_update();
                if r.is_err() || p == Phase::Closing {
                    return;
                }
                if p == Phase::Draining && !draining {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// Reads the client preface; `None` at EOF or when the bytes are not HTTP/2.
async fn read_preface<IO: AsyncRead + Unpin>(sock: &mut IO) -> io::Result<Option<[u8; 24]>> {
    let mut head = [0u8; 24];
    let mut n = 0;
    while n < head.len() {
        let k = sock.read(&mut head[n..]).await?;
        if k == 0 {
            return Ok(None);
        }
        n += k;
        if preface(&head[..n]) == Preface::NotHttp2 {
            return Ok(None);
        }
    }
    Ok(Some(head))
}

/// Resolves once the connection has had no open stream for `timeout` (never for zero).
async fn idle(active: &mut watch::Receiver<usize>, timeout: Duration) {
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    loop {
        let open = active.wait_for(|n| *n == 0).await.is_ok();
        if !open {
            return std::future::pending().await;
        }
        let busy = tokio::select! {
            _ = tokio::time::sleep(timeout) => return,
            r = active.wait_for(|n| *n > 0) => r.is_ok(),
        };
        if !busy {
            return std::future::pending().await;
        }
    }
}

/// The socket with the preface bytes already read put back in front.
struct Prefaced<IO> {
    head: [u8; 24],
    pos: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefaced<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.pos);
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefaced<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts the connection's open streams: one from the request until its response body
/// is dropped (the end of a Watch stream, too).
struct ActiveGuard(Arc<watch::Sender<usize>>);

impl ActiveGuard {
    fn start(active: &Arc<watch::Sender<usize>>) -> ActiveGuard {
        active.send_modify(|n| *n += 1);
        ActiveGuard(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its stream counted while it lives.
struct Guarded {
    inner: tonic::body::Body,
    _guard: ActiveGuard,
}

impl Body for Guarded {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection service: counts streams, bounds the time to the response head.
#[derive(Clone)]
struct ConnService<S> {
    inner: S,
    /// The client certificate's holder (TLS connections that sent one).
    identity: Option<Arc<PeerIdentity>>,
    active: Arc<watch::Sender<usize>>,
    request_timeout: Option<Duration>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let guard = ActiveGuard::start(&self.active);
        match &self.identity {
            Some(id) => {
                req.extensions_mut().insert(PeerIdentity::clone(id));
            }
            None => {
                // Never from the client: a header cannot become an extension, but be
                // explicit that a connection without a certificate carries none.
                req.extensions_mut().remove::<PeerIdentity>();
            }
        }
        let mut svc = self.inner.clone();
        let timeout = self.request_timeout;
        Box::pin(async move {
            futures::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
            let fut = svc.call(req.map(tonic::body::Body::new));
            let resp = match timeout {
                None => fut.await?,
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Ok(Status::deadline_exceeded(format!(
                            "no answer within the request timeout of {t:?}"
                        ))
                        .into_http());
                    }
                },
            };
            Ok(resp.map(|inner| {
                tonic::body::Body::new(Guarded {
                    inner,
                    _guard: guard,
                })
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_progress() {
        assert_eq!(preface(b""), Preface::Partial);
        assert_eq!(preface(b"PRI * HT"), Preface::Partial);
        assert_eq!(preface(PREFACE), Preface::Complete);
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Preface::NotHttp2);
        assert_eq!(preface(&[0x16, 0x03, 0x01]), Preface::NotHttp2, "TLS");
        let mut longer = PREFACE.to_vec();
        longer.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(preface(&longer), Preface::Complete);
    }

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(5), ms(1000));
        let got: Vec<_> = (0..10).map(|_| b.failure()).collect();
        assert_eq!(
            got,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]
                .map(ms)
                .to_vec()
        );
        b.success();
        assert_eq!(b.failure(), ms(5));
    }

    // main's tests of its accept loop (next_backoff, RateLimited), kept over this
    // module's Backoff and LogLimiter.
    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let seen: Vec<u128> = (0..9).map(|_| b.failure().as_millis()).collect();
        assert_eq!(seen, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[test]
    fn rate_limited_logs_once_per_period_and_counts_skips() {
        let t0 = Instant::now();
        let mut r = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(900)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(1001)), Some(2));
    }

    #[test]
    fn log_limiter_counts_suppressed_lines() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn accept_errors() {
        let os = |e: Errno| io::Error::from_raw_os_error(e as i32);
        assert_eq!(
            classify_accept_error(&os(Errno::EMFILE)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(Errno::ENFILE)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(Errno::ENOBUFS)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(Errno::ENOMEM)),
            AcceptError::Resources
        );
        assert_eq!(
            classify_accept_error(&os(Errno::ECONNABORTED)),
            AcceptError::Connection
        );
        assert_eq!(
            classify_accept_error(&os(Errno::EPROTO)),
            AcceptError::Connection
        );
        assert_eq!(
            classify_accept_error(&io::Error::other("strange")),
            AcceptError::Resources
        );
    }

    #[test]
    fn nofile_raised_to_hard_within_nr_open() {
        assert_eq!(nofile_target(1024, 524_288, None), Some(524_288));
        assert_eq!(nofile_target(1024, 524_288, Some(1_048_576)), Some(524_288));
        assert_eq!(
            nofile_target(1024, u64::MAX, Some(1_048_576)),
            Some(1_048_576),
            "an unlimited hard limit is capped at fs.nr_open"
        );
        assert_eq!(nofile_target(524_288, 524_288, None), None);
        assert_eq!(nofile_target(4096, 1024, None), None);
    }

    #[tokio::test]
    async fn idle_only_after_timeout_without_streams() {
        let ms = Duration::from_millis;
        let (tx, mut rx) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let t = ms(200);
        // A stream is open: not idle however long.
        let g = ActiveGuard::start(&tx);
        assert!(tokio::time::timeout(ms(600), idle(&mut rx, t))
            .await
            .is_err());
        // Closed: idle after the timeout, not before.
        drop(g);
        let start = std::time::Instant::now();
        idle(&mut rx, t).await;
        assert!(start.elapsed() >= t);
        // A stream opening restarts the wait.
        let g = ActiveGuard::start(&tx);
        let waiter = tokio::spawn(async move {
            let start = std::time::Instant::now();
            idle(&mut rx, t).await;
            (start.elapsed(), rx)
        });
        tokio::time::sleep(ms(300)).await;
        drop(g);
        let (waited, mut rx) = waiter.await.unwrap();
        assert!(waited >= ms(500), "{waited:?}");
        // A zero timeout never fires.
        assert!(tokio::time::timeout(ms(300), idle(&mut rx, Duration::ZERO))
            .await
            .is_err());
    }
}
