"""The asyncio face of one QUIC connection: `QuicPeerConnection` and `QuicPeerStream`.

These implement `aspen.plugin_api.PeerConnection` / `PeerStream`. They own no socket and no
timer: the `Endpoint` feeds datagrams into the sans-IO `AspenQuicConnection`, then calls
`QuicPeerConnection.process_events()` and `transmit()` once per event-loop turn. Streams call
`_wake()` after queueing data, which asks the endpoint for such a turn.

Bounds: a connection holds at most `max_concurrent_streams` streams it opened (a semaphore) and
queues at most `MAX_PENDING_ACCEPTS` streams the peer opened that the handler has not accepted; a
stream buffers at most `MAX_STREAM_RECEIVE_BUFFER_SIZE` bytes the application has not read, and
`write_frame` waits while more than `MAX_STREAM_SEND_BACKLOG_SIZE` bytes are unacknowledged.
Flow control follows the reader: a stream reports the bytes it holds unread to the connection
(`set_stream_held`), whose MAX_STREAM_DATA credit is what was consumed plus the stream window,
so a slow reader makes the peer wait rather than overflow. Overflow by a peer that ignores the
credit resets the stream (counted), never grows memory.

Waits on the network: `read_frame`, `write_frame` (backlog) and `accept_stream` take an optional
`timeout_ms`; without one they still end, with `ConnectionLostError`, when the connection dies —
which the QUIC idle timeout (a peer that stops answering keep-alives) guarantees.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aioquic.quic import events

from aspen.errors import LimitExceeded, UsageError, WireDecodeError
from aspen.identity import EndpointId
from aspen.quic.connection import AspenQuicConnection
from aspen.quic.errors import (
    APP_ERROR_CANCELLED,
    APP_ERROR_FRAME_TOO_LARGE,
    APP_ERROR_MALFORMED_FRAME,
    APP_ERROR_RECEIVE_BUFFER_FULL,
    ConnectionLostError,
    HandshakeError,
    QuicTimeoutError,
    StreamResetError,
)
from aspen.quic.framing import FrameDecoder, encode_frame_parts
from aspen.quic.metrics import QuicMetrics
from aspen.wire import FRAME_HEADER_SIZE, MAX_RPC_MESSAGE_SIZE

if TYPE_CHECKING:
    from aioquic.quic.connection import NetworkAddress

logger = logging.getLogger(__name__)

# One whole frame the application is reading plus one arriving behind it. Flow control keeps a
# compliant peer within the stream window (at most this, checked by the Endpoint), so only a
# peer that ignores MAX_STREAM_DATA could get here; its stream is reset. guess: revisit.
MAX_STREAM_RECEIVE_BUFFER_SIZE = 2 * (MAX_RPC_MESSAGE_SIZE + FRAME_HEADER_SIZE)
# Two whole frames may wait for acknowledgement before write_frame blocks (one in flight, one
# queued), so a 10 MiB message is written in one call. guess: revisit.
MAX_STREAM_SEND_BACKLOG_SIZE = 2 * (MAX_RPC_MESSAGE_SIZE + FRAME_HEADER_SIZE)
# Streams the peer opened that the handler has not accepted yet; the peer can have at most
# max_concurrent_streams open, but finished-yet-unaccepted ones no longer count for QUIC.
MAX_PENDING_ACCEPTS = 256

# QUIC CRYPTO_ERROR (RFC 9001 §4.8) = 0x100 + TLS alert; alerts that mean "identity not proven".
_CRYPTO_ERROR = 0x100
_ALERT_BAD_CERTIFICATE = 42
_ALERT_UNSUPPORTED_CERTIFICATE = 43
_ALERT_DECRYPT_ERROR = 51  # CertificateVerify signature did not verify
_ALERT_CERTIFICATE_REQUIRED = 116
_ALERT_NO_APPLICATION_PROTOCOL = 120
_BAD_KEY_ALERTS = frozenset({_ALERT_BAD_CERTIFICATE, _ALERT_UNSUPPORTED_CERTIFICATE,
                             _ALERT_DECRYPT_ERROR, _ALERT_CERTIFICATE_REQUIRED})


def classify_handshake_failure(event: events.ConnectionTerminated) -> str:
    """The metric reason for a connection that ended before its handshake completed."""
    code = event.error_code
    if code == _CRYPTO_ERROR + _ALERT_NO_APPLICATION_PROTOCOL:
        return "unknown_alpn"
    if code - _CRYPTO_ERROR in _BAD_KEY_ALERTS:
        return "bad_key"
    if event.reason_phrase == "Idle timeout":
        return "timeout"
    return "other"


class QuicPeerStream:
    """One QUIC stream carrying length-prefixed frames (implements `PeerStream`).

    Created by `QuicPeerConnection.open_stream()` or handed out by `accept_stream()`. A
    unidirectional stream can only be written by its opener and read by the other side.
    """

    __slots__ = ("_conn", "stream_id", "_can_read", "_can_write", "_decoder", "_frames",
                 "_frames_bytes", "_recv_done", "_send_done", "_error", "_waiter", "_released",
                 "_on_done", "_has_sent")

    def __init__(self, conn: QuicPeerConnection, stream_id: int, *, can_read: bool,
                 can_write: bool, on_done: Callable[[QuicPeerStream], None] | None) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._can_read = can_read
        self._can_write = can_write
        self._decoder = FrameDecoder()
        self._frames: deque[bytes] = deque()
        self._frames_bytes = 0
        self._recv_done = not can_read  # FIN seen (or nothing to read)
        self._send_done = not can_write  # FIN or reset sent (or nothing to write)
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self._on_done = on_done
        self._has_sent = False  # no backlog is possible before the first write

    # the PeerStream API -----------------------------------------------------------------------

    @property
    def is_at_eof(self) -> bool:
        """True when the peer ended its side and every frame has been read: a reply written now
        can carry our FIN too (one packet instead of two)."""
        return self._recv_done and not self._frames and self._error is None

    @property
    def peak_buffered_bytes(self) -> int:
        """Most bytes ever held for one incomplete frame (proves oversize refusal buffered nothing)."""
        return self._decoder.peak_buffered_bytes

    async def read_frame(self, *, timeout_ms: int | None = None) -> bytes | None:
        """The next frame's body, or None at a clean end of stream.

        Raises StreamResetError (peer reset), WireDecodeError / LimitExceeded (bad frame: the
        stream has been reset), ConnectionLostError, QuicTimeoutError (`timeout_ms` elapsed;
        the stream stays usable).
        """
        if not self._can_read:
            raise UsageError(f"stream {self.stream_id} is send-only")
        while True:
            if self._frames:
                body = self._frames.popleft()
                self._frames_bytes -= len(body)
                conn = self._conn
                if not self._recv_done and conn.quic.set_stream_held(
                        self.stream_id, self._frames_bytes + self._decoder.buffered_bytes):
                    conn._wake()  # credit grew by half a window: tell the peer (MAX_STREAM_DATA)
                return body
            if self._error is not None:
                raise self._error
            if self._recv_done:
                self._maybe_release()
                return None
            waiter = self._conn._loop.create_future()
            self._waiter = waiter
            try:
                if timeout_ms is None:
                    await waiter
                else:
                    try:
                        await asyncio.wait_for(waiter, timeout_ms / 1000)
                    except TimeoutError:
                        raise QuicTimeoutError(f"read on stream {self.stream_id}", timeout_ms) from None
            finally:
                self._waiter = None

    async def write_frame(self, body: bytes, *, end_stream: bool = False,
                          timeout_ms: int | None = None) -> None:
        """Queue one frame (and FIN if `end_stream`). Raises LimitExceeded for a body over
        MAX_RPC_MESSAGE_SIZE before anything is queued; waits (up to `timeout_ms`) while the
        stream's unacknowledged backlog is over MAX_STREAM_SEND_BACKLOG_SIZE."""
        header, body = encode_frame_parts(body)
        self._check_writable()
        conn = self._conn
        if self._has_sent and conn.quic.has_stream_send_backlog(self.stream_id, MAX_STREAM_SEND_BACKLOG_SIZE):
            await conn._wait_send_capacity(self.stream_id, timeout_ms)
            self._check_writable()
        quic = conn.quic
        if len(body) < 4096:
            quic.send_stream_data(self.stream_id, header + body, end_stream)
        else:  # avoid copying a large body just to prepend 4 bytes
            quic.send_stream_data(self.stream_id, header)
            quic.send_stream_data(self.stream_id, body, end_stream)
        self._has_sent = True
        if end_stream:
            self._send_done = True
            self._maybe_release()
        conn._wake()

    async def finish(self) -> None:
        """End our sending side cleanly (FIN) without another frame. Idempotent."""
        if self._send_done or self._error is not None or self._conn._lost is not None:
            return
        self._send_done = True
        self._conn.quic.send_stream_data(self.stream_id, b"", True)
        self._conn._wake()
        self._maybe_release()

    def reset(self, error_code: int = 0) -> None:
        """Abort both directions: RESET_STREAM for what we send, STOP_SENDING for what we read."""
        self._abort(error_code, UsageError(f"stream {self.stream_id} was reset locally"))

    def _expire(self, what: str, timeout_ms: int) -> None:
        """A deadline passed (timer callback): reset the stream; readers get QuicTimeoutError."""
        self._abort(APP_ERROR_CANCELLED, QuicTimeoutError(what, timeout_ms))

    # fed by QuicPeerConnection.process_events -------------------------------------------------

    def limit_frames(self, limit_bytes: int) -> None:
        """Refuse frames over `limit_bytes` on this stream from now on (see FrameDecoder.set_limit);
        a frame already announced above it resets the stream, counted as oversized."""
        try:
            self._decoder.set_limit(limit_bytes)
        except LimitExceeded as exc:
            self._conn._metrics.frames_rejected.labels(reason="oversized").inc()
            self._abort(APP_ERROR_FRAME_TOO_LARGE, exc)

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if self._error is not None or self._recv_done:
            return  # late bytes of a stream we already failed or finished: drop
        try:
            if data:
                for body in self._decoder.feed(data):
                    self._frames.append(body)
                    self._frames_bytes += len(body)
            if end_stream:
                self._decoder.end_of_stream()
                self._recv_done = True
        except LimitExceeded as exc:
            self._conn._metrics.frames_rejected.labels(reason="oversized").inc()
            logger.debug("stream %d: %s; resetting it", self.stream_id, exc)
            self._abort(APP_ERROR_FRAME_TOO_LARGE, exc)
            return
        except WireDecodeError as exc:
            self._conn._metrics.frames_rejected.labels(reason="malformed").inc()
            logger.debug("stream %d: %s; resetting it", self.stream_id, exc)
            self._abort(APP_ERROR_MALFORMED_FRAME, exc)
            return
        held = self._frames_bytes + self._decoder.buffered_bytes
        if not self._recv_done:
            self._conn.quic.set_stream_held(self.stream_id, held)  # credit follows reads
        if held > MAX_STREAM_RECEIVE_BUFFER_SIZE:
            self._conn._metrics.frames_rejected.labels(reason="buffer_full").inc()
            self._abort(APP_ERROR_RECEIVE_BUFFER_FULL, LimitExceeded(
                "MAX_STREAM_RECEIVE_BUFFER_SIZE", self._frames_bytes + self._decoder.buffered_bytes,
                MAX_STREAM_RECEIVE_BUFFER_SIZE))
            return
        if self._frames or self._recv_done:
            self._notify()
        if self._recv_done:
            self._maybe_release()

    def _on_peer_reset(self, error_code: int) -> None:
        if self._error is None and not self._recv_done:
            self._error = StreamResetError(f"peer reset stream {self.stream_id} (code {error_code:#x})",
                                           error_code=error_code)
            self._frames.clear()
            self._frames_bytes = 0
            self._recv_done = True
            self._notify()
        self._maybe_release()

    def _on_stop_sending(self, error_code: int) -> None:
        # The peer will not read what we send: stop (RFC 9000 §3.5 requires a RESET_STREAM).
        if not self._send_done:
            self._send_done = True
            self._conn.quic.reset_stream(self.stream_id, error_code)
            self._conn._wake()
            if self._error is None:
                self._error = StreamResetError(
                    f"peer stopped reading stream {self.stream_id} (code {error_code:#x})",
                    error_code=error_code)
            self._notify()
        self._maybe_release()

    def _on_connection_lost(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._recv_done = self._send_done = True
        self._notify()
        self._maybe_release()

    # internals --------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self._can_write:
            raise UsageError(f"stream {self.stream_id} is receive-only")
        if self._conn._lost is not None:
            raise self._conn._lost
        if self._error is not None and not isinstance(self._error, (LimitExceeded, WireDecodeError)):
            raise self._error
        if self._send_done:
            raise UsageError(f"stream {self.stream_id}: sending side already finished")

    def _abort(self, error_code: int, exc: BaseException) -> None:
        quic = self._conn.quic
        if self._conn._lost is None:
            if not self._recv_done:
                quic.stop_stream(self.stream_id, error_code)
            if not self._send_done:
                quic.reset_stream(self.stream_id, error_code)
            self._conn._wake()
        self._recv_done = self._send_done = True
        self._frames.clear()
        self._frames_bytes = 0
        if self._error is None:
            self._error = exc
        self._notify()
        self._maybe_release()

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _maybe_release(self) -> None:
        if self._recv_done and self._can_read:
            self._conn.quic.forget_stream_held(self.stream_id)
        if not self._released and self._recv_done and self._send_done:
            self._released = True
            if self._on_done is not None:
                self._on_done(self)

    def __repr__(self) -> str:
        return f"QuicPeerStream({self.stream_id}, conn={self._conn!r})"


class QuicPeerConnection:
    """An authenticated QUIC connection (implements `PeerConnection`).

    Built by the `Endpoint` before the handshake; handed to callers and handlers only after
    `handshake_done` resolved, i.e. after the peer proved its key (`remote_id`).
    """

    def __init__(self, *, quic: AspenQuicConnection, loop: asyncio.AbstractEventLoop,
                 wake: Callable[[QuicPeerConnection], None], metrics: QuicMetrics,
                 direction: str, max_concurrent_streams: int, peer_addr: NetworkAddress) -> None:
        self.quic = quic
        self._loop = loop
        self._wake_endpoint = wake
        self._metrics = metrics
        self.direction = direction  # "out" (we dialed) or "in" (accepted)
        self.peer_addr = peer_addr
        self.handshake_done: asyncio.Future[None] = loop.create_future()
        self._remote_id: EndpointId | None = None
        self._authenticated = False
        self._alpn = ""
        self._streams: dict[int, QuicPeerStream] = {}
        self._highest_remote_bidi = -1
        self._highest_remote_uni = -1
        self._accept_queue: deque[QuicPeerStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._open_slots = asyncio.Semaphore(max_concurrent_streams)
        self._send_waiters: list[asyncio.Future[None]] = []
        self._lost: ConnectionLostError | None = None
        self._closed_future: asyncio.Future[None] = loop.create_future()
        self.is_terminated = False  # aioquic finished draining; the endpoint may forget us
        self.is_counted_open = False
        self.is_announced = False  # endpoint bookkeeping: authenticated connection dispatched
        self.is_lost_handled = False  # endpoint bookkeeping: loss counted, pool entry dropped
        self.last_activity_s = loop.time()
        self.extra_cids: set[bytes] = set()  # endpoint bookkeeping: ids routed to us
        self.cid_version: tuple[int, int] = (-1, -1)

    # PeerConnection API -----------------------------------------------------------------------

    @property
    def remote_id(self) -> EndpointId:
        if self._remote_id is None:
            raise UsageError("connection is not authenticated yet")
        return self._remote_id

    @property
    def alpn(self) -> str:
        return self._alpn

    @property
    def is_authenticated(self) -> bool:
        """Both sides proved their keys: a client waits for HANDSHAKE_DONE (RFC 9001 §4.1.2),
        which the server only sends after checking the client's certificate."""
        return self._authenticated

    @property
    def is_usable(self) -> bool:
        """Authenticated and not closing: new streams may be opened."""
        return self._authenticated and self._lost is None

    @property
    def open_stream_count(self) -> int:
        return len(self._streams)

    async def accept_stream(self, *, timeout_ms: int | None = None) -> QuicPeerStream | None:
        """The next stream the peer opened, or None once the connection is closed."""
        while True:
            if self._accept_queue:
                return self._accept_queue.popleft()
            if self._lost is not None:
                return None
            waiter = self._loop.create_future()
            self._accept_waiter = waiter
            try:
                if timeout_ms is None:
                    await waiter
                else:
                    try:
                        await asyncio.wait_for(waiter, timeout_ms / 1000)
                    except TimeoutError:
                        raise QuicTimeoutError("accept_stream", timeout_ms) from None
            finally:
                self._accept_waiter = None

    async def open_stream(self, *, unidirectional: bool = False) -> QuicPeerStream:
        """Open a new stream (bidirectional unless `unidirectional`). Waits for a free slot when
        `max_concurrent_streams` of ours are open; raises ConnectionLostError if closed."""
        if self._lost is not None:
            raise self._lost
        await self._open_slots.acquire()
        if self._lost is not None:
            self._open_slots.release()
            raise self._lost
        stream_id = self.quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        # aioquic only creates the stream when data is sent; reserve the id now so two callers
        # opening concurrently get different streams.
        self.quic._get_or_create_stream_for_send(stream_id)
        stream = QuicPeerStream(self, stream_id, can_read=not unidirectional, can_write=True,
                                on_done=self._on_local_stream_done)
        self._streams[stream_id] = stream
        return stream

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE with an application error code). Idempotent."""
        if self._lost is None:
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self._set_lost(ConnectionLostError(f"connection closed locally: {reason or 'closed'}",
                                               reason="local_close"))
            self._wake()

    async def wait_closed(self) -> None:
        """Return once the connection is closed (by either side, or by the idle timeout)."""
        await asyncio.shield(self._closed_future)

    # driven by the Endpoint -------------------------------------------------------------------

    def process_events(self) -> None:
        """Drain aioquic's events into streams, the accept queue and the handshake future."""
        quic = self.quic
        streams = self._streams
        while True:
            event = quic.next_event()
            if event is None:
                break
            etype = type(event)
            if etype is events.StreamDataReceived:
                assert isinstance(event, events.StreamDataReceived)
                stream = streams.get(event.stream_id)
                if stream is None:
                    stream = self._new_remote_stream(event.stream_id)
                    if stream is None:
                        continue
                stream._on_data(event.data, event.end_stream)
            elif etype is events.StreamReset:
                assert isinstance(event, events.StreamReset)
                stream = streams.get(event.stream_id) or self._new_remote_stream(event.stream_id)
                if stream is not None:
                    stream._on_peer_reset(event.error_code)
            elif etype is events.StopSendingReceived:
                assert isinstance(event, events.StopSendingReceived)
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_stop_sending(event.error_code)
            elif etype is events.HandshakeCompleted:
                assert isinstance(event, events.HandshakeCompleted)
                self._on_handshake_completed(event)
            elif etype is events.ConnectionTerminated:
                assert isinstance(event, events.ConnectionTerminated)
                self.is_terminated = True
                self._on_closed(event)
            # ConnectionIdIssued/Retired are read by the endpoint through quic.host_cids;
            # PingAcknowledged, ProtocolNegotiated, DatagramFrameReceived: nothing to do.
        if (not self._authenticated and self._remote_id is not None and self._lost is None
                and (not quic._is_client or quic._handshake_confirmed)):
            self._authenticated = True
            if not self.handshake_done.done():
                self.handshake_done.set_result(None)
        # aioquic reports a close it initiated (a TLS alert we raised, a protocol error) or one
        # the peer sent only after the draining period; callers must learn at once.
        if self._lost is None and quic._close_event is not None:
            self._on_closed(quic._close_event)
        if self._send_waiters:
            waiters, self._send_waiters = self._send_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _wake(self) -> None:
        self._wake_endpoint(self)

    async def _wait_send_capacity(self, stream_id: int, timeout_ms: int | None) -> None:
        deadline = None if timeout_ms is None else self._loop.time() + timeout_ms / 1000
        while self.quic.has_stream_send_backlog(stream_id, MAX_STREAM_SEND_BACKLOG_SIZE):
            if self._lost is not None:
                raise self._lost
            waiter = self._loop.create_future()
            self._send_waiters.append(waiter)
            if deadline is None:
                await waiter
            else:
                remaining = deadline - self._loop.time()
                try:
                    await asyncio.wait_for(waiter, max(remaining, 0))
                except TimeoutError:
                    raise QuicTimeoutError(f"write on stream {stream_id}", timeout_ms or 0) from None

    def _on_handshake_completed(self, event: events.HandshakeCompleted) -> None:
        remote_id = self.quic.remote_id
        if remote_id is None:  # pragma: no cover - IdentityTlsContext makes this impossible
            self.quic.close(error_code=0x100 + 42, reason_phrase="peer key not proven")
            self._fail_handshake(HandshakeError("handshake completed without a proven key",
                                                reason="bad_key"))
            return
        self._remote_id = remote_id
        self._alpn = event.alpn_protocol or ""

    def _fail_handshake(self, exc: HandshakeError) -> None:
        self._metrics.handshake_failures.labels(reason=exc.reason).inc()
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
            # Nobody may await a failed accept-side handshake; retrieve to avoid a warning.
            self.handshake_done.exception()

    def _on_closed(self, event: events.ConnectionTerminated) -> None:
        if not self.handshake_done.done():
            reason = classify_handshake_failure(event)
            self._fail_handshake(HandshakeError(
                f"handshake failed ({reason}): {event.reason_phrase or 'no reason'} "
                f"(code {event.error_code:#x})", reason=reason))
        if self._lost is None:
            self._set_lost(ConnectionLostError(
                f"connection closed: {event.reason_phrase or 'no reason'} (code {event.error_code:#x})",
                reason="idle_timeout" if event.reason_phrase == "Idle timeout" else "closed"))

    def mark_reset(self) -> None:
        """A stateless reset for this connection arrived: it is dead, send nothing more."""
        self.is_terminated = True
        if not self.handshake_done.done():
            self._fail_handshake(HandshakeError("peer has no state for this connection", reason="other"))
        if self._lost is None:
            self._set_lost(ConnectionLostError("peer reset the connection (stateless reset)",
                                               reason="stateless_reset"))

    def abort_handshake(self, exc: HandshakeError) -> None:
        """Give up on a handshake (timeout): fail waiters and close quietly."""
        if not self.handshake_done.done():
            self._fail_handshake(exc)
        self.quic.close(error_code=0, reason_phrase=str(exc))
        if self._lost is None:
            self._set_lost(ConnectionLostError(str(exc), reason="handshake"))
        self._wake()

    def _set_lost(self, exc: ConnectionLostError) -> None:
        self._lost = exc
        for stream in list(self._streams.values()):
            stream._on_connection_lost(exc)
        self._streams.clear()
        waiter = self._accept_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for w in self._send_waiters:
            if not w.done():
                w.set_result(None)
        self._send_waiters = []
        if not self._closed_future.done():
            self._closed_future.set_result(None)
        # Callers queued for a stream slot are woken by the releases above (each stream's
        # _on_connection_lost released its slot); they see _lost and release in turn.

    def _new_remote_stream(self, stream_id: int) -> QuicPeerStream | None:
        is_client = self.quic._is_client
        initiated_by_us = (stream_id & 1) == (0 if is_client else 1)
        # _remote_id is set once the peer's key is proven from our side (its CertificateVerify
        # checked); a client may see a server stream before HANDSHAKE_DONE if packets reorder.
        if initiated_by_us or self._remote_id is None or self._lost is not None:
            return None  # late event for a stream we already forgot, or data before auth
        unidirectional = bool(stream_id & 2)
        if unidirectional:
            if stream_id <= self._highest_remote_uni:
                return None
            self._highest_remote_uni = stream_id
        else:
            if stream_id <= self._highest_remote_bidi:
                return None
            self._highest_remote_bidi = stream_id
        stream = QuicPeerStream(self, stream_id, can_read=True, can_write=not unidirectional,
                                on_done=self._on_remote_stream_done)
        if len(self._accept_queue) >= MAX_PENDING_ACCEPTS:
            self._metrics.frames_rejected.labels(reason="buffer_full").inc()
            stream._abort(APP_ERROR_RECEIVE_BUFFER_FULL, LimitExceeded(
                "MAX_PENDING_ACCEPTS", len(self._accept_queue) + 1, MAX_PENDING_ACCEPTS))
            return None
        self._streams[stream_id] = stream
        self._accept_queue.append(stream)
        waiter = self._accept_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return stream

    def _on_local_stream_done(self, stream: QuicPeerStream) -> None:
        if self._streams.pop(stream.stream_id, None) is not None:
            self._open_slots.release()
        self.last_activity_s = self._loop.time()

    def _on_remote_stream_done(self, stream: QuicPeerStream) -> None:
        self._streams.pop(stream.stream_id, None)
        self.last_activity_s = self._loop.time()

    def __repr__(self) -> str:
        who = self._remote_id.short() if self._remote_id is not None else "?"
        return f"QuicPeerConnection({self.direction} {who} {self._alpn})"


__all__ = [
    "QuicPeerConnection",
    "QuicPeerStream",
    "MAX_STREAM_RECEIVE_BUFFER_SIZE",
    "MAX_STREAM_SEND_BACKLOG_SIZE",
    "MAX_PENDING_ACCEPTS",
    "classify_handshake_failure",
]
