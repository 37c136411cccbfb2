"""An inbound message handed to the gateway, answered exactly once with
:meth:`RelayMessage.accept` or :meth:`RelayMessage.reject`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: Called with ``True`` (accept) or ``False`` (reject); ``later`` asks for the
#: answer to be applied from the event loop (used by ``__del__``).
Answer = Callable[[bool, bool], None]


def _field(record: Any, name: str) -> Any:
    # wasmtime-py records carry the WIT (kebab-case) field names.
    return getattr(record, name)


class RelayMessage:
    """One inbound message (WIT ``message-event``) with its key fields typed.

    Answer it exactly once: :meth:`accept` once it is safe with you (queued,
    persisted or handled; the connector will not send it again), or
    :meth:`reject`. A message garbage-collected unanswered counts as a
    reject. Later answers are ignored, and so are answers for a message of a
    component instance that has since been restarted (its buffered message is
    replayed instead).
    """

    __slots__ = (
        "__weakref__",
        "_answer",
        "_answered",
        "buffer_id",
        "chat_id",
        "chat_type",
        "delivery",
        "json",
        "message_type",
        "platform",
        "scope_id",
        "text",
        "thread_id",
        "user_id",
    )

    delivery: int
    buffer_id: str | None
    platform: str
    chat_id: str
    chat_type: str
    user_id: str | None
    scope_id: str | None
    thread_id: str | None
    message_type: str
    text: str
    #: The whole normalised event as JSON text, with wire names.
    json: str

    def __init__(self, record: Any, answer: Answer) -> None:
        self.delivery = int(_field(record, "delivery"))
        self.buffer_id = _field(record, "buffer-id")
        self.platform = _field(record, "platform")
        self.chat_id = _field(record, "chat-id")
        self.chat_type = _field(record, "chat-type")
        self.user_id = _field(record, "user-id")
        self.scope_id = _field(record, "scope-id")
        self.thread_id = _field(record, "thread-id")
        self.message_type = _field(record, "message-type")
        self.text = _field(record, "text")
        self.json = _field(record, "json")
        self._answer: Answer | None = answer
        self._answered = False

    @property
    def event(self) -> dict[str, Any]:
        """The normalised event (``json`` parsed)."""
        value = json.loads(self.json)
        return value if isinstance(value, dict) else {}

    @property
    def message_id(self) -> str | None:
        """The event's top-level ``message_id``, if any."""
        value = self.event.get("message_id")
        return None if value is None else str(value)

    @property
    def answered(self) -> bool:
        return self._answered

    def accept(self) -> None:
        """The gateway took the message: it will not be replayed to it."""
        self._settle(True)

    def reject(self) -> None:
        """The gateway did not take it: a buffered message may be replayed
        on a later connection; a live one is gone."""
        self._settle(False)

    def _settle(self, accept: bool, later: bool = False) -> None:
        if self._answered:
            return
        self._answered = True
        answer, self._answer = self._answer, None
        if answer is not None:
            answer(accept, later)

    def __del__(self) -> None:
        # Never call into the component from a finalizer (it may run inside
        # an import): the reject is queued on the event loop.
        try:
            if not self._answered:
                self._settle(False, later=True)
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"RelayMessage(delivery={self.delivery}, platform={self.platform!r}, "
            f"chat_id={self.chat_id!r}, buffer_id={self.buffer_id!r}, text={self.text[:40]!r})"
        )
