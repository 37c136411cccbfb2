//! `relay-host run --agent stdio`: the two-way bridge. Commands come in on
//! stdin as JSON lines (`{"id":..,"op":..,...}`, see [`ops`]); stdout
//! carries the event lines of every agent plus exactly one `result` line
//! per input line, in completion order. Deliveries are not auto-accepted:
//! the gateway answers each `message` line with `accept` or `reject`.
//! End of stdin shuts the adapter down as SIGTERM does.

mod deliveries;
mod io;
mod media;
mod ops;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use relay_host::{AdapterHandle, Event, EventStream, MessageEvent, State};
use serde::Serialize;
use serde_json::Value;
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::deliveries::Deliveries;
use self::io::{Input, Output};
use self::ops::{Command, Id, Outcome, Running};
use super::exit::{Exit, FATAL_SHUTDOWN_BUDGET, SHUTDOWN_BUDGET};
use super::lines::{Line, with_message_line};
use super::logging;

/// Commands running at once; the bridge stops reading stdin beyond this
/// (sends past `max_pending` wait for an admission slot inside it).
const MAX_RUNNING: usize = 4096;
/// Most events taken in one turn of the loop.
const BURST_EVENTS: usize = 256;

/// Why the bridge is stopping.
#[derive(Debug)]
enum Stop {
    /// SIGINT, SIGTERM, end of stdin or the `shutdown` op: exit 0.
    Requested(&'static str),
    /// Terminal revocation: exit 3.
    Disabled(String),
    /// Another terminal condition: exit 1.
    Fatal(String),
}

/// What one turn of the loop picked.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per loop turn; most turns carry an event"
)]
enum Turn {
    Nothing,
    OutputClosed,
    Stop(Stop),
    OutOfTime,
    ShutdownDone(Outcome),
    Result(Id, Outcome),
    Input(Input),
    Event(Option<Event>),
}

/// One `result` line.
#[derive(Serialize)]
struct ResultLine<'a> {
    kind: &'static str,
    id: &'a Value,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The bridge's state across loop turns.
struct Bridge {
    handle: AdapterHandle,
    out: Output,
    deliveries: Deliveries,
    running: FuturesUnordered<Running>,
    stop: Option<Stop>,
    /// The shutdown in progress (signal, EOF, fatal, or the `shutdown`
    /// op), polled even while stdout is stalled so the adapter goes idle.
    shutdown: Option<Running>,
    /// The `shutdown` op's id, answered when that shutdown finishes.
    shutdown_id: Option<Id>,
    deadline: Option<Instant>,
}

/// Serves the bridge until the adapter stopped; returns the exit code.
pub async fn serve(
    handle: AdapterHandle,
    mut events: EventStream,
    sigint: &mut Signal,
    sigterm: &mut Signal,
) -> Exit {
    let mut input: mpsc::Receiver<Input> = io::read_lines(tokio::io::stdin());
    let mut bridge = Bridge {
        handle,
        out: Output::spawn(tokio::io::stdout()),
        deliveries: Deliveries::default(),
        running: FuturesUnordered::new(),
        stop: None,
        shutdown: None,
        shutdown_id: None,
        deadline: None,
    };
    let mut input_done = false;
    let mut events_done = false;

    loop {
        if events_done && bridge.running.is_empty() && bridge.shutdown.is_none() {
            if bridge.stop.is_none() {
                bridge.stop = Some(Stop::Fatal("the relay adapter stopped unexpectedly".into()));
            }
            // Lines already read still get their one result.
            while let Ok(item) = input.try_recv() {
                let id = match item {
                    Input::Line(line) => ops::parse(&line).map_or_else(|(id, _)| id, |(id, _)| id),
                    Input::TooLong(_) => Value::Null,
                    Input::Eof | Input::Failed(_) => continue,
                };
                bridge.result(&id, Err(relay_host::AdapterError::Stopped.to_string()));
            }
            break;
        }
        let room = !bridge.out.is_full();
        let deadline = bridge.deadline;
        // The branches only pick what happened; it is handled below, when
        // their borrows of the bridge have ended.
        let turn = tokio::select! {
            permit = bridge.out.queue.reserve(), if !bridge.out.batch.is_empty() => match permit {
                Ok(permit) => {
                    permit.send(std::mem::take(&mut bridge.out.batch));
                    Turn::Nothing
                }
                Err(_) => Turn::OutputClosed,
            },
            _ = sigint.recv() => Turn::Stop(Stop::Requested("SIGINT")),
            _ = sigterm.recv() => Turn::Stop(Stop::Requested("SIGTERM")),
            () = sleep_until(deadline), if deadline.is_some() => Turn::OutOfTime,
            Some((_, outcome)) = next(&mut bridge.shutdown), if bridge.shutdown.is_some() => {
                Turn::ShutdownDone(outcome)
            }
            Some((id, outcome)) = bridge.running.next(), if room && !bridge.running.is_empty() => {
                Turn::Result(id, outcome)
            }
            item = input.recv(), if room && !input_done && bridge.running.len() < MAX_RUNNING => {
                Turn::Input(item.unwrap_or(Input::Eof))
            }
            event = events.next(), if room && !events_done => Turn::Event(event),
        };
        match turn {
            Turn::Nothing => {}
            Turn::OutputClosed => {
                bridge.out.batch.clear();
                bridge.begin(Stop::Fatal("cannot write to stdout".into()));
            }
            Turn::Stop(stop) => bridge.begin(stop),
            Turn::OutOfTime => {
                tracing::warn!("the bridge did not stop within its budget; exiting");
                break;
            }
            Turn::ShutdownDone(outcome) => {
                bridge.shutdown = None;
                match bridge.shutdown_id.take() {
                    Some(id) => bridge.result(&id, outcome.map(|_| empty())),
                    None => {
                        if let Err(e) = outcome {
                            tracing::warn!(error = %e, "shutdown did not complete cleanly");
                        }
                    }
                }
            }
            Turn::Result(id, outcome) => bridge.result(&id, outcome),
            Turn::Input(Input::Line(line)) => bridge.command(&line),
            Turn::Input(Input::TooLong(length)) => bridge.result(
                &Value::Null,
                Err(format!(
                    "line of {length} bytes is longer than {} bytes; skipped",
                    io::MAX_LINE
                )),
            ),
            Turn::Input(Input::Failed(e)) => {
                tracing::warn!(error = %e, "cannot read stdin; shutting down");
                input_done = true;
                bridge.begin(Stop::Requested("stdin unreadable"));
            }
            Turn::Input(Input::Eof) => {
                input_done = true;
                bridge.begin(Stop::Requested("end of stdin"));
            }
            Turn::Event(None) => events_done = true,
            Turn::Event(Some(event)) => {
                bridge.event(event);
                for _ in 1..BURST_EVENTS {
                    if bridge.out.is_full() {
                        break;
                    }
                    match events.try_next() {
                        Some(event) => bridge.event(event),
                        None => break,
                    }
                }
            }
        }
    }
    bridge.finish().await
}

impl Bridge {
    /// Starts stopping (the first reason wins); the loop keeps serving
    /// events and results until the adapter is gone or the budget is spent.
    fn begin(&mut self, stop: Stop) {
        if self.stop.is_some() {
            if matches!(stop, Stop::Requested(_)) {
                tracing::info!("already shutting down");
            }
            return;
        }
        let budget = match &stop {
            Stop::Requested(why) => {
                tracing::info!(reason = why, "shutting down: going idle, draining, closing");
                SHUTDOWN_BUDGET
            }
            Stop::Disabled(_) | Stop::Fatal(_) => FATAL_SHUTDOWN_BUDGET,
        };
        let handle = self.handle.clone();
        self.shutdown = Some(Box::pin(async move {
            let outcome = handle.shutdown().await.map(|()| Value::Null);
            (Value::Null, outcome.map_err(|e| e.to_string()))
        }));
        self.deadline = Some(Instant::now() + budget);
        self.stop = Some(stop);
    }

    /// One input line: answered at once (bad input, accept, reject) or
    /// started against the adapter.
    fn command(&mut self, line: &[u8]) {
        match ops::parse(line) {
            Err((id, error)) => self.result(&id, Err(error)),
            Ok((id, Command::Accept { delivery })) => {
                let outcome = self.deliveries.answer(delivery, true);
                self.result(&id, outcome.map(|()| empty()));
            }
            Ok((id, Command::Reject { delivery })) => {
                let outcome = self.deliveries.answer(delivery, false);
                self.result(&id, outcome.map(|()| empty()));
            }
            Ok((id, Command::Shutdown {})) if self.shutdown.is_none() => {
                // Run as the bridge's own shutdown (polled even while
                // stdout is stalled), answered when it finishes; the
                // bridge exits once the adapter is gone.
                if self.stop.is_none() {
                    tracing::info!(
                        reason = "shutdown op",
                        "shutting down: going idle, draining, closing"
                    );
                    self.stop = Some(Stop::Requested("shutdown op"));
                    self.deadline = Some(Instant::now() + SHUTDOWN_BUDGET);
                }
                self.shutdown = Some(ops::start(&self.handle, Value::Null, Command::Shutdown {}));
                self.shutdown_id = Some(id);
            }
            Ok((id, op)) => self.running.push(ops::start(&self.handle, id, op)),
        }
    }

    fn result(&mut self, id: &Id, outcome: Outcome) {
        let line = match &outcome {
            Ok(result) => ResultLine {
                kind: "result",
                id,
                ok: true,
                result: Some(result),
                error: None,
            },
            Err(error) => ResultLine {
                kind: "result",
                id,
                ok: false,
                result: None,
                error: Some(error),
            },
        };
        self.out.line(&line);
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Message(message) => {
                let MessageEvent {
                    buffer_id,
                    json,
                    ack,
                    ..
                } = message;
                let number = self.deliveries.insert(ack);
                let out = &mut self.out;
                with_message_line(number, buffer_id.as_deref(), &json, |line| out.line(line));
            }
            Event::Interrupt {
                session_key,
                chat_id,
            } => self.out.line(&Line::Interrupt {
                session_key: &session_key,
                chat_id: &chat_id,
            }),
            Event::PromptAnswer(answer) => {
                let event = crate::cli::lines::raw_json(&answer.event_json);
                self.out.line(&Line::prompt_answer(&answer, &event));
            }
            Event::Labels(labels) => self.out.line(&Line::Labels { labels: &labels }),
            Event::State { state, detail } => {
                self.out.line(&Line::State {
                    state: state.as_str(),
                    detail: &detail,
                });
                // Outside a requested shutdown, `stopped` means the adapter
                // gave up (reconnect disabled): nothing will run.
                if state == State::Stopped {
                    self.begin(Stop::Fatal(format!("relay_stopped: {detail}")));
                }
            }
            Event::Fatal {
                code,
                message,
                retryable,
            } => {
                self.out.line(&Line::Fatal {
                    code: &code,
                    message: &message,
                    retryable,
                });
                if matches!(
                    code.as_str(),
                    "guest_trap" | "restart_failed" | "restart_budget_exhausted" | "start_failed"
                ) {
                    // The instance that issued the open deliveries is gone.
                    self.deliveries.instance_lost();
                }
                if code == "relay_disabled" {
                    self.begin(Stop::Disabled(message));
                } else if !retryable {
                    self.begin(Stop::Fatal(format!("{code}: {message}")));
                } else {
                    tracing::warn!(code, message, "relay adapter fatal error; it keeps trying");
                }
            }
        }
    }

    /// Writes what is left (bounded by the budget), then ends the process's
    /// part: unanswered deliveries are rejected (the connector may replay).
    async fn finish(self) -> Exit {
        let Bridge {
            out,
            deliveries,
            stop,
            deadline,
            ..
        } = self;
        if deliveries.open() > 0 {
            tracing::info!(
                open = deliveries.open(),
                "unanswered deliveries rejected at exit"
            );
        }
        drop(deliveries);
        let Output { batch, queue, done } = out;
        // Its own small budget: the stop's may be spent already.
        let floor = Instant::now() + FATAL_SHUTDOWN_BUDGET;
        let deadline = deadline.map_or(floor, |d| d.max(floor));
        let written = tokio::time::timeout_at(deadline, async move {
            if !batch.is_empty() && queue.send(batch).await.is_err() {
                return Err(std::io::Error::other("the writer stopped"));
            }
            drop(queue);
            done.await.unwrap_or(Ok(()))
        })
        .await;
        let output_error = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("stdout did not take the last lines within the budget".into()),
        };
        match stop {
            Some(Stop::Requested(_)) | None if output_error.is_none() => {
                tracing::info!("relay adapter stopped");
                Exit::Ok
            }
            Some(Stop::Disabled(message)) => {
                logging::final_line(&format!("disabled: {message}"));
                Exit::Disabled
            }
            Some(Stop::Fatal(message)) => {
                logging::final_line(&format!("fatal: {message}"));
                Exit::Fatal
            }
            _ => {
                let e = output_error.unwrap_or_default();
                logging::final_line(&format!("fatal: cannot write to stdout: {e}"));
                Exit::Fatal
            }
        }
    }
}

fn empty() -> Value {
    Value::Object(serde_json::Map::new())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Polls an optional running future (the branch is disabled when `None`).
async fn next(running: &mut Option<Running>) -> Option<(Id, Outcome)> {
    match running {
        Some(running) => Some(running.await),
        None => std::future::pending().await,
    }
}
