//! `hookgate check`: load and validate everything `serve` would, open the
//! store, print the effective config (secrets redacted).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_CONFIG, fail, load};
use crate::verify::secret::Secret;

pub(super) fn check(path: Option<&Path>) -> ExitCode {
    let loaded = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let toml = match toml::to_string_pretty(&*loaded.config) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot print the config: {e}")),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# effective configuration (defaults, file, environment)\n{toml}"
    );
    let _ = writeln!(out, "# loaded material");
    match &loaded.tls.files {
        Some((cert, _)) => {
            let _ = writeln!(
                out,
                "# tls: certificate from {} (key matches)",
                cert.display()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# tls: self-signed development certificate (never in production)"
            );
        }
    }
    if let Some(token) = &loaded.admin_token {
        let _ = writeln!(
            out,
            "# admin: console actions need the bearer token [redacted] from {}",
            token.path().display()
        );
    }
    for route in loaded.routes.iter() {
        let secrets = route.secrets();
        let origins: Vec<&str> = secrets.secrets.iter().map(Secret::origin).collect();
        let _ = writeln!(
            out,
            "# route {} {} -> {}: {} secret(s) [redacted] from {}",
            route.name,
            route.path,
            route.upstream_path,
            secrets.secrets.len(),
            origins.join(", ")
        );
    }
    if let Some(store) = &loaded.config.store {
        // Opening it creates and migrates the schema, as serve would.
        let opened = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(crate::store::Store::open(store, None))
                    .map_err(|e| e.to_string())
            });
        match opened {
            Ok(_) => {
                let _ = writeln!(out, "# store: {} opened", store.engine.as_str());
            }
            Err(e) => {
                drop(out);
                let _ = writeln!(std::io::stderr(), "hookgate: store: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let _ = writeln!(out, "# configuration OK");
    ExitCode::SUCCESS
}
