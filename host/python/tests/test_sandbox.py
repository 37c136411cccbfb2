"""The sandbox: the component loaded is exactly the file given, a trap ends
the instance and a fresh one takes over, the CPU budget and the memory cap
trap a runaway guest, and the guest gets no environment, arguments or
preopened directories."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from wasmtime import wat2wasm

from relay_host import (
    HOST_API_VERSION,
    AdapterConfig,
    AdapterDown,
    HostLimits,
    Plugin,
    PluginError,
    RelayAdapter,
    StartRefused,
    State,
)
from relay_host._instance import GuestInstance
from relay_host.plugin import compatible

from conftest import WAIT, Recorder, Stub, fast_config, guild_event

#: A component that counts the environment variables, arguments and
#: preopened directories WASI gives it.
WASI_PROBE = Path(__file__).resolve().parent / "wasi_probe.wat"


def test_component_bytes_are_exactly_the_file_given(
    component_path: Path, test_guest_path: Path, plugin: Plugin
) -> None:
    data = component_path.read_bytes()
    assert plugin.sha256 == hashlib.sha256(data).hexdigest()
    assert plugin.size == len(data)
    assert plugin.source == str(component_path)
    # Another file gives another component; the same bytes give the same digest.
    other = Plugin.from_file(test_guest_path)
    try:
        assert other.sha256 == hashlib.sha256(test_guest_path.read_bytes()).hexdigest()
        assert other.sha256 != plugin.sha256
    finally:
        other.close()
    # An adapter built from a path compiles that file.
    adapter = RelayAdapter(component_path, AdapterConfig("http://127.0.0.1:9"))
    try:
        assert adapter.plugin.sha256 == plugin.sha256
    finally:
        adapter.plugin.close()


def test_not_a_component_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\0asm\x01\0\0\0")  # a core module, not a component
    with pytest.raises(PluginError):
        Plugin.from_file(bogus)
    with pytest.raises(PluginError):
        Plugin.from_file(tmp_path / "missing.wasm")


def test_api_version_compatibility_rule() -> None:
    assert compatible(HOST_API_VERSION)
    assert compatible("0.2.9")
    assert not compatible("0.1.0")
    assert compatible("0.1.9", "0.1.0")
    assert not compatible("1.1.0")
    assert not compatible("garbage")


async def test_trap_restarts_the_instance_and_echo_works(test_plugin: Plugin, stub: Stub) -> None:
    adapter = RelayAdapter(test_plugin, fast_config(stub.url))
    rec = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT)
    try:
        # A request in flight when the instance dies: its frame was written,
        # so the outcome is unknown (ambiguous).
        await stub.do({"do": "set_outbound", "reply": "no_answer", "once": True})
        await rec.barrier(stub)
        mark = stub.mark()
        in_flight = asyncio.ensure_future(adapter.send("chan1", "in flight"))
        await stub.frame("outbound", after=mark)
        await stub.do({"do": "send_frame", "frame": {"type": "__test_panic"}})
        fatal = await rec.fatal()
        assert (fatal.code, fatal.retryable) == ("guest_trap", True)
        assert "test guest panic requested" in fatal.message, fatal.message
        assert "unreachable" in fatal.message, fatal.message
        lost = await asyncio.wait_for(in_flight, WAIT)
        assert (lost.success, lost.error, lost.ambiguous) == (False, "relay adapter stopped", True)
        await stub.do({"expect": "closed", "conn": 0, "code": 1011, "by": "gateway"})

        # A fresh instance re-dials (a second handshake) and works.
        assert await adapter.wait_for_state(State.READY, timeout=WAIT) is State.READY
        await stub.do({"expect": "handshakes", "n": 2})
        assert adapter.health().restarts == 1
        await stub.do({"do": "push_inbound", "event": guild_event("after the restart", "m-9")})
        message = await rec.message()
        assert message.text == "after the restart"
        message.accept()
        mark = stub.mark()
        result = await asyncio.wait_for(
            adapter.send(message.chat_id, "echo: " + message.text), WAIT
        )
        assert result.success, result
        frame = (await stub.frame("outbound", after=mark))["json"]
        assert frame["action"]["content"] == "echo: after the restart"
        await adapter.disconnect()
        await stub.finish()
    finally:
        await adapter.disconnect()


@pytest.mark.parametrize(
    ("frame", "expect"),
    [("__test_spin", "interrupt"), ("__test_grow", "")],
    ids=["cpu-budget", "memory-cap"],
)
async def test_runaway_guest_is_trapped(
    test_plugin: Plugin, stub: Stub, frame: str, expect: str
) -> None:
    limits = HostLimits(
        call_budget=0.2, memory_bytes=16 << 20, restart_initial=0.05, restart_max=0.5
    )
    adapter = RelayAdapter(test_plugin, fast_config(stub.url, limits=limits))
    rec = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT)
    try:
        await stub.do({"do": "send_frame", "frame": {"type": frame}})
        fatal = await rec.fatal()
        assert (fatal.code, fatal.retryable) == ("guest_trap", True)
        assert expect in fatal.message, fatal.message
        assert await adapter.wait_for_state(State.READY, timeout=WAIT) is State.READY
        assert adapter.health().restarts == 1
    finally:
        await adapter.disconnect()


async def test_restart_budget_exhausted_keeps_the_adapter_down(
    test_plugin: Plugin, stub: Stub
) -> None:
    limits = HostLimits(restart_budget=1, restart_initial=0.05, restart_max=0.5)
    adapter = RelayAdapter(test_plugin, fast_config(stub.url, limits=limits))
    rec = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT)
    try:
        await stub.do({"do": "send_frame", "frame": {"type": "__test_panic"}})
        first = await rec.fatal()
        assert (first.code, first.retryable) == ("guest_trap", True)
        await adapter.wait_for_state(State.READY, timeout=WAIT)
        await stub.do({"do": "send_frame", "frame": {"type": "__test_panic"}})
        down = await rec.fatal()
        assert (down.code, down.retryable) == ("restart_budget_exhausted", False)
        assert "test guest panic requested" in down.message
        await asyncio.wait_for(adapter.wait_closed(), WAIT)
        assert adapter.health().down is not None
        result = await adapter.send("chan1", "x")
        assert not result.success
        assert (result.error or "").startswith("relay adapter down: restart budget exhausted")
        with pytest.raises(AdapterDown):
            adapter.max_message_length()
    finally:
        await adapter.disconnect()


async def test_start_refusal_is_an_error_without_the_secret(plugin: Plugin) -> None:
    secret = "another-secret-4c1d"
    config = AdapterConfig("ftp://connector.example", gateway_id="gw", secret=secret)
    adapter = RelayAdapter(plugin, config)
    with pytest.raises(StartRefused) as refused:
        await adapter.connect(timeout=WAIT)
    text = str(refused.value)
    assert "unsupported scheme" in text, text
    assert secret not in text
    assert secret not in repr(refused.value)
    assert not adapter.is_running
    await adapter.disconnect()


class _NoRelayImports:
    """The probe calls no ``hermes:relay/host`` import."""

    def __getattr__(self, name: str) -> Any:
        def called(*args: Any) -> None:
            raise AssertionError(f"the probe called the {name} import")

        return called


def test_guest_gets_no_environment_arguments_or_preopens(monkeypatch: pytest.MonkeyPatch) -> None:
    # The host process has environment variables and arguments; none of them,
    # and no directory, may reach the guest through the host's WASI context.
    monkeypatch.setenv("RELAY_PROBE_MARKER", "visible-to-the-host-only")
    probe = Plugin(bytes(wat2wasm(WASI_PROBE.read_text())))
    try:
        inst = GuestInstance(probe, HostLimits(), _NoRelayImports(), label="probe", redact=str)
        counts = {name: inst.call(name) for name in ("environment", "arguments", "preopens")}
    finally:
        probe.close()
    assert counts == {"environment": 0, "arguments": 0, "preopens": 0}


async def test_test_guest_does_not_see_the_host_environment(
    test_plugin: Plugin, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test guest has no hook that prints its environment, but Rust's panic
    # hook reads RUST_BACKTRACE from it: set in the host process, it must not
    # change the guest's panic output (no "stack backtrace", the usual note).
    monkeypatch.setenv("RUST_BACKTRACE", "full")
    adapter = RelayAdapter(test_plugin, fast_config(stub.url))
    rec = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT)
    try:
        await stub.do({"do": "send_frame", "frame": {"type": "__test_panic"}})
        fatal = await rec.fatal()
        assert "test guest panic requested" in fatal.message, fatal.message
        assert "note: run with `RUST_BACKTRACE=1`" in fatal.message, fatal.message
        assert "stack backtrace" not in fatal.message, fatal.message
    finally:
        await adapter.disconnect()
