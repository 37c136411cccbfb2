"""The typed lanes of WIT 0.2.0 (``lane``: deletes, reactions, processing
reactions, threads, auto-thread feedback) through the real component, over
a real WebSocket, against the stub connector; and a 0.1.0 component, which
has no ``lane`` export, answering "not supported" without calling it.

A descriptor other than the stub's default is applied by a re-dial: the
script sets it, then closes the connection, and the adapter's next ``hello``
gets it. Every wait has a deadline; none stands in for synchronisation."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from relay_host import Identity, Plugin, RelayAdapter, State

from conftest import (
    WAIT,
    Recorder,
    Stub,
    actions_until_typing,
    apply_descriptor,
    guild_event,
    ready_adapter,
)

#: The stub's Discord descriptor (§2.3) with the ops the lanes need.
LANE_OPS = [
    "send",
    "edit",
    "typing",
    "follow_up",
    "get_chat_info",
    "delete",
    "react",
    "thread_create",
    "thread_rename",
]

FIXTURE_0_1_0 = Path(__file__).parents[2] / "tests" / "fixtures" / "relay-adapter-0.1.0.wasm"
UNSUPPORTED = "not supported by this component (api 0.1.0)"


def discord_descriptor(ops: list[str]) -> dict[str, Any]:
    return {
        "contract_version": 1,
        "platform": "discord",
        "label": "Discord",
        "max_message_length": 2000,
        "supports_draft_streaming": False,
        "supports_edit": True,
        "supports_threads": True,
        "markdown_dialect": "discord",
        "len_unit": "chars",
        "supported_ops": ops,
    }


async def apply_ops(adapter: RelayAdapter, stub: Stub, ops: list[str]) -> None:
    """Re-dials so the next handshake gets a descriptor listing ``ops``."""
    await apply_descriptor(adapter, stub, discord_descriptor(ops))
    assert adapter.supports_op("react") == ("react" in ops)


async def lane_adapter(plugin: Plugin, stub: Stub) -> tuple[RelayAdapter, Recorder]:
    adapter, rec = await ready_adapter(plugin, stub)
    await apply_ops(adapter, stub, LANE_OPS)
    return adapter, rec


async def greet(stub: Stub, rec: Recorder, message_id: str = "m-in") -> Any:
    """An accepted guild message in ``chan1``: the chat's route is known."""
    await stub.do({"do": "push_inbound", "event": guild_event("hi", message_id)})
    message = await rec.message()
    message.accept()
    return message


async def test_delete_only_when_the_descriptor_lists_it(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        # The stub's default Discord descriptor does not list `delete`.
        assert not adapter.supports_op("delete")
        mark = stub.mark()
        refused = await asyncio.wait_for(adapter.delete_message("chan1", "m-9"), WAIT)
        assert (refused.success, refused.ambiguous) == (False, False), refused
        assert refused.error == "relay op delete not supported by the connector"
        assert await actions_until_typing(adapter, stub, mark) == []

        await apply_ops(adapter, stub, LANE_OPS)
        await greet(stub, rec)
        mark = stub.mark()
        deleted = await asyncio.wait_for(
            adapter.delete_message("chan1", "m-9", {"reason": "cleanup"}), WAIT
        )
        assert deleted.success, deleted
        frame = (await stub.frame("outbound", after=mark))["json"]
        assert frame["platform"] == "discord"
        action = frame["action"]
        assert (action["op"], action["chat_id"], action["message_id"]) == (
            "delete",
            "chan1",
            "m-9",
        )
        # The caller's metadata, with the chat's scope re-attached.
        assert action["metadata"] == {"reason": "cleanup", "scope_id": "guildA", "user_id": "u1"}
    finally:
        await adapter.disconnect()


async def test_stop_typing_clears_a_slack_chats_status(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub, identities=[Identity("slack", "B1")])
    try:
        event = {
            "text": "hi",
            "message_type": "text",
            "message_id": "1700000000.000100",
            "source": {"platform": "slack", "chat_id": "D1", "chat_type": "dm", "user_id": "U1"},
        }
        await stub.do({"do": "push_inbound", "event": event})
        (await rec.message()).accept()
        mark = stub.mark()
        # Not a Slack chat (no route says so): refused, nothing sent.
        other = await asyncio.wait_for(adapter.stop_typing("chan1"), WAIT)
        assert (other.success, other.ambiguous) == (False, False), other
        assert "only Slack chats" in (other.error or "")
        cleared = await asyncio.wait_for(adapter.stop_typing("D1"), WAIT)
        assert cleared.success, cleared
        actions = await actions_until_typing(adapter, stub, mark, chat_id="D1")
        assert actions == [
            {
                "op": "typing",
                "chat_id": "D1",
                "content": "",
                # The Slack DM status anchor: the chat's last inbound message.
                "metadata": {"user_id": "U1", "thread_id": "1700000000.000100"},
            }
        ]
    finally:
        await adapter.disconnect()


async def test_react_frame_fields(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await lane_adapter(plugin, stub)
    try:
        await greet(stub, rec)
        mark = stub.mark()
        added = await asyncio.wait_for(adapter.react("chan1", "m-in", "👍"), WAIT)
        assert added.success, added
        removed = await asyncio.wait_for(
            adapter.react("chan1", "m-in", "👍", remove=True, metadata={"k": "v"}), WAIT
        )
        assert removed.success, removed
        actions = await actions_until_typing(adapter, stub, mark)
        assert actions == [
            {
                "op": "react",
                "chat_id": "chan1",
                "message_id": "m-in",
                "emoji": "👍",
                "remove": False,
                "metadata": {"scope_id": "guildA", "user_id": "u1"},
            },
            {
                "op": "react",
                "chat_id": "chan1",
                "message_id": "m-in",
                "emoji": "👍",
                "remove": True,
                "metadata": {"k": "v", "scope_id": "guildA", "user_id": "u1"},
            },
        ]
        # Refused locally: an empty emoji sends nothing.
        mark = stub.mark()
        empty = await asyncio.wait_for(adapter.react("chan1", "m-in", ""), WAIT)
        assert not empty.success
        assert "emoji" in (empty.error or "")
        assert await actions_until_typing(adapter, stub, mark) == []
    finally:
        await adapter.disconnect()


async def test_create_thread_returns_the_connectors_thread_id(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await lane_adapter(plugin, stub)
    try:
        mark = stub.mark()
        first = await asyncio.wait_for(adapter.create_thread("chan1", "  Ops handoff  "), WAIT)
        assert (first.success, first.thread_id) == (True, "th1"), first
        assert first.created_thread_id == "th1"
        second = await asyncio.wait_for(adapter.create_thread("chan1", "   "), WAIT)
        assert (second.success, second.thread_id) == (True, "th2"), second
        actions = await actions_until_typing(adapter, stub, mark)
        assert [(a["op"], a["chat_id"], a["thread_name"]) for a in actions] == [
            ("thread_create", "chan1", "Ops handoff"),
            ("thread_create", "chan1", "handoff"),  # an empty name's default
        ]
    finally:
        await adapter.disconnect()


async def test_rename_thread_sends_one_guard(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await lane_adapter(plugin, stub)
    try:
        mark = stub.mark()
        # Both guards given: only_if_connector_created wins (§2.7).
        both = adapter.rename_thread(
            "th1",
            "New \n  name",
            only_if_connector_created=True,
            only_if_current_name="Old",
            parent_chat_id="chan1",
        )
        results = [
            await asyncio.wait_for(both, WAIT),
            await asyncio.wait_for(
                adapter.rename_thread("th1", "Newer", only_if_current_name="New name"), WAIT
            ),
            await asyncio.wait_for(adapter.rename_thread("th1", "Newest"), WAIT),
        ]
        assert all(r.success for r in results), results
        actions = await actions_until_typing(adapter, stub, mark)
        assert len(actions) == 3, actions
        shown = [
            (
                a["op"],
                a["chat_id"],
                a["message_id"],
                a["thread_name"],
                a.get("only_if_connector_created"),
                a.get("only_if_current_name"),
            )
            for a in actions
        ]
        assert shown == [
            ("thread_rename", "chan1", "th1", "New name", True, None),
            ("thread_rename", "th1", "th1", "Newer", None, "New name"),
            ("thread_rename", "th1", "th1", "Newest", None, None),
        ]
        # An empty name (after collapsing) is refused locally.
        blank = await asyncio.wait_for(adapter.rename_thread("th1", " \t "), WAIT)
        assert (blank.success, blank.ambiguous) == (False, False), blank
    finally:
        await adapter.disconnect()


async def test_processing_reactions_on_the_events_anchor(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await lane_adapter(plugin, stub)
    try:
        message = await greet(stub, rec, "m-42")
        assert message.event["source"]["message_id"] == "m-42"
        mark = stub.mark()
        assert await asyncio.wait_for(adapter.processing_start(message.json), WAIT) is None
        assert (
            await asyncio.wait_for(adapter.processing_complete(message.event, "success"), WAIT)
            is None
        )
        actions = await actions_until_typing(adapter, stub, mark)
        assert [
            (a["op"], a["chat_id"], a["message_id"], a["emoji"], a["remove"]) for a in actions
        ] == [
            ("react", "chan1", "m-42", "👀", False),
            ("react", "chan1", "m-42", "👀", True),
            ("react", "chan1", "m-42", "✅", False),
        ]

        # Failure swaps in ❌; a cancelled turn only removes 👀. The message
        # itself stands for its event.
        mark = stub.mark()
        await asyncio.wait_for(adapter.processing_complete(message, "failure"), WAIT)
        await asyncio.wait_for(adapter.processing_complete(message, "cancelled"), WAIT)
        actions = await actions_until_typing(adapter, stub, mark)
        assert [(a["emoji"], a["remove"]) for a in actions] == [
            ("👀", True),
            ("❌", False),
            ("👀", True),
        ]
        # Bad arguments raise before anything reaches the component.
        with pytest.raises(ValueError, match="outcome"):
            await adapter.processing_complete(message, "done")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="event"):
            await adapter.processing_start(42)  # type: ignore[arg-type]
        assert adapter.health().restarts == 0
    finally:
        await adapter.disconnect()


async def test_auto_thread_info_is_answered_by_the_next_send(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await lane_adapter(plugin, stub)
    try:
        await stub.do(
            {
                "do": "set_outbound",
                "op": "send",
                "reply": "result",
                "result": {
                    "success": True,
                    "message_id": "m-at",
                    "thread_id": "th-auto",
                    "auto_thread_name": "Auto thread",
                },
                "once": True,
            }
        )
        await rec.barrier(stub)
        waiting = asyncio.ensure_future(adapter.auto_thread_info("chan1", timeout=WAIT))
        # One loop step runs the call up to the export (it takes no slot, so
        # nothing in it suspends before): the component holds the wait now.
        await asyncio.sleep(0)
        assert adapter.health().pending == 1
        assert not waiting.done()
        sent = await asyncio.wait_for(adapter.send("chan1", "hello"), WAIT)
        assert (sent.success, sent.thread_id) == (True, "th-auto"), sent
        info = await asyncio.wait_for(waiting, WAIT)
        assert (info.success, info.thread_id, info.auto_thread_name) == (
            True,
            "th-auto",
            "Auto thread",
        ), info
        # Remembered: asked again, it answers at once.
        again = await asyncio.wait_for(adapter.auto_thread_info("chan1", timeout=0), WAIT)
        assert (again.success, again.thread_id) == (True, "th-auto"), again

        # A send that was not auto-threaded answers the wait with a failure.
        other = asyncio.ensure_future(adapter.auto_thread_info("chan2", timeout=WAIT))
        await asyncio.sleep(0)
        assert not other.done()
        assert (await asyncio.wait_for(adapter.send("chan2", "plain"), WAIT)).success
        missed = await asyncio.wait_for(other, WAIT)
        assert (missed.success, missed.thread_id) == (False, None), missed
        assert "not auto-threaded" in (missed.error or "")

        # No send at all: the wait runs out on the component's timer.
        expired = await asyncio.wait_for(adapter.auto_thread_info("chan3", timeout=0.05), WAIT)
        assert not expired.success
        assert "in time" in (expired.error or "")
        with pytest.raises(ValueError, match="timeout"):
            await adapter.auto_thread_info("chan3", timeout=-1)
    finally:
        await adapter.disconnect()


async def test_a_0_1_0_component_answers_lanes_not_supported(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay_host")
    old = Plugin.from_file(FIXTURE_0_1_0)
    try:
        assert (old.api_version, old.supports_lanes) == ("0.1.0", False)
        adapter, rec = await ready_adapter(old, stub)
        try:
            message = await greet(stub, rec, "m-01")
            mark = stub.mark()
            results = [
                await asyncio.wait_for(call, WAIT)
                for call in (
                    adapter.delete_message("chan1", "m-01"),
                    adapter.stop_typing("chan1"),
                    adapter.react("chan1", "m-01", "👍"),
                    adapter.create_thread("chan1", "t"),
                    adapter.rename_thread("th1", "t", only_if_connector_created=True),
                    adapter.auto_thread_info("chan1", timeout=1.0),
                )
            ]
            for result in results:
                assert (result.success, result.ambiguous, result.error) == (
                    False,
                    False,
                    UNSUPPORTED,
                ), result
                assert result.raw_value() == {"success": False, "error": UNSUPPORTED}
            assert await asyncio.wait_for(adapter.processing_start(message.json), WAIT) is None
            done = adapter.processing_complete(message.json, "success")
            assert await asyncio.wait_for(done, WAIT) is None
            assert f"processing_start skipped: {UNSUPPORTED}" in caplog.text
            assert f"processing_complete skipped: {UNSUPPORTED}" in caplog.text
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
