//! `relay-host run`: one adapter, its events as JSON lines on stdout, the
//! `print` / `echo` agents, signals and exit codes (the `stdio` agent's loop
//! is in [`super::stdio`]).

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use relay_host::{
    Adapter, AdapterError, AdapterHandle, CacheUse, Event, EventStream, MessageEvent, Plugin,
    PluginOptions, SendResult,
};
use serde_json::Map;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use super::args::Agent;
use super::exit::{Exit, FATAL_SHUTDOWN_BUDGET, SHUTDOWN_BUDGET};
use super::lines::{Line, SentResult, with_message_line};
use super::logging;
use super::output::JsonLines;
use super::settings::Settings;

/// Why the event loop ended.
enum Stop {
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// `relay_disabled`: terminal revocation.
    Disabled(String),
    /// Another non-retryable fatal event.
    Fatal(String, String),
    /// The event stream ended without a shutdown.
    Ended,
    /// stdout cannot be written.
    OutputClosed(std::io::Error),
}

/// The echo agent's sends in flight: polled by the event loop itself (no
/// task per message); each yields its chat id and result for the `sent` line.
type Sends = FuturesUnordered<Pin<Box<dyn Future<Output = (String, SendResult)> + Send>>>;

/// What one event asks of the loop.
enum Next {
    Continue,
    Stop(Stop),
}

/// Runs the adapter until a signal or a terminal condition; returns the exit code.
pub async fn run(settings: Settings) -> Exit {
    // Before anything slow, so an early SIGTERM is a clean stop, not a kill.
    let (mut sigint, mut sigterm) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            logging::final_line(&format!("fatal: cannot install signal handlers: {e}"));
            return Exit::Fatal;
        }
    };

    let options = match &settings.cache_dir {
        Some(dir) => PluginOptions::new().cache_dir(dir),
        None => PluginOptions::new(),
    };
    let plugin = match &settings.component {
        _ if settings.native => Plugin::native(),
        Some(path) => Plugin::from_file_with(path, &options),
        None => Plugin::new_with(&options),
    };
    let plugin = match plugin {
        Ok(plugin) => plugin,
        Err(e) => {
            logging::final_line(&format!("fatal: {e}"));
            return Exit::Fatal;
        }
    };
    let cache = match plugin.cache_use() {
        CacheUse::Off => "off",
        CacheUse::Refused(_) => "refused",
        CacheUse::Hit => "hit",
        CacheUse::Miss => "miss",
    };
    tracing::info!(
        cache,
        connector = %settings.dial_url,
        identities = settings.config.identities.len().max(1),
        agent = settings.agent.as_str(),
        media_dir = settings
            .config
            .media
            .as_ref()
            .map_or_else(|| "off".to_owned(), |m| m.dir.display().to_string()),
        "starting the relay adapter"
    );
    if let Some(addr) = settings.metrics_listen {
        match super::metrics::start(addr).await {
            Ok(local) => tracing::info!(
                listen = %local,
                "serving metrics at http://{local}/metrics (no authentication)"
            ),
            Err(e) => {
                logging::final_line(&format!("fatal: {e}"));
                return Exit::Fatal;
            }
        }
    }
    let agent = settings.agent;
    // The echo agent pushes back: with `max_pending` sends in flight it
    // stops taking events, so new messages stay unaccepted, the adapter's
    // `max_undelivered` bound asks the connector to buffer, and nothing is
    // lost or refused. The print agent sends nothing.
    let in_flight_cap = match agent {
        Agent::Echo => usize::try_from(settings.config.max_pending)
            .unwrap_or(usize::MAX)
            .max(1),
        Agent::Print | Agent::Stdio => usize::MAX,
    };
    let (handle, mut events) = match Adapter::spawn(&plugin, settings.config).await {
        Ok(spawned) => spawned,
        Err(AdapterError::Config(reason)) => {
            logging::final_line(&format!("error: invalid configuration: {reason}"));
            return Exit::Usage;
        }
        Err(AdapterError::Start(reason)) => {
            logging::final_line(&format!(
                "error: the relay component refused the configuration: {reason}"
            ));
            return Exit::Usage;
        }
        Err(e) => {
            logging::final_line(&format!("fatal: {e}"));
            return Exit::Fatal;
        }
    };

    if agent == Agent::Stdio {
        return super::stdio::serve(handle, events, &mut sigint, &mut sigterm).await;
    }

    let out = JsonLines::stdout();
    let mut sends = Sends::new();
    let mut taken = Vec::new();

    let stop = loop {
        if let Err(e) = settle(&out, &mut taken, agent, &handle, &mut sends) {
            break Stop::OutputClosed(e);
        }
        tokio::select! {
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            Some((chat_id, result)) = sends.next(), if !sends.is_empty() => {
                print_sent(&out, &chat_id, &result);
                while let Some(Some((chat_id, result))) = sends.next().now_or_never() {
                    print_sent(&out, &chat_id, &result);
                }
            }
            event = events.next(), if sends.len() < in_flight_cap => match event {
                None => break Stop::Ended,
                Some(event) => {
                    let room = in_flight_cap - sends.len();
                    if let Next::Stop(stop) = on_burst(event, &mut events, &out, &mut taken, room) {
                        break stop;
                    }
                }
            },
        }
    };
    // What was printed before the stop is reported (and its messages taken).
    let stop = match settle(&out, &mut taken, agent, &handle, &mut sends) {
        Err(e) if !matches!(stop, Stop::OutputClosed(_)) => Stop::OutputClosed(e),
        _ => stop,
    };

    match stop {
        Stop::Signal(name) => {
            tracing::info!(
                signal = name,
                "shutting down: going idle, draining, closing"
            );
            let deadline = Instant::now() + SHUTDOWN_BUDGET;
            let shutdown = handle.shutdown();
            tokio::pin!(shutdown);
            let mut shutdown_done = false;
            let mut stream_done = false;
            // Keep serving events until the adapter is gone: a message that
            // lands before `going_idle_ack` is still delivered live.
            while !(shutdown_done && stream_done) {
                if let Err(e) = settle(&out, &mut taken, agent, &handle, &mut sends) {
                    tracing::warn!(error = %e, "stdout closed during shutdown");
                }
                tokio::select! {
                    result = &mut shutdown, if !shutdown_done => {
                        shutdown_done = true;
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "shutdown did not complete cleanly");
                        }
                    }
                    Some((chat_id, result)) = sends.next(), if !sends.is_empty() => {
                        print_sent(&out, &chat_id, &result);
                    }
                    event = events.next(), if !stream_done => match event {
                        None => stream_done = true,
                        Some(event) => {
                            if let Next::Stop(Stop::OutputClosed(e)) =
                                on_event(event, &out, &mut taken)
                            {
                                tracing::warn!(error = %e, "stdout closed during shutdown");
                            }
                        }
                    },
                    // Some supervisors signal the process and its group, so a
                    // repeat is normal; the budget below bounds the stop anyway.
                    _ = sigint.recv() => tracing::info!("already shutting down"),
                    _ = sigterm.recv() => tracing::info!("already shutting down"),
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::warn!("shutdown did not finish within {SHUTDOWN_BUDGET:?}; exiting");
                        break;
                    }
                }
            }
            if let Err(e) = settle(&out, &mut taken, agent, &handle, &mut sends) {
                tracing::warn!(error = %e, "stdout closed during shutdown");
            }
            // Sends still in flight resolve once the adapter stopped.
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some((chat_id, result)) = sends.next().await {
                    print_sent(&out, &chat_id, &result);
                }
            })
            .await;
            if let Err(e) = out.flush() {
                tracing::warn!(error = %e, "stdout closed during shutdown");
            }
            tracing::info!("relay adapter stopped");
            Exit::Ok
        }
        Stop::Disabled(message) => {
            courtesy_shutdown(&handle).await;
            logging::final_line(&format!("disabled: {message}"));
            Exit::Disabled
        }
        Stop::Fatal(code, message) => {
            courtesy_shutdown(&handle).await;
            logging::final_line(&format!("fatal: {code}: {message}"));
            Exit::Fatal
        }
        Stop::Ended => {
            logging::final_line("fatal: the relay adapter stopped unexpectedly");
            Exit::Fatal
        }
        Stop::OutputClosed(e) => {
            // Going idle makes the connector buffer what this process can
            // no longer report.
            courtesy_shutdown(&handle).await;
            logging::final_line(&format!("fatal: cannot write to stdout: {e}"));
            Exit::Fatal
        }
    }
}

/// A bounded `shutdown` before a fatal exit (the connector then buffers).
async fn courtesy_shutdown(handle: &AdapterHandle) {
    if tokio::time::timeout(FATAL_SHUTDOWN_BUDGET, handle.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("shutdown before exit timed out");
    }
}

/// Most events taken in one burst before the lines are written.
const BURST_EVENTS: usize = 256;

/// `first` and the events already queued behind it (up to
/// [`BURST_EVENTS`], and while fewer than `room` messages are taken), so
/// their lines go out in one write.
fn on_burst(
    first: Event,
    events: &mut EventStream,
    out: &JsonLines,
    taken: &mut Vec<MessageEvent>,
    room: usize,
) -> Next {
    if let Next::Stop(stop) = on_event(first, out, taken) {
        return Next::Stop(stop);
    }
    for _ in 1..BURST_EVENTS {
        if taken.len() >= room {
            break;
        }
        let Some(event) = events.try_next() else {
            break;
        };
        if let Next::Stop(stop) = on_event(event, out, taken) {
            return Next::Stop(stop);
        }
    }
    Next::Continue
}

/// Writes the buffered lines, then answers the messages they reported:
/// accepted (and echoed) once their line is out; rejected if stdout is
/// gone (not reported, so not taken: the connector may replay them).
fn settle(
    out: &JsonLines,
    taken: &mut Vec<MessageEvent>,
    agent: Agent,
    handle: &AdapterHandle,
    sends: &mut Sends,
) -> std::io::Result<()> {
    if let Err(e) = out.flush() {
        for message in taken.drain(..) {
            message.reject();
        }
        return Err(e);
    }
    for message in taken.drain(..) {
        let MessageEvent {
            chat_id, text, ack, ..
        } = message;
        ack.accept();
        if agent == Agent::Echo {
            let handle = handle.clone();
            // Pipelined: the loop takes the next event while this send waits.
            sends.push(Box::pin(async move {
                let result = handle
                    .send(chat_id.clone(), text, None, Map::new(), None)
                    .await;
                (chat_id, result)
            }));
        }
    }
    Ok(())
}

/// Prints one event; a message is parked in `taken` until its line is out.
fn on_event(event: Event, out: &JsonLines, taken: &mut Vec<MessageEvent>) -> Next {
    match event {
        Event::Message(message) => on_message(message, out, taken),
        Event::Interrupt {
            session_key,
            chat_id,
        } => print(
            out,
            &Line::Interrupt {
                session_key: &session_key,
                chat_id: &chat_id,
            },
        ),
        Event::PromptAnswer(answer) => {
            let event = super::lines::raw_json(&answer.event_json);
            print(out, &Line::prompt_answer(&answer, &event))
        }
        Event::Labels(labels) => print(out, &Line::Labels { labels: &labels }),
        Event::State { state, detail } => {
            let next = print(
                out,
                &Line::State {
                    state: state.as_str(),
                    detail: &detail,
                },
            );
            // Outside a requested shutdown, `stopped` means the adapter gave
            // up (reconnect disabled in the configuration): nothing will run.
            if state == relay_host::State::Stopped && matches!(next, Next::Continue) {
                return Next::Stop(Stop::Fatal("relay_stopped".into(), detail));
            }
            next
        }
        Event::Fatal {
            code,
            message,
            retryable,
        } => {
            if let Next::Stop(stop) = print(
                out,
                &Line::Fatal {
                    code: &code,
                    message: &message,
                    retryable,
                },
            ) {
                return Next::Stop(stop);
            }
            if code == "relay_disabled" {
                Next::Stop(Stop::Disabled(message))
            } else if !retryable {
                Next::Stop(Stop::Fatal(code, message))
            } else {
                tracing::warn!(code, message, "relay adapter fatal error; it keeps trying");
                Next::Continue
            }
        }
    }
}

fn on_message(message: MessageEvent, out: &JsonLines, taken: &mut Vec<MessageEvent>) -> Next {
    let written = with_message_line(
        message.delivery,
        message.buffer_id.as_deref(),
        &message.json,
        |line| out.line(line),
    );
    if let Err(e) = written {
        // Not reported, so not taken: the connector may replay it.
        message.reject();
        return Next::Stop(Stop::OutputClosed(e));
    }
    taken.push(message);
    Next::Continue
}

/// The `sent` line of an echo; a closed stdout is only logged here (the
/// event loop notices it on the next event line).
fn print_sent(out: &JsonLines, chat_id: &str, result: &SendResult) {
    let line = Line::Sent {
        chat_id,
        result: SentResult::from(result),
    };
    if let Err(e) = out.line(&line) {
        tracing::warn!(error = %e, "cannot write a sent line to stdout");
    }
}

fn print(out: &JsonLines, line: &Line<'_>) -> Next {
    match out.line(line) {
        Ok(()) => Next::Continue,
        Err(e) => Next::Stop(Stop::OutputClosed(e)),
    }
}
