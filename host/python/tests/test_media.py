"""The media plane (spec §9.1, WIT 0.2 ``fetch-media`` / ``upload-media`` /
``delete-media`` / ``on-media-done``, ``send_media``).

The client is tested directly against small HTTP servers on 127.0.0.1 (one
plays the connector's origin, the other a foreign one): the address checks
(a foreign loopback origin refused unless ``allow_private_addresses``, the
connection made to the address checked), the bearer only to the connector,
no redirect followed, the size cap, upload refusals without a connection,
file names and deletes, timeouts, and no header value in an error or a log
line. The runtime side is tested with a stand-in runtime (no media client,
a report for a lost instance), and end to end through the real component and
the stub connector (an inbound attachment localised, then deleted on a
reject; ``send_media`` with a public URL and with an uploaded file; the op
gate; a 0.1.0 component)."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay_host import AdapterConfig, MediaOptions, Plugin, RelayAdapter, State
from relay_host._media import (
    NO_MEDIA_CLIENT,
    FetchRequest,
    MediaClient,
    MediaOutcome,
    MediaPlane,
    UploadRequest,
    extension_for,
    refused_ip,
)

from conftest import WAIT, Recorder, Stub, fast_config, guild_event

FIXTURE_0_1_0 = Path(__file__).parents[2] / "tests" / "fixtures" / "relay-adapter-0.1.0.wasm"
OUR_NAME = re.compile(r"[0-9a-f]{24}\.[a-z0-9]{1,10}")
SECRET = "s3cr3t-b34r3r-t0k3n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
MEDIA_OPS = ["send", "edit", "typing", "follow_up", "get_chat_info", "send_media"]

# -- a small HTTP server -------------------------------------------------------------

#: A route answers with (status, headers, body) or writes the reply itself.
Reply = tuple[int, list[tuple[str, str]], bytes]
Route = Reply | Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """An HTTP/1.0 server on 127.0.0.1 with scripted routes; it records
    every request and counts every connection."""

    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    httpd: http.server.ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_server(tls: ssl.SSLContext | None = None) -> Server:
    server = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.seen.append(Seen(self.command, self.path, headers, body))
            route = server.routes.get(self.path.split("?", 1)[0])
            if route is None:
                route = (404, [("Content-Type", "text/plain")], b"not found")
            if callable(route):
                route(self)
                return
            status, extra, payload = route
            self.send_response(status)
            for name, value in extra:
                self.send_header(name, value)
            if not any(n.lower() == "content-length" for n, _ in extra):
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    class Counting(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def process_request(self, request: Any, client_address: Any) -> None:
            server.connections += 1
            super().process_request(request, client_address)

    httpd = Counting(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    server.httpd = httpd
    server.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def connector() -> Iterator[Server]:
    """The connector's origin (``ws://127.0.0.1:<port>/relay``)."""
    server = start_server()
    yield server
    assert server.httpd is not None
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def foreign() -> Iterator[Server]:
    """Another origin (same address, another port)."""
    server = start_server()
    yield server
    assert server.httpd is not None
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``media.test`` and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=media.test",
            "-addext",
            "subjectAltName=DNS:media.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[Server]:
    """An HTTPS server on 127.0.0.1 for ``media.test``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    server = start_server(context)
    yield server
    assert server.httpd is not None
    server.httpd.shutdown()
    server.httpd.server_close()


def to_loopback(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
    """A resolver sending every name to 127.0.0.1."""
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def client_for(connector: Server, directory: Path, **options: Any) -> MediaClient:
    return MediaClient(MediaOptions(directory, **options), f"ws://127.0.0.1:{connector.port}/relay")


def fetch_request(url: str, **changes: Any) -> FetchRequest:
    values: dict[str, Any] = {
        "url": url,
        "headers": [("User-Agent", "relay-test")],
        "max_bytes": 1 << 20,
        "timeout": 5.0,
        "want_headers": ["location", "content-type"],
        "name_hint": None,
    }
    values.update(changes)
    return FetchRequest(**values)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "192.0.0.8",
        "192.0.2.1",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "2001:db8::1",
        "2002:7f00:1::1",
    ],
)
def test_refused_addresses(address: str) -> None:
    assert refused_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111"]
)
def test_public_addresses(address: str) -> None:
    assert not refused_ip(ipaddress.ip_address(address))


def test_a_foreign_loopback_origin_is_refused_without_a_connection(
    connector: Server, foreign: Server, tmp_path: Path
) -> None:
    foreign.routes["/cat.png"] = (200, [("Content-Type", "image/png")], PNG)
    client = client_for(connector, tmp_path / "media")
    for url in (foreign.url("/cat.png"), f"http://localhost:{foreign.port}/cat.png"):
        outcome = client.fetch(fetch_request(url))
        assert outcome.status == 0
        assert outcome.path is None
        assert "no public address" in (outcome.error or ""), outcome
    assert foreign.connections == 0
    assert files_in(tmp_path / "media") == []


def test_a_foreign_loopback_origin_is_fetched_with_allow_private(
    connector: Server, foreign: Server, tmp_path: Path
) -> None:
    foreign.routes["/files/cat"] = (200, [("Content-Type", "image/png")], PNG)
    directory = tmp_path / "media"
    client = client_for(connector, directory, allow_private_addresses=True)
    outcome = client.fetch(fetch_request(foreign.url("/files/cat?sig=1"), name_hint="cat.PNG"))
    assert (outcome.status, outcome.error, outcome.size) == (200, None, len(PNG)), outcome
    assert outcome.headers == [("content-type", "image/png")]
    assert outcome.path is not None
    path = Path(outcome.path)
    assert path.parent == directory.resolve()
    assert OUR_NAME.fullmatch(path.name), path.name
    assert path.suffix == ".png"
    assert path.read_bytes() == PNG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert foreign.seen[0].path == "/files/cat?sig=1"


def test_the_connector_origin_is_exempt_and_gets_the_bearer(
    connector: Server, tmp_path: Path
) -> None:
    connector.routes["/relay/media/abc"] = (200, [("Content-Type", "text/plain")], b"hi")
    client = client_for(connector, tmp_path / "media")  # allow_private_addresses False
    headers = [("User-Agent", "relay-test"), ("Authorization", f"Bearer {SECRET}")]
    outcome = client.fetch(fetch_request(connector.url("/relay/media/abc"), headers=headers))
    assert (outcome.status, outcome.error) == (200, None), outcome
    assert outcome.path is not None
    assert outcome.path.endswith(".txt")
    assert connector.seen[0].headers["authorization"] == f"Bearer {SECRET}"


def test_the_connection_goes_to_the_address_checked(connector: Server, tmp_path: Path) -> None:
    """The name is resolved once, by the client, and the socket goes to
    that address; ``Host`` still names the host."""
    connector.routes["/a.txt"] = (200, [], b"pinned")
    calls: list[str] = []

    def resolver(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        return to_loopback(host, port)

    options = MediaOptions(tmp_path / "media", allow_private_addresses=True)
    url = f"ws://127.0.0.1:{connector.port}/relay"
    client = MediaClient(options, url, resolver=resolver)
    outcome = client.fetch(fetch_request(f"http://media.test:{connector.port}/a.txt"))
    assert (outcome.status, outcome.error) == (200, None), outcome
    assert calls == ["media.test"]
    assert connector.seen[0].headers["host"] == f"media.test:{connector.port}"

    # Without allow_private_addresses the same answer is refused, as is a
    # mix of a private and a loopback address.
    strict = MediaClient(MediaOptions(tmp_path / "media"), url, resolver=resolver)
    refused = strict.fetch(fetch_request(f"http://media.test:{connector.port}/a.txt"))
    assert refused.status == 0
    assert "no public address" in (refused.error or "")
    assert connector.connections == 1


def test_https_is_verified_for_the_host_name(
    connector: Server, tls_server: Server, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """TLS goes to the pinned address with the URL's host name as
    ``server_hostname``: the certificate must name it."""

    def drip(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b"d")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    tls_server.routes["/secure.png"] = (200, [], PNG)
    tls_server.routes["/drip"] = drip
    trust = ssl.create_default_context(cafile=str(tls_files[0]))
    options = MediaOptions(tmp_path / "media", allow_private_addresses=True)
    url = f"ws://127.0.0.1:{connector.port}/relay"
    client = MediaClient(options, url, ssl_context=trust, resolver=to_loopback)
    port = tls_server.port
    outcome = client.fetch(fetch_request(f"https://media.test:{port}/secure.png"))
    assert (outcome.status, outcome.error, outcome.size) == (200, None, len(PNG)), outcome
    wrong = client.fetch(fetch_request(f"https://other.test:{port}/secure.png"))
    assert (wrong.status, wrong.path) == (0, None)
    assert "certificate" in (wrong.error or ""), wrong
    untrusted = MediaClient(options, url, resolver=to_loopback)
    refused = untrusted.fetch(fetch_request(f"https://media.test:{port}/secure.png"))
    assert refused.status == 0
    assert "certificate" in (refused.error or ""), refused
    started = time.monotonic()
    slow = client.fetch(fetch_request(f"https://media.test:{port}/drip", timeout=0.3))
    assert time.monotonic() - started < 2.0
    assert slow.error == "timed out after 300 ms", slow
    assert list(files_in(tmp_path / "media")) == [Path(outcome.path or "").name]


def test_a_bearer_to_a_foreign_origin_is_refused(
    connector: Server, foreign: Server, tmp_path: Path
) -> None:
    foreign.routes["/x"] = (200, [], b"x")
    client = client_for(connector, tmp_path / "media", allow_private_addresses=True)
    for name in ("authorization", "AUTHORIZATION", "Proxy-Authorization"):
        outcome = client.fetch(
            fetch_request(foreign.url("/x"), headers=[(name, f"Bearer {SECRET}")])
        )
        assert outcome.status == 0
        assert "not the connector origin" in (outcome.error or ""), outcome
        assert SECRET not in (outcome.error or "")
    # Another port of the connector's host is another origin.
    assert foreign.connections == 0


def test_only_http_and_https_without_user_info(connector: Server, tmp_path: Path) -> None:
    client = client_for(connector, tmp_path / "media", allow_private_addresses=True)
    for url in (
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        f"http://user:pw@127.0.0.1:{connector.port}/x",
        "http:///nohost",
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1/a b",
        "",
    ):
        outcome = client.fetch(fetch_request(url))
        assert outcome.status == 0, (url, outcome)
        assert outcome.error, (url, outcome)
        assert outcome.path is None
    assert connector.connections == 0


def test_a_redirect_is_reported_not_followed(
    connector: Server, foreign: Server, tmp_path: Path
) -> None:
    foreign.routes["/moved"] = (302, [("Location", "/target.png")], b"")
    foreign.routes["/target.png"] = (200, [], PNG)
    client = client_for(connector, tmp_path / "media", allow_private_addresses=True)
    outcome = client.fetch(fetch_request(foreign.url("/moved")))
    assert outcome.status == 302
    assert outcome.headers == [("location", "/target.png")]
    assert (outcome.path, outcome.error) == (None, None)
    assert [s.path for s in foreign.seen] == ["/moved"]
    assert files_in(tmp_path / "media") == []


def test_a_non_2xx_leaves_no_file(connector: Server, tmp_path: Path) -> None:
    client = client_for(connector, tmp_path / "media")
    outcome = client.fetch(fetch_request(connector.url("/missing")))
    assert (outcome.status, outcome.path) == (404, None)
    assert outcome.headers == [("content-type", "text/plain")]
    assert files_in(tmp_path / "media") == []


def test_the_size_cap(connector: Server, tmp_path: Path) -> None:
    def undeclared(handler: http.server.BaseHTTPRequestHandler) -> None:
        # No Content-Length: the body ends with the connection.
        handler.send_response(200)
        handler.end_headers()
        try:
            for _ in range(8):
                handler.wfile.write(b"y" * 1000)
        except OSError:
            pass

    connector.routes["/declared"] = (200, [], b"x" * 2000)
    connector.routes["/undeclared"] = undeclared
    connector.routes["/fits"] = (200, [], b"z" * 1000)
    client = client_for(connector, tmp_path / "media")
    for path in ("/declared", "/undeclared"):
        outcome = client.fetch(fetch_request(connector.url(path), max_bytes=1000))
        assert outcome.status == 200
        assert outcome.error == "too large: over 1000 bytes", outcome
        assert outcome.path is None
    assert files_in(tmp_path / "media") == []
    # The host's own cap wins over a larger one in the request.
    capped = client_for(connector, tmp_path / "media", max_bytes=999)
    assert capped.fetch(fetch_request(connector.url("/fits"))).error == "too large: over 999 bytes"
    fits = client.fetch(fetch_request(connector.url("/fits"), max_bytes=1000))
    assert (fits.error, fits.size) == (None, 1000)


def test_the_timeout_covers_the_whole_exchange(connector: Server, tmp_path: Path) -> None:
    def drip(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b"d")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    connector.routes["/drip"] = drip
    client = client_for(connector, tmp_path / "media")
    started = time.monotonic()
    outcome = client.fetch(fetch_request(connector.url("/drip"), timeout=0.3))
    assert time.monotonic() - started < 2.0
    assert outcome.error == "timed out after 300 ms", outcome
    assert outcome.path is None
    assert files_in(tmp_path / "media") == []


def test_the_user_agent(connector: Server, tmp_path: Path) -> None:
    connector.routes["/u"] = (200, [], b"u")
    client = client_for(connector, tmp_path / "media")
    client.fetch(fetch_request(connector.url("/u"), headers=[]))
    client.fetch(fetch_request(connector.url("/u"), headers=[("user-agent", "mine/1")]))
    default, own = (s.headers.get("user-agent", "") for s in connector.seen)
    assert default.startswith("hermes-relay-host-python/")
    assert "urllib" not in default
    assert own == "mine/1"


def test_header_values_never_show(
    connector: Server, foreign: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(connector, tmp_path / "media", allow_private_addresses=True)
    bad = client.fetch(fetch_request(connector.url("/x"), headers=[("X-Token", f"{SECRET}\r\n")]))
    assert bad.error == "invalid value for header x-token"
    refused = client.fetch(
        fetch_request(foreign.url(f"/x?token={SECRET}"), headers=[("Authorization", SECRET)])
    )
    # A closed port: the connection fails.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    failed = client.fetch(
        fetch_request(f"http://127.0.0.1:{closed}/x?token={SECRET}", headers=[("X-K", SECRET)])
    )
    assert failed.status == 0
    assert failed.error, failed
    for outcome in (bad, refused, failed):
        assert SECRET not in repr(outcome)
    request = fetch_request(connector.url(f"/x?t={SECRET}"), headers=[("Authorization", SECRET)])
    assert SECRET not in repr(request)
    assert SECRET not in caplog.text


# -- file names and deletes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "disposition", "content_type", "expected"),
    [
        ("photo.JPG", None, "image/png", "jpg"),
        ("https://cdn.example/a/b.webp?size=large#x", None, None, "webp"),
        ("dir.d/noext", None, "image/gif", "gif"),
        (".profile", None, None, "bin"),
        ("x.waytoolongextension", 'attachment; filename="a.pdf"', None, "pdf"),
        ("x.p-g", None, "audio/ogg", "ogg"),
        (None, "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.PDF; filename=r.txt", None, "pdf"),
        (None, 'attachment; filename="semi;colon.tar.gz"', None, "gz"),
        (None, 'attachment; filename="../../etc/passwd"', "text/plain; charset=utf-8", "txt"),
        (None, "inline", "video/quicktime", "mov"),
        (None, None, "application/x-definitely-unknown", "bin"),
        (None, None, "application/vnd.ms-excel", "xls"),
        (None, None, None, "bin"),
        ("a.b/c\\d.e\x00", None, None, "bin"),
    ],
)
def test_extension_rules(
    hint: str | None, disposition: str | None, content_type: str | None, expected: str
) -> None:
    ext = extension_for(hint, disposition, content_type)
    assert ext == expected
    assert re.fullmatch(r"[a-z0-9]{1,10}", ext)


def test_a_downloads_name_follows_the_disposition(connector: Server, tmp_path: Path) -> None:
    connector.routes["/d"] = (
        200,
        [("Content-Disposition", 'attachment; filename="Report.CSV"'), ("Content-Type", "x/y")],
        b"a,b\n",
    )
    client = client_for(connector, tmp_path / "media")
    outcome = client.fetch(fetch_request(connector.url("/d")))
    assert outcome.path is not None, outcome
    assert outcome.path.endswith(".csv")


def test_delete_removes_only_our_files(tmp_path: Path, connector: Server) -> None:
    directory = tmp_path / "media"
    client = client_for(connector, directory)
    ours = directory / ("a" * 24 + ".png")
    ours.write_bytes(b"1")
    other_name = directory / "notes.txt"
    other_name.write_bytes(b"2")
    upper = directory / ("A" * 24 + ".png")
    upper.write_bytes(b"3")
    sub = directory / "sub"
    sub.mkdir()
    nested = sub / ("b" * 24 + ".png")
    nested.write_bytes(b"4")
    outside = tmp_path / ("c" * 24 + ".png")
    outside.write_bytes(b"5")
    target = tmp_path / "target.txt"
    target.write_bytes(b"6")
    link = directory / ("d" * 24 + ".txt")
    link.symlink_to(target)
    a_dir = directory / ("e" * 24 + ".bin")
    a_dir.mkdir()
    asked = [ours, other_name, upper, nested, outside, link, a_dir]
    dotted = f"{directory}/sub/../{'f' * 24}.jpg"
    (directory / ("f" * 24 + ".jpg")).write_bytes(b"7")
    removed = client.delete([str(p) for p in asked] + [dotted, "", "relative.png"])
    assert removed == 3
    assert not ours.exists()
    assert not link.is_symlink()
    assert not (directory / ("f" * 24 + ".jpg")).exists()
    for kept in (other_name, upper, nested, outside, target, a_dir):
        assert kept.exists(), kept


# -- uploads --------------------------------------------------------------------------------


def upload_request(url: str, path: Path | str, **changes: Any) -> UploadRequest:
    values: dict[str, Any] = {
        "url": url,
        "headers": [
            ("Authorization", f"Bearer {SECRET}"),
            ("Content-Type", "image/png"),
            ("X-Media-Filename", "cat.png"),
        ],
        "max_bytes": 1 << 20,
        "timeout": 5.0,
        "path": str(path),
    }
    values.update(changes)
    return UploadRequest(**values)


def test_upload_refusals_make_no_connection(
    connector: Server, foreign: Server, tmp_path: Path
) -> None:
    client = client_for(connector, tmp_path / "media", max_bytes=10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 11)
    fine = tmp_path / "fine.png"
    fine.write_bytes(b"ok")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    url = connector.url("/relay/media")
    cases = [
        (upload_request(url, tmp_path / "missing.png"), "file not found"),
        (upload_request(url, tmp_path), "not a regular file"),
        (upload_request(url, fifo), "not a regular file"),
        (upload_request(url, empty), "empty file"),
        (upload_request(url, big), "file too large: 11 bytes over the 10 byte cap"),
        (upload_request(url, big, max_bytes=100), "file too large: 11 bytes over the 10 byte cap"),
        (upload_request(foreign.url("/relay/media"), fine), "connector origin only"),
        (upload_request("file:///relay/media", fine), "only http and https"),
    ]
    for request, error in cases:
        outcome = client.upload(request)
        assert outcome.status == 0, outcome
        assert error in (outcome.error or ""), (request, outcome)
    assert connector.connections == 0
    assert foreign.connections == 0


def test_upload_posts_the_raw_file(connector: Server, tmp_path: Path) -> None:
    connector.routes["/relay/media"] = (
        200,
        [("Content-Type", "application/json")],
        b'{"id":"m1","size":1032}',
    )
    source = tmp_path / "cat.png"
    source.write_bytes(PNG)
    client = client_for(connector, tmp_path / "media")
    outcome = client.upload(upload_request(connector.url("/relay/media"), source))
    assert (outcome.status, outcome.error, outcome.size) == (200, None, len(PNG)), outcome
    assert outcome.body == '{"id":"m1","size":1032}'
    assert outcome.path is None
    (seen,) = connector.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/relay/media", PNG)
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.headers["content-type"] == "image/png"
    assert seen.headers["x-media-filename"] == "cat.png"
    assert seen.headers["content-length"] == str(len(PNG))
    assert seen.headers["user-agent"].startswith("hermes-relay-host-python/")


def test_an_uploads_reply_is_cut_at_64_kib(connector: Server, tmp_path: Path) -> None:
    connector.routes["/relay/media"] = (413, [], "é".encode() * 40_000)
    source = tmp_path / "a.bin"
    source.write_bytes(b"data")
    outcome = client_for(connector, tmp_path / "media").upload(
        upload_request(connector.url("/relay/media"), source)
    )
    assert outcome.status == 413
    assert outcome.body is not None
    assert len(outcome.body.encode()) == 64 * 1024
    assert set(outcome.body) == {"é"}


# -- the runtime side with a stand-in runtime ----------------------------------------------


class FakeRuntime:
    """What :class:`MediaPlane` uses of a runtime."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.label = "fake"
        self.loop = loop
        self.instance_id = 1
        self.instance: object | None = object()
        self.stopped = False
        self.in_call = False
        self.fed: list[tuple[str, tuple[Any, ...]]] = []
        self.called: list[tuple[str, tuple[Any, ...]]] = []

    def feed(self, export: str, *args: Any) -> None:
        self.fed.append((export, args))

    def call(self, export: str, *args: Any) -> tuple[bool, Any]:
        self.called.append((export, args))
        return True, None


def media_request_record(url: str, **changes: Any) -> Any:
    from wasmtime.component import Record

    record = Record()
    values: dict[str, Any] = {
        "url": url,
        "headers": [],
        "max-bytes": 1 << 20,
        "timeout-ms": 5000,
        "want-headers": [],
        "name-hint": None,
    }
    values.update(changes)
    for name, value in values.items():
        setattr(record, name, value)
    return record


def test_without_a_client_every_job_fails_at_once_after_the_call() -> None:
    rt = FakeRuntime()
    plane = MediaPlane(rt, None)  # type: ignore[arg-type]
    plane.fetch(7, media_request_record("https://cdn.example/a.png"))
    plane.upload(8, media_request_record("https://connector.example/relay/media"), "/tmp/x")
    plane.delete(["/tmp/whatever"])
    assert rt.called == []
    assert [(name, args[0]) for name, args in rt.fed] == [
        ("on-media-done", 7),
        ("on-media-done", 8),
    ]
    for _, (_, record) in rt.fed:
        assert (record.status, record.error, record.path, record.size) == (
            0,
            NO_MEDIA_CLIENT,
            None,
            0,
        )


async def test_a_report_for_a_lost_instance_deletes_its_file(
    connector: Server, tmp_path: Path
) -> None:
    release = threading.Event()

    def held(handler: http.server.BaseHTTPRequestHandler) -> None:
        release.wait(WAIT)
        handler.send_response(200)
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        handler.wfile.write(b"late")

    connector.routes["/held.txt"] = held
    connector.routes["/now.txt"] = (200, [], b"now")
    rt = FakeRuntime(asyncio.get_running_loop())
    plane = MediaPlane(rt, client_for(connector, tmp_path / "media"))  # type: ignore[arg-type]
    reported = asyncio.Event()
    original = plane._report

    def spy(instance: int, job: int, outcome: MediaOutcome) -> None:
        original(instance, job, outcome)
        reported.set()

    plane._report = spy  # type: ignore[method-assign]
    try:
        # A job of the current instance is fed to it, from the loop.
        plane.fetch(1, media_request_record(connector.url("/now.txt")))
        await asyncio.wait_for(reported.wait(), WAIT)
        ((export, (job, record)),) = rt.called
        assert (export, job, record.status) == ("on-media-done", 1, 200)
        assert await asyncio.to_thread(Path(record.path).read_bytes) == b"now"

        # The instance traps and a new one starts while a job is running.
        reported.clear()
        plane.fetch(2, media_request_record(connector.url("/held.txt")))
        await asyncio.to_thread(lambda: _wait_until(lambda: len(connector.seen) == 2))
        plane.instance_lost()
        rt.instance_id = 2
        release.set()
        await asyncio.wait_for(reported.wait(), WAIT)
        assert len(rt.called) == 1  # nothing fed to the new instance
        assert files_in(tmp_path / "media") == [Path(record.path).name]
    finally:
        release.set()
        plane.close()


def _wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- configuration -----------------------------------------------------------------------------


def test_the_config_record_carries_the_media_plane(tmp_path: Path) -> None:
    plain = AdapterConfig("ws://127.0.0.1:9/relay").to_wit("0.2.0")
    media = getattr(plain, "media")  # noqa: B009
    assert (media.enabled, media.__dict__["max-bytes"], media.__dict__["timeout-ms"]) == (
        False,
        25 << 20,
        30_000,
    )
    options = MediaOptions(
        tmp_path, max_bytes=1000, timeout=1.5, retention=60, max_files=3, max_total_bytes=5000
    )
    record = getattr(  # noqa: B009
        AdapterConfig("ws://127.0.0.1:9/relay", media=options).to_wit("0.2.0"), "media"
    )
    values = {name: getattr(record, name) for name in record.__dict__}
    assert values == {
        "enabled": True,
        "max-bytes": 1000,
        "timeout-ms": 1500,
        "retention-ms": 60_000,
        "max-files": 3,
        "max-total-bytes": 5000,
    }
    assert not hasattr(
        AdapterConfig("ws://127.0.0.1:9/relay", media=options).to_wit("0.1.0"), "media"
    )
    assert MediaOptions(str(tmp_path)).directory == tmp_path  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"max_bytes": 0}, ValueError),
        ({"max_bytes": 1.5}, TypeError),
        ({"max_files": 2**32}, ValueError),
        ({"max_total_bytes": 10, "max_bytes": 11}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"retention": float("inf")}, ValueError),
        ({"timeout": "30"}, TypeError),
        ({"allow_private_addresses": 1}, TypeError),
    ],
)
def test_media_options_are_checked(
    tmp_path: Path, changes: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        MediaOptions(tmp_path, **changes)


def test_media_needs_a_connector_origin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="origin"):
        AdapterConfig("unix:/run/relay.sock", media=MediaOptions(tmp_path))
    with pytest.raises(TypeError):
        AdapterConfig("ws://127.0.0.1:9/relay", media={"directory": tmp_path})  # type: ignore[arg-type]


# -- end to end through the component ------------------------------------------------------------


def descriptor(ops: list[str]) -> dict[str, Any]:
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


async def media_adapter(
    plugin: Plugin, stub: Stub, ops: list[str] | None = None, **changes: Any
) -> tuple[RelayAdapter, Recorder]:
    """Ready (with a descriptor listing ``ops`` when given) and ``chan1``'s
    route learned."""
    adapter = RelayAdapter(plugin, fast_config(stub.url, **changes))
    rec = Recorder(adapter)
    assert await adapter.connect(timeout=WAIT), f"not ready: {adapter.state}"
    if ops is not None:
        redial = adapter.stats()["dials"]
        await stub.do(
            {"do": "set_descriptor", "descriptor": descriptor(ops)},
            {"do": "close", "code": 1011, "reason": "new descriptor"},
        )
        await stub.wait_for(
            lambda: any(
                f["conn"] >= redial and f["json"].get("type") == "hello" for f in stub.frames
            ),
            "the re-dial's hello",
        )
        assert await adapter.wait_for_state(State.READY, timeout=WAIT) is State.READY
        assert adapter.supports_op("send_media") == ("send_media" in ops)
    await stub.do({"do": "push_inbound", "event": guild_event("hi", "m-in")})
    (await rec.message()).accept()
    return adapter, rec


async def wait_gone(path: Path) -> None:
    deadline = time.monotonic() + WAIT
    while await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"{path} was not deleted"
        await asyncio.sleep(0.02)


async def test_an_inbound_attachment_is_localised_then_deleted_on_reject(
    plugin: Plugin, stub: Stub, foreign: Server, tmp_path: Path
) -> None:
    foreign.routes["/att/cat"] = (200, [("Content-Type", "image/png")], PNG)
    directory = tmp_path / "media"
    media = MediaOptions(directory, allow_private_addresses=True)
    adapter, rec = await media_adapter(plugin, stub, media=media)
    try:
        url = foreign.url("/att/cat")
        event = guild_event("look", "m-att")
        event["media_urls"] = [url, "https://cdn.invalid/x.png"]
        event["media"] = [{"url": url, "mime": "image/png"}]
        await stub.do({"do": "push_inbound", "event": event})
        message = await rec.message()
        localised = message.event["media_urls"]
        assert len(localised) == 2, localised
        assert localised[1] == "https://cdn.invalid/x.png"
        path = Path(localised[0])
        assert path.parent == directory.resolve()
        assert path.suffix == ".png"
        assert await asyncio.to_thread(path.read_bytes) == PNG
        assert message.event["media_types"] == ["image/png", ""]
        # The foreign request carried no bearer.
        assert "authorization" not in foreign.seen[0].headers
        message.reject()
        await wait_gone(path)

        # An accepted one is kept (for the retention).
        event["message_id"] = "m-att2"
        event["media_urls"] = [url]
        await stub.do({"do": "push_inbound", "event": event})
        kept = await rec.message()
        kept.accept()
        kept_path = Path(kept.event["media_urls"][0])
        # A query feeds the accept first; a delete would be asked in that
        # call and forget the file at once.
        adapter.stats()
        assert adapter._rt is not None
        assert str(kept_path) in adapter._rt.media._written
        assert await asyncio.to_thread(kept_path.exists)
    finally:
        await adapter.disconnect()


async def test_a_private_foreign_attachment_is_refused_and_kept_as_a_url(
    plugin: Plugin, stub: Stub, foreign: Server, tmp_path: Path
) -> None:
    foreign.routes["/att/cat"] = (200, [("Content-Type", "image/png")], PNG)
    adapter, rec = await media_adapter(plugin, stub, media=MediaOptions(tmp_path / "m"))
    try:
        event = guild_event("look", "m-att")
        event["media_urls"] = [foreign.url("/att/cat")]
        await stub.do({"do": "push_inbound", "event": event})
        message = await rec.message()
        message.accept()
        assert message.event["media_urls"] == [foreign.url("/att/cat")]
        errors = message.event.get("media_errors") or []
        assert errors, message.event
        assert "no public address" in json.dumps(errors)
        assert foreign.connections == 0
    finally:
        await adapter.disconnect()


async def test_send_media_with_a_public_url(plugin: Plugin, stub: Stub) -> None:
    adapter, _ = await media_adapter(plugin, stub, MEDIA_OPS)
    try:
        mark = stub.mark()
        result = await asyncio.wait_for(
            adapter.send_media(
                "chan1",
                "image",
                "https://cdn.example/cat.png",
                caption="a cat",
                reply_to="m-in",
                filename="cat.png",
                metadata={"k": "v"},
            ),
            WAIT,
        )
        assert result.success, result
        frame = (await stub.frame("outbound", after=mark))["json"]
        action = frame["action"]
        assert action["op"] == "send_media"
        assert (action["chat_id"], action["media_kind"], action["source_url"]) == (
            "chan1",
            "image",
            "https://cdn.example/cat.png",
        )
        assert (action["content"], action["reply_to"], action["filename"]) == (
            "a cat",
            "m-in",
            "cat.png",
        )
        assert action["metadata"]["k"] == "v"
    finally:
        await adapter.disconnect()


async def test_send_media_is_op_gated(plugin: Plugin, stub: Stub, tmp_path: Path) -> None:
    adapter, _ = await media_adapter(plugin, stub, media=MediaOptions(tmp_path / "m"))
    try:
        mark = stub.mark()
        result = await asyncio.wait_for(
            adapter.send_media("chan1", "image", "https://cdn.example/cat.png"), WAIT
        )
        assert (result.success, result.declined) == (False, False)
        assert result.error == "relay send_media op unavailable"
        # Nothing went out: the next frame is this typing request's.
        assert (await asyncio.wait_for(adapter.send_typing("chan1"), WAIT)).success
        typing = await stub.frame("outbound", after=mark)
        assert typing["json"]["action"]["op"] == "typing"
    finally:
        await adapter.disconnect()


async def test_send_media_with_a_local_file_needs_a_media_client(
    plugin: Plugin, stub: Stub, tmp_path: Path
) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(PNG)
    adapter, _ = await media_adapter(plugin, stub, MEDIA_OPS)
    try:
        result = await asyncio.wait_for(adapter.send_media("chan1", "image", source), WAIT)
        assert not result.success
        assert (result.error or "").startswith("relay media unavailable"), result
    finally:
        await adapter.disconnect()


async def test_send_media_uploads_a_local_file_first(
    plugin: Plugin, stub: Stub, tmp_path: Path
) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(PNG)
    media = MediaOptions(tmp_path / "m")
    adapter, _ = await media_adapter(plugin, stub, MEDIA_OPS, media=media)
    try:
        mark = stub.mark()
        empty = tmp_path / "empty.png"
        empty.write_bytes(b"")
        refused = await asyncio.wait_for(adapter.send_media("chan1", "image", empty), WAIT)
        assert not refused.success
        assert "empty file" in (refused.error or ""), refused

        result = await asyncio.wait_for(
            adapter.send_media("chan1", "document", source, caption="the cat"), WAIT
        )
        assert result.success, result
        frame = (await stub.frame("outbound", after=mark))["json"]
        action = frame["action"]
        assert (action["op"], action["media_kind"], action["content"]) == (
            "send_media",
            "document",
            "the cat",
        )
        reference = action["source_url"]
        assert reference.startswith(f"{stub.base_url}/relay/media/"), reference
        # The connector holds exactly the file's bytes.
        fetched = await asyncio.to_thread(lambda: urllib.request.urlopen(reference, timeout=WAIT))
        with fetched:
            assert fetched.read() == PNG
    finally:
        await adapter.disconnect()


async def test_a_0_1_0_component_has_no_send_media(stub: Stub, tmp_path: Path) -> None:
    plugin = Plugin.from_file(FIXTURE_0_1_0)
    config = fast_config(stub.url, media=MediaOptions(tmp_path / "m"))
    adapter = RelayAdapter(plugin, config)
    assert await adapter.connect(timeout=WAIT)
    try:
        result = await adapter.send_media("chan1", "image", "https://cdn.example/cat.png")
        assert (result.success, result.error) == (
            False,
            "not supported by this component (api 0.1.0)",
        )
    finally:
        await adapter.disconnect()
