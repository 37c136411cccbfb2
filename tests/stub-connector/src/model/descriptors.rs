//! Ready-made descriptor objects (§2.3 / §3.1).

use serde_json::{Value, json};

/// The §2.3 example: Discord, 2000 chars, edits and threads, with
/// `get_chat_info` advertised.
pub fn discord() -> Value {
    json!({
        "contract_version": 1, "platform": "discord", "label": "Discord",
        "max_message_length": 2000, "supports_draft_streaming": false,
        "supports_edit": true, "supports_threads": true,
        "markdown_dialect": "discord", "len_unit": "chars",
        "supported_ops": ["send", "edit", "typing", "follow_up", "get_chat_info"]
    })
}

/// A Telegram-like descriptor: 4096 UTF-16 units, MarkdownV2.
pub fn telegram() -> Value {
    json!({
        "contract_version": 1, "platform": "telegram", "label": "Telegram",
        "max_message_length": 4096, "supports_draft_streaming": false,
        "supports_edit": true, "supports_threads": false,
        "markdown_dialect": "markdown_v2", "len_unit": "utf16"
    })
}

/// A Slack-like descriptor: mrkdwn, threads, block formatting.
pub fn slack() -> Value {
    json!({
        "contract_version": 1, "platform": "slack", "label": "Slack",
        "max_message_length": 4000, "supports_draft_streaming": false,
        "supports_edit": true, "supports_threads": true,
        "markdown_dialect": "mrkdwn", "len_unit": "chars",
        "supports_block_formatting": true,
        "supported_ops": ["send", "edit", "typing", "follow_up", "get_chat_info", "delete"]
    })
}

/// A minimal valid descriptor for any platform name (legacy op set).
pub fn minimal(platform: &str) -> Value {
    json!({
        "contract_version": 1, "platform": platform, "label": platform,
        "max_message_length": 4096, "supports_draft_streaming": false,
        "supports_edit": true, "supports_threads": false,
        "markdown_dialect": "plain", "len_unit": "chars"
    })
}
