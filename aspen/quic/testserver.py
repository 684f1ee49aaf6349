"""A standalone QUIC endpoint for tests and benchmarks, run as its own process.

    python -m aspen.quic.testserver --secret-key HEX [--port 0] [--plugin aspen_echo.hooks]
                                    [--idle-timeout-ms 30000] [--max-datagram-size 1200]

Prints one JSON line on stdout once bound — {"endpoint_id": HEX, "port": N, "alpns": [...]} —
then serves until SIGTERM/SIGINT or until stdin closes (so a dying test never leaks it).

Besides the handlers of the given plugins it always serves:

* `aspen-test-sink/1`: replies to each request frame with its size as 8 big-endian bytes (the
  "small ack" of one-way transfer benchmarks); records how a refused frame was handled.
* `aspen-test-stats/1`: replies with a JSON object of this process's metric samples plus the
  sink's records, so a test can check what the other process counted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import cast

import pluggy
from prometheus_client import CollectorRegistry

from aspen import hookspecs
from aspen.errors import AspenError, LimitExceeded
from aspen.identity import SecretKey
from aspen.plugin_api import NodeContext, PeerConnection, ProtocolHandler
from aspen.quic.endpoint import DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_DATAGRAM_SIZE, Endpoint
from aspen.quic.peer import QuicPeerStream
from aspen.quic.rpc import serve_rpc

SINK_ALPN = "aspen-test-sink/1"
STATS_ALPN = "aspen-test-stats/1"


class SinkHandler:
    """Acknowledges each request with its size; remembers refused frames (for tests)."""

    alpn = SINK_ALPN

    def __init__(self) -> None:
        self.requests = 0
        self.refused_frames = 0
        self.max_refused_stream_buffered_bytes = 0

    async def handle_connection(self, conn: PeerConnection) -> None:
        async with asyncio.TaskGroup() as tasks:
            while (stream := await conn.accept_stream()) is not None:
                tasks.create_task(self._serve(cast(QuicPeerStream, stream)))

    async def _serve(self, stream: QuicPeerStream) -> None:
        try:
            body = await stream.read_frame()
        except LimitExceeded:
            self.refused_frames += 1
            self.max_refused_stream_buffered_bytes = max(self.max_refused_stream_buffered_bytes,
                                                         stream.peak_buffered_bytes)
            return
        except AspenError:
            return
        if body is None:
            return
        self.requests += 1
        try:
            await stream.write_frame(len(body).to_bytes(8, "big"), end_stream=True)
        except AspenError:
            pass


class StatsHandler:
    """Replies to any request with this process's metrics and sink records, as JSON."""

    alpn = STATS_ALPN

    def __init__(self, registry: CollectorRegistry, sink: SinkHandler) -> None:
        self._registry = registry
        self._sink = sink

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in self._registry.collect():
            for sample in metric.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        out["sink_requests"] = self._sink.requests
        out["sink_refused_frames"] = self._sink.refused_frames
        out["sink_max_refused_stream_buffered_bytes"] = self._sink.max_refused_stream_buffered_bytes
        return out

    async def handle_connection(self, conn: PeerConnection) -> None:
        async def reply(_request: bytes) -> bytes:
            return json.dumps(self.snapshot()).encode()
        await serve_rpc(conn, reply)


def load_plugin_handlers(modules: list[str], context: NodeContext) -> list[ProtocolHandler]:
    """Call `aspen_protocol_handlers` of each plugin module, the way the node's host does."""
    pm = pluggy.PluginManager("aspen")
    pm.add_hookspecs(hookspecs)
    for name in modules:
        pm.register(importlib.import_module(name), name=name)
    handlers: list[ProtocolHandler] = []
    for result in pm.hook.aspen_protocol_handlers(node=context):
        handlers.extend(result)
    return handlers


async def serve(args: argparse.Namespace) -> None:
    key = SecretKey.from_hex(args.secret_key) if args.secret_key else SecretKey.generate()
    registry = CollectorRegistry()
    context = NodeContext(config=None, secret_key=key, node_id=0, data_dir=Path("."),  # type: ignore[arg-type]
                          peers=None, metrics=registry)  # type: ignore[arg-type]
    sink = SinkHandler()
    handlers: dict[str, ProtocolHandler] = {SINK_ALPN: sink, STATS_ALPN: StatsHandler(registry, sink)}
    for handler in load_plugin_handlers(args.plugin, context):
        handlers[handler.alpn] = handler
    endpoint = Endpoint(key, handlers=handlers, registry=registry, bind_host=args.host, port=args.port,
                        idle_timeout_ms=args.idle_timeout_ms,
                        keepalive_interval_ms=min(5_000, args.idle_timeout_ms // 2),
                        max_datagram_size_bytes=args.max_datagram_size,
                        pmtu_probe=not args.no_pmtu_probe)
    await endpoint.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.ignore_stdin:
        stdin_fd = sys.stdin.fileno()
        loop.add_reader(stdin_fd, lambda: stop.set() if not os.read(stdin_fd, 4096) else None)
    print(json.dumps({"endpoint_id": key.public().hex(), "port": endpoint.local_addr().port,
                      "alpns": sorted(handlers)}), flush=True)
    try:
        await stop.wait()
    finally:
        if not args.ignore_stdin:
            loop.remove_reader(sys.stdin.fileno())
        await endpoint.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aspen.quic.testserver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secret-key", default="", help="64 hex chars (default: a fresh key)")
    parser.add_argument("--host", default="::", help="bind address (default :: = dual-stack)")
    parser.add_argument("--port", type=int, default=0, help="UDP port (0 = OS-assigned)")
    parser.add_argument("--plugin", action="append", default=None,
                        help="plugin module whose protocol handlers to serve (default aspen_echo.hooks)")
    parser.add_argument("--idle-timeout-ms", type=int, default=DEFAULT_IDLE_TIMEOUT_MS)
    parser.add_argument("--max-datagram-size", type=int, default=DEFAULT_MAX_DATAGRAM_SIZE)
    parser.add_argument("--no-pmtu-probe", action="store_true",
                        help="keep --max-datagram-size; do not probe the path MTU")
    parser.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(argv)
    if args.plugin is None:
        args.plugin = ["aspen_echo.hooks"]
    if args.uvloop:
        import uvloop
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
