"""The adapter: one sandboxed relay component driven from asyncio, behind
an API shaped like hermes-agent's ``RelayAdapter``.

This module is the gateway-facing surface only: lifecycle, requests (with
admission into the ``max_pending`` slots) and capability queries. The
machinery is in :mod:`._runtime` (the instance and its event pump),
:mod:`._imports` (what the component calls), :mod:`._requests` (one
completion per command), :mod:`._supervisor` (restarts after a trap) and
:mod:`._events` (gateway handlers, run after each export call).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from typing import Any

from . import _args
from ._events import (
    FatalHandler,
    GatewayEvents,
    InterruptHandler,
    MessageHandler,
    StateHandler,
)
from ._requests import Kind
from ._runtime import Runtime
from .config import AdapterConfig
from .errors import AdapterStopped, AdapterUnavailable, RelayError
from .plugin import Plugin
from .types import ChatInfo, Health, SendResult, State

__all__ = [
    "TRANSPORT_CLOSED",
    "FatalHandler",
    "InterruptHandler",
    "MessageHandler",
    "RelayAdapter",
    "StateHandler",
]

#: Error text of requests refused while shutting down or after.
TRANSPORT_CLOSED = "relay transport closed"

_NEXT_ADAPTER = itertools.count(1)


class RelayAdapter:
    """A gateway's relay adapter on the sandboxed component, asyncio API
    shaped like hermes-agent's ``RelayAdapter``.

    Use it from one event loop (the one :meth:`connect` runs on). Handlers
    may be plain functions or coroutine functions; coroutines are run as
    tasks, so a handler may await :meth:`send` without blocking the socket.

    Arguments are checked before anything reaches the component: a wrong
    type raises :class:`TypeError`, text that cannot be UTF-8 (a lone
    surrogate) :class:`ValueError`.

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
        self._events = GatewayEvents(
            self.name,
            message=message_handler,
            interrupt=interrupt_handler,
            state=state_handler,
            fatal=fatal_handler,
        )
        self._rt: Runtime | None = None

    def __repr__(self) -> str:
        state = self.state.value if self.state is not None else "-"
        url = self._config.connector_url
        return f"RelayAdapter(name={self.name!r}, connector={url!r}, state={state})"

    # -- handlers -----------------------------------------------------------------

    def set_message_handler(self, handler: MessageHandler | None) -> None:
        """``handler(message)``; answer each message with ``accept()`` or
        ``reject()``. Without a handler, messages are rejected."""
        self._events.message = handler

    def set_interrupt_handler(self, handler: InterruptHandler | None) -> None:
        """``handler(session_key, chat_id)``: the connector asks to stop that
        session's running turn. Signal it and return promptly."""
        self._events.interrupt = handler

    def set_state_handler(self, handler: StateHandler | None) -> None:
        """``handler(state, detail)`` on every state change."""
        self._events.state = handler

    def set_fatal_handler(self, handler: FatalHandler | None) -> None:
        """``handler(FatalError)``: ``relay_disabled`` (credentials revoked;
        terminal), ``guest_trap`` (restarting), ``restart_failed``,
        ``restart_budget_exhausted`` and ``start_failed`` (terminal)."""
        self._events.fatal = handler

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
        loop = asyncio.get_running_loop()
        self._events.loop = loop
        rt = Runtime(self._plugin, self._config, self.name, self._events.dispatch)
        rt.loop = loop
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
        pending sends, close 1000; then the adapter stops for good. After
        ``timeout`` it stops anyway (pending requests resolve as lost)."""
        rt = self._rt
        if rt is None:
            return
        if not rt.stopped:
            rt.shutdown_requested = True
            future = None
            if rt.instance is not None:
                if timeout is None:
                    timeout = self._config.going_idle_timeout + self._config.drain_grace + 2.0
                future = rt.issue("shutdown", (), "value", slot=False, is_shutdown=True)
                with contextlib.suppress(asyncio.TimeoutError, AdapterUnavailable):
                    await asyncio.wait_for(asyncio.shield(future), timeout)
            rt.finish()
            if future is not None and future.done() and not future.cancelled():
                # After a timeout finish() fails it, and nobody awaits it any
                # more: read it, or asyncio logs "exception never retrieved".
                future.exception()
        await rt.conns.settle(2.0)
        await self._events.settle(1.0)

    async def wait_closed(self) -> None:
        """Waits until the adapter has stopped (shutdown, down for good, or
        refused on restart)."""
        if self._rt is not None:
            await self._rt.stopped_event.wait()

    async def wait_for_state(self, *states: State, timeout: float | None = None) -> State:
        """Waits for one of ``states`` (returns at once if current). Raises
        :class:`AdapterUnavailable` once the adapter has stopped without
        reaching one."""
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
            pending=len(rt.requests),
            guest_call_max_ms=round(call_max * 1000, 3),
            memory_limit_bytes=self._config.limits.memory_bytes,
        )

    # -- requests -------------------------------------------------------------------

    def _require_rt(self) -> Runtime:
        if self._rt is None:
            raise AdapterStopped("relay adapter not connected: call connect() first")
        return self._rt

    def _refusal(self, rt: Runtime) -> SendResult | None:
        if rt.shutdown_requested and not rt.stopped:
            return SendResult.failed(TRANSPORT_CLOSED)
        if rt.instance is None:
            return SendResult.failed(str(rt.unavailable()))
        return None

    def _admission_timed_out(self) -> str:
        return (
            f"relay admission timed out: all {self._config.max_pending} request slots "
            f"stayed busy for {self._config.admission_timeout:g}s"
        )

    async def _admit(self, rt: Runtime, chat_id: str | None) -> bool:
        """Takes one of ``max_pending`` request slots (FIFO). While waiting,
        the chat's route is pinned so the reply keeps its scope."""
        pin = None if chat_id is None else (lambda: rt.pin_route(chat_id))
        return await rt.requests.admit(self._config.admission_timeout, pin)

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
            return SendResult.failed(self._admission_timed_out())
        refused = self._refusal(rt)
        if refused is not None:
            rt.requests.slots.release()
            return refused
        result: SendResult = await rt.issue(export, args, "sent", slot=True)
        return result

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
        traffic. Never raises for a failure: failures are :class:`SendResult`
        values."""
        args = (
            _args.text("chat_id", chat_id),
            _args.text("content", content),
            _args.opt_text("reply_to", reply_to),
            _args.metadata(metadata),
            _args.opt_text("platform", platform),
        )
        return await self._sent("send", args, chat_id)

    async def edit_message(
        self,
        chat_id: str,
        message_id: str,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Edits a message."""
        args = (
            _args.text("chat_id", chat_id),
            _args.text("message_id", message_id),
            _args.text("content", content),
            _args.metadata(metadata),
        )
        return await self._sent("edit", args, chat_id)

    async def send_typing(
        self,
        chat_id: str,
        metadata: dict[str, Any] | None = None,
        content: str | None = None,
    ) -> SendResult:
        """Shows the typing indicator (``content``: a status phrase)."""
        args = (
            _args.text("chat_id", chat_id),
            _args.metadata(metadata),
            _args.opt_text("content", content),
        )
        return await self._sent("typing", args, chat_id)

    async def send_follow_up(
        self,
        session_key: str,
        kind: str,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Token-less follow-up through a capability the connector vaulted."""
        args = (
            _args.text("session_key", session_key),
            _args.text("kind", kind),
            _args.text("content", content),
            _args.metadata(metadata),
        )
        return await self._sent("follow-up", args)

    async def raw_action(
        self, action: dict[str, Any] | str, platform: str | None = None
    ) -> SendResult:
        """Any other op as a JSON action object (``{"op": ..., ...}``)."""
        if isinstance(action, str):
            text = _args.text("action", action)
        else:
            text = json.dumps(action, separators=(",", ":"))  # ASCII: always lowers
        chat = action.get("chat_id") if isinstance(action, dict) else None
        args = (text, _args.opt_text("platform", platform))
        return await self._sent("raw-action", args, chat if _args.is_text(chat) else None)

    async def get_chat_info(self, chat_id: str) -> ChatInfo:
        """A chat's name and type. Raises :class:`AdapterUnavailable` when no
        instance can answer (restarting, stopped, down)."""
        _args.text("chat_id", chat_id)
        rt = self._require_rt()
        if rt.instance is None:
            raise rt.unavailable()
        if not await self._admit(rt, chat_id):
            raise AdapterUnavailable(self._admission_timed_out())
        if rt.instance is None:
            rt.requests.slots.release()
            raise rt.unavailable()
        info: ChatInfo = await rt.issue("get-chat-info", (chat_id,), "value", slot=True)
        return info

    async def _done(self, export: str, args: tuple[Any, ...], kind: Kind = "value") -> Any:
        rt = self._require_rt()
        if rt.instance is None:
            raise rt.unavailable()
        return await rt.issue(export, args, kind, slot=False)

    async def interrupt(self, session_key: str, reason: str | None = None) -> None:
        """Asks the connector to interrupt a session's running turn."""
        args = (_args.text("session_key", session_key), _args.opt_text("reason", reason))
        await self._done("interrupt", args)

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
        args = (
            _args.text("chat_id", chat_id),
            _args.text("platform", platform),
            _args.opt_text("scope_id", scope_id),
            _args.opt_text("user_id", user_id),
            _args.opt_text("profile", profile),
        )
        self._require_rt().query("prime-route", *args)

    # -- capability queries (one synchronous export call each) -------------------------

    def descriptor(self, platform: str | None = None) -> dict[str, Any] | None:
        """The descriptor for ``platform`` (or the default one)."""
        text = self._require_rt().query("descriptor", _args.opt_text("platform", platform))
        return None if text is None else json.loads(text)

    def max_message_length(self, chat_id: str | None = None) -> int:
        """Maximum message length for a chat (its platform's descriptor)."""
        chat = _args.opt_text("chat_id", chat_id)
        return int(self._require_rt().query("max-message-length", chat))

    def message_len(self, text: str, chat_id: str | None = None) -> int:
        """Length of ``text`` in the chat's unit (chars or UTF-16 units)."""
        args = (_args.opt_text("chat_id", chat_id), _args.text("text", text))
        return int(self._require_rt().query("message-len", *args))

    def supports_op(self, op: str, chat_id: str | None = None) -> bool:
        """Whether the chat's descriptor supports ``op``."""
        args = (_args.opt_text("chat_id", chat_id), _args.text("op", op))
        return bool(self._require_rt().query("supports-op", *args))

    def fronts_platform(self, platform: str) -> bool:
        """Whether this gateway fronts ``platform``."""
        return bool(self._require_rt().query("fronts-platform", _args.text("platform", platform)))

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
