"""The compiled relay component, shared by every adapter of a process: one
wasmtime ``Engine`` with epoch interruption, an epoch ticker thread, and the
component compiled once from the exact bytes it was given."""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from pathlib import Path

from wasmtime import Config, Engine, WasmtimeError
from wasmtime.component import Component

from .errors import PluginError

#: The newest WIT interface version this host speaks (``hermes:relay@0.2.0``,
#: the draft the built-in component is built against).
HOST_API_VERSION = "0.2.0"

#: Every WIT version this host binds, newest first. The functions they
#: share have the same shape so far, so one set of imports and calls serves
#: each; the interface names differ, and 0.2.0 adds the ``lane`` export
#: (:attr:`Plugin.supports_lanes`), the prompt and draft queries, the
#: ``prompt-answered``, media and ``labels-observed`` imports,
#: ``on-media-done`` (:attr:`Plugin.supports_media`), ``prime-labels``
#: (:attr:`Plugin.supports_labels`) and four ``config`` fields.
SUPPORTED_API_VERSIONS = ("0.2.0", "0.1.0")

#: Default epoch tick. Coarser than the Rust host's 1 ms: a Python thread
#: waking every millisecond competes with the event loop for the GIL.
DEFAULT_EPOCH_TICK = 0.01


def _ticker(engine: Engine, tick: float, stop: threading.Event) -> None:
    # Runs until the plugin is closed or collected. increment_epoch is one
    # FFI call (the GIL is released while it runs).
    while not stop.wait(tick):
        engine.increment_epoch()


class Plugin:
    """The relay component compiled for this process.

    Build one per process and share it between adapters (compiling takes a
    few hundred milliseconds). Each plugin runs one daemon thread that ticks
    the engine's epoch every :attr:`epoch_tick` seconds; the per-call CPU
    budget of every adapter is counted in those ticks.
    """

    def __init__(
        self,
        wasm: bytes,
        *,
        epoch_tick: float = DEFAULT_EPOCH_TICK,
        source: str | None = None,
    ) -> None:
        if not isinstance(wasm, (bytes, bytearray)):
            raise TypeError("Plugin expects the component's bytes")
        if epoch_tick <= 0:
            raise ValueError("epoch_tick must be positive")
        wasm = bytes(wasm)
        self._sha256 = hashlib.sha256(wasm).hexdigest()
        self._size = len(wasm)
        self._source = source
        self.epoch_tick = float(epoch_tick)
        config = Config()
        config.epoch_interruption = True
        try:
            self.engine = Engine(config)
            self.component = Component(self.engine, wasm)
        except WasmtimeError as e:
            raise PluginError(f"not a loadable relay component: {e}") from None
        # The version is read off the exports (wasmtime matches "@0.2.0" to
        # any 0.2.x), before anything is instantiated.
        found = [
            version
            for version in SUPPORTED_API_VERSIONS
            if self.component.get_export_index(f"hermes:relay/adapter@{version}") is not None
        ]
        if not found:
            raise PluginError(
                "the component exports no hermes:relay/adapter interface this host binds "
                f"({', '.join(SUPPORTED_API_VERSIONS)})"
            )
        #: The WIT version the component exports (its imports and exports
        #: are bound under this version's interface names).
        self.api_version: str = found[0]
        self._adapter_index = self.component.get_export_index(
            f"hermes:relay/adapter@{self.api_version}"
        )
        #: Whether the component exports ``lane`` (the typed lanes of WIT
        #: 0.2.0: deletes, reactions, threads, drafts, prompts). Without it
        #: the adapter's lane methods answer "not supported" and never call
        #: the component.
        self.supports_lanes: bool = self.has_export("lane")
        #: Whether the component exports ``mint-prompt`` (WIT 0.2.0 prompts).
        self.supports_prompts: bool = self.has_export("mint-prompt")
        #: Whether the component imports ``prompt-answered`` (every version
        #: but 0.1.0): the host defines it only then.
        self.imports_prompt_answered: bool = self.api_version != "0.1.0"
        #: Whether the host defines the media imports (``fetch-media``,
        #: ``upload-media``, ``delete-media``): every version but 0.1.0.
        self.imports_media: bool = self.api_version != "0.1.0"
        #: Whether the component has the media plane (exports
        #: ``on-media-done``, takes the ``send-media`` lane): a 0.2 draft
        #: built before it does not.
        self.supports_media: bool = self.has_export("on-media-done")
        #: Whether the host defines the ``labels-observed`` import (the
        #: chat-label record, spec §7.7): every version but 0.1.0.
        self.imports_labels: bool = self.api_version != "0.1.0"
        #: Whether the component keeps the chat-label record (exports
        #: ``prime-labels``, imports ``labels-observed``): a 0.2 draft built
        #: before it does not, and neither does a 0.1.0 component.
        self.supports_labels: bool = self.has_export("prime-labels")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_ticker,
            args=(self.engine, self.epoch_tick, self._stop),
            name="relay-epoch",
            daemon=True,
        )
        self._thread.start()
        # The ticker stops when the plugin is closed or garbage collected.
        self._finalizer = weakref.finalize(self, self._stop.set)

    def has_export(self, name: str) -> bool:
        """Whether the component's adapter interface exports function ``name``."""
        return self.component.get_export_index(name, self._adapter_index) is not None

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, epoch_tick: float = DEFAULT_EPOCH_TICK
    ) -> Plugin:
        """Reads a component file (component binary format) and compiles
        exactly those bytes."""
        path = Path(path)
        try:
            wasm = path.read_bytes()
        except OSError as e:
            raise PluginError(f"cannot read relay component {str(path)!r}: {e.strerror}") from None
        return cls(wasm, epoch_tick=epoch_tick, source=str(path))

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the component bytes that were compiled."""
        return self._sha256

    @property
    def size(self) -> int:
        """Length in bytes of the component that was compiled."""
        return self._size

    @property
    def source(self) -> str | None:
        """The file the bytes came from, if any."""
        return self._source

    def close(self) -> None:
        """Stops the epoch ticker. Adapters still using this plugin can no
        longer be interrupted by the CPU budget; close it last."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"Plugin(source={self._source!r}, size={self._size}, sha256={self._sha256[:16]}…)"


def compatible(found: str, ours: str = HOST_API_VERSION) -> bool:
    """Same major and minor (``0.1.x`` talks to ``0.1.y``)."""

    def major_minor(version: str) -> tuple[int, int] | None:
        parts = version.strip().split(".")
        if len(parts) < 2:
            return None
        try:
            return int(parts[0]), int(parts[1])
        except ValueError:
            return None

    a, b = major_minor(found), major_minor(ours)
    return a is not None and a == b
