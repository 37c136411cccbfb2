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
import logging
import os
from typing import Any

from wasmtime.component import Variant

from . import _args, _labels, _lanes
from ._events import (
    FatalHandler,
    GatewayEvents,
    InterruptHandler,
    LabelsHandler,
    MessageHandler,
    PromptAnswerHandler,
    StateHandler,
)
from ._requests import Kind
from ._runtime import Runtime
from .config import AdapterConfig
from .errors import AdapterStopped, AdapterUnavailable, NotSupported, RelayError
from .message import RelayMessage
from .plugin import Plugin
from .types import (
    ChatInfo,
    ChatLabels,
    Health,
    ProcessingOutcome,
    PromptOption,
    SendResult,
    State,
)

__all__ = [
    "LANES_UNSUPPORTED",
    "TRANSPORT_CLOSED",
    "FatalHandler",
    "InterruptHandler",
    "LabelsHandler",
    "MessageHandler",
    "PromptAnswerHandler",
    "RelayAdapter",
    "StateHandler",
]

#: Error text of requests refused while shutting down or after.
TRANSPORT_CLOSED = "relay transport closed"

#: Error text of a typed lane (``delete_message``, ``react``, ``send_draft``,
#: ``prompt``, ...) asked of a component built against a WIT version without
#: them (0.1.0), formatted with its ``api_version``. Nothing is sent.
LANES_UNSUPPORTED = "not supported by this component (api {})"

log = logging.getLogger("relay_host")

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
        prompt_answer_handler: PromptAnswerHandler | None = None,
        labels_handler: LabelsHandler | None = None,
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
            prompt_answer=prompt_answer_handler,
            labels=labels_handler,
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

    def set_prompt_answer_handler(self, handler: PromptAnswerHandler | None) -> None:
        """``handler(PromptAnswer)``: someone pressed a button of a prompt this
        adapter minted (:meth:`mint_prompt`, :meth:`prompt`). Called once per
        prompt (one answer wins; later presses, and presses on another
        adapter's prompts, are dropped by the component). The answering
        event is consumed: it never reaches the message handler. Without a
        handler the answer is logged and dropped."""
        self._events.prompt_answer = handler

    def set_labels_handler(self, handler: LabelsHandler | None) -> None:
        """``handler(ChatLabels)``: the Discord text lane observed new chat
        labels (WIT 0.2 ``labels-observed``, spec §7.7): a chat's name,
        topic and parent, and an author's display name in it, ``None``
        values included. Store the latest per :attr:`ChatLabels.key` (last
        write wins; keep the handler quick, or store from a task) and give
        them back with :meth:`prime_labels` after a restart. Unchanged
        labels are not reported. Without a handler nothing is stored (a
        debug line). A 0.1.0 component never calls it."""
        self._events.labels = handler

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
        component cannot start, and :class:`RelayError` when the media
        directory (:attr:`AdapterConfig.media`) cannot be created.
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
    def prompt_nonce(self) -> str | None:
        """The prompt-id nonce every instance of this adapter is started with
        (``config.prompt_nonce``, else drawn at :meth:`connect`); None
        before connect. A 0.1.0 component never gets it."""
        return self._rt.prompt_nonce if self._rt is not None else None

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
        self,
        export: str,
        args: tuple[Any, ...],
        chat_id: str | None = None,
        *,
        slot: bool = True,
    ) -> SendResult:
        """A command completing with ``sent``. With ``slot`` it first takes a
        request slot (FIFO admission, ``chat_id``'s route pinned meanwhile)."""
        rt = self._rt
        if rt is None:
            return SendResult.failed("relay adapter stopped")
        refused = self._refusal(rt)
        if refused is not None:
            return refused
        if slot:
            if not await self._admit(rt, chat_id):
                return SendResult.failed(self._admission_timed_out())
            refused = self._refusal(rt)
            if refused is not None:
                rt.requests.slots.release()
                return refused
        result: SendResult = await rt.issue(export, args, "sent", slot=slot)
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

    # -- typed lanes (WIT 0.2.0 `lane`) -----------------------------------------------

    def _lanes_unsupported(self) -> str | None:
        """Why this component cannot run a lane (built against 0.1.0), or None."""
        if self._plugin.supports_lanes:
            return None
        return LANES_UNSUPPORTED.format(self._plugin.api_version)

    async def _lane_sent(
        self, command: Variant, chat_id: str | None, *, slot: bool = True
    ) -> SendResult:
        unsupported = self._lanes_unsupported()
        if unsupported is not None:
            return SendResult.failed(unsupported)
        return await self._sent("lane", (command,), chat_id, slot=slot)

    async def _lane_done(self, command: Variant, what: str) -> None:
        """A best-effort lane completing with ``done`` (no slot): skipped,
        with a debug line, when the component has no lanes or no instance
        runs; never raises for that."""
        unsupported = self._lanes_unsupported()
        if unsupported is not None:
            log.debug("[%s] %s skipped: %s", self.name, what, unsupported)
            return
        rt = self._rt
        if rt is None or rt.instance is None:
            log.debug("[%s] %s skipped: no component instance runs", self.name, what)
            return
        try:
            await rt.issue("lane", (command,), "value", slot=False)
        except AdapterUnavailable as e:
            log.debug("[%s] %s skipped: %s", self.name, what, e)

    async def delete_message(
        self, chat_id: str, message_id: str, metadata: dict[str, Any] | None = None
    ) -> SendResult:
        """Deletes a message (spec §6.6.2). Only when the chat's descriptor
        lists ``delete`` in ``supported_ops`` (no legacy fallback); otherwise
        a failed result and nothing on the wire."""
        command = _lanes.delete(
            _args.text("chat_id", chat_id),
            _args.text("message_id", message_id),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, chat_id)

    async def stop_typing(self, chat_id: str, metadata: dict[str, Any] | None = None) -> SendResult:
        """Clears a Slack chat's typing status (spec §6.6.2): a ``typing``
        frame with empty ``content``. Other chats get a failed result and
        nothing on the wire."""
        command = _lanes.stop_typing(_args.text("chat_id", chat_id), _args.metadata(metadata))
        return await self._lane_sent(command, chat_id)

    async def react(
        self,
        chat_id: str,
        message_id: str,
        emoji: str,
        remove: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Adds (or with ``remove`` removes) one reaction on a message (spec
        §2.7 ``react``). Needs ``react`` in the chat's ``supported_ops`` and
        a non-empty chat id, message id and emoji."""
        command = _lanes.react(
            _args.text("chat_id", chat_id),
            _args.text("message_id", message_id),
            _args.text("emoji", emoji),
            _args.flag("remove", remove),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, chat_id)

    async def processing_start(self, event: str | dict[str, Any] | RelayMessage) -> None:
        """Marks a delivered event "in progress" (spec §6.12): a best-effort
        👀 reaction on its reply anchor (``source.chat_id`` and
        ``source.message_id``), when the chat's descriptor lists ``react``.

        ``event`` is the event as delivered: :attr:`RelayMessage.json`, the
        parsed :attr:`RelayMessage.event`, or the message itself. Returns once
        the frames are queued; takes no request slot and never raises for an
        unavailable adapter or a component without lanes (a debug line)."""
        command = _lanes.processing_start(_args.event_json(event))
        await self._lane_done(command, "processing_start")

    async def processing_complete(
        self, event: str | dict[str, Any] | RelayMessage, outcome: ProcessingOutcome
    ) -> None:
        """Ends the "in progress" mark of :meth:`processing_start` (spec
        §6.12): removes 👀 and, for ``"success"`` / ``"failure"``, adds the
        platform's success / failure emoji (✅ / ❌; 👍 / 👎 on Telegram);
        ``"cancelled"`` adds nothing. Best-effort like
        :meth:`processing_start`."""
        command = _lanes.processing_complete(_args.event_json(event), _args.outcome(outcome))
        await self._lane_done(command, "processing_complete")

    async def create_thread(
        self, parent_chat_id: str, name: str, metadata: dict[str, Any] | None = None
    ) -> SendResult:
        """Creates a thread under a parent chat (spec §6.13); the new
        thread's id is in ``thread_id`` of the result (or in ``message_id``,
        from a connector that answers that way: :attr:`SendResult.created_thread_id`
        reads either). The name is trimmed,
        ``handoff`` when empty, at most 100 characters. Needs
        ``thread_create`` in the chat's ``supported_ops``."""
        command = _lanes.thread_create(
            _args.text("parent_chat_id", parent_chat_id),
            _args.text("name", name),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, parent_chat_id)

    async def rename_thread(
        self,
        thread_id: str,
        name: str,
        *,
        only_if_connector_created: bool = False,
        only_if_current_name: str | None = None,
        parent_chat_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Renames a thread (spec §6.13). The name's whitespace runs are
        collapsed, it is trimmed and cut to 100 characters; an empty name is
        refused locally. One guard goes out (spec §2.7):
        ``only_if_connector_created`` (the connector renames only a thread it
        created and no human renamed) wins over ``only_if_current_name``
        (only while the thread still has that name). Addressed to
        ``parent_chat_id`` when given, else to the thread itself, whose
        descriptor must list ``thread_rename``."""
        guard = _lanes.rename_guard(
            _args.flag("only_if_connector_created", only_if_connector_created),
            _args.opt_text("only_if_current_name", only_if_current_name),
        )
        command = _lanes.thread_rename(
            _args.text("thread_id", thread_id),
            _args.text("name", name),
            guard,
            _args.opt_text("parent_chat_id", parent_chat_id),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, parent_chat_id or thread_id)

    async def auto_thread_info(self, chat_id: str, timeout: float) -> SendResult:
        """The connector's auto-thread for a chat (spec §6.13, §9.5): success
        with ``thread_id`` and ``auto_thread_name`` when known, at once or
        from the next send into the chat; a failure when that send was not
        auto-threaded or none comes within ``timeout`` seconds. Takes no
        request slot (it may wait long)."""
        command = _lanes.auto_thread_info(
            _args.text("chat_id", chat_id), _args.millis("timeout", timeout)
        )
        return await self._lane_sent(command, chat_id, slot=False)

    async def send_draft(
        self,
        chat_id: str,
        draft_id: int,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """One interim frame of a native draft stream (spec §6.14): a
        ``draft`` frame with ``final: false``. Only when
        :meth:`supports_draft_streaming` holds for the chat, else the failure
        ``relay draft streaming not implemented for this chat`` and no frame.

        ``draft_id`` (a ``u64``) names the stream; the turn is keyed by
        ``metadata`` ``message_id`` / ``reply_to_message_id`` (else
        ``thread_ts`` / ``thread_id``). Where the stream is the message (a
        Slack chat) it is armed, and the turn's final :meth:`send` (not
        ``_interim_send``) becomes the sealing ``draft`` frame (``final:
        true``, same ``draft_id``). A frame for a draft id already sealed
        succeeds without a frame."""
        command = _lanes.send_draft(
            _args.text("chat_id", chat_id),
            _args.u64("draft_id", draft_id),
            _args.text("content", content),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, chat_id)

    async def abandon_open_draft(self, chat_id: str, content: str) -> SendResult:
        """Seals the chat's most recently armed draft stream in place with
        ``content`` (on ``/stop`` or ``/new``); a failure when no stream is
        open there."""
        command = _lanes.abandon_open_draft(
            _args.text("chat_id", chat_id), _args.text("content", content)
        )
        return await self._lane_sent(command, chat_id)

    async def prompt(
        self,
        prompt_id: str,
        chat_id: str,
        question: str,
        options: list[PromptOption],
        *,
        prompt_kind: str = "choice",
        choices: list[str] | tuple[str, ...] = (),
        reply_to: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> SendResult:
        """Sends an interactive prompt (spec §2.7 ``prompt``, §6.11) minted by
        :meth:`mint_prompt` for this chat: ``question`` with one button per
        :class:`PromptOption`. ``prompt_kind`` is the wire's styling hint
        (``approval``, ``clarify`` or ``choice``); for a clarify prompt
        ``choices[i]`` is the text returned as :attr:`PromptAnswer.choice`
        for option ``c<i>``. ``timeout_s`` is advisory for the connector
        (whole seconds, a fraction rounds up).

        Refused without a frame, and the id forgotten, when the id was not
        minted for this chat or expired, an option id is invalid, or the
        chat's descriptor lacks ``prompt`` (the error
        ``relay prompt op unavailable``: fall back to a text prompt). A
        declined result forgets the id too; never fall back after one. The
        press arrives through the prompt-answer handler."""
        command = _lanes.prompt(
            _args.text("prompt_id", prompt_id),
            _args.text("chat_id", chat_id),
            _args.text("question", question),
            _args.text("prompt_kind", prompt_kind),
            _args.prompt_options(options),
            _args.texts("choices", choices),
            _args.opt_text("reply_to", reply_to),
            _args.metadata(metadata),
            _args.opt_seconds_u32("timeout_s", timeout_s),
        )
        return await self._lane_sent(command, chat_id)

    async def task_card(
        self,
        chat_id: str,
        chunks: list[dict[str, Any]],
        *,
        reply_to: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Shows or updates a plan-mode task card (spec §2.7 ``task_card``,
        §9.10): a ``task_card`` frame with ``chunks`` (the card's steps, a
        list of dicts the connector renders) and ``card_id``
        ``turn:<anchor>``, the anchor being ``reply_to``, else ``metadata``
        ``message_id``, ``reply_to_message_id``, ``thread_ts``,
        ``thread_id``, else ``root``; send every update of one turn with the
        same keys. A Slack card threads on ``metadata["thread_ts"]``
        (``reply_to`` by default).

        Only when the chat's descriptor lists ``task_card`` in
        ``supported_ops``, else the failure ``relay op task_card not
        supported by the connector`` and no frame. A ``declined`` result is
        final: never retry it or fall back to a text message."""
        command = _lanes.task_card(
            _args.text("chat_id", chat_id),
            _args.opt_text("reply_to", reply_to),
            _args.chunks(chunks),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, chat_id)

    async def task_card_stop(
        self,
        chat_id: str,
        *,
        reply_to: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Stops a turn's task card (spec §2.7 ``task_card_stop``): a
        ``task_card_stop`` frame with the card's ``card_id``, so give the same
        chat, ``reply_to`` and turn keys in ``metadata`` as the card's. Only
        when the chat's descriptor lists ``task_card_stop``, else a failure
        and no frame. Cosmetic: a decline is reported, never retried."""
        command = _lanes.task_card_stop(
            _args.text("chat_id", chat_id),
            _args.opt_text("reply_to", reply_to),
            _args.metadata(metadata),
        )
        return await self._lane_sent(command, chat_id)

    async def send_media(
        self,
        chat_id: str,
        kind: str,
        source: str | os.PathLike[str],
        *,
        caption: str = "",
        reply_to: str | None = None,
        filename: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SendResult:
        """Sends media by reference (spec §2.7 ``send_media``, §9.1): a
        ``send_media`` frame with ``media_kind`` ``kind`` (``image``,
        ``voice``, ``audio``, ``video`` or ``document``), ``source_url``,
        ``caption`` as its ``content``, ``reply_to`` and ``filename``.

        - Op-gated: when the chat's descriptor lacks ``send_media`` the
          result is the failure ``relay send_media op unavailable`` and
          nothing is sent: fall back to a text message (say, the caption and
          the URL).
        - ``source`` is a public ``http(s)`` URL, sent as is, or a local
          file, uploaded first to the connector (``POST {base}/relay/media``
          with the bearer; the file is refused before any request when it is
          missing, not a regular file, empty or over
          :attr:`MediaOptions.max_bytes`) and sent as the connector's
          reference. A local file needs :attr:`AdapterConfig.media`, else the
          failure ``relay media unavailable: ...``; a failed upload is a
          failure ``relay media upload ...`` with nothing sent.
        - A ``declined`` result is final: never follow it with a text send.

        A 0.1.0 component (or a 0.2 draft built before the media plane)
        answers ``not supported by this component ...`` without a call."""
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        command = _lanes.send_media(
            _args.text("chat_id", chat_id),
            _args.text("kind", kind),
            _args.text("source", source),
            _args.text("caption", caption),
            _args.opt_text("reply_to", reply_to),
            _args.opt_text("filename", filename),
            _args.metadata(metadata),
        )
        if self._plugin.supports_lanes and not self._plugin.supports_media:
            return SendResult.failed(
                f"send_media {LANES_UNSUPPORTED.format(self._plugin.api_version)}: no media plane"
            )
        return await self._lane_sent(command, chat_id)

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

    def prime_labels(self, labels: ChatLabels) -> None:
        """Restores a chat-label record the labels handler stored (WIT 0.2
        ``prime-labels``, spec §7.7), typically each stored record right
        after :meth:`connect`: interactions (slash commands, buttons,
        modals) then carry its chat name, topic and author display name
        instead of their payload's. It never overrides what the adapter
        observed itself since it started, and it is not reported back to
        the labels handler. The record lives in the component: after a
        component restart (a ``guest_trap`` fatal event) prime again once
        ready.

        Raises :class:`NotSupported` for a 0.1.0 component (or a 0.2 draft
        built before the record), :class:`AdapterUnavailable` when no
        instance runs, TypeError / ValueError for a bad argument."""
        record = _labels.to_wit(_labels.checked(labels))
        if not self._plugin.supports_labels:
            raise NotSupported(
                f"prime_labels {LANES_UNSUPPORTED.format(self._plugin.api_version)}"
                + ("" if self._plugin.api_version == "0.1.0" else ": no chat-label record")
            )
        self._require_rt().query("prime-labels", record)

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

    def mint_prompt(self, chat_id: str, kind: str) -> str:
        """Registers a prompt for a chat and returns its id,
        ``<nonce>.<8 hex>`` (:attr:`prompt_nonce`); it waits one hour for
        its answer. ``kind`` (``approval``, ``clarify``, ...) comes back in
        the :class:`PromptAnswer`. Send it with :meth:`prompt`. Raises
        :class:`NotSupported` for a 0.1.0 component,
        :class:`AdapterUnavailable` when no instance runs."""
        args = (_args.text("chat_id", chat_id), _args.text("kind", kind))
        if not self._plugin.supports_prompts:
            raise NotSupported(f"mint_prompt {LANES_UNSUPPORTED.format(self._plugin.api_version)}")
        return str(self._require_rt().query("mint-prompt", *args))

    def supports_draft_streaming(self, chat_id: str) -> bool:
        """Whether :meth:`send_draft` is usable for a chat: its descriptor
        sets ``supports_draft_streaming`` and lists ``draft``, and no unfurl
        knob is configured for its platform (``platform_extra``). False for
        a 0.1.0 component."""
        chat = _args.text("chat_id", chat_id)
        if not self._plugin.has_export("supports-draft-streaming"):
            return False
        return bool(self._require_rt().query("supports-draft-streaming", chat))

    def prefers_fresh_final(self, chat_id: str, text: str) -> bool:
        """Whether a streamed reply's final ``text`` should go out as a fresh
        :meth:`send` instead of a final :meth:`edit` (a Slack chat, an unfurl
        knob set to true, a link in the text). False for a 0.1.0 component."""
        args = (_args.text("chat_id", chat_id), _args.text("text", text))
        if not self._plugin.has_export("prefers-fresh-final"):
            return False
        return bool(self._require_rt().query("prefers-fresh-final", *args))

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
