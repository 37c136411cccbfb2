"""The media client (spec §9.1, WIT 0.2 ``fetch-media``, ``upload-media``,
``delete-media``): the HTTP requests the component asks for, performed on a
small thread pool so that an import never blocks, with the rules this host
enforces on its own, because only the host sees real addresses:

- only ``http`` and ``https`` URLs, without user info;
- an ``Authorization`` (or ``Proxy-Authorization``) header only to the
  connector's origin (scheme, host, effective port of ``connector_url``,
  ``ws`` read as ``http`` and ``wss`` as ``https``); uploads only there;
- every other origin is resolved here (``socket.getaddrinfo``), its
  loopback, private, link-local, CGNAT, multicast, reserved and other
  special addresses are dropped (:func:`refused_ip`; all of them unless
  ``allow_private_addresses``), none left is a refusal, and the connection
  goes to an address checked, never to a second resolution of the name
  (no DNS rebinding between check and connect); TLS still verifies the
  certificate for the name;
- no proxy (``http.client`` reads no ``HTTP_PROXY``), no redirect followed
  (a 3xx is reported with its status and the asked-for headers, say
  ``location``: the component decides and asks again), no decompression;
- downloads go to new files ``<directory>/<24 random hex>.<ext>`` (created
  exclusively, mode 0600), never outlive a failure or the size cap, and
  ``delete`` removes only such files directly in the directory;
- header values never appear in logs or error texts, nor does a URL's
  query (each request is logged at DEBUG with its method, origin and path).

A job's outcome is handed back to the event loop and fed to the instance
that asked for it (``on-media-done``); one for an instance that is gone
(a trap, a restart, the adapter stopped) has its file deleted instead.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import mimetypes
import os
import re
import secrets
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from wasmtime.component import Record

from .config import MediaOptions, connector_origin

if TYPE_CHECKING:
    from ._runtime import Runtime

log = logging.getLogger("relay_host")

#: The ``User-Agent`` of a media request that names none itself (Discord's
#: CDN refuses the default ones of HTTP libraries, spec §9.1).
USER_AGENT = "hermes-relay-host-python/0.1.0 (relay media)"
#: Worker threads of one adapter's media client.
WORKERS = 4
#: The most reply text an upload reports (bytes of UTF-8).
MAX_REPLY_BYTES = 64 * 1024
#: Error of every fetch and upload when the host has no media client.
NO_MEDIA_CLIENT = "no media client"

#: Hex digits in the random part of a file name (96 bits).
_NAME_HEX = 24
_MAX_EXT = 10
_FALLBACK_EXT = "bin"
_EXT = re.compile(r"[a-z0-9]{1,10}")
_OUR_NAME = re.compile(r"[0-9a-f]{24}\.[a-z0-9]{1,10}")
_CHUNK = 64 * 1024

#: Header names that carry credentials: the connector origin only.
_CREDENTIALS = frozenset({"authorization", "proxy-authorization"})
#: Headers the HTTP layer owns (framing, connection handling): a value from
#: the component could desynchronise the body or the connection. Dropped.
_HOST_OWNED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

#: MIME type to extension, checked before :mod:`mimetypes` (the same table
#: as the Rust host, so both name files alike).
_MIME_EXT = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/heic": "heic",
    "image/avif": "avif",
    "image/svg+xml": "svg",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/ogg": "ogv",
    "video/x-matroska": "mkv",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/ogg": "ogg",
    "application/ogg": "ogg",
    "audio/opus": "opus",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/flac": "flac",
    "audio/webm": "weba",
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/csv": "csv",
    "text/html": "html",
    "application/json": "json",
    "application/zip": "zip",
    "application/gzip": "gz",
    "application/x-tar": "tar",
}
#: Python's built-in table only (a fresh ``MimeTypes`` reads no system
#: file), so the names do not depend on the machine.
_MIMETYPES = mimetypes.MimeTypes()

# -- addresses -------------------------------------------------------------------

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED_NETS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback, IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)


def refused_ip(ip: _IPAddress) -> bool:
    """Whether an origin other than the connector's may not connect to
    ``ip``: loopback, private, link-local, CGNAT (100.64/10), 0.0.0.0/8,
    multicast, reserved, unspecified, documentation and benchmark ranges,
    unique-local IPv6, and every IPv6 form embedding an IPv4 address
    (IPv4-mapped, IPv4-compatible, NAT64; 6to4 when the embedded address is
    refused)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return True
        if ip.sixtofour is not None and refused_ip(ip.sixtofour):
            return True
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return True
    return any(ip.version == net.version and ip in net for net in _REFUSED_NETS)


def _address_of(sockaddr: tuple[Any, ...]) -> _IPAddress | None:
    text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone id is no part of it
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


#: ``socket.getaddrinfo``'s signature (replaceable in tests).
Resolver = Callable[..., list[tuple[Any, ...]]]

# -- URLs and origins ------------------------------------------------------------------


class Origin(NamedTuple):
    """A URL's origin: credentials and uploads go to the connector's only."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class _Target:
    origin: Origin
    #: The request target: path (``/`` when empty) and query.
    target: str
    #: The path alone, for logs.
    path: str


class Refused(Exception):
    """A request this host will not make; the text names no secret."""


def parse_url(url: str) -> _Target:
    """An ``http``/``https`` URL without user info, split for the request;
    raises :class:`Refused`."""
    if not isinstance(url, str) or any(c <= " " or c == "\x7f" for c in url):
        raise Refused("invalid url: empty, or whitespace or control characters in it")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("invalid url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"refused: scheme {scheme!r} (only http and https)")
    if "@" in parts.netloc:
        raise Refused("refused: credentials in the url")
    host = (parts.hostname or "").lower()
    if not host:
        raise Refused("invalid url: no host")
    if port is None:
        port = 443 if scheme == "https" else 80
    if port == 0:
        raise Refused("invalid url: port 0")
    path = parts.path or "/"
    target = path + (f"?{parts.query}" if parts.query else "")
    return _Target(Origin(scheme, host, port), target, path)


# -- file names ---------------------------------------------------------------------


def _sanitised(ext: str) -> str | None:
    ext = ext.strip().lower()
    return ext if _EXT.fullmatch(ext) else None


def _extension_of_name(name: str) -> str | None:
    last = re.split(r"[/\\]", name)[-1]
    stem, dot, ext = last.rpartition(".")
    if not dot or not stem:
        return None
    return _sanitised(ext)


def _split_params(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquoted(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    inner = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else raw[1:]
    return re.sub(r"\\(.)", r"\1", inner)


def _percent_decoded(text: str) -> str:
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogatepass")
    while i < len(raw):
        if raw[i] == 0x25 and re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "replace")


def _disposition_names(value: str) -> list[str]:
    """The file names of a ``Content-Disposition`` value, best first:
    ``filename*`` (RFC 8187), then ``filename``."""
    extended: list[str] = []
    plain: list[str] = []
    for param in _split_params(value)[1:]:
        name, eq, raw = param.partition("=")
        if not eq:
            continue
        name = name.strip().lower()
        raw = raw.strip()
        if name == "filename*":
            encoded = raw.split("'", 2)[2] if raw.count("'") >= 2 else raw
            extended.append(_percent_decoded(_unquoted(encoded)))
        elif name == "filename":
            plain.append(_unquoted(raw))
    return extended + plain


def _extension_of_mime(content_type: str) -> str | None:
    essence = content_type.split(";", 1)[0].strip().lower()
    if not essence:
        return None
    known = _MIME_EXT.get(essence)
    if known is not None:
        return known
    guessed = _MIMETYPES.guess_extension(essence)
    return _sanitised(guessed.lstrip(".")) if guessed else None


def extension_for(
    name_hint: str | None, content_disposition: str | None, content_type: str | None
) -> str:
    """The extension of a downloaded file: that of the hint's last path
    segment (its query or fragment ignored), else of the
    ``Content-Disposition`` file name (``filename*`` before ``filename``),
    else the MIME type's (a small table, then Python's built-in one), else
    ``bin``. A candidate that is not 1 to 10 ASCII letters or digits (after
    lower-casing) counts as absent, so the result always matches
    ``[a-z0-9]{1,10}``: never a separator, never a dot."""
    if name_hint:
        found = _extension_of_name(re.split(r"[?#]", name_hint, maxsplit=1)[0])
        if found:
            return found
    if content_disposition:
        for name in _disposition_names(content_disposition):
            found = _extension_of_name(name)
            if found:
                return found
    if content_type:
        found = _extension_of_mime(content_type)
        if found:
            return found
    return _FALLBACK_EXT


def is_our_name(name: str) -> bool:
    """Whether ``name`` is one this client gives downloads."""
    return _OUR_NAME.fullmatch(name) is not None


# -- requests and outcomes ------------------------------------------------------------


def _header_names(headers: Iterable[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


@dataclass(frozen=True)
class FetchRequest:
    """One download: ``GET url``, the body streamed to a new file on a 2xx."""

    url: str
    headers: list[tuple[str, str]]
    max_bytes: int
    #: Seconds, for the whole exchange (body included).
    timeout: float
    want_headers: list[str] = field(default_factory=list)
    name_hint: str | None = None

    def __repr__(self) -> str:  # no header values: they carry the bearer
        return (
            f"FetchRequest(url={_shown(self.url)!r}, headers={_header_names(self.headers)!r}, "
            f"max_bytes={self.max_bytes}, timeout={self.timeout:g}, "
            f"want_headers={self.want_headers!r}, name_hint={self.name_hint!r})"
        )


@dataclass(frozen=True)
class UploadRequest:
    """One upload: ``POST url`` with a file's bytes as the raw body."""

    url: str
    headers: list[tuple[str, str]]
    max_bytes: int
    timeout: float
    path: str

    def __repr__(self) -> str:
        return (
            f"UploadRequest(url={_shown(self.url)!r}, headers={_header_names(self.headers)!r}, "
            f"max_bytes={self.max_bytes}, timeout={self.timeout:g}, path={self.path!r})"
        )


def _shown(url: str) -> str:
    """Origin and path only: a query string or user info may hold a token."""
    try:
        t = parse_url(url)
    except Refused:
        return "<url>"
    return f"{t.origin}{t.path}"


@dataclass
class MediaOutcome:
    """How a media request went (WIT ``media-outcome``)."""

    #: HTTP status; 0 when no response arrived.
    status: int = 0
    #: Why it failed; never a header value or a URL's query.
    error: str | None = None
    #: The asked-for response headers present, names lower-case.
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Bytes written (fetch) or sent (upload).
    size: int = 0
    #: Fetch with a 2xx: the file written.
    path: str | None = None
    #: Upload: the reply body as text, at most 64 KiB.
    body: str | None = None

    @classmethod
    def failed(cls, error: str) -> MediaOutcome:
        return cls(error=error)

    def to_wit(self) -> Record:
        record = Record()
        setattr(record, "status", max(0, min(int(self.status), 0xFFFF)))  # noqa: B010
        setattr(record, "error", self.error)  # noqa: B010
        setattr(record, "headers", [(n, v) for n, v in self.headers])  # noqa: B010
        setattr(record, "size", max(0, int(self.size)))  # noqa: B010
        setattr(record, "path", self.path)  # noqa: B010
        setattr(record, "body", self.body)  # noqa: B010
        return record


# -- connections to checked addresses -------------------------------------------------

#: One address to connect to: (family, sockaddr) from ``getaddrinfo``.
_Address = tuple[int, tuple[Any, ...]]


def _open_socket(addresses: list[_Address], timeout: float) -> socket.socket:
    last: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last if last is not None else OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the addresses resolved and checked beforehand, never to
    a fresh resolution of the host name (``Host`` still names the host)."""

    def __init__(self, host: str, port: int, addresses: list[_Address], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._connect_timeout = timeout
        #: The socket, also after ``http.client`` hands it to the response
        #: (it drops ``sock`` when the response closes the connection).
        self.pinned: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.pinned = _open_socket(self._addresses, self._connect_timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTPConnection`, with TLS verified for the host
    name (``server_hostname``)."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[_Address],
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._addresses = addresses
        self._connect_timeout = timeout
        self._tls = context
        self.pinned: socket.socket | None = None

    def connect(self) -> None:
        sock = _open_socket(self._addresses, self._connect_timeout)
        self.pinned = sock  # until wrapped: a timeout during the TLS handshake
        try:
            self.sock = self.pinned = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _pinned(conn: http.client.HTTPConnection | None) -> socket.socket | None:
    sock = getattr(conn, "pinned", None)
    return sock if isinstance(sock, socket.socket) else None


class _Deadline:
    """The whole exchange's deadline: each socket operation gets the time
    left, and a timer shuts the socket down when it passes (a server
    dripping bytes cannot stretch the exchange)."""

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self.expired = False
        self._conn: http.client.HTTPConnection | None = None
        self._timer: threading.Timer | None = None

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError
        return left

    def watch(self, conn: http.client.HTTPConnection) -> None:
        self._conn = conn
        self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.expired = True
        sock = _pinned(self._conn)
        if sock is not None:
            # The plain socket's shutdown, also under TLS (SSLSocket's own
            # would drop its TLS state under a reader): the blocked read
            # ends, and the exchange reports the timeout.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def tick(self, conn: http.client.HTTPConnection) -> None:
        """Before a blocking read: the time left as the socket's timeout."""
        left = self.left()
        sock = _pinned(conn)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(left)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def describe(self) -> str:
        return f"timed out after {round(self.timeout * 1000)} ms"


def _describe(error: BaseException, deadline: _Deadline, host: str) -> str:
    """An exchange's failure in words: no URL, no header value."""
    if deadline.expired or isinstance(error, (TimeoutError, socket.timeout)):
        return deadline.describe()
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host}: {error.strerror or 'no address'}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {error.verify_message or 'verification failed'}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or type(error).__name__}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, http.client.HTTPException):
        # Their texts may quote what the server sent: the class only.
        return f"HTTP protocol error ({type(error).__name__})"
    if isinstance(error, OSError):
        return f"network error: {error.strerror or type(error).__name__}"
    return f"request failed ({type(error).__name__})"


def _checked_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Names validated, host-owned headers dropped; raises :class:`Refused`
    naming the header, never its value."""
    out = []
    for index, (raw_name, value) in enumerate(headers):
        name = raw_name.strip()
        if not _TOKEN.fullmatch(name):
            raise Refused(f"invalid header name (header {index})")
        if name.lower() in _HOST_OWNED:
            continue
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise Refused(f"invalid value for header {name.lower()}") from None
        if _BAD_VALUE.search(value):
            raise Refused(f"invalid value for header {name.lower()}")
        out.append((name, value))
    return out


def _wanted(response: http.client.HTTPResponse, want: list[str]) -> list[tuple[str, str]]:
    """The wanted response headers present, names lower-case, in the order
    asked, each name once (a repeated header gives one pair per value)."""
    seen: list[str] = []
    out: list[tuple[str, str]] = []
    for raw in want:
        name = raw.strip().lower()
        if not name or name in seen:
            continue
        seen.append(name)
        for value in response.msg.get_all(name) or ():
            out.append((name, str(value)))
    return out


def _close(
    deadline: _Deadline,
    conn: http.client.HTTPConnection | None,
    response: http.client.HTTPResponse | None,
) -> None:
    """Ends an exchange: the timer, the response (which owns the socket once
    ``http.client`` has handed it over) and the connection."""
    deadline.cancel()
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
    sock = _pinned(conn)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _too_large(max_bytes: int) -> str:
    return f"too large: over {max_bytes} bytes"


class MediaClient:
    """Downloads, uploads and deletes for the component, under the rules in
    the module's docs. Thread-safe; each call blocks (run them on worker
    threads)."""

    def __init__(
        self,
        options: MediaOptions,
        connector_url: str,
        *,
        user_agent: str = USER_AGENT,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        origin = connector_origin(connector_url)
        if origin is None:
            raise ValueError("media: the connector URL has no http(s) or ws(s) origin")
        self.options = options
        self.connector = Origin(*origin)
        self.user_agent = user_agent
        directory = Path(os.path.abspath(options.directory))
        try:
            str(directory).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"media directory {directory!s}: not valid UTF-8") from None
        #: The media directory, absolute.
        self.directory = directory
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._resolve: Resolver = resolver if resolver is not None else socket.getaddrinfo
        self.make_directory()

    def make_directory(self) -> None:
        """Creates the directory (mode 0700) if it is missing."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    # -- the exchange ---------------------------------------------------

    def _addresses(self, origin: Origin, guarded: bool) -> list[_Address]:
        found = self._resolve(origin.host, origin.port, type=socket.SOCK_STREAM)
        addresses: list[_Address] = []
        for family, _type, _proto, _canon, sockaddr in found:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if guarded:
                ip = _address_of(sockaddr)
                if ip is None or refused_ip(ip):
                    continue
            addresses.append((family, sockaddr))
        if not addresses:
            if guarded:
                raise Refused(
                    f"refused: {origin.host} resolves to no public address "
                    "(loopback, private or reserved only)"
                )
            raise Refused(f"cannot resolve {origin.host}: no address")
        return addresses

    def _admit(self, url: str, headers: list[tuple[str, str]]) -> tuple[_Target, bool]:
        """The parsed URL, and whether its addresses must be checked."""
        target = parse_url(url)
        origin = target.origin
        if origin != self.connector:
            for name, _ in headers:
                if name.strip().lower() in _CREDENTIALS:
                    raise Refused(
                        f"refused: {name.strip().lower()} header for {origin}, "
                        "which is not the connector origin"
                    )
            return target, not self.options.allow_private_addresses
        return target, False

    def _open(
        self,
        method: str,
        target: _Target,
        guarded: bool,
        headers: list[tuple[str, str]],
        body: bytes | None,
        deadline: _Deadline,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        origin = target.origin
        addresses = self._addresses(origin, guarded)
        left = deadline.left()
        conn: http.client.HTTPConnection
        if origin.scheme == "https":
            conn = _PinnedHTTPSConnection(origin.host, origin.port, addresses, left, self._ssl)
        else:
            conn = _PinnedHTTPConnection(origin.host, origin.port, addresses, left)
        deadline.watch(conn)
        try:
            log.debug("relay media %s %s%s", method, origin, target.path)
            conn.putrequest(method, target.target, skip_accept_encoding=True)
            if not any(name.lower() == "user-agent" for name, _ in headers):
                conn.putheader("User-Agent", self.user_agent)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            deadline.tick(conn)
            conn.endheaders(body)
            deadline.tick(conn)
            response = conn.getresponse()
            if deadline.expired:
                response.close()
                raise TimeoutError
        except BaseException:
            _close(deadline, conn, None)
            raise
        return conn, response

    # -- operations -------------------------------------------------------

    def fetch(self, req: FetchRequest, deadline_at: float | None = None) -> MediaOutcome:
        """Downloads ``req.url``. On a 2xx the body goes to a new file; a body
        over the cap (declared or streamed), or any error, leaves no file.
        Any other status comes back with the wanted headers and no file (a
        3xx is not followed). ``deadline_at`` (``time.monotonic()``) defaults
        to now plus the request's timeout."""
        timeout = self.timeout_for(req.timeout)
        deadline = _Deadline(
            deadline_at if deadline_at is not None else time.monotonic() + timeout, timeout
        )
        max_bytes = self.max_bytes_for(req.max_bytes)
        host = ""
        conn: http.client.HTTPConnection | None = None
        response: http.client.HTTPResponse | None = None
        try:
            target, guarded = self._admit(req.url, req.headers)
            host = target.origin.host
            headers = _checked_headers(req.headers)
            conn, response = self._open("GET", target, guarded, headers, None, deadline)
            outcome = MediaOutcome(
                status=response.status, headers=_wanted(response, req.want_headers)
            )
            if not 200 <= response.status < 300:
                return outcome
            declared = response.getheader("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
                outcome.error = _too_large(max_bytes)
                return outcome
            ext = extension_for(
                req.name_hint,
                response.getheader("content-disposition"),
                response.getheader("content-type"),
            )
            try:
                outcome.path, outcome.size = self._save(conn, response, ext, max_bytes, deadline)
            except _TooLarge:
                outcome.error = _too_large(max_bytes)
            except _WriteFailed as e:
                outcome.error = str(e)
            except Exception as e:  # reading the body failed: no file
                outcome.error = _describe(e, deadline, host)
            return outcome
        except Refused as e:
            return MediaOutcome.failed(str(e))
        except Exception as e:
            return MediaOutcome.failed(_describe(e, deadline, host))
        finally:
            _close(deadline, conn, response)

    def _save(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        ext: str,
        max_bytes: int,
        deadline: _Deadline,
    ) -> tuple[str, int]:
        path, fd = self._create(ext)
        size = 0
        kept = False
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    deadline.tick(conn)
                    chunk = response.read(_CHUNK)
                    if deadline.expired:
                        raise TimeoutError
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise _TooLarge
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise _WriteFailed(f"cannot write media file: {e.strerror}") from None
            kept = True
        finally:
            if not kept:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return path, size

    def _create(self, ext: str) -> tuple[str, int]:
        """A new file ``<directory>/<24 hex>.<ext>``, created exclusively
        (never an existing file, never through a link), mode 0600."""
        try:
            self.make_directory()
        except OSError as e:
            raise _WriteFailed(f"cannot create media directory: {e.strerror}") from None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        last: OSError | None = None
        for _ in range(4):
            path = os.path.join(self.directory, f"{secrets.token_hex(_NAME_HEX // 2)}.{ext}")
            try:
                return path, os.open(path, flags, 0o600)
            except FileExistsError as e:
                last = e
            except OSError as e:
                raise _WriteFailed(f"cannot create media file: {e.strerror}") from None
        raise _WriteFailed(f"cannot create media file: {last.strerror if last else 'no name'}")

    def upload(self, req: UploadRequest, deadline_at: float | None = None) -> MediaOutcome:
        """Posts the file ``req.path`` as the raw body to the connector
        origin (any other origin is refused). A missing, non-regular, empty
        or too large file is refused before any connection. Reports the
        status and up to 64 KiB of the reply as text, whatever the status."""
        timeout = self.timeout_for(req.timeout)
        deadline = _Deadline(
            deadline_at if deadline_at is not None else time.monotonic() + timeout, timeout
        )
        max_bytes = self.max_bytes_for(req.max_bytes)
        host = ""
        conn: http.client.HTTPConnection | None = None
        response: http.client.HTTPResponse | None = None
        try:
            target = parse_url(req.url)
            host = target.origin.host
            if target.origin != self.connector:
                raise Refused(
                    f"refused: uploads go to the connector origin only, not {target.origin}"
                )
            body = _read_upload(req.path, max_bytes)
            headers = _checked_headers(req.headers)
            conn, response = self._open("POST", target, False, headers, body, deadline)
            outcome = MediaOutcome(status=response.status, size=len(body))
            try:
                deadline.tick(conn)
                reply = response.read(MAX_REPLY_BYTES)
            except Exception as e:
                reply = b""
                outcome.error = _describe(e, deadline, host)
            outcome.body = _reply_text(reply)
            return outcome
        except Refused as e:
            return MediaOutcome.failed(str(e))
        except Exception as e:
            return MediaOutcome.failed(_describe(e, deadline, host))
        finally:
            _close(deadline, conn, response)

    def delete(self, paths: Iterable[str]) -> int:
        """Removes the given files if they are ours: directly in the
        directory and named as downloads are. Anything else is left alone
        (a link is removed as a link, never followed). How many went."""
        removed = 0
        for path in paths:
            if not isinstance(path, str) or not path:
                continue
            full = os.path.abspath(path)
            parent, name = os.path.split(full)
            if parent != str(self.directory) or not is_our_name(name):
                continue
            try:
                if stat.S_ISDIR(os.lstat(full).st_mode):
                    continue
                os.unlink(full)
                removed += 1
            except OSError:
                continue
        return removed

    def timeout_for(self, seconds: float) -> float:
        """A request's timeout, at most the configured one (which is also
        what a missing one gets)."""
        limit = self.options.timeout
        return limit if seconds <= 0 else min(seconds, limit)

    def max_bytes_for(self, requested: int) -> int:
        """A request's size cap, at most the configured one."""
        limit = self.options.max_bytes
        return limit if requested <= 0 else min(requested, limit)


class _TooLarge(Exception):
    pass


class _WriteFailed(Exception):
    pass


def _read_upload(path: str, max_bytes: int) -> bytes:
    """The upload's body; refused (:class:`Refused`) when the file is
    missing, not a regular file, empty or over the cap. Opened without
    blocking (a FIFO put in its place cannot stall a worker) and checked on
    the open file; read with a cap, so a file growing after the size check
    cannot pass it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise Refused("file not found") from None
    except OSError as e:
        raise Refused(f"cannot read file: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file")
        if info.st_size == 0:
            raise Refused("empty file")
        if info.st_size > max_bytes:
            raise Refused(f"file too large: {info.st_size} bytes over the {max_bytes} byte cap")
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        body = b"".join(chunks)
    except OSError as e:
        raise Refused(f"cannot read file: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(body) > max_bytes:
        raise Refused(f"file too large: over the {max_bytes} byte cap")
    if not body:
        raise Refused("empty file")
    return body


def _reply_text(reply: bytes) -> str:
    """At most :data:`MAX_REPLY_BYTES` of UTF-8 (lossy decoding may grow the
    text: cut again at a character boundary)."""
    text = reply[:MAX_REPLY_BYTES].decode("utf-8", "replace")
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_REPLY_BYTES:
        text = encoded[:MAX_REPLY_BYTES].decode("utf-8", "ignore")
    return text


# -- the runtime side -------------------------------------------------------------------


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _fetch_request(record: Any) -> FetchRequest:
    g = getattr  # kebab-case WIT field names
    return FetchRequest(
        url=_text(g(record, "url")),
        headers=[(_text(n), _text(v)) for n, v in g(record, "headers")],
        max_bytes=int(g(record, "max-bytes")),
        timeout=int(g(record, "timeout-ms")) / 1000,
        want_headers=[_text(h) for h in g(record, "want-headers")],
        name_hint=g(record, "name-hint"),
    )


def _upload_request(record: Any, path: str) -> UploadRequest:
    g = getattr
    return UploadRequest(
        url=_text(g(record, "url")),
        headers=[(_text(n), _text(v)) for n, v in g(record, "headers")],
        max_bytes=int(g(record, "max-bytes")),
        timeout=int(g(record, "timeout-ms")) / 1000,
        path=_text(path),
    )


class MediaPlane:
    """One adapter's media jobs: the imports hand them here, a bounded
    thread pool runs them, and their outcomes come back on the event loop
    to the instance that asked (``on-media-done``). Without a client every
    fetch and upload fails at once (fed after the current export call)."""

    def __init__(self, rt: Runtime, client: MediaClient | None) -> None:
        self._rt = rt
        self.client = client
        self._executor: ThreadPoolExecutor | None = None
        if client is not None:
            self._executor = ThreadPoolExecutor(
                max_workers=WORKERS, thread_name_prefix=f"relay-media-{rt.label}"
            )
        self._closed = False
        #: Jobs not finished, by (instance, job): cancelled if their
        #: instance is lost before they start.
        self._jobs: dict[tuple[int, int], Future[None]] = {}
        #: Files reported to the current instance and not deleted yet.
        self._written: set[str] = set()

    # -- from the imports (inside an export call; never block) ----------------

    def fetch(self, job: int, record: Any) -> None:
        client = self.client
        if client is None:
            self._refuse(job, NO_MEDIA_CLIENT)
            return
        try:
            req = _fetch_request(record)
        except (AttributeError, TypeError, ValueError):
            self._refuse(job, "host error: unreadable media request")
            return
        deadline = time.monotonic() + client.timeout_for(req.timeout)
        self._submit(job, lambda: client.fetch(req, deadline))

    def upload(self, job: int, record: Any, path: str) -> None:
        client = self.client
        if client is None:
            self._refuse(job, NO_MEDIA_CLIENT)
            return
        try:
            req = _upload_request(record, path)
        except (AttributeError, TypeError, ValueError):
            self._refuse(job, "host error: unreadable media request")
            return
        deadline = time.monotonic() + client.timeout_for(req.timeout)
        self._submit(job, lambda: client.upload(req, deadline))

    def delete(self, paths: list[str]) -> None:
        client = self.client
        if client is None:
            return
        paths = [_text(p) for p in paths]
        self._written.difference_update(paths)
        executor = self._executor
        if executor is None or self._closed:
            client.delete(paths)
            return
        executor.submit(self._delete, client, paths)

    def _delete(self, client: MediaClient, paths: list[str]) -> None:
        removed = client.delete(paths)
        log.debug("[%s] media files deleted: %d of %d", self._rt.label, removed, len(paths))

    def _refuse(self, job: int, error: str) -> None:
        self._rt.feed("on-media-done", job, MediaOutcome.failed(error).to_wit())

    def _submit(self, job: int, work: Callable[[], MediaOutcome]) -> None:
        executor = self._executor
        instance = self._rt.instance_id
        if executor is None or self._closed:
            self._refuse(job, "media client closed")
            return
        key = (instance, job)
        future = executor.submit(self._run, instance, job, work)
        self._jobs[key] = future
        future.add_done_callback(lambda _f: self._jobs.pop(key, None))

    # -- on a worker thread --------------------------------------------------

    def _run(self, instance: int, job: int, work: Callable[[], MediaOutcome]) -> None:
        try:
            outcome = work()
        except Exception as e:  # a host bug: reported, never raised
            log.error("[%s] media job failed: %s", self._rt.label, type(e).__name__)
            outcome = MediaOutcome.failed(f"host error ({type(e).__name__})")
        loop = self._rt.loop
        try:
            if loop is None or self._closed:
                raise RuntimeError("stopped")
            loop.call_soon_threadsafe(self._report, instance, job, outcome)
        except RuntimeError:  # the loop is closed: nobody will take the file
            self._discard(outcome)

    # -- back on the event loop ----------------------------------------------

    def _report(self, instance: int, job: int, outcome: MediaOutcome) -> None:
        rt = self._rt
        if self._closed or rt.stopped or rt.instance is None or instance != rt.instance_id:
            # Asked by an instance that is gone: the file has no owner.
            log.debug("[%s] media report for a lost instance dropped", rt.label)
            self._discard(outcome)
            return
        if outcome.path is not None:
            self._written.add(outcome.path)
        record = outcome.to_wit()
        if rt.in_call:
            rt.feed("on-media-done", job, record)
        else:
            rt.call("on-media-done", job, record)

    def _discard(self, outcome: MediaOutcome) -> None:
        if outcome.path is not None and self.client is not None:
            self.client.delete([outcome.path])

    # -- the instance and the adapter end --------------------------------------

    def instance_lost(self) -> None:
        """The current instance is gone (a trap): its queued jobs are
        cancelled, and the files it was told about, which may still be in
        the gateway's hands, are deleted after the retention."""
        for future in list(self._jobs.values()):
            future.cancel()  # only one not started yet is cancelled
        self._forget_written()

    def close(self) -> None:
        """The adapter stopped: queued jobs are cancelled, running ones
        finish and their files are deleted; the files already reported go
        after the retention (while the event loop runs)."""
        if self._closed:
            return
        self._forget_written()
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _forget_written(self) -> None:
        paths, self._written = sorted(self._written), set()
        client, loop = self.client, self._rt.loop
        if not paths or client is None:
            return
        if loop is None or loop.is_closed():
            return
        loop.call_later(client.options.retention, client.delete, paths)
