//! Micro-benchmarks of the request path, without sockets: signature
//! verification, schema validation, header normalization, and the whole
//! in-process pipeline (`Unverified::verify` + `into_upstream_request`), for
//! `popup.converted` bodies of 0.5, 1 and 4 KiB.
//!
//!     cargo bench --bench pipeline              # measure
//!     cargo bench --bench pipeline -- whole     # one group
//!
//! Under `cargo test --all-targets` criterion runs every benchmark once, as a
//! smoke test. The `hmac_keying` group shows what pre-keying a
//! [`Secret`] saves: the same MAC with the key schedule paid per request.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness: a failed setup step should panic"
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use figment::Figment;
use figment::providers::{Format, Toml};
use hmac::{KeyInit, Mac};
use hookgate::testing::{
    self as hg, Encoding, Forwarding, HmacSha256, Route, Routes, Secret, Upstream, signature,
};
use hookgate::{Config, Metrics};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request};

const SECRET: &[u8] = b"whsec-bench-0123456789abcdef0123456789";
const SIZES: [(usize, &str); 3] = [(512, "0.5KiB"), (1024, "1KiB"), (4096, "4KiB")];

/// A valid `popup.converted` body of exactly `size` bytes: the spec's
/// example, with more `visitor.fields` entries, padded by an unknown field.
fn body(size: usize) -> Vec<u8> {
    let out = hg::sized_body("popup.converted", "camp_abc123", size).expect("size fits the body");
    assert_eq!(out.len(), size);
    hg::validate(&out).expect("the bench body is valid");
    out
}

/// A route loaded the way `serve` loads it, from a TOML config.
struct World {
    route: Arc<Route>,
    routes: Arc<Routes>,
    upstream: Upstream,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, [SECRET, b"\n"].concat()).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\nself_signed = true\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"http://127.0.0.1:8080\"\n\
         [[routes]]\nname = \"coolpopup\"\npath = \"/webhooks/coolpopup\"\n\
         secret_files = [{:?}]\n",
        secret_file.display().to_string()
    );
    let config = Config::from_figment(&Figment::new().merge(Toml::string(&text)))
        .unwrap()
        .validate()
        .unwrap();
    let upstream = Upstream::new(&config);
    let loaded = hookgate::load(config).unwrap();
    let route = loaded.routes.find("/webhooks/coolpopup").unwrap().clone();
    World {
        route,
        routes: loaded.routes,
        upstream,
        _dir: dir,
    }
}

fn sign(body: &[u8]) -> String {
    let secret = Secret::new(SECRET, "bench").unwrap();
    signature::sign_hex(body, &secret)
}

/// The head of a request as a provider sends it through a CDN.
fn parts(body: &[u8]) -> Parts {
    Request::builder()
        .method("POST")
        .uri("/webhooks/coolpopup")
        .header("host", "hooks.example.com")
        .header(
            "user-agent",
            "CoolPopup-Webhooks/2.3 (+https://coolpopup.example)",
        )
        .header("content-type", "application/json; charset=utf-8")
        .header("content-length", body.len())
        .header("accept", "*/*")
        .header("accept-encoding", "gzip, deflate")
        .header("x-coolpopup-signature", format!("sha256={}", sign(body)))
        .header("x-coolpopup-delivery", "dlv_7f3a9c2e4b1d")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-webhook-verified", "true")
        .header("connection", "keep-alive")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Batches of 64 cloned request heads: a few hundred KiB, so they are in
/// the cache when timed, as a head is when hyper has just parsed it.
/// (`BatchSize::SmallInput` cloned thousands per batch and timed
/// main-memory misses: `whole/verify+validate` 1 KiB read about 1 µs more
/// than its parts added up, against about 0.3 µs with these batches.)
const HOT: BatchSize = BatchSize::NumIterations(64);

const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)),
    51234,
);

fn signature_verification(c: &mut Criterion) {
    let secrets = [Secret::new(SECRET, "bench").unwrap()];
    let mut g = c.benchmark_group("signature");
    for (size, name) in SIZES {
        let body = body(size);
        let header = format!("sha256={}", sign(&body));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("parse+verify", name), &body, |b, body| {
            b.iter(|| {
                let tag = signature::parse(black_box(header.as_bytes()), Encoding::Hex).unwrap();
                signature::verify(black_box(body), &tag, &secrets).unwrap();
            })
        });
    }
    g.finish();
}

/// Pre-keyed (what hookgate does) against keying the HMAC per request.
fn hmac_keying(c: &mut Criterion) {
    let secret = Secret::new(SECRET, "bench").unwrap();
    let body = body(1024);
    let tag = signature::parse(sign(&body).as_bytes(), Encoding::Hex).unwrap();
    let mut g = c.benchmark_group("hmac_keying/1KiB");
    g.bench_function("prekeyed", |b| {
        b.iter(|| {
            let mut mac = secret.mac();
            mac.update(black_box(&body));
            mac.verify_slice(&tag).unwrap();
        })
    });
    g.bench_function("keyed_per_request", |b| {
        b.iter(|| {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(black_box(SECRET)).unwrap();
            mac.update(black_box(&body));
            mac.verify_slice(&tag).unwrap();
        })
    });
    g.finish();
}

fn schema_validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("schema");
    for (size, name) in SIZES {
        let body = body(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("validate", name), &body, |b, body| {
            b.iter(|| hg::validate(black_box(body)).unwrap())
        });
    }
    g.finish();
}

fn header_normalization(c: &mut Criterion) {
    let w = world();
    let body = body(1024);
    let headers: HeaderMap = parts(&body).headers;
    let peer_ip = HeaderValue::from_static("203.0.113.7");
    let request_id = HeaderValue::from_static("0f8e2b7c9a4d4e1f8b3c6d5e4f3a2b1c");
    let sig = HeaderName::from_static("x-coolpopup-signature");
    let mut g = c.benchmark_group("headers");
    g.bench_function("normalize_request", |b| {
        b.iter_batched(
            || headers.clone(),
            |mut h| {
                let original_host = h.get(http::header::HOST).cloned();
                hg::normalize_request(
                    &mut h,
                    &sig,
                    Forwarding {
                        upstream_host: w.upstream.host(),
                        peer_ip: &peer_ip,
                        forwarded_for: None,
                        original_host,
                        request_id: &request_id,
                        route: &w.route.name_header,
                        verdict: Ok((
                            Some(HeaderValue::from_static("popup.converted")),
                            Some(HeaderValue::from_static("camp_abc123")),
                        )),
                        content_length: body.len(),
                    },
                );
                h
            },
            HOT,
        )
    });
    g.bench_function("request_id/fresh", |b| {
        b.iter(|| hg::request_id(black_box(&headers)))
    });
    g.finish();
}

/// What the pipeline does per request besides the checks: counting it.
fn metrics(c: &mut Criterion) {
    let m = Metrics::new();
    let route: std::sync::Arc<str> = "coolpopup".into();
    c.bench_function("metrics/record_request", |b| {
        b.iter(|| m.record_request(black_box(&route), "forwarded", false, 0.001))
    });
}

fn whole_pipeline(c: &mut Criterion) {
    let w = world();
    let request_id = HeaderValue::from_static("0f8e2b7c9a4d4e1f8b3c6d5e4f3a2b1c");
    let mut g = c.benchmark_group("whole");
    for (size, name) in SIZES {
        let body = Bytes::from(body(size));
        let head = parts(&body);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("verify+validate", name), |b| {
            b.iter_batched(
                || Request::from_parts(clone_parts(&head), body.clone()),
                |req| assert!(hg::verify(&w.routes, req)),
                HOT,
            )
        });
        g.bench_function(
            BenchmarkId::new("verify+validate+upstream_request", name),
            |b| {
                b.iter_batched(
                    || Request::from_parts(clone_parts(&head), body.clone()),
                    |req| match hg::check(&w.routes, &w.upstream, req, PEER, false, &request_id) {
                        hg::Verdict::Forwarded { request, .. } => request,
                        other => panic!("{other:?}"),
                    },
                    HOT,
                )
            },
        );
    }
    g.finish();
}

/// `Parts` is not `Clone` (its extensions may not be); ours has none.
fn clone_parts(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

criterion_group!(
    benches,
    signature_verification,
    hmac_keying,
    schema_validation,
    header_normalization,
    metrics,
    whole_pipeline
);
criterion_main!(benches);
