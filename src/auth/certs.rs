//! `hallgate certs dev`: a development CA, the gateway's server certificate and one
//! client certificate per sending node (rcgen), for trying HTTPS and client
//! certificates on one machine. Never for production: see certs/README.md.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The DNS name a node's development certificate is issued for.
pub fn node_name(node: &str) -> String {
    format!("{node}.nodes.hallgate.test")
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Make the development set under `out`; returns the files written.
pub fn dev(config: &Config, out: &Path) -> Result<Vec<PathBuf>, CertsError> {
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str, private: bool| -> Result<(), CertsError> {
        let p = out.join(name);
        write(&p, text, private)?;
        written.push(p);
        Ok(())
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("{} development CA", config.gateway.id),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    put("ca.pem", &ca_cert.pem(), false)?;
    put("ca.key.pem", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, config.gateway.id.clone());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    put(
        "server.pem",
        &server.signed_by(&server_key, &issuer)?.pem(),
        false,
    )?;
    put("server.key.pem", &server_key.serialize_pem(), true)?;

    for (id, node) in &config.nodes {
        if node.get_ref().accept.is_none() {
            continue;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node_name(id)])?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        put(
            &format!("nodes/{id}.pem"),
            &params.signed_by(&key, &issuer)?.pem(),
            false,
        )?;
        put(&format!("nodes/{id}.key.pem"), &key.serialize_pem(), true)?;
    }
    Ok(written)
}
