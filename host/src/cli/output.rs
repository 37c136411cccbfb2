//! stdout: JSON lines only, one object per line. Lines are collected and
//! written together when the event loop has nothing more ready (one write
//! per burst instead of one per line); the loop flushes before it waits, so
//! a reader never waits on a buffered line.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

/// Flush early past this many buffered bytes.
const FLUSH_AT_BYTES: usize = 64 * 1024;

/// The process's stdout as a JSON-lines sink.
#[derive(Debug, Default)]
pub struct JsonLines {
    buf: Mutex<Vec<u8>>,
}

impl JsonLines {
    /// A sink on stdout.
    pub fn stdout() -> Self {
        Self::default()
    }

    /// Adds `value` as one line. An error means stdout is gone (closed pipe,
    /// full disk) when a large burst had to be written early.
    pub fn line(&self, value: &impl Serialize) -> std::io::Result<()> {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_writer(&mut *buf, value)?;
        buf.push(b'\n');
        if buf.len() >= FLUSH_AT_BYTES {
            return write_out(&mut buf);
        }
        Ok(())
    }

    /// Writes every buffered line. An error means stdout is gone.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        if buf.is_empty() {
            return Ok(());
        }
        write_out(&mut buf)
    }
}

fn write_out(buf: &mut Vec<u8>) -> std::io::Result<()> {
    let result = {
        let mut out = std::io::stdout().lock();
        out.write_all(buf).and_then(|()| out.flush())
    };
    buf.clear();
    result
}
