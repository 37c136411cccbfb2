//! The exit codes of the `relay-host` binary.

use std::process::ExitCode;
use std::time::Duration;

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, or stopped by SIGINT/SIGTERM.
    Ok = 0,
    /// A fatal condition ended the adapter (bad component, stopped
    /// unexpectedly, stdout gone).
    Fatal = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// Relay disabled: terminal credential revocation.
    Disabled = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

// How long a stop may take (shared by the `print`/`echo` loop and the
// stdio bridge).
/// Budget of the signal-initiated shutdown (going idle, drain, close) and of
/// printing what is still in flight.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4500);
/// Budget of the courtesy shutdown before a fatal exit.
pub const FATAL_SHUTDOWN_BUDGET: Duration = Duration::from_secs(1);
