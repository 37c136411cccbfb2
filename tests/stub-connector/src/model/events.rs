//! Ready-made inbound `event` objects (§4.1). Each call gets a fresh
//! `message_id` (`in-1`, `in-2`, … per process) so a gateway's duplicate
//! filter never swallows a second push of the same text.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_message_id() -> String {
    format!("in-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A Discord guild text message like the §2.4 example, with this text.
pub fn discord_text(text: &str) -> Value {
    let id = next_message_id();
    json!({
        "text": text, "message_type": "text", "message_id": id,
        "source": {
            "platform": "discord", "chat_id": "chan1", "chat_type": "group",
            "scope_id": "guildA", "user_id": "u1", "user_name": "ben",
            "thread_id": null, "chat_name": "Hermes / #ops", "chat_topic": null,
            "message_id": id
        }
    })
}

/// A DM on `platform` from `user_id` in `chat_id`.
pub fn dm(platform: &str, chat_id: &str, user_id: &str, text: &str) -> Value {
    let id = next_message_id();
    json!({
        "text": text, "message_type": "text", "message_id": id,
        "source": {
            "platform": platform, "chat_id": chat_id, "chat_type": "dm",
            "user_id": user_id, "user_name": user_id, "thread_id": null,
            "chat_name": null, "chat_topic": null
        }
    })
}
