"""Hookimpls of aspen_raft (the entry point)."""

from __future__ import annotations

import aspen
from aspen.cluster_secret import ClusterSecret
from aspen.plugin_api import NodeContext, PeerConnection, PluginInfo, ProtocolHandler, Service

from aspen_raft.frames import RAFT_ALPN
from aspen_raft.transport import RaftTransport

_KEY = "raft"


def _transport(node: NodeContext) -> RaftTransport:
    existing = node.extensions.get(_KEY)
    if isinstance(existing, RaftTransport):
        return existing
    if node.cluster is None or node.worker is None:
        raise RuntimeError("raft-rpc needs the node's cluster view and worker link")
    worker = node.worker
    cluster = node.cluster

    async def connect(node_id: int) -> PeerConnection:
        addr = cluster.addr_of(node_id)
        if addr is None or node.endpoint is None:
            raise RuntimeError(f"no address for node {node_id}")
        return await node.endpoint.connect(addr, RAFT_ALPN)

    secret = node.extensions.get("cluster_secret")  # set by aspen.node (from --ticket or the cookie)
    if not isinstance(secret, ClusterSecret):
        secret = ClusterSecret.from_cookie(node.config.cookie)
    transport = RaftTransport(node_id=node.node_id, view=cluster, deliver=worker.send_many, connect=connect,
                              registry=node.metrics, secret=secret, me=node.endpoint_id)
    worker.add_raft_sink(transport.send_batch)
    node.extensions[_KEY] = transport
    return transport


@aspen.hookimpl
def aspen_plugin_info() -> PluginInfo:
    return PluginInfo(kind="protocol", description="raft-rpc: Raft messages between members over QUIC")


@aspen.hookimpl
def aspen_protocol_handlers(node: NodeContext) -> list[ProtocolHandler]:
    return [_transport(node)]


@aspen.hookimpl
def aspen_services(node: NodeContext) -> list[Service]:
    return [_transport(node)]
