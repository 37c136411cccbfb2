//! Per-instance state (the wasmtime `Store` data): the WASI context (stdio to
//! a [`GuestLog`], a monotonic clock whose origin the host knows, nothing
//! else), the memory limits, the per-call CPU budget, and the host-side
//! bookkeeping the imports write to. Nothing here blocks.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::mpsc;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::AdapterConfig;
use crate::events::{Event, Verdict};
use crate::messages::{Completion, Reply};
use crate::socket::{Conn, DialPolicy, IoSink, SocketSettings};

/// Longest guest stdio line forwarded to `tracing`; the rest is cut.
const GUEST_LINE_MAX_BYTES: usize = 8 * 1024;
/// Guest stderr lines kept for the message of a trap's `Fatal` event.
const GUEST_TAIL_LINES: usize = 8;
/// Guest log lines (`log` import calls plus stdout/stderr lines) forwarded to
/// `tracing` per export call; the rest are counted and reported once after
/// the call, so a guest stuck in a logging loop cannot flood the host's logs.
pub(crate) const GUEST_LOG_LINES_PER_CALL: u32 = 1000;

/// The per-export-call allowance of guest log lines, shared by the `log`
/// import and the stdio sinks.
#[derive(Clone, Default)]
pub(crate) struct LogBudget(Arc<LogBudgetInner>);

#[derive(Default)]
struct LogBudgetInner {
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// Whether one more line may be forwarded in this call; counts it either way.
    pub(crate) fn take(&self) -> bool {
        let used = self.0.used.fetch_add(1, Ordering::Relaxed);
        if used < GUEST_LOG_LINES_PER_CALL {
            return true;
        }
        // Keep `used` from wrapping in an endless loop.
        self.0
            .used
            .store(GUEST_LOG_LINES_PER_CALL, Ordering::Relaxed);
        self.0.suppressed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Starts a new call's allowance; returns how many lines the previous
    /// call had suppressed.
    pub(crate) fn reset(&self) -> u64 {
        self.0.used.store(0, Ordering::Relaxed);
        self.0.suppressed.swap(0, Ordering::Relaxed)
    }
}

/// A request the host sent to the component and is waiting on.
pub(crate) struct Pending {
    /// Resolved by the `complete` import; dropping it resolves the caller as
    /// "relay adapter stopped".
    pub reply: Reply<Completion>,
    /// Set for `shutdown`: its completion ends the adapter.
    pub is_shutdown: bool,
    /// The request's admission slot: freed with this entry, when the request
    /// completes or its instance is lost.
    #[allow(dead_code, reason = "held for its Drop, which frees the slot")]
    pub slot: Option<crate::admission::Slot>,
}

/// Work an import queued for the actor: an import never re-enters the
/// component, so its consequences run after the current export returns.
pub(crate) enum Action {
    /// Report `on-dial-failed(conn, 0, reason)`.
    DialFailed { conn: u32, reason: String },
    /// Report `on-media-done(job, outcome)` (a job refused at once).
    MediaDone {
        job: u64,
        outcome: crate::media::MediaOutcome,
    },
}

/// Store data of one component instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory, table and instance limits, plus the memory gauge.
    pub limiter: GuestLimiter,
    /// Epoch ticks (≈ ms) spent in the current export call.
    ticks: u64,
    /// Ticks allowed per export call.
    max_ticks: u64,
    /// The most ticks one export call of this instance has used.
    pub peak_ticks: u64,
    /// Distinguishes instances of one adapter (after restarts).
    pub instance: u64,
    /// Where the guest's monotonic clock reads 0.
    pub clock_origin: Instant,
    /// Open or dialing connections, by the component's `conn` id.
    pub conns: HashMap<u32, Conn>,
    /// Deferred work for the actor, in call order.
    pub actions: Vec<Action>,
    /// `Some(at)` when `set-deadline` was called during the current export.
    pub deadline: Option<Option<u64>>,
    /// Requests awaiting `complete`, by host request id.
    pub pending: HashMap<u64, Pending>,
    /// Set when the shutdown request completed: the adapter stops.
    pub stop: bool,
    /// The component reported a non-retryable fatal (e.g. `relay_disabled`):
    /// a later trap must not bring back an instance that would re-dial.
    pub terminal: bool,
    /// Events for the gateway (unbounded: the socket is never throttled by it).
    pub events: mpsc::UnboundedSender<Event>,
    /// Delivery answers come back through this channel.
    pub verdicts: mpsc::UnboundedSender<Verdict>,
    /// Which dial targets the component may use.
    pub dial_policy: DialPolicy,
    /// Socket limits for new connections.
    pub sockets: SocketSettings,
    /// Connection tasks report here.
    pub io: IoSink,
    /// Guest stderr, for trap messages.
    pub stderr: GuestLog,
    /// Guest log lines allowed in the current export call.
    pub log_budget: LogBudget,
    /// Adapter label for logs.
    pub label: Arc<str>,
    /// The media client and its report channel.
    pub media: MediaSink,
    /// Files downloaded for this instance and not deleted yet (deleted
    /// after the retention if the instance is lost).
    pub media_written: std::collections::HashSet<String>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A media job's outcome, reported by its task to the actor.
pub(crate) struct MediaReport {
    /// The instance that asked (a later one must not get it).
    pub instance: u64,
    pub job: u64,
    pub outcome: crate::media::MediaOutcome,
}

/// The media client and where its tasks report.
#[derive(Clone)]
pub(crate) struct MediaSink {
    /// `None`: the host has no media client.
    pub client: Option<crate::media::MediaClient>,
    pub reports: mpsc::UnboundedSender<MediaReport>,
}

/// Channels and identity the actor hands to each new store.
pub(crate) struct StoreParts {
    pub media: MediaSink,
    pub instance: u64,
    pub events: mpsc::UnboundedSender<Event>,
    pub verdicts: mpsc::UnboundedSender<Verdict>,
    pub dial_policy: DialPolicy,
    pub sockets: SocketSettings,
    pub io: IoSink,
    pub label: Arc<str>,
}

/// A fresh store for one instance: WASI with stdio only, memory limits, and an
/// epoch callback that yields to tokio every tick and traps past the budget.
pub(crate) fn new_store(
    engine: &Engine,
    config: &AdapterConfig,
    parts: StoreParts,
) -> Store<HostState> {
    let log_budget = LogBudget::default();
    let stdout = GuestLog::new(parts.label.clone(), "stdout", log_budget.clone());
    let stderr = GuestLog::new(parts.label.clone(), "stderr", log_budget.clone());
    let clock_origin = Instant::now();
    // Capabilities: stdio (to the host's logs), clocks and random only. The
    // builder starts with no preopened directories, no environment and no
    // arguments, and nothing here adds any; WASI sockets and name lookup are
    // switched off (the component's only network is the `dial` import,
    // which the dial policy restricts to the configured connector).
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout)
        .stderr(stderr.clone())
        .monotonic_clock(HostClock {
            origin: clock_origin,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let limiter = GuestLimiter::new(
        StoreLimitsBuilder::new()
            .memory_size(config.limits.memory_bytes)
            .table_elements(config.limits.max_table_elements)
            .instances(config.limits.max_instances)
            .tables(config.limits.max_tables)
            .memories(config.limits.max_memories)
            .trap_on_grow_failure(true)
            .build(),
    );
    let max_ticks = u64::try_from(config.limits.call_budget.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let state = HostState {
        wasi,
        table: ResourceTable::new(),
        limiter,
        ticks: 0,
        max_ticks,
        peak_ticks: 0,
        instance: parts.instance,
        clock_origin,
        conns: HashMap::new(),
        actions: Vec::new(),
        deadline: None,
        pending: HashMap::new(),
        stop: false,
        terminal: false,
        events: parts.events,
        verdicts: parts.verdicts,
        dial_policy: parts.dial_policy,
        sockets: parts.sockets,
        io: parts.io,
        stderr,
        log_budget,
        label: parts.label,
        media: parts.media,
        media_written: std::collections::HashSet::new(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| {
        let s = cx.data_mut();
        s.ticks += 1;
        if s.ticks > s.max_ticks {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store
}

/// The store's [`ResourceLimiter`]: wasmtime's [`StoreLimits`] (memory cap,
/// table elements, instance/table/memory counts, trap on a refused growth)
/// plus a gauge of the linear memory the instance holds. Linear memory never
/// shrinks, so the gauge only moves up: its value is also the instance's peak.
pub(crate) struct GuestLimiter {
    limits: StoreLimits,
    /// Bytes of linear memory allowed so far, over all memories.
    memory_bytes: usize,
    /// The last allowed growth, taken back if the growth then fails.
    last_growth: usize,
}

impl GuestLimiter {
    fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            memory_bytes: 0,
            last_growth: 0,
        }
    }

    /// Linear memory the instance holds (creation plus every allowed growth).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.last_growth = desired.saturating_sub(current);
            self.memory_bytes = self.memory_bytes.saturating_add(self.last_growth);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes = self.memory_bytes.saturating_sub(self.last_growth);
        self.last_growth = 0;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Resets the CPU budget and the log allowance; call before every export call.
pub(crate) fn reset_budget(store: &mut Store<HostState>) {
    report_log_flood(store.data_mut());
    store.data_mut().ticks = 0;
    store.set_epoch_deadline(1);
}

/// Records the last export call's CPU use, reports (once) the guest log
/// lines it had suppressed, and starts a fresh allowance; call right after
/// every export call.
pub(crate) fn report_log_flood(state: &mut HostState) {
    state.peak_ticks = state.peak_ticks.max(state.ticks);
    let suppressed = state.log_budget.reset();
    if suppressed > 0 {
        tracing::warn!(
            adapter = %state.label,
            suppressed,
            "relay component log flood: {suppressed} lines suppressed in one call (limit {GUEST_LOG_LINES_PER_CALL})"
        );
    }
}

/// The guest's `wasi:clocks/monotonic-clock`: nanoseconds since `origin`, so
/// the host can turn a WIT `instant` back into a tokio `Instant`.
struct HostClock {
    origin: Instant,
}

impl HostMonotonicClock for HostClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A guest stdio sink that never fails: complete lines go to `tracing`
/// (stdout at info, stderr at warn), over-long lines are cut, and the last few
/// stderr lines are kept for trap reports.
#[derive(Clone)]
pub(crate) struct GuestLog(Arc<Mutex<LogInner>>);

struct LogInner {
    label: Arc<str>,
    stream: &'static str,
    budget: LogBudget,
    partial: Vec<u8>,
    cut: bool,
    tail: VecDeque<String>,
}

impl GuestLog {
    fn new(label: Arc<str>, stream: &'static str, budget: LogBudget) -> Self {
        Self(Arc::new(Mutex::new(LogInner {
            label,
            stream,
            budget,
            partial: Vec::new(),
            cut: false,
            tail: VecDeque::new(),
        })))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner();
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, ends_line) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            let room = GUEST_LINE_MAX_BYTES.saturating_sub(inner.partial.len());
            if body.len() > room {
                inner.cut = true;
            }
            inner
                .partial
                .extend_from_slice(&body[..body.len().min(room)]);
            if ends_line {
                inner.emit();
            }
        }
    }

    /// The last stderr lines (and an unterminated one), oldest first.
    pub(crate) fn tail(&self) -> Vec<String> {
        let inner = self.inner();
        let mut lines: Vec<String> = inner.tail.iter().cloned().collect();
        if !inner.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&inner.partial).into_owned());
        }
        lines
    }
}

impl LogInner {
    fn emit(&mut self) {
        let mut line = String::from_utf8_lossy(&self.partial).into_owned();
        if self.cut {
            line.push_str(" [cut]");
        }
        self.partial.clear();
        self.cut = false;
        let forward = self.budget.take();
        if self.stream == "stderr" {
            if forward {
                tracing::warn!(target: "relay_guest", adapter = %self.label, stream = self.stream, "{line}");
            }
            if self.tail.len() == GUEST_TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        } else if forward {
            tracing::info!(target: "relay_guest", adapter = %self.label, stream = self.stream, "{line}");
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
