//! Shared test harness: TLS material (rcgen), a recording upstream, an
//! in-process hookgate bound to 127.0.0.1:0, clients over real TLS sockets
//! (HTTP/1.1, HTTP/2, raw bytes), and signing.
#![allow(dead_code, missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed setup step should panic the test"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use figment::Figment;
use figment::providers::{Format, Toml};
use hookgate::Config;
use hookgate::{Hookgate, Listeners};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub const SECRET: &[u8] = b"whsec-test-primary-0123456789";
pub const SECRET_OLD: &[u8] = b"whsec-test-previous-9876543210";

/// The fixtures' `timestamp`: the time the test process started, so every
/// body is fresh (the replay window refuses old events) and two bodies of
/// the same event built in one test are byte-identical.
pub fn fixture_time() -> &'static str {
    static NOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NOW.get_or_init(|| {
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    })
}

/// A body with the spec's example shape for `event`, stamped [`fixture_time`].
pub fn body_of(event: &str) -> Vec<u8> {
    let visitor = if event == "popup.converted" {
        r#","visitor":{"email":"jane@example.com","fields":{"name":"Jane Smith","email":"jane@example.com"}}"#
    } else {
        ""
    };
    format!(
        r#"{{"event":"{event}","campaign_id":"camp_abc123","campaign_name":"Summer Sale Popup","timestamp":"{now}"{visitor},"page_url":"https://yoursite.com/products/summer-sale"}}"#,
        now = fixture_time()
    )
    .into_bytes()
}

pub fn sign(body: &[u8], secret: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

// === TLS material ===

pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
}

/// A self-signed leaf for localhost / 127.0.0.1 written to a temp dir.
pub fn make_tls() -> TlsFiles {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = cert_pair("localhost");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    TlsFiles {
        dir,
        cert,
        key,
        cert_pem,
    }
}

/// A fresh (cert PEM, key PEM) pair for localhost and 127.0.0.1, with `cn` as common name.
pub fn cert_pair(cn: &str) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

// === the recording upstream ===

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

fn body_len_nonzero(status: u16) -> bool {
    status != 204
}

/// Records every request; the path picks the answer: `/status/NNN` answers
/// NNN, `/slow/MS` waits MS milliseconds first, anything else 200.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    arrivals: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr` (an app that comes up at a known address later).
    pub async fn start_at(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let path = parts.uri.to_string();
                            seen.lock().unwrap().push(Recorded {
                                method: parts.method.to_string(),
                                path: path.clone(),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            });
                            let _ = tx.send(());
                            let segs: Vec<&str> =
                                path.split('?').next().unwrap_or("").split('/').collect();
                            let mut status = 200u16;
                            if segs.len() >= 3 && segs[1] == "status" {
                                status = segs[2].parse().unwrap_or(500);
                            }
                            if segs.len() >= 3 && segs[1] == "slow" {
                                let ms: u64 = segs[2].parse().unwrap_or(0);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let body = if status == 204 {
                                Bytes::new()
                            } else {
                                Bytes::from_static(b"{\"ok\":true}")
                            };
                            let mut r = Response::new(Full::new(body));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            // Headers that must stay inside (only Content-Type and
                            // Retry-After reach the provider).
                            let h = r.headers_mut();
                            h.insert("x-upstream", "yes".parse().unwrap());
                            h.insert("server", "gunicorn/21".parse().unwrap());
                            h.insert("set-cookie", "session=internal".parse().unwrap());
                            h.insert(
                                "location",
                                "http://127.0.0.1:8080/internal".parse().unwrap(),
                            );
                            if body_len_nonzero(status) {
                                h.insert("content-type", "application/json".parse().unwrap());
                            }
                            if status == 503 {
                                h.insert("retry-after", "7".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            arrivals: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything recorded so far (and forgets it).
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Exactly one request was recorded; returns it.
    pub fn only_one(&self) -> Recorded {
        let mut got = self.take();
        assert_eq!(got.len(), 1, "upstream got {} requests, want 1", got.len());
        got.remove(0)
    }

    /// Nothing was forwarded. hookgate answers a forwarded request only
    /// after the upstream answered, so after a response this cannot race.
    pub fn assert_nothing(&self) {
        let got = self.take();
        assert!(
            got.is_empty(),
            "upstream got {} requests, want none: {:?}",
            got.len(),
            got.iter().map(|r| &r.path).collect::<Vec<_>>()
        );
    }

    /// Waits (bounded by `secs`) until `n` requests are recorded in all;
    /// returns them (without forgetting them).
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.seen.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the upstream got {} requests within {secs} s, want {n}",
                got.len()
            );
            let _ = tokio::time::timeout(left, self.arrivals.lock().await.recv()).await;
        }
    }

    /// Waits (bounded by `secs`) until `done` holds for everything recorded
    /// so far, woken by each arrival. `Ok` with the records (not forgotten),
    /// or `Err` with what had arrived when the time ran out, for the
    /// caller's own message.
    pub async fn wait_until(
        &self,
        secs: u64,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Result<Vec<Recorded>, Vec<Recorded>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.seen.lock().unwrap().clone();
            if done(&got) {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(got);
            }
            let mut arrivals = self.arrivals.lock().await;
            let _ = tokio::time::timeout(left, arrivals.recv()).await;
            // One look for a burst of arrivals, not one each.
            while arrivals.try_recv().is_ok() {}
        }
    }

    /// Waits (bounded) until the upstream has received a request.
    pub async fn arrival(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.arrivals.lock().await.recv())
            .await
            .expect("no request reached the upstream within 10 s");
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === the sidecar ===

pub struct Route {
    pub name: &'static str,
    pub path: &'static str,
    pub upstream_path: String,
    pub extra: String,
}

pub fn route(name: &'static str, path: &'static str, upstream_path: &str) -> Route {
    Route {
        name,
        path,
        upstream_path: upstream_path.to_owned(),
        extra: String::new(),
    }
}

impl Route {
    pub fn with(mut self, toml_lines: &str) -> Self {
        self.extra.push_str(toml_lines);
        self.extra.push('\n');
        self
    }
}

pub struct Sidecar {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub tls: TlsFiles,
    pub secret_file: PathBuf,
    pub metrics: Arc<hookgate::Metrics>,
    pub reloader: Arc<hookgate::Reloader>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Options {
    pub upstream_url: String,
    pub routes: Vec<Route>,
    /// Extra lines under [server].
    pub server: String,
    /// Extra top-level TOML (after everything else).
    pub extra: String,
    pub tls: Option<TlsFiles>,
    pub upstream_timeout: &'static str,
    /// Extra lines under [upstream].
    pub upstream_extra: String,
    /// `[reload] interval`: "0s" (the default here) = reload only when the
    /// test calls `reloader.reload()`.
    pub reload_interval: &'static str,
    /// Extra lines under [server.tls].
    pub tls_extra: String,
    /// Extra lines under [admin].
    pub admin_extra: String,
}

impl Options {
    pub fn new(upstream_url: String) -> Self {
        Self {
            upstream_url,
            routes: vec![route("coolpopup", "/webhooks/coolpopup", "/hooks/popup")],
            server: String::new(),
            extra: String::new(),
            tls: None,
            upstream_timeout: "1s",
            upstream_extra: String::new(),
            reload_interval: "0s",
            tls_extra: String::new(),
            admin_extra: String::new(),
        }
    }
}

/// The config text for `opts`, with the secret in `secret_file`.
pub fn config_text(opts: &Options, tls: &TlsFiles, secret_file: &Path) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n{}{}\n\
         [server.tls]\ncert_file = {:?}\nkey_file = {:?}\n{}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [upstream]\nurl = {:?}\ntimeout = {:?}\nconnect_timeout = \"500ms\"\n{}\n\
         [reload]\ninterval = {:?}\n",
        // 2 s unless the test sets its own.
        if opts.server.contains("header_read_timeout") {
            ""
        } else {
            "header_read_timeout = \"2s\"\n"
        },
        opts.server,
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
        opts.tls_extra,
        opts.admin_extra,
        opts.upstream_url,
        opts.upstream_timeout,
        opts.upstream_extra,
        opts.reload_interval,
    );
    for r in &opts.routes {
        t.push_str(&format!(
            "[[routes]]\nname = {:?}\npath = {:?}\nupstream_path = {:?}\n",
            r.name, r.path, r.upstream_path
        ));
        if !r.extra.contains("secret_files") {
            t.push_str(&format!(
                "secret_files = [{:?}]\n",
                secret_file.display().to_string()
            ));
        }
        t.push_str(&r.extra);
    }
    t.push_str(&opts.extra);
    t
}

impl Sidecar {
    pub async fn start(opts: Options) -> Self {
        Self::try_start(opts)
            .await
            .unwrap_or_else(|e| panic!("hookgate did not start: {e}"))
    }

    pub async fn try_start(mut opts: Options) -> Result<Self, String> {
        let tls = opts.tls.take().unwrap_or_else(make_tls);
        let secret_file = tls.dir.path().join("secret");
        std::fs::write(&secret_file, [SECRET, b"\n"].concat()).unwrap();
        let text = config_text(&opts, &tls, &secret_file);
        let config = Config::from_figment(&Figment::new().merge(Toml::string(&text)))
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())?;
        let loaded = hookgate::load(config).map_err(|e| e.to_string())?;
        let listeners = Listeners {
            public: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listeners.public.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let hookgate = Hookgate::new(loaded).map_err(|e| e.to_string())?;
        let metrics = hookgate.metrics();
        let reloader = hookgate.reloader();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(hookgate.run(listeners, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            admin,
            tls,
            secret_file,
            metrics,
            reloader,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Starts draining (as SIGTERM does).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn trust(&self) -> hookgate::Trust {
        hookgate::Trust::Pem(self.tls.cert_pem.clone().into_bytes())
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// POSTs `body` signed with SECRET over a fresh HTTP/1.1 TLS connection.
    pub async fn post(&self, path: &str, body: &[u8]) -> Reply {
        let sig = sign(body, SECRET);
        self.send(
            Version::H1,
            "POST",
            path,
            body,
            &[
                ("content-type", "application/json"),
                ("x-coolpopup-signature", &sig),
            ],
        )
        .await
    }

    /// POSTs `body` as `application/json` with signature header value `sig`.
    pub async fn post_signed(&self, v: Version, path: &str, body: &[u8], sig: &str) -> Reply {
        self.send(
            v,
            "POST",
            path,
            body,
            &[
                ("content-type", "application/json"),
                ("x-coolpopup-signature", sig),
            ],
        )
        .await
    }

    /// One request on a fresh TLS connection with exactly these headers.
    pub async fn send(
        &self,
        v: Version,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Reply {
        let stream = self.connect(v).await;
        let mut b = Request::builder().method(method);
        b = match v {
            Version::H1 => b
                .uri(path)
                .header("host", format!("localhost:{}", self.addr.port())),
            Version::H2 => b.uri(self.url(path)).version(http::Version::HTTP_2),
        };
        for (k, val) in headers {
            b = b.header(*k, *val);
        }
        let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let io = TokioIo::new(stream);
        let resp = match v {
            Version::H1 => {
                let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                s.send_request(req).await.unwrap()
            }
            Version::H2 => {
                let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                s.send_request(req).await.unwrap()
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// A TLS connection offering `h2` or `http/1.1`.
    pub async fn connect(&self, v: Version) -> tokio_rustls::client::TlsStream<TcpStream> {
        let alpn: &[&[u8]] = match v {
            Version::H1 => &[b"http/1.1"],
            Version::H2 => &[b"h2"],
        };
        let tls = self.connect_alpn(alpn).await;
        let want: &[u8] = match v {
            Version::H1 => b"http/1.1",
            Version::H2 => b"h2",
        };
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(want), "ALPN");
        tls
    }

    /// A TLS connection offering exactly `alpn` (none: no ALPN extension).
    pub async fn connect_alpn(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let config = hookgate::tls_config(&self.trust(), alpn).unwrap();
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// Writes raw bytes over TLS and reads until the server closes (bounded).
    pub async fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut tls = self.connect(Version::H1).await;
        tls.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        out
    }

    /// GET on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// One request on the admin listener with exactly these headers
    /// (`host` is not added: pass it when the request needs one).
    pub async fn admin_send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = s
            .send_request(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        into_reply(resp).await
    }

    /// The value of one sample line in /metrics, e.g.
    /// `hookgate_requests_total{route="coolpopup",outcome="forwarded"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("hookgate did not stop within 30 s")
                .unwrap();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    H1,
    H2,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts the status and the spec's error code.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {:?}", self.body);
        assert_eq!(self.error(), code, "body: {:?}", self.body);
    }
}

/// A world: one recording upstream and one sidecar with the default route.
pub async fn world() -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let sidecar = Sidecar::start(Options::new(upstream.url())).await;
    (upstream, sidecar)
}

// === clients with a chosen trust or secret (lifecycle, reload) ===

/// A client-side TLS stream to the public listener.
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects over TCP, then TLS (ALPN `http/1.1`), trusting exactly `trust`.
/// Either step failing is an `Err` (tests of a closed listener want that).
pub async fn connect_tls(addr: SocketAddr, trust: &hookgate::Trust) -> Result<ClientTls, String> {
    let config = hookgate::tls_config(trust, &[b"http/1.1"]).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

/// The DER of the leaf certificate the server presented.
pub fn leaf_der(tls: &ClientTls) -> Vec<u8> {
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("the server presented no certificate");
    certs[0].as_ref().to_vec()
}

/// The DER of the first certificate in a PEM text.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A POST of `body` signed with `secret`, for an HTTP/1.1 connection to `port`.
pub fn signed_post(port: u16, path: &str, body: &[u8], secret: &[u8]) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", format!("localhost:{port}"))
        .header("content-type", "application/json")
        .header("x-coolpopup-signature", sign(body, secret))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

async fn into_reply(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// One HTTP/1.1 keep-alive connection that carries several requests.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    port: u16,
    /// DER of the leaf certificate this connection was served.
    pub leaf: Vec<u8>,
}

impl KeepAlive {
    pub async fn open(addr: SocketAddr, trust: &hookgate::Trust) -> Self {
        let tls = connect_tls(addr, trust)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let leaf = leaf_der(&tls);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self {
            sender,
            port: addr.port(),
            leaf,
        }
    }

    /// POSTs `body` signed with `secret` on this connection.
    pub async fn post(&mut self, path: &str, body: &[u8], secret: &[u8]) -> Reply {
        self.sender
            .ready()
            .await
            .expect("the connection was closed");
        let resp = self
            .sender
            .send_request(signed_post(self.port, path, body, secret))
            .await
            .expect("request on the kept-alive connection failed");
        into_reply(resp).await
    }
}

/// What a spawned task needs to reach a sidecar (which it cannot borrow).
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub trust: hookgate::Trust,
}

impl Client {
    /// POSTs `body` signed with `secret` over a fresh HTTP/1.1 TLS connection.
    pub async fn post_signed_with(&self, path: &str, body: &[u8], secret: &[u8]) -> Reply {
        KeepAlive::open(self.addr, &self.trust)
            .await
            .post(path, body, secret)
            .await
    }
}

impl Sidecar {
    /// POSTs `body` signed with `secret` (not SECRET) over a fresh connection.
    pub async fn post_signed_with(&self, path: &str, body: &[u8], secret: &[u8]) -> Reply {
        self.client().post_signed_with(path, body, secret).await
    }

    /// A handle for other tasks, trusting the sidecar's certificate.
    pub fn client(&self) -> Client {
        Client {
            addr: self.addr,
            trust: self.trust(),
        }
    }

    /// A handle that trusts exactly `trust` (e.g. old and new certificate).
    pub fn client_trusting(&self, trust: &hookgate::Trust) -> Client {
        Client {
            addr: self.addr,
            trust: trust.clone(),
        }
    }
}

// === the hookgate binary ===

/// The hookgate binary, with no `HOOKGATE_*` variable inherited from the
/// caller and stdin closed.
pub fn hookgate() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HOOKGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// `hookgate events list --json` on the store of `config`: the state of
/// every stored event, by id.
pub async fn listed_states(config: PathBuf) -> std::collections::HashMap<String, String> {
    let out = tokio::task::spawn_blocking(move || {
        hookgate()
            .args(["events", "list", "--json", "--limit", "100000", "-c"])
            .arg(&config)
            .output()
            .expect("cannot run hookgate events list")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "events list failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let doc: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("events list printed {line:?}: {e}"));
            (
                doc["id"].as_str().unwrap().to_owned(),
                doc["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A `hookgate serve` process whose listeners are ready.
pub struct Spawned {
    pub child: std::process::Child,
    /// The public listener, as the ready line names it.
    pub addr: SocketAddr,
    /// The admin listener, as the ready line names it.
    pub admin: SocketAddr,
}

/// Starts `hookgate serve -c config` with stdout and stderr in `log` and
/// waits (bounded by `secs`) for its "hookgate ready" line, which names
/// both listeners: configs bind port 0, so no test guesses a free port.
/// Panics with the log if the process exits first or is not ready in time.
pub async fn spawn_serve(config: &Path, log: &Path, secs: u64) -> Spawned {
    let log_file = std::fs::File::create(log).unwrap();
    let mut child = hookgate()
        .arg("serve")
        .arg("-c")
        .arg(config)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("cannot start hookgate serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("hookgate ready")) {
            return Spawned {
                child,
                addr: ready_field(line, "listen"),
                admin: ready_field(line, "admin"),
            };
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("hookgate serve exited early ({status}):\n{text}");
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookgate serve not ready within {secs} s:\n{text}");
        }
        // Polling the log for the ready line: the signal the process gives.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address field (`listen`, `admin`) of the "hookgate ready" log line,
/// in the pretty (`listen=ADDR`) or the JSON (`"listen":"ADDR"`) format.
pub fn ready_field(line: &str, name: &str) -> SocketAddr {
    let (pretty, json) = (format!("{name}="), format!("\"{name}\""));
    let after = line
        .find(&pretty)
        .map(|at| at + pretty.len())
        .or_else(|| line.find(&json).map(|at| at + json.len()))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"));
    let value: String = line[after..]
        .chars()
        .skip_while(|c| matches!(c, '"' | '=' | ':' | ' '))
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name} {value:?} in {line:?}: {e}"))
}
