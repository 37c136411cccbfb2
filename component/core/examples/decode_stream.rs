//! Decodes a relay frame stream (from stdin, or a built-in sample) and prints
//! what the adapter makes of each line: frames, mapped interactions, skips.
//!
//! `cargo run -p relay-core --example decode_stream [-- FILE]`

use relay_core::frame::ConnectorFrame;
use relay_core::interaction::forward_to_event;
use relay_core::line::{LineDecoder, LineItem};
use std::io::Read;

const SAMPLE: &str = concat!(
    r#"{"type":"descriptor","descriptor":{"contract_version":1,"platform":"discord","label":"Discord","max_message_length":2000,"supports_draft_streaming":false,"supports_edit":true,"supports_threads":true,"markdown_dialect":"discord","len_unit":"chars","supported_ops":["send","edit","typing","follow_up","get_chat_info"]}}"#,
    "\n",
    r#"{"type":"inbound","event":{"text":"hello from connector","message_type":"text","message_id":"m-100","source":{"platform":"discord","chat_id":"chan1","chat_type":"group","scope_id":"guildA","user_id":"u1","user_name":"ben"}},"bufferId":"buf-1"}"#,
    "\n",
    "this line is not JSON\n",
    r#"[1,2,3]"#,
    "\n",
    r#"{"type":"passthrough_forward","forward":{"platform":"discord","botId":"1234567890","method":"POST","path":"/interactions/discord/1234567890","headers":[["content-type","application/json"]],"bodyB64":"eyJ0eXBlIjoyLCJpZCI6ImkxIiwiY2hhbm5lbF9pZCI6ImMxIiwiZ3VpbGRfaWQiOiJnMSIsImRhdGEiOnsibmFtZSI6Im1vZGVsIiwib3B0aW9ucyI6W3sibmFtZSI6Im5hbWUiLCJ0eXBlIjozLCJ2YWx1ZSI6ImdwdC14In1dfSwibWVtYmVyIjp7InVzZXIiOnsiaWQiOiJ1MSIsInVzZXJuYW1lIjoiYmVuIn19fQ=="},"bufferId":"pbuf-7"}"#,
    "\n",
    r#"{"type":"interrupt_inbound","session_key":"agent:main:discord:group:chanA:userX","chat_id":"chanA"}"#,
    "\n",
    r#"{"type":"outbound_result","requestId":"0622041b98414a149a58e3b66bc00c9d","result":{"success":true,"message_id":"1300000000000000001"}}"#,
    "\n",
    r#"{"type":"going_idle_ack"}"#,
    "\n",
);

fn main() -> std::io::Result<()> {
    let input = match std::env::args().nth(1) {
        Some(path) => std::fs::read(path)?,
        None if std::env::var_os("RELAY_STDIN").is_some() => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
        None => SAMPLE.as_bytes().to_vec(),
    };
    let mut decoder = LineDecoder::default();
    let mut items = Vec::new();
    // Feed in uneven chunks, as a socket would deliver them.
    for chunk in input.chunks(97) {
        decoder.push(chunk, &mut items);
    }
    for item in items {
        match item {
            LineItem::Skip(reason) => println!("skip      {reason}"),
            LineItem::Frame(ConnectorFrame::PassthroughForward { forward, buffer_id }) => {
                match forward_to_event(&forward) {
                    Ok(event) => println!(
                        "forward   buffer={buffer_id:?} -> {}",
                        event.to_gateway_json(true)
                    ),
                    Err(why) => println!("forward   buffer={buffer_id:?} -> {why}"),
                }
            }
            LineItem::Frame(ConnectorFrame::Inbound { event, buffer_id }) => {
                println!(
                    "inbound   buffer={buffer_id:?} -> {}",
                    event.to_gateway_json(true)
                )
            }
            LineItem::Frame(frame) => println!("frame     {frame:?}"),
        }
    }
    Ok(())
}
