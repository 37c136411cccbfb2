//! What an outbound op returned: the lenient projection of a connector
//! `result` (§2.8), the transport-synthesized results (§1.6), the egress-decline
//! classifier (§6.15) and the `get_chat_info` answer (§2.7, §6.8). Pure; never panics.

use serde::Serialize;
use serde_json::{Map, Value};

/// Error text when the transport is closing (§1.6). Definite: nothing sent.
pub const TRANSPORT_CLOSED: &str = "relay transport closed"; // §1.6

/// Error text when there is no socket (§1.6). Definite: nothing sent.
pub const TRANSPORT_NOT_CONNECTED: &str = "relay transport not connected"; // §1.6

/// Error text when no result arrived within the outbound timeout (§1.6). Ambiguous.
pub const OUTBOUND_TIMED_OUT: &str = "relay outbound timed out"; // §1.6

/// Error text when the reader ended while a result was pending (§1.6).
pub const TRANSPORT_CONNECTION_LOST: &str = "relay transport connection lost"; // §1.6

/// Prefix of the error when writing the frame failed, followed by the
/// exception text (§1.6).
pub const SEND_FAILED_PREFIX: &str = "relay send failed: "; // §1.6

/// Prefix of the error when sending for a platform this gateway does not
/// front, followed by the platform name (§6.5).
pub const NOT_FRONTED_PREFIX: &str = "relay does not front platform "; // §6.5

/// `code` the connector stamps on an authorization refusal (§2.8, §6.15).
pub const EGRESS_DECLINE_CODE: &str = "egress_declined"; // §6.15

/// Error-text marker of a decline, matched case-insensitively (§6.15).
pub const EGRESS_DECLINE_MARKER: &str = "egress declined:"; // §6.15

/// Error-text marker of a lost acknowledgement; such an error is never a
/// decline, matched case-insensitively (§6.15, §10.14).
pub const ACK_LOST_MARKER: &str = "ack lost"; // §6.15

/// Fallback decline text when a declined result carries no error (§6.15).
pub const DEFAULT_DECLINE_ERROR: &str = "relay egress declined"; // §6.15

/// Default `get_chat_info` chat type (§2.7, §6.8).
pub const DEFAULT_CHAT_TYPE: &str = "dm"; // §2.7

/// The outcome of one outbound op as the caller sees it (§2.8, §1.6).
///
/// Serialises with the field names below (`raw` is the raw result text as a
/// JSON string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendResult {
    /// Truthy `success` from the connector (false for every synthesized result).
    pub success: bool,
    /// Id of the message sent or edited.
    pub message_id: Option<String>,
    /// Error text, verbatim.
    pub error: Option<String>,
    /// Machine-readable failure code (e.g. [`EGRESS_DECLINE_CODE`]).
    pub code: Option<String>,
    /// The connector may have applied the frame (§1.6). Only ever set by the
    /// gateway's own synthesized results, never read from the wire (§10.14).
    pub ambiguous: bool,
    /// The connector refused the target (§6.15), per [`is_egress_decline`].
    pub declined: bool,
    /// Auto-thread the connector sent the reply into (§9.5).
    pub thread_id: Option<String>,
    /// Name of that auto-thread (§9.5).
    pub auto_thread_name: Option<String>,
    /// The result object as JSON text: the connector's text verbatim, or for a
    /// synthesized result the JSON of what the caller sees. Always a JSON object.
    pub raw: String,
}

impl SendResult {
    /// Projects a connector `result` object leniently (§2.8).
    ///
    /// * `success` is JSON truthiness: `true`, a non-zero number, a non-empty
    ///   string/array/object; missing or anything else is false.
    /// * `message_id` and `thread_id` keep strings; JSON integers are
    ///   stringified in decimal (ids such as snowflakes sent as numbers).
    ///   `error`, `code` and `auto_thread_name` keep strings only.
    ///   Other types and empty strings count as absent (Python reads these
    ///   with `or`, so `""` behaves like a missing value).
    /// * A connector-sent `ambiguous` is ignored: always false (§10.14).
    /// * `declined` comes from [`is_egress_decline`].
    /// * Text that is not a JSON object (invalid JSON, array, `true`, …)
    ///   projects like `{}` (a failure), and `raw` becomes `"{}"` so it is
    ///   always an object; a valid object's text is kept verbatim.
    pub fn from_result_json(raw: &str) -> Self {
        match serde_json::from_str::<ResultFields>(raw) {
            Ok(fields) => Self::from_fields(fields, raw.to_owned()),
            Err(_) => Self::from_fields(ResultFields::default(), "{}".to_owned()),
        }
    }

    fn from_fields(f: ResultFields, raw: String) -> Self {
        let declined = is_egress_decline(f.success, false, f.code.as_deref(), f.error.as_deref());
        Self {
            success: f.success,
            message_id: f.message_id,
            error: f.error,
            code: f.code,
            ambiguous: false,
            declined,
            thread_id: f.thread_id,
            auto_thread_name: f.auto_thread_name,
            raw,
        }
    }

    /// A definite synthesized failure (nothing was applied), e.g.
    /// `{"success":false,"error":"relay transport closed"}` (§1.6).
    pub fn failure(error: &str) -> Self {
        Self::synthesized(error, false)
    }

    /// A synthesized failure whose outcome is unknown, e.g.
    /// `{"success":false,"error":"relay outbound timed out","ambiguous":true}`
    /// (§1.6). Never a decline.
    pub fn ambiguous_failure(error: &str) -> Self {
        Self::synthesized(error, true)
    }

    /// [`TRANSPORT_CLOSED`]: the transport is closing; definite (§1.6).
    pub fn transport_closed() -> Self {
        Self::failure(TRANSPORT_CLOSED)
    }

    /// [`TRANSPORT_NOT_CONNECTED`]: no socket; definite (§1.6).
    pub fn not_connected() -> Self {
        Self::failure(TRANSPORT_NOT_CONNECTED)
    }

    /// [`OUTBOUND_TIMED_OUT`]: written, no result in time; ambiguous (§1.6).
    pub fn timed_out() -> Self {
        Self::ambiguous_failure(OUTBOUND_TIMED_OUT)
    }

    /// [`TRANSPORT_CONNECTION_LOST`]: the reader ended while waiting (§1.6).
    /// Stricter than upstream, which sends no flag: only written frames are
    /// pending, so the connector may have received and applied this one;
    /// `ambiguous: true` (issue 19: a non-ambiguous failure only when the
    /// frame never left).
    pub fn connection_lost() -> Self {
        Self::ambiguous_failure(TRANSPORT_CONNECTION_LOST)
    }

    /// `"relay send failed: <reason>"` (§1.6). `ambiguous` is false when the
    /// write itself failed (definitely not sent) and true when the frame was
    /// written and the waiter was failed by teardown.
    pub fn send_failed(reason: &str, ambiguous: bool) -> Self {
        Self::synthesized(&format!("{SEND_FAILED_PREFIX}{reason}"), ambiguous)
    }

    /// `"relay does not front platform <platform>"`: fail closed (§6.5).
    pub fn not_fronted(platform: &str) -> Self {
        Self::failure(&format!("{NOT_FRONTED_PREFIX}{platform}"))
    }

    fn synthesized(error: &str, ambiguous: bool) -> Self {
        let wire = SynthesizedWire {
            success: false,
            error,
            ambiguous,
        };
        // Serialising a bool and a string cannot fail; "{}" keeps `raw` an object.
        let raw = serde_json::to_string(&wire).unwrap_or_else(|_| "{}".to_owned());
        Self {
            success: false,
            message_id: None,
            error: Some(error.to_owned()),
            code: None,
            ambiguous,
            declined: false,
            thread_id: None,
            auto_thread_name: None,
            raw,
        }
    }
}

/// The JSON a caller sees for a synthesized result, keys in §1.6 order;
/// `ambiguous` only when true (the definite results carry no such key).
#[derive(Serialize)]
struct SynthesizedWire<'a> {
    success: bool,
    error: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    ambiguous: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Egress-decline classifier (§6.15).
///
/// True when `success` is false, the result is not `ambiguous`, and either
/// `code` is exactly [`EGRESS_DECLINE_CODE`] or `error` contains
/// [`EGRESS_DECLINE_MARKER`] case-insensitively. An error containing
/// [`ACK_LOST_MARKER`] (case-insensitive) is never a decline.
pub fn is_egress_decline(
    success: bool,
    ambiguous: bool,
    code: Option<&str>,
    error: Option<&str>,
) -> bool {
    if success || ambiguous {
        return false;
    }
    let error_lower = error.map(str::to_lowercase);
    if let Some(text) = &error_lower
        && text.contains(ACK_LOST_MARKER)
    {
        return false;
    }
    code == Some(EGRESS_DECLINE_CODE)
        || error_lower.is_some_and(|text| text.contains(EGRESS_DECLINE_MARKER))
}

/// The decline text to surface verbatim (§6.15): the result's error, else
/// [`DEFAULT_DECLINE_ERROR`].
pub fn decline_error(result: &SendResult) -> String {
    result
        .error
        .as_deref()
        .filter(|e| !e.is_empty())
        .unwrap_or(DEFAULT_DECLINE_ERROR)
        .to_owned()
}

/// The answer to `get_chat_info` (§2.7, §6.8); serialises as
/// `{"name": .., "type": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatInfo {
    /// Chat display name; defaults to the chat id.
    pub name: String,
    /// Chat type (`"dm"`, `"group"`, `"channel"`, …); defaults to `"dm"`.
    #[serde(rename = "type")]
    pub chat_type: String,
}

impl ChatInfo {
    /// The local answer with no round trip: `{name: chat_id, type: "dm"}` (§6.8).
    pub fn local(chat_id: &str) -> Self {
        Self {
            name: chat_id.to_owned(),
            chat_type: DEFAULT_CHAT_TYPE.to_owned(),
        }
    }

    /// Builds the answer from a `get_chat_info` result (§2.7): read
    /// `result.chat_info` when it is an object, else `result` itself. A
    /// `name`/`type` that is missing, not a string or empty takes its default
    /// (the chat id / `"dm"`); a result that is not a JSON object gives
    /// [`ChatInfo::local`]. Success is not consulted: a failed or timed-out
    /// result yields the defaults.
    pub fn from_result_json(raw: &str, chat_id: &str) -> Self {
        let Ok(Value::Object(result)) = serde_json::from_str::<Value>(raw) else {
            return Self::local(chat_id);
        };
        let info = match result.get("chat_info") {
            Some(Value::Object(inner)) => inner,
            _ => &result,
        };
        Self {
            name: string_field(info, "name").unwrap_or_else(|| chat_id.to_owned()),
            chat_type: string_field(info, "type").unwrap_or_else(|| DEFAULT_CHAT_TYPE.to_owned()),
        }
    }
}

/// Python truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The fields of a result object, read in one pass: no `Value` tree of the
/// object, only each known field's own value. A later duplicate key wins,
/// as in a map; anything but an object is an error.
#[derive(Debug, Default)]
struct ResultFields {
    success: bool,
    code: Option<String>,
    error: Option<String>,
    message_id: Option<String>,
    thread_id: Option<String>,
    auto_thread_name: Option<String>,
}

/// The result keys [`ResultFields`] reads.
enum ResultKey {
    Success,
    Code,
    Error,
    MessageId,
    ThreadId,
    AutoThreadName,
    Other,
}

impl<'de> serde::Deserialize<'de> for ResultKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = ResultKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a result key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<ResultKey, E> {
                Ok(match key {
                    "success" => ResultKey::Success,
                    "code" => ResultKey::Code,
                    "error" => ResultKey::Error,
                    "message_id" => ResultKey::MessageId,
                    "thread_id" => ResultKey::ThreadId,
                    "auto_thread_name" => ResultKey::AutoThreadName,
                    _ => ResultKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for ResultFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
            type Value = ResultFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a result object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ResultFields, A::Error> {
                let mut f = ResultFields::default();
                while let Some(key) = map.next_key::<ResultKey>()? {
                    match key {
                        ResultKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        ResultKey::Success => f.success = truthy(&map.next_value::<Value>()?),
                        ResultKey::Code => f.code = string_value(map.next_value()?),
                        ResultKey::Error => f.error = string_value(map.next_value()?),
                        ResultKey::MessageId => f.message_id = id_value(map.next_value()?),
                        ResultKey::ThreadId => f.thread_id = id_value(map.next_value()?),
                        ResultKey::AutoThreadName => {
                            f.auto_thread_name = string_value(map.next_value()?);
                        }
                    }
                }
                Ok(f)
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// A non-empty string.
fn string_value(value: Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A non-empty string, or a JSON integer rendered in decimal.
fn id_value(value: Value) -> Option<String> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        other => string_value(other),
    }
}

/// A non-empty string field.
fn string_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The projection as a map lookup (what the one-pass reader replaced).
    fn reference(raw: &str) -> SendResult {
        let obj = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(obj)) => obj,
            _ => Map::new(),
        };
        let id = |key: &str| match obj.get(key) {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => string_field(&obj, key),
        };
        let success = obj.get("success").is_some_and(truthy);
        let code = string_field(&obj, "code");
        let error = string_field(&obj, "error");
        SendResult {
            success,
            message_id: id("message_id"),
            declined: is_egress_decline(success, false, code.as_deref(), error.as_deref()),
            error,
            code,
            ambiguous: false,
            thread_id: id("thread_id"),
            auto_thread_name: string_field(&obj, "auto_thread_name"),
            raw: String::new(),
        }
    }

    fn result_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1.5".to_owned()),
            Just("0.0".to_owned()),
            "[a-z ]{0,6}".prop_map(|s| format!("{s:?}")),
            Just("egress_declined".to_owned()).prop_map(|s| format!("{s:?}")),
            Just("[]".to_owned()),
            Just("[1]".to_owned()),
            Just("{}".to_owned()),
            Just(r#"{"a":1}"#.to_owned()),
        ]
    }

    proptest! {
        /// Same projection as a map lookup, duplicates included (last wins).
        #[test]
        fn one_pass_result_reading_matches_the_map_projection(
            entries in proptest::collection::vec(
                (prop_oneof![
                    Just("success"), Just("code"), Just("error"), Just("message_id"),
                    Just("thread_id"), Just("auto_thread_name"), Just("other"),
                ], result_value()),
                0..8,
            )
        ) {
            let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            let raw = format!("{{{}}}", body.join(","));
            let mut got = SendResult::from_result_json(&raw);
            prop_assert_eq!(&got.raw, &raw);
            got.raw = String::new();
            prop_assert_eq!(got, reference(&raw));
        }
    }

    const DECLINE_TEXT: &str =
        "discord egress declined: target is not an approved destination for this connection";

    #[test]
    fn decline_code_constant() {
        assert_eq!(EGRESS_DECLINE_CODE, "egress_declined");
    }

    #[test]
    fn code_only_result_is_a_decline() {
        assert!(is_egress_decline(
            false,
            false,
            Some("egress_declined"),
            None
        ));
    }

    #[test]
    fn text_only_result_is_a_decline_case_insensitively() {
        assert!(is_egress_decline(false, false, None, Some(DECLINE_TEXT)));
        assert!(is_egress_decline(
            false,
            false,
            None,
            Some("Slack EGRESS DECLINED: target is not approved")
        ));
    }

    #[test]
    fn ambiguous_failure_with_marker_is_not_a_decline() {
        assert!(!is_egress_decline(true, true, None, Some(DECLINE_TEXT)));
        assert!(!is_egress_decline(
            false,
            true,
            Some("egress_declined"),
            Some(DECLINE_TEXT)
        ));
    }

    #[test]
    fn ordinary_failure_is_not_a_decline() {
        assert!(!is_egress_decline(false, false, None, Some("rate limited")));
        assert!(!is_egress_decline(false, false, Some("other"), None));
        assert!(!is_egress_decline(false, false, None, None));
        assert!(!is_egress_decline(
            false,
            false,
            None,
            Some("egress declined without colon")
        ));
    }

    #[test]
    fn success_is_never_a_decline() {
        assert!(!is_egress_decline(
            true,
            false,
            Some("egress_declined"),
            Some(DECLINE_TEXT)
        ));
    }

    #[test]
    fn ack_lost_text_is_never_a_decline() {
        assert!(!is_egress_decline(
            false,
            false,
            None,
            Some("egress declined: ack lost")
        ));
        assert!(!is_egress_decline(
            false,
            false,
            Some("egress_declined"),
            Some("draft ACK LOST after egress declined: x")
        ));
    }

    #[test]
    fn decline_error_is_verbatim_or_default() {
        let text = SendResult::from_result_json(
            r#"{"success": false, "code": "egress_declined", "error": "Discord egress declined: target is not an approved destination for this connection"}"#,
        );
        assert!(text.declined);
        assert_eq!(
            decline_error(&text),
            "Discord egress declined: target is not an approved destination for this connection"
        );
        let code_only =
            SendResult::from_result_json(r#"{"success": false, "code": "egress_declined"}"#);
        assert!(code_only.declined);
        assert_eq!(decline_error(&code_only), "relay egress declined");
    }

    #[test]
    fn section_2_8_success_example_projects() {
        let raw = r#"{"success": true, "message_id": "1300000000000000001"}"#;
        let r = SendResult::from_result_json(raw);
        assert!(r.success);
        assert_eq!(r.message_id.as_deref(), Some("1300000000000000001"));
        assert_eq!(r.error, None);
        assert!(!r.ambiguous);
        assert!(!r.declined);
        assert_eq!(r.raw, raw);
    }

    #[test]
    fn section_2_8_decline_example_projects() {
        let raw = format!(
            r#"{{"success": false, "code": "egress_declined", "error": "{DECLINE_TEXT}"}}"#
        );
        let r = SendResult::from_result_json(&raw);
        assert!(!r.success);
        assert_eq!(r.code.as_deref(), Some("egress_declined"));
        assert_eq!(r.error.as_deref(), Some(DECLINE_TEXT));
        assert!(r.declined);
        assert_eq!(r.raw, raw);
    }

    #[test]
    fn auto_thread_fields_project() {
        let r = SendResult::from_result_json(
            r#"{"success": true, "message_id": "m1", "thread_id": "t9", "auto_thread_name": "fix the build"}"#,
        );
        assert_eq!(r.thread_id.as_deref(), Some("t9"));
        assert_eq!(r.auto_thread_name.as_deref(), Some("fix the build"));
    }

    #[test]
    fn success_uses_json_truthiness() {
        let rows = [
            ("true", true),
            ("false", false),
            ("1", true),
            ("0", false),
            ("0.0", false),
            ("-2.5", true),
            ("\"yes\"", true),
            ("\"\"", false),
            ("[0]", true),
            ("[]", false),
            ("{\"a\":1}", true),
            ("{}", false),
            ("null", false),
        ];
        for (value, expected) in rows {
            let r = SendResult::from_result_json(&format!("{{\"success\": {value}}}"));
            assert_eq!(r.success, expected, "success = {value}");
        }
        assert!(!SendResult::from_result_json("{}").success);
    }

    #[test]
    fn connector_ambiguous_is_never_trusted() {
        let r = SendResult::from_result_json(
            r#"{"success": false, "ambiguous": true, "code": "egress_declined"}"#,
        );
        assert!(!r.ambiguous);
        assert!(r.declined);
    }

    #[test]
    fn ids_accept_integers_and_drop_other_types() {
        let r = SendResult::from_result_json(
            r#"{"success": true, "message_id": 1300000000000000001, "thread_id": 7}"#,
        );
        assert_eq!(r.message_id.as_deref(), Some("1300000000000000001"));
        assert_eq!(r.thread_id.as_deref(), Some("7"));
        let r = SendResult::from_result_json(
            r#"{"success": false, "message_id": 1.5, "error": 42, "code": ["x"], "thread_id": true, "auto_thread_name": {}}"#,
        );
        assert_eq!(r.message_id, None);
        assert_eq!(r.error, None);
        assert_eq!(r.code, None);
        assert_eq!(r.thread_id, None);
        assert_eq!(r.auto_thread_name, None);
        let r = SendResult::from_result_json(r#"{"success": true, "message_id": ""}"#);
        assert_eq!(r.message_id, None);
    }

    #[test]
    fn non_object_result_projects_as_empty_failure() {
        for raw in ["", "not json", "[]", "true", "\"ok\"", "null"] {
            let r = SendResult::from_result_json(raw);
            assert!(!r.success, "{raw:?}");
            assert!(!r.declined);
            assert_eq!(r.raw, "{}");
        }
    }

    #[test]
    fn synthesized_literals_match_section_1_6() {
        assert_eq!(TRANSPORT_CLOSED, "relay transport closed");
        assert_eq!(TRANSPORT_NOT_CONNECTED, "relay transport not connected");
        assert_eq!(OUTBOUND_TIMED_OUT, "relay outbound timed out");
        assert_eq!(TRANSPORT_CONNECTION_LOST, "relay transport connection lost");
        assert_eq!(SEND_FAILED_PREFIX, "relay send failed: ");
        assert_eq!(NOT_FRONTED_PREFIX, "relay does not front platform ");

        let closed = SendResult::transport_closed();
        assert_eq!(
            closed.raw,
            r#"{"success":false,"error":"relay transport closed"}"#
        );
        assert!(!closed.ambiguous && !closed.success && !closed.declined);

        let timeout = SendResult::timed_out();
        assert_eq!(
            timeout.raw,
            r#"{"success":false,"error":"relay outbound timed out","ambiguous":true}"#
        );
        assert!(timeout.ambiguous);
        assert_eq!(timeout.error.as_deref(), Some(OUTBOUND_TIMED_OUT));

        assert_eq!(
            SendResult::not_connected().error.as_deref(),
            Some("relay transport not connected")
        );
        assert!(SendResult::connection_lost().ambiguous);
        assert_eq!(
            SendResult::connection_lost().raw,
            r#"{"success":false,"error":"relay transport connection lost","ambiguous":true}"#
        );

        let write_failed = SendResult::send_failed("broken pipe", false);
        assert_eq!(
            write_failed.error.as_deref(),
            Some("relay send failed: broken pipe")
        );
        assert!(!write_failed.ambiguous);
        assert!(!write_failed.raw.contains("ambiguous"));
        let torn_down = SendResult::send_failed("broken pipe", true);
        assert!(torn_down.ambiguous);
        assert!(torn_down.raw.contains(r#""ambiguous":true"#));

        assert_eq!(
            SendResult::not_fronted("telegram").error.as_deref(),
            Some("relay does not front platform telegram")
        );
    }

    #[test]
    fn ambiguous_synthesized_result_with_marker_is_not_declined() {
        let r = SendResult::ambiguous_failure("discord egress declined: x");
        assert!(!r.declined);
        assert!(!is_egress_decline(
            r.success,
            r.ambiguous,
            r.code.as_deref(),
            r.error.as_deref()
        ));
    }

    #[test]
    fn send_result_serialises_with_wire_names() {
        let v = serde_json::to_value(SendResult::timed_out()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "success",
            "message_id",
            "error",
            "code",
            "ambiguous",
            "declined",
            "thread_id",
            "auto_thread_name",
            "raw",
        ] {
            assert!(keys.contains(&key), "{key}");
        }
        assert_eq!(v["ambiguous"], json!(true));
    }

    #[test]
    fn chat_info_prefers_nested_object() {
        let info = ChatInfo::from_result_json(
            r#"{"success": true, "chat_info": {"name": "general", "type": "group"}, "name": "outer"}"#,
            "chan1",
        );
        assert_eq!(
            info,
            ChatInfo {
                name: "general".into(),
                chat_type: "group".into()
            }
        );
    }

    #[test]
    fn chat_info_falls_back_to_result_itself() {
        let info = ChatInfo::from_result_json(
            r#"{"success": true, "name": "general", "type": "channel"}"#,
            "chan1",
        );
        assert_eq!(
            info,
            ChatInfo {
                name: "general".into(),
                chat_type: "channel".into()
            }
        );
        let info = ChatInfo::from_result_json(
            r#"{"chat_info": "not an object", "name": "outer"}"#,
            "chan1",
        );
        assert_eq!(
            info,
            ChatInfo {
                name: "outer".into(),
                chat_type: "dm".into()
            }
        );
    }

    #[test]
    fn chat_info_defaults_name_to_chat_id_and_type_to_dm() {
        for raw in [
            "{}",
            r#"{"success": false, "error": "relay outbound timed out", "ambiguous": true}"#,
            r#"{"chat_info": {"name": 5, "type": null}}"#,
            r#"{"chat_info": {"name": "", "type": ""}}"#,
            "not json",
            "[1]",
        ] {
            assert_eq!(
                ChatInfo::from_result_json(raw, "chan1"),
                ChatInfo::local("chan1"),
                "{raw}"
            );
        }
        let timed_out = SendResult::timed_out();
        assert_eq!(
            ChatInfo::from_result_json(&timed_out.raw, "chan1"),
            ChatInfo::local("chan1")
        );
    }

    #[test]
    fn chat_info_serialises_as_name_and_type() {
        let v = serde_json::to_string(&ChatInfo::local("chan1")).unwrap();
        assert_eq!(v, r#"{"name":"chan1","type":"dm"}"#);
    }

    proptest! {
        #[test]
        fn projection_never_panics_and_raw_is_an_object(raw in ".*") {
            let r = SendResult::from_result_json(&raw);
            prop_assert!(!r.ambiguous);
            let parsed: Value = serde_json::from_str(&r.raw).unwrap();
            prop_assert!(parsed.is_object());
            let _ = ChatInfo::from_result_json(&raw, "c");
        }

        #[test]
        fn declined_implies_failure(
            success in any::<bool>(),
            ambiguous in any::<bool>(),
            code in proptest::option::of(prop_oneof![Just("egress_declined".to_owned()), ".*"]),
            error in proptest::option::of(".*"),
        ) {
            if is_egress_decline(success, ambiguous, code.as_deref(), error.as_deref()) {
                prop_assert!(!success && !ambiguous);
            }
        }
    }
}
