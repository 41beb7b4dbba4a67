//! The TLS trust of every connection to the server: the webpki roots plus the certificates of
//! `server.ca_file` (or the account's own `ca_file`, docs/ARCHITECTURE.md#accounts), built once at connect and shared by the HTTP client (reqwest) and the
//! live-event socket (tokio-tungstenite).
//!
//! Owns: reading and checking the CA file, the rustls provider and protocol versions. Must
//! not: weaken verification (no "accept invalid certificates" switch exists, on purpose).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::ApiError;

/// A client configuration trusting the webpki roots (what reqwest's `rustls-tls` trusts)
/// and the certificates of `ca_file`, which the config names `key` (`server.ca_file`,
/// `accounts[0].ca_file`) in messages. No ALPN: each user sets its own.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    key: &str,
) -> Result<Arc<rustls::ClientConfig>, ApiError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path, key)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Config {
            message: format!("cannot set up TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path, key: &str) -> Result<(), ApiError> {
    let config = |what: String| ApiError::Config {
        message: format!("{key} {}: {what}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| config(format!("cannot read it: {e}")))?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| config(format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| config(format!("not a usable CA certificate: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(config(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_trust_is_webpki_plus_the_configured_ca() {
        assert!(client_config(None, "server.ca_file").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&empty), "server.ca_file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(client_config(Some(&dir.path().join("missing.pem")), "server.ca_file").is_err());
    }

    #[test]
    fn a_ca_that_is_not_a_certificate_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = client_config(Some(&bad), "accounts[1].ca_file")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("accounts[1].ca_file {}:", bad.display())),
            "{e}"
        );
        assert!(e.contains("not a usable CA certificate"), "{e}");
    }
}
