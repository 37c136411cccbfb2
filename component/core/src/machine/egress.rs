//! Format hints and the Slack egress rules (spec §6.6.3, §6.6.4, §9.7): the
//! operator's per-platform knobs, coerced once at start, and the stamping
//! rules that read them. The knob values are host policy; the rules are
//! the adapter's.

use super::*;

/// Strings that coerce to true (after trimming and lower-casing).
const TRUE_WORDS: [&str; 4] = ["1", "true", "yes", "on"];
/// Strings that coerce to false for the unfurl knobs.
const FALSE_WORDS: [&str; 4] = ["0", "false", "no", "off"];

/// The operator's egress knobs: the gateway's `platforms.relay.extra`.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    extra: Map<String, Value>,
    /// Some platform enables a format hint (saves lookups on every send).
    any_format: bool,
    /// Some platform sets an unfurl knob.
    any_unfurl: bool,
}

/// `platform-extra` that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobsError;

impl std::fmt::Display for KnobsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("platform-extra is not a JSON object")
    }
}

/// A boolean knob (§6.6.4): real booleans as they are; strings trimmed and
/// lower-cased are true only for `1`, `true`, `yes`, `on`; anything else
/// (missing, numbers, null) gives `default`.
fn coerce_flag(value: Option<&Value>, default: bool) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => TRUE_WORDS.contains(&s.trim().to_lowercase().as_str()),
        _ => default,
    }
}

/// An explicit boolean (the unfurl knobs): booleans, and strings in the
/// true or false word sets; anything else counts as not configured.
fn explicit_bool(value: Option<&Value>) -> Option<bool> {
    match value {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => {
            let s = s.trim().to_lowercase();
            if TRUE_WORDS.contains(&s.as_str()) {
                Some(true)
            } else if FALSE_WORDS.contains(&s.as_str()) {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Whether `text` carries a link Slack would unfurl (§6.6.4).
pub fn has_link(text: &str) -> bool {
    text.contains("http://")
        || text.contains("https://")
        || text.contains("<http")
        || text.contains("](http")
}

impl Knobs {
    /// Parses `platform-extra`: `""` (or blank) is no knobs.
    pub fn parse(text: &str) -> Result<Knobs, KnobsError> {
        if text.trim().is_empty() {
            return Ok(Knobs::default());
        }
        let extra = parse_object(text).ok_or(KnobsError)?;
        let mut knobs = Knobs {
            extra,
            any_format: false,
            any_unfurl: false,
        };
        let platforms: Vec<String> = knobs
            .extra
            .iter()
            .filter(|(_, v)| v.is_object())
            .map(|(k, _)| k.clone())
            .chain(std::iter::once(String::new()))
            .collect();
        for p in &platforms {
            knobs.any_format |=
                knobs.flag(p, "rich_blocks", false) || knobs.flag(p, "markdown_blocks", false);
            knobs.any_unfurl |= knobs.unfurl(p).iter().any(|(_, v)| v.is_some());
        }
        Ok(knobs)
    }

    /// The knobs of `platform`: the nested `extra.<platform>` object when
    /// it is one, else the flat `extra` (legacy).
    fn section(&self, platform: &str) -> &Map<String, Value> {
        match self.extra.get(platform) {
            Some(Value::Object(nested)) if !platform.is_empty() => nested,
            _ => &self.extra,
        }
    }

    fn flag(&self, platform: &str, key: &str, default: bool) -> bool {
        coerce_flag(self.section(platform).get(key), default)
    }

    /// The explicitly configured unfurl knobs of `platform`.
    fn unfurl(&self, platform: &str) -> [(&'static str, Option<bool>); 2] {
        let section = self.section(platform);
        [
            ("unfurl_links", explicit_bool(section.get("unfurl_links"))),
            ("unfurl_media", explicit_bool(section.get("unfurl_media"))),
        ]
    }

    /// Whether any unfurl knob is configured for `platform` (it disables
    /// Slack draft streaming, §6.1).
    pub fn has_unfurl(&self, platform: &str) -> bool {
        self.any_unfurl && self.unfurl(platform).iter().any(|(_, v)| v.is_some())
    }

    /// `format_hints` for a destination `platform` whose descriptor has
    /// `supports_block_formatting` (§6.6.3): only the enabled knobs.
    pub fn format_hints(&self, platform: &str) -> Option<Map<String, Value>> {
        if !self.any_format {
            return None;
        }
        let mut hints = Map::new();
        for key in ["rich_blocks", "markdown_blocks"] {
            if self.flag(platform, key, false) {
                hints.insert(key.to_owned(), Value::Bool(true));
            }
        }
        (!hints.is_empty()).then_some(hints)
    }

    /// Whether the Slack chat `chat_id` replies in threads (§6.6.4):
    /// `channel_reply_modes[chat]` when it is `thread` or `channel`, else
    /// `reply_in_thread` (default true).
    pub fn thread_mode(&self, chat_id: &str) -> bool {
        let section = self.section("slack");
        let mode = section
            .get("channel_reply_modes")
            .and_then(Value::as_object)
            .and_then(|modes| modes.get(chat_id))
            .and_then(Value::as_str)
            .map(|m| m.trim().to_lowercase());
        match mode.as_deref() {
            Some("thread") => true,
            Some("channel") => false,
            _ => coerce_flag(section.get("reply_in_thread"), true),
        }
    }

    /// `dm_top_level_threads_as_sessions` (default true).
    pub fn dm_threads_as_sessions(&self) -> bool {
        self.flag("slack", "dm_top_level_threads_as_sessions", true)
    }
}

fn has_thread(metadata: &Map<String, Value>) -> bool {
    let set = |k: &str| match metadata.get(k) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    set("thread_id") || set("thread_ts")
}

impl Machine {
    /// The platform whose rules a frame to `chat_id` follows: the chat's
    /// learned platform, else the default descriptor's.
    fn egress_platform(&self, chat_id: &str) -> String {
        self.routes
            .platform(chat_id)
            .unwrap_or_else(|| self.receive.default_desc.platform())
            .to_owned()
    }

    /// The descriptor whose capability a frame to `chat_id` may use for
    /// its hints (§6.6.3): the platform's own (explicit, else the chat's
    /// learned one), or the default one only if it is that platform; an
    /// unknown chat uses the default. Never another platform's.
    fn destination(&self, chat_id: &str, platform: Option<&str>) -> Option<&CapabilityDescriptor> {
        match platform.or_else(|| self.routes.platform(chat_id)) {
            Some(p) => match self.receive.platform_desc.get(p) {
                Some(d) => Some(d),
                None => (self.receive.default_desc.platform() == p)
                    .then_some(&self.receive.default_desc),
            },
            None => Some(&self.receive.default_desc),
        }
    }

    /// Stamps `format_hints` (§6.6.3) from the destination's capability
    /// and its platform's knobs, never over the caller's own.
    pub(super) fn stamp_format_hints(
        &self,
        chat_id: &str,
        platform: Option<&str>,
        metadata: &mut Map<String, Value>,
    ) {
        if !self.knobs.any_format || metadata.contains_key("format_hints") {
            return;
        }
        let Some(desc) = self.destination(chat_id, platform) else {
            return;
        };
        if !desc.supports_block_formatting() {
            return;
        }
        if let Some(hints) = self.knobs.format_hints(desc.platform()) {
            metadata.insert("format_hints".to_owned(), Value::Object(hints));
        }
    }

    /// Whether a frame to `chat_id` (or to an explicit `platform`) follows
    /// the Slack rules.
    fn slack_bound(&self, chat_id: &str, platform: Option<&str>) -> bool {
        match platform {
            Some(p) => p == "slack",
            None => self.egress_platform(chat_id) == "slack",
        }
    }

    /// The Slack reply-anchor rule (§6.6.4) for the text and media lanes:
    /// in flat mode a Slack DM without a thread loses its `reply_to` (and
    /// the mirrored `metadata.reply_to_message_id`); a kept anchor of a
    /// Slack chat without a thread is promoted to `metadata.thread_id`.
    pub(super) fn slack_reply_anchor(
        &self,
        chat_id: &str,
        platform: Option<&str>,
        reply_to: Option<&str>,
        metadata: &mut Map<String, Value>,
    ) -> Option<String> {
        let reply_to = reply_to.filter(|r| !r.is_empty()).map(str::to_owned);
        if !self.slack_bound(chat_id, platform) || has_thread(metadata) {
            return reply_to;
        }
        let dm = self
            .routes
            .get(chat_id)
            .and_then(|r| r.chat_type.as_deref())
            == Some("dm");
        if dm && !self.knobs.thread_mode(chat_id) {
            metadata.remove("reply_to_message_id");
            return None;
        }
        if let Some(anchor) = &reply_to {
            metadata.insert("thread_id".to_owned(), Value::from(anchor.as_str()));
        }
        reply_to
    }

    /// The `send` lane's egress preparation (§6.6.1 steps 5-6): the Slack
    /// reply anchor and unfurl knobs, then format hints. `tag` is the
    /// chat's learned platform, already looked up by the caller; the
    /// common case (no knobs, not Slack) costs two comparisons.
    pub(super) fn egress_prep(
        &self,
        chat_id: &str,
        platform: Option<&str>,
        tag: Option<&str>,
        reply_to: Option<&str>,
        metadata: &mut Map<String, Value>,
    ) -> Option<String> {
        let slack = match platform.or(tag) {
            Some(p) => p == "slack",
            None => self.receive.default_desc.platform() == "slack",
        };
        let reply_to = if slack {
            let kept = self.slack_reply_anchor(chat_id, platform, reply_to, metadata);
            self.stamp_unfurl(chat_id, platform, metadata);
            kept
        } else {
            reply_to.map(str::to_owned)
        };
        self.stamp_format_hints(chat_id, platform, metadata);
        reply_to
    }

    /// Stamps the explicitly configured unfurl knobs (§6.6.4) on a frame to
    /// a Slack chat, never over the caller's own.
    pub(super) fn stamp_unfurl(
        &self,
        chat_id: &str,
        platform: Option<&str>,
        metadata: &mut Map<String, Value>,
    ) {
        if !self.knobs.any_unfurl || !self.slack_bound(chat_id, platform) {
            return;
        }
        for (key, value) in self.knobs.unfurl("slack") {
            if let Some(v) = value
                && !metadata.contains_key(key)
            {
                metadata.insert(key.to_owned(), Value::Bool(v));
            }
        }
    }

    /// The inbound session-thread stamp (§6.6.4): a Slack event without a
    /// thread but with a message id keys its own session when its chat
    /// replies in threads (a DM also needs
    /// `dm_top_level_threads_as_sessions`). A real thread id is kept.
    pub(super) fn stamp_session_thread(&self, event: &mut MessageEvent) {
        let src = &event.source;
        if src.platform != "slack" || src.thread_id.as_deref().is_some_and(|t| !t.is_empty()) {
            return;
        }
        let Some(message_id) = event
            .message_id
            .clone()
            .or_else(|| src.message_id.clone())
            .filter(|m| !m.is_empty())
        else {
            return;
        };
        if !self.knobs.thread_mode(&src.chat_id) {
            return;
        }
        if src.chat_type == "dm" && !self.knobs.dm_threads_as_sessions() {
            return;
        }
        event.source.thread_id = Some(message_id);
    }

    /// Whether native draft streaming is usable for `chat_id` (§6.1): the
    /// chat's descriptor has it and lists `draft`, and no unfurl knob is
    /// configured for its platform.
    pub fn supports_draft_streaming(&self, chat_id: &str) -> bool {
        let desc = self.descriptor_for_chat(Some(chat_id));
        desc.supports_draft_streaming() && !self.knobs.has_unfurl(desc.platform())
    }

    /// Whether the stream is the message for `chat_id` (its descriptor's
    /// platform is Slack): such streams are armed before their first frame
    /// and sealed by the turn's final send.
    pub(super) fn stream_is_message(&self, chat_id: &str) -> bool {
        self.descriptor_for_chat(Some(chat_id)).platform() == "slack"
    }

    /// The fresh-final preference (§6.6.4): a Slack chat, an unfurl knob
    /// explicitly true, and a link in the final text.
    pub fn prefers_fresh_final(&self, chat_id: &str, text: &str) -> bool {
        self.egress_platform(chat_id) == "slack"
            && self
                .knobs
                .unfurl("slack")
                .iter()
                .any(|(_, v)| *v == Some(true))
            && has_link(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_coerce_as_the_spec_says() {
        for (v, want) in [
            (json!(false), false),
            (json!("False"), false),
            (json!(" no "), false),
            (json!("off"), false),
            (json!("0"), false),
            (json!(true), true),
            (json!("yes"), true),
            (json!(" On "), true),
            (json!("1"), true),
            (json!(1), true),
        ] {
            // Numbers are not booleans: the default (true) applies.
            assert_eq!(coerce_flag(Some(&v), true), want, "{v}");
        }
        assert!(coerce_flag(None, true));
        assert!(!coerce_flag(None, false));
        assert_eq!(explicit_bool(Some(&json!("junk"))), None);
        assert_eq!(explicit_bool(Some(&json!(" FALSE "))), Some(false));
        assert_eq!(explicit_bool(Some(&json!(0))), None);
    }

    #[test]
    fn nested_sections_win_over_the_flat_legacy_form() {
        let k = Knobs::parse(
            r#"{"slack":{"rich_blocks":"true"},"rich_blocks":false,"markdown_blocks":"yes"}"#,
        )
        .expect("object");
        assert_eq!(
            k.format_hints("slack"),
            Some(
                json!({"rich_blocks":true})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            )
        );
        // No nested section: the flat keys.
        assert_eq!(
            k.format_hints("discord"),
            Some(
                json!({"markdown_blocks":true})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            )
        );
        assert!(Knobs::parse("").is_ok());
        assert_eq!(Knobs::parse("[1]").err(), Some(KnobsError));
        assert!(
            Knobs::parse(r#"{"rich_blocks":"false"}"#)
                .expect("object")
                .format_hints("x")
                .is_none()
        );
    }

    #[test]
    fn channel_reply_modes_override_reply_in_thread() {
        let k = Knobs::parse(
            r#"{"slack":{"reply_in_thread":false,"channel_reply_modes":{"C1":"thread","C2":"channel","C3":"weird"}}}"#,
        )
        .expect("object");
        assert!(k.thread_mode("C1"));
        assert!(!k.thread_mode("C2"));
        assert!(
            !k.thread_mode("C3"),
            "other values fall back to reply_in_thread"
        );
        assert!(Knobs::default().thread_mode("C9"), "default true");
    }

    #[test]
    fn links() {
        for t in [
            "see https://x.io",
            "http://a",
            "<http://a|a>",
            "[a](http://a)",
        ] {
            assert!(has_link(t), "{t}");
        }
        assert!(!has_link("no link here, just httpx"));
    }
}
