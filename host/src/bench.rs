//! Benchmark support, not API: drives one instance (component or native)
//! export call by export call, without the actor, the socket or the
//! gateway's channels in the timed path, so `host/benches/component.rs`
//! can put the component's per-frame cost next to the native core's.
//!
//! The instance dials a port nothing listens on (its connection task fails
//! unobserved); the harness then owns the connection's outgoing queue,
//! reports it open, and feeds the descriptor itself.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wasmtime::Store;

use crate::config::{AdapterConfig, Identity};
use crate::engine::{self, Feed, Runner, Started};
use crate::events::{Event, Verdict};
use crate::messages::{Answer, Query, Request};
use crate::plugin::Plugin;
use crate::socket::{DialPolicy, IoEvent, IoSink, Outgoing, SocketSettings};
use crate::store::{self, HostState, Pending, StoreParts};
use crate::types::State;

/// Where the harness's instance "dials": nothing listens there.
const NOWHERE: &str = "ws://127.0.0.1:9/relay";

/// One Ready instance fronting `discord` / `B1`.
pub struct Harness {
    store: Store<HostState>,
    runner: Runner,
    conn: u32,
    events: mpsc::UnboundedReceiver<Event>,
    acks: mpsc::UnboundedReceiver<Verdict>,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
    _io: mpsc::UnboundedReceiver<IoEvent>,
    next_request: u64,
}

impl Harness {
    /// Instantiates (or, for [`Plugin::native`], builds) the adapter,
    /// starts it, and makes it Ready with `descriptor_line`.
    pub async fn new(plugin: &Plugin, descriptor_line: &str) -> Result<Self, String> {
        let mut config = AdapterConfig::new(NOWHERE);
        config.identities = vec![Identity::new("discord", "B1")];
        let (events_tx, events) = mpsc::unbounded_channel();
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (io_tx, io) = mpsc::unbounded_channel();
        let parts = StoreParts {
            instance: 1,
            events: events_tx,
            verdicts: acks_tx,
            dial_policy: DialPolicy::for_connector(NOWHERE),
            sockets: SocketSettings {
                tls: crate::tls::client_config(None)?,
                connect_timeout: Duration::from_secs(1),
                ping_interval: Duration::from_secs(30),
                ping_timeout: Duration::from_secs(60),
                max_message_bytes: 1 << 20,
            },
            io: IoSink::new(io_tx, 1 << 20),
            // No media client: the bench measures the text path.
            media: crate::store::MediaSink {
                client: None,
                reports: mpsc::unbounded_channel().0,
            },
            label: "bench".into(),
        };
        let mut store = store::new_store(plugin.engine(), &config, parts);
        let runner = match engine::start(plugin, &mut store, &config)
            .await
            .map_err(|e| e.to_string())?
        {
            Started::Running(runner) => runner,
            Started::Refused(reason) => return Err(format!("start refused: {reason}")),
            Started::Trapped(_, trap) => return Err(format!("start trapped: {trap:#}")),
        };
        let conn = *store
            .data()
            .conns
            .keys()
            .next()
            .ok_or("the adapter did not dial")?;
        let (out_tx, outgoing) = mpsc::unbounded_channel();
        if let Some(c) = store.data_mut().conns.get_mut(&conn) {
            c.task.abort();
            c.out = out_tx;
            c.open = true;
        }
        let mut harness = Self {
            store,
            runner,
            conn,
            events,
            acks,
            outgoing,
            _io: io,
            next_request: 1,
        };
        harness.feed(Feed::Open(conn)).await?;
        harness
            .feed(Feed::Text(
                conn,
                Utf8Bytes::from(descriptor_line.to_owned()),
            ))
            .await?;
        harness.drain_outgoing();
        match harness.state().await? {
            State::Ready => Ok(harness),
            other => Err(format!("not ready after the descriptor: {other:?}")),
        }
    }

    async fn feed(&mut self, input: Feed) -> Result<(), String> {
        store::reset_budget(&mut self.store);
        self.runner
            .feed(&mut self.store, input)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// One socket message (`on-text`), then an accept (`accept-delivery`)
    /// for every message event it produced. Returns the events' count.
    pub async fn inbound(&mut self, text: Utf8Bytes) -> Result<usize, String> {
        self.feed(Feed::Text(self.conn, text)).await?;
        let mut delivered = 0;
        while let Ok(event) = self.events.try_recv() {
            if let Event::Message(message) = event {
                delivered += 1;
                message.accept();
            }
        }
        let answers: Vec<(u64, bool)> = std::iter::from_fn(|| self.acks.try_recv().ok())
            .map(|ack| (ack.delivery, ack.accept))
            .collect();
        if !answers.is_empty() {
            self.feed(Feed::Deliveries(answers)).await?;
        }
        Ok(delivered)
    }

    /// One `send` command; returns the frames it wrote (the outbound frame).
    pub async fn send(&mut self, chat_id: &str, content: &str) -> Result<Vec<String>, String> {
        let id = self.next_request;
        self.next_request += 1;
        let (reply, _answer) = oneshot::channel();
        self.store.data_mut().pending.insert(
            id,
            Pending {
                reply,
                is_shutdown: false,
                slot: None,
            },
        );
        let request = Request::Send {
            chat_id: chat_id.to_owned(),
            content: content.to_owned(),
            reply_to: None,
            metadata: "{}".to_owned(),
            platform: None,
        };
        self.feed(Feed::Request(id, request)).await?;
        Ok(self.drain_outgoing())
    }

    /// `send` commands to each of `chats`: in one `send-batch` call when
    /// `batched` (as the actor gathers a burst), else one `send` call each.
    /// Returns the frames they wrote.
    pub async fn send_burst(
        &mut self,
        chats: &[String],
        content: &str,
        batched: bool,
    ) -> Result<Vec<String>, String> {
        let mut sends = Vec::with_capacity(chats.len());
        for chat_id in chats {
            let id = self.next_request;
            self.next_request += 1;
            let (reply, _answer) = oneshot::channel();
            self.store.data_mut().pending.insert(
                id,
                Pending {
                    reply,
                    is_shutdown: false,
                    slot: None,
                },
            );
            let request = Request::Send {
                chat_id: chat_id.clone(),
                content: content.to_owned(),
                reply_to: None,
                metadata: "{}".to_owned(),
                platform: None,
            };
            sends.push((id, request));
        }
        if batched {
            self.feed(Feed::Sends(sends)).await?;
        } else {
            for (id, request) in sends {
                self.feed(Feed::Request(id, request)).await?;
            }
        }
        Ok(self.drain_outgoing())
    }

    /// One `current-state` query, with the budget reset every export call
    /// gets: an export call with almost no work in it, so its time is the
    /// boundary's fixed cost per call.
    pub async fn state(&mut self) -> Result<State, String> {
        store::reset_budget(&mut self.store);
        match self.runner.query(&mut self.store, Query::State).await {
            Ok(Answer::State(state)) => Ok(state),
            Ok(other) => Err(format!("not a state: {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Texts the instance wrote since the last call.
    pub fn drain_outgoing(&mut self) -> Vec<String> {
        let mut texts = Vec::new();
        while let Ok(out) = self.outgoing.try_recv() {
            if let Outgoing::Text(text) = out {
                texts.push(text);
            }
        }
        texts
    }
}
