"""`aspen run`: the I/O process of a node.

Start-up order: identity -> plugin objects (handlers, transports) -> worker process -> HTTP
control plane -> discovery sources and services -> `aspen_node_started`. Any failure, including a
plugin raising, is reported by plugin name and everything already started is stopped in reverse
order, so the node exits cleanly with no orphan process. SIGINT/SIGTERM trigger the same orderly
shutdown, bounded by `SHUTDOWN_TIMEOUT_MS`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from aspen import worker_messages as wm
from aspen.addr import EndpointAddr
from aspen.cluster import CLIENT_ALPN, ClusterService
from aspen.cluster_secret import ClusterSecret
from aspen.cluster_view import ClusterView
from aspen.config import LoadedConfig, NodeConfig
from aspen.errors import AspenError, ConfigError
from aspen.forwarding import LeaderForwarder
from aspen.identity import SecretKey, load_or_create_key, read_key_file
from aspen.peers import PeerMap
from aspen.plugin_api import NodeContext, ProtocolHandler, Service
from aspen.quic import Endpoint
from aspen.raft_metrics import RaftMetricsCollector
from aspen.plugin_host import PluginError, PluginHost
from aspen.worker_supervisor import WorkerSupervisor

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_MS = 15_000  # worker stop (5 s + 5 s + kill) plus services, with margin
SERVICE_START_TIMEOUT_MS = 30_000
SERVICE_STOP_TIMEOUT_MS = 5_000
QUIC_PORT_FILE = "quic-port"  # the UDP port a node bound last, reused when bind_port is 0


def worker_args(config: NodeConfig, data_dir: Path) -> list[str]:
    """The Raft worker's command-line arguments for this node's config."""
    return ["--node-id", str(config.node_id), "--data-dir", str(data_dir),
            "--heartbeat-interval-ms", str(config.heartbeat_interval_ms),
            "--election-timeout-min-ms", str(config.election_timeout_min_ms),
            "--election-timeout-max-ms", str(config.election_timeout_max_ms),
            "--snapshot-every-entries", str(config.snapshot_every_entries),
            "--snapshot-keep-entries", str(config.snapshot_keep_entries),
            "--storage-backend", config.storage_backend]


def resolve_secret_key(config: NodeConfig, data_dir: Path) -> SecretKey:
    """The node's key: `secret_key` > `secret_key_file` > `data_dir/secret.key` (made once)."""
    if config.secret_key is not None:
        return SecretKey.from_hex(config.secret_key)
    if config.secret_key_file is not None:
        return read_key_file(Path(config.secret_key_file))
    return load_or_create_key(data_dir)


CLUSTER_SECRET_KEY = "cluster_secret"  # NodeContext.extensions: the ClusterSecret (gossip, raft-rpc)


def resolve_cluster_secret(config: NodeConfig) -> ClusterSecret:
    """The cluster secret: from `ticket` when given (its topic id and join key), else from
    `cookie`. Raises TicketError (a ConfigError) for a bad ticket."""
    if config.ticket:
        from aspen.ticket import ClusterTicket

        return ClusterTicket.decode(config.ticket).secret()
    return ClusterSecret.from_cookie(config.cookie)


def prepare_data_dir(config: NodeConfig) -> Path:
    data_dir = config.effective_data_dir()
    if not data_dir.parent.exists() and config.data_dir is not None:
        raise ConfigError(f"data_dir={config.data_dir!r}: parent directory {data_dir.parent} does not exist",
                          key="data_dir", value=config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


class Node:
    """One running node's I/O-process state; `run()` is the whole life of the process."""

    def __init__(self, loaded: LoadedConfig, host: PluginHost) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.host = host
        self.data_dir = prepare_data_dir(self.config)
        self.secret_key = resolve_secret_key(self.config, self.data_dir)
        self.registry = CollectorRegistry()
        self.context = NodeContext(
            config=self.config, secret_key=self.secret_key, node_id=self.config.node_id,
            data_dir=self.data_dir, peers=PeerMap(), metrics=self.registry,
            plugin_options=dict(self.config.plugin_options))
        self.context.extensions[CLUSTER_SECRET_KEY] = resolve_cluster_secret(self.config)
        self.cluster_view = ClusterView(self.context.peers)
        self.raft_metrics = RaftMetricsCollector(self.config.node_id, self.secret_key.public().hex())
        self.registry.register(self.raft_metrics)
        self._raft_sinks: list[Callable[[wm.RaftSendBatch], None]] = []
        self.forwarder = LeaderForwarder(node_id=self.config.node_id, term=lambda: self.cluster_view.term,
                                     send=self._send_raft)
        self.worker = WorkerSupervisor(registry=self.registry, log_level=self.config.log_level,
                                       extra_args=worker_args(self.config, self.data_dir),
                                       on_unsolicited=self._on_worker_message)
        self.context.cluster = self.cluster_view
        self.context.worker = self
        self.endpoint: Endpoint | None = None
        self.cluster: ClusterService | None = None
        self.started_monotonic = time.monotonic()
        self.http_port: int | None = None
        self._stop = asyncio.Event()

    # WorkerLink (what plugins see of the worker channel)
    async def send(self, message: wm.ToWorker) -> None:
        await self.worker.send(message)

    async def send_many(self, messages: list[wm.ToWorker]) -> None:
        # Answers to requests this node forwarded are for its I/O process, not its worker.
        messages = self.forwarder.take_results(messages)
        if messages:
            await self.worker.send_many(messages)

    def add_raft_sink(self, sink: Callable[[wm.RaftSendBatch], None]) -> None:
        self._raft_sinks.append(sink)

    def _send_raft(self, batch: wm.RaftSendBatch) -> None:
        for sink in self._raft_sinks:
            sink(batch)

    def _on_worker_message(self, message: wm.FromWorker) -> None:
        if isinstance(message, wm.RaftSendBatch):
            self.forwarder.before_worker_sends(message)
            self._send_raft(message)
        elif isinstance(message, wm.StateUpdate):
            self.cluster_view.apply(message)

    def request_stop(self) -> None:
        self._stop.set()

    def endpoint_addr(self) -> EndpointAddr:
        """Our address as peers should dial it (a wildcard bind shown as the HTTP host or loopback)."""
        assert self.endpoint is not None
        host = self.config.bind_host
        if host in ("0.0.0.0", "::"):
            http_host = self.config.http_addr.rpartition(":")[0].strip("[]")
            host = http_host if http_host not in ("0.0.0.0", "::", "localhost") else "127.0.0.1"
        return self.endpoint.endpoint_addr(host)

    def status(self) -> dict[str, Any]:
        """What `aspen run` prints when it is up, and `/node-info` extends."""
        return {
            "node_id": self.config.node_id,
            "endpoint_id": self.secret_key.public().hex(),
            "short_id": self.secret_key.public().short(),
            "pid": os.getpid(),
            "worker_pid": self.worker.pid,
            "data_dir": str(self.data_dir),
            "http_addr": self._http_addr_text(),
            "endpoint_addr": self.endpoint_addr().to_json() if self.endpoint is not None else None,
            "plugins": self.host.names,
            "uptime_seconds": round(time.monotonic() - self.started_monotonic, 3),
        }

    def _http_addr_text(self) -> str:
        host = self.config.http_addr.rpartition(":")[0]
        return f"{host}:{self.http_port}" if self.http_port is not None else self.config.http_addr

    async def _start_service(self, stack: AsyncExitStack, plugin: str, service: Service) -> None:
        try:
            await asyncio.wait_for(service.start(), SERVICE_START_TIMEOUT_MS / 1000)
        except Exception as exc:
            raise PluginError(plugin, f"{getattr(service, 'name', type(service).__name__)} failed to start: "
                                      f"{type(exc).__name__}: {exc}") from exc
        stack.push_async_callback(self._stop_service, plugin, service)

    async def _stop_service(self, plugin: str, service: Service) -> None:
        try:
            await asyncio.wait_for(service.stop(), SERVICE_STOP_TIMEOUT_MS / 1000)
        except Exception as exc:  # shutdown goes on; one bad plugin must not leave the rest running
            logger.error("plugin %s: stopping %s failed: %r", plugin, getattr(service, "name", "?"), exc)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        async with AsyncExitStack() as stack:
            await self.worker.start()
            stack.push_async_callback(self.worker.stop)

            handlers = self._protocol_handlers()
            self.endpoint = await self._start_endpoint(handlers)
            stack.push_async_callback(self.endpoint.stop)
            stack.callback(self.forwarder.close)  # writes still forwarded get 504 (outcome unknown)
            self.context.endpoint = self.endpoint

            from aspen.http_api import start_http  # aiohttp import is heavy; only nodes need it

            self.http_port = await start_http(self, stack)

            for plugin, source in self.host.collect("aspen_discovery_sources", node=self.context):
                await self._start_service(stack, plugin, source)
            for plugin, service in self.host.collect("aspen_services", node=self.context):
                await self._start_service(stack, plugin, service)
            self.host.call_each("aspen_node_started", node=self.context)
            stack.callback(self._call_stopping)

            status = self.status()
            print(json.dumps({"event": "ready", **status}), flush=True)
            logger.info("node up node_id=%d endpoint_id=%s http=%s worker_pid=%s",
                        status["node_id"], status["endpoint_id"], status["http_addr"], status["worker_pid"])
            await self._stop.wait()
            logger.info("stopping node_id=%d", self.config.node_id)
        return 0

    async def _start_endpoint(self, handlers: dict[str, ProtocolHandler]) -> Endpoint:
        """Bind the QUIC endpoint. With bind_port 0 a node reuses the port it had last time (kept
        in the data dir), so the address the cluster membership recorded for it stays valid
        across restarts; if that port is taken now, the OS picks another."""
        port_file = self.data_dir / QUIC_PORT_FILE
        ports = [self.config.bind_port]
        if self.config.bind_port == 0:
            try:
                ports.insert(0, int(port_file.read_text()))
            except (OSError, ValueError):
                pass
        for port in ports:
            endpoint = Endpoint(self.secret_key, handlers=handlers, registry=self.registry,
                                bind_host=self.config.bind_host, port=port)
            try:
                await endpoint.start()
            except OSError as exc:
                if port == ports[-1]:
                    raise ConfigError(f"cannot bind UDP {self.config.bind_host}:{port}: {exc.strerror}",
                                      key="bind_port", value=port) from None
                logger.info("previous QUIC port %d is taken (%s); letting the OS choose", port, exc.strerror)
                await endpoint.stop()
                continue
            if self.config.bind_port == 0:
                port_file.write_text(str(endpoint.local_addr().port))
            return endpoint
        raise AssertionError("unreachable")

    def _protocol_handlers(self) -> dict[str, ProtocolHandler]:
        """ALPN -> handler from every plugin, plus the node's own client-forwarding handler."""
        endpoint_rpc = self._rpc
        plugin_handlers = list(self.host.collect("aspen_protocol_handlers", node=self.context))
        # Writes and reads ride raft-rpc to the leader when a plugin carries Raft messages (it
        # registered a raft sink while building its handler); else they go over aspen-client/1.
        self.cluster = ClusterService(node_id=self.config.node_id, worker=self.worker, view=self.cluster_view,
                                      registry=self.registry, own_addr=self.endpoint_addr,
                                      http_addr=self._http_addr_text, rpc=endpoint_rpc,
                                      extensions=self.context.extensions,
                                      leader_forwarder=self.forwarder if self._raft_sinks else None)
        handlers: dict[str, ProtocolHandler] = {CLIENT_ALPN: self.cluster}
        owners: dict[str, str] = {CLIENT_ALPN: "aspen"}
        for plugin, handler in plugin_handlers:
            if handler.alpn in handlers:
                raise PluginError(plugin, f"ALPN {handler.alpn!r} is already served by {owners[handler.alpn]}")
            handlers[handler.alpn] = handler
            owners[handler.alpn] = plugin
        return handlers

    async def _rpc(self, addr: EndpointAddr, alpn: str, body: bytes, timeout_ms: int) -> bytes:
        assert self.endpoint is not None
        return await self.endpoint.rpc(addr, alpn, body, timeout_ms=timeout_ms)

    def _call_stopping(self) -> None:
        try:
            self.host.call_each("aspen_node_stopping", node=self.context)
        except PluginError as exc:
            logger.error("%s", exc)


async def _run_bounded(node: Node) -> int:
    task = asyncio.create_task(node.run(), name="node")
    try:
        return await task
    except asyncio.CancelledError:
        return 1


def run_node(loaded: LoadedConfig, host: PluginHost) -> int:
    """Run a node until SIGINT/SIGTERM; returns the process exit status."""
    import uvloop

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise

    logging.basicConfig(level=loaded.config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        node = Node(loaded, host)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot start: {exc}") from exc
    try:
        return uvloop.run(_run_bounded(node))
    except PluginError:
        raise
    except AspenError as exc:
        logger.error("node failed: %s", exc)
        raise
