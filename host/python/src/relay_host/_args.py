"""Arguments of the adapter's requests and queries, checked before anything
reaches the component.

wasmtime-py raises while lowering a bad argument (not a ``str``, or a
``str`` with a lone surrogate, which UTF-8 cannot encode) from inside the
export call, where the runtime cannot tell it from a trap: it would drop the
instance, and every pending request with it, for a caller's mistake. The
errors name the argument, never its value.
"""

from __future__ import annotations

import json
from typing import Any


def is_text(value: object) -> bool:
    """A ``str`` that lowers to a WIT ``string`` (encodable as UTF-8)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(name: str, value: object) -> str:
    """A ``string`` argument; raises TypeError or ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not is_text(value):
        raise ValueError(f"{name} is not valid Unicode text (it has a lone surrogate)")
    return value


def opt_text(name: str, value: object) -> str | None:
    """An ``option<string>`` argument."""
    return None if value is None else text(name, value)


def metadata(value: dict[str, Any] | None) -> str:
    """The JSON text of a metadata object (``{}`` for None)."""
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise TypeError("metadata must be a dict (a JSON object)")
    # ensure_ascii (the default): any text, even a lone surrogate, is escaped.
    return json.dumps(value, separators=(",", ":"))
