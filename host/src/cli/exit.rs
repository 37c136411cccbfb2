//! The exit codes of the `relay-host` binary.

use std::process::ExitCode;

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
