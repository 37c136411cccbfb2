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

use crate::config::AdapterConfig;
use crate::engine::{Feed, Runner};
use crate::error::AdapterError;
use crate::events::{Event, EventStream, Verdict};
use crate::handle::AdapterHandle;
use crate::messages::{Answer, Completion, Mail, Query, Reply, Request};
use crate::metrics::{Exporter, REFRESH_IDLE};
use crate::plugin::Plugin;
use crate::socket::{Credit, DialPolicy, IoEvent, IoKind, IoSink, Outgoing, SocketSettings};
use crate::store::{self, Action, HostState, MediaReport, MediaSink, Pending};
use tokio_tungstenite::tungstenite::Utf8Bytes;

mod health;
mod supervise;

/// Most delivery verdicts passed in one `answer-deliveries` call.
const ANSWERS_PER_CALL: usize = 1024;
/// Most sends handed to the component in one export call.
const SENDS_PER_CALL: usize = 256;

/// Most bytes of queued text messages merged into one `on-text` call.
const MERGE_MAX_BYTES: usize = 64 * 1024;

static NEXT_ADAPTER: AtomicU64 = AtomicU64::new(1);

/// Spawns adapters.
#[derive(Debug)]
pub struct Adapter;

impl Adapter {
    /// Instantiates the component, checks its `api-version`, calls `start`
    /// with `config`, and runs the adapter on its own tokio task. Must be
    /// called inside a tokio runtime. The adapter stops after a completed
    /// `shutdown`, or when every [`AdapterHandle`] is dropped.
    pub async fn spawn(
        plugin: &Plugin,
        config: AdapterConfig,
    ) -> Result<(AdapterHandle, EventStream), AdapterError> {
        spawn(plugin, config).await
    }
}

/// Starts an adapter: first instance and `start` run here, so a bad component
/// or a refused configuration fails the spawn instead of a later event.
async fn spawn(
    plugin: &Plugin,
    mut config: AdapterConfig,
) -> Result<(AdapterHandle, EventStream), AdapterError> {
    config.validate().map_err(AdapterError::Config)?;
    // One nonce per spawned adapter, kept across instance restarts (§6.11).
    config
        .prompt_nonce
        .get_or_insert_with(AdapterConfig::draw_prompt_nonce);
    let tls = crate::tls::client_config(config.ca_file.as_deref()).map_err(AdapterError::Config)?;
    let label: Arc<str> = format!("relay-{}", NEXT_ADAPTER.fetch_add(1, Ordering::Relaxed)).into();
    let (mail_tx, mailbox) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::unbounded_channel();
    let (verdict_tx, verdicts) = mpsc::unbounded_channel();
    let (io_tx, io) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let media = MediaSink {
        client: media_client(&config)?,
        reports: media_tx,
    };
    // Every log line of this adapter carries its id and primary platform.
    let platform = config
        .identities
        .first()
        .map(|i| i.platform.clone())
        .unwrap_or_else(|| "relay".to_owned());
    let span = tracing::info_span!("relay_adapter", adapter = %label, platform = %platform);
    let max_pending = config.max_pending;
    crate::metrics::describe();
    let max_message_bytes = usize::try_from(config.max_line_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let io_tx = IoSink::new(io_tx, max_message_bytes);
    let mut actor = Actor {
        plugin: plugin.clone(),
        dial_policy: DialPolicy::for_connector(&config.connector_url),
        sockets: SocketSettings {
            tls,
            connect_timeout: config.limits.connect_timeout,
            ping_interval: config.limits.ping_interval,
            ping_timeout: config.limits.ping_timeout,
            max_message_bytes,
        },
        config,
        label,
        mailbox,
        verdicts,
        verdict_tx,
        io,
        io_tx,
        media,
        media_rx,
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
        mail_stash: None,
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
        mail_tx,
        actor.down_flag.clone(),
        actor.label.clone(),
        actor.admission.clone(),
        actor.config.admission_timeout,
    );
    tokio::spawn(actor.run().instrument(span));
    Ok((handle, EventStream::new(event_rx)))
}

/// A live instance.
struct Live {
    store: Store<HostState>,
    runner: Runner,
    started: Instant,
}

struct Actor {
    plugin: Plugin,
    config: AdapterConfig,
    dial_policy: DialPolicy,
    sockets: SocketSettings,
    label: Arc<str>,
    mailbox: mpsc::UnboundedReceiver<Mail>,
    verdicts: mpsc::UnboundedReceiver<Verdict>,
    verdict_tx: mpsc::UnboundedSender<Verdict>,
    io: mpsc::UnboundedReceiver<IoEvent>,
    io_tx: IoSink,
    /// The media client, shared by every instance of the adapter.
    media: MediaSink,
    /// Media jobs report here.
    media_rx: mpsc::UnboundedReceiver<MediaReport>,
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
    queue: VecDeque<Feed>,
    /// A socket event read while merging texts, handled next.
    io_stash: Option<IoEvent>,
    /// A mail read while gathering sends, handled next.
    mail_stash: Option<Mail>,
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
            if let Some(mail) = self.mail_stash.take() {
                self.on_mail(mail).await;
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
                mail = self.mailbox.recv() => match mail {
                    Some(mail) => self.on_mail(mail).await,
                    None => {
                        tracing::info!("all adapter handles dropped; stopping");
                        break;
                    }
                },
                Some(ack) = self.verdicts.recv() => self.on_verdict(ack).await,
                Some(event) = self.io.recv() => self.on_io(event).await,
                Some(report) = self.media_rx.recv() => self.on_media(report).await,
                () = &mut deadline_timer, if armed.is_some() => {
                    self.deadline = None;
                    armed = None;
                    self.feed(Feed::Deadline).await;
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

    /// `first` and the verdicts queued behind it (up to
    /// [`ANSWERS_PER_CALL`]), in one export call.
    async fn on_verdict(&mut self, first: Verdict) {
        let mut answers = Vec::new();
        let mut next = Some(first);
        while let Some(ack) = next.take() {
            // Verdicts for an earlier instance are stale.
            if ack.instance == self.instances {
                answers.push((ack.delivery, ack.accept));
            }
            if answers.len() < ANSWERS_PER_CALL {
                next = self.verdicts.try_recv().ok();
            }
        }
        if self.live.is_some() && !answers.is_empty() {
            self.feed(Feed::Deliveries(answers)).await;
        }
    }

    async fn on_mail(&mut self, mail: Mail) {
        // Verdicts already given go first: a gateway that accepts a message
        // and then replies expects the accept to count before the reply
        // (whose result can make the connector send more).
        while let Ok(ack) = self.verdicts.try_recv() {
            self.on_verdict(ack).await;
        }
        match mail {
            Mail::Request(request, reply, slot) => {
                if matches!(request, Request::Shutdown) {
                    self.shutdown_requested = true;
                }
                if (self.down.is_some() || self.live.is_none())
                    && matches!(request, Request::Shutdown)
                {
                    // Nothing left to drain: the adapter just stops.
                    let _ = reply.send(Ok(Completion::Done));
                    self.stopping = true;
                    return;
                }
                if self.live.is_none() {
                    let _ = reply.send(Err(self.unavailable()));
                    return;
                }
                let Some(id) = self.register(&request, reply, slot) else {
                    return;
                };
                if matches!(request, Request::Send { .. }) {
                    let sends = self.gather_sends(id, request);
                    let input = match <[_; 1]>::try_from(sends) {
                        Ok([(id, request)]) => Feed::Request(id, request),
                        Err(sends) => Feed::Sends(sends),
                    };
                    self.feed(input).await;
                } else {
                    self.feed(Feed::Request(id, request)).await;
                }
            }
            Mail::Query(query, reply) => {
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
        // The read credit of what is fed is released after the call.
        let mut credits = Vec::new();
        let input = match event.kind {
            IoKind::Opened => Feed::Open(event.conn),
            IoKind::DialFailed { code, reason } => Feed::DialFailed(event.conn, code, reason),
            IoKind::Text(text, credit) => {
                credits.push(credit);
                let text = self.merge_texts(event.conn, event.token, text, &mut credits);
                Feed::Text(event.conn, text)
            }
            IoKind::Binary(data, credit) => {
                credits.push(credit);
                Feed::Binary(event.conn, data)
            }
            IoKind::Closed { code, reason } => Feed::Closed(event.conn, code, reason),
        };
        self.feed(input).await;
        drop(credits);
    }

    /// Gives `request` its host id and its pending entry on the live
    /// instance; `None` without one.
    fn register(
        &mut self,
        request: &Request,
        reply: Reply<Completion>,
        slot: Option<crate::admission::Slot>,
    ) -> Option<u64> {
        let live = self.live.as_mut()?;
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
        Some(id)
    }

    /// `first` and the sends queued right behind it in the mailbox (up to
    /// [`SENDS_PER_CALL`]): one export call for a burst of replies. It
    /// stops at the first other mail (kept for the next turn) and when a
    /// verdict is waiting, since verdicts given before a send go first.
    fn gather_sends(&mut self, id: u64, first: Request) -> Vec<(u64, Request)> {
        let mut sends = vec![(id, first)];
        while sends.len() < SENDS_PER_CALL && self.mail_stash.is_none() && self.verdicts.is_empty()
        {
            let Ok(mail) = self.mailbox.try_recv() else {
                break;
            };
            match mail {
                Mail::Request(request @ Request::Send { .. }, reply, slot) => {
                    match self.register(&request, reply, slot) {
                        Some(id) => sends.push((id, request)),
                        None => break,
                    }
                }
                other => self.mail_stash = Some(other),
            }
        }
        sends
    }

    /// A media job finished: fed to the instance that asked for it. A file
    /// written for an instance that is gone has no owner and is deleted.
    async fn on_media(&mut self, report: MediaReport) {
        let current = self.live.is_some() && report.instance == self.instances;
        let Some(live) = self.live.as_mut().filter(|_| current) else {
            if let (Some(path), Some(client)) = (&report.outcome.path, &self.media.client) {
                client.delete(std::slice::from_ref(path));
            }
            return;
        };
        if let Some(path) = &report.outcome.path {
            live.store.data_mut().media_written.insert(path.clone());
        }
        self.feed(Feed::MediaDone(report.job, report.outcome)).await;
    }

    /// `first` plus the text messages of the same connection already queued
    /// behind it, up to [`MERGE_MAX_BYTES`]: one export call for a burst.
    /// The component reads the connection as one byte stream split on
    /// `\n` (frames may span messages), so feeding the concatenation is
    /// the same as feeding the parts in turn. The first other event is kept
    /// for the next turn of the loop.
    fn merge_texts(
        &mut self,
        conn: u32,
        token: u64,
        first: Utf8Bytes,
        credits: &mut Vec<Credit>,
    ) -> Utf8Bytes {
        if self.io_stash.is_some() || first.len() >= MERGE_MAX_BYTES {
            return first;
        }
        let mut merged: Option<String> = None;
        while let Ok(next) = self.io.try_recv() {
            let same = next.conn == conn && next.token == token;
            match next.kind {
                IoKind::Text(text, credit) if same => {
                    credits.push(credit);
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
    async fn feed(&mut self, input: Feed) {
        let Some(live) = self.live.as_mut() else {
            if let Feed::Request(id, _) = input {
                tracing::debug!(id, "request dropped: no live instance");
            }
            return;
        };
        store::reset_budget(&mut live.store);
        let result = live.runner.feed(&mut live.store, input).await;
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
        let result = live.runner.query(&mut live.store, query).await;
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

    /// Applies what the imports recorded during the last call.
    fn after_call(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let data = live.store.data_mut();
        for action in data.actions.drain(..) {
            match action {
                Action::DialFailed { conn, reason } => {
                    self.queue.push_back(Feed::DialFailed(conn, 0, reason));
                }
                Action::MediaDone { job, outcome } => {
                    self.queue.push_back(Feed::MediaDone(job, outcome));
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

    /// The adapter ends: close sockets, answer queued commands, drop the instance.
    fn finish(mut self) {
        // Callers waiting for a slot fail now instead of after admission.
        self.admission.close();
        if let Some(live) = self.live.as_mut() {
            close_all(live.store.data_mut(), 1001, "relay adapter stopped");
        }
        self.mailbox.close();
        let stashed = self.mail_stash.take();
        for mail in stashed
            .into_iter()
            .chain(std::iter::from_fn(|| self.mailbox.try_recv().ok()))
        {
            match mail {
                Mail::Request(_, reply, _) => refuse(reply),
                Mail::Query(_, reply) => refuse(reply),
            }
        }
    }
}

/// Closes every connection of an instance that goes away: an open socket
/// gets a close frame, a dial in progress is cancelled.
fn close_all(host: &mut HostState, code: u16, reason: &str) {
    for (_, conn) in host.conns.drain() {
        if conn.open {
            let _ = conn.out.send(Outgoing::Close(code, reason.into()));
        } else {
            conn.task.abort();
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

/// The adapter's media client, when its configuration asks for one.
fn media_client(config: &AdapterConfig) -> Result<Option<crate::media::MediaClient>, AdapterError> {
    let Some(options) = &config.media else {
        return Ok(None);
    };
    let connector_origin =
        crate::media::Origin::of_connector(&config.connector_url).ok_or_else(|| {
            AdapterError::Config("media: the connector URL has no http(s) origin".into())
        })?;
    let settings = crate::media::MediaSettings {
        dir: options.dir.clone(),
        connector_origin,
        allow_private: options.allow_private_addresses,
        ca_file: config.ca_file.clone(),
        user_agent: relay_core::media::MEDIA_USER_AGENT.to_owned(),
    };
    let client = crate::media::MediaClient::new(settings)
        .map_err(|e| AdapterError::Config(format!("media: {e}")))?;
    // What an earlier process left past its retention has no owner now.
    let swept = client.sweep_older_than(options.retention);
    if swept > 0 {
        tracing::info!(swept, dir = %options.dir.display(), "old media files deleted");
    }
    Ok(Some(client))
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
