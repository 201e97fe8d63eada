//! kube-lite's certificates (issue 14): the cluster CA ([`Ca`]), the certificates it
//! issues (serving, client, and node certificates signed from a CSR), who a certificate
//! says its holder is ([`Identity`], from the subject as Kubernetes reads it: CN = user,
//! O = group), key files written 0600 ([`write_private`]), and the rustls configs of
//! the servers ([`server_config`]) and clients ([`client_config`]).
//!
//! Keys are ECDSA P-256 (rcgen's default, ring). Nothing here does network I/O.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Group of the cluster administrators (Kubernetes' `system:masters`).
pub const ADMIN_GROUP: &str = "system:masters";
/// Group of the node identities.
pub const NODE_GROUP: &str = "system:nodes";
/// A node's user name is this prefix and the node name (`system:node:node1`).
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The user of the admin client certificate and of the admin token.
pub const ADMIN_USER: &str = "kube-lite:admin";
/// The user of the certificate the apiserver presents to node agents (logs).
pub const APISERVER_CLIENT_USER: &str = "kube-lite:apiserver";
/// Common name of the cluster CA.
pub const CA_NAME: &str = "kube-lite-ca";

/// How long certificates live unless told otherwise.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {err}")]
    Io { path: String, err: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |err| PkiError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// Who the holder of a credential is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn new(user: impl Into<String>, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
    pub fn admin() -> Identity {
        Identity::new(ADMIN_USER, &[ADMIN_GROUP])
    }
    pub fn node(name: &str) -> Identity {
        Identity::new(format!("{NODE_USER_PREFIX}{name}"), &[NODE_GROUP])
    }
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMIN_GROUP)
    }
    /// The node name of a node identity (user `system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.groups.iter().any(|g| g == NODE_GROUP) {
            return None;
        }
        self.user
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|n| !n.is_empty())
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.user)?;
        if !self.groups.is_empty() {
            write!(f, " (groups {})", self.groups.join(","))?;
        }
        Ok(())
    }
}

/// What a certificate says: its holder and validity (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    /// Whether a certificate valid `not_before..not_after` should be renewed at `now`:
    /// once two thirds of its life are over (Kubernetes' kubelet rotates at 70–90 %).
    pub fn needs_renewal(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        now >= self.not_before + life * 2 / 3
    }
    pub fn expired(&self, now: i64) -> bool {
        now >= self.not_after
    }
}

/// Now, unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The holder and validity of the first certificate of `pem`.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, PkiError> {
    let der = first_cert_der(pem)?;
    cert_info_der(&der)
}

/// The holder and validity of a DER certificate: user = first CN, groups = every O.
pub fn cert_info_der(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::Invalid(format!("not an X.509 certificate: {e}")))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(CertInfo {
        identity: Identity { user, groups },
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Certificates of a PEM text (DER).
pub fn certs_der(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let mut rd = pem.as_bytes();
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut rd).collect();
    let certs = certs.map_err(|e| PkiError::Invalid(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Invalid("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    Ok(certs_der(pem)?.remove(0))
}

/// The private key of a PEM text.
pub fn key_der(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    let mut rd = pem.as_bytes();
    rustls_pemfile::private_key(&mut rd)
        .map_err(|e| PkiError::Invalid(format!("bad PEM key: {e}")))?
        .ok_or_else(|| PkiError::Invalid("no private key in PEM".into()))
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster certificate authority.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little backdating for clocks that are slightly apart: 5 minutes, or a quarter of
    // a short lifetime (so that renewal after two thirds of the life stays after issue).
    let back = (valid_for / 4).min(Duration::from_secs(300));
    params.not_before = now - time::Duration::seconds(back.as_secs() as i64);
    params.not_after =
        now + time::Duration::seconds(valid_for.as_secs().min(i64::MAX as u64) as i64);
}

fn subject(params: &mut CertificateParams, user: &str, group: Option<&str>) {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    if let Some(g) = group {
        dn.push(DnType::OrganizationName, g);
    }
    params.distinguished_name = dn;
}

/// Subject alternative names: IP addresses as IP SANs, the rest as DNS names.
fn sans(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    let mut out = Vec::new();
    for n in names {
        let n = n.trim();
        if n.is_empty() {
            continue;
        }
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.try_into()
                    .map_err(|_| PkiError::Invalid(format!("{n:?} is not a DNS name")))?,
            ),
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

impl Ca {
    /// A new self-signed CA.
    pub fn generate() -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        subject(&mut params, CA_NAME, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// `dir/ca.crt` + `dir/ca.key` if both exist, else a new CA written there (key 0600).
    pub fn load_or_create(dir: &Path) -> Result<(Ca, bool), PkiError> {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let c = std::fs::read_to_string(&crt).map_err(io_err(&crt))?;
            let k = std::fs::read_to_string(&key).map_err(io_err(&key))?;
            return Ok((Ca::from_pem(&c, &k)?, false));
        }
        let ca = Ca::generate()?;
        ca.save(dir)?;
        Ok((ca, true))
    }

    /// Writes `dir/ca.crt` (0644) and `dir/ca.key` (0600).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_private(
            &dir.join("ca.key"),
            self.issuer.key().serialize_pem().as_bytes(),
        )?;
        write_public(&dir.join("ca.crt"), self.cert_pem.as_bytes())?;
        Ok(())
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        public: &impl rcgen::PublicKeyData,
        valid_for: Duration,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<String, PkiError> {
        validity(&mut params, valid_for);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(public, &self.issuer)?.pem())
    }

    /// A serving certificate (new key) for `names` (IP addresses and DNS names).
    pub fn issue_server(&self, names: &[String], valid_for: Duration) -> Result<CertKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        subject(&mut params, "kube-lite-apiserver", None);
        params.subject_alt_names = sans(names)?;
        let cert_pem = self.sign(
            params,
            &key,
            valid_for,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        Ok(CertKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate (new key) for `user` in `group`.
    pub fn issue_client(
        &self,
        user: &str,
        group: Option<&str>,
        valid_for: Duration,
    ) -> Result<CertKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        subject(&mut params, user, group);
        let cert_pem = self.sign(
            params,
            &key,
            valid_for,
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok(CertKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node's CSR: the subject is set here (`system:node:<name>`, `system:nodes`),
    /// whatever the CSR asked; its IP/DNS names are kept (the agent serves with this
    /// certificate too), at most 8 of them. Client and server use.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        node: &str,
        valid_for: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Invalid(format!("csr_pem: not a valid CSR: {e}")))?;
        let mut params = CertificateParams::default();
        subject(
            &mut params,
            &format!("{NODE_USER_PREFIX}{node}"),
            Some(NODE_GROUP),
        );
        let names: Vec<SanType> = csr
            .params
            .subject_alt_names
            .into_iter()
            .filter(|s| matches!(s, SanType::IpAddress(_) | SanType::DnsName(_)))
            .collect();
        if names.len() > 8 {
            return Err(PkiError::Invalid(format!(
                "csr_pem: {} subject alternative names (at most 8)",
                names.len()
            )));
        }
        params.subject_alt_names = names;
        self.sign(
            params,
            &csr.public_key,
            valid_for,
            &[
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        )
    }
}

/// A new key and a CSR for `names` (the subject is the server's choice): PEM (csr, key).
pub fn new_csr(names: &[String]) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    subject(&mut params, "kube-lite-node", None);
    params.subject_alt_names = sans(names)?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Writes `data` to `path` with mode 0600 (through a temp file + rename: never a
/// half-written key, never readable by others even for a moment).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_mode(path, data, 0o600)
}

/// Writes `data` to `path` with mode 0644 (atomically).
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_mode(path, data, 0o644)
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// A random token of 32 bytes, hex (for the admin and join tokens).
pub fn random_token() -> Result<String, PkiError> {
    let mut b = [0u8; 32];
    let path = Path::new("/dev/urandom");
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err(path))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Compares two secrets in time independent of where they differ.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_der(ca_pem)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// Client certificates a server asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Verified when sent (issued by the CA), else the client may authenticate otherwise.
    Optional,
    /// Required, issued by the CA.
    Required,
}

/// A rustls server config: `cert`, client certificates verified against `ca_pem`,
/// ALPN h2 and http/1.1.
pub fn server_config(
    ca_pem: &str,
    cert: &CertKey,
    client_auth: ClientAuth,
) -> Result<rustls::ServerConfig, PkiError> {
    let roots = Arc::new(roots(ca_pem)?);
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match client_auth {
        ClientAuth::Optional => builder.allow_unauthenticated().build(),
        ClientAuth::Required => builder.build(),
    }
    .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_der(&cert.cert_pem)?, key_der(&cert.key_pem)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// How a client trusts the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Servers with a certificate issued by this CA (PEM).
    Ca(String),
    /// Any server (`--insecure-skip-tls-verify`): no protection against a listener in
    /// the middle.
    SkipVerify,
}

/// A rustls client config (ALPN h2) trusting `trust`, presenting `identity` if any.
pub fn client_config(
    trust: &Trust,
    identity: Option<&CertKey>,
) -> Result<rustls::ClientConfig, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Ca(pem) => builder.with_root_certificates(roots(pem)?),
        Trust::SkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider()))),
    };
    let mut cfg = match identity {
        Some(id) => {
            builder.with_client_auth_cert(certs_der(&id.cert_pem)?, key_der(&id.key_pem)?)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A client config (ALPN h2) for a server whose certificate must be issued by `ca_pem`
/// for the name dialed AND held by `expected_user` (its CN): how the apiserver dials a
/// node agent, so that only that node's agent can answer.
pub fn client_config_expecting(
    ca_pem: &str,
    identity: &CertKey,
    expected_user: &str,
) -> Result<rustls::ClientConfig, PkiError> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider(),
    )
    .build()
    .map_err(|e| PkiError::Invalid(format!("server verifier: {e}")))?;
    let verifier = Arc::new(ExpectUser {
        inner,
        user: expected_user.to_string(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs_der(&identity.cert_pem)?, key_der(&identity.key_pem)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct ExpectUser {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    user: String,
}

impl rustls::client::danger::ServerCertVerifier for ExpectUser {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let holder = cert_info_der(end_entity)
            .map(|i| i.identity.user)
            .unwrap_or_default();
        if holder != self.user {
            return Err(rustls::Error::General(format!(
                "the certificate is held by {holder:?}, not {:?}",
                self.user
            )));
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The verifier of [`Trust::SkipVerify`]: accepts any certificate (signatures are still
/// checked, so the handshake is a real one).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Base64 (standard alphabet, padded), as kubeconfig's `*-data` fields hold PEM.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Result<Vec<u8>, PkiError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| PkiError::Invalid(format!("not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_and_identities_read_back() {
        let ca = Ca::generate().unwrap();
        let admin = ca
            .issue_client(ADMIN_USER, Some(ADMIN_GROUP), CERT_VALIDITY)
            .unwrap();
        let info = cert_info_pem(&admin.cert_pem).unwrap();
        assert_eq!(info.identity, Identity::admin());
        assert!(info.identity.is_admin());
        assert!(info.not_after - info.not_before >= CERT_VALIDITY.as_secs() as i64);

        // A node's CSR asks for another subject: the CA sets system:node:<name>.
        let (csr, _key) = new_csr(&["192.168.1.2".into(), "node1".into()]).unwrap();
        let cert = ca
            .sign_node_csr(&csr, "node1", Duration::from_secs(3600))
            .unwrap();
        let info = cert_info_pem(&cert).unwrap();
        assert_eq!(info.identity, Identity::node("node1"));
        assert_eq!(info.identity.node_name(), Some("node1"));
        assert!(!info.identity.is_admin());
        assert!(ca.sign_node_csr("garbage", "n", CERT_VALIDITY).is_err());

        // Reloaded from PEM, the CA still signs certificates the old root verifies.
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let srv = again
            .issue_server(&["127.0.0.1".into(), "localhost".into()], CERT_VALIDITY)
            .unwrap();
        server_config(ca.cert_pem(), &srv, ClientAuth::Optional).unwrap();
        client_config(&Trust::Ca(ca.cert_pem().into()), Some(&admin)).unwrap();
    }

    #[test]
    fn node_identity_needs_the_group_and_a_name() {
        assert_eq!(Identity::new("system:node:a", &[]).node_name(), None);
        assert_eq!(
            Identity::new("system:node:", &[NODE_GROUP]).node_name(),
            None
        );
        assert_eq!(Identity::new("bob", &[NODE_GROUP]).node_name(), None);
        assert_eq!(
            Identity::node("a").to_string(),
            "\"system:node:a\" (groups system:nodes)"
        );
    }

    #[test]
    fn short_lived_certificates_are_not_due_at_issue() {
        let ca = Ca::generate().unwrap();
        let (csr, _) = new_csr(&["127.0.0.1".into()]).unwrap();
        let cert = ca
            .sign_node_csr(&csr, "n", Duration::from_secs(60))
            .unwrap();
        let info = cert_info_pem(&cert).unwrap();
        let now = now_unix();
        assert!(!info.needs_renewal(now), "{info:?} at {now}");
        assert!(info.needs_renewal(now + 60));
    }

    #[test]
    fn renewal_after_two_thirds() {
        let c = CertInfo {
            identity: Identity::node("a"),
            not_before: 0,
            not_after: 300,
        };
        assert!(!c.needs_renewal(199));
        assert!(c.needs_renewal(200));
        assert!(!c.expired(299));
        assert!(c.expired(300));
    }

    #[test]
    fn keys_are_0600_and_ca_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (ca, created) = Ca::load_or_create(d.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(d.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = Ca::load_or_create(d.path()).unwrap();
        assert!(!created);
        assert_eq!(again.cert_pem(), ca.cert_pem());
    }

    #[test]
    fn secrets_compare() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"ab"));
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(unb64(&b64(b"pem")).unwrap(), b"pem");
    }
}
