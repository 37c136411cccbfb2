"""WebSocket connections the component asked for (``dial``): one asyncio
task per connection (``websockets``), a reader that reports everything to the
adapter as it arrives and a writer fed by a queue, so an import never waits;
the table of one adapter's live connections; and the dial policy: only the
configured connector's scheme, host and port are dialed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State as WsState

#: Close code for a connection lost without a close frame (RFC 6455 §7.4.1).
CLOSE_ABNORMAL = 1006
#: Longest close reason a close frame can carry (125 - 2 bytes of code).
CLOSE_REASON_MAX_BYTES = 123


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to ``websockets``: its DEBUG output includes the
    upgrade request headers (the bearer token), so DEBUG is dropped here
    whatever the application's logging level."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        return None


_WS_LOGGER = _QuietLogger(logging.getLogger("relay_host.websocket"), {})


@dataclass(frozen=True)
class SocketSettings:
    connect_timeout: float
    ping_interval: float
    ping_timeout: float
    #: Largest WebSocket message accepted (line limit + 1 byte).
    max_message_bytes: int


#: What a connection reports: (kind, args). Kinds: "opened", "dial_failed"
#: (code, reason), "text" (str), "binary" (bytes), "closed" (code, reason).
Report = Callable[[str, tuple[Any, ...]], None]


def _target(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss") or not parts.hostname:
            return None
        port = parts.port or (443 if scheme == "wss" else 80)
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port


class DialPolicy:
    """Which URLs the component may dial: the configured connector's scheme,
    host and port (after the spec §1.2 ``http``→``ws`` / ``https``→``wss``
    rewrite, matched case-insensitively as the component does)."""

    def __init__(self, connector_url: str) -> None:
        url = connector_url.strip()
        scheme, sep, rest = url.partition("://")
        if sep:
            lowered = scheme.lower()
            scheme = {"https": "wss", "http": "ws"}.get(lowered, lowered)
            url = f"{scheme}://{rest}"
        self._target = _target(url)

    def allows(self, url: str) -> bool:
        theirs = _target(url)
        return self._target is not None and theirs == self._target


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _truncate_reason(reason: str) -> str:
    raw = reason.encode("utf-8")
    if len(raw) <= CLOSE_REASON_MAX_BYTES:
        return reason
    return raw[:CLOSE_REASON_MAX_BYTES].decode("utf-8", errors="ignore")


def _closed_code(error: ConnectionClosed) -> tuple[int, str]:
    if error.rcvd is not None:
        return error.rcvd.code, error.rcvd.reason
    sent = error.sent
    # We closed it ourselves for a reason the component should learn:
    # message too big (1009) or keepalive timeout (1011).
    if sent is not None and sent.code in (1009, 1011):
        return sent.code, sent.reason
    return CLOSE_ABNORMAL, "connection lost"


class Connection:
    """One connection of one instance, by the component's ``conn`` id."""

    def __init__(
        self,
        conn: int,
        token: int,
        url: str,
        headers: list[tuple[str, str]],
        settings: SocketSettings,
        report: Report,
    ) -> None:
        self.conn = conn
        self.token = token
        self.open = False
        self._out: deque[str] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._report = report
        self._settings = settings
        self.task = asyncio.get_running_loop().create_task(
            self._run(url, headers), name=f"relay-conn-{conn}"
        )

    def send(self, text: str) -> bool:
        """Queues one text message; never blocks."""
        if self._close is not None or self.task.done():
            return False
        self._out.append(text)
        self._wake.set()
        return True

    def close(self, code: int, reason: str) -> None:
        """Closes the connection: a close frame if it is open, else the dial
        is cancelled. Nothing is reported for it afterwards."""
        if not self.open:
            self.task.cancel()
            return
        if self._close is None:
            self._close = (code, _truncate_reason(reason))
            self._wake.set()

    async def _run(self, url: str, headers: list[tuple[str, str]]) -> None:
        s = self._settings
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                compression=None,
                open_timeout=s.connect_timeout,
                ping_interval=s.ping_interval,
                ping_timeout=s.ping_timeout,
                close_timeout=1.0,
                max_size=s.max_message_bytes,
                user_agent_header=None,
                proxy=None,
                logger=_WS_LOGGER,
            )
        except asyncio.CancelledError:
            raise
        except InvalidStatus as e:
            status = e.response.status_code
            self._report("dial_failed", (status, f"upgrade refused: HTTP {status}"))
            return
        except TimeoutError:
            self._report("dial_failed", (0, "opening handshake timed out"))
            return
        except Exception as e:
            # Never the headers: the exception text of a failed dial names
            # at most the URL, which carries no credential.
            self._report("dial_failed", (0, _describe(e)))
            return
        self.open = True
        try:
            self._report("opened", ())
            await self._pump(ws)
        finally:
            # Cancelled (instance gone) or done: make sure the socket ends.
            if ws.state is not WsState.CLOSED:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(ws.close(1001, "relay adapter stopped"))

    async def _pump(self, ws: ClientConnection) -> None:
        writer = asyncio.get_running_loop().create_task(self._write(ws))
        try:
            while True:
                try:
                    message = await ws.recv()
                except ConnectionClosed as e:
                    self._report("closed", _closed_code(e))
                    return
                if isinstance(message, str):
                    self._report("text", (message,))
                else:
                    self._report("binary", (bytes(message),))
        finally:
            if not writer.done():
                # Give a requested close frame a moment to go out.
                if self._close is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(asyncio.shield(writer), 1.0)
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer

    async def _write(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    await ws.send(self._out.popleft())
                if self._close is not None:
                    code, reason = self._close
                    await ws.close(code, reason)
                    return
        except ConnectionClosed:
            # The reader reports the real close code.
            return


class Connections:
    """The live connections of one adapter's current instance, by conn id.

    A connection leaves the table when the component closes it, when it
    reports its end, or when the instance goes away; its reports are stale
    from then on (:meth:`current` no longer finds its token)."""

    def __init__(self) -> None:
        self._by_conn: dict[int, Connection] = {}
        # Every connection task, also closed ones still finishing their close
        # handshake (awaited, bounded, on shutdown).
        self._tasks: set[asyncio.Task[None]] = set()

    def __contains__(self, conn: int) -> bool:
        return conn in self._by_conn

    def add(self, connection: Connection) -> None:
        self._by_conn[connection.conn] = connection
        self._tasks.add(connection.task)
        connection.task.add_done_callback(self._tasks.discard)

    def get(self, conn: int) -> Connection | None:
        return self._by_conn.get(conn)

    def current(self, conn: int, token: int) -> Connection | None:
        """The connection a report came from, if it is still current."""
        c = self._by_conn.get(conn)
        return c if c is not None and c.token == token else None

    def pop(self, conn: int) -> Connection | None:
        return self._by_conn.pop(conn, None)

    def close_all(self, code: int, reason: str) -> None:
        """The instance goes away: an open socket gets a close frame, a dial
        in progress is cancelled."""
        for c in self._by_conn.values():
            c.close(code, reason)
        self._by_conn.clear()

    async def settle(self, timeout: float) -> None:
        """Waits (bounded) for closed connections to finish their close
        handshakes; cancels the rest."""
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=timeout)
            for t in still:
                t.cancel()
