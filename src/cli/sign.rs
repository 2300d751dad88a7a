//! `hookgate sign`: the signature of a body, as the provider computes it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use super::fail;
use crate::load::SecretSource;
use crate::verify::secret::Secret;
use crate::verify::signature;

pub(super) fn read_secret(path: &Path) -> Result<Secret, String> {
    SecretSource::File(path.to_owned())
        .read()
        .map(|(secret, _digest)| secret)
}

pub(super) fn read_body(path: Option<&Path>) -> Result<Vec<u8>, String> {
    match path {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(buf)
        }
    }
}

pub(super) fn sign(secret_file: &Path, body_file: Option<&Path>) -> ExitCode {
    let secret = match read_secret(secret_file) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let body = match read_body(body_file) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let _ = writeln!(std::io::stdout(), "{}", signature::sign_hex(&body, &secret));
    ExitCode::SUCCESS
}
