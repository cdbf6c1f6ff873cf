//! [`Client`]: the HTTP client of the mobile login callout and of the upstream the
//! mobile data requests are forwarded to. HTTP/1.1 over TCP, or over TLS (rustls with
//! the `ring` provider) for `https://` URLs, trusting the Mozilla roots
//! (`webpki-roots`) and the certificates of `mobile.tls_ca_file` (an internal CA).

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The outbound client: pooled connections, `http://` and `https://`.
pub type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Body>;

/// A client trusting the Mozilla roots and `extra_roots`.
pub fn client(extra_roots: &[CertificateDer<'static>]) -> Client {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Certificates were parsed when the settings were validated; one rustls cannot
    // use as a trust anchor is skipped (and reported by `load_roots`).
    roots.add_parsable_certificates(extra_roots.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// The certificates of a PEM file (`mobile.tls_ca_file`): at least one, each usable
/// as a trust anchor.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no PEM certificate in the file"));
    }
    let mut store = rustls::RootCertStore::empty();
    let (_, refused) = store.add_parsable_certificates(certs.iter().cloned());
    if refused > 0 {
        return Err(format!(
            "{shown}: {refused} certificate(s) cannot be used as a trust anchor"
        ));
    }
    Ok(certs)
}
