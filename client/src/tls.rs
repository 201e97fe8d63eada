//! TLS channels (issue 14): a tonic [`Channel`] whose connections are TLS with a
//! rustls config of ours (trust, client certificate, or for experiments no
//! verification), through a custom connector: `https://host:port` is dialed as TCP to
//! host:port, then TLS with server name `host` (an IP address or a DNS name).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;

/// The endpoint settings of every client (timeouts, keepalive), for `http://host:port`.
fn plain_endpoint(url: &str) -> Result<(Endpoint, String), ClientError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("").to_string();
    if authority.is_empty() {
        return Err(ClientError::BadUrl {
            url: url.to_string(),
            reason: "no host:port".into(),
        });
    }
    let ep = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| ClientError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok((ep, authority))
}

type Connector = tower::util::BoxCloneSyncService<
    Uri,
    TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    std::io::Error,
>;

fn connector(cfg: Arc<rustls::ClientConfig>) -> Connector {
    let tls = tokio_rustls::TlsConnector::from(cfg);
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other("no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::other(format!("server name {host:?}: {e}")))?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    }))
}

/// Connects now over TLS with `cfg`.
pub async fn connect_tls(
    url: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Channel, ClientError> {
    connect_tls_with(url, cfg, |ep| ep).await
}

/// [`connect_tls`] with endpoint settings changed by `tweak` (window sizes, timeouts).
pub async fn connect_tls_with(
    url: &str,
    cfg: Arc<rustls::ClientConfig>,
    tweak: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ClientError> {
    let (ep, _) = plain_endpoint(url)?;
    tweak(ep)
        .connect_with_connector(connector(cfg))
        .await
        .map_err(|e| ClientError::Connect {
            url: url.to_string(),
            reason: crate::error_chain(&e),
        })
}

/// A lazily connecting TLS channel (reconnects by itself).
pub fn connect_tls_lazy(url: &str, cfg: Arc<rustls::ClientConfig>) -> Result<Channel, ClientError> {
    let (ep, _) = plain_endpoint(url)?;
    Ok(ep.connect_with_connector_lazy(connector(cfg)))
}
