//! The relay frames of both directions (spec §2), typed, with exact wire casing.
//!
//! Connector frames decode from one line with the skip/degrade rules of
//! §1.5 (`decode_connector_frame`); gateway frames encode to one compact JSON
//! object plus `\n`. Both directions also go the other way, for tests and the
//! property checks. Nothing here panics on input.

use crate::event::{MessageEvent, SOURCE_NOT_OBJECT};
use crate::lenient::{self, Nested};
use base64::Engine as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

mod gateway;

pub use gateway::{Action, GatewayFrame};

/// Why a line was skipped (§1.5): only structural faults skip; every other
/// type error degrades to a default and the frame is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is not valid JSON.
    InvalidJson,
    /// The JSON value is not an object.
    NotAnObject,
    /// `type` is missing or not a string.
    MissingType,
    /// `type` names no connector-to-gateway frame.
    UnknownType,
    /// `type` names a gateway-to-connector frame (an echo).
    EchoedType,
    /// A structural field (`event`, `source`, `forward`, `descriptor`,
    /// `result`) is present but not an object.
    NotAnObjectField(&'static str),
    /// The line exceeds the configured maximum length.
    LineTooLong,
}

impl SkipReason {
    /// A stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::InvalidJson => "invalid_json",
            SkipReason::NotAnObject => "not_an_object",
            SkipReason::MissingType => "missing_type",
            SkipReason::UnknownType => "unknown_type",
            SkipReason::EchoedType => "echoed_type",
            SkipReason::NotAnObjectField(_) => "field_not_an_object",
            SkipReason::LineTooLong => "line_too_long",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotAnObjectField(field) => {
                write!(f, "skipping frame: `{field}` is not an object")
            }
            other => write!(f, "skipping frame: {}", other.label().replace('_', " ")),
        }
    }
}

/// A passthrough request the connector forwarded (§2.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    /// Passthrough plane (`discord`, `twilio`, ...).
    pub platform: String,
    /// Bot or app id.
    pub bot_id: String,
    /// Original HTTP method.
    pub method: String,
    /// Original request path.
    pub path: String,
    /// Request headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes (empty when `bodyB64` was invalid).
    pub body: Vec<u8>,
    /// Target profile in multiplex mode.
    pub profile: Option<String>,
}

/// A frame the connector sends to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorFrame {
    /// Capability descriptor answering a `hello` (§2.3). Kept as JSON text;
    /// the machine validates it (an invalid one fails the handshake).
    Descriptor {
        /// The descriptor object as JSON.
        raw: String,
    },
    /// An inbound message, live or replayed from the buffer (§2.4).
    Inbound {
        /// The normalised event.
        event: Box<MessageEvent>,
        /// Set when replayed from the connector's durable buffer.
        buffer_id: Option<String>,
    },
    /// The connector flipped this instance to buffered-only (§2.12).
    GoingIdleAck,
    /// The result of an `outbound` frame (§2.8).
    OutboundResult {
        /// Echo of the request id (empty when missing).
        request_id: String,
        /// The result object as JSON (`{}` when missing).
        result: String,
    },
    /// Interrupt a session's running turn (§2.10).
    InterruptInbound {
        /// The session to interrupt.
        session_key: String,
        /// Its chat.
        chat_id: String,
    },
    /// A forwarded passthrough request (§2.11).
    PassthroughForward {
        /// The request.
        forward: Box<Forward>,
        /// Set when replayed from the connector's durable buffer.
        buffer_id: Option<String>,
    },
}

/// The top-level `type` tag, read without allocating.
#[derive(Default)]
enum TypeTag {
    Known(Kind),
    Echo,
    Unknown,
    NotString,
    #[default]
    Absent,
}

#[derive(Clone, Copy)]
enum Kind {
    Descriptor,
    Inbound,
    GoingIdleAck,
    OutboundResult,
    InterruptInbound,
    PassthroughForward,
}

impl<'de> Deserialize<'de> for TypeTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TypeTag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a frame type")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TypeTag, E> {
                Ok(match v {
                    "descriptor" => TypeTag::Known(Kind::Descriptor),
                    "inbound" => TypeTag::Known(Kind::Inbound),
                    "going_idle_ack" => TypeTag::Known(Kind::GoingIdleAck),
                    "outbound_result" => TypeTag::Known(Kind::OutboundResult),
                    "interrupt_inbound" => TypeTag::Known(Kind::InterruptInbound),
                    "passthrough_forward" => TypeTag::Known(Kind::PassthroughForward),
                    "hello" | "outbound" | "interrupt" | "going_idle" | "inbound_ack" => {
                        TypeTag::Echo
                    }
                    _ => TypeTag::Unknown,
                })
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<TypeTag, E> {
                Ok(TypeTag::NotString)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<TypeTag, E> {
                Ok(TypeTag::NotString)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<TypeTag, E> {
                Ok(TypeTag::NotString)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<TypeTag, E> {
                Ok(TypeTag::NotString)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<TypeTag, E> {
                Ok(TypeTag::NotString)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<TypeTag, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(TypeTag::NotString)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<TypeTag, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(TypeTag::NotString)
            }
        }
        d.deserialize_any(V)
    }
}

/// The union of every connector frame's fields, decoded in one pass.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    ty: TypeTag,
    event: Nested<MessageEvent>,
    #[serde(rename = "bufferId", deserialize_with = "lenient::opt_id")]
    buffer_id: Option<String>,
    #[serde(borrow)]
    descriptor: Option<&'a RawValue>,
    #[serde(rename = "requestId", deserialize_with = "lenient::string")]
    request_id: String,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(deserialize_with = "lenient::string")]
    session_key: String,
    #[serde(deserialize_with = "lenient::id")]
    chat_id: String,
    forward: Nested<WireForward>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireForward {
    #[serde(deserialize_with = "lenient::id")]
    platform: String,
    #[serde(rename = "botId", deserialize_with = "lenient::id")]
    bot_id: String,
    #[serde(deserialize_with = "lenient::string")]
    method: String,
    #[serde(deserialize_with = "lenient::string")]
    path: String,
    #[serde(deserialize_with = "header_pairs")]
    headers: Vec<(String, String)>,
    #[serde(rename = "bodyB64", deserialize_with = "lenient::string")]
    body_b64: String,
    #[serde(deserialize_with = "lenient::opt_string")]
    profile: Option<String>,
}

/// Headers as `[name, value]` pairs: only two-element arrays are kept, both
/// elements stringified (§2.11).
fn header_pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    // Headers are few and small; a Value here keeps the pair rules readable.
    let Value::Array(items) = Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .filter_map(|item| match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let value = py_str(pair.pop()?);
                let name = py_str(pair.pop()?);
                Some((name, value))
            }
            _ => None,
        })
        .collect())
}

/// Python `str()` of a decoded JSON scalar, for stringified fields.
fn py_str(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

/// Standard base64 (padded) to bytes; invalid input gives an empty body
/// (§2.11). ASCII whitespace is ignored, as line-wrapped base64 is common.
pub fn decode_body_b64(b64: &str) -> Vec<u8> {
    let engine = &base64::engine::general_purpose::STANDARD;
    if b64.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        engine.decode(compact).unwrap_or_default()
    } else {
        engine.decode(b64).unwrap_or_default()
    }
}

fn object_field(raw: Option<&RawValue>, field: &'static str) -> Result<Option<String>, SkipReason> {
    match raw {
        None => Ok(None),
        Some(r) if r.get().trim_start().starts_with('{') => Ok(Some(r.get().to_owned())),
        Some(_) => Err(SkipReason::NotAnObjectField(field)),
    }
}

/// Decodes one complete line (without its `\n`) into a connector frame, or
/// says why it is skipped. Whitespace-only lines are the caller's concern.
pub fn decode_connector_frame(line: &str) -> Result<ConnectorFrame, SkipReason> {
    if !line.trim_start().starts_with('{') {
        // Arrays, strings and numbers are valid JSON but not frames; other
        // text is malformed. Either way nothing after this point applies.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(line) {
            Ok(_) => SkipReason::NotAnObject,
            Err(_) => SkipReason::InvalidJson,
        });
    }
    let env: Envelope<'_> = match serde_json::from_str(line) {
        Ok(env) => env,
        Err(e) if e.to_string().starts_with(SOURCE_NOT_OBJECT) => {
            return Err(SkipReason::NotAnObjectField("source"));
        }
        Err(_) => return Err(SkipReason::InvalidJson),
    };
    let kind = match env.ty {
        TypeTag::Known(kind) => kind,
        TypeTag::Echo => return Err(SkipReason::EchoedType),
        TypeTag::Unknown => return Err(SkipReason::UnknownType),
        TypeTag::NotString | TypeTag::Absent => return Err(SkipReason::MissingType),
    };
    Ok(match kind {
        Kind::Descriptor => ConnectorFrame::Descriptor {
            raw: object_field(env.descriptor, "descriptor")?.unwrap_or_else(|| "{}".to_owned()),
        },
        Kind::Inbound => {
            let event = match env.event {
                Nested::Object(mut e) => {
                    e.normalise();
                    e
                }
                Nested::Absent => {
                    let mut e = MessageEvent::default();
                    e.normalise();
                    e
                }
                Nested::NotObject => return Err(SkipReason::NotAnObjectField("event")),
            };
            ConnectorFrame::Inbound {
                event: Box::new(event),
                buffer_id: env.buffer_id.filter(|b| !b.is_empty()),
            }
        }
        Kind::GoingIdleAck => ConnectorFrame::GoingIdleAck,
        Kind::OutboundResult => ConnectorFrame::OutboundResult {
            request_id: env.request_id,
            result: object_field(env.result, "result")?.unwrap_or_else(|| "{}".to_owned()),
        },
        Kind::InterruptInbound => ConnectorFrame::InterruptInbound {
            session_key: env.session_key,
            chat_id: env.chat_id,
        },
        Kind::PassthroughForward => {
            let wire = match env.forward {
                Nested::Object(f) => f,
                Nested::Absent => WireForward::default(),
                Nested::NotObject => return Err(SkipReason::NotAnObjectField("forward")),
            };
            ConnectorFrame::PassthroughForward {
                forward: Box::new(Forward {
                    platform: wire.platform,
                    bot_id: wire.bot_id,
                    method: wire.method,
                    path: wire.path,
                    headers: wire.headers,
                    body: decode_body_b64(&wire.body_b64),
                    profile: wire.profile,
                }),
                buffer_id: env.buffer_id.filter(|b| !b.is_empty()),
            }
        }
    })
}

impl ConnectorFrame {
    /// Encodes as one compact JSON object plus `\n` (used by tests and
    /// simulations; the adapter never sends these).
    pub fn encode(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl Serialize for ConnectorFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            ConnectorFrame::Descriptor { raw } => {
                m.serialize_entry("type", "descriptor")?;
                m.serialize_entry("descriptor", &raw_or_empty(raw))?;
            }
            ConnectorFrame::Inbound { event, buffer_id } => {
                m.serialize_entry("type", "inbound")?;
                m.serialize_entry("event", event)?;
                if let Some(b) = buffer_id {
                    m.serialize_entry("bufferId", b)?;
                }
            }
            ConnectorFrame::GoingIdleAck => m.serialize_entry("type", "going_idle_ack")?,
            ConnectorFrame::OutboundResult { request_id, result } => {
                m.serialize_entry("type", "outbound_result")?;
                m.serialize_entry("requestId", request_id)?;
                m.serialize_entry("result", &raw_or_empty(result))?;
            }
            ConnectorFrame::InterruptInbound {
                session_key,
                chat_id,
            } => {
                m.serialize_entry("type", "interrupt_inbound")?;
                m.serialize_entry("session_key", session_key)?;
                m.serialize_entry("chat_id", chat_id)?;
            }
            ConnectorFrame::PassthroughForward { forward, buffer_id } => {
                m.serialize_entry("type", "passthrough_forward")?;
                m.serialize_entry("forward", &ForwardWire(forward))?;
                if let Some(b) = buffer_id {
                    m.serialize_entry("bufferId", b)?;
                }
            }
        }
        m.end()
    }
}

fn raw_or_empty(raw: &str) -> Box<RawValue> {
    serde_json::from_str::<Box<RawValue>>(raw).unwrap_or_else(|_| {
        serde_json::from_str("{}").unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

struct ForwardWire<'a>(&'a Forward);

impl Serialize for ForwardWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("platform", &f.platform)?;
        m.serialize_entry("botId", &f.bot_id)?;
        m.serialize_entry("method", &f.method)?;
        m.serialize_entry("path", &f.path)?;
        let headers: Vec<[&str; 2]> = f
            .headers
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect();
        m.serialize_entry("headers", &headers)?;
        m.serialize_entry(
            "bodyB64",
            &base64::engine::general_purpose::STANDARD.encode(&f.body),
        )?;
        if let Some(p) = &f.profile {
            m.serialize_entry("profile", p)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(line: &str) -> Result<ConnectorFrame, SkipReason> {
        decode_connector_frame(line)
    }

    #[test]
    fn inbound_example_decodes() {
        let f = decode(r#"{"type": "inbound", "event": {"text": "hello from connector", "message_type": "text", "message_id": "m-100", "source": {"platform": "discord", "chat_id": "chan1", "chat_type": "group", "scope_id": "guildA", "user_id": "u1", "user_name": "ben", "thread_id": null, "chat_name": "Hermes / #ops", "chat_topic": null}}, "bufferId": "buf-1"}"#).expect("decodes");
        let ConnectorFrame::Inbound { event, buffer_id } = f else {
            panic!("not inbound")
        };
        assert_eq!(buffer_id.as_deref(), Some("buf-1"));
        assert_eq!(event.text, "hello from connector");
        assert_eq!(event.source.scope_id.as_deref(), Some("guildA"));
        assert_eq!(event.source.chat_name.as_deref(), Some("Hermes / #ops"));
    }

    #[test]
    fn structural_faults_skip() {
        assert_eq!(decode("{"), Err(SkipReason::InvalidJson));
        assert_eq!(decode("[1,2]"), Err(SkipReason::NotAnObject));
        assert_eq!(decode("\"inbound\""), Err(SkipReason::NotAnObject));
        assert_eq!(decode("42"), Err(SkipReason::NotAnObject));
        assert_eq!(decode("{}"), Err(SkipReason::MissingType));
        assert_eq!(decode(r#"{"type":5}"#), Err(SkipReason::MissingType));
        assert_eq!(decode(r#"{"type":"bogus"}"#), Err(SkipReason::UnknownType));
        for echo in [
            "hello",
            "outbound",
            "interrupt",
            "going_idle",
            "inbound_ack",
        ] {
            assert_eq!(
                decode(&format!(r#"{{"type":"{echo}"}}"#)),
                Err(SkipReason::EchoedType)
            );
        }
        assert_eq!(
            decode(r#"{"type":"inbound","event":[1]}"#),
            Err(SkipReason::NotAnObjectField("event"))
        );
        assert_eq!(
            decode(r#"{"type":"inbound","event":{"source":"x"}}"#),
            Err(SkipReason::NotAnObjectField("source"))
        );
        assert_eq!(
            decode(r#"{"type":"passthrough_forward","forward":7}"#),
            Err(SkipReason::NotAnObjectField("forward"))
        );
        assert_eq!(
            decode(r#"{"type":"descriptor","descriptor":"x"}"#),
            Err(SkipReason::NotAnObjectField("descriptor"))
        );
        assert_eq!(
            decode(r#"{"type":"outbound_result","requestId":"r","result":true}"#),
            Err(SkipReason::NotAnObjectField("result"))
        );
    }

    #[test]
    fn missing_objects_default_to_empty() {
        let f = decode(r#"{"type":"outbound_result","requestId":"r"}"#).expect("kept");
        assert_eq!(
            f,
            ConnectorFrame::OutboundResult {
                request_id: "r".into(),
                result: "{}".into()
            }
        );
        let f = decode(r#"{"type":"descriptor"}"#).expect("kept");
        assert_eq!(f, ConnectorFrame::Descriptor { raw: "{}".into() });
        let f = decode(r#"{"type":"interrupt_inbound"}"#).expect("kept");
        assert_eq!(
            f,
            ConnectorFrame::InterruptInbound {
                session_key: String::new(),
                chat_id: String::new()
            }
        );
    }

    #[test]
    fn wrong_typed_fields_degrade() {
        let f = decode(r#"{"type":"inbound","event":{"text":5,"source":{"chat_id":"c","user_name":[1]}},"bufferId":{"x":1}}"#)
            .expect("kept");
        let ConnectorFrame::Inbound { event, buffer_id } = f else {
            panic!("not inbound")
        };
        assert_eq!(event.text, "");
        assert_eq!(event.source.user_name, None);
        assert_eq!(buffer_id, None);
        let f =
            decode(r#"{"type":"interrupt_inbound","session_key":1,"chat_id":"c"}"#).expect("kept");
        assert_eq!(
            f,
            ConnectorFrame::InterruptInbound {
                session_key: String::new(),
                chat_id: "c".into()
            }
        );
    }

    #[test]
    fn passthrough_example_decodes_exact_bytes() {
        let f = decode(r#"{"type": "passthrough_forward", "forward": {"platform": "discord", "botId": "1234567890", "method": "POST", "path": "/interactions/discord/1234567890", "headers": [["content-type", "application/json"], ["bad"], [1, true], "x"], "bodyB64": "eyJ0eXBlIjoyLCJpZCI6ImkxIiwiY2hhbm5lbF9pZCI6ImMxIiwiZ3VpbGRfaWQiOiJnMSIsImRhdGEiOnsibmFtZSI6Im1vZGVsIiwib3B0aW9ucyI6W3sibmFtZSI6Im5hbWUiLCJ0eXBlIjozLCJ2YWx1ZSI6ImdwdC14In1dfSwibWVtYmVyIjp7InVzZXIiOnsiaWQiOiJ1MSIsInVzZXJuYW1lIjoiYmVuIn19fQ=="}, "bufferId": "pbuf-7"}"#).expect("decodes");
        let ConnectorFrame::PassthroughForward { forward, buffer_id } = f else {
            panic!("not a forward")
        };
        assert_eq!(buffer_id.as_deref(), Some("pbuf-7"));
        assert_eq!(forward.platform, "discord");
        assert_eq!(forward.bot_id, "1234567890");
        assert_eq!(
            forward.headers,
            vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("1".to_owned(), "True".to_owned())
            ]
        );
        assert!(forward.body.starts_with(br#"{"type":2,"id":"i1""#));
        assert_eq!(forward.profile, None);
    }

    #[test]
    fn invalid_base64_gives_empty_body() {
        for body in ["***", "YQ", "YQ=", "@@@="] {
            let line = json!({"type":"passthrough_forward","forward":{"platform":"discord","bodyB64":body}}).to_string();
            let Ok(ConnectorFrame::PassthroughForward { forward, .. }) = decode(&line) else {
                panic!("kept")
            };
            assert!(forward.body.is_empty(), "{body}");
        }
        assert_eq!(decode_body_b64("YQ=="), b"a");
        assert_eq!(decode_body_b64("YW\nJj"), b"abc");
    }

    #[test]
    fn passthrough_profile_lands() {
        let line =
            r#"{"type":"passthrough_forward","forward":{"platform":"discord","profile":"work"}}"#;
        let Ok(ConnectorFrame::PassthroughForward { forward, buffer_id }) = decode(line) else {
            panic!("kept")
        };
        assert_eq!(forward.profile.as_deref(), Some("work"));
        assert_eq!(buffer_id, None);
    }

    #[test]
    fn gateway_frames_encode_exactly() {
        let hello = GatewayFrame::Hello {
            platform: "discord".into(),
            bot_id: "1234567890".into(),
            command_manifest: None,
        };
        assert_eq!(
            hello.encode(),
            "{\"type\":\"hello\",\"platform\":\"discord\",\"botId\":\"1234567890\"}\n"
        );
        let interrupt = GatewayFrame::Interrupt {
            session_key: "k".into(),
            reason: None,
        };
        assert_eq!(
            interrupt.encode(),
            "{\"type\":\"interrupt\",\"session_key\":\"k\",\"reason\":null}\n"
        );
        let send = GatewayFrame::Outbound {
            request_id: "0622041b98414a149a58e3b66bc00c9d".into(),
            action: Action::Send {
                chat_id: "chan1".into(),
                content: "Hi there".into(),
                reply_to: None,
                metadata: json!({"scope_id":"guildA","user_id":"u1"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            platform: Some("discord".into()),
            bot_id: Some("1234567890".into()),
        };
        let v: Value = serde_json::from_str(&send.encode()).expect("json");
        assert_eq!(
            v,
            json!({"type": "outbound", "requestId": "0622041b98414a149a58e3b66bc00c9d", "action": {"op": "send", "chat_id": "chan1", "content": "Hi there", "reply_to": null, "metadata": {"scope_id": "guildA", "user_id": "u1"}}, "platform": "discord", "botId": "1234567890"})
        );
        assert!(
            send.encode().ends_with("}\n")
                && !send.encode()[..send.encode().len() - 1].contains('\n')
        );
        assert_eq!(GatewayFrame::decode(&send.encode()), Some(send));
        assert_eq!(
            GatewayFrame::GoingIdle.encode(),
            "{\"type\":\"going_idle\"}\n"
        );
        let typing = GatewayFrame::Outbound {
            request_id: "r".into(),
            action: Action::Typing {
                chat_id: "c".into(),
                metadata: Map::new(),
                content: None,
            },
            platform: None,
            bot_id: None,
        };
        assert_eq!(
            typing.encode(),
            "{\"type\":\"outbound\",\"requestId\":\"r\",\"action\":{\"op\":\"typing\",\"chat_id\":\"c\",\"metadata\":{}}}\n"
        );
    }
}
