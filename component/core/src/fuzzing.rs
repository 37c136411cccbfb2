//! Entry points shared by the `cargo fuzz` targets (`fuzz/`) and the corpus
//! replay test, so stable CI exercises exactly what the fuzzer runs.
//!
//! Each function must return normally for every input: a panic is a bug.

use crate::descriptor::CapabilityDescriptor;
use crate::frame::{ConnectorFrame, Forward, decode_connector_frame};
use crate::interaction::forward_to_event;
use crate::line::LineDecoder;
use crate::machine::{Config, Input, Machine, Now};
use crate::outcome::{ChatInfo, SendResult};

/// Feeds `data` to a line decoder in chunks whose sizes come from the data
/// itself, then feeds the same bytes as one text message through a machine.
pub fn line_decoder(data: &[u8]) {
    let mut decoder = LineDecoder::new(256);
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let take = usize::from(n % 64).min(tail.len());
        decoder.push(&tail[..take], &mut out);
        rest = &tail[take..];
    }
    assert!(
        decoder.buffered() <= 256,
        "line decoder buffered past its limit"
    );

    let mut cfg = Config::new("ws://127.0.0.1:1");
    cfg.max_line_bytes = 4096;
    if let Ok(mut m) = Machine::new(cfg, 1) {
        let now = Now::at_ms(0);
        m.handle(now, Input::Start);
        m.handle(now, Input::SocketOpened { conn: 1 });
        m.handle(now, Input::SocketBinary { conn: 1, data });
        while m.poll_output().is_some() {}
    }
}

/// Decodes `data` as one frame line, a descriptor, a result, and a Discord
/// interaction body; every path must return without panicking.
pub fn frames(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(frame) = decode_connector_frame(line) {
            // Whatever decodes must encode and decode to itself.
            let again = decode_connector_frame(frame.encode().trim_end_matches('\n'));
            assert_eq!(again.as_ref(), Ok(&frame), "frame does not round-trip");
            if let ConnectorFrame::PassthroughForward { forward, .. } = &frame {
                let _ = forward_to_event(forward);
            }
        }
        let _ = CapabilityDescriptor::from_json(line);
        let _ = SendResult::from_result_json(line);
        let _ = ChatInfo::from_result_json(line, "c");
    }
    let forward = Forward {
        platform: "discord".to_owned(),
        body: data.to_vec(),
        ..Forward::default()
    };
    let _ = forward_to_event(&forward);
}
