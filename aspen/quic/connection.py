"""Aspen's sans-IO QUIC connection: aioquic's `QuicConnection` plus identity and bounded streams.

Rules (sans-IO, like aioquic itself): inputs are `connect(addr, now)`, `receive_datagram(data,
addr, now)`, `handle_timer(now)` and stream calls; outputs are pulled with `datagrams_to_send`,
`get_timer` and `next_event`. Times are aioquic's float seconds; the adapter converts in one place.

What the subclass changes, and why:

* Identity (`tls_identity`): the TLS context checks the server key against the dialed EndpointId
  and requires a proven client key; `remote_id` is that proven key, None until the handshake is
  complete. A `HandshakeCompleted` event therefore always means "the peer proved its key".
* Streams: the peer may open at most `max_concurrent_streams` bidirectional (and as many
  unidirectional) streams at once; aioquic hard-codes 128 and raises the limit as streams finish.
* Stateless reset (RFC 9000 §10.3): tokens are derived from the node's reset key and the
  connection id (HMAC, §10.3.2's suggested construction) instead of aioquic's random ones, so a
  restarted node can reset connections its previous incarnation held; `is_stateless_reset`
  recognises a reset sent to us (aioquic does not, it would wait for the idle timeout).
"""

from __future__ import annotations

import hashlib
import hmac

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from aspen.identity import EndpointId
from aspen.quic.tls_identity import IdentityTlsContext, install_identity_checks

# RFC 9000 §10.3: a stateless reset token is 16 bytes; the smallest reset datagram is 21 bytes
# (§10.3: "no smaller than 21 bytes": 1 header byte + 4 unpredictable bytes + 16 token bytes).
STATELESS_RESET_TOKEN_SIZE = 16
MIN_STATELESS_RESET_SIZE = 21
# aioquic's own default (QuicConnection sets 128 for both stream directions); quinn uses 100.
MAX_CONCURRENT_STREAMS = 128
# Label mixed into the HMAC key so reset tokens can never collide with other uses of the secret.
_RESET_KEY_LABEL = b"aspen quic stateless reset v1"


def derive_reset_key(secret_seed: bytes) -> bytes:
    """The per-node key for stateless reset tokens, derived from the identity seed (stable)."""
    return hmac.new(secret_seed, _RESET_KEY_LABEL, hashlib.sha256).digest()


def stateless_reset_token(reset_key: bytes, connection_id: bytes) -> bytes:
    """RFC 9000 §10.3.2: token = HMAC(static key, connection id), truncated to 16 bytes."""
    return hmac.new(reset_key, connection_id, hashlib.sha256).digest()[:STATELESS_RESET_TOKEN_SIZE]


class AspenQuicConnection(QuicConnection):
    """A QUIC connection that only completes its handshake with a peer that proved its key.

    `expected_peer_id` is the EndpointId a client dialed (required for clients, ignored for
    servers). `reset_key` comes from `derive_reset_key`.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        reset_key: bytes,
        expected_peer_id: EndpointId | None = None,
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
        original_destination_connection_id: bytes | None = None,
    ) -> None:
        if configuration.is_client and expected_peer_id is None:
            raise ValueError("a client connection needs the EndpointId it dials")
        if max_concurrent_streams < 1:
            raise ValueError(f"max_concurrent_streams must be >= 1, got {max_concurrent_streams}")
        super().__init__(configuration=configuration,
                         original_destination_connection_id=original_destination_connection_id)
        self._aspen_reset_key = reset_key
        self._aspen_expected_peer_id = expected_peer_id
        # Both are read when the transport parameters are serialised, in _initialize.
        self._local_max_streams_bidi.value = max_concurrent_streams
        self._local_max_streams_uni.value = max_concurrent_streams
        for cid in self._host_cids:
            if cid.stateless_reset_token is not None:
                cid.stateless_reset_token = stateless_reset_token(reset_key, cid.cid)

    # aioquic hooks --------------------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        install_identity_checks(self.tls, expected_peer_id=self._aspen_expected_peer_id)

    def _replenish_connection_ids(self) -> None:
        super()._replenish_connection_ids()
        for cid in self._host_cids:
            if not cid.was_sent and cid.stateless_reset_token is not None:
                cid.stateless_reset_token = stateless_reset_token(self._aspen_reset_key, cid.cid)

    # what Aspen reads -----------------------------------------------------------------------

    @property
    def remote_id(self) -> EndpointId | None:
        """The peer's proven EndpointId; None until the handshake has completed."""
        if not self._handshake_complete:
            return None
        tls_context = getattr(self, "tls", None)
        if not isinstance(tls_context, IdentityTlsContext):
            return None
        return tls_context.verified_peer_id

    @property
    def is_handshake_complete(self) -> bool:
        return self._handshake_complete

    @property
    def is_closed(self) -> bool:
        """True once aioquic has entered closing/draining/terminated (no more application data)."""
        return self._close_event is not None

    @property
    def host_cids(self) -> list[bytes]:
        """Every connection id of ours this connection may receive packets on."""
        return [c.cid for c in self._host_cids]

    def is_stateless_reset(self, datagram: bytes) -> bool:
        """True if `datagram` ends with a stateless reset token the peer gave us (RFC 9000 §10.3.1)."""
        if len(datagram) < MIN_STATELESS_RESET_SIZE or datagram[0] & 0x80:
            return False
        tail = datagram[-STATELESS_RESET_TOKEN_SIZE:]
        tokens = [self._peer_cid.stateless_reset_token]
        tokens += [c.stateless_reset_token for c in self._peer_cid_available]
        return any(t is not None and len(t) == STATELESS_RESET_TOKEN_SIZE and hmac.compare_digest(t, tail)
                   for t in tokens)

    def has_stream_send_backlog(self, stream_id: int, limit_bytes: int) -> bool:
        """True when more than `limit_bytes` written to `stream_id` are not yet acknowledged."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start > limit_bytes


__all__ = [
    "AspenQuicConnection",
    "MAX_CONCURRENT_STREAMS",
    "MIN_STATELESS_RESET_SIZE",
    "STATELESS_RESET_TOKEN_SIZE",
    "derive_reset_key",
    "stateless_reset_token",
]
