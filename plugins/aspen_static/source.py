"""The static discovery source: configured peers go into the peer map once, at start."""

from __future__ import annotations

import logging

from aspen.addr import EndpointAddr
from aspen.identity import EndpointId
from aspen.peer_spec import parse_peer_spec
from aspen.peers import PeerMap

logger = logging.getLogger(__name__)

SOURCE_NAME = "static"


class StaticPeers:
    """A DiscoverySource over a fixed list of peer specs (already validated by the config)."""

    name = SOURCE_NAME

    def __init__(self, specs: list[str], peers: PeerMap) -> None:
        self._entries = [parse_peer_spec(spec) for spec in specs]
        self._peers = peers

    async def start(self) -> None:
        for node_id, addr in self._entries:
            if not self._peers.update(node_id, addr, SOURCE_NAME):
                logger.warning("static peer refused: node_id=%d is bound to another key", node_id)
        logger.info("static peers loaded count=%d", len(self._entries))

    async def stop(self) -> None:
        return None

    async def publish(self, addr: EndpointAddr) -> None:
        return None  # a static list has nowhere to publish to

    async def resolve(self, endpoint_id: EndpointId) -> EndpointAddr | None:
        for _, addr in self._entries:
            if addr.endpoint_id == endpoint_id:
                return addr
        return None
