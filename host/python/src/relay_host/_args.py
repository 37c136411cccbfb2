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
import math
from typing import Any, cast

from .types import PROCESSING_OUTCOMES, ProcessingOutcome, PromptOption

#: Largest WIT ``u64``.
U64_MAX = 2**64 - 1
#: Largest WIT ``u32``.
U32_MAX = 2**32 - 1


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


def flag(name: str, value: object) -> bool:
    """A ``bool`` argument (wasmtime-py lowers nothing else to a WIT ``bool``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def millis(name: str, seconds: object) -> int:
    """A duration in seconds (int or float, finite, not negative) as the
    whole milliseconds of a WIT ``u64``."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite, non-negative number of seconds")
    return min(round(seconds * 1000), U64_MAX)


def event_json(value: object) -> str:
    """A delivered event as JSON text: the ``json`` of a message as
    delivered (``str``), the event parsed (``dict``), or the message itself
    (anything with a ``json`` text attribute, like a ``RelayMessage``)."""
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))  # ASCII: always lowers
    if not isinstance(value, str):
        inner = getattr(value, "json", None)
        if isinstance(inner, str):
            value = inner
    if not isinstance(value, str):
        raise TypeError(
            "event must be the event's JSON text, a dict or a RelayMessage, "
            f"not {type(value).__name__}"
        )
    return text("event", value)


def outcome(value: object) -> ProcessingOutcome:
    """A ``processing-outcome`` case name."""
    if not isinstance(value, str):
        raise TypeError(f"outcome must be a str, not {type(value).__name__}")
    if value not in PROCESSING_OUTCOMES:
        choices = ", ".join(sorted(PROCESSING_OUTCOMES))
        raise ValueError(f"outcome must be one of {choices}")
    return cast(ProcessingOutcome, value)


def u64(name: str, value: object) -> int:
    """A WIT ``u64`` argument: an ``int`` (not a ``bool``) in [0, 2**64)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{name} must be in [0, 2**64)")
    return value


def opt_seconds_u32(name: str, seconds: object) -> int | None:
    """An ``option<u32>`` of whole seconds from None or a number of seconds
    (finite, not negative; a fraction rounds up, the top is clamped)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite, non-negative number of seconds")
    return min(math.ceil(seconds), U32_MAX)


def texts(name: str, values: object) -> list[str]:
    """A ``list<string>`` argument from a list or tuple of ``str``."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list of str, not {type(values).__name__}")
    return [text(f"{name}[{i}]", v) for i, v in enumerate(values)]


def prompt_options(values: object) -> list[PromptOption]:
    """The options of a prompt: a list or tuple of :class:`PromptOption`.
    Their ids are checked by the component (a bad one refuses the prompt)."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"options must be a list of PromptOption, not {type(values).__name__}")
    checked = []
    for i, option in enumerate(values):
        if not isinstance(option, PromptOption):
            raise TypeError(f"options[{i}] must be a PromptOption, not {type(option).__name__}")
        checked.append(
            PromptOption(
                text(f"options[{i}].id", option.id),
                text(f"options[{i}].label", option.label),
                opt_text(f"options[{i}].style", option.style),
            )
        )
    return checked


def chunks(values: object) -> str:
    """The chunks of a task card, a list or tuple of dicts (JSON objects),
    as the JSON text of an array. Raises TypeError or ValueError for
    anything else, or for a value that is not JSON-serialisable."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"chunks must be a list of dicts, not {type(values).__name__}")
    for i, chunk in enumerate(values):
        if not isinstance(chunk, dict):
            raise TypeError(
                f"chunks[{i}] must be a dict (a JSON object), not {type(chunk).__name__}"
            )
    try:
        # ensure_ascii (the default): any text, even a lone surrogate, is
        # escaped, so it always lowers. No NaN: it is not JSON.
        return json.dumps(list(values), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise type(e)(f"chunks are not JSON-serialisable: {e}") from None
