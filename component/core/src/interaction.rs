//! Discord interaction -> MessageEvent (spec §7.4-§7.6, generation D).
//!
//! A forwarded interaction lands in the same session as a text message in
//! that chat: slash commands become `/name options...`, components their
//! `custom_id` (prompt tokens decoded), modal submits `custom_id=value` lines.
//! Any shape error degrades; only a non-JSON, non-object or non-Discord body
//! yields no event. The text-lane label record (§7.7) is out of scope here.

use crate::event::{MessageEvent, MessageType, PromptResponse, SessionSource};
use crate::frame::Forward;
use serde_json::{Map, Value};
use std::fmt;

/// Why a forward produced no event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoEvent {
    /// The forward is for another passthrough plane (logged and dropped).
    NotDiscord(String),
    /// The body is not UTF-8 JSON.
    NotJson,
    /// The body is JSON but not an object.
    NotAnObject,
}

impl fmt::Display for NoEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoEvent::NotDiscord(p) => write!(
                f,
                "passthrough_forward dropped (no handler): platform={p:?}"
            ),
            NoEvent::NotJson => f.write_str("passthrough_forward dropped: body is not JSON"),
            NoEvent::NotAnObject => {
                f.write_str("passthrough_forward dropped: body is not a JSON object")
            }
        }
    }
}

/// Discord interaction types (§7).
const APPLICATION_COMMAND: i64 = 2;
const MESSAGE_COMPONENT: i64 = 3;
const MODAL_SUBMIT: i64 = 5;
/// Option types that nest further options (§7.5).
const SUB_COMMAND: i64 = 1;
const SUB_COMMAND_GROUP: i64 = 2;
/// Component types of a modal (§7.4 step 2).
const ACTION_ROW: i64 = 1;
const TEXT_INPUT: i64 = 4;
const LABEL: i64 = 18;
/// Channel types that are threads (announcement, public, private).
const THREAD_CHANNEL_TYPES: [i64; 3] = [10, 11, 12];
/// Prefix of gateway-minted prompt callback tokens (§6.11, §7.6).
pub const PROMPT_TOKEN_PREFIX: &str = "hp1";

/// Maps a passthrough forward to an event, or says why there is none.
pub fn forward_to_event(forward: &Forward) -> Result<MessageEvent, NoEvent> {
    if forward.platform != "discord" {
        return Err(NoEvent::NotDiscord(truncate(&forward.platform, 64)));
    }
    let payload: Value = serde_json::from_slice(&forward.body).map_err(|_| NoEvent::NotJson)?;
    let Value::Object(payload) = payload else {
        return Err(NoEvent::NotAnObject);
    };
    Ok(interaction_to_event(&payload, forward.profile.as_deref()))
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

fn obj_or_empty(v: Option<&Value>) -> &Map<String, Value> {
    obj(v).unwrap_or(&EMPTY)
}

fn is_truthy(v: Option<&Value>) -> bool {
    v.is_some_and(crate::lenient::is_truthy)
}

/// Python `str(v or "")`: falsy values give "", strings stay, scalars render
/// as Python would.
pub fn py_str_or_empty(v: Option<&Value>) -> String {
    match v {
        Some(v) if crate::lenient::is_truthy(v) => py_str(v),
        _ => String::new(),
    }
}

/// Python `str()` of a JSON value (`True`, `10`, `1000.0`, `1e+16`).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => py_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral
/// values, exponent form outside [1e-4, 1e16).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Renders slash-command options (§7.5): sub-command names and trimmed
/// scalar values, depth first, in order.
pub fn render_options(options: Option<&Value>, out: &mut Vec<String>) {
    render_options_at(options, out, 0);
}

/// Discord nests at most two levels; the cap keeps hostile input bounded.
const MAX_OPTION_DEPTH: usize = 8;

fn render_options_at(options: Option<&Value>, out: &mut Vec<String>, depth: usize) {
    let Some(Value::Array(items)) = options else {
        return;
    };
    if depth > MAX_OPTION_DEPTH {
        return;
    }
    for item in items.iter().filter_map(Value::as_object) {
        let ty = item.get("type").and_then(Value::as_i64);
        if ty == Some(SUB_COMMAND) || ty == Some(SUB_COMMAND_GROUP) {
            let name = item.get("name").map(py_str).unwrap_or_default();
            let name = name.trim();
            if !name.is_empty() {
                out.push(name.to_owned());
            }
            render_options_at(item.get("options"), out, depth + 1);
        } else if let Some(v) = item.get("value").filter(|v| !v.is_null()) {
            let s = py_str(v);
            let s = s.trim();
            if !s.is_empty() {
                out.push(s.to_owned());
            }
        }
    }
}

fn is_prompt_part(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Decodes an `hp1:<prompt_id>:<option_id>` callback token (§7.6).
pub fn decode_prompt_token(custom_id: &str) -> Option<(&str, &str)> {
    let mut parts = custom_id.split(':');
    let (prefix, prompt, option) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || prefix != PROMPT_TOKEN_PREFIX {
        return None;
    }
    (is_prompt_part(prompt) && is_prompt_part(option)).then_some((prompt, option))
}

/// Text inputs of a modal submit in order, from the legacy action-row layout
/// and the newer label layout (§7.4 step 2).
fn modal_fields(data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut take = |c: &Map<String, Value>| {
        if c.get("type").and_then(Value::as_i64) == Some(TEXT_INPUT) {
            fields.push((
                py_str_or_empty(c.get("custom_id")),
                py_str_or_empty(c.get("value")),
            ));
        }
    };
    let Some(Value::Array(top)) = data.get("components") else {
        return fields;
    };
    for entry in top.iter().filter_map(Value::as_object) {
        match entry.get("type").and_then(Value::as_i64) {
            Some(ACTION_ROW) => {
                if let Some(Value::Array(row)) = entry.get("components") {
                    row.iter().filter_map(Value::as_object).for_each(&mut take);
                }
            }
            Some(LABEL) => {
                if let Some(c) = obj(entry.get("component")) {
                    take(c);
                }
            }
            _ => take(entry),
        }
    }
    fields
}

/// Maps a decoded interaction payload (generation D).
pub fn interaction_to_event(payload: &Map<String, Value>, profile: Option<&str>) -> MessageEvent {
    let itype = payload.get("type").and_then(Value::as_i64);
    let data = obj_or_empty(payload.get("data"));
    let mut event = MessageEvent::default();

    match itype {
        Some(APPLICATION_COMMAND) => {
            let name = py_str_or_empty(data.get("name"));
            let command = format!("/{name}");
            let command = command.trim_end_matches('/');
            if !command.is_empty() {
                let mut parts = vec![command.to_owned()];
                render_options(data.get("options"), &mut parts);
                event.text = parts.join(" ").trim().to_owned();
                event.message_type = MessageType::Command;
            }
        }
        Some(MESSAGE_COMPONENT) => {
            let custom_id = py_str_or_empty(data.get("custom_id"));
            let attached = obj(payload.get("message"))
                .map(|m| py_str_or_empty(m.get("id")))
                .filter(|id| !id.is_empty());
            if let Some((prompt_id, option_id)) = decode_prompt_token(&custom_id) {
                event.prompt_response = Some(PromptResponse {
                    prompt_id: prompt_id.to_owned(),
                    option_id: option_id.to_owned(),
                    label: None,
                    prompt_message_id: attached.clone(),
                });
                event.text = format!("/{option_id}");
                event.message_type = MessageType::Command;
            } else {
                event.text = custom_id;
            }
            event.source.message_id = attached;
        }
        Some(MODAL_SUBMIT) => {
            let fields = modal_fields(data);
            event.text = fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n");
            let listed: Vec<Value> = fields
                .into_iter()
                .map(|(k, v)| serde_json::json!({"custom_id": k, "value": v}))
                .collect();
            event
                .metadata
                .insert("discord_modal_fields".to_owned(), Value::Array(listed));
            event.raw_message = serde_json::to_string(payload).ok();
        }
        _ => {}
    }

    let member = obj(payload.get("member"));
    let user = member
        .and_then(|m| m.get("user"))
        .filter(|u| is_truthy(Some(u)))
        .or_else(|| payload.get("user"));
    let user = obj_or_empty(user);
    let guild_id = py_str_or_empty(payload.get("guild_id"));
    let chat_id = py_str_or_empty(payload.get("channel_id"));
    let channel = obj(payload.get("channel"));
    let in_thread = !guild_id.is_empty()
        && channel
            .and_then(|c| c.get("type"))
            .and_then(Value::as_i64)
            .is_some_and(|t| THREAD_CHANNEL_TYPES.contains(&t));

    let display = [
        member.and_then(|m| m.get("nick")),
        user.get("global_name"),
        user.get("username"),
    ]
    .into_iter()
    .map(py_str_or_empty)
    .find(|s| !s.is_empty());

    let interaction_id = py_str_or_empty(payload.get("id"));
    let source = SessionSource {
        platform: "discord".to_owned(),
        chat_type: if in_thread {
            "thread"
        } else if guild_id.is_empty() {
            "dm"
        } else {
            "group"
        }
        .to_owned(),
        thread_id: in_thread.then(|| chat_id.clone()),
        parent_chat_id: if in_thread {
            channel
                .map(|c| py_str_or_empty(c.get("parent_id")))
                .filter(|p| !p.is_empty())
        } else {
            None
        },
        chat_id,
        user_id: Some(py_str_or_empty(user.get("id"))).filter(|u| !u.is_empty()),
        user_name: display,
        scope_id: Some(guild_id).filter(|g| !g.is_empty()),
        profile: profile.map(str::to_owned),
        message_id: event.source.message_id.take(),
        ..SessionSource::default()
    };
    event.source = source;
    if !interaction_id.is_empty() {
        event.message_id = Some(interaction_id.clone());
        event.metadata.insert(
            "discord_interaction_id".to_owned(),
            Value::String(interaction_id),
        );
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> MessageEvent {
        let body = serde_json::to_vec(&v).expect("json");
        forward_to_event(&Forward {
            platform: "discord".into(),
            body,
            ..Forward::default()
        })
        .expect("event")
    }

    fn slash(data: Value) -> String {
        map(
            json!({"type": 2, "id": "i1", "channel_id": "c1", "guild_id": "g1", "data": data,
                   "member": {"user": {"id": "u1", "username": "ben"}}}),
        )
        .text
    }

    #[test]
    fn option_rendering_table() {
        assert_eq!(slash(json!({"name":"new"})), "/new");
        assert_eq!(
            slash(json!({"name":"model","options":[{"name":"name","type":3,"value":"gpt-x"}]})),
            "/model gpt-x"
        );
        assert_eq!(
            slash(
                json!({"name":"skill","options":[{"name":"run","type":1,"options":[{"name":"target","type":3,"value":"deploy"}]}]})
            ),
            "/skill run deploy"
        );
        assert_eq!(
            slash(
                json!({"name":"config","options":[{"type":2,"name":"set","options":[{"type":1,"name":"model","options":[{"type":3,"name":"value","value":"x"}]}]}]})
            ),
            "/config set model x"
        );
        assert_eq!(
            slash(
                json!({"name":"flag","options":[{"type":5,"name":"on","value":true},{"type":4,"name":"n","value":10}]})
            ),
            "/flag True 10"
        );
        assert_eq!(
            slash(json!({"name":"steer","options":[{"type":3,"name":"text","value":"  "}]})),
            "/steer"
        );
        assert_eq!(
            slash(json!({"name":"n","options":[{"type":10,"name":"x","value":1e3}]})),
            "/n 1000.0"
        );
        let e = map(json!({"type": 2, "data": {"name": ""}}));
        assert_eq!((e.text.as_str(), e.message_type), ("", MessageType::Text));
    }

    #[test]
    fn slash_command_in_guild() {
        let e = map(
            json!({"type":2,"id":"i1","channel_id":"c1","guild_id":"g1","data":{"name":"status"},
                           "member":{"user":{"id":"u1","username":"ben"}}}),
        );
        assert_eq!(e.text, "/status");
        assert_eq!(e.message_type, MessageType::Command);
        assert_eq!(e.source.platform, "discord");
        assert_eq!(e.source.chat_id, "c1");
        assert_eq!(e.source.chat_type, "group");
        assert_eq!(e.source.scope_id.as_deref(), Some("g1"));
        assert_eq!(e.source.user_id.as_deref(), Some("u1"));
        assert_eq!(e.source.user_name.as_deref(), Some("ben"));
        assert_eq!(e.message_id.as_deref(), Some("i1"));
        assert_eq!(e.source.message_id, None, "slash commands have no anchor");
        assert_eq!(e.metadata["discord_interaction_id"], "i1");
    }

    #[test]
    fn display_name_order() {
        let base = json!({"type":2,"channel_id":"c","guild_id":"g","data":{"name":"x"},
                          "member":{"nick":"Benny","user":{"id":"u","username":"ben","global_name":"Ben D"}}});
        assert_eq!(map(base.clone()).source.user_name.as_deref(), Some("Benny"));
        let mut no_nick = base.clone();
        no_nick["member"]["nick"] = Value::Null;
        assert_eq!(
            map(no_nick.clone()).source.user_name.as_deref(),
            Some("Ben D")
        );
        no_nick["member"]["user"]["global_name"] = Value::Null;
        assert_eq!(map(no_nick).source.user_name.as_deref(), Some("ben"));
    }

    #[test]
    fn thread_interaction() {
        let e = map(
            json!({"type":2,"channel_id":"th1","guild_id":"g","data":{"name":"x"},
                           "channel":{"id":"th1","type":11,"parent_id":"ch1"}}),
        );
        assert_eq!(e.source.chat_type, "thread");
        assert_eq!(e.source.thread_id.as_deref(), Some("th1"));
        assert_eq!(e.source.parent_chat_id.as_deref(), Some("ch1"));
        assert_eq!(e.source.chat_id, "th1");
    }

    #[test]
    fn dm_interaction() {
        let e = map(json!({"type":2,"channel_id":"d","data":{"name":"x"},
                           "user":{"id":"u1","username":"ben","global_name":"New Name"}}));
        assert_eq!(e.source.chat_type, "dm");
        assert_eq!(e.source.scope_id, None);
        assert_eq!(e.source.user_name.as_deref(), Some("New Name"));
        assert_eq!(e.source.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn component_press() {
        let e = map(
            json!({"type":3,"id":"press-1","channel_id":"c","data":{"custom_id":"inspect"},"message":{"id":"bot-1"}}),
        );
        assert_eq!(
            (e.text.as_str(), e.message_type),
            ("inspect", MessageType::Text)
        );
        assert_eq!(e.source.message_id.as_deref(), Some("bot-1"));
        assert_eq!(e.message_id.as_deref(), Some("press-1"));
        assert_eq!(e.metadata["discord_interaction_id"], "press-1");
        assert_eq!(e.prompt_response, None);
    }

    #[test]
    fn prompt_tokens() {
        let e = map(
            json!({"type":3,"id":"p","data":{"custom_id":"hp1:a1b2c3d4:deny"},"message":{"id":"pm55"}}),
        );
        let p = e.prompt_response.expect("prompt answer");
        assert_eq!(
            (p.prompt_id.as_str(), p.option_id.as_str()),
            ("a1b2c3d4", "deny")
        );
        assert_eq!(p.prompt_message_id.as_deref(), Some("pm55"));
        assert_eq!(
            (e.text.as_str(), e.message_type),
            ("/deny", MessageType::Command)
        );
        let e = map(json!({"type":3,"data":{"custom_id":"hp1:n0nce1.ab12cd34:once"}}));
        assert_eq!(
            e.prompt_response.expect("answer").prompt_id,
            "n0nce1.ab12cd34"
        );
        for plain in [
            "hp1:a:b:c",
            "hp1:bad id:x",
            "approve_btn",
            "hp2:a:b",
            "hp1::x",
        ] {
            let e = map(json!({"type":3,"data":{"custom_id": plain}}));
            assert_eq!(e.prompt_response, None, "{plain}");
            assert_eq!(e.text, plain);
        }
    }

    #[test]
    fn modal_submit_both_layouts() {
        let legacy = json!({"type":5,"id":"m1","channel_id":"c","data":{"custom_id":"form","components":[
            {"type":1,"components":[{"type":4,"custom_id":"answer","value":"café 東京"}]},
            {"type":1,"components":[{"type":4,"custom_id":"optional","value":""}]}]}});
        let label = json!({"type":5,"id":"m1","channel_id":"c","data":{"custom_id":"form","components":[
            {"type":18,"component":{"type":4,"custom_id":"answer","value":"café 東京"}},
            {"type":18,"component":{"type":4,"custom_id":"optional","value":""}}]}});
        for payload in [legacy, label] {
            let e = map(payload);
            assert_eq!(e.text, "answer=café 東京\noptional=");
            assert_eq!(e.message_type, MessageType::Text);
            assert_eq!(
                e.metadata["discord_modal_fields"],
                json!([{"custom_id":"answer","value":"café 東京"},{"custom_id":"optional","value":""}])
            );
            assert!(e.raw_message.is_some());
            assert_eq!(e.message_id.as_deref(), Some("m1"));
        }
    }

    #[test]
    fn ping_and_unknown_types_give_empty_text() {
        let e = map(json!({"type":1}));
        assert_eq!((e.text.as_str(), e.message_type), ("", MessageType::Text));
        let e = map(json!({"type":"x","data":5,"member":[1],"user":"u","channel":7}));
        assert_eq!(e.text, "");
        assert_eq!(e.source.chat_type, "dm");
    }

    #[test]
    fn bodies_without_an_event() {
        let f = |platform: &str, body: &[u8]| Forward {
            platform: platform.into(),
            body: body.to_vec(),
            ..Forward::default()
        };
        assert_eq!(
            forward_to_event(&f("discord", b"not json")),
            Err(NoEvent::NotJson)
        );
        assert_eq!(
            forward_to_event(&f("discord", b"[1]")),
            Err(NoEvent::NotAnObject)
        );
        assert_eq!(forward_to_event(&f("discord", b"")), Err(NoEvent::NotJson));
        assert_eq!(
            forward_to_event(&f("twilio", b"{}")),
            Err(NoEvent::NotDiscord("twilio".into()))
        );
    }

    #[test]
    fn profile_lands_on_the_source() {
        let e = forward_to_event(&Forward {
            platform: "discord".into(),
            body: br#"{"type":2,"data":{"name":"x"}}"#.to_vec(),
            profile: Some("work".into()),
            ..Forward::default()
        })
        .expect("event");
        assert_eq!(e.source.profile.as_deref(), Some("work"));
    }

    #[test]
    fn python_float_rendering() {
        assert_eq!(py_float(1.5), "1.5");
        assert_eq!(py_float(1000.0), "1000.0");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(1.5e-5), "1.5e-05");
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(-2.25), "-2.25");
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        let mut opt = json!({"type":3,"name":"leaf","value":"v"});
        for _ in 0..50 {
            opt = json!({"type":1,"name":"s","options":[opt]});
        }
        let text = slash(json!({"name":"deep","options":[opt]}));
        assert_eq!(text, format!("/deep{}", " s".repeat(MAX_OPTION_DEPTH + 1)));
    }
}
