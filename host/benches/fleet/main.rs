//! Footprint of many adapters in one host process: resident memory (RSS) per
//! idle adapter, total RSS, spawn and ready times, and aggregate echo
//! throughput, with every adapter on its own connection to one stub
//! connector.
//!
//! ```sh
//! cargo bench -p relay-host --bench fleet -- \
//!     [--adapters N] [--messages M] [--native] [--inproc-stub] [--cache-dir DIR] [--timeout SECS] [--settle-ms MS]
//! ```
//!
//! - `--adapters N` (default 1000): adapters, each with its own connection.
//! - `--messages M` (default 20): inbound messages per adapter in the echo
//!   phase; each is accepted and answered with a `send` of the same text.
//! - `--native`: `Plugin::native()` (the core without wasm) instead of the
//!   built-in component (`Plugin::new()`).
//! - `--inproc-stub`: run the stub connector inside this process. By default
//!   it runs in a child process (this binary with `--stub-child`) so the RSS
//!   figures hold the adapters only, not the connector's side of each
//!   connection; the child's RSS is reported separately.
//! - `--cache-dir DIR`: load the component through the compilation cache
//!   in DIR (`PluginOptions::cache_dir`): the second run skips the compile.
//! - `--timeout SECS` (default 60): limit of every phase; past it the run
//!   fails with exit code 1.
//! - `--settle-ms MS` (default 1000): pause after all adapters are ready
//!   before the "idle" RSS reading.
//!
//! RSS and its peak (VmRSS / VmHWM) come from `/proc/self/status` at process
//! start, after compiling the plugin, after starting the stub, when all
//! adapters are ready, after the settle pause, after the echo phase and after
//! shutdown. Per adapter = (RSS at the reading - RSS before the first spawn) / N.
//! Echo throughput = N * M / (last send result - first inject). Needs about
//! N + 128 open files (2N + 128 with `--inproc-stub`); exits 2 if the soft
//! limit is lower. Prints a table, then one JSON line with every figure last.

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use relay_host::{
    Adapter, AdapterConfig, AdapterHandle, Event, EventStream, Identity, Plugin, State,
};
use relay_stub::{Deliverable, StubConfig, StubConnector, WireMessage, events};
use serde_json::{Map, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

mod drive;
mod mem;
mod run;
mod stub;

use drive::*;
use mem::*;
use run::*;
use stub::*;

/// First argument of the child process that runs the stub connector.
const STUB_CHILD: &str = "--stub-child";
/// Memory mappings one component adapter holds (docs/operations.md).
const MAPS_PER_ADAPTER: u64 = 7;
/// The targets: per idle adapter (issue 20), and 1,000 adapters in total.
const TARGET_PER_ADAPTER_KIB: f64 = 200.0;
const TARGET_TOTAL_KIB: u64 = 512 * 1024;

const USAGE: &str = "usage: fleet [--adapters N] [--messages M] [--native] [--inproc-stub] [--cache-dir DIR] [--timeout SECS] [--settle-ms MS]";

#[derive(Debug, Clone)]
struct Opts {
    adapters: usize,
    messages: usize,
    native: bool,
    inproc_stub: bool,
    cache_dir: Option<std::path::PathBuf>,
    timeout: Duration,
    settle: Duration,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Opts> {
        let mut opts = Opts {
            adapters: 1000,
            messages: 20,
            native: false,
            inproc_stub: false,
            cache_dir: None,
            timeout: Duration::from_secs(60),
            settle: Duration::from_millis(1000),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> anyhow::Result<u64> {
                let v = args
                    .next()
                    .with_context(|| format!("{name} needs a value"))?;
                v.parse()
                    .with_context(|| format!("{name}: not a number: {v:?}"))
            };
            match arg.as_str() {
                "--adapters" => opts.adapters = usize::try_from(value(arg)?)?,
                "--messages" => opts.messages = usize::try_from(value(arg)?)?,
                "--timeout" => opts.timeout = Duration::from_secs(value(arg)?),
                "--settle-ms" => opts.settle = Duration::from_millis(value(arg)?),
                "--native" => opts.native = true,
                "--inproc-stub" => opts.inproc_stub = true,
                "--cache-dir" => {
                    let dir = args.next().context("--cache-dir needs a value")?;
                    opts.cache_dir = Some(dir.into());
                }
                // `cargo bench` passes it to every bench binary.
                "--bench" => {}
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}"),
            }
        }
        if opts.adapters == 0 {
            bail!("--adapters must be at least 1");
        }
        Ok(opts)
    }
}

fn main() -> ExitCode {
    let start = mem_of(None);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(STUB_CHILD) {
        return stub_child();
    }
    let opts = match Opts::parse(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("fleet: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let needed = opts.adapters as u64 * if opts.inproc_stub { 2 } else { 1 } + 128;
    match open_files_limit() {
        Some(limit) if limit < needed => {
            eprintln!(
                "fleet: the open-file limit is {limit}, {} adapters need about {needed}; \
                 run `ulimit -n {}` first",
                opts.adapters,
                needed.next_power_of_two().max(8192)
            );
            return ExitCode::from(2);
        }
        _ => {}
    }
    let maps_needed = opts.adapters as u64 * MAPS_PER_ADAPTER + 2048;
    match max_map_count() {
        Some(limit) if !opts.native && limit < maps_needed => {
            eprintln!(
                "fleet: vm.max_map_count is {limit}, {} adapters need about {maps_needed} \
                 memory mappings; raise it first (sysctl -w vm.max_map_count={})",
                opts.adapters,
                maps_needed.next_power_of_two().max(262_144)
            );
            return ExitCode::from(2);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(opts, start));
    // Blocking reads of a stuck stub child must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
