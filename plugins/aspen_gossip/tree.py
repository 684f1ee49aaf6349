"""Anchor tree: which neighbor links carry payloads, chosen by hops to one agreed node. Sans-IO.

Why
---
Plumtree alone (§3.8) reshapes its one shared eager tree toward each broadcast's sender. With
random senders the tree never settles and ends ~2 hops deeper than a breadth-first tree of the
same overlay: at 1,000 nodes the last delivery hop (LDH) reached 19-22, where a BFS tree rooted
at any fixed node gives <= 13 for every sender (measured, /tmp/notes/s2-06.md). So the eager
links here are those of a shortest-path tree rooted at an *anchor* that every node agrees on,
whatever the arrival order of payloads. It is a distance-vector protocol (RIP-like, like an
802.1D bridge tree), driven only by neighbor changes and `Level` frames: no clock, no timer.

Rules
-----
- The anchor is the lowest endpoint id reachable within MAX_TREE_LEVEL hops; a node that hears of
  nothing lower is its own anchor at level 0.
- Each node tells each neighbor `Level(anchor, level, uplink, branch)`, where `uplink` says "you
  are my uplink", whenever that changes for that neighbor (neighbor up, or a change of state).
- A node's uplink is the neighbor that offers the lowest (anchor, level + 1, branch); further
  ties keep the current uplink, then take the lowest id (deterministic, so a seed replays).
  Neighbors that name us as their uplink are never candidates (split horizon: no two-node loops).
- Branch = the node's ancestor at level 1 (a child of the anchor is its own branch), carried in
  `Level`. Preferring the lowest one gathers the deepest nodes under as few children of the
  anchor as the overlay allows: two nodes at depth d under different children are 2d hops apart
  on the tree, under the same child at most 2d - 2. At 1,000 nodes (depth 7) that is what took
  the worst broadcast from LDH 14 to 13 (test_sim). Only up to BRANCH_MAX_LEVEL.
- Tree links = my uplink + my children (neighbors whose last Level named me as uplink). Both ends
  of a link learn the same fact from the same frame, so they agree without a handshake.
- A dead anchor: its neighbors drop it, their levels rise through the stale offers of the others
  until every offer reaches MAX_TREE_LEVEL (counting to infinity, bounded), and the next lowest
  id takes over. Meanwhile Plumtree's lazy IHave/Graft repair keeps every message delivered.

State is bounded by the active view: one remembered Level per neighbor and one sent.
"""

from __future__ import annotations

from aspen_gossip.events import OutEvent, PeerId, SendMessage
from aspen_gossip.messages import MAX_TREE_LEVEL, Level

# Levels up to which the branch breaks ties. A tree of 1,000 nodes at active view 5 is 7 deep,
# of 2,000 nodes 8, and depth grows with log(N), so 10 covers swarms of ~10,000. Beyond it a
# route is most likely counting to infinity after the anchor died (MAX_TREE_LEVEL), and there
# reshaping by branch only multiplied the Level frames: a 300-node failover sent 0.6-1.1 M frames
# with no bound, 0.16-0.21 M with this one (0.20-0.29 M before branches existed).
BRANCH_MAX_LEVEL = 10


class AnchorTree:
    """This node's place in the anchor tree of one topic. Driven by `aspen_gossip.plumtree`."""

    def __init__(self, me: PeerId) -> None:
        self.me = me
        self.anchor: PeerId = me
        self.level = 0
        self.uplink: PeerId | None = None
        self.branch = b""  # my ancestor at level 1 (me at level 1; empty at level 0)
        # insertion-ordered: iteration order must not depend on the hash seed (replayable sims)
        self._neighbors: dict[PeerId, None] = {}
        self._heard: dict[PeerId, Level] = {}  # neighbor -> its last Level frame
        self._told: dict[PeerId, Level] = {}  # neighbor -> the last Level frame we sent it

    # --- queries ----------------------------------------------------------------------------

    def knows(self, peer: PeerId) -> bool:
        """True once `peer` has told us its place in the tree (until then Plumtree's own rules
        decide the link, as for any peer that does not speak this frame yet)."""
        return peer in self._heard

    def is_tree_link(self, peer: PeerId) -> bool:
        if peer == self.uplink:
            return True
        heard = self._heard.get(peer)
        return heard is not None and heard.uplink

    def children(self) -> list[PeerId]:
        return [peer for peer, heard in self._heard.items() if heard.uplink]

    # --- inputs (the caller re-derives its eager set after each) -----------------------------

    def neighbor_up(self, peer: PeerId, out: list[OutEvent]) -> None:
        self._neighbors[peer] = None
        self._heard.pop(peer, None)
        self._told.pop(peer, None)
        self._tell(peer, out)

    def neighbor_down(self, peer: PeerId, out: list[OutEvent]) -> None:
        if peer not in self._neighbors:
            return
        del self._neighbors[peer]
        self._heard.pop(peer, None)
        self._told.pop(peer, None)
        self._recompute(out)

    def on_level(self, peer: PeerId, frame: Level, out: list[OutEvent]) -> None:
        if peer not in self._neighbors:
            return  # Topic only routes frames of current neighbors; be safe anyway
        self._heard[peer] = frame
        self._recompute(out)

    # --- the rule ---------------------------------------------------------------------------

    def _recompute(self, out: list[OutEvent]) -> None:
        """Pick the uplink and level from the offers heard; tell neighbors what changed."""
        best_anchor, best_level, best_branch, best_peer = self.me, 0, b"", None
        current = self.uplink
        for peer in self._neighbors:  # <= active view capacity
            heard = self._heard.get(peer)
            if heard is None or heard.uplink or heard.level >= MAX_TREE_LEVEL:
                continue  # unknown yet; our child (split horizon); or too far (infinity)
            anchor, level = heard.anchor, heard.level + 1
            # (beyond BRANCH_MAX_LEVEL no branch: a route that far is counting to infinity)
            branch = b"" if level > BRANCH_MAX_LEVEL else heard.branch if heard.level else self.me
            if anchor > best_anchor:
                continue
            if anchor == best_anchor:
                if level > best_level:
                    continue  # (this also refuses a route to ourselves: our own level is 0)
                if level == best_level and best_peer is not None:
                    if branch > best_branch:
                        continue
                    if branch == best_branch and (
                            best_peer == current or (peer != current and peer > best_peer)):
                        continue
            best_anchor, best_level, best_branch, best_peer = anchor, level, branch, peer
        self.anchor, self.level, self.branch, self.uplink = best_anchor, best_level, best_branch, best_peer
        for peer in self._neighbors:
            self._tell(peer, out)

    def _tell(self, peer: PeerId, out: list[OutEvent]) -> None:
        frame = Level(self.anchor, self.level, peer == self.uplink, self.branch)
        if self._told.get(peer) != frame:
            self._told[peer] = frame
            out.append(SendMessage(peer, frame))


__all__ = ["AnchorTree", "BRANCH_MAX_LEVEL"]
