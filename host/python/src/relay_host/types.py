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
