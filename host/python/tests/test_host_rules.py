"""The host's own rules, each where it once failed: one completion per
command also when the adapter stops early, no wait that can never end, a
caller's bad argument never mistaken for a trap, and no secret in a log line
even when the guest puts it into text the host logs."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from relay_host import AdapterStopped, Plugin, RelayAdapter, State

from conftest import WAIT, Recorder, Stub, fast_config, ready_adapter


async def test_stop_before_the_drain_ends_resolves_an_in_flight_send_ambiguous(
    plugin: Plugin, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    # Long idle and drain waits in the component: the host's disconnect
    # timeout ends the adapter first, with the send's frame already written.
    adapter, rec = await ready_adapter(plugin, stub, going_idle_timeout=5.0, drain_grace=5.0)
    try:
        await stub.do({"do": "set_outbound", "reply": "no_answer", "once": True})
        await rec.barrier(stub)
        mark = stub.mark()
        in_flight = asyncio.ensure_future(adapter.send("chan1", "in flight"))
        await stub.frame("outbound", after=mark)
        await adapter.disconnect(timeout=0.2)
        result = await asyncio.wait_for(in_flight, WAIT)
        # The connector may have applied it: ambiguous, not a definite failure.
        assert (result.success, result.error, result.ambiguous) == (
            False,
            "relay adapter stopped",
            True,
        ), result
        assert adapter.health().pending == 0
        assert adapter.state is State.STOPPED
        # The shutdown command, failed by the stop after nobody awaited it any
        # more, leaves no "exception was never retrieved" behind.
        gc.collect()
        await asyncio.sleep(0)
        assert "never retrieved" not in caplog.text, caplog.text
    finally:
        await adapter.disconnect()


async def test_wait_for_state_after_the_stop_raises_at_once(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await ready_adapter(plugin, stub)
    await adapter.disconnect()
    # No state change can come any more: an unbounded wait must not hang.
    with pytest.raises(AdapterStopped):
        await asyncio.wait_for(adapter.wait_for_state(State.READY), 1.0)
    assert await adapter.wait_for_state(State.STOPPED) is State.STOPPED


async def test_bad_arguments_are_refused_before_the_component(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        # A send in flight must survive the bad calls below.
        await stub.do({"do": "set_outbound", "reply": "no_answer", "once": True})
        await rec.barrier(stub)
        mark = stub.mark()
        in_flight = asyncio.ensure_future(adapter.send("chan1", "in flight"))
        await stub.frame("outbound", after=mark)

        with pytest.raises(TypeError, match="chat_id must be a str"):
            await adapter.send(12345, "an int chat id")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="content is not valid Unicode"):
            await adapter.send("chan1", "half a pair: \ud83d")
        with pytest.raises(TypeError, match="reply_to"):
            await adapter.send("chan1", "x", reply_to=7)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="chat_id"):
            await adapter.get_chat_info(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="session_key"):
            await adapter.interrupt(b"key")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="chat_id"):
            adapter.max_message_length(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="text"):
            adapter.message_len("\udcff")
        with pytest.raises(TypeError, match="platform"):
            adapter.prime_route("chan1", None)  # type: ignore[arg-type]

        # Nothing reached the component: no trap, no restart, no lost request.
        await stub.do({"do": "answer", "result": {"success": True, "message_id": "m-late"}})
        result = await asyncio.wait_for(in_flight, WAIT)
        assert (result.success, result.message_id) == (True, "m-late"), result
        assert adapter.health().restarts == 0
        assert rec.fatals.empty()
        assert adapter.state is State.READY
        # Text the JSON metadata carries is escaped, so any str goes.
        ok = await asyncio.wait_for(
            adapter.send("chan1", "fine", metadata={"note": "\ud83d"}), WAIT
        )
        assert ok.success, ok
    finally:
        await adapter.disconnect()


async def test_secret_is_redacted_from_guest_controlled_text(
    test_plugin: Plugin, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "t0p-s3cret-91b2"
    # As read from a file: with its newline. Guest stdio is logged line by
    # line, so only the stripped value can match there.
    config = fast_config(stub.url, gateway_id="gw-test", secret=secret + "\n")
    adapter = RelayAdapter(test_plugin, config)
    rec = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT)
    try:
        # The guest writes it to stderr and stdout, and dials a URL with it
        # (refused by the dial policy, which logs the target).
        await stub.do(
            {"do": "send_frame", "frame": {"type": "__test_stdio", "text": f"key={secret}"}},
            {
                "do": "send_frame",
                "frame": {"type": "__test_dial", "url": f"ws://elsewhere.invalid/{secret}"},
            },
        )
        await rec.barrier(stub)
    finally:
        await adapter.disconnect()
    logged = caplog.text
    assert "key=<redacted>" in logged, logged
    assert "ws://elsewhere.invalid/<redacted> is not the configured connector" in logged, logged
    assert secret not in logged
