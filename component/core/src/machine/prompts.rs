//! Interactive prompts (spec §6.11, §7.6, §2.7 `prompt`): minting
//! instance-scoped prompt ids, the op-gated `prompt` frame and its decline
//! rule, and the consumption of answers (`prompt_response` on an inbound
//! event, or a Discord `hp1:` button decoded into one): another instance's
//! ids ignored, one answer wins, a press on a forgotten prompt answered
//! with a short notice. What an answer does (approve, confirm, pick) is
//! the gateway's; it gets the answer as [`Output::PromptAnswer`].

use super::outbound::Purpose;
use super::*;

/// How long a minted prompt waits for its answer.
pub const PROMPT_TTL_MS: u64 = 3_600_000;
/// Resolved prompt ids remembered, so a second press does nothing.
pub(super) const RESOLVED_MEMORY: usize = 256;
/// Prompts waiting at once; past it the one closest to expiry is dropped.
pub(super) const MAX_OPEN_PROMPTS: usize = 4096;
/// Longest `hp1:<prompt>:<option>` callback token (Discord's limit).
const MAX_CALLBACK_BYTES: usize = 64;
/// The notice for a press on a prompt this instance no longer waits for.
pub const NO_LONGER_WAITING: &str = "⌛ This prompt is no longer waiting for an answer.";

/// One button of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptOption {
    /// Option id (`[A-Za-z0-9_.-]{1,32}`).
    pub id: String,
    /// Button text.
    pub label: String,
    /// `primary`, `success`, `danger` or `secondary`.
    pub style: Option<String>,
}

/// The gateway's answer event for a prompt this instance minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptAnswer {
    /// The prompt answered.
    pub prompt_id: String,
    /// The kind given at minting (`approval`, `confirm`, `clarify`, ...).
    pub kind: String,
    /// The option pressed.
    pub option_id: String,
    /// The chat the prompt was sent to.
    pub chat_id: String,
    /// Who pressed it.
    pub user_id: Option<String>,
    /// The message holding the prompt, when the platform said.
    pub prompt_message_id: Option<String>,
    /// `clarify`: the choice text of a `c<i>` option.
    pub choice: Option<String>,
    /// `clarify`: `other` (or an option that maps to no choice): switch to
    /// a typed answer.
    pub text_capture: bool,
    /// The whole answering event as JSON.
    pub event_json: String,
}

/// Whether `id` is a valid prompt or option id.
pub fn valid_prompt_part(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A valid host-chosen nonce: 6 lowercase hex digits.
pub fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 6
        && nonce
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug, Clone)]
struct Registered {
    kind: String,
    chat_id: String,
    expires_at: u64,
    choices: Vec<String>,
}

/// What the prompt lane owns.
#[derive(Debug, Default)]
pub(super) struct Prompts {
    /// This instance's 6-hex nonce (chosen by the host, or drawn at start).
    nonce: String,
    open: KeyedMap<String, Registered>,
    resolved: VecDeque<String>,
}

impl Prompts {
    pub(super) fn new(nonce: String) -> Prompts {
        Prompts {
            nonce,
            open: KeyedMap::default(),
            resolved: VecDeque::new(),
        }
    }

    fn sweep(&mut self, t: u64) {
        self.open.retain(|_, r| r.expires_at > t);
    }

    fn remember_resolved(&mut self, id: String) {
        if self.resolved.len() >= RESOLVED_MEMORY {
            self.resolved.pop_front();
        }
        self.resolved.push_back(id);
    }

    /// Ids without a `.` predate the nonce and count as ours (§6.11).
    fn is_ours(&self, id: &str) -> bool {
        match id.split_once('.') {
            Some((nonce, _)) => nonce == self.nonce,
            None => true,
        }
    }
}

impl Machine {
    /// Mints a prompt id for `chat_id` (§6.11): `<nonce>.<8 hex>`, waiting
    /// [`PROMPT_TTL_MS`]; expired prompts are swept first.
    pub fn mint_prompt(&mut self, now: Now, chat_id: &str, kind: &str) -> String {
        let t = now.mono_ns;
        self.prompts.sweep(t);
        if self.prompts.open.len() >= MAX_OPEN_PROMPTS
            && let Some(oldest) = self
                .prompts
                .open
                .iter()
                .min_by_key(|(_, r)| r.expires_at)
                .map(|(id, _)| id.clone())
        {
            self.prompts.open.remove(&oldest);
        }
        let id = loop {
            let id = format!("{}.{:08x}", self.prompts.nonce, self.rng.next_u64() as u32);
            if !self.prompts.open.contains_key(&id) {
                break id;
            }
        };
        self.prompts.open.insert(
            id.clone(),
            Registered {
                kind: kind.to_owned(),
                chat_id: chat_id.to_owned(),
                expires_at: t.saturating_add(ms(PROMPT_TTL_MS)),
                choices: Vec::new(),
            },
        );
        id
    }

    /// The `prompt` lane: sends a minted prompt (§2.7, §6.11).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_prompt(&mut self, now: Now, request: u64, prompt: &PromptSend) {
        let t = now.mono_ns;
        let refuse = |m: &mut Machine, why: &str| {
            m.prompts.open.remove(&prompt.prompt_id);
            m.complete(request, Completion::Sent(SendResult::failure(why)));
        };
        match self.prompts.open.get(&prompt.prompt_id) {
            Some(r) if r.expires_at > t && r.chat_id == prompt.chat_id => {}
            _ => {
                return refuse(
                    self,
                    "relay prompt not sent: the prompt id was not minted for this chat or expired",
                );
            }
        }
        let bad_option = prompt.options.is_empty()
            || prompt.options.iter().any(|o| {
                !valid_prompt_part(&o.id)
                    || 4 + prompt.prompt_id.len() + o.id.len() > MAX_CALLBACK_BYTES
            });
        if bad_option {
            return refuse(
                self,
                "relay prompt not sent: option ids must match [A-Za-z0-9_.-]{1,32} and fit a 64-byte callback",
            );
        }
        if !self.supports_op(Some(&prompt.chat_id), "prompt") {
            return refuse(self, "relay prompt op unavailable");
        }
        if let Some(r) = self.prompts.open.get_mut(&prompt.prompt_id) {
            r.choices = prompt.choices.clone();
        }
        let chat_id = prompt.chat_id.as_str();
        let tag = self.routes.platform(chat_id).map(str::to_owned);
        self.check_route("prompt", chat_id, tag.is_some());
        let mut caller = self.caller_metadata(&prompt.metadata);
        let reply_to =
            self.slack_reply_anchor(chat_id, None, prompt.reply_to.as_deref(), &mut caller);
        let options: Vec<Value> = prompt
            .options
            .iter()
            .map(|o| {
                let mut option = Map::new();
                option.insert("id".into(), Value::from(o.id.as_str()));
                option.insert("label".into(), Value::from(o.label.as_str()));
                if let Some(style) = &o.style {
                    option.insert("style".into(), Value::from(style.as_str()));
                }
                Value::Object(option)
            })
            .collect();
        let mut action = Map::new();
        action.insert("op".into(), Value::from("prompt"));
        action.insert("chat_id".into(), Value::from(chat_id));
        action.insert("content".into(), Value::from(prompt.question.as_str()));
        action.insert("prompt_kind".into(), Value::from(prompt.style_kind()));
        action.insert("prompt_id".into(), Value::from(prompt.prompt_id.as_str()));
        action.insert("options".into(), Value::Array(options));
        action.insert("reply_to".into(), reply_to.map_or(Value::Null, Value::from));
        action.insert(
            "metadata".into(),
            Value::Object(self.routes.reattach(chat_id, &caller)),
        );
        if let Some(secs) = prompt.timeout_s {
            action.insert("timeout_s".into(), Value::from(secs));
        }
        let purpose = Purpose::Prompt(prompt.prompt_id.clone());
        self.issue(now, request, Action::Raw(action), tag, purpose);
    }

    /// A prompt frame's outcome: delivered, it stays registered; refused
    /// (a decline or an ordinary failure), the registration goes and the
    /// caller falls back (never after a decline). A lost ack keeps it: the
    /// buttons may be on screen.
    pub(super) fn prompt_outcome(&mut self, request: u64, prompt_id: &str, result: SendResult) {
        if !result.success && !result.ambiguous {
            self.prompts.open.remove(prompt_id);
        }
        self.complete(request, Completion::Sent(result));
    }

    /// Step 4 of the inbound pipeline (§6.2): an event carrying a prompt
    /// answer is consumed here and never delivered as chat. Returns false
    /// when the event is not a prompt answer.
    pub(super) fn consume_prompt_answer(&mut self, now: Now, event: &MessageEvent) -> bool {
        let Some(answer) = &event.prompt_response else {
            return false;
        };
        if answer.prompt_id.is_empty() || answer.option_id.is_empty() {
            return false;
        }
        let id = answer.prompt_id.clone();
        if !self.prompts.is_ours(&id) {
            // The connector fans a press out to every gateway of the tenant.
            self.log(
                Level::Debug,
                format!(
                    "relay prompt answer for another instance ignored: {}",
                    truncate(&id, 40)
                ),
            );
            return true;
        }
        if self.prompts.resolved.contains(&id) {
            self.log(
                Level::Debug,
                format!("relay prompt {} already answered", truncate(&id, 40)),
            );
            return true;
        }
        let registered = self
            .prompts
            .open
            .remove(&id)
            .filter(|r| r.expires_at > now.mono_ns);
        self.prompts.remember_resolved(id.clone());
        let Some(registered) = registered else {
            self.no_longer_waiting(now, event);
            return true;
        };
        let (choice, text_capture) = if registered.kind == "clarify" {
            clarify_choice(&answer.option_id, &registered.choices)
        } else {
            (None, false)
        };
        self.outputs
            .push_back(Output::PromptAnswer(Box::new(PromptAnswer {
                prompt_id: id,
                kind: registered.kind,
                option_id: answer.option_id.clone(),
                chat_id: registered.chat_id,
                user_id: event.source.user_id.clone().filter(|u| !u.is_empty()),
                prompt_message_id: answer.prompt_message_id.clone(),
                choice,
                text_capture,
                event_json: event.to_gateway_json(self.cfg.authorization_is_upstream),
            })));
        true
    }

    /// The short notice for a press on a forgotten prompt: a background,
    /// interim send with only the thread placement (§6.11).
    fn no_longer_waiting(&mut self, now: Now, event: &MessageEvent) {
        let chat_id = event.source.chat_id.clone();
        if chat_id.is_empty() || self.live_conn().is_none() {
            return;
        }
        let mut metadata = Map::new();
        if let Some(thread) = event.source.thread_id.as_deref().filter(|t| !t.is_empty()) {
            metadata.insert("thread_id".into(), Value::from(thread));
        }
        let metadata = self.routes.reattach(&chat_id, &metadata);
        let action = Action::Send {
            chat_id: chat_id.clone(),
            content: NO_LONGER_WAITING.to_owned(),
            reply_to: None,
            metadata,
        };
        let tag = self.routes.platform(&chat_id).map(str::to_owned);
        self.issue(now, 0, action, tag, Purpose::Background);
    }
}

/// A clarify answer (§6.11): `c<i>` in range is the choice text; `other`
/// or anything unmappable switches to a typed answer.
fn clarify_choice(option_id: &str, choices: &[String]) -> (Option<String>, bool) {
    let index = option_id
        .strip_prefix('c')
        .and_then(|i| i.parse::<usize>().ok());
    match index.and_then(|i| choices.get(i)) {
        Some(choice) => (Some(choice.clone()), false),
        None => (None, true),
    }
}

/// The `prompt` lane's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSend {
    /// An id from [`Machine::mint_prompt`] for this chat.
    pub prompt_id: String,
    /// Target chat.
    pub chat_id: String,
    /// The question (`content`).
    pub question: String,
    /// The buttons.
    pub options: Vec<PromptOption>,
    /// `clarify`: the full choice text of option `c<i>` at index i.
    pub choices: Vec<String>,
    /// Message replied to.
    pub reply_to: Option<String>,
    /// Metadata JSON object.
    pub metadata: String,
    /// Advisory timeout for the connector.
    pub timeout_s: Option<u32>,
    /// The wire's `prompt_kind` styling hint (`approval`, `clarify`,
    /// `choice`); the minted kind when empty.
    pub prompt_kind: String,
}

impl PromptSend {
    fn style_kind(&self) -> &str {
        if self.prompt_kind.is_empty() {
            "choice"
        } else {
            &self.prompt_kind
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_nonces() {
        assert!(valid_prompt_part("a1b2c3.0b7e44d2"));
        assert!(!valid_prompt_part("bad id"));
        assert!(!valid_prompt_part(&"x".repeat(33)));
        assert!(valid_nonce("3fa9c1"));
        assert!(!valid_nonce("3FA9C1") && !valid_nonce("3fa9c") && !valid_nonce("zzzzzz"));
    }

    #[test]
    fn clarify_choices() {
        let choices = vec!["alpha".to_owned(), "beta".to_owned()];
        assert_eq!(clarify_choice("c1", &choices), (Some("beta".into()), false));
        assert_eq!(clarify_choice("other", &choices), (None, true));
        assert_eq!(clarify_choice("c9", &choices), (None, true));
    }
}
