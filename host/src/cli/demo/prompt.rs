//! The demo's step for the WIT 0.2 lanes: an approval prompt minted, sent,
//! and answered by a Discord button press, against the embedded stub.

use relay_host::{Event, PromptOption, PromptRequest};
use relay_stub::{Deliverable, Delivery, Passthrough, descriptors};
use serde_json::{Value, json};
use tokio::time::timeout;

use super::{BOT_ID, STEP_TIMEOUT, Step, Walk, connector_sent, gateway_sent, note};

/// The connector's Discord descriptor in the demo: the stub's, plus the
/// `prompt`, `react` and `send_media` lanes.
pub(super) fn demo_descriptor() -> Value {
    let mut descriptor = descriptors::discord();
    if let Some(ops) = descriptor
        .get_mut("supported_ops")
        .and_then(Value::as_array_mut)
    {
        ops.extend([json!("prompt"), json!("react"), json!("send_media")]);
    }
    descriptor
}

impl Walk {
    pub(super) async fn prompt_button(&mut self) -> Step<()> {
        self.begin(
            "prompt_button",
            "A native approval prompt and its button press (WIT 0.2 lanes)",
        );
        let prompt_id = self
            .handle
            .mint_prompt("c1", "approval")
            .await
            .map_err(|e| self.fail(format!("mint_prompt failed: {e}")))?;
        note(&format!(
            "gateway: mint_prompt(\"c1\", \"approval\") = {prompt_id:?} (this adapter's nonce, then 8 hex)"
        ));
        let mark = self.stub.frame_count();
        let request = PromptRequest::new(prompt_id.clone(), "c1", "Run `make deploy`?")
            .with_kind("approval")
            .with_option(PromptOption::new("once", "Approve once").with_style("primary"))
            .with_option(PromptOption::new("deny", "Deny").with_style("danger"));
        let result = timeout(STEP_TIMEOUT, self.handle.prompt(request))
            .await
            .map_err(|_| self.fail("the prompt never completed"))?;
        let frame = self
            .frame_after(mark, "the prompt frame", |f| f.op() == Some("prompt"))
            .await?;
        gateway_sent(&frame.raw);
        self.check(result.success, format!("prompt failed: {:?}", result.error))?;
        let prompt_message = result.message_id.clone().unwrap_or_default();
        note(&format!(
            "connector answered: success, message_id {prompt_message}"
        ));
        // The user presses "Approve once": Discord forwards a component
        // interaction whose custom_id is the button's `hp1:` token.
        let press = json!({
            "type": 3, "id": "i2", "channel_id": "c1", "guild_id": "g1",
            "message": {"id": prompt_message},
            "data": {"custom_id": format!("hp1:{prompt_id}:once"), "component_type": 2},
            "member": {"user": {"id": "u1", "username": "ben"}}
        });
        note(&format!("button press (base64 in bodyB64): {press}"));
        let forward = Passthrough::new("discord", BOT_ID).body(press.to_string());
        connector_sent(&Deliverable::Passthrough(forward.clone()).to_frame(None));
        match self.stub.push_passthrough(forward).await {
            Ok(Delivery::Live { .. }) => {}
            Ok(other) => return Err(self.fail(format!("expected a live delivery, got {other:?}"))),
            Err(e) => return Err(self.fail(format!("push failed: {e}"))),
        }
        let answer = self
            .expect("the prompt answer", |event| match event {
                Event::PromptAnswer(answer) => Ok(answer),
                other => Err(Box::new(other)),
            })
            .await?;
        note(&format!(
            "adapter reported: prompt {} ({}) answered {:?} by {} (the press is not a chat message)",
            answer.prompt_id,
            answer.kind,
            answer.option_id,
            answer.user_id.as_deref().unwrap_or("-")
        ));
        self.check(
            answer.prompt_id == prompt_id && answer.option_id == "once",
            format!("answer {answer:?}"),
        )
    }
}
