//! TLS to PostgreSQL with rustls (ring), set from the store URL the way libpq reads
//! it: `sslmode` = `disable`, `prefer` (the default), `require`, `verify-ca` or
//! `verify-full`, and `sslrootcert` = a PEM file of the CA certificates to trust (or
//! `system` for the system's bundle).
//!
//! As in libpq, `prefer` and `require` encrypt without authenticating the server
//! unless `sslrootcert` is given (then they check the chain, like `verify-ca`);
//! `verify-ca` checks the chain, `verify-full` the chain and the host name. The
//! verify modes need `sslrootcert`. tokio-postgres itself knows only `disable`,
//! `prefer` and `require`: the URL it is given has the verify modes turned into
//! `require` and `sslrootcert` taken out, and the checking is done here.
//!
//! The store's PostgreSQL URL and a PostgreSQL 前置库 (`[nodes.ID.tables] sslmode`)
//! both connect through it.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// A TLS setting that cannot be used, or a handshake that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PgTlsError(pub String);

/// Where the system's CA bundle is (`sslrootcert=system`): `SSL_CERT_FILE` if set,
/// else Debian's and its derivatives', else that of Red Hat and its derivatives
/// (openEuler, Kylin).
pub fn system_bundle() -> PathBuf {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        return PathBuf::from(f);
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"))
}

/// What to do about a failed handshake, for the error message.
pub fn hint(reason: &str) -> &'static str {
    if reason.contains("UnknownIssuer") {
        " (the server's certificate does not chain to a CA in sslrootcert)"
    } else if reason.contains("not valid for name") {
        " (the certificate does not name the host in the URL: connect by a name it has, or use verify-ca)"
    } else if reason.contains("does not support TLS") {
        " (the server has ssl=off, or this is a Unix socket, which never has TLS; sslmode=prefer connects without it)"
    } else {
        ""
    }
}

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode, PgTlsError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(tls_err(
                    "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full",
                ));
            }
            other => {
                return Err(tls_err(format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

fn tls_err(reason: impl ToString) -> PgTlsError {
    PgTlsError(reason.to_string())
}

/// The TLS part of a store URL, and the URL without it for tokio-postgres.
#[derive(Debug)]
pub struct Settings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    /// The URL as tokio-postgres takes it.
    pub url: String,
}

/// A URL's part before its query and the query, found as tokio-postgres finds them:
/// the credentials run to the first `@` and may hold a `?` (a password `se?cret`).
fn split_query(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let from = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |at| after_scheme + at + 1);
    match url[from..].find('?') {
        Some(q) => (&url[..from + q], &url[from + q + 1..]),
        None => (url, ""),
    }
}

/// Read `sslmode` and `sslrootcert` out of a `postgres://` URL; where the URL has
/// none, `PGSSLMODE` and `PGSSLROOTCERT` from the environment, as libpq does.
pub fn settings(url: &str) -> Result<Settings, PgTlsError> {
    settings_with(url, |k| std::env::var(k).ok())
}

fn settings_with(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Settings, PgTlsError> {
    let (head, query) = split_query(url);
    let mut mode = None;
    let mut root_cert = None;
    let mut kept: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match key {
            "sslmode" => mode = Some(SslMode::parse(&decoded)?),
            "sslrootcert" => root_cert = Some(decoded.into_owned()),
            "channel_binding" if decoded == "require" => {
                return Err(tls_err(
                    "channel_binding=require is not supported: hallgate does not bind SCRAM to the TLS channel (leave it out, or use prefer)",
                ));
            }
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(tls_err(format!(
                    "`{key}` is not supported (client certificates to PostgreSQL); use a password (PGPASSWORD)"
                )));
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let mode = match mode {
        Some(m) => m,
        None => match env("PGSSLMODE") {
            Some(m) => SslMode::parse(&m).map_err(|e| tls_err(format!("PGSSLMODE: {e}")))?,
            None => SslMode::Prefer,
        },
    };
    let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT"));
    if root_cert.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(tls_err(
            "sslrootcert is empty: name a PEM file of CA certificates, or `system`",
        ));
    }
    let root_cert = root_cert.map(PathBuf::from);
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(tls_err(format!(
            "sslmode={} needs sslrootcert=FILE (the PEM of the CA that signed the server's certificate) or sslrootcert=system",
            mode.as_str()
        )));
    }
    kept.push(format!(
        "sslmode={}",
        match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        }
    ));
    Ok(Settings {
        mode,
        root_cert,
        url: format!("{head}?{}", kept.join("&")),
    })
}

/// The URL with a relative `sslrootcert` made absolute against `base` (the config's
/// folder), as every other path in the config is.
pub fn resolve(url: &str, base: &Path) -> String {
    let (head, query) = split_query(url);
    if query.is_empty() {
        return url.to_string();
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("sslrootcert", v)) => {
                let path = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                if path.trim().is_empty()
                    || path == "system"
                    || Path::new(path.as_ref()).is_absolute()
                {
                    return pair.to_string();
                }
                let abs = base.join(path.as_ref()).display().to_string();
                let enc = percent_encoding::utf8_percent_encode(&abs, QUERY_VALUE);
                format!("sslrootcert={enc}")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

/// Characters escaped in a query value we write.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'&')
    .add(b'#')
    .add(b'%')
    .add(b'+')
    .add(b'=');

/// What `connect` is given: the rustls configuration for the URL's mode.
#[derive(Clone)]
pub struct Connector {
    config: Option<Arc<ClientConfig>>,
    /// Set once a handshake succeeded (with `prefer`, the server may offer no TLS).
    encrypted: Arc<AtomicBool>,
}

impl Connector {
    /// Whether a connection made with it was encrypted.
    pub fn encrypted(&self) -> bool {
        self.encrypted.load(Ordering::Relaxed)
    }
}

impl Connector {
    pub fn new(s: &Settings) -> Result<Connector, PgTlsError> {
        if s.mode == SslMode::Disable {
            return Ok(Connector {
                config: None,
                encrypted: Arc::default(),
            });
        }
        let provider = crate::tls::provider();
        let verifier: Arc<dyn ServerCertVerifier> = match &s.root_cert {
            None => Arc::new(Unauthenticated(provider.clone())),
            Some(path) => {
                let path = if path == Path::new("system") {
                    system_bundle()
                } else {
                    path.clone()
                };
                let mut roots = rustls::RootCertStore::empty();
                let certs = crate::tls::load_certs(&path)
                    .map_err(|e| tls_err(format!("sslrootcert {e}")))?;
                if s.root_cert.as_deref() == Some(Path::new("system")) {
                    // A system bundle may hold a certificate webpki cannot read: skip it.
                    roots.add_parsable_certificates(certs);
                } else {
                    for c in certs {
                        roots
                            .add(c)
                            .map_err(|e| tls_err(format!("sslrootcert {}: {e}", path.display())))?;
                    }
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(tls_err)?;
                if s.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // As libpq 17: PostgreSQL 17 requires it for `sslnegotiation=direct`; older
        // servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            config: Some(Arc::new(config)),
            encrypted: Arc::default(),
        })
    }
}

/// `prefer`/`require` without a CA: the handshake is checked, the certificate not
/// (libpq's behaviour; it protects against listening, not against impersonation).
#[derive(Debug)]
struct Unauthenticated(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unauthenticated {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
/// (The chain is checked before the name, so a name error means the chain held.)
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    /// `domain` is empty for a Unix socket (PostgreSQL offers no TLS there, so a
    /// handshake is never asked for); a name that cannot be one fails at the
    /// handshake, not here.
    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        Ok(Connect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_string()).ok(),
            encrypted: self.encrypted.clone(),
        })
    }
}

/// One connection's handshake.
pub struct Connect {
    config: Option<Arc<ClientConfig>>,
    name: Option<ServerName<'static>>,
    encrypted: Arc<AtomicBool>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some(config) = self.config else {
                return Err(io::Error::other("TLS is disabled (sslmode=disable)"));
            };
            let Some(name) = self.name else {
                return Err(io::Error::other(
                    "the host is not a DNS name or IP address a certificate could name",
                ));
            };
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            self.encrypted.store(true, Ordering::Relaxed);
            Ok(TlsStream(tls))
        })
    }
}

/// An encrypted connection to PostgreSQL.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    /// No channel binding: SCRAM still authenticates both sides by the password.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_become_require_and_lose_the_root_cert() {
        let s = settings("postgres://u@db.example:5432/hg?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x").expect("settings");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            s.url,
            "postgres://u@db.example:5432/hg?application_name=x&sslmode=require"
        );
        let s = settings("postgres://u@h/db").expect("settings");
        assert_eq!(s.mode, SslMode::Prefer);
        assert_eq!(s.url, "postgres://u@h/db?sslmode=prefer");
    }

    #[test]
    fn verify_without_a_root_cert_and_unknown_modes_are_refused() {
        let e = settings("postgres://u@h/db?sslmode=verify-ca")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = settings("postgres://u@h/db?sslmode=strict")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`strict`"), "{e}");
        let e = settings("postgres://u@h/db?sslcert=c.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let s = settings("postgres://hg:se?cret@db/hg?sslmode=require").expect("settings");
        assert_eq!(s.mode, SslMode::Require);
        assert_eq!(s.url, "postgres://hg:se?cret@db/hg?sslmode=require");
        let s = settings("postgres://hg:se?cret@db/hg").expect("settings");
        assert_eq!(s.url, "postgres://hg:se?cret@db/hg?sslmode=prefer");
        let url = resolve(
            "postgres://hg:a?b@db/hg?sslrootcert=ca.pem",
            Path::new("/etc/hg"),
        );
        assert_eq!(url, "postgres://hg:a?b@db/hg?sslrootcert=/etc/hg/ca.pem");
        assert_eq!(
            resolve("postgres://hg@db/hg?sslrootcert=", Path::new("/etc/hg")),
            "postgres://hg@db/hg?sslrootcert="
        );
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_out() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-ca".to_string()),
            "PGSSLROOTCERT" => Some("/etc/pg/ca.pem".to_string()),
            _ => None,
        };
        let s = settings_with("postgres://u@h/db", env).expect("settings");
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/pg/ca.pem")));
        // The URL wins.
        let s = settings_with("postgres://u@h/db?sslmode=disable", env).expect("settings");
        assert_eq!(s.mode, SslMode::Disable);
        let e = settings_with("postgres://u@h/db", |k| {
            (k == "PGSSLMODE").then(|| "strict".to_string())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "PGSSLMODE: sslmode `strict` is not one of disable, prefer, require, verify-ca, verify-full"
        );
    }

    #[test]
    fn relative_root_certs_resolve_against_the_config_folder() {
        let url = resolve(
            "postgres://u@h/db?sslrootcert=certs/pg%20ca.pem&sslmode=verify-ca",
            Path::new("/etc/hallgate"),
        );
        assert_eq!(
            url,
            "postgres://u@h/db?sslrootcert=/etc/hallgate/certs/pg%20ca.pem&sslmode=verify-ca"
        );
        let s = settings(&url).expect("settings");
        assert_eq!(
            s.root_cert.as_deref(),
            Some(Path::new("/etc/hallgate/certs/pg ca.pem"))
        );
        let same = "postgres://u@h/db?sslrootcert=system";
        assert_eq!(resolve(same, Path::new("/x")), same);
    }
}
