"""`aspen ping ENDPOINT_ID@HOST:PORT`: round trips to a running node over the echo protocol.

`ping()` starts a throw-away endpoint (fresh key unless one is given), dials the target over
ALPN "aspen-echo/1" (the handshake proves the target holds ENDPOINT_ID's key), then sends `count`
echo requests one after another and times each round trip. Failures of single requests are
counted, not raised; only a failed handshake raises.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from aspen.addr import EndpointAddr, SocketAddr
from aspen.errors import AspenError, UsageError
from aspen.identity import EndpointId, SecretKey
from aspen.quic.endpoint import Endpoint

ECHO_ALPN = "aspen-echo/1"  # plugins/aspen_echo (the ALPN is the protocol's wire contract)
DEFAULT_PING_COUNT = 5
DEFAULT_PING_INTERVAL_MS = 1_000  # like ping(8)
DEFAULT_PING_TIMEOUT_MS = 5_000
DEFAULT_PING_PAYLOAD_SIZE = 32
# A ping run is interactive; more than this is a load test, which perf/ does better.
MAX_PING_COUNT = 100_000


@dataclass
class PingStats:
    """What one `ping()` run measured. Times in milliseconds."""

    target: str
    handshake_ms: float = 0.0
    rtts_ms: list[float] = field(default_factory=list)
    sent: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def received(self) -> int:
        return len(self.rtts_ms)

    @property
    def loss_ratio(self) -> float:
        return 0.0 if self.sent == 0 else 1 - self.received / self.sent

    @property
    def min_ms(self) -> float:
        return min(self.rtts_ms) if self.rtts_ms else 0.0

    @property
    def avg_ms(self) -> float:
        return statistics.fmean(self.rtts_ms) if self.rtts_ms else 0.0

    @property
    def max_ms(self) -> float:
        return max(self.rtts_ms) if self.rtts_ms else 0.0

    def summary(self) -> str:
        """ping(8)-style summary lines."""
        return (f"--- {self.target} ping statistics ---\n"
                f"handshake {self.handshake_ms:.3f} ms; {self.sent} sent, {self.received} received, "
                f"{100 * self.loss_ratio:.0f}% loss\n"
                f"rtt min/avg/max = {self.min_ms:.3f}/{self.avg_ms:.3f}/{self.max_ms:.3f} ms")


def parse_target(target: str) -> EndpointAddr:
    """`ENDPOINT_ID@HOST:PORT` (IPv6 as `[addr]:port`) -> EndpointAddr; UsageError otherwise."""
    endpoint_text, sep, addr_text = target.partition("@")
    if not sep:
        raise UsageError(f"ping target {target!r} must look like ENDPOINT_ID@HOST:PORT")
    try:
        return EndpointAddr(EndpointId.parse(endpoint_text), None, (SocketAddr.parse(addr_text),))
    except ValueError as exc:
        raise UsageError(f"bad ping target {target!r}: {exc}") from None


async def ping(target: str, count: int = DEFAULT_PING_COUNT, *,
               interval_ms: int = DEFAULT_PING_INTERVAL_MS,
               timeout_ms: int = DEFAULT_PING_TIMEOUT_MS,
               payload_size_bytes: int = DEFAULT_PING_PAYLOAD_SIZE,
               secret_key: SecretKey | None = None,
               on_reply: Callable[[int, float], None] | None = None) -> PingStats:
    """Ping `target` `count` times over the echo protocol; returns the measurements.

    Raises UsageError for a bad target or count, HandshakeError / QuicTimeoutError when the
    target cannot be reached or does not prove its key. `on_reply(seq, rtt_ms)`, if given, is
    called after each reply (the CLI prints a line per reply).
    """
    if not 1 <= count <= MAX_PING_COUNT:
        raise UsageError(f"count must be 1..{MAX_PING_COUNT}, got {count}")
    addr = parse_target(target)
    stats = PingStats(target=target)
    endpoint = Endpoint(secret_key or SecretKey.generate(), registry=CollectorRegistry())
    await endpoint.start()
    try:
        start_s = time.perf_counter()
        await endpoint.connect(addr, ECHO_ALPN, timeout_ms=timeout_ms)
        stats.handshake_ms = (time.perf_counter() - start_s) * 1000
        for seq in range(count):
            payload = seq.to_bytes(8, "big") + bytes(max(0, payload_size_bytes - 8))
            stats.sent += 1
            start_s = time.perf_counter()
            try:
                reply = await endpoint.rpc(addr, ECHO_ALPN, payload, timeout_ms=timeout_ms)
            except AspenError as exc:
                stats.errors.append(f"seq {seq}: {exc}")
            else:
                rtt_ms = (time.perf_counter() - start_s) * 1000
                if reply == payload:
                    stats.rtts_ms.append(rtt_ms)
                    if on_reply is not None:
                        on_reply(seq, rtt_ms)
                else:
                    stats.errors.append(f"seq {seq}: echo mismatch")
            if seq + 1 < count and interval_ms > 0:
                await asyncio.sleep(interval_ms / 1000)
    finally:
        await endpoint.stop()
    return stats


__all__ = ["ping", "cmd_ping", "PingStats", "parse_target", "ECHO_ALPN", "DEFAULT_PING_COUNT",
           "DEFAULT_PING_INTERVAL_MS", "DEFAULT_PING_TIMEOUT_MS"]


def cmd_ping(argv: list[str]) -> int:
    """`aspen ping ENDPOINT_ID@HOST:PORT [-c N] [-i MS] [--timeout-ms MS] [--size BYTES]`.

    For `aspen.cli.register_command("ping", cmd_ping, ...)`. Prints one line per reply and a
    ping(8)-style summary. Exit status: 0 all replies came back, 1 some were lost or the
    target could not be reached (or did not prove its key), 2 usage error.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="aspen ping", description=(
        "Measure round trips to a running node over the echo protocol (aspen-echo/1). The "
        "handshake proves the node holds ENDPOINT_ID's key."))
    parser.add_argument("target", help="ENDPOINT_ID@HOST:PORT (IPv6: ENDPOINT_ID@[ADDR]:PORT)")
    parser.add_argument("-c", "--count", type=int, default=DEFAULT_PING_COUNT)
    parser.add_argument("-i", "--interval-ms", type=int, default=DEFAULT_PING_INTERVAL_MS)
    parser.add_argument("--timeout-ms", type=int, default=DEFAULT_PING_TIMEOUT_MS)
    parser.add_argument("--size", type=int, default=DEFAULT_PING_PAYLOAD_SIZE, help="payload bytes")
    args = parser.parse_args(argv)

    def show(seq: int, rtt_ms: float) -> None:
        print(f"reply from {args.target.split('@', 1)[-1]}: seq={seq} time={rtt_ms:.3f} ms", flush=True)

    try:
        stats = asyncio.run(ping(args.target, args.count, interval_ms=args.interval_ms,
                                 timeout_ms=args.timeout_ms, payload_size_bytes=args.size,
                                 on_reply=show))
    except UsageError as exc:
        print(f"aspen ping: {exc}", file=sys.stderr)
        return 2
    except AspenError as exc:
        print(f"aspen ping: {args.target}: {exc}", file=sys.stderr)
        return 1
    for error in stats.errors:
        print(f"error: {error}", file=sys.stderr)
    print(stats.summary())
    return 0 if stats.received == stats.sent else 1
