"""The adapter: one sandboxed relay component driven from asyncio.

Everything runs on the event loop thread. An export call is one synchronous
wasmtime call, so two can never overlap; the imports only record, queue or
forward (a deque append, a task spawn, a future resolved, a callback queued
with ``call_soon``) and never call an export. What needs the component again
(a refused dial) is queued and fed after the current call returns.

A trap (panic, CPU budget, memory cap) poisons the instance: its sockets are
closed with 1011, its pending requests resolve as ``relay adapter stopped``
(ambiguous), a ``guest_trap`` fatal goes to the gateway, and a fresh instance
is created after a backoff (then it re-dials), within a restart budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wasmtime.component import Variant

from ._instance import GuestInstance
from ._socket import Connection, DialPolicy, SocketSettings
from .config import AdapterConfig
from .errors import (
    AdapterDown,
    AdapterRestarting,
    AdapterStopped,
    AdapterUnavailable,
    GuestTrap,
    IncompatibleVersion,
    PluginError,
    RelayError,
    StartRefused,
)
from .message import RelayMessage
from .plugin import HOST_API_VERSION, Plugin, compatible
from .types import ChatInfo, FatalError, Health, SendResult, State

log = logging.getLogger("relay_host")

#: Longest trap description put into a fatal event.
TRAP_MESSAGE_MAX_CHARS = 2048
#: Error text of requests refused while shutting down or after.
TRANSPORT_CLOSED = "relay transport closed"

MessageHandler = Callable[[RelayMessage], Awaitable[None] | None]
InterruptHandler = Callable[[str, str], Awaitable[None] | None]
StateHandler = Callable[[State, str], Awaitable[None] | None]
FatalHandler = Callable[[FatalError], Awaitable[None] | None]

_NEXT_ADAPTER = itertools.count(1)
_NEXT_TOKEN = itertools.count(1)


@dataclass
class _Pending:
    """A request sent to the component, awaiting its ``complete``."""

    future: asyncio.Future[Any]
    #: How a lost request resolves: "sent" (a SendResult), "flag", "value".
    kind: str
    slot: bool = False
    is_shutdown: bool = False


@dataclass
class _Waiter:
    states: frozenset[State]
    future: asyncio.Future[State]


@dataclass
class _Stats:
    restarts: int = 0
    call_max_seconds: float = 0.0


def _send_result(record: Any) -> SendResult:
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


def _decode_completion(completion: Any) -> Any:
    """WIT ``completion`` (a tagged variant: wasmtime-py gives a ``Variant``
    because two cases carry records) to a Python value, by its case tag."""
    if not isinstance(completion, Variant):
        raise TypeError(f"completion is not a variant: {type(completion).__name__}")
    tag, payload = completion.tag, completion.payload
    if tag == "sent":
        return _send_result(payload)
    if tag == "chat-info":
        if payload is None:
            raise ValueError("chat-info completion without a payload")
        return ChatInfo(name=payload.name, type=getattr(payload, "chat-type"))
    if tag == "flag":
        return bool(payload)
    if tag == "done":
        return None
    raise ValueError(f"unknown completion case {tag!r}")


class _Runtime:
    """The engine room of one adapter: instance, imports, sockets, deadline,
    requests, supervision. Used through :class:`RelayAdapter`."""

    def __init__(
        self,
        plugin: Plugin,
        config: AdapterConfig,
        label: str,
        dispatch: Callable[[str, tuple[Any, ...]], None],
    ) -> None:
        self.plugin = plugin
        self.config = config
        self.label = label
        self._dispatch = dispatch
        limits = config.limits
        self._settings = SocketSettings(
            connect_timeout=limits.connect_timeout,
            ping_interval=limits.ping_interval,
            ping_timeout=limits.ping_timeout,
            max_message_bytes=config.max_line_bytes + 1,
        )
        self._policy = DialPolicy(config.connector_url)
        secret = config.secret.expose() if config.secret is not None else ""
        self._secret = secret if secret.strip() else ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.instance: GuestInstance | None = None
        self.instance_id = 0
        self._started_at = 0.0
        self._conns: dict[int, Connection] = {}
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, _Pending] = {}
        self._next_request = itertools.count(1)
        self._feeds: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._verdicts: list[tuple[int, bool]] = []
        self._verdict_flush = False
        self._draining = False
        self._in_call = False
        self._deadline: tuple[int | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._restart_timer: asyncio.TimerHandle | None = None
        self._restart_log: deque[float] = deque()
        self._backoff = limits.restart_initial
        self._stop_requested = False
        self.shutdown_requested = False
        self.terminal = False
        self.stopped = False
        self.down: str | None = None
        self.state: State | None = None
        self.detail = ""
        self._waiters: list[_Waiter] = []
        self.stats = _Stats()
        self.slots = asyncio.Semaphore(max(1, config.max_pending))
        self.stopped_event = asyncio.Event()
        self.last_trap = ""

    # -- secrets ----------------------------------------------------------

    def redact(self, text: str) -> str:
        if self._secret and self._secret in text:
            return text.replace(self._secret, "<redacted>")
        return text

    # -- the instance -------------------------------------------------------

    def start_instance(self) -> None:
        """Creates an instance, checks ``api-version`` and calls ``start``.
        Raises :class:`PluginError`, :class:`IncompatibleVersion`,
        :class:`StartRefused` or :class:`GuestTrap`; on any of them no
        instance is left behind."""
        self.instance_id += 1
        try:
            inst = GuestInstance(
                self.plugin,
                self.config.limits,
                self,
                label=self.label,
                redact=self.redact,
            )
        except Exception as e:
            raise PluginError(f"instantiation failed: {self.redact(str(e))}") from None
        try:
            found = inst.call("api-version")
        except Exception as e:
            raise PluginError(f"api-version trapped: {self.redact(str(e))}") from None
        if not compatible(found, HOST_API_VERSION):
            raise IncompatibleVersion(found, HOST_API_VERSION)
        self.instance = inst
        self._started_at = time.monotonic()
        self._in_call = True
        try:
            refused = inst.call("start", self.config.to_wit())
        except Exception as e:
            self._in_call = False
            message = self._trap_message(inst, e)
            self._drop_instance(inst, "relay adapter restarting")
            raise GuestTrap(message) from None
        finally:
            self._in_call = False
        # `result<_, string>`: ok lifts to None, err to the reason string.
        if refused is not None:
            self._drop_instance(inst, "relay adapter stopped")
            raise StartRefused(f"configuration rejected: {self.redact(str(refused))}")
        self._after_call()

    def call(self, name: str, *args: Any) -> tuple[bool, Any]:
        """One export call, then its effects. Returns (ok, value); ok is
        false when there was no instance or it trapped (already handled)."""
        inst = self.instance
        if inst is None:
            return False, None
        if self._in_call:
            # An import (or a finalizer inside one) tried to call back in.
            raise RuntimeError("re-entrant call into the relay component")
        self._in_call = True
        try:
            value = inst.call(name, *args)
        except Exception as e:
            self._in_call = False
            self._on_trap(inst, e)
            return False, None
        finally:
            self._in_call = False
        self._after_call()
        return True, value

    def query(self, name: str, *args: Any) -> Any:
        """A query export; raises when unavailable or on a trap."""
        if self._verdicts and not self._in_call:
            self.flush_verdicts()  # answers given before the query count
        if self.instance is None:
            raise self.unavailable()
        ok, value = self.call(name, *args)
        if not ok:
            raise GuestTrap(self.last_trap)
        return value

    def unavailable(self) -> AdapterUnavailable:
        if self.down is not None:
            return AdapterDown(self.down)
        if self.stopped or self.instance_id == 0:
            return AdapterStopped()
        return AdapterRestarting()

    def _after_call(self) -> None:
        inst = self.instance
        if inst is None:
            return
        if self._deadline is not None:
            (at,) = self._deadline
            self._deadline = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if at is not None and self.loop is not None:
                # +1 ms: the guest's clock origin is within a fraction of a
                # millisecond of ours; never fire before the instant is due.
                when = inst.clock_origin + at / 1e9 + 0.001
                self._timer = self.loop.call_at(when, self._on_deadline)
        if self._stop_requested:
            self.finish()
            return
        if self._draining:
            return
        self._draining = True
        try:
            while self._feeds and self.instance is not None:
                name, args = self._feeds.popleft()
                self.call(name, *args)
        finally:
            self._draining = False

    def _on_deadline(self) -> None:
        self._timer = None
        self.call("on-deadline")

    # -- imports (hermes:relay/host) ------------------------------------------

    def dial(self, conn: int, url: str, headers: list[tuple[str, str]]) -> None:
        if not self._policy.allows(url):
            shown = url.split("?", 1)[0]
            log.warning(
                "[%s] dial target refused: %s is not the configured connector", self.label, shown
            )
            self._feeds.append(("on-dial-failed", (conn, 0, "dial target refused")))
            return
        if conn in self._conns:
            log.warning("[%s] dial refused: conn id %d still in use", self.label, conn)
            self._feeds.append(("on-dial-failed", (conn, 0, "conn id in use")))
            return
        token = next(_NEXT_TOKEN)

        def report(kind: str, args: tuple[Any, ...]) -> None:
            self._on_io(conn, token, kind, args)

        c = Connection(conn, token, url, list(headers), self._settings, report)
        self._conns[conn] = c
        self._conn_tasks.add(c.task)
        c.task.add_done_callback(self._conn_tasks.discard)
        log.debug("[%s] dialing conn %d", self.label, conn)

    def send_text(self, conn: int, text: str) -> str | None:
        c = self._conns.get(conn)
        if c is None:
            return "no such connection"
        if not c.send(text):
            return "connection closed"
        return None

    def close(self, conn: int, code: int, reason: str) -> None:
        c = self._conns.pop(conn, None)
        if c is not None:
            c.close(code, reason)

    def set_deadline(self, at: int | None) -> None:
        self._deadline = (at,)

    def deliver(self, event: Any) -> None:
        instance_id = self.instance_id
        delivery = int(event.delivery)

        def answer(accept: bool, later: bool) -> None:
            # Captures the delivery id, not the message (no reference cycle:
            # an unanswered message is collected, and rejected, at once).
            self.verdict(instance_id, delivery, accept, later)

        self._dispatch("message", (RelayMessage(event, answer),))

    def interrupt(self, session_key: str, chat_id: str) -> None:
        self._dispatch("interrupt", (session_key, chat_id))

    def complete(self, request: int, completion: Any) -> None:
        pending = self._pending.pop(request, None)
        if pending is None:
            log.warning("[%s] component completed an unknown request %d", self.label, request)
            return
        if pending.slot:
            self.slots.release()
        if pending.is_shutdown:
            self._stop_requested = True
        try:
            value = _decode_completion(completion)
        except (TypeError, ValueError, AttributeError):
            log.exception("[%s] undecodable completion of request %d", self.label, request)
            _fail(pending, lost=True)
            return
        if not pending.future.done():
            pending.future.set_result(value)

    def state_changed(self, state: str, detail: str) -> None:
        self._set_state(State(state), self.redact(detail))

    def fatal(self, error: Any) -> None:
        fatal = FatalError(
            code=error.code, message=self.redact(error.message), retryable=bool(error.retryable)
        )
        log.error(
            "[%s] relay adapter fatal %s (retryable %s): %s",
            self.label,
            fatal.code,
            fatal.retryable,
            fatal.message,
        )
        if not fatal.retryable:
            self.terminal = True
        self._dispatch("fatal", (fatal,))

    # -- socket events --------------------------------------------------------

    def _on_io(self, conn: int, token: int, kind: str, args: tuple[Any, ...]) -> None:
        c = self._conns.get(conn)
        if c is None or c.token != token:
            return  # stale: closed by the component, or of an earlier instance
        if kind == "text":
            self.call("on-text", conn, args[0])
        elif kind == "binary":
            data: bytes = args[0]
            try:
                # The core reads text and binary messages as one byte
                # stream: valid UTF-8 goes the cheap way.
                self.call("on-text", conn, data.decode("utf-8"))
            except UnicodeDecodeError:
                self.call("on-binary", conn, data)
        elif kind == "opened":
            self.call("on-open", conn)
        elif kind == "dial_failed":
            del self._conns[conn]
            self.call("on-dial-failed", conn, int(args[0]), str(args[1]))
        elif kind == "closed":
            del self._conns[conn]
            self.call("on-closed", conn, int(args[0]), str(args[1]))

    # -- gateway side -------------------------------------------------------------

    def verdict(self, instance_id: int, delivery: int, accept: bool, later: bool) -> None:
        """Queues a delivery answer. Answers queued together go to the
        component in one ``answer-deliveries`` call; they are always fed
        before the next command (see :meth:`issue`), so an accept is never
        overtaken by the reply the gateway sent after it."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if later:
            # From a finalizer, possibly on another thread.
            loop.call_soon_threadsafe(self.verdict, instance_id, delivery, accept, False)
            return
        if instance_id != self.instance_id or self.instance is None:
            return  # the instance that delivered it is gone: it will be replayed
        self._verdicts.append((delivery, accept))
        if not self._verdict_flush:
            self._verdict_flush = True
            loop.call_soon(self.flush_verdicts)

    def flush_verdicts(self) -> None:
        """Feeds the queued delivery answers (one export call)."""
        self._verdict_flush = False
        if not self._verdicts or self.instance is None:
            self._verdicts.clear()
            return
        if self._in_call:
            self._verdict_flush = True
            assert self.loop is not None
            self.loop.call_soon(self.flush_verdicts)
            return
        answers, self._verdicts = self._verdicts, []
        if len(answers) == 1:
            delivery, accept = answers[0]
            self.call("accept-delivery" if accept else "reject-delivery", delivery)
        else:
            self.call("answer-deliveries", answers)

    def _set_state(self, state: State, detail: str) -> None:
        self.state = state
        self.detail = detail
        log.info("[%s] relay state %s%s", self.label, state.value, f" ({detail})" if detail else "")
        if self._waiters:
            for waiter in list(self._waiters):
                if state in waiter.states:
                    self._waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_result(state)
        self._dispatch("state", (state, detail))

    async def wait_for_state(self, states: frozenset[State], timeout: float | None) -> State:
        if self.state in states:
            assert self.state is not None
            return self.state
        loop = asyncio.get_running_loop()
        waiter = _Waiter(states, loop.create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def issue(
        self,
        export: str,
        args: tuple[Any, ...],
        kind: str,
        *,
        slot: bool,
        is_shutdown: bool = False,
    ) -> asyncio.Future[Any]:
        """Sends one command; the future resolves exactly once."""
        assert self.loop is not None
        if self._verdicts and not self._in_call:
            self.flush_verdicts()
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.instance is None:
            # Gone meanwhile (the verdicts trapped it): nothing was sent.
            if slot:
                self.slots.release()
            _fail(_Pending(future, kind), lost=False, error=self.unavailable())
            return future
        request = next(self._next_request)
        self._pending[request] = _Pending(future, kind, slot=slot, is_shutdown=is_shutdown)
        self.call(export, request, *args)
        return future

    # -- supervision --------------------------------------------------------------

    def _trap_message(self, inst: GuestInstance, error: BaseException) -> str:
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
        message = self.redact(message)
        if len(message) > TRAP_MESSAGE_MAX_CHARS:
            message = message[:TRAP_MESSAGE_MAX_CHARS] + "…"
        return message

    def _on_trap(self, inst: GuestInstance, error: BaseException) -> None:
        if not _is_trap(error):
            log.error(
                "[%s] host error during an export call; treating it as a trap",
                self.label,
                exc_info=error,
            )
        message = self._trap_message(inst, error)
        self.last_trap = message
        self.stats.call_max_seconds = max(self.stats.call_max_seconds, inst.call_max_seconds)
        self._drop_instance(inst, "relay adapter restarting")
        if self.shutdown_requested or self.terminal:
            log.error(
                "[%s] relay component trapped after it stopped for good; not restarting: %s",
                self.label,
                message,
            )
            self._emit_fatal("guest_trap", message, False)
            self.finish()
        elif self._restart_allowed():
            log.error("[%s] relay component trapped; restarting it: %s", self.label, message)
            self._emit_fatal("guest_trap", message, True)
            self._schedule_restart()
        else:
            log.error("[%s] relay component trapped; restart budget spent", self.label)
            self._go_down(message)

    def _drop_instance(self, inst: GuestInstance, reason: str) -> None:
        if self.instance is inst:
            self.instance = None
            # No live instance: no state until the next one reports one.
            self.state = None
            if time.monotonic() - self._started_at >= self.config.limits.restart_reset_after:
                self._backoff = self.config.limits.restart_initial
        self.stats.call_max_seconds = max(self.stats.call_max_seconds, inst.call_max_seconds)
        for c in self._conns.values():
            c.close(1011, reason)
        self._conns.clear()
        self._feeds.clear()
        self._verdicts.clear()
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.slot:
                self.slots.release()
            _fail(p, lost=True)

    def _restart_allowed(self) -> bool:
        limits = self.config.limits
        now = time.monotonic()
        while self._restart_log and now - self._restart_log[0] >= limits.restart_window:
            self._restart_log.popleft()
        if len(self._restart_log) >= limits.restart_budget:
            return False
        self._restart_log.append(now)
        return True

    def _schedule_restart(self) -> None:
        assert self.loop is not None
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.config.limits.restart_max)
        self._restart_timer = self.loop.call_later(delay, self._restart)

    def _restart(self) -> None:
        self._restart_timer = None
        if self.stopped or self.down is not None:
            return
        try:
            self.start_instance()
        except StartRefused as e:
            log.error("[%s] relay component refused its configuration on restart", self.label)
            self._emit_fatal("start_failed", f"start refused: {e}", False)
            self.finish()
            return
        except RelayError as e:
            log.error("[%s] relay component restart failed: %s", self.label, e)
            if self._restart_allowed():
                self._emit_fatal("restart_failed", str(e), True)
                self._schedule_restart()
            else:
                self._go_down(str(e))
            return
        self.stats.restarts += 1
        log.info("[%s] relay component re-instantiated (instance %d)", self.label, self.instance_id)

    def _go_down(self, last_failure: str) -> None:
        limits = self.config.limits
        reason = (
            f"restart budget exhausted ({limits.restart_budget} restarts within "
            f"{limits.restart_window:g} s); the adapter stays down. Last failure: {last_failure}"
        )
        log.error("[%s] relay adapter down for good: %s", self.label, reason)
        self.down = reason
        self._emit_fatal("restart_budget_exhausted", reason, False)
        self.finish()

    def _emit_fatal(self, code: str, message: str, retryable: bool) -> None:
        self._dispatch("fatal", (FatalError(code=code, message=message, retryable=retryable),))

    def finish(self) -> None:
        """The adapter ends: sockets closed, timers cancelled, every
        pending request answered, the instance dropped."""
        if self.stopped:
            return
        self.stopped = True
        self._stop_requested = False
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        inst = self.instance
        self.instance = None
        if inst is not None:
            self.stats.call_max_seconds = max(self.stats.call_max_seconds, inst.call_max_seconds)
        for c in self._conns.values():
            c.close(1001, "relay adapter stopped")
        self._conns.clear()
        self._feeds.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.slot:
                self.slots.release()
            _fail(p, lost=False)
        if self.down is None and self.state is not State.STOPPED:
            # The host stopped it (no shutdown completion from the guest).
            self._set_state(State.STOPPED, "adapter stopped by the host")
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(self.unavailable())
        self._waiters.clear()
        self.stopped_event.set()

    async def settle_sockets(self, timeout: float) -> None:
        """Waits (bounded) for closed connections to finish their close
        handshakes."""
        tasks = [t for t in self._conn_tasks if not t.done()]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=timeout)
            for t in still:
                t.cancel()


def _is_trap(error: BaseException) -> bool:
    from wasmtime import Trap, WasmtimeError

    return isinstance(error, (Trap, WasmtimeError))


def _fail(pending: _Pending, *, lost: bool, error: AdapterUnavailable | None = None) -> None:
    """Resolves a request that got no completion: a SendResult for sends
    (ambiguous when its instance died with it pending), False for
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


def _metadata(metadata: dict[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise TypeError("metadata must be a dict (a JSON object)")
    return json.dumps(metadata, separators=(",", ":"))


class RelayAdapter:
    """A gateway's relay adapter on the sandboxed component, asyncio API
    shaped like hermes-agent's ``RelayAdapter``.

    Use it from one event loop (the one :meth:`connect` runs on). Handlers
    may be plain functions or coroutine functions; coroutines are run as
    tasks, so a handler may await :meth:`send` without blocking the socket.

    Example::

        adapter = RelayAdapter("relay.wasm", AdapterConfig("http://127.0.0.1:9100"))
        adapter.set_message_handler(on_message)
        await adapter.connect()
        ...
        await adapter.disconnect()
    """

    def __init__(
        self,
        plugin: Plugin | str | os.PathLike[str],
        config: AdapterConfig,
        *,
        message_handler: MessageHandler | None = None,
        interrupt_handler: InterruptHandler | None = None,
        state_handler: StateHandler | None = None,
        fatal_handler: FatalHandler | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(plugin, Plugin):
            plugin = Plugin.from_file(plugin)
        self._plugin = plugin
        self._config = config
        self.name = name or f"relay-{next(_NEXT_ADAPTER)}"
        self._message_handler = message_handler
        self._interrupt_handler = interrupt_handler
        self._state_handler = state_handler
        self._fatal_handler = fatal_handler
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rt: _Runtime | None = None

    def __repr__(self) -> str:
        state = self.state.value if self.state is not None else "-"
        url = self._config.connector_url
        return f"RelayAdapter(name={self.name!r}, connector={url!r}, state={state})"

    # -- handlers -----------------------------------------------------------------

    def set_message_handler(self, handler: MessageHandler | None) -> None:
        """``handler(message)``; answer each message with ``accept()`` or
        ``reject()``. Without a handler, messages are rejected."""
        self._message_handler = handler

    def set_interrupt_handler(self, handler: InterruptHandler | None) -> None:
        """``handler(session_key, chat_id)``: the connector asks to stop that
        session's running turn. Signal it and return promptly."""
        self._interrupt_handler = handler

    def set_state_handler(self, handler: StateHandler | None) -> None:
        """``handler(state, detail)`` on every state change."""
        self._state_handler = handler

    def set_fatal_handler(self, handler: FatalHandler | None) -> None:
        """``handler(FatalError)``: ``relay_disabled`` (credentials revoked;
        terminal), ``guest_trap`` (restarting), ``restart_failed``,
        ``restart_budget_exhausted`` and ``start_failed`` (terminal)."""
        self._fatal_handler = handler

    # -- lifecycle ----------------------------------------------------------------

    @property
    def plugin(self) -> Plugin:
        return self._plugin

    @property
    def config(self) -> AdapterConfig:
        return self._config

    async def connect(self, timeout: float | None = None) -> bool:
        """Instantiates the component, checks its ``api-version``, calls
        ``start`` (the first dial begins) and waits up to ``timeout``
        (default: connect timeout + handshake timeout) for the handshake.

        Returns True once ready, False if the handshake did not complete in
        time (the adapter keeps dialing in the background) or the adapter
        was disabled. Raises :class:`StartRefused`, :class:`PluginError`
        (:class:`IncompatibleVersion`) or :class:`GuestTrap` when the
        component cannot start.
        """
        if self._rt is not None:
            raise RelayError("connect() was already called on this adapter")
        rt = _Runtime(self._plugin, self._config, self.name, self._dispatch)
        rt.loop = asyncio.get_running_loop()
        self._rt = rt
        try:
            rt.start_instance()
        except BaseException:
            rt.finish()
            raise
        if timeout is None:
            timeout = self._config.limits.connect_timeout + self._config.handshake_timeout
        try:
            state = await rt.wait_for_state(
                frozenset({State.READY, State.DISABLED, State.STOPPED}), timeout
            )
        except (asyncio.TimeoutError, AdapterUnavailable):
            return False
        return state is State.READY

    async def disconnect(self, timeout: float | None = None) -> None:
        """Graceful shutdown: ``going_idle`` (the connector buffers from now
        on), a bounded wait for ``going_idle_ack``, a bounded drain of
        pending sends, close 1000; then the adapter stops for good."""
        rt = self._rt
        if rt is None:
            return
        if not rt.stopped:
            rt.shutdown_requested = True
            if rt.instance is not None:
                if timeout is None:
                    timeout = self._config.going_idle_timeout + self._config.drain_grace + 2.0
                future = rt.issue("shutdown", (), "value", slot=False, is_shutdown=True)
                with contextlib.suppress(asyncio.TimeoutError, AdapterUnavailable):
                    await asyncio.wait_for(asyncio.shield(future), timeout)
            rt.finish()
        await rt.settle_sockets(2.0)
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def wait_closed(self) -> None:
        """Waits until the adapter has stopped (shutdown, down for good, or
        refused on restart)."""
        if self._rt is not None:
            await self._rt.stopped_event.wait()

    async def wait_for_state(self, *states: State, timeout: float | None = None) -> State:
        """Waits for one of ``states`` (returns at once if current)."""
        rt = self._require_rt()
        return await rt.wait_for_state(frozenset(states), timeout)

    @property
    def state(self) -> State | None:
        """The last state the component reported (None before connect)."""
        return self._rt.state if self._rt is not None else None

    @property
    def is_running(self) -> bool:
        rt = self._rt
        return rt is not None and not rt.stopped

    def health(self) -> Health:
        """Answered by the host, also while restarting or down."""
        rt = self._rt
        if rt is None:
            return Health(None, 0, None, 0, 0.0, self._config.limits.memory_bytes)
        call_max = rt.stats.call_max_seconds
        if rt.instance is not None:
            call_max = max(call_max, rt.instance.call_max_seconds)
        return Health(
            state=rt.state if rt.instance is not None else None,
            restarts=rt.stats.restarts,
            down=rt.down,
            pending=len(rt._pending),
            guest_call_max_ms=round(call_max * 1000, 3),
            memory_limit_bytes=self._config.limits.memory_bytes,
        )

    # -- requests -------------------------------------------------------------------

    def _require_rt(self) -> _Runtime:
        if self._rt is None:
            raise AdapterStopped("relay adapter not connected: call connect() first")
        return self._rt

    def _refusal(self, rt: _Runtime) -> SendResult | None:
        if rt.shutdown_requested and not rt.stopped:
            return SendResult.failed(TRANSPORT_CLOSED)
        if rt.instance is None:
            return SendResult.failed(str(rt.unavailable()))
        return None

    async def _sent(
        self, export: str, args: tuple[Any, ...], chat_id: str | None = None
    ) -> SendResult:
        rt = self._rt
        if rt is None:
            return SendResult.failed("relay adapter stopped")
        refused = self._refusal(rt)
        if refused is not None:
            return refused
        if not await self._admit(rt, chat_id):
            n = self._config.max_pending
            return SendResult.failed(
                f"relay admission timed out: all {n} request slots stayed busy for "
                f"{self._config.admission_timeout:g}s"
            )
        refused = self._refusal(rt)
        if refused is not None:
            rt.slots.release()
            return refused
        result: SendResult = await rt.issue(export, args, "sent", slot=True)
        return result

    async def _admit(self, rt: _Runtime, chat_id: str | None) -> bool:
        """Takes one of ``max_pending`` request slots (FIFO). While waiting,
        the chat's route is pinned so the reply keeps its scope."""
        if not rt.slots.locked():
            await rt.slots.acquire()
            return True
        pinned = None
        if chat_id is not None and rt.instance is not None:
            ok, _ = rt.call("hold-route", chat_id, True)
            pinned = rt.instance_id if ok else None
        try:
            await asyncio.wait_for(rt.slots.acquire(), self._config.admission_timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if pinned is not None and pinned == rt.instance_id and rt.instance is not None:
                rt.call("hold-route", chat_id, False)

    async def send(
        self,
        chat_id: str,
        content: str,
        reply_to: str | None = None,
        metadata: dict[str, Any] | None = None,
        platform: str | None = None,
    ) -> SendResult:
        """Sends a message. Leave ``scope_id``/``user_id``/``profile`` out of
        ``metadata``: the adapter re-attaches them from the chat's inbound
        traffic. Never raises: failures are :class:`SendResult` values."""
        return await self._sent(
            "send", (chat_id, content, reply_to, _metadata(metadata), platform), chat_id
        )

    async def edit_message(
        self,
        chat_id: str,
        message_id: str,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Edits a message."""
        return await self._sent(
            "edit", (chat_id, message_id, content, _metadata(metadata)), chat_id
        )

    async def send_typing(
        self,
        chat_id: str,
        metadata: dict[str, Any] | None = None,
        content: str | None = None,
    ) -> SendResult:
        """Shows the typing indicator (``content``: a status phrase)."""
        return await self._sent("typing", (chat_id, _metadata(metadata), content), chat_id)

    async def send_follow_up(
        self,
        session_key: str,
        kind: str,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Token-less follow-up through a capability the connector vaulted."""
        return await self._sent("follow-up", (session_key, kind, content, _metadata(metadata)))

    async def raw_action(
        self, action: dict[str, Any] | str, platform: str | None = None
    ) -> SendResult:
        """Any other op as a JSON action object (``{"op": ..., ...}``)."""
        text = action if isinstance(action, str) else json.dumps(action, separators=(",", ":"))
        chat = action.get("chat_id") if isinstance(action, dict) else None
        return await self._sent(
            "raw-action", (text, platform), chat if isinstance(chat, str) else None
        )

    async def get_chat_info(self, chat_id: str) -> ChatInfo:
        """A chat's name and type. Raises :class:`AdapterUnavailable` when no
        instance can answer (restarting, stopped, down)."""
        rt = self._require_rt()
        if rt.instance is None:
            raise rt.unavailable()
        if not await self._admit(rt, chat_id):
            raise AdapterUnavailable(
                f"relay admission timed out: all {self._config.max_pending} request slots "
                f"stayed busy for {self._config.admission_timeout:g}s"
            )
        if rt.instance is None:
            rt.slots.release()
            raise rt.unavailable()
        info: ChatInfo = await rt.issue("get-chat-info", (chat_id,), "value", slot=True)
        return info

    async def _done(self, export: str, args: tuple[Any, ...]) -> None:
        rt = self._require_rt()
        if rt.instance is None:
            raise rt.unavailable()
        await rt.issue(export, args, "value", slot=False)

    async def interrupt(self, session_key: str, reason: str | None = None) -> None:
        """Asks the connector to interrupt a session's running turn."""
        await self._done("interrupt", (session_key, reason))

    async def go_dormant(self) -> bool:
        """Goes idle and closes without stopping (scale to zero); re-dials on
        the dormant cadence. True when the connector acknowledged."""
        rt = self._rt
        if rt is None or rt.instance is None:
            return False
        flag: bool = await rt.issue("go-dormant", (), "flag", slot=False)
        return flag

    async def hold_redial(self) -> None:
        """Parks re-dialing (bounded by ``redial_hold_max``)."""
        await self._done("hold-redial", ())

    async def release_redial(self) -> None:
        """Resumes re-dialing."""
        await self._done("release-redial", ())

    def prime_route(
        self,
        chat_id: str,
        platform: str,
        scope_id: str | None = None,
        user_id: str | None = None,
        profile: str | None = None,
    ) -> None:
        """Seeds the routing cache for a chat (after a restart)."""
        self._require_rt().query("prime-route", chat_id, platform, scope_id, user_id, profile)

    # -- capability queries (one synchronous export call each) -------------------------

    def descriptor(self, platform: str | None = None) -> dict[str, Any] | None:
        """The descriptor for ``platform`` (or the default one)."""
        text = self._require_rt().query("descriptor", platform)
        return None if text is None else json.loads(text)

    def max_message_length(self, chat_id: str | None = None) -> int:
        """Maximum message length for a chat (its platform's descriptor)."""
        return int(self._require_rt().query("max-message-length", chat_id))

    def message_len(self, text: str, chat_id: str | None = None) -> int:
        """Length of ``text`` in the chat's unit (chars or UTF-16 units)."""
        return int(self._require_rt().query("message-len", chat_id, text))

    def supports_op(self, op: str, chat_id: str | None = None) -> bool:
        """Whether the chat's descriptor supports ``op``."""
        return bool(self._require_rt().query("supports-op", chat_id, op))

    def fronts_platform(self, platform: str) -> bool:
        """Whether this gateway fronts ``platform``."""
        return bool(self._require_rt().query("fronts-platform", platform))

    def current_state(self) -> State:
        """The component's current state (an export call)."""
        return State(self._require_rt().query("current-state"))

    def stats(self) -> dict[str, Any]:
        """The component's counters and gauges plus the host's."""
        rt = self._require_rt()
        value: dict[str, Any] = json.loads(rt.query("stats"))
        health = self.health()
        value.update(
            restarts=health.restarts,
            guest_call_max_ms=health.guest_call_max_ms,
            memory_limit_bytes=health.memory_limit_bytes,
        )
        return value

    # -- events to the gateway -----------------------------------------------------------

    def _dispatch(self, kind: str, args: tuple[Any, ...]) -> None:
        # Called from imports: never run gateway code here; queue it.
        loop = self._rt.loop if self._rt is not None else None
        if loop is None:
            return
        loop.call_soon(self._run_handler, kind, args)

    def _run_handler(self, kind: str, args: tuple[Any, ...]) -> None:
        handler: Callable[..., Any] | None
        if kind == "message":
            handler = self._message_handler
            if handler is None:
                args[0].reject()
                return
        elif kind == "interrupt":
            handler = self._interrupt_handler
        elif kind == "state":
            handler = self._state_handler
        else:
            handler = self._fatal_handler
        if handler is None:
            return
        try:
            result = handler(*args)
        except Exception:
            log.exception("[%s] %s handler failed", self.name, kind)
            if kind == "message":
                args[0].reject()
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._handler_done(t, kind, args))

    def _handler_done(self, task: asyncio.Task[Any], kind: str, args: tuple[Any, ...]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("[%s] %s handler failed", self.name, kind, exc_info=error)
            if kind == "message":
                args[0].reject()
