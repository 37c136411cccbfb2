//! `relay-host`: run the Hermes relay adapter from the command line.
//!
//! * `relay-host run`: dial a connector and print every adapter event as one
//!   JSON line on stdout (logs go to stderr).
//! * `relay-host inspect`: the component's API version, WIT world, exports
//!   and imports.
//! * `relay-host config check`: the effective configuration, secret redacted.
//! * `relay-host demo`: a scripted walk through the protocol against the
//!   embedded stub connector.
//!
//! The contract (stdout lines, exit codes, environment) is in `docs/cli.md`
//! and `relay-host run --help`.

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    cli::main(args)
}
