//! The app stand-in for load benchmarks (`benches/load/run.sh`): plain
//! HTTP/1.1 keep-alive on one thread, reads each body, answers
//! `200 {"ok":true}`, logs nothing. `GET /count` answers the number of
//! non-GET requests received so far, so a benchmark can check that every
//! request it sent arrived exactly once.
//!
//!     cargo run --release --example bench_upstream [ADDR]    # default 127.0.0.1:18080

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(
    req: Request<Incoming>,
    count: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/count" {
        let n = count.load(Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(format!("{n}\n")))));
    }
    // Read the whole body, as an app would.
    let _ = req.into_body().collect().await;
    count.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        let _ = writeln!(
            std::io::stdout(),
            "bench upstream listening on http://{}",
            listener.local_addr()?
        );
        let count = Arc::new(AtomicU64::new(0));
        loop {
            // A failed accept (a connection reset while queued, out of file
            // descriptors) loses that connection, not the listener: the
            // benchmark's requests on it fail and the script says so.
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    let _ = writeln!(std::io::stdout(), "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, count.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
