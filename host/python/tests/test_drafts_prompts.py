"""WIT 0.2 drafts, egress knobs and prompts through the real component, over
a real WebSocket, against the stub connector: the ``prompt-answered``
import (without it a 0.2 component does not instantiate), native draft
streaming and its seal, ``platform_extra``, minted prompts and their
answers, the prompt nonce kept across restarts; and a 0.1.0 component
answering "not supported" without calling anything.

A descriptor other than the stub's default is applied by a re-dial (the
script sets it, then closes the connection). Every wait has a deadline;
none stands in for synchronisation: "nothing happened" is proved by a
barrier (an interrupt marker, or a typing frame) that comes after it."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest

from relay_host import (
    AdapterConfig,
    Identity,
    NotSupported,
    Plugin,
    PromptAnswer,
    PromptOption,
    RelayAdapter,
    State,
)
from relay_host._instance import GuestInstance

from conftest import (
    WAIT,
    Recorder,
    Stub,
    actions_until_typing,
    apply_descriptor,
    fast_config,
    guild_event,
    ready_adapter,
)

FIXTURE_0_1_0 = Path(__file__).parents[2] / "tests" / "fixtures" / "relay-adapter-0.1.0.wasm"
UNSUPPORTED = "not supported by this component (api 0.1.0)"
NO_LONGER_WAITING = "⌛ This prompt is no longer waiting for an answer."
NONCE = "a1b2c3"


def slack_descriptor(**changes: Any) -> dict[str, Any]:
    """A Slack descriptor with native drafts and prompts."""
    descriptor = {
        "contract_version": 1,
        "platform": "slack",
        "label": "Slack",
        "max_message_length": 4000,
        "supports_draft_streaming": True,
        "supports_edit": True,
        "supports_threads": True,
        "supports_block_formatting": True,
        "markdown_dialect": "mrkdwn",
        "len_unit": "chars",
        "supported_ops": ["send", "edit", "typing", "follow_up", "get_chat_info", "draft"],
    }
    descriptor.update(changes)
    return descriptor


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


def slack_event(text: str, message_id: str, chat_id: str = "C1") -> dict[str, Any]:
    return {
        "text": text,
        "message_type": "text",
        "message_id": message_id,
        "source": {"platform": "slack", "chat_id": chat_id, "chat_type": "group", "user_id": "U1"},
    }


async def apply_ops(adapter: RelayAdapter, stub: Stub, descriptor: dict[str, Any]) -> None:
    """Re-dials so the next handshake gets ``descriptor``."""
    applied = await apply_descriptor(adapter, stub, descriptor)
    assert {k: applied.get(k) for k in descriptor} == descriptor  # defaults filled in


async def slack_adapter(
    plugin: Plugin, stub: Stub, **changes: Any
) -> tuple[RelayAdapter, Recorder]:
    """Ready with the Slack descriptor, and chat ``C1``'s route learned."""
    adapter, rec = await ready_adapter(
        plugin, stub, identities=[Identity("slack", "B1")], **changes
    )
    await apply_ops(adapter, stub, slack_descriptor())
    await stub.do({"do": "push_inbound", "event": slack_event("hi", "1700000000.000100")})
    (await rec.message()).accept()
    return adapter, rec


def test_config_fields_validated_and_passed_only_to_0_2() -> None:
    for bad in ("A1B2C3", "a1b2c", "a1b2c3d", "g1b2c3", "", 123):
        with pytest.raises(ValueError, match="prompt_nonce"):
            AdapterConfig("ws://127.0.0.1:1", prompt_nonce=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="platform_extra"):
        AdapterConfig("ws://127.0.0.1:1", platform_extra="{}")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="platform_extra"):
        AdapterConfig("ws://127.0.0.1:1", platform_extra={"x": math.nan})
    with pytest.raises(TypeError, match="platform_extra"):
        AdapterConfig("ws://127.0.0.1:1", platform_extra={"x": object()})
    config = AdapterConfig("ws://127.0.0.1:1")
    with pytest.raises(ValueError, match="prompt_nonce"):
        config.replace(prompt_nonce="nope")

    plain = config.to_wit("0.2.0")
    assert (getattr(plain, "platform-extra"), getattr(plain, "prompt-nonce")) == ("", "")
    knobs = config.replace(platform_extra={"slack": {"rich_blocks": True}}, prompt_nonce=NONCE)
    wit = knobs.to_wit("0.2.0")
    assert getattr(wit, "platform-extra") == '{"slack":{"rich_blocks":true}}'
    assert getattr(wit, "prompt-nonce") == NONCE
    assert getattr(knobs.to_wit("0.2.0", prompt_nonce="0f0f0f"), "prompt-nonce") == "0f0f0f"
    old = knobs.to_wit("0.1.0")
    assert not hasattr(old, "platform-extra")
    assert not hasattr(old, "prompt-nonce")


async def test_a_0_2_component_instantiates_with_the_prompt_answered_import(
    plugin: Plugin, stub: Stub
) -> None:
    # The component really imports it: without it in the linker, it would
    # not instantiate at all.
    host = plugin.component.type.imports(plugin.engine)["hermes:relay/host@0.2.0"]
    assert "prompt-answered" in host.ty.exports(plugin.engine)
    assert (plugin.api_version, plugin.imports_prompt_answered, plugin.supports_prompts) == (
        "0.2.0",
        True,
        True,
    )
    adapter, rec = await ready_adapter(plugin, stub)
    try:
        # No nonce configured: one drawn for this adapter, used by the mint.
        nonce = adapter.prompt_nonce
        assert nonce is not None
        assert re.fullmatch(r"[0-9a-f]{6}", nonce), nonce
        prompt_id = adapter.mint_prompt("chan1", "approval")
        assert re.fullmatch(rf"{nonce}\.[0-9a-f]{{8}}", prompt_id), prompt_id
        assert adapter.mint_prompt("chan1", "approval") != prompt_id
        # And it runs: an echo round trip.
        await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-1")})
        message = await rec.message()
        message.accept()
        sent = await asyncio.wait_for(adapter.send(message.chat_id, "echo"), WAIT)
        assert sent.success, sent
        assert adapter.health().restarts == 0
    finally:
        await adapter.disconnect()


async def test_draft_frames_then_the_turns_send_seals_the_stream(
    plugin: Plugin, stub: Stub
) -> None:
    adapter, _ = await slack_adapter(plugin, stub)
    try:
        assert adapter.supports_draft_streaming("C1")
        turn = {"message_id": "1700000000.000100"}
        mark = stub.mark()
        for content in ("Hel", "Hello wor"):
            interim = await asyncio.wait_for(adapter.send_draft("C1", 7, content, turn), WAIT)
            assert interim.success, interim
        final = await asyncio.wait_for(adapter.send("C1", "Hello world", metadata=turn), WAIT)
        assert final.success, final
        actions = await actions_until_typing(adapter, stub, mark, "C1")
        shown = [
            (a["op"], a["chat_id"], a.get("draft_id"), a["content"], a.get("final"))
            for a in actions
        ]
        assert shown == [
            ("draft", "C1", 7, "Hel", False),
            ("draft", "C1", 7, "Hello wor", False),
            # The send became the sealing frame: no plain `send` went out.
            ("draft", "C1", 7, "Hello world", True),
        ]
        for action in actions:
            assert action["metadata"]["message_id"] == "1700000000.000100"
            assert "format_hints" not in action["metadata"]  # no knob configured
        # The seal's result is the stream's message.
        assert final.message_id is not None

        # A straggler after the seal succeeds without a frame, and the
        # stream is closed: a later send goes out as itself.
        mark = stub.mark()
        late = await asyncio.wait_for(adapter.send_draft("C1", 7, "Hello w", turn), WAIT)
        assert late.success, late
        plain = await asyncio.wait_for(adapter.send("C1", "next", metadata=turn), WAIT)
        assert plain.success, plain
        actions = await actions_until_typing(adapter, stub, mark, "C1")
        assert [(a["op"], a["content"]) for a in actions] == [("send", "next")]
        with pytest.raises(ValueError, match="draft_id"):
            await adapter.send_draft("C1", -1, "x")
        with pytest.raises(TypeError, match="draft_id"):
            await adapter.send_draft("C1", True, "x")  # type: ignore[arg-type]
    finally:
        await adapter.disconnect()


async def test_abandon_open_draft_seals_in_place(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await slack_adapter(plugin, stub)
    try:
        none_open = await asyncio.wait_for(adapter.abandon_open_draft("C1", "stopped"), WAIT)
        assert (none_open.success, none_open.ambiguous) == (False, False), none_open
        assert "no open stream" in (none_open.error or "")
        mark = stub.mark()
        turn = {"message_id": "1700000000.000100"}
        assert (await asyncio.wait_for(adapter.send_draft("C1", 9, "Work", turn), WAIT)).success
        sealed = await asyncio.wait_for(adapter.abandon_open_draft("C1", "Work (stopped)"), WAIT)
        assert sealed.success, sealed
        actions = await actions_until_typing(adapter, stub, mark, "C1")
        assert [(a["op"], a["draft_id"], a["content"], a["final"]) for a in actions] == [
            ("draft", 9, "Work", False),
            ("draft", 9, "Work (stopped)", True),
        ]
    finally:
        await adapter.disconnect()


@pytest.mark.parametrize("unfurl", [False, True])
async def test_an_unfurl_knob_turns_native_drafts_off(
    plugin: Plugin, stub: Stub, unfurl: bool
) -> None:
    extra = {"slack": {"unfurl_links": unfurl}}
    adapter, _ = await slack_adapter(plugin, stub, platform_extra=extra)
    try:
        # The same descriptor as the sealing test: only the knob differs.
        assert not adapter.supports_draft_streaming("C1")
        refused = await asyncio.wait_for(adapter.send_draft("C1", 1, "x"), WAIT)
        assert (refused.success, refused.ambiguous) == (False, False), refused
        assert refused.error == "relay draft streaming not implemented for this chat"
        # Only a knob set to true, with a link, prefers a fresh final send.
        assert adapter.prefers_fresh_final("C1", "see https://example.com") is unfurl
        assert not adapter.prefers_fresh_final("C1", "no link here")
        mark = stub.mark()
        assert (await asyncio.wait_for(adapter.send("C1", "hello"), WAIT)).success
        actions = await actions_until_typing(adapter, stub, mark, "C1")
        assert [(a["op"], a["metadata"].get("unfurl_links")) for a in actions] == [("send", unfurl)]
    finally:
        await adapter.disconnect()


async def test_rich_blocks_stamps_format_hints(plugin: Plugin, stub: Stub) -> None:
    extra = {"slack": {"rich_blocks": True}}
    adapter, _ = await slack_adapter(plugin, stub, platform_extra=extra)
    try:
        assert adapter.descriptor("slack")["supports_block_formatting"] is True
        mark = stub.mark()
        assert (await asyncio.wait_for(adapter.send("C1", "*bold*"), WAIT)).success
        own = {"format_hints": {"markdown_blocks": True}}
        assert (await asyncio.wait_for(adapter.send("C1", "mine", metadata=own), WAIT)).success
        actions = await actions_until_typing(adapter, stub, mark, "C1")
        assert [(a["op"], a["metadata"].get("format_hints")) for a in actions] == [
            ("send", {"rich_blocks": True}),
            ("send", {"markdown_blocks": True}),  # never over the caller's own
        ]
    finally:
        await adapter.disconnect()


async def test_prompt_frame_answer_and_second_press(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub, prompt_nonce=NONCE)
    try:
        assert adapter.prompt_nonce == NONCE
        await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-1")})
        (await rec.message()).accept()
        options = [PromptOption("once", "Allow once", "primary"), PromptOption("deny", "Deny")]
        # The stub's default descriptor does not list `prompt`: refused,
        # nothing sent, and the id forgotten.
        first = adapter.mint_prompt("chan1", "approval")
        refused = await asyncio.wait_for(adapter.prompt(first, "chan1", "Run?", options), WAIT)
        assert (refused.success, refused.error) == (False, "relay prompt op unavailable")

        ops = ["send", "edit", "typing", "follow_up", "get_chat_info", "prompt"]
        await apply_ops(adapter, stub, discord_descriptor(ops))
        prompt_id = adapter.mint_prompt("chan1", "approval")
        assert prompt_id.startswith(NONCE + "."), prompt_id
        mark = stub.mark()
        sent = await asyncio.wait_for(
            adapter.prompt(
                prompt_id,
                "chan1",
                "Run `rm -rf build`?",
                options,
                prompt_kind="approval",
                metadata={"k": "v"},
                timeout_s=29.5,
            ),
            WAIT,
        )
        assert sent.success, sent
        frame = (await stub.frame("outbound", after=mark))["json"]
        action = frame["action"]
        assert frame["platform"] == "discord"
        assert (action["op"], action["chat_id"], action["prompt_id"]) == (
            "prompt",
            "chan1",
            prompt_id,
        )
        assert (action["content"], action["prompt_kind"], action["timeout_s"]) == (
            "Run `rm -rf build`?",
            "approval",
            30,
        )
        assert action["options"] == [
            {"id": "once", "label": "Allow once", "style": "primary"},
            {"id": "deny", "label": "Deny"},
        ]
        assert action["metadata"] == {"k": "v", "scope_id": "guildA", "user_id": "u1"}

        # A press: one answer, no message.
        press = guild_event("", "m-press")
        press["prompt_response"] = {
            "prompt_id": prompt_id,
            "option_id": "once",
            "prompt_message_id": sent.message_id,
        }
        await stub.do({"do": "push_inbound", "event": press})
        answer = await rec.prompt_answer()
        assert isinstance(answer, PromptAnswer)
        assert (answer.prompt_id, answer.kind, answer.option_id, answer.chat_id) == (
            prompt_id,
            "approval",
            "once",
            "chan1",
        )
        assert (answer.user_id, answer.prompt_message_id) == ("u1", sent.message_id)
        assert (answer.choice, answer.text_capture) == (None, False)
        assert answer.event["prompt_response"]["option_id"] == "once"

        # A second press (and a press on another adapter's prompt) does
        # nothing: no answer, no message, no notice.
        mark = stub.mark()
        again = guild_event("", "m-press-2")
        again["prompt_response"] = {"prompt_id": prompt_id, "option_id": "deny"}
        foreign = guild_event("", "m-press-3")
        foreign["prompt_response"] = {"prompt_id": "ffffff.00000001", "option_id": "once"}
        await stub.do(
            {"do": "push_inbound", "event": again}, {"do": "push_inbound", "event": foreign}
        )
        await rec.barrier(stub)
        assert rec.prompt_answers.empty()
        assert rec.messages.empty()
        assert await actions_until_typing(adapter, stub, mark, "chan1") == []

        # Our nonce but an id this adapter does not wait for: the notice.
        mark = stub.mark()
        stale = guild_event("", "m-press-4")
        stale["prompt_response"] = {"prompt_id": f"{NONCE}.0badc0de", "option_id": "once"}
        await stub.do({"do": "push_inbound", "event": stale})
        notice = (await stub.frame("outbound", after=mark))["json"]["action"]
        assert (notice["op"], notice["chat_id"], notice["content"]) == (
            "send",
            "chan1",
            NO_LONGER_WAITING,
        )
        await rec.barrier(stub)
        assert rec.prompt_answers.empty()
        assert rec.messages.empty()
    finally:
        await adapter.disconnect()


async def test_a_clarify_answer_carries_the_choice(plugin: Plugin, stub: Stub) -> None:
    adapter, rec = await ready_adapter(plugin, stub, prompt_nonce=NONCE)
    try:
        ops = ["send", "edit", "typing", "follow_up", "get_chat_info", "prompt"]
        await apply_ops(adapter, stub, discord_descriptor(ops))
        await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-1")})
        (await rec.message()).accept()
        options = [
            PromptOption("c0", "Red"),
            PromptOption("c1", "Blue"),
            PromptOption("other", "…"),
        ]
        answers = []
        for option_id in ("c1", "other"):
            prompt_id = adapter.mint_prompt("chan1", "clarify")
            sent = await asyncio.wait_for(
                adapter.prompt(
                    prompt_id,
                    "chan1",
                    "Which colour?",
                    options,
                    prompt_kind="clarify",
                    choices=["red paint", "blue paint"],
                ),
                WAIT,
            )
            assert sent.success, sent
            press = guild_event("", f"m-{option_id}")
            press["prompt_response"] = {"prompt_id": prompt_id, "option_id": option_id}
            await stub.do({"do": "push_inbound", "event": press})
            answers.append(await rec.prompt_answer())
        assert [(a.kind, a.option_id, a.choice, a.text_capture) for a in answers] == [
            ("clarify", "c1", "blue paint", False),
            ("clarify", "other", None, True),
        ]
        with pytest.raises(TypeError, match=r"options\[0\]"):
            await adapter.prompt("x", "chan1", "q", [("c0", "Red")])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="timeout_s"):
            await adapter.prompt("x", "chan1", "q", options, timeout_s=-1)
        assert adapter.health().restarts == 0
    finally:
        await adapter.disconnect()


async def test_the_drawn_nonce_is_kept_across_a_restart(
    test_plugin: Plugin, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    call = GuestInstance.call

    def spy(self: GuestInstance, name: str, *args: Any) -> Any:
        if name == "start":
            started.append(getattr(args[0], "prompt-nonce"))
        return call(self, name, *args)

    monkeypatch.setattr(GuestInstance, "call", spy)
    adapter, rec = await ready_adapter(test_plugin, stub)
    try:
        await stub.do({"do": "send_frame", "frame": {"type": "__test_panic"}})
        assert (await rec.fatal()).code == "guest_trap"
        assert await adapter.wait_for_state(State.READY, timeout=WAIT) is State.READY
        assert adapter.health().restarts == 1
        assert len(started) == 2, started
        assert started[0] == started[1] == adapter.prompt_nonce
        assert re.fullmatch(r"[0-9a-f]{6}", started[0]), started
    finally:
        await adapter.disconnect()

    # Two adapters draw their own.
    other = RelayAdapter(test_plugin, fast_config(stub.url))
    try:
        assert await other.connect(timeout=WAIT)
        assert other.prompt_nonce != started[0]
    finally:
        await other.disconnect()


async def test_a_0_1_0_component_answers_drafts_and_prompts_not_supported(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay_host")
    old = Plugin.from_file(FIXTURE_0_1_0)
    try:
        assert (old.api_version, old.imports_prompt_answered, old.supports_prompts) == (
            "0.1.0",
            False,
            False,
        )
        # The 0.2 settings are not passed (its config has no such fields).
        adapter, rec = await ready_adapter(
            old, stub, platform_extra={"slack": {"rich_blocks": True}}, prompt_nonce=NONCE
        )
        try:
            assert "platform_extra ignored" in caplog.text
            await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-01")})
            (await rec.message()).accept()
            mark = stub.mark()
            results = [
                await asyncio.wait_for(call, WAIT)
                for call in (
                    adapter.send_draft("chan1", 1, "x", {"message_id": "m-01"}),
                    adapter.abandon_open_draft("chan1", "x"),
                    adapter.prompt(f"{NONCE}.00000001", "chan1", "q?", [PromptOption("a", "A")]),
                )
            ]
            for result in results:
                assert (result.success, result.ambiguous, result.error) == (
                    False,
                    False,
                    UNSUPPORTED,
                ), result
            with pytest.raises(NotSupported, match=re.escape(UNSUPPORTED)):
                adapter.mint_prompt("chan1", "approval")
            assert adapter.supports_draft_streaming("chan1") is False
            assert adapter.prefers_fresh_final("chan1", "https://example.com") is False
            # Nothing reached the wire, no missing export was called (that
            # would have failed like a trap: a restart).
            assert await actions_until_typing(adapter, stub, mark, "chan1") == []
            assert adapter.health().restarts == 0
            assert rec.fatals.empty()
            assert adapter.state is State.READY
        finally:
            await adapter.disconnect()
    finally:
        old.close()
