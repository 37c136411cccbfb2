"""Commands handed to the component and their completions.

Every command gets one future, resolved exactly once: by the component's
``complete`` import, or by the host when the command cannot get one (never
sent: a definite failure; its instance died or the adapter stopped with it
pending: "lost", ambiguous for sends, since its frame may have gone out).
At most ``max_pending`` requests hold a slot; more wait for one (FIFO).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from wasmtime.component import Variant

from .errors import AdapterStopped, AdapterUnavailable
from .types import ChatInfo, SendResult

log = logging.getLogger("relay_host")

#: How a request without a completion resolves: a failed ``SendResult``
#: ("sent"), ``False`` ("flag"), or the error raised to the caller ("value").
Kind = Literal["sent", "flag", "value"]

#: Pins a chat's route while its request waits for a slot; returns the unpin
#: callable, or None when nothing was pinned.
RoutePin = Callable[[], Callable[[], None] | None]


@dataclass
class Pending:
    """A request sent to the component, awaiting its ``complete``."""

    future: asyncio.Future[Any]
    kind: Kind
    slot: bool = False
    is_shutdown: bool = False


def send_result(record: Any) -> SendResult:
    """WIT ``send-result`` record to a :class:`SendResult`."""
    g = getattr  # kebab-case WIT field names
    return SendResult(
        success=bool(g(record, "success")),
        message_id=g(record, "message-id"),
        error=g(record, "error"),
        code=g(record, "code"),
        ambiguous=bool(g(record, "ambiguous")),
        declined=bool(g(record, "declined")),
        thread_id=g(record, "thread-id"),
        auto_thread_name=g(record, "auto-thread-name"),
        raw=g(record, "raw"),
    )


def decode_completion(completion: Any) -> Any:
    """WIT ``completion`` (a tagged variant: wasmtime-py gives a ``Variant``
    because two cases carry records) to a Python value, by its case tag."""
    if not isinstance(completion, Variant):
        raise TypeError(f"completion is not a variant: {type(completion).__name__}")
    tag, payload = completion.tag, completion.payload
    if tag == "sent":
        return send_result(payload)
    if tag == "chat-info":
        if payload is None:
            raise ValueError("chat-info completion without a payload")
        return ChatInfo(name=payload.name, type=getattr(payload, "chat-type"))
    if tag == "flag":
        return bool(payload)
    if tag == "done":
        return None
    raise ValueError(f"unknown completion case {tag!r}")


def fail(pending: Pending, *, lost: bool, error: AdapterUnavailable | None = None) -> None:
    """Resolves a request that got no completion: a SendResult for sends
    (ambiguous when it was lost with its instance), False for
    ``go_dormant``, the error for the others."""
    if pending.future.done():
        return
    error = error if error is not None else AdapterStopped()
    if pending.kind == "sent":
        pending.future.set_result(SendResult.failed(str(error), ambiguous=lost))
    elif pending.kind == "flag":
        pending.future.set_result(False)
    else:
        pending.future.set_exception(error)


class Requests:
    """The request table of one adapter and its request slots. Request ids
    are never reused, also across instances, so a late ``complete`` can
    never resolve another command."""

    def __init__(self, max_pending: int, label: str) -> None:
        self.label = label
        self.slots = asyncio.Semaphore(max(1, max_pending))
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._pending)

    def open(
        self, future: asyncio.Future[Any], kind: Kind, *, slot: bool, is_shutdown: bool = False
    ) -> int:
        """Registers a command about to be handed to the component."""
        request = next(self._ids)
        self._pending[request] = Pending(future, kind, slot=slot, is_shutdown=is_shutdown)
        return request

    def refuse(
        self, future: asyncio.Future[Any], kind: Kind, *, slot: bool, error: AdapterUnavailable
    ) -> None:
        """A command that never reached an instance: definitely not performed."""
        if slot:
            self.slots.release()
        fail(Pending(future, kind), lost=False, error=error)

    def complete(self, request: int, completion: Any) -> bool:
        """The component's ``complete``; True when it completed a shutdown
        (the adapter then stops after the current export call)."""
        pending = self._pending.pop(request, None)
        if pending is None:
            log.warning("[%s] component completed an unknown request %d", self.label, request)
            return False
        if pending.slot:
            self.slots.release()
        try:
            value = decode_completion(completion)
        except (TypeError, ValueError, AttributeError):
            log.exception("[%s] undecodable completion of request %d", self.label, request)
            fail(pending, lost=True)
            return pending.is_shutdown
        if not pending.future.done():  # the caller may have been cancelled
            pending.future.set_result(value)
        return pending.is_shutdown

    def fail_all(self, *, lost: bool) -> None:
        """Resolves every pending request (its instance is gone)."""
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.slot:
                self.slots.release()
            fail(p, lost=lost)

    async def admit(self, timeout: float, pin: RoutePin | None = None) -> bool:
        """Takes one slot (FIFO); False after ``timeout``. While it waits,
        ``pin`` keeps the chat's route so the reply keeps its scope."""
        if not self.slots.locked():
            await self.slots.acquire()
            return True
        unpin = pin() if pin is not None else None
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if unpin is not None:
                unpin()
