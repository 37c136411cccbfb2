//! stdout: JSON lines only, one object per line, flushed per line. Shared by
//! the event loop and the echo agent's send tasks; a line is written whole
//! under the lock, so lines never interleave.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

/// The process's stdout as a JSON-lines sink.
#[derive(Debug, Default)]
pub struct JsonLines {
    lock: Mutex<()>,
}

impl JsonLines {
    /// A sink on stdout.
    pub fn stdout() -> Self {
        Self::default()
    }

    /// Writes `value` as one line and flushes it. An error means stdout is
    /// gone (closed pipe, full disk).
    pub fn line(&self, value: &impl Serialize) -> std::io::Result<()> {
        let mut text = serde_json::to_string(value)?;
        text.push('\n');
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}
