"""The WIT ``lane-command`` values (``hermes:relay@0.2.0``) as wasmtime-py
lowers them.

wasmtime-py lowers a WIT record from any object with one attribute per
field, named as in the WIT (kebab-case), so these are ``Record`` objects
filled with ``setattr``. A variant whose cases cannot be told apart by their
Python types is *tagged*: it lowers from ``Variant(tag, payload)`` only.
``lane-command`` is (its record cases all lower from ``Record``), and so is
``rename-guard`` (two cases without a payload). An ``enum`` lowers from the
case name (``str``), an ``option<T>`` from ``None`` or the value.

Every argument is checked by the caller (:mod:`._args`) before it gets
here: a value wasmtime-py cannot lower raises inside the export call, where
the runtime cannot tell it from a trap.
"""

from __future__ import annotations

from typing import Any

from wasmtime.component import Record, Variant

from .types import ProcessingOutcome, PromptOption


def _record(**fields: Any) -> Record:
    """A record from Python names (``chat_id``) set as WIT names (``chat-id``)."""
    record = Record()
    for name, value in fields.items():
        setattr(record, name.replace("_", "-"), value)
    return record


def delete(chat_id: str, message_id: str, metadata: str) -> Variant:
    return Variant("delete", _record(chat_id=chat_id, message_id=message_id, metadata=metadata))


def stop_typing(chat_id: str, metadata: str) -> Variant:
    return Variant("stop-typing", _record(chat_id=chat_id, metadata=metadata))


def react(chat_id: str, message_id: str, emoji: str, remove: bool, metadata: str) -> Variant:
    reaction = _record(
        chat_id=chat_id, message_id=message_id, emoji=emoji, remove=remove, metadata=metadata
    )
    return Variant("react", reaction)


def processing_start(event: str) -> Variant:
    return Variant("processing-start", event)


def processing_complete(event: str, outcome: ProcessingOutcome) -> Variant:
    # `processing-outcome` is an enum: it lowers from its case name.
    return Variant("processing-complete", _record(event=event, outcome=outcome))


def thread_create(parent_chat_id: str, name: str, metadata: str) -> Variant:
    record = _record(parent_chat_id=parent_chat_id, name=name, metadata=metadata)
    return Variant("thread-create", record)


def rename_guard(connector_created: bool, current_name: str | None) -> Variant:
    """``connector-created`` wins over a current name (spec §2.7: the
    connector's memory of who named the thread is the better guard)."""
    if connector_created:
        return Variant("connector-created")
    if current_name is not None:
        return Variant("current-name", current_name)
    return Variant("none")


def thread_rename(
    thread_id: str,
    name: str,
    guard: Variant,
    parent_chat_id: str | None,
    metadata: str,
) -> Variant:
    record = _record(
        thread_id=thread_id,
        name=name,
        guard=guard,
        parent_chat_id=parent_chat_id,
        metadata=metadata,
    )
    return Variant("thread-rename", record)


def auto_thread_info(chat_id: str, timeout_ms: int) -> Variant:
    return Variant("auto-thread-info", _record(chat_id=chat_id, timeout_ms=timeout_ms))


def send_draft(chat_id: str, draft_id: int, content: str, metadata: str) -> Variant:
    record = _record(chat_id=chat_id, draft_id=draft_id, content=content, metadata=metadata)
    return Variant("send-draft", record)


def abandon_open_draft(chat_id: str, content: str) -> Variant:
    return Variant("abandon-open-draft", _record(chat_id=chat_id, content=content))


def task_card(chat_id: str, reply_to: str | None, chunks: str, metadata: str) -> Variant:
    record = _record(chat_id=chat_id, reply_to=reply_to, chunks=chunks, metadata=metadata)
    return Variant("task-card", record)


def task_card_stop(chat_id: str, reply_to: str | None, metadata: str) -> Variant:
    record = _record(chat_id=chat_id, reply_to=reply_to, metadata=metadata)
    return Variant("task-card-stop", record)


def prompt(
    prompt_id: str,
    chat_id: str,
    question: str,
    prompt_kind: str,
    options: list[PromptOption],
    choices: list[str],
    reply_to: str | None,
    metadata: str,
    timeout_s: int | None,
) -> Variant:
    record = _record(
        prompt_id=prompt_id,
        chat_id=chat_id,
        question=question,
        prompt_kind=prompt_kind,
        options=[_record(id=o.id, label=o.label, style=o.style) for o in options],
        choices=choices,
        reply_to=reply_to,
        metadata=metadata,
        timeout_s=timeout_s,
    )
    return Variant("prompt", record)


def send_media(
    chat_id: str,
    kind: str,
    source: str,
    caption: str,
    reply_to: str | None,
    filename: str | None,
    metadata: str,
) -> Variant:
    record = _record(
        chat_id=chat_id,
        kind=kind,
        source=source,
        caption=caption,
        reply_to=reply_to,
        filename=filename,
        metadata=metadata,
    )
    return Variant("send-media", record)
