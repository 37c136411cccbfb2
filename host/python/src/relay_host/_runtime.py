"""The engine room of one adapter: its current component instance and what
is tied to it (connections, the deadline timer, pending requests, delivery
answers, the reported state), and the event pump that feeds it.

Everything runs on the event loop thread. An export call is one synchronous
wasmtime call, so two can never overlap; the imports (:mod:`._imports`) only
record or queue, and what they queue for the component (a refused dial), the
deadline they set and a completed shutdown are handled right after the call
returns (:meth:`Runtime.call`). Socket events, the deadline timer and the
gateway's delivery answers each become one export call from the loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._deadline import Deadline
from ._events import Dispatch
from ._imports import Imports
from ._instance import GuestInstance
from ._media import MediaClient, MediaPlane
from ._requests import Kind, Requests
from ._socket import Connections
from ._supervisor import Supervisor, trap_message
from .config import AdapterConfig, takes_egress_fields
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
from .plugin import Plugin, compatible
from .types import State

log = logging.getLogger("relay_host")


@dataclass
class _Waiter:
    states: frozenset[State]
    future: asyncio.Future[State]


@dataclass
class Stats:
    restarts: int = 0
    #: Longest export call of the instances already dropped.
    call_max_seconds: float = 0.0


class Runtime:
    """One adapter's instance, imports, sockets, deadline, requests and
    supervision. Used through :class:`~relay_host.RelayAdapter`."""

    def __init__(
        self, plugin: Plugin, config: AdapterConfig, label: str, dispatch: Dispatch
    ) -> None:
        self.plugin = plugin
        self.config = config
        self.label = label
        self.dispatch = dispatch
        secret = config.secret.expose() if config.secret is not None else ""
        # Stripped: a secret with surrounding whitespace (say, read from a
        # file with its newline) still matches inside guest stdio lines,
        # which are split at newlines.
        self._secret = secret.strip()
        #: The prompt-id nonce of every instance of this adapter (WIT 0.2):
        #: the configured one, else drawn once here, so it survives restarts.
        self.prompt_nonce: str = config.prompt_nonce or secrets.token_hex(3)
        if config.platform_extra and not takes_egress_fields(plugin.api_version):
            log.warning(
                "[%s] platform_extra ignored: the component (api %s) has no such setting",
                label,
                plugin.api_version,
            )
        if config.command_manifest and not takes_egress_fields(plugin.api_version):
            log.warning(
                "[%s] command_manifest ignored: the component (api %s) has no such setting",
                label,
                plugin.api_version,
            )
        media_client = None
        if config.media is not None:
            if not takes_egress_fields(plugin.api_version):
                log.warning(
                    "[%s] media ignored: the component (api %s) has no media plane",
                    label,
                    plugin.api_version,
                )
            else:
                try:
                    media_client = MediaClient(config.media, config.connector_url)
                except (OSError, ValueError) as e:
                    shown = getattr(e, "strerror", None) or str(e)
                    raise RelayError(
                        f"media client: cannot use directory {str(config.media.directory)!r}: "
                        f"{shown}"
                    ) from None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.instance: GuestInstance | None = None
        self.instance_id = 0
        self._started_at = 0.0
        self.conns = Connections()
        self.deadline = Deadline(self._on_deadline)
        self.requests = Requests(config.max_pending, label)
        #: The media client's jobs (WIT 0.2 ``fetch-media`` / ``upload-media``).
        self.media = MediaPlane(self, media_client)
        self.imports = Imports(self)
        self.supervisor = Supervisor(self)
        self._feeds: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._verdicts: list[tuple[int, bool]] = []
        self._verdict_flush = False
        self._draining = False
        self._in_call = False
        #: Set by the ``complete`` of a shutdown: stop after this call.
        self.stop_requested = False
        self.shutdown_requested = False
        #: The component reported a non-retryable fatal (say, disabled).
        self.terminal = False
        self.stopped = False
        self.down: str | None = None
        self.state: State | None = None
        self.detail = ""
        self._waiters: list[_Waiter] = []
        self.stats = Stats()
        self.stopped_event = asyncio.Event()
        self.last_trap = ""

    @property
    def in_call(self) -> bool:
        """Whether an export call is running (an import is being served)."""
        return self._in_call

    def redact(self, text: str) -> str:
        if self._secret and self._secret in text:
            return text.replace(self._secret, "<redacted>")
        return text

    # -- the instance ---------------------------------------------------------

    def start_instance(self) -> None:
        """Creates an instance, checks ``api-version`` and calls ``start``.
        Raises :class:`PluginError`, :class:`IncompatibleVersion`,
        :class:`StartRefused` or :class:`GuestTrap`; on any of them no
        instance is left behind."""
        self.instance_id += 1
        try:
            inst = GuestInstance(
                self.plugin, self.config.limits, self.imports, label=self.label, redact=self.redact
            )
        except Exception as e:
            raise PluginError(f"instantiation failed: {self.redact(str(e))}") from None
        try:
            found = inst.call("api-version")
        except Exception as e:
            raise PluginError(f"api-version trapped: {self.redact(str(e))}") from None
        if not compatible(found, self.plugin.api_version):
            raise IncompatibleVersion(found, self.plugin.api_version)
        self.instance = inst
        self._started_at = time.monotonic()
        self._in_call = True
        try:
            wit = self.config.to_wit(self.plugin.api_version, prompt_nonce=self.prompt_nonce)
            refused = inst.call("start", wit)
        except Exception as e:
            self._in_call = False
            message = trap_message(inst, e, self.redact)
            self.detach(inst, "relay adapter restarting")
            raise GuestTrap(message) from None
        finally:
            self._in_call = False
        # `result<_, string>`: ok lifts to None, err to the reason string.
        if refused is not None:
            self.detach(inst, "relay adapter stopped")
            raise StartRefused(f"configuration rejected: {self.redact(str(refused))}")
        self._after_call()

    def detach(self, inst: GuestInstance, reason: str) -> None:
        """Drops ``inst``: its sockets close with 1011, what it queued is
        forgotten, its pending requests are lost (ambiguous sends)."""
        if self.instance is inst:
            self.instance = None
            # No live instance: no state until the next one reports one.
            self.state = None
            self.supervisor.instance_ended(time.monotonic() - self._started_at)
        self.stats.call_max_seconds = max(self.stats.call_max_seconds, inst.call_max_seconds)
        self.conns.close_all(1011, reason)
        self._feeds.clear()
        self._verdicts.clear()
        self.deadline.clear()
        self.requests.fail_all(lost=True)
        self.media.instance_lost()

    def finish(self) -> None:
        """The adapter ends: sockets closed, timers cancelled, the instance
        dropped, every pending request answered once (lost: the instance
        had it, so a send's frame may have gone out)."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_requested = False
        self.supervisor.cancel()
        inst, self.instance = self.instance, None
        if inst is not None:
            self.stats.call_max_seconds = max(self.stats.call_max_seconds, inst.call_max_seconds)
        self.conns.close_all(1001, "relay adapter stopped")
        self.media.close()
        self._feeds.clear()
        self.deadline.clear()
        self.requests.fail_all(lost=True)
        if self.down is None and self.state is not State.STOPPED:
            # The host stopped it (no shutdown completion from the guest).
            self.set_state(State.STOPPED, "adapter stopped by the host")
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(self.unavailable())
        self._waiters.clear()
        self.stopped_event.set()

    def unavailable(self) -> AdapterUnavailable:
        if self.down is not None:
            return AdapterDown(self.down)
        if self.stopped or self.instance_id == 0:
            return AdapterStopped()
        return AdapterRestarting()

    # -- export calls and the pump ----------------------------------------------

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
            self.supervisor.on_trap(inst, e)
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

    def issue(
        self,
        export: str,
        args: tuple[Any, ...],
        kind: Kind,
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
            self.requests.refuse(future, kind, slot=slot, error=self.unavailable())
            return future
        request = self.requests.open(future, kind, slot=slot, is_shutdown=is_shutdown)
        self.call(export, request, *args)
        return future

    def pin_route(self, chat_id: str) -> Callable[[], None] | None:
        """Holds a chat's route (``hold-route``) while a request for it waits
        for a slot; returns the release, or None when nothing was held."""
        if self.instance is None:
            return None
        ok, _ = self.call("hold-route", chat_id, True)
        if not ok:
            return None
        pinned = self.instance_id

        def unpin() -> None:
            if pinned == self.instance_id and self.instance is not None:
                self.call("hold-route", chat_id, False)

        return unpin

    def feed(self, export: str, *args: Any) -> None:
        """Queues an export call for right after the current one (imports)."""
        self._feeds.append((export, args))

    def _after_call(self) -> None:
        inst = self.instance
        if inst is None:
            return
        if self.loop is not None:
            self.deadline.apply(self.loop, inst.clock_origin)
        if self.stop_requested:
            self.finish()
            return
        if self._draining:
            return  # a fed call: the outer loop below goes on
        self._draining = True
        try:
            while self._feeds and self.instance is not None:
                name, args = self._feeds.popleft()
                self.call(name, *args)
        finally:
            self._draining = False

    def _on_deadline(self) -> None:
        self.call("on-deadline")

    def on_io(self, conn: int, token: int, kind: str, args: tuple[Any, ...]) -> None:
        """A report of a connection task (see :mod:`._socket`)."""
        if self.conns.current(conn, token) is None:
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
            self.conns.pop(conn)
            self.call("on-dial-failed", conn, int(args[0]), str(args[1]))
        elif kind == "closed":
            self.conns.pop(conn)
            self.call("on-closed", conn, int(args[0]), str(args[1]))

    # -- delivery answers -----------------------------------------------------------

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

    # -- state --------------------------------------------------------------------

    def set_state(self, state: State, detail: str) -> None:
        self.state = state
        self.detail = detail
        log.info("[%s] relay state %s%s", self.label, state.value, f" ({detail})" if detail else "")
        if self._waiters:
            for waiter in list(self._waiters):
                if state in waiter.states:
                    self._waiters.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_result(state)
        self.dispatch("state", (state, detail))

    async def wait_for_state(self, states: frozenset[State], timeout: float | None) -> State:
        if self.state in states:
            assert self.state is not None
            return self.state
        if self.stopped:
            # No state change can come any more: waiting would never end.
            raise self.unavailable()
        loop = asyncio.get_running_loop()
        waiter = _Waiter(states, loop.create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
