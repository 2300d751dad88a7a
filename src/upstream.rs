//! The pooled HTTP/1.1 client to the app, with the spec's failure mapping:
//! refused, reset or unreachable → 502 `upstream_unavailable`; no complete
//! answer within `upstream.timeout` → 504 `upstream_timeout`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::error::Rejection;
use crate::pipeline::UpstreamRequest;

/// The app behind hookgate.
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, without a trailing slash.
    base: String,
    host: HeaderValue,
    timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The upstream URL cannot be used (validate() normally catches this first).
#[derive(Debug, thiserror::Error)]
#[error("upstream.url {0:?} is not a usable http://host:port URL")]
pub struct BadUpstreamUrl(String);

impl Upstream {
    /// A client for `config.url` with a keep-alive pool.
    pub fn new(config: &UpstreamConfig) -> Result<Self, BadUpstreamUrl> {
        let bad = || BadUpstreamUrl(config.url.clone());
        let uri: Uri = config.url.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?.clone();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector);
        Ok(Self {
            client,
            base: format!("http://{authority}"),
            host,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// The upstream's authority, for the `Host` header.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// `upstream.url` + `path` + `?query`.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, Rejection> {
        let mut s =
            String::with_capacity(self.base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        s.push_str(&self.base);
        s.push_str(path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        // Both parts were valid URI components on their own.
        s.parse().map_err(|_| Rejection::Internal)
    }

    /// Sends a verified request and reads the whole answer, within `upstream.timeout`.
    pub async fn send(&self, req: UpstreamRequest) -> Result<Response<Bytes>, Rejection> {
        let exchange = async {
            let response = self.client.request(req.into_inner()).await.map_err(|e| {
                tracing::debug!(error = %e, connect = e.is_connect(), "upstream request failed");
                Rejection::UpstreamUnavailable
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "upstream response body failed");
                    Rejection::UpstreamUnavailable
                })?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Rejection::UpstreamTimeout))
    }
}
