"""Hookimpls of aspen_gossip (the entry point: `gossip = "aspen_gossip.hooks"`).

With `enable_gossip = false` (`--disable-gossip`) every hook returns nothing: no ALPN, no
discovery, no ticket provider. The cluster secret is the node's (`extensions["cluster_secret"]`,
from `--ticket` or the cookie); bootstrap peers come from the ticket.
"""

from __future__ import annotations

from collections.abc import Mapping

import aspen
from aspen.addr import MAX_DIRECT_ADDRS, EndpointAddr, SocketAddr
from aspen.cluster_secret import ClusterSecret
from aspen.identity import EndpointId
from aspen.plugin_api import (
    ConfigOption,
    DiscoverySource,
    NodeContext,
    PeerConnection,
    PluginInfo,
    ProtocolHandler,
)
from aspen.ticket import ClusterTicket

from aspen_gossip.announce import ANNOUNCE_INTERVAL_MS
from aspen_gossip.config import (
    ACTIVE_VIEW_CAPACITY,
    MAX_MESSAGE_SIZE,
    MIN_MESSAGE_SIZE,
    PASSIVE_VIEW_CAPACITY,
    SHUFFLE_INTERVAL_MS,
    GossipConfig,
)
from aspen_gossip.discovery import GossipDiscovery
from aspen_gossip.interfaces import WILDCARD_V4, WILDCARD_V6, local_announce_hosts
from aspen_gossip.known_peers import KNOWN_PEERS_FILE
from aspen_gossip.messages import MAX_FRAME_SIZE
from aspen_gossip.service import GOSSIP_ALPN, GossipService

PLUGIN_NAME = "gossip"
_SERVICE_KEY = "gossip"
_DISCOVERY_KEY = "gossip_discovery"
CLUSTER_SECRET_KEY = "cluster_secret"  # set by aspen.node
TICKET_PROVIDER_KEY = "cluster_ticket"  # read by aspen.cluster for GET /cluster-ticket


def _secret(node: NodeContext) -> ClusterSecret:
    secret = node.extensions.get(CLUSTER_SECRET_KEY)
    if isinstance(secret, ClusterSecret):
        return secret
    if node.config.ticket:
        return ClusterTicket.decode(node.config.ticket).secret()
    return ClusterSecret.from_cookie(node.config.cookie)


def _own_addr(node: NodeContext) -> EndpointAddr | None:
    """Our address as announced and put in tickets: a wildcard bind becomes this host's interface
    addresses (not loopback, which no other machine can dial; see aspen_gossip.interfaces)."""
    if node.endpoint is None:
        return None
    addr = node.endpoint.endpoint_addr()
    bind_host = node.config.bind_host
    if bind_host not in (WILDCARD_V4, WILDCARD_V6):
        return addr
    # endpoint_addr() shows a wildcard bind as loopback; the ports are the bound ones
    return addr_for_bound(addr, [SocketAddr(bind_host, direct.port) for direct in addr.direct_addrs])


def addr_for_bound(addr: EndpointAddr, bound: list[SocketAddr]) -> EndpointAddr:
    """`addr` with its direct addresses rebuilt from the `bound` sockets, wildcards expanded."""
    direct: list[SocketAddr] = []
    for sock in bound:
        for host in local_announce_hosts(sock.host):
            if len(direct) < MAX_DIRECT_ADDRS and SocketAddr(host, sock.port) not in direct:
                direct.append(SocketAddr(host, sock.port))
    if not direct:
        return addr
    return EndpointAddr(addr.endpoint_id, addr.relay_url, tuple(direct))


def _service(node: NodeContext) -> GossipService:
    existing = node.extensions.get(_SERVICE_KEY)
    if isinstance(existing, GossipService):
        return existing
    opts = node.options_for(PLUGIN_NAME)
    config = GossipConfig(
        max_message_size=int(opts.get("max_message_size", MAX_MESSAGE_SIZE)),  # type: ignore[arg-type]
        active_view_capacity=int(opts.get("active_view_capacity", ACTIVE_VIEW_CAPACITY)),  # type: ignore[arg-type]
        passive_view_capacity=int(opts.get("passive_view_capacity", PASSIVE_VIEW_CAPACITY)),  # type: ignore[arg-type]
        shuffle_interval_ms=int(opts.get("shuffle_interval_ms", SHUFFLE_INTERVAL_MS)),  # type: ignore[arg-type]
    ).validate()

    async def dial(addr: EndpointAddr) -> PeerConnection:
        if node.endpoint is None:
            raise RuntimeError("the QUIC endpoint is not up yet")
        return await node.endpoint.connect(addr, GOSSIP_ALPN)

    service = GossipService(me=node.endpoint_id, dial=dial, own_addr=lambda: _own_addr(node), config=config,
                            registry=node.metrics)
    node.extensions[_SERVICE_KEY] = service
    return service


def _discovery(node: NodeContext) -> GossipDiscovery:
    existing = node.extensions.get(_DISCOVERY_KEY)
    if isinstance(existing, GossipDiscovery):
        return existing
    service = _service(node)
    bootstrap = ClusterTicket.decode(node.config.ticket).bootstrap if node.config.ticket else ()
    cluster = node.cluster

    def bound_keys() -> Mapping[int, EndpointId]:
        if cluster is None:
            return {}
        return {n: m.endpoint_addr.endpoint_id for n, m in cluster.members.items()
                if m.endpoint_addr is not None}

    interval_ms = int(node.options_for(PLUGIN_NAME).get("announce_interval_ms", ANNOUNCE_INTERVAL_MS))  # type: ignore[arg-type]
    discovery = GossipDiscovery(service=service, secret=_secret(node), secret_key=node.secret_key,
                                node_id=node.node_id, own_addr=lambda: _own_addr(node),
                                peers=node.peers, bound_keys=bound_keys, bootstrap=bootstrap,
                                registry=node.metrics, announce_interval_ms=interval_ms,
                                known_peers_path=node.data_dir / KNOWN_PEERS_FILE)
    node.extensions[_DISCOVERY_KEY] = discovery
    node.extensions[TICKET_PROVIDER_KEY] = discovery.ticket_info
    return discovery


@aspen.hookimpl
def aspen_plugin_info() -> PluginInfo:
    return PluginInfo(kind="mixed", description="gossip (HyParView + Plumtree over /aspen-gossip/1): "
                                                "signed announcements, cluster tickets")


@aspen.hookimpl
def aspen_config_options() -> list[ConfigOption]:
    return [
        ConfigOption("max_message_size", "int", MAX_MESSAGE_SIZE,
                     "largest gossip frame in bytes (a bigger publish is an error)",
                     min_value=MIN_MESSAGE_SIZE, max_value=MAX_FRAME_SIZE),
        ConfigOption("announce_interval_ms", "int", ANNOUNCE_INTERVAL_MS,
                     "swarm-wide discovery announcement interval", min_value=100, max_value=600_000),
        ConfigOption("active_view_capacity", "int", ACTIVE_VIEW_CAPACITY, "HyParView active view size",
                     min_value=1, max_value=64),
        ConfigOption("passive_view_capacity", "int", PASSIVE_VIEW_CAPACITY, "HyParView passive view size",
                     min_value=1, max_value=1024),
        ConfigOption("shuffle_interval_ms", "int", SHUFFLE_INTERVAL_MS, "HyParView shuffle interval",
                     min_value=100, max_value=3_600_000),
    ]


@aspen.hookimpl
def aspen_protocol_handlers(node: NodeContext) -> list[ProtocolHandler]:
    if not node.config.enable_gossip:
        return []
    return [_service(node)]


@aspen.hookimpl
def aspen_discovery_sources(node: NodeContext) -> list[DiscoverySource]:
    """The service (started first, stopped last) and the announcement discovery on top of it."""
    if not node.config.enable_gossip:
        return []
    return [_service(node), _discovery(node)]
