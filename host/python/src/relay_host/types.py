"""Plain value types of the gateway API (no wasmtime objects)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any


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
