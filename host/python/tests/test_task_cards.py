"""WIT 0.2 task cards and the Discord command manifest through the real
component, over a real WebSocket, against the stub connector:
``task_card`` / ``task_card_stop`` frames (their ``card_id`` keyed by the
turn), the literal op gate, a declined card; ``command_manifest`` on the
Discord ``hello`` (validated, a bad entry dropped, never failing the
handshake) and its checks; and a 0.1.0 component answering "not supported"
without calling anything.

A descriptor other than the stub's default is applied by a re-dial (the
script sets it, then closes the connection). Every wait has a deadline;
none stands in for synchronisation: "nothing was sent" is proved by a
typing frame sent after it."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from relay_host import AdapterConfig, Identity, Plugin, RelayAdapter, State

from conftest import (
    WAIT,
    Recorder,
    Stub,
    actions_until_typing,
    apply_descriptor,
    guild_event,
    ready_adapter,
)

FIXTURE_0_1_0 = Path(__file__).parents[2] / "tests" / "fixtures" / "relay-adapter-0.1.0.wasm"
UNSUPPORTED = "not supported by this component (api 0.1.0)"

BASE_OPS = ["send", "edit", "typing", "follow_up", "get_chat_info"]
CARD_OPS = [*BASE_OPS, "task_card", "task_card_stop"]

STEPS: list[dict[str, Any]] = [
    {"type": "task", "id": "s1", "title": "Read the logs", "status": "complete"},
    {"type": "task", "id": "s2", "title": "Fix the test", "status": "in_progress"},
]

#: A valid command (its description longer than Discord's 100 units) and a
#: bad one (an upper-case name, with a space).
MODEL_COMMAND: dict[str, Any] = {
    "name": "model",
    "description": "Pick a model " + "x" * 120,
    "options": [{"type": 3, "name": "name", "description": "Model", "required": False}],
}
BAD_COMMAND: dict[str, Any] = {"name": "Bad Name", "description": "x"}


def descriptor(platform: str, ops: list[str]) -> dict[str, Any]:
    return {
        "contract_version": 1,
        "platform": platform,
        "label": platform.title(),
        "max_message_length": 2000,
        "supports_draft_streaming": False,
        "supports_edit": True,
        "supports_threads": True,
        "markdown_dialect": "discord" if platform == "discord" else "mrkdwn",
        "len_unit": "chars",
        "supported_ops": ops,
    }


async def apply_ops(adapter: RelayAdapter, stub: Stub, value: dict[str, Any]) -> None:
    """Re-dials so the next handshake gets ``value``."""
    applied = await apply_descriptor(adapter, stub, value)
    assert applied["supported_ops"] == value["supported_ops"]


async def card_adapter(
    plugin: Plugin, stub: Stub, ops: list[str] = CARD_OPS
) -> tuple[RelayAdapter, Recorder]:
    """Ready with a Discord descriptor listing ``ops``, and ``chan1``'s route
    learned (an accepted guild message ``m-in``)."""
    adapter, rec = await ready_adapter(plugin, stub)
    await apply_ops(adapter, stub, descriptor("discord", ops))
    await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-in")})
    (await rec.message()).accept()
    return adapter, rec


async def test_task_card_frames_keyed_by_the_turn(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await card_adapter(plugin, stub)
    try:
        assert adapter.supports_op("task_card", "chan1")
        mark = stub.mark()
        results = [
            await asyncio.wait_for(call, WAIT)
            for call in (
                adapter.task_card("chan1", STEPS, reply_to="m-in", metadata={"k": "v"}),
                # No anchor at all: the root card.
                adapter.task_card("chan1", STEPS[:1]),
                # No reply_to: the metadata's message_id keys the turn.
                adapter.task_card("chan1", [], metadata={"message_id": "m-7"}),
                adapter.task_card_stop("chan1", reply_to="m-in", metadata={"k": "v"}),
            )
        ]
        assert all(r.success and not r.declined for r in results), results
        actions = await actions_until_typing(adapter, stub, mark)
        scope = {"scope_id": "guildA", "user_id": "u1"}
        assert actions == [
            {
                "op": "task_card",
                "chat_id": "chan1",
                "card_id": "turn:m-in",
                "chunks": STEPS,
                "metadata": {"k": "v", **scope},
            },
            {
                "op": "task_card",
                "chat_id": "chan1",
                "card_id": "turn:root",
                "chunks": STEPS[:1],
                "metadata": scope,
            },
            {
                "op": "task_card",
                "chat_id": "chan1",
                "card_id": "turn:m-7",
                "chunks": [],
                "metadata": {"message_id": "m-7", **scope},
            },
            {
                "op": "task_card_stop",
                "chat_id": "chan1",
                "card_id": "turn:m-in",
                "metadata": {"k": "v", **scope},
            },
        ]
        # The frames are tagged with the chat's platform.
        cards = [
            f["json"]
            for f in stub.frames
            if f["seq"] >= mark and f["json"].get("type") == "outbound"
        ]
        assert {c["platform"] for c in cards} == {"discord"}

        # Bad arguments raise before anything reaches the component.
        with pytest.raises(TypeError, match="chunks"):
            await adapter.task_card("chan1", {"type": "task"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"chunks\[1\]"):
            await adapter.task_card("chan1", [{}, "step"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="chunks"):
            await adapter.task_card("chan1", [{"progress": math.nan}])
        with pytest.raises(TypeError, match="reply_to"):
            await adapter.task_card_stop("chan1", reply_to=7)  # type: ignore[arg-type]
        assert adapter.health().restarts == 0
    finally:
        await adapter.disconnect()


async def test_a_slack_card_threads_on_the_reply_to_id(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub, identities=[Identity("slack", "B1")])
    try:
        await apply_ops(adapter, stub, descriptor("slack", CARD_OPS))
        event = {
            "text": "plan it",
            "message_type": "text",
            "message_id": "1700000000.000100",
            "source": {"platform": "slack", "chat_id": "C1", "chat_type": "group", "user_id": "U1"},
        }
        await stub.do({"do": "push_inbound", "event": event})
        (await rec.message()).accept()
        mark = stub.mark()
        turn = "1700000000.000100"
        card = await asyncio.wait_for(adapter.task_card("C1", STEPS, reply_to=turn), WAIT)
        assert card.success, card
        # The caller's own thread_ts wins over the reply-to default.
        own = {"thread_ts": "1699999999.000001"}
        mine = await asyncio.wait_for(
            adapter.task_card("C1", STEPS, reply_to=turn, metadata=own), WAIT
        )
        assert mine.success, mine
        actions = await actions_until_typing(adapter, stub, mark, "C1")
        assert [(a["op"], a["card_id"], a["metadata"].get("thread_ts")) for a in actions] == [
            ("task_card", f"turn:{turn}", turn),
            ("task_card", f"turn:{turn}", "1699999999.000001"),
        ]
    finally:
        await adapter.disconnect()


async def test_task_cards_need_their_ops_listed(plugin: Plugin, stub: Stub) -> None:
    # The stub's default Discord descriptor lists neither op.
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-in")})
        (await rec.message()).accept()
        assert not adapter.supports_op("task_card", "chan1")
        mark = stub.mark()
        card = await asyncio.wait_for(adapter.task_card("chan1", STEPS, reply_to="m-in"), WAIT)
        stop = await asyncio.wait_for(adapter.task_card_stop("chan1", reply_to="m-in"), WAIT)
        assert (card.success, card.ambiguous, card.declined) == (False, False, False), card
        assert card.error == "relay op task_card not supported by the connector"
        assert (stop.success, stop.ambiguous) == (False, False), stop
        assert stop.error == "relay op task_card_stop not supported by the connector"
        assert await actions_until_typing(adapter, stub, mark) == []

        # Each op is gated on its own literal entry: `task_card` alone does
        # not allow the stop.
        await apply_ops(adapter, stub, descriptor("discord", [*BASE_OPS, "task_card"]))
        mark = stub.mark()
        card = await asyncio.wait_for(adapter.task_card("chan1", STEPS, reply_to="m-in"), WAIT)
        assert card.success, card
        stop = await asyncio.wait_for(adapter.task_card_stop("chan1", reply_to="m-in"), WAIT)
        assert stop.error == "relay op task_card_stop not supported by the connector", stop
        actions = await actions_until_typing(adapter, stub, mark)
        assert [a["op"] for a in actions] == ["task_card"]
    finally:
        await adapter.disconnect()


async def test_a_declined_card_is_reported_without_a_fallback(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await card_adapter(plugin, stub)
    try:
        await stub.do(
            {"do": "set_outbound", "op": "task_card", "reply": "egress_declined", "once": True}
        )
        await rec.barrier(stub)
        mark = stub.mark()
        declined = await asyncio.wait_for(adapter.task_card("chan1", STEPS, reply_to="m-in"), WAIT)
        assert (declined.success, declined.declined, declined.ambiguous) == (
            False,
            True,
            False,
        ), declined
        assert declined.code == "egress_declined"
        assert declined.raw_value()["code"] == "egress_declined"
        # One frame, no fallback (no text message instead).
        actions = await actions_until_typing(adapter, stub, mark)
        assert [(a["op"], a["card_id"]) for a in actions] == [("task_card", "turn:m-in")]
        # `once`: the next card goes through.
        again = await asyncio.wait_for(adapter.task_card("chan1", STEPS, reply_to="m-in"), WAIT)
        assert (again.success, again.declined) == (True, False), again
    finally:
        await adapter.disconnect()


def hello_frames(stub: Stub, platform: str) -> list[dict[str, Any]]:
    return [h for h in stub.frames_of("hello") if h.get("platform") == platform]


async def test_the_command_manifest_goes_on_the_discord_hello_validated(
    plugin: Plugin, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relay_host")
    manifest = [MODEL_COMMAND, BAD_COMMAND]
    adapter, _ = await ready_adapter(plugin, stub, command_manifest=manifest)
    try:
        hello = (await stub.frame("hello"))["json"]
        assert (hello["platform"], hello["botId"]) == ("discord", "B1")
        # The bad entry dropped (with a warning), the description cut to
        # Discord's 100 units, the rest verbatim.
        assert hello["command_manifest"] == [
            {
                "name": "model",
                "description": MODEL_COMMAND["description"][:100],
                "options": MODEL_COMMAND["options"],
            }
        ]
        assert "relay command manifest: entry 1 skipped" in caplog.text
        # Every hello of this adapter carries it: a re-dial's too.
        await apply_ops(adapter, stub, descriptor("discord", BASE_OPS))
        hellos = hello_frames(stub, "discord")
        assert len(hellos) == 2, hellos
        assert hellos[1]["command_manifest"] == hello["command_manifest"]
        # The config the adapter was given is not changed.
        assert adapter.config.command_manifest == manifest
    finally:
        await adapter.disconnect()


async def test_a_bad_only_manifest_still_reaches_ready(
    plugin: Plugin, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relay_host")
    adapter, rec = await ready_adapter(plugin, stub, command_manifest=[BAD_COMMAND, 7, "ping"])
    try:
        assert adapter.state is State.READY
        hello = (await stub.frame("hello"))["json"]
        # Nothing valid left: the hello goes without a manifest.
        assert hello["platform"] == "discord"
        assert "command_manifest" not in hello, hello
        for entry in range(3):
            assert f"relay command manifest: entry {entry} skipped" in caplog.text
        # And traffic flows.
        await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-1")})
        message = await rec.message()
        message.accept()
        assert (await asyncio.wait_for(adapter.send("chan1", "echo"), WAIT)).success
        assert adapter.health().restarts == 0
    finally:
        await adapter.disconnect()


async def test_no_manifest_no_field(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await ready_adapter(plugin, stub)
    try:
        hello = (await stub.frame("hello"))["json"]
        assert hello["platform"] == "discord"
        assert "command_manifest" not in hello, hello
    finally:
        await adapter.disconnect()


def test_command_manifest_is_checked_and_passed_only_to_0_2() -> None:
    for bad in ("[]", {"name": "model"}, ({"name": "model"},), None):
        with pytest.raises(TypeError, match="command_manifest must be a list"):
            AdapterConfig("ws://127.0.0.1:1", command_manifest=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="command_manifest"):
        AdapterConfig("ws://127.0.0.1:1", command_manifest=[{"x": math.inf}])
    with pytest.raises(TypeError, match="command_manifest"):
        AdapterConfig("ws://127.0.0.1:1", command_manifest=[{"x": object()}])
    config = AdapterConfig("ws://127.0.0.1:1")
    with pytest.raises(TypeError, match="command_manifest"):
        config.replace(command_manifest="[]")

    assert config.command_manifest == []
    assert getattr(config.to_wit("0.2.0"), "command-manifest") == ""
    listed = config.replace(command_manifest=[{"name": "model", "description": "Pick"}, 7])
    # Passed as JSON text, unvalidated: the component validates it.
    wit = listed.to_wit("0.2.0")
    assert getattr(wit, "command-manifest") == '[{"name":"model","description":"Pick"},7]'
    assert not hasattr(listed.to_wit("0.1.0"), "command-manifest")


async def test_a_0_1_0_component_answers_task_cards_not_supported(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay_host")
    old = Plugin.from_file(FIXTURE_0_1_0)
    try:
        assert (old.api_version, old.supports_lanes) == ("0.1.0", False)
        adapter, rec = await ready_adapter(old, stub, command_manifest=[MODEL_COMMAND])
        try:
            assert "command_manifest ignored" in caplog.text
            hello = (await stub.frame("hello"))["json"]
            assert "command_manifest" not in hello, hello
            await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-01")})
            (await rec.message()).accept()
            mark = stub.mark()
            results = [
                await asyncio.wait_for(call, WAIT)
                for call in (
                    adapter.task_card("chan1", STEPS, reply_to="m-01"),
                    adapter.task_card_stop("chan1", reply_to="m-01"),
                )
            ]
            for result in results:
                assert (result.success, result.ambiguous, result.declined, result.error) == (
                    False,
                    False,
                    False,
                    UNSUPPORTED,
                ), result
                assert result.raw_value() == {"success": False, "error": UNSUPPORTED}
            # Nothing reached the wire, and the missing export was never
            # called (that would have failed like a trap: a restart).
            assert await actions_until_typing(adapter, stub, mark) == []
            assert adapter.health().restarts == 0
            assert rec.fatals.empty()
            assert adapter.state is State.READY
        finally:
            await adapter.disconnect()
    finally:
        old.close()
