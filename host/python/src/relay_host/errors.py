"""Errors of the Python relay host. None of them ever carries the secret."""

from __future__ import annotations


class RelayError(Exception):
    """Base class of every error this package raises."""


class PluginError(RelayError):
    """Loading, compiling or instantiating the component failed."""


class IncompatibleVersion(PluginError):
    """The component's ``api-version`` has another major.minor than this host."""

    def __init__(self, found: str, expected: str) -> None:
        super().__init__(
            f"relay component api-version {found!r} is not compatible with host {expected!r}"
        )
        self.found = found
        self.expected = expected


class NotSupported(RelayError):
    """The component does not implement this (it was built against an older
    WIT version, say 0.1.0)."""


class StartRefused(RelayError):
    """The component's ``start`` refused the configuration."""


class GuestTrap(RelayError):
    """The component trapped (panic, CPU budget, memory cap)."""


class AdapterUnavailable(RelayError):
    """No live instance can answer now."""


class AdapterStopped(AdapterUnavailable):
    """The adapter has stopped (shut down, disabled and stopped, or never started)."""

    def __init__(self, message: str = "relay adapter stopped") -> None:
        super().__init__(message)


class AdapterRestarting(AdapterUnavailable):
    """The component trapped and is being re-instantiated; try again later."""

    def __init__(self, message: str = "relay adapter restarting") -> None:
        super().__init__(message)


class AdapterDown(AdapterUnavailable):
    """The restart budget is spent; the adapter stays down."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"relay adapter down: {reason}")
        self.reason = reason
