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

use std::fmt::{self as stdfmt, Write as _};
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFlush, LogFormat};

/// Lines logged but not yet written to stdout.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Above this many waiting bytes a line is written at once, busy or not.
const FLUSH_AT: usize = 64 * 1024;

/// Installs the global subscriber. `log.level` was validated beforehand; a
/// filter that still fails to parse falls back to `info`.
pub fn init(config: &LogConfig) {
    if config.flush == LogFlush::Idle {
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
    let builder = fmt::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let result = if config.format == LogFormat::Pretty {
        builder.try_init()
    } else {
        builder.event_format(JsonLine).try_init()
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

/// `log.format = "json"`: one object per event, written straight into the
/// line buffer: `{"timestamp":"…","level":"INFO","message":"…",<fields>}`.
/// The same shape as tracing-subscriber's flattened JSON format, without
/// its per-event `String` and serializer layers (it was 6% of hookgate's
/// CPU under load: `benches/RESULTS.md`). Strings are escaped as RFC 8259
/// requires; a non-finite float is `null`.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> stdfmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut fields = JsonFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("}\n")
    }
}

/// Appends each field as `,"name":value`.
struct JsonFields<'a, W> {
    out: &'a mut W,
    result: stdfmt::Result,
}

impl<W: stdfmt::Write> JsonFields<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> stdfmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .out
                .write_str(",\"")
                .and_then(|()| escape(self.out, field.name()))
                .and_then(|()| self.out.write_str("\":"))
                .and_then(|()| value(self.out));
        }
    }

    fn string(&mut self, field: &Field, value: stdfmt::Arguments<'_>) {
        self.field(field, |out| {
            out.write_char('"')?;
            Escaping(&mut *out).write_fmt(value)?;
            out.write_char('"')
        });
    }
}

impl<W: stdfmt::Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| {
            out.write_char('"')?;
            escape(out, value)?;
            out.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn stdfmt::Debug) {
        self.string(field, format_args!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value}"));
        } else {
            self.field(field, |out| out.write_str("null"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }
}

/// Writes `s` as the inside of a JSON string: `"`, `\` and the control
/// characters U+0000..U+001F escaped, everything else as is.
fn escape(out: &mut impl stdfmt::Write, s: &str) -> stdfmt::Result {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Only ASCII bytes end a plain run, so `i` is a char boundary.
        out.write_str(&s[plain..i])?;
        if short.is_empty() {
            write!(out, "\\u{b:04x}")?;
        } else {
            out.write_str(short)?;
        }
        plain = i + 1;
    }
    out.write_str(&s[plain..])
}

/// A `fmt::Write` that escapes what passes through it (for `Debug` and
/// `Display` values, formatted without an intermediate `String`).
struct Escaping<'a, W>(&'a mut W);

impl<W: stdfmt::Write> stdfmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> stdfmt::Result {
        escape(self.0, s)
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

    #[test]
    fn escaping_matches_serde_json() {
        let mut all = String::new();
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            all.push(char::from_u32(c).unwrap());
        }
        all.push_str("tail \"quoted\" back\\slash");
        let mut mine = String::from("\"");
        escape(&mut mine, &all).unwrap();
        mine.push('"');
        let back: String = serde_json::from_str(&mine).unwrap();
        assert_eq!(back, all);
        assert_eq!(mine, serde_json::to_string(&all).unwrap());
    }

    /// Lines written by the JSON formatter: one object per line, every
    /// field at the top level with its JSON type.
    #[test]
    fn json_lines_carry_every_field_with_its_type() {
        use std::sync::Arc;
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = fmt::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_writer(move || writer.clone())
            .event_format(JsonLine)
            .finish();
        let peer: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                request_id = "a\"b\\c\nd\u{1}",
                status = 200u16,
                delta = -3i64,
                duration_ms = 1.25,
                nan = f64::NAN,
                shadow = false,
                peer = %peer,
                reason = ?"dbg",
                "request {}", 7
            );
            tracing::warn!("second");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "request 7");
        assert_eq!(first["request_id"], "a\"b\\c\nd\u{1}");
        assert_eq!(first["status"], 200);
        assert_eq!(first["delta"], -3);
        assert_eq!(first["duration_ms"], 1.25);
        assert!(first["nan"].is_null());
        assert_eq!(first["shadow"], false);
        assert_eq!(first["peer"], "127.0.0.1:4000");
        assert_eq!(first["reason"], "\"dbg\"");
        let ts = first["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "second");
    }
}
