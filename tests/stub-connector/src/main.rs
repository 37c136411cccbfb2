//! `stub-connector`: runs the stub relay connector on 127.0.0.1, prints its
//! dial URL as the first stdout line, and optionally runs a JSON-lines
//! script (see `--help`) so demos and manual runs share the test stub.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use relay_stub::{
    Clock, ReceivedFrame, SCRIPT_HELP, ScriptError, ScriptRunner, StubConfig, StubConnector,
};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

/// Stub relay connector (the connector side of the Hermes relay protocol)
/// for tests, demos and manual runs.
///
/// Prints the dial URL (ws://127.0.0.1:PORT/relay) as the first line of
/// stdout. Without --script it serves until Ctrl-C. With --script it runs
/// the script, prints a JSON report line and exits (0 = every line passed,
/// 1 = a line failed), unless --keep-running is given.
#[derive(Debug, Parser)]
#[command(name = "stub-connector", version, after_long_help = SCRIPT_HELP)]
struct Cli {
    /// TCP port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Verify the gateway's bearer token with this secret (repeat for a
    /// rotation list, primary first). Without it, upgrades are not verified.
    #[arg(long = "secret", value_name = "S")]
    secrets: Vec<String>,
    /// Freeze the verification clock at this unix time (default: system time).
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<u64>,
    /// How many hellos complete a handshake (= the gateway's identity count).
    #[arg(long, default_value_t = 1)]
    hellos: usize,
    /// JSON-lines script to run; `-` reads stdin line by line as it arrives.
    #[arg(long, value_name = "FILE|-")]
    script: Option<String>,
    /// Print every frame received as {"event":"frame","conn":N,"seq":N,"raw":"..."}.
    #[arg(long)]
    print_frames: bool,
    /// Keep serving after the script until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

/// Prints frames not printed yet; shared by the background printer and the
/// final flush so no frame is printed twice or lost at exit.
#[derive(Clone)]
struct FramePrinter {
    printed: Arc<Mutex<usize>>,
}

impl FramePrinter {
    fn flush(&self, stub: &StubConnector) {
        let mut printed = self.printed.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh: Vec<ReceivedFrame> =
            stub.with_state(|s| s.frames.iter().skip(*printed).cloned().collect());
        for frame in &fresh {
            emit(
                &json!({"event": "frame", "conn": frame.conn, "seq": frame.seq, "raw": frame.raw}),
            );
        }
        *printed += fresh.len();
    }

    async fn run(self, stub: StubConnector) {
        // Ends with the stub; each pass waits (bounded) for new frames.
        while !stub.is_shut_down() {
            let seen = *self.printed.lock().unwrap_or_else(PoisonError::into_inner);
            let more = stub
                .wait_until(|s| s.frames.len() > seen, Duration::from_secs(1))
                .await;
            if more.is_ok() {
                self.flush(&stub);
            }
        }
    }
}

fn emit(line: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (reader gone) is not worth crashing the stub over.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stub-connector: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = StubConfig {
        port: cli.port,
        secrets: cli.secrets,
        ..StubConfig::default()
    }
    .with_replay_after_hellos(cli.hellos);
    if let Some(now) = cli.now {
        config = config.with_clock(Clock::Fixed(now));
    }
    let stub = StubConnector::start(config)
        .await
        .context("binding 127.0.0.1")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", stub.url())?;
        out.flush()?;
    }
    let printer = FramePrinter {
        printed: Arc::new(Mutex::new(0)),
    };
    if cli.print_frames {
        tokio::spawn(printer.clone().run(stub.clone()));
    }

    let mut code = ExitCode::SUCCESS;
    if let Some(path) = &cli.script {
        let outcome = run_script_source(&stub, path).await?;
        if cli.print_frames {
            printer.flush(&stub);
        }
        match outcome {
            Ok(report) => emit(&json!({
                "event": "script_done", "ok": true, "steps": report.steps,
                "actions": report.actions, "expectations": report.expectations,
                "printed": report.printed,
            })),
            Err(error) => {
                emit(&json!({
                    "event": "script_failed", "ok": false, "line": error.line,
                    "error": error.message,
                }));
                code = ExitCode::FAILURE;
            }
        }
        if !cli.keep_running {
            stub.shutdown();
            return Ok(code);
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    stub.shutdown();
    Ok(code)
}

/// Runs the script from a file or stdin; the outer error is an I/O failure,
/// the inner one a failing script line.
async fn run_script_source(
    stub: &StubConnector,
    path: &str,
) -> anyhow::Result<Result<relay_stub::Report, ScriptError>> {
    let mut runner = ScriptRunner::new(stub);
    if path == "-" {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        // Bounded by the end of stdin.
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            if let Err(error) = runner.run_line(&line).await {
                return Ok(Err(error));
            }
        }
    } else {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        for line in text.lines() {
            if let Err(error) = runner.run_line(line).await {
                return Ok(Err(error));
            }
        }
    }
    Ok(Ok(runner.finish()))
}
