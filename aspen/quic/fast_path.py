"""Fast paths for the steady state of an established connection: 1-RTT, STREAM and ACK only.

Raft traffic is small messages on long-lived streams: per datagram one or a few STREAM frames and
an ACK. aioquic builds and parses such datagrams with its general machinery — a packet builder
object per call, a second packet started (and cancelled) to find out that nothing else is due,
a dozen checks for frames that are never pending, enum-keyed dict lookups (a Python-level
`Enum.__hash__` each) — which cost more than the encryption itself. Here the common case is
written out for what it is; everything else goes to aioquic.

Rules:

* A fast path is used only when its preconditions hold, and those are checked *before* any
  state is touched; when one does not hold the caller runs aioquic's general code. So the fast
  path never has to handle, or half-handle, anything unusual.
* For the same connection state a fast path does exactly what aioquic's general path (with
  Aspen's overrides) does: same frames in the same order, same bytes, same bookkeeping (sent
  packets, congestion control, pacing, idle timer, ACK state, flow control, stream queue
  order). tests/unit/quic/test_fast_path.py runs the same traffic through connections with and
  without fast paths and compares every packet's plaintext.
* Only this module and `connection.py` know about it; nothing outside `aspen/quic` does.

Sending (`send_application`, called by AspenQuicConnection.datagrams_to_send): applies when the
connection is CONNECTED with its handshake confirmed, one validated path, no qlog, an AES-GCM
1-RTT key, and nothing is pending but an ACK and stream data: no PING/probe, DATAGRAM, CRYPTO,
HANDSHAKE_DONE, PATH_*, NEW/RETIRE_CONNECTION_ID, STREAMS_BLOCKED, no MAX_DATA / MAX_STREAMS /
MAX_STREAM_DATA due, no stream to reset, stop or discard, no ACK-of-ACK PING due. Lost stream
data needs no fallback: it is back in the sender's pending ranges, which both paths send alike.

Receiving (`receive_short_header`, called by AspenQuicConnection.receive_datagram): applies to
a short-header packet for the connection's current connection id, from its current validated
path, on a CONNECTED connection whose handshake is confirmed. The packet's frames go through
`AspenQuicConnection._payload_received`, which parses STREAM, ACK, PADDING and PING inline and
hands any other frame to aioquic's handler for it (the same handler table aioquic uses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aioquic import tls
from aioquic._crypto import CryptoError
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic.connection import (
    ACK_FRAME_CAPACITY,
    NetworkAddress,
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.crypto import KeyUnavailableError
from aioquic.quic.packet import (
    PACKET_FIXED_BIT,
    PACKET_NUMBER_MAX_SIZE,
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    push_ack_frame,
)
from aioquic.quic.packet_builder import PACKET_NUMBER_SEND_SIZE, QuicDeliveryHandler, QuicSentPacket
from aioquic.quic.recovery import MAX_ACK_RANGES
from aioquic.quic.stream import QuicStream

from aspen.quic.packet_crypto import ZeroCopyCryptoContext, seal_short_header_packet

if TYPE_CHECKING:
    from aspen.quic.connection import AspenQuicConnection

# RFC 9000 §17.3: a short header is 1 byte, the destination connection id, the packet number
# (aioquic always sends 2 bytes of it); RFC 9001 §5.3: AEAD_AES_*_GCM add a 16-byte tag.
AEAD_TAG_SIZE = 16
# RFC 9001 §5.4.2: the payload must let header protection sample 4 bytes past the packet number
# start; aioquic pads a packet whose payload is shorter than this (packet_builder._end_packet).
MIN_PAYLOAD_SIZE = PACKET_NUMBER_MAX_SIZE - PACKET_NUMBER_SEND_SIZE
# RFC 9000 §16: the largest value a 2-byte varint holds; aioquic's STREAM length field size.
MAX_2_BYTE_VARINT = 16383
# RFC 9000 §17.3.1: the short header's reserved bits (must be zero) and the spin bit.
_SHORT_RESERVED_BITS = 0x18
_SPIN_BIT = 0x20
_LONG_HEADER_OR_FIXED = 0xC0
_ONE_RTT = tls.Epoch.ONE_RTT
_STREAM_TYPE = QuicFrameType.STREAM_BASE | 2  # RFC 9000 §19.8: with a length field
_CONNECTED = QuicConnectionState.CONNECTED


# ---- STREAM frames (shared by the general and the fast path) ------------------------------------

StreamFrame = tuple[int, int, bytes, int, bool, bool]
"""(frame type, overhead as aioquic estimates it, data, offset, fin, 4-byte length field)"""


def next_stream_frame(stream: QuicStream, room: int, max_offset: int | None) -> StreamFrame | None:
    """The next STREAM frame of `stream` for a packet with `room` bytes left (flow control:
    data up to `max_offset`), taken out of the sender (StreamFrame). None when there is nothing
    to send or no room; then the sender is left as it was (but for `buffer_is_empty`, set when
    nothing is pending, as aioquic's get_frame sets it).

    aioquic's `_write_stream_frame` and `QuicStreamSender.get_frame` with three changes
    (connection.py docstring): a 4-byte length when the packet has room for more than 16383
    bytes; one copy of the data, not two (get_frame slices the bytearray, then copies the slice
    into bytes, as aioquic's Buffer only takes bytes); and a FIN alone is only taken when it
    fits — aioquic takes it, then the builder finds no room and raises, and the FIN is lost.
    """
    stream_id = stream.stream_id
    assert stream_id is not None  # only the crypto streams have none
    sender = stream.sender
    pending = sender._pending
    long_length = room > MAX_2_BYTE_VARINT
    fixed = (5 if long_length else 3) + (1 if stream_id <= 0x3F else size_uint_var(stream_id))
    if not len(pending):  # (a RangeSet has no bool)
        if not sender._pending_eof:
            sender.buffer_is_empty = True  # what get_frame finds out, and records, here
            return None
        # A FIN alone: aioquic's get_frame, which copies nothing.
        overhead = fixed + (size_uint_var(sender._buffer_stop) if sender._buffer_stop else 0)
        if room < overhead:
            return None
        frame = sender.get_frame(room - overhead, max_offset)
        assert frame is not None and frame.fin
        return _STREAM_TYPE | (4 if frame.offset else 0) | 1, overhead, b"", frame.offset, True, long_length
    first = pending[0]
    start = first.start
    overhead = fixed + (size_uint_var(start) if start else 0)
    stop = min(first.stop, start + room - overhead)
    if max_offset is not None and stop > max_offset:
        stop = max_offset
    if stop <= start:
        return None
    base = sender._buffer_start
    with memoryview(sender._buffer) as view:  # released at once: ACKs resize the buffer
        data = bytes(view[start - base:stop - base])
    pending.subtract(start, stop)
    if stop > sender.highest_offset:
        sender.highest_offset = stop
    fin = sender._buffer_fin == stop
    if fin:
        sender._pending_eof = False
    elif not len(pending) and not sender._pending_eof:
        sender.buffer_is_empty = True  # what the next get_frame would find out
    return _STREAM_TYPE | (4 if start else 0) | fin, overhead, data, start, fin, long_length


def push_stream_frame(buf: Buffer, stream_id: int, frame: StreamFrame) -> None:
    """The fields of a STREAM frame after its type byte."""
    _, _, data, offset, _, long_length = frame
    buf.push_uint_var(stream_id)
    if offset:
        buf.push_uint_var(offset)
    if long_length:
        buf.push_uint32(len(data) | 0x80000000)  # RFC 9000 §16: 4-byte varint
    else:
        buf.push_uint16(len(data) | 0x4000)  # 2-byte varint
    buf.push_bytes(data)


def size_uint_var(value: int) -> int:
    """Bytes of a QUIC varint (RFC 9000 §16)."""
    if value <= 0x3F:
        return 1
    if value <= 0x3FFF:
        return 2
    if value <= 0x3FFFFFFF:
        return 4
    return 8


# ---- sending ----------------------------------------------------------------------------------

def _only_stream_data_due(conn: AspenQuicConnection) -> bool:
    """True when the general path would write nothing but an ACK and STREAM frames (the
    checks of aioquic's `_write_application`, `_write_connection_limits` and Aspen's
    `_write_stream_limits`, for frames that are due)."""
    if (conn._ping_pending or conn._probe_pending or conn._datagrams_pending
            or conn._handshake_done_pending or conn._retire_connection_ids
            or conn._streams_blocked_pending):
        return False
    if not conn._aspen_cids_sent:  # reset when a connection id is issued or its frame lost
        for cid in conn._host_cids:
            if not cid.was_sent:
                return False
        conn._aspen_cids_sent = True
    crypto_stream = conn._aspen_crypto_stream
    if crypto_stream is None or not crypto_stream.sender.buffer_is_empty:
        return False
    max_data = conn._local_max_data
    if max_data.used * 2 > max_data.value or max_data.value != max_data.sent:
        return False
    for limit in (conn._local_max_streams_bidi, conn._local_max_streams_uni):
        # aioquic batches MAX_STREAMS: not written while sent - used >= value - sent
        if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
            return False
    held = conn._stream_held
    for stream in conn._streams.values():
        local = stream.max_stream_data_local
        if stream.max_stream_data_local_sent != local:
            return False
        # aioquic's arrival rule, for streams whose reader does not report (set_stream_held)
        if local and stream.receiver.highest_offset * 2 > local and stream.stream_id not in held:
            return False
    for stream in conn._streams_queue:
        if stream.receiver.stop_pending or stream.sender.reset_pending or stream.is_finished:
            return False
    return True


def send_application(conn: AspenQuicConnection, now: float) -> list[tuple[bytes, NetworkAddress]] | None:
    """What aioquic's `datagrams_to_send(now)` returns, or None when the general path must run
    (module docstring). Datagrams are bytearrays (packet_crypto.seal_short_header_packet)."""
    space = conn._aspen_space
    pair = conn._aspen_pair
    if (space is None or pair is None or conn._state is not _CONNECTED or conn._close_pending
            or conn._quic_logger is not None or conn._remote_preferred_address is not None):
        return None
    paths = conn._network_paths
    if len(paths) != 1:
        return None
    path = paths[0]
    if not path.is_validated or path.remote_challenges or not _only_stream_data_due(conn):
        return None
    send = pair.send
    if type(send) is not ZeroCopyCryptoContext or not send.can_seal():
        return None
    peer_cid = conn._peer_cid.cid
    header_size = 3 + len(peer_cid)
    capacity = conn._max_datagram_size
    if capacity - header_size - AEAD_TAG_SIZE < ACK_FRAME_CAPACITY:
        return None  # not with any datagram size QUIC allows (>= 1200)
    ack_at = space.ack_at
    if (ack_at is not None and ack_at <= now and len(space.ack_queue) > 1
            and conn._packet_number % 8 == 0):
        return None  # aioquic adds an ACK-of-ACK PING (_write_ack_frame)

    # From here on this is aioquic's datagrams_to_send -> _write_application -> _flush_builder
    # for a packet per datagram, each holding an ACK (if due) and STREAM frames.
    loss = conn._loss
    congestion = loss._cc
    pacer = loss._pacer
    max_flight = congestion.congestion_window - congestion.bytes_in_flight
    conn._pacing_at = None
    buf = conn._aspen_send_buffer(capacity)
    queue = conn._streams_queue
    spin = conn._spin_bit
    packet_number = conn._packet_number
    flight_bytes = 0
    datagrams: list[bytearray] = []
    packets: list[QuicSentPacket] = []
    while True:
        ack_at = space.ack_at
        if ack_at is None or ack_at >= now:  # pacing, except when an ACK is due
            pacing_at = pacer.next_send_time(now=now)
            conn._pacing_at = pacing_at
            if pacing_at is not None:
                break
        flight_capacity = min(capacity, max_flight - flight_bytes)
        buf.seek(header_size)
        handlers: list[tuple[QuicDeliveryHandler, tuple[object, ...]]] = []
        in_flight = is_ack_eliciting = False
        sent: set[QuicStream] | None = None
        if ack_at is not None and ack_at <= now:
            # ACK (aioquic's _write_ack_frame, with Aspen's count of unacknowledged packets)
            assert space.largest_received_time is not None
            delay = int((now - space.largest_received_time) * 1000000) >> conn._local_ack_delay_exponent
            buf.push_uint_var(QuicFrameType.ACK)
            handlers.append((conn._on_ack_delivery, (space, space.largest_received_packet)))
            push_ack_frame(buf, space.ack_queue, delay, capacity - buf.tell() - AEAD_TAG_SIZE)
            space.ack_at = None
            conn._unacked_eliciting = 0
        for stream in queue:
            sender = stream.sender
            if stream.is_blocked or sender.buffer_is_empty:
                continue
            previous_highest = sender.highest_offset
            parts = next_stream_frame(
                stream, flight_capacity - buf.tell() - AEAD_TAG_SIZE,
                min(previous_highest + conn._remote_max_data - conn._remote_max_data_used,
                    stream.max_stream_data_remote))
            if parts is None:
                continue
            # The frame fits: next_stream_frame sized it to the flight room (<= buffer room).
            frame_type, _, data, offset, fin, _ = parts
            buf.push_uint_var(frame_type)
            in_flight = is_ack_eliciting = True
            handlers.append((sender.on_data_delivery, (offset, offset + len(data), fin)))
            push_stream_frame(buf, stream.stream_id, parts)  # type: ignore[arg-type]
            used = sender.highest_offset - previous_highest
            conn._remote_max_data_used += used
            if used > 0:
                if sent is None:
                    sent = set()
                sent.add(stream)
        if sent is not None and len(queue) > 1:  # served streams go to the end of the queue, in
            # aioquic's order (a set's)
            queue = [stream for stream in queue if stream not in sent]
            queue.extend(sent)
            conn._streams_queue = queue
        payload_end = buf.tell()
        if payload_end == header_size:
            break  # nothing to send: aioquic cancels the packet
        if payload_end - header_size < MIN_PAYLOAD_SIZE:
            buf.push_bytes(bytes(MIN_PAYLOAD_SIZE - payload_end + header_size))
            payload_end = buf.tell()
            in_flight = True  # PADDING counts in flight, but elicits no ACK
        datagram = seal_short_header_packet(pair, spin, peer_cid, packet_number,
                                            buf.data_slice(header_size, payload_end))
        assert datagram is not None  # checked above: can_seal
        packets.append(QuicSentPacket(
            epoch=_ONE_RTT, in_flight=in_flight, is_ack_eliciting=is_ack_eliciting,
            is_crypto_packet=False, packet_number=packet_number, packet_type=QuicPacketType.ONE_RTT,
            sent_time=now, sent_bytes=len(datagram), delivery_handlers=handlers))
        datagrams.append(datagram)
        if in_flight:
            flight_bytes += len(datagram)
        packet_number += 1
        pacer.update_after_send(now=now)
        for stream in queue:
            if not stream.is_blocked and not stream.sender.buffer_is_empty:
                break
        else:
            # Nothing left: aioquic's next round would start an empty packet after its pacing
            # check (the ACK, if it was due, went in this packet) and cancel it.
            ack_at = space.ack_at
            if ack_at is None or ack_at >= now:
                conn._pacing_at = pacer.next_send_time(now=now)
            break
    if not datagrams:
        return []
    conn._packet_number = packet_number
    for packet in packets:
        loss.on_packet_sent(packet=packet, space=space)
        # Restart the idle timer on the first ack-eliciting packet sent since the last one
        # received (RFC 9000 §10.1), as aioquic's _flush_builder.
        if packet.is_ack_eliciting and not conn._ack_eliciting_sent_since_receipt:
            conn._close_at = now + conn._idle_timeout()
            conn._ack_eliciting_sent_since_receipt = True
    addr = path.addr
    out: list[tuple[bytes, NetworkAddress]] = []
    for datagram in datagrams:
        path.bytes_sent += len(datagram)
        out.append((datagram, addr))  # type: ignore[arg-type]  # sent as is, like bytes
    return out


# ---- the timer ----------------------------------------------------------------------------------

def next_timer(conn: AspenQuicConnection) -> float | None:
    """What aioquic's `get_timer()` returns (and, like it, updates `_loss_at`), with the ACK and
    loss timers of the 1-RTT space read directly once the handshake is confirmed: the Initial
    and Handshake spaces are discarded then (no ACK, loss or probe timer of theirs is armed)."""
    space = conn._aspen_space
    paths = conn._network_paths
    if space is None or conn._state is not _CONNECTED or not paths or not paths[0].is_validated:
        return QuicConnection.get_timer(conn)
    loss = conn._loss
    if not conn._aspen_early_spaces_gone:
        if not all(other.discarded for other in loss.spaces if other is not space):
            return QuicConnection.get_timer(conn)
        conn._aspen_early_spaces_gone = True
    timer_at = conn._close_at
    assert timer_at is not None  # armed on the first datagram, long before confirmation
    ack_at = space.ack_at
    if ack_at is not None and ack_at < timer_at:
        timer_at = ack_at
    # QuicPacketRecovery.get_loss_detection_time: a loss time first, else the PTO (RFC 9002
    # §6.2.1: with the handshake confirmed, only application data arms it, with max_ack_delay).
    loss_at = space.loss_time
    if loss_at is None and (space.ack_eliciting_in_flight or not loss.peer_completed_address_validation):
        loss_at = loss._time_of_last_sent_ack_eliciting_packet + loss.get_probe_timeout(
            include_max_ack_delay=True) * (2 ** loss._pto_count)
    conn._loss_at = loss_at
    if loss_at is not None and loss_at < timer_at:
        timer_at = loss_at
    pacing_at = conn._pacing_at
    if pacing_at is not None and pacing_at < timer_at:
        timer_at = pacing_at
    return timer_at  # a validated path has no validation deadline


# ---- receiving --------------------------------------------------------------------------------

def receive_short_header(conn: AspenQuicConnection, data: bytes, addr: NetworkAddress, now: float) -> bool:
    """Handle `data` as aioquic's `receive_datagram` would, if it is a 1-RTT packet the fast path
    takes (module docstring); False (and nothing touched) when the general path must run."""
    space = conn._aspen_space
    pair = conn._aspen_pair
    if (space is None or pair is None or conn._state is not _CONNECTED or conn._close_pending
            or conn._quic_logger is not None or not data or data[0] & _LONG_HEADER_OR_FIXED != PACKET_FIXED_BIT):
        return False
    path = conn._network_paths[0]
    host_cid = conn.host_cid
    cid_size = len(host_cid)
    if (path.addr != addr or not path.is_validated or len(data) <= 1 + cid_size
            or not data.startswith(host_cid, 1)):
        return False
    if not conn._aspen_zero_rtt_gone:
        # A server drops its 0-RTT keys on the first 1-RTT packet (RFC 9001 §4.9.3): aioquic does it.
        if not conn._is_client and conn._cryptos[tls.Epoch.ZERO_RTT].recv.is_valid():
            return False
        conn._aspen_zero_rtt_gone = True

    # aioquic's receive_datagram for this one packet.
    try:  # CryptoPair.decrypt_packet, inlined
        plain_header, payload, packet_number, update_key = pair.recv.decrypt_packet(
            data, 1 + cid_size, space.expected_packet_number)
    except (KeyUnavailableError, CryptoError) as exc:
        conn._logger.debug(exc)
        return True  # dropped
    if update_key:
        pair._update_key("remote_update")
    if packet_number in space.received_packets:
        return True  # RFC 9000 §12.3: a duplicate
    if plain_header[0] & _SHORT_RESERVED_BITS:
        conn.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION, frame_type=QuicFrameType.PADDING,
                   reason_phrase="Reserved bits must be zero")
        return True
    if packet_number > space.expected_packet_number:
        space.expected_packet_number = packet_number + 1
    if packet_number > conn._spin_highest_pn:
        spin_bit = bool(plain_header[0] & _SPIN_BIT)
        conn._spin_bit = not spin_bit if conn._is_client else spin_bit
        conn._spin_highest_pn = packet_number
    context = QuicReceiveContext(epoch=_ONE_RTT, host_cid=host_cid, network_path=path,
                                 quic_logger_frames=None, time=now, version=None)
    is_ack_eliciting = False
    try:
        is_ack_eliciting, _ = conn._payload_received(context, payload)
    except QuicConnectionError as exc:
        conn._logger.warning(exc)
        conn.close(error_code=exc.error_code, frame_type=exc.frame_type, reason_phrase=exc.reason_phrase)
    if conn._state is not _CONNECTED or conn._close_pending:
        return True
    conn._close_at = now + conn._idle_timeout()
    conn._ack_eliciting_sent_since_receipt = False
    # The packet came on the current connection id and path: no migration (RFC 9000 §9).
    if packet_number > space.largest_received_packet:
        space.largest_received_packet = packet_number
        space.largest_received_time = now
    ack_queue = space.ack_queue
    ack_queue.add(packet_number)
    space.received_packets.add(packet_number)
    if len(ack_queue) > MAX_ACK_RANGES:  # RFC 9000 §13.2.3, as aioquic
        ack_queue.shift()
    if is_ack_eliciting and space.ack_at is None:
        space.ack_at = now + conn._ack_delay
    return True


__all__ = ["next_stream_frame", "next_timer", "push_stream_frame", "receive_short_header",
           "send_application", "size_uint_var"]
