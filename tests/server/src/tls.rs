//! The HTTPS mode ([`crate::Builder::tls`]): a CA and a server certificate for `localhost`,
//! `127.0.0.1` and `::1`, made at start (nothing is written to disk), served by rustls with
//! the ring provider, HTTP/1.1 only. Tests hand [`crate::ServerHandle::tls_ca_pem`] to the
//! client as its `ca_file`; without it the certificate is unknown, as a home server's is.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What the accept loop needs, and the CA a client must trust.
pub(crate) struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub ca_pem: String,
}

pub(crate) fn make() -> Result<Tls, String> {
    let err = |e: &dyn std::fmt::Display| format!("test server TLS set-up: {e}");
    let ca_key = KeyPair::generate().map_err(|e| err(&e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "immish-testserver CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| err(&e))?;

    let key = KeyPair::generate().map_err(|e| err(&e))?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| err(&e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "immish-testserver");
    let cert = leaf
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| err(&e))?;

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca_cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| err(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca_cert.pem(),
    })
}
