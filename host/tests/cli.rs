//! The `relay-host` command-line contract, tested on the real binary against
//! the stub connector (`relay-stub`): the stdout JSON lines and nothing
//! else, the agents, the exit codes, the secret rules, `config check`,
//! `inspect`, `demo`, and the `embed` example.
//!
//! Every wait has a deadline; a child process still running when its guard
//! drops (a failed assertion included) is killed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_stub::{OutboundReply, StubConfig, StubConnector, UpgradeFate, descriptors, events};
use serde_json::{Value, json};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_relay-host");
/// First `ready`: includes compiling the component (debug build, tests in
/// parallel on a small machine).
const START: Duration = Duration::from_secs(90);
/// Any other wait.
const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "cli-test-s3cret-9f2c";
/// Every variable the binary reads; cleared for each child.
const ENV_VARS: &[&str] = &[
    "GATEWAY_RELAY_URL",
    "GATEWAY_RELAY_ID",
    "GATEWAY_RELAY_PLATFORMS",
    "GATEWAY_RELAY_BOT_IDS",
    "GATEWAY_RELAY_SECRET",
    "RELAY_METRICS_LISTEN",
    "GATEWAY_RELAY_CA_FILE",
    "GATEWAY_RELAY_MEDIA_DIR",
    "RELAY_CACHE_DIR",
    "RUST_LOG",
];
/// Short timers for tests.
const FAST: &str = "\
handshake_timeout_ms = 5000
reconnect_initial_ms = 50
reconnect_max_ms = 200
reconnect_jitter = 1.0
stable_connection_ms = 100
going_idle_timeout_ms = 1000
drain_grace_ms = 200
connect_timeout_ms = 5000
";
const STATES: &[&str] = &[
    "connecting",
    "handshaking",
    "ready",
    "reconnecting",
    "idle",
    "dormant",
    "disabled",
    "stopped",
];

// ----- child processes -------------------------------------------------------

/// One output stream of a child, collected line by line on a thread.
struct Stream {
    lines: Mutex<Vec<String>>,
    /// While true the pump reads nothing more ([`Proc::pause_stdout`]).
    paused: (Mutex<bool>, std::sync::Condvar),
    eof: AtomicBool,
    changed: watch::Sender<u64>,
}

impl Stream {
    fn pump(reader: impl Read + Send + 'static) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            lines: Mutex::new(Vec::new()),
            paused: (Mutex::new(false), std::sync::Condvar::new()),
            eof: AtomicBool::new(false),
            changed: watch::Sender::new(0),
        });
        let s = Arc::clone(&stream);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                {
                    let mut paused = s.paused.0.lock().unwrap();
                    while *paused {
                        paused = s.paused.1.wait(paused).unwrap();
                    }
                }
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        s.lines.lock().unwrap().push(line);
                        s.changed.send_modify(|v| *v += 1);
                    }
                }
            }
            s.eof.store(true, Ordering::SeqCst);
            s.changed.send_modify(|v| *v += 1);
        });
        stream
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// A running `relay-host` (or example) process; killed on drop.
struct Proc {
    child: Child,
    out: Arc<Stream>,
    err: Arc<Stream>,
    label: String,
}

impl Proc {
    fn start(mut cmd: Command, label: &str) -> Proc {
        cmd.stdin(Stdio::null());
        Self::spawn(cmd, label)
    }

    /// A process whose stdin the test writes (`run --agent stdio`).
    fn start_piped(mut cmd: Command, label: &str) -> (Proc, std::process::ChildStdin) {
        cmd.stdin(Stdio::piped());
        let mut p = Self::spawn(cmd, label);
        let stdin = p.child.stdin.take().unwrap();
        (p, stdin)
    }

    fn spawn(mut cmd: Command, label: &str) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot spawn: {e}"));
        let out = Stream::pump(child.stdout.take().unwrap());
        let err = Stream::pump(child.stderr.take().unwrap());
        Proc {
            child,
            out,
            err,
            label: label.to_string(),
        }
    }

    fn context(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.label,
            self.out.text(),
            tail(&self.err.text(), 40)
        )
    }

    /// The first stdout JSON line matching `pred`.
    async fn wait_line(
        &self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.out.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let found = self
                .out
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v));
            if let Some(found) = found {
                return found;
            }
            if self.out.eof.load(Ordering::SeqCst) {
                panic!("stdout ended before {what}: {}", self.context());
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {}",
                    self.context()
                );
            }
        }
    }

    /// Waits until `n` stdout JSON lines match `pred` (each line is read
    /// once, so a long output stays linear).
    async fn wait_count(
        &self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        n: usize,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.out.changed.subscribe();
        let (mut read, mut count) = (0, 0);
        loop {
            changed.borrow_and_update();
            {
                let lines = self.out.lines.lock().unwrap();
                count += lines[read..]
                    .iter()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| pred(v))
                    .count();
                read = lines.len();
            }
            if count >= n {
                return;
            }
            if self.out.eof.load(Ordering::SeqCst) {
                panic!(
                    "stdout ended after {count} of {n} {what}: {}",
                    tail(&self.stderr(), 40)
                );
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out after {timeout:?} with {count} of {n} {what}: {}",
                    tail(&self.stderr(), 40)
                );
            }
        }
    }

    /// Stops reading stdout (the pipe fills and the child's writes block)
    /// until [`Proc::resume_stdout`]; lines read so far stay.
    fn pause_stdout(&self) {
        *self.out.paused.0.lock().unwrap() = true;
    }

    fn resume_stdout(&self) {
        *self.out.paused.0.lock().unwrap() = false;
        self.out.paused.1.notify_all();
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit code, once the process ended and its output was read.
    async fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: still running after {timeout:?}: {}",
                    self.label,
                    self.context()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for stream in [&self.out, &self.err] {
            let mut changed = stream.changed.subscribe();
            while !stream.eof.load(Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(Instant::now());
                if tokio::time::timeout(left, changed.changed()).await.is_err() {
                    panic!("{}: output not closed after exit", self.label);
                }
            }
        }
        status.code().unwrap_or_else(|| {
            panic!(
                "{}: killed by a signal ({status}): {}",
                self.label,
                self.context()
            )
        })
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn stdout_lines(&self) -> Vec<String> {
        self.out.lines()
    }

    fn stderr(&self) -> String {
        self.err.text()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `relay-host ARGS` with a clean environment for the binary's variables.
fn relay_host(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    // One compilation cache for the whole run, inside the target directory
    // (never the user's home); tests of the cache itself pass their own.
    cmd.env("RELAY_CACHE_DIR", shared_cache_dir());
    cmd
}

fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("relay-cli-cache")
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "relay-host-cli-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ----- the stdout contract ---------------------------------------------------

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn string_or_null(v: &Value) -> bool {
    v.is_string() || v.is_null()
}

/// Parses one stdout line and checks its documented shape.
fn check_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
    let kind = v["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("no kind: {line}"));
    assert!(line.starts_with(r#"{"kind":""#), "kind first: {line}");
    match kind {
        "message" => {
            assert_eq!(
                keys(&v),
                set(&["kind", "delivery", "buffer_id", "event"]),
                "{line}"
            );
            assert!(v["delivery"].is_u64(), "{line}");
            assert!(string_or_null(&v["buffer_id"]), "{line}");
            assert!(v["event"].is_object(), "{line}");
            assert!(v["event"]["source"].is_object(), "nested source: {line}");
            assert!(v["event"]["text"].is_string(), "{line}");
        }
        "interrupt" => {
            assert_eq!(keys(&v), set(&["kind", "session_key", "chat_id"]), "{line}");
            assert!(
                v["session_key"].is_string() && v["chat_id"].is_string(),
                "{line}"
            );
        }
        "state" => {
            assert_eq!(keys(&v), set(&["kind", "state", "detail"]), "{line}");
            assert!(
                STATES.contains(&v["state"].as_str().unwrap_or("")),
                "{line}"
            );
            assert!(v["detail"].is_string(), "{line}");
        }
        "fatal" => {
            assert_eq!(
                keys(&v),
                set(&["kind", "code", "message", "retryable"]),
                "{line}"
            );
            assert!(v["code"].is_string() && v["message"].is_string(), "{line}");
            assert!(v["retryable"].is_boolean(), "{line}");
        }
        "result" => {
            let ok = v["ok"].as_bool().unwrap_or_else(|| panic!("ok: {line}"));
            let body = if ok { "result" } else { "error" };
            assert_eq!(keys(&v), set(&["kind", "id", "ok", body]), "{line}");
            assert!(
                v["id"].is_string() || v["id"].is_i64() || v["id"].is_u64() || v["id"].is_null(),
                "{line}"
            );
            if ok {
                assert!(v["result"].is_object(), "{line}");
            } else {
                assert!(v["error"].is_string(), "{line}");
            }
        }
        "sent" => {
            assert_eq!(keys(&v), set(&["kind", "chat_id", "result"]), "{line}");
            assert!(v["chat_id"].is_string(), "{line}");
            let r = &v["result"];
            assert_eq!(
                keys(r),
                set(&[
                    "success",
                    "message_id",
                    "error",
                    "code",
                    "ambiguous",
                    "declined",
                    "thread_id",
                    "auto_thread_name"
                ]),
                "{line}"
            );
            assert!(
                r["success"].is_boolean() && r["ambiguous"].is_boolean(),
                "{line}"
            );
            assert!(r["declined"].is_boolean(), "{line}");
            for k in [
                "message_id",
                "error",
                "code",
                "thread_id",
                "auto_thread_name",
            ] {
                assert!(string_or_null(&r[k]), "{k}: {line}");
            }
        }
        "prompt_answer" => {
            assert_eq!(
                keys(&v),
                set(&[
                    "kind",
                    "prompt_id",
                    "prompt_kind",
                    "option_id",
                    "chat_id",
                    "user_id",
                    "prompt_message_id",
                    "choice",
                    "text_capture",
                    "event"
                ]),
                "{line}"
            );
            for k in ["prompt_id", "prompt_kind", "option_id", "chat_id"] {
                assert!(v[k].is_string(), "{k}: {line}");
            }
            for k in ["user_id", "prompt_message_id", "choice"] {
                assert!(string_or_null(&v[k]), "{k}: {line}");
            }
            assert!(v["text_capture"].is_boolean(), "{line}");
            assert!(v["event"].is_object(), "{line}");
        }
        "labels" => {
            assert_eq!(keys(&v), set(&["kind", "labels"]), "{line}");
            let l = &v["labels"];
            assert_eq!(
                keys(l),
                set(&[
                    "scope_id",
                    "chat_id",
                    "chat_name",
                    "chat_topic",
                    "parent_chat_id",
                    "user_id",
                    "user_name"
                ]),
                "{line}"
            );
            assert!(
                l["scope_id"].is_string() && l["chat_id"].is_string(),
                "{line}"
            );
            for k in [
                "chat_name",
                "chat_topic",
                "parent_chat_id",
                "user_id",
                "user_name",
            ] {
                assert!(string_or_null(&l[k]), "{k}: {line}");
            }
        }
        other => panic!("unknown kind {other:?}: {line}"),
    }
    v
}

/// Every stdout line, each checked.
fn check_stdout(p: &Proc) -> Vec<Value> {
    p.stdout_lines().iter().map(|l| check_line(l)).collect()
}

fn is_state(v: &Value, state: &str) -> bool {
    v["kind"] == "state" && v["state"] == state
}

async fn stub(config: StubConfig) -> StubConnector {
    StubConnector::start(config).await.expect("start the stub")
}

// The two-way bridge: `run --agent stdio`.
#[path = "cli/stdio.rs"]
mod stdio;

// The Python host's pytest suite (host/python).
#[path = "cli/python.rs"]
mod python;

// ----- run -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_agent_reports_every_event_and_sigterm_exits_0() {
    let stub = stub(StubConfig::default()).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let args = [
        "run",
        "--connector",
        &url,
        "--platform",
        "discord",
        "--bot-id",
        "123",
        "--config",
        cfg.path(),
    ];
    let mut p = Proc::start(relay_host(&args), "run --agent print");

    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let conn = stub.wait_for_handshakes(1, WAIT).await.unwrap();
    assert_eq!(conn.hellos[0].platform, "discord");
    assert_eq!(conn.hellos[0].bot_id, "123");

    // A live message: printed, accepted (nothing to ack), never answered.
    stub.push_inbound(events::discord_text("hello cli"))
        .await
        .unwrap();
    let m = p
        .wait_line("the message", |v| v["kind"] == "message", WAIT)
        .await;
    assert_eq!(m["event"]["text"], "hello cli");
    assert_eq!(m["event"]["source"]["chat_id"], "chan1");
    assert_eq!(m["event"]["source"]["scope_id"], "guildA");
    assert_eq!(m["buffer_id"], Value::Null);

    // A buffered one: accepted after its line, so the connector gets the ack.
    stub.push_buffered(events::discord_text("from the buffer"), Some("buf-cli-1"))
        .await;
    let m = p
        .wait_line(
            "the buffered message",
            |v| v["buffer_id"] == "buf-cli-1",
            WAIT,
        )
        .await;
    assert_eq!(m["event"]["text"], "from the buffer");
    stub.wait_for_ack("buf-cli-1", WAIT).await.unwrap();

    stub.interrupt_inbound("agent:main:discord:group:chan1:u1", "chan1")
        .await
        .unwrap();
    let i = p
        .wait_line("the interrupt", |v| v["kind"] == "interrupt", WAIT)
        .await;
    assert_eq!(i["session_key"], "agent:main:discord:group:chan1:u1");
    assert_eq!(i["chat_id"], "chan1");

    // Twice, as supervisors that signal the process and its group do.
    let sigterm = Instant::now();
    p.signal("TERM");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    assert!(
        sigterm.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        sigterm.elapsed()
    );
    stub.wait_for_frame_type("going_idle", WAIT).await.unwrap();
    assert!(
        stub.frames().iter().all(|f| f.op() != Some("send")),
        "the print agent never sends"
    );

    let lines = check_stdout(&p);
    let states: Vec<&str> = lines
        .iter()
        .filter(|v| v["kind"] == "state")
        .filter_map(|v| v["state"].as_str())
        .collect();
    assert_eq!(states.first(), Some(&"connecting"), "{states:?}");
    assert!(
        states.contains(&"handshaking") && states.contains(&"ready"),
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&"stopped"), "{states:?}");
    assert!(
        p.stderr().contains("unauthenticated"),
        "no gateway id and no secret warns: {}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_agent_replies_pipelined_with_scope_reattached() {
    let stub = stub(StubConfig::default()).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let args = [
        "run",
        "--connector",
        &url,
        "--agent",
        "echo",
        "--config",
        cfg.path(),
    ];
    let mut p = Proc::start(relay_host(&args), "run --agent echo");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;

    // The first reply is held by the connector ...
    stub.queue_outbound_reply(Some("send"), OutboundReply::NoAnswer);
    stub.push_inbound(events::discord_text("first"))
        .await
        .unwrap();
    let held = stub.wait_for_pending_request(WAIT).await.unwrap();
    let action = &held.frame["action"];
    assert_eq!(action["op"], "send");
    assert_eq!(action["chat_id"], "chan1");
    assert_eq!(action["content"], "first");
    assert_eq!(action["reply_to"], Value::Null);
    assert_eq!(
        action["metadata"],
        json!({"scope_id": "guildA", "user_id": "u1"})
    );

    // ... and the next message is still answered meanwhile.
    stub.push_inbound(events::dm("discord", "dm-9", "u9", "second"))
        .await
        .unwrap();
    let sent2 = p
        .wait_line(
            "the DM's sent line",
            |v| v["kind"] == "sent" && v["chat_id"] == "dm-9",
            WAIT,
        )
        .await;
    assert_eq!(sent2["result"]["success"], true);
    assert!(sent2["result"]["message_id"].is_string());
    let dm_send = stub
        .wait_for_frame(
            |f| {
                f.op() == Some("send")
                    && f.get("action").map(|a| &a["chat_id"]) == Some(&json!("dm-9"))
            },
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        dm_send.get("action").unwrap()["metadata"],
        json!({"user_id": "u9"})
    );
    assert_eq!(dm_send.get("action").unwrap()["content"], "second");

    stub.answer(
        &held.request_id,
        json!({"success": true, "message_id": "late-1"}),
    )
    .await
    .unwrap();
    let sent1 = p
        .wait_line(
            "the guild sent line",
            |v| v["kind"] == "sent" && v["chat_id"] == "chan1",
            WAIT,
        )
        .await;
    assert_eq!(sent1["result"]["message_id"], "late-1");

    p.signal("INT");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    let lines = check_stdout(&p);
    let sent_order: Vec<&Value> = lines
        .iter()
        .filter(|v| v["kind"] == "sent")
        .map(|v| &v["chat_id"])
        .collect();
    assert_eq!(sent_order, [&json!("dm-9"), &json!("chan1")], "pipelined");
}

/// An operator runs a plugin built against the frozen WIT 0.1.0 with
/// `--component`: it echoes like the built-in 0.2.0 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_0_1_0_component_echoes() {
    let stub = stub(StubConfig::default()).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/relay-adapter-0.1.0.wasm"
    );
    let args = [
        "run",
        "--connector",
        &url,
        "--agent",
        "echo",
        "--config",
        cfg.path(),
        "--component",
        fixture,
    ];
    let mut p = Proc::start(relay_host(&args), "run --component 0.1.0");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    stub.push_inbound(events::discord_text("old plugin"))
        .await
        .unwrap();
    let sent = p
        .wait_line("the sent line", |v| v["kind"] == "sent", WAIT)
        .await;
    assert_eq!(sent["result"]["success"], true, "{sent}");
    let outbound = stub.wait_for_frame_type("outbound", WAIT).await.unwrap();
    let action = &outbound.json.unwrap()["action"];
    assert_eq!(
        (&action["content"], &action["metadata"]["scope_id"]),
        (&json!("old plugin"), &json!("guildA"))
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
}

/// Issue 14: a connector drains a backlog of `chats` messages, one per
/// distinct chat, in messages of 50 frames; the echo agent answers each
/// exactly once, routed, with nothing refused or lost (it stops taking
/// events at `max_pending` sends in flight, so the adapter's bounds make the
/// connector buffer instead).
async fn echo_agent_answers_a_burst(chats: usize, extra_config: &str) {
    let stub = stub(StubConfig::default()).await;
    let cfg = TempFile::new("fast.toml", format!("{FAST}{extra_config}").as_bytes());
    let url = stub.base_url();
    let args = [
        "run",
        "--connector",
        &url,
        "--agent",
        "echo",
        "--config",
        cfg.path(),
    ];
    let mut p = Proc::start(relay_host(&args), "run --agent echo (burst)");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let burst = relay_stub::burst::burst_events(chats);
    stub.push_burst(&burst, 50).await.unwrap();
    p.wait_count(
        "sent lines",
        |v| v["kind"] == "sent",
        chats,
        Duration::from_secs(240),
    )
    .await;
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", tail(&p.stderr(), 40));
    let lines = check_stdout(&p);
    let sent: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "sent").collect();
    let mut delivered: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
    for v in lines.iter().filter(|v| v["kind"] == "message") {
        let chat = v["event"]["source"]["chat_id"].as_str().unwrap_or("");
        delivered.entry(chat).or_default().push(&v["buffer_id"]);
    }
    let twice: Vec<_> = delivered
        .iter()
        .filter(|(_, b)| b.len() > 1)
        .take(8)
        .collect();
    let states: Vec<&Value> = lines
        .iter()
        .filter(|v| v["kind"] == "fatal" || (v["kind"] == "state" && v["state"] != "ready"))
        .take(30)
        .collect();
    assert!(
        twice.is_empty(),
        "delivered twice: {twice:?}; states {states:?}"
    );
    assert_eq!(sent.len(), chats, "one reply per message");
    let failed: Vec<&&Value> = sent
        .iter()
        .filter(|v| v["result"]["success"] != true)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let messages = lines.iter().filter(|v| v["kind"] == "message").count();
    assert_eq!(messages, chats, "every message reported once");
    let audit = stub.with_state(|s| relay_stub::burst::audit_replies(s, chats));
    assert!(audit.is_clean(), "{}", audit.summary());
    assert!(
        !p.stderr().contains("pending limit"),
        "no reply refused: {}",
        tail(&p.stderr(), 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_agent_answers_every_message_of_a_5000_chat_burst_once_and_routed() {
    // The echo agent does push the adapter into the overload drain; see the
    // 20,000 case for why the dedupe memory is raised.
    echo_agent_answers_a_burst(5_000, "seen_capacity = 32768\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_agent_answers_every_message_of_a_20000_chat_burst_once_and_routed() {
    // Default bounds but `seen_capacity`: across the overload drain's
    // re-dials the stub may replay on the new connection before it has read
    // the acks still queued on the closed one, and a replay whose accept is
    // older than the last `seen_capacity` accepted keys is delivered again
    // (rarely at 512 keys: 0 to 138 of 20,000 in our runs). That window is
    // the reliability issue's ledger; here the dedupe memory covers it.
    echo_agent_answers_a_burst(20_000, "seen_capacity = 32768\n").await;
}

// ----- metrics ---------------------------------------------------------------

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `GET path` over a plain TCP connection: (status line, body).
async fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    Ok((status, body.to_string()))
}

/// The sum of the samples of `name` whose labels include every `labels`
/// pair, or `None` when there is none (Prometheus text format).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let have: Vec<(&str, &str)> = series_labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

/// Peak resident memory (VmHWM) of a process, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// Issue 19: a connector that streams maximal (1 MiB) lines as fast as it
/// can meets TCP backpressure; the adapter's memory does not follow the
/// stream. Bounded by bytes here (256 MiB); `RELAY_FLOOD_SECS=60` streams
/// for that long instead (the figure in docs/operations.md, measured on a
/// release build: `cargo test --release -p relay-host --test cli flood --
/// --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_line_flood_keeps_the_adapter_memory_flat() {
    const LINE: usize = 1 << 20;
    const SENDERS: usize = 4;
    let budget_bytes: usize = 256 << 20;
    let seconds: Option<u64> = std::env::var("RELAY_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let stub = stub(StubConfig::default()).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let args = ["run", "--connector", &url, "--config", cfg.path()];
    let mut cmd = relay_host(&args);
    cmd.env("RUST_LOG", "warn");
    let p = Proc::start(cmd, "run (flood)");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let pid = p.child.id();
    let before = vm_hwm(pid);

    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let stub = stub.clone();
        let sent = Arc::clone(&sent);
        senders.push(tokio::spawn(async move {
            loop {
                let more = match seconds {
                    Some(s) => started.elapsed() < Duration::from_secs(s),
                    None => sent.fetch_add(LINE, Ordering::SeqCst) < budget_bytes,
                };
                if !more {
                    break;
                }
                stub.send_sized_frame(json!({"type": "relay_noise"}), LINE)
                    .await
                    .expect("the connector's write");
                if seconds.is_some() {
                    sent.fetch_add(LINE, Ordering::SeqCst);
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    // Frames of one connection are taken in order: once this message is
    // printed, every noise line before it went through the component.
    stub.push_inbound(events::discord_text("after the flood"))
        .await
        .unwrap();
    p.wait_line(
        "the message after the flood",
        |v| v["kind"] == "message" && v["event"]["text"] == "after the flood",
        WAIT,
    )
    .await;
    let elapsed = started.elapsed();
    let after = vm_hwm(pid);
    let streamed = match seconds {
        Some(_) => sent.load(Ordering::SeqCst),
        None => sent.load(Ordering::SeqCst).min(budget_bytes),
    };
    eprintln!(
        "flood: {} MiB in {:.1} s ({:.0} MiB/s); VmHWM {} -> {} MiB (+{} MiB)",
        streamed >> 20,
        elapsed.as_secs_f64(),
        (streamed >> 20) as f64 / elapsed.as_secs_f64(),
        before >> 20,
        after >> 20,
        after.saturating_sub(before) >> 20,
    );
    // The read budget (4 MiB), tungstenite's buffer, the merge buffer and
    // the guest's own growth for a 1 MiB line: tens of MiB, not the stream.
    assert!(
        after.saturating_sub(before) < 64 << 20,
        "VmHWM grew from {before} to {after} bytes while {streamed} bytes streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_prometheus_counters_and_send_latency() {
    let stub = stub(StubConfig::default()).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let addr = free_addr();
    let args = [
        "run",
        "--connector",
        &url,
        "--agent",
        "echo",
        "--metrics-listen",
        &addr,
        "--config",
        cfg.path(),
    ];
    let mut p = Proc::start(relay_host(&args), "run --metrics-listen");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;

    // One malformed line, then messages that are echoed.
    stub.send_line("this is not json").await.unwrap();
    const N: usize = 3;
    for i in 0..N {
        stub.push_inbound(events::dm("discord", &format!("dm-{i}"), "u1", "ping"))
            .await
            .unwrap();
    }
    for i in 0..N {
        let chat = format!("dm-{i}");
        let sent = p
            .wait_line(
                "an echo's sent line",
                |v| v["kind"] == "sent" && v["chat_id"] == chat.as_str(),
                WAIT,
            )
            .await;
        assert_eq!(sent["result"]["success"], true, "{sent}");
    }

    // The counters are refreshed at most every 250 ms: poll, bounded.
    let n = N as f64;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let (status, body) = http_get(&addr, "/metrics").await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let ready = sample(&body, "relay_frames_in_total", &[("type", "inbound")])
            .is_some_and(|v| v >= n)
            && sample(&body, "relay_frames_out_total", &[("type", "outbound")])
                .is_some_and(|v| v >= n)
            && sample(&body, "relay_skipped_lines_total", &[]).is_some_and(|v| v >= 1.0)
            && sample(
                &body,
                "relay_outbound_latency_seconds_count",
                &[("op", "send")],
            )
            .is_some_and(|v| v >= n);
        if ready {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up: {body}\n{}",
            p.context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&text, "relay_frames_in_total", &[("type", "descriptor")]).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "relay_skipped_lines_total",
            &[("reason", "invalid_json")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "relay_deliveries_total", &[]).is_some_and(|v| v >= n),
        "{text}"
    );
    assert!(sample(&text, "relay_pending", &[]).is_some(), "{text}");
    assert!(sample(&text, "relay_undelivered", &[]).is_some(), "{text}");
    assert!(
        sample(&text, "relay_guest_memory_bytes", &[]).is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "relay_guest_restarts_total", &[]) == Some(0.0),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.starts_with("relay_"))
            .all(|l| l.contains("adapter=\"relay-1\"")),
        "every sample has the adapter label: {text}"
    );
    let (status, _) = http_get(&addr, "/").await.unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    p.signal("INT");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    check_stdout(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_follows_precedence_and_rejects_bad_addresses() {
    let file = TempFile::new(
        "metrics.toml",
        b"connector = \"ws://127.0.0.1:1\"\nmetrics_listen = \"127.0.0.1:9001\"\n",
    );
    let (c, _) = config_check(&["--config", file.path()], &[]).await;
    assert_eq!(c["metrics_listen"], "127.0.0.1:9001");
    let env = [("RELAY_METRICS_LISTEN", "127.0.0.1:9002")];
    let (c, _) = config_check(&["--config", file.path()], &env).await;
    assert_eq!(c["metrics_listen"], "127.0.0.1:9002");
    let flags = ["--config", file.path(), "--metrics-listen", "[::1]:9003"];
    let (c, _) = config_check(&flags, &env).await;
    assert_eq!(c["metrics_listen"], "[::1]:9003");
    let (c, _) = config_check(&["--connector", "ws://127.0.0.1:1"], &[]).await;
    assert_eq!(c["metrics_listen"], Value::Null);

    let mut p = Proc::start(
        relay_host(&[
            "config",
            "check",
            "--connector",
            "ws://127.0.0.1:1",
            "--metrics-listen",
            "localhost",
        ]),
        "config check --metrics-listen localhost",
    );
    assert_eq!(p.wait_exit(WAIT).await, 2, "{}", p.context());
    assert!(
        p.stderr().contains("metrics listen address"),
        "{}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_comes_only_from_env_is_verified_and_never_printed() {
    let stub = stub(StubConfig::default().with_secret(SECRET)).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let verbose =
        "debug,relay_host=trace,relay_stub=trace,tungstenite=trace,tokio_tungstenite=trace";

    // Default variable, text logs.
    let args = [
        "run",
        "--connector",
        &url,
        "--gateway-id",
        "gw-cli",
        "--config",
        cfg.path(),
    ];
    let mut cmd = relay_host(&args);
    cmd.env("GATEWAY_RELAY_SECRET", SECRET)
        .env("RUST_LOG", verbose);
    let mut p = Proc::start(cmd, "run with GATEWAY_RELAY_SECRET");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let conn = stub.wait_for_handshakes(1, WAIT).await.unwrap();
    assert_eq!(
        conn.gateway_id.as_deref(),
        Some("gw-cli"),
        "bearer verified"
    );
    assert!(
        conn.header("authorization")
            .is_some_and(|h| h.starts_with("Bearer "))
    );
    stub.push_inbound(events::discord_text("secret test"))
        .await
        .unwrap();
    p.wait_line("the message", |v| v["kind"] == "message", WAIT)
        .await;
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    check_stdout(&p);
    assert!(
        !p.stdout_lines().join("\n").contains(SECRET),
        "secret on stdout"
    );
    assert!(!p.stderr().contains(SECRET), "secret on stderr");
    assert!(!p.stderr().contains("unauthenticated"), "{}", p.stderr());

    // A variable named by --secret-env, JSON logs.
    let args = [
        "run",
        "--connector",
        &url,
        "--gateway-id",
        "gw-cli-2",
        "--secret-env",
        "RELAY_CLI_TEST_KEY",
        "--log-format",
        "json",
        "--config",
        cfg.path(),
    ];
    let mut cmd = relay_host(&args);
    cmd.env("RELAY_CLI_TEST_KEY", format!("  {SECRET}  "))
        .env("RUST_LOG", verbose);
    let mut p = Proc::start(cmd, "run --secret-env");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let conn = stub.wait_for_handshakes(2, WAIT).await.unwrap();
    assert_eq!(
        conn.gateway_id.as_deref(),
        Some("gw-cli-2"),
        "trimmed secret verified"
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    check_stdout(&p);
    for line in p.stderr().lines() {
        assert!(
            line.starts_with("relay-host: ") || serde_json::from_str::<Value>(line).is_ok(),
            "--log-format json: {line}"
        );
    }
    assert!(
        !p.stdout_lines().join("\n").contains(SECRET),
        "secret on stdout"
    );
    assert!(!p.stderr().contains(SECRET), "secret on stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_revocation_exits_3_with_disabled_as_last_stderr_line() {
    let stub = stub(StubConfig::default().with_secret(SECRET)).await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let args = [
        "run",
        "--connector",
        &url,
        "--gateway-id",
        "gw-revoked",
        "--config",
        cfg.path(),
    ];
    let mut cmd = relay_host(&args);
    cmd.env("GATEWAY_RELAY_SECRET", SECRET);
    let mut p = Proc::start(cmd, "run (revoked)");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    stub.wait_for_handshakes(1, WAIT).await.unwrap();

    // 4401 after a handshake, then 4401 again on the fresh-token re-dial.
    stub.refuse_next_upgrades(
        1,
        UpgradeFate::CloseAfterAccept {
            code: 4401,
            reason: "unauthorized".into(),
        },
    )
    .unwrap();
    stub.close(4401, "unauthorized").await.unwrap();

    assert_eq!(p.wait_exit(WAIT).await, 3, "{}", p.context());
    let lines = check_stdout(&p);
    let fatal = lines
        .iter()
        .find(|v| v["kind"] == "fatal")
        .unwrap_or_else(|| panic!("no fatal line: {}", p.context()));
    assert_eq!(fatal["code"], "relay_disabled");
    assert_eq!(fatal["retryable"], false);
    assert!(lines.iter().any(|v| is_state(v, "disabled")));
    let stderr = p.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("relay-host: disabled: ") && last.len() > "relay-host: disabled: ".len(),
        "last stderr line: {last:?}"
    );
    assert!(!stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_before_any_handshake_is_retried_not_an_exit() {
    let stub = stub(StubConfig::default().with_secret(SECRET)).await;
    stub.refuse_next_upgrades(
        3,
        UpgradeFate::CloseAfterAccept {
            code: 4401,
            reason: "unauthorized".into(),
        },
    )
    .unwrap();
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let args = [
        "run",
        "--connector",
        &url,
        "--gateway-id",
        "gw-cold",
        "--config",
        cfg.path(),
    ];
    let mut cmd = relay_host(&args);
    cmd.env("GATEWAY_RELAY_SECRET", SECRET);
    let mut p = Proc::start(cmd, "run (cold start 4401)");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    assert!(
        stub.connections().len() >= 4,
        "three refused dials, then one that works"
    );
    assert!(p.running(), "{}", p.context());
    let lines = check_stdout(&p);
    assert!(lines.iter().any(|v| is_state(v, "reconnecting")));
    assert!(
        lines.iter().all(|v| v["kind"] != "fatal"),
        "{}",
        p.context()
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_identities_reach_the_connector_hellos() {
    let stub = stub(
        StubConfig::default()
            .with_descriptor("telegram", descriptors::telegram())
            .with_replay_after_hellos(2),
    )
    .await;
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let mut cmd = relay_host(&["run", "--config", cfg.path()]);
    cmd.env("GATEWAY_RELAY_URL", stub.base_url())
        .env("GATEWAY_RELAY_PLATFORMS", " discord, ,telegram ,")
        .env(
            "GATEWAY_RELAY_BOT_IDS",
            r#"{"discord":{"botId":"111"},"telegram":{"botId":"222"}}"#,
        );
    let mut p = Proc::start(cmd, "run (environment)");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let conn = stub.wait_for_handshakes(1, WAIT).await.unwrap();
    let hellos: Vec<(&str, &str)> = conn
        .hellos
        .iter()
        .map(|h| (h.platform.as_str(), h.bot_id.as_str()))
        .collect();
    assert_eq!(hellos, [("discord", "111"), ("telegram", "222")]);
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    check_stdout(&p);
}

// ----- exit codes without a connector ----------------------------------------

/// Arguments, extra environment, expected stderr text.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// Runs `relay-host args` with `env` added: exit 2, nothing on stdout and
/// `expected` on stderr, which is returned.
async fn expect_exit_2(args: &[&str], env: &[(&str, &str)], expected: &str) -> String {
    let mut cmd = relay_host(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::start(cmd, &format!("relay-host {args:?} {env:?}"));
    assert_eq!(p.wait_exit(WAIT).await, 2, "{}", p.context());
    assert!(p.stdout_lines().is_empty(), "{}", p.context());
    let stderr = p.stderr();
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in stderr: {}",
        p.context()
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_configuration_errors_exit_2() {
    let url = "http://127.0.0.1:9";
    let secret_file = TempFile::new("secret.toml", format!("secret = \"{SECRET}\"\n").as_bytes());
    let bare_secret = TempFile::new("bare.toml", format!("secret = {SECRET}\n").as_bytes());
    let unknown = TempFile::new("unknown.toml", b"handshake_timeout = 5\n");
    let bad_type = TempFile::new("type.toml", b"max_pending = \"lots\"\n");
    let out_of_range = TempFile::new(
        "range.toml",
        b"max_pending = 0\nping_interval_ms = 60000\nping_timeout_ms = 30000\n",
    );
    let bad_nonce = TempFile::new("nonce.toml", b"prompt_nonce = \"12345\"\n");
    let object_manifest = TempFile::new("manifest.json", b"{\"name\": \"ask\"}");
    let object_manifest_key = TempFile::new(
        "manifest-key.toml",
        format!("command_manifest_file = \"{}\"\n", object_manifest.path()).as_bytes(),
    );
    let broken_manifest = TempFile::new("broken.json", b"[{\"name\": ");
    let missing = std::env::temp_dir().join("relay-host-cli-no-such-file.toml");
    let missing = missing.to_str().unwrap();
    let cases: Vec<Case> = vec![
        (vec!["run"], vec![], "no connector URL"),
        (
            vec!["run", "--connector", "ftp://c.example"],
            vec![],
            "unsupported scheme",
        ),
        (
            vec!["run", "--connector", "https://c.example/?x=1"],
            vec![],
            "query",
        ),
        (
            vec!["run", "--connector", "https://c.example#top"],
            vec![],
            "fragment",
        ),
        (
            vec!["run", "--connector", "https://:9100"],
            vec![],
            "no host",
        ),
        (vec!["run", "--connector", "c.example"], vec![], "no scheme"),
        (
            vec!["run"],
            vec![("GATEWAY_RELAY_URL", "wss://c.example?q")],
            "query",
        ),
        (
            vec![
                "run",
                "--connector",
                url,
                "--platform",
                "discord",
                "--bot-id",
                "1",
                "--bot-id",
                "2",
            ],
            vec![],
            "--bot-id",
        ),
        (
            vec!["run", "--connector", url, "--bot-id", "1"],
            vec![],
            "--bot-id",
        ),
        (
            vec![
                "run",
                "--connector",
                url,
                "--secret-env",
                "RELAY_CLI_TEST_UNSET",
            ],
            vec![],
            "not set",
        ),
        (
            vec![
                "run",
                "--connector",
                url,
                "--secret-env",
                "RELAY_CLI_TEST_BLANK",
            ],
            vec![("RELAY_CLI_TEST_BLANK", "  ")],
            "blank",
        ),
        (
            vec!["run", "--connector", url, "--config", secret_file.path()],
            vec![],
            "`secret` is not allowed",
        ),
        (
            vec!["run", "--connector", url, "--config", bare_secret.path()],
            vec![],
            "--config",
        ),
        (
            vec!["run", "--connector", url, "--config", unknown.path()],
            vec![],
            "unknown field",
        ),
        (
            vec!["run", "--connector", url, "--config", bad_type.path()],
            vec![],
            "invalid type",
        ),
        (
            vec!["run", "--connector", url, "--config", missing],
            vec![],
            "cannot read",
        ),
        (
            vec!["run", "--connector", url, "--config", out_of_range.path()],
            vec![],
            "invalid configuration: max_pending must be at least 1; ping_interval_ms must be shorter than ping_timeout_ms",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                out_of_range.path(),
            ],
            vec![],
            "max_pending must be at least 1",
        ),
        (
            vec!["run", "--connector", url, "--agent", "nope"],
            vec![],
            "nope",
        ),
        (
            vec!["run", "--secret", SECRET],
            vec![],
            "unexpected argument",
        ),
        (
            vec!["config", "check", "--connector", "ftp://x"],
            vec![],
            "unsupported scheme",
        ),
        (
            vec!["run", "--connector", url, "--prompt-nonce", "ABC123"],
            vec![],
            "invalid configuration: prompt_nonce must be 6 lowercase hex digits",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                bad_nonce.path(),
            ],
            vec![],
            "prompt_nonce must be 6 lowercase hex digits",
        ),
        (
            vec!["run", "--connector", url, "--platform-extra", "[1]"],
            vec![],
            "--platform-extra must be a JSON object",
        ),
        (
            vec!["run", "--connector", url, "--command-manifest", missing],
            vec![],
            "--command-manifest /",
        ),
        (
            vec!["run", "--connector", url, "--command-manifest", missing],
            vec![],
            "cannot read",
        ),
        (
            vec![
                "run",
                "--connector",
                url,
                "--config",
                object_manifest_key.path(),
            ],
            vec![],
            "command_manifest_file",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                object_manifest_key.path(),
            ],
            vec![],
            "not a JSON array of commands",
        ),
        (
            vec![
                "run",
                "--connector",
                url,
                "--command-manifest",
                broken_manifest.path(),
            ],
            vec![],
            "not JSON",
        ),
        (
            vec![
                "config",
                "check",
                "--connector",
                url,
                "--config",
                secret_file.path(),
            ],
            vec![],
            "`secret` is not allowed",
        ),
    ];
    for (args, env, expected) in cases {
        let stderr = expect_exit_2(&args, &env, expected).await;
        // The one secret exception: clap repeats the rejected argument.
        if !args.contains(&"--secret") {
            assert!(!stderr.contains(SECRET), "secret echoed: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_component_exits_1() {
    let garbage = TempFile::new("garbage.wasm", b"\0asm not really a component");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "run",
            "--connector",
            "http://127.0.0.1:9",
            "--component",
            "/nonexistent/relay.wasm",
        ],
        vec![
            "run",
            "--connector",
            "http://127.0.0.1:9",
            "--component",
            garbage.path(),
        ],
        vec!["inspect", "--component", "/nonexistent/relay.wasm"],
        vec!["inspect", "--json", "--component", garbage.path()],
    ];
    for args in cases {
        let mut p = Proc::start(relay_host(&args), &format!("relay-host {args:?}"));
        assert_eq!(p.wait_exit(WAIT).await, 1, "{}", p.context());
        check_stdout(&p);
        let stderr = p.stderr();
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("relay-host: fatal: "),
            "last stderr line: {last:?}"
        );
    }
}

/// One `run` against the stub until `ready`, then SIGTERM; its stderr.
async fn run_until_ready(stub: &StubConnector, cache: &[&str], label: &str) -> String {
    let url = stub.base_url();
    let mut cmd = relay_host(&[&["run", "--connector", &url], cache].concat());
    cmd.env_remove("RELAY_CACHE_DIR");
    let mut p = Proc::start(cmd, label);
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    p.stderr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_compiles_once_then_starts_from_a_private_cache() {
    use std::os::unix::fs::PermissionsExt;
    let stub = stub(StubConfig::default()).await;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("relay");
    let dir_arg = dir.display().to_string();
    let flags = ["--cache-dir", dir_arg.as_str()];

    // Cold: compiled and stored, in a directory only we can enter.
    let stderr = run_until_ready(&stub, &flags, "cold cache").await;
    assert!(stderr.contains("cache=\"miss\""), "{stderr}");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // Warm: the next process loads the compiled code.
    let stderr = run_until_ready(&stub, &flags, "warm cache").await;
    assert!(stderr.contains("cache=\"hit\""), "{stderr}");
    // A cache others may write is native code anyone could plant: refused
    // with a warning, and the component is compiled instead.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = run_until_ready(&stub, &flags, "open cache").await;
    assert!(
        stderr.contains("is writable by group or others (mode 777)")
            && stderr.contains("compiling without a cache")
            && stderr.contains("cache=\"refused\""),
        "{stderr}"
    );
    // --no-cache reads nothing.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = run_until_ready(&stub, &["--no-cache"], "no cache").await;
    assert!(stderr.contains("cache=\"off\""), "{stderr}");
    let _ = std::fs::remove_dir_all(&root);
}

// ----- config check ----------------------------------------------------------

async fn config_check(args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let mut cmd = relay_host(&[&["config", "check"], args].concat());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::start(cmd, &format!("config check {args:?}"));
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    let stdout = p.stdout_lines().join("\n");
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (json, p.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_dir_follows_precedence_and_no_cache_turns_it_off() {
    let file = TempFile::new("cache.toml", b"cache_dir = \"/from/file\"\n");
    let base = ["--connector", "http://127.0.0.1:9", "--config", file.path()];
    // The file, when neither the environment nor a flag names one.
    let mut cmd = relay_host(&[&["config", "check"], &base[..]].concat());
    cmd.env_remove("RELAY_CACHE_DIR");
    let mut p = Proc::start(cmd, "config check (file)");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    let c: Value = serde_json::from_str(&p.stdout_lines().join("\n")).unwrap();
    assert_eq!(c["cache_dir"], "/from/file");
    // The environment over the file, the flag over both.
    let env = [("RELAY_CACHE_DIR", "/from/env")];
    let (c, _) = config_check(&base, &env).await;
    assert_eq!(c["cache_dir"], "/from/env");
    let (c, _) = config_check(&[&base[..], &["--cache-dir", "/from/flag"]].concat(), &env).await;
    assert_eq!(c["cache_dir"], "/from/flag");
    let (c, _) = config_check(&[&base[..], &["--no-cache"]].concat(), &env).await;
    assert_eq!(c["cache_dir"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_applies_precedence_and_redacts_the_secret() {
    let file = TempFile::new(
        "layers.toml",
        b"connector = \"http://from-config:1\"\n\
          gateway_id = \"gw-config\"\n\
          platforms = [\"slack\"]\n\
          bot_ids = { slack = \"S1\" }\n\
          handshake_timeout_ms = 1234\n\
          reconnect = false\n\
          memory_bytes = 33554432\n\
          ping_interval_ms = 5000\n\
          max_pending = 7\n",
    );
    let env = [
        ("GATEWAY_RELAY_URL", "https://from-env.example/"),
        ("GATEWAY_RELAY_ID", "gw-env"),
        ("GATEWAY_RELAY_PLATFORMS", " discord, ,telegram ,"),
        (
            "GATEWAY_RELAY_BOT_IDS",
            r#"{"discord":{"botId":"111"},"telegram":{"botId":"222"}}"#,
        ),
        ("GATEWAY_RELAY_SECRET", SECRET),
    ];

    // The file alone.
    let (c, stderr) = config_check(&["--config", file.path()], &[]).await;
    assert_eq!(c["connector"], "http://from-config:1");
    assert_eq!(c["dial_url"], "ws://from-config:1/relay");
    assert_eq!(c["gateway_id"], "gw-config");
    assert_eq!(
        c["identities"],
        json!([{"platform": "slack", "bot_id": "S1"}])
    );
    assert_eq!(c["secret"], Value::Null);
    assert_eq!(c["authenticated"], false);
    assert_eq!(c["handshake_timeout_ms"], 1234);
    assert_eq!(c["reconnect"], false);
    assert_eq!(c["memory_bytes"], 33554432);
    assert_eq!(c["ping_interval_ms"], 5000);
    assert_eq!(c["max_pending"], 7);
    assert_eq!(c["outbound_timeout_ms"], 30000, "defaults fill the rest");
    assert!(stderr.contains("unauthenticated"), "{stderr}");

    // The environment over the file.
    let (c, stderr) = config_check(&["--config", file.path()], &env).await;
    assert_eq!(c["connector"], "https://from-env.example/");
    assert_eq!(c["dial_url"], "wss://from-env.example/relay");
    assert_eq!(c["gateway_id"], "gw-env");
    assert_eq!(
        c["identities"],
        json!([{"platform": "discord", "bot_id": "111"}, {"platform": "telegram", "bot_id": "222"}])
    );
    assert_eq!(c["secret"], "<redacted>");
    assert_eq!(c["secret_env"], "GATEWAY_RELAY_SECRET");
    assert_eq!(c["authenticated"], true);
    assert_eq!(
        c["handshake_timeout_ms"], 1234,
        "timers still from the file"
    );
    assert!(!c.to_string().contains(SECRET) && !stderr.contains(SECRET));

    // Flags over the environment.
    let flags = [
        "--config",
        file.path(),
        "--connector",
        "WS://flag.example:7",
        "--gateway-id",
        "gw-flag",
        "--platform",
        "x",
        "--platform",
        "y",
        "--bot-id",
        "bx",
    ];
    let (c, _) = config_check(&flags, &env).await;
    assert_eq!(c["dial_url"], "ws://flag.example:7/relay");
    assert_eq!(c["gateway_id"], "gw-flag");
    assert_eq!(
        c["identities"],
        json!([{"platform": "x", "bot_id": "bx"}, {"platform": "y", "bot_id": ""}])
    );

    // A malformed bot-id map: a warning and no bot ids.
    let (c, stderr) = config_check(
        &["--connector", "http://h"],
        &[
            ("GATEWAY_RELAY_PLATFORMS", "discord"),
            ("GATEWAY_RELAY_BOT_IDS", "{not json"),
        ],
    )
    .await;
    assert_eq!(
        c["identities"],
        json!([{"platform": "discord", "bot_id": ""}])
    );
    assert!(stderr.contains("GATEWAY_RELAY_BOT_IDS"), "{stderr}");

    // A named variable; no platforms means the default identity (empty list).
    let (c, stderr) = config_check(
        &[
            "--connector",
            "http://h",
            "--gateway-id",
            "g",
            "--secret-env",
            "RELAY_CLI_TEST_KEY",
        ],
        &[("RELAY_CLI_TEST_KEY", SECRET)],
    )
    .await;
    assert_eq!(c["secret"], "<redacted>");
    assert_eq!(c["secret_env"], "RELAY_CLI_TEST_KEY");
    assert_eq!(c["identities"], json!([]));
    assert!(!c.to_string().contains(SECRET) && !stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_shows_the_egress_knobs_and_the_prompt_nonce() {
    let base = ["--connector", "http://127.0.0.1:9"];
    // Neither set: an empty object, and no nonce (drawn at spawn).
    let (c, _) = config_check(&base, &[]).await;
    assert_eq!(c["platform_extra"], json!({}));
    assert_eq!(c["prompt_nonce"], Value::Null);

    // From the file: TOML tables become the JSON object.
    let file = TempFile::new(
        "knobs.toml",
        b"prompt_nonce = \"a1b2c3\"\n\
          [platform_extra]\n\
          rich_blocks = \"yes\"\n\
          [platform_extra.slack]\n\
          rich_blocks = true\n\
          unfurl_links = false\n\
          channel_reply_modes = { C1 = \"channel\" }\n",
    );
    let with_file = [&base[..], &["--config", file.path()]].concat();
    let (c, _) = config_check(&with_file, &[]).await;
    assert_eq!(c["prompt_nonce"], "a1b2c3");
    assert_eq!(
        c["platform_extra"],
        json!({"rich_blocks": "yes",
               "slack": {"rich_blocks": true, "unfurl_links": false,
                         "channel_reply_modes": {"C1": "channel"}}})
    );

    // The flags over the file (the JSON object replaces the table).
    let flags = [
        &with_file[..],
        &[
            "--prompt-nonce",
            "0f0f0f",
            "--platform-extra",
            r#"{"slack":{"markdown_blocks":true}}"#,
        ],
    ]
    .concat();
    let (c, _) = config_check(&flags, &[]).await;
    assert_eq!(c["prompt_nonce"], "0f0f0f");
    assert_eq!(
        c["platform_extra"],
        json!({"slack": {"markdown_blocks": true}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_shows_the_command_manifest_count_not_its_content() {
    let base = ["--connector", "http://127.0.0.1:9"];
    let (c, _) = config_check(&base, &[]).await;
    assert_eq!(c["command_manifest_file"], Value::Null);
    assert_eq!(c["command_manifest_commands"], 0);

    // From the config key: the file and its count (entries are the
    // component's to validate, so a bad one still counts here).
    let two = TempFile::new(
        "two.json",
        br#"[{"name": "ask", "description": "Ask the secret-keeping agent"},
             {"name": "BAD NAME", "description": "x"}]"#,
    );
    let one = TempFile::new(
        "one.json",
        br#"[{"name": "reset", "description": "Start over"}]"#,
    );
    let file = TempFile::new(
        "manifest.toml",
        format!("command_manifest_file = \"{}\"\n", two.path()).as_bytes(),
    );
    let with_file = [&base[..], &["--config", file.path()]].concat();
    let (c, _) = config_check(&with_file, &[]).await;
    assert_eq!(c["command_manifest_file"], two.path());
    assert_eq!(c["command_manifest_commands"], 2);
    let shown = c.to_string();
    assert!(
        !shown.contains("secret-keeping") && !shown.contains("\"ask\""),
        "the content is not shown: {shown}"
    );

    // The flag over the file.
    let flags = [&with_file[..], &["--command-manifest", one.path()]].concat();
    let (c, _) = config_check(&flags, &[]).await;
    assert_eq!(c["command_manifest_file"], one.path());
    assert_eq!(c["command_manifest_commands"], 1);
}

/// `--command-manifest FILE` reaches the connector on the Discord hello,
/// validated by the component (the bad entry dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_manifest_file_reaches_the_discord_hello() {
    let stub = stub(StubConfig::default()).await;
    let manifest = TempFile::new(
        "hello.json",
        br#"[{"name": "ask", "description": "  Ask the agent  "},
             {"name": "No Caps", "description": "dropped"},
             {"name": "reset", "description": "Start over",
              "options": [{"type": 5, "name": "hard", "description": "Drop the memory too"}]}]"#,
    );
    let cfg = TempFile::new("fast.toml", FAST.as_bytes());
    let url = stub.base_url();
    let args = [
        "run",
        "--connector",
        &url,
        "--platform",
        "discord",
        "--command-manifest",
        manifest.path(),
        "--config",
        cfg.path(),
    ];
    let mut p = Proc::start(relay_host(&args), "run --command-manifest");
    p.wait_line("state ready", |v| is_state(v, "ready"), START)
        .await;
    let hello = stub.wait_for_frame_type("hello", WAIT).await.unwrap();
    assert_eq!(
        hello.get("command_manifest"),
        Some(&json!([
            {"name": "ask", "description": "Ask the agent"},
            {"name": "reset", "description": "Start over",
             "options": [{"type": 5, "name": "hard", "description": "Drop the memory too"}]}
        ])),
        "{:?}",
        hello.json
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    check_stdout(&p);
}

// ----- component, inspect, demo, example ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_out_writes_the_built_in_bytes_and_inspect_reads_them() {
    let dir = std::env::temp_dir().join(format!("relay-cli-component-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("relay.wasm");
    let path = file.to_str().unwrap();
    let mut p = Proc::start(relay_host(&["component", "--out", path]), "component --out");
    assert_eq!(p.wait_exit(START).await, 0, "{}", p.context());
    let written = std::fs::read(&file).unwrap();
    assert_eq!(
        written,
        relay_host::EMBEDDED_COMPONENT,
        "the very bytes run by the binary"
    );
    let lines = p.stdout_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        keys(&v),
        set(&["path", "size_bytes", "sha256", "api_version"])
    );
    assert_eq!(v["size_bytes"], written.len());
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    // No temporary file left beside it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("relay.wasm")]);

    let mut p = Proc::start(
        relay_host(&["inspect", "--component", path, "--json"]),
        "inspect --component",
    );
    assert_eq!(p.wait_exit(START).await, 0, "{}", p.context());
    let v: Value = serde_json::from_str(&p.stdout_lines()[0]).unwrap();
    assert_eq!(v["package"], "hermes:relay@0.2.0");
    assert_eq!(v["size_bytes"], written.len());

    // A directory that does not exist: exit 1, a clear line, nothing written.
    let missing = dir.join("no/such/dir/relay.wasm");
    let mut p = Proc::start(
        relay_host(&["component", "--out", missing.to_str().unwrap()]),
        "component --out missing",
    );
    assert_eq!(p.wait_exit(WAIT).await, 1, "{}", p.context());
    assert!(p.stderr().contains("cannot write"), "{}", p.stderr());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ----- inspect, demo, example -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_gateway_example_replies_and_exits_0() {
    let stub = stub(StubConfig::default().with_secret(SECRET)).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stdio_gateway.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(BIN).arg(stub.base_url());
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env("GATEWAY_RELAY_ID", "gw-py")
        .env("GATEWAY_RELAY_SECRET", SECRET)
        .env("STDIO_GATEWAY_EXIT_AFTER", "2");
    let mut p = Proc::start(cmd, "examples/stdio_gateway.py");
    let conn = stub.wait_for_handshakes(1, START).await.unwrap();
    assert_eq!(conn.gateway_id.as_deref(), Some("gw-py"));
    stub.push_inbound(events::discord_text("ping"))
        .await
        .unwrap();
    stub.push_inbound(events::dm("discord", "dm-1", "u5", "pong?"))
        .await
        .unwrap();
    let sends = stub
        .wait_for_frames(2, |f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    let contents: BTreeSet<&str> = sends
        .iter()
        .filter_map(|f| f.get("action")?.get("content")?.as_str())
        .collect();
    assert_eq!(contents, set(&["you said: ping", "you said: pong?"]));
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    stub.wait_for_frame_type("going_idle", WAIT).await.unwrap();
    let out = p.stdout_lines().join("\n");
    assert!(
        out.contains("replied in chan1: success=True") && out.contains("replied in dm-1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_json_has_the_documented_schema() {
    let mut p = Proc::start(relay_host(&["inspect", "--json"]), "inspect --json");
    assert_eq!(p.wait_exit(START).await, 0, "{}", p.context());
    let lines = p.stdout_lines();
    assert_eq!(lines.len(), 1, "one JSON line: {lines:?}");
    let v: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "api_version",
            "package",
            "world",
            "exports",
            "imports",
            "functions",
            "host_supported",
            "size_bytes"
        ])
    );
    assert_eq!(v["api_version"], "0.2.0");
    assert_eq!(v["package"], "hermes:relay@0.2.0");
    assert_eq!(v["world"], "relay-adapter");
    assert_eq!(v["exports"], json!(["hermes:relay/adapter@0.2.0"]));
    assert_eq!(v["host_supported"], true);
    let functions = v["functions"].as_array().unwrap();
    assert!(functions.contains(&json!("send")) && functions.contains(&json!("api-version")));
    let imports: Vec<&str> = v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(imports.contains(&"hermes:relay/host@0.2.0"), "{imports:?}");
    assert!(v["size_bytes"].as_u64().unwrap() > 1000);

    let mut p = Proc::start(relay_host(&["inspect"]), "inspect");
    assert_eq!(p.wait_exit(START).await, 0, "{}", p.context());
    let text = p.stdout_lines().join("\n");
    assert!(
        text.contains("api-version  0.2.0 (this host binds it)")
            && text.contains("world        relay-adapter"),
        "{text}"
    );

    // The committed 0.1.0 release build: an older version this host binds.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/relay-adapter-0.1.0.wasm"
    );
    let mut p = Proc::start(
        relay_host(&["inspect", "--json", "--component", fixture]),
        "inspect 0.1.0",
    );
    assert_eq!(p.wait_exit(START).await, 0, "{}", p.context());
    let v: Value = serde_json::from_str(&p.stdout_lines()[0]).unwrap();
    assert_eq!(
        (&v["api_version"], &v["exports"], &v["host_supported"]),
        (
            &json!("0.1.0"),
            &json!(["hermes:relay/adapter@0.1.0"]),
            &json!(true)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walks_every_step_and_exits_0() {
    let mut p = Proc::start(relay_host(&["demo"]), "demo");
    assert_eq!(p.wait_exit(START).await, 0, "{}", p.context());
    let text = p.stdout_lines().join("\n");
    for needle in [
        r#""type":"hello""#,
        r#""metadata":{"scope_id":"guildA","user_id":"u1"}"#,
        r#""metadata":{"user_id":"u7"}"#,
        r#"text "/model gpt-x""#,
        r#""type":"interrupt_inbound""#,
        r#""type":"interrupt","session_key""#,
        r#""type":"inbound_ack","bufferId":"buf-1""#,
        r#"{"type":"going_idle"}"#,
        r#"{"type":"going_idle_ack"}"#,
        "demo: all steps passed",
    ] {
        assert!(text.contains(needle), "demo output lacks {needle}:\n{text}");
    }
}

/// The `embed` example's binary, built with the workspace's feature set:
/// after `cargo test --workspace` (which builds examples) this is a no-op,
/// and a plain `cargo test --test cli` builds just the example. Building
/// `-p relay-host` alone would unify features differently and compile a
/// second wasmtime (minutes of CPU, gigabytes of disk: it once ran a CI
/// machine out of space).
async fn embed_example() -> PathBuf {
    let bin = Path::new(BIN);
    let examples = bin.parent().unwrap().join("examples");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--workspace", "--example", "embed"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Same profile as this test run (`target/<profile>/relay-host`).
    if bin.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        build.arg("--release");
    }
    let mut p = Proc::start(build, "cargo build --example embed");
    let code = p.wait_exit(Duration::from_secs(600)).await;
    assert_eq!(code, 0, "{}", p.context());
    examples.join(format!("embed{}", std::env::consts::EXE_SUFFIX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_example_replies_and_shuts_down() {
    let embed = embed_example().await;
    let stub = stub(StubConfig::default().with_secret(SECRET)).await;
    let mut cmd = Command::new(&embed);
    cmd.arg(stub.base_url())
        .env_remove("GATEWAY_RELAY_URL")
        .env("GATEWAY_RELAY_ID", "gw-embed")
        .env("GATEWAY_RELAY_SECRET", SECRET)
        .env("EMBED_EXIT_AFTER", "2");
    let mut p = Proc::start(cmd, "examples/embed");
    let conn = stub.wait_for_handshakes(1, START).await.unwrap();
    assert_eq!(conn.gateway_id.as_deref(), Some("gw-embed"));
    stub.push_inbound(events::discord_text("ping"))
        .await
        .unwrap();
    stub.push_inbound(events::dm("discord", "dm-1", "u5", "pong?"))
        .await
        .unwrap();
    let sends = stub
        .wait_for_frames(2, |f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    let contents: BTreeSet<&str> = sends
        .iter()
        .filter_map(|f| f.get("action")?.get("content")?.as_str())
        .collect();
    assert_eq!(contents, set(&["you said: ping", "you said: pong?"]));
    assert_eq!(p.wait_exit(WAIT).await, 0, "{}", p.context());
    stub.wait_for_frame_type("going_idle", WAIT).await.unwrap();
    let out = p.stdout_lines().join("\n");
    assert!(
        out.contains("message in chan1") && out.contains("replied in dm-1"),
        "{out}"
    );
}
