//! Who may change state through the admin console (SPEC "Admin console").
//!
//! A replay or drop is a `POST` that [`authorize`] lets through only when
//! every condition holds:
//!
//! 1. the peer is a loopback address (`kubectl port-forward` connects from
//!    inside the pod; a scraper reaching `admin.listen` on the pod IP is not);
//! 2. it carries exactly one `X-Hookgate-Action: 1` (a cross-site form cannot
//!    set a header, and a cross-origin `fetch` that sets one needs a CORS
//!    preflight this listener never grants);
//! 3. its `Host` names the loopback (`localhost`, `127.0.0.0/8`, `[::1]`)
//!    and an `Origin`, when sent, is that same origin: a page on another
//!    site that rebinds its DNS name to 127.0.0.1 passes 1 and 2 from the
//!    victim's browser, but its `Host` is its own name;
//! 4. when `admin.token_file` is set, `Authorization: Bearer <token>`,
//!    compared in constant time.
//!
//! The token is kept only as its SHA-256 digest; comparing digests also
//! hides the token's length.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The request header every action must carry with the value `1`.
pub(crate) const ACTION_HEADER: &str = "x-hookgate-action";

/// The bearer token from `admin.token_file`, re-read on reload.
pub struct TokenFile {
    path: PathBuf,
    digest: ArcSwap<[u8; 32]>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl TokenFile {
    /// Reads the token file; the error names the file, never its content.
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(Self {
            path: path.to_owned(),
            digest: ArcSwap::from_pointee(read_digest(path)?),
        })
    }

    /// The file it is read from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file: `Ok(true)` when a new token went into service.
    /// A file that cannot be used is refused and the old token stays.
    pub(crate) fn reload(&self) -> Result<bool, String> {
        let digest = read_digest(&self.path)?;
        if **self.digest.load() == digest {
            return Ok(false);
        }
        self.digest.store(Arc::new(digest));
        Ok(true)
    }

    /// Whether `presented` is the token (constant time).
    pub(crate) fn accepts(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        bool::from(presented.ct_eq(&**self.digest.load()))
    }
}

/// The SHA-256 of the file's content with surrounding white space trimmed.
fn read_digest(path: &Path) -> Result<[u8; 32], String> {
    let raw = std::fs::read(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    // It travels as `Authorization: Bearer <token>`: one visible-ASCII word.
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token file {}: the token must be visible ASCII without spaces or line breaks",
            path.display()
        ));
    }
    Ok(Sha256::digest(token).into())
}

/// Why an action was refused (the 403's message says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The peer is not a loopback address.
    NotLoopback,
    /// `X-Hookgate-Action: 1` is missing, repeated, or another value.
    NoActionHeader,
    /// `Host` is missing or names something other than the loopback, or
    /// `Origin` is another origin.
    ForeignOrigin,
    /// A token is configured and the request does not carry it.
    BadToken,
}

impl Refusal {
    /// The JSON error's message.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::NotLoopback => "actions are only accepted from a loopback peer",
            Self::NoActionHeader => "actions need the header X-Hookgate-Action: 1",
            Self::ForeignOrigin => {
                "actions need a loopback Host (localhost, 127.0.0.1, [::1]) and no other Origin"
            }
            Self::BadToken => "actions need Authorization: Bearer <admin.token_file's token>",
        }
    }
}

/// Whether a state-changing request may proceed; the first condition that
/// fails is the answer.
pub(crate) fn authorize(
    peer: IpAddr,
    headers: &HeaderMap,
    token: Option<&TokenFile>,
) -> Result<(), Refusal> {
    if !is_loopback(peer) {
        return Err(Refusal::NotLoopback);
    }
    if single(headers, ACTION_HEADER) != Some(b"1".as_slice()) {
        return Err(Refusal::NoActionHeader);
    }
    let host = single(headers, header::HOST.as_str()).ok_or(Refusal::ForeignOrigin)?;
    if !is_loopback_host(host) {
        return Err(Refusal::ForeignOrigin);
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let same = origin
            .as_bytes()
            .strip_prefix(b"http://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host));
        if !same || origins.next().is_some() {
            return Err(Refusal::ForeignOrigin);
        }
    }
    if let Some(token) = token {
        let presented = single(headers, header::AUTHORIZATION.as_str()).and_then(bearer);
        if !presented.is_some_and(|p| token.accepts(p)) {
            return Err(Refusal::BadToken);
        }
    }
    Ok(())
}

/// A loopback address, IPv4-mapped IPv6 (`::ffff:127.0.0.1`) included.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `localhost`, a `127.0.0.0/8` address or `[::1]`, with or without a port.
fn is_loopback_host(host: &[u8]) -> bool {
    let Ok(authority) = http::uri::Authority::try_from(host) else {
        return false;
    };
    if authority.as_str().contains('@') {
        return false;
    }
    let name = authority.host();
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    literal.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// The value of a header sent exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first.as_bytes())
}

/// The credentials of `Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn token(content: &str) -> (tempfile::NamedTempFile, TokenFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), content).unwrap();
        let token = TokenFile::load(file.path()).unwrap();
        (file, token)
    }

    #[test]
    fn only_loopback_peers_count_as_local() {
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.7",
            "192.168.1.2",
            "172.17.0.1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.7",
            "fe80::1",
            "2001:db8::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_pod_network_peer_is_refused_even_with_everything_else() {
        let h = headers(&[("host", "127.0.0.1:9901"), ("x-hookgate-action", "1")]);
        for peer in [
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        ] {
            assert_eq!(authorize(peer, &h, None), Err(Refusal::NotLoopback));
        }
        assert_eq!(authorize(LOCAL, &h, None), Ok(()));
    }

    #[test]
    fn the_action_header_must_be_exactly_one_1() {
        let host = ("host", "localhost:9901");
        for h in [
            headers(&[host]),
            headers(&[host, ("x-hookgate-action", "true")]),
            headers(&[host, ("x-hookgate-action", "1"), ("x-hookgate-action", "1")]),
        ] {
            assert_eq!(authorize(LOCAL, &h, None), Err(Refusal::NoActionHeader));
        }
    }

    #[test]
    fn host_and_origin_must_be_the_loopback() {
        let ok = |pairs: &[(&str, &str)]| {
            let mut all = vec![("x-hookgate-action", "1")];
            all.extend_from_slice(pairs);
            authorize(LOCAL, &headers(&all), None)
        };
        assert_eq!(ok(&[("host", "localhost:9901")]), Ok(()));
        assert_eq!(ok(&[("host", "LOCALHOST")]), Ok(()));
        assert_eq!(ok(&[("host", "127.0.0.1:9901")]), Ok(()));
        assert_eq!(ok(&[("host", "[::1]:9901")]), Ok(()));
        assert_eq!(
            ok(&[
                ("host", "127.0.0.1:9901"),
                ("origin", "http://127.0.0.1:9901")
            ]),
            Ok(())
        );
        for bad in [
            vec![],
            vec![("host", "evil.example:9901")],
            vec![("host", "10.0.0.7:9901")],
            vec![("host", "localhost.evil.example")],
            vec![("host", "user@localhost:9901")],
            vec![("host", "localhost"), ("host", "localhost")],
            vec![
                ("host", "localhost:9901"),
                ("origin", "http://evil.example"),
            ],
            vec![("host", "localhost:9901"), ("origin", "null")],
            vec![
                ("host", "localhost:9901"),
                ("origin", "https://localhost:9901"),
            ],
            vec![
                ("host", "localhost:9901"),
                ("origin", "http://localhost:9902"),
            ],
        ] {
            assert_eq!(ok(&bad), Err(Refusal::ForeignOrigin), "{bad:?}");
        }
    }

    #[test]
    fn a_configured_token_must_be_presented_as_bearer() {
        let (_file, t) = token("s3cr3t-token\n");
        let base = [("host", "localhost:9901"), ("x-hookgate-action", "1")];
        let with = |auth: Option<&str>| {
            let mut all = base.to_vec();
            if let Some(a) = auth {
                all.push(("authorization", a));
            }
            authorize(LOCAL, &headers(&all), Some(&t))
        };
        assert_eq!(with(Some("Bearer s3cr3t-token")), Ok(()));
        assert_eq!(with(Some("bearer s3cr3t-token")), Ok(()));
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cr3t-toke"),
            Some("Bearer s3cr3t-token-and-more"),
            Some("Bearer "),
            Some("Basic s3cr3t-token"),
            Some("s3cr3t-token"),
        ] {
            assert_eq!(with(bad), Err(Refusal::BadToken), "{bad:?}");
        }
        // Without a configured token, no Authorization is needed.
        assert_eq!(authorize(LOCAL, &headers(&base), None), Ok(()));
    }

    #[test]
    fn token_files_are_trimmed_checked_and_reloaded() {
        let (file, t) = token("  abc123 \r\n");
        assert!(t.accepts(b"abc123"));
        assert_eq!(t.reload(), Ok(false));
        std::fs::write(file.path(), "def456\n").unwrap();
        assert_eq!(t.reload(), Ok(true));
        assert!(t.accepts(b"def456") && !t.accepts(b"abc123"));
        for bad in ["", " \n", "two words", "tab\there"] {
            std::fs::write(file.path(), bad).unwrap();
            let e = t.reload().unwrap_err();
            assert!(e.contains(&file.path().display().to_string()), "{e}");
            assert!(!e.contains(bad.trim()) || bad.trim().is_empty(), "{e}");
        }
        // The refused replacements left the token in service.
        assert!(t.accepts(b"def456"));
        assert!(TokenFile::load(Path::new("/nonexistent/token")).is_err());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let (_file, t) = token("hunter2-token");
        let shown = format!("{t:?}");
        assert!(
            shown.contains("[redacted]") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
