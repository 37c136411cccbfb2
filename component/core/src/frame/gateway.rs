//! Gateway frames (spec §2.5-§2.7, §6.17): outbound actions and every frame
//! the gateway sends, encoded to one compact JSON object per line.

use super::*;

/// An outbound action (§2.7). The five core ops are typed; every other op is
/// carried as its JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `send`.
    Send {
        /// Target chat.
        chat_id: String,
        /// Text.
        content: String,
        /// Message replied to; sent as `null` when absent.
        reply_to: Option<String>,
        /// Metadata object.
        metadata: Map<String, Value>,
    },
    /// `edit`.
    Edit {
        /// Target chat.
        chat_id: String,
        /// Message to edit.
        message_id: String,
        /// New text.
        content: String,
        /// Metadata object.
        metadata: Map<String, Value>,
    },
    /// `typing`.
    Typing {
        /// Target chat.
        chat_id: String,
        /// Metadata object.
        metadata: Map<String, Value>,
        /// Status phrase; omitted for the default indicator.
        content: Option<String>,
    },
    /// `follow_up`.
    FollowUp {
        /// Session the capability is bound to.
        session_key: String,
        /// Capability kind, e.g. `discord.interaction_token`.
        kind: String,
        /// Text.
        content: String,
        /// Metadata object.
        metadata: Map<String, Value>,
    },
    /// `get_chat_info`.
    GetChatInfo {
        /// Target chat.
        chat_id: String,
    },
    /// Any other op: the action object as given (it holds `op`).
    Raw(Map<String, Value>),
}

impl Action {
    /// The op name.
    pub fn op(&self) -> &str {
        match self {
            Action::Send { .. } => "send",
            Action::Edit { .. } => "edit",
            Action::Typing { .. } => "typing",
            Action::FollowUp { .. } => "follow_up",
            Action::GetChatInfo { .. } => "get_chat_info",
            Action::Raw(m) => m.get("op").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The target chat, when the op has one.
    pub fn chat_id(&self) -> Option<&str> {
        match self {
            Action::Send { chat_id, .. }
            | Action::Edit { chat_id, .. }
            | Action::Typing { chat_id, .. }
            | Action::GetChatInfo { chat_id } => Some(chat_id),
            Action::FollowUp { .. } => None,
            Action::Raw(m) => m.get("chat_id").and_then(Value::as_str),
        }
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Action::Send {
                chat_id,
                content,
                reply_to,
                metadata,
            } => {
                m.serialize_entry("op", "send")?;
                m.serialize_entry("chat_id", chat_id)?;
                m.serialize_entry("content", content)?;
                m.serialize_entry("reply_to", reply_to)?;
                m.serialize_entry("metadata", metadata)?;
            }
            Action::Edit {
                chat_id,
                message_id,
                content,
                metadata,
            } => {
                m.serialize_entry("op", "edit")?;
                m.serialize_entry("chat_id", chat_id)?;
                m.serialize_entry("message_id", message_id)?;
                m.serialize_entry("content", content)?;
                m.serialize_entry("metadata", metadata)?;
            }
            Action::Typing {
                chat_id,
                metadata,
                content,
            } => {
                m.serialize_entry("op", "typing")?;
                m.serialize_entry("chat_id", chat_id)?;
                m.serialize_entry("metadata", metadata)?;
                if let Some(c) = content {
                    m.serialize_entry("content", c)?;
                }
            }
            Action::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            } => {
                m.serialize_entry("op", "follow_up")?;
                m.serialize_entry("session_key", session_key)?;
                m.serialize_entry("kind", kind)?;
                m.serialize_entry("content", content)?;
                m.serialize_entry("metadata", metadata)?;
            }
            Action::GetChatInfo { chat_id } => {
                m.serialize_entry("op", "get_chat_info")?;
                m.serialize_entry("chat_id", chat_id)?;
            }
            Action::Raw(map) => {
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
            }
        }
        m.end()
    }
}

/// A frame the gateway sends to the connector.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayFrame {
    /// Announce one fronted identity (§2.2).
    Hello {
        /// Platform name.
        platform: String,
        /// Bot id; may be empty.
        bot_id: String,
        /// Slash-command manifest (Discord only), as a JSON array.
        command_manifest: Option<Value>,
    },
    /// Acknowledge a buffered delivery (§2.5).
    InboundAck {
        /// The buffer entry taken.
        buffer_id: String,
    },
    /// An outbound action (§2.6).
    Outbound {
        /// Correlation id.
        request_id: String,
        /// The action.
        action: Action,
        /// Egress platform tag.
        platform: Option<String>,
        /// Bot id for `platform`.
        bot_id: Option<String>,
    },
    /// Interrupt a session (§2.9).
    Interrupt {
        /// The session.
        session_key: String,
        /// Optional reason (`null` on the wire when absent).
        reason: Option<String>,
    },
    /// Ask the connector to buffer inbound (§2.12).
    GoingIdle,
}

impl Serialize for GatewayFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            GatewayFrame::Hello {
                platform,
                bot_id,
                command_manifest,
            } => {
                m.serialize_entry("type", "hello")?;
                m.serialize_entry("platform", platform)?;
                m.serialize_entry("botId", bot_id)?;
                if let Some(cm) = command_manifest {
                    m.serialize_entry("command_manifest", cm)?;
                }
            }
            GatewayFrame::InboundAck { buffer_id } => {
                m.serialize_entry("type", "inbound_ack")?;
                m.serialize_entry("bufferId", buffer_id)?;
            }
            GatewayFrame::Outbound {
                request_id,
                action,
                platform,
                bot_id,
            } => {
                m.serialize_entry("type", "outbound")?;
                m.serialize_entry("requestId", request_id)?;
                m.serialize_entry("action", action)?;
                if let Some(p) = platform {
                    m.serialize_entry("platform", p)?;
                }
                if let Some(b) = bot_id {
                    m.serialize_entry("botId", b)?;
                }
            }
            GatewayFrame::Interrupt {
                session_key,
                reason,
            } => {
                m.serialize_entry("type", "interrupt")?;
                m.serialize_entry("session_key", session_key)?;
                m.serialize_entry("reason", reason)?;
            }
            GatewayFrame::GoingIdle => m.serialize_entry("type", "going_idle")?,
        }
        m.end()
    }
}

impl GatewayFrame {
    /// One compact JSON object plus `\n` (§1.5).
    pub fn encode(&self) -> String {
        // Sized for a typical frame up front (serde_json starts at 128
        // bytes and doubles); serialising plain data cannot fail.
        let mut buf = Vec::with_capacity(512);
        if serde_json::to_writer(&mut buf, self).is_err() {
            buf.clear();
        }
        buf.push(b'\n');
        String::from_utf8(buf).unwrap_or_else(|_| "\n".to_owned())
    }

    /// Decodes a gateway frame (for tests and connector models; not on the
    /// adapter's receive path, which rejects these as echoes).
    pub fn decode(line: &str) -> Option<GatewayFrame> {
        let Value::Object(mut m) = serde_json::from_str::<Value>(line).ok()? else {
            return None;
        };
        let take_str = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let ty = take_str(&mut m, "type")?;
        Some(match ty.as_str() {
            "hello" => GatewayFrame::Hello {
                platform: take_str(&mut m, "platform")?,
                bot_id: take_str(&mut m, "botId")?,
                command_manifest: m.remove("command_manifest"),
            },
            "inbound_ack" => GatewayFrame::InboundAck {
                buffer_id: take_str(&mut m, "bufferId")?,
            },
            "interrupt" => GatewayFrame::Interrupt {
                session_key: take_str(&mut m, "session_key")?,
                reason: take_str(&mut m, "reason"),
            },
            "going_idle" => GatewayFrame::GoingIdle,
            "outbound" => {
                let Value::Object(mut a) = m.remove("action")? else {
                    return None;
                };
                let platform = take_str(&mut m, "platform");
                let bot_id = take_str(&mut m, "botId");
                let request_id = take_str(&mut m, "requestId")?;
                let op = a.get("op").and_then(Value::as_str).unwrap_or("").to_owned();
                let meta = |a: &mut Map<String, Value>| match a.remove("metadata") {
                    Some(Value::Object(o)) => Some(o),
                    _ => None,
                };
                let action = match op.as_str() {
                    "send" if a.len() == 5 => Action::Send {
                        chat_id: take_str(&mut a, "chat_id")?,
                        content: take_str(&mut a, "content")?,
                        reply_to: take_str(&mut a, "reply_to"),
                        metadata: meta(&mut a)?,
                    },
                    "edit" if a.len() == 5 => Action::Edit {
                        chat_id: take_str(&mut a, "chat_id")?,
                        message_id: take_str(&mut a, "message_id")?,
                        content: take_str(&mut a, "content")?,
                        metadata: meta(&mut a)?,
                    },
                    "typing" if a.len() <= 4 => Action::Typing {
                        chat_id: take_str(&mut a, "chat_id")?,
                        metadata: meta(&mut a)?,
                        content: take_str(&mut a, "content"),
                    },
                    "follow_up" if a.len() == 5 => Action::FollowUp {
                        session_key: take_str(&mut a, "session_key")?,
                        kind: take_str(&mut a, "kind")?,
                        content: take_str(&mut a, "content")?,
                        metadata: meta(&mut a)?,
                    },
                    "get_chat_info" if a.len() == 2 => Action::GetChatInfo {
                        chat_id: take_str(&mut a, "chat_id")?,
                    },
                    _ => Action::Raw(a),
                };
                GatewayFrame::Outbound {
                    request_id,
                    action,
                    platform,
                    bot_id,
                }
            }
            _ => return None,
        })
    }
}
