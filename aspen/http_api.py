"""The HTTP control plane (aiohttp), bound to loopback by default.

Routes follow the Rust Aspen's shapes (reference/aspen-rust-inventory.md §2). This module holds
the node-level routes (`/health`, `/node-info`, `/metrics`); cluster and KV routes are added by
the modules that own them.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aspen import worker_messages as wm
from aspen.control_plane import MAX_REQUEST_BODY_SIZE, KvService, add_routes
from aspen.fast_http import FastHttpServer
from aspen.worker_supervisor import WorkerUnavailable

if TYPE_CHECKING:
    from aspen.node import Node

NODE_KEY: web.AppKey[Node] = web.AppKey("node")
HEALTH_WORKER_TIMEOUT_MS = 1_000
METRICS_WORKER_TIMEOUT_MS = 1_000  # a scrape must not hang on a busy or restarting worker  # the worker answers a Ping in well under a millisecond when up


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    checks: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        reply = await node.worker.call(wm.StatusRequest, timeout_ms=HEALTH_WORKER_TIMEOUT_MS)
        assert isinstance(reply, wm.StatusReply)
        checks["raft_actor"] = {"status": "ok", "pid": reply.pid, "incarnation": reply.incarnation,
                                "latency_ms": round((time.monotonic() - t0) * 1000, 3)}
    except WorkerUnavailable as exc:
        checks["raft_actor"] = {"status": "error", "message": str(exc)}
    healthy = checks["raft_actor"]["status"] == "ok"
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "checks": checks,
        "node_id": node.config.node_id,
        "raft_node_id": node.config.node_id,
        "uptime_seconds": round(time.monotonic() - node.started_monotonic, 3),
        "worker": {"pid": node.worker.pid, "incarnation": node.worker.incarnation,
                   "restarts": node.worker.restarts},
    }
    return web.json_response(body, status=200 if healthy else 503)


async def node_info(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    addr = node.endpoint_addr().to_json() if node.endpoint is not None else \
        {"id": node.secret_key.public().hex(), "addrs": []}
    return web.json_response({"node_id": node.config.node_id, "endpoint_addr": addr})


async def peers(request: web.Request) -> web.Response:
    """The peer map: node id -> EndpointAddr and which source told us (read-only)."""
    node = request.app[NODE_KEY]
    entries = [{"node_id": e.node_id, "endpoint_addr": e.addr.to_json(), "source": e.source}
               for e in node.context.peers.entries()]
    return web.json_response({"node_id": node.config.node_id, "peers": entries})


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        reply = await node.worker.call(wm.RaftStatusRequest, timeout_ms=METRICS_WORKER_TIMEOUT_MS)
        node.raft_metrics.status = reply if isinstance(reply, wm.RaftStatus) else None
    except WorkerUnavailable:
        node.raft_metrics.status = None  # a restarting worker: Raft families are left out
    body = generate_latest(node.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(node: Node) -> tuple[web.Application, KvService | None]:
    app = web.Application(client_max_size=MAX_REQUEST_BODY_SIZE)
    app[NODE_KEY] = node
    app.router.add_get("/health", health)
    app.router.add_get("/node-info", node_info)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/peers", peers)
    kv = add_routes(app, node.cluster, node.registry, node.config.http_token) if node.cluster is not None else None
    return app, kv


async def start_http(node: Node, stack: AsyncExitStack) -> int:
    """Serve the control plane; returns the bound port (the config may say port 0). The KV
    routes are answered by aspen.fast_http, everything else by aiohttp, on the same port."""
    host, _, port = node.config.http_addr.rpartition(":")
    app, kv = build_app(node)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    assert runner.server is not None
    front = FastHttpServer(runner.server, kv, node.registry)
    bound = await front.start(host.strip("[]"), int(port))
    stack.push_async_callback(front.stop)  # first: stop accepting, finish KV answers; then aiohttp's
    return bound
