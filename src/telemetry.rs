//! Logging with tracing: JSON lines (one object per event, for log
//! pipelines) or a human format, filtered by `log.level`. Everything goes
//! to stdout; `main` prints start-up failures to stderr before this exists.
//!
//! With `log.flush = "idle"` (the default) lines are gathered in memory
//! while the runtime has work and written to stdout in one `write` when a
//! runtime thread is about to park ([`flush`] is the runtime's
//! `on_thread_park` hook), when 64 KiB are waiting, before the process exits
//! and on a panic. Under load that turns one system call per request into
//! one per busy period; when idle a line is written as soon as its request
//! is answered. The price: a process killed with SIGKILL (or by the OOM
//! killer) loses the lines of the requests it answered since it last went
//! idle. `log.flush = "line"` writes every line as it is logged.

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogConfig;

/// Lines logged but not yet written to stdout.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Above this many waiting bytes a line is written at once, busy or not.
const FLUSH_AT: usize = 64 * 1024;

/// Installs the global subscriber. `log.level` was validated beforehand; a
/// filter that still fails to parse falls back to `info`.
pub fn init(config: &LogConfig) {
    if config.flush == "idle" {
        init_with(config, || Gathered);
        flush_on_panic();
    } else {
        init_with(config, io::stdout);
    }
}

fn init_with<W>(config: &LogConfig, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
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

/// Writes every gathered line to stdout. Cheap when nothing is waiting.
pub fn flush() {
    write_out(&mut pending());
}

fn pending() -> MutexGuard<'static, Vec<u8>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_out(lines: &mut Vec<u8>) {
    if !lines.is_empty() {
        write_to(lines, &mut io::stdout().lock());
    }
}

fn write_to(lines: &mut Vec<u8>, out: &mut impl Write) {
    // Nowhere to report a failing stdout; the lines are dropped either way
    // so a broken pipe cannot make the buffer grow without bound.
    let _ = out.write_all(lines).and_then(|()| out.flush());
    lines.clear();
    if lines.capacity() > 4 * FLUSH_AT {
        lines.shrink_to(FLUSH_AT);
    }
}

/// Appends one formatted line; true when enough is waiting to write now.
fn gather(lines: &mut Vec<u8>, line: &[u8]) -> bool {
    lines.extend_from_slice(line);
    lines.len() >= FLUSH_AT
}

/// A panic's own message goes to stderr; write the lines logged before it
/// first, so the log shows what led up to it.
fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // `try_lock`: the panic may have happened while the lines were held.
        if let Ok(mut lines) = PENDING.try_lock() {
            write_out(&mut lines);
        }
        previous(info);
    }));
}

/// The `MakeWriter` for `log.flush = "idle"`: each formatted line is
/// appended to [`PENDING`].
struct Gathered;

impl Write for Gathered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut lines = pending();
        if gather(&mut lines, buf) {
            write_out(&mut lines);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_until_written_and_a_full_buffer_asks_to_be_written() {
        let mut lines = Vec::new();
        let line = b"{\"message\":\"request\"}\n";
        assert!(!gather(&mut lines, line));
        assert!(!gather(&mut lines, line));
        let mut out = Vec::new();
        write_to(&mut lines, &mut out);
        assert_eq!(out, [&line[..], &line[..]].concat());
        assert!(lines.is_empty());
        assert!(gather(&mut lines, &vec![b'x'; FLUSH_AT]));
    }

    #[test]
    fn a_huge_burst_does_not_keep_its_memory() {
        let mut lines = Vec::new();
        gather(&mut lines, &vec![b'x'; 8 * FLUSH_AT]);
        write_to(&mut lines, &mut io::sink());
        assert!(lines.is_empty() && lines.capacity() <= FLUSH_AT);
    }
}
