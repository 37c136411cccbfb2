"""Events to the gateway: its handlers and how they are run.

Events are produced inside imports (``deliver``, ``interrupt``,
``state-changed``, ``fatal``, ``prompt-answered``, ``labels-observed``) and
by the host; gateway code must never run inside an export call (it would
block the component, or call back into it), so every event is queued with
``call_soon`` and its handler runs after the call returns. Coroutine
handlers run as tasks, so a handler may await a request without holding up
the socket.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .message import RelayMessage
from .types import ChatLabels, FatalError, PromptAnswer, State

log = logging.getLogger("relay_host")

MessageHandler = Callable[[RelayMessage], Awaitable[None] | None]
InterruptHandler = Callable[[str, str], Awaitable[None] | None]
StateHandler = Callable[[State, str], Awaitable[None] | None]
FatalHandler = Callable[[FatalError], Awaitable[None] | None]
PromptAnswerHandler = Callable[[PromptAnswer], Awaitable[None] | None]
LabelsHandler = Callable[[ChatLabels], Awaitable[None] | None]

#: Event kinds: "message" (RelayMessage), "interrupt" (session_key,
#: chat_id), "state" (State, detail), "fatal" (FatalError),
#: "prompt_answer" (PromptAnswer), "labels" (ChatLabels).
Dispatch = Callable[[str, tuple[Any, ...]], None]


class GatewayEvents:
    """The gateway's handlers for one adapter and the tasks running them."""

    def __init__(
        self,
        label: str,
        *,
        message: MessageHandler | None = None,
        interrupt: InterruptHandler | None = None,
        state: StateHandler | None = None,
        fatal: FatalHandler | None = None,
        prompt_answer: PromptAnswerHandler | None = None,
        labels: LabelsHandler | None = None,
    ) -> None:
        self.label = label
        self.message = message
        self.interrupt = interrupt
        self.state = state
        self.fatal = fatal
        self.prompt_answer = prompt_answer
        self.labels = labels
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def dispatch(self, kind: str, args: tuple[Any, ...]) -> None:
        """Queues one event (called from imports: runs nothing now)."""
        if self.loop is None:
            return
        self.loop.call_soon(self._run, kind, args)

    async def settle(self, timeout: float) -> None:
        """Waits (bounded) for running coroutine handlers."""
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def _run(self, kind: str, args: tuple[Any, ...]) -> None:
        handler: Callable[..., Any] | None
        if kind == "message":
            handler = self.message
            if handler is None:
                args[0].reject()  # nobody took it
                return
        elif kind == "interrupt":
            handler = self.interrupt
        elif kind == "state":
            handler = self.state
        elif kind == "prompt_answer":
            handler = self.prompt_answer
            if handler is None:
                # The answer is consumed either way (never a message).
                log.warning(
                    "[%s] prompt %s answered but no prompt-answer handler is set",
                    self.label,
                    args[0].prompt_id,
                )
                return
        elif kind == "labels":
            handler = self.labels
            if handler is None:
                # Nothing stores them: an interaction after a restart
                # carries its payload's labels until the text lane speaks.
                log.debug("[%s] chat labels observed but no labels handler is set", self.label)
                return
        else:
            handler = self.fatal
        if handler is None:
            return
        try:
            result = handler(*args)
        except Exception:
            log.exception("[%s] %s handler failed", self.label, kind)
            if kind == "message":
                args[0].reject()
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._done(t, kind, args))

    def _done(self, task: asyncio.Task[Any], kind: str, args: tuple[Any, ...]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("[%s] %s handler failed", self.label, kind, exc_info=error)
            if kind == "message":
                args[0].reject()  # a no-op if the handler answered it already
