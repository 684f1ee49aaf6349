"""CPU per datagram of the QUIC layer for Raft-sized messages: AspenQuicConnection vs aioquic.

Two sans-IO connections in this one process, wired back to back in memory (no sockets, no
event loop): one side's `datagrams_to_send(now)` goes straight into the other's
`receive_datagram`. After one handshake, the client sends a request and the server answers,
ROUNDS times, on long-lived bidirectional streams of the established 1-RTT connection — the
traffic a Raft cluster's I/O processes carry (AppendEntries and their responses).

What a side does per round, as the Endpoint drives it (endpoint.py `_service`):

  send     send_stream_data for each message, ack_with_next_packet (Aspen's endpoint calls
           it whenever the application queued data), datagrams_to_send(now), get_timer()
  receive  receive_datagram for each datagram, then drain next_event; Aspen's stream reader
           reports what it holds (set_stream_held, peer.py) as the endpoint's streams do

Each phase's thread CPU time is summed and divided by the datagrams it sent or received. A due
timer (a delayed ACK) is handled and its datagrams counted like any other send. Per datagram is
not the whole story: Aspen's replies carry the ACK of the request (ack_with_next_packet), so
each of its datagrams has an ACK frame to process, while aioquic's ACKs mostly go alone 1 ms
later (more, but cheaper, datagrams). "round" is therefore also given: all CPU of both sides
per request/response round. Time is
simulated: ROUND_TRIP_S per round, so ACK delays and pacing behave as on a fast LAN.

Scenarios
  1x200        one 200-byte message each way per round, one stream
  8x100        eight 100-byte messages each way per round, one stream (one datagram each way)
  4streams     one 200-byte message on each of four streams per round (four STREAM frames)

The baseline is plain aioquic `QuicConnection` with the same configuration, in the same run
(the machine is shared: compare ratios, not absolute numbers). Figures are the best of
--repeat runs.

    .venv/bin/python perf/quic_small_bench.py [--rounds 3000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Row, add_json_argument, emit  # noqa: E402

from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.connection import QuicConnection  # noqa: E402
from aioquic.quic.events import StreamDataReceived  # noqa: E402

from aspen.identity import SecretKey  # noqa: E402
from aspen.quic import endpoint as _endpoint  # noqa: E402
from aspen.quic.connection import AspenQuicConnection, derive_reset_key  # noqa: E402
from aspen.quic.tls_identity import make_identity_certificate  # noqa: E402

CLIENT_ADDR = ("10.0.0.1", 4433)
SERVER_ADDR = ("10.0.0.2", 4433)
ALPN = "bench/1"
# A LAN round trip (guess: the cluster benchmark runs on one host; 100 us keeps aioquic's
# 1 ms ACK delay and Aspen's 10 ms one from firing inside a round, as on a busy link).
ROUND_TRIP_S = 0.0001
# Ethernet MTU 1500 - 20 (IPv4) - 8 (UDP): the ceiling the endpoint's PMTU search gets on a LAN.
PMTU_CEILING_BYTES = 1472
DEFAULT_ROUNDS = 3000
DEFAULT_REPEAT = 3
MAX_HANDSHAKE_STEPS = 50  # a handshake is ~4 flights; more means something broke
SCENARIOS: dict[str, tuple[int, int, int]] = {  # name -> (streams, messages per stream, size)
    "1x200": (1, 1, 200),
    "8x100": (1, 8, 100),
    "4streams": (4, 1, 200),
}


@dataclass
class Phase:
    """Thread CPU time spent in one phase and the datagrams it moved."""

    cpu_ns: int = 0
    datagrams: int = 0

    @property
    def us_per_datagram(self) -> float:
        return self.cpu_ns / 1000 / max(self.datagrams, 1)


def configuration(key: SecretKey, *, is_client: bool) -> QuicConfiguration:
    """What Endpoint._configuration builds, with this benchmark's ALPN."""
    cert, private = make_identity_certificate(key)
    return QuicConfiguration(
        is_client=is_client, alpn_protocols=[ALPN], certificate=cert, private_key=private,
        verify_mode=ssl.CERT_NONE, idle_timeout=_endpoint.DEFAULT_IDLE_TIMEOUT_MS / 1000,
        max_datagram_size=_endpoint.DEFAULT_MAX_DATAGRAM_SIZE,
        max_data=_endpoint.DEFAULT_CONNECTION_WINDOW_SIZE,
        max_stream_data=_endpoint.DEFAULT_STREAM_WINDOW_SIZE,
        connection_id_length=_endpoint.CONNECTION_ID_LENGTH,
        supported_versions=list(_endpoint._SUPPORTED_VERSIONS))


def make_pair(system: str) -> tuple[QuicConnection, QuicConnection]:
    client_key, server_key = SecretKey.generate(), SecretKey.generate()
    client_config = configuration(client_key, is_client=True)
    server_config = configuration(server_key, is_client=False)
    client: QuicConnection
    server: QuicConnection
    if system == "aspen":
        client = AspenQuicConnection(configuration=client_config,
                                     reset_key=derive_reset_key(client_key.seed),
                                     expected_peer_id=server_key.public(),
                                     pmtu_ceiling_bytes=PMTU_CEILING_BYTES)
        server = AspenQuicConnection(configuration=server_config,
                                     reset_key=derive_reset_key(server_key.seed),
                                     original_destination_connection_id=client._peer_cid.cid,
                                     pmtu_ceiling_bytes=PMTU_CEILING_BYTES)
    else:
        client = QuicConnection(configuration=client_config)
        server = QuicConnection(configuration=server_config,
                                original_destination_connection_id=client._peer_cid.cid)
    return client, server


class Side:
    """One connection and what the endpoint around it would do."""

    def __init__(self, quic: QuicConnection, addr: tuple[str, int]) -> None:
        self.quic = quic
        self.addr = addr  # our address, as the peer sees it
        self.aspen = quic if isinstance(quic, AspenQuicConnection) else None
        self.received = 0
        self.send = Phase()
        self.recv = Phase()

    def transmit(self, peer: Side, now: float, measure: bool) -> None:
        """datagrams_to_send + get_timer here, receive_datagram + event drain at the peer."""
        clock = time.thread_time_ns
        t0 = clock()
        datagrams = self.quic.datagrams_to_send(now)
        self.quic.get_timer()
        wire = [bytes(data) for data, _ in datagrams]  # what a socket delivers (Aspen sends bytearrays)
        t1 = clock()
        for data in wire:
            peer.quic.receive_datagram(data, self.addr, now)
        peer.drain()
        t2 = clock()
        if measure:
            self.send.cpu_ns += t1 - t0
            self.send.datagrams += len(datagrams)
            peer.recv.cpu_ns += t2 - t1
            peer.recv.datagrams += len(datagrams)

    def drain(self) -> None:
        quic = self.quic
        aspen = self.aspen
        while (event := quic.next_event()) is not None:
            if type(event) is StreamDataReceived:
                self.received += len(event.data)
                if aspen is not None:
                    aspen.set_stream_held(event.stream_id, 0)  # the reader took every frame

    def write(self, stream_ids: list[int], messages: int, body: bytes, measure: bool) -> None:
        clock = time.thread_time_ns
        t0 = clock()
        quic = self.quic
        for stream_id in stream_ids:
            for _ in range(messages):
                quic.send_stream_data(stream_id, body)
        if self.aspen is not None:
            self.aspen.ack_with_next_packet()
        if measure:
            self.send.cpu_ns += clock() - t0

    def fire_timer(self, peer: Side, now: float, measure: bool) -> None:
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            clock = time.thread_time_ns
            t0 = clock()
            self.quic.handle_timer(now)
            if measure:
                self.send.cpu_ns += clock() - t0
            self.transmit(peer, now, measure)


def handshake(client: Side, server: Side) -> float:
    now = 0.0
    client.quic.connect(SERVER_ADDR, now=now)
    for _ in range(MAX_HANDSHAKE_STEPS):
        now += ROUND_TRIP_S
        client.fire_timer(server, now, False)
        server.fire_timer(client, now, False)
        client.transmit(server, now, False)
        server.transmit(client, now, False)
        if client.quic._handshake_confirmed and not client.quic.datagrams_to_send(now):
            return now
    raise RuntimeError("handshake did not complete")


def run(system: str, scenario: str, rounds: int) -> tuple[Phase, Phase]:
    """(send, receive) phases summed over both sides, after a warm-up of rounds // 10."""
    client, server = (Side(c, a) for c, a in zip(make_pair(system), (CLIENT_ADDR, SERVER_ADDR)))
    now = handshake(client, server)
    streams, messages, size = SCENARIOS[scenario]
    stream_ids = [client.quic.get_next_available_stream_id() + 4 * i for i in range(streams)]
    body = bytes(size)
    warmup = rounds // 10
    for i in range(warmup + rounds):
        measure = i >= warmup
        for sender, receiver in ((client, server), (server, client)):
            now += ROUND_TRIP_S / 2
            receiver.fire_timer(sender, now, measure)
            sender.fire_timer(receiver, now, measure)
            sender.write(stream_ids, messages, body, measure)
            sender.transmit(receiver, now, measure)
    expected = (warmup + rounds) * streams * messages * size
    if client.received != expected or server.received != expected:
        raise RuntimeError(f"{system} {scenario}: received {client.received}/{server.received} "
                           f"of {expected} bytes")
    send = Phase(client.send.cpu_ns + server.send.cpu_ns, client.send.datagrams + server.send.datagrams)
    recv = Phase(client.recv.cpu_ns + server.recv.cpu_ns, client.recv.datagrams + server.recv.datagrams)
    return send, recv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    add_json_argument(parser)
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    rows: list[Row] = []
    for scenario in scenarios:
        best: dict[tuple[str, str], float] = {}
        per_round: dict[str, float] = {}
        cpu_per_round: dict[str, float] = {}
        for _ in range(args.repeat):
            for system in ("aspen", "aioquic"):  # interleaved: both see the same machine load
                send, recv = run(system, scenario, args.rounds)
                for phase_name, phase in (("send", send), ("recv", recv)):
                    key = (system, phase_name)
                    best[key] = min(best.get(key, float("inf")), phase.us_per_datagram)
                per_round[system] = send.datagrams / args.rounds
                cpu_us = (send.cpu_ns + recv.cpu_ns) / 1000 / args.rounds
                cpu_per_round[system] = min(cpu_per_round.get(system, float("inf")), cpu_us)
        for phase_name in ("send", "recv"):
            rows.append(Row(f"{scenario} {phase_name}", "us/datagram", best[("aspen", phase_name)],
                            best[("aioquic", phase_name)], "aioquic"))
        rows.append(Row(f"{scenario} round", "us", cpu_per_round["aspen"],
                        cpu_per_round["aioquic"], "aioquic"))
        rows.append(Row(f"{scenario} datagrams", "per round", per_round["aspen"],
                        per_round["aioquic"], "aioquic"))
    load = os.getloadavg()
    emit(f"QUIC small messages: AspenQuicConnection vs aioquic QuicConnection, CPU per datagram "
         f"({args.rounds} rounds, best of {args.repeat}, {time.monotonic() - started:.0f} s, "
         f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
