//! Hot reload without a restart: a certificate rotated the way a Kubernetes
//! Secret volume does it (an atomic `..data` symlink swap), a broken
//! replacement refused while the old certificate stays in service, rotated
//! and emptied secret files, and the interval poller. `reloader.reload()` is
//! the trigger: SIGHUP and the poller call exactly that.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a setup failure should panic with its message"
)]

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use hookgate::Trust;
use support::*;

const ROUTE: &str = "/webhooks/coolpopup";
const SECRET_NEW: &[u8] = b"whsec-test-rotated-5555aaaa";

/// A certificate directory laid out like a mounted Kubernetes Secret:
/// `..2026_11_29_a/tls.{crt,key}`, `..data -> ..2026_11_29_a`, and
/// `tls.crt -> ..data/tls.crt`, `tls.key -> ..data/tls.key`. The returned
/// `TlsFiles` names the top-level symlinks; its `cert_pem` is cert A.
fn kubernetes_tls_dir() -> TlsFiles {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = cert_pair("a");
    write_generation(dir.path(), "..2026_11_29_a", &cert_pem, &key_pem);
    symlink("..2026_11_29_a", dir.path().join("..data")).unwrap();
    symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
    symlink("..data/tls.key", dir.path().join("tls.key")).unwrap();
    TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        dir,
        cert_pem,
    }
}

fn write_generation(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) {
    let generation = dir.join(name);
    std::fs::create_dir(&generation).unwrap();
    std::fs::write(generation.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(generation.join("tls.key"), key_pem).unwrap();
}

/// Points `..data` at `generation` atomically, as the kubelet does: a new
/// symlink renamed over the old one.
fn swap_data(dir: &Path, generation: &str) {
    let tmp = dir.join("..data_tmp");
    symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Replaces a file's content atomically (write a sibling, rename over it).
fn replace_file(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The leaf certificate a fresh connection is served.
async fn served_leaf(sidecar: &Sidecar, trust: &Trust) -> Vec<u8> {
    let tls = connect_tls(sidecar.addr, trust)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    leaf_der(&tls)
}

async fn start_with(tls: TlsFiles) -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.tls = Some(tls);
    let sidecar = Sidecar::start(opts).await;
    (upstream, sidecar)
}

#[tokio::test]
async fn certificate_swapped_via_data_symlink_is_served_to_new_connections() {
    let tls = kubernetes_tls_dir();
    let dir = tls.dir.path().to_owned();
    let cert_a = tls.cert_pem.clone();
    let (cert_b, key_b) = cert_pair("b");
    // The client trusts both, so the handshake proves which one is served.
    let trust = Trust::Pem(format!("{cert_a}{cert_b}").into_bytes());
    let (upstream, sidecar) = start_with(tls).await;

    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_a));
    // A connection opened before the swap, already carrying traffic.
    let mut before = KeepAlive::open(sidecar.addr, &trust).await;
    assert_eq!(before.leaf, pem_der(&cert_a));
    assert_eq!(
        before
            .post(ROUTE, &body_of("popup.shown"), SECRET)
            .await
            .status,
        200
    );

    write_generation(&dir, "..2026_11_29_b", &cert_b, &key_b);
    swap_data(&dir, "..2026_11_29_b");
    let summary = sidecar.reloader.reload();
    assert!(summary.tls_reloaded, "{summary:?}");
    assert!(summary.errors.is_empty(), "{summary:?}");
    assert!(summary.secrets_reloaded.is_empty(), "{summary:?}");

    // The old connection is undisturbed...
    let reply = before.post(ROUTE, &body_of("popup.clicked"), SECRET).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // ...and new ones get the new certificate.
    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_b));
    let reply = sidecar
        .client_trusting(&trust)
        .post_signed_with(ROUTE, &body_of("popup.closed"), SECRET)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(upstream.take().len(), 3);

    assert_eq!(
        sidecar
            .metric(r#"hookgate_reloads_total{kind="tls",result="ok"}"#)
            .await,
        Some(1.0)
    );
    // Nothing changed since: a second pass does nothing.
    assert_eq!(
        sidecar.reloader.reload(),
        hookgate::ReloadSummary::default()
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn broken_certificate_replacement_keeps_the_old_one_in_service() {
    let tls = kubernetes_tls_dir();
    let dir = tls.dir.path().to_owned();
    let cert_a = tls.cert_pem.clone();
    let (cert_c, _) = cert_pair("c");
    let (_, key_d) = cert_pair("d");
    let (cert_b, key_b) = cert_pair("b");
    let trust = Trust::Pem(format!("{cert_a}{cert_b}{cert_c}").into_bytes());
    let (_upstream, sidecar) = start_with(tls).await;

    // A key that does not belong to the certificate.
    write_generation(&dir, "..2026_11_29_c", &cert_c, &key_d);
    swap_data(&dir, "..2026_11_29_c");
    let summary = sidecar.reloader.reload();
    assert!(!summary.tls_reloaded, "{summary:?}");
    assert_eq!(summary.errors.len(), 1, "{summary:?}");
    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_a));
    let reply = sidecar
        .client_trusting(&trust)
        .post_signed_with(ROUTE, &body_of("popup.shown"), SECRET)
        .await;
    assert_eq!(reply.status, 200, "still serving: {:?}", reply.body);
    let error_series = r#"hookgate_reloads_total{kind="tls",result="error"}"#;
    assert_eq!(sidecar.metric(error_series).await, Some(1.0));

    // The same broken content again is not a new failure.
    let again = sidecar.reloader.reload();
    assert!(!again.tls_reloaded, "{again:?}");
    assert_eq!(sidecar.metric(error_series).await, Some(1.0));
    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_a));

    // A garbage key is another distinct failure, also refused.
    write_generation(&dir, "..2026_11_29_e", &cert_c, "not a key\n");
    swap_data(&dir, "..2026_11_29_e");
    let summary = sidecar.reloader.reload();
    assert!(!summary.tls_reloaded, "{summary:?}");
    assert_eq!(summary.errors.len(), 1, "{summary:?}");
    assert_eq!(sidecar.metric(error_series).await, Some(2.0));
    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_a));

    // Missing files (a generation without tls.key) are refused too, and
    // counted once however often the unreadable state is seen.
    let empty = dir.join("..2026_11_29_f");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("tls.crt"), &cert_c).unwrap();
    swap_data(&dir, "..2026_11_29_f");
    for _ in 0..2 {
        let summary = sidecar.reloader.reload();
        assert!(!summary.tls_reloaded, "{summary:?}");
        assert_eq!(summary.errors.len(), 1, "{summary:?}");
        assert_eq!(sidecar.metric(error_series).await, Some(3.0));
    }
    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_a));

    // A good pair afterwards is taken.
    write_generation(&dir, "..2026_11_29_b", &cert_b, &key_b);
    swap_data(&dir, "..2026_11_29_b");
    let summary = sidecar.reloader.reload();
    assert!(summary.tls_reloaded, "{summary:?}");
    assert_eq!(served_leaf(&sidecar, &trust).await, pem_der(&cert_b));
    assert_eq!(
        sidecar
            .metric(r#"hookgate_reloads_total{kind="tls",result="ok"}"#)
            .await,
        Some(1.0)
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn rotated_secret_file_is_accepted_without_restart() {
    let (upstream, sidecar) = world().await;
    let body = body_of("popup.clicked"); // not deduplicated: the same bytes go twice on purpose
    assert_eq!(
        sidecar.post_signed_with(ROUTE, &body, SECRET).await.status,
        200
    );

    replace_file(&sidecar.secret_file, &[SECRET_NEW, b"\n"].concat());
    let summary = sidecar.reloader.reload();
    assert_eq!(summary.secrets_reloaded, ["coolpopup"], "{summary:?}");
    assert!(!summary.tls_reloaded, "{summary:?}");
    assert!(summary.errors.is_empty(), "{summary:?}");

    let reply = sidecar.post_signed_with(ROUTE, &body, SECRET_NEW).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    sidecar
        .post_signed_with(ROUTE, &body, SECRET)
        .await
        .expect_error(401, "invalid_signature");
    assert_eq!(upstream.take().len(), 2);
    assert_eq!(
        sidecar
            .metric(r#"hookgate_reloads_total{kind="secrets",result="ok"}"#)
            .await,
        Some(1.0)
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn emptied_secret_file_is_refused_and_the_old_secret_stays() {
    let (_upstream, sidecar) = world().await;
    let body = body_of("popup.shown");

    replace_file(&sidecar.secret_file, b"\n");
    let summary = sidecar.reloader.reload();
    assert!(summary.secrets_reloaded.is_empty(), "{summary:?}");
    assert_eq!(summary.errors.len(), 1, "{summary:?}");

    let reply = sidecar.post_signed_with(ROUTE, &body, SECRET).await;
    assert_eq!(
        reply.status, 200,
        "the old secret is still in service: {:?}",
        reply.body
    );
    let error_series = r#"hookgate_reloads_total{kind="secrets",result="error"}"#;
    assert_eq!(sidecar.metric(error_series).await, Some(1.0));
    // Still empty on the next pass: refused again, but counted once.
    assert_eq!(sidecar.reloader.reload().errors.len(), 1);
    assert_eq!(sidecar.metric(error_series).await, Some(1.0));
    sidecar.stop().await;
}

#[tokio::test]
async fn poller_picks_up_a_rotated_secret() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.reload_interval = "100ms";
    let sidecar = Sidecar::start(opts).await;
    let body = body_of("popup.clicked");

    replace_file(&sidecar.secret_file, SECRET_NEW);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = sidecar.post_signed_with(ROUTE, &body, SECRET_NEW).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        assert!(
            Instant::now() < deadline,
            "the rotated secret was not picked up within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sidecar
        .post_signed_with(ROUTE, &body, SECRET)
        .await
        .expect_error(401, "invalid_signature");
    assert_eq!(upstream.take().len(), 1);
    assert_eq!(
        sidecar
            .metric(r#"hookgate_reloads_total{kind="secrets",result="ok"}"#)
            .await,
        Some(1.0)
    );
    sidecar.stop().await;
}

/// Every kind the sidecar reloads has its `ok` and `error` series from the
/// start, at 0: a fresh scrape has the name the alert on refused reloads
/// uses, and `increase()` sees the first refusal.
#[tokio::test]
async fn reload_series_exist_from_the_start() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "tok-0123456789abcdef\n").unwrap();
    let mut opts = Options::new(upstream.url());
    opts.admin_extra = format!("token_file = {:?}\n", token_file.display().to_string());
    let sidecar = Sidecar::start(opts).await;
    for kind in ["tls", "secrets", "admin_token"] {
        for result in ["ok", "error"] {
            let series = format!(r#"hookgate_reloads_total{{kind="{kind}",result="{result}"}}"#);
            assert_eq!(sidecar.metric(&series).await, Some(0.0), "{series}");
        }
    }
    sidecar.stop().await;
}
