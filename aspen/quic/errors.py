"""Errors the QUIC layer raises, rooted in `aspen.errors` (h11's split: local misuse vs peer).

Stream reset codes are wire-visible (RFC 9000 §20.2: application error codes), so each error that
resets a stream carries its `error_code` as a class attribute.
"""

from __future__ import annotations

from aspen.errors import AspenError, PeerProtocolError

# Application error codes used in RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE. 0 means "no
# error" (a handler that simply stopped). Values are ours; they only need to differ.
APP_ERROR_NONE = 0x0
APP_ERROR_FRAME_TOO_LARGE = 0x10
APP_ERROR_MALFORMED_FRAME = 0x11
APP_ERROR_RECEIVE_BUFFER_FULL = 0x12
APP_ERROR_HANDLER_FAILED = 0x13
APP_ERROR_CANCELLED = 0x14
APP_ERROR_SHUTDOWN = 0x15


class HandshakeError(PeerProtocolError):
    """The QUIC/TLS handshake failed. `reason` is the metric label: bad_key, unknown_alpn,
    timeout, refused or other."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionLostError(AspenError):
    """The connection closed (peer close, idle timeout, stateless reset, local stop) while a
    stream or call still needed it. `reason` says which."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class StreamResetError(PeerProtocolError):
    """The peer reset its sending side or asked us to stop sending (`error_code` from the wire)."""

    def __init__(self, message: str, *, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class QuicTimeoutError(AspenError, TimeoutError):
    """A network wait ran out of time (`what` names the wait, `timeout_ms` its budget)."""

    def __init__(self, what: str, timeout_ms: int) -> None:
        super().__init__(f"{what} timed out after {timeout_ms} ms")
        self.what = what
        self.timeout_ms = timeout_ms


__all__ = [
    "APP_ERROR_NONE", "APP_ERROR_FRAME_TOO_LARGE", "APP_ERROR_MALFORMED_FRAME",
    "APP_ERROR_RECEIVE_BUFFER_FULL", "APP_ERROR_HANDLER_FAILED", "APP_ERROR_CANCELLED",
    "APP_ERROR_SHUTDOWN", "HandshakeError", "ConnectionLostError", "StreamResetError",
    "QuicTimeoutError",
]
