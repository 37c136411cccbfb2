//! `relay-host run --agent stdio`: commands on stdin, one `result` line per
//! command on stdout beside the event lines, against the stub connector.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ChildStdin;

use relay_stub::HelloReply;

use super::*;

// `send_media` and the media settings; a child module for [`Bridge`].
#[path = "media.rs"]
mod media;

/// A running bridge and its stdin.
struct Bridge {
    p: Proc,
    stdin: Option<ChildStdin>,
    _config: TempFile,
}

impl Bridge {
    /// `run --agent stdio` against `stub` with fast timers and `extra`
    /// config lines; waits for `ready`.
    async fn start(stub: &StubConnector, extra: &str, component: Option<&str>) -> Bridge {
        let config = TempFile::new("stdio.toml", format!("{FAST}{extra}").as_bytes());
        let url = stub.base_url();
        let mut args = vec![
            "run",
            "--connector",
            &url,
            "--agent",
            "stdio",
            "--config",
            config.path(),
        ];
        if let Some(component) = component {
            args.extend(["--component", component]);
        }
        let (p, stdin) = Proc::start_piped(relay_host(&args), "run --agent stdio");
        p.wait_line("state ready", |v| is_state(v, "ready"), START)
            .await;
        Bridge {
            p,
            stdin: Some(stdin),
            _config: config,
        }
    }

    /// Writes raw bytes to the bridge's stdin.
    fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Writes one command line.
    fn command(&mut self, command: &Value) {
        let mut line = command.to_string().into_bytes();
        line.push(b'\n');
        self.write(&line);
    }

    /// The `result` line for `id`.
    async fn result_for(&self, id: &Value) -> Value {
        let id = id.clone();
        self.p
            .wait_line(
                &format!("the result for id {id}"),
                |v| v["kind"] == "result" && v["id"] == id,
                WAIT,
            )
            .await
    }

    /// Runs one command and returns its `result` line.
    async fn call(&mut self, command: Value) -> Value {
        self.command(&command);
        self.result_for(&command["id"]).await
    }

    /// Runs one command that must succeed; returns its `result` object.
    async fn ok(&mut self, command: Value) -> Value {
        let line = self.call(command.clone()).await;
        assert_eq!(line["ok"], true, "{command} -> {line}");
        line["result"].clone()
    }

    /// Runs one command that must fail; returns its error text.
    async fn error(&mut self, command: Value) -> String {
        let line = self.call(command.clone()).await;
        assert_eq!(line["ok"], false, "{command} -> {line}");
        line["error"].as_str().unwrap().to_string()
    }

    /// The `delivery` of the message line whose text is `text`.
    async fn delivery_of(&self, text: &str) -> u64 {
        let line = self
            .p
            .wait_line(
                &format!("the message {text:?}"),
                |v| v["kind"] == "message" && v["event"]["text"] == text,
                WAIT,
            )
            .await;
        line["delivery"].as_u64().unwrap()
    }

    /// Closes stdin: the gateway is gone.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Each id's result lines, after the process ended.
    fn results_by_id(&self) -> BTreeMap<String, Vec<Value>> {
        let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for v in check_stdout(&self.p) {
            if v["kind"] == "result" {
                by_id.entry(v["id"].to_string()).or_default().push(v);
            }
        }
        by_id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_serves_every_op() {
    let stub = stub(StubConfig::default()).await;
    stub.set_chat_info("chan1", "Hermes / #ops", "group");
    let mut b = Bridge::start(&stub, "", None).await;

    // A message waits for the gateway's verdict; its number answers it once.
    stub.push_inbound(events::discord_text("hello"))
        .await
        .unwrap();
    let n = b.delivery_of("hello").await;
    assert_eq!(
        b.ok(json!({"id": 1, "op": "accept", "delivery": n})).await,
        json!({})
    );
    assert_eq!(
        b.error(json!({"id": 2, "op": "accept", "delivery": n}))
            .await,
        format!("delivery {n} was already answered")
    );
    assert_eq!(
        b.error(json!({"id": 3, "op": "reject", "delivery": 999}))
            .await,
        "unknown delivery 999"
    );
    stub.push_inbound(events::dm("discord", "dm-1", "u5", "nope"))
        .await
        .unwrap();
    let m = b.delivery_of("nope").await;
    assert!(m > n, "numbers grow: {n} then {m}");
    assert_eq!(
        b.ok(json!({"id": "r", "op": "reject", "delivery": m}))
            .await,
        json!({})
    );

    // send: the route's scope re-attached; the typed result fields.
    let sent = b
        .ok(json!({"id": "s1", "op": "send", "chat_id": "chan1", "content": "hi there"}))
        .await;
    assert_eq!(sent["success"], true, "{sent}");
    assert!(sent["message_id"].is_string(), "{sent}");
    let frame = stub
        .wait_for_frame(|f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    let action = frame.get("action").unwrap();
    assert_eq!(action["content"], "hi there");
    assert_eq!(
        action["metadata"],
        json!({"scope_id": "guildA", "user_id": "u1"})
    );

    // A connector failure is a result (`ok:true`, `success:false`), not a bridge error.
    stub.queue_outbound_reply(
        Some("edit"),
        OutboundReply::Result(json!({"success": false, "error": "gone"})),
    );
    let edited = b
        .ok(json!({"id": "e1", "op": "edit", "chat_id": "chan1", "message_id": "m-1", "content": "v2"}))
        .await;
    assert_eq!(edited["success"], false, "{edited}");
    assert_eq!(edited["error"], "gone", "{edited}");

    let typing = b
        .ok(json!({"id": "t1", "op": "typing", "chat_id": "chan1", "content": "thinking"}))
        .await;
    assert!(typing["success"].is_boolean(), "{typing}");
    let follow = b
        .ok(json!({"id": "f1", "op": "follow_up", "session_key": "sk-1", "kind": "followup", "content": "later"}))
        .await;
    assert!(follow["success"].is_boolean(), "{follow}");
    assert_eq!(
        b.ok(json!({"id": "c1", "op": "get_chat_info", "chat_id": "chan1"}))
            .await,
        json!({"name": "Hermes / #ops", "chat_type": "group"})
    );
    let raw = b
        .ok(json!({"id": "a1", "op": "raw_action", "action": {"op": "edit", "chat_id": "chan1", "message_id": "m-2", "content": "raw"}}))
        .await;
    assert_eq!(raw["success"], true, "{raw}");
    stub.wait_for_frame(
        |f| f.op() == Some("edit") && f.get("action").unwrap()["content"] == "raw",
        WAIT,
    )
    .await
    .unwrap();
    // An op the descriptor does not list fails closed, as a result.
    let unsupported = b
        .ok(json!({"id": "a2", "op": "raw_action", "action": {"op": "pin", "chat_id": "chan1"}}))
        .await;
    assert_eq!(unsupported["success"], false, "{unsupported}");
    assert_eq!(
        b.ok(json!({"id": "i1", "op": "interrupt", "session_key": "sk-1", "reason": "stop"}))
            .await,
        json!({})
    );
    stub.wait_for_frame_type("interrupt", WAIT).await.unwrap();
    assert_eq!(
        b.ok(json!({"id": "p1", "op": "prime_route", "chat_id": "chan9", "platform": "discord", "scope_id": "guildZ"}))
            .await,
        json!({})
    );
    b.ok(json!({"id": "s2", "op": "send", "chat_id": "chan9", "content": "primed"}))
        .await;
    let primed = stub
        .wait_for_frame(
            |f| f.op() == Some("send") && f.get("action").unwrap()["chat_id"] == "chan9",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        primed.get("action").unwrap()["metadata"]["scope_id"],
        "guildZ"
    );

    // Capability queries and health.
    let descriptor = b.ok(json!({"id": "d1", "op": "descriptor"})).await;
    assert!(descriptor["descriptor"].is_object(), "{descriptor}");
    let max = b
        .ok(json!({"id": "d2", "op": "max_message_length", "chat_id": "chan1"}))
        .await;
    assert!(max["max_message_length"].as_u64().unwrap() > 0, "{max}");
    assert_eq!(
        b.ok(json!({"id": "d3", "op": "message_len", "text": "héllo"}))
            .await,
        json!({"length": 5})
    );
    assert_eq!(
        b.ok(json!({"id": "d4", "op": "supports_op", "chat_id": "chan1", "operation": "send"}))
            .await,
        json!({"supported": true})
    );
    assert_eq!(
        b.ok(json!({"id": "d6", "op": "supports_op", "operation": "teleport"}))
            .await,
        json!({"supported": false})
    );
    // No `--platform`: the one default identity, which fronts no platform
    // by name.
    assert_eq!(
        b.ok(json!({"id": "d5", "op": "fronts_platform", "platform": "discord"}))
            .await,
        json!({"fronts": false})
    );
    let health = b.ok(json!({"id": "h1", "op": "health"})).await;
    assert_eq!(health["state"], "ready", "{health}");
    assert_eq!(health["down"], Value::Null, "{health}");
    assert_eq!(
        b.ok(json!({"id": "h2", "op": "state"})).await,
        json!({"state": "ready"})
    );
    let stats = b.ok(json!({"id": "h3", "op": "stats"})).await;
    assert!(stats.as_object().is_some_and(|o| !o.is_empty()), "{stats}");

    // Redial holds, then dormancy (the connector acknowledges going idle).
    assert_eq!(
        b.ok(json!({"id": "x1", "op": "hold_redial"})).await,
        json!({})
    );
    assert_eq!(
        b.ok(json!({"id": "x2", "op": "release_redial"})).await,
        json!({})
    );
    assert_eq!(
        b.ok(json!({"id": "x3", "op": "go_dormant"})).await,
        json!({"acknowledged": true})
    );

    // `shutdown` answers once the adapter stopped, then the process exits 0.
    assert_eq!(b.ok(json!({"id": "z", "op": "shutdown"})).await, json!({}));
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
    for (id, lines) in b.results_by_id() {
        assert_eq!(lines.len(), 1, "id {id} answered {} times", lines.len());
    }
}

/// The lane ops: each one's frame on the wire and its result line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_serves_the_lane_ops() {
    let mut descriptor = descriptors::discord();
    descriptor["supported_ops"] = json!([
        "send",
        "edit",
        "typing",
        "react",
        "delete",
        "thread_create",
        "thread_rename"
    ]);
    let stub = stub(StubConfig {
        descriptor: HelloReply::Descriptor(descriptor),
        ..StubConfig::default()
    })
    .await;
    let mut b = Bridge::start(&stub, "", None).await;
    stub.push_inbound(events::discord_text("turn"))
        .await
        .unwrap();
    let line =
        b.p.wait_line(
            "the message \"turn\"",
            |v| v["kind"] == "message" && v["event"]["text"] == "turn",
            WAIT,
        )
        .await;
    let event = line["event"].clone();
    let anchor = event["source"]["message_id"].as_str().unwrap().to_owned();
    b.ok(json!({"id": 0, "op": "accept", "delivery": line["delivery"]}))
        .await;
    let action = |f: &relay_stub::ReceivedFrame| f.get("action").cloned().unwrap_or_default();

    let deleted = b
        .ok(json!({"id": "l1", "op": "delete", "chat_id": "chan1", "message_id": "m-3"}))
        .await;
    assert_eq!(deleted["success"], true, "{deleted}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("delete"), WAIT)
        .await
        .unwrap();
    assert_eq!(action(&f)["message_id"], "m-3");

    b.ok(
        json!({"id": "l2", "op": "react", "chat_id": "chan1", "message_id": "m-3", "emoji": "🎉"}),
    )
    .await;
    let f = stub
        .wait_for_frame(
            |f| f.op() == Some("react") && f.get("action").unwrap()["emoji"] == "🎉",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(action(&f)["remove"], false, "`remove` defaults to false");

    // `event` as the message line's object, then as its JSON text.
    assert_eq!(
        b.ok(json!({"id": "l3", "op": "processing_start", "event": event}))
            .await,
        json!({})
    );
    assert_eq!(
        b.ok(json!({"id": "l4", "op": "processing_complete", "event": event.to_string(), "outcome": "failure"}))
            .await,
        json!({})
    );
    let reactions = stub
        .wait_for_frames(
            3,
            |f| {
                f.op() == Some("react") && f.get("action").unwrap()["message_id"] == anchor.as_str()
            },
            WAIT,
        )
        .await
        .unwrap();
    let emoji: Vec<(Value, Value)> = reactions
        .iter()
        .map(|f| (action(f)["emoji"].clone(), action(f)["remove"].clone()))
        .collect();
    assert_eq!(
        emoji,
        vec![
            (json!("👀"), json!(false)),
            (json!("👀"), json!(true)),
            (json!("❌"), json!(false)),
        ]
    );

    let created = b
        .ok(json!({"id": "l5", "op": "thread_create", "parent_chat_id": "chan1", "thread_name": " Plans "}))
        .await;
    assert_eq!(created["thread_id"], "th1", "{created}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("thread_create"), WAIT)
        .await
        .unwrap();
    assert_eq!(action(&f)["thread_name"], "Plans");

    let renamed = b
        .ok(
            json!({"id": "l6", "op": "thread_rename", "thread_id": "th1", "name": "Better plans",
                   "parent_chat_id": "chan1", "only_if_connector_created": true}),
        )
        .await;
    assert_eq!(renamed["success"], true, "{renamed}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("thread_rename"), WAIT)
        .await
        .unwrap();
    let rename = action(&f);
    assert_eq!(
        (
            &rename["chat_id"],
            &rename["message_id"],
            &rename["thread_name"]
        ),
        (&json!("chan1"), &json!("th1"), &json!("Better plans"))
    );
    assert_eq!(rename["only_if_connector_created"], true, "{rename}");
    assert!(
        b.error(
            json!({"id": "l7", "op": "thread_rename", "thread_id": "th1", "name": "x",
                       "only_if_connector_created": true, "only_if_current_name": "y"})
        )
        .await
        .contains("at most one of"),
    );

    // stop_typing: chan1 is not a Slack chat, so a failed result, no frame.
    let stopped = b
        .ok(json!({"id": "l8", "op": "stop_typing", "chat_id": "chan1"}))
        .await;
    assert_eq!(stopped["success"], false, "{stopped}");
    b.ok(json!({"id": "l8b", "op": "send", "chat_id": "chan1", "content": "after"}))
        .await;
    stub.wait_for_frame(|f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        stub.frames_of_type("outbound")
            .iter()
            .filter(|f| f.op() == Some("typing"))
            .count(),
        0,
        "stop_typing sent nothing"
    );

    // No send into the chat within the wait: a miss.
    let info = b
        .ok(json!({"id": "l9", "op": "auto_thread_info", "chat_id": "chan1", "timeout_ms": 10}))
        .await;
    assert_eq!(info["success"], false, "{info}");
    assert_eq!(
        info["error"], "no auto-thread info: no send into the chat in time",
        "{info}"
    );

    assert_eq!(
        b.error(
            json!({"id": "l10", "op": "processing_complete", "event": 5, "outcome": "success"})
        )
        .await,
        "processing_complete: `event` must be the event object or its JSON text"
    );
    assert!(
        b.error(json!({"id": "l11", "op": "processing_complete", "event": {}, "outcome": "done"}))
            .await
            .starts_with("processing_complete: unknown variant `done`"),
    );
    assert_eq!(b.ok(json!({"id": "z", "op": "shutdown"})).await, json!({}));
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
}

/// Drafts, prompts and their queries through the bridge, with the config
/// file's `platforms`, `prompt_nonce` and `[platform_extra.slack]`: each
/// op's frame and result line, and one `prompt_answer` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_serves_drafts_and_prompts() {
    let mut descriptor = descriptors::slack();
    descriptor["supports_draft_streaming"] = json!(true);
    descriptor["supported_ops"] = json!(["send", "edit", "typing", "draft", "prompt"]);
    let stub = stub(StubConfig::default().with_descriptor("slack", descriptor)).await;
    let mut b = Bridge::start(
        &stub,
        "platforms = [\"slack\"]\nprompt_nonce = \"c0ffee\"\n\
         [platform_extra.slack]\nrich_blocks = true\n",
        None,
    )
    .await;
    stub.push_inbound(events::dm("slack", "D1", "U1", "hi"))
        .await
        .unwrap();
    let delivery = b.delivery_of("hi").await;
    b.ok(json!({"id": 0, "op": "accept", "delivery": delivery}))
        .await;
    let action = |f: &relay_stub::ReceivedFrame| f.get("action").cloned().unwrap_or_default();

    assert_eq!(
        b.ok(json!({"id": "q1", "op": "supports_draft_streaming", "chat_id": "D1"}))
            .await,
        json!({"supported": true})
    );
    assert_eq!(
        b.ok(
            json!({"id": "q2", "op": "prefers_fresh_final", "chat_id": "D1",
                    "text": "see https://example.com"})
        )
        .await,
        json!({"prefers_fresh_final": false})
    );

    // A draft, then the turn's final send seals it (hinted: rich_blocks).
    let drafted = b
        .ok(
            json!({"id": "d1", "op": "send_draft", "chat_id": "D1", "draft_id": 4,
                   "content": "thinking", "metadata": {"message_id": "m.1"}}),
        )
        .await;
    assert_eq!(drafted["success"], true, "{drafted}");
    let sealed = b
        .ok(
            json!({"id": "d2", "op": "send", "chat_id": "D1", "content": "done",
                   "metadata": {"message_id": "m.1"}}),
        )
        .await;
    assert_eq!(sealed["success"], true, "{sealed}");
    let frames = stub
        .wait_for_frames(2, |f| f.op() == Some("draft"), WAIT)
        .await
        .unwrap();
    let seen: Vec<(Value, Value, Value, Value)> = frames
        .iter()
        .map(|f| {
            let a = action(f);
            (
                a["draft_id"].clone(),
                a["final"].clone(),
                a["content"].clone(),
                a["metadata"]["format_hints"].clone(),
            )
        })
        .collect();
    let hint = json!({"rich_blocks": true});
    assert_eq!(
        seen,
        vec![
            (json!(4), json!(false), json!("thinking"), hint.clone()),
            (json!(4), json!(true), json!("done"), hint.clone()),
        ]
    );
    // Nothing open any more: abandoning is a failed result.
    let abandoned = b
        .ok(json!({"id": "d3", "op": "abandon_open_draft", "chat_id": "D1", "content": "stop"}))
        .await;
    assert_eq!(abandoned["success"], false, "{abandoned}");

    // A prompt: minted with the file's nonce, sent, answered by a press.
    let minted = b
        .ok(json!({"id": "p1", "op": "mint_prompt", "chat_id": "D1", "kind": "approval"}))
        .await;
    let prompt_id = minted["prompt_id"].as_str().unwrap().to_owned();
    assert!(prompt_id.starts_with("c0ffee."), "{minted}");
    let prompted = b
        .ok(
            json!({"id": "p2", "op": "prompt", "prompt_id": prompt_id, "chat_id": "D1",
                   "question": "Ship it?", "prompt_kind": "approval",
                   "options": [{"id": "yes", "label": "Yes", "style": "primary"},
                               {"id": "no", "label": "No"}],
                   "timeout_s": 60}),
        )
        .await;
    assert_eq!(prompted["success"], true, "{prompted}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("prompt"), WAIT)
        .await
        .unwrap();
    let sent = action(&f);
    assert_eq!(sent["prompt_id"], prompt_id.as_str());
    assert_eq!(sent["content"], "Ship it?");
    assert_eq!(
        sent["options"],
        json!([{"id": "yes", "label": "Yes", "style": "primary"}, {"id": "no", "label": "No"}])
    );
    assert!(
        b.error(
            json!({"id": "p3", "op": "prompt", "prompt_id": "x", "chat_id": "D1",
                       "question": "?", "options": [{"id": "a"}]})
        )
        .await
        .starts_with("prompt: missing field `label`"),
    );
    stub.push_inbound(json!({
        "text": "yes", "message_type": "text", "message_id": "press-1",
        "source": {"platform": "slack", "chat_id": "D1", "chat_type": "dm", "user_id": "U1"},
        "prompt_response": {"prompt_id": prompt_id, "option_id": "yes", "prompt_message_id": "pm"}
    }))
    .await
    .unwrap();
    let line =
        b.p.wait_line(
            "the prompt_answer line",
            |v| v["kind"] == "prompt_answer",
            WAIT,
        )
        .await;
    assert_eq!(
        (
            &line["prompt_id"],
            &line["prompt_kind"],
            &line["option_id"],
            &line["chat_id"],
            &line["user_id"],
            &line["prompt_message_id"],
            &line["text_capture"]
        ),
        (
            &json!(prompt_id),
            &json!("approval"),
            &json!("yes"),
            &json!("D1"),
            &json!("U1"),
            &json!("pm"),
            &json!(false)
        ),
        "{line}"
    );
    assert_eq!(
        line["event"]["prompt_response"]["option_id"], "yes",
        "{line}"
    );

    assert_eq!(b.ok(json!({"id": "z", "op": "shutdown"})).await, json!({}));
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
    // Every line has its documented shape, and the press was no message.
    let lines = check_stdout(&b.p);
    assert!(
        lines
            .iter()
            .all(|v| !(v["kind"] == "message" && v["event"]["text"] == "yes")),
        "the press was delivered as a message"
    );
}

/// `task_card` and `task_card_stop` through the bridge: each frame (card
/// id from `reply_to`, Slack's `thread_ts` default) and its result line;
/// chunks that are not objects are the bridge's error, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_serves_task_cards() {
    let mut descriptor = descriptors::slack();
    descriptor["supported_ops"] = json!(["send", "edit", "typing", "task_card", "task_card_stop"]);
    let stub = stub(StubConfig::default().with_descriptor("slack", descriptor)).await;
    let mut b = Bridge::start(&stub, "platforms = [\"slack\"]\n", None).await;
    stub.push_inbound(events::dm("slack", "D1", "U1", "plan it"))
        .await
        .unwrap();
    let delivery = b.delivery_of("plan it").await;
    b.ok(json!({"id": 0, "op": "accept", "delivery": delivery}))
        .await;
    let action = |f: &relay_stub::ReceivedFrame| f.get("action").cloned().unwrap_or_default();

    let steps = json!([{"text": "read the logs"}, {"text": "fix the test", "status": "pending"}]);
    let card = b
        .ok(
            json!({"id": "k1", "op": "task_card", "chat_id": "D1", "reply_to": "1700.0001",
                   "chunks": steps}),
        )
        .await;
    assert_eq!(card["success"], true, "{card}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("task_card"), WAIT)
        .await
        .unwrap();
    let sent = action(&f);
    assert_eq!(f.get("platform"), Some(&json!("slack")));
    assert_eq!(
        (&sent["chat_id"], &sent["card_id"], &sent["chunks"]),
        (&json!("D1"), &json!("turn:1700.0001"), &steps),
        "{sent}"
    );
    assert_eq!(sent["metadata"]["thread_ts"], "1700.0001", "{sent}");

    let stopped = b
        .ok(json!({"id": "k2", "op": "task_card_stop", "chat_id": "D1", "reply_to": "1700.0001"}))
        .await;
    assert_eq!(stopped["success"], true, "{stopped}");
    let f = stub
        .wait_for_frame(|f| f.op() == Some("task_card_stop"), WAIT)
        .await
        .unwrap();
    let stop = action(&f);
    assert_eq!(
        (&stop["chat_id"], &stop["card_id"], stop.get("chunks")),
        (&json!("D1"), &json!("turn:1700.0001"), None),
        "{stop}"
    );

    // Chunks must be objects, and present: the bridge's errors.
    assert!(
        b.error(json!({"id": "k3", "op": "task_card", "chat_id": "D1", "chunks": ["step"]}))
            .await
            .starts_with("task_card: invalid type: string \"step\", expected a map"),
    );
    assert!(
        b.error(json!({"id": "k4", "op": "task_card", "chat_id": "D1"}))
            .await
            .starts_with("task_card: missing field `chunks`"),
    );
    b.ok(json!({"id": "k5", "op": "send", "chat_id": "D1", "content": "after"}))
        .await;
    stub.wait_for_frame(|f| f.op() == Some("send"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        stub.frames_of_type("outbound")
            .iter()
            .filter(|f| f.op() == Some("task_card"))
            .count(),
        1,
        "the refused cards sent nothing"
    );

    assert_eq!(b.ok(json!({"id": "z", "op": "shutdown"})).await, json!({}));
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_answers_every_bad_input_and_keeps_serving() {
    let stub = stub(StubConfig::default()).await;
    let mut b = Bridge::start(&stub, "", None).await;
    // Each bad line gets exactly one `ok:false` result; `id` is echoed when
    // it was usable, null otherwise. Blank lines are not commands.
    b.write(b"not json\n\n   \n[1,2]\n{\"id\":true,\"op\":\"health\"}\n{\"id\":1.5,\"op\":\"health\"}\n");
    let cases: &[(Value, &str)] = &[
        (json!({"id": 1}), "missing `op`"),
        (json!({"id": 2, "op": 7}), "`op` must be a string"),
        (json!({"id": 3, "op": "fly"}), "unknown op `fly`"),
        (
            json!({"id": 4, "op": "send", "chat_id": 5, "content": "x"}),
            "send: invalid type: integer `5`, expected a string",
        ),
        (
            json!({"id": 5, "op": "send", "content": "x"}),
            "send: missing field `chat_id`",
        ),
        (
            json!({"id": 6, "op": "send", "chat_id": "c", "content": "x", "bogus": 1}),
            "send: unknown field `bogus`",
        ),
        (
            json!({"id": 7, "op": "accept", "delivery": "one"}),
            "accept: invalid type: string \"one\"",
        ),
        (
            json!({"id": 8, "op": "health", "extra": true}),
            "health: unknown field `extra`",
        ),
        (
            json!({"id": "nine", "op": "send", "chat_id": "c", "content": "x", "metadata": [1]}),
            "send: invalid type: sequence, expected a map",
        ),
    ];
    for (command, _) in cases {
        b.command(command);
    }
    // A line over the 4 MiB cap is skipped whole (not parsed in pieces).
    let mut long = vec![b'x'; (4 << 20) + 10];
    long.push(b'\n');
    b.write(&long);
    let health = b.ok(json!({"id": "after", "op": "health"})).await;
    assert_eq!(health["state"], "ready");

    for (command, needle) in cases {
        let line = b.result_for(&command["id"]).await;
        assert_eq!(line["ok"], false, "{command} -> {line}");
        let error = line["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{command}: {error:?} lacks {needle:?}"
        );
    }
    b.close_stdin();
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
    let nulls: Vec<String> = check_stdout(&b.p)
        .into_iter()
        .filter(|v| v["kind"] == "result" && v["id"].is_null())
        .map(|v| v["error"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nulls.len(), 5, "{nulls:#?}");
    assert!(nulls[0].starts_with("the line is not JSON"), "{nulls:#?}");
    assert_eq!(nulls[1], "the line is not a JSON object");
    assert_eq!(nulls[2], "`id` must be a string or an integer");
    assert_eq!(nulls[3], "`id` must be a string or an integer");
    assert!(nulls[4].contains("longer than 4194304 bytes"), "{nulls:#?}");
    for (id, lines) in b.results_by_id() {
        if id != "null" {
            assert_eq!(lines.len(), 1, "id {id} answered {} times", lines.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_answers_1000_pipelined_commands_once_each() {
    const N: usize = 1000;
    let stub = stub(StubConfig::default()).await;
    let mut b = Bridge::start(&stub, "", None).await;
    stub.push_inbound(events::discord_text("route me"))
        .await
        .unwrap();
    let n = b.delivery_of("route me").await;
    b.ok(json!({"id": "acc", "op": "accept", "delivery": n}))
        .await;

    // Written in one go from another thread, without reading any result.
    let mut bulk = Vec::new();
    for i in 0..N {
        let id = if i % 2 == 0 {
            json!(i)
        } else {
            json!(format!("s-{i}"))
        };
        let command =
            json!({"id": id, "op": "send", "chat_id": "chan1", "content": format!("m{i}")});
        bulk.extend_from_slice(command.to_string().as_bytes());
        bulk.push(b'\n');
    }
    let mut stdin = b.stdin.take().unwrap();
    let writer = tokio::task::spawn_blocking(move || stdin.write_all(&bulk).map(|()| stdin));
    b.p.wait_count(
        "send results",
        |v| v["kind"] == "result" && v["ok"] == true && v["result"]["success"] == true,
        N,
        START,
    )
    .await;
    b.stdin = Some(writer.await.unwrap().unwrap());
    let sends = stub
        .frames()
        .iter()
        .filter(|f| f.op() == Some("send"))
        .count();
    assert_eq!(sends, N, "the connector saw every send once");

    b.close_stdin();
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
    let by_id = b.results_by_id();
    assert_eq!(by_id.len(), N + 1);
    for i in 0..N {
        let id = if i % 2 == 0 {
            json!(i)
        } else {
            json!(format!("s-{i}"))
        };
        let lines = &by_id[&id.to_string()];
        assert_eq!(lines.len(), 1, "id {id}");
        assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_end_of_input_goes_idle_and_exits_0() {
    let stub = stub(StubConfig::default()).await;
    let mut b = Bridge::start(&stub, "", None).await;
    // One send still waiting for the connector when stdin closes.
    stub.queue_outbound_reply(Some("send"), OutboundReply::NoAnswer);
    b.command(&json!({"id": "held", "op": "send", "chat_id": "dm-x", "content": "late"}));
    stub.wait_for_pending_request(WAIT).await.unwrap();
    stub.push_inbound(events::discord_text("unanswered"))
        .await
        .unwrap();
    b.delivery_of("unanswered").await;
    b.close_stdin();
    stub.wait_for_frame_type("going_idle", WAIT).await.unwrap();
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
    // The held send still got its one result (ambiguous: it went out).
    let by_id = b.results_by_id();
    let held = &by_id["\"held\""];
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["ok"], true, "{}", held[0]);
    assert_eq!(held[0]["result"]["success"], false, "{}", held[0]);
    assert_eq!(held[0]["result"]["ambiguous"], true, "{}", held[0]);
    assert!(b.p.stderr().contains("end of stdin"), "{}", b.p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_numbers_survive_a_guest_restart() {
    let guest = TempFile::new("test-guest.wasm", relay_test_artifacts::TEST_GUEST_WASM);
    let stub = stub(StubConfig::default()).await;
    let mut b = Bridge::start(&stub, "", Some(guest.path())).await;
    stub.push_inbound(events::discord_text("before"))
        .await
        .unwrap();
    let before = b.delivery_of("before").await;

    // The instance traps; a new one connects again.
    stub.send_frame(&json!({"type": "__test_panic"}))
        .await
        .unwrap();
    b.p.wait_line(
        "the trap",
        |v| v["kind"] == "fatal" && v["code"] == "guest_trap",
        WAIT,
    )
    .await;
    stub.wait_for_handshakes(2, START).await.unwrap();
    b.p.wait_count("ready twice", |v| is_state(v, "ready"), 2, WAIT)
        .await;

    // The old number is stale, not re-used: the new instance's first
    // delivery gets a fresh one.
    let stale = b
        .error(json!({"id": 1, "op": "accept", "delivery": before}))
        .await;
    assert!(
        stale.starts_with(&format!("stale delivery {before}")),
        "{stale}"
    );
    stub.push_inbound(events::discord_text("after"))
        .await
        .unwrap();
    let after = b.delivery_of("after").await;
    assert!(after > before, "{before} then {after}");
    assert_eq!(
        b.ok(json!({"id": 2, "op": "accept", "delivery": after}))
            .await,
        json!({})
    );
    b.close_stdin();
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_loses_nothing_while_its_reader_stalls() {
    // 400 messages of 8 KiB (3.2 MB, far more than a pipe holds) arrive
    // while nobody reads stdout; every message line arrives once when the
    // reader comes back, and commands are answered again.
    const N: usize = 400;
    let stub = stub(StubConfig::default()).await;
    let mut b = Bridge::start(&stub, "max_undelivered = 1000\n", None).await;
    b.p.pause_stdout();
    let filler = "y".repeat(8 * 1024);
    for i in 0..N {
        stub.push_inbound(events::dm(
            "discord",
            "dm-s",
            "u1",
            &format!("{i} {filler}"),
        ))
        .await
        .unwrap();
    }
    b.command(&json!({"id": "h", "op": "health"}));
    b.p.resume_stdout();
    b.p.wait_count("message lines", |v| v["kind"] == "message", N, WAIT)
        .await;
    let health = b.result_for(&json!("h")).await;
    assert_eq!(health["ok"], true, "{health}");
    let mut numbers = Vec::new();
    for v in check_stdout(&b.p) {
        if v["kind"] == "message" {
            numbers.push(v["delivery"].as_u64().unwrap());
        }
    }
    assert_eq!(numbers.len(), N, "each message once");
    for n in numbers {
        b.command(&json!({"id": n, "op": "accept", "delivery": n}));
    }
    b.p.wait_count(
        "accept results",
        |v| v["kind"] == "result" && v["ok"] == true && v["id"].is_u64(),
        N,
        WAIT,
    )
    .await;
    b.close_stdin();
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bridge_sigterm_goes_idle_even_while_its_reader_stalls() {
    // While nobody reads stdout the bridge reads no commands either (that
    // is its backpressure), but a signal still shuts it down: the adapter
    // goes idle, so the connector buffers.
    let stub = stub(StubConfig::default()).await;
    let b = Bridge::start(&stub, "max_undelivered = 1000\n", None).await;
    b.p.pause_stdout();
    let filler = "z".repeat(8 * 1024);
    for i in 0..100 {
        stub.push_inbound(events::dm(
            "discord",
            "dm-z",
            "u1",
            &format!("{i} {filler}"),
        ))
        .await
        .unwrap();
    }
    b.p.signal("TERM");
    stub.wait_for_frame_type("going_idle", WAIT).await.unwrap();
    b.p.resume_stdout();
    let mut b = b;
    assert_eq!(b.p.wait_exit(WAIT).await, 0, "{}", b.p.context());
    let messages = check_stdout(&b.p)
        .into_iter()
        .filter(|v| v["kind"] == "message")
        .count();
    assert_eq!(
        messages, 100,
        "every message line written once before the exit"
    );
}
