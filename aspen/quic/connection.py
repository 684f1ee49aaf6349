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
* STREAM frames longer than 16383 bytes: aioquic writes a STREAM frame's length as a 2-byte
  varint (`len | 0x4000`), which silently corrupts any longer frame — the receiver reads a
  wrong length and then parses stream data as frames ("Unknown frame type"). That is why raw
  aioquic breaks with datagrams above ~16-24 KB. `_write_stream_frame` uses a 4-byte length when
  the frame may exceed 16383 bytes, and takes one copy of the data from the send buffer where
  aioquic's `get_frame` takes two (`fast_path.next_stream_frame`).
* Path MTU probing (DPLPMTUD, RFC 8899 / RFC 9000 §14.3): after the handshake is confirmed the
  connection sends PING probes padded to candidate sizes between the configured datagram size
  and `pmtu_ceiling_bytes` (from the route MTU, given by the adapter); each acknowledged probe
  raises the datagram size of every later packet, a lost one lowers the search's upper bound.
  Binary search, at most MAX_PMTU_PROBES probes per connection.
* Stream flow control (RFC 9000 §4.1): aioquic doubles a stream's MAX_STREAM_DATA whenever
  half of it has *arrived*, whether or not anyone read it, so a slow reader's buffer grew until
  Aspen reset the stream. Here, for streams whose reader reports what it still holds
  (`set_stream_held`), the credit is what the application consumed plus the configured window
  (`configuration.max_stream_data`), re-advertised once it grew by half a window; the peer
  then waits instead of overrunning the reader. Streams nobody reports on keep aioquic's rule.
* ACKs (RFC 9000 §13.2): after the handshake, ACKs wait up to ACK_DELAY_S for a packet to ride
  on (the next request or reply) instead of aioquic's 1 ms, and go out at once after
  ACK_ELICITING_THRESHOLD ack-eliciting packets.
* Per-datagram CPU (`fast_path`): once the handshake is confirmed, datagrams that carry only
  ACK and STREAM frames are built and parsed by a fast path that does what aioquic's general
  code does for them, with the 1-RTT packet space and keys cached in attributes (aioquic looks
  them up in Epoch-keyed dicts, a Python-level Enum.__hash__ each time). Anything else takes
  aioquic's general path. Received frames other than STREAM/ACK/PADDING/PING go to aioquic's
  own handlers.
"""

from __future__ import annotations

import hashlib
import hmac

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.congestion.base import K_INITIAL_WINDOW
from aioquic import tls
from aioquic.quic.connection import (
    MAX_STREAM_DATA_FRAME_CAPACITY,
    NetworkAddress,
    QuicConnectionError,
    QuicConnection,
    QuicConnectionId,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import (
    NON_ACK_ELICITING_FRAME_TYPES,
    PROBING_FRAME_TYPES,
    QuicFrameType,
    pull_ack_frame,
)
from aioquic.quic import connection as _aioquic_connection
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.buffer import UINT_VAR_MAX, Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.packet import QuicErrorCode, QuicStreamFrame
from aioquic.quic.stream import FinalSizeError, QuicStream, StreamFinishedError

from aspen.identity import EndpointId
from aspen.quic.fast_path import (
    next_stream_frame,
    next_timer,
    push_stream_frame,
    receive_short_header,
    send_application,
)
from aspen.quic.packet_crypto import AspenPacketBuilder, aspen_packet_builder, use_zero_copy_crypto
from aspen.quic.tls_identity import IdentityTlsContext, install_identity_checks

# RFC 9000 §10.3: a stateless reset token is 16 bytes; the smallest reset datagram is 21 bytes
# (§10.3: "no smaller than 21 bytes": 1 header byte + 4 unpredictable bytes + 16 token bytes).
STATELESS_RESET_TOKEN_SIZE = 16
MIN_STATELESS_RESET_SIZE = 21
# RFC 9000 §19.8: STREAM frame types are 0x08..0x0f (OFF 0x04, LEN 0x02, FIN 0x01 bits).
_STREAM_FIRST = QuicFrameType.STREAM_BASE
_STREAM_LAST = QuicFrameType.STREAM_BASE | 0x07
# aioquic's own default (QuicConnection sets 128 for both stream directions); quinn uses 100.
MAX_CONCURRENT_STREAMS = 128
# The largest UDP payload we ever probe: IPv4's 65535 - 20 (IP) - 8 (UDP) = 65507, rounded
# down so an IPv6 path (65535 - 40 - 8 = 65487) fits too.
MAX_PROBED_DATAGRAM_SIZE = 65_000
# RFC 8899 §5.1.2 MAX_PROBES = 3 per size; a binary search over 1200..65000 to within
# PMTU_SEARCH_PRECISION_BYTES needs ~8 sizes. Bounded per connection.
MAX_PMTU_PROBES = 16
PMTU_SEARCH_PRECISION_BYTES = 512  # stop when the bracket is this narrow (guess: revisit)
# A probe neither acknowledged nor declared lost within this long is counted lost (RFC 8899
# §5.1.1 PROBE_TIMER is 15 s for long paths; loss detection normally answers within 1-3 PTO).
PMTU_PROBE_TIMEOUT_S = 1.0
# PING uids at or above this are ours (PMTU probes); user pings use small uids.
_PMTU_PROBE_UID_BASE = 1 << 60
# RFC 9000 §13.2.1: ACKs may wait up to max_ack_delay (aioquic advertises 25 ms). aioquic waits
# 1 ms after the first ack-eliciting packet, so each request/response exchange costs a lone ACK
# datagram; waiting longer lets the next request or reply carry it. guess: revisit.
ACK_DELAY_S = 0.010
# ...but acknowledge at once (at the end of the loop turn) after this many ack-eliciting packets,
# so a bulk sender is never starved of ACKs (§13.2.2 suggests every second packet; batching by
# loop turn already merges what one socket read delivered). guess: revisit.
ACK_ELICITING_THRESHOLD = 8
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
        pmtu_ceiling_bytes: int = 0,
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
        # PMTU search state: [_pmtu_low, _pmtu_high] brackets the largest working size.
        self._pmtu_low = configuration.max_datagram_size
        self._pmtu_high = min(max(pmtu_ceiling_bytes, 0), MAX_PROBED_DATAGRAM_SIZE)
        self._pmtu_probes_sent = 0
        self._pmtu_probe_uid: int | None = None
        self._pmtu_probe_size = 0
        self._pmtu_probe_sent_at = 0.0
        self._pmtu_probe_is_padded = False
        self._pmtu_in_probe = False
        self._unacked_eliciting = 0  # 1-RTT ack-eliciting packets since our last ACK frame
        # stream id -> bytes received but not yet consumed by the application (set_stream_held)
        self._stream_held: dict[int, int] = {}
        self._stream_window = configuration.max_stream_data
        self._aspen_plain: bytes | None = None  # the payload being parsed (_payload_received)
        self._ack_with_data = False  # the application queued data: a pending ACK rides on it
        # fast_path: 1-RTT objects aioquic keeps in Epoch-keyed dicts, set once the handshake is
        # confirmed (the objects never change after that; a key update changes their contents).
        self._aspen_space: QuicPacketSpace | None = None
        self._aspen_pair: CryptoPair | None = None
        self._aspen_crypto_stream: QuicStream | None = None
        self._aspen_zero_rtt_gone = False  # a server's 0-RTT receive key is torn down
        self._aspen_early_spaces_gone = False  # the Initial and Handshake spaces are discarded
        self._aspen_cids_sent = False  # every connection id of ours went out in NEW_CONNECTION_ID
        self._aspen_buffer = Buffer(capacity=1)  # fast_path's packet buffer (_aspen_send_buffer)
        # Set to False to always take aioquic's general paths (tests compare the two).
        self.use_fast_path = True

    # aioquic hooks --------------------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        for pair in self._cryptos.values():
            use_zero_copy_crypto(pair)
        install_identity_checks(self.tls, expected_peer_id=self._aspen_expected_peer_id)

    def _replenish_connection_ids(self) -> None:
        self._aspen_cids_sent = False
        super()._replenish_connection_ids()
        for cid in self._host_cids:
            if not cid.was_sent and cid.stateless_reset_token is not None:
                cid.stateless_reset_token = stateless_reset_token(self._aspen_reset_key, cid.cid)

    def _on_new_connection_id_delivery(self, delivery: QuicDeliveryState, connection_id: QuicConnectionId) -> None:
        if delivery != QuicDeliveryState.ACKED:
            self._aspen_cids_sent = False  # aioquic sends it again (was_sent = False)
        super()._on_new_connection_id_delivery(delivery, connection_id)

    def _write_stream_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                            stream: QuicStream, max_offset: int) -> int:
        # aioquic's _write_stream_frame with Aspen's changes (fast_path.next_stream_frame).
        sender = stream.sender
        previous_send_highest = sender.highest_offset
        frame = next_stream_frame(stream, builder.remaining_flight_space, max_offset)
        if frame is None:
            return 0
        frame_type, frame_overhead, data, offset, fin, _ = frame
        buf = builder.start_frame(frame_type, capacity=frame_overhead, handler=sender.on_data_delivery,
                                  handler_args=(offset, offset + len(data), fin))
        push_stream_frame(buf, stream.stream_id, frame)  # type: ignore[arg-type]
        if self._quic_logger is not None and builder.quic_logger_frames is not None:
            builder.quic_logger_frames.append(self._quic_logger.encode_stream_frame(
                QuicStreamFrame(data=data, offset=offset, fin=fin), stream_id=stream.stream_id))  # type: ignore[arg-type]
        return sender.highest_offset - previous_send_highest

    # receive flow control -----------------------------------------------------------------------

    def set_stream_held(self, stream_id: int, held_bytes: int) -> bool:
        """The reader of `stream_id` holds `held_bytes` it was given but has not consumed. From
        the first call on, the stream's credit follows consumption (module docstring). True
        when that makes a MAX_STREAM_DATA update due (the caller should get datagrams sent)."""
        self._stream_held[stream_id] = held_bytes
        stream = self._streams.get(stream_id)
        if stream is None or not stream.max_stream_data_local:
            return False
        # Bytes aioquic delivered to the reader minus what it still holds = consumed. (Events
        # are drained right after each datagram, so the reader has seen all delivered bytes.)
        window = self._stream_window
        target = stream.receiver.starting_offset() - held_bytes + window
        if target - stream.max_stream_data_local < window // 2:
            return False
        stream.max_stream_data_local = target
        return True

    def forget_stream_held(self, stream_id: int) -> None:
        """The reader is done with `stream_id` (no more credit updates are useful)."""
        self._stream_held.pop(stream_id, None)

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        # Called for every stream on every datagrams_to_send: keep the common case cheap.
        stream_id = stream.stream_id
        if stream_id not in self._stream_held or stream_id is None:
            super()._write_stream_limits(builder, space, stream)  # aioquic's arrival-based rule
            return
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            # As aioquic writes it (_write_stream_limits), minus the doubling on arrival: the
            # limit was raised by set_stream_held.
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA,
                                      capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._on_max_stream_data_delivery, handler_args=(stream,))
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
            if self._quic_logger is not None and builder.quic_logger_frames is not None:
                builder.quic_logger_frames.append(self._quic_logger.encode_max_stream_data_frame(
                    maximum=stream.max_stream_data_local, stream_id=stream_id))

    # receiving STREAM frames ---------------------------------------------------------------

    def _handle_stream_frame(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        # aioquic's _handle_stream_frame, except that the frame's data is a view of the
        # decrypted payload instead of a copy pulled out of the parse Buffer (which wraps a
        # copy of that same payload): one copy less of every byte received.
        plain = self._aspen_plain
        if plain is None:  # pragma: no cover - only _payload_received parses frames
            super()._handle_stream_frame(context, frame_type, buf)
            return
        stream_id: int = buf.pull_uint_var()
        offset = buf.pull_uint_var() if frame_type & 4 else 0
        length = buf.pull_uint_var() if frame_type & 2 else buf.capacity - buf.tell()
        if offset + length > UINT_VAR_MAX:
            raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                                      frame_type=frame_type,
                                      reason_phrase="offset + length cannot exceed 2^62 - 1")
        start = buf.tell()
        if start + length > buf.capacity:
            raise BufferReadError("Read out of bounds")  # as Buffer.pull_bytes would
        buf.seek(start + length)
        data = memoryview(plain)[start:start + length]
        fin = bool(frame_type & 1)
        if self._quic_logger is not None:
            context.quic_logger_frames.append(self._quic_logger.encode_stream_frame(  # type: ignore[union-attr]
                QuicStreamFrame(offset=offset, data=data, fin=fin), stream_id=stream_id))  # type: ignore[arg-type]
        # _assert_stream_can_receive, inlined: a unidirectional stream we opened is send-only
        # (RFC 9000 §2.1: bit 0x01 = server-initiated, 0x02 = unidirectional).
        if stream_id & 2 and (not stream_id & 1) == self._is_client:
            raise QuicConnectionError(error_code=QuicErrorCode.STREAM_STATE_ERROR,
                                      frame_type=frame_type, reason_phrase="Stream is send-only")
        stream = self._streams.get(stream_id)  # an open stream: what _get_or_create_stream returns
        if stream is None:
            stream = self._get_or_create_stream(frame_type, stream_id)
        if offset + length > stream.max_stream_data_local:
            raise QuicConnectionError(error_code=QuicErrorCode.FLOW_CONTROL_ERROR,
                                      frame_type=frame_type, reason_phrase="Over stream data limit")
        receiver = stream.receiver
        newly_received = max(0, offset + length - receiver.highest_offset)
        if self._local_max_data.used + newly_received > self._local_max_data.value:
            raise QuicConnectionError(error_code=QuicErrorCode.FLOW_CONTROL_ERROR,
                                      frame_type=frame_type, reason_phrase="Over connection data limit")
        if (length and not fin and offset == receiver._buffer_start and receiver._final_size is None
                and not receiver.is_finished and not receiver._buffer and self.use_fast_path):
            # The next bytes in order, no FIN, nothing buffered: what QuicStreamReceiver.handle_frame
            # does in this case (its own fast path), without building a QuicStreamFrame for it.
            if offset + length > receiver.highest_offset:
                receiver.highest_offset = offset + length
            receiver._buffer_start += length
            self._events.append(StreamDataReceived(data=data, end_stream=False, stream_id=stream_id))  # type: ignore[arg-type]
            self._local_max_data.used += newly_received
            return
        try:
            event = receiver.handle_frame(QuicStreamFrame(offset=offset, data=data, fin=fin))  # type: ignore[arg-type]
        except FinalSizeError as exc:
            raise QuicConnectionError(error_code=QuicErrorCode.FINAL_SIZE_ERROR,
                                      frame_type=frame_type, reason_phrase=str(exc)) from None
        if event is not None:
            self._events.append(event)
        self._local_max_data.used += newly_received

    # acknowledgement policy ---------------------------------------------------------------------

    def _confirm_handshake(self) -> None:
        super()._confirm_handshake()
        # Handshake flights keep aioquic's 1 ms; application data gets the longer delay.
        self._ack_delay = ACK_DELAY_S
        self._aspen_space = self._spaces[tls.Epoch.ONE_RTT]
        self._aspen_pair = self._cryptos[tls.Epoch.ONE_RTT]
        self._aspen_crypto_stream = self._crypto_streams[tls.Epoch.ONE_RTT]

    def _payload_received(self, context: QuicReceiveContext, plain: bytes,
                          crypto_frame_required: bool = False) -> tuple[bool, bool]:
        self._aspen_plain = plain  # _handle_stream_frame takes views of it
        is_one_rtt = context.epoch is tls.Epoch.ONE_RTT
        try:
            if is_one_rtt and not crypto_frame_required and self.use_fast_path and self._quic_logger is None:
                is_ack_eliciting, is_probing = self._one_rtt_payload_received(context, plain)
            else:
                is_ack_eliciting, is_probing = super()._payload_received(context, plain, crypto_frame_required)
        finally:
            self._aspen_plain = None
        if is_ack_eliciting and is_one_rtt:
            self._unacked_eliciting += 1
            if self._unacked_eliciting >= ACK_ELICITING_THRESHOLD:
                # receive_datagram keeps an ack_at that is already set
                (self._aspen_space or self._spaces[tls.Epoch.ONE_RTT]).ack_at = context.time
        return is_ack_eliciting, is_probing

    def _one_rtt_payload_received(self, context: QuicReceiveContext, plain: bytes) -> tuple[bool, bool]:
        # aioquic's _payload_received for a 1-RTT packet (every frame type is allowed in
        # 1-RTT) with STREAM, ACK and PING handled inline; other frames go to aioquic's own
        # handler table, with its checks and errors.
        buf = Buffer(data=plain)
        handlers = self._QuicConnection__frame_handlers  # type: ignore[attr-defined]
        frame_found = is_ack_eliciting = False
        is_probing: bool | None = None
        while not buf.eof():
            try:
                frame_type: int = buf.pull_uint_var()
            except BufferReadError:
                raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=None,  # type: ignore[arg-type]
                                          reason_phrase="Malformed frame type") from None
            try:
                if _STREAM_FIRST <= frame_type <= _STREAM_LAST:
                    self._handle_stream_frame(context, frame_type, buf)
                elif frame_type == QuicFrameType.ACK:
                    self._handle_one_rtt_ack_frame(context, frame_type, buf)
                elif frame_type != QuicFrameType.PING:  # a PING only elicits an ACK
                    try:
                        handler, epochs = handlers[frame_type]
                    except KeyError:
                        raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                                                  frame_type=frame_type, reason_phrase="Unknown frame type") from None
                    if tls.Epoch.ONE_RTT not in epochs:
                        raise QuicConnectionError(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                                                  frame_type=frame_type, reason_phrase="Unexpected frame type")
                    handler(context, frame_type, buf)
            except BufferReadError:
                raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                                          reason_phrase="Failed to parse frame") from None
            except StreamFinishedError:
                pass  # we lack the state for the stream, ignore the frame
            frame_found = True
            if frame_type not in NON_ACK_ELICITING_FRAME_TYPES:
                is_ack_eliciting = True
            if frame_type not in PROBING_FRAME_TYPES:
                is_probing = False
            elif is_probing is None:
                is_probing = True
        if not frame_found:
            raise QuicConnectionError(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                                      frame_type=QuicFrameType.PADDING, reason_phrase="Packet contains no frames")
        return is_ack_eliciting, bool(is_probing)

    def _handle_one_rtt_ack_frame(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        # aioquic's _handle_ack_frame for an ACK (not ACK_ECN) in a 1-RTT packet, no qlog.
        try:
            ack_rangeset, ack_delay_encoded = pull_ack_frame(buf)
        except ValueError as exc:  # RFC 9000 §19.3.1: a negative packet number
            raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                                      reason_phrase=str(exc)) from None
        loss = self._loss
        loss.peer_completed_address_validation = True
        loss.on_ack_received(ack_rangeset=ack_rangeset,
                             ack_delay=(ack_delay_encoded << self._remote_ack_delay_exponent) / 1000000,
                             now=context.time, space=self._aspen_space or self._spaces[tls.Epoch.ONE_RTT])

    def ack_with_next_packet(self) -> None:
        """The application queued data: the next `datagrams_to_send` carries any pending ACK in
        the same packet. aioquic writes an ACK frame only once its delay is due, so a delayed ACK
        never rode on a reply: it went alone ACK_DELAY_S later, one more datagram (and one more
        wake-up of the peer) per request and per Raft exchange."""
        self._ack_with_data = True

    def _write_ack_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace, now: float) -> None:
        super()._write_ack_frame(builder, space, now)
        if space.is_application_data:  # the 1-RTT space
            self._unacked_eliciting = 0

    # path MTU probing ---------------------------------------------------------------------------

    @property
    def max_datagram_size(self) -> int:
        """The datagram size in use (raised by successful PMTU probes)."""
        return self._max_datagram_size

    @property
    def is_pmtu_search_done(self) -> bool:
        return (self._pmtu_high - self._pmtu_low < PMTU_SEARCH_PRECISION_BYTES
                or self._pmtu_probes_sent >= MAX_PMTU_PROBES)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """aioquic's, plus PMTU probes. Datagrams are bytes-like: 1-RTT ones are bytearrays
        (packet_crypto.AspenPacketBuilder); sockets take either."""
        if self._ack_with_data:
            self._ack_with_data = False
            space = self._aspen_space  # set once the handshake is confirmed
            if space is not None and space.ack_at is not None and space.ack_at > now:
                space.ack_at = now
        datagrams = send_application(self, now) if self.use_fast_path else None
        if datagrams is None:
            # packet_crypto.aspen_packet_builder, inlined (this runs for every general send)
            setattr(_aioquic_connection, "QuicPacketBuilder", AspenPacketBuilder)
            try:
                datagrams = super().datagrams_to_send(now)
            finally:
                setattr(_aioquic_connection, "QuicPacketBuilder", QuicPacketBuilder)
        if self._pmtu_probe_uid is not None and now - self._pmtu_probe_sent_at > PMTU_PROBE_TIMEOUT_S:
            self._pmtu_probe_failed()
        if (self._pmtu_probe_uid is None and self._handshake_confirmed and not self.is_pmtu_search_done
                and self._state == QuicConnectionState.CONNECTED and self._close_event is None):
            datagrams += self._send_pmtu_probe(now)
        return datagrams

    def get_timer(self) -> float | None:
        """aioquic's (fast_path.next_timer once the handshake is confirmed)."""
        if self.use_fast_path:
            return next_timer(self)
        return super().get_timer()

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        """aioquic's; a 1-RTT packet of an established connection takes fast_path."""
        if self.use_fast_path and receive_short_header(self, data, addr, now):
            return
        super().receive_datagram(data, addr, now)

    def _aspen_send_buffer(self, capacity_bytes: int) -> Buffer:
        """fast_path's packet buffer, `capacity_bytes` long (reused while the size holds)."""
        buf: Buffer = self._aspen_buffer
        if buf.capacity != capacity_bytes:
            buf = self._aspen_buffer = Buffer(capacity=capacity_bytes)
        return buf

    def _send_pmtu_probe(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        # First try the ceiling (on loopback or a clean path it simply works), then bisect.
        size = self._pmtu_high if self._pmtu_probes_sent == 0 else (self._pmtu_low + self._pmtu_high) // 2
        uid = _PMTU_PROBE_UID_BASE + self._pmtu_probes_sent
        saved = self._max_datagram_size
        self._pmtu_probe_uid, self._pmtu_probe_size = uid, size
        self._pmtu_probe_is_padded = False
        self._ping_pending.append(uid)
        self._max_datagram_size = size  # the builder of this one call makes probe-sized datagrams
        # Room for exactly one probe-sized datagram: data must not ride at an unproven size.
        congestion = self._loss._cc
        saved_window = congestion.congestion_window
        congestion.congestion_window = self._loss.bytes_in_flight + size
        self._pmtu_in_probe = True
        try:
            with aspen_packet_builder():
                probe = super().datagrams_to_send(now)
        finally:
            self._max_datagram_size = saved
            congestion.congestion_window = saved_window
            self._pmtu_in_probe = False
        if uid in self._ping_pending:  # congestion window full: not sent, try again later
            self._ping_pending.remove(uid)
            self._pmtu_probe_uid = None
            return probe
        self._pmtu_probes_sent += 1
        self._pmtu_probe_sent_at = now
        return probe

    def _write_ping_frame(self, builder: QuicPacketBuilder, uids: list[int] = [],  # noqa: B006
                          comment: str = "") -> None:
        if self._pmtu_probe_uid is not None and self._pmtu_probe_uid in uids and not self._pmtu_in_probe:
            # A lost probe must not be retransmitted in an ordinary packet, where its ACK
            # would "prove" a size that was never sent.
            uids = [u for u in uids if u != self._pmtu_probe_uid]
            if not uids:
                return
        super()._write_ping_frame(builder, uids, comment)
        if self._pmtu_in_probe and self._pmtu_probe_uid in uids:
            # Pad this packet to the whole datagram, as aioquic does for PATH_CHALLENGE; only
            # valid as a probe if the congestion window did not cut the packet short.
            self._pmtu_probe_is_padded = builder.remaining_flight_space >= builder.remaining_buffer_space
            builder._datagram_needs_padding = True

    def _on_ping_delivery(self, delivery: QuicDeliveryState, uids: tuple[int, ...]) -> None:  # type: ignore[override]
        probe = self._pmtu_probe_uid
        if probe is not None and probe in uids:
            if delivery == QuicDeliveryState.ACKED and self._pmtu_probe_is_padded:
                self._pmtu_probe_acked()
            else:
                self._pmtu_probe_failed()
            uids = tuple(u for u in uids if u != probe)
        if uids:
            super()._on_ping_delivery(delivery, uids)

    def _pmtu_probe_acked(self) -> None:
        size = self._pmtu_probe_size
        self._pmtu_probe_uid = None
        self._pmtu_low = max(self._pmtu_low, size)
        if size > self._max_datagram_size:
            self._set_max_datagram_size(size)

    def _pmtu_probe_failed(self) -> None:
        self._pmtu_high = min(self._pmtu_high, self._pmtu_probe_size - 1)
        self._pmtu_probe_uid = None

    def _set_max_datagram_size(self, size: int) -> None:
        # Every component that sized itself from the configuration at construction.
        self._max_datagram_size = size
        self._loss._pacer._max_datagram_size = size
        congestion = self._loss._cc
        if hasattr(congestion, "_max_datagram_size"):
            congestion._max_datagram_size = size
        # RFC 9002 §7.2: "If the maximum datagram size changes during the connection, the
        # initial congestion window SHOULD be recalculated with the new size" — with aioquic's
        # own formula (K_INITIAL_WINDOW packets), while still in slow start. Without it a
        # 65000-byte path starts below one packet and needs ~6 more round trips to fill.
        initial_window = K_INITIAL_WINDOW * size
        if congestion.ssthresh is None and congestion.congestion_window < initial_window:
            congestion.congestion_window = initial_window

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
    "MAX_PROBED_DATAGRAM_SIZE",
    "MAX_CONCURRENT_STREAMS",
    "MIN_STATELESS_RESET_SIZE",
    "STATELESS_RESET_TOKEN_SIZE",
    "derive_reset_key",
    "stateless_reset_token",
]
