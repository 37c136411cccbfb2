//! Logs go to stderr through a gate: [`final_line`] closes the gate and then
//! writes one last line, so nothing a background task logs can follow it
//! (the contract puts `relay-host: disabled: <message>` last).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::args::LogFormat;

/// `true` once [`final_line`] ran. Held while a log line is written, so
/// closing the gate waits for a write in progress.
static CLOSED: Mutex<bool> = Mutex::new(false);

/// Installs the stderr subscriber: `RUST_LOG` if set (and valid), else
/// `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(GatedStderr)
        .with_ansi(std::io::stderr().is_terminal() && format == LogFormat::Text);
    // A second init (only in tests of this module) keeps the first one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Closes the log gate and writes `relay-host: <message>` as the last line
/// on stderr.
pub fn final_line(message: &str) {
    let mut closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
    *closed = true;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "relay-host: {message}");
    let _ = stderr.flush();
}

/// A `relay-host: <message>` line on stderr, outside the log format (used
/// before exiting with a usage error).
pub fn error_line(message: &str) {
    let _guard = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "relay-host: {message}");
    let _ = stderr.flush();
}

struct GatedStderr;

struct GateWriter;

impl<'a> MakeWriter<'a> for GatedStderr {
    type Writer = GateWriter;

    fn make_writer(&'a self) -> Self::Writer {
        GateWriter
    }
}

impl Write for GateWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Ok(buf.len());
        }
        // One event arrives as one buffer; write it whole under the lock.
        std::io::stderr().lock().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
