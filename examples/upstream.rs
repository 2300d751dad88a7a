//! A stand-in for the app behind hookgate, for trying things out locally:
//! listens on plain HTTP (default 127.0.0.1:8080, or the first argument),
//! answers every request `200 {"received":true}`, and prints one line per
//! request with the headers hookgate sets (never the body: it may hold a
//! visitor's email and form fields).
//!
//!     cargo run --release --example upstream [ADDR]

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let h = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let _ = writeln!(
        std::io::stdout(),
        "{} {} bytes={len} verified={} route={} event={} campaign={} request_id={} forwarded_for={}",
        parts.method,
        parts.uri,
        h("x-webhook-verified"),
        h("x-webhook-route"),
        h("x-webhook-event"),
        h("x-webhook-campaign-id"),
        h("x-request-id"),
        h("x-forwarded-for"),
    );
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"received\":true}\n")));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let _ = writeln!(
        std::io::stdout(),
        "upstream listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
