//! Seeded randomized simulation: random schedules of connector behaviour and
//! gateway commands against a small connector model, checking the machine's
//! global invariants. A failure names its seed; rerun one with
//! `RELAY_SIM_SEED=<seed> cargo test -p relay-core sim_`.

use super::tests::{Harness, test_config};
use super::*;
use crate::frame::GatewayFrame;
use serde_json::json;
use std::collections::{HashMap, HashSet};

const DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"discord","label":"Discord","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars","supported_ops":["send","edit","typing","follow_up","get_chat_info","react","delete","thread_create","prompt"]}"#;
/// Odd seeds: a connector where the stream is the message (native drafts
/// armed and sealed), with block formatting.
const SLACK_DESCRIPTOR: &str = r#"{"contract_version":1,"platform":"slack","label":"Slack","max_message_length":4000,"supports_draft_streaming":true,"supports_edit":true,"supports_threads":true,"markdown_dialect":"mrkdwn","len_unit":"chars","supports_block_formatting":true,"supported_ops":["send","edit","typing","draft","delete","react","prompt"]}"#;

struct World {
    h: Harness,
    rng: Rng,
    seed: u64,
    /// Requests issued and not yet completed.
    open_requests: HashSet<u64>,
    completed: HashSet<u64>,
    /// Outbound frames the connector has not answered: request id.
    unanswered: Vec<String>,
    /// Deliveries awaiting a verdict: delivery -> key.
    awaiting: HashMap<u64, Option<String>>,
    /// Keys the gateway accepted.
    accepted_keys: HashSet<String>,
    /// Keys delivered and not rejected (a second delivery is a violation).
    delivered_keys: HashSet<String>,
    terminal: bool,
    conn: Option<u32>,
    dialing: Option<u32>,
    scanned: usize,
    /// Prompt ids minted so far.
    prompts: Vec<String>,
    /// Prompt ids answered.
    answered: HashSet<String>,
}

macro_rules! check {
    ($w:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("seed {}: {}", $w.seed, format!($($msg)+)));
        }
    };
}

fn key_of_buffer(b: &str) -> String {
    // Buffer ids in the model are "b-<n>" for message "m-<n>" in chat "c".
    format!("discord:c:m-{}", b.trim_start_matches("b-"))
}

impl World {
    fn new(seed: u64) -> World {
        let mut cfg = test_config();
        cfg.outbound_timeout_ms = 500;
        cfg.handshake_timeout_ms = 300;
        cfg.going_idle_timeout_ms = 200;
        cfg.drain_grace_ms = 150;
        cfg.stable_connection_ms = 400;
        cfg.redial_hold_max_ms = 1_000;
        cfg.reconnect_initial_ms = 10;
        cfg.reconnect_max_ms = 300;
        cfg.max_pending = 8;
        cfg.max_undelivered = 6;
        cfg.seen_capacity = 512;
        cfg.reconnect_jitter = None;
        World {
            h: Harness::new(cfg),
            rng: Rng::new(seed),
            seed,
            open_requests: HashSet::new(),
            completed: HashSet::new(),
            unanswered: Vec::new(),
            awaiting: HashMap::new(),
            accepted_keys: HashSet::new(),
            delivered_keys: HashSet::new(),
            terminal: false,
            conn: None,
            dialing: None,
            scanned: 0,
            prompts: Vec::new(),
            answered: HashSet::new(),
        }
    }

    fn pick(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    /// Folds every new output into the model and checks invariants.
    fn scan(&mut self) -> Result<(), String> {
        let new: Vec<Output> = self.h.outputs[self.scanned..].to_vec();
        self.scanned = self.h.outputs.len();
        for o in new {
            match o {
                Output::Dial { conn, .. } => {
                    check!(self, !self.terminal, "dial after a terminal state");
                    self.dialing = Some(conn);
                    self.conn = None;
                    self.unanswered.clear();
                }
                Output::Close { conn, .. } if self.conn == Some(conn) => {
                    self.conn = None;
                    self.unanswered.clear();
                }
                Output::SendText { conn, text } => {
                    check!(
                        self,
                        Some(conn) == self.conn,
                        "frame written to a dead connection"
                    );
                    match GatewayFrame::decode(&text) {
                        Some(GatewayFrame::Outbound { request_id, .. }) => {
                            self.unanswered.push(request_id)
                        }
                        Some(GatewayFrame::InboundAck { buffer_id }) => {
                            let key = key_of_buffer(&buffer_id);
                            check!(
                                self,
                                self.accepted_keys.contains(&key),
                                "ack of {buffer_id} before accept"
                            );
                        }
                        Some(_) => {}
                        None => check!(self, false, "undecodable frame {text}"),
                    }
                }
                Output::Complete { request, .. } => {
                    check!(
                        self,
                        self.open_requests.remove(&request),
                        "request {request} completed twice or never issued"
                    );
                    self.completed.insert(request);
                }
                Output::PromptAnswer(a) => {
                    check!(
                        self,
                        self.answered.insert(a.prompt_id.clone()),
                        "prompt {} answered twice",
                        a.prompt_id
                    );
                    check!(
                        self,
                        self.prompts.contains(&a.prompt_id),
                        "answer for a prompt never minted: {}",
                        a.prompt_id
                    );
                }
                Output::Deliver(d) => {
                    check!(
                        self,
                        d.event.prompt_response.is_none(),
                        "a prompt answer was delivered as chat"
                    );
                    let key = dedupe_key(&d.event);
                    if let Some(k) = &key {
                        check!(
                            self,
                            !self.delivered_keys.contains(k),
                            "key {k} delivered twice"
                        );
                        self.delivered_keys.insert(k.clone());
                    }
                    self.awaiting.insert(d.delivery, key);
                }
                Output::State { state, .. } => {
                    if matches!(state, State::Disabled | State::Stopped) {
                        self.terminal = true;
                    }
                }
                _ => {}
            }
        }
        let s = self.h.m.stats();
        check!(self, s.pending <= 8, "pending {} over its bound", s.pending);
        check!(
            self,
            s.pending_background <= 8,
            "background pending {} over its bound",
            s.pending_background
        );
        check!(
            self,
            s.pending + s.pending_background == self.h.m.outbound.pending.len(),
            "pending classes do not add up"
        );
        check!(self, s.seen <= 512, "seen-set over its bound");
        check!(
            self,
            s.routes <= crate::routing::DEFAULT_ROUTE_CAPACITY + s.route_pins,
            "routes over bound"
        );
        // Every pin belongs to an open delivery or a pending request (the
        // simulation holds no routes for waiting callers).
        check!(
            self,
            s.route_pins <= s.undelivered + s.pending + s.pending_background + s.reply_holds,
            "route pins {} leaked past {} deliveries and {} requests",
            s.route_pins,
            s.undelivered,
            s.pending
        );
        Ok(())
    }

    fn command(&mut self, command: Command<'_>) {
        let request = self.h.next_request;
        self.open_requests.insert(request);
        self.h.command(command);
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.pick(100);
        match roll {
            // Time passes.
            0..=14 => {
                let ms = [1, 5, 20, 100, 400][self.pick(5) as usize];
                self.h.advance(ms);
            }
            // The host reports the dial outcome.
            15..=24 => {
                if let Some(conn) = self.dialing.take() {
                    match self.pick(10) {
                        0 => {
                            self.h.input(Input::DialFailed {
                                conn,
                                code: 0,
                                reason: "refused",
                            });
                        }
                        1 => {
                            self.h.input(Input::DialFailed {
                                conn,
                                code: 4401,
                                reason: "unauthorized",
                            });
                        }
                        _ => {
                            self.conn = Some(conn);
                            self.h.input(Input::SocketOpened { conn });
                        }
                    }
                }
            }
            // The connector answers the handshake (or garbage).
            25..=32 => {
                if let Some(conn) = self.conn {
                    let line = if self.pick(12) == 0 {
                        r#"{"type":"descriptor","descriptor":{"platform":"x"}}"#.to_owned()
                    } else if self.seed % 2 == 1 {
                        format!(r#"{{"type":"descriptor","descriptor":{SLACK_DESCRIPTOR}}}"#)
                    } else {
                        format!(r#"{{"type":"descriptor","descriptor":{DESCRIPTOR}}}"#)
                    };
                    self.h.recv(conn, &line);
                }
            }
            // Inbound, live or buffered, from a small key pool (duplicates);
            // some are presses on prompts (minted, forgotten or foreign).
            33..=47 => {
                if let Some(conn) = self.conn {
                    let n = self.pick(12);
                    let mut v = json!({"type":"inbound","event":{"text":"t","message_id":format!("m-{n}"),
                        "source":{"platform":"discord","chat_id":"c","user_id":"u","scope_id":"g"}}});
                    if self.pick(6) == 0 {
                        let ours = self.pick(2) == 0;
                        let foreign = ["a1b2c3.0b7e44d2", "legacy"][self.pick(2) as usize];
                        let id = match self.prompts.last() {
                            Some(id) if ours => id.clone(),
                            _ => foreign.to_owned(),
                        };
                        v["event"]["prompt_response"] = json!({"prompt_id":id,"option_id":"once"});
                        // Consumed at admission: it counts as accepted.
                        self.accepted_keys.insert(format!("discord:c:m-{n}"));
                    }
                    if self.pick(2) == 0 {
                        v["bufferId"] = json!(format!("b-{n}"));
                    }
                    self.h.recv(conn, &v.to_string());
                }
            }
            // The connector answers an outbound (maybe twice, maybe late).
            48..=57 => {
                if let Some(conn) = self.conn
                    && !self.unanswered.is_empty()
                {
                    let i = self.pick(self.unanswered.len() as u64) as usize;
                    let rid = if self.pick(5) == 0 {
                        self.unanswered[i].clone()
                    } else {
                        self.unanswered.swap_remove(i)
                    };
                    let result = match self.pick(8) {
                        0 => json!({"success":false,"error":"nope"}),
                        1 => {
                            json!({"success":false,"code":"egress_declined","error":"x egress declined: no"})
                        }
                        _ => {
                            json!({"success":true,"message_id":"r1","thread_id":"t","auto_thread_name":"n"})
                        }
                    };
                    let line = json!({"type":"outbound_result","requestId":rid,"result":result});
                    self.h.recv(conn, &line.to_string());
                }
            }
            58..=59 => {
                if let Some(conn) = self.conn {
                    self.h.recv(conn, r#"{"type":"going_idle_ack"}"#);
                }
            }
            // The connection drops.
            60..=62 => {
                if let Some(conn) = self.conn.take() {
                    let (code, reason) = [
                        (1011, "overloaded"),
                        (1006, ""),
                        (4401, "unauthorized"),
                        (4401, "expired"),
                        (1000, ""),
                    ][self.pick(5) as usize];
                    self.unanswered.clear();
                    self.h.input(Input::SocketClosed { conn, code, reason });
                }
            }
            63 => {
                if let Some(conn) = self.conn {
                    self.h.input(Input::WriteFailed {
                        conn,
                        error: "broken pipe",
                    });
                }
            }
            // Gateway verdicts.
            64..=75 => {
                if let Some(&d) = self.awaiting.keys().next() {
                    let key = self.awaiting.remove(&d).flatten();
                    if self.pick(4) == 0 {
                        if let Some(k) = key {
                            self.delivered_keys.remove(&k);
                        }
                        self.h.input(Input::RejectDelivery(d));
                    } else {
                        if let Some(k) = key {
                            self.accepted_keys.insert(k);
                        }
                        self.h.input(Input::AcceptDelivery(d));
                    }
                }
            }
            // Gateway commands.
            76..=85 => self.command(Command::Send {
                chat_id: "c",
                content: "x",
                reply_to: None,
                metadata: "{}",
                platform: None,
            }),
            91 => self.command(Command::GetChatInfo { chat_id: "c" }),
            // Drafts: frames keyed by a few turns, and the turn-final sends
            // that seal them (interim ones never do).
            86..=89 => {
                let turn = format!("t{}", self.pick(3));
                let metadata = match self.pick(3) {
                    0 => json!({"message_id": turn}),
                    1 => json!({}),
                    _ => json!({"message_id": turn, "_interim_send": true}),
                }
                .to_string();
                if self.pick(2) == 0 {
                    let lane = Lane::SendDraft {
                        chat_id: "c".into(),
                        draft_id: self.pick(4),
                        content: "partial".into(),
                        metadata,
                    };
                    self.command(Command::Lane(&lane));
                } else {
                    self.command(Command::Send {
                        chat_id: "c",
                        content: "final",
                        reply_to: None,
                        metadata: &metadata,
                        platform: None,
                    });
                }
            }
            // Prompts: minted, then sent (or not).
            90 => {
                let now = Now::at_ms(self.h.now_ms);
                let id = self.h.m.mint_prompt(now, "c", "approval");
                self.prompts.push(id.clone());
                let p = PromptSend {
                    prompt_id: id,
                    chat_id: "c".into(),
                    question: "ok?".into(),
                    options: vec![PromptOption {
                        id: "once".into(),
                        label: "Once".into(),
                        style: None,
                    }],
                    choices: Vec::new(),
                    reply_to: None,
                    metadata: "{}".into(),
                    timeout_s: None,
                    prompt_kind: "approval".into(),
                };
                self.command(Command::Lane(&Lane::Prompt(p)));
            }
            92 => match self.pick(5) {
                0 => self.command(Command::RawAction {
                    action: r#"{"op":"react","chat_id":"c"}"#,
                    platform: None,
                }),
                // The 0.2 lanes: background frames, waiters and gated ops
                // keep "every command completes exactly once".
                1 => self.command(Command::Lane(&Lane::ProcessingComplete {
                    event: r#"{"source":{"platform":"discord","chat_id":"c","message_id":"m1"}}"#
                        .into(),
                    outcome: ProcessingOutcome::Success,
                })),
                2 => self.command(Command::Lane(&Lane::AutoThreadInfo {
                    chat_id: "c".into(),
                    timeout_ms: 3_000,
                })),
                3 => self.command(Command::Lane(&Lane::ThreadCreate {
                    parent_chat_id: "c".into(),
                    name: "t".into(),
                    metadata: "{}".into(),
                })),
                _ => self.command(Command::Lane(&Lane::Delete {
                    chat_id: "c".into(),
                    message_id: "m1".into(),
                    metadata: "{}".into(),
                })),
            },
            93 => self.command(Command::Interrupt {
                session_key: "k",
                reason: None,
            }),
            94 => self.command(Command::GoDormant),
            95 => self.command(Command::HoldRedial),
            96 => self.command(Command::ReleaseRedial),
            97 => {
                if self.pick(4) == 0 {
                    self.command(Command::Shutdown);
                }
            }
            _ => self.command(Command::FollowUp {
                session_key: "k",
                kind: "discord.t",
                content: "",
                metadata: "{}",
            }),
        }
        self.scan()
    }

    fn run(mut self, steps: usize, seen: &mut HashSet<&'static str>) -> Result<(), String> {
        self.scan()?;
        for _ in 0..steps {
            self.step()?;
        }
        for o in &self.h.outputs {
            match o {
                Output::State { state, .. } => {
                    seen.insert(state.as_str());
                }
                Output::Deliver(_) => {
                    seen.insert("deliver");
                }
                Output::PromptAnswer(_) => {
                    seen.insert("prompt_answer");
                }
                Output::SendText { text, .. } if text.contains(r#""final":true"#) => {
                    seen.insert("seal");
                }
                Output::SendText { text, .. } if text.contains("inbound_ack") => {
                    seen.insert("ack");
                }
                Output::Complete {
                    completion: Completion::Sent(r),
                    ..
                } if r.success => {
                    seen.insert("send_ok");
                }
                Output::Complete {
                    completion: Completion::Sent(r),
                    ..
                } if r.ambiguous => {
                    seen.insert("timeout");
                }
                _ => {}
            }
        }
        // Wind down: everything still open must complete.
        self.command(Command::ReleaseRedial);
        self.command(Command::Shutdown);
        self.scan()?;
        self.h.advance(5_000);
        self.scan()?;
        check!(
            self,
            self.open_requests.is_empty(),
            "requests never completed: {:?}",
            self.open_requests
        );
        check!(self, self.terminal, "shutdown did not stop the machine");
        let dials = self.h.dials();
        self.h.advance(120_000);
        check!(self, self.h.dials() == dials, "dialed after stopping");
        Ok(())
    }
}

#[test]
fn sim_invariants_hold_over_thousands_of_schedules() {
    let seeds: Vec<u64> = match std::env::var("RELAY_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("RELAY_SIM_SEED is a u64")],
        Err(_) => (0..2_000).map(|i| 0x5EED_0000 + i).collect(),
    };
    let single = seeds.len() == 1;
    let mut seen = HashSet::new();
    for seed in seeds {
        if let Err(e) = World::new(seed).run(300, &mut seen) {
            panic!("{e} (rerun with RELAY_SIM_SEED={seed})");
        }
    }
    if !single {
        // The schedules must actually reach the behaviour they police.
        for what in [
            "ready",
            "reconnecting",
            "disabled",
            "stopped",
            "dormant",
            "idle",
            "deliver",
            "ack",
            "send_ok",
            "timeout",
            "seal",
            "prompt_answer",
        ] {
            assert!(seen.contains(what), "no schedule reached {what}");
        }
    }
}
