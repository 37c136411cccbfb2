//! One tokio task per adapter, owning the component instance (its `Store`).
//! The loop is the sans-IO driver: take one input (a command, a delivery
//! answer, a socket event, the deadline), feed it to the component as one
//! export call, then apply what the imports queued. A trap poisons the
//! instance: its sockets close, its pending requests fail, a `Fatal` event
//! goes out, and a fresh instance starts after a backoff.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;
use wasmtime::Store;

use crate::admission::Admission;
use crate::bindings::wit;
use crate::config::{AdapterConfig, millis};
use crate::engine::native::NativeAdapter;
use crate::engine::{Guest, Input};
use crate::handle::{
    AckMsg, AdapterError, AdapterHandle, Answer, Command, Event, EventStream, Health, Query, Reply,
    Request,
};
use crate::metrics::{Exporter, REFRESH_IDLE, REFRESH_MIN};
use crate::plugin::Plugin;
use crate::socket::{DialPolicy, IoEvent, IoKind, Outgoing, SocketSettings};
use crate::store::{self, Action, HostState, Pending, StoreParts};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Most delivery verdicts passed in one `answer-deliveries` call.
const ANSWERS_PER_CALL: usize = 1024;

/// Most bytes of queued text messages merged into one `on-text` call.
const MERGE_MAX_BYTES: usize = 64 * 1024;

/// Longest trap description put into a `Fatal` event.
const TRAP_MESSAGE_MAX_BYTES: usize = 2048;

static NEXT_ADAPTER: AtomicU64 = AtomicU64::new(1);

/// Starts an adapter: first instance and `start` run here, so a bad component
/// or a refused configuration fails the spawn instead of a later event.
pub(crate) async fn spawn(
    plugin: &Plugin,
    config: AdapterConfig,
) -> Result<(AdapterHandle, EventStream), AdapterError> {
    let label: Arc<str> = format!("relay-{}", NEXT_ADAPTER.fetch_add(1, Ordering::Relaxed)).into();
    let (command_tx, commands) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::unbounded_channel();
    let (ack_tx, acks) = mpsc::unbounded_channel();
    let (io_tx, io) = mpsc::unbounded_channel();
    // Every log line of this adapter carries its id and primary platform.
    let platform = config
        .identities
        .first()
        .map(|i| i.platform.clone())
        .unwrap_or_else(|| "relay".to_owned());
    let span = tracing::info_span!("relay_adapter", adapter = %label, platform = %platform);
    let max_pending = config.max_pending;
    crate::metrics::describe();
    let mut actor = Actor {
        plugin: plugin.clone(),
        wit_config: wit_config(&config),
        dial_policy: DialPolicy::for_connector(&config.connector_url),
        sockets: SocketSettings {
            connect_timeout: config.limits.connect_timeout,
            ping_interval: config.limits.ping_interval,
            ping_timeout: config.limits.ping_timeout,
            max_message_bytes: usize::try_from(config.max_line_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        },
        config,
        label,
        commands,
        acks,
        ack_tx,
        io,
        io_tx,
        events: Some(events),
        live: None,
        down: None,
        down_flag: Arc::new(OnceLock::new()),
        restart_log: VecDeque::new(),
        memory_peak: 0,
        call_peak_ticks: 0,
        instances: 0,
        next_request: 1,
        queue: VecDeque::new(),
        io_stash: None,
        deadline: None,
        restart_at: None,
        backoff: Duration::ZERO,
        stopping: false,
        shutdown_requested: false,
        metrics: Exporter::default(),
        metrics_at: Instant::now(),
        admission: Arc::new(Admission::new(max_pending)),
    };
    actor.backoff = actor.config.limits.restart_initial;
    actor.start_instance().instrument(span.clone()).await?;
    let handle = AdapterHandle::new(
        command_tx,
        actor.down_flag.clone(),
        actor.label.clone(),
        actor.admission.clone(),
        actor.config.admission_timeout,
    );
    tokio::spawn(actor.run().instrument(span));
    Ok((handle, EventStream::new(event_rx)))
}

/// The WIT config record for `config`.
pub(crate) fn wit_config(config: &AdapterConfig) -> wit::Config {
    wit::Config {
        identities: config
            .identities
            .iter()
            .map(|i| wit::Identity {
                platform: i.platform.clone(),
                bot_id: i.bot_id.clone(),
            })
            .collect(),
        connector_url: config.connector_url.clone(),
        gateway_id: config.gateway_id.clone(),
        secret: config.secret.as_ref().map(|s| s.expose().to_string()),
        token_ttl_secs: config.token_ttl_secs,
        handshake_timeout_ms: millis(config.handshake_timeout),
        outbound_timeout_ms: millis(config.outbound_timeout),
        reconnect: config.reconnect,
        reconnect_initial_ms: millis(config.reconnect_initial),
        reconnect_max_ms: millis(config.reconnect_max),
        reconnect_jitter: config.reconnect_jitter,
        stable_connection_ms: millis(config.stable_connection),
        dormant_redial_ms: millis(config.dormant_redial),
        redial_hold_max_ms: millis(config.redial_hold_max),
        going_idle_timeout_ms: millis(config.going_idle_timeout),
        drain_grace_ms: millis(config.drain_grace),
        max_pending: config.max_pending,
        max_undelivered: config.max_undelivered,
        seen_capacity: config.seen_capacity,
        route_capacity: config.route_capacity,
        max_line_bytes: config.max_line_bytes,
        authorization_is_upstream: config.authorization_is_upstream,
    }
}

/// A live instance.
struct Live {
    store: Store<HostState>,
    guest: Guest,
    started: Instant,
}

struct Actor {
    plugin: Plugin,
    config: AdapterConfig,
    wit_config: wit::Config,
    dial_policy: DialPolicy,
    sockets: SocketSettings,
    label: Arc<str>,
    commands: mpsc::UnboundedReceiver<Command>,
    acks: mpsc::UnboundedReceiver<AckMsg>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    io: mpsc::UnboundedReceiver<IoEvent>,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    /// `None` once the adapter is down for good: the event stream ends.
    events: Option<mpsc::UnboundedSender<Event>>,
    live: Option<Live>,
    /// Why the adapter is down for good (restart budget spent).
    down: Option<String>,
    /// Shared with the handles: set together with `down`.
    down_flag: Arc<OnceLock<String>>,
    /// When each restart within the current window was scheduled.
    restart_log: VecDeque<Instant>,
    /// Highest linear memory of an earlier instance of this adapter.
    memory_peak: usize,
    /// Longest export call (epoch ticks ≈ ms) of an earlier instance.
    call_peak_ticks: u64,
    /// Instances created so far (also the current instance's id).
    instances: u64,
    next_request: u64,
    /// Inputs produced by the previous call (imports never re-enter).
    queue: VecDeque<Input>,
    /// A socket event read while merging texts, handled next.
    io_stash: Option<IoEvent>,
    deadline: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
    stopping: bool,
    /// The gateway asked to shut down: a trap from now on ends the adapter
    /// instead of restarting it.
    shutdown_requested: bool,
    /// The published counters (`metrics` facade).
    metrics: Exporter,
    /// When they were last refreshed.
    metrics_at: Instant,
    /// The request slots the handles take (closed when the adapter ends).
    admission: Arc<Admission>,
}

impl Actor {
    async fn run(mut self) {
        // Timers live across iterations and are reset only when their
        // instant changes: a fresh `Sleep` per iteration costs a timer-wheel
        // insert and removal for every message.
        let deadline_timer = tokio::time::sleep_until(far_future());
        tokio::pin!(deadline_timer);
        let mut armed: Option<Instant> = None;
        let mut metrics_tick = tokio::time::interval(REFRESH_IDLE);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopping {
            if let Some(input) = self.queue.pop_front() {
                self.feed(input).await;
                self.refresh_metrics(false).await;
                continue;
            }
            if let Some(event) = self.io_stash.take() {
                self.on_io(event).await;
                self.refresh_metrics(false).await;
                continue;
            }
            if self.deadline != armed {
                armed = self.deadline;
                if let Some(at) = armed {
                    deadline_timer.as_mut().reset(at);
                }
            }
            let restart_at = self.restart_at;
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => {
                        tracing::info!("all adapter handles dropped; stopping");
                        break;
                    }
                },
                Some(ack) = self.acks.recv() => self.on_ack(ack).await,
                Some(event) = self.io.recv() => self.on_io(event).await,
                () = &mut deadline_timer, if armed.is_some() => {
                    self.deadline = None;
                    armed = None;
                    self.feed(Input::Deadline).await;
                }
                () = sleep_until(restart_at), if restart_at.is_some() => {
                    self.restart_at = None;
                    self.restart().await;
                }
                _ = metrics_tick.tick() => {}
            }
            self.refresh_metrics(false).await;
        }
        self.refresh_metrics(true).await;
        self.finish();
    }

    /// Creates an instance, checks it and calls `start`.
    async fn start_instance(&mut self) -> Result<(), AdapterError> {
        let Some(events) = self.events.clone() else {
            return Err(self.unavailable());
        };
        self.instances += 1;
        let parts = StoreParts {
            instance: self.instances,
            events,
            acks: self.ack_tx.clone(),
            dial_policy: self.dial_policy.clone(),
            sockets: self.sockets,
            io: self.io_tx.clone(),
            label: self.label.clone(),
        };
        let mut store = store::new_store(self.plugin.engine(), &self.config, parts);
        let (guest, started) = if self.plugin.is_native() {
            match NativeAdapter::start(&self.wit_config, store.data_mut()) {
                Ok(adapter) => (Guest::Native(Box::new(adapter)), Ok(Ok(()))),
                Err(reason) => return Err(AdapterError::Start(reason)),
            }
        } else {
            let bindings = self.plugin.instantiate(&mut store).await?;
            store::reset_budget(&mut store);
            let started = bindings
                .hermes_relay_adapter()
                .call_start(&mut store, &self.wit_config)
                .await;
            store::report_log_flood(store.data_mut());
            (Guest::Component(Box::new(bindings)), started)
        };
        self.live = Some(Live {
            store,
            guest,
            started: Instant::now(),
        });
        match started {
            Ok(Ok(())) => {
                self.after_call();
                Ok(())
            }
            Ok(Err(reason)) => {
                self.live = None;
                Err(AdapterError::Start(reason))
            }
            Err(trap) => {
                let message = self.trap_message(&trap);
                self.drop_instance();
                Err(AdapterError::Trap(message))
            }
        }
    }

    async fn restart(&mut self) {
        match self.start_instance().await {
            Ok(()) => tracing::info!(instance = self.instances, "relay component re-instantiated"),
            Err(AdapterError::Start(reason)) => {
                tracing::error!(
                    reason,
                    "relay component refused its configuration on restart"
                );
                self.emit_fatal("start_failed", format!("start refused: {reason}"), false);
                self.stopping = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "relay component restart failed");
                if self.restart_allowed() {
                    self.emit_fatal("restart_failed", e.to_string(), true);
                    self.schedule_restart();
                } else {
                    self.go_down(e.to_string());
                }
            }
        }
    }

    /// Why a call cannot reach an instance now.
    fn unavailable(&self) -> AdapterError {
        match &self.down {
            Some(reason) => AdapterError::Down(reason.clone()),
            None => AdapterError::Restarting,
        }
    }

    /// Whether one more restart fits the budget; if so, it is counted.
    fn restart_allowed(&mut self) -> bool {
        let limits = &self.config.limits;
        let now = Instant::now();
        while self
            .restart_log
            .front()
            .is_some_and(|at| now.duration_since(*at) >= limits.restart_window)
        {
            self.restart_log.pop_front();
        }
        let budget = usize::try_from(limits.restart_budget).unwrap_or(usize::MAX);
        if self.restart_log.len() >= budget {
            return false;
        }
        self.restart_log.push_back(now);
        true
    }

    /// The restart budget is spent: no more instances. Reports it once,
    /// ends the event stream, and answers every later call with `Down`.
    fn go_down(&mut self, last_failure: String) {
        let limits = &self.config.limits;
        let reason = format!(
            "restart budget exhausted ({} restarts within {} s); the adapter stays down. Last failure: {last_failure}",
            limits.restart_budget,
            limits.restart_window.as_secs_f64(),
        );
        tracing::error!(error = %reason, "relay adapter down for good");
        // Down before the event: whoever reacts to it sees a down handle.
        let _ = self.down_flag.set(reason.clone());
        self.down = Some(reason.clone());
        self.emit_fatal("restart_budget_exhausted", reason, false);
        self.events = None;
        self.restart_at = None;
    }

    /// Publishes the counters and gauges (no-op without a `metrics`
    /// recorder), unless they were refreshed less than [`REFRESH_MIN`] ago
    /// and `force` is false. One `stats` export call when an instance is live.
    async fn refresh_metrics(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(self.metrics_at) < REFRESH_MIN {
            return;
        }
        self.metrics_at = now;
        let mut stats = None;
        if self.live.is_some()
            && let Ok(Answer::Text(Some(text))) = self.query(Query::Stats).await
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text)
        {
            stats = Some(map);
        }
        let stats = stats.unwrap_or_else(|| {
            let mut map = serde_json::Map::new();
            self.insert_host_gauges(&mut map);
            map
        });
        self.metrics.publish(&self.label, &stats);
    }

    /// The host's figures of a stats answer.
    fn insert_host_gauges(&self, stats: &mut serde_json::Map<String, serde_json::Value>) {
        let health = self.health(None, None);
        stats.insert(
            "guest_memory_bytes".into(),
            health.guest_memory_bytes.into(),
        );
        stats.insert(
            "guest_memory_peak_bytes".into(),
            health.guest_memory_peak_bytes.into(),
        );
        stats.insert(
            "memory_limit_bytes".into(),
            health.memory_limit_bytes.into(),
        );
        stats.insert("guest_call_max_ms".into(), health.guest_call_max_ms.into());
        stats.insert("restarts".into(), health.restarts.into());
        stats.insert("admission_waiting".into(), self.admission.waiting().into());
    }

    /// Linear memory of the live instance (0 without one).
    fn memory_now(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |live| live.store.data().limiter.memory_bytes())
    }

    /// The host's health figures, with the component's `state` and stats
    /// JSON when a live instance answered.
    fn health(
        &self,
        state: Option<crate::handle::State>,
        guest: Option<&serde_json::Value>,
    ) -> Health {
        let count = |key: &str| {
            guest
                .and_then(|g| g.get(key))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let now = self.memory_now();
        let call_ticks = self
            .live
            .as_ref()
            .map_or(0, |live| live.store.data().peak_ticks)
            .max(self.call_peak_ticks);
        Health {
            guest_call_max_ms: call_ticks,
            state,
            pending: count("pending"),
            undelivered: count("undelivered"),
            guest_memory_bytes: now,
            guest_memory_peak_bytes: self.memory_peak.max(now),
            memory_limit_bytes: self.config.limits.memory_bytes,
            restarts: self.instances.saturating_sub(1),
            down: self.down.clone(),
        }
    }

    /// `first` and the verdicts queued behind it (up to
    /// [`ANSWERS_PER_CALL`]), in one export call.
    async fn on_ack(&mut self, first: AckMsg) {
        let mut answers = Vec::new();
        let mut next = Some(first);
        while let Some(ack) = next.take() {
            // Verdicts for an earlier instance are stale.
            if ack.instance == self.instances {
                answers.push((ack.delivery, ack.accept));
            }
            if answers.len() < ANSWERS_PER_CALL {
                next = self.acks.try_recv().ok();
            }
        }
        if self.live.is_some() && !answers.is_empty() {
            self.feed(Input::Deliveries(answers)).await;
        }
    }

    async fn on_command(&mut self, command: Command) {
        // Verdicts already given go first: a gateway that accepts a message
        // and then replies expects the accept to count before the reply
        // (whose result can make the connector send more).
        while let Ok(ack) = self.acks.try_recv() {
            self.on_ack(ack).await;
        }
        match command {
            Command::Request(request, reply, slot) => {
                if matches!(request, Request::Shutdown) {
                    self.shutdown_requested = true;
                }
                if (self.down.is_some() || self.live.is_none())
                    && matches!(request, Request::Shutdown)
                {
                    // Nothing left to drain: the adapter just stops.
                    let _ = reply.send(Ok(crate::handle::Outcome::Done));
                    self.stopping = true;
                    return;
                }
                if self.live.is_none() {
                    let _ = reply.send(Err(self.unavailable()));
                    return;
                }
                let Some(live) = self.live.as_mut() else {
                    return;
                };
                let id = self.next_request;
                self.next_request += 1;
                let is_shutdown = matches!(request, Request::Shutdown);
                tracing::debug!(request = id, op = request.op(), "relay request issued");
                live.store.data_mut().pending.insert(
                    id,
                    Pending {
                        reply,
                        is_shutdown,
                        slot,
                    },
                );
                self.feed(Input::Request(id, request)).await;
            }
            Command::Query(query, reply) => {
                let answer = self.query(query).await;
                let _ = reply.send(answer);
            }
        }
    }

    async fn on_io(&mut self, event: IoEvent) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let conns = &mut live.store.data_mut().conns;
        match conns.get_mut(&event.conn) {
            Some(conn) if conn.token == event.token => {
                if matches!(event.kind, IoKind::Opened) {
                    conn.open = true;
                }
            }
            // Stale: closed by the component, or from an earlier instance.
            _ => return,
        }
        if matches!(
            event.kind,
            IoKind::DialFailed { .. } | IoKind::Closed { .. }
        ) {
            conns.remove(&event.conn);
        }
        let input = match event.kind {
            IoKind::Opened => Input::Open(event.conn),
            IoKind::DialFailed { code, reason } => Input::DialFailed(event.conn, code, reason),
            IoKind::Text(text) => {
                Input::Text(event.conn, self.merge_texts(event.conn, event.token, text))
            }
            IoKind::Binary(data) => Input::Binary(event.conn, data),
            IoKind::Closed { code, reason } => Input::Closed(event.conn, code, reason),
        };
        self.feed(input).await;
    }

    /// `first` plus the text messages of the same connection already queued
    /// behind it, up to [`MERGE_MAX_BYTES`]: one export call for a burst.
    /// The component reads the connection as one byte stream split on
    /// `\n` (frames may span messages), so feeding the concatenation is
    /// the same as feeding the parts in turn. The first other event is kept
    /// for the next turn of the loop.
    fn merge_texts(&mut self, conn: u32, token: u64, first: Utf8Bytes) -> Utf8Bytes {
        if self.io_stash.is_some() || first.len() >= MERGE_MAX_BYTES {
            return first;
        }
        let mut merged: Option<String> = None;
        while let Ok(next) = self.io.try_recv() {
            let same = next.conn == conn && next.token == token;
            match next.kind {
                IoKind::Text(text) if same => {
                    let buf = merged.get_or_insert_with(|| {
                        let mut buf = String::with_capacity(MERGE_MAX_BYTES.min(4 * first.len()));
                        buf.push_str(first.as_str());
                        buf
                    });
                    buf.push_str(text.as_str());
                    if buf.len() >= MERGE_MAX_BYTES {
                        break;
                    }
                }
                kind => {
                    self.io_stash = Some(IoEvent { kind, ..next });
                    break;
                }
            }
        }
        merged.map_or(first, Utf8Bytes::from)
    }

    /// One export call for `input`, then its effects.
    async fn feed(&mut self, input: Input) {
        let Some(live) = self.live.as_mut() else {
            if let Input::Request(id, _) = input {
                tracing::debug!(id, "request dropped: no live instance");
            }
            return;
        };
        store::reset_budget(&mut live.store);
        let result = live.guest.feed(&mut live.store, input).await;
        store::report_log_flood(live.store.data_mut());
        match result {
            Ok(()) => self.after_call(),
            Err(trap) => self.on_trap(trap),
        }
    }

    /// A synchronous export call.
    async fn query(&mut self, query: Query) -> Result<Answer, AdapterError> {
        if self.live.is_none() {
            return match query {
                Query::Health => Ok(Answer::Health(self.health(None, None))),
                _ => Err(self.unavailable()),
            };
        }
        let Some(live) = self.live.as_mut() else {
            return Err(self.unavailable());
        };
        let is_stats = matches!(query, Query::Stats);
        store::reset_budget(&mut live.store);
        let result = live.guest.query(&mut live.store, query).await;
        store::report_log_flood(live.store.data_mut());
        match result {
            Ok(answer) => {
                self.after_call();
                Ok(self.with_host_gauges(answer, is_stats))
            }
            Err(trap) => {
                let message = self.trap_message(&trap);
                self.on_trap(trap);
                Err(AdapterError::Trap(message))
            }
        }
    }

    /// Adds the host's gauges to a stats answer (`is_stats`) or completes a
    /// health answer; other answers pass through.
    fn with_host_gauges(&self, answer: Answer, is_stats: bool) -> Answer {
        match answer {
            Answer::Text(Some(text)) if is_stats => {
                let Ok(serde_json::Value::Object(mut stats)) = serde_json::from_str(&text) else {
                    return Answer::Text(Some(text));
                };
                self.insert_host_gauges(&mut stats);
                Answer::Text(Some(serde_json::Value::Object(stats).to_string()))
            }
            Answer::Guest(state, stats) => {
                let stats = serde_json::from_str::<serde_json::Value>(&stats).ok();
                Answer::Health(self.health(Some(state), stats.as_ref()))
            }
            other => other,
        }
    }

    /// Applies what the imports recorded during the last call.
    fn after_call(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let data = live.store.data_mut();
        for action in data.actions.drain(..) {
            match action {
                Action::DialFailed { conn, reason } => {
                    self.queue.push_back(Input::DialFailed(conn, 0, reason));
                }
            }
        }
        if let Some(at) = data.deadline.take() {
            self.deadline = at.map(|ns| instant_at(data.clock_origin, ns));
        }
        if data.stop && !self.stopping {
            tracing::info!("relay adapter shut down");
            self.stopping = true;
        }
        if live.started.elapsed() >= self.config.limits.restart_reset_after {
            self.backoff = self.config.limits.restart_initial;
        }
    }

    /// The Fatal text of a trap: the root cause first (`wasm trap:
    /// interrupt`, `forcing trap when growing memory to N bytes`, ...), then
    /// the guest's last stderr lines (a panic message), then the context
    /// with the wasm backtrace, which the length cap cuts first.
    fn trap_message(&self, trap: &wasmtime::Error) -> String {
        let mut message = trap.root_cause().to_string();
        if let Some(live) = &self.live {
            let tail = live.store.data().stderr.tail();
            if !tail.is_empty() {
                message.push_str("; guest stderr: ");
                message.push_str(&tail.join(" | "));
            }
        }
        let details = format!("{trap:#}");
        if details != message {
            message.push_str("; ");
            message.push_str(&details);
        }
        truncate(&mut message, TRAP_MESSAGE_MAX_BYTES);
        message
    }

    /// The instance is poisoned: drop it and schedule a new one, if the
    /// restart budget allows; else the adapter goes down for good.
    fn on_trap(&mut self, trap: wasmtime::Error) {
        let message = self.trap_message(&trap);
        let terminal = self
            .live
            .as_ref()
            .is_some_and(|live| live.store.data().terminal);
        self.drop_instance();
        if self.shutdown_requested || terminal {
            // Shutting down, or already disabled: a new instance would only
            // dial again (a revoked one would retry 4401 forever).
            tracing::error!(error = %message, "relay component trapped after it stopped for good; not restarting");
            self.emit_fatal("guest_trap", message, false);
            self.stopping = true;
        } else if self.restart_allowed() {
            tracing::error!(error = %message, "relay component trapped; restarting it");
            self.emit_fatal("guest_trap", message, true);
            self.schedule_restart();
        } else {
            tracing::error!(error = %message, "relay component trapped; restart budget spent");
            self.go_down(message);
        }
    }

    /// Closes the instance's sockets and drops it; its pending requests
    /// resolve as "relay adapter stopped" (their reply senders drop).
    fn drop_instance(&mut self) {
        if let Some(mut live) = self.live.take() {
            self.metrics.instance_dropped();
            self.memory_peak = self
                .memory_peak
                .max(live.store.data().limiter.memory_bytes());
            self.call_peak_ticks = self.call_peak_ticks.max(live.store.data().peak_ticks);
            if live.started.elapsed() >= self.config.limits.restart_reset_after {
                self.backoff = self.config.limits.restart_initial;
            }
            for (_, conn) in live.store.data_mut().conns.drain() {
                if conn.open {
                    let _ = conn
                        .out
                        .send(Outgoing::Close(1011, "relay adapter restarting".into()));
                } else {
                    conn.task.abort();
                }
            }
        }
        self.queue.clear();
        self.io_stash = None;
        self.deadline = None;
    }

    fn schedule_restart(&mut self) {
        self.restart_at = Instant::now().checked_add(self.backoff);
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.config.limits.restart_max);
    }

    fn emit_fatal(&self, code: &str, message: String, retryable: bool) {
        let Some(events) = &self.events else {
            return;
        };
        let _ = events.send(Event::Fatal {
            code: code.to_string(),
            message,
            retryable,
        });
    }

    /// The adapter ends: close sockets, answer queued commands, drop the instance.
    fn finish(mut self) {
        // Callers waiting for a slot fail now instead of after admission.
        self.admission.close();
        if let Some(live) = self.live.as_mut() {
            for (_, conn) in live.store.data_mut().conns.drain() {
                if conn.open {
                    let _ = conn
                        .out
                        .send(Outgoing::Close(1001, "relay adapter stopped".into()));
                } else {
                    conn.task.abort();
                }
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Request(_, reply, _) => refuse(reply),
                Command::Query(_, reply) => refuse(reply),
            }
        }
    }
}

fn refuse<T>(reply: Reply<T>) {
    let _ = reply.send(Err(AdapterError::Stopped));
}

/// The tokio instant of a WIT `instant` (ns on the guest's monotonic clock).
/// Unrepresentable instants become "a year from now" (effectively never).
fn instant_at(origin: std::time::Instant, ns: u64) -> Instant {
    let origin = Instant::from_std(origin);
    origin
        .checked_add(Duration::from_nanos(ns))
        .unwrap_or_else(far_future)
}

/// An instant no timer of ours reaches (a disarmed `Sleep`).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 86_400)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}
