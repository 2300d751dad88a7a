//! The protocol floor, seen by a client that can speak the old versions:
//! rustls clients cannot offer TLS 1.0/1.1, so `openssl s_client` does it
//! (with `@SECLEVEL=0`, or OpenSSL 3 itself would refuse to offer them and
//! the test would prove nothing). TLS 1.1 and 1.0 must fail with an alert
//! from the server (rustls answers such a ClientHello with
//! `handshake_failure`, alert 40: it shares no version and no suite with
//! it); TLS 1.2 and 1.3 are the controls.
//! `security/tls-scan.sh` runs the full testssl.sh scan.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step should panic the test"
)]

mod support;

use std::process::{Command, Output};

use support::*;

/// `openssl s_client` against `port` with one protocol flag; None when
/// openssl is not installed.
fn s_client(port: u16, protocol: &str) -> Option<Output> {
    let connect = format!("127.0.0.1:{port}");
    // `timeout` bounds a handshake that would hang; stdin is empty, so a
    // successful handshake ends at once.
    Command::new("timeout")
        .args([
            "20",
            "openssl",
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            protocol,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
}

fn openssl_installed() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn handshake(port: u16, protocol: &'static str) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || s_client(port, protocol))
        .await
        .unwrap()
        .expect("timeout/openssl could not be run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // s_client prints the negotiated protocol once a handshake completes.
    let established = text.contains("New, TLSv1.") && !text.contains("Cipher is (NONE)");
    (established, text)
}

#[tokio::test]
async fn tls_1_1_and_below_are_refused_tls_1_2_and_1_3_served() {
    if !openssl_installed() {
        eprintln!(
            "SKIPPED: openssl is not installed; the TLS 1.1 floor test needs `openssl s_client`"
        );
        return;
    }
    let (upstream, sidecar) = world().await;
    let port = sidecar.addr.port();
    for old in ["-tls1_1", "-tls1"] {
        let (established, text) = handshake(port, old).await;
        assert!(!established, "{old} was accepted:\n{text}");
        // "SSL alert number N": the refusal came from the server, not from
        // a client that would not offer the version.
        assert!(
            text.contains("SSL alert number"),
            "{old}: refused, but not by an alert from the server:\n{text}"
        );
    }
    for (ok, want) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (established, text) = handshake(port, ok).await;
        assert!(
            established && text.contains(&format!("New, {want}, Cipher is ")),
            "{ok} not served:\n{text}"
        );
    }
    upstream.assert_nothing();
}
