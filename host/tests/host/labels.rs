//! The chat-label record end to end (spec §7.7): the text lane's labels
//! reach the gateway to store, and a slash command presents them; a stored
//! record primes a fresh adapter.

use super::*;
use relay_host::ChatLabels;

fn slash_command(id: &str) -> relay_stub::Passthrough {
    let body = json!({"type": 2, "id": id, "channel_id": "chan1", "guild_id": "g1",
        "channel": {"id": "chan1", "name": "payload-name"},
        "member": {"user": {"id": "u1", "username": "ben"}},
        "data": {"name": "status"}});
    relay_stub::Passthrough::new("discord", "B1").body(body.to_string())
}

async fn labels_event(events: &mut EventStream) -> ChatLabels {
    next_event(events, "a labels event", |e| match e {
        Event::Labels(labels) => Some(labels),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_present_the_labels_the_text_lane_observed() {
    let stub = stub().await;
    let mut config = config(&stub);
    config.identities = vec![Identity::new("discord", "B1")];
    let (handle, mut events) = spawn(config).await;
    handshake(&stub, &mut events, 1).await;
    stub.push_inbound(json!({"text": "hi", "message_id": "m1",
        "source": {"platform": "discord", "chat_id": "chan1", "chat_type": "group",
            "scope_id": "g1", "chat_name": "general", "chat_topic": "ship it",
            "user_id": "u1", "user_name": "Benny"}}))
        .await
        .expect("pushed");
    let labels = labels_event(&mut events).await;
    assert_eq!(labels.chat_name.as_deref(), Some("general"));
    assert_eq!(labels.chat_topic.as_deref(), Some("ship it"));
    assert_eq!(labels.user_name.as_deref(), Some("Benny"));
    message(&mut events).await.accept();
    stub.push(slash_command("i1")).await.expect("pushed");
    let m = message(&mut events).await;
    let event: Value = serde_json::from_str(&m.json).expect("json");
    assert_eq!(event["text"], "/status");
    assert_eq!(event["source"]["chat_name"], "general");
    assert_eq!(event["source"]["chat_topic"], "ship it");
    assert_eq!(event["source"]["user_name"], "Benny");
    m.accept();

    // A fresh adapter primed with the stored record presents it too.
    handle.shutdown().await.expect("shutdown");
    let stub = stub_with(StubConfig::default()).await;
    let mut config = super::config(&stub);
    config.identities = vec![Identity::new("discord", "B1")];
    let (handle, mut events) = spawn(config).await;
    resolved(handle.prime_labels(labels)).await.expect("primed");
    handshake(&stub, &mut events, 1).await;
    stub.push(slash_command("i2")).await.expect("pushed");
    let m = message(&mut events).await;
    let event: Value = serde_json::from_str(&m.json).expect("json");
    assert_eq!(event["source"]["chat_name"], "general");
    assert_eq!(event["source"]["user_name"], "Benny");
}
