//! The connector's `CapabilityDescriptor` (§3): parsing, normalisation and the
//! capability questions the adapter asks of it (§3.3, §3.4, §6.1).
//! Pure data: never does I/O, never panics on any descriptor text.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// `max_message_length` used when the connector sends a value that is not a
/// positive integer (§3.2). Unit: the descriptor's `len_unit`.
pub const DEFAULT_MAX_MESSAGE_LENGTH: u32 = 4096; // §3.2

/// The only `contract_version` this crate knows (§3.1). Others are accepted.
pub const KNOWN_CONTRACT_VERSION: i64 = 1; // §3.1, §10.4

/// Default display emoji, U+1F50C ELECTRIC PLUG (§3.1).
pub const DEFAULT_EMOJI: &str = "\u{1F50C}"; // §3.1

/// Ops a connector that advertises no `supported_ops` is assumed to handle (§3.4).
pub const LEGACY_OPS: [&str; 4] = ["send", "edit", "typing", "follow_up"]; // §3.4

/// The native draft-streaming op; must be listed literally to be used (§6.1).
pub const DRAFT_OP: &str = "draft"; // §3.4, §6.1

/// Platform of the placeholder descriptor when no identity names one (§6.1).
pub const PLACEHOLDER_PLATFORM: &str = "relay"; // §6.1

/// Label of the placeholder descriptor (§6.1).
pub const PLACEHOLDER_LABEL: &str = "Relay"; // §6.1

/// Why a descriptor object could not be constructed (§3.2 rule 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorError {
    /// The text is not valid JSON; carries the parser's message.
    InvalidJson(String),
    /// The JSON value is not an object.
    NotAnObject,
    /// A required key (§3.1) is absent.
    Missing(&'static str),
    /// A required key is present with a JSON type the record rejects.
    WrongType(&'static str),
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson(reason) => {
                write!(f, "descriptor rejected: not valid JSON ({reason})")
            }
            Self::NotAnObject => f.write_str("descriptor rejected: not a JSON object"),
            Self::Missing(field) => write!(f, "descriptor rejected: {field} missing"),
            Self::WrongType(field) => {
                write!(f, "descriptor rejected: {field} has the wrong type")
            }
        }
    }
}

impl std::error::Error for DescriptorError {}

/// How the connector counts message length (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LenUnit {
    /// Unicode scalar values (Python `len(str)`); also the fallback for unknown units.
    #[default]
    Chars,
    /// UTF-16 code units (Telegram's unit).
    Utf16,
}

impl LenUnit {
    /// Maps the wire string: `"utf16"` is [`LenUnit::Utf16`], anything else
    /// (including typos such as `"char"`) is [`LenUnit::Chars`] (§3.1).
    pub fn from_wire(value: &str) -> Self {
        if value == "utf16" {
            Self::Utf16
        } else {
            Self::Chars
        }
    }

    /// The wire spelling: `"chars"` or `"utf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chars => "chars",
            Self::Utf16 => "utf16",
        }
    }

    /// Length of `text` in this unit (§3.3).
    pub fn count(self, text: &str) -> usize {
        match self {
            Self::Chars => text.chars().count(),
            Self::Utf16 => text.encode_utf16().count(),
        }
    }
}

/// The connector's capability record, immutable for the life of a connection (§3).
///
/// Fields are private so that the raw `supports_draft_streaming` flag cannot be
/// confused with the §6.1 rule exposed by
/// [`CapabilityDescriptor::supports_draft_streaming`]. Build one with
/// [`CapabilityDescriptor::from_json`] or [`CapabilityDescriptor::placeholder`].
///
/// `Serialize` produces the wire form: every field under its wire key, keys in
/// sorted order like the Python `to_json` (§3.2), `len_unit` exactly as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapabilityDescriptor {
    // Declared in sorted key order so the serialised form matches §3.2.
    contract_version: i64,
    emoji: String,
    label: String,
    len_unit: String,
    markdown_dialect: String,
    max_message_length: u32,
    pii_safe: bool,
    platform: String,
    platform_hint: String,
    supported_ops: Vec<String>,
    supports_block_formatting: bool,
    supports_context: bool,
    supports_draft_streaming: bool,
    supports_edit: bool,
    supports_inchannel_continuable: bool,
    supports_threads: bool,
}

impl CapabilityDescriptor {
    /// Parses the JSON text of a descriptor object (§3.2).
    ///
    /// Unknown keys are ignored; optional keys that are absent or of the wrong
    /// type take their defaults; `max_message_length` and `supported_ops` are
    /// normalised (see [`normalize_max_message_length`] and
    /// [`normalize_supported_ops`]). A missing or wrong-typed required key, a
    /// non-object or invalid JSON is a [`DescriptorError`].
    pub fn from_json(raw: &str) -> Result<Self, DescriptorError> {
        let value: Value = serde_json::from_str(raw)
            .map_err(|err| DescriptorError::InvalidJson(err.to_string()))?;
        Self::from_value(&value)
    }

    /// Same as [`CapabilityDescriptor::from_json`] for an already parsed value.
    pub fn from_value(value: &Value) -> Result<Self, DescriptorError> {
        let obj = value.as_object().ok_or(DescriptorError::NotAnObject)?;

        let contract_version = match obj.get("contract_version") {
            None => return Err(DescriptorError::Missing("contract_version")),
            Some(v) => v
                .as_i64()
                .ok_or(DescriptorError::WrongType("contract_version"))?,
        };
        let platform = required_str(obj, "platform")?;
        let label = required_str(obj, "label")?;
        let max_message_length = match obj.get("max_message_length") {
            None => return Err(DescriptorError::Missing("max_message_length")),
            Some(v) => normalize_max_message_length(v),
        };
        let supports_draft_streaming = required_bool(obj, "supports_draft_streaming")?;
        let supports_edit = required_bool(obj, "supports_edit")?;
        let supports_threads = required_bool(obj, "supports_threads")?;
        let markdown_dialect = required_str(obj, "markdown_dialect")?;
        let len_unit = required_str(obj, "len_unit")?;

        Ok(Self {
            contract_version,
            emoji: optional_str(obj, "emoji", DEFAULT_EMOJI),
            label,
            len_unit,
            markdown_dialect,
            max_message_length,
            pii_safe: optional_bool(obj, "pii_safe"),
            platform,
            platform_hint: optional_str(obj, "platform_hint", ""),
            supported_ops: obj
                .get("supported_ops")
                .map(normalize_supported_ops)
                .unwrap_or_default(),
            supports_block_formatting: optional_bool(obj, "supports_block_formatting"),
            supports_context: optional_bool(obj, "supports_context"),
            supports_draft_streaming,
            supports_edit,
            supports_inchannel_continuable: optional_bool(obj, "supports_inchannel_continuable"),
            supports_threads,
        })
    }

    /// The descriptor the adapter runs with before the first handshake (§6.1):
    /// contract 1, label `"Relay"`, 4096 chars, no drafts, edits, no threads,
    /// dialect `"plain"`, `len_unit` `"chars"`, optional fields at defaults.
    /// A blank `platform` becomes [`PLACEHOLDER_PLATFORM`].
    pub fn placeholder(platform: &str) -> Self {
        let platform = platform.trim();
        let platform = if platform.is_empty() {
            PLACEHOLDER_PLATFORM
        } else {
            platform
        };
        Self {
            contract_version: KNOWN_CONTRACT_VERSION,
            emoji: DEFAULT_EMOJI.to_owned(),
            label: PLACEHOLDER_LABEL.to_owned(),
            len_unit: LenUnit::Chars.as_str().to_owned(),
            markdown_dialect: "plain".to_owned(),
            max_message_length: DEFAULT_MAX_MESSAGE_LENGTH,
            pii_safe: false,
            platform: platform.to_owned(),
            platform_hint: String::new(),
            supported_ops: Vec::new(),
            supports_block_formatting: false,
            supports_context: false,
            supports_draft_streaming: false,
            supports_edit: true,
            supports_inchannel_continuable: false,
            supports_threads: false,
        }
    }

    /// The wire form as compact JSON text (see the type-level note on `Serialize`).
    pub fn to_json(&self) -> String {
        // Serialising strings, integers and bools cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `contract_version` as sent (a JSON integer in `i64` range; other JSON
    /// types are rejected at parse time); any value is accepted (§10.4).
    pub fn contract_version(&self) -> i64 {
        self.contract_version
    }

    /// True when `contract_version` is the one this crate knows (1).
    pub fn is_known_contract_version(&self) -> bool {
        self.contract_version == KNOWN_CONTRACT_VERSION
    }

    /// Fronted platform name (`"discord"`, `"slack"`, …).
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// Human label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Chunking bound in [`CapabilityDescriptor::len_unit`] units; always ≥ 1.
    /// A `u32` (not `usize`) so the value is the same on every target.
    pub fn max_message_length(&self) -> u32 {
        self.max_message_length
    }

    /// The raw `supports_draft_streaming` flag as sent ([0.19] meaning). The
    /// adapter should use [`CapabilityDescriptor::supports_draft_streaming`].
    pub fn advertises_draft_streaming(&self) -> bool {
        self.supports_draft_streaming
    }

    /// Native draft streaming usable (§6.1 newest rule): the flag is set **and**
    /// `"draft"` is literally in `supported_ops` (no legacy fallback).
    pub fn supports_draft_streaming(&self) -> bool {
        self.supports_draft_streaming && self.lists_op(DRAFT_OP)
    }

    /// Edit-based streaming possible.
    pub fn supports_edit(&self) -> bool {
        self.supports_edit
    }

    /// Thread/handoff capability flag.
    pub fn supports_threads(&self) -> bool {
        self.supports_threads
    }

    /// Markdown dialect string as sent (`"plain"`, `"discord"`, …).
    pub fn markdown_dialect(&self) -> &str {
        &self.markdown_dialect
    }

    /// Code blocks render: the dialect is neither `""` nor `"plain"` (§6.1).
    pub fn supports_code_blocks(&self) -> bool {
        !matches!(self.markdown_dialect.as_str(), "" | "plain")
    }

    /// The length unit; unknown wire values count as [`LenUnit::Chars`] (§3.3).
    pub fn len_unit(&self) -> LenUnit {
        LenUnit::from_wire(&self.len_unit)
    }

    /// The `len_unit` string exactly as the connector sent it.
    pub fn len_unit_raw(&self) -> &str {
        &self.len_unit
    }

    /// Length of `text` in this descriptor's unit (§3.3).
    pub fn message_len(&self, text: &str) -> usize {
        self.len_unit().count(text)
    }

    /// Display emoji (default U+1F50C).
    pub fn emoji(&self) -> &str {
        &self.emoji
    }

    /// System-prompt platform hint (default `""`).
    pub fn platform_hint(&self) -> &str {
        &self.platform_hint
    }

    /// Redact PII in session descriptions (default false).
    pub fn pii_safe(&self) -> bool {
        self.pii_safe
    }

    /// Connector can attach channel `context` to addressed turns (default false).
    pub fn supports_context(&self) -> bool {
        self.supports_context
    }

    /// Platform can host the in-channel continuable surface (default false).
    pub fn supports_inchannel_continuable(&self) -> bool {
        self.supports_inchannel_continuable
    }

    /// Connector renders `metadata.format_hints` block formatting (default false).
    pub fn supports_block_formatting(&self) -> bool {
        self.supports_block_formatting
    }

    /// The normalised `supported_ops` list (non-empty strings, wire order).
    pub fn supported_ops(&self) -> &[String] {
        &self.supported_ops
    }

    /// Op gating (§3.4): `op` is in `supported_ops` when that list is
    /// non-empty, else in [`LEGACY_OPS`].
    pub fn supports_op(&self, op: &str) -> bool {
        if self.supported_ops.is_empty() {
            LEGACY_OPS.contains(&op)
        } else {
            self.lists_op(op)
        }
    }

    /// `op` is literally in `supported_ops`, with no legacy fallback (used for
    /// `delete`, `draft`, `task_card`, §3.4).
    pub fn lists_op(&self, op: &str) -> bool {
        self.supported_ops.iter().any(|listed| listed == op)
    }
}

/// Normalises a present `max_message_length` value (§3.2, Rust rule §10.2).
///
/// Positive JSON integers, integral floats (`2000.0`) and decimal integer
/// strings (`"2000"`, surrounding whitespace allowed) are kept. Everything
/// else maps to [`DEFAULT_MAX_MESSAGE_LENGTH`]: zero or negative values,
/// non-integral floats (`2000.7`), booleans, exponent strings (`"1e3"`), other
/// strings, `null`, arrays, objects, and values above `u32::MAX`.
/// This diverges from Python, which keeps `"2000"`, `2000.7` and `true` verbatim.
pub fn normalize_max_message_length(value: &Value) -> u32 {
    let parsed: Option<i128> = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                n.as_f64().and_then(integral_f64)
            }
        }
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    parsed
        .filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_LENGTH)
}

/// Normalises a present `supported_ops` value (§3.2 rule 4): an array keeps
/// its non-empty string elements in order; any other JSON value is empty.
pub fn normalize_supported_ops(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|op| !op.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// An `f64` that is finite, integral and within `u32` range, as an integer.
fn integral_f64(f: f64) -> Option<i128> {
    if f.is_finite() && f.fract() == 0.0 && f > 0.0 && f <= f64::from(u32::MAX) {
        // In range and integral, so the conversion is exact.
        Some(f as i128)
    } else {
        None
    }
}

fn required_str(obj: &Map<String, Value>, key: &'static str) -> Result<String, DescriptorError> {
    match obj.get(key) {
        None => Err(DescriptorError::Missing(key)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DescriptorError::WrongType(key)),
    }
}

fn required_bool(obj: &Map<String, Value>, key: &'static str) -> Result<bool, DescriptorError> {
    match obj.get(key) {
        None => Err(DescriptorError::Missing(key)),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(DescriptorError::WrongType(key)),
    }
}

fn optional_str(obj: &Map<String, Value>, key: &str, default: &str) -> String {
    obj.get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_owned()
}

fn optional_bool(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key).and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "contract_version": 1,
            "platform": "discord",
            "label": "Discord",
            "max_message_length": 2000,
            "supports_draft_streaming": false,
            "supports_edit": true,
            "supports_threads": true,
            "markdown_dialect": "discord",
            "len_unit": "chars"
        })
    }

    fn with(key: &str, value: Value) -> CapabilityDescriptor {
        let mut v = minimal();
        v[key] = value;
        CapabilityDescriptor::from_json(&v.to_string()).unwrap()
    }

    fn without(key: &str) -> Result<CapabilityDescriptor, DescriptorError> {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove(key);
        CapabilityDescriptor::from_json(&v.to_string())
    }

    const REQUIRED: [&str; 9] = [
        "contract_version",
        "platform",
        "label",
        "max_message_length",
        "supports_draft_streaming",
        "supports_edit",
        "supports_threads",
        "markdown_dialect",
        "len_unit",
    ];

    #[test]
    fn minimal_descriptor_parses_with_optional_defaults() {
        let d = CapabilityDescriptor::from_json(&minimal().to_string()).unwrap();
        assert_eq!(d.contract_version(), 1);
        assert!(d.is_known_contract_version());
        assert_eq!(d.platform(), "discord");
        assert_eq!(d.label(), "Discord");
        assert_eq!(d.max_message_length(), 2000);
        assert!(!d.advertises_draft_streaming());
        assert!(d.supports_edit());
        assert!(d.supports_threads());
        assert_eq!(d.markdown_dialect(), "discord");
        assert_eq!(d.len_unit(), LenUnit::Chars);
        assert_eq!(d.emoji(), "🔌");
        assert_eq!(d.platform_hint(), "");
        assert!(!d.pii_safe());
        assert!(!d.supports_context());
        assert!(!d.supports_inchannel_continuable());
        assert!(!d.supports_block_formatting());
        assert!(d.supported_ops().is_empty());
    }

    #[test]
    fn optional_fields_are_read_when_well_typed() {
        let mut v = minimal();
        v["emoji"] = json!("💬");
        v["platform_hint"] = json!("You are on Discord.");
        v["pii_safe"] = json!(true);
        v["supports_context"] = json!(true);
        v["supports_inchannel_continuable"] = json!(true);
        v["supports_block_formatting"] = json!(true);
        let d = CapabilityDescriptor::from_json(&v.to_string()).unwrap();
        assert_eq!(d.emoji(), "💬");
        assert_eq!(d.platform_hint(), "You are on Discord.");
        assert!(d.pii_safe());
        assert!(d.supports_context());
        assert!(d.supports_inchannel_continuable());
        assert!(d.supports_block_formatting());
    }

    #[test]
    fn wrong_typed_optional_fields_degrade_to_defaults() {
        let mut v = minimal();
        v["emoji"] = json!(5);
        v["platform_hint"] = json!(["x"]);
        v["pii_safe"] = json!("yes");
        v["supports_context"] = json!(1);
        v["supports_inchannel_continuable"] = json!(null);
        v["supports_block_formatting"] = json!({});
        let d = CapabilityDescriptor::from_json(&v.to_string()).unwrap();
        assert_eq!(d.emoji(), DEFAULT_EMOJI);
        assert_eq!(d.platform_hint(), "");
        assert!(!d.pii_safe());
        assert!(!d.supports_context());
        assert!(!d.supports_inchannel_continuable());
        assert!(!d.supports_block_formatting());
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let mut v = minimal();
        v["some_future_field"] = json!(123);
        v["nested"] = json!({"a": [1, 2]});
        let d = CapabilityDescriptor::from_json(&v.to_string()).unwrap();
        let plain = CapabilityDescriptor::from_json(&minimal().to_string()).unwrap();
        assert_eq!(d, plain);
    }

    #[test]
    fn each_missing_required_key_is_rejected_by_name() {
        for key in REQUIRED {
            let err = without(key).unwrap_err();
            assert_eq!(err, DescriptorError::Missing(key));
            assert_eq!(
                err.to_string(),
                format!("descriptor rejected: {key} missing")
            );
        }
    }

    #[test]
    fn wrong_typed_required_keys_are_rejected_by_name() {
        let cases: [(&str, Value); 9] = [
            ("contract_version", json!("1")),
            ("platform", json!(1)),
            ("label", json!(null)),
            ("markdown_dialect", json!(true)),
            ("len_unit", json!(["chars"])),
            ("supports_draft_streaming", json!("false")),
            ("supports_edit", json!(1)),
            ("supports_threads", json!(null)),
            ("contract_version", json!(1.5)),
        ];
        for (key, value) in cases {
            let mut v = minimal();
            v[key] = value;
            let err = CapabilityDescriptor::from_json(&v.to_string()).unwrap_err();
            assert_eq!(err, DescriptorError::WrongType(key));
            assert_eq!(
                err.to_string(),
                format!("descriptor rejected: {key} has the wrong type")
            );
        }
    }

    #[test]
    fn non_object_and_invalid_json_are_rejected() {
        for raw in ["[]", "1", "\"x\"", "null", "true"] {
            assert_eq!(
                CapabilityDescriptor::from_json(raw),
                Err(DescriptorError::NotAnObject)
            );
        }
        for raw in ["", "{", "not json", "{\"a\":}"] {
            let err = CapabilityDescriptor::from_json(raw).unwrap_err();
            assert!(matches!(err, DescriptorError::InvalidJson(_)), "{raw:?}");
            assert!(
                err.to_string()
                    .starts_with("descriptor rejected: not valid JSON")
            );
        }
    }

    #[test]
    fn max_message_length_normalisation_table() {
        let rows: [(Value, u32); 16] = [
            (json!(2000), 2000),
            (json!("2000"), 2000),
            (json!(2000.0), 2000),
            (json!(2000.7), 4096),
            (json!(true), 4096),
            (json!(false), 4096),
            (json!("1e3"), 4096),
            (json!(0), 4096),
            (json!("0"), 4096),
            (json!(-5), 4096),
            (json!(null), 4096),
            (json!("abc"), 4096),
            (json!([1]), 4096),
            (json!({}), 4096),
            (json!(u64::MAX), 4096),
            (json!(4_294_967_295u64), u32::MAX),
        ];
        for (input, expected) in rows {
            assert_eq!(
                with("max_message_length", input.clone()).max_message_length(),
                expected,
                "input {input}"
            );
        }
    }

    #[test]
    fn max_message_length_edge_strings_and_floats() {
        assert_eq!(normalize_max_message_length(&json!(" 2000 ")), 2000);
        assert_eq!(normalize_max_message_length(&json!("2000.0")), 4096);
        assert_eq!(normalize_max_message_length(&json!("-5")), 4096);
        assert_eq!(normalize_max_message_length(&json!(-0.0)), 4096);
        assert_eq!(normalize_max_message_length(&json!(1e300)), 4096);
        assert_eq!(
            normalize_max_message_length(&json!("99999999999999999999999999999999999999999")),
            4096
        );
    }

    #[test]
    fn len_unit_counting_table_section_3_3() {
        let rows: [(&str, usize, usize); 6] = [
            ("hello", 5, 5),
            ("h\u{e9}llo", 5, 5),
            ("\u{1F600}", 1, 2),
            ("a\u{1F600}b", 3, 4),
            ("\u{1F44D}\u{1F3FD}", 2, 4),
            ("e\u{301}", 2, 2),
        ];
        let chars = with("len_unit", json!("chars"));
        let utf16 = with("len_unit", json!("utf16"));
        assert_eq!(utf16.len_unit(), LenUnit::Utf16);
        for (text, n_chars, n_utf16) in rows {
            assert_eq!(chars.message_len(text), n_chars, "{text:?} chars");
            assert_eq!(utf16.message_len(text), n_utf16, "{text:?} utf16");
        }
    }

    #[test]
    fn unknown_len_unit_counts_chars_but_round_trips_verbatim() {
        let d = with("len_unit", json!("char"));
        assert_eq!(d.len_unit(), LenUnit::Chars);
        assert_eq!(d.len_unit_raw(), "char");
        assert_eq!(d.message_len("\u{1F600}"), 1);
        assert_eq!(CapabilityDescriptor::from_json(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn supported_ops_keeps_non_empty_strings_in_order() {
        let d = with(
            "supported_ops",
            json!(["send", "", 3, null, "draft", ["x"], "edit"]),
        );
        assert_eq!(d.supported_ops(), ["send", "draft", "edit"]);
    }

    #[test]
    fn supported_ops_non_array_is_empty() {
        for value in [
            json!("send"),
            json!(5),
            json!({"send": true}),
            json!(null),
            json!(true),
        ] {
            assert!(
                with("supported_ops", value.clone())
                    .supported_ops()
                    .is_empty(),
                "{value}"
            );
        }
    }

    #[test]
    fn supports_op_falls_back_to_legacy_set_only_when_list_empty() {
        let legacy = CapabilityDescriptor::from_json(&minimal().to_string()).unwrap();
        for op in LEGACY_OPS {
            assert!(legacy.supports_op(op));
        }
        for op in ["get_chat_info", "draft", "delete", "send_media", "prompt"] {
            assert!(!legacy.supports_op(op), "{op}");
        }
        let empty = with("supported_ops", json!([]));
        assert!(empty.supports_op("send"));
        assert!(!empty.supports_op("delete"));

        let advertised = with("supported_ops", json!(["send", "get_chat_info"]));
        assert!(advertised.supports_op("send"));
        assert!(advertised.supports_op("get_chat_info"));
        assert!(
            !advertised.supports_op("edit"),
            "no legacy fallback once listed"
        );
    }

    #[test]
    fn lists_op_never_uses_the_legacy_set() {
        let legacy = CapabilityDescriptor::from_json(&minimal().to_string()).unwrap();
        assert!(!legacy.lists_op("send"));
        let d = with("supported_ops", json!(["delete"]));
        assert!(d.lists_op("delete"));
        assert!(!d.lists_op("draft"));
    }

    #[test]
    fn draft_streaming_needs_flag_and_literal_draft_op() {
        let mut v = minimal();
        v["supports_draft_streaming"] = json!(true);
        let flag_only = CapabilityDescriptor::from_json(&v.to_string()).unwrap();
        assert!(flag_only.advertises_draft_streaming());
        assert!(!flag_only.supports_draft_streaming());

        v["supported_ops"] = json!(["send", "draft"]);
        let both = CapabilityDescriptor::from_json(&v.to_string()).unwrap();
        assert!(both.supports_draft_streaming());

        let op_only = with("supported_ops", json!(["draft"]));
        assert!(!op_only.supports_draft_streaming());
    }

    #[test]
    fn code_blocks_follow_the_dialect() {
        assert!(!with("markdown_dialect", json!("plain")).supports_code_blocks());
        assert!(!with("markdown_dialect", json!("")).supports_code_blocks());
        for dialect in ["markdown_v2", "discord", "slack", "mrkdwn"] {
            assert!(with("markdown_dialect", json!(dialect)).supports_code_blocks());
        }
    }

    #[test]
    fn other_contract_versions_are_accepted_and_flagged() {
        let d = with("contract_version", json!(2));
        assert_eq!(d.contract_version(), 2);
        assert!(!d.is_known_contract_version());
        assert_eq!(with("contract_version", json!(-1)).contract_version(), -1);
    }

    #[test]
    fn placeholder_matches_section_6_1() {
        let d = CapabilityDescriptor::placeholder("discord");
        assert_eq!(d.contract_version(), 1);
        assert_eq!(d.platform(), "discord");
        assert_eq!(d.label(), "Relay");
        assert_eq!(d.max_message_length(), 4096);
        assert!(!d.advertises_draft_streaming());
        assert!(d.supports_edit());
        assert!(!d.supports_threads());
        assert_eq!(d.markdown_dialect(), "plain");
        assert!(!d.supports_code_blocks());
        assert_eq!(d.len_unit(), LenUnit::Chars);
        assert_eq!(d.len_unit_raw(), "chars");
        assert!(d.supported_ops().is_empty());
        assert_eq!(CapabilityDescriptor::placeholder("  ").platform(), "relay");
    }

    #[test]
    fn serialises_to_sorted_wire_form() {
        let mut v = minimal();
        v["max_message_length"] = json!(100);
        let d = CapabilityDescriptor::from_json(&v.to_string()).unwrap();
        let expected = concat!(
            r#"{"contract_version":1,"emoji":"🔌","label":"Discord","len_unit":"chars","#,
            r#""markdown_dialect":"discord","max_message_length":100,"pii_safe":false,"#,
            r#""platform":"discord","platform_hint":"","supported_ops":[],"#,
            r#""supports_block_formatting":false,"supports_context":false,"#,
            r#""supports_draft_streaming":false,"supports_edit":true,"#,
            r#""supports_inchannel_continuable":false,"supports_threads":true}"#
        );
        assert_eq!(d.to_json(), expected);
        assert_eq!(serde_json::to_string(&d).unwrap(), expected);
    }

    #[test]
    fn section_2_3_example_descriptor_parses() {
        let raw = r#"{"contract_version": 1, "platform": "discord", "label": "Discord", "max_message_length": 2000, "supports_draft_streaming": false, "supports_edit": true, "supports_threads": true, "markdown_dialect": "discord", "len_unit": "chars", "supported_ops": ["send", "edit", "typing", "follow_up", "get_chat_info"]}"#;
        let d = CapabilityDescriptor::from_json(raw).unwrap();
        assert!(d.supports_op("get_chat_info"));
        assert!(!d.supports_op("delete"));
    }

    fn arb_descriptor() -> impl Strategy<Value = CapabilityDescriptor> {
        let head = (
            any::<i64>(),
            ".*",
            ".*",
            prop_oneof![Just("chars".to_owned()), Just("utf16".to_owned()), ".*"],
            ".*",
            1u32..=u32::MAX,
            any::<bool>(),
            ".*",
        );
        let tail = (".*", prop::collection::vec(".+", 0..6), any::<[bool; 6]>());
        (head, tail).prop_map(
            |(
                (
                    contract_version,
                    emoji,
                    label,
                    len_unit,
                    markdown_dialect,
                    max_len,
                    pii,
                    platform,
                ),
                (platform_hint, supported_ops, flags),
            )| CapabilityDescriptor {
                contract_version,
                emoji,
                label,
                len_unit,
                markdown_dialect,
                max_message_length: max_len,
                pii_safe: pii,
                platform,
                platform_hint,
                supported_ops,
                supports_block_formatting: flags[0],
                supports_context: flags[1],
                supports_draft_streaming: flags[2],
                supports_edit: flags[3],
                supports_inchannel_continuable: flags[4],
                supports_threads: flags[5],
            },
        )
    }

    proptest! {
        #[test]
        fn serialise_then_parse_round_trips(d in arb_descriptor()) {
            let text = serde_json::to_string(&d).unwrap();
            prop_assert_eq!(CapabilityDescriptor::from_json(&text).unwrap(), d);
        }

        #[test]
        fn from_json_never_panics(raw in ".*") {
            let _ = CapabilityDescriptor::from_json(&raw);
        }

        #[test]
        fn normalised_length_is_always_positive(n in any::<i64>(), f in any::<f64>(), s in ".*") {
            prop_assert!(normalize_max_message_length(&json!(n)) >= 1);
            prop_assert!(normalize_max_message_length(&json!(f)) >= 1);
            prop_assert!(normalize_max_message_length(&json!(s)) >= 1);
        }
    }
}
