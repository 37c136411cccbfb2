"""Fixtures: the component files and the stub connector binary come from the
environment (so the Rust build can pass them), never from guessed paths.

- ``RELAY_COMPONENT_WASM``: the production relay component.
- ``RELAY_TEST_GUEST_WASM``: the misbehaving test guest (traps on demand).
- ``RELAY_STUB_CONNECTOR``: the ``stub-connector`` binary.

A missing variable fails the tests that need it, naming the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from relay_host import AdapterConfig, HostLimits, Identity, Plugin, RelayAdapter, State

#: Deadline of every single wait in the tests.
WAIT = 5.0


def env_path(name: str, what: str) -> Path:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(
            f"{name} is not set: it must name {what} "
            f"(see host/python/README.md, 'Running the tests')",
            pytrace=False,
        )
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{name}={value!r} is not a file ({what})", pytrace=False)
    return path


@pytest.fixture(scope="session")
def component_path() -> Path:
    return env_path("RELAY_COMPONENT_WASM", "the relay component (.wasm)")


@pytest.fixture(scope="session")
def test_guest_path() -> Path:
    return env_path("RELAY_TEST_GUEST_WASM", "the misbehaving test guest component (.wasm)")


@pytest.fixture(scope="session")
def stub_binary() -> Path:
    return env_path("RELAY_STUB_CONNECTOR", "the stub-connector binary")


@pytest.fixture(scope="session")
def plugin(component_path: Path) -> Plugin:
    return Plugin.from_file(component_path)


@pytest.fixture(scope="session")
def test_plugin(test_guest_path: Path) -> Plugin:
    return Plugin.from_file(test_guest_path)


class Stub:
    """The stub connector as a subprocess: ``--script -`` (lines written to
    its stdin run in order as they arrive) and ``--print-frames`` (every
    frame the gateway sends is read back here)."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.base_url = url.replace("ws://", "http://", 1).removesuffix("/relay")
        self.frames: list[dict[str, Any]] = []
        self.report: dict[str, Any] | None = None
        self.other: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                item = json.loads(line)
            except ValueError:
                self.other.append(line.decode(errors="replace"))
                continue
            if item.get("event") == "frame":
                item["json"] = json.loads(item["raw"])
                self.frames.append(item)
            elif item.get("event") in ("script_done", "script_failed"):
                self.report = item
            async with self._changed:
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def do(self, *lines: dict[str, Any]) -> None:
        """Appends script lines (actions or expectations)."""
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write((json.dumps(line) + "\n").encode())
        await self.proc.stdin.drain()

    async def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        async def until() -> Any:
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    if self.report is not None and self.report.get("ok") is False:
                        raise AssertionError(f"stub script failed: {self.report}")
                    if self._reader.done():
                        raise AssertionError(f"stub exited while waiting for {what}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    async def frame(
        self,
        frame_type: str,
        after: int = 0,
        where: Callable[[dict[str, Any]], bool] = lambda f: True,
    ) -> dict[str, Any]:
        """The first frame of ``frame_type`` with seq >= ``after`` matching."""

        def find() -> dict[str, Any] | None:
            for f in self.frames:
                if f["seq"] >= after and f["json"].get("type") == frame_type and where(f["json"]):
                    return f
            return None

        found: dict[str, Any] = await self.wait_for(find, f"a {frame_type} frame")
        return found

    def frames_of(self, frame_type: str) -> list[dict[str, Any]]:
        return [f["json"] for f in self.frames if f["json"].get("type") == frame_type]

    def mark(self) -> int:
        return len(self.frames)

    async def finish(self, timeout: float = WAIT) -> dict[str, Any]:
        """Ends the script (closes stdin) and returns its report; every
        expectation written must have held."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        report: dict[str, Any] = await self.wait_for(
            lambda: self.report, "the script report", timeout
        )
        assert report.get("ok") is True, f"stub script failed: {report}"
        return report

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


StubFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def make_stub(stub_binary: Path) -> AsyncIterator[StubFactory]:
    started: list[Stub] = []

    async def start(*args: str) -> Stub:
        proc = await asyncio.create_subprocess_exec(
            str(stub_binary),
            "--script",
            "-",
            "--print-frames",
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        url = line.decode().strip()
        assert url.startswith("ws://127.0.0.1:"), f"unexpected stub output {url!r}"
        stub = Stub(proc, url)
        started.append(stub)
        return stub

    yield start
    for stub in started:
        await stub.stop()


@pytest_asyncio.fixture
async def stub(make_stub: StubFactory) -> Stub:
    started: Stub = await make_stub()
    return started


def fast_config(url: str, **changes: Any) -> AdapterConfig:
    """Millisecond-scale timers, one Discord identity (bot ``B1``)."""
    config = AdapterConfig(
        connector_url=url,
        identities=[Identity("discord", "B1")],
        handshake_timeout=3.0,
        reconnect_initial=0.02,
        reconnect_max=0.2,
        reconnect_jitter=1.0,
        stable_connection=0.05,
        dormant_redial=0.05,
        going_idle_timeout=1.0,
        drain_grace=0.3,
        limits=HostLimits(restart_initial=0.05, restart_max=0.5),
    )
    return config.replace(**changes)


class Recorder:
    """Collects what an adapter hands to the gateway, with waiters."""

    def __init__(self, adapter: RelayAdapter) -> None:
        self.adapter = adapter
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.interrupts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.fatals: asyncio.Queue[Any] = asyncio.Queue()
        self.prompt_answers: asyncio.Queue[Any] = asyncio.Queue()
        self.states: list[tuple[str, str]] = []
        self.skipped_interrupts: list[tuple[str, str]] = []
        self._barriers = 0
        adapter.set_message_handler(self.messages.put_nowait)
        adapter.set_interrupt_handler(lambda k, c: self.interrupts.put_nowait((k, c)))
        adapter.set_fatal_handler(self.fatals.put_nowait)
        adapter.set_state_handler(lambda s, d: self.states.append((s.value, d)))
        adapter.set_prompt_answer_handler(self.prompt_answers.put_nowait)

    async def barrier(self, stub: Stub) -> None:
        """Waits until the stub has run every script line written so far.

        Script lines run in the stub in order but asynchronously to the
        test; an ``interrupt_inbound`` marker that comes back as an interrupt
        event proves the lines before it ran. Needs a live connection."""
        self._barriers += 1
        key = f"__barrier-{self._barriers}"
        await stub.do({"do": "interrupt_inbound", "session_key": key, "chat_id": ""})
        while True:
            got = await self.interrupt()
            if got[0] == key:
                return
            self.skipped_interrupts.append(got)

    async def message(self) -> Any:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    async def interrupt(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.interrupts.get(), WAIT)

    async def fatal(self) -> Any:
        return await asyncio.wait_for(self.fatals.get(), WAIT)

    async def prompt_answer(self) -> Any:
        return await asyncio.wait_for(self.prompt_answers.get(), WAIT)


async def ready_adapter(
    plugin: Plugin, stub: Stub, **changes: Any
) -> tuple[RelayAdapter, Recorder]:
    """An adapter on ``stub`` with ``changes`` to the fast config, ready."""
    adapter = RelayAdapter(plugin, fast_config(stub.url, **changes))
    recorder = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT), f"not ready: {adapter.state}"
    return adapter, recorder


async def apply_descriptor(
    adapter: RelayAdapter, stub: Stub, descriptor: dict[str, Any]
) -> dict[str, Any]:
    """Re-dials so the next handshake gets ``descriptor``; returns the
    descriptor the adapter applied for its platform."""
    # The stub numbers connections from 0; the next one is the re-dial.
    redial = adapter.stats()["dials"]
    await stub.do(
        {"do": "set_descriptor", "descriptor": descriptor},
        {"do": "close", "code": 1011, "reason": "new descriptor"},
    )
    # The re-dial's hello went out from `handshaking`: the next `ready` is
    # the new connection's.
    await stub.wait_for(
        lambda: any(f["conn"] >= redial and f["json"].get("type") == "hello" for f in stub.frames),
        "the re-dial's hello",
    )
    assert await adapter.wait_for_state(State.READY, timeout=WAIT) is State.READY
    applied = adapter.descriptor(descriptor["platform"])
    assert applied is not None
    return applied


async def actions_until_typing(
    adapter: RelayAdapter, stub: Stub, after: int, chat_id: str = "chan1"
) -> list[Any]:
    """The outbound actions sent since ``after``, up to a typing request's
    frame made now: frames go out in order, so nothing sent before it is
    still unseen."""
    marker = {"barrier": after}
    assert (await asyncio.wait_for(adapter.send_typing(chat_id, marker), WAIT)).success
    typing = await stub.frame(
        "outbound",
        after=after,
        where=lambda f: (
            f["action"]["op"] == "typing" and f["action"]["metadata"].get("barrier") == after
        ),
    )
    return [
        f["json"]["action"]
        for f in stub.frames
        if after <= f["seq"] < typing["seq"] and f["json"].get("type") == "outbound"
    ]


def guild_event(text: str, message_id: str, chat_id: str = "chan1") -> dict[str, Any]:
    return {
        "text": text,
        "message_type": "text",
        "message_id": message_id,
        "source": {
            "platform": "discord",
            "chat_id": chat_id,
            "chat_type": "group",
            "scope_id": "guildA",
            "user_id": "u1",
            "user_name": "ben",
        },
    }


def dm_event(text: str, message_id: str, chat_id: str = "dm-ben") -> dict[str, Any]:
    return {
        "text": text,
        "message_type": "text",
        "message_id": message_id,
        "source": {"platform": "discord", "chat_id": chat_id, "chat_type": "dm", "user_id": "u7"},
    }
