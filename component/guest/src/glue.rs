//! The guest side of the boundary: the one machine of this instance, the
//! WASI clocks, and [`Imports`], the [`Effects`] that reach the host as WIT
//! import calls. Feeding and draining is `relay_core::driver`'s, shared with
//! the host's native engine. Imports never call back into the component, so
//! the machine's `RefCell` is never borrowed twice. No protocol logic here.

use crate::hermes::relay::host;
use crate::hermes::relay::types::{Config as WitConfig, FatalError, LogLevel};
use relay_core::driver::{self, Effects, EventRecord};
use relay_core::machine::{
    ChatLabels, Command, Completion, Delivery, Input, Level, Machine, MediaRequest, Now,
    PromptAnswer, State,
};
use std::cell::{Cell, RefCell};

thread_local! {
    static MACHINE: RefCell<Option<Machine>> = const { RefCell::new(None) };
    /// (monotonic ns, wall ns) of the last wall-clock read.
    static WALL_SYNC: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// The wall clock is read at most once per second of monotonic time and
/// advanced by the monotonic clock in between (so a wall-clock step shows
/// within a second): only token expiry reads it, and it saves one import
/// call per export call.
const WALL_RESYNC_NS: u64 = 1_000_000_000;

fn now() -> Now {
    let mono_ns = wasip2::clocks::monotonic_clock::now();
    let wall_ns = WALL_SYNC.with(|sync| match sync.get() {
        Some((at, wall_ns)) if mono_ns.saturating_sub(at) < WALL_RESYNC_NS => {
            wall_ns.saturating_add(mono_ns.saturating_sub(at))
        }
        _ => {
            let wall = wasip2::clocks::wall_clock::now();
            let wall_ns = wall
                .seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(wall.nanoseconds));
            sync.set(Some((mono_ns, wall_ns)));
            wall_ns
        }
    });
    Now {
        mono_ns,
        wall_secs: wall_ns / 1_000_000_000,
    }
}

/// The host, reached through the WIT imports. Deliveries are gathered and
/// handed over in one `deliver` call: before any other import that reports
/// to the gateway (so reports keep their order), and at the end of the
/// drain ([`Imports::with`]).
#[derive(Default)]
struct Imports {
    events: Vec<crate::hermes::relay::types::MessageEvent>,
}

impl Imports {
    fn flush(&mut self) {
        if !self.events.is_empty() {
            host::deliver(&self.events);
            self.events.clear();
        }
    }

    /// Runs `f` with fresh imports, then hands over what is still gathered.
    fn with<T>(f: impl FnOnce(&mut Imports) -> T) -> T {
        let mut fx = Imports::default();
        let out = f(&mut fx);
        fx.flush();
        out
    }
}

impl Effects for Imports {
    fn now(&mut self) -> Now {
        now()
    }

    fn prompt_answered(&mut self, answer: PromptAnswer) {
        self.flush();
        let answer = relay_core::to_record!(crate::hermes::relay::types, prompt_answer, answer);
        host::prompt_answered(&answer);
    }

    fn fetch_media(&mut self, job: u64, request: MediaRequest) {
        let request = relay_core::to_record!(crate::hermes::relay::types, media_request, request);
        host::fetch_media(job, &request);
    }

    fn upload_media(&mut self, job: u64, request: MediaRequest, path: String) {
        let request = relay_core::to_record!(crate::hermes::relay::types, media_request, request);
        host::upload_media(job, &request, &path);
    }

    fn delete_media(&mut self, paths: Vec<String>) {
        host::delete_media(&paths);
    }

    fn labels_observed(&mut self, labels: ChatLabels) {
        self.flush();
        let labels = relay_core::to_record!(crate::hermes::relay::types, chat_labels, labels);
        host::labels_observed(&labels);
    }

    fn dial(&mut self, conn: u32, url: String, headers: Vec<(String, String)>) {
        host::dial(conn, &url, &headers);
    }

    fn send_text(&mut self, conn: u32, text: String) -> Result<(), String> {
        host::send_text(conn, &text)
    }

    fn close(&mut self, conn: u32, code: u16, reason: String) {
        host::close(conn, code, &reason);
    }

    fn set_deadline(&mut self, at: Option<u64>) {
        host::set_deadline(at);
    }

    fn deliver(&mut self, delivery: Delivery) {
        self.events.push(relay_core::to_record!(
            crate::hermes::relay::types,
            event,
            EventRecord::from(delivery)
        ));
    }

    fn interrupt(&mut self, session_key: String, chat_id: String) {
        self.flush();
        host::interrupt(&session_key, &chat_id);
    }

    fn complete(&mut self, request: u64, completion: Completion) {
        self.flush();
        complete(request, completion);
    }

    fn state_changed(&mut self, state: State, detail: String) {
        self.flush();
        host::state_changed(state_to_wit(state), &detail);
    }

    fn fatal(&mut self, code: String, message: String, retryable: bool) {
        self.flush();
        host::fatal(&FatalError {
            code,
            message,
            retryable,
        });
    }

    fn log(&mut self, level: Level, message: String) {
        host::log(
            relay_core::to_record!(crate::hermes::relay::types, level, level),
            &message,
        );
    }
}

fn complete(request: u64, completion: Completion) {
    let completion = relay_core::to_record!(crate::hermes::relay::types, completion, completion);
    host::complete(request, &completion);
}

/// The WIT state of a machine state.
pub fn state_to_wit(state: State) -> crate::hermes::relay::types::State {
    relay_core::to_record!(crate::hermes::relay::types, state, state)
}

/// Feeds the inputs `inputs` yields, one clock read and one drain for all.
pub fn feed_all<'a>(inputs: impl IntoIterator<Item = Input<'a>>) {
    MACHINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(machine) = slot.as_mut() else {
            host::log(LogLevel::Warn, "relay adapter: input before start ignored");
            return;
        };
        let now = now();
        for input in inputs {
            machine.handle(now, input);
        }
        Imports::with(|fx| driver::drain(machine, fx));
    });
}

/// Feeds one input and drains every output into the imports.
pub fn feed(input: Input<'_>) {
    MACHINE.with(|cell| match cell.borrow_mut().as_mut() {
        Some(machine) => Imports::with(|fx| driver::step(machine, fx, input)),
        None => host::log(LogLevel::Warn, "relay adapter: input before start ignored"),
    });
}

/// Feeds a command; before `start` it still completes, with a failure.
pub fn command(request: u64, command: Command<'_>) {
    let started = MACHINE.with(|cell| cell.borrow().is_some());
    if started {
        feed(Input::Command { request, command });
    } else {
        complete(request, driver::unstarted(&command));
    }
}

/// Feeds several commands with one clock read and one drain; before
/// `start` each still completes, with a failure.
pub fn commands<'a>(commands: impl IntoIterator<Item = (u64, Command<'a>)>) {
    let started = MACHINE.with(|cell| cell.borrow().is_some());
    if started {
        feed_all(
            commands
                .into_iter()
                .map(|(request, command)| Input::Command { request, command }),
        );
    } else {
        for (request, command) in commands {
            complete(request, driver::unstarted(&command));
        }
    }
}

/// A query of the machine, or `default` before `start`.
pub fn query<T>(default: T, f: impl FnOnce(&Machine) -> T) -> T {
    MACHINE.with(|cell| cell.borrow().as_ref().map(f).unwrap_or(default))
}

/// Mints a prompt id (a state change with no outputs, so no drain); an
/// unstarted adapter mints nothing and answers "".
pub fn mint_prompt(chat_id: &str, kind: &str) -> String {
    let now = now();
    MACHINE.with(|cell| {
        cell.borrow_mut()
            .as_mut()
            .map(|m| m.mint_prompt(now, chat_id, kind))
            .unwrap_or_default()
    })
}

/// Builds and starts the machine (once per instance).
pub fn start(config: WitConfig) -> Result<(), String> {
    let already = MACHINE.with(|cell| cell.borrow().is_some());
    if already {
        return Err("relay adapter already started".to_owned());
    }
    let seed = wasip2::random::random::get_random_u64();
    let machine =
        Machine::new(relay_core::config_from_record!(&config), seed).map_err(|e| e.to_string())?;
    MACHINE.with(|cell| *cell.borrow_mut() = Some(machine));
    feed(Input::Start);
    Ok(())
}
