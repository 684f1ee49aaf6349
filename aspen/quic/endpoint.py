"""The QUIC endpoint: aioquic's sans-IO connections driven by our own datagram layer.

Theory of operation (the adapter, kept thin like aioquic's `asyncio/protocol.py`):

* One `DatagramPath` (today a UDP socket) feeds `_on_datagram`. The destination connection id
  picks the connection (`_by_cid`); the datagram goes into `AspenQuicConnection.receive_datagram`
  and the connection is marked dirty. Unknown ids: an Initial packet starts a server-side
  connection (if an ALPN is registered and `max_connections` allows), a short-header packet is
  checked for a stateless reset addressed to us, or answered with one (RFC 9000 §10.3).
* Once per event-loop turn `_flush` services every dirty connection: drain aioquic's events
  into streams (`QuicPeerConnection.process_events`), send what aioquic wants to send, re-arm
  the connection's single timer. Batching a turn's datagrams before transmitting is what lets
  one ACK cover many packets.
* An accepted connection is handed to the `ProtocolHandler` registered for its ALPN only after
  its handshake completed — which (see `tls_identity`) means the dialer proved its key. ALPNs
  nobody registered are refused inside the TLS handshake (no_application_protocol).
* Dialed connections live in a `ConnectionPool`: one per (peer, ALPN), shared handshakes,
  re-dial after failure. Keep-alive PINGs go out every `keepalive_interval_ms` while a connection
  has open streams; a connection with no traffic for `idle_timeout_ms` is closed by QUIC's idle
  timeout (RFC 9000 §10.1), which also bounds every wait on a dead peer.
* Datagram size: connections start at `max_datagram_size_bytes` (1200 by default, RFC 9000 §14)
  and, with `pmtu_probe`, probe up to the route's MTU (DPLPMTUD; see `connection.py`).

Times: aioquic wants float seconds; `_now_s` is the one place that reads the clock (monotonic).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Mapping

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from prometheus_client import CollectorRegistry

from aspen.addr import EndpointAddr, SocketAddr
from aspen.errors import ConfigError, LimitExceeded, UsageError
from aspen.identity import EndpointId, SecretKey
from aspen.plugin_api import ProtocolHandler
from aspen.quic.allocator import keep_heap_top
from aspen.quic.connection import (
    MAX_CONCURRENT_STREAMS,
    MIN_STATELESS_RESET_SIZE,
    AspenQuicConnection,
    derive_reset_key,
    stateless_reset_token,
)
from aspen.quic.errors import APP_ERROR_SHUTDOWN, ConnectionLostError, HandshakeError
from aspen.quic.metrics import QuicMetrics
from aspen.quic.path import DatagramPath, NetworkAddress, UdpPath, network_to_socket_addr
from aspen.quic.peer import MAX_STREAM_RECEIVE_BUFFER_SIZE, QuicPeerConnection
from aspen.quic.pool import ConnectionPool
from aspen.quic.rpc import DEFAULT_RPC_TIMEOUT_MS
from aspen.quic.rpc import call as rpc_call
from aspen.quic.rpc import send_oneway as rpc_send_oneway
from aspen.quic.tls_identity import make_identity_certificate
from aspen.units import MiB
from aspen.wire import FRAME_HEADER_SIZE, MAX_RPC_MESSAGE_SIZE

logger = logging.getLogger(__name__)

# iroh-protocols.md §1.3: HEARTBEAT_INTERVAL = 5 s, connection-level idle timeout 30 s.
DEFAULT_KEEPALIVE_INTERVAL_MS = 5_000
DEFAULT_IDLE_TIMEOUT_MS = 30_000
# A handshake is 1-2 round trips; 10 s covers a slow relay with loss. guess: revisit.
DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
# All connections of one endpoint (dialed + accepted + handshaking). Each costs a few KiB plus
# its buffers; 1024 is an order of magnitude above the Rust Aspen's 100-voter cluster bound.
MAX_CONNECTIONS = 1024
# aioquic's connection id length (QuicConfiguration.connection_id_length default, 8 bytes).
CONNECTION_ID_LENGTH = 8
# RFC 9000 §14: 1200 bytes always fits; larger sizes need a path known to carry them.
DEFAULT_MAX_DATAGRAM_SIZE = SMALLEST_MAX_DATAGRAM_SIZE
# Flow-control windows. A stream's credit is what its reader consumed plus this (connection.py);
# 16 MiB lets a 10 MiB message go out without waiting for a MAX_STREAM_DATA round trip (measured
# in perf/). The connection window is aioquic's: doubled as it is used.
DEFAULT_STREAM_WINDOW_SIZE = 16 * MiB
# A stream's credit grows as the application reads whole frames, so the window must hold the
# largest frame (peer.py holds at most MAX_STREAM_RECEIVE_BUFFER_SIZE).
MIN_STREAM_WINDOW_SIZE = MAX_RPC_MESSAGE_SIZE + FRAME_HEADER_SIZE
DEFAULT_CONNECTION_WINDOW_SIZE = 32 * MiB
# RFC 9000 §10.3.3 asks endpoints to limit stateless resets; one per 10 ms is plenty for real
# restarts and useless for amplification (each reset is smaller than its trigger). guess.
MAX_STATELESS_RESETS_PER_SECOND = 100
# Cap on a stateless reset we send: 1 + 26 random + 16 token bytes (looks like a small packet).
STATELESS_RESET_SIZE = 43
# Handler tasks are bounded by MAX_CONNECTIONS (one per accepted connection).
# QUIC v1 only (RFC 9000), as iroh. aioquic also speaks v2 (RFC 9369) and derives Initial keys
# for every version it supports on every new connection: two HKDF key sets per side per handshake
# for a version no Aspen node ever sends. A v2 Initial gets a Version Negotiation packet.
_SUPPORTED_VERSIONS: list[int] = [QuicProtocolVersion.VERSION_1]


class Endpoint:
    """A node's QUIC endpoint: dials peers by EndpointAddr, routes accepted ones by ALPN.

    Lifecycle: `await start()` binds; `await stop()` closes every connection, cancels handler
    tasks and unbinds. `handlers` maps ALPN -> ProtocolHandler; an empty map accepts nothing.
    `registry` receives the metrics (never the global registry). Times are milliseconds.
    """

    def __init__(
        self,
        secret_key: SecretKey,
        *,
        handlers: Mapping[str, ProtocolHandler] | None = None,
        registry: CollectorRegistry,
        bind_host: str = "::",
        port: int = 0,
        idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS,
        keepalive_interval_ms: int = DEFAULT_KEEPALIVE_INTERVAL_MS,
        handshake_timeout_ms: int = DEFAULT_HANDSHAKE_TIMEOUT_MS,
        max_connections: int = MAX_CONNECTIONS,
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
        max_datagram_size_bytes: int = DEFAULT_MAX_DATAGRAM_SIZE,
        stream_window_size_bytes: int = DEFAULT_STREAM_WINDOW_SIZE,
        connection_window_size_bytes: int = DEFAULT_CONNECTION_WINDOW_SIZE,
        pmtu_probe: bool = True,
        path: DatagramPath | None = None,
    ) -> None:
        handlers = dict(handlers or {})
        for alpn, handler in handlers.items():
            if not alpn or len(alpn.encode()) > 255:  # RFC 7301 §3.1: 1..255 bytes
                raise ConfigError(f"bad ALPN {alpn!r}", key="alpn", value=alpn)
            if handler.alpn != alpn:
                raise ConfigError(f"handler for {alpn!r} says its ALPN is {handler.alpn!r}",
                                  key="alpn", value=alpn)
        if idle_timeout_ms <= 0 or keepalive_interval_ms <= 0 or handshake_timeout_ms <= 0:
            raise ConfigError("timeouts and intervals must be > 0 ms", key="idle_timeout_ms",
                              value=(idle_timeout_ms, keepalive_interval_ms, handshake_timeout_ms))
        if keepalive_interval_ms >= idle_timeout_ms:
            raise ConfigError("keepalive_interval_ms must be below idle_timeout_ms, or keep-alives "
                              "cannot keep a busy connection open", key="keepalive_interval_ms",
                              value=keepalive_interval_ms)
        if max_datagram_size_bytes < SMALLEST_MAX_DATAGRAM_SIZE:
            raise ConfigError(f"max_datagram_size_bytes must be >= {SMALLEST_MAX_DATAGRAM_SIZE} "
                              "(RFC 9000 §14)", key="max_datagram_size_bytes",
                              value=max_datagram_size_bytes)
        if not MIN_STREAM_WINDOW_SIZE <= stream_window_size_bytes <= MAX_STREAM_RECEIVE_BUFFER_SIZE:
            # Below: a largest frame could never complete (credit follows whole frames read), so
            # the stream would stall. Above: a compliant peer could overrun the receive bound.
            raise ConfigError(f"stream_window_size_bytes must be within {MIN_STREAM_WINDOW_SIZE}.."
                              f"{MAX_STREAM_RECEIVE_BUFFER_SIZE}", key="stream_window_size_bytes",
                              value=stream_window_size_bytes)
        if not 1 <= max_connections or not 1 <= max_concurrent_streams:
            raise ConfigError("max_connections and max_concurrent_streams must be >= 1",
                              key="max_connections", value=max_connections)
        self._secret_key = secret_key
        self._handlers = handlers
        self._bind_host = bind_host
        self._port = port
        self._idle_timeout_ms = idle_timeout_ms
        self._keepalive_interval_ms = keepalive_interval_ms
        self._handshake_timeout_ms = handshake_timeout_ms
        self._max_connections = max_connections
        self._max_concurrent_streams = max_concurrent_streams
        self._max_datagram_size_bytes = max_datagram_size_bytes
        self._stream_window_size_bytes = stream_window_size_bytes
        self._connection_window_size_bytes = connection_window_size_bytes
        self._pmtu_probe = pmtu_probe
        self.metrics = QuicMetrics(registry)
        self._certificate, self._private_key = make_identity_certificate(secret_key)
        self._reset_key = derive_reset_key(secret_key.seed)
        self._path: DatagramPath | None = path
        self._owns_path = path is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_cid: dict[bytes, QuicPeerConnection] = {}
        self._cids_of: dict[QuicPeerConnection, set[bytes]] = {}
        self._timers: dict[QuicPeerConnection, tuple[float, asyncio.TimerHandle]] = {}
        self._keepalives: dict[QuicPeerConnection, asyncio.TimerHandle] = {}
        self._dirty: dict[QuicPeerConnection, None] = {}
        self._flush_scheduled = False
        self._in_flush = False
        self._pool = ConnectionPool(max_connections=max_connections)
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._reset_budget = MAX_STATELESS_RESETS_PER_SECOND
        self._reset_budget_at_s = 0.0
        self._started = False
        self._stopping = False

    # lifecycle --------------------------------------------------------------------------------

    @property
    def endpoint_id(self) -> EndpointId:
        return self._secret_key.public()

    @property
    def alpns(self) -> list[str]:
        return list(self._handlers)

    async def start(self) -> None:
        """Bind the UDP socket (or adopt the given path). Raises ConfigError if binding fails."""
        if self._started:
            raise UsageError("endpoint already started")
        self._loop = asyncio.get_running_loop()
        keep_heap_top()  # allocator.py: without it large datagrams fault pages in per packet
        if self._path is None:
            self._path = await UdpPath.bind(self._bind_host, self._port, self._on_datagram)
        self._started = True
        logger.info("quic endpoint %s listening on %s alpns=%s", self.endpoint_id.short(),
                    [str(a) for a in self.local_addrs()], self.alpns)

    async def stop(self) -> None:
        """Close every connection (CONNECTION_CLOSE sent), cancel handler tasks, unbind."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        await self._pool.stop()
        for conn in list(self._cids_of):
            conn.close(APP_ERROR_SHUTDOWN, "endpoint stopping")
        self._flush()
        tasks = list(self._handler_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for _, handle in self._timers.values():
            handle.cancel()
        for handle in self._keepalives.values():
            handle.cancel()
        self._timers.clear()
        self._keepalives.clear()
        self._by_cid.clear()
        self._cids_of.clear()
        self._dirty.clear()
        if self._path is not None and self._owns_path:
            self._path.close()
        self._started = False

    def local_addrs(self) -> list[SocketAddr]:
        """The bound socket addresses (host as bound: "::" means every interface)."""
        return self._path.local_addrs() if self._path is not None else []

    def local_addr(self) -> SocketAddr:
        addrs = self.local_addrs()
        if not addrs:
            raise UsageError("endpoint not started")
        return addrs[0]

    def endpoint_addr(self, host: str | None = None) -> EndpointAddr:
        """Our EndpointAddr; `host` replaces a wildcard bind address (e.g. "127.0.0.1")."""
        direct = []
        for addr in self.local_addrs():
            shown = host if host is not None else addr.host
            if shown in ("::", "0.0.0.0"):
                shown = "127.0.0.1"
            direct.append(SocketAddr(shown, addr.port))
        return EndpointAddr(self.endpoint_id, None, tuple(direct))

    def connection_count(self) -> int:
        return len(self._cids_of)

    # dialing ----------------------------------------------------------------------------------

    async def connect(self, addr: EndpointAddr, alpn: str, *, timeout_ms: int | None = None) -> QuicPeerConnection:
        """The authenticated connection to `addr` for `alpn`: pooled if one is usable, else
        dialed (concurrent callers share one handshake).

        Raises HandshakeError (reason bad_key / unknown_alpn / timeout / other),
        QuicTimeoutError, LimitExceeded (MAX_CONNECTIONS), UsageError (no direct address,
        dialing ourselves, endpoint not started).
        """
        conn, _ = await self._pooled(addr, alpn, timeout_ms)
        return conn

    async def _pooled(self, addr: EndpointAddr, alpn: str, timeout_ms: int | None) -> tuple[QuicPeerConnection, bool]:
        self._check_running()
        if addr.endpoint_id == self.endpoint_id:
            raise UsageError("an endpoint cannot dial itself")
        budget_ms = timeout_ms if timeout_ms is not None else self._handshake_timeout_ms * 2
        return await self._pool.get((addr.endpoint_id, alpn), lambda: self._dial(addr, alpn),
                                    timeout_ms=budget_ms)

    async def _dial(self, addr: EndpointAddr, alpn: str) -> QuicPeerConnection:
        if not addr.direct_addrs:
            raise UsageError(f"no direct address for {addr.endpoint_id.short()} (relay not yet supported)")
        last_error: Exception | None = None
        for direct in addr.direct_addrs:
            try:
                return await self._handshake(addr.endpoint_id, alpn, direct)
            except HandshakeError as exc:
                last_error = exc
                if exc.reason == "unknown_alpn":
                    break  # the right key answered and refused: other addresses won't differ
        assert last_error is not None
        raise last_error

    async def _handshake(self, peer: EndpointId, alpn: str, direct: SocketAddr) -> QuicPeerConnection:
        assert self._path is not None and self._loop is not None
        if len(self._cids_of) >= self._max_connections:
            raise LimitExceeded("MAX_CONNECTIONS", len(self._cids_of) + 1, self._max_connections)
        net_addr = self._path.to_network_address(direct)
        config = self._configuration(is_client=True, alpns=[alpn])
        quic = AspenQuicConnection(configuration=config, reset_key=self._reset_key,
                                   expected_peer_id=peer,
                                   max_concurrent_streams=self._max_concurrent_streams,
                                   pmtu_ceiling_bytes=self._pmtu_ceiling(net_addr))
        conn = self._new_connection(quic, "out", net_addr)
        quic.connect(net_addr, now=self._now_s())
        self._service(conn)
        try:
            await asyncio.wait_for(asyncio.shield(conn.handshake_done), self._handshake_timeout_ms / 1000)
        except TimeoutError:
            exc = HandshakeError(f"no handshake with {peer.short()} at {direct} within "
                                 f"{self._handshake_timeout_ms} ms", reason="timeout")
            conn.abort_handshake(exc)
            self._service(conn)
            raise exc from None
        return conn

    # RPC helpers ------------------------------------------------------------------------------

    async def rpc(self, addr: EndpointAddr, alpn: str, body: bytes, *,
                  timeout_ms: int = DEFAULT_RPC_TIMEOUT_MS) -> bytes:
        """One request/response with the peer at `addr` over `alpn`, on the pooled connection.

        If a *pooled* connection turns out to be dead (the peer restarted and answered with a
        stateless reset, so it holds no state of this request), the call is retried once on a
        fresh connection. Raises as `connect` and `aspen.quic.rpc.call` do.
        """
        # perf_counter, not the loop clock: uvloop's loop.time() has millisecond resolution and
        # loopback RPCs take less than that.
        start_s = time.perf_counter()
        deadline_s = start_s + timeout_ms / 1000
        for attempt in range(2):
            pooled = self._pool.lookup((addr.endpoint_id, alpn)) if self._started else None
            if pooled is not None and not self._stopping:
                conn, was_pooled = pooled, True  # the common case, without the dial machinery
            else:
                remaining_ms = max(1, int((deadline_s - time.perf_counter()) * 1000))
                conn, was_pooled = await self._pooled(addr, alpn, remaining_ms)
            remaining_ms = max(1, int((deadline_s - time.perf_counter()) * 1000))
            try:
                reply = await rpc_call(conn, body, timeout_ms=remaining_ms)
            except ConnectionLostError as exc:
                if attempt == 0 and was_pooled and exc.reason == "stateless_reset":
                    logger.debug("pooled connection to %s was reset; re-dialing", addr.endpoint_id.short())
                    continue
                raise
            self.metrics.rpc_latency_for(alpn).observe(time.perf_counter() - start_s)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_oneway(self, addr: EndpointAddr, alpn: str, body: bytes, *,
                          timeout_ms: int = DEFAULT_RPC_TIMEOUT_MS) -> None:
        """Send one frame to `addr` on a unidirectional stream; returns once it is queued."""
        conn, _ = await self._pooled(addr, alpn, timeout_ms)
        await rpc_send_oneway(conn, body, timeout_ms=timeout_ms)

    # datagram input ---------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: NetworkAddress) -> None:
        self.metrics.count_in(len(data))
        size = len(data)
        if size == 0 or not self._started:
            return
        if data[0] & 0x80:  # long header: DCID length at byte 5 (RFC 9000 §17.2)
            if size < 7:
                return
            dcid = data[6:6 + data[5]]
        else:  # short header: our fixed-length DCID follows the first byte (§17.3)
            dcid = data[1:1 + CONNECTION_ID_LENGTH]
        conn = self._by_cid.get(dcid)
        if conn is None:
            self._on_unknown_cid(data, addr)
            return
        quic = conn.quic
        quic.receive_datagram(data, addr, self._now_s())
        if not quic._handshake_confirmed:
            self._service(conn)  # handshake flights: answer at once, nothing to batch
            return
        # Events now (readers wake in the next loop turn), datagrams at the end of the turn (one
        # ACK for the whole burst the socket delivered).
        conn.process_events()
        self._mark_dirty(conn)

    def _on_unknown_cid(self, data: bytes, addr: NetworkAddress) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CONNECTION_ID_LENGTH)
        except ValueError:
            self.metrics.datagrams_dropped.labels(reason="malformed").inc()
            return
        if header.packet_type == QuicPacketType.ONE_RTT:
            self._on_unknown_short_header(data, addr, header.destination_cid)
            return
        config_versions = _SUPPORTED_VERSIONS
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION and header.version is not None
                and header.version not in config_versions):
            self._send(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=config_versions), addr)
            return
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            self.metrics.datagrams_dropped.labels(reason="unknown_connection").inc()
            return
        if self._stopping or len(self._cids_of) >= self._max_connections:
            self.metrics.datagrams_dropped.labels(reason="max_connections").inc()
            return
        config = self._configuration(is_client=False, alpns=list(self._handlers))
        quic = AspenQuicConnection(configuration=config, reset_key=self._reset_key,
                                   max_concurrent_streams=self._max_concurrent_streams,
                                   original_destination_connection_id=header.destination_cid,
                                   pmtu_ceiling_bytes=self._pmtu_ceiling(addr))
        conn = self._new_connection(quic, "in", addr, extra_cid=header.destination_cid)
        quic.receive_datagram(data, addr, self._now_s())
        self._mark_dirty(conn)

    def _on_unknown_short_header(self, data: bytes, addr: NetworkAddress, dcid: bytes) -> None:
        # A reset addressed to one of our connections? (RFC 9000 §10.3.1; bounded by
        # MAX_CONNECTIONS, and only for datagrams no connection claims.)
        for conn in list(self._cids_of):
            if conn.quic.is_stateless_reset(data):
                self.metrics.stateless_resets.labels(direction="in").inc()
                logger.debug("stateless reset for %r", conn)
                conn.mark_reset()
                self._service(conn)
                return
        # Otherwise tell the sender we hold no state for it, so a peer whose connection
        # outlived our restart learns at once instead of after its idle timeout.
        now_s = self._now_s()
        if now_s - self._reset_budget_at_s >= 1.0:
            self._reset_budget_at_s = now_s
            self._reset_budget = MAX_STATELESS_RESETS_PER_SECOND
        if self._reset_budget <= 0 or len(data) <= MIN_STATELESS_RESET_SIZE:
            self.metrics.datagrams_dropped.labels(reason="unknown_connection").inc()
            return
        self._reset_budget -= 1
        # §10.3.3: smaller than the trigger, so two endpoints can never loop on resets.
        size = min(len(data) - 1, STATELESS_RESET_SIZE)
        random_part = secrets.token_bytes(size - 16)
        packet = bytes([0x40 | (random_part[0] & 0x3F)]) + random_part[1:] + stateless_reset_token(
            self._reset_key, dcid)
        self.metrics.stateless_resets.labels(direction="out").inc()
        self._send(packet, addr)

    # servicing connections --------------------------------------------------------------------

    def _new_connection(self, quic: AspenQuicConnection, direction: str, addr: NetworkAddress,
                        extra_cid: bytes | None = None) -> QuicPeerConnection:
        assert self._loop is not None
        conn = QuicPeerConnection(quic=quic, loop=self._loop, wake=self._on_app_output,
                                  metrics=self.metrics, direction=direction,
                                  max_concurrent_streams=self._max_concurrent_streams, peer_addr=addr)
        # A server also answers to the client's original destination id until the client
        # switches to ours (RFC 9000 §7.2), as aioquic's own server does.
        if extra_cid is not None:
            conn.extra_cids.add(extra_cid)
        self._cids_of[conn] = set()
        self._sync_cids(conn)
        return conn

    def _on_app_output(self, conn: QuicPeerConnection) -> None:
        """A stream queued data (or a reset, a close). A connection with a single open stream
        sends at once — a lone request must not wait a loop turn (measured: -20% sequential
        RPC/s); with several streams open, or once a flush is pending, output waits for the
        end-of-turn flush, so concurrent writers share packets. Either way a pending ACK rides
        on that output."""
        conn.quic.ack_with_next_packet()
        if self._flush_scheduled or self._in_flush or conn.open_stream_count > 1:
            self._mark_dirty(conn)
            return
        self._flush_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._flush)
        self._service(conn)

    def _mark_dirty(self, conn: QuicPeerConnection) -> None:
        self._dirty[conn] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._in_flush = True
        try:
            self._flush_dirty()
        finally:
            self._in_flush = False

    def _flush_dirty(self) -> None:
        # Bounded: servicing a connection only re-dirties it through stream wakes issued by
        # event processing (resets), and each round drains them; MAX rounds guard against bugs.
        for _ in range(8):
            if not self._dirty:
                break
            dirty, self._dirty = self._dirty, {}
            for conn in dirty:
                self._service(conn)

    def _on_timer(self, conn: QuicPeerConnection) -> None:
        self._timers.pop(conn, None)
        conn.quic.handle_timer(self._now_s())
        self._service(conn)

    def _service(self, conn: QuicPeerConnection) -> None:
        """Drain `conn`'s events, send its datagrams, re-arm its timer, do the bookkeeping."""
        if conn not in self._cids_of:
            return
        quic = conn.quic
        conn.process_events()
        if not conn.is_terminated:
            now_s = self._now_s()
            path = self._path
            assert path is not None
            count_out = self.metrics.count_out
            for data, addr in quic.datagrams_to_send(now_s):
                count_out(len(data))
                path.send(data, addr)
            # the connection may have issued or retired connection ids (NEW_CONNECTION_ID)
            if conn.cid_version != (quic._host_cid_seq, len(quic._host_cids)):
                self._sync_cids(conn)
            timer_at = quic.get_timer()
            current = self._timers.get(conn)
            if current is None or current[0] != timer_at:
                if current is not None:
                    current[1].cancel()
                    del self._timers[conn]
                if timer_at is not None:
                    assert self._loop is not None
                    self._timers[conn] = (timer_at, self._loop.call_at(timer_at, self._on_timer, conn))
        # Flags on the connection, not before/after comparisons: events may also have been
        # drained in _on_datagram since the last service.
        if conn.is_authenticated and not conn.is_announced:
            conn.is_announced = True
            self._on_authenticated(conn)
        if conn._lost is not None and not conn.is_lost_handled:
            conn.is_lost_handled = True
            self._on_lost(conn)
        if conn.is_terminated:
            self._forget(conn)

    def _sync_cids(self, conn: QuicPeerConnection) -> None:
        quic = conn.quic
        conn.cid_version = (quic._host_cid_seq, len(quic._host_cids))
        old = self._cids_of[conn]
        new = set(quic.host_cids) | conn.extra_cids
        for cid in old - new:
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        for cid in new:
            self._by_cid[cid] = conn
        self._cids_of[conn] = new

    def _on_authenticated(self, conn: QuicPeerConnection) -> None:
        alpn = conn.alpn
        conn.is_counted_open = True
        self.metrics.connections_opened.labels(alpn=alpn, direction=conn.direction).inc()
        self.metrics.connections_open.labels(alpn=alpn).inc()
        assert self._loop is not None
        self._keepalives[conn] = self._loop.call_later(self._keepalive_interval_ms / 1000,
                                                       self._keepalive, conn)
        logger.debug("connection %r authenticated", conn)
        if conn.direction == "in":
            handler = self._handlers.get(alpn)
            if handler is None:  # pragma: no cover - TLS refuses unregistered ALPNs
                conn.close(APP_ERROR_SHUTDOWN, "no handler")
                return
            task = self._loop.create_task(self._run_handler(handler, conn))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)

    async def _run_handler(self, handler: ProtocolHandler, conn: QuicPeerConnection) -> None:
        try:
            await handler.handle_connection(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("protocol handler %s failed on %r", handler.alpn, conn)
        finally:
            conn.close(0, "handler finished")

    def _keepalive(self, conn: QuicPeerConnection) -> None:
        if not conn.is_usable:
            self._keepalives.pop(conn, None)
            return
        if conn.open_stream_count > 0:
            conn.quic.send_ping(0)
            self._mark_dirty(conn)
        assert self._loop is not None
        self._keepalives[conn] = self._loop.call_later(self._keepalive_interval_ms / 1000,
                                                       self._keepalive, conn)

    def _on_lost(self, conn: QuicPeerConnection) -> None:
        self._pool.discard(conn)
        handle = self._keepalives.pop(conn, None)
        if handle is not None:
            handle.cancel()
        if conn.is_counted_open:
            conn.is_counted_open = False
            self.metrics.connections_closed.labels(alpn=conn.alpn, direction=conn.direction).inc()
            self.metrics.connections_open.labels(alpn=conn.alpn).dec()

    def _forget(self, conn: QuicPeerConnection) -> None:
        for cid in self._cids_of.pop(conn, ()):
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer[1].cancel()
        self._dirty.pop(conn, None)

    # helpers ----------------------------------------------------------------------------------

    def _now_s(self) -> float:
        """The one clock read of the adapter: monotonic float seconds, what aioquic wants.

        Not loop.time(): uvloop's loop clock is libuv's millisecond tick, cached per loop turn,
        and aioquic's pacer refills its burst budget (16 packets) only when `now` advances — so
        on uvloop aioquic sent at most 16 datagrams per millisecond (the "≈ 15,500 packets/s"
        ceiling of raw aioquic) and spun on 1 µs pacing timers in between. Timers are still
        armed with loop.call_at: the loop clock is the same CLOCK_MONOTONIC base (asyncio's is
        time.monotonic itself; libuv's lags it by less than a millisecond), so a timer can only
        fire late, by at most the loop's granularity.
        """
        return time.monotonic()

    def _pmtu_ceiling(self, addr: NetworkAddress) -> int:
        """Upper bound for this connection's PMTU search: the route's MTU; 0 disables probing."""
        if not self._pmtu_probe or self._path is None:
            return 0
        return self._path.max_payload_size(addr) or 0

    def _send(self, data: bytes, addr: NetworkAddress) -> None:
        assert self._path is not None
        self.metrics.count_out(len(data))
        self._path.send(data, addr)

    def _check_running(self) -> None:
        if not self._started or self._stopping:
            raise UsageError("endpoint is not running (call start(), not after stop())")

    def _configuration(self, *, is_client: bool, alpns: list[str]) -> QuicConfiguration:
        return QuicConfiguration(
            is_client=is_client,
            alpn_protocols=alpns,
            certificate=self._certificate,
            private_key=self._private_key,
            # The certificate chain means nothing to us; tls_identity checks the key instead.
            verify_mode=ssl.CERT_NONE,
            idle_timeout=self._idle_timeout_ms / 1000,
            max_datagram_size=self._max_datagram_size_bytes,
            max_data=self._connection_window_size_bytes,
            max_stream_data=self._stream_window_size_bytes,
            connection_id_length=CONNECTION_ID_LENGTH,
            supported_versions=list(_SUPPORTED_VERSIONS),
        )

    def __repr__(self) -> str:
        return f"Endpoint({self.endpoint_id.short()}, conns={len(self._cids_of)})"


def describe_peer_addr(conn: QuicPeerConnection) -> SocketAddr:
    """The connection's current peer address as a SocketAddr (IPv4-mapped shown as IPv4)."""
    return network_to_socket_addr(conn.peer_addr)


__all__ = [
    "Endpoint",
    "DEFAULT_IDLE_TIMEOUT_MS",
    "DEFAULT_KEEPALIVE_INTERVAL_MS",
    "DEFAULT_HANDSHAKE_TIMEOUT_MS",
    "DEFAULT_MAX_DATAGRAM_SIZE",
    "MAX_CONNECTIONS",
    "describe_peer_addr",
]
