//! A small HTTPS client for `hookgate send` (and the tests): one request on
//! a fresh TLS connection, HTTP/1.1 or HTTP/2 by ALPN.

use std::process::ExitCode;

use super::fail;
use super::sample::sample_event;
use super::sign::{read_body, read_secret};
use crate::verify::signature;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Which server certificates to trust.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The public web PKI (Mozilla's roots).
    WebPki,
    /// Only the certificates in this PEM (a CA or the server's own).
    Pem(Vec<u8>),
    /// Anything: development only (`--insecure`).
    Insecure,
}

impl Trust {
    /// Trust the PEM file at `path`.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(Self::Pem)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad URL.
    #[error("invalid URL: {0}")]
    Url(String),
    /// Bad trust material.
    #[error("cannot use the CA certificate: {0}")]
    Trust(String),
    /// Connecting, TLS or HTTP failed.
    #[error("{0}")]
    Io(String),
}

/// A rustls client config for `trust`, offering `alpn`.
pub fn tls_config(trust: &Trust, alpn: &[&[u8]]) -> Result<ClientConfig, ClientError> {
    let provider = crate::net::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Trust(e.to_string()))?;
    let mut config = match trust {
        Trust::WebPki => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pem(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError::Trust(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Trust(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Trust("no PEM certificate found".to_owned()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::net::tls::AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Sends `req` (an absolute `https://` URI) on a new connection and reads
/// the whole answer. Uses HTTP/2 if the server picks it.
pub async fn send(
    req: Request<Full<Bytes>>,
    trust: &Trust,
) -> Result<Response<Bytes>, ClientError> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(ClientError::Url(
            "only https:// URLs are supported".to_owned(),
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url("no host".to_owned()))?;
    let port = uri.port_u16().unwrap_or(443);
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name =
        ServerName::try_from(name.clone()).map_err(|e| ClientError::Url(e.to_string()))?;
    let config = tls_config(trust, &[b"h2", b"http/1.1"])?;
    let tcp = TcpStream::connect((name.as_str(), port))
        .await
        .map_err(|e| ClientError::Io(format!("cannot connect to {name}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| ClientError::Io(format!("TLS handshake failed: {e}")))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let io_err = |e: hyper::Error| ClientError::Io(e.to_string());
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(io_err)?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(io_err)?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(io_err)?;
        tokio::spawn(conn);
        let mut req = req;
        if !req.headers().contains_key(http::header::HOST)
            && let Some(authority) = uri.authority()
            && let Ok(v) = http::HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
        // HTTP/1.1 wants origin-form.
        if let Some(pq) = uri.path_and_query()
            && let Ok(origin) = pq.as_str().parse()
        {
            *req.uri_mut() = origin;
        }
        sender.send_request(req).await.map_err(io_err)?
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(io_err)?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// `hookgate send`: signs and POSTs a sample (or given) event; prints the
/// status and the answer; exit 0 on 200.
pub(super) fn command(
    url: &str,
    secret_file: &Path,
    event: &str,
    body_file: Option<&Path>,
    trust: Trust,
) -> ExitCode {
    let secret = match read_secret(secret_file) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let body = match body_file {
        Some(_) => match read_body(body_file) {
            Ok(b) => b,
            Err(e) => return fail(e),
        },
        None => match sample_event(event) {
            Ok(b) => b,
            Err(e) => return fail(e),
        },
    };
    let signature = signature::sign_hex(&body, &secret);
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("hookgate-send/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "x-coolpopup-signature",
            HeaderValue::from_str(&signature).unwrap_or(HeaderValue::from_static("")),
        )
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(r) => r,
        Err(e) => return fail(format!("invalid URL {url:?}: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(send(request, &trust)) {
        Ok(response) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", response.status());
            let _ = out.write_all(response.body());
            if !response.body().ends_with(b"\n") {
                let _ = writeln!(out);
            }
            if response.status() == http::StatusCode::OK {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}
