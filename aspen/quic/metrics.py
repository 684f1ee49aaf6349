"""Prometheus metrics of one QUIC endpoint, registered in a caller-given `CollectorRegistry`.

Never the global registry: several endpoints live in one test process. Per-datagram figures are
counted in plain ints by the adapter and added to the Counters once per event-loop turn
(`flush_io`), because a Counter increment takes a lock and the datagram path is the hot loop.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; from 100 µs (loopback RPC) to 10 s (a 10 MiB transfer over a slow relay).
RPC_LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                         0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HANDSHAKE_FAILURE_REASONS = ("bad_key", "unknown_alpn", "timeout", "refused", "other")
FRAME_REJECT_REASONS = ("oversized", "malformed", "buffer_full")


class QuicMetrics:
    """The endpoint's metrics. Names are prefixed `aspen_quic_`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections_opened = Counter(
            "aspen_quic_connections_opened_total", "Authenticated connections opened",
            ["alpn", "direction"], registry=registry)
        self.connections_closed = Counter(
            "aspen_quic_connections_closed_total", "Authenticated connections closed",
            ["alpn", "direction"], registry=registry)
        self.connections_open = Gauge(
            "aspen_quic_connections_open", "Authenticated connections currently open",
            ["alpn"], registry=registry)
        self.handshake_failures = Counter(
            "aspen_quic_handshake_failures_total", "Handshakes that failed, by reason",
            ["reason"], registry=registry)
        self.bytes_in = Counter("aspen_quic_bytes_in_total", "UDP payload bytes received",
                                registry=registry)
        self.bytes_out = Counter("aspen_quic_bytes_out_total", "UDP payload bytes sent",
                                 registry=registry)
        self.datagrams_in = Counter("aspen_quic_datagrams_in_total", "UDP datagrams received",
                                    registry=registry)
        self.datagrams_out = Counter("aspen_quic_datagrams_out_total", "UDP datagrams sent",
                                     registry=registry)
        self.datagrams_dropped = Counter(
            "aspen_quic_datagrams_dropped_total", "Datagrams dropped before reaching a connection",
            ["reason"], registry=registry)
        self.stateless_resets = Counter(
            "aspen_quic_stateless_resets_total", "Stateless resets sent or recognised",
            ["direction"], registry=registry)
        self.frames_rejected = Counter(
            "aspen_quic_frames_rejected_total",
            "Stream frames refused (the stream is reset, the connection carries on)",
            ["reason"], registry=registry)
        self.rpc_latency = Histogram(
            "aspen_quic_rpc_latency_seconds", "Request/response latency, by ALPN", ["alpn"],
            buckets=RPC_LATENCY_BUCKETS_S, registry=registry)
        for reason in HANDSHAKE_FAILURE_REASONS:
            self.handshake_failures.labels(reason=reason)
        for reason in FRAME_REJECT_REASONS:
            self.frames_rejected.labels(reason=reason)
        self._bytes_in = self._bytes_out = self._datagrams_in = self._datagrams_out = 0

    def count_in(self, size_bytes: int) -> None:
        self._bytes_in += size_bytes
        self._datagrams_in += 1

    def count_out(self, size_bytes: int) -> None:
        self._bytes_out += size_bytes
        self._datagrams_out += 1

    def flush_io(self) -> None:
        """Move the per-datagram tallies into the Counters (called once per loop turn)."""
        if self._datagrams_in:
            self.bytes_in.inc(self._bytes_in)
            self.datagrams_in.inc(self._datagrams_in)
            self._bytes_in = self._datagrams_in = 0
        if self._datagrams_out:
            self.bytes_out.inc(self._bytes_out)
            self.datagrams_out.inc(self._datagrams_out)
            self._bytes_out = self._datagrams_out = 0


__all__ = ["QuicMetrics", "RPC_LATENCY_BUCKETS_S", "HANDSHAKE_FAILURE_REASONS", "FRAME_REJECT_REASONS"]
