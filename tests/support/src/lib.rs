//! Shared test support for the host tests (`host/tests`), the conformance
//! suite (`tests/conformance`) and anything else that drives a real
//! adapter: the plugin singletons, the one set of fast timers, event waits
//! with deadlines, and log capture. One home for each, so the suites do not
//! grow their own copies.

#![forbid(unsafe_code)]

pub mod proxy;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use relay_host::{AdapterConfig, Event, EventStream, MessageEvent, Plugin, State};

/// Deadline of every wait.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- plugins

/// The real relay component, compiled once per process. Installs the
/// process-wide log capture first (see [`global_logs`]).
pub fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    global_logs();
    PLUGIN.get_or_init(|| Plugin::shared().expect("the built-in component loads"))
}

/// The TEST ONLY misbehaving component (`component/test-guest`), compiled
/// once per process.
pub fn misbehaving_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    global_logs();
    PLUGIN.get_or_init(|| {
        Plugin::from_bytes(relay_test_artifacts::TEST_GUEST_WASM).expect("the test guest loads")
    })
}

// ---------------------------------------------------------------- timers

/// Millisecond-scale timers for tests, jitter pinned at the top of each
/// rung, so reconnects are quick and deterministic. No identities: a suite
/// that needs some adds them.
pub fn fast(connector_url: impl Into<String>) -> AdapterConfig {
    let mut c = AdapterConfig::new(connector_url);
    c.handshake_timeout = Duration::from_secs(2);
    c.outbound_timeout = Duration::from_secs(2);
    c.reconnect_initial = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(160);
    c.reconnect_jitter = Some(1.0);
    c.stable_connection = Duration::from_millis(50);
    c.dormant_redial = Duration::from_millis(20);
    c.redial_hold_max = Duration::from_secs(5);
    c.going_idle_timeout = Duration::from_millis(300);
    c.drain_grace = Duration::from_millis(300);
    c.limits.connect_timeout = Duration::from_secs(2);
    c.limits.restart_initial = Duration::from_millis(20);
    c
}

// ---------------------------------------------------------------- events

/// The next event `pick` accepts, within [`WAIT`], skipping (and dropping)
/// others.
pub async fn next_event<T>(
    events: &mut EventStream,
    what: &str,
    pick: impl FnMut(Event) -> Option<T>,
) -> T {
    next_event_seen(events, what, |_| {}, pick).await
}

/// [`next_event`], showing `seen` every event on the way (the picked one
/// too), for suites that record states.
pub async fn next_event_seen<T>(
    events: &mut EventStream,
    what: &str,
    mut seen: impl FnMut(&Event),
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => {
                seen(&event);
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
        }
    }
}

/// The detail of the next `state` event.
pub async fn state_detail(events: &mut EventStream, state: State) -> String {
    next_event(events, &format!("state {state}"), |e| match e {
        Event::State { state: s, detail } if s == state => Some(detail),
        _ => None,
    })
    .await
}

/// The next fatal event: (code, message, retryable).
pub async fn fatal(events: &mut EventStream) -> (String, String, bool) {
    next_event(events, "a fatal event", |e| match e {
        Event::Fatal {
            code,
            message,
            retryable,
        } => Some((code, message, retryable)),
        _ => None,
    })
    .await
}

/// The next message event.
pub async fn message(events: &mut EventStream) -> MessageEvent {
    next_event(events, "a message event", |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await
}

// ---------------------------------------------------------------- logs

/// Formatted `tracing` output, for assertions on what the host logged.
#[derive(Clone, Default)]
pub struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    /// Lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the logs contain `needle`; on timeout, shows the logs.
    pub async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.contains(needle) {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {needle:?} in the logs; logs:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn subscriber(buf: LogBuf, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_writer(move || buf.clone())
        .with_ansi(false)
        .with_max_level(level)
        .finish()
}

/// This test's logs only. A thread-local default subscriber, so only for
/// current-thread tests: there the host, the stub and the guest (on a fiber
/// of the same thread) all log on the test's thread.
pub struct TestLogs {
    buf: LogBuf,
    _guard: tracing::subscriber::DefaultGuard,
}

impl std::ops::Deref for TestLogs {
    type Target = LogBuf;

    fn deref(&self) -> &LogBuf {
        &self.buf
    }
}

pub fn capture_logs() -> TestLogs {
    capture_logs_at(tracing::Level::DEBUG)
}

/// [`capture_logs`] of every record at `level` and above.
pub fn capture_logs_at(level: tracing::Level) -> TestLogs {
    global_logs();
    let buf = LogBuf::default();
    let guard = tracing::subscriber::set_default(subscriber(buf.clone(), level));
    TestLogs { buf, _guard: guard }
}

/// Process-wide logs (worker threads of multi-thread tests log here); shared
/// by all tests, so look for needles unique to the test.
///
/// Every test installs it before anything logs (the host tests' stub and
/// spawn helpers, [`capture_logs`], [`crate::plugin`]): `tracing` caches each callsite's interest when the
/// callsite is first hit, combined over the dispatchers alive at that moment.
/// With none alive it caches "never", and a test's scoped subscriber
/// registered concurrently can miss the rebuild, silently losing that
/// callsite's events. The global subscriber keeps one alive at all times.
pub fn global_logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        // `RUST_LOG=...` (any value) also shows them on stderr, to debug a
        // failing scenario: `RUST_LOG=1 cargo test -p relay-conformance x`.
        let echo = std::env::var_os("RUST_LOG").is_some();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Tee {
                buf: writer.clone(),
                echo,
            })
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        buf
    })
}

/// The global log writer: the buffer, and stderr when asked.
struct Tee {
    buf: LogBuf,
    echo: bool,
}

impl Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.echo {
            std::io::stderr().write_all(bytes)?;
        }
        self.buf.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
