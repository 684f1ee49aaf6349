"""The peer map: node id -> EndpointAddr, fed by every discovery source and by the membership.

Bounded (`MAX_PEERS`). Each entry remembers which source told us, so `config show`-style output
and metrics can say where an address came from. A node id, once bound to an endpoint key, is not
silently rebound to another key unless the caller says the source is authoritative (the Raft
membership) — this is what stops a gossip announcement from hijacking a node id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aspen.addr import EndpointAddr
from aspen.errors import LimitExceeded
from aspen.identity import EndpointId

# guess: revisit. The Rust Aspen bounds voters at 100; learners and discovered-but-not-member
# nodes share this map, so allow an order of magnitude more.
MAX_PEERS = 1024


@dataclass(frozen=True)
class PeerEntry:
    node_id: int
    addr: EndpointAddr
    source: str


PeerListener = Callable[[PeerEntry], None]


class PeerMap:
    """Who is who. Single-threaded (lives in the I/O process's event loop)."""

    def __init__(self, *, max_peers: int = MAX_PEERS) -> None:
        self._by_node: dict[int, PeerEntry] = {}
        self._max_peers = max_peers
        self._listeners: list[PeerListener] = []

    def add_listener(self, listener: PeerListener) -> None:
        self._listeners.append(listener)

    def update(self, node_id: int, addr: EndpointAddr, source: str, *, authoritative: bool = False) -> bool:
        """Record `addr` for `node_id`. Returns False (and changes nothing) when the node id is
        already bound to a different key and the source is not authoritative."""
        current = self._by_node.get(node_id)
        if current is not None and current.addr.endpoint_id != addr.endpoint_id and not authoritative:
            return False
        if current is None and len(self._by_node) >= self._max_peers:
            raise LimitExceeded("MAX_PEERS", len(self._by_node) + 1, self._max_peers)
        if current is not None and current.addr == addr:
            return True
        if current is not None and not addr.direct_addrs and addr.relay_url is None:
            # An id-only record (`--peers N@ID`) must not erase addresses we already know.
            addr = current.addr
        entry = PeerEntry(node_id, addr, source)
        self._by_node[node_id] = entry
        for listener in self._listeners:
            listener(entry)
        return True

    def get(self, node_id: int) -> PeerEntry | None:
        return self._by_node.get(node_id)

    def node_id_of(self, endpoint_id: EndpointId) -> int | None:
        for entry in self._by_node.values():
            if entry.addr.endpoint_id == endpoint_id:
                return entry.node_id
        return None

    def remove(self, node_id: int) -> None:
        self._by_node.pop(node_id, None)

    def entries(self) -> list[PeerEntry]:
        return sorted(self._by_node.values(), key=lambda e: e.node_id)

    def __len__(self) -> int:
        return len(self._by_node)


__all__ = ["PeerMap", "PeerEntry", "MAX_PEERS"]
