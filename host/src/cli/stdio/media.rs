//! The bridge's `send_media` op (spec §9.1): its arguments, parsed as
//! strictly as the other ops' (kept out of `ops.rs` so that file stays a
//! readable size).

use relay_host::{MediaKind, MediaSendRequest};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Every `kind` the op takes, in the order the error lists them.
const KINDS: [MediaKind; 5] = [
    MediaKind::Image,
    MediaKind::Voice,
    MediaKind::Audio,
    MediaKind::Video,
    MediaKind::Document,
];

/// `send_media`'s arguments, with the wire's names: a local file (uploaded
/// to the connector first, which needs `--media-dir`) or a public `http(s)`
/// URL (sent as is), as one media message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMedia {
    chat_id: String,
    #[serde(deserialize_with = "media_kind")]
    kind: MediaKind,
    source: String,
    /// The frame's `content`; none is an empty caption.
    #[serde(default)]
    caption: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    metadata: Map<String, Value>,
}

impl From<SendMedia> for MediaSendRequest {
    fn from(args: SendMedia) -> Self {
        let mut request = MediaSendRequest::new(args.chat_id, args.kind, args.source)
            .with_caption(args.caption)
            .with_metadata(args.metadata);
        // Set directly: the builders take a value, these are optional.
        request.reply_to = args.reply_to;
        request.filename = args.filename;
        request
    }
}

/// `kind` by its wire name. An unknown one is refused here, with the list,
/// rather than left to the component: the bridge's error line names the
/// op and the value, and nothing reaches the adapter.
fn media_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<MediaKind, D::Error> {
    let name = String::deserialize(deserializer)?;
    KINDS
        .into_iter()
        .find(|kind| kind.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = KINDS.iter().map(|kind| kind.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown kind `{name}` (kinds: {})",
                names.join(", ")
            ))
        })
}
