"""Prometheus metrics of one QUIC endpoint, registered in a caller-given `CollectorRegistry`.

Never the global registry: several endpoints live in one test process. Per-datagram figures
(bytes and datagrams in/out) are plain int additions in the hot path, exported by a custom
collector when scraped: a prometheus Counter increment takes a lock, and the datagram path is the
hot loop (profiled: ~8% of a small RPC's CPU when counted per loop turn).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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
        # bytes/datagrams in/out are plain ints read at scrape time (see the module docstring)
        self._io = _IoCollector()
        registry.register(self._io)
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
        self._rpc_latency_by_alpn: dict[str, Histogram] = {}
        io = self._io
        # Bound methods of the collector: the hot path calls these per datagram.
        self.count_in = io.count_in
        self.count_out = io.count_out

    def rpc_latency_for(self, alpn: str) -> Histogram:
        """The latency histogram child of `alpn` (cached: labels() costs a lock and a lookup)."""
        child = self._rpc_latency_by_alpn.get(alpn)
        if child is None:
            child = self._rpc_latency_by_alpn[alpn] = self.rpc_latency.labels(alpn=alpn)
        return child

    @property
    def bytes_in(self) -> int:
        return self._io.bytes_in

    @property
    def bytes_out(self) -> int:
        return self._io.bytes_out

    @property
    def datagrams_in(self) -> int:
        return self._io.datagrams_in

    @property
    def datagrams_out(self) -> int:
        return self._io.datagrams_out


class _IoCollector(Collector):
    """Datagram and byte counts kept as ints and exported as counters when scraped."""

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = self.datagrams_in = self.datagrams_out = 0

    def count_in(self, size_bytes: int) -> None:
        self.bytes_in += size_bytes
        self.datagrams_in += 1

    def count_out(self, size_bytes: int) -> None:
        self.bytes_out += size_bytes
        self.datagrams_out += 1

    def collect(self) -> Iterator[Metric]:
        for name, doc, value in (
                ("aspen_quic_bytes_in", "UDP payload bytes received", self.bytes_in),
                ("aspen_quic_bytes_out", "UDP payload bytes sent", self.bytes_out),
                ("aspen_quic_datagrams_in", "UDP datagrams received", self.datagrams_in),
                ("aspen_quic_datagrams_out", "UDP datagrams sent", self.datagrams_out)):
            yield CounterMetricFamily(name, doc, value=value)


__all__ = ["QuicMetrics", "RPC_LATENCY_BUCKETS_S", "HANDSHAKE_FAILURE_REASONS", "FRAME_REJECT_REASONS"]
