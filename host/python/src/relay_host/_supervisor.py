"""Supervision: what happens when the component traps.

A trap (panic, CPU budget, memory cap) poisons the instance: the runtime
drops it (sockets closed with 1011, pending requests lost), a ``guest_trap``
fatal goes to the gateway, and a fresh instance is created after a backoff
(100 ms doubling to 30 s by default; it calls ``start`` again and re-dials).
At most ``restart_budget`` restarts fit in ``restart_window``; one more ends
the adapter for good (``restart_budget_exhausted``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import RelayError, StartRefused
from .types import FatalError

if TYPE_CHECKING:
    from ._instance import GuestInstance
    from ._runtime import Runtime

log = logging.getLogger("relay_host")

#: Longest trap description put into a fatal event.
TRAP_MESSAGE_MAX_CHARS = 2048


def is_trap(error: BaseException) -> bool:
    """Raised by wasmtime for the guest (a trap), not a host bug."""
    from wasmtime import Trap, WasmtimeError

    return isinstance(error, (Trap, WasmtimeError))


def trap_message(inst: GuestInstance, error: BaseException, redact: Callable[[str], str]) -> str:
    """The root cause first (``wasm trap: interrupt``, ``wasm trap: wasm
    `unreachable` instruction executed``, ...), then the guest's last
    stderr lines (a panic message), then the rest (the wasm backtrace),
    which the length cap cuts first."""
    text = str(error).strip() or type(error).__name__
    head, marker, cause = text.rpartition("Caused by:")
    root = " ".join(cause.split()) if marker else text.splitlines()[0]
    details = " ".join((head if marker else text).split())
    message = root
    tail = [line for line in inst.stderr_tail() if line.strip()]
    if tail:
        message += "; guest stderr: " + " | ".join(tail)
    if details and details != root:
        message += "; " + details
    message = redact(message)  # before the cut: no partial secret survives it
    if len(message) > TRAP_MESSAGE_MAX_CHARS:
        message = message[:TRAP_MESSAGE_MAX_CHARS] + "…"
    return message


class Supervisor:
    """Restarts one adapter's component after traps, with backoff, within
    the restart budget. Owns the restart timer; the runtime owns the
    instance and reports traps and instance lifetimes here."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._limits = rt.config.limits
        self._backoff = self._limits.restart_initial
        self._restarts: deque[float] = deque()  # monotonic times, within the window
        self._timer: asyncio.TimerHandle | None = None

    def instance_ended(self, lived: float) -> None:
        """An instance that ran long enough without trapping resets the
        backoff."""
        if lived >= self._limits.restart_reset_after:
            self._backoff = self._limits.restart_initial

    def on_trap(self, inst: GuestInstance, error: BaseException) -> None:
        """An export call of ``inst`` raised: drop it, tell the gateway,
        restart it (or stop for good)."""
        rt = self._rt
        if not is_trap(error):
            # Redacted: the exception text may quote guest-provided values.
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            log.error(
                "[%s] host error during an export call; treating it as a trap: %s",
                rt.label,
                rt.redact(text),
            )
        message = trap_message(inst, error, rt.redact)
        rt.last_trap = message
        rt.detach(inst, "relay adapter restarting")
        if rt.shutdown_requested or rt.terminal:
            log.error(
                "[%s] relay component trapped after it stopped for good; not restarting: %s",
                rt.label,
                message,
            )
            self._emit_fatal("guest_trap", message, False)
            rt.finish()
        elif self._allowed():
            log.error("[%s] relay component trapped; restarting it: %s", rt.label, message)
            self._emit_fatal("guest_trap", message, True)
            self._schedule()
        else:
            log.error("[%s] relay component trapped; restart budget spent", rt.label)
            self._go_down(message)

    def cancel(self) -> None:
        """The adapter stops: no restart is pending any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _allowed(self) -> bool:
        """Counts one restart against the budget; False when it is spent."""
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] >= self._limits.restart_window:
            self._restarts.popleft()
        if len(self._restarts) >= self._limits.restart_budget:
            return False
        self._restarts.append(now)
        return True

    def _schedule(self) -> None:
        loop = self._rt.loop
        assert loop is not None
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self._limits.restart_max)
        self._timer = loop.call_later(delay, self._restart)

    def _restart(self) -> None:
        self._timer = None
        rt = self._rt
        if rt.stopped or rt.down is not None:
            return
        try:
            rt.start_instance()
        except StartRefused as e:
            log.error("[%s] relay component refused its configuration on restart", rt.label)
            self._emit_fatal("start_failed", f"start refused: {e}", False)
            rt.finish()
            return
        except RelayError as e:
            log.error("[%s] relay component restart failed: %s", rt.label, e)
            if self._allowed():
                self._emit_fatal("restart_failed", str(e), True)
                self._schedule()
            else:
                self._go_down(str(e))
            return
        rt.stats.restarts += 1
        log.info("[%s] relay component re-instantiated (instance %d)", rt.label, rt.instance_id)

    def _go_down(self, last_failure: str) -> None:
        limits = self._limits
        reason = (
            f"restart budget exhausted ({limits.restart_budget} restarts within "
            f"{limits.restart_window:g} s); the adapter stays down. Last failure: {last_failure}"
        )
        log.error("[%s] relay adapter down for good: %s", self._rt.label, reason)
        self._rt.down = reason
        self._emit_fatal("restart_budget_exhausted", reason, False)
        self._rt.finish()

    def _emit_fatal(self, code: str, message: str, retryable: bool) -> None:
        fatal = FatalError(code=code, message=message, retryable=retryable)
        self._rt.dispatch("fatal", (fatal,))
