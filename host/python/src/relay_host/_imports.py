"""The ``hermes:relay/host`` imports: the Python functions the component
calls, in the middle of one of its export calls.

Each one only records, queues or forwards (a deque append, a task started,
a media job handed to the thread pool of :mod:`._media`, a future resolved,
a callback queued with ``call_soon``). None blocks and
none calls an export: what needs the component again (a refused dial) is
queued and fed after the current call returns, and gateway handlers run
after it too (:mod:`._events`).
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from . import _labels
from ._socket import Connection, DialPolicy, SocketSettings
from .message import RelayMessage
from .types import FatalError, PromptAnswer, State

if TYPE_CHECKING:
    from ._runtime import Runtime

log = logging.getLogger("relay_host")

#: Host-unique connection tokens: a report of a connection the component
#: closed, or of an earlier instance reusing a conn id, is recognised as stale.
_NEXT_TOKEN = itertools.count(1)


class Imports:
    """One adapter's implementation of ``hermes:relay/host`` (the
    ``HostImports`` protocol of :mod:`._instance`)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        config = rt.config
        limits = config.limits
        self._settings = SocketSettings(
            connect_timeout=limits.connect_timeout,
            ping_interval=limits.ping_interval,
            ping_timeout=limits.ping_timeout,
            max_message_bytes=config.max_line_bytes + 1,
        )
        self._policy = DialPolicy(config.connector_url)

    def dial(self, conn: int, url: str, headers: list[tuple[str, str]]) -> None:
        rt = self._rt
        if not self._policy.allows(url):
            # The URL is the guest's: no query string, and redacted.
            shown = rt.redact(url.split("?", 1)[0])
            log.warning(
                "[%s] dial target refused: %s is not the configured connector", rt.label, shown
            )
            rt.feed("on-dial-failed", conn, 0, "dial target refused")
            return
        if conn in rt.conns:
            log.warning("[%s] dial refused: conn id %d still in use", rt.label, conn)
            rt.feed("on-dial-failed", conn, 0, "conn id in use")
            return
        token = next(_NEXT_TOKEN)

        def report(kind: str, args: tuple[Any, ...]) -> None:
            rt.on_io(conn, token, kind, args)

        rt.conns.add(Connection(conn, token, url, list(headers), self._settings, report))
        log.debug("[%s] dialing conn %d", rt.label, conn)

    def send_text(self, conn: int, text: str) -> str | None:
        c = self._rt.conns.get(conn)
        if c is None:
            return "no such connection"
        if not c.send(text):
            return "connection closed"
        return None

    def close(self, conn: int, code: int, reason: str) -> None:
        c = self._rt.conns.pop(conn)
        if c is not None:
            c.close(code, reason)

    def set_deadline(self, at: int | None) -> None:
        self._rt.deadline.request(at)

    def deliver(self, events: Any) -> None:
        # 0.2 hands over the messages of one export call as a list; 0.1 (and
        # 0.2 drafts before that) one record per call.
        for event in events if isinstance(events, list) else [events]:
            self._deliver_one(event)

    def _deliver_one(self, event: Any) -> None:
        rt = self._rt
        instance_id = rt.instance_id
        delivery = int(event.delivery)

        def answer(accept: bool, later: bool) -> None:
            # Captures the delivery id, not the message (no reference cycle:
            # an unanswered message is collected, and rejected, at once).
            rt.verdict(instance_id, delivery, accept, later)

        rt.dispatch("message", (RelayMessage(event, answer),))

    def interrupt(self, session_key: str, chat_id: str) -> None:
        self._rt.dispatch("interrupt", (session_key, chat_id))

    def complete(self, request: int, completion: Any) -> None:
        if self._rt.requests.complete(request, completion):
            self._rt.stop_requested = True  # the shutdown is done: stop after this call

    def state_changed(self, state: str, detail: str) -> None:
        self._rt.set_state(State(state), self._rt.redact(detail))

    def fatal(self, error: Any) -> None:
        rt = self._rt
        fatal = FatalError(
            code=rt.redact(error.code),
            message=rt.redact(error.message),
            retryable=bool(error.retryable),
        )
        log.error(
            "[%s] relay adapter fatal %s (retryable %s): %s",
            rt.label,
            fatal.code,
            fatal.retryable,
            fatal.message,
        )
        if not fatal.retryable:
            rt.terminal = True
        rt.dispatch("fatal", (fatal,))

    def prompt_answered(self, answer: Any) -> None:
        g = getattr  # kebab-case WIT field names
        rt = self._rt
        typed = PromptAnswer(
            prompt_id=g(answer, "prompt-id"),
            kind=g(answer, "kind"),
            option_id=g(answer, "option-id"),
            chat_id=g(answer, "chat-id"),
            user_id=g(answer, "user-id"),
            prompt_message_id=g(answer, "prompt-message-id"),
            choice=g(answer, "choice"),
            text_capture=bool(g(answer, "text-capture")),
            event_json=g(answer, "event"),
        )
        log.debug("[%s] prompt %s answered: %s", rt.label, typed.prompt_id, typed.option_id)
        rt.dispatch("prompt_answer", (typed,))

    def labels_observed(self, labels: Any) -> None:
        # WIT 0.2 (spec §7.7): queued like a prompt answer; the gateway's
        # labels handler runs after this call and stores the record.
        rt = self._rt
        typed = _labels.from_wit(labels)
        log.debug("[%s] chat labels observed for chat %s", rt.label, typed.chat_id)
        rt.dispatch("labels", (typed,))

    # WIT 0.2 media plane: each job goes to the media client's thread pool
    # (or fails at once without a client, fed after this call); its outcome
    # is fed as `on-media-done` from the event loop (:mod:`._media`).

    def fetch_media(self, job: int, request: Any) -> None:
        self._rt.media.fetch(int(job), request)

    def upload_media(self, job: int, request: Any, path: str) -> None:
        self._rt.media.upload(int(job), request, path)

    def delete_media(self, paths: list[str]) -> None:
        self._rt.media.delete(list(paths))
