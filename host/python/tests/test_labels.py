"""The chat-label record of WIT 0.2 (spec §7.7): the ``labels-observed``
import reaching the gateway's labels handler as a :class:`ChatLabels`, the
``prime-labels`` export (:meth:`RelayAdapter.prime_labels`), and Discord
interactions carrying the recorded labels, through the real component
against the stub connector (a text message pushed with ``push_inbound``, a
slash command with ``passthrough_forward``); the record's conversions; and
a 0.1.0 component, which has neither, answering "not supported".

Every wait has a deadline; "nothing was reported" is checked after a
barrier (an interrupt round trip: every event of an earlier export call
has been handed to the gateway by then)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from wasmtime.component import Record

from relay_host import (
    AdapterStopped,
    ChatLabels,
    NotSupported,
    Plugin,
    RelayAdapter,
    State,
    _labels,
)
from relay_host.adapter import LANES_UNSUPPORTED

from conftest import WAIT, Recorder, Stub, fast_config

FIXTURE_0_1_0 = Path(__file__).parents[2] / "tests" / "fixtures" / "relay-adapter-0.1.0.wasm"
UNSUPPORTED = LANES_UNSUPPORTED.format("0.1.0")

#: What the text lane observes in ``chan1`` of ``guildA`` from ``u1``.
OBSERVED = ChatLabels(
    scope_id="guildA",
    chat_id="chan1",
    chat_name="general",
    chat_topic="release talk",
    parent_chat_id=None,
    user_id="u1",
    user_name="Benny",
)


class Labels:
    """The labels handler's records, with a deadline."""

    def __init__(self, adapter: RelayAdapter) -> None:
        self.queue: asyncio.Queue[ChatLabels] = asyncio.Queue()
        adapter.set_labels_handler(self.queue.put_nowait)

    async def next(self) -> ChatLabels:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    def drained(self) -> list[ChatLabels]:
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


async def ready_adapter(plugin: Plugin, stub: Stub) -> tuple[RelayAdapter, Recorder, Labels]:
    adapter = RelayAdapter(plugin, fast_config(stub.url))
    recorder = Recorder(adapter)
    labels = Labels(adapter)
    assert await adapter.connect(timeout=WAIT), f"not ready: {adapter.state}"
    return adapter, recorder, labels


def text_event(message_id: str, labels: ChatLabels = OBSERVED) -> dict[str, Any]:
    """A Discord text-lane message carrying ``labels`` in its source."""
    return {
        "text": "hi",
        "message_type": "text",
        "message_id": message_id,
        "source": {
            "platform": "discord",
            "chat_id": labels.chat_id,
            "chat_type": "group",
            "scope_id": labels.scope_id,
            "chat_name": labels.chat_name,
            "chat_topic": labels.chat_topic,
            "user_id": labels.user_id,
            "user_name": labels.user_name,
        },
    }


async def text_message(stub: Stub, rec: Recorder, message_id: str, **changes: Any) -> None:
    """Pushes a text message with ``OBSERVED`` (changed by ``changes``) and accepts it."""
    labels = replace(OBSERVED, **changes)
    await stub.do({"do": "push_inbound", "event": text_event(message_id, labels)})
    message = await rec.message()
    assert message.message_id == message_id
    message.accept()


async def slash_command(stub: Stub, rec: Recorder, interaction_id: str) -> dict[str, Any]:
    """A ``/status`` slash command in ``chan1`` by ``u1`` through a
    passthrough forward, with the payload's own channel name, topic and
    nick; returns the delivered event (accepted)."""
    interaction = {
        "type": 2,
        "id": interaction_id,
        "channel_id": "chan1",
        "guild_id": "guildA",
        "channel": {"id": "chan1", "name": "payload-name", "topic": "payload topic", "type": 0},
        "member": {
            "nick": "Payload Ben",
            "user": {"id": "u1", "username": "ben", "global_name": "Ben G"},
        },
        "data": {"name": "status"},
    }
    body = json.dumps(interaction).encode()
    await stub.do(
        {
            "do": "passthrough_forward",
            "platform": "discord",
            "botId": "B1",
            "method": "POST",
            "path": "/interactions/discord/B1",
            "headers": [["content-type", "application/json"]],
            "bodyB64": base64.b64encode(body).decode(),
        }
    )
    message = await rec.message()
    assert message.text == "/status"
    assert message.message_id == interaction_id
    message.accept()
    event: dict[str, Any] = json.loads(message.json)
    return event


def shown(event: dict[str, Any]) -> tuple[Any, Any, Any]:
    source = event["source"]
    return (source.get("chat_name"), source.get("chat_topic"), source.get("user_name"))


# -- the record ---------------------------------------------------------------


def test_the_record_converts_from_and_to_wit() -> None:
    # As wasmtime-py lifts a `chat-labels` record: one kebab-case attribute per field.
    lifted = Record()
    for name, value in {
        "scope-id": "",
        "chat-id": "th9",
        "chat-name": "a thread",
        "chat-topic": None,
        "parent-chat-id": "chan1",
        "user-id": None,
        "user-name": None,
    }.items():
        setattr(lifted, name, value)
    typed = _labels.from_wit(lifted)
    assert typed == ChatLabels(
        scope_id="", chat_id="th9", chat_name="a thread", parent_chat_id="chan1"
    )
    assert typed.key == ("", "th9", None)

    lowered = _labels.to_wit(_labels.checked(OBSERVED))
    assert vars(lowered) == {
        "scope-id": "guildA",
        "chat-id": "chan1",
        "chat-name": "general",
        "chat-topic": "release talk",
        "parent-chat-id": None,
        "user-id": "u1",
        "user-name": "Benny",
    }
    assert _labels.from_wit(lowered) == OBSERVED


def test_the_record_as_a_json_object() -> None:
    stored = json.loads(json.dumps(OBSERVED.as_dict()))
    assert stored == {
        "scope_id": "guildA",
        "chat_id": "chan1",
        "chat_name": "general",
        "chat_topic": "release talk",
        "parent_chat_id": None,
        "user_id": "u1",
        "user_name": "Benny",
    }
    assert ChatLabels.from_dict(stored) == OBSERVED
    # Missing keys default like the Rust host's serde(default); unknown ones are ignored.
    assert ChatLabels.from_dict({"chat_id": "c1", "extra": 1}) == ChatLabels("", "c1")
    with pytest.raises(TypeError, match="chat_name must be a str or None"):
        ChatLabels.from_dict({"chat_id": "c1", "chat_name": 5})
    with pytest.raises(TypeError, match="chat_id must be a str"):
        ChatLabels.from_dict({"chat_id": 5})
    with pytest.raises(TypeError, match="must be a dict"):
        ChatLabels.from_dict(["c1"])  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        OBSERVED.chat_name = "x"  # type: ignore[misc]  # frozen


def test_prime_labels_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="labels must be a ChatLabels, not dict"):
        _labels.checked(OBSERVED.as_dict())
    with pytest.raises(TypeError, match=r"labels\.chat_id must be a str, not int"):
        _labels.checked(ChatLabels("g", 5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"labels\.user_name must be a str, not int"):
        _labels.checked(ChatLabels("g", "c", user_name=5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels\.chat_topic is not valid Unicode"):
        _labels.checked(ChatLabels("g", "c", chat_topic="\ud800"))


def test_which_components_keep_the_record(plugin: Plugin, test_plugin: Plugin) -> None:
    assert (plugin.api_version, plugin.imports_labels, plugin.supports_labels) == (
        "0.2.0",
        True,
        True,
    )
    # The test guest exports `prime-labels` but never imports `labels-observed`:
    # the host defines it anyway (unused), and it instantiates (test_lanes, ...).
    assert (test_plugin.imports_labels, test_plugin.supports_labels) == (True, True)
    old = Plugin.from_file(FIXTURE_0_1_0)
    try:
        assert (old.api_version, old.imports_labels, old.supports_labels) == (
            "0.1.0",
            False,
            False,
        )
    finally:
        old.close()


# -- end to end -----------------------------------------------------------------


async def test_observed_labels_reach_the_handler_once_and_label_slash_commands(
    plugin: Plugin, stub: Stub
) -> None:
    adapter, rec, labels = await ready_adapter(plugin, stub)
    try:
        # Without a record a slash command shows its payload's labels: no
        # chat name or topic (an interaction does not carry them), the nick.
        before = await slash_command(stub, rec, "i-0")
        assert shown(before) == (None, None, "Payload Ben")

        await text_message(stub, rec, "m-1")
        got = await labels.next()
        assert isinstance(got, ChatLabels)
        assert got == OBSERVED

        # The same labels again: nothing to store.
        await text_message(stub, rec, "m-2")
        await rec.barrier(stub)
        assert labels.drained() == []

        # A slash command now carries the recorded labels, not the payload's.
        event = await slash_command(stub, rec, "i-1")
        assert shown(event) == ("general", "release talk", "Benny")
        assert (event["source"]["chat_id"], event["source"]["scope_id"]) == ("chan1", "guildA")
        await rec.barrier(stub)
        assert labels.drained() == [], "an interaction is no observation"

        # A removed topic is an observation: reported, and not revived.
        await text_message(stub, rec, "m-3", chat_topic=None)
        assert await labels.next() == replace(OBSERVED, chat_topic=None)
        event = await slash_command(stub, rec, "i-2")
        assert shown(event) == ("general", None, "Benny")
        assert adapter.health().restarts == 0
        assert rec.fatals.empty()
    finally:
        await adapter.disconnect()


async def test_primed_labels_label_slash_commands_on_a_fresh_adapter(
    plugin: Plugin, stub: Stub
) -> None:
    stored = ChatLabels(
        scope_id="guildA",
        chat_id="chan1",
        chat_name="stored-name",
        chat_topic="stored topic",
        user_id="u1",
        user_name="Stored Ben",
    )
    adapter, rec, labels = await ready_adapter(plugin, stub)
    try:
        adapter.prime_labels(stored)
        event = await slash_command(stub, rec, "i-1")
        assert shown(event) == ("stored-name", "stored topic", "Stored Ben")
        await rec.barrier(stub)
        assert labels.drained() == [], "restoring is no observation"

        # A fresh observation wins, and a stale record primed later never
        # overrides it.
        await text_message(stub, rec, "m-1")
        assert await labels.next() == OBSERVED
        adapter.prime_labels(stored)
        event = await slash_command(stub, rec, "i-2")
        assert shown(event) == ("general", "release talk", "Benny")
        assert adapter.health().restarts == 0
    finally:
        await adapter.disconnect()


async def test_bad_prime_labels_arguments_never_reach_the_component(
    plugin: Plugin, stub: Stub
) -> None:
    with pytest.raises(AdapterStopped, match="call connect"):
        RelayAdapter(plugin, fast_config(stub.url)).prime_labels(OBSERVED)
    adapter, rec, _labels_seen = await ready_adapter(plugin, stub)
    try:
        with pytest.raises(TypeError):
            adapter.prime_labels(OBSERVED.as_dict())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="lone surrogate"):
            adapter.prime_labels(ChatLabels("guildA", "chan1", chat_name="\udfff"))
        # An empty chat id is ignored by the component.
        adapter.prime_labels(ChatLabels("", ""))
        assert adapter.health().restarts == 0
        assert adapter.state is State.READY
        assert rec.fatals.empty()
    finally:
        await adapter.disconnect()


async def test_a_0_1_0_component_has_no_label_record(stub: Stub) -> None:
    old = Plugin.from_file(FIXTURE_0_1_0)
    try:
        adapter, rec, labels = await ready_adapter(old, stub)
        try:
            with pytest.raises(NotSupported, match=re.escape(f"prime_labels {UNSUPPORTED}")):
                adapter.prime_labels(OBSERVED)
            await text_message(stub, rec, "m-1")
            await rec.barrier(stub)
            assert labels.drained() == []
            assert adapter.health().restarts == 0
            assert adapter.state is State.READY
        finally:
            await adapter.disconnect()
    finally:
        old.close()
