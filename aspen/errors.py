"""The error tree of Aspen.

One root, `AspenError`. Blame is split as in h11: `UsageError` means the local caller misused an
API; `PeerProtocolError` means a remote peer sent something wrong. Remote garbage never raises out
of a sans-IO core: cores turn it into a disconnect action plus a counter; adapters catch these at
the edge, log once, count, and close the offending stream.
"""

from __future__ import annotations


class AspenError(Exception):
    """Root of every error Aspen raises on purpose."""


class ConfigError(AspenError):
    """A configuration value is missing, malformed or out of range.

    `key` names the setting, `value` the offending value, `source` where it came from
    ("file", "env", "flag", "default", "ticket", ...).
    """

    def __init__(self, message: str, *, key: str = "", value: object = None, source: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        self.source = source


class UsageError(AspenError):
    """The local caller used an API wrongly (a bug on our side of the wire)."""


class PeerProtocolError(AspenError):
    """A remote peer violated the protocol."""

    error_code: int = 1


class WireDecodeError(PeerProtocolError):
    """Bytes from outside could not be decoded into the expected typed message."""

    error_code = 2


class LimitExceeded(AspenError):
    """A named limit was exceeded: `name` is the constant, `value` what was asked, `limit` the bound."""

    def __init__(self, name: str, value: int, limit: int) -> None:
        super().__init__(f"{name} exceeded: {value} > {limit}")
        self.name = name
        self.value = value
        self.limit = limit


class StorageError(AspenError):
    """Durable storage failed or found corruption it must not paper over."""


__all__ = [
    "AspenError",
    "ConfigError",
    "UsageError",
    "PeerProtocolError",
    "WireDecodeError",
    "LimitExceeded",
    "StorageError",
]
