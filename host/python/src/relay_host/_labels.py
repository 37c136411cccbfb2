"""The WIT ``chat-labels`` record (spec §7.7) both ways: lifted from the
``labels-observed`` import into a :class:`ChatLabels`, and lowered for the
``prime-labels`` export.

wasmtime-py lifts a WIT record into an object with one attribute per field,
named as in the WIT (kebab-case), and lowers one from any such object (see
:mod:`._lanes`). Arguments are checked before they are lowered: a value
wasmtime-py cannot lower raises inside the export call, where the runtime
cannot tell it from a trap.
"""

from __future__ import annotations

from typing import Any

from wasmtime.component import Record

from . import _args
from .types import CHAT_LABEL_FIELDS, ChatLabels


def _wit_name(name: str) -> str:
    return name.replace("_", "-")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def from_wit(record: Any) -> ChatLabels:
    """The ``chat-labels`` record the component passed to ``labels-observed``."""
    g = getattr  # kebab-case WIT field names
    return ChatLabels(
        scope_id=str(g(record, "scope-id")),
        chat_id=str(g(record, "chat-id")),
        chat_name=_opt_str(g(record, "chat-name")),
        chat_topic=_opt_str(g(record, "chat-topic")),
        parent_chat_id=_opt_str(g(record, "parent-chat-id")),
        user_id=_opt_str(g(record, "user-id")),
        user_name=_opt_str(g(record, "user-name")),
    )


def checked(labels: object) -> ChatLabels:
    """The argument of ``prime_labels``: a :class:`ChatLabels` whose fields
    all lower (``scope_id`` and ``chat_id`` a ``str``, the others a ``str``
    or None). Raises TypeError or ValueError, naming the field."""
    if not isinstance(labels, ChatLabels):
        raise TypeError(f"labels must be a ChatLabels, not {type(labels).__name__}")
    return ChatLabels(
        scope_id=_args.text("labels.scope_id", labels.scope_id),
        chat_id=_args.text("labels.chat_id", labels.chat_id),
        chat_name=_args.opt_text("labels.chat_name", labels.chat_name),
        chat_topic=_args.opt_text("labels.chat_topic", labels.chat_topic),
        parent_chat_id=_args.opt_text("labels.parent_chat_id", labels.parent_chat_id),
        user_id=_args.opt_text("labels.user_id", labels.user_id),
        user_name=_args.opt_text("labels.user_name", labels.user_name),
    )


def to_wit(labels: ChatLabels) -> Record:
    """The ``chat-labels`` record for ``prime-labels`` (from a :func:`checked` value)."""
    record = Record()
    for name in CHAT_LABEL_FIELDS:
        setattr(record, _wit_name(name), getattr(labels, name))
    return record
