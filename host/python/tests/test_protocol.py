"""The real relay component in this host, over a real WebSocket, against the
stub connector: one test per rule. Every wait has a deadline; none stands in
for synchronisation."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import pytest

from relay_host import AdapterStopped, Plugin, State

from conftest import WAIT, Stub, dm_event, guild_event, ready_adapter

SECRET = "s3cret-do-not-leak-7f2c"
GATEWAY_ID = "gw-test"


async def test_handshake_with_bearer_and_capabilities(
    plugin: Plugin, make_stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = await make_stub("--secret", SECRET)
    adapter, _ = await ready_adapter(plugin, stub, gateway_id=GATEWAY_ID, secret=SECRET)
    try:
        # The stub verified the bearer token (else it closes with 4401).
        await stub.do(
            {"expect": "handshakes", "n": 1},
            {"expect": "header", "name": "authorization", "conn": 0},
        )
        hello = (await stub.frame("hello"))["json"]
        assert hello == {"type": "hello", "platform": "discord", "botId": "B1"}
        assert adapter.state is State.READY
        assert adapter.current_state() is State.READY
        descriptor = adapter.descriptor()
        assert descriptor is not None
        assert descriptor["platform"] == "discord"
        assert adapter.max_message_length() == 2000
        assert adapter.message_len("héllo wörld") == 11
        assert adapter.supports_op("edit")
        assert adapter.fronts_platform("discord")
        assert not adapter.fronts_platform("telegram")
        stats = adapter.stats()
        assert stats["dials"] == 1
        assert stats["unauthorized"] == 0
        await adapter.disconnect()
        await stub.finish()
    finally:
        await adapter.disconnect()
    # The secret never shows: not in a repr, a str, or any log line.
    for text in (repr(adapter.config), str(adapter.config), repr(adapter), caplog.text):
        assert SECRET not in text
    # Nor the bearer token derived from it: no upgrade header is logged.
    assert "Bearer" not in caplog.text
    assert "authorization" not in caplog.text.lower()
    assert "Secret(<redacted>)" in repr(adapter.config)


async def test_echo_reattaches_scope(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        await stub.do({"do": "push_inbound", "event": guild_event("what's up?", "m-1")})
        message = await rec.message()
        assert (message.chat_id, message.chat_type) == ("chan1", "group")
        assert (message.scope_id, message.user_id, message.buffer_id) == ("guildA", "u1", None)
        assert message.text == "what's up?"
        assert message.event["message_id"] == "m-1"
        message.accept()
        result = await asyncio.wait_for(
            adapter.send(message.chat_id, "echo: " + message.text), WAIT
        )
        assert result.success, result
        assert result.message_id == "m1"
        frame = (await stub.frame("outbound"))["json"]
        assert frame["platform"] == "discord"
        action = frame["action"]
        assert action["op"] == "send"
        assert action["content"] == "echo: what's up?"
        # Re-attached from the inbound's source: the connector can route it.
        assert action["metadata"]["scope_id"] == "guildA"
        assert action["metadata"]["user_id"] == "u1"

        # A DM reply carries user_id only.
        await stub.do({"do": "push_inbound", "event": dm_event("psst", "m-2")})
        dm = await rec.message()
        dm.accept()
        mark = stub.mark()
        assert (await adapter.send(dm.chat_id, "hi")).success
        dm_frame = (await stub.frame("outbound", after=mark))["json"]
        assert dm_frame["action"]["metadata"] == {"user_id": "u7"}

        # The other request kinds resolve exactly once each.
        typing = await asyncio.wait_for(adapter.send_typing("chan1"), WAIT)
        assert typing.success, typing
        edited = await asyncio.wait_for(adapter.edit_message("chan1", "m1", "edited"), WAIT)
        assert (edited.success, edited.message_id) == (True, "m1"), edited
        await stub.do({"do": "set_chat_info", "chat_id": "chan1", "name": "#ops", "type": "group"})
        await rec.barrier(stub)
        info = await asyncio.wait_for(adapter.get_chat_info("chan1"), WAIT)
        assert info.as_dict() == {"name": "#ops", "type": "group"}
        follow = await asyncio.wait_for(
            adapter.send_follow_up(
                "agent:main:discord:group:chan1:u1", "discord.interaction_token", "more"
            ),
            WAIT,
        )
        assert follow.success, follow
    finally:
        await adapter.disconnect()


async def test_buffered_ack_only_after_accept(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        await stub.do(
            {
                "do": "push_inbound",
                "event": guild_event("from the buffer", "m-b1"),
                "bufferId": "b1",
            }
        )
        message = await rec.message()
        assert message.buffer_id == "b1"
        # A request round trip after the delivery: its frame follows anything
        # the adapter wrote before, so no ack can be in flight unseen.
        mark = stub.mark()
        assert (await asyncio.wait_for(adapter.send_typing("chan1"), WAIT)).success
        await stub.frame("outbound", after=mark)
        assert stub.frames_of("inbound_ack") == []
        message.accept()
        ack = (await stub.frame("inbound_ack"))["json"]
        assert ack == {"type": "inbound_ack", "bufferId": "b1"}
        message.accept()  # a second answer is ignored
        message.reject()
        await stub.do(
            {"expect": "acked", "bufferId": "b1", "count": 1}, {"expect": "buffered", "n": 0}
        )
        await adapter.disconnect()
        await stub.finish()
        assert len(stub.frames_of("inbound_ack")) == 1
    finally:
        await adapter.disconnect()


async def test_passthrough_forward_is_delivered(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        interaction = {
            "type": 2,
            "id": "i1",
            "channel_id": "c1",
            "guild_id": "g1",
            "data": {"name": "model", "options": [{"name": "name", "type": 3, "value": "gpt-x"}]},
            "member": {"user": {"id": "u1", "username": "ben"}},
        }
        body = json.dumps(interaction)
        await stub.do(
            {
                "do": "passthrough_forward",
                "platform": "discord",
                "botId": "B1",
                "method": "POST",
                "path": "/interactions/discord/B1",
                "headers": [["content-type", "application/json"]],
                "bodyB64": base64.b64encode(body.encode()).decode(),
                "bufferId": "pb-1",
            }
        )
        message = await rec.message()
        assert message.text == "/model gpt-x"
        assert (message.chat_id, message.scope_id, message.user_id) == ("c1", "g1", "u1")
        assert message.buffer_id == "pb-1"
        message.accept()
        ack = (await stub.frame("inbound_ack"))["json"]
        assert ack["bufferId"] == "pb-1"
    finally:
        await adapter.disconnect()


async def test_interrupts_both_ways(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    key = "agent:main:discord:group:chan1:u1"
    try:
        await stub.do({"do": "interrupt_inbound", "session_key": key, "chat_id": "chan1"})
        assert await rec.interrupt() == (key, "chan1")
        await asyncio.wait_for(adapter.interrupt(key, "stopped by the test"), WAIT)
        frame = (await stub.frame("interrupt"))["json"]
        assert frame == {"type": "interrupt", "session_key": key, "reason": "stopped by the test"}
        await asyncio.wait_for(adapter.interrupt(key), WAIT)
        await stub.wait_for(lambda: len(stub.frames_of("interrupt")) == 2, "the second interrupt")
        second = stub.frames_of("interrupt")[1]
        assert second["reason"] is None
    finally:
        await adapter.disconnect()


async def test_4401_fresh_token_retry_then_disabled(plugin: Plugin, make_stub) -> None:
    stub = await make_stub("--secret", SECRET)
    # Only the immediate fresh-token re-dial can beat this ladder.
    adapter, rec = await ready_adapter(
        plugin,
        stub,
        gateway_id=GATEWAY_ID,
        secret=SECRET,
        reconnect_initial=60.0,
        reconnect_max=60.0,
    )
    try:
        # The secret is revoked: the connector closes the live connection
        # with 4401 and refuses the re-dial with 4401 as well.
        await stub.do(
            {"do": "refuse_next", "close_code": 4401, "reason": "unauthorized", "count": 1},
            {"do": "close", "code": 4401, "reason": "unauthorized"},
        )
        fatal = await rec.fatal()
        assert (fatal.code, fatal.retryable) == ("relay_disabled", False)
        assert await adapter.wait_for_state(State.DISABLED, timeout=WAIT) is State.DISABLED
        # Exactly one fresh-token retry, with a bearer of its own.
        await stub.do(
            {"expect": "connections", "n": 2},
            {"expect": "header", "name": "authorization", "conn": 1},
            {"expect": "closed", "conn": 1, "code": 4401},
        )
        stats = adapter.stats()
        assert stats["dials"] == 2, stats
        assert stats["unauthorized"] == 2, stats
        # Terminal: sends fail definitely, and nothing more is dialed.
        result = await asyncio.wait_for(adapter.send("chan1", "x"), WAIT)
        assert not result.success
        assert not result.ambiguous
        await asyncio.wait_for(adapter.release_redial(), WAIT)
        assert adapter.stats()["dials"] == 2
        await adapter.disconnect()
        await stub.finish()
    finally:
        await adapter.disconnect()
    assert "disabled" in [s for s, _ in rec.states]


async def test_shutdown_sends_going_idle_and_closes(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    await adapter.disconnect()
    frame = (await stub.frame("going_idle"))["json"]
    assert frame == {"type": "going_idle"}
    assert adapter.state is State.STOPPED
    assert not adapter.is_running
    await stub.do(
        {"expect": "idle"}, {"expect": "closed", "conn": 0, "code": 1000, "by": "gateway"}
    )
    await stub.finish()
    states = [s for s, _ in rec.states]
    assert states[-2:] == ["idle", "stopped"], states
    # After the stop every call resolves at once, definitely.
    result = await adapter.send("chan1", "too late")
    assert (result.success, result.ambiguous) == (False, False)
    assert result.error == "relay adapter stopped"
    with pytest.raises(AdapterStopped):
        await adapter.interrupt("k")
    with pytest.raises(AdapterStopped):
        adapter.max_message_length()


async def test_outbound_timeout_fires_from_the_deadline(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub, outbound_timeout=0.3)
    try:
        await stub.do({"do": "set_outbound", "op": "send", "reply": "no_answer", "once": True})
        await rec.barrier(stub)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await asyncio.wait_for(adapter.send("chan1", "into the void"), WAIT)
        elapsed = loop.time() - started
        assert (result.success, result.ambiguous) == (False, True), result
        assert result.error == "relay outbound timed out"
        # The single timer (set-deadline, on-deadline) fired on time: not
        # early, and not much late.
        assert 0.3 <= elapsed < 1.5, elapsed
    finally:
        await adapter.disconnect()


async def test_reconnects_after_a_close_and_binary_frames(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        await stub.do({"do": "close", "code": 1011, "reason": "overloaded"})
        await adapter.wait_for_state(State.RECONNECTING, timeout=WAIT)
        assert await adapter.wait_for_state(State.READY, timeout=WAIT) is State.READY
        await stub.do({"expect": "handshakes", "n": 2})
        # One frame as binary messages cut inside a multi-byte character.
        frame = {"type": "inbound", "event": guild_event("héllo wörld ✓", "m-bin")}
        await stub.do({"do": "send_split", "frame": frame, "at": [10, 60, 61], "binary": True})
        message = await rec.message()
        assert message.text == "héllo wörld ✓"
        message.accept()
    finally:
        await adapter.disconnect()


async def test_go_dormant_then_buffered_replay_is_acked(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        # Parked so the buffered push below cannot race the re-dial.
        await asyncio.wait_for(adapter.hold_redial(), WAIT)
        assert await asyncio.wait_for(adapter.go_dormant(), WAIT) is True
        await adapter.wait_for_state(State.DORMANT, timeout=WAIT)
        await stub.do(
            {"expect": "idle"},
            {"do": "push_inbound", "event": dm_event("while asleep", "m-zz")},
            {"expect": "buffered", "n": 1},
        )
        await asyncio.wait_for(adapter.release_redial(), WAIT)
        message = await rec.message()
        assert message.text == "while asleep"
        assert message.buffer_id == "buf-1"
        message.accept()
        ack = (await stub.frame("inbound_ack"))["json"]
        assert ack["bufferId"] == "buf-1"
        await stub.do({"expect": "buffered", "n": 0})
        await adapter.disconnect()
        await stub.finish()
    finally:
        await adapter.disconnect()


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
async def test_a_released_component_runs_through_its_own_interface_names(
    plugin: Plugin, stub: Stub, version: str
) -> None:
    # The committed release builds against the frozen WIT versions
    # (host/tests/fixtures/README.md): each, bound under its own version's
    # names, handshakes and echoes like the built-in component.
    fixture = Path(__file__).parents[2] / "tests" / "fixtures" / f"relay-adapter-{version}.wasm"
    old = Plugin.from_file(fixture)
    try:
        assert (old.api_version, plugin.api_version) == (version, "0.2.0")
        adapter, rec = await ready_adapter(old, stub)
        try:
            await stub.do({"do": "push_inbound", "event": guild_event(f"from {version}", "m-01")})
            message = await rec.message()
            message.accept()
            result = await asyncio.wait_for(adapter.send(message.chat_id, "echo"), WAIT)
            assert result.success, result
            action = (await stub.frame("outbound"))["json"]["action"]
            assert (action["content"], action["metadata"]["scope_id"]) == ("echo", "guildA")
        finally:
            await adapter.disconnect()
    finally:
        old.close()
