//! Property checks of the wire model: the line decoder against an oracle, and
//! encode/decode round trips of generated frames.

use proptest::prelude::*;
use relay_core::event::{
    ContextAuthor, ContextItem, MediaItem, MessageEvent, MessageType, ReplyContext, SessionSource,
};
use relay_core::frame::{Action, ConnectorFrame, Forward, GatewayFrame, SkipReason};
use relay_core::line::{LineDecoder, LineItem};
use serde_json::{Map, Value, json};

const MAX_LINE: usize = 4096;

fn text() -> impl Strategy<Value = String> {
    // Mixed ASCII, control characters, newlines and astral-plane characters.
    proptest::string::string_regex("[a-zA-Z0-9 _:/.\\n\\r\\t\"\\\\éü東京😀\u{0}-\u{1f}]{0,24}")
        .expect("valid regex")
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Text),
        Just(MessageType::Photo),
        Just(MessageType::Voice),
        Just(MessageType::Audio),
        Just(MessageType::Command),
        Just(MessageType::Document),
    ]
}

fn source() -> impl Strategy<Value = SessionSource> {
    (
        (text(), text(), text(), opt_text(), opt_text(), opt_text()),
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (
            any::<bool>(),
            proptest::option::of(any::<bool>()),
            opt_text(),
        ),
    )
        .prop_map(
            |(
                (platform, chat_id, chat_type, chat_name, user_id, user_name),
                (thread_id, scope_id, guild_id, message_id, profile),
                (auto_thread_created, is_bot, user_display_name),
            )| SessionSource {
                platform,
                chat_id,
                chat_type,
                chat_name,
                user_id,
                user_name,
                thread_id,
                scope_id,
                guild_id,
                message_id,
                profile,
                auto_thread_created,
                is_bot,
                user_display_name,
                ..SessionSource::default()
            },
        )
}

fn event() -> impl Strategy<Value = MessageEvent> {
    (
        (text(), message_type(), source(), opt_text(), opt_text()),
        (
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec((text(), text()), 0..3),
            proptest::collection::vec((text(), opt_text()), 0..3),
            proptest::option::of((opt_text(), opt_text(), any::<bool>())),
        ),
    )
        .prop_map(
            |(
                (text, message_type, source, message_id, reply_to_message_id),
                (urls, media, context, reply),
            )| {
                MessageEvent {
                    text,
                    message_type,
                    source,
                    message_id,
                    reply_to_message_id,
                    reply_to: reply.map(|(text, author, is_own)| ReplyContext {
                        text,
                        author,
                        is_own,
                    }),
                    media_urls: urls,
                    media: media
                        .into_iter()
                        .map(|(url, mime)| MediaItem { url, mime })
                        .collect(),
                    context: context
                        .into_iter()
                        .map(|(text, user_name)| ContextItem {
                            text,
                            source: ContextAuthor {
                                user_name,
                                user_id: None,
                            },
                        })
                        .collect(),
                    ..MessageEvent::default()
                }
            },
        )
}

fn normalised(mut e: MessageEvent) -> MessageEvent {
    e.normalise();
    e
}

fn connector_frame() -> impl Strategy<Value = ConnectorFrame> {
    prop_oneof![
        (event(), proptest::option::of("[a-z0-9-]{1,12}")).prop_map(|(e, buffer_id)| {
            ConnectorFrame::Inbound {
                event: Box::new(normalised(e)),
                buffer_id,
            }
        }),
        Just(ConnectorFrame::GoingIdleAck),
        ("[0-9a-f]{32}", any::<bool>(), opt_text()).prop_map(|(request_id, success, id)| {
            ConnectorFrame::OutboundResult {
                request_id,
                result: json!({"success": success, "message_id": id}).to_string(),
            }
        }),
        (text(), text()).prop_map(|(session_key, chat_id)| ConnectorFrame::InterruptInbound {
            session_key,
            chat_id
        }),
        (
            text(),
            text(),
            proptest::collection::vec((text(), text()), 0..3),
            proptest::collection::vec(any::<u8>(), 0..64),
            opt_text(),
            proptest::option::of("[a-z0-9-]{1,12}"),
        )
            .prop_map(|(platform, path, headers, body, profile, buffer_id)| {
                ConnectorFrame::PassthroughForward {
                    forward: Box::new(Forward {
                        platform,
                        bot_id: "b1".into(),
                        method: "POST".into(),
                        path,
                        headers,
                        body,
                        profile,
                    }),
                    buffer_id,
                }
            }),
        "[a-z]{1,8}".prop_map(|p| ConnectorFrame::Descriptor {
            raw: json!({"contract_version": 1, "platform": p, "label": "L"}).to_string(),
        }),
    ]
}

/// A line on the wire and what the decoder must make of it.
#[derive(Debug, Clone)]
enum Line {
    Good(ConnectorFrame),
    Bad(Vec<u8>, SkipReason),
}

fn bad_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        Just(Line::Bad(
            b"{\"type\":\"inbound\xff\xfe\"}".to_vec(),
            SkipReason::InvalidUtf8
        )),
        Just(Line::Bad(b"[1,2,3]".to_vec(), SkipReason::NotAnObject)),
        Just(Line::Bad(
            b"\"just a string\"".to_vec(),
            SkipReason::NotAnObject
        )),
        Just(Line::Bad(b"{not json".to_vec(), SkipReason::InvalidJson)),
        Just(Line::Bad(
            b"{\"type\":\"mystery\"}".to_vec(),
            SkipReason::UnknownType
        )),
        Just(Line::Bad(
            b"{\"type\":\"hello\",\"platform\":\"x\"}".to_vec(),
            SkipReason::EchoedType
        )),
        (MAX_LINE + 1..MAX_LINE * 3)
            .prop_map(|n| Line::Bad(vec![b'z'; n], SkipReason::LineTooLong)),
    ]
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    proptest::collection::vec(
        prop_oneof![3 => connector_frame().prop_map(Line::Good), 1 => bad_line()],
        0..12,
    )
}

fn wire(lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        match line {
            Line::Good(f) => out.extend_from_slice(f.encode().as_bytes()),
            Line::Bad(bytes, _) => {
                out.extend_from_slice(bytes);
                out.push(b'\n');
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoder_matches_oracle_for_any_split(
        lines in lines(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let bytes = wire(&lines);
        let mut offsets: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        offsets.push(0);
        offsets.push(bytes.len());
        offsets.sort_unstable();
        offsets.dedup();

        // Messages are byte ranges: those that happen to be valid UTF-8 are
        // what a text message would carry; the rest can only be binary.
        let mut decoder = LineDecoder::new(MAX_LINE);
        let mut got = Vec::new();
        for w in offsets.windows(2) {
            decoder.push(&bytes[w[0]..w[1]], &mut got);
        }
        let expected: Vec<LineItem> = lines
            .iter()
            .map(|l| match l {
                Line::Good(f) => LineItem::Frame(f.clone()),
                Line::Bad(_, reason) => LineItem::Skip(*reason),
            })
            .collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn connector_frames_round_trip(frame in connector_frame()) {
        let encoded = frame.encode();
        prop_assert!(encoded.ends_with('\n'));
        prop_assert_eq!(encoded.matches('\n').count(), 1, "one line per frame");
        let decoded = relay_core::frame::decode_connector_frame(encoded.trim_end_matches('\n'));
        prop_assert_eq!(decoded, Ok(frame));
    }

    #[test]
    fn gateway_frames_round_trip(frame in gateway_frame()) {
        let encoded = frame.encode();
        prop_assert_eq!(encoded.matches('\n').count(), 1, "one line per frame");
        prop_assert_eq!(GatewayFrame::decode(&encoded), Some(frame));
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
    ) {
        let mut decoder = LineDecoder::new(256);
        let mut out = Vec::new();
        for c in &chunks {
            decoder.push(c, &mut out);
        }
        prop_assert!(decoder.buffered() <= 256);
    }
}

fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("[a-z_]{1,8}", text(), 0..3)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (text(), text(), opt_text(), metadata()).prop_map(
            |(chat_id, content, reply_to, metadata)| Action::Send {
                chat_id,
                content,
                reply_to,
                metadata
            }
        ),
        (text(), text(), text(), metadata()).prop_map(
            |(chat_id, message_id, content, metadata)| Action::Edit {
                chat_id,
                message_id,
                content,
                metadata
            }
        ),
        (text(), metadata(), opt_text()).prop_map(|(chat_id, metadata, content)| Action::Typing {
            chat_id,
            metadata,
            content
        }),
        (text(), text(), text(), metadata()).prop_map(|(session_key, kind, content, metadata)| {
            Action::FollowUp {
                session_key,
                kind,
                content,
                metadata,
            }
        }),
        text().prop_map(|chat_id| Action::GetChatInfo { chat_id }),
        (text(), text()).prop_map(|(chat_id, emoji)| {
            let mut m = Map::new();
            m.insert("op".into(), json!("react"));
            m.insert("chat_id".into(), json!(chat_id));
            m.insert("emoji".into(), json!(emoji));
            m.insert("remove".into(), json!(false));
            Action::Raw(m)
        }),
    ]
}

fn gateway_frame() -> impl Strategy<Value = GatewayFrame> {
    prop_oneof![
        (text(), text()).prop_map(|(platform, bot_id)| GatewayFrame::Hello {
            platform,
            bot_id,
            command_manifest: None
        }),
        text().prop_map(|buffer_id| GatewayFrame::InboundAck { buffer_id }),
        ("[0-9a-f]{32}", action(), opt_text(), opt_text()).prop_map(
            |(request_id, action, platform, bot_id)| {
                GatewayFrame::Outbound {
                    request_id,
                    action,
                    platform,
                    bot_id,
                }
            }
        ),
        (text(), opt_text()).prop_map(|(session_key, reason)| GatewayFrame::Interrupt {
            session_key,
            reason
        }),
        Just(GatewayFrame::GoingIdle),
    ]
}
