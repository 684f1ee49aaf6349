"""What the I/O process knows of the cluster: the leader and the membership, as the worker says.

The worker sends a `StateUpdate` whenever leader, term or membership change; this view keeps the
latest, parses each member's address text (written by `member_addr_text`) into an EndpointAddr,
and feeds the peer map authoritatively — the membership is the source of truth for a node id's
key, so a member added through the API is reachable from every member without add-peer calls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aspen import worker_messages as wm
from aspen.addr import EndpointAddr
from aspen.identity import EndpointId
from aspen.peers import PeerMap

logger = logging.getLogger(__name__)

MEMBERSHIP_SOURCE = "membership"


def member_addr_text(endpoint_addr: EndpointAddr, http_addr: str = "", raft_addr: str | None = None) -> str:
    """The opaque address text stored in the Raft membership for one node."""
    return json.dumps({"endpoint_addr": endpoint_addr.to_json(), "addr": http_addr, "raft_addr": raft_addr},
                      separators=(",", ":"))


@dataclass(frozen=True)
class MemberAddr:
    endpoint_addr: EndpointAddr | None
    addr: str = ""
    raft_addr: str | None = None


def parse_member_addr(text: str) -> MemberAddr:
    """Inverse of `member_addr_text`; tolerant: an unparseable text gives endpoint_addr None."""
    try:
        obj = json.loads(text)
        addr = EndpointAddr.from_json(obj["endpoint_addr"])
        return MemberAddr(addr, str(obj.get("addr", "")), obj.get("raft_addr"))
    except (ValueError, KeyError, TypeError):
        return MemberAddr(None, text)


@dataclass
class ClusterView:
    peers: PeerMap
    leader_id: int = 0
    term: int = 0
    role: str = "Follower"
    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    members: dict[int, MemberAddr] = field(default_factory=dict)
    listeners: list[Callable[[ClusterView], None]] = field(default_factory=list)
    # endpoint id -> node id of the members: checked on every inbound Raft frame and forward.
    _member_by_key: dict[EndpointId, int] = field(default_factory=dict)

    @property
    def is_initialized(self) -> bool:
        return bool(self.voters)

    def apply(self, update: wm.StateUpdate) -> None:
        self.leader_id, self.term, self.role = update.leader_id, update.term, update.role
        self.voters, self.learners = list(update.voters), list(update.learners)
        self.members = {node: parse_member_addr(text) for node, text in update.addrs.items()}
        self._member_by_key = {m.endpoint_addr.endpoint_id: node for node, m in sorted(self.members.items(), reverse=True)
                               if m.endpoint_addr is not None}
        for node, member in self.members.items():
            if member.endpoint_addr is not None:
                self.peers.update(node, member.endpoint_addr, MEMBERSHIP_SOURCE, authoritative=True)
        for listener in self.listeners:
            listener(self)

    def member_node_id(self, endpoint_id: EndpointId) -> int | None:
        """The node id of the member (voter or learner) holding `endpoint_id`, if any."""
        return self._member_by_key.get(endpoint_id)

    def addr_of(self, node_id: int) -> EndpointAddr | None:
        member = self.members.get(node_id)
        if member is not None and member.endpoint_addr is not None:
            known = self.peers.get(node_id)
            # Discovery may know fresher direct addresses for the same key; prefer them.
            if known is not None and known.addr.endpoint_id == member.endpoint_addr.endpoint_id \
                    and known.addr.direct_addrs:
                return known.addr
            return member.endpoint_addr
        entry = self.peers.get(node_id)
        return entry.addr if entry is not None else None


__all__ = ["ClusterView", "MemberAddr", "member_addr_text", "parse_member_addr", "MEMBERSHIP_SOURCE"]
