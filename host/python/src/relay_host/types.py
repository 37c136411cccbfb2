"""Plain value types of the gateway API (no wasmtime objects)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args


class State(str, enum.Enum):
    """Connection state as a gateway sees it (WIT ``state``)."""

    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    READY = "ready"
    RECONNECTING = "reconnecting"
    IDLE = "idle"
    DORMANT = "dormant"
    DISABLED = "disabled"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


#: How a turn on an event ended, for the processing reactions
#: (:meth:`RelayAdapter.processing_complete`; WIT ``processing-outcome``).
ProcessingOutcome = Literal["success", "failure", "cancelled"]

PROCESSING_OUTCOMES: frozenset[str] = frozenset(get_args(ProcessingOutcome))


@dataclass(frozen=True)
class SendResult:
    """Outcome of an outbound operation, real or synthesized."""

    success: bool
    message_id: str | None = None
    error: str | None = None
    code: str | None = None
    #: The connector may have applied the frame (timeout, lost ack, trap).
    ambiguous: bool = False
    #: A definite egress refusal: never retry, never fall back to another op.
    declined: bool = False
    thread_id: str | None = None
    auto_thread_name: str | None = None
    #: The result object as JSON text.
    raw: str = "{}"

    @classmethod
    def failed(cls, error: str, *, ambiguous: bool = False) -> SendResult:
        """A synthesized failure (no connector result)."""
        return cls(
            success=False,
            error=error,
            ambiguous=ambiguous,
            raw=json.dumps({"success": False, "error": error}),
        )

    def raw_value(self) -> Any:
        """``raw`` parsed as JSON."""
        return json.loads(self.raw)

    @property
    def created_thread_id(self) -> str | None:
        """The thread a successful ``create_thread`` made: ``thread_id``,
        else ``message_id`` (connectors name the new thread with either).
        None for a failure or when neither is set. Meant for
        ``create_thread`` results: for a send, ``message_id`` is the message."""
        if not self.success:
            return None
        return self.thread_id or self.message_id or None


@dataclass(frozen=True)
class PromptOption:
    """One button of a prompt (:meth:`RelayAdapter.prompt`; WIT ``prompt-option``).

    ``id`` must match ``[A-Za-z0-9_.-]{1,32}`` (the component refuses the
    prompt otherwise); ``style`` is ``primary``, ``success``, ``danger`` or
    ``secondary``, or None for the platform's default."""

    id: str
    label: str
    style: str | None = None


@dataclass(frozen=True)
class PromptAnswer:
    """The answer to a prompt this adapter minted (WIT ``prompt-answer``,
    spec §6.11), handed to the prompt-answer handler. The answering event
    is consumed: it never arrives as a message."""

    prompt_id: str
    #: The kind given to :meth:`RelayAdapter.mint_prompt`.
    kind: str
    #: The option pressed.
    option_id: str
    #: The chat the prompt was sent to.
    chat_id: str
    #: Who pressed it.
    user_id: str | None
    #: The message holding the prompt, when the platform said.
    prompt_message_id: str | None
    #: Kind ``clarify``: the text of choice ``c<i>`` (the prompt's ``choices[i]``).
    choice: str | None
    #: Kind ``clarify``: ``other``, or an option mapping to no choice: take a
    #: typed answer instead.
    text_capture: bool
    #: The answering event as JSON text (wire names).
    event_json: str

    @property
    def event(self) -> dict[str, Any]:
        """The answering event (``event_json`` parsed)."""
        value = json.loads(self.event_json)
        return value if isinstance(value, dict) else {}


#: The fields of :class:`ChatLabels` in order (also the keys of its
#: :meth:`~ChatLabels.as_dict`, the Rust host's ``ChatLabels`` serde names).
CHAT_LABEL_FIELDS = (
    "scope_id",
    "chat_id",
    "chat_name",
    "chat_topic",
    "parent_chat_id",
    "user_id",
    "user_name",
)


@dataclass(frozen=True)
class ChatLabels:
    """What the Discord text lane observed about a chat (WIT ``chat-labels``,
    spec §7.7): its name, topic and parent, and an author's display name in
    it. Interactions (slash commands, buttons, modals) present these labels
    instead of their payload's, so a session's labels do not change between
    a slash command and a text message. ``None`` values are observations
    too (a removed topic is not revived).

    The adapter reports each change to the labels handler
    (:meth:`RelayAdapter.set_labels_handler`); store the latest per
    :attr:`key` and give them back with :meth:`RelayAdapter.prime_labels`
    after a restart. :meth:`as_dict` / :meth:`from_dict` convert to and
    from plain JSON objects for the store."""

    #: The guild, ``""`` for none.
    scope_id: str
    #: The chat.
    chat_id: str
    #: The chat's name.
    chat_name: str | None = None
    #: The chat's topic.
    chat_topic: str | None = None
    #: The parent channel when the chat is a thread.
    parent_chat_id: str | None = None
    #: The author whose display name this is.
    user_id: str | None = None
    #: The author's display name in the chat.
    user_name: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """``(scope_id, chat_id, user_id)``: keep the latest record per key."""
        return (self.scope_id, self.chat_id, self.user_id)

    def as_dict(self) -> dict[str, str | None]:
        """The record as a JSON object (the keys of the Rust host's
        ``ChatLabels`` and of the ``relay-host`` CLI's ``labels`` line)."""
        return {name: getattr(self, name) for name in CHAT_LABEL_FIELDS}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ChatLabels:
        """A record from :meth:`as_dict`'s shape. A missing (or null)
        ``scope_id`` or ``chat_id`` is ``""``, any other missing key None;
        unknown keys are ignored. Raises TypeError for a value of another
        type."""
        if not isinstance(value, dict):
            raise TypeError(f"chat labels must be a dict, not {type(value).__name__}")
        fields: dict[str, str | None] = {}
        for name in CHAT_LABEL_FIELDS:
            item = value.get(name)
            required = name in ("scope_id", "chat_id")
            if item is None:
                fields[name] = "" if required else None
            elif isinstance(item, str):
                fields[name] = item
            else:
                kind = "a str" if required else "a str or None"
                raise TypeError(f"chat labels {name} must be {kind}, not {type(item).__name__}")
        return cls(
            scope_id=fields["scope_id"] or "",
            chat_id=fields["chat_id"] or "",
            chat_name=fields["chat_name"],
            chat_topic=fields["chat_topic"],
            parent_chat_id=fields["parent_chat_id"],
            user_id=fields["user_id"],
            user_name=fields["user_name"],
        )


@dataclass(frozen=True)
class ChatInfo:
    """Answer to ``get_chat_info``."""

    name: str
    type: str

    def as_dict(self) -> dict[str, str]:
        """``{"name": ..., "type": ...}`` as hermes-agent's adapter returns it."""
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True)
class FatalError:
    """A fatal condition of the adapter (from the component or the host)."""

    code: str
    message: str
    retryable: bool


@dataclass(frozen=True)
class Health:
    """A snapshot the host answers itself (also while restarting or down)."""

    state: State | None
    restarts: int
    down: str | None
    pending: int
    guest_call_max_ms: float
    memory_limit_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)
