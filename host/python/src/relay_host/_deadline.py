"""The component's one timer (``set-deadline`` / ``on-deadline``).

The import only records the instant: a call may set and reset it several
times and only the last value counts, so the loop timer is armed once, after
the export call returns. Instants are nanoseconds on the guest's WASI
monotonic clock, which reads 0 at the instance's ``clock_origin``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Added to every deadline: the guest's clock origin is within a fraction of
#: a millisecond of ours, and the timer must never fire before it is due.
DEADLINE_SLACK = 0.001


class Deadline:
    """One adapter's deadline timer; ``fire`` is called when it is due."""

    def __init__(self, fire: Callable[[], None]) -> None:
        self._fire = fire
        # None: unchanged in this call; (None,): disarm; (at,): arm at `at`.
        self._requested: tuple[int | None] | None = None
        self._handle: asyncio.TimerHandle | None = None

    def request(self, at: int | None) -> None:
        """From the ``set-deadline`` import: recorded, applied after the call."""
        self._requested = (at,)

    def apply(self, loop: asyncio.AbstractEventLoop, clock_origin: float) -> None:
        """After an export call: (re-)arms or disarms the timer if the call
        asked to."""
        if self._requested is None:
            return
        (at,) = self._requested
        self._requested = None
        self._cancel_timer()
        if at is not None:
            when = clock_origin + at / 1e9 + DEADLINE_SLACK
            self._handle = loop.call_at(when, self._due)

    def clear(self) -> None:
        """The instance is gone: forget the request and disarm."""
        self._requested = None
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _due(self) -> None:
        self._handle = None
        self._fire()
