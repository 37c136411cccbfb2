"""One sandboxed component instance: its wasmtime ``Store`` (WASI with
stdio only, memory limits, epoch deadline per call), the ``hermes:relay/host``
imports bound to a :class:`HostImports` object, and the export calls."""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from wasmtime import Store, WasiConfig
from wasmtime.component import Func, Linker

from .config import HostLimits
from .plugin import Plugin

log = logging.getLogger("relay_host")
guest_log = logging.getLogger("relay_host.guest")

# The interface names, of the WIT version a plugin exports.
HOST_INTERFACE = "hermes:relay/host@{}"
ADAPTER_INTERFACE = "hermes:relay/adapter@{}"

#: Longest guest stdio line forwarded to logging; the rest is cut.
GUEST_LINE_MAX_BYTES = 8 * 1024
#: Guest stderr lines kept for the message of a trap's fatal event.
GUEST_TAIL_LINES = 8

_GUEST_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class HostImports(Protocol):
    """What the ``hermes:relay/host`` imports call. Every method only
    records, queues or forwards; none blocks and none calls an export."""

    def dial(self, conn: int, url: str, headers: list[tuple[str, str]]) -> None: ...
    def send_text(self, conn: int, text: str) -> str | None: ...
    def close(self, conn: int, code: int, reason: str) -> None: ...
    def set_deadline(self, at: int | None) -> None: ...
    def deliver(self, events: Any) -> None: ...
    def interrupt(self, session_key: str, chat_id: str) -> None: ...
    def complete(self, request: int, completion: Any) -> None: ...
    def state_changed(self, state: str, detail: str) -> None: ...
    def fatal(self, error: Any) -> None: ...
    def prompt_answered(self, answer: Any) -> None: ...
    def labels_observed(self, labels: Any) -> None: ...
    def fetch_media(self, job: int, request: Any) -> None: ...
    def upload_media(self, job: int, request: Any, path: str) -> None: ...
    def delete_media(self, paths: list[str]) -> None: ...


class LogBudget:
    """Guest log lines forwarded per export call."""

    def __init__(self, per_call: int) -> None:
        self.per_call = per_call
        self.used = 0
        self.suppressed = 0

    def take(self) -> bool:
        self.used += 1
        if self.used <= self.per_call:
            return True
        self.suppressed += 1
        return False

    def reset(self) -> int:
        suppressed, self.suppressed, self.used = self.suppressed, 0, 0
        return suppressed


class GuestStream:
    """A guest stdio sink: complete lines go to logging (stdout at INFO,
    stderr at WARNING), long lines are cut, the last stderr lines are kept
    for trap reports. Never fails."""

    def __init__(
        self, name: str, label: str, budget: LogBudget, redact: Callable[[str], str]
    ) -> None:
        self.name = name
        self.label = label
        self.budget = budget
        self.redact = redact
        self.partial = bytearray()
        self.cut = False
        self.tail: deque[str] = deque(maxlen=GUEST_TAIL_LINES)

    def write(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            body = data[start:] if end < 0 else data[start:end]
            room = max(0, GUEST_LINE_MAX_BYTES - len(self.partial))
            if len(body) > room:
                self.cut = True
            self.partial += body[:room]
            if end < 0:
                break
            self._emit()
            start = end + 1

    def _emit(self) -> None:
        line = self.redact(self.partial.decode("utf-8", errors="replace").rstrip("\r"))
        if self.cut:
            line += " [cut]"
        self.partial.clear()
        self.cut = False
        forward = self.budget.take()
        if self.name == "stderr":
            self.tail.append(line)
            if forward:
                guest_log.warning("[%s stderr] %s", self.label, line)
        elif forward:
            guest_log.info("[%s stdout] %s", self.label, line)

    def lines(self) -> list[str]:
        out = list(self.tail)
        if self.partial:
            out.append(self.redact(self.partial.decode("utf-8", errors="replace")))
        return out


class GuestInstance:
    """A live component instance. Calls are synchronous and must come from
    one thread (the adapter's event loop); :meth:`call` raises whatever
    wasmtime raises on a trap, and the instance must then be dropped."""

    def __init__(
        self,
        plugin: Plugin,
        limits: HostLimits,
        imports: HostImports,
        *,
        label: str,
        redact: Callable[[str], str],
    ) -> None:
        self.label = label
        self._redact = redact
        self._imports = imports
        self.budget = LogBudget(limits.log_lines_per_call)
        self.stdout = GuestStream("stdout", label, self.budget, redact)
        self.stderr = GuestStream("stderr", label, self.budget, redact)
        self._ticks = max(1, math.ceil(limits.call_budget / plugin.epoch_tick))
        self.call_max_seconds = 0.0
        self.store = Store(plugin.engine)
        # Capabilities: stdio (to the host's logs), clocks and random only.
        # A fresh WasiConfig has no arguments, no environment variables and
        # no preopened directories, and nothing here adds any (no inherit_*,
        # no preopen_dir). The component's only network is the `dial` import
        # (and the media imports, performed by the host under its own rules).
        wasi = WasiConfig()
        wasi.stdout_custom = self.stdout.write
        wasi.stderr_custom = self.stderr.write
        self.store.set_wasi(wasi)
        # The guest's monotonic clock reads 0 when its WASI context is built
        # (inside set_wasi). Taken after it, so a deadline fires a few
        # microseconds late at worst, never early.
        self.clock_origin = time.monotonic()
        self.store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.max_table_elements,
            instances=limits.max_instances,
            tables=limits.max_tables,
            memories=limits.max_memories,
        )
        self._api_version = plugin.api_version
        self._prompt_answered = plugin.imports_prompt_answered
        self._media = plugin.imports_media
        self._labels = plugin.imports_labels
        self._linker = Linker(plugin.engine)
        self._linker.add_wasip2()
        self._define_imports()
        self.store.set_epoch_deadline(self._ticks)
        self.instance = self._linker.instantiate(self.store, plugin.component)
        self._component = plugin.component
        self._adapter = ADAPTER_INTERFACE.format(plugin.api_version)
        self._adapter_index = plugin.component.get_export_index(self._adapter)
        if self._adapter_index is None:
            raise LookupError(f"the component does not export {self._adapter}")
        self._funcs: dict[str, Func] = {}

    # -- imports --------------------------------------------------------

    def _define_imports(self) -> None:
        imports = self._imports

        def guarded(name: str, fn: Callable[..., Any], fallback: Any = None) -> Callable[..., Any]:
            # An exception escaping an import would trap the guest; a host
            # bug is logged instead, and the import returns `fallback`.
            def run(_store: Any, *args: Any) -> Any:
                try:
                    return fn(*args)
                except Exception:
                    # Redacted: the exception text may quote guest values.
                    log.error(
                        "[%s] host import %s failed: %s",
                        self.label,
                        name,
                        self._redact(traceback.format_exc()),
                    )
                    return fallback

            return run

        with (
            self._linker.root() as root,
            root.add_instance(HOST_INTERFACE.format(self._api_version)) as host,
        ):
            host.add_func("dial", guarded("dial", imports.dial))
            host.add_func(
                "send-text", guarded("send-text", imports.send_text, "host import failed")
            )
            host.add_func("close", guarded("close", imports.close))
            host.add_func("set-deadline", guarded("set-deadline", imports.set_deadline))
            host.add_func("deliver", guarded("deliver", imports.deliver))
            host.add_func("interrupt", guarded("interrupt", imports.interrupt))
            host.add_func("complete", guarded("complete", imports.complete))
            host.add_func("state-changed", guarded("state-changed", imports.state_changed))
            host.add_func("fatal", guarded("fatal", imports.fatal))
            host.add_func("log", guarded("log", self._log))
            if self._prompt_answered:
                # 0.2 only: the 0.1 world has no such import.
                host.add_func(
                    "prompt-answered", guarded("prompt-answered", imports.prompt_answered)
                )
            if self._media:
                # 0.2 only. Defined for every 0.2 component: one built
                # before the media plane does not import them, and an
                # unused definition is harmless.
                host.add_func("fetch-media", guarded("fetch-media", imports.fetch_media))
                host.add_func("upload-media", guarded("upload-media", imports.upload_media))
                host.add_func("delete-media", guarded("delete-media", imports.delete_media))
            if self._labels:
                # 0.2 only, like the media imports: a 0.2 draft built before
                # the chat-label record does not import it.
                host.add_func(
                    "labels-observed", guarded("labels-observed", imports.labels_observed)
                )

    def _log(self, level: str, message: str) -> None:
        if self.budget.take():
            guest_log.log(
                _GUEST_LEVELS.get(level, logging.INFO), "[%s] %s", self.label, self._redact(message)
            )

    # -- exports --------------------------------------------------------

    def _func(self, name: str) -> Func:
        func = self._funcs.get(name)
        if func is None:
            index = self._component.get_export_index(name, self._adapter_index)
            found = None if index is None else self.instance.get_func(self.store, index)
            if found is None:
                raise LookupError(f"the component does not export {self._adapter}#{name}")
            func = self._funcs[name] = found
        return func

    def call(self, name: str, *args: Any) -> Any:
        """One export call under a fresh CPU budget. Raises on a trap."""
        func = self._func(name)
        self.store.set_epoch_deadline(self._ticks)
        started = time.perf_counter()
        try:
            return func(self.store, *args)
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > self.call_max_seconds:
                self.call_max_seconds = elapsed
            suppressed = self.budget.reset()
            if suppressed:
                log.warning(
                    "[%s] relay component log flood: %d lines suppressed in one call (limit %d)",
                    self.label,
                    suppressed,
                    self.budget.per_call,
                )

    def stderr_tail(self) -> list[str]:
        return self.stderr.lines()
