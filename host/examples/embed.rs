//! The smallest useful gateway on `relay-host`: dial a connector, answer
//! every message with a reply, log interrupts and fatal errors, and shut down
//! cleanly (going idle first, so the connector buffers) on Ctrl-C.
//!
//! ```sh
//! GATEWAY_RELAY_ID=gw-1 GATEWAY_RELAY_SECRET=... \
//!     cargo run -p relay-host --example embed -- http://127.0.0.1:9100
//! ```
//!
//! The connector URL comes from the first argument or `GATEWAY_RELAY_URL`.
//! `EMBED_EXIT_AFTER=N` shuts down after N replies (used by the test suite).

use std::error::Error;

use relay_host::{Adapter, AdapterConfig, Event, Identity, Plugin, Secret};
use serde_json::Map;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let url = std::env::args()
        .nth(1)
        .or_else(|| env("GATEWAY_RELAY_URL"))
        .ok_or("usage: embed <connector-url>   (or set GATEWAY_RELAY_URL)")?;
    let exit_after: Option<usize> = env("EMBED_EXIT_AFTER").map(|n| n.parse()).transpose()?;

    // Everything else keeps its default (reconnect on, spec timers).
    let mut config = AdapterConfig::new(url);
    config.identities = vec![Identity::new("discord", env("BOT_ID").unwrap_or_default())];
    config.gateway_id = env("GATEWAY_RELAY_ID").unwrap_or_default();
    config.secret = env("GATEWAY_RELAY_SECRET").map(|s| Secret::new(s.trim()));

    let plugin = Plugin::shared()?;
    let (handle, mut events) = Adapter::spawn(&plugin, config).await?;

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut replies = JoinSet::new();
    let mut replied = 0;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            Some(done) = replies.join_next(), if !replies.is_empty() => {
                let (chat_id, result): (String, relay_host::SendResult) = done?;
                println!("replied in {chat_id}: success={} message_id={:?}", result.success, result.message_id);
                replied += 1;
                if exit_after.is_some_and(|n| replied >= n) {
                    break;
                }
            }
            event = events.next() => match event {
                None => break,
                Some(Event::Message(message)) => {
                    println!("message in {} from {:?}: {}", message.chat_id, message.user_id, message.text);
                    let chat_id = message.chat_id.clone();
                    let reply = format!("you said: {}", message.text);
                    // Taken: the connector will not replay it.
                    message.accept();
                    // Reply without blocking the event loop; the adapter
                    // re-attaches the chat's scope and user to the metadata.
                    let handle = handle.clone();
                    replies.spawn(async move {
                        let result = handle.send(chat_id.clone(), reply, None, Map::new(), None).await;
                        (chat_id, result)
                    });
                }
                Some(Event::Interrupt { session_key, chat_id }) => {
                    println!("interrupt: stop the turn of {session_key} in {chat_id}");
                }
                Some(Event::PromptAnswer(answer)) => {
                    // Only for prompts this adapter minted and sent (none here).
                    println!("prompt {} answered with {}", answer.prompt_id, answer.option_id);
                }
                Some(Event::Labels(labels)) => {
                    // Store these (a database, a file) and give them back
                    // with `handle.prime_labels` after a restart.
                    println!("labels of {}: {:?}", labels.chat_id, labels.chat_name);
                }
                Some(Event::State { state, detail }) => eprintln!("state: {state} {detail}"),
                Some(Event::Fatal { code, message, retryable }) => {
                    eprintln!("fatal: {code}: {message}");
                    if !retryable {
                        break;
                    }
                }
            },
        }
    }
    handle.shutdown().await?;
    eprintln!("stopped");
    Ok(())
}
