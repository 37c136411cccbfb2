//! Footprint of many adapters in one host process: resident memory (RSS) per
//! idle adapter, total RSS, spawn and ready times, and aggregate echo
//! throughput, with every adapter on its own connection to one stub
//! connector.
//!
//! ```sh
//! cargo run --release -p relay-host --example fleet -- \
//!     [--adapters N] [--messages M] [--native] [--inproc-stub] [--timeout SECS] [--settle-ms MS]
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

/// First argument of the child process that runs the stub connector.
const STUB_CHILD: &str = "--stub-child";
/// The targets of the issue: per idle adapter, and 1,000 adapters in total.
const TARGET_PER_ADAPTER_KIB: f64 = 256.0;
const TARGET_TOTAL_KIB: u64 = 512 * 1024;

const USAGE: &str = "usage: fleet [--adapters N] [--messages M] [--native] [--inproc-stub] [--timeout SECS] [--settle-ms MS]";

#[derive(Debug, Clone)]
struct Opts {
    adapters: usize,
    messages: usize,
    native: bool,
    inproc_stub: bool,
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

// ----- memory -------------------------------------------------------------

/// VmRSS and VmHWM in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
}

/// `/proc/self/status` (or `/proc/PID/status`).
fn mem_of(pid: Option<u32>) -> Mem {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
    }
}

/// The soft `Max open files` limit, if known and finite.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// ----- helpers --------------------------------------------------------------

async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ----- the stub connector -------------------------------------------------------

/// Waits until `n` open connections completed their hello handshake.
async fn stub_wait_handshakes(
    stub: &StubConnector,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    stub.wait_until(
        |s| s.handshaken().filter(|c| c.is_open()).count() >= n,
        limit,
    )
    .await
    .map_err(|e| anyhow!("{e}"))
}

/// Sends `m` inbound DMs on every open handshaken connection, addressed to
/// the chat named after the connection's bot id (so each adapter can check
/// it got its own). Returns the connections served and how long the writes
/// took.
async fn stub_inject(
    stub: &StubConnector,
    m: usize,
    limit: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let targets: Vec<(usize, String)> = stub.with_state(|s| {
        s.handshaken()
            .filter(|c| c.is_open())
            .map(|c| {
                let bot = c.hellos.first().map(|h| h.bot_id.clone());
                (c.index, bot.unwrap_or_default())
            })
            .collect()
    });
    let mut writes = JoinSet::new();
    for (conn, bot) in &targets {
        let (stub, conn, bot) = (stub.clone(), *conn, bot.clone());
        writes.spawn(async move {
            let messages = (0..m)
                .map(|k| {
                    let event = events::dm("discord", &bot, "u1", &format!("echo {k} {bot}"));
                    WireMessage::Text(format!("{}\n", Deliverable::Inbound(event).to_frame(None)))
                })
                .collect();
            stub.send_to(Some(conn), messages).await
        });
    }
    within("the stub's inbound writes", limit, async {
        while let Some(done) = writes.join_next().await {
            done?.map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
    .await?;
    Ok((targets.len(), started.elapsed()))
}

/// `send` requests the stub received so far.
fn stub_sends(stub: &StubConnector) -> usize {
    stub.with_state(|s| s.frames.iter().filter(|f| f.op() == Some("send")).count())
}

/// The `--stub-child` process: a stub connector driven by one-line commands
/// on stdin, each answered with one `ok ...` or `err ...` line on stdout.
/// Ends at the end of stdin.
fn stub_child() -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let stub = rt.block_on(StubConnector::start(StubConfig::default()))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "url {}", stub.url())?;
        out.flush()?;
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| -> anyhow::Result<u64> {
                Ok(words.get(i).context("missing argument")?.parse()?)
            };
            let reply: anyhow::Result<String> = match words.first().copied() {
                Some("handshakes") => num(1).and_then(|n| {
                    let limit = Duration::from_millis(num(2)?);
                    rt.block_on(stub_wait_handshakes(&stub, n as usize, limit))?;
                    Ok(String::new())
                }),
                Some("inject") => num(1).and_then(|m| {
                    let limit = Duration::from_millis(num(2)?);
                    let (conns, took) = rt.block_on(stub_inject(&stub, m as usize, limit))?;
                    Ok(format!("{conns} {}", took.as_micros()))
                }),
                Some("sends") => Ok(stub_sends(&stub).to_string()),
                _ => Err(anyhow!("unknown command {line:?}")),
            };
            match reply {
                Ok(text) => writeln!(out, "ok {text}")?,
                Err(e) => writeln!(out, "err {}", format!("{e:#}").replace('\n', " "))?,
            }
            out.flush()?;
        }
        stub.shutdown();
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet stub child: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type ChildIo = Arc<Mutex<Option<(ChildStdin, BufReader<ChildStdout>)>>>;

/// The stub connector in a child process (this binary with `--stub-child`).
struct ChildStub {
    child: Child,
    io: ChildIo,
}

impl ChildStub {
    async fn start(limit: Duration) -> anyhow::Result<(ChildStub, String)> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut child = Command::new(exe)
            .arg(STUB_CHILD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the stub child process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let stub = ChildStub {
            child,
            io: Arc::new(Mutex::new(Some((stdin, stdout)))),
        };
        let first = stub.exchange(None, limit).await?;
        let url = first
            .strip_prefix("url ")
            .with_context(|| format!("the stub child said {first:?}"))?
            .to_string();
        Ok((stub, url))
    }

    /// Writes `command` (if any) and reads one answer line, bounded.
    async fn exchange(&self, command: Option<String>, limit: Duration) -> anyhow::Result<String> {
        let io = Arc::clone(&self.io);
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let mut io = io.lock().unwrap_or_else(|e| e.into_inner());
            let (stdin, stdout) = io.as_mut().context("the stub child is closed")?;
            if let Some(command) = command {
                writeln!(stdin, "{command}")?;
                stdin.flush()?;
            }
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                bail!("the stub child exited");
            }
            Ok(line.trim_end().to_string())
        });
        within("the stub child", limit, async { task.await? }).await
    }

    /// One command; its `ok` text. The child gets `limit` and the host waits
    /// a little longer, so a slow command fails with the child's message.
    async fn request(&self, command: &str, limit: Duration) -> anyhow::Result<String> {
        let line = self
            .exchange(
                Some(format!("{command} {}", limit.as_millis())),
                limit + Duration::from_secs(5),
            )
            .await?;
        if let Some(text) = line.strip_prefix("ok") {
            Ok(text.trim().to_string())
        } else {
            bail!("stub child: {command}: {line}")
        }
    }

    /// Closes its stdin and waits (bounded) for it to exit.
    async fn finish(&mut self) {
        if let Ok(mut io) = self.io.try_lock() {
            io.take();
        }
        for _ in 0..50 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ChildStub {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Stub {
    Child(ChildStub),
    InProc(StubConnector),
}

impl Stub {
    async fn wait_handshakes(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        match self {
            Stub::Child(c) => c.request(&format!("handshakes {n}"), limit).await.map(drop),
            Stub::InProc(s) => stub_wait_handshakes(s, n, limit).await,
        }
    }

    async fn inject(&self, m: usize, limit: Duration) -> anyhow::Result<(usize, Duration)> {
        match self {
            Stub::Child(c) => {
                let text = c.request(&format!("inject {m}"), limit).await?;
                let mut words = text.split_whitespace().map(str::parse::<u64>);
                match (words.next(), words.next()) {
                    (Some(Ok(conns)), Some(Ok(us))) => {
                        Ok((conns as usize, Duration::from_micros(us)))
                    }
                    _ => bail!("stub child: inject answered {text:?}"),
                }
            }
            Stub::InProc(s) => stub_inject(s, m, limit).await,
        }
    }

    async fn sends(&self, limit: Duration) -> anyhow::Result<usize> {
        match self {
            Stub::Child(c) => Ok(c.request("sends", limit).await?.parse()?),
            Stub::InProc(s) => Ok(stub_sends(s)),
        }
    }

    /// The child's memory; `None` in process.
    fn mem(&self) -> Option<Mem> {
        match self {
            Stub::Child(c) => Some(mem_of(Some(c.child.id()))),
            Stub::InProc(_) => None,
        }
    }
}

// ----- the adapters --------------------------------------------------------------

/// What the adapter tasks report and count.
struct Fleet {
    ready: mpsc::UnboundedSender<(usize, Result<Instant, String>)>,
    received: AtomicU64,
    misrouted: AtomicU64,
    echo_ok: AtomicU64,
    echo_failed: AtomicU64,
    /// Echo results awaited in this phase (N * M).
    echo_target: AtomicU64,
    echo_last: OnceLock<Instant>,
    echo_done: Notify,
    first_echo_error: OnceLock<String>,
    /// Left `ready` after having been ready (reconnects, fatal errors),
    /// before the shutdown phase.
    dropped: AtomicU64,
    /// `reconnecting` before the first `ready` (failed first dials).
    redials: AtomicU64,
    shutting_down: AtomicBool,
}

impl Fleet {
    fn echoed(&self, ok: bool, error: Option<String>) {
        if ok {
            self.echo_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.echo_failed.fetch_add(1, Ordering::Relaxed);
            if let Some(error) = error {
                let _ = self.first_echo_error.set(error);
            }
        }
        let done = self.echo_ok.load(Ordering::Relaxed) + self.echo_failed.load(Ordering::Relaxed);
        if done >= self.echo_target.load(Ordering::Relaxed)
            && self.echo_last.set(Instant::now()).is_ok()
        {
            self.echo_done.notify_one();
        }
    }
}

/// One adapter's event loop: reports `ready` once, echoes every message.
async fn drive(i: usize, handle: AdapterHandle, mut events: EventStream, fleet: Arc<Fleet>) {
    let chat = bot_id(i);
    let mut was_ready = false;
    while let Some(event) = events.next().await {
        match event {
            Event::State { state, detail } => {
                if state == State::Ready && !was_ready {
                    was_ready = true;
                    let _ = fleet.ready.send((i, Ok(Instant::now())));
                } else if state != State::Ready
                    && was_ready
                    && !fleet.shutting_down.load(Ordering::Relaxed)
                {
                    fleet.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing_note(i, &format!("left ready: {state} {detail}"));
                } else if state == State::Reconnecting && !was_ready {
                    fleet.redials.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Message(message) => {
                fleet.received.fetch_add(1, Ordering::Relaxed);
                if message.chat_id != chat {
                    fleet.misrouted.fetch_add(1, Ordering::Relaxed);
                }
                let (chat_id, text) = (message.chat_id.clone(), message.text.clone());
                message.accept();
                let (handle, fleet) = (handle.clone(), Arc::clone(&fleet));
                tokio::spawn(async move {
                    let result = handle.send(chat_id, text, None, Map::new(), None).await;
                    fleet.echoed(result.success, result.error);
                });
            }
            Event::Fatal {
                code,
                message,
                retryable,
            } => {
                if !was_ready {
                    let _ = fleet.ready.send((
                        i,
                        Err(format!("fatal {code} (retryable {retryable}): {message}")),
                    ));
                } else if !fleet.shutting_down.load(Ordering::Relaxed) {
                    fleet.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing_note(i, &format!("fatal {code}: {message}"));
                }
            }
            Event::Interrupt { .. } => {}
        }
    }
    if !was_ready {
        let _ = fleet
            .ready
            .send((i, Err("event stream ended before ready".into())));
    }
}

/// Unexpected but non-fatal conditions go to stderr (at most a few).
fn tracing_note(i: usize, what: &str) {
    static NOTES: AtomicU64 = AtomicU64::new(0);
    if NOTES.fetch_add(1, Ordering::Relaxed) < 10 {
        eprintln!("fleet: adapter {i}: {what}");
    }
}

fn bot_id(i: usize) -> String {
    format!("fleet-{i}")
}

// ----- the run ---------------------------------------------------------------------

async fn run(opts: Opts, start: Mem) -> anyhow::Result<()> {
    let n = opts.adapters;
    let limit = opts.timeout;

    let t = Instant::now();
    let plugin = if opts.native {
        Plugin::native()?
    } else {
        Plugin::new()?
    };
    let compile = t.elapsed();
    let after_plugin = mem_of(None);

    let (stub, url) = if opts.inproc_stub {
        let stub = StubConnector::start(StubConfig::default()).await?;
        let url = stub.url();
        (Stub::InProc(stub), url)
    } else {
        let (child, url) = ChildStub::start(limit).await?;
        (Stub::Child(child), url)
    };
    let after_stub = mem_of(None);

    // Spawn all, one after another (as a gateway would); each gets a task
    // that reports its first `ready`.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let fleet = Arc::new(Fleet {
        ready: ready_tx,
        received: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        echo_ok: AtomicU64::new(0),
        echo_failed: AtomicU64::new(0),
        echo_target: AtomicU64::new(u64::MAX),
        echo_last: OnceLock::new(),
        echo_done: Notify::new(),
        first_echo_error: OnceLock::new(),
        dropped: AtomicU64::new(0),
        redials: AtomicU64::new(0),
        shutting_down: AtomicBool::new(false),
    });
    let mut handles = Vec::with_capacity(n);
    let mut spawned_at = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    let spawn_start = Instant::now();
    within("spawning the adapters", limit, async {
        for i in 0..n {
            let mut config = AdapterConfig::new(url.clone());
            config.identities = vec![Identity::new("discord", bot_id(i))];
            spawned_at.push(Instant::now());
            let (handle, events) = Adapter::spawn(&plugin, config)
                .await
                .with_context(|| format!("spawning adapter {i}"))?;
            tasks.spawn(drive(i, handle.clone(), events, Arc::clone(&fleet)));
            handles.push(handle);
        }
        Ok(())
    })
    .await?;
    let spawn_all = spawn_start.elapsed();

    let mut readies = Vec::with_capacity(n);
    let mut last_ready = spawn_start;
    within(&format!("{n} adapters to be ready"), limit, async {
        while readies.len() < n {
            match ready_rx.recv().await {
                Some((i, Ok(at))) => {
                    readies.push(at - spawned_at[i]);
                    last_ready = last_ready.max(at);
                }
                Some((i, Err(why))) => bail!("adapter {i} never got ready: {why}"),
                None => bail!("the adapter tasks ended"),
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("{} of {n} ready", readies.len()))?;
    let all_ready = last_ready - spawn_start;
    let at_ready = mem_of(None);
    readies.sort();

    tokio::time::sleep(opts.settle).await;
    let settled = mem_of(None);
    let stub_idle = stub.mem();
    let health = within("a health snapshot", limit, async {
        Ok(handles[0].health().await?)
    })
    .await?;

    // Echo: the stub writes M messages on every connection; every adapter
    // accepts each and sends it back.
    stub.wait_handshakes(n, limit).await?;
    let total = (n * opts.messages) as u64;
    fleet.echo_target.store(total, Ordering::Relaxed);
    let echo_start = Instant::now();
    let (echo_secs, inject) = if total == 0 {
        (0.0, (0, Duration::ZERO))
    } else {
        let what = format!("{total} echo results");
        let wait_echo = within(&what, limit, async {
            fleet.echo_done.notified().await;
            Ok(())
        });
        let (injected, echoed) = tokio::join!(stub.inject(opts.messages, limit), wait_echo);
        let injected = injected?;
        if injected.0 != n {
            bail!("the stub saw {} open connections, expected {n}", injected.0);
        }
        echoed.with_context(|| {
            format!(
                "{} sent, {} failed",
                fleet.echo_ok.load(Ordering::Relaxed),
                fleet.echo_failed.load(Ordering::Relaxed)
            )
        })?;
        let last = fleet.echo_last.get().copied().unwrap_or_else(Instant::now);
        ((last - echo_start).as_secs_f64(), injected)
    };
    let echo_ok = fleet.echo_ok.load(Ordering::Relaxed);
    let echo_failed = fleet.echo_failed.load(Ordering::Relaxed);
    let stub_sends = stub.sends(limit).await?;
    let after_echo = mem_of(None);
    let stub_after_echo = stub.mem();

    // Shut everything down, concurrently and bounded.
    fleet.shutting_down.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let mut shutdowns = JoinSet::new();
    for handle in handles.drain(..) {
        shutdowns.spawn(async move { handle.shutdown().await });
    }
    within("the adapters to shut down", limit, async {
        while let Some(done) = shutdowns.join_next().await {
            done??;
        }
        while let Some(done) = tasks.join_next().await {
            done?;
        }
        Ok(())
    })
    .await?;
    let shutdown = t.elapsed();
    let after_shutdown = mem_of(None);
    let stub_kind = match stub {
        Stub::Child(mut child) => {
            child.finish().await;
            "child process"
        }
        Stub::InProc(stub) => {
            stub.shutdown();
            "in process"
        }
    };

    // Report.
    let base = after_stub.rss as f64;
    let per = |m: Mem| (m.rss as f64 - base) / n as f64;
    let msgs_per_s = if echo_secs > 0.0 {
        echo_ok as f64 / echo_secs
    } else {
        0.0
    };
    let misrouted = fleet.misrouted.load(Ordering::Relaxed);
    let received = fleet.received.load(Ordering::Relaxed);
    let dropped = fleet.dropped.load(Ordering::Relaxed);
    let redials = fleet.redials.load(Ordering::Relaxed);
    let plugin_kind = if opts.native { "native" } else { "wasm" };
    let per_settled = per(settled);
    let mut table = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(table, "{k:<38} {v}");
    };
    row(
        "adapters x messages",
        format!("{n} x {} ({plugin_kind}, stub {stub_kind})", opts.messages),
    );
    row("plugin compile", format!("{:.1} ms", ms(compile)));
    row("RSS at start", format!("{} KiB", start.rss));
    row("RSS after plugin", format!("{} KiB", after_plugin.rss));
    row(
        "RSS after stub (baseline)",
        format!("{} KiB", after_stub.rss),
    );
    row(
        "RSS all ready",
        format!("{} KiB ({:.1} KiB/adapter)", at_ready.rss, per(at_ready)),
    );
    row(
        "RSS settled (idle)",
        format!(
            "{} KiB = {:.1} MiB ({per_settled:.1} KiB/adapter)",
            settled.rss,
            settled.rss as f64 / 1024.0
        ),
    );
    row(
        "RSS after echo",
        format!(
            "{} KiB ({:.1} KiB/adapter)",
            after_echo.rss,
            per(after_echo)
        ),
    );
    row("RSS after shutdown", format!("{} KiB", after_shutdown.rss));
    row("peak RSS (VmHWM)", format!("{} KiB", after_shutdown.hwm));
    if let (Some(idle), Some(echo)) = (stub_idle, stub_after_echo) {
        row(
            "stub child RSS idle / after echo",
            format!("{} / {} KiB", idle.rss, echo.rss),
        );
    }
    row(
        "guest linear memory (adapter 0)",
        format!("{} KiB", health.guest_memory_bytes / 1024),
    );
    row(
        "spawn all (sequential)",
        format!(
            "{:.1} ms ({:.3} ms each)",
            ms(spawn_all),
            ms(spawn_all) / n as f64
        ),
    );
    row(
        "first spawn to all ready",
        format!("{:.1} ms", ms(all_ready)),
    );
    row(
        "spawn to ready p50 / p90 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} ms",
            ms(percentile(&readies, 0.5)),
            ms(percentile(&readies, 0.9)),
            ms(percentile(&readies, 0.99)),
            ms(percentile(&readies, 1.0))
        ),
    );
    row(
        "echo",
        format!(
            "{echo_ok} ok, {echo_failed} failed in {:.1} ms = {msgs_per_s:.0} msgs/s",
            echo_secs * 1e3
        ),
    );
    row(
        "stub inbound writes done after",
        format!("{:.1} ms", ms(inject.1)),
    );
    row(
        "received / misrouted / stub saw sends",
        format!("{received} / {misrouted} / {stub_sends}"),
    );
    row("redials before ready", redials.to_string());
    row("left ready during the run", dropped.to_string());
    row("shutdown all", format!("{:.1} ms", ms(shutdown)));
    row(
        "target <= 256 KiB per idle adapter",
        if per_settled <= TARGET_PER_ADAPTER_KIB {
            "met"
        } else {
            "NOT met"
        }
        .into(),
    );
    row(
        "target 1,000 adapters < 512 MiB",
        match (n, settled.rss < TARGET_TOTAL_KIB) {
            (1000, true) => "met".into(),
            (1000, false) => "NOT met".into(),
            _ => format!("n/a (N = {n})"),
        },
    );
    print!("{table}");
    if let Some(error) = fleet.first_echo_error.get() {
        eprintln!("fleet: first echo failure: {error}");
    }
    let summary = json!({
        "bench": "fleet",
        "adapters": n,
        "messages_per_adapter": opts.messages,
        "plugin": plugin_kind,
        "stub": if opts.inproc_stub { "inproc" } else { "child" },
        "compile_ms": ms(compile),
        "rss_kib": {
            "start": start.rss, "plugin": after_plugin.rss, "stub": after_stub.rss,
            "ready": at_ready.rss, "settled": settled.rss, "echo": after_echo.rss,
            "shutdown": after_shutdown.rss,
        },
        "hwm_kib": after_shutdown.hwm,
        "per_adapter_kib": {
            "ready": per(at_ready), "settled": per_settled, "echo": per(after_echo),
        },
        "stub_child_rss_kib": stub_idle.map(|m| json!({
            "idle": m.rss, "echo": stub_after_echo.map(|e| e.rss),
        })),
        "guest_memory_bytes": health.guest_memory_bytes,
        "spawn_all_ms": ms(spawn_all),
        "all_ready_ms": ms(all_ready),
        "ready_ms": {
            "p50": ms(percentile(&readies, 0.5)), "p90": ms(percentile(&readies, 0.9)),
            "p99": ms(percentile(&readies, 0.99)),
            "max": ms(percentile(&readies, 1.0)),
        },
        "echo": {
            "ok": echo_ok, "failed": echo_failed, "secs": echo_secs, "msgs_per_s": msgs_per_s,
            "inject_ms": ms(inject.1), "received": received, "misrouted": misrouted,
            "stub_sends": stub_sends,
        },
        "redials_before_ready": redials,
        "left_ready": dropped,
        "shutdown_ms": ms(shutdown),
        "targets": {
            "per_adapter_le_256_kib": per_settled <= TARGET_PER_ADAPTER_KIB,
            "total_lt_512_mib": (n == 1000).then_some(settled.rss < TARGET_TOTAL_KIB),
        },
    });
    println!("{summary}");
    if echo_failed > 0 || misrouted > 0 || received != total || stub_sends as u64 != total {
        bail!(
            "echo incomplete: {echo_ok} ok, {echo_failed} failed, {received} received, \
             {misrouted} misrouted, stub saw {stub_sends} sends, expected {total}"
        );
    }
    Ok(())
}
