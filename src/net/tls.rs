//! TLS for the public listener: PEM files to a rustls `ServerConfig`.
//!
//! TLS 1.2 and 1.3 only (1.3 only with `min_version = "1.3"`), ALPN `h2` and
//! `http/1.1`, ring's AEAD forward-secret suites. The certificate sits behind
//! a [`CertStore`] so it can be swapped at run time without touching the
//! `ServerConfig`: a new handshake picks up the new key, connections in
//! flight keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsConfig, TlsVersion};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("cannot load certificate chain from {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The key file could not be read or holds no supported PEM key.
    #[error("cannot load private key from {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused it.
    #[error("certificate and key do not match or are unsupported: {0}")]
    Mismatch(String),
    /// The development certificate could not be generated.
    #[error("cannot generate the self-signed development certificate: {0}")]
    SelfSigned(String),
}

/// The ring crypto provider, shared by every config hookgate builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_file).map_err(|e| TlsError::Cert {
        path: cert_file.to_owned(),
        reason: e.to_string(),
    })?;
    let key_pem = std::fs::read(key_file).map_err(|e| TlsError::Key {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })?;
    certified_key_from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        PemError::Cert(reason) => TlsError::Cert {
            path: cert_file.to_owned(),
            reason,
        },
        PemError::Key(reason) => TlsError::Key {
            path: key_file.to_owned(),
            reason,
        },
        PemError::Mismatch(reason) => TlsError::Mismatch(reason),
    })
}

enum PemError {
    Cert(String),
    Key(String),
    Mismatch(String),
}

fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PemError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(PemError::Cert("no PEM certificate found".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PemError::Key(e.to_string()))?;
    let ck = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| PemError::Mismatch(e.to_string()))?;
    // from_der lets an "unknown" consistency pass; we want a definite match.
    ck.keys_match()
        .map_err(|e| PemError::Mismatch(e.to_string()))?;
    Ok(ck)
}

/// A throwaway certificate for `localhost`, `127.0.0.1` and `::1`, made in
/// memory. Development only. Returns the key and the certificate's PEM (so
/// a client can trust it).
pub fn self_signed() -> Result<(CertifiedKey, String), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    let ck =
        certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| match e {
            PemError::Cert(r) | PemError::Key(r) | PemError::Mismatch(r) => TlsError::SelfSigned(r),
        })?;
    Ok((ck, cert_pem))
}

/// The certificate in service; swapped atomically on reload.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Puts `key` in service for new handshakes.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate in service.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server config: protocol floor, ALPN, and the cert store.
pub fn server_config(tls: &TlsConfig, certs: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if tls.min_version == TlsVersion::V1_3 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// True if the first byte a client sent cannot start a TLS handshake but
/// can start an HTTP/1 request line (an upper-case method letter).
pub fn looks_like_plaintext_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// The short answer to plaintext HTTP on the TLS port, as nginx gives it.
pub const HTTPS_REQUIRED: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Content-Length: 55\r\n\
Connection: close\r\n\
\r\n\
This port speaks HTTPS only: use https:// to connect.\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_required_length_is_exact() {
        let text = std::str::from_utf8(HTTPS_REQUIRED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{}",
            body.len()
        );
    }

    #[test]
    fn self_signed_material_loads_and_matches() {
        let (ck, pem) = self_signed().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ck.keys_match().is_ok());
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
        let r = certified_key_from_pem(
            a.cert.pem().as_bytes(),
            b.signing_key.serialize_pem().as_bytes(),
        );
        assert!(matches!(r, Err(PemError::Mismatch(_))));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            certified_key_from_pem(b"nope", b"nope"),
            Err(PemError::Cert(_))
        ));
    }

    #[test]
    fn plaintext_detection() {
        assert!(looks_like_plaintext_http(b'P'));
        assert!(looks_like_plaintext_http(b'G'));
        assert!(!looks_like_plaintext_http(0x16));
    }
}

/// Accepts any certificate but still checks the handshake signatures, so the
/// connection is encrypted, just not authenticated: `hookgate send
/// --insecure`, and the Postgres store's `tls = "require"` without `ca_file`
/// (libpq's `require`).
#[derive(Debug)]
pub(crate) struct AnyCertificate(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
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
        cert: &rustls::pki_types::CertificateDer<'_>,
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
