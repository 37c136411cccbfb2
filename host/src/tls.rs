//! The TLS client configuration every client of the host uses (today the
//! WebSocket dials; any HTTP client added later takes the same): the
//! bundled Mozilla roots (`webpki-roots`, no system store needed) plus the
//! operator's private CA certificates ([`AdapterConfig::ca_file`]), with
//! the ring provider.
//!
//! [`AdapterConfig::ca_file`]: crate::AdapterConfig::ca_file

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The client configuration for `ca_file` (`None`: the bundled roots only,
/// built once per process and shared). An unreadable file, one without a
/// certificate, or a certificate rustls refuses is an error naming the
/// file, never its contents.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    static DEFAULT: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    match ca_file {
        None => DEFAULT.get_or_init(|| build(&[])).clone(),
        Some(path) => {
            let shown = path.display();
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {shown}: cannot read: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ca_file {shown}: not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err(format!("ca_file {shown}: no certificate in it"));
            }
            build(&certs).map_err(|e| format!("ca_file {shown}: {e}"))
        }
    }
}

fn build(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate refused: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
