"""Python host for the Hermes relay adapter WebAssembly component.

The component (WIT world ``hermes:relay/relay-adapter``, 0.2.0 or 0.1.0) holds the
protocol logic; this package supplies its imports on wasmtime-py (WebSocket
dials with ``websockets``, one asyncio timer, events to the gateway) under a
sandbox (memory cap, per-call CPU budget, no preopens, no environment) and
restarts it after a trap.
"""

from .adapter import RelayAdapter
from .config import (
    DEFAULT_MEMORY_BYTES,
    AdapterConfig,
    HostLimits,
    Identity,
    MediaOptions,
    Secret,
)
from .errors import (
    AdapterDown,
    AdapterRestarting,
    AdapterStopped,
    AdapterUnavailable,
    GuestTrap,
    IncompatibleVersion,
    NotSupported,
    PluginError,
    RelayError,
    StartRefused,
)
from .message import RelayMessage
from .plugin import HOST_API_VERSION, SUPPORTED_API_VERSIONS, Plugin
from .types import (
    ChatInfo,
    ChatLabels,
    FatalError,
    Health,
    ProcessingOutcome,
    PromptAnswer,
    PromptOption,
    SendResult,
    State,
)

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "HOST_API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "AdapterConfig",
    "AdapterDown",
    "AdapterRestarting",
    "AdapterStopped",
    "AdapterUnavailable",
    "ChatInfo",
    "ChatLabels",
    "FatalError",
    "GuestTrap",
    "Health",
    "HostLimits",
    "Identity",
    "IncompatibleVersion",
    "MediaOptions",
    "NotSupported",
    "Plugin",
    "PluginError",
    "ProcessingOutcome",
    "PromptAnswer",
    "PromptOption",
    "RelayAdapter",
    "RelayError",
    "RelayMessage",
    "Secret",
    "SendResult",
    "StartRefused",
    "State",
]
