"""Configuration of one adapter: the WIT ``config`` record (with the same
defaults as the Rust host) plus the sandbox and socket limits this host
enforces. The secret is wrapped in :class:`Secret` so that no ``repr``,
``str`` or log line ever shows it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wasmtime.component import Record

#: Default linear-memory cap of one instance (128 MiB, as the Rust host).
DEFAULT_MEMORY_BYTES = 128 << 20

#: Defaults of the media plane (spec §9.1; the core's ``MediaConfig``).
MEDIA_MAX_BYTES = 25 << 20
MEDIA_TIMEOUT = 30.0
MEDIA_RETENTION = 3600.0
MEDIA_MAX_FILES = 512
MEDIA_MAX_TOTAL_BYTES = 1 << 30

#: Largest WIT ``u64`` / ``u32``.
_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1

#: WIT versions whose ``config`` record has no ``platform-extra`` and
#: ``prompt-nonce`` (those fields are 0.2).
_WITHOUT_EGRESS_FIELDS = frozenset({"0.1.0"})


def takes_egress_fields(api_version: str) -> bool:
    """Whether the ``config`` record of ``api_version`` has ``platform-extra``
    and ``prompt-nonce`` (0.2 does, 0.1.0 does not)."""
    return api_version not in _WITHOUT_EGRESS_FIELDS


_NONCE = re.compile(r"[0-9a-f]{6}")


def valid_prompt_nonce(nonce: object) -> bool:
    """A prompt-id nonce: exactly 6 lowercase hex digits."""
    return isinstance(nonce, str) and _NONCE.fullmatch(nonce) is not None


class Secret:
    """A per-gateway secret (the HMAC key of the upgrade token).

    ``repr`` and ``str`` print ``<redacted>``; :meth:`expose` is the only way
    to read it, and this host only calls it to hand the value to the
    component's ``start`` export.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret expects a str")
        self._value = value

    def expose(self) -> str:
        """The secret value (only for handing it to the component)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    def __str__(self) -> str:
        return "<redacted>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        # Pickling would write the value somewhere: refuse.
        raise TypeError("Secret cannot be pickled")


@dataclass(frozen=True)
class Identity:
    """One (platform, bot id) identity the gateway fronts; one ``hello`` each."""

    platform: str
    bot_id: str = ""


@dataclass
class HostLimits:
    """Limits the host enforces on the component and its sockets."""

    #: Linear memory cap of one instance in bytes; growing past it fails and
    #: the component traps (then it is restarted).
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_memories: int = 2
    max_tables: int = 8
    max_table_elements: int = 4096
    max_instances: int = 16
    #: Wall-clock budget of one export call in seconds, measured in epoch
    #: ticks of the plugin's ticker thread (:attr:`Plugin.epoch_tick`).
    call_budget: float = 1.0
    #: Opening handshake timeout of one dial (spec §1.3: 10 s).
    connect_timeout: float = 10.0
    #: WebSocket ping cadence and pong timeout (spec §1.3: 30 s / 60 s).
    ping_interval: float = 30.0
    ping_timeout: float = 60.0
    #: First wait before re-instantiating a trapped component; doubled per
    #: consecutive trap up to :attr:`restart_max`.
    restart_initial: float = 0.1
    restart_max: float = 30.0
    #: An instance that ran this long without trapping resets the backoff.
    restart_reset_after: float = 60.0
    #: Restarts allowed within :attr:`restart_window`; one more ends the
    #: adapter for good (``restart_budget_exhausted``).
    restart_budget: int = 5
    restart_window: float = 60.0
    #: Guest log lines (``log`` import plus stdout/stderr lines) forwarded to
    #: :mod:`logging` per export call; the rest are counted and reported once.
    log_lines_per_call: int = 1000


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


@dataclass
class MediaOptions:
    """The host's media client (spec §9.1, WIT 0.2 ``media-config``).

    Inbound attachments are downloaded to new files in :attr:`directory`
    (created with mode 0700; each file 0600, named
    ``<24 random hex digits>.<ext>``) before the message is delivered, and
    :meth:`RelayAdapter.send_media` uploads local files to the connector.
    The component deletes a download when its delivery is rejected, or
    :attr:`retention` seconds after it was accepted.

    The host enforces on its own, whatever the component asks: only
    ``http``/``https``; no ``Authorization`` header and no upload to any
    origin but the connector's; no proxy; no redirect followed; and, for
    every origin but the connector's, no loopback, private, link-local,
    CGNAT, multicast or reserved address (checked on the resolved
    addresses, and the connection goes to the address checked) unless
    :attr:`allow_private_addresses`.
    """

    #: Where downloads are written; only the operator should be able to
    #: write it. Made absolute when the adapter connects.
    directory: Path
    #: Let origins other than the connector's resolve to private and
    #: loopback addresses (a media server on the operator's own network;
    #: tests). Off by default.
    allow_private_addresses: bool = False
    #: Per-file cap in bytes, both directions (spec: 25 MiB).
    max_bytes: int = MEDIA_MAX_BYTES
    #: Timeout of one media request in seconds (spec: 30 s).
    timeout: float = MEDIA_TIMEOUT
    #: How long a downloaded file is kept after its delivery was accepted,
    #: in seconds (default one hour).
    retention: float = MEDIA_RETENTION
    #: Downloaded files kept at once; past it new downloads are refused.
    max_files: int = MEDIA_MAX_FILES
    #: Bytes of downloaded files kept at once; past it new downloads are
    #: refused.
    max_total_bytes: int = MEDIA_MAX_TOTAL_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.directory, str):
            self.directory = Path(self.directory)
        if not isinstance(self.directory, os.PathLike):
            raise TypeError(f"media directory must be a path, not {type(self.directory).__name__}")
        if not isinstance(self.allow_private_addresses, bool):
            raise TypeError("media allow_private_addresses must be a bool")
        for name, top in (
            ("max_bytes", _U64_MAX),
            ("max_files", _U32_MAX),
            ("max_total_bytes", _U64_MAX),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"media {name} must be an int, not {type(value).__name__}")
            if not 1 <= value <= top:
                raise ValueError(f"media {name} must be at least 1 (and fit its WIT type)")
        if self.max_total_bytes < self.max_bytes:
            raise ValueError("media max_total_bytes must be at least max_bytes")
        for name in ("timeout", "retention"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"media {name} must be a number of seconds")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"media {name} must be a finite number of seconds above 0")

    def to_wit(self) -> Record:
        """The WIT ``media-config`` record of a configured client."""
        return _media_record(
            enabled=True,
            max_bytes=self.max_bytes,
            timeout_ms=max(1, _ms(self.timeout)),
            retention_ms=max(1, _ms(self.retention)),
            max_files=self.max_files,
            max_total_bytes=self.max_total_bytes,
        )


def _media_record(**fields: Any) -> Record:
    record = Record()
    for name, value in fields.items():
        setattr(record, name.replace("_", "-"), value)
    return record


def _disabled_media() -> Record:
    """``media-config`` without a client: the spec's bounds, ``enabled`` false."""
    return _media_record(
        enabled=False,
        max_bytes=MEDIA_MAX_BYTES,
        timeout_ms=_ms(MEDIA_TIMEOUT),
        retention_ms=_ms(MEDIA_RETENTION),
        max_files=MEDIA_MAX_FILES,
        max_total_bytes=MEDIA_MAX_TOTAL_BYTES,
    )


def connector_origin(connector_url: str) -> tuple[str, str, int] | None:
    """The connector's HTTP origin (scheme, lower-case host without
    brackets, effective port): ``ws`` becomes ``http``, ``wss`` ``https``
    (the connector serves media on the host and port of its socket). None
    for another scheme or a URL without a host."""
    try:
        parts = urlsplit(connector_url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = {"ws": "http", "http": "http", "wss": "https", "https": "https"}.get(
        parts.scheme.lower()
    )
    host = (parts.hostname or "").lower()
    if scheme is None or not host:
        return None
    if port is None:
        port = 443 if scheme == "https" else 80
    return scheme, host, port


@dataclass
class AdapterConfig:
    """Everything one adapter needs. Durations are seconds (floats).

    Defaults are the protocol defaults of the core (and of the Rust host's
    ``AdapterConfig``).
    """

    connector_url: str
    identities: list[Identity] = field(default_factory=list)
    gateway_id: str = ""
    secret: Secret | None = None
    token_ttl_secs: int = 300
    handshake_timeout: float = 30.0
    outbound_timeout: float = 30.0
    reconnect: bool = True
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0
    #: ``None`` draws uniformly in [rung/2, rung]; ``f`` pins the wait to ``f * rung``.
    reconnect_jitter: float | None = None
    stable_connection: float = 10.0
    dormant_redial: float = 1.0
    redial_hold_max: float = 60.0
    going_idle_timeout: float = 2.0
    drain_grace: float = 1.5
    max_pending: int = 1024
    #: How long a request waits for one of ``max_pending`` slots.
    admission_timeout: float = 60.0
    max_undelivered: int = 256
    seen_capacity: int = 512
    route_capacity: int = 4096
    max_line_bytes: int = 1 << 20
    authorization_is_upstream: bool = True
    #: WIT 0.2: the operator's per-platform egress knobs (the gateway's
    #: ``platforms.relay.extra``): under ``"<platform>"`` (or flat, legacy)
    #: ``rich_blocks``, ``markdown_blocks``, ``reply_in_thread``,
    #: ``dm_top_level_threads_as_sessions``, ``channel_reply_modes``,
    #: ``unfurl_links``, ``unfurl_media``. Must be JSON-serialisable. Empty:
    #: none. Not passed to a 0.1.0 component.
    platform_extra: dict[str, Any] = field(default_factory=dict)
    #: WIT 0.2: the prompt-id nonce, 6 lowercase hex digits. None: the
    #: adapter draws one when it starts (``secrets.token_hex(3)``) and keeps
    #: it across instance restarts, so a button minted before a restart is
    #: still recognised as ours. Not passed to a 0.1.0 component.
    prompt_nonce: str | None = None
    #: WIT 0.2: the gateway's Discord slash commands, a list of
    #: ``{"name", "description", "options"?}`` dicts (Discord option
    #: objects), sent on the Discord ``hello`` as ``command_manifest``. The
    #: component validates it and skips bad entries with a warning; it never
    #: fails the handshake. Empty: none. Not passed to a 0.1.0 component.
    command_manifest: list[dict[str, Any]] = field(default_factory=list)
    #: WIT 0.2: the media client (spec §9.1; :class:`MediaOptions`). None
    #: (the default): no client, so inbound connector re-hosts are dropped
    #: (public URLs kept) and :meth:`RelayAdapter.send_media` cannot send a
    #: local file. A 0.1.0 component has no media plane.
    media: MediaOptions | None = None
    limits: HostLimits = field(default_factory=HostLimits)

    def __post_init__(self) -> None:
        if isinstance(self.secret, str):
            # Accept a plain string for convenience; wrap it at once.
            self.secret = Secret(self.secret)
        if self.prompt_nonce is not None and not valid_prompt_nonce(self.prompt_nonce):
            raise ValueError("prompt_nonce must be 6 lowercase hex digits (or None)")
        # Checked here, so a bad value fails at configuration, not at start.
        self.platform_extra_json()
        self.command_manifest_json()
        if self.media is not None:
            if not isinstance(self.media, MediaOptions):
                raise TypeError(
                    f"media must be a MediaOptions (or None), not {type(self.media).__name__}"
                )
            if connector_origin(self.connector_url) is None:
                raise ValueError("media needs a connector_url with an http(s) or ws(s) origin")

    def platform_extra_json(self) -> str:
        """``platform_extra`` as the WIT ``platform-extra`` text: a JSON
        object, or ``""`` when empty. Raises TypeError or ValueError for a
        value that is not a JSON-serialisable dict."""
        extra = self.platform_extra
        if not isinstance(extra, dict):
            raise TypeError(
                f"platform_extra must be a dict (a JSON object), not {type(extra).__name__}"
            )
        if not extra:
            return ""
        try:
            # ensure_ascii (the default): any text, even a lone surrogate,
            # is escaped, so it always lowers. No NaN: it is not JSON.
            return json.dumps(extra, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise type(e)(f"platform_extra is not JSON-serialisable: {e}") from None

    def command_manifest_json(self) -> str:
        """``command_manifest`` as the WIT ``command-manifest`` text: a JSON
        array, or ``""`` when empty. Raises TypeError or ValueError for a
        value that is not a JSON-serialisable list."""
        manifest = self.command_manifest
        if not isinstance(manifest, list):
            raise TypeError(
                f"command_manifest must be a list (a JSON array), not {type(manifest).__name__}"
            )
        if not manifest:
            return ""
        try:
            return json.dumps(manifest, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise type(e)(f"command_manifest is not JSON-serialisable: {e}") from None

    def replace(self, **changes: Any) -> AdapterConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_wit(self, api_version: str = "0.2.0", *, prompt_nonce: str | None = None) -> Record:
        """The WIT ``config`` record of ``api_version`` (kebab-case
        attributes, as wasmtime-py lowers records by their WIT field names).

        For 0.2 it carries ``platform-extra``, ``command-manifest``,
        ``media`` (``enabled`` when :attr:`media` is set) and ``prompt-nonce``:
        ``prompt_nonce`` when given (the adapter passes the one it drew),
        else :attr:`prompt_nonce`, else ``""`` (the component draws one)."""
        values: dict[str, Any] = {
            "identities": [_identity_record(i) for i in self.identities],
            "connector-url": self.connector_url,
            "gateway-id": self.gateway_id,
            "secret": self.secret.expose() if self.secret is not None else None,
            "token-ttl-secs": int(self.token_ttl_secs),
            "handshake-timeout-ms": _ms(self.handshake_timeout),
            "outbound-timeout-ms": _ms(self.outbound_timeout),
            "reconnect": bool(self.reconnect),
            "reconnect-initial-ms": _ms(self.reconnect_initial),
            "reconnect-max-ms": _ms(self.reconnect_max),
            "reconnect-jitter": (
                None if self.reconnect_jitter is None else float(self.reconnect_jitter)
            ),
            "stable-connection-ms": _ms(self.stable_connection),
            "dormant-redial-ms": _ms(self.dormant_redial),
            "redial-hold-max-ms": _ms(self.redial_hold_max),
            "going-idle-timeout-ms": _ms(self.going_idle_timeout),
            "drain-grace-ms": _ms(self.drain_grace),
            "max-pending": int(self.max_pending),
            "max-undelivered": int(self.max_undelivered),
            "seen-capacity": int(self.seen_capacity),
            "route-capacity": int(self.route_capacity),
            "max-line-bytes": int(self.max_line_bytes),
            "authorization-is-upstream": bool(self.authorization_is_upstream),
        }
        if takes_egress_fields(api_version):
            nonce = prompt_nonce if prompt_nonce is not None else self.prompt_nonce
            values["platform-extra"] = self.platform_extra_json()
            values["prompt-nonce"] = nonce or ""
            values["command-manifest"] = self.command_manifest_json()
            # A draft 0.2 component built before the media plane has no
            # such field: wasmtime-py lowers a record by its type's fields
            # and ignores this attribute there.
            values["media"] = _disabled_media() if self.media is None else self.media.to_wit()
        record = Record()
        for name, value in values.items():
            setattr(record, name, value)
        return record


def _identity_record(identity: Identity) -> Record:
    record = Record()
    setattr(record, "platform", identity.platform)  # noqa: B010 - WIT field names
    setattr(record, "bot-id", identity.bot_id)
    return record
