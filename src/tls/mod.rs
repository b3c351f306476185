//! TLS with rustls on the pure-Rust `ring` provider (layer 1): the gateway's HTTPS
//! listener (HTTP/2 or HTTP/1.1 by ALPN, optional client certificates checked against
//! a CA bundle, files reloaded when they change), the client certificate a request
//! came with, and the client side: the one HTTP client builder every outbound call
//! uses ([`http_client`]: deliveries, JWKS fetches, sync APIs), with a destination's
//! extra CA roots and client certificate ([`client_builder`]). The listener itself,
//! plain or TLS, with its connection limits, is in [`serve`]; TLS to PostgreSQL (the
//! store and a PostgreSQL 前置库, libpq's `sslmode`) in [`pg`].

pub mod pg;
mod serve;

pub use serve::{ConnLimits, Cut, Peer, serve, serve_with};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{ClientTls, ServerTls};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration for `[gateway.tls]`.
pub fn server_config(tls: &ServerTls, base: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&base.join(&tls.cert))?;
    let key = load_key(&base.join(&tls.key))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let path = base.join(ca);
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(&path)? {
                roots.add(c).map_err(|e| file_err(&path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration in use, replaced when its files change.
pub struct Reloading {
    current: RwLock<Arc<ServerConfig>>,
    tls: ServerTls,
    base: PathBuf,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

impl Reloading {
    pub fn new(tls: &ServerTls, base: &Path) -> Result<Arc<Reloading>, TlsError> {
        let r = Reloading {
            current: RwLock::new(server_config(tls, base)?),
            tls: tls.clone(),
            base: base.to_path_buf(),
            stamps: RwLock::new(Vec::new()),
        };
        let stamps = r.stamps();
        *r.stamps.write().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(Arc::new(r))
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![
            self.base.join(&self.tls.cert),
            self.base.join(&self.tls.key),
        ];
        if let Some(ca) = &self.tls.client_ca {
            f.push(self.base.join(ca));
        }
        f
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Load the files again if they changed; a broken set keeps the old one.
    pub fn reload_if_changed(&self) {
        let now = self.stamps();
        if *self.stamps.read().unwrap_or_else(|p| p.into_inner()) == now {
            return;
        }
        match server_config(&self.tls, &self.base) {
            Ok(c) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = c;
                *self.stamps.write().unwrap_or_else(|p| p.into_inner()) = now;
                tracing::info!("TLS certificates reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones");
            }
        }
    }
}

/// The client certificate a connection presented (verified against the CA bundle).
#[derive(Debug, Clone)]
pub struct PeerCert(pub CertificateDer<'static>);

impl PeerCert {
    /// How audit events name the certificate: its DNS names and the start of its
    /// SHA-256 thumbprint.
    pub fn describe(&self) -> String {
        use sha2::Digest;
        let names: Vec<String> = webpki::EndEntityCert::try_from(&self.0)
            .map(|c| c.valid_dns_names().take(4).map(str::to_string).collect())
            .unwrap_or_default();
        let sha = hex::encode(sha2::Sha256::digest(self.0.as_ref()));
        format!("{} (sha256 {})", names.join(" "), &sha[..16])
    }

    /// Whether the certificate is valid for one of `names` (DNS subjectAltName).
    pub fn valid_for(&self, names: &[String]) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.0) else {
            return false;
        };
        names.iter().any(|n| {
            ServerName::try_from(n.as_str())
                .map(|sn| cert.verify_is_valid_for_subject_name(&sn).is_ok())
                .unwrap_or(false)
        })
    }
}

/// Why a request could not connect, said with where to: "connection refused to
/// 127.0.0.1:8201", "the host name does not resolve to …", "TLS handshake failed to
/// …" (None when it did connect).
pub fn connect_failure(e: &reqwest::Error) -> Option<String> {
    if !e.is_connect() {
        return None;
    }
    let to = e
        .url()
        .map(|u| {
            format!(
                " to {}:{}",
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_default();
    let chain = crate::observe::error_chain(e).to_ascii_lowercase();
    let why = if chain.contains("refused") {
        "connection refused"
    } else if chain.contains("dns") || chain.contains("resolve") {
        "the host name does not resolve"
    } else if chain.contains("certificate") || chain.contains("tls") {
        "TLS handshake failed"
    } else {
        "cannot connect"
    };
    Some(format!("{why}{to}"))
}

/// A reqwest client builder on rustls with the pure-Rust `ring` provider (installed
/// as the process default on first use).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A client builder with the CA roots and client certificate of `tls`.
pub fn client_builder(
    builder: reqwest::ClientBuilder,
    tls: &ClientTls,
    base: &Path,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let (roots, identity) = client_parts(tls, base)?;
    let mut builder = builder;
    if !roots.is_empty() {
        builder = builder.tls_certs_only(roots);
    }
    if let Some(i) = identity {
        builder = builder.identity(i);
    }
    Ok(builder)
}

/// CA roots and a client identity for a destination's HTTPS.
pub fn client_parts(
    tls: &ClientTls,
    base: &Path,
) -> Result<(Vec<reqwest::Certificate>, Option<reqwest::Identity>), TlsError> {
    let mut roots = Vec::new();
    if let Some(ca) = &tls.ca {
        let path = base.join(ca);
        let pem = std::fs::read(&path).map_err(|e| file_err(&path, e))?;
        roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| file_err(&path, e))?;
    }
    let identity = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => {
            let (cp, kp) = (base.join(c), base.join(k));
            let mut pem = std::fs::read(&cp).map_err(|e| file_err(&cp, e))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(&kp).map_err(|e| file_err(&kp, e))?);
            Some(reqwest::Identity::from_pem(&pem).map_err(|e| file_err(&cp, e))?)
        }
        (None, None) => None,
        _ => {
            return Err(TlsError::Config(
                "a destination's tls needs both cert and key, or neither".into(),
            ));
        }
    };
    Ok((roots, identity))
}
