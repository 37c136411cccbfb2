//! One adapter of the fleet: its event loop, echoing each message.

use super::*;

/// What the adapter tasks report and count.
pub(crate) struct Fleet {
    pub(crate) ready: mpsc::UnboundedSender<(usize, Result<Instant, String>)>,
    pub(crate) received: AtomicU64,
    pub(crate) misrouted: AtomicU64,
    pub(crate) echo_ok: AtomicU64,
    pub(crate) echo_failed: AtomicU64,
    /// Echo results awaited in this phase (N * M).
    pub(crate) echo_target: AtomicU64,
    pub(crate) echo_last: OnceLock<Instant>,
    pub(crate) echo_done: Notify,
    pub(crate) first_echo_error: OnceLock<String>,
    /// Left `ready` after having been ready (reconnects, fatal errors),
    /// before the shutdown phase.
    pub(crate) dropped: AtomicU64,
    /// `reconnecting` before the first `ready` (failed first dials).
    pub(crate) redials: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
}

impl Fleet {
    pub(crate) fn echoed(&self, ok: bool, error: Option<String>) {
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
pub(crate) async fn drive(
    i: usize,
    handle: AdapterHandle,
    mut events: EventStream,
    fleet: Arc<Fleet>,
) {
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
            // The fleet mints no prompts.
            Event::Interrupt { .. } | Event::PromptAnswer(_) | Event::Labels(_) => {}
        }
    }
    if !was_ready {
        let _ = fleet
            .ready
            .send((i, Err("event stream ended before ready".into())));
    }
}

/// Unexpected but non-fatal conditions go to stderr (at most a few).
pub(crate) fn tracing_note(i: usize, what: &str) {
    static NOTES: AtomicU64 = AtomicU64::new(0);
    if NOTES.fetch_add(1, Ordering::Relaxed) < 10 {
        eprintln!("fleet: adapter {i}: {what}");
    }
}

pub(crate) fn bot_id(i: usize) -> String {
    format!("fleet-{i}")
}
