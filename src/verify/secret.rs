//! The webhook secret: raw bytes that never leave through `Debug`, `Display`
//! or serde. It is also the *keyed* HMAC state, built once at load time, so a
//! request never pays the key schedule (the HMAC inner/outer pads).

use std::fmt;

use hmac::Hmac;
use hmac::digest::KeyInit;
use sha2::Sha256;

/// HMAC-SHA256, the provider's signature algorithm.
pub type HmacSha256 = Hmac<Sha256>;

/// A webhook secret, already turned into a keyed HMAC state.
///
/// `Debug` and `Display` print `[redacted]`; there is no `Serialize` and no
/// way to read the bytes back out.
#[derive(Clone)]
pub struct Secret {
    keyed: HmacSha256,
    /// Where it came from ("file /etc/...", "env NAME"), for logs about reloads.
    origin: String,
}

/// A secret that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Empty (after trimming trailing whitespace).
    #[error("the secret is empty")]
    Empty,
    /// Starts with a UTF-8 byte-order mark: an editor's mark, not part of
    /// the provider's secret, so no signature could ever match.
    #[error("starts with a UTF-8 byte-order mark (EF BB BF); save it without one")]
    ByteOrderMark,
    /// Holds a control character (a stray line break, NUL, tab...): no
    /// provider secret does, so no signature could ever match.
    #[error("contains a control character (byte {0:#04x}); secrets are printable text")]
    ControlCharacter(u8),
}

impl Secret {
    /// Builds a secret from raw bytes, trimming trailing whitespace (a
    /// Kubernetes Secret file often ends with a newline).
    pub fn new(raw: &[u8], origin: impl Into<String>) -> Result<Self, SecretError> {
        let trimmed = raw.trim_ascii_end();
        if trimmed.is_empty() {
            return Err(SecretError::Empty);
        }
        if trimmed.starts_with(b"\xEF\xBB\xBF") {
            return Err(SecretError::ByteOrderMark);
        }
        if let Some(&b) = trimmed.iter().find(|b| b.is_ascii_control()) {
            return Err(SecretError::ControlCharacter(b));
        }
        // HMAC accepts keys of any length; this cannot fail, but stay total.
        let keyed =
            <HmacSha256 as KeyInit>::new_from_slice(trimmed).map_err(|_| SecretError::Empty)?;
        Ok(Self {
            keyed,
            origin: origin.into(),
        })
    }

    /// A copy of the keyed HMAC state, ready for `update`.
    pub fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Where this secret was read from (a path or a variable name, never the value).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new(b"hunter2-very-secret", "test").unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", vec![s.clone()]), "[[redacted]]");
        assert!(!format!("{s:#?}").contains("hunter2"));
    }

    #[test]
    fn trailing_whitespace_is_trimmed() {
        use hmac::Mac;
        let a = Secret::new(b"abc\n", "a").unwrap();
        let b = Secret::new(b"abc", "b").unwrap();
        let tag = a.mac().chain_update(b"x").finalize().into_bytes();
        assert!(b.mac().chain_update(b"x").verify_slice(&tag).is_ok());
    }

    #[test]
    fn secrets_no_signature_could_match_are_refused() {
        assert_eq!(
            Secret::new(b"\xEF\xBB\xBFwhsec-abc\n", "x").unwrap_err(),
            SecretError::ByteOrderMark
        );
        for (raw, byte) in [
            (&b"whsec\nabc"[..], b'\n'),
            (b"\twhsec", b'\t'),
            (b"a\0b", 0),
            (b"a\x7fb", 0x7f),
        ] {
            assert_eq!(
                Secret::new(raw, "x").unwrap_err(),
                SecretError::ControlCharacter(byte)
            );
        }
        // Non-ASCII text and inner spaces are fine; trailing white space is trimmed.
        assert!(Secret::new("geheim äöü 1".as_bytes(), "x").is_ok());
        assert!(Secret::new(b"abc \r\n\t", "x").is_ok());
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(Secret::new(b" \n\t", "x").unwrap_err(), SecretError::Empty);
        assert_eq!(Secret::new(b"", "x").unwrap_err(), SecretError::Empty);
    }
}
