"""fast_path must do exactly what aioquic's general path does, and step aside for anything else.

The differential tests run one script of traffic through two connection pairs, one with fast
paths and one without (`use_fast_path = False`), and compare everything observable: the
plaintext of every 1-RTT packet, datagram sizes, events, timers and recovery state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.connection import QuicConnectionError, QuicReceiveContext
from aioquic.quic.events import QuicEvent, StreamDataReceived
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.quic.stream import QuicStream

from aspen.identity import SecretKey
from aspen.quic import connection as connection_module
from aspen.quic import fast_path
from aspen.quic.connection import AspenQuicConnection, derive_reset_key
from tests.unit.quic._pair import CLIENT_ADDR, SERVER_ADDR, config, exchange

MAX_STEPS = 400  # bounds every loop of a script


def make_pair(*, max_stream_data: int = 64 << 20, max_data: int = 64 << 20,
              pmtu_ceiling: int = 0) -> tuple[AspenQuicConnection, AspenQuicConnection]:
    client_key, server_key = SecretKey.generate(), SecretKey.generate()
    client_config = config(client_key, is_client=True, alpns=["test/1"])
    server_config = config(server_key, is_client=False, alpns=["test/1"])
    for c in (client_config, server_config):
        c.max_stream_data = max_stream_data
        c.max_data = max_data
    client = AspenQuicConnection(configuration=client_config, reset_key=derive_reset_key(client_key.seed),
                                 expected_peer_id=server_key.public(), pmtu_ceiling_bytes=pmtu_ceiling)
    server = AspenQuicConnection(configuration=server_config, reset_key=derive_reset_key(server_key.seed),
                                 original_destination_connection_id=client._peer_cid.cid,
                                 pmtu_ceiling_bytes=pmtu_ceiling)
    return client, server


def connected_pair() -> tuple[AspenQuicConnection, AspenQuicConnection, float]:
    """A pair past its handshake, and the time."""
    client, server = make_pair()
    client.connect(SERVER_ADDR, now=0.0)
    return client, server, exchange(client, server)


@dataclass
class Run:
    """One pair driven by a script; `trace` is what both runs must agree on."""

    client: AspenQuicConnection
    server: AspenQuicConnection
    now: float = 0.0
    recording: bool = False
    trace: list[Any] = field(default_factory=list)
    received: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def side(self, name: str) -> AspenQuicConnection:
        return self.client if name == "c" else self.server

    def record(self, *item: Any) -> None:
        if self.recording:
            self.trace.append(item)

    def transfer(self, sender: str, drop: Callable[[int], bool] = lambda i: False) -> int:
        """Move what `sender` wants to send; datagram i is lost if drop(i)."""
        conn = self.side(sender)
        peer = self.side("s" if sender == "c" else "c")
        addr = CLIENT_ADDR if sender == "c" else SERVER_ADDR
        datagrams = conn.datagrams_to_send(self.now)
        for i, (data, _) in enumerate(datagrams):
            self.record(sender, "datagram", len(data), drop(i))
            if not drop(i):
                peer.receive_datagram(bytes(data), addr, self.now)
        self.drain(peer, "s" if sender == "c" else "c")
        self.record(sender, "timer", conn.get_timer(), conn._close_at, peer._close_at)
        return len(datagrams)

    def drain(self, conn: AspenQuicConnection, name: str) -> None:
        while (event := conn.next_event()) is not None:
            self.record(name, "event", _describe(event))
            if isinstance(event, StreamDataReceived):
                key = (name, event.stream_id)
                self.received[key] = self.received.get(key, b"") + bytes(event.data)

    def tick(self, seconds: float) -> None:
        """Let time pass, firing due timers and moving datagrams both ways."""
        self.now += seconds
        for name in ("c", "s"):
            conn = self.side(name)
            timer = conn.get_timer()
            if timer is not None and timer <= self.now:
                conn.handle_timer(self.now)
        self.transfer("c")
        self.transfer("s")

    def settle(self, seconds: float = 0.5) -> None:
        for _ in range(MAX_STEPS):
            if seconds <= 0:
                return
            self.tick(0.005)
            seconds -= 0.005

    def snapshot(self) -> None:
        for name in ("c", "s"):
            conn = self.side(name)
            loss = conn._loss
            self.record(name, "state", conn._packet_number, loss.bytes_in_flight, loss.congestion_window,
                        loss._rtt_smoothed, conn._close_at, conn._loss_at, conn._pacing_at, conn._spin_bit,
                        conn._remote_max_data_used, conn._local_max_data.used, conn._local_max_data.value,
                        [(s.stream_id, s.sender.highest_offset, s.receiver.highest_offset,
                          s.max_stream_data_local, s.max_stream_data_remote) for s in conn._streams_queue],
                        conn._cryptos[tls.Epoch.ONE_RTT].key_phase)


def _describe(event: QuicEvent) -> tuple[Any, ...]:
    fields = {k: (bytes(v) if isinstance(v, memoryview) else v) for k, v in vars(event).items()}
    fields.pop("connection_id", None)  # random
    return (type(event).__name__, tuple(sorted(fields.items())))


def _recorder(run: Run, name: str, conn: AspenQuicConnection) -> None:
    original = conn._payload_received

    def payload_received(context: QuicReceiveContext, plain: bytes,
                         crypto_frame_required: bool = False) -> tuple[bool, bool]:
        if context.epoch is tls.Epoch.ONE_RTT:
            run.record(name, "payload", bytes(plain))
        return original(context, plain, crypto_frame_required)

    conn._payload_received = payload_received  # type: ignore[method-assign]


def start(fast: bool, **pair_args: Any) -> Run:
    client, server = make_pair(**pair_args)
    run = Run(client, server)
    for name, conn in (("s", client), ("c", server)):  # record at the receiver of each payload
        conn.use_fast_path = fast
        _recorder(run, name, conn)
    client.connect(SERVER_ADDR, now=0.0)
    run.now = exchange(client, server, 0.0)
    run.drain(client, "c")
    run.drain(server, "s")
    assert client._handshake_confirmed and server._handshake_confirmed
    run.recording = True
    return run


def request_response(run: Run, rounds: int, *, sizes: tuple[int, ...] = (200,), streams: int = 1) -> None:
    client, server = run.client, run.server
    for i in range(rounds):
        for sender in ("c", "s"):
            conn = run.side(sender)
            for k in range(streams):
                for size in sizes:
                    conn.send_stream_data(4 * k, bytes([i % 256]) * size)
            conn.ack_with_next_packet()
            run.now += 0.0001
            run.transfer(sender)
    assert client and server


def compare(script: Callable[[Run], None], **pair_args: Any) -> tuple[Run, Run]:
    """Run `script` with and without fast paths; both must see the same things."""
    fast, general = start(True, **pair_args), start(False, **pair_args)
    for run in (fast, general):
        script(run)
        run.snapshot()
    assert len(fast.trace) == len(general.trace)
    for i, (a, b) in enumerate(zip(fast.trace, general.trace)):
        assert a == b, f"step {i}: fast {a!r} != general {b!r}"
    assert fast.received == general.received
    return fast, general


@pytest.fixture(autouse=True)
def deterministic_stream_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioquic moves the streams it served to the end of its queue in the iteration order of a
    set of QuicStream objects, hashed by address, so two runs may order them differently. Hash
    them by stream id here, so both runs (and both paths, which use the same set) agree."""
    monkeypatch.setattr(QuicStream, "__hash__", lambda self: hash(self.stream_id))


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often each fast path handled the call (not None / True)."""
    counts = {"send": 0, "receive": 0}
    send, receive = fast_path.send_application, fast_path.receive_short_header

    def counting_send(conn: AspenQuicConnection, now: float) -> Any:
        out = send(conn, now)
        counts["send"] += out is not None
        return out

    def counting_receive(conn: AspenQuicConnection, data: bytes, addr: Any, now: float) -> bool:
        handled = receive(conn, data, addr, now)
        counts["receive"] += handled
        return handled

    monkeypatch.setattr(connection_module, "send_application", counting_send)
    monkeypatch.setattr(connection_module, "receive_short_header", counting_receive)
    yield counts


# ---- same behaviour as the general path -------------------------------------------------------

def test_request_response_is_identical_and_takes_the_fast_paths(fast_calls: dict[str, int]) -> None:
    def script(run: Run) -> None:
        request_response(run, 30)
        request_response(run, 10, sizes=(100,) * 8)  # eight messages per datagram
        request_response(run, 10, streams=4)  # four STREAM frames per datagram
        run.settle(0.1)  # delayed ACKs go out alone

    fast, _ = compare(script)
    assert fast.received[("s", 0)][:200] == bytes(200)
    assert fast_calls["send"] >= 100 and fast_calls["receive"] >= 100


@pytest.mark.parametrize("pmtu_ceiling", [0, 60_000], ids=["1200", "pmtu"])
def test_a_bulk_message_fills_several_datagrams_identically(fast_calls: dict[str, int],
                                                           pmtu_ceiling: int) -> None:
    # With the PMTU search on, datagrams grow to 60,000 bytes: STREAM frames over 16383 bytes
    # take a 4-byte length field.
    def script(run: Run) -> None:
        run.settle(0.05)  # PMTU probes
        run.client.send_stream_data(0, bytes(range(256)) * 400, end_stream=True)  # 102,400 bytes
        run.client.send_stream_data(4, b"small", end_stream=True)
        run.transfer("c")
        run.settle(0.2)

    fast, _ = compare(script, pmtu_ceiling=pmtu_ceiling)
    assert fast.received[("s", 0)] == bytes(range(256)) * 400
    assert fast.client.max_datagram_size == (1200 if not pmtu_ceiling else 60_000)
    assert fast_calls["send"] > 0


def test_losses_are_recovered_identically(fast_calls: dict[str, int]) -> None:
    def script(run: Run) -> None:
        request_response(run, 5)
        for i in range(20):
            run.client.send_stream_data(0, bytes([i]) * 300)
            run.client.ack_with_next_packet()
            run.now += 0.0001
            run.transfer("c", drop=lambda k: i % 3 == 0)  # every third request is lost
            run.transfer("s", drop=lambda k: i % 7 == 0)
        run.settle(2.0)  # loss detection, PTO probes, retransmissions

    fast, _ = compare(script)
    expected = b"".join(bytes([i]) * 300 for i in range(20))
    assert fast.received[("s", 0)].endswith(expected)
    assert fast_calls["send"] > 0


def test_flow_control_blocked_stream_resumes_identically(fast_calls: dict[str, int]) -> None:
    # 4 KiB stream window, nobody reports reads: aioquic's MAX_STREAM_DATA doubling applies,
    # and those frames (and MAX_DATA) are written by the general path.
    def script(run: Run) -> None:
        run.client.send_stream_data(0, b"x" * 20_000, end_stream=True)
        for _ in range(60):
            run.tick(0.002)

    fast, _ = compare(script, max_stream_data=4096, max_data=16384)
    assert fast.received[("s", 0)] == b"x" * 20_000
    assert fast_calls["send"] > 0


def test_reader_reported_credit_identically() -> None:
    def script(run: Run) -> None:
        for i in range(40):
            run.client.send_stream_data(0, bytes([i]) * 1000)
            run.tick(0.001)
            run.server.set_stream_held(0, 0)  # the reader consumed everything
        run.settle(0.1)

    compare(script, max_stream_data=8192)


def test_key_update_ping_pmtu_probe_and_stream_ends_identically(fast_calls: dict[str, int]) -> None:
    def script(run: Run) -> None:
        request_response(run, 3)
        run.client.request_key_update()
        request_response(run, 3)
        run.server.send_ping(7)
        request_response(run, 3)
        for k in range(6):  # streams end and are discarded: MAX_STREAMS follows
            stream_id = run.client.get_next_available_stream_id()
            run.client.send_stream_data(stream_id, b"bye", end_stream=True)
            run.tick(0.001)
            run.server.send_stream_data(stream_id, b"ok", end_stream=True)
            run.tick(0.001)
        run.settle(0.2)

    fast, _ = compare(script, pmtu_ceiling=1500)
    assert fast.client._cryptos[tls.Epoch.ONE_RTT].key_phase == 1
    assert fast_calls["send"] > 0


def test_random_traffic_is_identical() -> None:
    def script(run: Run) -> None:
        rng = random.Random(7)
        for stream_id in (0, 4, 8):  # the client opens the streams both sides use
            run.client.send_stream_data(stream_id, b"open")
        run.tick(0.001)
        for _ in range(150):
            sender = rng.choice("cs")
            conn = run.side(sender)
            action = rng.random()
            if action < 0.6:
                conn.send_stream_data(4 * rng.randrange(3), bytes(rng.randrange(1, 3000)))
                conn.ack_with_next_packet()
            elif action < 0.65:
                conn.send_ping(rng.randrange(100))
            run.now += rng.choice((0.00001, 0.0005, 0.003, 0.02))
            for name in ("c", "s"):
                timer = run.side(name).get_timer()
                if timer is not None and timer <= run.now:
                    run.side(name).handle_timer(run.now)
            run.transfer(sender, drop=lambda k: rng.random() < 0.1)
        run.settle(1.0)

    compare(script)


# ---- fallbacks ----------------------------------------------------------------------------------

def test_the_send_fast_path_steps_aside_for_anything_but_ack_and_stream_data() -> None:
    client, server, now = connected_pair()
    send = fast_path.send_application
    client.send_stream_data(0, b"hello")
    client.send_ping(1)
    assert send(client, now) is None  # PING
    client._ping_pending.clear()
    client._probe_pending = True
    assert send(client, now) is None  # a PTO probe
    client._probe_pending = False
    client.reset_stream(0, 1)
    assert send(client, now) is None  # RESET_STREAM
    client._streams[0].sender.reset_pending = False
    stream = client._streams[0]
    stream.max_stream_data_local += 1
    assert send(client, now) is None  # MAX_STREAM_DATA due
    stream.max_stream_data_local -= 1
    client._local_max_data.value += 1
    assert send(client, now) is None  # MAX_DATA due
    client._local_max_data.value -= 1
    client.close()
    assert send(client, now) is None  # CONNECTION_CLOSE


def test_the_receive_fast_path_takes_only_its_short_headers() -> None:
    client, server, now = connected_pair()
    receive = fast_path.receive_short_header
    client.send_stream_data(0, b"hi")
    (data, _), = client.datagrams_to_send(now)
    packet = bytes(data)
    assert not receive(server, packet, ("9.9.9.9", 1), now)  # another address: migration
    assert not receive(server, b"\xc0" + packet[1:], CLIENT_ADDR, now)  # a long header
    other_cid = bytes(b ^ 0xFF for b in packet[1:9])
    assert not receive(server, packet[:1] + other_cid + packet[9:], CLIENT_ADDR, now)  # another cid
    assert receive(server, packet, CLIENT_ADDR, now)
    assert receive(server, packet, CLIENT_ADDR, now)  # a duplicate is dropped
    events = [e for e in iter(server.next_event, None) if isinstance(e, StreamDataReceived)]
    assert [bytes(e.data) for e in events] == [b"hi"]


def _frame_outcome(conn: AspenQuicConnection, payload: bytes) -> Any:
    context = QuicReceiveContext(epoch=tls.Epoch.ONE_RTT, host_cid=conn.host_cid,
                                 network_path=conn._network_paths[0], quic_logger_frames=None,
                                 time=1.0, version=None)
    try:
        result: Any = conn._payload_received(context, payload)
    except QuicConnectionError as exc:
        result = ("error", exc.error_code, exc.frame_type, exc.reason_phrase)
    return result, [_describe(e) for e in iter(conn.next_event, None)]


def _varint(value: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(value)
    return bytes(buf.data)


STREAM_FRAME = bytes([0x0A]) + _varint(1) + _varint(3) + b"abc"  # server-opened bidi stream 1
PAYLOADS = {
    "stream": STREAM_FRAME,
    "stream fin no length": bytes([0x09]) + _varint(1) + b"xyz",
    "ping": bytes([QuicFrameType.PING]),
    "padding": bytes([QuicFrameType.PING]) + bytes(40),
    "max data": bytes([QuicFrameType.MAX_DATA]) + _varint(1 << 30),
    "unknown frame": STREAM_FRAME + _varint(0x30),
    "truncated stream": bytes([0x0A]) + _varint(1) + _varint(30) + b"abc",
    "truncated type": bytes([0x40]),
    "no frames": b"",
    "handshake done": bytes([QuicFrameType.HANDSHAKE_DONE]),
    "crypto": bytes([QuicFrameType.CRYPTO]) + _varint(0) + _varint(1) + b"\x00",
    "send-only stream": bytes([0x0A]) + _varint(3) + _varint(1) + b"a",
    "ack bad range": bytes([QuicFrameType.ACK]) + _varint(0) + _varint(0) + _varint(0) + _varint(5),
    "ack ecn": bytes([QuicFrameType.ACK_ECN]) + _varint(0) + _varint(0) + _varint(0) + _varint(0)
    + _varint(0) * 3,
    "new token": bytes([QuicFrameType.NEW_TOKEN]) + _varint(2) + b"tk",
    "stream over limit": bytes([0x0E]) + _varint(1) + _varint(1 << 40) + _varint(1) + b"a",
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_frames_are_handled_as_aioquic_handles_them(name: str) -> None:
    outcomes = []
    for fast in (True, False):
        client, server, _ = connected_pair()
        client.use_fast_path = fast  # the client receives: stream 1 is one the server may open
        outcomes.append(_frame_outcome(client, PAYLOADS[name]))
    assert outcomes[0] == outcomes[1]


def test_an_error_in_a_received_frame_closes_the_connection_as_aioquic_does() -> None:
    closes = []
    for fast in (True, False):
        client, server, now = connected_pair()
        server.use_fast_path = client.use_fast_path = fast
        client.send_stream_data(2, b"uni")  # a unidirectional stream: the server may not send on it
        now = exchange(client, server, now)
        stream = server._streams[2]  # past the API's checks: a misbehaving peer
        stream.max_stream_data_remote = 100
        stream.sender.write(b"no")
        exchange(client, server, now)
        assert client._close_event is not None
        closes.append((client._close_event.error_code, client._close_event.reason_phrase))
    assert closes[0] == closes[1] == (QuicErrorCode.STREAM_STATE_ERROR, "Stream is send-only")
