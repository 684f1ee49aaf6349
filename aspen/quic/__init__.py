"""Aspen's QUIC layer: key-authenticated connections on aioquic, iroh style.

Public surface: `Endpoint` (bind, dial, accept by ALPN, rpc helpers), the connection and stream
types it hands out, the identity-certificate helpers, the frame decoder and the errors.
"""

from __future__ import annotations

from aspen.quic.connection import MAX_CONCURRENT_STREAMS, AspenQuicConnection
from aspen.quic.endpoint import (
    DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_KEEPALIVE_INTERVAL_MS,
    DEFAULT_MAX_DATAGRAM_SIZE,
    MAX_CONNECTIONS,
    Endpoint,
)
from aspen.quic.errors import ConnectionLostError, HandshakeError, QuicTimeoutError, StreamResetError
from aspen.quic.framing import FrameDecoder
from aspen.quic.metrics import QuicMetrics
from aspen.quic.peer import QuicPeerConnection, QuicPeerStream
from aspen.quic.rpc import DEFAULT_RPC_TIMEOUT_MS, call, send_oneway, serve_rpc
from aspen.quic.tls_identity import endpoint_id_from_certificate, make_identity_certificate

__all__ = [
    "Endpoint", "QuicPeerConnection", "QuicPeerStream", "AspenQuicConnection", "QuicMetrics",
    "FrameDecoder", "HandshakeError", "ConnectionLostError", "StreamResetError", "QuicTimeoutError",
    "call", "send_oneway", "serve_rpc", "make_identity_certificate", "endpoint_id_from_certificate",
    "DEFAULT_IDLE_TIMEOUT_MS", "DEFAULT_KEEPALIVE_INTERVAL_MS", "DEFAULT_HANDSHAKE_TIMEOUT_MS",
    "DEFAULT_MAX_DATAGRAM_SIZE", "DEFAULT_RPC_TIMEOUT_MS", "MAX_CONNECTIONS", "MAX_CONCURRENT_STREAMS",
]
