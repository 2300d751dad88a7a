//! Logging with tracing: JSON lines (one object per event, for log
//! pipelines) or a human format, filtered by `log.level`. Everything goes
//! to stdout; `main` prints start-up failures to stderr before this exists.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

use crate::config::LogConfig;

/// Installs the global subscriber. `log.level` was validated beforehand; a
/// filter that still fails to parse falls back to `info`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let result = if config.format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    };
    // Only fails if a subscriber is already installed (tests): keep that one.
    drop(result);
}
