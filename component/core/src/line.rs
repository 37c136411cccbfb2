//! Newline-delimited framing of the receive side (spec §1.5).
//!
//! Text and binary WebSocket messages feed one byte buffer; complete lines
//! (split on byte `\n`) are decoded as UTF-8 and then as frames. A line over
//! the limit is discarded up to its next `\n` without buffering past the
//! limit. Nothing here ends the connection or panics.

use crate::frame::{ConnectorFrame, SkipReason, decode_connector_frame};

/// Default longest line, in bytes (the de-facto 1 MiB WebSocket ceiling, §1.3).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineItem {
    /// A frame.
    Frame(ConnectorFrame),
    /// A skipped line and why.
    Skip(SkipReason),
}

/// Reassembles lines across WebSocket messages and decodes them.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    partial: Vec<u8>,
    max_line: usize,
    /// Inside an over-long line: drop bytes until the next `\n`.
    discarding: bool,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(DEFAULT_MAX_LINE_BYTES)
    }
}

impl LineDecoder {
    /// A decoder accepting lines of at most `max_line` bytes (without `\n`).
    pub fn new(max_line: usize) -> LineDecoder {
        LineDecoder {
            partial: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    /// Bytes of an unfinished line held for the next message.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Drops any partial line (the socket it belonged to is gone).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.partial.shrink_to(64 * 1024);
        self.discarding = false;
    }

    /// Feeds one message's bytes; appends what complete lines decode to.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<LineItem>) {
        while !data.is_empty() {
            let newline = memchr::memchr(b'\n', data);
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.discarding = false;
                        data = &data[i + 1..];
                        continue;
                    }
                    None => return,
                }
            }
            match newline {
                Some(i) => {
                    let (head, rest) = data.split_at(i);
                    data = &rest[1..];
                    if self.partial.len() + head.len() > self.max_line {
                        self.partial.clear();
                        out.push(LineItem::Skip(SkipReason::LineTooLong));
                    } else if self.partial.is_empty() {
                        decode_line(head, out);
                    } else {
                        self.partial.extend_from_slice(head);
                        decode_line(&self.partial, out);
                        self.partial.clear();
                    }
                }
                None => {
                    if self.partial.len() + data.len() > self.max_line {
                        self.partial.clear();
                        self.discarding = true;
                        out.push(LineItem::Skip(SkipReason::LineTooLong));
                    } else {
                        self.partial.extend_from_slice(data);
                    }
                    return;
                }
            }
        }
    }
}

fn decode_line(bytes: &[u8], out: &mut Vec<LineItem>) {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match std::str::from_utf8(bytes) {
        Err(_) => out.push(LineItem::Skip(SkipReason::InvalidUtf8)),
        Ok(line) => out.push(match decode_connector_frame(line) {
            Ok(frame) => LineItem::Frame(frame),
            Err(reason) => LineItem::Skip(reason),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut LineDecoder, chunks: &[&[u8]]) -> Vec<LineItem> {
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        out
    }

    const ACK: &[u8] = b"{\"type\":\"going_idle_ack\"}\n";

    #[test]
    fn several_frames_in_one_message() {
        let mut d = LineDecoder::default();
        let msg = [ACK, ACK, b"\n  \n", ACK].concat();
        let out = feed(&mut d, &[&msg]);
        assert_eq!(out, vec![LineItem::Frame(ConnectorFrame::GoingIdleAck); 3]);
    }

    #[test]
    fn frame_split_across_messages() {
        let mut d = LineDecoder::default();
        let out = feed(&mut d, &[&ACK[..5], &ACK[5..12], &ACK[12..]]);
        assert_eq!(out, vec![LineItem::Frame(ConnectorFrame::GoingIdleAck)]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn unterminated_line_waits() {
        let mut d = LineDecoder::default();
        assert!(feed(&mut d, &[&ACK[..ACK.len() - 1]]).is_empty());
        assert_eq!(feed(&mut d, &[b"\n"]).len(), 1);
    }

    #[test]
    fn multibyte_char_split_across_binary_messages() {
        let line = "{\"type\":\"interrupt_inbound\",\"session_key\":\"k\u{e9}\u{1F600}\",\"chat_id\":\"c\"}\n";
        let bytes = line.as_bytes();
        let cut = line.find('\u{1F600}').expect("emoji present") + 2;
        let mut d = LineDecoder::default();
        let out = feed(&mut d, &[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(
            out,
            vec![LineItem::Frame(ConnectorFrame::InterruptInbound {
                session_key: "k\u{e9}\u{1F600}".into(),
                chat_id: "c".into()
            })]
        );
    }

    #[test]
    fn invalid_utf8_skips_only_its_line() {
        let mut d = LineDecoder::default();
        let out = feed(&mut d, &[b"{\"type\":\"going_idle_ack\xff\"}\n", ACK]);
        assert_eq!(
            out,
            vec![
                LineItem::Skip(SkipReason::InvalidUtf8),
                LineItem::Frame(ConnectorFrame::GoingIdleAck)
            ]
        );
    }

    #[test]
    fn over_long_line_is_skipped_once_and_not_buffered() {
        let mut d = LineDecoder::new(32);
        let long = vec![b'x'; 20];
        let mut out = Vec::new();
        d.push(&long, &mut out);
        d.push(&long, &mut out);
        assert_eq!(out, vec![LineItem::Skip(SkipReason::LineTooLong)]);
        assert_eq!(d.buffered(), 0, "nothing buffered past the limit");
        d.push(&long, &mut out);
        d.push(&[b"tail\n".as_slice(), ACK].concat(), &mut out);
        assert_eq!(
            out,
            vec![
                LineItem::Skip(SkipReason::LineTooLong),
                LineItem::Frame(ConnectorFrame::GoingIdleAck)
            ]
        );
    }

    #[test]
    fn over_long_complete_line_in_one_message() {
        let mut d = LineDecoder::new(16);
        let msg = [b"{\"type\":\"xxxxxxxxxxxxxxxx\"}\n".as_slice(), ACK].concat();
        let out = feed(&mut d, &[&msg]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], LineItem::Skip(SkipReason::LineTooLong));
    }

    #[test]
    fn line_of_exactly_the_limit_is_kept() {
        let body = &ACK[..ACK.len() - 1];
        let mut d = LineDecoder::new(body.len());
        assert_eq!(feed(&mut d, &[ACK]).len(), 1);
        let mut d = LineDecoder::new(body.len() - 1);
        assert_eq!(
            feed(&mut d, &[ACK]),
            vec![LineItem::Skip(SkipReason::LineTooLong)]
        );
    }

    #[test]
    fn a_line_that_never_ends_stays_bounded() {
        let mut d = LineDecoder::new(1024);
        let chunk = vec![b'a'; 4096];
        let mut out = Vec::new();
        for _ in 0..100 {
            d.push(&chunk, &mut out);
        }
        assert_eq!(out, vec![LineItem::Skip(SkipReason::LineTooLong)]);
        assert_eq!(d.buffered(), 0);
    }
}
