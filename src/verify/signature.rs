//! The provider's signature: HMAC-SHA256 over the raw request body.
//!
//! The header is parsed into the 32 MAC bytes first (hex in either case with
//! an optional `sha256=` prefix, or standard base64 with optional padding),
//! then checked against every configured secret with `Mac::verify_slice`,
//! which compares in constant time. Nothing about the body is parsed before
//! this succeeds.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::Mac;

use crate::verify::secret::Secret;

/// Length of an HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;

crate::named::named_enum! {
    /// How a route's signature header is encoded (`routes[].signature_encoding`).
    #[derive(Default)]
    pub enum Encoding {
        /// 64 hex digits, either case, optionally prefixed with `sha256=`.
        #[default]
        Hex = "hex",
        /// Standard base64 alphabet, padding optional, no prefix.
        Base64 = "base64",
    }
}

/// Why a signature was refused. Only for logs and metrics: the client is
/// told no more than "invalid signature".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is absent.
    #[error("signature header missing")]
    Missing,
    /// The header appears more than once.
    #[error("signature header repeated")]
    Repeated,
    /// The header does not decode to 32 bytes in the route's encoding.
    #[error("signature header malformed")]
    Malformed,
    /// Well-formed, but no secret produces it.
    #[error("signature matches no secret")]
    Mismatch,
}

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a header value into the MAC bytes.
pub fn parse(value: &[u8], encoding: Encoding) -> Result<[u8; MAC_LEN], SignatureError> {
    let mut out = [0u8; MAC_LEN];
    match encoding {
        Encoding::Hex => {
            // The prefix in any case (`SHA256=` too).
            let digits = match value.split_at_checked(7) {
                Some((prefix, rest)) if prefix.eq_ignore_ascii_case(b"sha256=") => rest,
                _ => value,
            };
            hex::decode_to_slice(digits, &mut out).map_err(|_| SignatureError::Malformed)?;
        }
        Encoding::Base64 => {
            // 32 bytes are 43 characters unpadded, 44 padded; anything else is
            // refused before decoding so `decode_slice` cannot see a longer input.
            if !(43..=44).contains(&value.len()) {
                return Err(SignatureError::Malformed);
            }
            let n = BASE64
                .decode_slice(value, &mut out)
                .map_err(|_| SignatureError::Malformed)?;
            if n != MAC_LEN {
                return Err(SignatureError::Malformed);
            }
        }
    }
    Ok(out)
}

/// Checks `tag` against every secret, in constant time per secret. All
/// secrets are tried even after a match so the time taken does not say which
/// one (old or new) is in use.
pub fn verify(body: &[u8], tag: &[u8; MAC_LEN], secrets: &[Secret]) -> Result<(), SignatureError> {
    let mut ok = false;
    for secret in secrets {
        let mut mac = secret.mac();
        mac.update(body);
        ok |= mac.verify_slice(tag).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The lowercase hex signature of `body` under `secret` (for `hookgate sign`/`send`).
pub fn sign_hex(body: &[u8], secret: &Secret) -> String {
    let mut mac = secret.mac();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes(), "test").unwrap()
    }

    // RFC 4231 test case 2.
    const RFC_KEY: &str = "Jefe";
    const RFC_DATA: &[u8] = b"what do ya want for nothing?";
    const RFC_MAC: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn sign_hex_matches_rfc4231() {
        assert_eq!(sign_hex(RFC_DATA, &secret(RFC_KEY)), RFC_MAC);
    }

    #[test]
    fn hex_accepts_both_cases_and_the_prefix() {
        let want = parse(RFC_MAC.as_bytes(), Encoding::Hex).unwrap();
        assert_eq!(
            parse(RFC_MAC.to_uppercase().as_bytes(), Encoding::Hex).unwrap(),
            want
        );
        for prefix in ["sha256=", "SHA256=", "Sha256="] {
            assert_eq!(
                parse(format!("{prefix}{RFC_MAC}").as_bytes(), Encoding::Hex).unwrap(),
                want,
                "{prefix}"
            );
        }
        assert!(verify(RFC_DATA, &want, &[secret(RFC_KEY)]).is_ok());
    }

    #[test]
    fn malformed_hex_is_refused() {
        for bad in [
            "",
            "zz",
            &RFC_MAC[..63],
            &RFC_MAC[..62],
            &format!("{RFC_MAC}00"),
            &format!("sha256={}", &RFC_MAC[..60]),
            &format!("sha1={RFC_MAC}"),
            &format!(" {RFC_MAC}"),
            &format!("{RFC_MAC},{RFC_MAC}"),
            &format!("sha256=sha256={RFC_MAC}"),
        ] {
            assert_eq!(
                parse(bad.as_bytes(), Encoding::Hex),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn base64_with_and_without_padding() {
        let raw = hex::decode(RFC_MAC).unwrap();
        let padded = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        let want: [u8; 32] = raw.try_into().unwrap();
        assert_eq!(parse(padded.as_bytes(), Encoding::Base64).unwrap(), want);
        assert_eq!(parse(unpadded.as_bytes(), Encoding::Base64).unwrap(), want);
        // Hex is not base64 and the URL-safe alphabet is not the standard one.
        assert!(parse(RFC_MAC.as_bytes(), Encoding::Base64).is_err());
        let urlsafe = padded.replace('+', "-").replace('/', "_");
        if urlsafe != padded {
            assert!(parse(urlsafe.as_bytes(), Encoding::Base64).is_err());
        }
    }

    #[test]
    fn any_of_several_secrets_verifies() {
        let tag = parse(sign_hex(b"body", &secret("new")).as_bytes(), Encoding::Hex).unwrap();
        let secrets = [secret("old"), secret("new")];
        assert!(verify(b"body", &tag, &secrets).is_ok());
        assert_eq!(
            verify(b"body!", &tag, &secrets),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"body", &tag, &secrets[..1]),
            Err(SignatureError::Mismatch)
        );
    }
}
